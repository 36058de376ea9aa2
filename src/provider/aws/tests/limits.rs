//! Real EC2 against the scripted fake (issue 13): every filter within 200
//! values, partial capacity carried from pool to pool, each error code down
//! its path, the fresh group's `NotFound` retried, the rollback's union of
//! launched ids and listings, and a group that will not delete.

use std::time::Duration;

use super::{DEPLOYMENT, live_ours, provider, region_failures, request};
use crate::config::Fallback;
use crate::exit::ExitStatus;
use crate::provider::aws::fake::{FakeEc2, Rule};
use crate::provider::{Provider, ProviderError};

/// The ids (space separated after the deployment) of each `DescribeInstances`.
fn described_id_counts(fake: &FakeEc2) -> Vec<usize> {
    fake.calls_of("DescribeInstances")
        .into_iter()
        .filter(|(_, d)| d.starts_with(DEPLOYMENT))
        .map(|(_, d)| d.split_whitespace().count() - 1)
        .collect()
}

#[tokio::test]
async fn a_fleet_of_1000_keeps_every_filter_within_200_and_terminates_in_one_call() {
    let fake = FakeEc2::new("eu-west-1");
    let aws = provider(&fake, &[("eu-west-1", 1000)], Fallback::None);
    let instances = aws.launch(&request(1)).await.expect("launch");
    assert_eq!(instances.len(), 1000);
    assert_eq!(fake.calls_of("RunInstances").len(), 1, "one pool held them all");
    let counts = described_id_counts(&fake);
    assert_eq!(counts, [200; 5], "the wait reads 1,000 ids in 5 chunks");
    let report = aws.destroy(DEPLOYMENT, &instances, true).await.expect("destroy");
    assert_eq!(report.terminated.len(), 1000);
    let terminations = fake.calls_of("TerminateInstances");
    assert_eq!(terminations.len(), 1, "up to 1,000 ids per TerminateInstances");
    assert!(described_id_counts(&fake).iter().all(|n| *n <= 200));
    assert_eq!(live_ours(&fake), []);
}

#[tokio::test]
async fn each_pool_gives_what_it_holds_and_the_rest_goes_to_the_next() {
    let fake = FakeEc2::new("eu-west-1");
    fake.capacity("t3.small eu-west-1a", 3);
    fake.capacity("t3.small eu-west-1b", 4);
    let aws = provider(&fake, &[("eu-west-1", 10)], Fallback::None);
    let instances = aws.launch(&request(1)).await.expect("launch");
    assert_eq!(instances.len(), 10);
    let asked: Vec<String> = fake
        .calls_of("RunInstances")
        .into_iter()
        .map(|(_, d)| d)
        .collect();
    assert_eq!(
        asked,
        [
            "t3.small eu-west-1a spot x10",
            "t3.small eu-west-1b spot x7",
            "t3a.small eu-west-1a spot x3"
        ]
    );
    let mut pools: Vec<(String, String)> = instances
        .iter()
        .map(|i| (i.instance_type.clone(), i.zone.clone().unwrap_or_default()))
        .collect();
    pools.sort();
    pools.dedup();
    assert_eq!(pools.len(), 3, "{pools:?}");
    assert!(
        fake.launch_specs().iter().all(|(_, s)| s.machine.public_ip),
        "public addresses asked for"
    );
}

#[tokio::test]
async fn each_error_code_goes_down_its_path() {
    // (name, code, message, want: "next pool" | "fatal" | "retried")
    let cases = [
        ("capacity", "InsufficientInstanceCapacity", "none", "next pool"),
        ("price", "SpotMaxPriceTooLow", "too low", "next pool"),
        (
            "addresses",
            "InsufficientFreeAddressesInSubnet",
            "full",
            "next pool",
        ),
        ("volumes", "InsufficientVolumeCapacity", "none", "next pool"),
        ("unsupported", "Unsupported", "not offered", "next pool"),
        (
            "type not in zone",
            "InvalidParameterValue",
            "Your requested instance type (t3.small) is not supported in your requested Availability Zone",
            "next pool",
        ),
        (
            "other bad value",
            "InvalidParameterValue",
            "Invalid user data",
            "fatal",
        ),
        ("fresh group", "InvalidGroup.NotFound", "sg", "retried"),
        ("fresh group id", "InvalidGroupId.NotFound", "sg", "retried"),
    ];
    for (name, code, message, want) in cases {
        let fake = FakeEc2::new("eu-west-1");
        fake.script(
            Rule::fail("RunInstances", code)
                .message(message)
                .when("t3.small eu-west-1a")
                .times(1),
        );
        let aws = provider(&fake, &[("eu-west-1", 2)], Fallback::None);
        let result = aws.launch(&request(1)).await;
        let asked: Vec<String> = fake
            .calls_of("RunInstances")
            .into_iter()
            .map(|(_, d)| d)
            .collect();
        match want {
            "next pool" => {
                result.unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(asked[1], "t3.small eu-west-1b spot x2", "{name}: {asked:?}");
            }
            "retried" => {
                result.unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(
                    asked, ["t3.small eu-west-1a spot x2"; 2],
                    "{name}: the same pool again"
                );
            }
            _ => {
                let err = result.expect_err(name);
                assert_eq!(asked.len(), 1, "{name}: {asked:?}");
                assert!(err.to_string().contains(code), "{name}: {err}");
            }
        }
    }
}

#[tokio::test]
async fn a_regional_quota_ends_the_region_and_names_its_service_quotas_code() {
    let cases = [
        ("MaxSpotInstanceCountExceeded", Fallback::None, "L-34B43A08"),
        ("VcpuLimitExceeded", Fallback::None, "L-34B43A08"),
    ];
    for (code, fallback, quota_code) in cases {
        let fake = FakeEc2::new("eu-west-1");
        fake.script(Rule::fail("RunInstances", code).in_region("us-east-1"));
        let aws = provider(&fake, &[("eu-west-1", 2), ("us-east-1", 2)], fallback);
        let err = aws.launch(&request(1)).await.expect_err(code);
        assert!(
            matches!(
                region_failures(&err)[..],
                [("us-east-1", ProviderError::Quota { .. })]
            ),
            "{code}: {err:?}"
        );
        assert!(err.to_string().contains(quota_code), "{code}: {err}");
        let in_region: Vec<_> = fake
            .calls_of("RunInstances")
            .into_iter()
            .filter(|(r, _)| r == "us-east-1")
            .collect();
        assert_eq!(in_region.len(), 1, "{code}: no other pool of the region is tried");
        assert_eq!(live_ours(&fake).len(), 2, "{code}: the other region launched");
    }
}

#[tokio::test]
async fn spot_price_too_low_in_every_pool_says_raise_max_price() {
    let fake = FakeEc2::new("eu-west-1");
    fake.script(Rule::fail("RunInstances", "SpotMaxPriceTooLow"));
    let aws = provider(&fake, &[("eu-west-1", 1)], Fallback::None);
    let err = aws.launch(&request(1)).await.expect_err("price");
    assert_eq!(fake.calls_of("RunInstances").len(), 4, "every pool was tried");
    assert!(
        matches!(
            region_failures(&err)[..],
            [(_, ProviderError::PriceTooLow { .. })]
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("raise aws.max_price"), "{err}");
}

#[tokio::test]
async fn the_new_groups_not_found_is_retried_in_ingress() {
    let fake = FakeEc2::new("eu-west-1");
    fake.script(Rule::fail("AuthorizeSecurityGroupIngress", "InvalidGroup.NotFound").times(2));
    let aws = provider(&fake, &[("eu-west-1", 1)], Fallback::None);
    aws.launch(&request(1)).await.expect("launch");
    assert_eq!(fake.calls_of("AuthorizeSecurityGroupIngress").len(), 3);
    let mut bounded = provider(&fake, &[("us-east-1", 1)], Fallback::None);
    bounded.waits.consistency = Duration::ZERO;
    fake.script(Rule::fail("AuthorizeSecurityGroupIngress", "InvalidGroup.NotFound").in_region("us-east-1"));
    let err = bounded.launch(&request(2)).await.expect_err("never visible");
    assert!(err.to_string().contains("InvalidGroup.NotFound"), "{err}");
}

#[tokio::test]
async fn rollback_terminates_launched_ids_that_no_listing_shows_yet() {
    let fake = FakeEc2::new("eu-west-1");
    fake.hide_launches(1_000_000);
    fake.script(Rule::fail("RunInstances", "MaxSpotInstanceCountExceeded").in_region("us-east-1"));
    let mut aws = provider(&fake, &[("eu-west-1", 3), ("us-east-1", 2)], Fallback::None);
    aws.waits.running = Duration::from_millis(50);
    let err = aws.launch(&request(1)).await.expect_err("quota");
    assert_eq!(err.exit_status(), ExitStatus::Provider);
    assert_eq!(live_ours(&fake).len(), 3, "eu-west-1 launched");
    let listed = aws.list(DEPLOYMENT).await.expect("list");
    assert_eq!(listed.len(), 0, "the listing does not show them yet");
    // What the engine does: destroy what the listing found (nothing).
    let report = aws.destroy(DEPLOYMENT, &listed, true).await.expect("rollback");
    assert_eq!(report.terminated.len(), 3, "{report:?}");
    assert_eq!(live_ours(&fake), []);
}

#[tokio::test]
async fn destroy_after_a_lost_run_terminates_what_holds_the_group() {
    let fake = FakeEc2::new("eu-west-1");
    let first = provider(&fake, &[("eu-west-1", 2)], Fallback::None);
    first.launch(&request(1)).await.expect("launch");
    // Another process: its listing does not show the instances yet, and it
    // never launched them.
    let aws = provider(&fake, &[("eu-west-1", 2)], Fallback::None);
    let hidden = fake.instances();
    fake.hide_ids(&hidden.iter().map(|(_, i)| i.id.clone()).collect::<Vec<_>>(), 2);
    let report = aws.destroy(DEPLOYMENT, &[], true).await.expect("destroy");
    assert_eq!(report.terminated.len(), 2, "{report:?}");
    assert!(report.cleaned.join(" ").contains("security group"), "{report:?}");
    assert_eq!(live_ours(&fake), []);
    assert_eq!(fake.group_names("eu-west-1"), Vec::<String>::new());
}

#[tokio::test]
async fn destroying_the_deployment_takes_instances_its_listing_missed() {
    let fake = FakeEc2::new("eu-west-1");
    let first = provider(&fake, &[("eu-west-1", 2)], Fallback::None);
    first.launch(&request(1)).await.expect("launch");
    let ids: Vec<String> = fake.instances().iter().map(|(_, i)| i.id.clone()).collect();
    // Another process: `destroy` lists nothing (EC2's listing is behind the
    // launch); by the time it waits for terminations, they show.
    let aws = provider(&fake, &[("eu-west-1", 2)], Fallback::None);
    fake.hide_ids(&ids, 1);
    let listed = aws.list(DEPLOYMENT).await.expect("list");
    assert_eq!(listed.len(), 0, "the listing does not show them yet");
    // Scoped to the instances given, they count as another generation
    // that keeps the group...
    let kept = aws.destroy(DEPLOYMENT, &listed, true).await.expect("destroy");
    assert!(kept.terminated.is_empty(), "{kept:?}");
    assert!(!kept.cleaned.join(" ").contains("security group"), "{kept:?}");
    assert_eq!(live_ours(&fake).len(), 2);
    // ...but the whole deployment's destroy takes them and the group.
    fake.hide_ids(&ids, 1);
    let listed = aws.list(DEPLOYMENT).await.expect("list");
    let report = aws
        .destroy_deployment(DEPLOYMENT, &listed, true)
        .await
        .expect("destroy the deployment");
    assert_eq!(report.terminated.len(), 2, "{report:?}");
    assert!(report.cleaned.join(" ").contains("security group"), "{report:?}");
    assert_eq!(live_ours(&fake), []);
    assert_eq!(fake.group_names("eu-west-1"), Vec::<String>::new());
}

#[tokio::test]
async fn a_group_held_by_a_foreign_instance_names_it_after_the_deadline() {
    let fake = FakeEc2::new("eu-west-1");
    let mut aws = provider(&fake, &[("eu-west-1", 1)], Fallback::None);
    let instances = aws.launch(&request(1)).await.expect("launch");
    let group = fake.launch_specs()[0].1.machine.group_id.clone();
    let foreign = fake.seed_instance("eu-west-1", &[]);
    fake.join_group(&foreign, &group);
    aws.waits.group_delete = Duration::ZERO;
    let report = aws.destroy(DEPLOYMENT, &instances, true).await.expect("destroy");
    let left = report.left_behind.join("; ");
    assert!(
        left.contains(&group) && left.contains(&foreign) && left.contains("DependencyViolation"),
        "{left}"
    );
    assert!(
        fake.live().iter().any(|(_, id)| *id == foreign),
        "never terminated"
    );
}

#[tokio::test]
async fn the_plan_prices_every_type_from_one_call() {
    let fake = FakeEc2::new("eu-west-1");
    fake.script(Rule::fail("DescribeSpotPriceHistory", "RequestLimitExceeded").in_region("us-east-1"));
    let aws = provider(&fake, &[("eu-west-1", 2), ("us-east-1", 1)], Fallback::None);
    let planned = aws.capacity_plan().await.expect("plan");
    assert_eq!(
        fake.calls_of("DescribeSpotPriceHistory"),
        [
            ("eu-west-1".to_string(), "t3.small t3a.small".to_string()),
            ("us-east-1".to_string(), "t3.small t3a.small".to_string())
        ]
    );
    assert_eq!(planned[0].price_per_hour, Some(0.008));
    assert!(
        planned[1]
            .price_note
            .as_deref()
            .is_some_and(|n| n.contains("unavailable"))
    );
}

#[tokio::test]
async fn a_destroy_of_another_generation_leaves_a_failed_launch_pending() {
    let fake = FakeEc2::new("eu-west-1");
    let old = provider(&fake, &[("eu-west-1", 1)], Fallback::None)
        .launch(&request(1))
        .await
        .expect("generation 1");
    fake.script(Rule::fail("RunInstances", "MaxSpotInstanceCountExceeded").in_region("us-east-1"));
    let mut aws = provider(&fake, &[("eu-west-1", 2), ("us-east-1", 1)], Fallback::None);
    aws.waits.running = Duration::from_millis(50);
    aws.launch(&request(2)).await.expect_err("quota");
    // Generation 1 goes; generation 2's launched ids are not its business.
    let report = aws
        .destroy(DEPLOYMENT, &old, true)
        .await
        .expect("destroy generation 1");
    assert_eq!(report.terminated.len(), 1, "{report:?}");
    assert_eq!(live_ours(&fake).len(), 2, "generation 2 is still there");
    // Its rollback, with a listing that shows nothing, still finds them.
    let report = aws.destroy(DEPLOYMENT, &[], true).await.expect("rollback");
    assert_eq!(report.terminated.len(), 2, "{report:?}");
    assert_eq!(live_ours(&fake), []);
}
