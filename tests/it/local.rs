//! End to end on the local provider: real QEMU VMs (TCG here) running real
//! cloud-init and systemd, verified over real SSH. Few and meaningful: each
//! VM boot costs a minute or two.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::support::raw_ssh;
use crate::support::sshd::{HOSTILE_COMMANDS, assert_no_tty_forwarding_or_tunnel};
use crate::support::vms::SampleVms;

mod heal;

/// respot's verification account, as `src/guest/mod.rs` names it.
const VERIFY_USER: &str = "respot-verify";

/// The sample on real VMs (`SampleVms`: its own state directory, cleaned
/// up on drop), with what these tests read of it.
struct Fleet(SampleVms);

impl std::ops::Deref for Fleet {
    type Target = SampleVms;
    fn deref(&self) -> &SampleVms {
        &self.0
    }
}

impl Fleet {
    fn new(count: u32) -> Fleet {
        Fleet(SampleVms::new(count, &[]))
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let out = self.respot(&all);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("respot {args:?}: not JSON ({e})"))
    }

    fn instance_dirs(&self) -> Vec<PathBuf> {
        let root = self.test.context().vms_dir("hello");
        match std::fs::read_dir(&root) {
            Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// qemu processes started for this test (their command line names our
    /// state directory).
    fn our_qemu_pids(&self) -> Vec<i32> {
        self.pids(&["qemu-system-x86_64"])
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn check<'a>(report: &'a serde_json::Value, instance: &str, name: &str) -> &'a serde_json::Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["instance"] == instance && c["check"] == name)
        .unwrap_or_else(|| panic!("no check {name} for {instance} in {report}"))
}

/// Happy path, the read-only guarantee on a real instance, and a destroy
/// after one VM was killed out of band, on one fleet of 2 VMs.
#[test]
fn sample_deploys_verifies_refuses_writes_and_destroys() {
    let fleet = Fleet::new(2);
    let digest = {
        let render = fleet.json(&["render"]);
        render["digest"].as_str().unwrap().to_string()
    };

    let created = fleet.respot(&["create"]);
    assert_eq!(created.status.code(), Some(0), "create: {}", stderr(&created));
    assert!(stderr(&created).contains("verified"), "{}", stderr(&created));
    // Off a terminal, one plain line per phase change.
    for phase in [
        "requested",
        "running (+",
        "ssh (+",
        "cloud-init (+",
        "units (+",
        "verified (+",
    ] {
        assert!(
            stderr(&created).contains(&format!(": {phase}")),
            "{phase}: {}",
            stderr(&created)
        );
    }

    let listed = fleet.json(&["list"]);
    let instances = listed.as_array().unwrap();
    assert_eq!(instances.len(), 2, "{listed}");
    for i in instances {
        assert_eq!(i["state"], "running");
        assert_eq!(i["digest"], digest.as_str());
        assert_eq!(i["stale"], false);
        assert_eq!(i["generation"], 1);
        assert!(i["version"].as_str().unwrap().starts_with(&digest[..12]));
    }
    let first = instances[0]["id"].as_str().unwrap().to_string();
    let port = instances[0]["ssh"]["port"].as_u64().unwrap();

    let verified = fleet.json(&["verify"]);
    assert_eq!(verified["passed"], true, "{verified}");
    for i in instances {
        let id = i["id"].as_str().unwrap();
        for name in [
            "cloud-init",
            "digest",
            "files",
            "unit hello-health.service",
            "unit hello-reporter.service",
        ] {
            assert_eq!(
                check(&verified, id, name)["result"],
                "pass",
                "{name} on {id}: {verified}"
            );
        }
    }
    let health = fleet.json(&["debug", &first, "--section", "health"]);
    assert!(
        health.to_string().contains(&digest),
        "/health answers with the digest: {health}"
    );

    assert_only_the_inspector_answers(&fleet, &first, u16::try_from(port).unwrap());
    let after = fleet.json(&["verify", "--instance", &first]);
    assert_eq!(after["passed"], true, "the instance is unchanged: {after}");
    assert_eq!(
        check(&after, &first, "unit hello-health.service")["result"],
        "pass"
    );
    assert_eq!(check(&after, &first, "files")["result"], "pass");

    // Kill one VM behind respot's back; destroy still cleans up everything.
    let victim = fleet.our_qemu_pids()[0];
    // SAFETY: a qemu this test started.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    std::thread::sleep(std::time::Duration::from_millis(500));
    let listed = fleet.json(&["list"]);
    let states: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["state"].as_str().unwrap())
        .collect();
    assert!(states.contains(&"dead"), "a killed VM shows as dead: {states:?}");

    let destroyed = fleet.respot(&["destroy", "--yes"]);
    assert_eq!(
        destroyed.status.code(),
        Some(0),
        "destroy: {}",
        stderr(&destroyed)
    );
    assert!(fleet.our_qemu_pids().is_empty(), "no qemu left");
    assert!(
        fleet.instance_dirs().is_empty(),
        "no state left: {:?}",
        fleet.instance_dirs()
    );
    assert!(
        !fleet.state.join("respot/local/hello").exists(),
        "the deployment dir is gone"
    );
    let again = fleet.respot(&["destroy", "--yes"]);
    assert_eq!(again.status.code(), Some(0));
    assert!(stderr(&again).contains("nothing to do"));
}

/// On a real instance: respot's account runs the inspector and cannot
/// write its home; through the verification key, every hostile string is
/// refused by the inspector, and no terminal, forwarding or tunnel is had.
fn assert_only_the_inspector_answers(fleet: &Fleet, id: &str, port: u16) {
    let facts = fleet.json(&["debug", id, "--section", "facts"]);
    let fact = |key: &str| facts["facts"][key].as_str().unwrap_or_default().to_string();
    assert_eq!(fact("inspector_user"), VERIFY_USER, "{facts}");
    assert_eq!(fact("inspector_home"), "/var/lib/respot-verify", "{facts}");
    assert_eq!(fact("inspector_home_owner"), "root:root 755", "{facts}");
    assert_eq!(fact("inspector_home_writable"), "no", "{facts}");
    assert_eq!(
        fact("inspector_groups"),
        "respot-verify adm systemd-journal",
        "{facts}"
    );

    let keys = fleet.test.context().keys_dir("hello");
    let (key, known_hosts) = (keys.join("verify_ed25519"), keys.join("known_hosts"));
    for attempt in HOSTILE_COMMANDS {
        let out = raw_ssh(&key, &known_hosts, VERIFY_USER, port, attempt)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(64),
            "`{attempt}` must be refused by the inspector: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        );
        assert!(
            out.stdout.is_empty() && stderr(&out).contains("refused"),
            "`{attempt}`: {}",
            stderr(&out)
        );
    }
    assert_no_tty_forwarding_or_tunnel(&key, &known_hosts, VERIFY_USER, port, 22);
}

/// A unit that exits 1: create fails verification and rolls back; with
/// --keep-on-failure, debug names the unit and shows its error.
#[test]
fn broken_unit_rolls_back_or_is_kept_for_debug() {
    let fleet = Fleet::new(1);
    std::fs::write(
        fleet.path().join("instance/units/hello-broken.service"),
        "[Unit]\nDescription=fails on purpose\n\n[Service]\nType=simple\nExecStart=/opt/hello/broken.sh\n\n[Install]\nWantedBy=multi-user.target\n",
    )
    .unwrap();
    let script = fleet.path().join("instance/files/opt/hello/broken.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\necho 'broken: intentional failure 4242' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    let kept = fleet.respot(&["create", "--keep-on-failure"]);
    assert_eq!(kept.status.code(), Some(1), "{}", stderr(&kept));
    assert!(stderr(&kept).contains("kept 1 instance for"), "{}", stderr(&kept));
    // While the kept VM runs, its state (the seed holds the host private
    // key) is this user's alone.
    let vms = fleet.test.context().vms_dir("hello");
    let mut checked = 0;
    for path in walkdir(&vms).into_iter().chain([vms.clone()]) {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777;
        let want = if meta.is_dir() { 0o700 } else { 0o600 };
        assert!(
            mode & !want == 0,
            "{} is {mode:o}, want at most {want:o}",
            path.display()
        );
        checked += 1;
    }
    assert!(checked >= 8, "the VM's state: {checked} entries");
    let listed = fleet.json(&["list"]);
    let id = listed[0]["id"].as_str().unwrap().to_string();
    let report = fleet.json(&["debug", &id]);
    let text = report.to_string();
    assert!(
        text.contains("hello-broken.service"),
        "debug names the unit: {text}"
    );
    assert!(
        text.contains("intentional failure 4242"),
        "debug shows the journal: {text}"
    );
    let destroyed = fleet.respot(&["destroy", "--yes"]);
    assert_eq!(destroyed.status.code(), Some(0));

    let rolled = fleet.respot(&["create"]);
    assert_eq!(rolled.status.code(), Some(1), "{}", stderr(&rolled));
    assert!(stderr(&rolled).contains("rolled back"), "{}", stderr(&rolled));
    assert!(
        stderr(&rolled).contains("hello-broken.service"),
        "the failed check is shown: {}",
        stderr(&rolled)
    );
    assert!(fleet.our_qemu_pids().is_empty(), "rollback leaves no VM");
    assert!(fleet.instance_dirs().is_empty(), "rollback leaves no state");
}

#[test]
fn plan_for_a_new_local_fleet_creates_the_configured_count() {
    let fleet = Fleet::new(2);
    let plan = fleet.json(&["plan"]);
    assert_eq!(plan["change"], "new", "{plan}");
    assert_eq!(plan["strategy"], "recreate");
    let regions = plan["regions"].as_array().unwrap();
    assert_eq!(regions.len(), 1, "{plan}");
    assert_eq!(regions[0]["region"], "local");
    assert_eq!(regions[0]["create"], 2);
    assert_eq!(regions[0]["destroy"], 0);
    assert_eq!(regions[0]["lifecycle"], "vm");
    assert!(fleet.our_qemu_pids().is_empty(), "plan starts nothing");
    assert!(fleet.instance_dirs().is_empty(), "plan writes no instance state");
    let listed = fleet.json(&["list"]);
    assert_eq!(listed, serde_json::json!([]), "nothing runs yet");
    let written: Vec<_> = walkdir(&fleet.state);
    assert!(written.is_empty(), "list and plan wrote {written:?}");
}

/// Every file and directory below `dir`.
fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walkdir(&path));
        }
        found.push(path);
    }
    found
}

/// A blueprint of 60 KB of text and 200 KB of binary travels as a bundle
/// on the seed: the VM's bundle step checks and writes it, and it verifies.
#[test]
fn large_blueprint_deploys_from_a_bundle_on_the_seed_and_verifies() {
    let fleet = Fleet::new(1);
    let dir = fleet.path().join("instance/files/opt/big");
    std::fs::create_dir_all(&dir).unwrap();
    let text: String = (0..2200)
        .map(|i| format!("line {i}: setting_{} = {}\n", i % 97, i * 7919 % 10007))
        .collect();
    assert!(text.len() >= 60_000, "{}", text.len());
    std::fs::write(dir.join("settings.conf"), &text).unwrap();
    let mut state = 11u64;
    let binary: Vec<u8> = (0..200_000)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u8
        })
        .collect();
    std::fs::write(dir.join("model.bin"), &binary).unwrap();
    let render = fleet.json(&["render"]);
    assert_eq!(render["transport"], "bundle", "{}", render["budget"]);

    let created = fleet.respot(&["create"]);
    assert_eq!(created.status.code(), Some(0), "create: {}", stderr(&created));
    let verified = fleet.json(&["verify"]);
    assert_eq!(verified["passed"], true, "{verified}");
    let id = fleet.json(&["list"])[0]["id"].as_str().unwrap().to_string();
    assert_eq!(check(&verified, &id, "files")["result"], "pass", "{verified}");
    let log = fleet.json(&["debug", &id, "--section", "log"]);
    let sha = render["bundle"]["sha256"].as_str().unwrap();
    assert!(
        log.to_string()
            .contains(&format!("bundle {}: 6 files written", &sha[..12])),
        "the bundle step logged its work: {log}"
    );
}

/// Two instances of one generation share one digest, and a `[[files]]`
/// template differs by instance: cloud-init's Jinja fills in each VM's
/// own id and launch index from the NoCloud meta-data.
#[test]
fn per_instance_values_differ_by_instance_under_one_digest() {
    let fleet = Fleet::new(2);
    std::fs::write(
        fleet.path().join("instance/files/opt/hello/node.txt"),
        "{{ instance.id }} {{ instance.index }} {{ instance.region }}\n",
    )
    .unwrap();
    let toml = fleet.path().join("respot.toml");
    let mut text = std::fs::read_to_string(&toml).unwrap();
    text.push_str("\n[[files]]\npath = \"files/opt/hello/node.txt\"\ntemplate = true\n");
    std::fs::write(&toml, text).unwrap();
    // The health answer starts with the node file (the inspector keeps
    // the first 120 bytes of a probe's body).
    let health = fleet.path().join("instance/files/opt/hello/health.py");
    let script = std::fs::read_to_string(&health).unwrap().replacen(
        "                \"status\": \"ok\",",
        "                \"node\": open(\"/opt/hello/node.txt\").read().strip(),\n                \"status\": \"ok\",",
        1,
    );
    assert!(
        script.contains("node.txt"),
        "the sample's health.py changed shape"
    );
    std::fs::write(&health, script).unwrap();
    let digest = fleet.json(&["render"])["digest"].as_str().unwrap().to_string();

    let created = fleet.respot(&["create"]);
    assert_eq!(created.status.code(), Some(0), "create: {}", stderr(&created));
    let listed = fleet.json(&["list"]);
    let instances = listed.as_array().unwrap();
    assert_eq!(instances.len(), 2, "{listed}");
    let mut nodes = Vec::new();
    for i in instances {
        assert_eq!(i["digest"], digest.as_str(), "one digest for the generation");
        let id = i["id"].as_str().unwrap();
        let answer = fleet.json(&["debug", id, "--section", "health"]).to_string();
        let want = format!("{id} ");
        assert!(answer.contains(&want), "{id}'s file names it: {answer}");
        assert!(answer.contains(" local"), "the region from meta-data: {answer}");
        nodes.push(answer);
    }
    assert!(
        nodes.iter().any(|n| n.contains(" 0 local")) && nodes.iter().any(|n| n.contains(" 1 local")),
        "launch indexes 0 and 1: {nodes:?}"
    );
    let verified = fleet.json(&["verify"]);
    assert_eq!(verified["passed"], true, "{verified}");
}
