//! `respot verify` and `respot debug` against a real sshd on 127.0.0.1.
//!
//! The "instance" is a fixture root: the files of the sample blueprint as
//! cloud-init would write them, plus the launch part's manifest, served by
//! the real inspector as the forced command of respot's verification key
//! (with `RESPOT_INSPECT_ROOT` set inside the forced command). There is no
//! systemd or cloud-init behind it, so those queries answer `unavailable`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use respot::config::Config;
use respot::keys::KeyStore;
use respot::provider::SshEndpoint;
use respot::template::Blueprint;

use crate::support::sshd::{Sshd, free_port};
use crate::support::{Test, raw_ssh};

/// One port on 127.0.0.1 answering every HTTP request with 200 `ok`, for
/// the blueprint's health probe. One per test process, never stopped.
fn health_port() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(|| {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut stream = stream;
                    let mut buf = [0u8; 1024];
                    let _ = stream.read(&mut buf);
                    let _ = stream.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok");
                });
            }
        });
        port
    })
}

/// The login user of the fixture. respot refuses `root` as `ssh.user`, so
/// when the tests run as root they use a dedicated system user, created
/// once (no home, password `*` so sshd does not see it as locked).
fn current_user() -> String {
    static USER: OnceLock<String> = OnceLock::new();
    USER.get_or_init(|| {
        let out = Command::new("id").arg("-un").output().expect("id -un");
        let me = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if me != "root" {
            return me;
        }
        let name = "respot-fx";
        let exists = Command::new("id")
            .arg(name)
            .output()
            .expect("id")
            .status
            .success();
        if !exists {
            let status = Command::new("useradd")
                .args(["--system", "--no-create-home", "--shell", "/bin/sh", name])
                .status()
                .expect("useradd");
            assert!(status.success(), "useradd {name}");
        }
        let status = Command::new("usermod")
            .args(["-p", "*", name])
            .status()
            .expect("usermod");
        assert!(status.success(), "usermod -p * {name}");
        name.to_string()
    })
    .clone()
}

/// A blueprint, its keys, and the fixture root that plays the instance.
struct Fixture {
    test: Test,
    keys: KeyStore,
    root: PathBuf,
    keys_dir: PathBuf,
    host_key: (String, String),
}

impl Fixture {
    fn new(host_keys_policy: &str) -> Fixture {
        let test = Test::sample();
        // The fixture user reads the instance root inside the temp dir.
        std::fs::set_permissions(test.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let toml = format!(
            "[deployment]\nname = \"hello\"\n\n[ssh]\nuser = \"{}\"\nhost_keys = \"{host_keys_policy}\"\n\n\
             [verify]\ntimeout_secs = 30\n\n[[verify.http]]\nport = {}\npath = \"/health\"\nexpect_status = 200\n",
            current_user(),
            health_port()
        );
        std::fs::write(test.path().join("respot.toml"), toml).expect("write respot.toml");
        let config = Config::load(&test.path().join("respot.toml")).expect("load config");
        let blueprint = Blueprint::render(&config).expect("render");
        let root = test.path().join("instance-root");
        for file in &blueprint.files {
            let path = root.join(file.path.trim_start_matches('/'));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &file.content).unwrap();
            let mode = u32::from_str_radix(&file.mode, 8).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let etc = root.join("etc/respot");
        std::fs::write(etc.join("manifest.json"), blueprint.manifest_json(1)).unwrap();
        std::fs::write(etc.join("manifest.sha256"), blueprint.sha256_list()).unwrap();
        let units: String = blueprint.units.iter().map(|u| format!("{u}\n")).collect();
        std::fs::write(etc.join("units"), units).unwrap();
        std::fs::create_dir_all(root.join("var/log/respot")).unwrap();
        std::fs::write(
            root.join("var/log/respot/deploy.log"),
            "2025-01-01T00:00:00Z runcmd: fixture deployed\n",
        )
        .unwrap();

        let keys = KeyStore::at(&test.context().keys_dir("hello"), "hello");
        let verify_key = keys.verify_public_key().unwrap();
        let keys_dir = test.path().join("verify_keys");
        std::fs::create_dir_all(&keys_dir).unwrap();
        let inspector = root.join("usr/lib/respot/inspect");
        std::fs::write(
            keys_dir.join(current_user()),
            format!(
                "restrict,command=\"RESPOT_INSPECT_ROOT={} {}\" {verify_key}\n",
                root.display(),
                inspector.display()
            ),
        )
        .unwrap();
        let host_key = keys.host_key(1).unwrap();
        Fixture {
            test,
            keys,
            root,
            keys_dir,
            host_key,
        }
    }

    fn sshd(&self, name: &str, ports: &[u16]) -> Sshd {
        Sshd::start(
            &self.test.path().join(name),
            &self.host_key.0,
            &self.keys_dir,
            ports,
        )
    }

    fn sshd_with_key(&self, name: &str, private: &str, ports: &[u16]) -> Sshd {
        Sshd::start(&self.test.path().join(name), private, &self.keys_dir, ports)
    }

    fn pin(&self, host: &str, port: u16) {
        let endpoint = SshEndpoint {
            host: host.to_string(),
            port,
        };
        self.keys.pin(&endpoint, &self.host_key.1).unwrap();
    }

    fn cmd(&self) -> assert_cmd::Command {
        self.test.context().command()
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run respot")
    }

    /// Every file under the fixture root with its content, to prove that
    /// nothing changed.
    fn snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, out);
                } else {
                    out.insert(path.clone(), std::fs::read(&path).unwrap());
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(&self.root, &mut out);
        out
    }
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}):\n{}\n--- stderr ---\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn explain(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// (check, result, detail) of every row of instance `instance`.
fn rows(report: &serde_json::Value, instance: &str) -> Vec<(String, String, String)> {
    report["checks"]
        .as_array()
        .expect("checks is an array")
        .iter()
        .filter(|r| r["instance"] == instance)
        .map(|r| {
            (
                r["check"].as_str().unwrap().to_string(),
                r["result"].as_str().unwrap().to_string(),
                r["detail"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn results(rows: &[(String, String, String)]) -> Vec<(&str, &str)> {
    rows.iter().map(|(c, r, _)| (c.as_str(), r.as_str())).collect()
}

#[test]
fn verify_passes_on_the_fixture_where_systemd_and_cloud_init_are_unavailable() {
    let fx = Fixture::new("pinned");
    let port = free_port();
    let _sshd = fx.sshd("sshd", &[port]);
    fx.pin("127.0.0.1", port);
    let target = format!("127.0.0.1:{port}");

    let out = fx.run(&["verify", "--target", &target, "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
    let report = json(&out);
    assert_eq!(report["passed"], true);
    let health = format!("health :{}/health", health_port());
    assert_eq!(
        results(&rows(&report, &target)),
        vec![
            ("reachable", "pass"),
            ("cloud-init", "warn"),
            ("units", "warn"),
            ("digest", "pass"),
            ("files", "pass"),
            (health.as_str(), "pass"),
        ],
        "{}",
        explain(&out)
    );
    let details = rows(&report, &target);
    assert!(details[1].2.starts_with("unavailable"), "{details:?}");
    assert!(details[2].2.starts_with("unavailable"), "{details:?}");

    // The table for people, and --strict turning the warnings into failures.
    let out = fx.run(&["verify", "--target", &target]);
    assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("instance"), "{table}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("verified 1/1 instances"));
    let out = fx.run(&["verify", "--target", &target, "--strict", "--output", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", explain(&out));
    let strict = rows(&json(&out), &target);
    assert_eq!(strict[1].1, "fail");
    assert_eq!(strict[2].1, "fail");

    // debug: the same queries, as a report.
    let out = fx.run(&["debug", &target, "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
    let report = json(&out);
    assert_eq!(report["cloud_init"]["status"], "unavailable");
    assert_eq!(report["units"]["systemd"], "unavailable");
    assert_eq!(
        report["log"]["lines"][0],
        "2025-01-01T00:00:00Z runcmd: fixture deployed"
    );
    assert_eq!(report["drift"]["drifted"].as_array().unwrap().len(), 0);
    assert_eq!(report["drift"]["generation"], 1);
    assert_eq!(report["health"]["probes"][0]["got"], "200");
    assert!(!report["facts"]["kernel"].as_str().unwrap().is_empty());
    let out = fx.run(&["debug", &target, "--section", "facts"]);
    assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("== facts") && !text.contains("== units"), "{text}");
    assert!(
        text.trim_end().ends_with("never fix a live instance by hand"),
        "{text}"
    );
    assert!(text.contains("then `respot deploy`"), "{text}");
}

#[test]
fn the_inspector_refuses_free_commands_and_changes_nothing() {
    let fx = Fixture::new("pinned");
    let port = free_port();
    let _sshd = fx.sshd("sshd", &[port]);
    fx.pin("127.0.0.1", port);
    let tmp_x_existed = Path::new("/tmp/x").exists();
    let before = fx.snapshot();
    let ssh = |command: &str| -> Output {
        let key = fx.keys.verify_key_path().unwrap();
        raw_ssh(&key, &fx.keys.known_hosts_path(), &current_user(), port, command)
            .output()
            .expect("run ssh")
    };
    for command in [
        "touch /tmp/x",
        "manifest; rm -rf /",
        "journal ../../etc/shadow 5",
        "$(id)",
        "journal hello-health.service 501",
        "units extra",
        "sh -c id",
    ] {
        let out = ssh(command);
        assert_eq!(
            out.status.code(),
            Some(64),
            "{command:?} must be refused: {}",
            explain(&out)
        );
        assert!(out.stdout.is_empty(), "{command:?}: {}", explain(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("refused"),
            "{command:?}: {}",
            explain(&out)
        );
    }
    // The same key can ask a real query, so the refusals above are not an
    // ssh failure in disguise.
    let out = ssh("manifest");
    assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("respot-inspect\t1\tmanifest\n"));
    let out = ssh("journal hello-health.service 5");
    assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("status\tjournal\tunavailable"));

    assert_eq!(
        Path::new("/tmp/x").exists(),
        tmp_x_existed,
        "/tmp/x must not be created"
    );
    assert!(fx.snapshot() == before, "the fixture root changed");
}

#[test]
fn drift_fails_on_exactly_the_changed_file_and_debug_shows_it() {
    let fx = Fixture::new("pinned");
    let port = free_port();
    let _sshd = fx.sshd("sshd", &[port]);
    fx.pin("127.0.0.1", port);
    let target = format!("127.0.0.1:{port}");
    let changed = fx.root.join("opt/hello/reporter.sh");
    let mut content = std::fs::read(&changed).unwrap();
    content.extend_from_slice(b"# hotfix by hand\n");
    std::fs::write(&changed, content).unwrap();

    let out = fx.run(&["verify", "--target", &target, "--output", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", explain(&out));
    let report = json(&out);
    assert_eq!(report["passed"], false);
    let failed: Vec<_> = rows(&report, &target)
        .into_iter()
        .filter(|(_, result, _)| result == "fail")
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].0, "files");
    assert!(
        failed[0]
            .2
            .starts_with("`/opt/hello/reporter.sh` changed on the instance"),
        "{failed:?}"
    );

    let out = fx.run(&["debug", &target, "--section", "drift"]);
    assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let drift_lines: Vec<&str> = text.lines().filter(|l| l.starts_with("DRIFT ")).collect();
    assert_eq!(drift_lines.len(), 1, "{text}");
    assert!(
        drift_lines[0].starts_with("DRIFT /opt/hello/reporter.sh: recorded "),
        "{text}"
    );

    std::fs::remove_file(fx.root.join("opt/hello/health.py")).unwrap();
    let out = fx.run(&["verify", "--target", &target, "--output", "json"]);
    let details: Vec<String> = rows(&json(&out), &target)
        .into_iter()
        .filter(|(_, result, _)| result == "fail")
        .map(|(_, _, d)| d)
        .collect();
    assert_eq!(details.len(), 2, "{details:?}");
    assert!(
        details.iter().any(|d| d == "`/opt/hello/health.py` is missing"),
        "{details:?}"
    );
}

#[test]
fn a_changed_host_key_is_refused_as_a_mismatch_without_logging_in() {
    let fx = Fixture::new("pinned");
    let port = free_port();
    fx.pin("127.0.0.1", port);
    let target = format!("127.0.0.1:{port}");
    {
        let _sshd = fx.sshd("sshd", &[port]);
        let out = fx.run(&["verify", "--target", &target]);
        assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
    }
    // The "same" instance comes back with another host key.
    let other = KeyStore::at(&fx.test.path().join("other-keys"), "other");
    let (other_private, _) = other.host_key(1).unwrap();
    let sshd = fx.sshd_with_key("sshd2", &other_private, &[port]);
    let started = Instant::now();
    let out = fx.run(&["verify", "--target", &target, "--output", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", explain(&out));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a mismatch is not retried until the 30 s timeout"
    );
    let rows = rows(&json(&out), &target);
    assert_eq!(results(&rows), vec![("reachable", "fail")]);
    assert!(rows[0].2.starts_with("HOST KEY MISMATCH"), "{rows:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("man-in-the-middle"),
        "{}",
        explain(&out)
    );
    let log = sshd.log();
    assert!(
        !log.contains("Accepted publickey"),
        "respot must not log in:\n{log}"
    );

    let out = fx.run(&["debug", &target]);
    assert_eq!(out.status.code(), Some(1), "{}", explain(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("HOST KEY MISMATCH"));
}

#[test]
fn an_unpinned_endpoint_is_refused_and_record_on_first_use_records_it() {
    let fx = Fixture::new("pinned");
    let port = free_port();
    let _sshd = fx.sshd("sshd", &[port]);
    let target = format!("127.0.0.1:{port}");
    let out = fx.run(&["verify", "--target", &target, "--timeout", "20"]);
    assert_eq!(out.status.code(), Some(1), "{}", explain(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("no host key is pinned"),
        "{}",
        explain(&out)
    );

    let fx = Fixture::new("record-on-first-use");
    let port = free_port();
    let _sshd = fx.sshd("sshd", &[port]);
    let target = format!("127.0.0.1:{port}");
    let endpoint = SshEndpoint {
        host: "127.0.0.1".into(),
        port,
    };
    assert!(!fx.keys.is_known(&endpoint));
    let out = fx.run(&["verify", "--target", &target]);
    assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
    let known = std::fs::read_to_string(fx.keys.known_hosts_path()).unwrap();
    assert_eq!(
        known.trim(),
        format!("[127.0.0.1]:{port} {}", fx.host_key.1.rsplit_once(' ').unwrap().0),
        "the first contact recorded the host key"
    );
}

#[test]
fn verify_waits_for_an_instance_that_boots_late() {
    let fx = Fixture::new("pinned");
    let port = free_port();
    fx.pin("127.0.0.1", port);
    let target = format!("127.0.0.1:{port}");
    let started = Instant::now();
    let child = fx
        .test
        .context()
        .std_command()
        .args([
            "verify",
            "--target",
            &target,
            "--timeout",
            "30",
            "--output",
            "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start respot verify");
    std::thread::sleep(Duration::from_secs(5));
    let _sshd = fx.sshd("sshd", &[port]);
    let out = child.wait_with_output().expect("wait for respot");
    assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
    assert!(started.elapsed() >= Duration::from_secs(5));
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(json(&out)["passed"], true);
}

#[test]
fn verify_fails_cleanly_when_the_timeout_runs_out() {
    let fx = Fixture::new("pinned");
    let port = free_port();
    fx.pin("127.0.0.1", port);
    let target = format!("127.0.0.1:{port}");
    let started = Instant::now();
    let out = fx.run(&[
        "verify",
        "--target",
        &target,
        "--timeout",
        "2",
        "--output",
        "json",
    ]);
    let elapsed = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", explain(&out));
    assert!(elapsed < Duration::from_secs(6), "took {elapsed:?}");
    let rows = rows(&json(&out), &target);
    assert_eq!(results(&rows), vec![("reachable", "fail")]);
    assert!(rows[0].2.contains("did not become reachable"), "{rows:?}");
    assert!(rows[0].2.contains("Connection refused"), "{rows:?}");
}

#[test]
fn forty_targets_on_one_sshd_all_verify_without_maxstartups_drops() {
    let fx = Fixture::new("pinned");
    let ports: Vec<u16> = (0..10).map(|_| free_port()).collect();
    let sshd = fx.sshd("sshd", &ports);
    // Four spellings of 127.0.0.1: to respot they are four hosts.
    let hosts = ["127.0.0.1", "127.1", "127.0.1", "127.000.000.001"];
    let mut args = vec!["verify".to_string(), "--output".into(), "json".into()];
    let mut targets = Vec::new();
    for host in hosts {
        for port in &ports {
            fx.pin(host, *port);
            targets.push(format!("{host}:{port}"));
            args.push("--target".into());
            args.push(format!("{host}:{port}"));
        }
    }
    assert_eq!(targets.len(), 40);
    let started = Instant::now();
    let out = fx.cmd().args(&args).output().expect("run respot");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n--- sshd ---\n{}",
        explain(&out),
        sshd.log()
    );
    let report = json(&out);
    assert_eq!(report["instances"], 40);
    for target in &targets {
        let rows = rows(&report, target);
        assert_eq!(rows[0].0, "reachable", "{target}");
        assert!(rows.iter().all(|(_, r, _)| r != "fail"), "{target}: {rows:?}");
    }
    let log = sshd.log();
    assert!(!log.contains("MaxStartups"), "sshd throttled:\n{log}");
    assert!(
        !log.contains("drop connection"),
        "sshd dropped connections:\n{log}"
    );
    assert_eq!(
        log.matches("Accepted publickey").count(),
        40,
        "one login per target"
    );
    eprintln!("40 targets verified in {:?}", started.elapsed());
}
