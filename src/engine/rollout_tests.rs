//! Strategies through a front door, on the in-memory provider and an
//! in-memory door that records every shift, drain and probe.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use super::*;
use crate::config::TrafficSection;
use crate::traffic::{DoorState, FrontDoor, Kept, Probe, Weights};

/// A door whose state lives in memory. `fail_probes_on` makes every probe
/// fail while that generation has a share.
#[derive(Default)]
struct MemoryDoor {
    state: Mutex<DoorState>,
    shifts: Mutex<Vec<Weights>>,
    /// The instances of each drain call.
    drains: Mutex<Vec<Vec<InstanceId>>>,
    /// Instances drained while their generation still had a share, or
    /// while the door was diverged (some part of it, an ALB region, may
    /// still forward to them): the door forwarded to a group being emptied.
    drained_serving: Mutex<Vec<InstanceId>>,
    fail_probes_on: Option<u64>,
}

impl MemoryDoor {
    fn failing_on(generation: u64) -> MemoryDoor {
        MemoryDoor {
            fail_probes_on: Some(generation),
            ..MemoryDoor::default()
        }
    }

    fn shifts(&self) -> Vec<Vec<(u64, u32)>> {
        self.shifts
            .lock()
            .unwrap()
            .iter()
            .map(|w| w.iter().map(|(g, s)| (*g, *s)).collect())
            .collect()
    }

    fn weights(&self) -> Vec<(u64, u32)> {
        self.state
            .lock()
            .unwrap()
            .weights
            .iter()
            .map(|(g, s)| (*g, *s))
            .collect()
    }
}

impl FrontDoor for MemoryDoor {
    fn describe(&self) -> String {
        "memory door".to_string()
    }

    async fn register(&self, generation: u64, targets: &[Instance]) -> crate::traffic::Result<()> {
        let mut state = self.state.lock().unwrap();
        let ids = state.targets.entry(generation).or_default();
        for target in targets {
            if !ids.contains(&target.id) {
                ids.push(target.id.clone());
            }
        }
        state.weights.entry(generation).or_insert(0);
        Ok(())
    }

    async fn wait_healthy(&self, _: u64, _: &[Instance], _: Duration) -> crate::traffic::Result<()> {
        Ok(())
    }

    async fn shift(&self, weights: &Weights) -> crate::traffic::Result<()> {
        let mut state = self.state.lock().unwrap();
        state.weights = weights.clone();
        state.diverged = false;
        drop(state);
        self.shifts.lock().unwrap().push(weights.clone());
        Ok(())
    }

    async fn drain(&self, targets: &[Instance]) -> crate::traffic::Result<()> {
        let mut state = self.state.lock().unwrap();
        let serving = state.serving_weights();
        self.drained_serving.lock().unwrap().extend(
            targets
                .iter()
                .filter(|t| state.diverged || t.generation.is_some_and(|g| serving.contains_key(&g)))
                .map(|t| t.id.clone()),
        );
        for ids in state.targets.values_mut() {
            ids.retain(|id| !targets.iter().any(|t| &t.id == id));
        }
        state.targets.retain(|_, ids| !ids.is_empty());
        let registered: Vec<u64> = state.targets.keys().copied().collect();
        state.weights.retain(|g, _| registered.contains(g));
        self.drains
            .lock()
            .unwrap()
            .push(targets.iter().map(|t| t.id.clone()).collect());
        Ok(())
    }

    async fn probe(&self) -> Probe {
        let state = self.state.lock().unwrap();
        let failing = self
            .fail_probes_on
            .is_some_and(|g| state.weights.get(&g).is_some_and(|share| *share > 0));
        Probe {
            ok: !failing,
            detail: if failing { "HTTP 500" } else { "HTTP 200" }.to_string(),
        }
    }

    async fn state(&self) -> crate::traffic::Result<DoorState> {
        Ok(self.state.lock().unwrap().clone())
    }

    async fn keep(&self, kept: Option<Kept>) -> crate::traffic::Result<()> {
        self.state.lock().unwrap().kept = kept;
        Ok(())
    }

    async fn remove(&self) -> crate::traffic::Result<Vec<String>> {
        *self.state.lock().unwrap() = DoorState::default();
        Ok(vec!["memory door".to_string()])
    }
}

/// Passes the first `passes` verifies, then fails every one; fails any
/// verify that includes the instance `fail_on`.
struct FlakyVerification {
    passes: Mutex<usize>,
    fail_on: Option<&'static str>,
}

impl Verification for FlakyVerification {
    fn launch_material(&self, generation: u64) -> Result<LaunchMaterial, KeyError> {
        FakeVerification::passing(true).launch_material(generation)
    }

    async fn verify(&self, instances: &[Instance]) -> Verdict {
        let pass = {
            let mut passes = self.passes.lock().unwrap();
            let pass = *passes > 0 && !instances.iter().any(|i| Some(i.id.0.as_str()) == self.fail_on);
            *passes = passes.saturating_sub(1);
            pass
        };
        FakeVerification::passing(pass).verify(instances).await
    }
}

impl Forget for FlakyVerification {
    fn forget(&self, _: &[Instance]) {}
}

fn traffic(extra: &str) -> TrafficSection {
    toml::from_str(&format!("port = 8000\nhold_secs = 2\n{extra}")).expect("a valid [traffic]")
}

fn options(strategy: Strategy) -> DeployOptions {
    DeployOptions {
        strategy,
        create: verified(),
        yes: true,
        keep_old: None,
    }
}

fn run<V: Verification>(
    provider: &MemoryProvider,
    verification: &V,
    door: &MemoryDoor,
    traffic: &TrafficSection,
    options: &DeployOptions,
) -> Result<DeployReport, EngineError> {
    block_on(rollout(
        provider,
        verification,
        door,
        traffic,
        &blueprint('b'),
        options,
        None,
        &printer(),
    ))
}

#[test]
fn blue_green_shifts_all_after_verification_then_drains_blue() {
    let provider = MemoryProvider::new(2);
    live_generation_one(&provider);
    let door = MemoryDoor::default();
    let report = run(
        &provider,
        &FakeVerification::passing(true),
        &door,
        &traffic(""),
        &options(Strategy::BlueGreen),
    )
    .unwrap();
    // Generation 1 (made by create, outside the door) goes behind it first.
    assert_eq!(door.shifts(), vec![vec![(1, 100)], vec![(1, 0), (2, 100)]]);
    assert_eq!(door.weights(), vec![(2, 100)], "blue drained out of the door");
    assert_eq!(provider.live_generations(), vec![2, 2]);
    assert_eq!(
        provider.calls.lock().unwrap().effects,
        vec!["launch g1", "launch g2", "destroy g1"]
    );
    let hold = report.door.unwrap().shifts[0].hold.clone().unwrap();
    assert!(
        hold.probes > 0 && hold.failed_probes == 0 && hold.verifies >= 1,
        "{hold:?}"
    );
}

#[test]
fn canary_holds_at_each_step() {
    let provider = MemoryProvider::new(1);
    live_generation_one(&provider);
    let door = MemoryDoor::default();
    let report = run(
        &provider,
        &FakeVerification::passing(true),
        &door,
        &traffic("steps = [10, 50, 100]"),
        &options(Strategy::Canary),
    )
    .unwrap();
    assert_eq!(
        door.shifts()[1..],
        [
            vec![(1, 90), (2, 10)],
            vec![(1, 50), (2, 50)],
            vec![(1, 0), (2, 100)]
        ]
    );
    assert_eq!(report.door.unwrap().shifts.len(), 3, "one guarded hold per step");
    assert_eq!(provider.live_generations(), vec![2]);
}

#[test]
fn a_probe_breach_shifts_back_at_once_and_destroys_green() {
    let provider = MemoryProvider::new(2);
    live_generation_one(&provider);
    let door = MemoryDoor::failing_on(2);
    let err = run(
        &provider,
        &FakeVerification::passing(true),
        &door,
        &traffic("steps = [25, 100]"),
        &options(Strategy::Canary),
    )
    .unwrap_err();
    let EngineError::Breach(breach) = &err else {
        panic!("{err:?}");
    };
    assert!(
        breach.check.contains("probes through the front door failed"),
        "{err}"
    );
    assert!(err.to_string().contains("respot debug i-2-0"), "{err}");
    assert_eq!(
        door.shifts(),
        vec![vec![(1, 100)], vec![(1, 75), (2, 25)], vec![(1, 100)]],
        "back to blue right after the first failed step"
    );
    assert_eq!(
        provider.live_generations(),
        vec![1, 1],
        "green destroyed, blue serves"
    );
    assert_eq!(door.weights(), vec![(1, 100)]);
}

#[test]
fn a_verify_breach_during_the_hold_names_the_failed_check() {
    let provider = MemoryProvider::new(1);
    live_generation_one(&provider);
    let door = MemoryDoor::default();
    // The create's verify passes; the guard's first one fails.
    let flaky = FlakyVerification {
        passes: Mutex::new(1),
        fail_on: None,
    };
    let err = run(
        &provider,
        &flaky,
        &door,
        &traffic(""),
        &options(Strategy::BlueGreen),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("verify failed: verified 0/1 instances"),
        "{err}"
    );
    assert!(err.verdict().is_some(), "the failed checks are shown");
    assert_eq!(err.exit_status(), ExitStatus::Failure);
    assert_eq!(provider.live_generations(), vec![1]);
    assert_eq!(door.weights(), vec![(1, 100)]);
}

#[test]
fn rolling_replaces_a_batch_at_a_time_and_never_drains_more() {
    for (max_unavailable, first_effects) in [
        (
            0,
            // The last launch tops up to the count: nothing is missing.
            vec![
                "launch g1",
                "launch g2",
                "destroy g1",
                "launch g2",
                "destroy g1",
                "launch g2",
            ],
        ),
        (
            2,
            vec![
                "launch g1",
                "destroy g1",
                "launch g2",
                "destroy g1",
                "launch g2",
                "launch g2",
            ],
        ),
    ] {
        let provider = MemoryProvider::new(4);
        live_generation_one(&provider);
        let door = MemoryDoor::default();
        let extra = format!("batch = 2\nmax_unavailable = {max_unavailable}");
        run(
            &provider,
            &FakeVerification::passing(true),
            &door,
            &traffic(&extra),
            &options(Strategy::Rolling),
        )
        .unwrap();
        assert_eq!(
            provider.calls.lock().unwrap().effects,
            first_effects,
            "max_unavailable {max_unavailable}"
        );
        let drains = door.drains.lock().unwrap();
        assert!(drains.iter().all(|d| d.len() <= 2), "{drains:?}");
        assert_eq!(provider.live_generations(), vec![2, 2, 2, 2]);
        assert_eq!(door.weights(), vec![(2, 100)]);
    }
    let provider = MemoryProvider::new(4);
    live_generation_one(&provider);
    let door = MemoryDoor::default();
    run(
        &provider,
        &FakeVerification::passing(true),
        &door,
        &traffic("batch = \"50%\""),
        &options(Strategy::Rolling),
    )
    .unwrap();
    // Shares follow instance counts: 4 old + 2 new, then 2 old + 4 new.
    assert_eq!(door.shifts()[1], vec![(1, 67), (2, 33)]);
    assert_eq!(door.shifts()[2], vec![(1, 34), (2, 66)]);
}

#[test]
fn a_failed_rolling_batch_leaves_the_old_ones_serving() {
    let provider = MemoryProvider::new(4);
    live_generation_one(&provider);
    let door = MemoryDoor::default();
    // Generation 1 and the first batch pass; the second batch fails.
    let flaky = FlakyVerification {
        passes: Mutex::new(usize::MAX),
        fail_on: Some("i-2-2"),
    };
    let err = run(
        &provider,
        &flaky,
        &door,
        &traffic("batch = 2"),
        &options(Strategy::Rolling),
    )
    .unwrap_err();
    assert!(matches!(err, EngineError::RolledBack { .. }), "{err:?}");
    assert_eq!(
        provider.live_generations(),
        vec![1, 1],
        "two old instances were already replaced"
    );
    assert_eq!(door.weights(), vec![(1, 100)]);
    assert!(
        !door.state.lock().unwrap().targets.contains_key(&2),
        "no new instance in the door"
    );
}

#[test]
fn keep_old_makes_rollback_instant_and_the_next_deploy_reaps_it() {
    let provider = MemoryProvider::new(1);
    let verification = FakeVerification::passing(true);
    live_generation_one(&provider);
    let door = MemoryDoor::default();
    let keep = DeployOptions {
        keep_old: Some(Duration::from_secs(600)),
        ..options(Strategy::BlueGreen)
    };
    let report = run(&provider, &verification, &door, &traffic(""), &keep).unwrap();
    assert_eq!(report.door.unwrap().kept.map(|k| k.generation), Some(1));
    assert_eq!(provider.live_generations(), vec![1, 2], "blue kept alive");
    assert_eq!(door.weights(), vec![(2, 100)], "but out of the door");

    let back = block_on(rollback(
        &provider,
        &verification,
        &door,
        "demo",
        true,
        None,
        &printer(),
    ))
    .unwrap();
    assert_eq!((back.from, back.to), (2, 1));
    assert_eq!(door.weights(), vec![(1, 100)]);
    assert_eq!(provider.live_generations(), vec![1]);
    assert_eq!(door.state.lock().unwrap().kept, None);

    let again = block_on(rollback(
        &provider,
        &verification,
        &door,
        "demo",
        true,
        None,
        &printer(),
    ))
    .unwrap_err();
    assert!(matches!(err_kind(&again), "nothing"), "{again}");

    // Keep again, then deploy: the kept generation is reaped first.
    run(&provider, &verification, &door, &traffic(""), &keep).unwrap();
    assert_eq!(provider.live_generations(), vec![1, 3]);
    run(
        &provider,
        &verification,
        &door,
        &traffic(""),
        &options(Strategy::BlueGreen),
    )
    .unwrap();
    assert_eq!(provider.live_generations(), vec![4]);
}

fn err_kind(err: &EngineError) -> &'static str {
    match err {
        EngineError::NothingToRollBack(_) => "nothing",
        _ => "other",
    }
}

#[test]
fn recreate_through_the_door_empties_it_first() {
    let provider = MemoryProvider::new(1);
    live_generation_one(&provider);
    let door = MemoryDoor::default();
    run(
        &provider,
        &FakeVerification::passing(true),
        &door,
        &traffic(""),
        &options(Strategy::Recreate),
    )
    .unwrap();
    assert_eq!(
        door.drains.lock().unwrap().len(),
        1,
        "blue left before green came"
    );
    assert_eq!(door.shifts(), vec![vec![(1, 100)], vec![(2, 100)]]);
    assert_eq!(
        provider.calls.lock().unwrap().effects,
        vec!["launch g1", "destroy g1", "launch g2"]
    );
}

/// Generations 1 and 2 both live, each registered in `door` under its own
/// number: what a run killed between launching the new generation and
/// reaping the old leaves.
fn two_generations_in_the_door(provider: &MemoryProvider, door: &MemoryDoor) {
    live_generation_one(provider);
    let existing = provider.instances.lock().unwrap().clone();
    block_on(crate::engine::create::launch_generation(
        provider,
        &FakeVerification::passing(true),
        &blueprint('b'),
        &existing,
        &verified(),
        &printer(),
    ))
    .unwrap();
    block_on(async {
        for generation in [1, 2] {
            let all = provider.list("demo").await.unwrap();
            let of: Vec<Instance> = all
                .into_iter()
                .filter(|i| i.generation == Some(generation))
                .collect();
            door.register(generation, &of).await.unwrap();
        }
    });
}

#[test]
fn an_interrupted_canary_converges_back_to_the_serving_generation() {
    let provider = MemoryProvider::new(1);
    let door = MemoryDoor::default();
    // As a SIGKILL mid-canary leaves it: both alive, 75/25.
    two_generations_in_the_door(&provider, &door);
    let weights: Weights = BTreeMap::from([(1, 75), (2, 25)]);
    block_on(door.shift(&weights)).unwrap();
    run(
        &provider,
        &FakeVerification::passing(true),
        &door,
        &traffic(""),
        &options(Strategy::BlueGreen),
    )
    .unwrap();
    assert_eq!(provider.live_generations(), vec![3], "2 reaped, 1 replaced by 3");
    assert_eq!(door.weights(), vec![(3, 100)]);
    // Generation 2 lost its share before it left the door.
    assert_eq!(door.shifts()[1], vec![(1, 100)]);
    assert_eq!(*door.drained_serving.lock().unwrap(), Vec::<InstanceId>::new());
}

/// As ALB regions are left when a run dies between two regions'
/// `ModifyListener`: the door's state says it diverged, with the first
/// region's weights (all on blue). Every region goes back to blue before
/// the other generation leaves the door.
#[test]
fn a_diverged_door_is_mended_before_anything_leaves_it() {
    let provider = MemoryProvider::new(1);
    let door = MemoryDoor::default();
    two_generations_in_the_door(&provider, &door);
    {
        let mut state = door.state.lock().unwrap();
        state.weights = BTreeMap::from([(1, 100), (2, 0)]);
        state.diverged = true;
    }
    run(
        &provider,
        &FakeVerification::passing(true),
        &door,
        &traffic(""),
        &options(Strategy::BlueGreen),
    )
    .unwrap();
    assert_eq!(
        door.shifts()[0],
        vec![(1, 100)],
        "mended first: {:?}",
        door.shifts()
    );
    assert_eq!(*door.drained_serving.lock().unwrap(), Vec::<InstanceId>::new());
    assert_eq!(provider.live_generations(), vec![3]);
}

/// `--no-verify`: no verify at launch nor during the holds (a verification
/// that fails every call would stop the rollout otherwise); the guard's
/// probes still run, in blue-green and rolling alike.
#[test]
fn no_verify_holds_under_probes_only() {
    for strategy in [Strategy::BlueGreen, Strategy::Rolling] {
        let provider = MemoryProvider::new(2);
        live_generation_one(&provider);
        let door = MemoryDoor::default();
        let mut unverified = options(strategy);
        unverified.create.verify = false;
        let report = run(
            &provider,
            &FakeVerification::passing(false),
            &door,
            &traffic(""),
            &unverified,
        )
        .unwrap_or_else(|e| panic!("{strategy:?}: {e}"));
        assert_eq!(provider.live_generations(), vec![2, 2], "{strategy:?}");
        for shift in report.door.unwrap().shifts {
            let hold = shift.hold.unwrap();
            assert!(hold.probes > 0 && hold.verifies == 0, "{strategy:?}: {hold:?}");
        }
    }
}
