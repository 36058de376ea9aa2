//! A real OpenSSH server on 127.0.0.1 for verification tests: a non-daemon
//! child (`sshd -D -e -f cfg`) with its own host key and config, stopped by
//! PID in `Drop`, so a failing test still cleans up.
//!
//! Two configurations: a minimal one of the fixture's own (no PAM), and
//! Debian's defaults, where the distribution's `/etc/ssh/sshd_config` (PAM
//! sessions, `AcceptEnv LANG LC_*`, X11 forwarding, ...) runs with respot's
//! `60-respot.conf` as its drop-in, as on an instance.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Sshd {
    child: Child,
    pub ports: Vec<u16>,
    log: PathBuf,
}

impl Sshd {
    /// The listening sshd's pid (its sessions are its children).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// Command strings someone holding respot's verification key might send:
/// the inspector must refuse every one (exit 64), whatever sshd is in front.
pub const HOSTILE_COMMANDS: &[&str] = &[
    "touch /tmp/x",
    "manifest; rm -rf /",
    "journal ../../etc/shadow 5",
    "$(id)",
    "journal hello-health.service 501",
    "units extra",
    "sh -c id",
    "systemctl stop hello-health.service",
    "sh -c 'rm -rf /opt/hello'",
    "internal-sftp",
    "/usr/lib/openssh/sftp-server",
];

/// The distribution's server config, which Debian-defaults mode runs.
const DISTRIBUTION_CONFIG: &str = "/etc/ssh/sshd_config";
/// How that config pulls in its drop-ins.
const DISTRIBUTION_INCLUDE: &str = "Include /etc/ssh/sshd_config.d/*.conf";

impl Sshd {
    /// Starts sshd in `dir` on `ports`, with `host_key` (OpenSSH private
    /// key text) and the authorized keys of user `u` in `keys_dir/u`, and
    /// waits until every port accepts. A minimal config, without PAM.
    pub fn start(dir: &Path, host_key: &str, keys_dir: &Path, ports: &[u16]) -> Sshd {
        Sshd::start_with_limits(dir, host_key, keys_dir, ports, "10:30:100")
    }

    /// The same with `MaxStartups max_startups`: for one sshd playing a
    /// whole fleet (in a fleet, each instance is its own sshd).
    pub fn start_with_limits(
        dir: &Path,
        host_key: &str,
        keys_dir: &Path,
        ports: &[u16],
        max_startups: &str,
    ) -> Sshd {
        let key_path = prepare(dir, host_key);
        let config = format!(
            "ListenAddress 127.0.0.1\nHostKey {}\nPidFile none\nUsePAM no\nStrictModes no\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
             AuthorizedKeysFile {}/%u\nPermitRootLogin prohibit-password\nLogLevel VERBOSE\n\
             MaxStartups {max_startups}\nMaxSessions 10\nAcceptEnv none\n{}",
            key_path.display(),
            keys_dir.display(),
            port_lines(ports)
        );
        Sshd::run(dir, &config, ports)
    }

    /// Starts sshd with Debian's defaults: a copy of the distribution's
    /// `/etc/ssh/sshd_config` whose drop-in directory holds `dropin` alone
    /// (respot's `60-respot.conf`, its paths moved into the fixture), after
    /// the fixture's address, ports and host key. sshd keeps the first value
    /// it reads, so nothing else of Debian's changes, but `StrictModes no`:
    /// the fixture's key files live under `/tmp`, which is world-writable.
    pub fn start_debian(dir: &Path, host_key: &str, dropin: &str, ports: &[u16]) -> Sshd {
        let key_path = prepare(dir, host_key);
        let distribution = std::fs::read_to_string(DISTRIBUTION_CONFIG).expect("read /etc/ssh/sshd_config");
        assert!(
            distribution.lines().any(|l| l.trim() == "UsePAM yes")
                && distribution.contains(DISTRIBUTION_INCLUDE),
            "{DISTRIBUTION_CONFIG} is not Debian's (UsePAM yes, `{DISTRIBUTION_INCLUDE}`):\n{distribution}"
        );
        let dropins = dir.join("sshd_config.d");
        std::fs::create_dir_all(&dropins).expect("mkdir sshd_config.d");
        std::fs::write(dropins.join("60-respot.conf"), dropin).expect("write the drop-in");
        let config = format!(
            "# The fixture's own, read first.\nListenAddress 127.0.0.1\nHostKey {}\nPidFile none\n\
             StrictModes no\nLogLevel VERBOSE\n{}\n# {DISTRIBUTION_CONFIG}, as the distribution ships it.\n{}",
            key_path.display(),
            port_lines(ports),
            distribution.replace(
                DISTRIBUTION_INCLUDE,
                &format!("Include {}/*.conf", dropins.display())
            )
        );
        Sshd::run(dir, &config, ports)
    }

    fn run(dir: &Path, config: &str, ports: &[u16]) -> Sshd {
        let config_path = dir.join("sshd_config");
        std::fs::write(&config_path, config).expect("write sshd_config");
        let log = dir.join(format!("sshd-{}.log", ports[0]));
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open sshd log");
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start /usr/sbin/sshd");
        let mut sshd = Sshd {
            child,
            ports: ports.to_vec(),
            log,
        };
        sshd.wait_ready();
        sshd
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        for port in self.ports.clone() {
            loop {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    break;
                }
                if let Ok(Some(status)) = self.child.try_wait() {
                    panic!("sshd exited with {status}:\n{}", self.log());
                }
                assert!(
                    Instant::now() < deadline,
                    "sshd did not listen on {port}:\n{}",
                    self.log()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Makes `dir`, sshd's privilege separation directory, and the host key
/// file (0600, as sshd demands); returns the key's path.
fn prepare(dir: &Path, host_key: &str) -> PathBuf {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(dir).expect("mkdir sshd dir");
    std::fs::create_dir_all("/run/sshd").expect("create /run/sshd");
    let key_path = dir.join("host_key");
    let _ = std::fs::remove_file(&key_path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key_path)
        .expect("write host key");
    f.write_all(host_key.as_bytes()).expect("write host key");
    key_path
}

fn port_lines(ports: &[u16]) -> String {
    ports.iter().map(|port| format!("Port {port}\n")).collect()
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // Only our own child, by PID: TERM, then KILL if it lingers.
        super::stop_child(&mut self.child, Duration::from_secs(3));
    }
}

/// One login as someone holding respot's verification key: raw `ssh` to
/// 127.0.0.1:`port`, output captured.
struct RawLogin<'a> {
    key: &'a Path,
    known_hosts: &'a Path,
    user: &'a str,
    port: u16,
}

impl RawLogin<'_> {
    fn ssh(&self, options: &[&str], command: Option<&str>) -> Command {
        let mut ssh =
            super::context::raw_ssh_with(self.key, self.known_hosts, self.user, self.port, options, command);
        ssh.stdout(Stdio::piped()).stderr(Stdio::piped());
        ssh
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

/// Proves with the raw `ssh` client that `user`, logging in with `key` to
/// the sshd on 127.0.0.1:`port`, gets no terminal, no forwarding either
/// way and no tunnel, whatever it asks: only the inspector ever runs.
/// `inner_port` is that sshd's own port as the server sees it, the target
/// of the `-L` attempt (so a forward that worked would meet its banner).
pub fn assert_no_tty_forwarding_or_tunnel(
    key: &Path,
    known_hosts: &Path,
    user: &str,
    port: u16,
    inner_port: u16,
) {
    let login = RawLogin {
        key,
        known_hosts,
        user,
        port,
    };
    assert_no_tty(&login);
    assert_refused_forward(
        &login,
        "-R",
        "127.0.0.1:0:127.0.0.1:9",
        "remote port forwarding failed",
    );
    // The client opens a local tun device for -w first: unconfigured, and
    // gone when ssh exits.
    assert_refused_forward(&login, "-w", "any", "Tunnel forwarding failed");
    assert_no_local_forward(&login, inner_port);
}

/// -tt: sshd refuses the terminal (and ssh, told to insist, gives up); if
/// anything runs, it is the inspector, without a terminal.
fn assert_no_tty(login: &RawLogin) {
    let out = login.ssh(&["-tt"], Some("facts")).output().expect("run ssh -tt");
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        stderr.contains("PTY allocation request failed"),
        "ssh -tt got a terminal:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.is_empty() || (stdout.starts_with("respot-inspect\t1\tfacts\n") && !stdout.contains('\r')),
        "ssh -tt ran something else, or with a terminal: {stdout:?}"
    );
}

/// `flag value` (-R, -w): sshd refuses it, so with ExitOnForwardFailure
/// ssh gives up, saying `message`.
fn assert_refused_forward(login: &RawLogin, flag: &str, value: &str, message: &str) {
    let out = finished(login.ssh(&["-N", "-o", "ExitOnForwardFailure=yes", flag, value], None));
    assert!(
        !out.status.success() && text(&out.stderr).contains(message),
        "{flag} {value}: {:?}\n{}",
        out.status,
        text(&out.stderr)
    );
}

/// -L: the local listener opens, but sshd refuses every channel behind it:
/// a connection through it ends at once, without sshd's banner.
fn assert_no_local_forward(login: &RawLogin, inner_port: u16) {
    let local = free_port();
    let forward = format!("127.0.0.1:{local}:127.0.0.1:{inner_port}");
    let mut child = login
        .ssh(&["-N", "-o", "ExitOnForwardFailure=yes", "-L", &forward], None)
        .spawn()
        .expect("start ssh -L");
    let deadline = Instant::now() + Duration::from_secs(20);
    let stream = loop {
        if let Ok(stream) = std::net::TcpStream::connect(("127.0.0.1", local)) {
            break stream;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("ssh -L exited with {status} before listening");
        }
        assert!(Instant::now() < deadline, "ssh -L never listened on {local}");
        std::thread::sleep(Duration::from_millis(100));
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("read timeout");
    let mut got = Vec::new();
    let read = std::io::Read::read_to_end(&mut &stream, &mut got);
    super::stop_child(&mut child, Duration::from_secs(3));
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        // ssh has exited; what it wrote is in the pipe.
        let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
    }
    assert!(
        read.is_ok() && !text(&got).contains("SSH-"),
        "-L: the forward did not end at once, or reached sshd: {read:?} {:?}",
        text(&got)
    );
    assert!(stderr.contains("administratively prohibited"), "-L: {stderr}");
}

/// Runs `ssh` to its end, which must come within 30 s (a refused forward
/// ends it with ExitOnForwardFailure; one that was granted would not).
fn finished(mut ssh: Command) -> std::process::Output {
    let mut child = ssh.spawn().expect("start ssh");
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return child.wait_with_output().expect("collect ssh's output");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    super::stop_child(&mut child, Duration::from_secs(3));
    panic!("ssh still ran after 30 s: the server granted what it must refuse");
}
