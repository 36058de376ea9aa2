//! The realistic blueprint of `tests/fixtures/realistic` ("ledger": seven
//! units in an explicit order, ~64 KB of scripts and configs, a binary, a
//! service user's 0600 files, directories, a secret from this machine, a
//! pinned package, a per-instance file): `render --check` against cloud-init's real schema, and
//! on a real local VM (TCG) create, verify, and drift that must fail.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::{Test, raw_ssh};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/realistic");

/// The fixture copied into a fresh test context, with the secret's
/// `local_file` written (the fixture keeps it out of git).
fn ledger() -> Test {
    let test = Test::new();
    copy_dir(Path::new(FIXTURE), test.path());
    std::fs::create_dir_all(test.path().join("secrets")).unwrap();
    std::fs::write(test.path().join("secrets/api-token"), "ledger-test-token-0001\n").unwrap();
    test
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn the_realistic_fixture_renders_and_passes_cloud_inits_schema() {
    let test = ledger();
    let out = test
        .context()
        .command()
        .args(["render", "--check", "--output", "json"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let files = report["files"].as_array().unwrap();
    let file = |path: &str| {
        files
            .iter()
            .find(|f| f["path"] == path)
            .unwrap_or_else(|| panic!("{path}"))
    };
    let credentials = file("/etc/ledger/credentials.ini");
    assert_eq!(
        (&credentials["owner"], &credentials["group"], &credentials["mode"]),
        (&"ledger".into(), &"ledger".into(), &"0600".into())
    );
    assert_eq!(file("/etc/ledger/ledger.conf")["mode"], "0640");
    assert_eq!(file("/opt/ledger/bin/ledgerctl")["mode"], "0755");
    let text_bytes: u64 = files
        .iter()
        .filter(|f| f["origin"] == "blueprint")
        .map(|f| f["bytes"].as_u64().unwrap())
        .sum();
    assert!(text_bytes >= 60_000, "the fixture ships {text_bytes} bytes");
    assert_eq!(
        report["units"],
        serde_json::json!([
            "ledger-prepare.service",
            "ledger-db.service",
            "ledger-api.service",
            "ledger-worker.service",
            "ledger-metrics.service",
            "ledger-backup.timer"
        ])
    );
    let document = report["document"].as_str().unwrap();
    assert!(
        !document.contains("ledger-test-token-0001"),
        "the secret stays out of user-data"
    );
}

/// Kills what the test started: `respot destroy`, then any qemu naming this
/// test's state directory.
struct Vms<'a>(&'a Test);

impl Drop for Vms<'_> {
    fn drop(&mut self) {
        // Best effort: the qemu kill below is the backstop.
        let _ = self.0.context().command().args(["destroy", "--yes"]).output();
        let needle = self.0.context().state().display().to_string();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains("qemu-system-x86_64") && cmdline.contains(&needle) {
                // SAFETY: kill(2) on a qemu whose command line names this test's state dir.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// (check, result, detail) of every row of a `verify --output json`.
fn rows(out: &Output) -> Vec<(String, String, String)> {
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("verify prints JSON");
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
            (s("check"), s("result"), s("detail"))
        })
        .collect()
}

/// The person's login key for `ops`, and a template that gives `ops` sudo,
/// so the test can plant drift as an operator would by hand.
fn with_operator_access(test: &Test) -> PathBuf {
    let key = test.path().join("ops_ed25519");
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "ops@test", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(status.success(), "ssh-keygen");
    let toml_path = test.path().join("respot.toml");
    let toml = std::fs::read_to_string(&toml_path).unwrap();
    let toml = toml.replace(
        "[ssh]\nuser = \"ops\"\n",
        "[ssh]\nuser = \"ops\"\nauthorized_key = \"ops_ed25519.pub\"\n",
    );
    std::fs::write(&toml_path, toml).unwrap();
    let template_path = test.path().join("templates/cloud-init.yaml");
    let template = std::fs::read_to_string(&template_path).unwrap();
    let template = template.replacen(
        "    groups: [adm, systemd-journal]\n",
        "    groups: [adm, systemd-journal]\n    sudo: \"ALL=(ALL) NOPASSWD:ALL\"\n",
        1,
    );
    std::fs::write(&template_path, template).unwrap();
    key
}

#[test]
fn the_realistic_fixture_deploys_verifies_and_fails_on_drift_in_a_0600_file() {
    let test = ledger();
    let key = with_operator_access(&test);
    test.context().link_vm_image();
    let _vms = Vms(&test);

    let out = test.respot_logged(&["create", "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "create must deploy and verify");
    let out = test.respot_logged(&["verify", "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "verify passes");
    let passing = rows(&out);
    let passed = |check: &str| passing.iter().any(|(c, r, _)| c == check && r == "pass");
    for check in [
        "files",
        "directories",
        "secrets",
        "package curl",
        "unit ledger-prepare.service",
        "unit ledger-api.service",
        "unit ledger-backup.timer",
        "health :8080/health",
        "health :9102/metrics",
    ] {
        assert!(passed(check), "{check} must pass: {passing:?}");
    }

    let listed: serde_json::Value =
        serde_json::from_slice(&test.respot_logged(&["list", "--output", "json"]).stdout).unwrap();
    let port = listed[0]["ssh"]["port"].as_u64().unwrap().to_string();
    // The deployment log, for the record: the unit steps and their times.
    let id = listed[0]["id"].as_str().unwrap().to_string();
    let log = test.respot_logged(&["debug", &id, "--section", "log"]);
    assert_eq!(log.status.code(), Some(0));
    let known_hosts = test.context().keys_dir("ledger").join("known_hosts");
    let as_ops = |command: &str| {
        let out = raw_ssh(&key, &known_hosts, "ops", port.parse().unwrap(), command)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{command}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };

    // Drift inside a file respot-verify cannot read itself (0600, ledger's).
    as_ops("sudo sh -c 'echo \"# by hand\" >> /etc/ledger/credentials.ini'");
    let out = test.respot_logged(&["verify", "--output", "json"]);
    assert_eq!(out.status.code(), Some(1), "drift in a 0600 file fails");
    let failed: Vec<(String, String, String)> = rows(&out).into_iter().filter(|r| r.1 == "fail").collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(
        failed[0]
            .2
            .starts_with("`/etc/ledger/credentials.ini` changed on the instance"),
        "{failed:?}"
    );

    // Same content, another mode, on the other 0600 file; and a secret
    // opened to everyone.
    as_ops("sudo chmod 0644 /etc/ledger/signing.pem /etc/ledger/api-token");
    let out = test.respot_logged(&["verify", "--output", "json"]);
    let details: Vec<String> = rows(&out)
        .into_iter()
        .filter(|r| r.1 == "fail")
        .map(|r| r.2)
        .collect();
    for want in [
        "`/etc/ledger/signing.pem` is ledger:ledger 0644 on the instance, the render says ledger:ledger 0600",
        "`/etc/ledger/api-token` is ledger:ledger 0644 on the instance, the render says ledger:ledger 0600",
    ] {
        assert!(details.iter().any(|d| d == want), "{want} not in {details:?}");
    }
}

/// respot reads each SSM parameter's version, never its value, against
/// moto: a second `PutParameter` moves the version, a missing parameter is
/// an error that names it and the command to create it.
#[test]
fn secret_versions_are_read_from_ssm_without_the_value() {
    use aws_credential_types::Credentials;
    use aws_credential_types::provider::SharedCredentialsProvider;
    use respot::provider::aws::secrets::{SsmVersions, tag_value};

    let region = "eu-west-1";
    let sdk = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region))
        .endpoint_url(crate::support::moto::moto_url())
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "testing", "testing", None, None, "tests",
        )))
        .build();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ssm = aws_sdk_ssm::Client::new(&sdk);
    let put = |name: &str, value: &str| {
        runtime
            .block_on(
                ssm.put_parameter()
                    .name(name)
                    .value(value)
                    .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
                    .overwrite(true)
                    .send(),
            )
            .unwrap();
    };
    put("/ledger/api-token", "first");
    put("/ledger/api-token", "second");
    put("/ledger/db-password", "only");
    let names = vec!["/ledger/api-token".to_string(), "/ledger/db-password".to_string()];
    let versions = runtime
        .block_on(SsmVersions::new(&sdk).versions(region, &names))
        .unwrap();
    assert_eq!(
        versions,
        vec![
            ("/ledger/api-token".to_string(), 2),
            ("/ledger/db-password".to_string(), 1)
        ]
    );
    assert_eq!(tag_value(&versions), "/ledger/api-token=2 /ledger/db-password=1");

    let missing = vec!["/ledger/nope".to_string()];
    let err = runtime
        .block_on(SsmVersions::new(&sdk).versions(region, &missing))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("SSM parameter `/ledger/nope` does not exist in eu-west-1"),
        "{err}"
    );
    assert!(
        err.contains("aws ssm put-parameter --region eu-west-1 --type SecureString"),
        "{err}"
    );
}
