//! The local front door on real VMs (one per generation): a load generator
//! hits the door through a blue-green deploy that keeps the old generation,
//! an instant rollback to it, and a deploy whose health check fails during
//! the hold and is shifted back. It prints the shift and rollback latencies
//! and the failed-request counts that BENCHMARKS.md reports.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::support::Test;
use crate::support::vms::{SampleVms, kill_under};

/// The sample with one VM, a door on a free port and a short hold, on
/// `SampleVms` (whose drop destroys what is left and kills, by PID, any
/// qemu or haproxy whose command line names this test's state).
struct Door {
    vms: SampleVms,
    port: u16,
}

impl std::ops::Deref for Door {
    type Target = SampleVms;
    fn deref(&self) -> &SampleVms {
        &self.vms
    }
}

impl Door {
    fn new() -> Door {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let vms = SampleVms::new(
            1,
            &[
                ("port = 8000", format!("port = {port}")),
                ("hold_secs = 20", "hold_secs = 15".to_string()),
            ],
        );
        Door { vms, port }
    }

    fn digest(&self) -> String {
        let out = self.respot(&["render", "--output", "json"]);
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        json["digest"].as_str().unwrap().to_string()
    }

    fn live_generations(&self) -> Vec<u64> {
        let out = self.respot(&["list", "--output", "json"]);
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut generations: Vec<u64> = json
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["state"] != "terminated")
            .map(|i| i["generation"].as_u64().unwrap())
            .collect();
        generations.sort();
        generations
    }

    /// qemu and haproxy processes whose command line names our state dir.
    fn our_pids(&self) -> Vec<i32> {
        self.pids(&["qemu-system-x86_64", "haproxy"])
    }
}

/// One answer through the door: `Ok(digest)` or the failure.
type Answer = Result<String, String>;

/// An answer and when it arrived, in ms since the Unix epoch.
type Timed = (u128, Answer);

fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// GETs `/` through the door until stopped, one connection per request.
struct Load {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<Timed>>,
}

impl Load {
    fn start(port: u16) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut answers = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let answer = get(port);
                answers.push((unix_ms(), answer));
                std::thread::sleep(Duration::from_millis(25));
            }
            answers
        });
        Load { stop, thread }
    }

    fn finish(self) -> Vec<Timed> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the load generator does not panic")
    }
}

fn get(port: u16) -> Answer {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| format!("read: {e}"))?;
    let status = answer.split_whitespace().nth(1).unwrap_or("none").to_string();
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("");
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(json) if status == "200" => Ok(json["digest"].as_str().unwrap_or("").to_string()),
        _ => Err(format!("HTTP {status}: {body}")),
    }
}

/// The sample's health endpoint, failing `/health` once it has served 20
/// requests on `/` (that is, once the door sends it traffic).
const FAILS_UNDER_TRAFFIC: &str = r#"
SERVED = {"app": 0}
_original_do_get = Health.do_GET


def _do_get(self):
    if self.path == "/":
        SERVED["app"] += 1
    if self.path == "/health" and SERVED["app"] >= 20:
        self.send_error(500)
        return
    _original_do_get(self)


Health.do_GET = _do_get
"#;

/// The daemonised HAProxy outlives respot: it must hold no file respot
/// inherited (this test runs under `flock /work/vm.lock`, whose lock a
/// leaked descriptor would hold forever).
fn assert_keeps_no_inherited_file(door: &Door) {
    let state = door.state.display().to_string();
    for pid in door.our_pids() {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if !String::from_utf8_lossy(&cmdline).contains("haproxy") {
            continue;
        }
        for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
            let target = std::fs::read_link(fd.path())
                .unwrap_or_default()
                .display()
                .to_string();
            let inherited = target.starts_with('/') && target != "/dev/null" && !target.starts_with(&state);
            assert!(!inherited, "haproxy {pid} holds {target}");
        }
    }
}

fn failures(answers: &[Timed]) -> Vec<&String> {
    answers.iter().filter_map(|(_, a)| a.as_ref().err()).collect()
}

/// Milliseconds from `decided` to the first answer carrying `digest`.
fn latency(answers: &[Timed], decided: u128, digest: &str) -> u128 {
    let first = answers
        .iter()
        .find(|(at, a)| *at >= decided && a.as_deref() == Ok(digest))
        .expect("the other generation answered");
    first.0 - decided
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).expect("respot prints JSON")
}

#[test]
fn blue_green_through_the_door_drops_nothing_and_a_breach_shifts_back() {
    let door = Door::new();
    let first = door.respot(&["deploy", "--strategy", "blue-green", "--yes", "--allow-dirty"]);
    assert_eq!(first.status.code(), Some(0), "generation 1");
    let d1 = door.digest();
    assert_eq!(get(door.port), Ok(d1.clone()), "the door serves generation 1");
    assert_keeps_no_inherited_file(&door);

    // Generation 2: a changed blueprint, deployed under load.
    let reporter = door.path().join("instance/files/opt/hello/reporter.sh");
    let script = std::fs::read_to_string(&reporter).unwrap();
    std::fs::write(&reporter, format!("{script}# generation 2\n")).unwrap();
    let d2 = door.digest();
    assert_ne!(d1, d2);
    let load = Load::start(door.port);
    let started = Instant::now();
    let deploy = [
        "deploy",
        "--strategy",
        "blue-green",
        "--yes",
        "--allow-dirty",
        "--keep-old",
        "10m",
        "--output",
        "json",
    ];
    let second = door.respot(&deploy);
    let answers = load.finish();
    assert_eq!(second.status.code(), Some(0), "generation 2");
    let decided = json(&second)["door"]["shifts"][0]["decided_at_ms"]
        .as_u64()
        .unwrap() as u128;
    let shift_ms = latency(&answers, decided, &d2);
    eprintln!(
        "BENCH blue-green under load: {} requests in {:.0} s, {} failed; shift to the first answer of generation 2: {shift_ms} ms",
        answers.len(),
        started.elapsed().as_secs_f64(),
        failures(&answers).len()
    );
    assert!(
        failures(&answers).is_empty(),
        "failed requests: {:?}",
        failures(&answers)
    );
    let digests: Vec<&Answer> = answers.iter().map(|(_, a)| a).collect();
    let shifted = digests
        .iter()
        .position(|a| a.as_ref() == Ok(&d2))
        .expect("generation 2 answered");
    assert!(
        digests[..shifted].iter().all(|a| a.as_ref() == Ok(&d1)),
        "generation 1 before the shift"
    );
    assert!(
        digests[shifted..].iter().all(|a| a.as_ref() == Ok(&d2)),
        "only generation 2 after it"
    );
    assert!(shift_ms < 5_000, "shift latency {shift_ms} ms");
    assert_eq!(
        door.live_generations(),
        vec![1, 2],
        "generation 1 kept alive, out of the door"
    );

    // The instant rollback, under load.
    let load = Load::start(door.port);
    std::thread::sleep(Duration::from_secs(1));
    let back = door.respot(&["rollback", "--yes", "--output", "json"]);
    let answers = load.finish();
    assert_eq!(back.status.code(), Some(0), "rollback");
    let decided = json(&back)["decided_at_ms"].as_u64().unwrap() as u128;
    let rollback_ms = latency(&answers, decided, &d1);
    eprintln!(
        "BENCH rollback under load: {} requests, {} failed; decision to the first answer of generation 1: {rollback_ms} ms",
        answers.len(),
        failures(&answers).len()
    );
    assert!(
        failures(&answers).is_empty(),
        "failed requests: {:?}",
        failures(&answers)
    );
    assert!(rollback_ms < 5_000, "rollback latency {rollback_ms} ms");
    assert_eq!(answers.last().map(|(_, a)| a.clone()), Some(Ok(d1.clone())));
    assert_eq!(door.live_generations(), vec![1], "generation 2 destroyed");

    // The next generation fails its health check once it gets traffic.
    let health = door.path().join("instance/files/opt/hello/health.py");
    let code = std::fs::read_to_string(&health).unwrap();
    let code = code.replace(
        "\nif __name__ == \"__main__\":",
        &format!("{FAILS_UNDER_TRAFFIC}\n\nif __name__ == \"__main__\":"),
    );
    std::fs::write(&health, code).unwrap();
    let load = Load::start(door.port);
    let third = door.respot(&["deploy", "--strategy", "blue-green", "--yes", "--allow-dirty"]);
    std::thread::sleep(Duration::from_secs(1));
    let answers = load.finish();
    // Numbered 2 again: one above the highest generation the provider still
    // remembers, and the rollback destroyed generation 2.
    assert_eq!(
        third.status.code(),
        Some(1),
        "the guard stops the failing generation"
    );
    let stderr = String::from_utf8_lossy(&third.stderr);
    assert!(stderr.contains("the guard stopped generation 2"), "{stderr}");
    assert!(stderr.contains("traffic is back on generation 1"), "{stderr}");
    assert!(stderr.contains("respot debug i-"), "{stderr}");
    assert!(
        failures(&answers).is_empty(),
        "failed requests: {:?}",
        failures(&answers)
    );
    assert_eq!(
        answers.last().map(|(_, a)| a.clone()),
        Some(Ok(d1.clone())),
        "generation 1 serves again"
    );
    assert_eq!(
        door.live_generations(),
        vec![1],
        "the failing generation destroyed"
    );

    let destroyed = door.respot(&["destroy", "--yes"]);
    assert_eq!(destroyed.status.code(), Some(0));
    assert!(door.our_pids().is_empty(), "no qemu or haproxy left");
    assert!(get(door.port).is_err(), "the door is closed");
}

/// Kills, on drop, every haproxy whose command line names `.0` (this
/// test's state): a failed assertion must not leave the door running.
struct Reaper(PathBuf);

impl Drop for Reaper {
    fn drop(&mut self) {
        kill_under(&self.0, &["haproxy"]);
    }
}

/// A tiny HTTP backend answering `{"digest": NAME}` on every path, as a
/// generation's instance would through its forwarded port.
struct Backend(std::process::Child);

impl Backend {
    fn start(port: u16, name: &str) -> Backend {
        let script = r#"
import http.server, json, sys
body = json.dumps({"digest": sys.argv[2]}).encode()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;
        let child = std::process::Command::new("python3")
            .args(["-c", script, &port.to_string(), name])
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start python3");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "backend {name} did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Backend(child)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        crate::support::stop_child(&mut self.0, Duration::from_secs(2));
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An instance record as the local provider writes it, forwarding
/// `guest` to `host`; returns the instance the engine would hand the door.
fn fake_instance(vms: &Path, id: &str, generation: u64, host: u16) -> respot::provider::Instance {
    let dir = vms.join("hello").join(id);
    std::fs::create_dir_all(&dir).unwrap();
    let record = serde_json::json!({
        "id": id, "name": id, "deployment": "hello", "digest": "00", "version": "v",
        "generation": generation, "created_at": "2026-01-01T00:00:00Z", "ssh_port": 1,
        "forwards": [[host, 8080]], "accel": "tcg", "memory_mib": 256, "cpus": 1, "tags": [],
    });
    std::fs::write(dir.join("instance.json"), record.to_string()).unwrap();
    respot::provider::Instance {
        id: respot::provider::InstanceId(id.to_string()),
        name: id.to_string(),
        region: "local".to_string(),
        zone: None,
        instance_type: "vm".to_string(),
        lifecycle: respot::provider::Lifecycle::Vm,
        state: respot::provider::InstanceState::Running,
        state_reason: None,
        public_ip: None,
        private_ip: None,
        ssh: None,
        digest: None,
        version: None,
        generation: Some(generation),
        launched_at: None,
        secrets: None,
    }
}

/// The real HAProxy door, without VMs: two generations of tiny backends,
/// a load generator through the door, register, shift, shift back, drain.
/// Measures the latency from the shift decision to the first answer of
/// the other generation (BENCHMARKS.md) and fails on any dropped request.
#[test]
fn the_haproxy_door_shifts_and_shifts_back_without_dropping_a_request() {
    use respot::traffic::FrontDoor;
    let test = Test::sample();
    let port = free_port();
    let toml = std::fs::read_to_string(test.path().join("respot.toml")).unwrap();
    let toml = toml.replace("port = 8000", &format!("port = {port}"));
    let config = respot::config::Config::parse(&toml, &test.path().join("respot.toml")).unwrap();
    let image = test.context().cache().join("image");
    std::fs::create_dir_all(&image).unwrap();
    for file in ["disk.raw", "vmlinuz", "initrd.img"] {
        std::fs::write(image.join(file), "").unwrap();
    }
    let vms = test.context().state().join("local");
    let provider = respot::provider::local::LocalProvider::new(&config, vms.clone(), image, None).unwrap();
    let dir = test.context().state().join("door/hello");
    let _reaper = Reaper(test.context().state());
    let door =
        respot::traffic::haproxy::HaproxyDoor::new(config.traffic.as_ref().unwrap(), "hello", dir, provider)
            .unwrap();
    let (p1, p2) = (free_port(), free_port());
    let (_b1, _b2) = (Backend::start(p1, "gen-1"), Backend::start(p2, "gen-2"));
    let blue = [fake_instance(&vms, "i-1", 1, p1)];
    let green = [fake_instance(&vms, "i-2", 2, p2)];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let weights = |w: &[(u64, u32)]| w.iter().copied().collect::<respot::traffic::Weights>();
    runtime.block_on(async {
        door.register(1, &blue).await.unwrap();
        door.wait_healthy(1, &blue, Duration::from_secs(10))
            .await
            .unwrap();
        door.shift(&weights(&[(1, 100)])).await.unwrap();
    });
    assert_eq!(get(port), Ok("gen-1".to_string()));

    let load = Load::start(port);
    let (shift_at, back_at) = runtime.block_on(async {
        door.register(2, &green).await.unwrap();
        door.wait_healthy(2, &green, Duration::from_secs(10))
            .await
            .unwrap();
        let shift_at = unix_ms();
        door.shift(&weights(&[(1, 0), (2, 100)])).await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let back_at = unix_ms();
        door.shift(&weights(&[(1, 100), (2, 0)])).await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        door.drain(&green).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        (shift_at, back_at)
    });
    let answers = load.finish();
    let (shift_ms, back_ms) = (
        latency(&answers, shift_at, "gen-2"),
        latency(&answers, back_at, "gen-1"),
    );
    eprintln!(
        "BENCH local door without VMs: {} requests, {} failed; shift {shift_ms} ms, shift back {back_ms} ms",
        answers.len(),
        failures(&answers).len()
    );
    assert!(
        failures(&answers).is_empty(),
        "failed requests: {:?}",
        failures(&answers)
    );
    assert!(
        shift_ms < 1_000 && back_ms < 1_000,
        "shift {shift_ms} ms, back {back_ms} ms"
    );
    assert_eq!(
        answers.last().map(|(_, a)| a.clone()),
        Some(Ok("gen-1".to_string()))
    );
    let state = runtime.block_on(door.state()).unwrap();
    assert_eq!(state.weights, weights(&[(1, 100)]), "generation 2 left the door");

    let removed = runtime.block_on(door.remove()).unwrap();
    assert_eq!(removed.len(), 1, "{removed:?}");
    assert!(get(port).is_err(), "the door is closed");
}

/// The servers of the door's HAProxy backend, by name (`g<gen>-<id>`).
fn door_servers(door: &Door) -> Vec<String> {
    let config = door.state.join("respot/door/hello/haproxy.cfg");
    let text = std::fs::read_to_string(&config).unwrap_or_else(|e| panic!("{}: {e}", config.display()));
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("server "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn heal_puts_the_replacement_behind_the_door_and_drains_the_dead_vm() {
    let door = Door::new();
    let first = door.respot(&["deploy", "--strategy", "blue-green", "--yes", "--allow-dirty"]);
    assert_eq!(first.status.code(), Some(0), "generation 1");
    let d1 = door.digest();
    assert_eq!(get(door.port), Ok(d1.clone()), "the door serves generation 1");
    let listed = json(&door.respot(&["list", "--output", "json"]));
    let old = listed[0]["id"].as_str().expect("an id").to_string();
    assert_eq!(door_servers(&door), [format!("g1-{old}")]);

    for pid in door.our_pids() {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains("qemu-system") {
            // SAFETY: the qemu this test's deployment started (our_pids).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    // HAProxy's own check (fall 3, inter 1s) takes the dead VM out.
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(door.port).is_ok() {
        assert!(Instant::now() < deadline, "the door still answers from a dead VM");
        std::thread::sleep(Duration::from_millis(200));
    }

    let healed = door.respot(&["heal", "--output", "json"]);
    assert_eq!(healed.status.code(), Some(0), "heal");
    let report = json(&healed);
    let new = report["launched"][0]["id"]
        .as_str()
        .expect("a replacement")
        .to_string();
    assert_ne!(new, old);
    assert_eq!(
        door_servers(&door),
        [format!("g1-{new}")],
        "the replacement is in the door and the dead VM is not"
    );
    assert_eq!(
        get(door.port),
        Ok(d1),
        "the door serves the replacement, same digest"
    );
    assert_eq!(door.live_generations(), [1]);
}
