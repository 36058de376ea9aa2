//! The AWS provider through the real binary, against moto on loopback with
//! the fault proxy in front. Each test owns its regions of the shared moto
//! (see `support::moto`) and its own proxy, and seeds foreign instances
//! (untagged, and another respot deployment) that must survive every command.

use std::collections::BTreeMap;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ec2::types as ec2;
use serde_json::{Value, json};

use crate::support::TestContext;
use crate::support::moto::{self, Proxy};

mod fleet;
mod heal;
mod inflight;
mod orphans;

const CIDR: &str = "198.51.100.0/24";
const TAG_KEYS: &[&str] = &[
    "respot:deployment",
    "respot:digest",
    "respot:version",
    "respot:generation",
    "respot:created-at",
    "respot:created-by",
    "Name",
];

pub(crate) fn block_on<F: std::future::Future>(future: F) -> F::Output {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a tokio runtime for the test helpers")
        })
        .block_on(future)
}

thread_local! {
    /// The moto this test thread checks directly: the shared one, unless
    /// the test runs on the limits server (`AwsTest::limits`).
    static MOTO: std::cell::Cell<Option<&'static str>> = const { std::cell::Cell::new(None) };
}

pub(crate) fn this_moto() -> &'static str {
    MOTO.with(|m| m.get()).unwrap_or_else(moto::moto_url)
}

/// A client straight to moto (not through the proxy, so it is not counted).
pub(crate) fn ec2_client(region: &str) -> aws_sdk_ec2::Client {
    let config = aws_sdk_ec2::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_string()))
        .endpoint_url(this_moto())
        .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
        .build();
    aws_sdk_ec2::Client::from_conf(config)
}

pub(crate) fn tags_of(tags: &[ec2::Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
        .collect()
}

/// Every instance in `region`, foreign ones included: (id, state, tags).
fn all_instances(region: &str) -> Vec<(String, String, BTreeMap<String, String>)> {
    let out = block_on(ec2_client(region).describe_instances().send()).expect("describe instances");
    out.reservations()
        .iter()
        .flat_map(|r| r.instances())
        .map(|i| {
            (
                i.instance_id().unwrap_or_default().to_string(),
                i.state()
                    .and_then(|s| s.name())
                    .map(|n| n.as_str().to_string())
                    .unwrap_or_default(),
                tags_of(i.tags()),
            )
        })
        .collect()
}

fn al2023(region: &str) -> String {
    let out = block_on(
        ec2_client(region)
            .describe_images()
            .owners("amazon")
            .filters(
                ec2::Filter::builder()
                    .name("name")
                    .values("al2023-ami-2023*-x86_64")
                    .build(),
            )
            .send(),
    )
    .expect("describe images");
    out.images()
        .iter()
        .filter_map(|i| i.image_id())
        .next()
        .expect("moto has al2023 images in every region")
        .to_string()
}

/// Launches instances respot must never touch: one untagged, one of another
/// respot deployment. Returns their ids.
fn seed_foreign(region: &str) -> Vec<String> {
    let client = ec2_client(region);
    let image = al2023(region);
    let mut ids = Vec::new();
    for tags in [vec![], vec![("respot:deployment", "other"), ("Name", "other")]] {
        let mut call = client
            .run_instances()
            .image_id(&image)
            .instance_type(ec2::InstanceType::T3Micro)
            .min_count(1)
            .max_count(1);
        if !tags.is_empty() {
            let mut spec = ec2::TagSpecification::builder().resource_type(ec2::ResourceType::Instance);
            for (k, v) in tags {
                spec = spec.tags(ec2::Tag::builder().key(k).value(v).build());
            }
            call = call.tag_specifications(spec.build());
        }
        let out = block_on(call.send()).expect("seed a foreign instance");
        ids.extend(
            out.instances()
                .iter()
                .filter_map(|i| i.instance_id().map(str::to_string)),
        );
    }
    ids
}

/// A blueprint deployed to AWS regions of the shared moto, through a proxy.
pub(crate) struct AwsTest {
    pub(crate) context: TestContext,
    pub(crate) proxy: Proxy,
    pub(crate) deployment: String,
    pub(crate) regions: Vec<String>,
    foreign: Vec<(String, Vec<String>)>,
}

impl AwsTest {
    pub(crate) fn new(deployment: &str, regions: usize) -> AwsTest {
        AwsTest::with(deployment, regions, 2, "")
    }

    /// `count` instances per region; `extra` is appended to `[aws]`.
    pub(crate) fn with(deployment: &str, regions: usize, count: u32, extra: &str) -> AwsTest {
        AwsTest::build(deployment, moto::regions(regions), Proxy::start(0), count, extra)
    }

    /// As [`AwsTest::with`], on the second moto server (`moto::limits_moto_url`),
    /// for fleets that would crowd the shared one.
    fn limits(deployment: &str, regions: usize, count: u32, extra: &str) -> AwsTest {
        let url = moto::limits_moto_url();
        MOTO.with(|m| m.set(Some(url)));
        let proxy = Proxy::start_to(url, 0);
        AwsTest::build(deployment, moto::limits_regions(regions), proxy, count, extra)
    }

    fn build(deployment: &str, regions: Vec<String>, proxy: Proxy, count: u32, extra: &str) -> AwsTest {
        let context = TestContext::new();
        let out = context
            .command()
            .args(["init", ".", "--name", deployment])
            .output()
            .expect("run respot init");
        assert!(
            out.status.success(),
            "init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let sample = std::fs::read_to_string(context.path().join("respot.toml")).expect("sample respot.toml");
        let head = &sample[..sample.find("[ssh]").expect("sample has [ssh]")];
        let tail = &sample[sample.find("[local]").expect("sample has [local]")..];
        let mut aws = format!(
            "[ssh]\nuser = \"respot\"\nallow_cidr = \"{CIDR}\"\n\n[aws]\nimage = \"al2023\"\n\
             instance_types = [\"t3.small\", \"t3a.small\"]\nmax_price = 0.05\n{extra}\n"
        );
        for region in &regions {
            aws.push_str(&format!(
                "[[aws.regions]]\nname = \"{region}\"\ncount = {count}\n\n"
            ));
        }
        let text = format!(
            "{}{aws}{tail}",
            head.replace("provider = \"local\"", "provider = \"aws\"")
        );
        std::fs::write(context.path().join("respot.toml"), text).expect("write respot.toml");
        let foreign = regions.iter().map(|r| (r.clone(), seed_foreign(r))).collect();
        AwsTest {
            context,
            proxy,
            deployment: deployment.to_string(),
            regions,
            foreign,
        }
    }

    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut cmd = self.context.std_command();
        cmd.args(args)
            .env("AWS_ENDPOINT_URL", self.proxy.endpoint())
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", self.context.home().join("no-aws-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                self.context.home().join("no-aws-credentials"),
            )
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_REGION")
            .env_remove("AWS_DEFAULT_REGION")
            .env_remove("AWS_SESSION_TOKEN")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs respot and checks the exit code; returns the output.
    pub(crate) fn run(&self, args: &[&str], want: i32) -> Output {
        let out = self.command(args).output().expect("run respot");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.code() == Some(want),
            "respot {args:?}: want exit {want}, got {:?}\n--- stdout ---\n{}\n--- stderr ---\n{stderr}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
        );
        assert!(
            !stderr.contains("panicked"),
            "respot {args:?} panicked:\n{stderr}"
        );
        out
    }

    /// Our instances in every region, straight from moto: (region, id, state, tags).
    pub(crate) fn ours(&self) -> Vec<(String, String, String, BTreeMap<String, String>)> {
        self.regions
            .iter()
            .flat_map(|r| {
                all_instances(r)
                    .into_iter()
                    .filter(|(_, _, tags)| tags.get("respot:deployment") == Some(&self.deployment))
                    .map(move |(id, state, tags)| (r.clone(), id, state, tags))
            })
            .collect()
    }

    pub(crate) fn live_ours(&self) -> usize {
        self.ours()
            .iter()
            .filter(|(_, _, state, _)| state != "terminated")
            .count()
    }

    /// Foreign instances are running with their tags, and every instance in
    /// our regions is either foreign or tagged as ours (never untagged).
    fn assert_foreign_untouched(&self) {
        for (region, ids) in &self.foreign {
            let all = all_instances(region);
            for id in ids {
                let (_, state, tags) = all
                    .iter()
                    .find(|(i, _, _)| i == id)
                    .expect("foreign instance exists");
                assert_eq!(state, "running", "{region}: foreign {id} was touched");
                let want_deployment = tags.get("respot:deployment").map(String::as_str);
                assert!(
                    want_deployment.is_none() || want_deployment == Some("other"),
                    "{region}: foreign {id} tags changed: {tags:?}"
                );
            }
            for (id, _, tags) in &all {
                assert!(
                    ids.contains(id) || tags.get("respot:deployment") == Some(&self.deployment),
                    "{region}: instance {id} is neither foreign nor tagged as ours: {tags:?}"
                );
            }
        }
    }

    fn security_groups(&self, region: &str) -> Vec<ec2::SecurityGroup> {
        let out = block_on(
            ec2_client(region)
                .describe_security_groups()
                .filters(
                    ec2::Filter::builder()
                        .name("group-name")
                        .values(format!("respot-{}", self.deployment))
                        .build(),
                )
                .send(),
        )
        .expect("describe security groups");
        out.security_groups().to_vec()
    }
}

pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn create_list_destroy_across_three_regions() {
    let t = AwsTest::new("fleet", 3);
    t.run(&["create", "--no-verify"], 0);
    t.assert_foreign_untouched();

    let ours = t.ours();
    assert_eq!(ours.len(), 6, "2 instances in each of 3 regions: {ours:?}");
    for region in &t.regions {
        assert_eq!(ours.iter().filter(|(r, ..)| r == region).count(), 2, "{region}");
    }
    for (region, id, state, tags) in &ours {
        assert_eq!(state, "running", "{region} {id}");
        for key in TAG_KEYS {
            assert!(tags.contains_key(*key), "{region} {id} lacks tag {key}: {tags:?}");
        }
        assert_eq!(tags["respot:generation"], "1");
        assert!(tags["respot:created-by"].starts_with("arn:aws:"), "{tags:?}");
        assert!(tags["respot:image"].starts_with("ami-"), "{tags:?}");
    }
    // Volumes are tagged at launch too.
    for region in &t.regions {
        let volumes = block_on(
            ec2_client(region)
                .describe_volumes()
                .filters(
                    ec2::Filter::builder()
                        .name("tag:respot:deployment")
                        .values("fleet")
                        .build(),
                )
                .send(),
        )
        .expect("describe volumes");
        assert_eq!(volumes.volumes().len(), 2, "{region}: tagged volumes");
        for volume in volumes.volumes() {
            let tags = tags_of(volume.tags());
            assert_eq!(
                tags.get("respot:generation").map(String::as_str),
                Some("1"),
                "{tags:?}"
            );
        }
        let groups = t.security_groups(region);
        assert_eq!(groups.len(), 1, "{region}: one respot-fleet group");
        let ports: Vec<(Option<i32>, Vec<&str>)> = groups[0]
            .ip_permissions()
            .iter()
            .map(|p| {
                (
                    p.from_port(),
                    p.ip_ranges().iter().filter_map(|r| r.cidr_ip()).collect(),
                )
            })
            .collect();
        assert_eq!(
            ports,
            [(Some(22), vec![CIDR])],
            "{region}: SSH only from allow_cidr"
        );
    }
    // One RunInstances per region (one pool fits all), no tagging afterwards.
    let stats = t.proxy.stats();
    assert_eq!(stats["by_action"]["RunInstances"], 3, "{stats}");
    assert!(
        stats["by_action"]["CreateTags"].is_null(),
        "never tag after launch: {stats}"
    );
    let params: Vec<Value> = t
        .proxy
        .requests()
        .into_iter()
        .filter(|r| r["action"] == "RunInstances")
        .map(|r| r["params"].clone())
        .collect();
    for p in &params {
        // MinCount 1: a pool gives what it holds; the rest goes to the next.
        assert_eq!(p["MinCount"], "1");
        assert_eq!(p["MaxCount"], "2");
        assert_eq!(p["NetworkInterface.1.AssociatePublicIpAddress"], "true");
        assert_eq!(p["InstanceMarketOptions.MarketType"], "spot");
        assert_eq!(
            p["InstanceMarketOptions.SpotOptions.SpotInstanceType"],
            "one-time"
        );
        assert_eq!(
            p["InstanceMarketOptions.SpotOptions.InstanceInterruptionBehavior"],
            "terminate"
        );
        assert_eq!(p["InstanceMarketOptions.SpotOptions.MaxPrice"], "0.05");
    }

    // list: every instance, as JSON.
    let out = t.run(&["list", "--output", "json"], 0);
    let listed: Vec<Value> = serde_json::from_slice(&out.stdout).expect("list JSON");
    assert_eq!(listed.len(), 6, "{listed:?}");
    for row in &listed {
        assert_eq!(row["state"], "running", "{row}");
        assert_eq!(row["lifecycle"], "spot", "{row}");
        assert_eq!(row["generation"], 1, "{row}");
        assert_eq!(row["stale"], false, "{row}");
        assert!(row["public_ip"].is_string(), "{row}");
    }
    t.assert_foreign_untouched();

    // A second create is refused: partial deployments are never patched.
    let out = t.run(&["create", "--no-verify"], 1);
    assert!(stderr(&out).contains("respot destroy"), "{}", stderr(&out));
    assert_eq!(t.ours().len(), 6, "the refused create launched nothing");

    // The group deletion meets DependencyViolation twice while ENIs detach.
    t.proxy.reset();
    t.proxy.faults(json!([
        {"action": "DeleteSecurityGroup", "region": t.regions[0], "code": "DependencyViolation", "times": 2}
    ]));
    let out = t.run(&["destroy", "--yes"], 0);
    assert!(stderr(&out).contains("terminated 6"), "{}", stderr(&out));
    assert_eq!(t.live_ours(), 0, "every instance of ours is terminated");
    for region in &t.regions {
        assert!(
            t.security_groups(region).is_empty(),
            "{region}: the group is gone"
        );
    }
    let stats = t.proxy.stats();
    assert_eq!(
        stats["faults_injected"]["DeleteSecurityGroup:DependencyViolation"], 2,
        "{stats}"
    );
    t.assert_foreign_untouched();

    // Idempotent.
    let out = t.run(&["destroy", "--yes"], 0);
    assert!(stderr(&out).contains("nothing to do"), "{}", stderr(&out));
    t.assert_foreign_untouched();

    // Terminated instances still show in `list`, with AWS's reason.
    let out = t.run(&["list", "--output", "json"], 0);
    let listed: Vec<Value> = serde_json::from_slice(&out.stdout).expect("list JSON");
    assert!(listed.iter().all(|r| r["state"] == "terminated"), "{listed:?}");
}

#[test]
fn no_capacity_for_the_first_type_launches_the_second() {
    let t = AwsTest::with("fallback", 1, 2, "");
    let region = &t.regions[0];
    t.proxy.faults(json!([
        {"action": "RunInstances", "match": {"InstanceType": "t3.small"}, "code": "InsufficientInstanceCapacity"}
    ]));
    let zones = block_on(ec2_client(region).describe_subnets().send())
        .expect("subnets")
        .subnets()
        .iter()
        .filter(|s| s.default_for_az() == Some(true))
        .count() as u64;
    t.run(&["create", "--no-verify"], 0);
    let ours = t.ours();
    assert_eq!(ours.len(), 2, "{ours:?}");
    let types: Vec<String> = block_on(ec2_client(region).describe_instances().send())
        .expect("describe")
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter(|i| tags_of(i.tags()).get("respot:deployment").map(String::as_str) == Some("fallback"))
        .filter_map(|i| i.instance_type().map(|t| t.as_str().to_string()))
        .collect();
    assert_eq!(types, ["t3a.small", "t3a.small"]);
    // Each empty pool cost exactly one call: the SDK did not retry it.
    let stats = t.proxy.stats();
    assert_eq!(
        stats["faults_injected"]["RunInstances:InsufficientInstanceCapacity"], zones,
        "{stats}"
    );
    assert_eq!(stats["by_action"]["RunInstances"], zones + 1, "{stats}");
    t.assert_foreign_untouched();
    t.run(&["destroy", "--yes"], 0);
    t.assert_foreign_untouched();
}

#[test]
fn a_quota_error_in_one_region_rolls_back_every_region() {
    let t = AwsTest::new("quota", 3);
    t.proxy.faults(json!([
        {"action": "RunInstances", "region": t.regions[1], "code": "MaxSpotInstanceCountExceeded"}
    ]));
    let out = t.run(&["create", "--no-verify"], 1);
    let err = stderr(&out);
    assert!(err.contains("rolled back"), "{err}");
    assert!(
        err.contains("Service Quotas") && err.contains(&t.regions[1]),
        "{err}"
    );
    assert_eq!(
        t.live_ours(),
        0,
        "everything of the run is terminated: {:?}",
        t.ours()
    );
    assert_eq!(t.ours().len(), 4, "the two healthy regions had launched");
    for region in &t.regions {
        assert!(
            t.security_groups(region).is_empty(),
            "{region}: the group is gone"
        );
    }
    t.assert_foreign_untouched();
}

#[test]
fn on_demand_fallback_when_spot_quota_is_used_up() {
    let t = AwsTest::with("ondemand", 1, 2, "fallback = \"on-demand\"");
    t.proxy.faults(json!([
        {"action": "RunInstances", "match": {"InstanceMarketOptions.MarketType": "spot"},
         "code": "MaxSpotInstanceCountExceeded"}
    ]));
    let out = t.run(&["list", "--output", "json"], 0);
    let listed: Vec<Value> = serde_json::from_slice(&out.stdout).expect("list JSON");
    assert!(listed.is_empty(), "{listed:?}");
    t.run(&["create", "--no-verify"], 0);
    let out = t.run(&["list", "--output", "json"], 0);
    let listed: Vec<Value> = serde_json::from_slice(&out.stdout).expect("list JSON");
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|r| r["lifecycle"] == "on-demand"), "{listed:?}");
    t.run(&["destroy", "--yes"], 0);
    t.assert_foreign_untouched();
}

#[test]
fn throttling_is_retried_until_it_passes() {
    let t = AwsTest::new("throttle", 1);
    t.proxy.faults(json!([
        {"action": "RunInstances", "code": "RequestLimitExceeded", "times": 2},
        {"action": "DescribeInstances", "code": "RequestLimitExceeded", "times": 2}
    ]));
    t.run(&["create", "--no-verify"], 0);
    let stats = t.proxy.stats();
    assert_eq!(
        stats["faults_injected"]["RunInstances:RequestLimitExceeded"], 2,
        "{stats}"
    );
    assert_eq!(
        stats["faults_injected"]["DescribeInstances:RequestLimitExceeded"], 2,
        "{stats}"
    );
    assert_eq!(t.live_ours(), 2);
    t.run(&["destroy", "--yes"], 0);
    assert_eq!(t.live_ours(), 0);
    t.assert_foreign_untouched();
}

#[test]
fn sigint_mid_launch_leaves_nothing_running_and_nothing_untagged() {
    let t = AwsTest::new("interrupt", 2);
    // Hold the wait for `running` (it filters on instance-id) so Ctrl-C
    // lands after RunInstances has launched instances.
    t.proxy.faults(json!([
        {"action": "DescribeInstances", "match": {"Filter.*.Name": "instance-id"}, "delay_ms": 20000}
    ]));
    let child = t
        .command(&["create", "--no-verify"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(60);
    while t.live_ours() < 4 {
        assert!(Instant::now() < deadline, "the launch never reached RunInstances");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    t.assert_foreign_untouched();
    // SAFETY: signalling the child we spawned, by its pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let out = child.wait_with_output().expect("respot exits");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        t.live_ours(),
        0,
        "nothing of the run is left running: {:?}",
        t.ours()
    );
    t.assert_foreign_untouched();
}

#[test]
fn missing_credentials_fail_with_the_command_to_run() {
    let t = AwsTest::new("nocreds", 1);
    let out = t
        .command(&["list"])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .output()
        .expect("run respot");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("aws sso login"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        t.proxy.stats()["total"],
        0,
        "no call was made without credentials"
    );

    let out = t
        .command(&["list", "--profile", "nosuch"])
        .output()
        .expect("run respot");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("aws sso login --profile nosuch"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_bad_region_fails_clearly() {
    let t = AwsTest::new("badregion", 1);
    let out = t.run(&["list", "--region", "xx-nowhere-1"], 3);
    let err = stderr(&out);
    assert!(err.contains("`xx-nowhere-1` is not an AWS region"), "{err}");
    let out = t.run(&["list", "--region", "nowhere"], 3);
    assert!(
        stderr(&out).contains("not an AWS region name"),
        "{}",
        stderr(&out)
    );
    t.assert_foreign_untouched();
}

/// The generation tag of each of our live instances.
fn live_generations(t: &AwsTest) -> Vec<String> {
    let mut generations: Vec<String> = t
        .ours()
        .into_iter()
        .filter(|(_, _, state, _)| state != "terminated")
        .map(|(_, _, _, tags)| tags.get("respot:generation").cloned().unwrap_or_default())
        .collect();
    generations.sort();
    generations
}

#[test]
fn deploy_blue_green_replaces_the_generation_and_keeps_it_on_failure() {
    let t = AwsTest::new("bluegreen", 2);
    t.run(&["create", "--no-verify"], 0);
    assert_eq!(live_generations(&t), ["1", "1", "1", "1"]);

    // Without a terminal and without --yes nothing is replaced.
    let out = t.run(&["deploy", "--strategy", "blue-green", "--no-verify"], 2);
    assert!(stderr(&out).contains("pass --yes"), "{}", stderr(&out));
    assert_eq!(live_generations(&t), ["1", "1", "1", "1"]);

    // A failed new generation is rolled back; the old one keeps running.
    std::fs::write(
        t.context.path().join("instance/files/opt/hello/version.txt"),
        "2\n",
    )
    .unwrap();
    t.proxy.faults(json!([
        {"action": "RunInstances", "region": t.regions[1], "code": "VcpuLimitExceeded"}
    ]));
    let out = t.run(&["deploy", "--strategy", "blue-green", "--yes", "--no-verify"], 1);
    assert!(stderr(&out).contains("rolled back"), "{}", stderr(&out));
    assert_eq!(
        live_generations(&t),
        ["1", "1", "1", "1"],
        "the old generation is untouched"
    );
    t.assert_foreign_untouched();

    t.proxy.faults(json!([]));
    t.run(&["deploy", "--strategy", "blue-green", "--yes", "--no-verify"], 0);
    assert_eq!(
        live_generations(&t),
        ["3", "3", "3", "3"],
        "only the new generation is live"
    );
    let digests: std::collections::BTreeSet<String> = t
        .ours()
        .into_iter()
        .filter(|(_, _, state, _)| state != "terminated")
        .map(|(_, _, _, tags)| tags["respot:digest"].clone())
        .collect();
    assert_eq!(digests.len(), 1, "{digests:?}");
    t.assert_foreign_untouched();
    t.run(&["destroy", "--yes"], 0);
    assert_eq!(t.live_ours(), 0);
    for region in &t.regions {
        assert!(
            t.security_groups(region).is_empty(),
            "{region}: security group left"
        );
    }
}

#[test]
fn deploy_recreate_destroys_first_then_creates() {
    let t = AwsTest::with("recreate", 1, 2, "");
    t.run(&["create", "--no-verify"], 0);
    std::fs::write(
        t.context.path().join("instance/files/opt/hello/version.txt"),
        "2\n",
    )
    .unwrap();
    let out = t.run(&["deploy", "--yes", "--no-verify", "--output", "json"], 0);
    let report: Value = serde_json::from_slice(&out.stdout).expect("deploy --output json");
    assert_eq!(report["strategy"], "recreate");
    assert_eq!(report["replaced"].as_array().unwrap().len(), 2);
    assert_eq!(report["destroyed"]["terminated"].as_array().unwrap().len(), 2);
    assert_eq!(report["created"]["generation"], 2);
    assert_eq!(live_generations(&t), ["2", "2"]);
    t.assert_foreign_untouched();
    // A blueprint that no longer renders must not keep its fleet alive.
    std::fs::write(
        t.context.path().join("templates/cloud-init.yaml"),
        "#cloud-config\n{{ nope }}\n",
    )
    .unwrap();
    t.run(&["render"], 2);
    t.run(&["destroy", "--yes"], 0);
    assert_eq!(t.live_ours(), 0);
}

#[test]
fn plan_shows_destroy_create_and_price_and_changes_nothing() {
    let t = AwsTest::new("planned", 2);
    let fresh: Value =
        serde_json::from_slice(&t.run(&["plan", "--output", "json"], 0).stdout).expect("plan json");
    assert_eq!(fresh["change"], "new", "{fresh}");
    for region in fresh["regions"].as_array().unwrap() {
        assert_eq!(region["destroy"], 0);
        assert_eq!(region["create"], 2);
        assert_eq!(region["instance_type"], "t3.small");
        assert!(
            region["price_per_hour"].as_f64().is_some(),
            "moto has spot prices: {region}"
        );
    }
    assert!(fresh["cost_per_hour"].as_f64().is_some(), "{fresh}");

    t.run(&["create", "--no-verify"], 0);
    std::fs::write(
        t.context.path().join("instance/files/opt/hello/version.txt"),
        "2\n",
    )
    .unwrap();
    t.proxy.reset();
    let out = t.run(&["plan", "--strategy", "blue-green"], 0);
    let table = String::from_utf8_lossy(&out.stdout);
    for region in &t.regions {
        assert!(
            table
                .lines()
                .any(|l| l.starts_with(region.as_str()) && l.contains(" 2 ")),
            "{table}"
        );
    }
    assert!(
        stderr(&out).contains("changed against the live fleet"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("blue-green"), "{}", stderr(&out));
    // Reads only: every call plan made is a Describe, or the read of the
    // image's SSM parameter.
    let stats = t.proxy.stats();
    for (action, _) in stats["by_action"].as_object().unwrap() {
        assert!(
            action.starts_with("Describe") || action == "GetParameter",
            "plan called {action}: {stats}"
        );
    }
    assert_eq!(live_generations(&t), ["1", "1", "1", "1"]);
    t.run(&["destroy", "--yes"], 0);
}

fn filter(name: &str, value: &str) -> ec2::Filter {
    ec2::Filter::builder().name(name).values(value).build()
}

/// Our instances in `region`, as EC2 describes them.
fn described_ours(t: &AwsTest, region: &str) -> Vec<ec2::Instance> {
    let call = ec2_client(region)
        .describe_instances()
        .filters(filter("tag:respot:deployment", &t.deployment));
    let out = block_on(call.send()).expect("describe instances");
    out.reservations()
        .iter()
        .flat_map(|r| r.instances())
        .cloned()
        .collect()
}

/// The volumes attached to `instance`.
fn volumes_of(region: &str, instance: &str) -> Vec<ec2::Volume> {
    let call = ec2_client(region)
        .describe_volumes()
        .filters(filter("attachment.instance-id", instance));
    block_on(call.send())
        .expect("describe volumes")
        .volumes()
        .to_vec()
}

/// The parameters of every `RunInstances` respot sent through the proxy.
fn run_instances_params(t: &AwsTest) -> Vec<Value> {
    t.proxy
        .requests()
        .into_iter()
        .filter(|r| r["action"] == "RunInstances")
        .map(|r| r["params"].clone())
        .collect()
}

/// IMDSv2 only, one hop, the endpoint on: what respot asks of every instance.
fn assert_imdsv2_only(region: &str, instance: &ec2::Instance) {
    let id = instance.instance_id().unwrap_or_default();
    let metadata = instance
        .metadata_options()
        .unwrap_or_else(|| panic!("{region} {id}: moto records MetadataOptions"));
    assert_eq!(
        metadata.http_tokens(),
        Some(&ec2::HttpTokensState::Required),
        "{region} {id}: {metadata:?}"
    );
    assert_eq!(
        metadata.http_put_response_hop_limit(),
        Some(1),
        "{region} {id}: {metadata:?}"
    );
    assert_eq!(
        metadata.http_endpoint(),
        Some(&ec2::InstanceMetadataEndpointState::Enabled),
        "{region} {id}: {metadata:?}"
    );
}

#[test]
fn create_launches_imdsv2_only_with_encrypted_root_volumes() {
    let t = AwsTest::new("hardened", 2);
    t.run(&["create", "--no-verify"], 0);
    for region in &t.regions {
        let instances = described_ours(&t, region);
        assert_eq!(instances.len(), 2, "{region}: {instances:?}");
        for instance in &instances {
            let id = instance.instance_id().unwrap_or_default();
            assert_imdsv2_only(region, instance);
            let root = instance
                .root_device_name()
                .unwrap_or_else(|| panic!("{region} {id}: moto records the root device"));
            let volumes = volumes_of(region, id);
            assert_eq!(volumes.len(), 1, "{region} {id}: one root volume: {volumes:?}");
            assert_eq!(volumes[0].encrypted(), Some(true), "{region} {id}: {volumes:?}");
            assert_eq!(
                volumes[0].attachments().first().and_then(|a| a.device()),
                Some(root),
                "{region} {id}: the encrypted volume is the root: {volumes:?}"
            );
            let mapping = instance
                .block_device_mappings()
                .iter()
                .find(|m| m.device_name() == Some(root))
                .and_then(|m| m.ebs());
            assert_eq!(
                mapping.and_then(|ebs| ebs.delete_on_termination()),
                Some(true),
                "{region} {id}: {mapping:?}"
            );
        }
    }
    for p in run_instances_params(&t) {
        assert_eq!(p["MetadataOptions.HttpTokens"], "required", "{p}");
        assert_eq!(p["MetadataOptions.HttpPutResponseHopLimit"], "1", "{p}");
        assert_eq!(p["MetadataOptions.HttpEndpoint"], "enabled", "{p}");
        assert_eq!(p["BlockDeviceMapping.1.DeviceName"], "/dev/xvda", "{p}");
        assert_eq!(p["BlockDeviceMapping.1.Ebs.Encrypted"], "true", "{p}");
        assert_eq!(p["BlockDeviceMapping.1.Ebs.DeleteOnTermination"], "true", "{p}");
        assert!(
            p["BlockDeviceMapping.1.Ebs.VolumeType"].is_null(),
            "the volume type stays the image's: {p}"
        );
        assert!(p["BlockDeviceMapping.2.DeviceName"].is_null(), "{p}");
    }
    // Hardening rides on calls respot already made (BENCHMARKS.md: 8 per
    // region with the image's SSM parameter, one STS call per run, and the
    // deployment lock's create and delete).
    assert_eq!(
        t.proxy.stats()["by_action"],
        json!({
            "AuthorizeSecurityGroupIngress": 2, "CreateSecurityGroup": 3, "DeleteSecurityGroup": 1,
            "DescribeImages": 2, "DescribeInstances": 4, "DescribeSpotPriceHistory": 2,
            "DescribeSubnets": 2, "GetCallerIdentity": 1, "GetParameter": 2, "RunInstances": 2
        })
    );
    t.run(&["destroy", "--yes"], 0);
    assert_eq!(t.live_ours(), 0);
    t.assert_foreign_untouched();
}

#[test]
fn encrypt_volumes_false_leaves_the_root_volume_to_the_image() {
    let t = AwsTest::with("plainroot", 1, 1, "encrypt_volumes = false");
    let region = &t.regions[0];
    t.run(&["create", "--no-verify"], 0);
    let instances = described_ours(&t, region);
    assert_eq!(instances.len(), 1, "{instances:?}");
    assert_imdsv2_only(region, &instances[0]);
    let volumes = volumes_of(region, instances[0].instance_id().unwrap_or_default());
    assert_eq!(volumes.len(), 1, "{volumes:?}");
    assert_eq!(volumes[0].encrypted(), Some(false), "moto's default: {volumes:?}");
    for p in run_instances_params(&t) {
        assert!(p["BlockDeviceMapping.1.DeviceName"].is_null(), "{p}");
    }
    t.run(&["destroy", "--yes"], 0);
    t.assert_foreign_untouched();
}

#[test]
fn a_group_with_a_rule_respot_did_not_write_stops_create() {
    let t = AwsTest::new("openrule", 1);
    let region = &t.regions[0];
    let client = ec2_client(region);
    let tags = ec2::TagSpecification::builder()
        .resource_type(ec2::ResourceType::SecurityGroup)
        .tags(
            ec2::Tag::builder()
                .key("respot:deployment")
                .value("openrule")
                .build(),
        )
        .build();
    let group = block_on(
        client
            .create_security_group()
            .group_name("respot-openrule")
            .description("left by an earlier run")
            .tag_specifications(tags)
            .send(),
    )
    .expect("create the group")
    .group_id()
    .expect("a group id")
    .to_string();
    let rule = |port: i32, cidr: &str| {
        ec2::IpPermission::builder()
            .ip_protocol("tcp")
            .from_port(port)
            .to_port(port)
            .ip_ranges(ec2::IpRange::builder().cidr_ip(cidr).build())
            .build()
    };
    block_on(
        client
            .authorize_security_group_ingress()
            .group_id(&group)
            .ip_permissions(rule(22, CIDR))
            .ip_permissions(rule(443, "0.0.0.0/0"))
            .send(),
    )
    .expect("add the rules");

    let out = t.run(&["create", "--no-verify"], 1);
    let err = stderr(&out);
    for want in [
        group.as_str(),
        region.as_str(),
        "ingress rules respot did not write: tcp 443 from 0.0.0.0/0;",
        "respot destroy",
    ] {
        assert!(err.contains(want), "lacks {want:?}:\n{err}");
    }
    assert_eq!(t.ours(), [], "no instance was created");
    assert_eq!(t.proxy.calls("RunInstances"), 0);
    assert_eq!(t.proxy.calls("AuthorizeSecurityGroupIngress"), 0);
    t.assert_foreign_untouched();
    // The rollback's destroy deletes the group (it is tagged ours), rules
    // and all, so the next create starts from a group of respot's rules only.
    assert_eq!(t.security_groups(region), [], "{err}");
    t.run(&["create", "--no-verify"], 0);
    let groups = t.security_groups(region);
    let rules: Vec<(Option<i32>, Vec<&str>)> = groups
        .iter()
        .flat_map(|g| g.ip_permissions())
        .map(|p| {
            (
                p.from_port(),
                p.ip_ranges().iter().filter_map(|r| r.cidr_ip()).collect(),
            )
        })
        .collect();
    assert_eq!(rules, [(Some(22), vec![CIDR])], "{groups:?}");
    t.run(&["destroy", "--yes"], 0);
    t.assert_foreign_untouched();
}

/// Off a terminal, one plain line per phase change and a summary priced at
/// the current spot price; with `--output json`, the phases as JSON lines
/// on stderr and the same summary in the report.
#[test]
fn create_reports_each_phase_and_ends_with_a_priced_summary() {
    let t = AwsTest::with("progress", 1, 2, "");
    let region = t.regions[0].clone();
    let out = t.run(&["create", "--no-verify"], 0);
    let text = stderr(&out);
    assert!(text.contains("] progress generation 1: requested"), "{text}");
    assert_eq!(
        text.matches(&format!("] {region} respot-progress-g1 (")).count(),
        2,
        "one running line per instance: {text}"
    );
    assert!(text.contains("estimated cost: $0.0"), "{text}");
    assert!(
        text.contains("estimated cost: $0.0000") && !text.contains("estimated cost: $0.00/"),
        "moto has a spot price: {text}"
    );
    t.run(&["destroy", "--yes"], 0);

    let out = t.run(&["create", "--no-verify", "--output", "json"], 0);
    let events: Vec<Value> = stderr(&out)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let phases: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e["region"].as_str().unwrap_or("-"), e["phase"].as_str().unwrap()))
        .collect();
    assert_eq!(
        phases,
        [
            ("-", "requested"),
            (region.as_str(), "running"),
            (region.as_str(), "running")
        ],
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .all(|e| e["schema"] == "respot.progress" && e["version"] == 1)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let summary = &report["summary"];
    let instances = summary["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 2, "{summary}");
    let each = instances[0]["price_per_hour"].as_f64().expect("priced");
    let total = summary["cost_per_hour"].as_f64().unwrap();
    assert!(each > 0.0 && (total - 2.0 * each).abs() < 1e-9, "{summary}");
    assert!(instances[0]["address"].is_string(), "{summary}");
    t.run(&["destroy", "--yes"], 0);
}

/// In a real terminal (a private tmux), the live lines show each instance
/// while the create runs, and are gone when it ends, before the summary.
/// The price lookup is held back so the lines stay long enough to see.
#[test]
fn create_in_a_terminal_shows_live_lines_that_are_gone_at_the_end() {
    let t = AwsTest::with("live", 1, 2, "");
    t.proxy
        .faults(json!([{"action": "DescribeSpotPriceHistory", "delay_ms": 4000}]));
    let mut env: Vec<(String, String)> = t
        .context
        .env()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string_lossy().to_string()))
        .collect();
    let home = t.context.home();
    env.extend([
        ("AWS_ENDPOINT_URL".to_string(), t.proxy.endpoint()),
        ("AWS_ACCESS_KEY_ID".to_string(), "testing".to_string()),
        ("AWS_SECRET_ACCESS_KEY".to_string(), "testing".to_string()),
        ("AWS_EC2_METADATA_DISABLED".to_string(), "true".to_string()),
        (
            "AWS_CONFIG_FILE".to_string(),
            home.join("no-aws-config").display().to_string(),
        ),
        (
            "AWS_SHARED_CREDENTIALS_FILE".to_string(),
            home.join("no-aws-credentials").display().to_string(),
        ),
    ]);
    let terminal = crate::support::terminal::Terminal::start(
        "aws-live",
        &home.join("in-terminal.sh"),
        t.context.path(),
        &env,
        "create --no-verify",
    );
    let live_line = |line: &str| line.contains("respot-live-g1 i-") && line.contains("[█");
    let (during, end) = terminal.watch(Duration::from_secs(120), |screen| {
        screen.lines().filter(|l| live_line(l)).count() == 2
    });
    let during = during.unwrap_or_else(|| panic!("no live line per instance was seen; at the end:\n{end}"));
    assert!(
        during.contains("`live` generation 1: 2 instances (2 running)"),
        "{during}"
    );
    assert!(
        during.contains(&format!("{} 2 instances (2 running)", t.regions[0])),
        "{during}"
    );
    assert!(end.contains("respot-exit:0"), "{end}");
    let history = terminal.screen(true);
    assert!(
        !history.lines().any(live_line) && !history.contains('░'),
        "the live lines are gone at the end: {history}"
    );
    assert!(end.contains("slowest instance: running "), "{end}");
    assert!(end.contains("estimated cost: $0.0000"), "{end}");
    t.run(&["destroy", "--yes"], 0);
}

/// `render` reports the size `create` sends: its packed user-data has the
/// length of the user-data moto stores, and the same bytes but for the
/// keys (a stored gzip member of the same length).
/// On moto, in one region: `render` reports the size `create` sends (its
/// packed user-data has the length of the user-data moto stores, and the
/// same bytes but for the keys, a stored gzip member of the same length);
/// then a blueprint too large for user-data travels as a bundle: the
/// archive is in moto's S3 under the digest with an intact sha256, the
/// user-data carries only a presigned URL and that sha256, and destroy
/// empties it.
#[test]
fn render_size_equals_what_create_sends_and_large_blueprints_travel_through_s3() {
    let t = AwsTest::with("sized", 1, 1, "");
    render_size_equals_the_user_data_create_sends(&t);
    large_blueprint_travels_as_a_bundle_through_s3(&t);
}

fn render_size_equals_the_user_data_create_sends(t: &AwsTest) {
    let packed_path = t.context.path().join("render-user-data.bin");
    let out = t.run(
        &[
            "render",
            "--output",
            "json",
            "--user-data-out",
            packed_path.to_str().unwrap(),
        ],
        0,
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("render JSON");
    let rendered = std::fs::read(&packed_path).expect("render wrote the user-data");
    assert_eq!(rendered.len() as u64, report["packed_bytes"].as_u64().unwrap());
    t.run(&["create", "--no-verify"], 0);
    let ours = t.ours();
    assert_eq!(ours.len(), 1, "{ours:?}");
    let (region, id, ..) = &ours[0];
    let attribute = block_on(
        ec2_client(region)
            .describe_instance_attribute()
            .instance_id(id)
            .attribute(ec2::InstanceAttributeName::UserData)
            .send(),
    )
    .expect("describe the user-data attribute");
    let encoded = attribute
        .user_data()
        .and_then(|v| v.value())
        .expect("moto keeps the user-data");
    use base64::Engine as _;
    let sent = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .expect("user-data is base64");
    assert_eq!(
        sent.len(),
        rendered.len(),
        "render reported {} bytes, create sent {}",
        rendered.len(),
        sent.len()
    );
    assert_eq!(report["gzipped"], true, "the sample is gzipped");
    let keys_at = |bytes: &[u8]| {
        // The first member is the compressed document and launch part; the
        // next one (the keys, which differ between the two) starts with a
        // gzip header.
        10 + bytes[10..]
            .windows(4)
            .position(|w| w == [0x1f, 0x8b, 0x08, 0x00])
            .expect("several gzip members")
    };
    assert_eq!(keys_at(&sent), keys_at(&rendered));
    assert_eq!(
        sent[..keys_at(&sent)],
        rendered[..keys_at(&rendered)],
        "the compressed document and launch part are the same bytes"
    );
    t.run(&["destroy", "--yes"], 0);
}

fn large_blueprint_travels_as_a_bundle_through_s3(t: &AwsTest) {
    let files = t.context.path().join("instance/files/opt/big");
    std::fs::create_dir_all(&files).unwrap();
    let text: String = (0..2000)
        .map(|i| format!("line {i}: configuration value {}\n", i * 7919 % 10007))
        .collect();
    std::fs::write(files.join("config.txt"), &text).unwrap();
    let mut state = 7u64;
    let binary: Vec<u8> = (0..200_000)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u8
        })
        .collect();
    std::fs::write(files.join("blob.bin"), &binary).unwrap();
    let rendered_path = t.context.path().join("bundled-user-data.bin");
    let out = t.run(
        &[
            "render",
            "--output",
            "json",
            "--user-data-out",
            rendered_path.to_str().unwrap(),
        ],
        0,
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("render JSON");
    assert_eq!(report["transport"], "bundle", "auto bundles what does not fit");
    let sha256 = report["bundle"]["sha256"].as_str().unwrap().to_string();
    let digest = report["digest"].as_str().unwrap().to_string();
    assert!(
        report["document"]
            .as_str()
            .unwrap()
            .contains(&format!("# respot bundle: sha256 {sha256}"))
    );

    t.run(&["create", "--no-verify"], 0);
    let region = &t.regions[0];
    let s3 = s3_client(region);
    let buckets = block_on(s3.list_buckets().send()).expect("list buckets");
    let bucket = buckets
        .buckets()
        .iter()
        .filter_map(|b| b.name())
        .find(|n| n.starts_with("respot-bundles-") && n.ends_with(region.as_str()))
        .expect("respot made its bucket")
        .to_string();
    let key = format!("sized/{digest}.tar.gz");
    let object = block_on(s3.get_object().bucket(&bucket).key(&key).send()).expect("the bundle is in S3");
    let body = block_on(object.body.collect()).unwrap().into_bytes();
    use sha2::Digest as _;
    assert_eq!(hex::encode(sha2::Sha256::digest(&body)), sha256, "intact in S3");

    let ours = t.ours();
    let (_, id, ..) = ours
        .iter()
        .find(|(_, _, state, _)| state != "terminated")
        .expect("the bundled instance is live");
    let attribute = block_on(
        ec2_client(region)
            .describe_instance_attribute()
            .instance_id(id)
            .attribute(ec2::InstanceAttributeName::UserData)
            .send(),
    )
    .expect("describe the user-data attribute");
    use base64::Engine as _;
    let packed = base64::engine::general_purpose::STANDARD
        .decode(attribute.user_data().and_then(|v| v.value()).unwrap())
        .unwrap();
    let mut user_data = String::new();
    if packed.starts_with(&[0x1f, 0x8b]) {
        std::io::Read::read_to_string(
            &mut flate2::read::MultiGzDecoder::new(&packed[..]),
            &mut user_data,
        )
        .unwrap();
    } else {
        user_data = String::from_utf8(packed.clone()).unwrap();
    }
    assert!(packed.len() < 16384, "{} bytes", packed.len());
    // render counts the presigned URL at its longest, and create pads the
    // real one to that: the same line, the same stored bytes. (The
    // compressed rest may differ by a few bytes: this create is generation
    // 2, render counts generation 1, and Zopfli's block splits and codes
    // shift with that digit; measured up to 6 bytes either way.)
    let mut rendered = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::MultiGzDecoder::new(&std::fs::read(&rendered_path).unwrap()[..]),
        &mut rendered,
    )
    .unwrap();
    let url_line_of = |doc: &str| -> usize {
        doc.lines()
            .find(|l| l.contains("X-Amz-Signature"))
            .expect("a URL line")
            .len()
    };
    assert_eq!(url_line_of(&rendered), url_line_of(&user_data));
    let rendered_bytes = report["packed_bytes"].as_u64().unwrap() as usize;
    assert!(
        rendered_bytes.abs_diff(packed.len()) <= 12,
        "render said {rendered_bytes}, create sent {}",
        packed.len()
    );
    assert!(
        !user_data.contains("line 1999: configuration"),
        "no file content in user-data"
    );
    let url_line = user_data
        .lines()
        .find(|l| l.contains("X-Amz-Signature"))
        .expect("a presigned URL in the user-data");
    let url: String = serde_json::from_str(url_line.trim().trim_start_matches("- ")).expect("a quoted URL");
    assert!(url.contains(&key), "{url}");
    assert!(
        user_data.contains(&format!("    - {sha256}\n")),
        "the sha256 for the boot step"
    );
    // The URL works (moto answers presigned GETs) and gives the same bytes.
    let fetched = reqwest_free_get(&url);
    assert_eq!(hex::encode(sha2::Sha256::digest(&fetched)), sha256);

    t.run(&["destroy", "--yes"], 0);
    let left = block_on(s3.list_objects_v2().bucket(&bucket).prefix("sized/").send()).unwrap();
    assert!(
        left.contents().is_empty(),
        "destroy empties the deployment's bundles"
    );
}

/// A client straight to moto's S3 (path-style, as respot uses it there).
fn s3_client(region: &str) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new(region.to_string()))
        .endpoint_url(moto::moto_url())
        .force_path_style(true)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "testing", "testing", None, None, "tests",
        ))
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// A plain HTTP GET of a loopback URL, body only.
fn reqwest_free_get(url: &str) -> Vec<u8> {
    let rest = url.strip_prefix("http://").expect("a loopback http URL");
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut stream = std::net::TcpStream::connect(host).expect("connect");
    std::io::Write::write_all(
        &mut stream,
        format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut response = Vec::new();
    std::io::Read::read_to_end(&mut stream, &mut response).unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("headers end");
    let head = String::from_utf8_lossy(&response[..split]);
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    response[split + 4..].to_vec()
}

/// The default subnet of each zone of `region`, by zone.
fn default_subnets(region: &str) -> BTreeMap<String, String> {
    block_on(ec2_client(region).describe_subnets().send())
        .expect("subnets")
        .subnets()
        .iter()
        .filter(|s| s.default_for_az() == Some(true))
        .filter_map(|s| Some((s.availability_zone()?.to_string(), s.subnet_id()?.to_string())))
        .collect()
}

/// Our live instances, as (region, type, zone) → count, straight from moto.
fn live_pools(t: &AwsTest) -> BTreeMap<(String, String, String), usize> {
    let mut pools = BTreeMap::new();
    for region in &t.regions {
        for i in described_ours(t, region) {
            if i.state().and_then(|s| s.name()) == Some(&ec2::InstanceStateName::Terminated) {
                continue;
            }
            let key = (
                region.clone(),
                i.instance_type()
                    .map(|t| t.as_str().to_string())
                    .unwrap_or_default(),
                i.placement()
                    .and_then(|p| p.availability_zone())
                    .unwrap_or_default()
                    .to_string(),
            );
            *pools.entry(key).or_insert(0) += 1;
        }
    }
    pools
}

/// Nothing of the deployment is left: no live instance, no group, and the
/// foreign instances are as they were.
fn assert_nothing_orphaned(t: &AwsTest) {
    let live: Vec<_> = t
        .ours()
        .into_iter()
        .filter(|(_, _, state, _)| state != "terminated")
        .collect();
    assert_eq!(live, [], "instances of ours left running");
    for region in &t.regions {
        assert!(
            t.security_groups(region).is_empty(),
            "{region}: the group is left"
        );
    }
    t.assert_foreign_untouched();
}

#[test]
fn three_regions_of_250_through_the_enforcing_proxy() {
    let t = AwsTest::limits("large", 3, 250, "");
    assert_eq!(t.proxy.stats()["total"], 0);
    t.run(&["create", "--no-verify"], 0);
    assert_eq!(t.live_ours(), 750);
    let out = t.run(&["list", "--output", "json"], 0);
    let listed: Vec<Value> = serde_json::from_slice(&out.stdout).expect("list JSON");
    assert_eq!(listed.len(), 750);
    t.run(&["destroy", "--yes"], 0);
    assert_nothing_orphaned(&t);
    let stats = t.proxy.stats();
    assert!(
        stats["faults_injected"].as_object().is_none_or(|f| f.is_empty()),
        "every filter was legal: {stats}"
    );
    // Every filter of every call stayed within EC2's 200 values, and 250
    // instances took one RunInstances per region.
    for request in t.proxy.requests() {
        let mut per_filter: BTreeMap<String, usize> = BTreeMap::new();
        for key in request["params"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
        {
            if let Some(rest) = key.strip_prefix("Filter.")
                && let Some((index, value)) = rest.split_once('.')
                && value.starts_with("Value.")
            {
                *per_filter.entry(index.to_string()).or_default() += 1;
            }
        }
        assert!(per_filter.values().all(|n| *n <= 200), "{request}");
    }
    assert_eq!(stats["by_action"]["RunInstances"], 3, "{stats}");
}

#[test]
fn a_first_create_inside_the_group_not_found_window_succeeds() {
    let t = AwsTest::limits("freshgroup", 2, 2, "");
    t.proxy.ec2(json!({"group_not_found_ms": 1500}));
    t.run(&["create", "--no-verify"], 0);
    assert_eq!(t.live_ours(), 4);
    let stats = t.proxy.stats();
    let faults = &stats["faults_injected"];
    let not_found = faults["AuthorizeSecurityGroupIngress:InvalidGroup.NotFound"]
        .as_u64()
        .unwrap_or(0)
        + faults["RunInstances:InvalidGroup.NotFound"].as_u64().unwrap_or(0);
    assert!(not_found >= 2, "the window was hit in both regions: {stats}");
    for region in &t.regions {
        let rules = t.security_groups(region)[0].ip_permissions().len();
        assert_eq!(rules, 1, "{region}: SSH was opened after all");
    }
    t.run(&["destroy", "--yes"], 0);
    assert_nothing_orphaned(&t);
}

#[test]
fn partial_capacity_across_three_pools_is_carried_to_the_next() {
    let t = AwsTest::limits("partial", 1, 10, "");
    let region = t.regions[0].clone();
    let subnets = default_subnets(&region);
    let zones: Vec<&String> = subnets.keys().collect();
    assert!(zones.len() >= 2, "moto has two zones or more: {zones:?}");
    let pool = |itype: &str, zone: &str, capacity: u32| {
        json!({"action": "RunInstances", "capacity": capacity,
               "match": {"InstanceType": itype, "NetworkInterface.1.SubnetId": subnets[zone]}})
    };
    let mut rules = vec![pool("t3.small", zones[0], 3), pool("t3.small", zones[1], 4)];
    for zone in &zones[2..] {
        rules.push(pool("t3.small", zone, 0));
    }
    t.proxy.faults(Value::Array(rules));
    t.run(&["create", "--no-verify"], 0);
    let want: BTreeMap<(String, String, String), usize> = [
        ((region.clone(), "t3.small".to_string(), zones[0].clone()), 3),
        ((region.clone(), "t3.small".to_string(), zones[1].clone()), 4),
        ((region.clone(), "t3a.small".to_string(), zones[0].clone()), 3),
    ]
    .into_iter()
    .collect();
    assert_eq!(live_pools(&t), want);
    let asked: Vec<(String, String)> = run_instances_params(&t)
        .iter()
        .map(|p| {
            (
                p["MinCount"].as_str().unwrap_or("").to_string(),
                p["MaxCount"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let mut want_asked = vec![
        ("1".to_string(), "10".to_string()),
        ("1".to_string(), "7".to_string()),
    ];
    want_asked.extend(zones[2..].iter().map(|_| ("1".to_string(), "3".to_string())));
    want_asked.push(("1".to_string(), "3".to_string()));
    assert_eq!(asked, want_asked, "each pool is asked for what is left");
    t.run(&["destroy", "--yes"], 0);
    assert_nothing_orphaned(&t);
}

#[test]
fn sigkill_at_random_points_while_describe_lags_then_destroy_orphans_nothing() {
    let t = AwsTest::limits("killed", 1, 2, "");
    t.proxy.ec2(json!({"describe_lag_ms": 2500}));
    // Points across the run: before the group, around RunInstances, in the
    // wait for running (which the lag holds).
    let mut points: Vec<u64> = vec![150, 600, 1500];
    points.push(fastrand::u64(100..2500));
    for delay in points {
        let mut child = t
            .command(&["create", "--no-verify"])
            .stderr(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(Duration::from_millis(delay));
        // SAFETY: signalling the child we spawned, by its pid.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGKILL);
        }
        child.wait().expect("reap respot");
        // A create killed while it held the deployment lock leaves it, as a
        // crashed holder does: the operator removes it (issue 13.6).
        t.run(&["unlock", "--yes"], 0);
        let out = t.run(&["destroy", "--yes"], 0);
        assert_eq!(
            t.live_ours(),
            0,
            "killed after {delay} ms: destroy left instances\n{}",
            stderr(&out)
        );
        for region in &t.regions {
            assert!(
                t.security_groups(region).is_empty(),
                "killed after {delay} ms: the group is left\n{}",
                stderr(&out)
            );
        }
    }
    t.assert_foreign_untouched();
}

#[test]
fn public_ip_false_launches_private_instances_listed_by_private_address() {
    let t = AwsTest::limits("private", 1, 2, "public_ip = false");
    t.run(&["create", "--no-verify"], 0);
    for p in run_instances_params(&t) {
        assert_eq!(p["NetworkInterface.1.AssociatePublicIpAddress"], "false", "{p}");
    }
    let out = t.run(&["list", "--output", "json"], 0);
    let listed: Vec<Value> = serde_json::from_slice(&out.stdout).expect("list JSON");
    assert_eq!(listed.len(), 2);
    for row in &listed {
        assert!(row["public_ip"].is_null(), "{row}");
        assert!(
            row["private_ip"].as_str().is_some_and(|ip| !ip.is_empty()),
            "{row}"
        );
    }
    t.run(&["destroy", "--yes"], 0);
    assert_nothing_orphaned(&t);
}

/// Creates IAM instance profile `name` in moto (global), straight.
fn create_instance_profile(name: &str) {
    let body = format!("Action=CreateInstanceProfile&Version=2010-05-08&InstanceProfileName={name}");
    let url = this_moto();
    let port: u16 = url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("moto port");
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("reach moto");
    use std::io::{Read, Write};
    write!(
        stream,
        "POST / HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=testing/20250101/us-east-1/iam/aws4_request, \
         SignedHeaders=host, Signature=0\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("answer");
    assert!(
        answer.starts_with("HTTP/1.0 200")
            || answer.starts_with("HTTP/1.1 200")
            || answer.contains("EntityAlreadyExists"),
        "{answer}"
    );
}

#[test]
fn launch_settings_reach_run_instances() {
    MOTO.with(|m| m.set(Some(moto::limits_moto_url())));
    create_instance_profile("respot-test-app");
    let t = AwsTest::limits(
        "settings",
        2,
        1,
        "root_volume_gb = 20\nvolume_type = \"gp3\"\ninstance_profile = \"respot-test-app\"\n\
         tags = { team = \"edge\" }",
    );
    // The second region launches its own instance type.
    let path = t.context.path().join("respot.toml");
    let text = std::fs::read_to_string(&path).expect("respot.toml");
    let second = format!("name = \"{}\"\ncount = 1\n", t.regions[1]);
    let text = text.replace(&second, &format!("{second}instance_types = [\"t3a.micro\"]\n"));
    std::fs::write(&path, text).expect("write respot.toml");
    t.run(&["create", "--no-verify"], 0);
    let params = run_instances_params(&t);
    assert_eq!(params.len(), 2, "{params:?}");
    for p in &params {
        assert_eq!(p["BlockDeviceMapping.1.Ebs.VolumeSize"], "20", "{p}");
        assert_eq!(p["BlockDeviceMapping.1.Ebs.VolumeType"], "gp3", "{p}");
        assert_eq!(p["BlockDeviceMapping.1.Ebs.Encrypted"], "true", "{p}");
        assert_eq!(p["IamInstanceProfile.Name"], "respot-test-app", "{p}");
    }
    let types: Vec<&str> = params.iter().filter_map(|p| p["InstanceType"].as_str()).collect();
    let mut types = types.clone();
    types.sort();
    assert_eq!(types, ["t3.small", "t3a.micro"]);
    for (region, id, _, tags) in t.ours() {
        assert_eq!(
            tags.get("team").map(String::as_str),
            Some("edge"),
            "{region} {id}"
        );
        let volumes = volumes_of(&region, &id);
        assert_eq!(volumes.len(), 1, "{region} {id}");
        assert_eq!(volumes[0].size(), Some(20), "{region} {id}: {volumes:?}");
    }
    t.run(&["destroy", "--yes"], 0);
    assert_nothing_orphaned(&t);
}

/// `list` shows the SSM secret version each instance booted with, in its
/// table and its JSON: version 1 at create; after a new value and a
/// `deploy`, the new generation shows 2. respot reads the version, never
/// the value.
#[test]
fn list_shows_the_secret_version_each_instance_booted_with() {
    // The shared moto, whatever an earlier test on this thread set. (No
    // instance profile: what matters here is what respot records.)
    MOTO.with(|m| m.set(None));
    let t = AwsTest::with("secretver", 1, 1, "");
    let path = t.context.path().join("respot.toml");
    let mut text = std::fs::read_to_string(&path).expect("respot.toml");
    text.push_str("\n[[secrets]]\npath = \"/etc/hello/token\"\nssm = \"/secretver/token\"\n");
    std::fs::write(&path, text).expect("write respot.toml");
    let region = t.regions[0].clone();
    let ssm = aws_sdk_ssm::Client::from_conf(
        aws_sdk_ssm::Config::builder()
            .behavior_version(aws_sdk_ssm::config::BehaviorVersion::latest())
            .region(aws_sdk_ssm::config::Region::new(region.clone()))
            .endpoint_url(this_moto())
            .credentials_provider(aws_sdk_ssm::config::Credentials::new(
                "testing", "testing", None, None, "tests",
            ))
            .build(),
    );
    let put = |value: &str| {
        block_on(
            ssm.put_parameter()
                .name("/secretver/token")
                .value(value)
                .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
                .overwrite(true)
                .send(),
        )
        .expect("put the parameter");
    };
    // (generation, secrets) of every live instance, from `list --output json`.
    let listed = || -> Vec<(u64, String)> {
        let out = t.run(&["list", "--output", "json"], 0);
        let rows: Value = serde_json::from_slice(&out.stdout).expect("list JSON");
        rows.as_array()
            .expect("an array")
            .iter()
            .filter(|r| matches!(r["state"].as_str(), Some("running" | "pending")))
            .map(|r| {
                (
                    r["generation"].as_u64().expect("a generation"),
                    r["secrets"].as_str().expect("secrets").to_string(),
                )
            })
            .collect()
    };
    put("first");
    t.run(&["create", "--no-verify"], 0);
    assert_eq!(listed(), [(1, "/secretver/token=1".to_string())]);
    let table = String::from_utf8(t.run(&["list"], 0).stdout).unwrap();
    assert!(table.lines().next().unwrap().contains("SECRETS"), "{table}");
    assert!(table.contains("/secretver/token=1"), "{table}");
    assert!(!table.contains("first"), "never the value: {table}");

    put("second");
    t.run(&["deploy", "--yes", "--no-verify"], 0);
    assert_eq!(listed(), [(2, "/secretver/token=2".to_string())]);
    t.run(&["destroy", "--yes"], 0);
    assert_nothing_orphaned(&t);
}
