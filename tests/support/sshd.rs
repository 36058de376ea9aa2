//! A real OpenSSH server on 127.0.0.1 for verification tests: a non-daemon
//! child (`sshd -D -e -f cfg`) with its own host key and config, stopped by
//! PID in `Drop`, so a failing test still cleans up.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Sshd {
    child: Child,
    pub ports: Vec<u16>,
    log: PathBuf,
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

impl Sshd {
    /// Starts sshd in `dir` on `ports`, with `host_key` (OpenSSH private
    /// key text) and the authorized keys of user `u` in `keys_dir/u`, and
    /// waits until every port accepts.
    pub fn start(dir: &Path, host_key: &str, keys_dir: &Path, ports: &[u16]) -> Sshd {
        std::fs::create_dir_all(dir).expect("mkdir sshd dir");
        // sshd's privilege separation directory.
        std::fs::create_dir_all("/run/sshd").expect("create /run/sshd");
        let key_path = dir.join("host_key");
        let _ = std::fs::remove_file(&key_path);
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&key_path)
                .expect("write host key");
            f.write_all(host_key.as_bytes()).expect("write host key");
        }
        let mut config = format!(
            "ListenAddress 127.0.0.1\nHostKey {}\nPidFile none\nUsePAM no\nStrictModes no\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
             AuthorizedKeysFile {}/%u\nPermitRootLogin prohibit-password\nLogLevel VERBOSE\n\
             MaxStartups 10:30:100\nMaxSessions 10\nAcceptEnv none\n",
            key_path.display(),
            keys_dir.display()
        );
        for port in ports {
            config.push_str(&format!("Port {port}\n"));
        }
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

impl Drop for Sshd {
    fn drop(&mut self) {
        // Only our own child, by PID: TERM, then KILL if it lingers.
        super::stop_child(&mut self.child, Duration::from_secs(3));
    }
}
