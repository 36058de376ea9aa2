//! Access to the account and to the deployment: one operation at a time
//! (the deployment lock, on moto and locally), images by public SSM
//! parameter (moto serves Amazon Linux's), and denied permissions named as
//! the IAM action that was missing.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_ec2::types as ec2;
use serde_json::json;

use crate::aws::{AwsTest, block_on, ec2_client};
use crate::support::{Test, stop_child};

/// The lock group of `deployment` in `region`, straight from moto.
fn lock_group(region: &str, deployment: &str) -> Option<ec2::SecurityGroup> {
    let out = block_on(
        ec2_client(region)
            .describe_security_groups()
            .filters(
                ec2::Filter::builder()
                    .name("group-name")
                    .values(format!("respot.lock.{deployment}"))
                    .build(),
            )
            .send(),
    )
    .expect("describe security groups");
    out.security_groups().first().cloned()
}

fn wait_for_lock(region: &str, deployment: &str) {
    let started = Instant::now();
    while lock_group(region, deployment).is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no lock group appeared"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn text(out: &Output) -> String {
    format!(
        "--- stdout ---\n{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Slows every `RunInstances` so a create holds its lock a while.
fn slow_launches(t: &AwsTest, ms: u64) {
    t.proxy
        .faults(json!([{"action": "RunInstances", "delay_ms": ms}]));
}

/// Two concurrent creates: exactly one proceeds, the other exits 4
/// naming the holder.
fn two_concurrent_creates(t: &AwsTest, region: &str) {
    slow_launches(t, 3000);
    let first = t
        .command(&["create", "--no-verify"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the first create");
    wait_for_lock(region, "lockfleet");
    let second = t.run(&["create", "--no-verify"], 4);
    let refused = String::from_utf8_lossy(&second.stderr).to_string();
    assert!(
        refused.contains("`lockfleet` is locked by")
            && refused.contains("`respot create`")
            && refused.contains(" since ")
            && refused.contains(&format!("security group respot.lock.lockfleet in {region}"))
            && refused.contains("respot unlock"),
        "{refused}"
    );
    let first = first.wait_with_output().expect("wait for the first create");
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    assert_eq!(t.live_ours(), 2, "only the first create launched");
    assert!(lock_group(region, "lockfleet").is_none(), "the lock is released");
    // Read-only commands take no lock, so they ran meanwhile; destroy
    // takes it and gives it back.
    t.run(&["destroy", "--yes"], 0);
    assert!(lock_group(region, "lockfleet").is_none());
}

/// A killed holder leaves its lock; `unlock` removes it after a
/// confirmation.
fn stale_lock_and_unlock(t: &AwsTest, region: &str) {
    slow_launches(t, 5000);
    let mut crashed = t
        .command(&["create", "--no-verify"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start a create");
    wait_for_lock(region, "lockfleet");
    // SIGKILL: no Drop, no handler; the lock group stays.
    crashed.kill().expect("SIGKILL the create");
    crashed.wait().expect("reap it");
    t.proxy.faults(json!([]));
    let refused = t.run(&["destroy", "--yes"], 4);
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("`respot create`"),
        "{}",
        text(&refused)
    );
    // Without a terminal and without --yes, unlock refuses with 2.
    let asked = t.run(&["unlock"], 2);
    assert!(
        String::from_utf8_lossy(&asked.stderr).contains("pass --yes"),
        "{}",
        text(&asked)
    );
    assert!(lock_group(region, "lockfleet").is_some());
    let unlocked = t.run(&["unlock", "--yes"], 0);
    let said = String::from_utf8_lossy(&unlocked.stderr).to_string();
    assert!(
        said.contains("locked by")
            && said.contains("removed the lock of `lockfleet` taken by `respot create`"),
        "{said}"
    );
    assert!(lock_group(region, "lockfleet").is_none());
    t.run(&["unlock", "--yes"], 0);
    // What the killed create may have launched is tagged: destroy finds it.
    t.run(&["destroy", "--yes"], 0);
    assert_eq!(t.live_ours(), 0);
}

#[test]
fn one_operation_at_a_time_and_unlock_removes_a_stale_lock() {
    let t = AwsTest::new("lockfleet", 1);
    let region = t.regions[0].clone();
    two_concurrent_creates(&t, &region);
    stale_lock_and_unlock(&t, &region);
}

/// al2023 resolves through its SSM parameter; `plan` and `create` print
/// the AMI, and the launch uses it.
fn images_by_ssm_parameter(t: &AwsTest, region: &str) {
    let ssm = aws_sdk_ssm::Client::from_conf(
        aws_sdk_ssm::Config::builder()
            .behavior_version(aws_sdk_ssm::config::BehaviorVersion::latest())
            .region(aws_sdk_ssm::config::Region::new(region.to_string()))
            .endpoint_url(crate::support::moto::moto_url())
            .credentials_provider(aws_sdk_ssm::config::Credentials::new(
                "testing", "testing", None, None, "tests",
            ))
            .build(),
    );
    let parameter = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64";
    let want = block_on(ssm.get_parameter().name(parameter).send())
        .expect("moto serves the parameter")
        .parameter()
        .and_then(|p| p.value())
        .expect("a value")
        .to_string();
    assert!(want.starts_with("ami-"), "{want}");

    let plan = t.run(&["plan"], 0);
    let line = format!("{region}: image al2023 is {want}");
    assert!(
        String::from_utf8_lossy(&plan.stderr).contains(&line),
        "{}",
        text(&plan)
    );
    t.proxy.reset();
    let created = t.run(&["create", "--no-verify"], 0);
    assert!(
        String::from_utf8_lossy(&created.stderr).contains(&line),
        "{}",
        text(&created)
    );
    // One parameter read for the region, and the launch used its image.
    assert_eq!(t.proxy.calls("GetParameter"), 1);
    let launched: Vec<String> = t
        .proxy
        .requests()
        .iter()
        .filter(|r| r["action"] == "RunInstances")
        .filter_map(|r| r["params"]["ImageId"].as_str().map(str::to_string))
        .collect();
    assert!(
        !launched.is_empty() && launched.iter().all(|id| *id == want),
        "{launched:?}"
    );
    t.run(&["destroy", "--yes"], 0);
}

/// A launch denied for ec2:CreateTags names the action and releases the
/// lock.
fn denied_create_tags(t: &AwsTest, region: &str) {
    let message = "You are not authorized to perform this operation. User: \
                   arn:aws:iam::123456789012:user/ci is not authorized to perform: ec2:CreateTags on \
                   resource: arn:aws:ec2:*:123456789012:instance/* because no identity-based policy \
                   allows the ec2:CreateTags action.";
    t.proxy.faults(json!([{
        "action": "RunInstances", "code": "UnauthorizedOperation", "status": 403, "message": message
    }]));
    // A create that fails after it began is rolled back: exit 1.
    let out = t.run(&["create", "--no-verify"], 1);
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        said.contains("RunInstances was denied (UnauthorizedOperation)")
            && said.contains("may not perform `ec2:CreateTags`")
            && said.contains("respot iam-policy"),
        "{said}"
    );
    assert!(
        lock_group(region, "access").is_none(),
        "the failed create released its lock"
    );
    let policies = t.run(&["iam-policy", "--output", "json"], 0);
    let policies: serde_json::Value =
        serde_json::from_slice(&policies.stdout).expect("the policies are JSON");
    let policy = &policies["operator"];
    let statements = policy["Statement"].as_array().expect("statements");
    assert!(
        statements.iter().any(|s| s["Action"] == "ec2:CreateTags"),
        "{policy}"
    );
    assert_eq!(t.live_ours(), 0);
}

#[test]
fn images_by_ssm_parameter_and_denied_permissions_on_moto() {
    let t = AwsTest::new("access", 1);
    let region = t.regions[0].clone();
    images_by_ssm_parameter(&t, &region);
    denied_create_tags(&t, &region);
}

/// A local deployment whose lock another process holds, taken with
/// `flock(1)` on respot's lock file: no VM boots.
#[test]
fn a_held_local_lock_refuses_create_and_unlock_with_exit_4() {
    let test = Test::sample();
    test.context().link_vm_image();
    let lock = test.context().vms_dir("hello").with_extension("lock");
    std::fs::create_dir_all(lock.parent().expect("a parent")).expect("mkdir");
    let holder =
        json!({"who": "ops@build-7", "since": "2026-01-02T03:04:05Z", "command": "deploy", "pid": 4242});
    std::fs::write(&lock, holder.to_string()).expect("write the holder");
    // --no-fork: `sleep` itself holds the lock, so stopping it frees it.
    let mut held = Command::new("flock")
        .args(["--nonblock", "--no-fork"])
        .arg(&lock)
        .args(["sleep", "60"])
        .spawn()
        .expect("flock");
    std::thread::sleep(Duration::from_millis(300));
    let refused = test
        .context()
        .command()
        .args(["create"])
        .output()
        .expect("run respot");
    let unlock = test
        .context()
        .command()
        .args(["unlock", "--yes"])
        .output()
        .expect("run respot");
    let destroy = test
        .context()
        .command()
        .args(["destroy", "--yes"])
        .output()
        .expect("run respot");
    let listed = test
        .context()
        .command()
        .args(["list"])
        .output()
        .expect("run respot");
    // Another deployment's destroy takes that deployment's lock, not hello's.
    let other = test
        .context()
        .command()
        .args(["destroy", "--deployment", "other", "--yes"])
        .output()
        .expect("run respot");
    stop_child(&mut held, Duration::from_secs(2));
    assert_eq!(
        other.status.code(),
        Some(0),
        "hello's lock does not hold `other`: {}",
        text(&other)
    );
    assert_eq!(refused.status.code(), Some(4), "{}", text(&refused));
    let said = String::from_utf8_lossy(&refused.stderr).to_string();
    assert!(
        said.contains(
            "`hello` is locked by ops@build-7 (pid 4242, `respot deploy`) since 2026-01-02T03:04:05Z"
        ),
        "{said}"
    );
    assert_eq!(unlock.status.code(), Some(4), "{}", text(&unlock));
    assert!(
        String::from_utf8_lossy(&unlock.stderr).contains("still running"),
        "{}",
        text(&unlock)
    );
    assert_eq!(destroy.status.code(), Some(4), "{}", text(&destroy));
    assert_eq!(
        listed.status.code(),
        Some(0),
        "list takes no lock: {}",
        text(&listed)
    );
    // Its holder gone, the lock is free.
    let free = test
        .context()
        .command()
        .args(["unlock"])
        .output()
        .expect("run respot");
    assert_eq!(free.status.code(), Some(0), "{}", text(&free));
    assert!(String::from_utf8_lossy(&free.stderr).contains("`hello` is not locked"));
}
