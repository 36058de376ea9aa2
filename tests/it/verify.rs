//! `respot verify` and `respot debug` against a real sshd on 127.0.0.1.
//!
//! The "instance" is a fixture root: the files of the sample blueprint as
//! cloud-init would write them, plus the launch part's manifest, served by
//! a copy of the real inspector (its `ROOT=` line pointed at the fixture
//! root) as the forced command of respot's verification key, for the
//! account `respot-verify`, which the fixture makes on this machine. There
//! is no systemd or cloud-init behind it, so those queries answer
//! `unavailable`.

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

use crate::support::sshd::{HOSTILE_COMMANDS, Sshd, assert_no_tty_forwarding_or_tunnel, free_port};
use crate::support::{Test, raw_ssh};

/// respot's verification account, as `src/guest/mod.rs` names it.
const VERIFY_USER: &str = "respot-verify";
/// Its home, root-owned 0755, as the launch part makes it.
const VERIFY_HOME: &str = "/var/lib/respot-verify";
/// respot's inspector and sshd drop-in, as they ship.
fn shipped_inspector() -> String {
    respot::guest::INSPECTOR.shipped()
}
fn sshd_dropin() -> String {
    respot::guest::SSHD_CONFIG.shipped()
}

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
        system_user("respot-fx", &["--no-create-home", "--shell", "/bin/sh"])
    })
    .clone()
}

/// Makes system user `name` with `useradd --system OPTIONS` unless it
/// exists, and gives it password `*`: none, but not locked, because sshd
/// without PAM (the plain fixture) refuses a locked account.
fn system_user(name: &str, options: &[&str]) -> String {
    let exists = Command::new("id")
        .arg(name)
        .output()
        .expect("id")
        .status
        .success();
    if !exists {
        let status = Command::new("useradd")
            .arg("--system")
            .args(options)
            .arg(name)
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
}

/// Makes respot's verification account on this machine if it is missing,
/// as the launch part does on an instance (`respot-fx`'s pattern): a system
/// account, shell `/bin/sh`, groups `adm` and `systemd-journal`, and a
/// root-owned 0755 home. One difference: its password is `*` (none), not
/// `!` (none, locked), because sshd without PAM, as the plain fixture runs,
/// refuses a locked account. The launch part's own script is tested on its
/// own, in a private mount namespace.
fn verify_account() -> &'static str {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let groups = ["adm", "systemd-journal"]
            .into_iter()
            .filter(|g| {
                let out = Command::new("getent").args(["group", g]).output();
                out.expect("getent").status.success()
            })
            .collect::<Vec<_>>()
            .join(",");
        let options = [
            "--no-create-home",
            "--home-dir",
            VERIFY_HOME,
            "--shell",
            "/bin/sh",
        ];
        system_user(VERIFY_USER, &[&options[..], &["--groups", &groups]].concat());
        let home = ["-d", "-o", "root", "-g", "root", "-m", "0755", VERIFY_HOME];
        let status = Command::new("install").args(home).status().expect("install");
        assert!(status.success(), "install -d {VERIFY_HOME}");
    });
    VERIFY_USER
}

/// A blueprint, its keys, and the fixture root that plays the instance.
struct Fixture {
    test: Test,
    keys: KeyStore,
    root: PathBuf,
    keys_dir: PathBuf,
    /// The inspector copy that reads `root`: the forced command.
    inspector: PathBuf,
    host_key: (String, String),
}

impl Fixture {
    fn new(host_keys_policy: &str) -> Fixture {
        Fixture::for_login(host_keys_policy, &current_user())
    }

    /// A fixture whose `ssh.user`, the person's login, is `login`.
    fn for_login(host_keys_policy: &str, login: &str) -> Fixture {
        let test = Test::sample();
        // The fixture user reads the instance root inside the temp dir.
        std::fs::set_permissions(test.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let toml = format!(
            "[deployment]\nname = \"hello\"\n\n[ssh]\nuser = \"{login}\"\nhost_keys = \"{host_keys_policy}\"\n\n\
             [verify]\ntimeout_secs = 30\n\n[[verify.http]]\nport = {}\npath = \"/health\"\nexpect_status = 200\n",
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
        // The instance's own inspector stays as rendered (its sha256 is
        // checked); the forced command is a copy that reads the fixture root.
        let inspector = test.path().join("inspect");
        let copy = shipped_inspector().replacen("\nROOT=\n", &format!("\nROOT={}\n", root.display()), 1);
        assert_ne!(copy, shipped_inspector(), "the inspector has a `ROOT=` line");
        std::fs::write(&inspector, copy).unwrap();
        std::fs::set_permissions(&inspector, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(
            keys_dir.join(verify_account()),
            format!("restrict,command=\"{}\" {verify_key}\n", inspector.display()),
        )
        .unwrap();
        let host_key = keys.host_key(1).unwrap();
        Fixture {
            test,
            keys,
            root,
            keys_dir,
            inspector,
            host_key,
        }
    }

    /// sshd with Debian's defaults and respot's `60-respot.conf`, its
    /// paths moved into the fixture.
    fn sshd_debian(&self, name: &str, ports: &[u16]) -> Sshd {
        let dropin = sshd_dropin()
            .replace("/etc/respot/verify_keys", &self.keys_dir.display().to_string())
            .replace("/usr/lib/respot/inspect", &self.inspector.display().to_string());
        assert!(
            !dropin.contains("/etc/respot/") && !dropin.contains("/usr/lib/respot/"),
            "{dropin}"
        );
        Sshd::start_debian(&self.test.path().join(name), &self.host_key.0, &dropin, ports)
    }

    /// The plain sshd on a fresh port, its host key pinned, and the target
    /// `127.0.0.1:PORT` that reaches it.
    fn serve(&self) -> (Sshd, String) {
        let port = free_port();
        let sshd = self.sshd("sshd", &[port]);
        self.pin("127.0.0.1", port);
        (sshd, format!("127.0.0.1:{port}"))
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

    /// `verify --target TARGET --timeout SECS --output json`, and how long it took.
    fn verify_timed(&self, target: &str, secs: u32) -> (Output, Duration) {
        let started = Instant::now();
        let secs = secs.to_string();
        let out = self.run(&[
            "verify",
            "--target",
            target,
            "--timeout",
            &secs,
            "--output",
            "json",
        ]);
        (out, started.elapsed())
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

/// (check, result, detail) of every failed row of instance `instance`.
fn failed_rows(report: &serde_json::Value, instance: &str) -> Vec<(String, String, String)> {
    rows(report, instance)
        .into_iter()
        .filter(|(_, result, _)| result == "fail")
        .collect()
}

fn results(rows: &[(String, String, String)]) -> Vec<(&str, &str)> {
    rows.iter().map(|(c, r, _)| (c.as_str(), r.as_str())).collect()
}

#[test]
fn verify_passes_on_the_fixture_where_systemd_and_cloud_init_are_unavailable() {
    let fx = Fixture::new("pinned");
    let (_sshd, target) = fx.serve();

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

/// The hostile command strings, through the plain sshd and through
/// Debian's defaults (PAM session, the distribution's config, respot's
/// drop-in): each is refused and nothing changes.
#[test]
fn the_inspector_refuses_free_commands_and_changes_nothing() {
    let fx = Fixture::new("pinned");
    let tmp_x_existed = Path::new("/tmp/x").exists();
    let before = fx.snapshot();
    for debian in [false, true] {
        let port = free_port();
        let _sshd = if debian {
            fx.sshd_debian("sshd-debian", &[port])
        } else {
            fx.sshd("sshd", &[port])
        };
        fx.pin("127.0.0.1", port);
        let ssh = |command: &str| -> Output {
            let key = fx.keys.verify_key_path().unwrap();
            raw_ssh(&key, &fx.keys.known_hosts_path(), VERIFY_USER, port, command)
                .output()
                .expect("run ssh")
        };
        for command in HOSTILE_COMMANDS {
            let out = ssh(command);
            assert_eq!(
                out.status.code(),
                Some(64),
                "{command:?} must be refused (debian: {debian}): {}",
                explain(&out)
            );
            assert!(out.stdout.is_empty(), "{command:?}: {}", explain(&out));
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("refused"),
                "{command:?}: {}",
                explain(&out)
            );
        }
        // The same key can ask a real query, so the refusals above are not
        // an ssh failure in disguise.
        let out = ssh("manifest");
        assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("respot-inspect\t1\tmanifest\n"));
        let out = ssh("journal hello-health.service 5");
        assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
        assert!(String::from_utf8_lossy(&out.stdout).contains("status\tjournal\tunavailable"));
    }
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
    let (_sshd, target) = fx.serve();
    let changed = fx.root.join("opt/hello/reporter.sh");
    let mut content = std::fs::read(&changed).unwrap();
    content.extend_from_slice(b"# hotfix by hand\n");
    std::fs::write(&changed, content).unwrap();

    let out = fx.run(&["verify", "--target", &target, "--output", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", explain(&out));
    let report = json(&out);
    assert_eq!(report["passed"], false);
    let failed = failed_rows(&report, &target);
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
    let details: Vec<String> = failed_rows(&json(&out), &target)
        .into_iter()
        .map(|(_, _, d)| d)
        .collect();
    assert_eq!(details.len(), 2, "{details:?}");
    assert!(
        details.iter().any(|d| d == "`/opt/hello/health.py` is missing"),
        "{details:?}"
    );
}

/// Same content, another mode or owner: verification fails on exactly
/// that file, naming what the render says.
#[test]
fn a_changed_mode_or_owner_fails_on_exactly_that_file() {
    let fx = Fixture::new("pinned");
    let (_sshd, target) = fx.serve();
    let conf = fx.root.join("opt/hello/reporter.sh");
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = fx.run(&["verify", "--target", &target, "--output", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", explain(&out));
    let failed = failed_rows(&json(&out), &target);
    assert_eq!(
        failed,
        vec![(
            "files".to_string(),
            "fail".to_string(),
            "`/opt/hello/reporter.sh` is root:root 0777 on the instance, the render says root:root 0755"
                .to_string()
        )]
    );

    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o755)).unwrap();
    let nobody = fx.root.join("opt/hello/health.py");
    let status = Command::new("chown")
        .args(["nobody"])
        .arg(&nobody)
        .status()
        .unwrap();
    assert!(status.success(), "chown nobody");
    let out = fx.run(&["verify", "--target", &target, "--output", "json"]);
    let failed = failed_rows(&json(&out), &target);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(
        failed[0].2.starts_with(
            "`/opt/hello/health.py` is nobody:root 0644 on the instance, the render says root:root 0644"
        ),
        "{failed:?}"
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
    let out = fx.run(&["verify", "--target", &target, "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
    let reachable = &rows(&json(&out), &target)[0];
    assert!(
        reachable
            .2
            .ends_with("(first contact: host key recorded now, not checked)"),
        "{reachable:?}"
    );
    let known = std::fs::read_to_string(fx.keys.known_hosts_path()).unwrap();
    assert_eq!(
        known.trim(),
        format!(
            "[127.0.0.1]:{port} {}",
            fx.host_key
                .1
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        ),
        "the first contact recorded the host key"
    );
    let out = fx.run(&["verify", "--target", &target, "--output", "json"]);
    let reachable = &rows(&json(&out), &target)[0];
    assert!(
        reachable.2.ends_with("(host key as recorded on first contact)"),
        "{reachable:?}"
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
    let (out, elapsed) = fx.verify_timed(&target, 2);
    assert_eq!(out.status.code(), Some(1), "{}", explain(&out));
    assert!(elapsed < Duration::from_secs(6), "took {elapsed:?}");
    let rows = rows(&json(&out), &target);
    assert_eq!(results(&rows), vec![("reachable", "fail")]);
    assert!(rows[0].2.contains("did not become reachable"), "{rows:?}");
    assert!(rows[0].2.contains("Connection refused"), "{rows:?}");
}

#[test]
fn a_hung_inspector_fails_the_check_within_the_timeout() {
    let fx = Fixture::new("pinned");
    // A forced command that never answers, but dies of SIGPIPE within a
    // second once respot gives up on the channel: no process outlives it.
    let verify_key = fx.keys.verify_public_key().unwrap();
    std::fs::write(
        fx.keys_dir.join(verify_account()),
        format!("restrict,command=\"/bin/sh -c 'while printf x; do sleep 1; done'\" {verify_key}\n"),
    )
    .unwrap();
    let port = free_port();
    let _sshd = fx.sshd("sshd", &[port]);
    fx.pin("127.0.0.1", port);
    let target = format!("127.0.0.1:{port}");
    let (out, elapsed) = fx.verify_timed(&target, 3);
    assert_eq!(out.status.code(), Some(1), "{}", explain(&out));
    // One `check` query (everything verify asks, one inspector run): 3 s.
    assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}");
    let rows = rows(&json(&out), &target);
    assert_eq!(rows[0].0, "reachable", "{rows:?}");
    assert_eq!(rows[0].1, "pass", "{rows:?}");
    let inspector = rows
        .iter()
        .find(|r| r.0 == "inspector")
        .expect("an inspector row");
    assert_eq!(inspector.1, "fail", "{rows:?}");
    assert!(
        inspector
            .2
            .contains("`check` failed over ssh: no answer within 3 s"),
        "{rows:?}"
    );
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

/// A login user with a home of its own, shell bash: the kind of account
/// whose dotfiles took over verification when respot logged in as
/// `ssh.user`. Made once on this machine (password `*`, none).
fn hostile_login_user() -> String {
    static USER: OnceLock<String> = OnceLock::new();
    USER.get_or_init(|| {
        let home = ["--create-home", "--home-dir", "/var/lib/respot-fx-login"];
        system_user(
            "respot-fx-login",
            &[&home[..], &["--shell", "/bin/bash"]].concat(),
        )
    })
    .clone()
}

/// `user`'s home, from the account database.
fn home_of(user: &str) -> PathBuf {
    let out = Command::new("getent")
        .args(["passwd", user])
        .output()
        .expect("getent");
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    PathBuf::from(
        line.split(':')
            .nth(5)
            .unwrap_or_else(|| panic!("no home for {user}: {line:?}")),
    )
}

/// Dotfiles planted in a home for one test, removed when it ends.
struct Planted(Vec<PathBuf>);

impl Planted {
    fn new(home: &Path, owner: &str, files: &[(&str, String)]) -> Planted {
        let mut planted = Planted(Vec::new());
        for (name, content) in files {
            let path = home.join(name);
            std::fs::write(&path, content).unwrap();
            let status = Command::new("chown").arg(owner).arg(&path).status().unwrap();
            assert!(status.success());
            planted.0.push(path);
        }
        planted
    }
}

impl Drop for Planted {
    fn drop(&mut self) {
        for path in &self.0 {
            // Best effort: a leftover dotfile of the fixture's own user.
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The review's attack, under Debian's defaults (PAM session with
/// `user_readenv`, the distribution's sshd_config): hostile `~/.bashrc`,
/// `~/.profile`, `~/.pam_environment` and `~/.curlrc` in the login user's
/// home change nothing `verify` reports, and nothing is written, because
/// respot logs in as `respot-verify`, whose home it cannot write. A control
/// at the end shows the same files do take over a login as that user.
#[test]
fn hostile_dotfiles_of_the_login_user_change_nothing_under_debian_defaults() {
    let login = hostile_login_user();
    let fx = Fixture::for_login("pinned", &login);
    let port = free_port();
    let _sshd = fx.sshd_debian("sshd-debian", &[port]);
    fx.pin("127.0.0.1", port);
    let target = format!("127.0.0.1:{port}");
    let verify = || {
        let out = fx.run(&["verify", "--target", &target, "--output", "json"]);
        assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
        rows(&json(&out), &target)
    };
    let clean = verify();
    assert!(
        clean[0]
            .2
            .starts_with(&format!("ssh {VERIFY_USER}@127.0.0.1:{port} (host key pinned)")),
        "{clean:?}"
    );
    assert_verify_account_cannot_write_its_home(&fx, &target);

    let markers = fx.test.path().join("markers");
    std::fs::create_dir_all(&markers).unwrap();
    std::fs::set_permissions(&markers, std::fs::Permissions::from_mode(0o777)).unwrap();
    let _planted = plant_hostile_dotfiles(&login, &markers);
    let before = fx.snapshot();
    assert_eq!(verify(), clean, "the planted files changed what verify reports");
    assert!(fx.snapshot() == before, "the fixture root changed");
    let written: Vec<_> = std::fs::read_dir(&markers)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(written.is_empty(), "the planted files ran: {written:?}");

    // Control: the same key as the login user, as respot used to log in.
    // The planted files take that login over, so they were live above.
    let verify_key = fx.keys.verify_public_key().unwrap();
    std::fs::write(
        fx.keys_dir.join(&login),
        format!("restrict,command=\"{}\" {verify_key}\n", fx.inspector.display()),
    )
    .unwrap();
    let key = fx.keys.verify_key_path().unwrap();
    let out = raw_ssh(&key, &fx.keys.known_hosts_path(), &login, port, "manifest")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("hijacked"),
        "the control was not taken over, so the test proves nothing: {}",
        explain(&out)
    );
    assert!(markers.join("bashrc").exists());
}

/// respot-verify cannot write its own home: root owns it, no one else may
/// write it, and a write as the account fails; the inspector says so too.
fn assert_verify_account_cannot_write_its_home(fx: &Fixture, target: &str) {
    let home = home_of(VERIFY_USER);
    let meta = std::fs::metadata(&home).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&meta),
        0,
        "{} is root's",
        home.display()
    );
    assert_eq!(
        meta.permissions().mode() & 0o022,
        0,
        "{} is writable by others",
        home.display()
    );
    for name in [".bashrc", ".profile", ".pam_environment", ".curlrc"] {
        let out = Command::new("runuser")
            .args(["-u", VERIFY_USER, "--", "touch"])
            .arg(home.join(name))
            .output()
            .unwrap();
        assert!(!out.status.success(), "{VERIFY_USER} wrote {name} in its home");
    }
    let facts = json(&fx.run(&["debug", target, "--section", "facts", "--output", "json"]));
    assert_eq!(facts["facts"]["inspector_user"], VERIFY_USER, "{facts}");
    assert_eq!(facts["facts"]["inspector_home_writable"], "no", "{facts}");
}

/// The review's files, in `login`'s home: each leaves a file in `markers`
/// when it runs, and answers for the inspector if it can.
fn plant_hostile_dotfiles(login: &str, markers: &Path) -> Planted {
    let m = markers.display();
    let fake = "printf 'respot-inspect\\t1\\tmanifest\\nend\\tok\\n'; exit 0";
    Planted::new(
        &home_of(login),
        login,
        &[
            (
                ".bashrc",
                format!("/usr/bin/touch {m}/bashrc\necho hijacked\n{fake}\n"),
            ),
            (
                ".profile",
                format!("/usr/bin/touch {m}/profile\necho hijacked\n{fake}\n"),
            ),
            (
                ".pam_environment",
                format!(
                    "RESPOT_INSPECT_ROOT DEFAULT={m}/fake-root\nBASH_ENV DEFAULT=@{{HOME}}/.bashrc\n\
                     http_proxy DEFAULT=http://127.0.0.1:9/\nCURL_HOME DEFAULT=@{{HOME}}\n"
                ),
            ),
            (
                ".curlrc",
                format!("output = \"{m}/curlrc\"\nwrite-out = \"hijacked\"\n"),
            ),
        ],
    )
}

/// Under Debian's defaults with respot's drop-in, the verification key gets
/// no terminal, no forwarding and no tunnel.
#[test]
fn the_verification_login_gets_no_tty_forwarding_or_tunnel() {
    let fx = Fixture::new("pinned");
    let port = free_port();
    let _sshd = fx.sshd_debian("sshd-debian", &[port]);
    fx.pin("127.0.0.1", port);
    let key = fx.keys.verify_key_path().unwrap();
    assert_no_tty_forwarding_or_tunnel(&key, &fx.keys.known_hosts_path(), VERIFY_USER, port, port);
}

/// An instance that checks no files and runs no probes fails: respot holds
/// its lists to its own render.
#[test]
fn an_instance_that_checks_nothing_fails() {
    let fx = Fixture::new("pinned");
    let (_sshd, target) = fx.serve();
    std::fs::write(fx.root.join("etc/respot/manifest.sha256"), "").unwrap();
    std::fs::write(fx.root.join("etc/respot/probes"), "").unwrap();
    let out = fx.run(&["verify", "--target", &target, "--output", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", explain(&out));
    let failed = failed_rows(&json(&out), &target);
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert_eq!(failed[0].0, "files");
    assert!(
        failed[0]
            .2
            .starts_with("the instance checked no files; the render ships "),
        "{failed:?}"
    );
    assert_eq!(failed[1].0, "health");
    assert_eq!(
        failed[1].2,
        "the instance ran no health probes; the render has 1 probe"
    );
}

/// The launch part's account script, run as cloud-init would (twice, as on
/// a reboot, and once more over an account someone changed) in a private
/// mount namespace with a copy of /etc and an empty /var/lib, so this
/// machine's accounts are untouched. It makes `respot-verify-t`: the
/// fixture's `respot-verify` may be in the copy, with sshd sessions of the
/// other tests running as it, and usermod refuses to change a user in use.
#[test]
fn the_verification_account_bootcmd_locks_the_account_and_owns_its_home() {
    let launch = respot::template::LaunchMaterial::default();
    let sample = Test::sample();
    let config = Config::load(&sample.path().join("respot.toml")).expect("load config");
    let part = Blueprint::render(&config).unwrap().launch_section(&launch);
    let line = part
        .lines()
        .find(|l| l.contains("useradd"))
        .unwrap_or_else(|| panic!("no account bootcmd in:\n{part}"));
    let (script, args) = line
        .strip_prefix("  - [sh, -c, '")
        .and_then(|rest| rest.rsplit_once("', respot, "))
        .unwrap_or_else(|| panic!("unexpected bootcmd line: {line}"));
    assert_eq!(args, format!("{VERIFY_USER}, {VERIFY_HOME}]"));

    let (user, home) = ("respot-verify-t", VERIFY_HOME);
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    let copied = Command::new("cp")
        .arg("-a")
        .arg("/etc/.")
        .arg(&etc)
        .status()
        .unwrap();
    assert!(copied.success(), "copy /etc");
    let report = format!(
        "getent passwd {user}; getent shadow {user} | cut -d: -f2; id -Gn {user}; stat -c '%U:%G %a' {home}"
    );
    let driver = format!(
        "set -e; mount --bind \"$ETC\" /etc; mount -t tmpfs tmpfs /var/lib; \
         run() {{ sh -c \"$SCRIPT\" respot {user} {home}; }}; \
         run; run; {report}; echo ---; \
         usermod -s /bin/bash -p secret -G users {user}; chown nobody {home}; chmod 0777 {home}; \
         run; {report}; echo ---; \
         userdel {user}; groupdel systemd-journal; run; {report}"
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &driver])
        .env("ETC", &etc)
        .env("SCRIPT", script)
        .output()
        .expect("run unshare");
    assert!(out.status.success(), "{}", explain(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let runs: Vec<Vec<&str>> = stdout.split("---\n").map(|r| r.lines().collect()).collect();
    assert_eq!(runs.len(), 3, "{stdout}");
    for (i, run) in runs.iter().enumerate().take(2) {
        assert_eq!(run.len(), 4, "run {i}: {stdout}");
        assert!(run[0].starts_with(&format!("{user}:x:")), "run {i}: {stdout}");
        assert!(run[0].ends_with(&format!(":{home}:/bin/sh")), "run {i}: {stdout}");
        assert_eq!(
            &run[1..],
            ["!", &format!("{user} adm systemd-journal"), "root:root 755"],
            "run {i}: {stdout}"
        );
    }
    // Without systemd-journal, the account gets adm alone: the script
    // creates no group.
    assert_eq!(runs[2][2], format!("{user} adm"), "{stdout}");
    assert_eq!(runs[2][3], "root:root 755", "{stdout}");
}

/// The fixture's respot.toml with `[verify] concurrency = N`.
fn set_concurrency(fx: &Fixture, concurrency: usize) {
    let path = fx.test.path().join("respot.toml");
    let toml = std::fs::read_to_string(&path).expect("read respot.toml");
    let toml = toml.replacen(
        "[verify]\n",
        &format!("[verify]\nconcurrency = {concurrency}\n"),
        1,
    );
    std::fs::write(&path, toml).expect("write respot.toml");
}

#[test]
fn a_target_queued_behind_an_unreachable_one_gets_its_own_timeout() {
    let fx = Fixture::new("pinned");
    set_concurrency(&fx, 1);
    let (_sshd, good) = fx.serve();
    // Nothing listens here: it fails after its own timeout.
    let dead_port = free_port();
    fx.pin("127.0.0.1", dead_port);
    let dead = format!("127.0.0.1:{dead_port}");
    let started = Instant::now();
    let out = fx.run(&[
        "verify",
        "--target",
        &dead,
        "--target",
        &good,
        "--timeout",
        "4",
        "--output",
        "json",
    ]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", explain(&out));
    let report = json(&out);
    assert!(
        failed_rows(&report, &dead)
            .iter()
            .any(|(check, _, _)| check == "reachable"),
        "{}",
        explain(&out)
    );
    // One at a time, the good target starts when the dead one gave up, and
    // still gets its own 4 s: it passes.
    assert!(failed_rows(&report, &good).is_empty(), "{}", explain(&out));
    assert!(took < Duration::from_secs(20), "took {took:?}");
}

/// A helper process, stopped by its PID when the test ends, pass or fail.
struct StopOnDrop(std::process::Child);

/// The machine's (busy, total) CPU ticks so far, every core, from
/// `/proc/stat` (idle and iowait are not busy).
fn machine_ticks() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    let total: f64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3).copied().unwrap_or(0.0) + ticks.get(4).copied().unwrap_or(0.0);
    (total - idle, total)
}

/// CPU seconds (user + system) of `pid` and of the children it has reaped.
fn cpu_secs(pid: u32) -> f64 {
    cpu_secs_of(pid, 11..=14)
}

/// The CPU seconds in `fields` of `/proc/<pid>/stat`, counted after the
/// command's closing parenthesis (11, 12: its own user and system time).
fn cpu_secs_of(pid: u32, range: std::ops::RangeInclusive<usize>) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis: state is field 3, so
    // utime, stime, cutime and cstime (14 to 17) are at 11 to 14 here.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks: f64 = range
        .filter_map(|i| fields.get(i).and_then(|f| f.parse::<f64>().ok()))
        .sum();
    // SAFETY: sysconf reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / hz
}

/// Waits for the child `pid` (not through `std::process::Child`, which
/// cannot report resource use): whether it exited 0, and the CPU seconds
/// it and the children it reaped (its ssh clients) used.
fn wait_with_cpu(pid: u32) -> (bool, f64) {
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid out-parameter for wait4.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child, by its pid.
    let got = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(got, pid as libc::pid_t, "wait4 respot");
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    (ok, secs(usage.ru_utime) + secs(usage.ru_stime))
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        crate::support::stop_child(&mut self.0, Duration::from_secs(2));
    }
}

/// Peak open descriptors of `pid` and peak ssh processes under it, sampled
/// until `done`, and the CPU seconds `pid` itself had used at the last
/// sample (without its children).
fn watch_descriptors(pid: u32, done: &std::sync::atomic::AtomicBool) -> (usize, usize, f64) {
    let (mut fds, mut ssh, mut own_cpu) = (0, 0, 0.0);
    while !done.load(std::sync::atomic::Ordering::Relaxed) {
        let own = cpu_secs_of(pid, 11..=12);
        if own > 0.0 {
            own_cpu = own;
        }
        if let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
            fds = fds.max(entries.count());
        }
        let children = std::fs::read_dir("/proc")
            .map(|d| {
                d.flatten()
                    .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
                    .filter(|stat| {
                        let after = stat.rsplit_once(") ").map(|(_, rest)| rest).unwrap_or("");
                        stat.contains("(ssh)") && after.split(' ').nth(1) == Some(&pid.to_string())
                    })
                    .count()
            })
            .unwrap_or(0);
        ssh = ssh.max(children);
        std::thread::sleep(Duration::from_millis(100));
    }
    (fds, ssh, own_cpu)
}

/// The benchmark behind `scripts/bench-verify` (BENCHMARKS.md): `verify
/// --target` of RESPOT_BENCH_TARGETS (1,000) endpoints, one sshd reached
/// through as many loopback addresses behind a proxy adding
/// RESPOT_BENCH_DELAY_MS (50) each way, at RESPOT_BENCH_CONCURRENCY (the
/// default). Reports the time and the peak descriptors.
#[test]
#[ignore = "a benchmark: scripts/bench-verify runs it"]
fn bench_verify_targets_through_latency() {
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let count = env("RESPOT_BENCH_TARGETS", 1000);
    let delay = env("RESPOT_BENCH_DELAY_MS", 50);
    let concurrency = env(
        "RESPOT_BENCH_CONCURRENCY",
        respot::config::DEFAULT_VERIFY_CONCURRENCY,
    );
    let fx = Fixture::new("pinned");
    set_concurrency(&fx, concurrency);
    let upstream = free_port();
    let sshd = Sshd::start_with_limits(
        &fx.test.path().join("sshd"),
        &fx.host_key.0,
        &fx.keys_dir,
        &[upstream],
        "2000",
    );
    let port = free_port();
    let ready = fx.test.path().join("proxy.ready");
    let proxy = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/latency_proxy.py"
        ))
        .args([
            "--upstream-port",
            &upstream.to_string(),
            "--port",
            &port.to_string(),
        ])
        .args(["--count", &count.to_string(), "--delay-ms", &delay.to_string()])
        .arg("--ready-file")
        .arg(&ready)
        .spawn()
        .expect("start the latency proxy");
    let proxy = StopOnDrop(proxy);
    let cpu_before = (cpu_secs(sshd.pid()), cpu_secs(proxy.0.id()));
    let machine_before = machine_ticks();
    let waited = Instant::now();
    while !ready.exists() {
        assert!(
            waited.elapsed() < Duration::from_secs(60),
            "the proxy did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut args = vec!["verify".to_string(), "--output".into(), "json".into()];
    args.extend(["--timeout".to_string(), "120".to_string()]);
    for i in 0..count {
        let host = std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(127, 0, 0, 2)) + i as u32);
        fx.pin(&host.to_string(), port);
        args.push("--target".into());
        args.push(format!("{host}:{port}"));
    }
    let started = Instant::now();
    // Reaped by `wait_with_cpu` (wait4), which also reports its CPU time.
    #[allow(clippy::zombie_processes)]
    let mut child = fx
        .test
        .context()
        .std_command()
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run respot");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        stdout.read_to_end(&mut text).map(|_| text)
    });
    let err_reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        stderr.read_to_end(&mut text).map(|_| text)
    });
    let done = std::sync::atomic::AtomicBool::new(false);
    let pid = child.id();
    let ((success, client_cpu), (fds, ssh, respot_cpu)) = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| watch_descriptors(pid, &done));
        let waited = wait_with_cpu(pid);
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (waited, watcher.join().expect("the watcher"))
    });
    let machine = machine_ticks();
    let busy = (machine.0 - machine_before.0) / (machine.1 - machine_before.1).max(1.0);
    let server_cpu = cpu_secs(sshd.pid()) - cpu_before.0;
    let proxy_cpu = cpu_secs(proxy.0.id()) - cpu_before.1;
    let took = started.elapsed();
    let stdout = out_reader.join().expect("reader").expect("read stdout");
    let stderr = err_reader.join().expect("reader").expect("read stderr");
    let report: serde_json::Value = serde_json::from_slice(&stdout).unwrap_or_else(|e| {
        panic!("not JSON ({e}): {}", String::from_utf8_lossy(&stderr));
    });
    let failed = report["failed_instances"].as_array().map_or(0, Vec::len);
    eprintln!(
        "BENCH verify targets={count} delay_ms={delay} concurrency={concurrency} seconds={:.1} \
         failed={failed} peak_fds={fds} peak_ssh_processes={ssh}",
        took.as_secs_f64()
    );
    // Where the machine's CPU went: respot and its ssh clients (the part a
    // real fleet's operator runs), the sshd fixture with every session and
    // inspector run (on the instances in a real fleet), the latency proxy.
    let per_target = |secs: f64| secs * 1000.0 / count as f64;
    eprintln!(
        "BENCH verify cpu client_s={client_cpu:.1} ({:.1} ms/target; respot itself {:.1}) \
         server_s={server_cpu:.1} ({:.1} ms/target) proxy_s={proxy_cpu:.1} ({:.1} ms/target)",
        per_target(client_cpu),
        per_target(respot_cpu),
        per_target(server_cpu),
        per_target(proxy_cpu)
    );
    // The per-process figures miss what was not reaped yet (ssh masters
    // fork away from respot; sshd sessions end after respot does): the
    // whole machine's busy share says whether the run was CPU-bound.
    eprintln!(
        "BENCH verify machine busy={:.0}% of {} cores during the run",
        busy * 100.0,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    assert!(
        success && failed == 0,
        "{failed} failed:\n{}",
        String::from_utf8_lossy(&stderr)
    );
}
