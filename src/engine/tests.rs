//! Engine rules against an in-memory provider: no SDK, no QEMU, no SSH.

use std::sync::Mutex;

#[path = "rollout_tests.rs"]
mod rollout_tests;

use super::*;
use crate::output::{Format, Printer};
use crate::provider::{
    InstanceId, InstanceState, Inventory, LaunchRequest, Lifecycle, PlannedRegion, PoolKey, RegionCount,
    SshEndpoint,
};
use crate::template::{Blueprint, Digest, GitInfo};
use crate::verify::{CheckRow, Outcome, Target};

/// How the next `launch` behaves.
#[derive(Clone, Copy)]
enum Launch {
    /// Starts the instances and returns them all.
    Ok,
    /// Starts the instances, then fails: the caller learns no id.
    FailAfterStarting,
    /// Starts the instances but returns only the first (a lost reply).
    ForgetsAllButOne,
}

#[derive(Default)]
struct Calls {
    launched: Vec<u64>,
    destroyed: Vec<InstanceId>,
    /// "launch g2", "destroy g1": the order of effects.
    effects: Vec<String>,
}

/// A provider whose instances live in a Vec. `list` is the only truth.
struct MemoryProvider {
    count: usize,
    launch: Mutex<Launch>,
    instances: Mutex<Vec<Instance>>,
    calls: Mutex<Calls>,
}

impl MemoryProvider {
    fn new(count: usize) -> MemoryProvider {
        MemoryProvider {
            count,
            launch: Mutex::new(Launch::Ok),
            instances: Mutex::new(Vec::new()),
            calls: Mutex::new(Calls::default()),
        }
    }

    fn with_launch(self, launch: Launch) -> MemoryProvider {
        *self.launch.lock().unwrap() = launch;
        self
    }

    fn live_generations(&self) -> Vec<u64> {
        let mut generations: Vec<u64> = self
            .instances
            .lock()
            .unwrap()
            .iter()
            .filter(|i| i.state.is_live())
            .filter_map(|i| i.generation)
            .collect();
        generations.sort();
        generations
    }

    fn start(&self, request: &LaunchRequest) -> Vec<Instance> {
        let mut all = self.instances.lock().unwrap();
        // A rolling batch adds to what the generation has, up to the count.
        let have = all
            .iter()
            .filter(|i| i.generation == Some(request.generation))
            .count();
        let until = request
            .upto
            .map_or(self.count, |upto| (upto as usize).min(self.count));
        let started: Vec<Instance> = (have.min(until)..until)
            .map(|n| {
                instance(
                    &format!("i-{}-{n}", request.generation),
                    request.generation,
                    &request.digest,
                )
            })
            .collect();
        all.extend(started.iter().cloned());
        started
    }
}

fn instance(id: &str, generation: u64, digest: &Digest) -> Instance {
    Instance {
        id: InstanceId(id.to_string()),
        name: id.to_string(),
        region: "mem-1".to_string(),
        zone: None,
        instance_type: "t.small".to_string(),
        lifecycle: Lifecycle::Vm,
        state: InstanceState::Running,
        state_reason: None,
        public_ip: None,
        private_ip: None,
        ssh: Some(SshEndpoint {
            host: "127.0.0.1".to_string(),
            port: 2200,
        }),
        digest: Some(digest.clone()),
        version: None,
        generation: Some(generation),
        launched_at: None,
        secrets: None,
    }
}

impl Provider for MemoryProvider {
    async fn list(&self, _deployment: &str) -> Result<Vec<Instance>, ProviderError> {
        Ok(self.instances.lock().unwrap().clone())
    }

    async fn launch(&self, request: &LaunchRequest) -> Result<Vec<Instance>, ProviderError> {
        {
            let mut calls = self.calls.lock().unwrap();
            calls.launched.push(request.generation);
            calls.effects.push(format!("launch g{}", request.generation));
        }
        let started = self.start(request);
        let launch = *self.launch.lock().unwrap();
        match launch {
            Launch::Ok => Ok(started),
            Launch::FailAfterStarting => Err(ProviderError::Unreachable {
                region: "mem-1".to_string(),
                action: "RunInstances".to_string(),
                detail: "the connection dropped mid-launch".to_string(),
            }),
            Launch::ForgetsAllButOne => Ok(started.into_iter().take(1).collect()),
        }
    }

    async fn destroy(
        &self,
        _deployment: &str,
        instances: &[Instance],
        _wait: bool,
    ) -> Result<DestroyReport, ProviderError> {
        let mut all = self.instances.lock().unwrap();
        let mut calls = self.calls.lock().unwrap();
        let mut report = DestroyReport::default();
        for wanted in instances {
            if let Some(found) = all.iter_mut().find(|i| i.id == wanted.id && i.state.is_live()) {
                found.state = InstanceState::Terminated;
                calls.destroyed.push(found.id.clone());
                calls
                    .effects
                    .push(format!("destroy g{}", found.generation.unwrap_or(0)));
                report.terminated.push(found.id.clone());
            }
        }
        calls.effects.dedup();
        Ok(report)
    }

    async fn capacity_plan(&self) -> Result<Vec<PlannedRegion>, ProviderError> {
        Ok(vec![PlannedRegion {
            region: "mem-1".to_string(),
            count: self.count as u32,
            instance_type: "t.small".to_string(),
            lifecycle: Lifecycle::Vm,
            price_per_hour: Some(0.5),
            price_note: None,
        }])
    }

    fn wanted(&self) -> Vec<RegionCount> {
        vec![RegionCount {
            region: "mem-1".to_string(),
            count: self.count as u32,
        }]
    }

    async fn launch_more(
        &self,
        request: &LaunchRequest,
        _counts: &[RegionCount],
        _avoid: &[PoolKey],
    ) -> Result<Vec<Instance>, ProviderError> {
        self.launch(request).await
    }

    async fn interruption_notices(&self, _deployment: &str) -> Result<Vec<InstanceId>, ProviderError> {
        Ok(Vec::new())
    }

    fn take_pools_without_capacity(&self) -> Vec<PoolKey> {
        Vec::new()
    }

    async fn inventory(&self) -> Result<Inventory, ProviderError> {
        let instances = self.instances.lock().unwrap().clone();
        Ok(Inventory {
            instances: instances.into_iter().map(|i| ("demo".to_string(), i)).collect(),
            ..Inventory::default()
        })
    }
}

/// Passes or fails every instance; remembers what it was asked to forget.
struct FakeVerification {
    pass: bool,
    forgotten: Mutex<Vec<InstanceId>>,
}

impl FakeVerification {
    fn passing(pass: bool) -> FakeVerification {
        FakeVerification {
            pass,
            forgotten: Mutex::new(Vec::new()),
        }
    }
}

impl Verification for FakeVerification {
    fn launch_material(&self, generation: u64) -> Result<LaunchMaterial, KeyError> {
        Ok(LaunchMaterial {
            generation,
            ..LaunchMaterial::default()
        })
    }

    async fn verify(&self, instances: &[Instance]) -> Verdict {
        unit_verdict(instances, self.pass, "failed")
    }
}

/// A verdict of one `unit hello.service` row per instance, all passing or
/// all failing (`got` is what a failing row says): what a test's
/// `Verification` answers without SSH.
pub(crate) fn unit_verdict(instances: &[Instance], pass: bool, got: &str) -> Verdict {
    let rows = instances
        .iter()
        .map(|i| {
            let target = Target {
                instance: i.id.to_string(),
                name: i.name.clone(),
                endpoint: i.ssh.clone().expect("test instances have an endpoint"),
            };
            let outcome = if pass { Outcome::Pass } else { Outcome::Fail };
            CheckRow::new(&target, "unit hello.service", outcome, got)
        })
        .collect();
    Verdict {
        report: FleetReport::new(instances.len(), rows),
        unreachable: 0,
    }
}

impl Forget for FakeVerification {
    fn forget(&self, instances: &[Instance]) {
        self.forgotten
            .lock()
            .unwrap()
            .extend(instances.iter().map(|i| i.id.clone()));
    }
}

fn blueprint(digest_byte: char) -> Blueprint {
    Blueprint {
        deployment: "demo".to_string(),
        document: "#cloud-config\n".to_string(),
        digest: Digest::parse(&digest_byte.to_string().repeat(64)).expect("64 hex chars"),
        version: "test".to_string(),
        git: GitInfo::default(),
        files: Vec::new(),
        units: Vec::new(),
        ssh_user: "admin".to_string(),
        authorized_keys: Vec::new(),
        bundle: None,
    }
}

/// Creates generation 1 of `blueprint('a')`, verified, as the live fleet.
fn live_generation_one(provider: &MemoryProvider) -> CreateReport {
    block_on(create(
        provider,
        &FakeVerification::passing(true),
        &blueprint('a'),
        &verified(),
        &printer(),
    ))
    .expect("generation 1 is created")
}

fn printer() -> Printer {
    Printer::new(Format::Table, true, 0)
}

fn verified() -> CreateOptions {
    CreateOptions {
        verify: true,
        ..CreateOptions::default()
    }
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a test runtime")
        .block_on(future)
}

#[test]
fn rollback_lists_the_generation_and_never_trusts_memory() {
    for (name, launch, pass) in [
        ("launch failed after starting", Launch::FailAfterStarting, true),
        (
            "launch forgot instances, verification failed",
            Launch::ForgetsAllButOne,
            false,
        ),
    ] {
        let provider = MemoryProvider::new(3).with_launch(launch);
        let verification = FakeVerification::passing(pass);
        let err = block_on(create(
            &provider,
            &verification,
            &blueprint('a'),
            &verified(),
            &printer(),
        ))
        .expect_err(name);
        let EngineError::RolledBack { cleanup, .. } = &err else {
            panic!("{name}: want RolledBack, got {err:?}");
        };
        assert_eq!(cleanup.terminated.len(), 3, "{name}: all three found by listing");
        assert!(
            provider.live_generations().is_empty(),
            "{name}: nothing left running"
        );
        assert_eq!(
            verification.forgotten.lock().unwrap().len(),
            3,
            "{name}: host keys forgotten"
        );
        assert_eq!(err.exit_status(), ExitStatus::Failure, "{name}");
    }
}

#[test]
fn a_failed_verification_carries_its_report_and_keep_on_failure_keeps() {
    let provider = MemoryProvider::new(2);
    let options = CreateOptions {
        keep_on_failure: true,
        ..verified()
    };
    let err = block_on(create(
        &provider,
        &FakeVerification::passing(false),
        &blueprint('a'),
        &options,
        &printer(),
    ))
    .expect_err("verification fails");
    assert!(matches!(err, EngineError::Kept { kept: 2, .. }), "{err:?}");
    let verdict = err.verdict().expect("the failed verdict travels with the error");
    assert_eq!(verdict.report.failed_instances.len(), 2);
    assert_eq!(provider.live_generations(), vec![1, 1], "kept for debug");
}

#[test]
fn a_second_create_is_refused_without_launching() {
    let provider = MemoryProvider::new(2);
    let verification = FakeVerification::passing(true);
    let report = live_generation_one(&provider);
    assert_eq!((report.generation, report.instances.len()), (1, 2));
    let err = block_on(create(
        &provider,
        &verification,
        &blueprint('a'),
        &verified(),
        &printer(),
    ))
    .unwrap_err();
    assert!(
        matches!(err, EngineError::AlreadyLive { count: 2, .. }),
        "{err:?}"
    );
    assert_eq!(
        provider.calls.lock().unwrap().launched,
        vec![1],
        "no second launch"
    );
}

#[test]
fn blue_green_never_touches_the_old_generation_on_failure() {
    let provider = MemoryProvider::new(2);
    live_generation_one(&provider);
    let options = DeployOptions {
        keep_old: None,
        strategy: Strategy::BlueGreen,
        create: verified(),
        yes: true,
    };
    let err = block_on(deploy(
        &provider,
        &FakeVerification::passing(false),
        &blueprint('b'),
        &options,
        None,
        &printer(),
    ))
    .expect_err("the new generation fails verification");
    assert!(matches!(err, EngineError::RolledBack { .. }), "{err:?}");
    assert_eq!(provider.live_generations(), vec![1, 1], "generation 1 still runs");
    let calls = provider.calls.lock().unwrap();
    assert!(
        calls.destroyed.iter().all(|id| id.0.starts_with("i-2-")),
        "{:?}",
        calls.destroyed
    );
}

#[test]
fn blue_green_creates_before_destroying_and_recreate_after() {
    for (strategy, want) in [
        (Strategy::BlueGreen, vec!["launch g1", "launch g2", "destroy g1"]),
        (Strategy::Recreate, vec!["launch g1", "destroy g1", "launch g2"]),
    ] {
        let provider = MemoryProvider::new(1);
        let verification = FakeVerification::passing(true);
        live_generation_one(&provider);
        let options = DeployOptions {
            keep_old: None,
            strategy,
            create: verified(),
            yes: true,
        };
        let report = block_on(deploy(
            &provider,
            &verification,
            &blueprint('b'),
            &options,
            None,
            &printer(),
        ))
        .unwrap();
        assert_eq!(provider.calls.lock().unwrap().effects, want, "{strategy:?}");
        assert_eq!(report.replaced.len(), 1, "{strategy:?}");
        assert!(report.destroyed.is_some(), "{strategy:?}");
        assert_eq!(provider.live_generations(), vec![2], "{strategy:?}");
    }
}

#[test]
fn deploy_and_destroy_decline_the_same_way() {
    let provider = MemoryProvider::new(1);
    let verification = FakeVerification::passing(true);
    live_generation_one(&provider);
    let no = |_: &str| Ok(false);
    let deploy_options = DeployOptions {
        keep_old: None,
        create: verified(),
        ..DeployOptions::default()
    };
    let destroy_options = DestroyOptions::default();
    let declined = [
        block_on(deploy(
            &provider,
            &verification,
            &blueprint('b'),
            &deploy_options,
            Some(&no),
            &printer(),
        ))
        .unwrap_err(),
        block_on(destroy(
            &provider,
            &verification,
            "demo",
            &destroy_options,
            Some(&no),
            &printer(),
        ))
        .unwrap_err(),
    ];
    let no_terminal = [
        block_on(deploy(
            &provider,
            &verification,
            &blueprint('b'),
            &deploy_options,
            None,
            &printer(),
        ))
        .unwrap_err(),
        block_on(destroy(
            &provider,
            &verification,
            "demo",
            &destroy_options,
            None,
            &printer(),
        ))
        .unwrap_err(),
    ];
    for err in &declined {
        assert!(matches!(err, EngineError::Declined), "{err:?}");
        assert_eq!(err.exit_status(), ExitStatus::Failure);
    }
    for err in &no_terminal {
        assert!(matches!(err, EngineError::NeedsConfirmation { .. }), "{err:?}");
        assert_eq!(err.exit_status(), ExitStatus::Usage);
    }
    assert_eq!(provider.live_generations(), vec![1], "nothing was touched");
    assert!(provider.calls.lock().unwrap().destroyed.is_empty());
}

#[test]
fn plan_reads_only_and_compares_digests() {
    let provider = MemoryProvider::new(2);
    let new = block_on(plan(&provider, &blueprint('a'), Strategy::Recreate)).unwrap();
    assert_eq!(new.change, Change::New);
    assert_eq!(new.cost_per_hour, Some(1.0));
    live_generation_one(&provider);
    let same = block_on(plan(&provider, &blueprint('a'), Strategy::Recreate)).unwrap();
    let changed = block_on(plan(&provider, &blueprint('b'), Strategy::Recreate)).unwrap();
    assert_eq!(
        (same.change, changed.change),
        (Change::Unchanged, Change::Changed)
    );
    assert_eq!(
        changed.regions[0].destroy_digests,
        vec!["aaaaaaaaaaaa".to_string()]
    );
    assert_eq!(
        provider.calls.lock().unwrap().launched,
        vec![1],
        "plan launched nothing"
    );
}

#[test]
fn counts_are_sorted_by_key() {
    assert_eq!(count_by(["b", "a", "b"].into_iter()), "a: 1, b: 2");
    assert_eq!(count_by(std::iter::empty()), "");
}

/// The progress events of a scripted create, then of a create whose
/// launch fails, as the JSON lines `--output json` prints (times filtered).
#[test]
fn create_reports_each_phase_and_a_failed_launch() {
    let printer = printer();
    let provider = MemoryProvider::new(2);
    block_on(create(
        &provider,
        &FakeVerification::passing(true),
        &blueprint('a'),
        &verified(),
        &printer,
    ))
    .expect("created");
    let failing = MemoryProvider::new(1).with_launch(Launch::FailAfterStarting);
    block_on(create(
        &failing,
        &FakeVerification::passing(true),
        &blueprint('b'),
        &verified(),
        &printer,
    ))
    .expect_err("the launch fails");
    let lines: Vec<String> = printer
        .timeline()
        .events()
        .iter()
        .map(crate::output::json_line)
        .collect();
    insta::with_settings!({filters => vec![(r#""(elapsed|took)_ms":\d+"#, r#""${1}_ms":"[ms]""#)]}, {
        insta::assert_snapshot!(lines.join("\n"));
    });
}
