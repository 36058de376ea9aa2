//! `aws.allocation = "price-capacity-optimized"` on moto: one instant
//! `CreateFleet` over 2 instance types × 3 zones, one pool empty, through
//! the CLI (create → list → destroy), nothing orphaned.
//!
//! What moto does not do, and how the test stands in for it:
//! - it reports no per-pool errors and puts a fleet's whole count in the
//!   cheapest pool (without prices, the first override): the fault proxy's
//!   `pool` rule drops the empty pool's override from the request moto sees
//!   and adds EC2's `<errorSet>` item for it to the answer;
//! - it ignores the launch template's network interface (no public address,
//!   the instances land in the default security group), metadata options
//!   (IMDSv2) and block devices: the test runs with `aws.public_ip = false`,
//!   and those settings are checked on the launch template respot sends
//!   (`CreateLaunchTemplate`'s parameters), not on the instances.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{AwsTest, TAG_KEYS, block_on, default_subnets, described_ours, ec2_client, live_pools};

/// `zones` for every region of `t`'s respot.toml.
fn set_zones(t: &AwsTest, count: u32, zones: &[String]) {
    let path = t.context.path().join("respot.toml");
    let text = std::fs::read_to_string(&path).expect("respot.toml");
    let list: Vec<String> = zones.iter().map(|z| format!("\"{z}\"")).collect();
    let count_line = format!("count = {count}\n");
    let text = text.replace(
        &count_line,
        &format!("{count_line}zones = [{}]\n", list.join(", ")),
    );
    std::fs::write(&path, text).expect("write respot.toml");
}

fn launch_templates(region: &str) -> usize {
    block_on(ec2_client(region).describe_launch_templates().send())
        .expect("describe launch templates")
        .launch_templates()
        .len()
}

/// The parameters respot sent with each call of `action`.
fn params_of(t: &AwsTest, action: &str) -> Vec<Value> {
    t.proxy
        .requests()
        .into_iter()
        .filter(|r| r["action"] == action)
        .map(|r| r["params"].clone())
        .collect()
}

#[test]
fn one_instant_fleet_over_two_types_and_three_zones_skips_the_empty_pool() {
    let t = AwsTest::with(
        "pcofleet",
        1,
        4,
        "allocation = \"price-capacity-optimized\"\npublic_ip = false\n",
    );
    let region = t.regions[0].clone();
    let subnets = default_subnets(&region);
    let zones: Vec<String> = subnets.keys().take(3).cloned().collect();
    assert_eq!(zones.len(), 3, "moto has three zones here: {subnets:?}");
    set_zones(&t, 4, &zones);
    // Another deployment's launch template, which destroy must keep.
    block_on(
        ec2_client(&region)
            .create_launch_template()
            .launch_template_name("respot-other-template")
            .launch_template_data(aws_sdk_ec2::types::RequestLaunchTemplateData::builder().build())
            .tag_specifications(
                aws_sdk_ec2::types::TagSpecification::builder()
                    .resource_type(aws_sdk_ec2::types::ResourceType::LaunchTemplate)
                    .tags(
                        aws_sdk_ec2::types::Tag::builder()
                            .key("respot:deployment")
                            .value("other")
                            .build(),
                    )
                    .build(),
            )
            .send(),
    )
    .expect("a foreign launch template");
    let templates_before = launch_templates(&region);
    // The first pool (where moto would put everything) has no capacity,
    // and the first CreateFleet is throttled: the SDK retries it.
    t.proxy.faults(json!([
        {"action": "CreateFleet", "code": "RequestLimitExceeded", "times": 1},
        {"action": "CreateFleet", "code": "InsufficientInstanceCapacity",
         "pool": {"InstanceType": "t3.small", "SubnetId": subnets[&zones[0]]}},
    ]));
    let out = t.run(&["create", "--no-verify", "--output", "json"], 0);
    let report: Value = serde_json::from_slice(&out.stdout).expect("create JSON");

    // The report names the pool chosen and the empty pool's error.
    let pools = report["pools"].as_array().expect("pools in the report");
    let chosen: Vec<&Value> = pools.iter().filter(|p| p["error"].is_null()).collect();
    let failed: Vec<&Value> = pools.iter().filter(|p| !p["error"].is_null()).collect();
    assert_eq!(failed.len(), 1, "{pools:?}");
    assert_eq!(
        (failed[0]["instance_type"].as_str(), failed[0]["zone"].as_str()),
        (Some("t3.small"), Some(zones[0].as_str()))
    );
    assert_eq!(failed[0]["error"], "InsufficientInstanceCapacity");
    assert_eq!(failed[0]["launched"], 0);
    let launched: u64 = chosen.iter().filter_map(|p| p["launched"].as_u64()).sum();
    assert_eq!(launched, 4, "{pools:?}");
    assert!(chosen.iter().all(|p| p["lifecycle"] == "spot"), "{pools:?}");

    // moto's instances are where the report says, none in the empty pool.
    let live = live_pools(&t);
    assert_eq!(live.values().sum::<usize>(), 4, "{live:?}");
    assert!(
        !live.contains_key(&(region.clone(), "t3.small".to_string(), zones[0].clone())),
        "{live:?}"
    );
    for p in &chosen {
        let key = (
            region.clone(),
            p["instance_type"].as_str().unwrap_or_default().to_string(),
            p["zone"].as_str().unwrap_or_default().to_string(),
        );
        assert_eq!(
            live.get(&key).map(|n| *n as u64),
            p["launched"].as_u64(),
            "{key:?}"
        );
    }
    for instance in described_ours(&t, &region) {
        let tags = super::tags_of(instance.tags());
        for key in TAG_KEYS {
            assert!(tags.contains_key(*key), "{key} missing: {tags:?}");
        }
    }

    // What respot asked: one instant fleet over all 6 pools, for all 4,
    // price-capacity-optimized; no RunInstances.
    let stats = t.proxy.stats();
    assert_eq!(
        stats["by_action"]["CreateFleet"], 2,
        "one throttled, one retried: {stats}"
    );
    assert!(stats["by_action"]["RunInstances"].is_null(), "{stats}");
    let fleet = params_of(&t, "CreateFleet").pop().expect("a CreateFleet");
    assert_eq!(fleet["Type"], "instant");
    assert_eq!(
        fleet["SpotOptions.AllocationStrategy"],
        "price-capacity-optimized"
    );
    assert_eq!(fleet["TargetCapacitySpecification.TotalTargetCapacity"], "4");
    let overrides: BTreeMap<String, String> = fleet
        .as_object()
        .expect("params")
        .iter()
        .filter(|(k, _)| k.starts_with("LaunchTemplateConfigs.1.Overrides.") && k.ends_with(".SubnetId"))
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    assert_eq!(overrides.len(), 6, "2 types × 3 zones: {fleet}");
    // The template carries what RunInstances would (moto ignores it).
    let template = params_of(&t, "CreateLaunchTemplate").pop().expect("a template");
    assert_eq!(
        template["LaunchTemplateData.MetadataOptions.HttpTokens"],
        "required"
    );
    assert_eq!(
        template["LaunchTemplateData.MetadataOptions.HttpPutResponseHopLimit"],
        "1"
    );
    assert_eq!(
        template["LaunchTemplateData.NetworkInterface.1.AssociatePublicIpAddress"],
        "false"
    );
    assert_eq!(
        template["LaunchTemplateData.BlockDeviceMapping.1.Ebs.Encrypted"],
        "true"
    );
    assert_eq!(stats["by_action"]["DeleteLaunchTemplate"], 1, "{stats}");
    assert_eq!(
        launch_templates(&region),
        templates_before,
        "the template is gone"
    );

    let out = t.run(&["list", "--output", "json"], 0);
    let listed: Vec<Value> = serde_json::from_slice(&out.stdout).expect("list JSON");
    assert_eq!(listed.len(), 4);
    assert!(listed.iter().all(|i| i["private_ip"].is_string()), "{listed:?}");
    t.proxy.reset();
    t.run(&["destroy", "--yes"], 0);
    super::assert_nothing_orphaned(&t);
    let stats = t.proxy.stats();
    assert_eq!(
        stats["by_action"]["DescribeLaunchTemplates"], 1,
        "destroy looks for templates a killed run left: {stats}"
    );
    assert!(
        stats["by_action"]["DeleteLaunchTemplate"].is_null(),
        "none was left: {stats}"
    );
    assert_eq!(launch_templates(&region), templates_before);
    let open = block_on(ec2_client(&region).describe_spot_instance_requests().send())
        .expect("spot requests")
        .spot_instance_requests()
        .iter()
        .filter(|r| super::tags_of(r.tags()).get("respot:deployment") == Some(&t.deployment))
        .filter(|r| matches!(r.state().map(|s| s.as_str()), Some("open" | "active")))
        .count();
    assert_eq!(open, 0, "the fleet's spot requests were cancelled");
}
