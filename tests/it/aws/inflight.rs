//! A create killed while its `RunInstances` is still on the way to EC2:
//! the `destroy` that follows must not leave the instances that launch
//! later. On EC2 a launch into a deleted group is refused, and a group with
//! a live instance cannot be deleted; the fault proxy answers the same
//! (moto alone launches into a deleted group and would orphan them).

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{AwsTest, stderr};

/// Waits until the proxy has received `n` requests of `action`.
fn wait_for_request(t: &AwsTest, action: &str, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = t.proxy.stats()["by_action"][action].as_u64().unwrap_or(0);
        if seen >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {action} reached the proxy within 60 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_launch_in_flight_when_create_dies_is_not_left_by_destroy() {
    let t = AwsTest::limits("inflight", 1, 2, "");
    // The launch takes 4 s to reach EC2: the create dies meanwhile, and the
    // destroy runs while it is still on its way.
    t.proxy
        .faults(json!([{"action": "RunInstances", "delay_ms": 4000, "times": 1}]));
    let mut child = t
        .command(&["create", "--no-verify"])
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn respot create");
    wait_for_request(&t, "RunInstances", 1);
    // SAFETY: signalling the child we spawned, by its pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGKILL);
    }
    child.wait().expect("reap respot");
    t.run(&["unlock", "--yes"], 0);
    let out = t.run(&["destroy", "--yes"], 0);
    // Let the delayed launch arrive, then look.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        t.live_ours(),
        0,
        "the launch that was in flight left instances\n{}",
        stderr(&out)
    );
    let stats = t.proxy.stats();
    assert_eq!(
        stats["faults_injected"]["RunInstances:InvalidGroup.NotFound"], 1,
        "the late launch met the deleted group: {stats}"
    );
    for region in &t.regions {
        assert!(
            t.security_groups(region).is_empty(),
            "{region}: the group is left"
        );
    }
}
