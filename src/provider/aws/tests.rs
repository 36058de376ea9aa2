//! The provider's launch, fallback, quota, rollback and destroy logic
//! against the scripted fake: every test asserts on the values returned
//! and on the calls AWS would have seen. No sockets, no wall-clock waits.

mod fleet;
mod hardening;
mod heal;
mod limits;

use std::time::Duration;

use super::connect::check_regions;
use super::ec2::Ec2Api;
use super::fake::{FakeEc2, Rule};
use super::{AwsProvider, LaunchSettings, Settings, Waits};
use crate::config::{Fallback, RegionSection};
use crate::exit::ExitStatus;
use crate::provider::{Instance, InstanceState, LaunchRequest, Lifecycle, Provider, ProviderError, tag};
use crate::template::{Digest, UserData};

const CIDR: &str = "198.51.100.0/24";
const DEPLOYMENT: &str = "fleet";
const SPOT_QUOTA: &str = "All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests (L-34B43A08)";

pub(super) fn provider(fake: &FakeEc2, regions: &[(&str, u32)], fallback: Fallback) -> AwsProvider<FakeEc2> {
    over_fake(fake, regions, settings(regions, fallback))
}

/// The settings of [`provider`]: `regions` (name, count), two types, a price.
pub(super) fn settings(regions: &[(&str, u32)], fallback: Fallback) -> Settings {
    Settings {
        image: "al2023".to_string(),
        instance_types: vec!["t3.small".to_string(), "t3a.small".to_string()],
        max_price: Some(0.05),
        fallback,
        open_ports: Vec::new(),
        allow_cidr: Some(CIDR.to_string()),
        encrypt_volumes: true,
        bundle_bucket: None,
        ssm_parameters: Vec::new(),
        regions: regions
            .iter()
            .map(|(name, count)| RegionSection {
                name: name.to_string(),
                count: *count,
                zones: Vec::new(),
                instance_types: None,
            })
            .collect(),
        launch: LaunchSettings::default(),
        allocation: crate::config::Allocation::Ordered,
    }
}

/// A provider over `fake` with `settings`, its waits short for tests.
pub(super) fn over_fake(fake: &FakeEc2, regions: &[(&str, u32)], settings: Settings) -> AwsProvider<FakeEc2> {
    let names: Vec<String> = regions.iter().map(|(name, _)| name.to_string()).collect();
    let mut provider = AwsProvider::with_api(fake.clone(), &names, settings, "HINT".to_string());
    provider.waits = Waits {
        running: Duration::from_secs(5),
        terminated: Duration::from_secs(5),
        group_delete: Duration::from_secs(5),
        consistency: Duration::from_secs(5),
        pause: Duration::ZERO,
    };
    provider
}

pub(super) fn request(generation: u64) -> LaunchRequest {
    LaunchRequest {
        deployment: DEPLOYMENT.to_string(),
        digest: Digest::parse(&"ab".repeat(32)).expect("64 hex chars"),
        version: "test".to_string(),
        generation,
        user_data: UserData {
            document: "#cloud-config\n".to_string(),
            packed: b"#cloud-config\n".to_vec(),
            gzipped: false,
        },
        signer: None,
        upto: None,
        bundle: None,
    }
}

/// One untagged instance and one of another deployment per region.
pub(super) fn seed_foreign(fake: &FakeEc2, regions: &[&str]) -> Vec<String> {
    regions
        .iter()
        .flat_map(|r| {
            [
                fake.seed_instance(r, &[]),
                fake.seed_instance(r, &[(tag::DEPLOYMENT, "other")]),
            ]
        })
        .collect()
}

pub(super) fn assert_alive(fake: &FakeEc2, ids: &[String]) {
    let live: Vec<String> = fake.live().into_iter().map(|(_, id)| id).collect();
    for id in ids {
        assert!(live.contains(id), "foreign {id} was terminated");
    }
}

/// Our live instances in the fake, as (region, id).
pub(super) fn live_ours(fake: &FakeEc2) -> Vec<(String, String)> {
    fake.instances()
        .into_iter()
        .filter(|(_, i)| {
            i.state.is_live()
                && i.tags
                    .iter()
                    .any(|(k, v)| k == tag::DEPLOYMENT && v == DEPLOYMENT)
        })
        .map(|(r, i)| (r, i.id))
        .collect()
}

pub(super) fn region_failures(err: &ProviderError) -> Vec<(&str, &ProviderError)> {
    match err {
        ProviderError::Regions { failures, .. } => {
            failures.iter().map(|f| (f.region.as_str(), &f.error)).collect()
        }
        other => panic!("not a multi-region error: {other:?}"),
    }
}

#[tokio::test]
async fn launch_tags_at_creation_and_returns_running_instances() {
    let fake = FakeEc2::new("eu-west-1");
    let aws = provider(&fake, &[("eu-west-1", 2), ("us-east-1", 1)], Fallback::None);
    let instances = aws.launch(&request(1)).await.expect("launch");
    assert_eq!(instances.len(), 3);
    for instance in &instances {
        assert_eq!(instance.state, InstanceState::Running, "{instance:?}");
        assert_eq!(instance.lifecycle, Lifecycle::Spot);
        assert_eq!(instance.generation, Some(1));
        assert!(instance.ssh.is_some(), "{instance:?}");
    }
    assert_eq!(
        fake.calls_of("RunInstances"),
        [
            ("eu-west-1".to_string(), "t3.small eu-west-1a spot x2".to_string()),
            ("us-east-1".to_string(), "t3.small us-east-1a spot x1".to_string()),
        ]
    );
    for (_, raw) in fake.instances() {
        let keys: Vec<&str> = raw.tags.iter().map(|(k, _)| k.as_str()).collect();
        for key in [
            tag::DEPLOYMENT,
            tag::DIGEST,
            tag::GENERATION,
            tag::CREATED_BY,
            tag::NAME,
            "respot:image",
        ] {
            assert!(keys.contains(&key), "{} lacks {key}: {keys:?}", raw.id);
        }
    }
    assert_eq!(
        fake.calls_of("GetCallerIdentity").len(),
        1,
        "the caller is fetched once"
    );
    assert_eq!(
        fake.calls_of("AuthorizeSecurityGroupIngress")
            .iter()
            .map(|(_, d)| d
                .split_once(' ')
                .map(|(_, rest)| rest.to_string())
                .unwrap_or_default())
            .collect::<Vec<_>>(),
        [format!("[22] {CIDR}"), format!("[22] {CIDR}")],
        "SSH only, only from allow_cidr"
    );
    assert_eq!(fake.calls_of("CreateTags"), [], "never tag after launch");
}

#[tokio::test]
async fn no_capacity_in_the_first_pool_launches_in_the_next() {
    let fake = FakeEc2::new("eu-west-1");
    fake.script(Rule::fail("RunInstances", "InsufficientInstanceCapacity").when("t3.small eu-west-1a"));
    let aws = provider(&fake, &[("eu-west-1", 2)], Fallback::None);
    let instances = aws.launch(&request(1)).await.expect("launch");
    assert_eq!(
        fake.calls_of("RunInstances")
            .into_iter()
            .map(|(_, d)| d)
            .collect::<Vec<_>>(),
        ["t3.small eu-west-1a spot x2", "t3.small eu-west-1b spot x2"]
    );
    let zones: Vec<Option<&str>> = instances.iter().map(|i| i.zone.as_deref()).collect();
    assert_eq!(zones, [Some("eu-west-1b"), Some("eu-west-1b")]);
}

#[tokio::test]
async fn a_type_without_capacity_anywhere_moves_to_the_next_type() {
    let fake = FakeEc2::new("eu-west-1");
    fake.script(Rule::fail("RunInstances", "InsufficientInstanceCapacity").when("t3.small "));
    let aws = provider(&fake, &[("eu-west-1", 2)], Fallback::None);
    let instances = aws.launch(&request(1)).await.expect("launch");
    let types: Vec<&str> = instances.iter().map(|i| i.instance_type.as_str()).collect();
    assert_eq!(types, ["t3a.small", "t3a.small"]);
    assert_eq!(
        fake.calls_of("RunInstances").len(),
        3,
        "two empty pools, one call each"
    );
}

#[tokio::test]
async fn every_pool_empty_is_no_capacity_with_every_pool_named() {
    let fake = FakeEc2::new("eu-west-1");
    fake.script(Rule::fail("RunInstances", "InsufficientInstanceCapacity"));
    let aws = provider(&fake, &[("eu-west-1", 2)], Fallback::None);
    let err = aws.launch(&request(1)).await.expect_err("no capacity");
    assert_eq!(err.exit_status(), ExitStatus::Failure);
    let failures = region_failures(&err);
    let [
        (
            _,
            ProviderError::NoCapacity {
                launched,
                wanted,
                tried,
                suggest_fallback,
                ..
            },
        ),
    ] = failures[..]
    else {
        panic!("one NoCapacity: {err:?}");
    };
    assert_eq!((*launched, *wanted), (0, 2));
    assert_eq!(tried.len(), 4, "2 types x 2 zones: {tried:?}");
    assert!(suggest_fallback);
    assert!(
        err.to_string().contains("or set aws.fallback = \"on-demand\""),
        "{err}"
    );
}

#[tokio::test]
async fn a_spot_quota_in_one_region_is_a_typed_quota_error() {
    let cases = [
        (
            "spot request quota",
            "MaxSpotInstanceCountExceeded",
            Fallback::None,
        ),
        (
            "vCPU limit, even with fallback",
            "VcpuLimitExceeded",
            Fallback::OnDemand,
        ),
    ];
    for (name, code, fallback) in cases {
        let fake = FakeEc2::new("eu-west-1");
        fake.script(Rule::fail("RunInstances", code).in_region("us-east-1"));
        let aws = provider(&fake, &[("eu-west-1", 2), ("us-east-1", 2)], fallback);
        let err = aws.launch(&request(1)).await.expect_err(name);
        assert_eq!(err.exit_status(), ExitStatus::Provider, "{name}");
        let failures = region_failures(&err);
        let [
            (
                "us-east-1",
                ProviderError::Quota {
                    quota,
                    market,
                    code: got,
                    ..
                },
            ),
        ] = failures[..]
        else {
            panic!("{name}: one quota error in us-east-1: {err:?}");
        };
        assert_eq!(*quota, SPOT_QUOTA, "{name}");
        assert_eq!((*market, got.as_str()), (Lifecycle::Spot, code), "{name}");
        let text = err.to_string();
        assert!(
            text.contains("Service Quotas") && text.contains("us-east-1"),
            "{name}: {text}"
        );
        assert_eq!(
            fake.calls_of("RunInstances").len(),
            2,
            "{name}: a quota ends the region at once"
        );
        assert_eq!(live_ours(&fake).len(), 2, "{name}: the healthy region launched");
    }
}

#[tokio::test]
async fn a_throttle_that_outlasts_the_retries_surfaces_as_throttled() {
    let fake = FakeEc2::new("eu-west-1");
    fake.script(Rule::fail("RunInstances", "RequestLimitExceeded"));
    let aws = provider(&fake, &[("eu-west-1", 1)], Fallback::OnDemand);
    let err = aws.launch(&request(1)).await.expect_err("throttled");
    let failures = region_failures(&err);
    let [(_, ProviderError::Throttled { action, code, .. })] = failures[..] else {
        panic!("one Throttled: {err:?}");
    };
    assert_eq!(
        (action.as_str(), code.as_str()),
        ("RunInstances", "RequestLimitExceeded")
    );
    assert_eq!(err.exit_status(), ExitStatus::Provider);
    assert_eq!(
        fake.calls_of("RunInstances").len(),
        1,
        "throttling is not a pool's capacity"
    );
}

#[tokio::test]
async fn a_spot_quota_falls_back_to_on_demand() {
    let fake = FakeEc2::new("eu-west-1");
    fake.script(Rule::fail("RunInstances", "MaxSpotInstanceCountExceeded").when(" spot "));
    let aws = provider(&fake, &[("eu-west-1", 2)], Fallback::OnDemand);
    let instances = aws.launch(&request(1)).await.expect("launch");
    assert!(
        instances.iter().all(|i| i.lifecycle == Lifecycle::OnDemand),
        "{instances:?}"
    );
    assert_eq!(
        fake.calls_of("RunInstances")
            .into_iter()
            .map(|(_, d)| d)
            .collect::<Vec<_>>(),
        ["t3.small eu-west-1a spot x2", "t3.small eu-west-1a on-demand x2"],
        "the other spot pools are skipped"
    );
}

#[tokio::test]
async fn a_spot_reclaim_while_waiting_fails_with_aws_reason() {
    let fake = FakeEc2::new("eu-west-1");
    fake.launch_as(InstanceState::Terminated, "Server.SpotInstanceTermination");
    let aws = provider(&fake, &[("eu-west-1", 1)], Fallback::None);
    let err = aws.launch(&request(1)).await.expect_err("lost");
    let failures = region_failures(&err);
    let [(_, ProviderError::InstanceLost { reason, .. })] = failures[..] else {
        panic!("one InstanceLost: {err:?}");
    };
    assert_eq!(reason.as_deref(), Some("Server.SpotInstanceTermination"));
    assert_eq!(err.exit_status(), ExitStatus::Failure);
}

#[tokio::test]
async fn a_partial_launch_across_regions_is_fully_rolled_back_by_the_caller() {
    let regions = ["eu-west-1", "us-east-1", "us-west-2"];
    let fake = FakeEc2::new("eu-west-1");
    let foreign = seed_foreign(&fake, &regions);
    fake.script(Rule::fail("RunInstances", "MaxSpotInstanceCountExceeded").in_region("us-east-1"));
    let aws = provider(
        &fake,
        &[("eu-west-1", 2), ("us-east-1", 2), ("us-west-2", 2)],
        Fallback::None,
    );
    let request = request(3);
    let err = aws.launch(&request).await.expect_err("quota in us-east-1");
    assert_eq!(region_failures(&err).len(), 1);
    assert_eq!(live_ours(&fake).len(), 4, "the two healthy regions launched");

    // What the engine does: find the generation by its tags, destroy it.
    let launched: Vec<Instance> = aws
        .list(DEPLOYMENT)
        .await
        .expect("list")
        .into_iter()
        .filter(|i| i.state.is_live() && i.generation == Some(request.generation))
        .collect();
    assert_eq!(launched.len(), 4);
    let report = aws.destroy(DEPLOYMENT, &launched, true).await.expect("rollback");
    assert_eq!(report.terminated.len(), 4);
    assert_eq!(report.left_behind, Vec::<String>::new());
    assert_eq!(live_ours(&fake), [], "nothing of the run is left");
    for region in regions {
        assert_eq!(
            fake.group_names(region),
            Vec::<String>::new(),
            "{region}: group deleted"
        );
    }
    assert_eq!(fake.open_spot_requests(), [], "spot requests cancelled");
    assert_alive(&fake, &foreign);
}

#[tokio::test]
async fn destroy_cancels_spot_requests_and_retries_the_group_while_in_use() {
    let fake = FakeEc2::new("eu-west-1");
    let foreign = seed_foreign(&fake, &["eu-west-1"]);
    let aws = provider(&fake, &[("eu-west-1", 2)], Fallback::None);
    let instances = aws.launch(&request(1)).await.expect("launch");
    assert_eq!(fake.open_spot_requests().len(), 2);
    fake.script(Rule::fail("DeleteSecurityGroup", "DependencyViolation").times(2));
    let report = aws.destroy(DEPLOYMENT, &instances, true).await.expect("destroy");
    assert_eq!(report.terminated.len(), 2);
    assert_eq!(report.left_behind, Vec::<String>::new());
    let cleaned = report.cleaned.join("; ");
    assert!(cleaned.contains("spot request sir-"), "{cleaned}");
    assert!(
        cleaned.contains("security group sg-") && cleaned.contains("(respot-fleet)"),
        "{cleaned}"
    );
    assert_eq!(
        fake.calls_of("DeleteSecurityGroup").len(),
        3,
        "two DependencyViolation, then gone"
    );
    assert_eq!(fake.calls_of("CancelSpotInstanceRequests").len(), 1);
    assert_eq!(fake.open_spot_requests(), []);
    assert_eq!(fake.group_names("eu-west-1"), Vec::<String>::new());
    assert_alive(&fake, &foreign);

    // Idempotent: nothing left to do, nothing fails.
    let again = aws.destroy(DEPLOYMENT, &[], true).await.expect("destroy again");
    assert!(again.terminated.is_empty() && again.cleaned.is_empty() && again.left_behind.is_empty());
}

#[tokio::test]
async fn a_group_still_in_use_after_the_deadline_is_left_behind() {
    let fake = FakeEc2::new("eu-west-1");
    let mut aws = provider(&fake, &[("eu-west-1", 1)], Fallback::None);
    aws.waits.group_delete = Duration::ZERO;
    let instances = aws.launch(&request(1)).await.expect("launch");
    fake.script(Rule::fail("DeleteSecurityGroup", "DependencyViolation"));
    let report = aws.destroy(DEPLOYMENT, &instances, true).await.expect("destroy");
    assert_eq!(report.terminated.len(), 1);
    let left = report.left_behind.join("; ");
    assert!(
        left.contains("still in use") && left.contains("respot destroy"),
        "{left}"
    );
}

#[tokio::test]
async fn destroy_skips_ids_aws_already_forgot() {
    let fake = FakeEc2::new("eu-west-1");
    let aws = provider(&fake, &[("eu-west-1", 1)], Fallback::None);
    let mut instances = aws.launch(&request(1)).await.expect("launch");
    let mut forgotten = instances[0].clone();
    forgotten.id.0 = "i-forgotten".to_string();
    instances.push(forgotten);
    let report = aws.destroy(DEPLOYMENT, &instances, true).await.expect("destroy");
    assert_eq!(report.terminated.len(), 1, "{report:?}");
    let terminations: Vec<String> = fake
        .calls_of("TerminateInstances")
        .into_iter()
        .map(|(_, d)| d)
        .collect();
    assert_eq!(
        terminations.len(),
        2,
        "the batch, then the ids AWS still lists: {terminations:?}"
    );
    assert!(!terminations[1].contains("i-forgotten"), "{terminations:?}");
    assert_eq!(live_ours(&fake), []);
}

#[tokio::test]
async fn list_names_every_failed_region_and_keeps_the_fix() {
    let fake = FakeEc2::new("eu-west-1");
    fake.script(Rule::fail("DescribeInstances", "AuthFailure").in_region("us-east-1"));
    let aws = provider(&fake, &[("eu-west-1", 1), ("us-east-1", 1)], Fallback::None);
    let err = aws.list(DEPLOYMENT).await.expect_err("auth failure");
    assert_eq!(err.exit_status(), ExitStatus::Provider);
    let failures = region_failures(&err);
    assert!(
        matches!(
            failures[..],
            [("us-east-1", ProviderError::CredentialsRejected { .. })]
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.starts_with("list failed in 1 of 2 region(s):"), "{text}");
    assert!(text.contains("HINT"), "{text}");
}

#[tokio::test]
async fn a_foreign_group_with_our_name_is_never_reused() {
    let fake = FakeEc2::new("eu-west-1");
    fake.create_security_group("respot-fleet", "not ours", &Vec::new())
        .await
        .expect("a foreign group");
    let aws = provider(&fake, &[("eu-west-1", 1)], Fallback::None);
    let err = aws.launch(&request(1)).await.expect_err("foreign group");
    let failures = region_failures(&err);
    assert!(
        matches!(failures[..], [(_, ProviderError::ForeignGroup { .. })]),
        "{err:?}"
    );
    assert_eq!(fake.calls_of("AuthorizeSecurityGroupIngress"), []);
}

#[tokio::test]
async fn the_plan_prices_the_first_type_from_linux_prices_only() {
    let fake = FakeEc2::new("eu-west-1");
    let aws = provider(&fake, &[("eu-west-1", 2)], Fallback::None);
    let planned = aws.capacity_plan().await.expect("plan");
    assert_eq!(planned.len(), 1);
    assert_eq!(planned[0].price_per_hour, Some(0.008));
    assert_eq!(planned[0].instance_type, "t3.small");
    assert_eq!(planned[0].price_note, None);
    assert!(
        fake.calls().iter().all(|c| c.action.starts_with("Describe")),
        "{:?}",
        fake.calls()
    );
}

#[tokio::test]
async fn regions_are_checked_against_aws_only_when_unknown() {
    let fake = FakeEc2::new("eu-west-1");
    let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    check_regions(&fake, &names(&["eu-west-1", "us-east-1"]), "HINT")
        .await
        .expect("known regions");
    assert_eq!(fake.calls(), [], "known regions cost no call");
    check_regions(&fake, &names(&["eu-future-1"]), "HINT")
        .await
        .expect("a region newer than respot");
    assert_eq!(
        fake.calls_of("DescribeRegions"),
        [("eu-west-1".to_string(), "all=true".to_string())]
    );
    let err = check_regions(&fake, &names(&["xx-nowhere-1"]), "HINT")
        .await
        .expect_err("a typo");
    assert!(
        matches!(&err, ProviderError::UnknownRegion { name, .. } if name == "xx-nowhere-1"),
        "{err:?}"
    );
    assert_eq!(err.exit_status(), ExitStatus::Provider);
}

#[test]
fn backoff_grows_and_caps() {
    let got: Vec<u64> = (0..7).map(|n| Waits::AWS.backoff(n).as_secs()).collect();
    assert_eq!(got, [0, 1, 2, 4, 8, 8, 8]);
}
