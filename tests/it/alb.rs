//! The ALB front door against moto's ELBv2, through the fault proxy: the
//! test builds a load balancer and a listener per region with the SDK (as a
//! user would have them), then drives respot's `AlbDoor` through blue-green
//! and canary across 3 regions, reading the target-group weights back with
//! the SDK at each step. Also the shift latency at 80 ms per request. The
//! same door through the `respot` binary: `alb/cli.rs` (deploys, the
//! guard) and `alb/recovery.rs` (SIGKILL mid-shift, rollback).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ec2::types as ec2;
use aws_sdk_elasticloadbalancingv2 as elb;
use respot::provider::{Instance, InstanceId, InstanceState, Lifecycle};
use respot::traffic::alb::{AlbDoor, SdkElbv2};
use respot::traffic::{FrontDoor, Weights};

use crate::aws::{block_on, ec2_client};
use crate::support::moto::{self, Proxy};

mod cli;
mod recovery;

fn elb_client(region: &str) -> elb::Client {
    let config = elb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_string()))
        .endpoint_url(moto::moto_url())
        .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
        .build();
    elb::Client::from_conf(config)
}

/// An ALB in the default VPC with an HTTP listener on port 80 that answers
/// 404 until respot takes its default action: the listener's ARN.
fn listener(region: &str, name: &str) -> String {
    let fixed = elb::types::FixedResponseActionConfig::builder()
        .status_code("404")
        .content_type("text/plain")
        .build();
    listener_with(
        region,
        name,
        elb::types::Action::builder()
            .r#type(elb::types::ActionTypeEnum::FixedResponse)
            .fixed_response_config(fixed)
            .build(),
    )
}

/// An ALB named `name` in the default VPC with an HTTP listener on port 80
/// whose default action is `action`: the listener's ARN.
pub(crate) fn listener_with(region: &str, name: &str, action: elb::types::Action) -> String {
    let subnets = block_on(
        ec2_client(region)
            .describe_subnets()
            .filters(
                ec2::Filter::builder()
                    .name("default-for-az")
                    .values("true")
                    .build(),
            )
            .send(),
    )
    .expect("describe subnets");
    let ids: Vec<String> = subnets
        .subnets()
        .iter()
        .filter_map(|s| s.subnet_id().map(str::to_string))
        .take(2)
        .collect();
    let client = elb_client(region);
    let lb = block_on(
        client
            .create_load_balancer()
            .name(name)
            .set_subnets(Some(ids))
            .send(),
    )
    .expect("create load balancer");
    let lb_arn = lb.load_balancers()[0]
        .load_balancer_arn()
        .expect("arn")
        .to_string();
    let out = block_on(
        client
            .create_listener()
            .load_balancer_arn(lb_arn)
            .protocol(elb::types::ProtocolEnum::Http)
            .port(80)
            .default_actions(action)
            .send(),
    )
    .expect("create listener");
    out.listeners()[0]
        .listener_arn()
        .expect("listener arn")
        .to_string()
}

/// `count` instances of `generation` in `region`, as respot lists them.
/// Their ids are not moto's: moto's ELBv2 reports any registered target
/// healthy unless an EC2 instance of that id is stopped, and these regions
/// have no images to launch from.
fn instances(region: &str, count: usize, generation: u64) -> Vec<Instance> {
    (0..count)
        .map(|n| Instance {
            id: InstanceId(format!("i-{generation:08x}{n:09x}")),
            name: format!("g{generation}"),
            region: region.to_string(),
            zone: None,
            instance_type: "t3.micro".to_string(),
            lifecycle: Lifecycle::OnDemand,
            state: InstanceState::Running,
            state_reason: None,
            public_ip: None,
            private_ip: None,
            ssh: None,
            digest: None,
            version: None,
            generation: Some(generation),
            launched_at: None,
            secrets: None,
        })
        .collect()
}

/// The listener's default weights by target group name, read with the SDK.
fn weights_by_name(region: &str, listener: &str) -> BTreeMap<String, i32> {
    let client = elb_client(region);
    let out =
        block_on(client.describe_listeners().listener_arns(listener).send()).expect("describe listener");
    let action = &out.listeners()[0].default_actions()[0];
    let Some(forward) = action.forward_config() else {
        return BTreeMap::new();
    };
    forward
        .target_groups()
        .iter()
        .map(|t| {
            let arn = t.target_group_arn().expect("arn");
            let groups = block_on(client.describe_target_groups().target_group_arns(arn).send())
                .expect("describe groups");
            let name = groups.target_groups()[0]
                .target_group_name()
                .expect("name")
                .to_string();
            (name, t.weight().unwrap_or(1))
        })
        .collect()
}

struct Fixture {
    proxy: Proxy,
    regions: Vec<String>,
    listeners: Vec<String>,
    door: AlbDoor,
    deployment: String,
}

/// Regions moto serves with a default VPC but without images: the EC2
/// tests cannot launch there (see `moto::regions`), the door needs only a
/// VPC, so this test takes them and leaves the pool to the others.
const ALB_REGIONS: [&str; 3] = ["ap-east-2", "ap-southeast-6", "ap-southeast-7"];

fn fixture(deployment: &str) -> Fixture {
    let regions: Vec<String> = ALB_REGIONS.iter().map(|r| r.to_string()).collect();
    let proxy = Proxy::start(0);
    let listeners: Vec<String> = regions
        .iter()
        .map(|r| listener(r, &format!("{deployment}-lb")))
        .collect();
    let sdk = block_on(
        aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(regions[0].clone()))
            .endpoint_url(proxy.endpoint())
            .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
            .load(),
    );
    let apis = regions
        .iter()
        .zip(&listeners)
        .map(|(r, l)| (SdkElbv2::new(&sdk, r), l.clone()))
        .collect();
    let door = AlbDoor::with_api(apis, deployment, 8080, "/health").with_poll(Duration::from_millis(200));
    Fixture {
        proxy,
        regions,
        listeners,
        door,
        deployment: deployment.to_string(),
    }
}

impl Fixture {
    fn assert_weights(&self, blue: i32, green: i32) {
        for (region, listener) in self.regions.iter().zip(&self.listeners) {
            let want: BTreeMap<String, i32> = [
                (format!("respot-{}-blue", self.deployment), blue),
                (format!("respot-{}-green", self.deployment), green),
            ]
            .into_iter()
            .collect();
            assert_eq!(weights_by_name(region, listener), want, "{region}");
        }
    }

    fn fleet(&self, generation: u64) -> Vec<Instance> {
        self.regions
            .iter()
            .flat_map(|r| instances(r, 2, generation))
            .collect()
    }

    /// Shifts and returns how many requests the shift sent, by action.
    fn shift(&self, weights: &[(u64, u32)]) -> BTreeMap<String, u64> {
        self.timed_shift(weights).0
    }

    /// The same, with the wall time of the shift alone.
    fn timed_shift(&self, weights: &[(u64, u32)]) -> (BTreeMap<String, u64>, Duration) {
        let before = self.proxy.stats();
        let weights: Weights = weights.iter().copied().collect();
        let started = Instant::now();
        block_on(self.door.shift(&weights)).expect("shift");
        let elapsed = started.elapsed();
        let after = self.proxy.stats();
        let mut delta = BTreeMap::new();
        for (action, n) in after["by_action"].as_object().expect("by_action") {
            let was = before["by_action"][action].as_u64().unwrap_or(0);
            let now = n.as_u64().unwrap_or(0);
            if now > was {
                delta.insert(action.clone(), now - was);
            }
        }
        (delta, elapsed)
    }
}

fn one_modify_per_region() -> BTreeMap<String, u64> {
    [("ModifyListener".to_string(), 3)].into_iter().collect()
}

#[test]
fn alb_blue_green_canary_and_shift_latency_across_three_regions() {
    let f = fixture("albdoor");
    let blue = f.fleet(1);
    block_on(f.door.register(1, &blue)).expect("register blue");
    block_on(f.door.wait_healthy(1, &blue, Duration::from_secs(30)))
        .expect("moto reports running targets healthy");
    assert_eq!(f.shift(&[(1, 100)]), one_modify_per_region());
    f.assert_weights(100, 0);

    // Blue-green: green takes everything at once, blue drains.
    let green = f.fleet(2);
    block_on(f.door.register(2, &green)).expect("register green");
    block_on(f.door.wait_healthy(2, &green, Duration::from_secs(30))).expect("green healthy");
    f.assert_weights(100, 0);
    assert_eq!(f.shift(&[(1, 0), (2, 100)]), one_modify_per_region());
    f.assert_weights(0, 100);
    block_on(f.door.drain(&blue)).expect("drain blue");
    let state = block_on(f.door.state()).expect("state");
    assert_eq!(state.serving(), Some(2));
    assert!(state.targets.get(&1).is_none_or(Vec::is_empty), "{state:?}");
    assert_eq!(state.targets[&2].len(), 6);

    // Canary: generation 3 goes into the colour out of the door (blue).
    let third = f.fleet(3);
    block_on(f.door.register(3, &third)).expect("register canary");
    block_on(f.door.wait_healthy(3, &third, Duration::from_secs(30))).expect("canary healthy");
    for step in [5, 25, 50, 100] {
        assert_eq!(f.shift(&[(2, 100 - step), (3, step)]), one_modify_per_region());
        f.assert_weights(step as i32, 100 - step as i32);
    }
    // Shifting back is the rollback: one call per region again.
    assert_eq!(f.shift(&[(2, 100), (3, 0)]), one_modify_per_region());
    f.assert_weights(0, 100);

    // Benchmark (BENCHMARKS.md): wall time of a shift across the 3 regions,
    // from the decision to every listener changed, at 0 and 80 ms per request.
    let median_at = |ms: u64| {
        let (status, body) = moto::http(
            f.proxy.port,
            "POST",
            "/__proxy/latency",
            Some(&format!(r#"{{"ms": {ms}}}"#)),
        )
        .expect("set latency");
        assert_eq!(status, 200, "{body}");
        let mut times: Vec<Duration> = [[(2u64, 0u32), (3, 100)], [(2, 100), (3, 0)], [(2, 0), (3, 100)]]
            .iter()
            .map(|weights| {
                let (calls, elapsed) = f.timed_shift(weights);
                assert_eq!(calls, one_modify_per_region(), "at {ms} ms");
                elapsed
            })
            .collect();
        times.sort();
        times[1]
    };
    let at_0 = median_at(0);
    let at_80 = median_at(80);
    let round_trips = (at_80.as_secs_f64() - at_0.as_secs_f64()) / 0.080;
    println!(
        "ALB shift, 3 regions: median of 3 shifts {:.0} ms at 80 ms per request, {:.0} ms at 0 ms; \
         {:.2} round trips ({:.2} wall/latency); 3 ModifyListener calls per shift, nothing else",
        at_80.as_secs_f64() * 1000.0,
        at_0.as_secs_f64() * 1000.0,
        round_trips,
        at_80.as_secs_f64() / 0.080,
    );
    assert!(
        round_trips < 1.5,
        "regions must shift in parallel: {round_trips:.2} round trips ({at_80:?} at 80 ms, {at_0:?} at 0 ms)"
    );
    moto::http(f.proxy.port, "POST", "/__proxy/latency", Some(r#"{"ms": 0}"#)).expect("reset latency");
    block_on(f.door.shift(&[(2u64, 100u32), (3, 0)].into_iter().collect())).expect("back to green");
    f.assert_weights(0, 100);

    let removed = block_on(f.door.remove()).expect("remove");
    assert_eq!(removed.len(), 6, "{removed:?}");
    for (region, listener) in f.regions.iter().zip(&f.listeners) {
        let groups = block_on(
            elb_client(region)
                .describe_target_groups()
                .names(format!("respot-{}-blue", f.deployment))
                .send(),
        );
        assert!(groups.is_err(), "{region}: the blue group is gone");
        assert!(
            weights_by_name(region, listener).is_empty(),
            "{region}: no forward left"
        );
    }
    assert!(
        block_on(f.door.remove()).expect("remove again").is_empty(),
        "idempotent"
    );
}
