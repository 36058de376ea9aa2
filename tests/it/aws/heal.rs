//! `heal` on moto: instances terminated out of band come back from the
//! same digest with new ids, a second heal only reads, `--watch` logs its
//! checks and replacements until Ctrl-C, and a changed blueprint is
//! refused as a deploy. One test, so the suite's moto regions last.

use serde_json::Value;

use super::{AwsTest, block_on, ec2_client, stderr};

#[test]
fn heal_restores_the_count_from_the_same_digest_and_a_second_heal_only_reads() {
    let t = AwsTest::with("healme", 2, 2, "");
    t.run(&["create", "--no-verify"], 0);
    let before = t.ours();
    assert_eq!(before.len(), 4, "{before:?}");
    let digest = before[0].3["respot:digest"].clone();

    // One instance per region goes, out of band.
    let gone: Vec<(String, String)> = t
        .regions
        .iter()
        .map(|region| {
            let (_, id, _, _) = before.iter().find(|(r, ..)| r == region).expect("one per region");
            (region.clone(), id.clone())
        })
        .collect();
    for (region, id) in &gone {
        block_on(ec2_client(region).terminate_instances().instance_ids(id).send()).expect("terminate");
    }
    assert_eq!(t.live_ours(), 2);

    // `list` says why they went.
    let out = t.run(&["list", "--output", "json"], 0);
    let listed: Vec<Value> = serde_json::from_slice(&out.stdout).expect("list JSON");
    for (_, id) in &gone {
        let row = listed
            .iter()
            .find(|r| r["id"] == id.as_str())
            .expect("still listed");
        assert_ne!(row["state"], "running", "{row}");
        assert!(row["state_reason"].is_string(), "the provider's reason: {row}");
    }

    t.proxy.reset();
    let out = t.run(&["heal", "--no-verify"], 0);
    assert!(
        stderr(&out).contains("launched 2 replacements"),
        "{}",
        stderr(&out)
    );
    // Like create, heal reports its phases and ends with a summary.
    for wanted in [
        ": requested",
        ": running (+",
        "slowest instance: running",
        "estimated cost: $",
    ] {
        assert!(stderr(&out).contains(wanted), "{wanted}: {}", stderr(&out));
    }
    let after = t.ours();
    let live: Vec<_> = after
        .iter()
        .filter(|(_, _, state, _)| state != "terminated")
        .collect();
    assert_eq!(live.len(), 4, "{after:?}");
    for region in &t.regions {
        assert_eq!(live.iter().filter(|(r, ..)| r == region).count(), 2, "{region}");
    }
    let old_ids: Vec<&String> = before.iter().map(|(_, id, _, _)| id).collect();
    let new: Vec<_> = live
        .iter()
        .filter(|(_, id, _, _)| !old_ids.contains(&id))
        .collect();
    assert_eq!(new.len(), 2, "two new ids: {live:?}");
    for (region, id, _, tags) in &new {
        assert_eq!(tags["respot:digest"], digest, "{region} {id}: same digest");
        assert_eq!(
            tags["respot:generation"], "1",
            "{region} {id}: the live generation"
        );
        assert_eq!(tags["respot:deployment"], "healme");
    }
    let stats = t.proxy.stats();
    assert_eq!(
        stats["by_action"]["RunInstances"], 2,
        "one launch per region that lost one: {stats}"
    );
    assert!(
        stats["by_action"]["TerminateInstances"].is_null(),
        "no healthy instance touched: {stats}"
    );

    // A second heal is a no-op that only reads.
    t.proxy.reset();
    let out = t.run(&["heal", "--no-verify", "--output", "json"], 0);
    let report: Value = serde_json::from_slice(&out.stdout).expect("heal JSON");
    assert_eq!(report["launched"], Value::Array(Vec::new()), "{report}");
    assert!(report["released"].is_null(), "{report}");
    assert_eq!(report["assessment"]["healthy"].as_array().map(Vec::len), Some(4));
    let stats = t.proxy.stats();
    assert!(stats["total"].as_u64().unwrap_or(0) > 0, "{stats}");
    for (action, _) in stats["by_action"].as_object().expect("by_action") {
        assert!(
            action.starts_with("Describe"),
            "a no-op heal called {action}: {stats}"
        );
    }

    // `--watch` heals the next loss, then keeps checking until Ctrl-C.
    let (region, id, _, _) = t
        .ours()
        .into_iter()
        .find(|(_, _, state, _)| state == "running")
        .expect("one runs");
    block_on(ec2_client(&region).terminate_instances().instance_ids(&id).send()).expect("terminate");
    watch_until_ctrl_c(&t, &region);
    assert_eq!(t.live_ours(), 4);

    // A changed blueprint is a deploy, not a heal: nothing is touched.
    let template = t.context.path().join("templates/cloud-init.yaml");
    let text = std::fs::read_to_string(&template).expect("template");
    std::fs::write(&template, format!("{text}\n# changed\n")).expect("write template");
    block_on(
        ec2_client(&t.regions[0])
            .terminate_instances()
            .instance_ids(&new[0].1)
            .send(),
    )
    .expect("terminate");
    t.proxy.reset();
    let out = t.run(&["heal", "--no-verify"], 1);
    assert!(stderr(&out).contains("respot deploy"), "{}", stderr(&out));
    assert!(t.proxy.stats()["by_action"]["RunInstances"].is_null());
    t.run(&["destroy", "--yes"], 0);
    assert_eq!(t.live_ours(), 0);
    t.assert_foreign_untouched();
}

/// `heal --watch`: one JSON line per check and per replacement, until Ctrl-C.
fn watch_until_ctrl_c(t: &AwsTest, region: &str) {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let mut child = t
        .command(&["heal", "--watch", "1s", "--no-verify", "--output", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start heal --watch");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut events: Vec<Value> = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("a line");
        let event: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        if event["event"] == "failed" {
            let _ = child.kill();
            panic!("a check failed: {event}");
        }
        events.push(event);
        if events.iter().filter(|e| e["event"] == "check").count() == 2 {
            break;
        }
    }
    // SAFETY: SIGINT to the respot this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().expect("poll the child").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("heal --watch ignored Ctrl-C; events so far: {events:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = child.wait_with_output().expect("heal --watch ends");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(kinds, ["check", "replacement", "check"], "{events:?}");
    assert_eq!(events[0]["launched"], 1, "{events:?}");
    assert_eq!(events[1]["instance"]["region"], region);
    assert_eq!(events[2]["launched"], 0, "the second check finds nothing to do");
    assert!(events.iter().all(|e| e["time"].is_string()));
}
