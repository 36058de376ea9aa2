//! The ALB front door through the real `respot` binary on moto, behind the
//! fault proxy: `deploy` with blue-green, canary and rolling across 3
//! regions, and the harness `recovery.rs` shares (SIGKILL, `rollback`).
//!
//! moto's balancers have fake DNS names, so each listener's `probe_url`
//! points the guard at a loopback HTTP server the test runs
//! ([`HealthServer`]); moto has no SSH, so every run is `--no-verify` and
//! the guard holds on its probes alone. moto reports registered targets
//! healthy at once and never draining.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::{elb_client, listener};
use crate::aws::{AwsTest, block_on, stderr};

/// A loopback HTTP server that answers 200 to every GET (503 to the paths
/// in `failing`) and counts the requests per path; stopped on drop.
pub(super) struct HealthServer {
    pub port: u16,
    hits: Arc<Mutex<BTreeMap<String, usize>>>,
    pub failing: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl HealthServer {
    pub fn start() -> HealthServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = listener.local_addr().expect("local address").port();
        let hits: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let failing: Arc<Mutex<Vec<String>>> = Arc::default();
        let (seen, stopping, fail) = (hits.clone(), stop.clone(), failing.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 1024];
                let n = stream.read(&mut buf).unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]);
                let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                let status = match fail.lock().unwrap().contains(&path) {
                    true => "503 Service Unavailable",
                    false => "200 OK",
                };
                *seen.lock().unwrap().entry(path).or_default() += 1;
                let answer = format!("HTTP/1.0 {status}\r\nContent-Length: 2\r\n\r\nok");
                let _ = stream.write_all(answer.as_bytes());
            }
        });
        HealthServer {
            port,
            hits,
            failing,
            stop,
        }
    }

    pub fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// An AWS deployment of 3 regions with an ALB listener in each, its
/// `[traffic]` naming them with a probe URL per region on the test's
/// health server.
pub(super) struct AlbCli {
    pub t: AwsTest,
    pub listeners: Vec<String>,
    pub health: HealthServer,
}

impl AlbCli {
    pub fn new(deployment: &str, count: u32, traffic: &str) -> AlbCli {
        let t = AwsTest::with(deployment, 3, count, "");
        let listeners: Vec<String> = t
            .regions
            .iter()
            .map(|r| listener(r, &format!("{deployment}-lb")))
            .collect();
        let health = HealthServer::start();
        let path = t.context.path().join("respot.toml");
        let text = std::fs::read_to_string(&path).expect("respot.toml");
        // The sample's local `[traffic]` is its last section: ours instead.
        let mut text = text[..text.find("[traffic]").expect("the sample has [traffic]")].to_string();
        let hold = if traffic.contains("hold_secs") {
            ""
        } else {
            "hold_secs = 2\n"
        };
        text.push_str(&format!(
            "[traffic]\nguest_port = 8080\nhealth_path = \"/health\"\n{hold}{traffic}\n"
        ));
        for (region, arn) in t.regions.iter().zip(&listeners) {
            text.push_str(&format!(
                "\n[[traffic.aws.listeners]]\nregion = \"{region}\"\nlistener_arn = \"{arn}\"\n\
                 probe_url = \"http://127.0.0.1:{}/health/{region}\"\n",
                health.port
            ));
        }
        std::fs::write(&path, text).expect("write respot.toml");
        AlbCli { t, listeners, health }
    }

    /// Changes the blueprint so the next deploy makes a new generation.
    pub fn bump(&self, version: u64) {
        std::fs::write(
            self.t.context.path().join("instance/files/opt/hello/version.txt"),
            format!("{version}\n"),
        )
        .expect("write version.txt");
    }

    /// `respot deploy --output json` with `args`, exit 0: the report.
    pub fn deploy(&self, args: &[&str]) -> (Value, String) {
        let mut all = vec!["deploy", "--yes", "--no-verify", "--output", "json"];
        all.extend_from_slice(args);
        let out = self.t.run(&all, 0);
        let report = serde_json::from_slice(&out.stdout).expect("deploy --output json");
        (report, stderr(&out))
    }

    pub fn group_name(&self, colour: &str) -> String {
        format!("respot-{}-{colour}", self.t.deployment)
    }

    /// The listener's default action, read with the SDK straight from moto.
    pub fn default_action(&self, region: usize) -> aws_sdk_elasticloadbalancingv2::types::Action {
        let out = block_on(
            elb_client(&self.t.regions[region])
                .describe_listeners()
                .listener_arns(&self.listeners[region])
                .send(),
        )
        .expect("describe listener");
        out.listeners()[0].default_actions()[0].clone()
    }

    /// The listener's default weight per target group ARN; empty when it
    /// forwards nowhere.
    pub fn weights_by_group(&self, region: usize) -> BTreeMap<String, i32> {
        let action = self.default_action(region);
        let Some(forward) = action.forward_config() else {
            return BTreeMap::new();
        };
        forward
            .target_groups()
            .iter()
            .map(|g| {
                (
                    g.target_group_arn().expect("arn").to_string(),
                    g.weight().unwrap_or(1),
                )
            })
            .collect()
    }

    /// The listener's default weights by the generation each target group
    /// holds (its `respot:generation` tag; 0 for a group holding none).
    pub fn weights(&self, region: usize) -> BTreeMap<u64, i32> {
        let region_name = &self.t.regions[region];
        let mut weights = BTreeMap::new();
        for (arn, weight) in self.weights_by_group(region) {
            let generation = self.generation_of(region_name, &arn);
            *weights.entry(generation.unwrap_or(0)).or_default() += weight;
        }
        weights
    }

    /// The status of the listener's fixed-response default action, if any.
    pub fn fixed_status(&self, region: usize) -> Option<String> {
        self.default_action(region)
            .fixed_response_config()
            .and_then(|f| f.status_code().map(str::to_string))
    }

    fn generation_of(&self, region: &str, group_arn: &str) -> Option<u64> {
        let tags = block_on(elb_client(region).describe_tags().resource_arns(group_arn).send())
            .expect("describe tags");
        tags.tag_descriptions()
            .iter()
            .flat_map(|d| d.tags())
            .find(|t| t.key() == Some("respot:generation"))
            .and_then(|t| t.value())
            .and_then(|v| v.parse().ok())
    }

    /// Every region's weights, checked to be `want` (zero shares dropped).
    pub fn assert_serving(&self, want: &[(u64, i32)]) {
        let want: BTreeMap<u64, i32> = want.iter().copied().collect();
        for region in 0..self.t.regions.len() {
            let mut got = self.weights(region);
            got.retain(|_, w| *w > 0);
            assert_eq!(got, want, "{}", self.t.regions[region]);
        }
    }

    /// The deployment's target groups in `region`: name → registered ids.
    pub fn groups(&self, region: &str) -> BTreeMap<String, Vec<String>> {
        let client = elb_client(region);
        let all = block_on(client.describe_target_groups().send()).expect("describe target groups");
        all.target_groups()
            .iter()
            .filter(|g| {
                g.target_group_name()
                    .is_some_and(|n| n.starts_with(&format!("respot-{}-", self.t.deployment)))
            })
            .map(|g| {
                let arn = g.target_group_arn().expect("arn");
                let health = block_on(client.describe_target_health().target_group_arn(arn).send())
                    .expect("describe target health");
                let mut ids: Vec<String> = health
                    .target_health_descriptions()
                    .iter()
                    .filter_map(|d| d.target().and_then(|t| t.id()).map(str::to_string))
                    .collect();
                ids.sort();
                (g.target_group_name().unwrap_or_default().to_string(), ids)
            })
            .collect()
    }

    /// Live instance ids of ours in `region`, by generation.
    pub fn live(&self, region: &str) -> BTreeMap<u64, Vec<String>> {
        let mut live: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        for (r, id, state, tags) in self.t.ours() {
            if r == region && state != "terminated" {
                let generation = tags["respot:generation"].parse().expect("a generation");
                live.entry(generation).or_default().push(id);
            }
        }
        for ids in live.values_mut() {
            ids.sort();
        }
        live
    }

    /// Only `generation` is alive, in every region `count` instances, each
    /// registered in exactly one of the two groups, the other group empty.
    pub fn assert_only(&self, generation: u64, count: usize) {
        for region in &self.t.regions {
            let live = self.live(region);
            assert_eq!(
                live.keys().copied().collect::<Vec<_>>(),
                [generation],
                "{region}: {live:?}"
            );
            assert_eq!(live[&generation].len(), count, "{region}");
            let groups = self.groups(region);
            let mut names: Vec<&String> = groups.keys().collect();
            names.sort();
            assert_eq!(
                names,
                [&self.group_name("blue"), &self.group_name("green")],
                "{region}"
            );
            let registered: Vec<&Vec<String>> = groups.values().filter(|ids| !ids.is_empty()).collect();
            assert_eq!(registered, [&live[&generation]], "{region}: {groups:?}");
        }
    }
}

/// The shifts of a deploy report: each shift's weights as (generation, share).
pub(super) fn shifts(report: &Value) -> Vec<Vec<(u64, u64)>> {
    report["door"]["shifts"]
        .as_array()
        .expect("door.shifts")
        .iter()
        .map(|s| {
            s["weights"]
                .as_object()
                .expect("weights")
                .iter()
                .map(|(g, w)| (g.parse().expect("generation"), w.as_u64().expect("share")))
                .collect()
        })
        .collect()
}

/// Polls region 0's listener while `work` runs; the distinct weights seen,
/// in order.
fn watching_weights<T>(alb: &AlbCli, work: impl FnOnce() -> T) -> (T, Vec<BTreeMap<u64, i32>>) {
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            let mut seen: Vec<BTreeMap<u64, i32>> = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let mut now = alb.weights(0);
                now.retain(|_, w| *w > 0);
                if seen.last() != Some(&now) {
                    seen.push(now);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            seen
        });
        let out = work();
        stop.store(true, Ordering::SeqCst);
        (out, watcher.join().expect("the watcher thread"))
    })
}

#[test]
fn alb_cli_blue_green_then_canary_across_three_regions() {
    let alb = AlbCli::new("albcli", 2, "steps = [25, 50, 100]");
    let (first, err) = alb.deploy(&["--strategy", "blue-green"]);
    assert_eq!(first["created"]["generation"], 1, "{err}");
    assert_eq!(shifts(&first), [vec![(1, 100)]]);
    assert!(
        err.contains("probes through ALB listeners in") && err.contains("only (--no-verify"),
        "the guard says it runs probes only: {err}"
    );
    alb.assert_serving(&[(1, 100)]);
    alb.assert_only(1, 2);

    // Blue-green: generation 2 takes everything in one shift; 1 goes.
    alb.bump(2);
    let before = alb.t.proxy.calls("ModifyListener");
    let (second, err) = alb.deploy(&["--strategy", "blue-green"]);
    assert_eq!(second["strategy"], "blue-green");
    assert_eq!(second["created"]["generation"], 2);
    assert_eq!(shifts(&second), [vec![(1, 0), (2, 100)]], "{err}");
    assert_eq!(
        alb.t.proxy.calls("ModifyListener") - before,
        3,
        "one ModifyListener per region"
    );
    let hold = &second["door"]["shifts"][0]["hold"];
    assert!(hold["probes"].as_u64().unwrap() >= 5, "{hold}");
    assert_eq!(hold["failed_probes"], 0, "{hold}");
    assert_eq!(hold["verifies"], 0, "--no-verify: no SSH during the hold");
    assert_eq!(second["destroyed"]["terminated"].as_array().unwrap().len(), 6);
    assert_eq!(second["replaced"].as_array().unwrap().len(), 6);
    alb.assert_serving(&[(2, 100)]);
    alb.assert_only(2, 2);
    for region in &alb.t.regions {
        assert!(
            alb.health.hits(&format!("/health/{region}")) >= 5,
            "the guard probed {region}'s probe_url"
        );
    }

    // Canary: the listener is read while the deploy runs.
    alb.bump(3);
    let ((third, err), seen) = watching_weights(&alb, || alb.deploy(&["--strategy", "canary"]));
    assert_eq!(
        shifts(&third),
        [
            vec![(2, 75), (3, 25)],
            vec![(2, 50), (3, 50)],
            vec![(2, 0), (3, 100)]
        ],
        "{err}"
    );
    let want: Vec<BTreeMap<u64, i32>> = [
        vec![(2, 100)],
        vec![(2, 75), (3, 25)],
        vec![(2, 50), (3, 50)],
        vec![(3, 100)],
    ]
    .into_iter()
    .map(|w| w.into_iter().collect())
    .collect();
    assert_eq!(
        seen, want,
        "the listener's weights at each step, as read with the SDK"
    );
    alb.assert_only(3, 2);

    // destroy: the groups go, the listener answers a fixed 503.
    alb.t.run(&["destroy", "--yes"], 0);
    assert_eq!(alb.t.live_ours(), 0);
    for (i, region) in alb.t.regions.iter().enumerate() {
        assert!(alb.groups(region).is_empty(), "{region}: target groups left");
        assert!(alb.weights(i).is_empty(), "{region}: a forward is left");
        assert_eq!(alb.fixed_status(i).as_deref(), Some("503"), "{region}");
    }
}

/// The ids a logged request names under `prefix…suffix` keys
/// (`Targets.member.1.Id`, `InstanceId.1`).
pub(super) fn ids_in(request: &Value, prefix: &str, suffix: &str) -> Vec<String> {
    request["params"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with(prefix) && k.ends_with(suffix))
        .filter_map(|(_, v)| v.as_str().map(str::to_string))
        .collect()
}

#[test]
fn alb_cli_rolling_three_regions_of_six_in_batches_of_two() {
    let alb = AlbCli::new("albroll", 6, "batch = 2\nhold_secs = 1");
    let (first, err) = alb.deploy(&["--strategy", "rolling"]);
    assert_eq!(first["created"]["generation"], 1, "{err}");
    alb.assert_serving(&[(1, 100)]);
    alb.assert_only(1, 6);
    let old: BTreeMap<String, Vec<String>> = alb
        .t
        .regions
        .iter()
        .map(|r| (r.clone(), alb.live(r)[&1].clone()))
        .collect();

    alb.bump(2);
    alb.t.proxy.reset();
    let (second, err) = alb.deploy(&["--strategy", "rolling"]);
    assert_eq!(second["strategy"], "rolling");
    assert_eq!(
        shifts(&second),
        [
            vec![(1, 75), (2, 25)],
            vec![(1, 50), (2, 50)],
            vec![(1, 25), (2, 75)]
        ],
        "one guarded shift per round, shares by instance count\n{err}"
    );
    alb.assert_serving(&[(2, 100)]);
    alb.assert_only(2, 6);

    // Replay what respot asked of the ALB and EC2, region by region, in
    // the order it asked.
    let mut requests = alb.t.proxy.requests();
    assert!(requests.len() < 2000, "the proxy's log kept every request");
    requests.sort_by_key(|r| r["seq"].as_u64());
    for region in &alb.t.regions {
        let old = &old[region];
        let mut registered: Vec<String> = old.clone();
        let (mut deregistered, mut terminated) = (Vec::new(), Vec::new());
        let mut lowest = registered.len();
        for request in requests
            .iter()
            .filter(|r| r["region"] == region.as_str() && r["status"] == 200)
        {
            match request["action"].as_str().unwrap_or("") {
                "RegisterTargets" => registered.extend(ids_in(request, "Targets.member.", ".Id")),
                "DeregisterTargets" => {
                    let ids = ids_in(request, "Targets.member.", ".Id");
                    assert!(ids.len() <= 2, "{region}: {ids:?} leave the door at once");
                    assert!(
                        ids.iter().all(|id| old.contains(id)),
                        "{region}: only old ones leave"
                    );
                    registered.retain(|id| !ids.contains(id));
                    deregistered.extend(ids);
                }
                "TerminateInstances" => {
                    let ids = ids_in(request, "InstanceId.", "");
                    assert!(ids.len() <= 2, "{region}: {ids:?} terminated at once");
                    assert!(
                        ids.iter().all(|id| deregistered.contains(id)),
                        "{region}: {ids:?} terminated before they left the door"
                    );
                    terminated.extend(ids);
                }
                _ => continue,
            }
            registered.sort();
            registered.dedup();
            lowest = lowest.min(registered.len());
            // Old ones out of the door, and new ones in: a batch of new
            // ones serves before as many old ones leave (max_unavailable
            // = 0), and never more than one batch of 2 is in flight.
            let old_out = old.len() - registered.iter().filter(|id| old.contains(id)).count();
            let new_in = registered.len() - (old.len() - old_out);
            assert!(
                old_out <= new_in && new_in - old_out <= 2,
                "{region}: {old_out} old out of the door, {new_in} new in"
            );
        }
        assert_eq!(lowest, 6, "{region}: never below the count");
        deregistered.sort();
        terminated.sort();
        assert_eq!(&deregistered, old, "{region}: every old instance left the door");
        assert_eq!(&terminated, old, "{region}: every old instance was terminated");
        assert!(
            registered.iter().all(|id| !old.contains(id)) && registered.len() == 6,
            "{region}"
        );
    }
    alb.t.run(&["destroy", "--yes"], 0);
    assert_eq!(alb.t.live_ours(), 0);
}

#[test]
fn alb_cli_a_failing_probe_in_one_region_shifts_every_region_back() {
    let alb = AlbCli::new("albguard", 1, "");
    alb.deploy(&["--strategy", "blue-green"]);
    alb.assert_serving(&[(1, 100)]);
    // From now on the third region's door answers 503.
    let third = alb.t.regions[2].clone();
    alb.health
        .failing
        .lock()
        .unwrap()
        .push(format!("/health/{third}"));
    alb.bump(2);
    alb.t.proxy.reset();
    let out = alb
        .t
        .run(&["deploy", "--strategy", "blue-green", "--yes", "--no-verify"], 1);
    let err = stderr(&out);
    for want in [
        "the guard stopped generation 2",
        &format!("{third}: 503"),
        "traffic is back on generation 1",
        "respot debug i-",
    ] {
        assert!(err.contains(want), "{want}: {err}");
    }
    // One shift to 2, one back to 1: one ModifyListener per region each.
    assert_eq!(alb.t.proxy.calls("ModifyListener"), 6);
    alb.assert_serving(&[(1, 100)]);
    alb.assert_only(1, 1);
    alb.t.run(&["destroy", "--yes"], 0);
    assert_eq!(alb.t.live_ours(), 0);
}
