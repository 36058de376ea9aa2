//! `heal` through the real engine and the AWS provider on the scripted
//! fake: an interruption notice is acted on before the loss, in another
//! pool, and a failed heal takes back only what it launched.

use std::sync::Mutex;

use super::super::ec2::Ec2Api;
use super::super::fake::FakeEc2;
use super::{DEPLOYMENT, live_ours, provider, request};
use crate::config::Fallback;
use crate::engine::tests::unit_verdict;
use crate::engine::{self, BadPools, EngineError, Forget, HealOptions, NoFrontDoor, Verdict, Verification};
use crate::keys::KeyError;
use crate::output::{Format, Printer};
use crate::provider::{Instance, PoolKey, Provider};
use crate::template::{Blueprint, GitInfo, LaunchMaterial};

/// Passes or fails; records, at each verification, which of our
/// instances the fake still runs.
struct Recorder {
    fake: FakeEc2,
    pass: bool,
    live_at_verify: Mutex<Vec<Vec<String>>>,
}

impl Forget for Recorder {
    fn forget(&self, _instances: &[Instance]) {}
}

impl Verification for Recorder {
    fn launch_material(&self, generation: u64) -> Result<LaunchMaterial, KeyError> {
        Ok(LaunchMaterial {
            generation,
            ..LaunchMaterial::default()
        })
    }

    async fn verify(&self, instances: &[Instance]) -> Verdict {
        let live = live_ours(&self.fake).into_iter().map(|(_, id)| id).collect();
        self.live_at_verify.lock().unwrap().push(live);
        unit_verdict(instances, self.pass, "inactive")
    }
}

/// The blueprint `request(1)` was rendered from (same digest).
fn blueprint() -> Blueprint {
    let request = request(1);
    Blueprint {
        deployment: DEPLOYMENT.to_string(),
        document: "#cloud-config\n".to_string(),
        digest: request.digest,
        version: request.version,
        git: GitInfo::default(),
        files: Vec::new(),
        units: Vec::new(),
        ssh_user: "admin".to_string(),
        authorized_keys: Vec::new(),
        bundle: None,
    }
}

fn quiet() -> Printer {
    Printer::new(Format::Table, true, 0)
}

/// Index of the first call of `action` (whose detail contains `detail`).
fn first_call(fake: &FakeEc2, action: &str, detail: &str) -> Option<usize> {
    fake.calls()
        .iter()
        .position(|c| c.action == action && c.detail.contains(detail))
}

#[tokio::test]
async fn an_interruption_notice_is_replaced_in_another_pool_before_it_goes() {
    let fake = FakeEc2::new("eu-west-1");
    let aws = provider(&fake, &[("eu-west-1", 2)], Fallback::None);
    let fleet = aws.launch(&request(1)).await.expect("generation 1 launches");
    let marked = fleet[0].clone();
    assert_eq!(
        (marked.instance_type.as_str(), marked.zone.as_deref()),
        ("t3.small", Some("eu-west-1a")),
        "the first pool"
    );
    fake.mark_for_termination(&marked.id.0);
    let launches_before = fake.launch_specs().len();
    let verification = Recorder {
        fake: fake.clone(),
        pass: true,
        live_at_verify: Mutex::new(Vec::new()),
    };
    let mut memory = BadPools::default();
    let options = HealOptions { verify: true };
    let report = engine::heal(
        &aws,
        &verification,
        &NoFrontDoor,
        &blueprint(),
        &mut memory,
        &options,
        &quiet(),
    )
    .await
    .expect("heal succeeds");

    // One replacement, in another pool than the marked instance's.
    assert_eq!(report.launched.len(), 1, "{report:?}");
    let replacement = &report.launched[0];
    assert_ne!(
        PoolKey::of(replacement),
        PoolKey::of(&marked),
        "the replacement avoided the interrupted pool"
    );
    assert_eq!(replacement.generation, Some(1));
    assert_eq!(replacement.digest, marked.digest);
    let specs = fake.launch_specs();
    assert_eq!(
        specs.len(),
        launches_before + 1,
        "one RunInstances, in the first pool not avoided"
    );
    assert_eq!(specs[launches_before].1.zone, "eu-west-1b");
    // Launched and verified while the marked instance still ran; only then
    // was it terminated, and nothing else was.
    let at_verify = verification.live_at_verify.lock().unwrap().clone();
    assert_eq!(at_verify.len(), 1);
    assert!(at_verify[0].contains(&marked.id.0), "{at_verify:?}");
    let run = first_call(&fake, "RunInstances", "eu-west-1b").expect("a launch in eu-west-1b");
    let terminate = first_call(&fake, "TerminateInstances", &marked.id.0).expect("the marked one ends");
    assert!(run < terminate, "replacement first: {:?}", fake.calls());
    assert_eq!(
        fake.calls_of("TerminateInstances"),
        [("eu-west-1".to_string(), marked.id.0.clone())]
    );
    let mut live: Vec<String> = live_ours(&fake).into_iter().map(|(_, id)| id).collect();
    live.sort();
    let mut want = vec![fleet[1].id.0.clone(), replacement.id.0.clone()];
    want.sort();
    assert_eq!(live, want);
    assert_eq!(
        memory.avoided(std::time::SystemTime::now()),
        [PoolKey::of(&marked)]
    );

    assert_a_second_heal_only_reads(&aws, &fake, &verification, &mut memory).await;
}

/// A heal right after a heal changes nothing and makes only Describe calls.
async fn assert_a_second_heal_only_reads(
    aws: &crate::provider::aws::AwsProvider<FakeEc2>,
    fake: &FakeEc2,
    verification: &Recorder,
    memory: &mut BadPools,
) {
    let calls = fake.calls().len();
    let again = engine::heal(
        aws,
        verification,
        &NoFrontDoor,
        &blueprint(),
        memory,
        &HealOptions { verify: true },
        &quiet(),
    )
    .await
    .expect("second heal");
    assert!(again.is_noop(), "{again:?}");
    let actions: Vec<&str> = fake.calls()[calls..].iter().map(|c| c.action).collect();
    assert!(actions.iter().all(|a| a.starts_with("Describe")), "{actions:?}");
}

#[tokio::test]
async fn a_failed_heal_takes_back_only_what_it_launched() {
    let fake = FakeEc2::new("eu-west-1");
    let aws = provider(&fake, &[("eu-west-1", 2)], Fallback::None);
    let fleet = aws.launch(&request(1)).await.expect("generation 1 launches");
    // Reclaimed: gone with EC2's spot reason.
    fake.terminate_instances(&[fleet[0].id.0.clone()]).await.unwrap();
    fake.set_state_reason(
        &fleet[0].id.0,
        "Server.SpotInstanceTermination: Spot instance termination",
    );
    let verification = Recorder {
        fake: fake.clone(),
        pass: false,
        live_at_verify: Mutex::new(Vec::new()),
    };
    let mut memory = BadPools::default();
    let err = engine::heal(
        &aws,
        &verification,
        &NoFrontDoor,
        &blueprint(),
        &mut memory,
        &HealOptions { verify: true },
        &quiet(),
    )
    .await
    .expect_err("verification fails");
    let EngineError::HealRolledBack { cleanup, verdict, .. } = &err else {
        panic!("want a heal rollback, got {err:?}");
    };
    assert!(verdict.is_some());
    assert_eq!(cleanup.terminated.len(), 1, "{cleanup:?}");
    assert_ne!(
        cleanup.terminated[0], fleet[1].id,
        "the healthy instance is not touched"
    );
    let live: Vec<String> = live_ours(&fake).into_iter().map(|(_, id)| id).collect();
    assert_eq!(live, [fleet[1].id.0.clone()]);
    assert!(err.to_string().contains("heal failed"), "{err}");
    // The reclaimed instance's pool is remembered.
    assert_eq!(
        memory.avoided(std::time::SystemTime::now()),
        [PoolKey::of(&fleet[0])]
    );
}
