//! The local front door: one HAProxy per deployment, in master-worker mode,
//! on `127.0.0.1:<traffic.port>`, in front of each VM's forwarded
//! `traffic.guest_port`.
//!
//! `door.json` in the deployment's door directory is the truth (weights,
//! servers, the kept generation); `haproxy.cfg` is rendered from it, checked
//! with `haproxy -c`, and applied by a master-worker reload (SIGUSR2): the
//! new worker takes the listening socket over from the old one, which
//! finishes its connections, so no request is dropped. A generation with no
//! share stays behind the door as `backup`: it serves only if every server
//! with a share is down, so a new generation failing its health check falls
//! back to the old one before the guard even shifts. The master's PID is
//! only signalled after its command line proves it runs our config.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{DoorError, DoorState, FrontDoor, Kept, Probe, Result, Weights};
use crate::config::TrafficSection;
use crate::provider::local::{LocalProvider, on_path};
use crate::provider::{Instance, InstanceId};

const HAPROXY: &str = "haproxy";
/// How long a draining server gets to finish its requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a reload or a start gets to show the new servers.
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// What `door.json` records.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct DoorFile {
    weights: Weights,
    servers: Vec<Server>,
    kept: Option<(u64, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Server {
    generation: u64,
    id: String,
    /// The VM's forwarded guest port on 127.0.0.1.
    port: u16,
}

impl Server {
    fn name(&self) -> String {
        format!("g{}-{}", self.generation, self.id)
    }
}

pub struct HaproxyDoor {
    deployment: String,
    dir: PathBuf,
    port: u16,
    health_path: String,
    guest_port: u16,
    provider: LocalProvider,
}

impl HaproxyDoor {
    /// Checks that HAProxy is installed; touches nothing.
    pub fn new(
        traffic: &TrafficSection,
        deployment: &str,
        dir: PathBuf,
        provider: LocalProvider,
    ) -> Result<HaproxyDoor> {
        if !on_path(HAPROXY) {
            return Err(DoorError::MissingTool {
                tool: HAPROXY.to_string(),
                fix: "run `scripts/setup` (it installs the haproxy package)".to_string(),
            });
        }
        let port = traffic.port.ok_or_else(|| DoorError::Failed {
            door: "local".to_string(),
            action: "listen".to_string(),
            detail: "`traffic.port` is not set; the local door listens on 127.0.0.1:<port>".to_string(),
        })?;
        Ok(HaproxyDoor {
            deployment: deployment.to_string(),
            dir,
            port,
            health_path: traffic.health_path.clone(),
            guest_port: traffic.guest_port,
            provider,
        })
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("haproxy.cfg")
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("admin.sock")
    }

    fn failed(&self, action: &str, detail: impl Into<String>) -> DoorError {
        DoorError::Failed {
            door: self.describe(),
            action: action.to_string(),
            detail: detail.into(),
        }
    }

    fn read(&self) -> Result<DoorFile> {
        let path = self.dir.join("door.json");
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| self.failed("read its state", format!("{}: {e}", path.display()))),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(DoorFile::default()),
            Err(source) => Err(DoorError::Io { path, source }),
        }
    }

    fn write(&self, file: &DoorFile) -> Result<()> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| DoorError::Io { path, source }
        };
        crate::paths::private_dir(&self.dir).map_err(io(&self.dir))?;
        let path = self.dir.join("door.json");
        let json = serde_json::to_string_pretty(file).expect("door state is plain data");
        crate::paths::write_private(&path, json.as_bytes()).map_err(io(&path))
    }

    /// The master's PID, if it is alive and runs this door's config.
    fn master_pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.dir.join("haproxy.pid")).ok()?;
        let pid: i32 = text.lines().next()?.trim().parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let ours = cmdline.contains(HAPROXY) && cmdline.contains(&self.config_path().display().to_string());
        // A zombie keeps its command line until reaped: not alive.
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = state
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z'));
        (ours && !zombie).then_some(pid)
    }

    /// Writes the state, renders and checks the config, then reloads the
    /// running door (or starts it) and waits until it serves the new config.
    async fn apply(&self, file: &DoorFile) -> Result<()> {
        self.write(file)?;
        let config = render(file, &self.socket(), self.port, &self.health_path);
        let candidate = self.dir.join("haproxy.cfg.new");
        crate::paths::write_private(&candidate, config.as_bytes()).map_err(|source| DoorError::Io {
            path: candidate.clone(),
            source,
        })?;
        let check = Command::new(HAPROXY)
            .args(["-c", "-q", "-f"])
            .arg(&candidate)
            .output()
            .map_err(|e| self.failed("check its config", e.to_string()))?;
        if !check.status.success() {
            return Err(self.failed(
                "check its config",
                String::from_utf8_lossy(&check.stderr).trim().to_string(),
            ));
        }
        std::fs::rename(&candidate, self.config_path()).map_err(|source| DoorError::Io {
            path: self.config_path(),
            source,
        })?;
        match self.master_pid() {
            // SAFETY: kill(2) with a PID whose command line runs our config.
            Some(pid) => unsafe {
                libc::kill(pid, libc::SIGUSR2);
            },
            None => self.start()?,
        }
        self.wait_applied(file).await
    }

    fn start(&self) -> Result<()> {
        let _ = std::fs::remove_file(self.socket());
        let mut command = Command::new(HAPROXY);
        command
            .args(["-W", "-D", "-f"])
            .arg(self.config_path())
            .arg("-p")
            .arg(self.dir.join("haproxy.pid"));
        // The daemon outlives respot: it must not keep what respot
        // inherited open (a `flock` on a lock file would be held forever).
        crate::process::close_inherited_fds(&mut command);
        let out = command
            .output()
            .map_err(|e| self.failed("start", e.to_string()))?;
        if !out.status.success() {
            return Err(self.failed("start", String::from_utf8_lossy(&out.stderr).trim().to_string()));
        }
        Ok(())
    }

    /// Until the worker answering the admin socket lists exactly `file`'s
    /// servers, with their weights.
    async fn wait_applied(&self, file: &DoorFile) -> Result<()> {
        let want: BTreeMap<String, String> = file
            .servers
            .iter()
            .map(|s| (s.name(), server_weight(file, s).to_string()))
            .collect();
        let deadline = Instant::now() + APPLY_TIMEOUT;
        loop {
            let got: Option<BTreeMap<String, String>> = self
                .stats()
                .ok()
                .map(|rows| rows.into_iter().map(|r| (r.name, r.weight)).collect());
            if got.as_ref() == Some(&want) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(self.failed(
                    "apply its new config",
                    format!(
                        "after {} s it serves {got:?}, not {want:?}",
                        APPLY_TIMEOUT.as_secs()
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn admin(&self, command: &str) -> std::io::Result<String> {
        let mut stream = UnixStream::connect(self.socket())?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(format!("{command}\n").as_bytes())?;
        let mut out = String::new();
        stream.read_to_string(&mut out)?;
        Ok(out)
    }

    /// The backend's server rows, from `show stat`.
    fn stats(&self) -> std::io::Result<Vec<Row>> {
        Ok(parse_stats(&self.admin("show stat")?))
    }

    fn server_of(&self, generation: u64, instance: &Instance) -> Result<Server> {
        let port = self
            .provider
            .forwarded_port(&self.deployment, &instance.id, self.guest_port)
            .ok_or_else(|| {
                self.failed(
                    "register",
                    format!(
                        "instance {} forwards no port to guest port {}; it was launched before \
                         `[traffic]` was set: deploy a new generation",
                        instance.id, self.guest_port
                    ),
                )
            })?;
        Ok(Server {
            generation,
            id: instance.id.0.clone(),
            port,
        })
    }
}

/// One server's row in `show stat`.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    name: String,
    status: String,
    check: String,
    sessions: u64,
    weight: String,
}

fn parse_stats(text: &str) -> Vec<Row> {
    let mut lines = text.lines();
    let Some(header) = lines.next().and_then(|h| h.strip_prefix("# ")) else {
        return Vec::new();
    };
    let columns: Vec<&str> = header.split(',').collect();
    let at = |name: &str| columns.iter().position(|c| *c == name);
    let (Some(px), Some(sv), Some(status), Some(check), Some(scur), Some(weight)) = (
        at("pxname"),
        at("svname"),
        at("status"),
        at("check_status"),
        at("scur"),
        // The configured weight: `weight` is the effective one, 0 while
        // a server is down or draining.
        at("uweight").or_else(|| at("weight")),
    ) else {
        return Vec::new();
    };
    lines
        .map(|line| line.split(',').collect::<Vec<_>>())
        .filter(|f| f.len() > weight.max(check) && f[px] == "fleet" && f[sv] != "BACKEND")
        .map(|f| Row {
            name: f[sv].to_string(),
            status: f[status].to_string(),
            check: f[check].to_string(),
            sessions: f[scur].parse().unwrap_or(0),
            weight: f[weight].to_string(),
        })
        .collect()
}

/// A server's HAProxy weight: its generation's share spread over the
/// generation's servers (1 to 256); 1 for a backup.
fn server_weight(file: &DoorFile, server: &Server) -> u32 {
    let share = file.weights.get(&server.generation).copied().unwrap_or(0);
    if share == 0 {
        return 1;
    }
    let peers = file
        .servers
        .iter()
        .filter(|s| s.generation == server.generation)
        .count()
        .max(1) as u32;
    (share * 256 / 100 / peers).clamp(1, 256)
}

/// The config HAProxy runs, from the door's state.
fn render(file: &DoorFile, socket: &Path, port: u16, health_path: &str) -> String {
    let mut servers = String::new();
    for server in &file.servers {
        let share = file.weights.get(&server.generation).copied().unwrap_or(0);
        let role = if share == 0 {
            "backup".to_string()
        } else {
            format!("weight {}", server_weight(file, server))
        };
        servers.push_str(&format!(
            "    server {} 127.0.0.1:{} {role} check\n",
            server.name(),
            server.port
        ));
    }
    format!(
        "# The respot front door: generated from door.json, replaced on every shift.\n\
         global\n    master-worker\n    stats socket {socket} mode 600 level admin expose-fd listeners\n    \
         hard-stop-after 30s\n\n\
         defaults\n    mode http\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n    \
         timeout queue 10s\n    timeout check 5s\n    retries 3\n    option redispatch 1\n    retry-on conn-failure empty-response response-timeout\n\n\
         frontend door\n    bind 127.0.0.1:{port}\n    default_backend fleet\n\n\
         backend fleet\n    balance roundrobin\n    option allbackups\n    option httpchk GET {health_path}\n    \
         http-check expect status 200\n    default-server inter 1s fastinter 500ms downinter 1s rise 2 fall 3\n{servers}",
        socket = socket.display()
    )
}

impl FrontDoor for HaproxyDoor {
    fn describe(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn register(&self, generation: u64, targets: &[Instance]) -> Result<()> {
        let mut file = self.read()?;
        for instance in targets {
            let server = self.server_of(generation, instance)?;
            if !file.servers.iter().any(|s| s.id == server.id) {
                file.servers.push(server);
            }
        }
        file.weights.entry(generation).or_insert(0);
        self.apply(&file).await
    }

    async fn wait_healthy(&self, generation: u64, targets: &[Instance], timeout: Duration) -> Result<()> {
        let names: Vec<String> = targets
            .iter()
            .map(|i| format!("g{generation}-{}", i.id))
            .collect();
        let started = Instant::now();
        loop {
            let rows = self.stats().unwrap_or_default();
            let unhealthy: Vec<String> = names
                .iter()
                .filter_map(|name| match rows.iter().find(|r| &r.name == name) {
                    Some(r) if r.status == "UP" && r.check.starts_with("L7OK") => None,
                    Some(r) => Some(format!("{name}: {} ({})", r.status, r.check)),
                    None => Some(format!("{name}: not behind the door")),
                })
                .collect();
            if unhealthy.is_empty() {
                return Ok(());
            }
            if started.elapsed() > timeout {
                return Err(DoorError::Unhealthy {
                    generation,
                    waited: started.elapsed(),
                    detail: format!("{} on {}", unhealthy.join(", "), self.health_path),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn shift(&self, weights: &Weights) -> Result<()> {
        let mut file = self.read()?;
        file.weights = weights.clone();
        self.apply(&file).await
    }

    async fn drain(&self, targets: &[Instance]) -> Result<()> {
        let mut file = self.read()?;
        let leaving: Vec<Server> = file
            .servers
            .iter()
            .filter(|s| targets.iter().any(|t| t.id.0 == s.id))
            .cloned()
            .collect();
        if leaving.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = leaving.iter().map(Server::name).collect();
        for name in &names {
            let _ = self.admin(&format!("set server fleet/{name} state drain"));
        }
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while Instant::now() < deadline {
            let busy = self
                .stats()
                .map(|rows| rows.iter().any(|r| names.contains(&r.name) && r.sessions > 0))
                .unwrap_or(false);
            if !busy {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        file.servers.retain(|s| !leaving.contains(s));
        let servers = &file.servers;
        file.weights
            .retain(|g, _| servers.iter().any(|s| s.generation == *g));
        self.apply(&file).await
    }

    async fn probe(&self) -> Probe {
        probe(self.port, &self.health_path).await
    }

    async fn state(&self) -> Result<DoorState> {
        let file = self.read()?;
        let mut targets: BTreeMap<u64, Vec<InstanceId>> = BTreeMap::new();
        for server in &file.servers {
            targets
                .entry(server.generation)
                .or_default()
                .push(InstanceId(server.id.clone()));
        }
        let kept = file.kept.as_ref().and_then(|(generation, until)| {
            humantime::parse_rfc3339(until).ok().map(|until| Kept {
                generation: *generation,
                until,
            })
        });
        Ok(DoorState {
            weights: file.weights,
            targets,
            kept,
            diverged: false,
        })
    }

    async fn keep(&self, kept: Option<Kept>) -> Result<()> {
        let mut file = self.read()?;
        file.kept = kept.map(|k| {
            (
                k.generation,
                humantime::format_rfc3339_seconds(k.until).to_string(),
            )
        });
        self.write(&file)
    }

    async fn remove(&self) -> Result<Vec<String>> {
        if !self.dir.exists() {
            return Ok(Vec::new());
        }
        if let Some(pid) = self.master_pid() {
            // SAFETY: kill(2) with a PID whose command line runs our config.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while self.master_pid().is_some() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if self.master_pid() == Some(pid) {
                // SAFETY: as above, re-checked just now.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        std::fs::remove_dir_all(&self.dir).map_err(|source| DoorError::Io {
            path: self.dir.clone(),
            source,
        })?;
        Ok(vec![format!("front door {} (haproxy)", self.describe())])
    }
}

/// `GET health_path` through the door, with a 5 s limit (a VM under TCG
/// can be slow).
async fn probe(port: u16, path: &str) -> Probe {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nUser-Agent: respot-guard\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    match tokio::time::timeout(Duration::from_secs(5), attempt).await {
        Err(_) => Probe {
            ok: false,
            detail: "no answer within 5 s".to_string(),
        },
        Ok(Err(err)) => Probe {
            ok: false,
            detail: err.to_string(),
        },
        Ok(Ok(answer)) => {
            let text = String::from_utf8_lossy(&answer);
            let status = text.split_whitespace().nth(1).unwrap_or("no status").to_string();
            Probe {
                ok: status.starts_with('2'),
                detail: format!("HTTP {status}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> DoorFile {
        let server = |generation, id: &str, port| Server {
            generation,
            id: id.to_string(),
            port,
        };
        DoorFile {
            weights: [(1, 95), (2, 5)].into_iter().collect(),
            servers: vec![
                server(1, "i-a", 2001),
                server(1, "i-b", 2002),
                server(2, "i-c", 2003),
                server(3, "i-d", 2004),
            ],
            kept: None,
        }
    }

    #[test]
    fn shares_spread_over_a_generations_servers_and_no_share_is_backup() {
        let config = render(&file(), Path::new("/s/admin.sock"), 8000, "/health");
        assert!(config.contains("bind 127.0.0.1:8000"), "{config}");
        assert!(config.contains("option httpchk GET /health"), "{config}");
        assert!(
            config.contains("server g1-i-a 127.0.0.1:2001 weight 121 check"),
            "{config}"
        );
        assert!(
            config.contains("server g1-i-b 127.0.0.1:2002 weight 121 check"),
            "{config}"
        );
        assert!(
            config.contains("server g2-i-c 127.0.0.1:2003 weight 12 check"),
            "{config}"
        );
        assert!(
            config.contains("server g3-i-d 127.0.0.1:2004 backup check"),
            "{config}"
        );
        assert!(
            config.contains("stats socket /s/admin.sock mode 600 level admin"),
            "{config}"
        );
    }

    #[test]
    fn stats_rows_are_the_fleets_servers() {
        let text = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,\n\
door,FRONTEND,,,0,1,9984,3,246,651,0,0,0,,,,,OPEN,,,,,,,,,1,2,0,,,,0,3,0,3,,\n\
fleet,g1-i-a,0,0,2,1,,5,1,1,,0,,0,0,0,0,UP,256,1,0,0,0,1,0,,1,3,1,,5,,2,0,,1,L7OK,\n\
fleet,BACKEND,0,0,0,1,,5,1,1,,0,,0,0,0,0,UP,256,1,0,0,0,1,0,,1,3,1,,5,,2,0,,1,,\n";
        let rows = parse_stats(text);
        assert_eq!(
            rows,
            vec![Row {
                name: "g1-i-a".to_string(),
                status: "UP".to_string(),
                check: "L7OK".to_string(),
                sessions: 2,
                weight: "256".to_string(),
            }]
        );
    }
}
