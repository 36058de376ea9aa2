//! `heal` on a real local VM: its qemu is killed (only the PID this test's
//! deployment started), `list` says why it is gone, and `heal` boots and
//! verifies a replacement from the same digest, then lets the dead one go.

use super::{Fleet, stderr};

#[test]
fn heal_replaces_a_vm_whose_qemu_died() {
    let fleet = Fleet::new(1);
    let created = fleet.respot(&["create", "--no-verify"]);
    assert_eq!(created.status.code(), Some(0), "create: {}", stderr(&created));
    let listed = fleet.json(&["list"]);
    let old = listed[0]["id"].as_str().expect("an id").to_string();
    let digest = listed[0]["digest"].as_str().expect("a digest").to_string();
    let pids = fleet.our_qemu_pids();
    assert_eq!(pids.len(), 1, "one qemu of ours: {pids:?}");
    // SAFETY: the qemu this test's deployment started.
    unsafe { libc::kill(pids[0], libc::SIGKILL) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !fleet.our_qemu_pids().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    let listed = fleet.json(&["list"]);
    assert_eq!(listed[0]["state"], "dead", "{listed}");
    assert_eq!(
        listed[0]["state_reason"], "qemu process is not running",
        "{listed}"
    );

    let healed = fleet.respot(&["heal"]);
    assert_eq!(healed.status.code(), Some(0), "heal: {}", stderr(&healed));
    assert!(
        stderr(&healed).contains("launched 1 replacement, verified"),
        "{}",
        stderr(&healed)
    );
    assert!(
        stderr(&healed).contains("let go of 1 lost instance"),
        "{}",
        stderr(&healed)
    );
    let listed = fleet.json(&["list"]);
    let rows = listed.as_array().expect("rows");
    assert_eq!(
        rows.len(),
        1,
        "the dead VM is gone, one replacement runs: {listed}"
    );
    assert_ne!(rows[0]["id"], old.as_str());
    assert_eq!(rows[0]["state"], "running");
    assert_eq!(rows[0]["digest"], digest.as_str());
    assert_eq!(rows[0]["generation"], 1);
    assert_eq!(fleet.our_qemu_pids().len(), 1);

    // Nothing more to do; and the inventory reads the same state directory.
    let again = fleet.json(&["heal"]);
    assert_eq!(again["launched"], serde_json::json!([]), "{again}");
    let all = fleet.json(&["list", "--all-deployments"]);
    let hello = &all["deployments"][0];
    assert_eq!(hello["deployment"], "hello", "{all}");
    assert_eq!(
        (hello["this_blueprint"].as_bool(), hello["current"].as_bool()),
        (Some(true), Some(true)),
        "{all}"
    );
    assert_eq!(hello["live"], 1, "{all}");
}
