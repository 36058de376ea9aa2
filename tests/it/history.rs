//! The history, `deploy --ref` and signed-commit provenance, through the
//! real binary against moto (see `aws.rs` for the harness). The blueprint
//! folder is a git repository; commits are made with a fixed identity, and
//! respot's notes fall back to its own identity (the test HOME has none).

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::aws::{AwsTest, block_on, ec2_client, stderr};

/// `git -C dir <args>` with a fixed identity; panics on failure.
pub(crate) fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=Tess", "-c", "user.email=tess@example.com"])
        .args(args)
        .env("HOME", dir.join("../home"))
        .env("XDG_CONFIG_HOME", dir.join("../config"))
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Commits everything in the blueprint folder; returns the commit id.
pub(crate) fn commit_all(t: &AwsTest, message: &str, extra: &[&str]) -> String {
    let dir = t.context.path();
    git(dir, &["add", "-A"]);
    let mut args = vec!["commit", "-q", "-m", message];
    args.extend_from_slice(extra);
    git(dir, &args);
    git(dir, &["rev-parse", "HEAD"])
}

fn history_lines(t: &AwsTest) -> Vec<Value> {
    let path = t
        .context
        .state()
        .join(format!("respot/history/{}.jsonl", t.deployment));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(|l| serde_json::from_str(l).expect("each history line is JSON"))
        .collect()
}

/// The digests of our live instances.
fn live_digests(t: &AwsTest) -> Vec<String> {
    let mut digests: Vec<String> = t
        .ours()
        .into_iter()
        .filter(|(_, _, state, _)| state != "terminated")
        .map(|(_, _, _, tags)| tags["respot:digest"].clone())
        .collect();
    digests.dedup();
    digests
}

fn phase_names(record: &Value) -> Vec<String> {
    record["phases"]
        .as_array()
        .expect("phases")
        .iter()
        .map(|p| p["name"].as_str().expect("name").to_string())
        .collect()
}

#[test]
fn history_records_every_change_deploy_ref_ships_the_recorded_digest_and_rollback_goes_forward() {
    let t = AwsTest::with("hist", 1, 1, "");
    let dir = t.context.path().to_path_buf();
    git(&dir, &["init", "-q"]);
    let a = commit_all(&t, "a", &[]);
    // Nothing deployed yet: no rollback, and the refusal is history.
    let out = t.run(&["rollback", "--yes", "--no-verify"], 1);
    assert!(stderr(&out).contains("nothing to roll back"), "{}", stderr(&out));
    t.run(&["create", "--no-verify"], 0);
    let lines = history_lines(&t);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(
        (lines[0]["action"].as_str(), lines[0]["result"].as_str()),
        (Some("rollback"), Some("failure"))
    );
    let create = &lines[1];
    assert_eq!(create["action"], "create");
    assert_eq!(create["result"], "success");
    assert_eq!(create["commit"], a.as_str());
    assert_eq!(
        create["created"],
        serde_json::json!([{"generation": 1, "instances": 1}])
    );
    assert!(create["user"].as_str().is_some_and(|u| !u.is_empty()), "{create}");
    assert!(create["host"].as_str().is_some_and(|h| !h.is_empty()), "{create}");
    assert!(
        create["time"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{create}"
    );
    let phases = phase_names(create);
    assert_eq!(phases[..3], ["render", "connect", "launch"], "{create}");
    assert!(
        phases[3..].iter().all(|p| p == "create"),
        "the rest is the engine's own: {create}"
    );
    let digest_a = create["digest"].as_str().expect("digest").to_string();
    assert_eq!(
        live_digests(&t),
        std::slice::from_ref(&digest_a),
        "the record names the tagged digest"
    );
    let note = git(&dir, &["notes", "--ref", "respot", "show", &a]);
    let noted: Value = serde_json::from_str(note.lines().next().expect("a note line")).expect("JSON note");
    assert_eq!(noted, *create, "the note is the same record");

    // Commit B changes an instance file: a new digest.
    std::fs::write(dir.join("instance/files/opt/hello/b.conf"), "b\n").expect("write b");
    let b = commit_all(&t, "b", &[]);
    t.run(&["deploy", "--strategy", "blue-green", "--yes", "--no-verify"], 0);
    let lines = history_lines(&t);
    let deploy_b = &lines[2];
    assert_eq!(deploy_b["action"], "deploy");
    assert_eq!(deploy_b["strategy"], "blue-green");
    assert_eq!(deploy_b["commit"], b.as_str());
    assert_eq!(
        deploy_b["created"],
        serde_json::json!([{"generation": 2, "instances": 1}])
    );
    assert_eq!(
        deploy_b["destroyed"],
        serde_json::json!([{"generation": 1, "instances": 1}])
    );
    assert_ne!(deploy_b["digest"], digest_a.as_str());

    // --ref A: A's blueprint, A's digest, although the tree is at B.
    let out = t.run(
        &[
            "deploy",
            "--ref",
            &a[..10],
            "--strategy",
            "blue-green",
            "--yes",
            "--no-verify",
        ],
        0,
    );
    assert!(stderr(&out).contains("as recorded"), "{}", stderr(&out));
    assert_eq!(
        live_digests(&t),
        std::slice::from_ref(&digest_a),
        "--ref A runs A's digest"
    );
    let lines = history_lines(&t);
    assert_eq!(lines[3]["digest"], digest_a.as_str());
    assert_eq!(lines[3]["commit"], a.as_str());
    assert_eq!(lines[3]["git_ref"], &a[..10]);

    // A render that no longer matches the record is refused, showing both.
    let path = t.context.state().join("respot/history/hist.jsonl");
    let text = std::fs::read_to_string(&path).expect("history");
    let forged = "f".repeat(64);
    std::fs::write(&path, text.replacen(&digest_a, &forged, 1)).expect("rewrite history");
    let out = t.run(&["deploy", "--ref", &a, "--yes", "--no-verify"], 1);
    for want in [digest_a.as_str(), forged.as_str()] {
        assert!(stderr(&out).contains(want), "both digests: {}", stderr(&out));
    }
    assert_eq!(
        live_digests(&t),
        std::slice::from_ref(&digest_a),
        "the refused deploy changed nothing"
    );
    let refused = history_lines(&t).pop().expect("the refusal is recorded");
    assert_eq!(refused["result"], "failure");
    assert!(
        refused["reason"].as_str().is_some_and(|r| r.contains(&forged)),
        "{refused}"
    );

    // No generation is kept (no front door): rollback goes forward, and
    // deploys the commit before the live one (B) again.
    let digest_b = deploy_b["digest"].as_str().expect("digest").to_string();
    let out = t.run(&["rollback", "--yes", "--no-verify"], 0);
    assert!(stderr(&out).contains("rolling back forward"), "{}", stderr(&out));
    assert_eq!(live_digests(&t), std::slice::from_ref(&digest_b));
    let rollback = history_lines(&t).pop().expect("the rollback is recorded");
    assert_eq!(rollback["action"], "rollback");
    assert_eq!(rollback["result"], "success");
    assert_eq!(rollback["commit"], b.as_str());
    assert_eq!(rollback["git_ref"], b.as_str());
    assert_eq!(rollback["digest"], digest_b.as_str());
    assert_eq!(
        rollback["created"],
        serde_json::json!([{"generation": 4, "instances": 1}])
    );
    assert_eq!(
        rollback["destroyed"],
        serde_json::json!([{"generation": 3, "instances": 1}])
    );

    t.run(&["destroy", "--yes"], 0);
    let destroy = history_lines(&t).pop().expect("destroy recorded");
    assert_eq!(destroy["action"], "destroy");
    assert_eq!(
        destroy["destroyed"],
        serde_json::json!([{"generation": 4, "instances": 1}])
    );
    assert_eq!(
        destroy["commit"],
        b.as_str(),
        "the commit of the destroyed generation"
    );
    assert_eq!(destroy["digest"], digest_b.as_str());

    let out = t.run(&["history", "--output", "json"], 0);
    let listed: Vec<Value> = serde_json::from_slice(&out.stdout).expect("history JSON");
    assert_eq!(listed.len(), 7);
    let out = t.run(&["history"], 0);
    let table = String::from_utf8_lossy(&out.stdout);
    for want in [
        "ACTION",
        "create",
        "deploy",
        "destroy",
        "FAILED",
        "blue-green",
        "rollback",
        "g4×1",
    ] {
        assert!(table.contains(want), "{want}: {table}");
    }
    let out = t.run(&["history", "--limit", "1", "--output", "json"], 0);
    let last: Vec<Value> = serde_json::from_slice(&out.stdout).expect("history JSON");
    assert_eq!(last, [destroy]);
}

#[test]
fn require_signed_refuses_unsigned_commits_and_records_the_signer() {
    let t = AwsTest::with("signed", 1, 2, "");
    let dir = t.context.path().to_path_buf();
    let config = std::fs::read_to_string(dir.join("respot.toml")).expect("respot.toml");
    let config = config.replacen("[deployment]\n", "[deployment]\nrequire_signed = true\n", 1);
    std::fs::write(dir.join("respot.toml"), config).expect("write respot.toml");
    git(&dir, &["init", "-q"]);
    commit_all(&t, "unsigned", &[]);
    let out = t.run(&["create", "--no-verify"], 2);
    assert!(stderr(&out).contains("git verify-commit"), "{}", stderr(&out));
    assert!(t.ours().is_empty(), "nothing launched for an unsigned commit");

    // An SSH key, listed in the allowed signers file.
    let keys = t.context.home().join("signing");
    std::fs::create_dir_all(&keys).expect("mkdir");
    let key = keys.join("id");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "tess"])
        .arg("-f")
        .arg(&key)
        .status()
        .expect("ssh-keygen");
    assert!(made.success());
    let public = std::fs::read_to_string(keys.join("id.pub")).expect("public key");
    let allowed = keys.join("allowed_signers");
    std::fs::write(&allowed, format!("tess@example.com {public}")).expect("allowed signers");
    git(
        &dir,
        &[
            "config",
            "gpg.ssh.allowedSignersFile",
            allowed.to_str().expect("utf-8"),
        ],
    );
    let fingerprint = String::from_utf8(
        Command::new("ssh-keygen")
            .arg("-lf")
            .arg(keys.join("id.pub"))
            .output()
            .expect("ssh-keygen -l")
            .stdout,
    )
    .expect("utf-8")
    .split_whitespace()
    .nth(1)
    .expect("a fingerprint")
    .to_string();

    // A dirty tree is refused before the signature is even read.
    std::fs::write(dir.join("instance/files/opt/hello/signed.conf"), "x\n").expect("write");
    let out = t.run(&["create", "--no-verify"], 2);
    assert!(stderr(&out).contains("dirty"), "{}", stderr(&out));

    let signing_key = format!("user.signingkey={}", key.display());
    let signed = commit_all(&t, "signed", &[]);
    git(
        &dir,
        &[
            "-c",
            "gpg.format=ssh",
            "-c",
            &signing_key,
            "commit",
            "-q",
            "--amend",
            "--no-edit",
            "-S",
        ],
    );
    let signed_after = git(&dir, &["rev-parse", "HEAD"]);
    assert_ne!(signed, signed_after, "amending with -S makes a new commit");
    t.run(&["create", "--no-verify"], 0);
    let ours = t.ours();
    assert_eq!(ours.len(), 2);
    assert_eq!(
        ours[0].3.get("respot:signer"),
        Some(&fingerprint),
        "{:?}",
        ours[0].3
    );
    let record = history_lines(&t).pop().expect("recorded");
    assert_eq!(record["signer"], fingerprint.as_str());
    assert_eq!(record["commit"], signed_after.as_str());
    let refusals: Vec<Value> = history_lines(&t)
        .into_iter()
        .filter(|r| r["result"] == "failure")
        .collect();
    assert_eq!(refusals.len(), 2, "both refusals are history too");
    // heal ships replacements: signed, tagged and recorded the same way.
    let (region, id) = (ours[0].0.clone(), ours[0].1.clone());
    block_on(ec2_client(&region).terminate_instances().instance_ids(&id).send()).expect("terminate");
    t.run(&["heal", "--no-verify"], 0);
    let original: Vec<String> = ours.iter().map(|(_, i, _, _)| i.clone()).collect();
    let healed: Vec<_> = t
        .ours()
        .into_iter()
        .filter(|(_, i, state, _)| !original.contains(i) && state != "terminated")
        .collect();
    assert_eq!(healed.len(), 1, "{healed:?}");
    assert_eq!(healed[0].3.get("respot:signer"), Some(&fingerprint));
    let heal = history_lines(&t).pop().expect("the heal is recorded");
    assert_eq!(heal["action"], "heal");
    assert_eq!(heal["signer"], fingerprint.as_str());
    assert_eq!(
        heal["created"],
        serde_json::json!([{"generation": 1, "instances": 1}])
    );
    // --ref of the unsigned parent is refused too, before any cloud call.
    let out = t.run(&["deploy", "--ref", "HEAD~1", "--yes", "--no-verify"], 2);
    assert!(stderr(&out).contains("git verify-commit"), "{}", stderr(&out));
    assert_eq!(t.live_ours(), 2, "the refused deploy launched nothing");
    t.run(&["destroy", "--yes"], 0);
}
