//! `aws.allocation = "price-capacity-optimized"` against the scripted
//! fake: one instant fleet per region over every pool, from a launch
//! template deleted after it; full and partial answers, per-pool errors
//! reported, a region with nothing falling out while the others launch,
//! quotas naming their code, throttling and the fresh group's `NotFound`.

use super::{DEPLOYMENT, live_ours, over_fake, region_failures, request, settings};
use crate::config::{Allocation, Fallback};
use crate::provider::aws::AwsProvider;
use crate::provider::aws::ec2::Market;
use crate::provider::aws::fake::{FakeEc2, Rule};
use crate::provider::{Lifecycle, PoolAnswer, PoolKey, Provider, ProviderError, tag};

fn fleet_provider(fake: &FakeEc2, regions: &[(&str, u32)], fallback: Fallback) -> AwsProvider<FakeEc2> {
    let mut settings = settings(regions, fallback);
    settings.allocation = Allocation::PriceCapacityOptimized;
    over_fake(fake, regions, settings)
}

/// The answers as `t3.small in eu-west-1a: 3 spot` lines, sorted.
fn answers(aws: &AwsProvider<FakeEc2>) -> Vec<String> {
    let mut lines: Vec<String> = aws
        .take_pool_answers()
        .iter()
        .map(PoolAnswer::to_string)
        .collect();
    lines.sort();
    lines
}

#[tokio::test]
async fn a_full_answer_launches_everything_from_one_fleet_and_deletes_its_template() {
    let fake = FakeEc2::new("eu-west-1");
    let aws = fleet_provider(&fake, &[("eu-west-1", 5)], Fallback::None);
    let instances = aws.launch(&request(1)).await.expect("launch");
    assert_eq!(instances.len(), 5);
    assert!(instances.iter().all(|i| i.lifecycle == Lifecycle::Spot));
    assert_eq!(fake.calls_of("RunInstances"), [], "no ordered walk");
    assert_eq!(fake.calls_of("CreateLaunchTemplate").len(), 1);
    assert_eq!(fake.calls_of("DeleteLaunchTemplate").len(), 1);
    assert_eq!(fake.templates(), [], "nothing orphaned");
    let fleets = fake.fleet_specs();
    let [(region, spec)] = &fleets[..] else {
        panic!("one fleet: {fleets:?}");
    };
    assert_eq!(region, "eu-west-1");
    assert_eq!(
        (spec.count, spec.market, spec.max_price),
        (5, Market::Spot, Some(0.05))
    );
    let pools: Vec<String> = spec
        .pools
        .iter()
        .map(|p| format!("{} {} {}", p.instance_type, p.zone, p.subnet))
        .collect();
    assert_eq!(
        pools,
        [
            "t3.small eu-west-1a subnet-eu-west-1a",
            "t3.small eu-west-1b subnet-eu-west-1b",
            "t3a.small eu-west-1a subnet-eu-west-1a",
            "t3a.small eu-west-1b subnet-eu-west-1b",
        ],
        "every type in every zone"
    );
    assert!(
        spec.tags
            .iter()
            .any(|(k, v)| k == tag::DEPLOYMENT && v == DEPLOYMENT)
    );
    // The template launches what RunInstances would: checked on the
    // template the fake kept for the call.
    let created = fake.calls_of("CreateLaunchTemplate");
    assert!(created[0].1.starts_with("respot-fleet-"), "{created:?}");
    assert_eq!(answers(&aws), ["t3.small in eu-west-1a: 5 spot"]);
    let report = aws.destroy(DEPLOYMENT, &instances, true).await.expect("destroy");
    assert_eq!(report.terminated.len(), 5);
    assert_eq!(live_ours(&fake), []);
    assert_eq!(fake.open_spot_requests(), []);
}

#[tokio::test]
async fn the_template_carries_every_launch_setting_of_run_instances() {
    let fake = FakeEc2::new("eu-west-1");
    // Kept alive: the delete fails, so the template stays to be read.
    fake.script(Rule::fail("DeleteLaunchTemplate", "InternalError"));
    let aws = fleet_provider(&fake, &[("eu-west-1", 1)], Fallback::None);
    aws.launch(&request(1))
        .await
        .expect("a failed delete does not fail the launch");
    let templates = fake.templates();
    let [(_, _, template)] = &templates[..] else {
        panic!("one template: {templates:?}");
    };
    assert!(template.machine.public_ip);
    assert!(template.machine.metadata.tokens_required && template.machine.metadata.hop_limit == 1);
    let root = template.machine.root.as_ref().expect("a root volume");
    assert!(root.encrypted && root.device == "/dev/xvda");
    assert!(template.machine.group_id.starts_with("sg-"));
    assert_eq!(template.machine.image, "ami-al2023x86");
    assert!(!template.machine.user_data.is_empty());
    let tags: Vec<&str> = template.machine.tags.iter().map(|(k, _)| k.as_str()).collect();
    for key in [
        tag::DEPLOYMENT,
        tag::GENERATION,
        tag::DIGEST,
        tag::CREATED_BY,
        tag::NAME,
    ] {
        assert!(tags.contains(&key), "{key}: {tags:?}");
    }
}

#[tokio::test]
async fn a_partial_answer_reports_each_pools_error_and_fills_from_the_others() {
    let fake = FakeEc2::new("eu-west-1");
    fake.capacity("t3.small eu-west-1a", 2);
    fake.fleet_error("t3.small eu-west-1b", "InsufficientInstanceCapacity");
    fake.fleet_error("t3a.small eu-west-1a", "UnfulfillableCapacity");
    let aws = fleet_provider(&fake, &[("eu-west-1", 5)], Fallback::None);
    let instances = aws.launch(&request(1)).await.expect("launch");
    assert_eq!(instances.len(), 5);
    assert_eq!(fake.calls_of("CreateFleet").len(), 1, "one fleet took them all");
    assert_eq!(
        answers(&aws),
        [
            "t3.small in eu-west-1a: 2 spot",
            "t3.small in eu-west-1b: InsufficientInstanceCapacity",
            "t3a.small in eu-west-1a: UnfulfillableCapacity",
            "t3a.small in eu-west-1b: 3 spot",
        ]
    );
    // A capacity code marks the pool for `heal`; UnfulfillableCapacity is
    // the fleet's, not a pool's.
    assert_eq!(
        aws.take_pools_without_capacity(),
        [PoolKey {
            region: "eu-west-1".to_string(),
            instance_type: "t3.small".to_string(),
            zone: Some("eu-west-1b".to_string()),
        }]
    );
}

#[tokio::test]
async fn a_short_fleet_fails_its_region_naming_every_pools_answer() {
    let fake = FakeEc2::new("eu-west-1");
    fake.capacity("t3.small eu-west-1a", 2);
    fake.fleet_error("t3.small eu-west-1b", "InsufficientInstanceCapacity");
    fake.fleet_error("t3a.small", "UnfulfillableCapacity");
    let aws = fleet_provider(&fake, &[("eu-west-1", 5)], Fallback::None);
    let err = aws.launch(&request(1)).await.expect_err("short");
    let failures = region_failures(&err);
    let [
        (
            "eu-west-1",
            ProviderError::NoCapacity {
                launched: 2,
                wanted: 5,
                tried,
                ..
            },
        ),
    ] = &failures[..]
    else {
        panic!("the region is short: {err:?}");
    };
    assert!(
        tried.contains(&"t3.small in eu-west-1b: InsufficientInstanceCapacity".to_string()),
        "{tried:?}"
    );
    assert!(
        tried.contains(&"t3a.small in eu-west-1a: UnfulfillableCapacity".to_string()),
        "{tried:?}"
    );
    assert_eq!(fake.templates(), [], "the template is deleted on failure too");
    // What launched is pending: the rollback terminates it.
    let report = aws.destroy(DEPLOYMENT, &[], true).await.expect("rollback");
    assert_eq!(report.terminated.len(), 2);
    assert_eq!(live_ours(&fake), []);
}

#[tokio::test]
async fn a_region_whose_fleet_gives_nothing_fails_while_the_next_launches() {
    let fake = FakeEc2::new("eu-west-1");
    fake.fleet_error("us-east-1", "InsufficientInstanceCapacity");
    let aws = fleet_provider(&fake, &[("eu-west-1", 3), ("us-east-1", 3)], Fallback::None);
    let err = aws.launch(&request(1)).await.expect_err("us-east-1 is empty");
    assert!(
        matches!(
            region_failures(&err)[..],
            [(
                "us-east-1",
                ProviderError::NoCapacity {
                    launched: 0,
                    wanted: 3,
                    suggest_fallback: true,
                    ..
                }
            )]
        ),
        "{err:?}"
    );
    let ours = live_ours(&fake);
    assert_eq!(ours.len(), 3, "{ours:?}");
    assert!(ours.iter().all(|(r, _)| r == "eu-west-1"));
    assert_eq!(fake.templates(), []);
    assert_eq!(fake.calls_of("DeleteLaunchTemplate").len(), 2);

    // With the on-demand fallback, a second (on-demand) fleet takes it.
    let fake = FakeEc2::new("eu-west-1");
    fake.fleet_error("spot", "InsufficientInstanceCapacity");
    let aws = fleet_provider(&fake, &[("us-east-1", 3)], Fallback::OnDemand);
    let instances = aws.launch(&request(1)).await.expect("on demand");
    assert!(instances.iter().all(|i| i.lifecycle == Lifecycle::OnDemand));
    let markets: Vec<Market> = fake.fleet_specs().iter().map(|(_, s)| s.market).collect();
    assert_eq!(markets, [Market::Spot, Market::OnDemand]);
}

#[tokio::test]
async fn quotas_end_the_region_and_name_their_service_quotas_code() {
    // In the answer's Errors (as EC2 reports them for an instant fleet)
    // and as the call's own error.
    for (case, code) in [
        ("in Errors", "VcpuLimitExceeded"),
        ("in Errors", "MaxSpotInstanceCountExceeded"),
        ("the call", "MaxSpotInstanceCountExceeded"),
    ] {
        let fake = FakeEc2::new("eu-west-1");
        if case == "the call" {
            fake.script(Rule::fail("CreateFleet", code).in_region("us-east-1"));
        } else {
            fake.fleet_error("us-east-1", code);
        }
        let aws = fleet_provider(&fake, &[("eu-west-1", 2), ("us-east-1", 2)], Fallback::None);
        let err = aws.launch(&request(1)).await.expect_err(code);
        assert!(
            matches!(
                region_failures(&err)[..],
                [("us-east-1", ProviderError::Quota { .. })]
            ),
            "{case} {code}: {err:?}"
        );
        assert!(err.to_string().contains("L-34B43A08"), "{case} {code}: {err}");
        assert_eq!(
            live_ours(&fake).len(),
            2,
            "{case} {code}: the other region launched"
        );
        assert_eq!(fake.templates(), [], "{case} {code}");
    }
    // A spot-only quota with the fallback: on-demand takes the region.
    let fake = FakeEc2::new("eu-west-1");
    fake.fleet_error("spot", "MaxSpotInstanceCountExceeded");
    let aws = fleet_provider(&fake, &[("eu-west-1", 2)], Fallback::OnDemand);
    let instances = aws.launch(&request(1)).await.expect("on demand");
    assert_eq!(instances.len(), 2);
    assert!(instances.iter().all(|i| i.lifecycle == Lifecycle::OnDemand));
}

#[tokio::test]
async fn throttling_that_outlasts_the_sdk_names_the_call_and_the_fresh_group_is_retried() {
    let fake = FakeEc2::new("eu-west-1");
    fake.script(Rule::fail("CreateFleet", "RequestLimitExceeded"));
    let aws = fleet_provider(&fake, &[("eu-west-1", 2)], Fallback::None);
    let err = aws.launch(&request(1)).await.expect_err("throttled");
    assert!(
        matches!(
            region_failures(&err)[..],
            [(_, ProviderError::Throttled { action, .. })] if action == "CreateFleet"
        ),
        "{err:?}"
    );
    assert_eq!(fake.templates(), [], "deleted after a failed call too");

    // EC2's eventual consistency: the group made a moment ago.
    let fake = FakeEc2::new("eu-west-1");
    fake.script(Rule::fail("CreateFleet", "InvalidGroup.NotFound").times(2));
    let aws = fleet_provider(&fake, &[("eu-west-1", 2)], Fallback::None);
    let instances = aws.launch(&request(1)).await.expect("retried");
    assert_eq!(instances.len(), 2);
    assert_eq!(fake.calls_of("CreateFleet").len(), 3);
}

#[tokio::test]
async fn destroy_deletes_a_launch_template_a_killed_run_left() {
    use crate::provider::aws::ec2::{Ec2Api, MachineSpec, MetadataOptions, TemplateSpec};
    let fake = FakeEc2::new("eu-west-1");
    let aws = fleet_provider(&fake, &[("eu-west-1", 2)], Fallback::None);
    let instances = aws.launch(&request(1)).await.expect("launch");
    // A run killed between CreateLaunchTemplate and DeleteLaunchTemplate.
    let left = TemplateSpec {
        name: "respot-fleet-1-1-eu-west-1".to_string(),
        machine: MachineSpec {
            image: "ami-al2023x86".to_string(),
            group_id: "sg-x".to_string(),
            user_data: String::new(),
            tags: vec![(tag::DEPLOYMENT.to_string(), DEPLOYMENT.to_string())],
            metadata: MetadataOptions {
                tokens_required: true,
                hop_limit: 1,
            },
            root: None,
            public_ip: true,
            instance_profile: None,
        },
    };
    let mut foreign = left.clone();
    foreign.machine.tags = vec![(tag::DEPLOYMENT.to_string(), "other".to_string())];
    let region = fake.in_region("eu-west-1");
    let id = region.create_launch_template(&left).await.expect("template");
    region
        .create_launch_template(&foreign)
        .await
        .expect("foreign template");
    let report = aws.destroy(DEPLOYMENT, &instances, true).await.expect("destroy");
    assert!(
        report
            .cleaned
            .iter()
            .any(|c| c.contains(&id) && c.contains("launch template")),
        "{report:?}"
    );
    let kept: Vec<String> = fake.templates().into_iter().map(|(_, _, t)| t.name).collect();
    assert_eq!(kept, [foreign.name], "only the deployment's templates go");

    // The ordered walk makes none, and destroy does not look for them.
    let fake = FakeEc2::new("eu-west-1");
    let ordered = super::provider(&fake, &[("eu-west-1", 1)], Fallback::None);
    let instances = ordered.launch(&request(1)).await.expect("launch");
    ordered
        .destroy(DEPLOYMENT, &instances, true)
        .await
        .expect("destroy");
    assert_eq!(fake.calls_of("DescribeLaunchTemplates"), []);
}
