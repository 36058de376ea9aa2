//! moto (an EC2 emulator) and the fault proxy, for the AWS tests.
//!
//! A few moto servers serve the whole test process: one takes seconds to
//! start and its regions are isolated from each other, so every test takes
//! its own regions from [`regions`] (on the first server that has them
//! left) instead of resetting shared state. Each test gets
//! its own [`Proxy`] (fast to start) in front of moto, so fault rules and
//! request counts never leak between tests. Both listen on 127.0.0.1 only.
//!
//! moto is spawned from a thread that lives as long as the process, with
//! `PR_SET_PDEATHSIG`, so it dies with the test process even though a
//! `static` is never dropped. The proxy is a per-test guard stopped in `Drop`.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Regions moto serves with a default VPC and Amazon Linux 2023 images.
/// Tests draw disjoint sets from it. Each of the first [`SHARD_REGIONS`]
/// has three zones or more in moto and offers both t3.small and t3a.small,
/// so a test's pools do not depend on which regions it drew.
const REGION_POOL: &[&str] = &[
    "us-east-1",
    "eu-west-1",
    "ap-southeast-2",
    "us-east-2",
    "sa-east-1",
    "us-west-2",
    "eu-west-2",
    "eu-west-3",
    "eu-central-1",
    "eu-south-1",
    "ap-southeast-1",
    "ap-northeast-1",
    "ap-northeast-2",
    "il-central-1",
    "ap-south-1",
    "ca-central-1",
    // Not among the first SHARD_REGIONS: us-west-1 has two zones, and
    // eu-north-1, ap-northeast-3 and the opt-in regions offer no t3a.
    "eu-north-1",
    "ap-northeast-3",
    "us-west-1",
    "af-south-1",
    "me-south-1",
    "ap-east-1",
    "eu-central-2",
    "eu-south-2",
    "ap-south-2",
    "ap-southeast-3",
    "ca-west-1",
    // moto offers not 3 types here: last.
    "me-central-1",
];

/// How many of [`REGION_POOL`]'s regions one moto server hands out: the
/// first ones, where moto offers every instance type the tests launch.
const SHARD_REGIONS: usize = 16;

/// moto servers this process may start, each with its own copy of the
/// first [`SHARD_REGIONS`] regions: once one server's regions are taken,
/// the next test gets a fresh server instead of sharing state.
const MAX_SHARDS: usize = 6;

static SHARDS: [OnceLock<String>; MAX_SHARDS] = [const { OnceLock::new() }; MAX_SHARDS];

/// (server, next free region on it).
static ALLOCATED: std::sync::Mutex<(usize, usize)> = std::sync::Mutex::new((0, 0));

thread_local! {
    /// The server this test thread's regions live on (tests run one per
    /// thread): [`moto_url`] answers it.
    static SHARD: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// `n` regions no other test in this process uses, on the moto server that
/// [`moto_url`] then answers for this thread.
pub fn regions(n: usize) -> Vec<String> {
    assert!(
        n <= SHARD_REGIONS,
        "a test may take at most {SHARD_REGIONS} regions"
    );
    let (shard, start) = {
        let mut allocated = ALLOCATED.lock().unwrap_or_else(|p| p.into_inner());
        if allocated.1 + n > SHARD_REGIONS {
            *allocated = (allocated.0 + 1, 0);
        }
        let taken = *allocated;
        allocated.1 += n;
        taken
    };
    assert!(
        shard < MAX_SHARDS,
        "the tests need more than {MAX_SHARDS} moto servers; raise MAX_SHARDS"
    );
    SHARD.with(|s| s.set(shard));
    REGION_POOL[start..start + n]
        .iter()
        .map(|r| r.to_string())
        .collect()
}

/// The `moto_server` executable: `RESPOT_MOTO_SERVER`, else the venv that
/// `scripts/setup` creates.
pub fn moto_server_path() -> PathBuf {
    if let Some(path) = std::env::var_os("RESPOT_MOTO_SERVER") {
        return PathBuf::from(path);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .expect("HOME or XDG_CACHE_HOME is set");
    cache.join("respot/venv/bin/moto_server")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a free loopback port")
}

/// Kills the child when the thread that spawned it ends (see module docs).
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
}

/// The moto server of this test thread's regions (see [`regions`]); its
/// `http://127.0.0.1:PORT`.
pub fn moto_url() -> &'static str {
    SHARDS[SHARD.with(|s| s.get())].get_or_init(spawn_moto)
}

/// A second moto server, for the tests of EC2's limits: their fleets (up to
/// 250 instances per region) would crowd the shared one, and its regions
/// come from their own pool ([`limits_regions`]).
pub fn limits_moto_url() -> &'static str {
    static MOTO: OnceLock<String> = OnceLock::new();
    MOTO.get_or_init(spawn_moto)
}

static NEXT_LIMITS_REGION: AtomicUsize = AtomicUsize::new(0);

/// `n` regions of [`limits_moto_url`] no other test uses.
pub fn limits_regions(n: usize) -> Vec<String> {
    let start = NEXT_LIMITS_REGION.fetch_add(n, Ordering::SeqCst);
    assert!(
        start + n <= REGION_POOL.len(),
        "the limits tests need more regions than REGION_POOL has; add some"
    );
    REGION_POOL[start..start + n]
        .iter()
        .map(|r| r.to_string())
        .collect()
}

/// Starts a moto server that lives as long as the process; its URL.
fn spawn_moto() -> String {
    let server = moto_server_path();
    assert!(
        server.is_file(),
        "moto_server not found at `{}`; run `scripts/setup` or set RESPOT_MOTO_SERVER",
        server.display()
    );
    let port = free_port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut cmd = Command::new(&server);
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("MOTO_ENABLE_AMI_VALIDATION", "1")
            .env("MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        die_with_parent(&mut cmd);
        let child = cmd.spawn();
        let started = child.is_ok();
        tx.send(child.map(|c| c.id()).map_err(|e| e.to_string()))
            .expect("the test thread waits for moto");
        if started {
            // This thread must outlive every test: its end kills moto.
            loop {
                std::thread::park();
            }
        }
    });
    let pid = rx.recv().expect("moto spawner answers");
    pid.unwrap_or_else(|e| panic!("cannot start `{}`: {e}", moto_server_path().display()));
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while http(port, "GET", "/moto-api/data.json", None).is_err() {
        assert!(
            Instant::now() < deadline,
            "moto did not answer on port {port} within 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    url
}

/// A minimal HTTP/1.0 client for the control APIs; returns (status, body).
pub fn http(port: u16, method: &str, path: &str, body: Option<&str>) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// The fault proxy in front of the shared moto, stopped on drop.
pub struct Proxy {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Proxy {
    pub fn start(latency_ms: u64) -> Proxy {
        Proxy::start_to(moto_url(), latency_ms)
    }

    /// A proxy in front of the moto at `upstream`.
    pub fn start_to(upstream: &str, latency_ms: u64) -> Proxy {
        let dir = tempfile::tempdir().expect("tempdir");
        let port_file = dir.path().join("proxy.port");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/fault_proxy.py");
        let mut cmd = Command::new("python3");
        cmd.arg(&script)
            .args(["--listen-port", "0", "--upstream", upstream])
            .arg("--port-file")
            .arg(&port_file)
            .args(["--latency-ms", &latency_ms.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        die_with_parent(&mut cmd);
        let child = cmd.spawn().expect("start tests/support/fault_proxy.py");
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            if let Some(port) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                break port;
            }
            assert!(
                Instant::now() < deadline,
                "the fault proxy did not start within 20 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Proxy {
            child,
            port,
            _dir: dir,
        }
    }

    /// What respot's `AWS_ENDPOINT_URL` is set to.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn control(&self, method: &str, path: &str, body: Option<&str>) -> serde_json::Value {
        let (status, body) = http(self.port, method, path, body).expect("reach the fault proxy");
        assert_eq!(status, 200, "proxy {method} {path}: {body}");
        serde_json::from_str(&body).expect("the proxy answers JSON")
    }

    /// Replaces the fault rules (see tests/support/README.md).
    pub fn faults(&self, rules: serde_json::Value) {
        self.control(
            "POST",
            "/__proxy/faults",
            Some(&serde_json::json!({ "rules": rules }).to_string()),
        );
    }

    /// Sets the EC2 behaviours moto lacks (`filter_limit`,
    /// `group_not_found_ms`, `describe_lag_ms`, `group_in_use`; see
    /// tests/support/fault_proxy.py). They survive [`Proxy::reset`].
    pub fn ec2(&self, settings: serde_json::Value) {
        self.control("POST", "/__proxy/ec2", Some(&settings.to_string()));
    }

    pub fn stats(&self) -> serde_json::Value {
        self.control("GET", "/__proxy/stats", None)
    }

    /// Clears counters, rules and the request log.
    pub fn reset(&self) {
        self.control("POST", "/__proxy/reset", None);
    }

    pub fn requests(&self) -> Vec<serde_json::Value> {
        self.control("GET", "/__proxy/requests", None)["requests"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Requests of `action`, as counted by the proxy.
    pub fn calls(&self, action: &str) -> u64 {
        self.stats()["by_action"][action].as_u64().unwrap_or(0)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        super::stop_child(&mut self.child, Duration::from_secs(5));
    }
}
