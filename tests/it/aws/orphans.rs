//! Orphans on moto: `list --all-deployments` finds a leaked security group
//! and a half-destroyed deployment, and `destroy --deployment NAME` removes
//! each by its exact name while a neighbour whose name extends it
//! (`app-2`, `leak-2`) keeps everything.

use aws_sdk_ec2::types as ec2;
use serde_json::Value;

use aws_sdk_elasticloadbalancingv2 as elb;

use super::{AwsTest, all_instances, block_on, ec2_client, stderr, this_moto};

fn elb_client(region: &str) -> elb::Client {
    use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};
    let config = elb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_string()))
        .endpoint_url(this_moto())
        .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
        .build();
    elb::Client::from_conf(config)
}

/// A target group tagged for `deployment`, as a front door whose destroy
/// died would leave it; with `forwarded`, an ALB listener's default action
/// still forwards to it. Returns its ARN.
fn leak_target_group(region: &str, deployment: &str, forwarded: bool) -> String {
    let vpcs = block_on(ec2_client(region).describe_vpcs().send()).expect("describe vpcs");
    let vpc = vpcs.vpcs()[0].vpc_id().expect("a vpc").to_string();
    let client = elb_client(region);
    let group = block_on(
        client
            .create_target_group()
            .name(format!("respot-{deployment}-blue"))
            .protocol(elb::types::ProtocolEnum::Http)
            .port(8080)
            .vpc_id(vpc)
            .target_type(elb::types::TargetTypeEnum::Instance)
            .tags(
                elb::types::Tag::builder()
                    .key("respot:deployment")
                    .value(deployment)
                    .build(),
            )
            .send(),
    )
    .expect("create a target group");
    let arn = group.target_groups()[0]
        .target_group_arn()
        .expect("arn")
        .to_string();
    if forwarded {
        crate::alb::listener_with(
            region,
            &format!("lb-{deployment}"),
            elb::types::Action::builder()
                .r#type(elb::types::ActionTypeEnum::Forward)
                .target_group_arn(&arn)
                .build(),
        );
    }
    arn
}

/// Names of the target groups in `region`.
fn target_groups(region: &str) -> Vec<String> {
    let out = block_on(elb_client(region).describe_target_groups().send()).expect("describe target groups");
    let mut names: Vec<String> = out
        .target_groups()
        .iter()
        .filter_map(|g| g.target_group_name().map(str::to_string))
        .collect();
    names.sort();
    names
}

/// A security group named `respot-<deployment>`, tagged for it, as a run
/// that died would leave it. Returns its id.
fn leak_group(region: &str, deployment: &str) -> String {
    let tags = ec2::TagSpecification::builder()
        .resource_type(ec2::ResourceType::SecurityGroup)
        .tags(
            ec2::Tag::builder()
                .key("respot:deployment")
                .value(deployment)
                .build(),
        )
        .build();
    let out = block_on(
        ec2_client(region)
            .create_security_group()
            .group_name(format!("respot-{deployment}"))
            .description("leaked")
            .tag_specifications(tags)
            .send(),
    )
    .expect("create a leaked group");
    out.group_id().expect("a group id").to_string()
}

/// Security group names tagged by respot in `region`.
fn tagged_groups(region: &str) -> Vec<String> {
    let out = block_on(
        ec2_client(region)
            .describe_security_groups()
            .filters(
                ec2::Filter::builder()
                    .name("tag-key")
                    .values("respot:deployment")
                    .build(),
            )
            .send(),
    )
    .expect("describe groups");
    let mut names: Vec<String> = out
        .security_groups()
        .iter()
        .filter_map(|g| g.group_name().map(str::to_string))
        .collect();
    names.sort();
    names
}

fn live_of(region: &str, deployment: &str) -> Vec<String> {
    all_instances(region)
        .into_iter()
        .filter(|(_, state, tags)| {
            state != "terminated" && tags.get("respot:deployment").map(String::as_str) == Some(deployment)
        })
        .map(|(id, _, _)| id)
        .collect()
}

fn deployments(t: &AwsTest) -> Vec<Value> {
    let out = t.run(&["list", "--all-deployments", "--output", "json"], 0);
    let report: Value = serde_json::from_slice(&out.stdout).expect("inventory JSON");
    report["deployments"].as_array().expect("deployments").clone()
}

fn find<'a>(rows: &'a [Value], name: &str) -> Option<&'a Value> {
    rows.iter().find(|r| r["deployment"] == name)
}

#[test]
fn orphans_are_found_and_destroyed_by_exact_name() {
    let t = AwsTest::with("main", 1, 2, "");
    let region = t.regions[0].clone();
    let sample = std::fs::read_to_string(t.context.path().join("respot.toml")).expect("respot.toml");
    for name in ["app", "app-2"] {
        let config = format!("{name}.toml");
        std::fs::write(
            t.context.path().join(&config),
            sample.replacen("name = \"main\"", &format!("name = \"{name}\""), 1),
        )
        .expect("write a config");
        t.run(&["create", "--no-verify", "--config", &config], 0);
    }
    // `app` is half destroyed: one instance gone, one still running, its group left.
    let app = live_of(&region, "app");
    assert_eq!(app.len(), 2);
    block_on(
        ec2_client(&region)
            .terminate_instances()
            .instance_ids(&app[0])
            .send(),
    )
    .expect("terminate");
    // `leak` left only its security group; so did its neighbour `leak-2`.
    leak_group(&region, "leak");
    leak_group(&region, "leak-2");
    // And their front doors' target groups: `leak`'s still behind a listener.
    leak_target_group(&region, "leak", true);
    leak_target_group(&region, "leak-2", false);

    let rows = deployments(&t);
    let app_row = find(&rows, "app").expect("app is listed");
    assert_eq!(
        (app_row["live"].as_u64(), app_row["gone"].as_u64()),
        (Some(1), Some(1)),
        "{app_row}"
    );
    assert_eq!(app_row["this_blueprint"], false);
    assert_eq!(app_row["generations"], serde_json::json!([1]));
    assert!(app_row["age_secs"].is_u64(), "{app_row}");
    let leak = find(&rows, "leak").expect("leak is listed");
    assert_eq!(leak["live"], 0);
    let leftovers = leak["leftovers"].as_array().expect("leftovers");
    assert_eq!(leftovers.len(), 2, "{leak}");
    assert!(
        leftovers
            .iter()
            .all(|l| l.as_str().unwrap().contains("no live instance")),
        "{leak}"
    );
    let kinds: Vec<&str> = leak["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter_map(|r| r["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["security-group", "target-group"], "{leak}");
    assert_eq!(find(&rows, "app-2").expect("app-2")["live"], 2);
    assert!(find(&rows, "main").is_none(), "main has nothing yet: {rows:?}");
    let out = t.run(&["list", "--all-deployments"], 0);
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        table.contains("security group") && table.contains("leak-2"),
        "{table}"
    );
    assert!(table.contains("target group"), "{table}");
    assert!(!stderr(&out).contains("not checked"), "{}", stderr(&out));

    t.run(&["destroy", "--deployment", "leak", "--yes"], 0);
    t.run(&["destroy", "--deployment", "app", "--yes"], 0);
    assert_eq!(tagged_groups(&region), ["respot-app-2", "respot-leak-2"]);
    assert_eq!(
        target_groups(&region),
        ["respot-leak-2-blue"],
        "leak's group left its listener and went; leak-2's stays"
    );
    assert!(live_of(&region, "app").is_empty());
    assert_eq!(
        live_of(&region, "app-2").len(),
        2,
        "the neighbour keeps its instances"
    );
    let rows = deployments(&t);
    assert!(find(&rows, "leak").is_none(), "{rows:?}");
    let app_row = find(&rows, "app").expect("terminated instances are still listed");
    assert_eq!(app_row["live"], 0);
    assert_eq!(app_row["resources"], serde_json::json!([]), "{app_row}");

    // A bad name never reaches AWS.
    let out = t.run(&["destroy", "--deployment", "../x", "--yes"], 2);
    assert!(stderr(&out).contains("[a-z0-9-]"), "{}", stderr(&out));

    for name in ["app-2", "leak-2"] {
        t.run(&["destroy", "--deployment", name, "--yes"], 0);
    }
    assert!(tagged_groups(&region).is_empty());
    assert!(target_groups(&region).is_empty());
    assert!(live_of(&region, "app-2").is_empty());
}
