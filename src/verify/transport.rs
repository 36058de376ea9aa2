//! The SSH transport: one ControlMaster per instance through the system
//! `ssh` (openssh crate, native mux), host keys checked against respot's
//! own known_hosts, authentication with the verification key only.
//!
//! It retries while an instance boots (refused, reset, the auth race before
//! the key is in place) until the deadline, and fails at once, never
//! retried, when a host presents a key other than the pinned one.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openssh::{ControlPersist, KnownHosts, Session, SessionBuilder};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::query::{Query, Reply};
use super::{Target, VerifyError, VerifySettings};
use crate::config::HostKeyPolicy;
use crate::keys::{KeyStore, known_hosts_pattern};

/// sshd's default `MaxStartups 10:30:100` starts dropping unauthenticated
/// connections at 10 in flight; stay below it even when every target is
/// the same sshd under another name.
const MAX_HANDSHAKES: usize = 8;
/// Targets verified at once, overall and per host (a host is an address:
/// several ports on one address are usually one sshd).
pub const MAX_TARGETS: usize = 16;
const MAX_PER_HOST: usize = 4;
/// A master idle this long exits by itself, so a killed respot leaves no
/// ssh processes behind for long.
const CONTROL_PERSIST_SECS: usize = 30;
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(4);
/// Exit code of the inspector when it refuses a query.
const INSPECTOR_REFUSED: i32 = 64;

/// Shared limits and the control socket directory of one run.
pub struct Transport {
    handshakes: Arc<Semaphore>,
    per_host: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Short on purpose: socket paths are limited to 108 bytes.
    control_dir: tempfile::TempDir,
}

impl Transport {
    pub fn new() -> Result<Transport, VerifyError> {
        let control_dir = tempfile::Builder::new()
            .prefix("respot-")
            .tempdir_in("/tmp")
            .map_err(VerifyError::ControlDir)?;
        Ok(Transport {
            handshakes: Arc::new(Semaphore::new(MAX_HANDSHAKES)),
            per_host: Mutex::new(HashMap::new()),
            control_dir,
        })
    }

    /// Waits for the per-host slot of `host`; hold it while talking to it.
    pub async fn host_slot(&self, host: &str) -> OwnedSemaphorePermit {
        let semaphore = {
            let mut map = self
                .per_host
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            map.entry(host.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(MAX_PER_HOST)))
                .clone()
        };
        semaphore
            .acquire_owned()
            .await
            .expect("host semaphores are never closed")
    }

    /// Connects to `target`, retrying while it is not ready, until `deadline`.
    pub async fn connect(
        &self,
        keys: &KeyStore,
        target: &Target,
        settings: &VerifySettings,
        deadline: Instant,
    ) -> Result<Connection, VerifyError> {
        let endpoint = known_hosts_pattern(&target.endpoint);
        let files = SshFiles {
            identity: keys.verify_key_path()?,
            config: keys.ssh_config()?,
            known_hosts: keys.known_hosts_path(),
        };
        let started = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        let mut attempts = 0u32;
        loop {
            let known = keys.is_known(&target.endpoint);
            let check = match (settings.host_keys, known) {
                (_, true) => KnownHosts::Strict,
                (HostKeyPolicy::RecordOnFirstUse, false) => KnownHosts::Add,
                (HostKeyPolicy::Pinned, false) => {
                    return Err(VerifyError::NotPinned { endpoint });
                }
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            attempts += 1;
            let result = {
                let _handshake = self
                    .handshakes
                    .acquire()
                    .await
                    .expect("the handshake semaphore is never closed");
                let builder = self.builder(&files, target, settings, check, remaining);
                tokio::time::timeout(
                    remaining.max(Duration::from_millis(1)),
                    builder.connect_mux(&target.endpoint.host),
                )
                .await
            };
            let message = match result {
                Ok(Ok(session)) => {
                    tracing::debug!(target = %target.name, attempts, "connected");
                    return Ok(Connection {
                        session,
                        target: target.name.clone(),
                    });
                }
                Ok(Err(err)) => ssh_message(&err),
                Err(_) => "the connection attempt timed out".to_string(),
            };
            match classify(&message) {
                Failure::Mismatch => {
                    return Err(VerifyError::HostKeyMismatch {
                        endpoint,
                        detail: last_line(&message),
                    });
                }
                Failure::NotPinned => return Err(VerifyError::NotPinned { endpoint }),
                Failure::NotReady => {
                    tracing::debug!(target = %target.name, attempts, %message, "not ready yet");
                }
            }
            let now = Instant::now();
            if now + backoff >= deadline {
                return Err(VerifyError::Unreachable {
                    endpoint,
                    waited: now.saturating_duration_since(started),
                    attempts,
                    last: last_line(&message),
                });
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn builder(
        &self,
        files: &SshFiles,
        target: &Target,
        settings: &VerifySettings,
        check: KnownHosts,
        remaining: Duration,
    ) -> SessionBuilder {
        let mut builder = SessionBuilder::default();
        builder
            .user(settings.user.clone())
            .port(target.endpoint.port)
            .keyfile(&files.identity)
            .known_hosts_check(check)
            .user_known_hosts_file(&files.known_hosts)
            .config_file(&files.config)
            .control_directory(self.control_dir.path())
            .control_persist(ControlPersist::IdleFor(
                NonZeroUsize::new(CONTROL_PERSIST_SECS).expect("a non-zero constant"),
            ))
            .connect_timeout(remaining.clamp(Duration::from_secs(1), MAX_CONNECT_TIMEOUT))
            .server_alive_interval(Duration::from_secs(5));
        builder
    }
}

/// The key store's files every ssh process of one connection uses.
struct SshFiles {
    identity: PathBuf,
    config: PathBuf,
    known_hosts: PathBuf,
}

/// One verified-host-key master connection.
pub struct Connection {
    session: Session,
    target: String,
}

impl Connection {
    /// Runs one query and parses the answer.
    pub async fn run(&self, query: &Query) -> Result<Reply, VerifyError> {
        let argv = query.argv();
        let output = self
            .session
            .raw_command(&argv[0])
            .raw_args(&argv[1..])
            .output()
            .await
            .map_err(|err| VerifyError::Session {
                target: self.target.clone(),
                query: query.to_string(),
                message: ssh_message(&err),
            })?;
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        match output.status.code() {
            Some(0) => Reply::parse(query, &String::from_utf8_lossy(&output.stdout)),
            Some(INSPECTOR_REFUSED) => Err(VerifyError::Refused {
                query: query.to_string(),
                reason: stderr,
            }),
            code => Err(VerifyError::Protocol {
                query: query.to_string(),
                message: format!(
                    "the inspector exited with {}: {stderr}",
                    code.map_or("a signal".to_string(), |c| c.to_string())
                ),
            }),
        }
    }

    pub async fn close(self) {
        if let Err(err) = self.session.close().await {
            // The master exits by itself after ControlPersist; nothing to undo.
            tracing::debug!(target = %self.target, "closing the ssh master: {err}");
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Failure {
    /// The host showed a key other than the pinned one.
    Mismatch,
    /// No key is pinned for the endpoint (pinned policy).
    NotPinned,
    /// Refused, reset, timed out, auth not ready: try again.
    NotReady,
}

/// Sorts an ssh error by what ssh printed. Anything about host keys that is
/// not clearly "unknown host" counts as a mismatch: loud, never retried.
fn classify(message: &str) -> Failure {
    let lower = message.to_ascii_lowercase();
    if lower.contains("identification has changed")
        || lower.contains("has changed and you have requested strict checking")
        || lower.contains("host key mismatch")
    {
        Failure::Mismatch
    } else if lower.contains("host key is known for") {
        Failure::NotPinned
    } else if lower.contains("host key verification failed") {
        Failure::Mismatch
    } else {
        Failure::NotReady
    }
}

fn ssh_message(err: &openssh::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn last_line(message: &str) -> String {
    let lines: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('@'))
        .collect();
    match lines
        .iter()
        .rev()
        .find(|l| l.contains("has changed") || l.contains("verification failed"))
    {
        Some(line) if lines.len() > 1 => format!("{}; {}", lines[0], line),
        _ => lines.join("; "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_errors_are_classified() {
        let cases = [
            (
                "ssh: connect to host 127.0.0.1 port 2222: Connection refused",
                Failure::NotReady,
            ),
            (
                "kex_exchange_identification: read: Connection reset by peer",
                Failure::NotReady,
            ),
            ("Connection closed by 127.0.0.1 port 2222", Failure::NotReady),
            (
                "root@127.0.0.1: Permission denied (publickey).",
                Failure::NotReady,
            ),
            (
                "@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@\nHost key for [127.0.0.1]:2222 has changed and you have requested strict checking.\nHost key verification failed.",
                Failure::Mismatch,
            ),
            (
                "No ED25519 host key is known for [127.0.0.1]:2222 and you have requested strict checking.\nHost key verification failed.",
                Failure::NotPinned,
            ),
            ("Host key verification failed.", Failure::Mismatch),
        ];
        for (message, want) in cases {
            assert_eq!(classify(message), want, "{message}");
        }
    }
}
