//! Recovery through the real `respot` binary on moto, with the ALB door:
//! a SIGKILL in the middle of a shift (the next deploy converges), and
//! `rollback` on its instant path (a kept generation) and its forward path
//! (the commit before, from the history). See `cli.rs` for the harness.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::cli::{AlbCli, ids_in, shifts};
use super::elb_client;
use crate::aws::{block_on, stderr};

/// One region's door as the ALB holds it: the listener's weight per target
/// group ARN, and the targets registered in each group.
#[derive(Debug, Clone, Default)]
struct RegionDoor {
    weights: BTreeMap<String, i64>,
    targets: BTreeMap<String, Vec<String>>,
}

impl AlbCli {
    fn region_door(&self, region: usize) -> RegionDoor {
        let client = elb_client(&self.t.regions[region]);
        let mut door = RegionDoor {
            weights: self
                .weights_by_group(region)
                .into_iter()
                .map(|(arn, weight)| (arn, i64::from(weight)))
                .collect(),
            ..RegionDoor::default()
        };
        for colour in ["blue", "green"] {
            let Ok(found) = block_on(
                client
                    .describe_target_groups()
                    .names(self.group_name(colour))
                    .send(),
            ) else {
                continue;
            };
            for group in found.target_groups() {
                let arn = group.target_group_arn().expect("arn");
                let health = block_on(client.describe_target_health().target_group_arn(arn).send())
                    .expect("describe target health");
                let ids = health
                    .target_health_descriptions()
                    .iter()
                    .filter_map(|d| d.target().and_then(|t| t.id()).map(str::to_string))
                    .collect();
                door.targets.insert(arn.to_string(), ids);
            }
        }
        door
    }
}

/// A logged request's form parameter.
fn param<'a>(request: &'a Value, key: &str) -> Option<&'a str> {
    request["params"][key].as_str()
}

/// Replays, from `start`, what respot asked of one region's ALB and EC2
/// (the proxy's log, in order), and checks after each call that the
/// listener forwards only to groups with a live target, in shares that sum
/// to 100: nothing answered 503 on the way.
fn assert_never_forwards_to_an_empty_group(region: &str, start: RegionDoor, requests: &[Value]) {
    let mut door = start;
    let mut dead: Vec<String> = Vec::new();
    for request in requests
        .iter()
        .filter(|r| r["region"] == region && r["status"] == 200)
    {
        let action = request["action"].as_str().unwrap_or("");
        match action {
            "ModifyListener" => {
                door.weights.clear();
                for n in 1.. {
                    let at = format!("DefaultActions.member.1.ForwardConfig.TargetGroups.member.{n}");
                    let Some(arn) = param(request, &format!("{at}.TargetGroupArn")) else {
                        break;
                    };
                    let weight = param(request, &format!("{at}.Weight")).and_then(|w| w.parse().ok());
                    door.weights.insert(arn.to_string(), weight.unwrap_or(1));
                }
            }
            "RegisterTargets" | "DeregisterTargets" => {
                let arn = param(request, "TargetGroupArn")
                    .expect("TargetGroupArn")
                    .to_string();
                let ids = ids_in(request, "Targets.member.", ".Id");
                let group = door.targets.entry(arn).or_default();
                group.retain(|id| !ids.contains(id));
                if action == "RegisterTargets" {
                    group.extend(ids);
                }
            }
            "TerminateInstances" => dead.extend(ids_in(request, "InstanceId.", "")),
            _ => continue,
        }
        let total: i64 = door.weights.values().sum();
        assert_eq!(total, 100, "{region} after #{}: {door:?}", request["seq"]);
        for (arn, weight) in &door.weights {
            let live = door
                .targets
                .get(arn)
                .into_iter()
                .flatten()
                .filter(|id| !dead.contains(id))
                .count();
            assert!(
                *weight == 0 || live > 0,
                "{region} after #{} {action}: {weight} % forwarded to {arn}, which has no live target: {door:?}",
                request["seq"]
            );
        }
    }
}

#[test]
fn alb_cli_sigkill_mid_shift_then_deploy_converges_and_orphans_nothing() {
    let alb = AlbCli::new("albkill", 1, "");
    alb.deploy(&["--strategy", "blue-green"]);
    alb.assert_serving(&[(1, 100)]);
    alb.bump(2);
    alb.t.proxy.reset();
    // The first region's ModifyListener is slow and then fails: killed
    // while it is in flight, the shift reached the other two regions only.
    let first = alb.t.regions[0].clone();
    alb.t.proxy.faults(serde_json::json!([
        {"action": "ModifyListener", "region": first, "delay_ms": 4000, "code": "InternalFailure"}
    ]));
    let mut child = alb
        .t
        .command(&["deploy", "--strategy", "blue-green", "--yes", "--no-verify"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn respot deploy");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let shifted = alb
            .t
            .proxy
            .requests()
            .iter()
            .filter(|r| r["action"] == "ModifyListener" && r["status"] == 200)
            .count();
        if shifted == 2 && alb.t.proxy.calls("ModifyListener") == 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the shift did not start within 60 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: signalling the child we spawned, by its pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGKILL);
    }
    child.wait().expect("reap respot");
    let split: Vec<BTreeMap<u64, i32>> = (0..3).map(|i| alb.weights(i)).collect();
    assert_eq!(split[0], [(1, 100), (2, 0)].into_iter().collect(), "{split:?}");
    assert_eq!(split[1], [(1, 0), (2, 100)].into_iter().collect(), "{split:?}");
    alb.t.proxy.faults(serde_json::json!([]));

    // The killed run holds the lock: the next one names it; unlock.
    let out = alb
        .t
        .run(&["deploy", "--strategy", "blue-green", "--yes", "--no-verify"], 4);
    assert!(stderr(&out).contains("respot unlock"), "{}", stderr(&out));
    alb.t.run(&["unlock", "--yes"], 0);

    // The next deploy converges, and no region's door forwards to a group
    // without a live target on the way.
    let start: Vec<RegionDoor> = (0..3).map(|i| alb.region_door(i)).collect();
    alb.t.proxy.reset();
    let (report, err) = alb.deploy(&["--strategy", "blue-green"]);
    assert_eq!(report["created"]["generation"], 3, "{err}");
    let mut requests = alb.t.proxy.requests();
    requests.sort_by_key(|r| r["seq"].as_u64());
    for (region, start) in alb.t.regions.iter().zip(start) {
        assert_never_forwards_to_an_empty_group(region, start, &requests);
    }
    alb.assert_serving(&[(3, 100)]);
    alb.assert_only(3, 1);
    alb.t.run(&["destroy", "--yes"], 0);
    assert_eq!(alb.t.live_ours(), 0);
    for region in &alb.t.regions {
        assert!(alb.groups(region).is_empty(), "{region}: target groups left");
    }
}

#[test]
fn alb_cli_rollback_instant_while_kept_then_forward_once_gone() {
    use crate::history::{commit_all, git};
    let alb = AlbCli::new("albback", 1, "");
    let dir = alb.t.context.path().to_path_buf();
    git(&dir, &["init", "-q"]);
    commit_all(&alb.t, "a", &[]);
    let (first, _) = alb.deploy(&["--strategy", "blue-green"]);
    let digest_a = first["created"]["digest"].as_str().expect("digest").to_string();
    alb.bump(2);
    commit_all(&alb.t, "b", &[]);
    alb.deploy(&["--strategy", "blue-green"]);
    alb.bump(3);
    commit_all(&alb.t, "c", &[]);
    let (third, err) = alb.deploy(&["--strategy", "blue-green", "--keep-old", "30m"]);
    assert_eq!(third["door"]["kept"]["generation"], 2, "{err}");
    alb.assert_serving(&[(3, 100)]);
    for region in &alb.t.regions {
        let live = alb.live(region);
        assert_eq!(
            live.keys().copied().collect::<Vec<_>>(),
            [2, 3],
            "{region}: 2 is kept alive"
        );
        let registered: Vec<Vec<String>> = alb
            .groups(region)
            .into_values()
            .filter(|ids| !ids.is_empty())
            .collect();
        assert_eq!(registered, [live[&3].clone()], "{region}: 2 is out of the door");
    }

    // Instant: generation 2 is alive, so one ModifyListener per region
    // moves everything back; then 3 goes.
    alb.t.proxy.reset();
    let out = alb
        .t
        .run(&["rollback", "--yes", "--no-verify", "--output", "json"], 0);
    let report: Value = serde_json::from_slice(&out.stdout).expect("rollback --output json");
    assert_eq!(
        (report["from"].as_u64(), report["to"].as_u64()),
        (Some(3), Some(2)),
        "{report}"
    );
    assert_eq!(
        report["destroyed"]["terminated"].as_array().map(Vec::len),
        Some(3)
    );
    assert_eq!(
        alb.t.proxy.calls("ModifyListener"),
        3,
        "one shift: one call per region"
    );
    for region in &alb.t.regions {
        assert_eq!(
            alb.t.proxy.stats()["by_region_action"][region]["ModifyListener"],
            1,
            "{region}"
        );
    }
    alb.assert_serving(&[(2, 100)]);
    alb.assert_only(2, 1);

    // Forward: nothing older is alive, so the commit before generation 2
    // (a) is deployed again, blue-green through the door.
    let out = alb
        .t
        .run(&["rollback", "--yes", "--no-verify", "--output", "json"], 0);
    assert!(stderr(&out).contains("rolling back forward"), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).expect("rollback --output json");
    assert_eq!(report["strategy"], "blue-green");
    assert_eq!(report["created"]["generation"], 4);
    assert_eq!(report["created"]["digest"], digest_a.as_str(), "a's render again");
    assert_eq!(shifts(&report), [vec![(2, 0), (4, 100)]]);
    alb.assert_serving(&[(4, 100)]);
    alb.assert_only(4, 1);
    alb.t.run(&["destroy", "--yes"], 0);
    assert_eq!(alb.t.live_ours(), 0);
}
