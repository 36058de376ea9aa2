//! The real inspector (`src/guest/inspect.sh`, run by `sh`) on fixture roots.
//!
//! The shipped script reads fixed paths; these tests run a copy whose one
//! `ROOT=` line points into a temporary directory, which is the only way to
//! move it (the shipped script has no hook a session could use).

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use super::query::tests::every_query;
use super::query::{MAX_REPLY_BYTES, Query, Reply};

/// The inspector as it ships (comments and indentation gone).
fn inspector() -> String {
    crate::guest::INSPECTOR.shipped()
}

/// A fixture root with respot's state directory, and the inspector copy
/// that reads it.
struct Root {
    dir: tempfile::TempDir,
    script: PathBuf,
}

impl Root {
    fn new(units: &str) -> Root {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc/respot")).unwrap();
        std::fs::write(dir.path().join("etc/respot/units"), units).unwrap();
        let script = dir.path().join("inspect");
        let copy = inspector().replacen("\nROOT=\n", &format!("\nROOT={}\n", dir.path().display()), 1);
        assert_ne!(copy, inspector(), "the inspector has a `ROOT=` line to rewrite");
        std::fs::write(&script, copy).unwrap();
        Root { dir, script }
    }

    fn path(&self, relative: &str) -> PathBuf {
        let path = self.dir.path().join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        path
    }

    fn write(&self, relative: &str, content: &str) {
        std::fs::write(self.path(relative), content).unwrap();
    }

    /// The inspector as sshd runs it: the query in SSH_ORIGINAL_COMMAND.
    fn ask(&self, query: &str) -> Output {
        Command::new("sh")
            .arg(&self.script)
            .env("SSH_ORIGINAL_COMMAND", query)
            .output()
            .unwrap()
    }

    fn stdout(&self, query: &str) -> String {
        let out = self.ask(query);
        assert!(
            out.status.success(),
            "{query}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

/// None may be refused, and each answer parses.
#[test]
fn the_inspector_answers_every_query() {
    let root = Root::new("hello-health.service\n");
    root.write("etc/respot/manifest.json", "{}\n");
    for q in every_query() {
        let out = root.ask(&q.argv().join(" "));
        assert!(
            out.status.success(),
            "{q}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        Reply::parse(&q, &out.stdout).unwrap_or_else(|e| panic!("{q}: {e}"));
    }
}

#[test]
fn the_inspector_refuses_everything_else() {
    let root = Root::new("a.service\n");
    let cases = [
        "",
        "touch /tmp/x",
        "manifest; rm -rf /",
        "journal ../../etc/shadow 5",
        "$(id)",
        "`id`",
        "units extra",
        "units ",
        " units",
        "units  units",
        "journal a.service",
        "journal a.service 501",
        "journal a.service 0",
        "journal a.service 010",
        "journal a.service 5 6",
        "journal b.service 5",
        "journal -a.service 5",
        "facts\nid",
        "sh",
        "MANIFEST",
    ];
    for case in cases {
        let out = root.ask(case);
        assert_eq!(out.status.code(), Some(64), "{case:?} must be refused");
        assert!(out.stdout.is_empty(), "{case:?} printed {:?}", out.stdout);
        assert!(
            String::from_utf8_lossy(&out.stderr).starts_with("refused\t"),
            "{case:?}"
        );
    }
    // Arguments are not a way in either: the query only comes from
    // SSH_ORIGINAL_COMMAND (the forced command has none).
    let out = Command::new("sh")
        .arg(&root.script)
        .args(["--query", "facts", "extra"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn the_inspector_and_the_client_share_one_cap() {
    let inspector = inspector();
    let line = inspector
        .lines()
        .find_map(|l| l.strip_prefix("MAX_REPLY="))
        .expect("the inspector defines MAX_REPLY=");
    assert_eq!(line.parse::<usize>().unwrap(), MAX_REPLY_BYTES);
}

/// A deployment log far over the cap: the inspector stops at the cap and
/// says so, and the client refuses the answer, naming the query.
#[test]
fn the_inspector_stops_at_the_cap_and_says_so() {
    let root = Root::new("");
    let line = format!("{}\n", "x".repeat(3000));
    root.write("var/log/respot/deploy.log", &line.repeat(500));
    let out = root.ask("log");
    assert!(out.status.success());
    assert!(out.stdout.len() <= MAX_REPLY_BYTES, "{} bytes", out.stdout.len());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("respot-inspect\t1\tlog\n"));
    assert!(
        text.ends_with("\ntruncated\t1048576\n"),
        "{}",
        &text[text.len() - 40..]
    );
    let err = Reply::parse(&Query::Log, &out.stdout).unwrap_err().to_string();
    assert!(err.starts_with("`log`: unexpected answer"), "{err}");
    assert!(err.contains("cut its reply at its cap"), "{err}");

    // One endless line: awk never sees more than the cap.
    root.write("var/log/respot/deploy.log", &"y".repeat(3 * MAX_REPLY_BYTES));
    let out = root.ask("log");
    assert!(out.stdout.len() <= MAX_REPLY_BYTES);
    assert!(String::from_utf8_lossy(&out.stdout).ends_with("\ntruncated\t1048576\n"));

    // Under the cap, nothing changes.
    root.write("var/log/respot/deploy.log", &line.repeat(10));
    Reply::parse(&Query::Log, &root.ask("log").stdout).expect("a small log parses");
}

/// `manifest` hashes regular files only: symlinks are not followed, and
/// special files are named, not read (a FIFO would block it).
#[test]
fn the_manifest_follows_no_symlink_and_reads_no_special_file() {
    let root = Root::new("");
    root.write("etc/respot/manifest.json", "{}\n");
    root.write("opt/plain", "hello\n");
    root.write("opt/target", "hello\n");
    std::os::unix::fs::symlink(root.path("opt/target"), root.path("opt/link")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", root.path("opt/zero")).unwrap();
    let fifo = std::ffi::CString::new(root.path("opt/fifo").into_os_string().into_encoded_bytes()).unwrap();
    // SAFETY: mkfifo(3) on a NUL-terminated path in our temp dir.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    std::fs::create_dir_all(root.path("opt/dir")).unwrap();
    let paths = [
        "/opt/plain",
        "/opt/link",
        "/opt/zero",
        "/opt/fifo",
        "/opt/dir",
        "/opt/gone",
    ];
    let sums: String = paths
        .iter()
        .map(|p| format!("{}  {p}\n", "0".repeat(64)))
        .collect();
    root.write("etc/respot/manifest.sha256", &sums);
    let reply = Reply::parse(&Query::Manifest, root.stdout("manifest").as_bytes()).unwrap();
    let live: Vec<(String, String)> = reply
        .files()
        .into_iter()
        .map(|(path, _, live)| (path, live))
        .collect();
    let hello = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";
    let want: Vec<(String, String)> = [
        ("/opt/plain", hello),
        ("/opt/link", "symlink"),
        ("/opt/zero", "symlink"),
        ("/opt/fifo", "special"),
        ("/opt/dir", "special"),
        ("/opt/gone", "missing"),
    ]
    .iter()
    .map(|(p, l)| (p.to_string(), l.to_string()))
    .collect();
    assert_eq!(live, want);
}

/// While status.json exists without result.json and lists no error,
/// cloud-init is "running", answered without asking cloud-init (no `exit`
/// record, which only `cloud-init status` gives).
#[test]
fn cloud_init_running_is_answered_from_its_status_files() {
    let root = Root::new("");
    let status = |errors: &str| {
        format!(
            "{{\n \"v1\": {{\n  \"init\": {{\n   \"errors\": {errors},\n   \"finished\": 2.0,\n   \"start\": 1.0\n  }},\n  \
             \"modules-final\": {{\n   \"errors\": [],\n   \"finished\": null,\n   \"start\": 3.0\n  }},\n  \"stage\": \"modules-final\"\n }}\n}}\n"
        )
    };
    root.write("run/cloud-init/status.json", &status("[]"));
    let reply = Reply::parse(&Query::CloudInit, root.stdout("cloud-init").as_bytes()).unwrap();
    assert_eq!(reply.status("cloud-init"), Some("running"));
    assert_eq!(reply.kv("exit"), None, "answered from the files alone");

    // An error listed, or a result written: cloud-init itself answers.
    root.write("run/cloud-init/status.json", &status("[\n    \"boom\"\n   ]"));
    let reply = Reply::parse(&Query::CloudInit, root.stdout("cloud-init").as_bytes()).unwrap();
    assert!(reply.kv("exit").is_some(), "cloud-init status ran");
    root.write("run/cloud-init/status.json", &status("[]"));
    root.write("run/cloud-init/result.json", "{\"v1\": {\"errors\": []}}\n");
    let reply = Reply::parse(&Query::CloudInit, root.stdout("cloud-init").as_bytes()).unwrap();
    assert!(reply.kv("exit").is_some(), "cloud-init status ran");
}

/// One port on 127.0.0.1 that redirects `/health` to `/elsewhere` (which
/// would answer 200), and the request lines it was sent.
fn redirecting_server() -> (u16, Arc<Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming().take(4).flatten() {
            let mut request = String::new();
            let _ = BufReader::new(&stream).read_line(&mut request);
            let request = request.trim().to_string();
            let answer: &[u8] = if request.starts_with("GET /health ") {
                b"HTTP/1.0 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n"
            } else {
                b"HTTP/1.0 200 OK\r\nContent-Length: 8\r\n\r\nfollowed"
            };
            log.lock().unwrap().push(request);
            let _ = (&stream).write_all(answer);
        }
    });
    (port, seen)
}

/// The probe reports the redirect itself and never makes the request it
/// asks for (it could point anywhere, the metadata service included).
#[test]
fn health_probes_follow_no_redirect() {
    let root = Root::new("");
    let (port, seen) = redirecting_server();
    root.write("etc/respot/probes", &format!("http {port} /health 200\n"));
    let reply = Reply::parse(&Query::Health, root.stdout("health").as_bytes()).unwrap();
    let probes = reply.probes();
    assert_eq!(probes.len(), 1);
    assert_eq!(probes[0].got, "302", "{probes:?}");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "curl made these requests: {seen:?}");
    assert!(seen[0].starts_with("GET /health "), "{seen:?}");
}

/// Only well-formed probe lines reach curl; the rest are skipped whole.
#[test]
fn malformed_probes_are_skipped() {
    let root = Root::new("");
    let (port, seen) = redirecting_server();
    root.write(
        "etc/respot/probes",
        &format!(
            "http {port} /health 200\nhttp {port} /a b 200\nhttp {port} /$(id) 200\nhttp x /h 200\n\
             https {port} /h 200\nhttp {port} h 200\nhttp {port} /h 2x\nhttp {port} /h 200 extra\n\
             http {port} /ok?x=1&y=%20 200\n"
        ),
    );
    let reply = Reply::parse(&Query::Health, root.stdout("health").as_bytes()).unwrap();
    let paths: Vec<String> = reply.probes().into_iter().map(|p| p.path).collect();
    assert_eq!(paths, ["/health", "/ok?x=1&y=%20"]);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let probes = reply.probes();
    assert_eq!(
        (probes[1].got.as_str(), probes[1].body.as_str()),
        ("200", "followed")
    );
}

#[test]
fn facts_say_who_runs_the_inspector() {
    let root = Root::new("");
    let reply = Reply::parse(&Query::Facts, root.stdout("facts").as_bytes()).unwrap();
    let me = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
    assert_eq!(reply.kv("inspector_user"), Some(me.trim()));
    assert!(reply.kv("inspector_home").is_some_and(|h| h.starts_with('/')));
}

/// `manifest` reports owner, group and mode with every file, and the
/// directories and secrets respot's lists name, a secret's content never.
#[test]
fn the_manifest_reports_owners_modes_directories_and_secrets() {
    use std::os::unix::fs::PermissionsExt;
    let root = Root::new("");
    root.write("etc/respot/manifest.json", "{}\n");
    root.write("opt/app/token.conf", "t\n");
    std::fs::set_permissions(
        root.path("opt/app/token.conf"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let sum = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    root.write(
        "etc/respot/manifest.sha256",
        &format!("{sum}  /opt/app/token.conf\n{sum}  /opt/app/gone\n"),
    );
    std::fs::create_dir_all(root.path("var/lib/app/x")).unwrap();
    std::fs::set_permissions(root.path("var/lib/app"), std::fs::Permissions::from_mode(0o2750)).unwrap();
    root.write(
        "etc/respot/directories",
        "/var/lib/app\n/var/lib/none\n/opt/app/token.conf\n",
    );
    root.write("etc/app/secret", "s3cret\n");
    root.write("etc/respot/secrets", "/etc/app/secret\n");
    let out = root.stdout("manifest");
    assert!(!out.contains("s3cret"), "a secret's content never leaves: {out}");
    let reply = Reply::parse(&Query::Manifest, out.as_bytes()).unwrap();
    let me = |flag: &str| {
        let out = Command::new("id").arg(flag).output().unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let (user, group) = (me("-un"), me("-gn"));
    let attrs: Vec<(String, String)> = reply
        .file_attributes()
        .into_iter()
        .map(|(path, a)| (path, format!("{} {} {}", a.owner, a.group, a.mode)))
        .collect();
    assert_eq!(
        attrs,
        vec![
            ("/opt/app/token.conf".to_string(), format!("{user} {group} 0600")),
            ("/opt/app/gone".to_string(), "- - -".to_string()),
        ]
    );
    let dirs: Vec<String> = reply
        .entries("dir")
        .into_iter()
        .map(|e| format!("{} {} {}", e.path, e.state, e.attributes.mode))
        .collect();
    assert_eq!(
        dirs,
        [
            "/var/lib/app present 2750",
            "/var/lib/none missing -",
            "/opt/app/token.conf special -"
        ]
    );
    let secrets = reply.entries("secret");
    assert_eq!(secrets.len(), 1);
    assert_eq!(
        (secrets[0].state.as_str(), secrets[0].attributes.owner.as_str()),
        ("present", user.as_str())
    );
}

/// `check` (what `verify` asks) is the answers of `cloud-init`, `units`,
/// `manifest` and `health` in one run, in that order, then the packages.
#[test]
fn check_answers_the_four_queries_in_one_run() {
    let root = Root::new("hello-health.service\n");
    let sum = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    root.write("etc/respot/manifest.json", "{\"digest\":\"d\"}\n");
    root.write("etc/respot/manifest.sha256", &format!("{sum}  /opt/app/a\n"));
    root.write("opt/app/a", "");
    root.write("etc/respot/probes", "http 1 /health 200\n");
    let body = |query: &str| {
        let out = root.stdout(query);
        let mut lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.pop(), Some("end\tok"), "{query}: {out}");
        lines[1..].iter().map(|l| format!("{l}\n")).collect::<String>()
    };
    let check = body("check");
    let parts: String = ["cloud-init", "units", "manifest", "health"].map(body).concat();
    assert!(check.starts_with(&parts), "check:\n{check}\nthe four:\n{parts}");
    let rest = &check[parts.len()..];
    assert!(rest.starts_with("status\tpackages\t"), "{rest}");
    let reply = Reply::parse(&Query::Check, root.stdout("check").as_bytes()).unwrap();
    assert_eq!(reply.files()[0].2, sum, "{check}");
    assert_eq!(reply.probes()[0].got, "none", "{check}");
    assert_eq!(reply.status("manifest"), Some("present"));
}

/// `check` reports the installed version of each listed package, or
/// `missing`, from dpkg (or rpm) on the host.
#[test]
fn the_inspector_reports_package_versions() {
    let have_dpkg = Command::new("dpkg-query").arg("--version").output().is_ok();
    if !have_dpkg {
        return;
    }
    let root = Root::new("");
    root.write("etc/respot/packages", "coreutils\nno-such-package-respot\n");
    let reply = Reply::parse(&Query::Check, root.stdout("check").as_bytes()).unwrap();
    let packages = reply.packages();
    assert_eq!(packages.len(), 2, "{packages:?}");
    assert_eq!(packages[0].0, "coreutils");
    assert!(
        packages[0].1.chars().next().is_some_and(|c| c.is_ascii_digit()),
        "{packages:?}"
    );
    assert_eq!(
        packages[1],
        ("no-such-package-respot".to_string(), "missing".to_string())
    );
}
