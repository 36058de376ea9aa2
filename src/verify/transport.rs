//! The SSH transport: one ControlMaster per instance through the system
//! `ssh` (openssh crate, native mux), host keys checked against respot's
//! own known_hosts, logged in as `guest::VERIFY_USER` with the verification
//! key only.
//!
//! It retries while an instance boots (refused, reset, the auth race before
//! the key is in place) until the deadline, and fails at once, never
//! retried, when a host presents a key other than the pinned one. It reads
//! at most `MAX_REPLY_BYTES` of any answer, and strips control characters
//! from whatever the instance or ssh says before it becomes an error.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openssh::{ControlPersist, KnownHosts, Session, SessionBuilder, Stdio};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::kex;
use super::query::{MAX_REPLY_BYTES, Query, Reply};
use super::text::{one_line, strip_controls};
use super::{Target, VerifyError, VerifySettings};
use crate::config::HostKeyPolicy;
use crate::guest::VERIFY_USER;
use crate::keys::{KeyStore, known_hosts_pattern};
use crate::provider::SshEndpoint;

/// sshd's default `MaxStartups 10:30:100` starts dropping unauthenticated
/// connections at 10 in flight; stay below it per address, even when every
/// target is the same sshd under another name (`127.1`, `127.0.0.1`).
/// Targets at different addresses (a fleet) are bounded only by
/// `verify.concurrency`.
const MAX_HANDSHAKES_PER_ADDRESS: usize = 8;
/// Targets verified at once per host (a host is an address: several ports
/// on one address are usually one sshd).
const MAX_PER_HOST: usize = 4;
/// A master idle this long exits by itself, so a killed respot leaves no
/// ssh processes behind for long.
const CONTROL_PERSIST_SECS: usize = 30;
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(4);
/// Exit code of the inspector when it refuses a query.
const INSPECTOR_REFUSED: i32 = 64;
/// The inspector's stderr is one line of refusal at most; more is not its.
const MAX_STDERR_BYTES: usize = 64 * 1024;
/// One query's time limit: the per-instance timeout, within these bounds.
/// Every query is quick on a healthy instance (hashing is capped in the
/// inspector); one that hangs must not hold `verify` past its timeout.
const MIN_QUERY_TIMEOUT: Duration = Duration::from_secs(1);
const MAX_QUERY_TIMEOUT: Duration = Duration::from_secs(60);

/// How far the host key of a connection was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKeyTrust {
    /// Checked strictly against the key respot pinned before connecting.
    Pinned,
    /// Checked strictly against the key recorded at an earlier first
    /// contact (`host_keys = "record-on-first-use"`).
    Recorded,
    /// First contact under record-on-first-use: accepted and recorded, not
    /// checked against anything.
    FirstContact,
}

/// Shared limits and the control socket directory of one run.
pub struct Transport {
    /// Handshake slots per resolved IP address.
    handshakes: Mutex<HashMap<String, Arc<Semaphore>>>,
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
            handshakes: Mutex::new(HashMap::new()),
            per_host: Mutex::new(HashMap::new()),
            control_dir,
        })
    }

    /// Waits for the per-host slot of `host`; hold it while talking to it.
    pub async fn host_slot(&self, host: &str) -> OwnedSemaphorePermit {
        slot(&self.per_host, host, MAX_PER_HOST).await
    }

    /// Waits for a handshake slot of the address `endpoint` resolves to.
    async fn handshake_slot(&self, endpoint: &SshEndpoint) -> OwnedSemaphorePermit {
        let address = match tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port)).await {
            Ok(mut addresses) => addresses
                .next()
                .map_or_else(|| endpoint.host.clone(), |a| a.ip().to_string()),
            // ssh will say why it cannot connect; count it under its name.
            Err(_) => endpoint.host.clone(),
        };
        slot(&self.handshakes, &address, MAX_HANDSHAKES_PER_ADDRESS).await
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
            config: keys.ssh_config(kex::algorithms(settings.key_exchange)?.as_deref())?,
            known_hosts: keys.known_hosts_path(),
        };
        let started = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        let mut attempts = 0u32;
        loop {
            let known = keys.is_known(&target.endpoint);
            let (check, trust) = match (settings.host_keys, known) {
                (HostKeyPolicy::Pinned, true) => (KnownHosts::Strict, HostKeyTrust::Pinned),
                (HostKeyPolicy::RecordOnFirstUse, true) => (KnownHosts::Strict, HostKeyTrust::Recorded),
                (HostKeyPolicy::RecordOnFirstUse, false) => (KnownHosts::Add, HostKeyTrust::FirstContact),
                (HostKeyPolicy::Pinned, false) => {
                    return Err(VerifyError::NotPinned { endpoint });
                }
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            attempts += 1;
            let result = {
                let _handshake = self.handshake_slot(&target.endpoint).await;
                let builder = self.builder(&files, target, check, remaining);
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
                        trust,
                        query_timeout: settings.timeout.clamp(MIN_QUERY_TIMEOUT, MAX_QUERY_TIMEOUT),
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
        check: KnownHosts,
        remaining: Duration,
    ) -> SessionBuilder {
        let mut builder = SessionBuilder::default();
        builder
            .user(VERIFY_USER.to_string())
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

/// A slot of the semaphore `key` has in `map` (made with `permits` on
/// first use).
async fn slot(
    map: &Mutex<HashMap<String, Arc<Semaphore>>>,
    key: &str,
    permits: usize,
) -> OwnedSemaphorePermit {
    let semaphore = {
        let mut map = map.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        map.entry(key.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(permits)))
            .clone()
    };
    semaphore
        .acquire_owned()
        .await
        .expect("slot semaphores are never closed")
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
    trust: HostKeyTrust,
    /// How long one query may take before it counts as failed.
    query_timeout: Duration,
}

impl Connection {
    /// How far this connection's host key was checked.
    pub fn host_key_trust(&self) -> HostKeyTrust {
        self.trust
    }

    /// Runs one query and parses the answer. Past `MAX_REPLY_BYTES` of
    /// stdout (or `MAX_STDERR_BYTES` of stderr) it stops reading, leaves the
    /// command, and fails with a protocol error naming the query.
    pub async fn run(&self, query: &Query) -> Result<Reply, VerifyError> {
        match tokio::time::timeout(self.query_timeout, self.run_unbounded(query)).await {
            Ok(reply) => reply,
            // Dropping the future drops the channel; the master stays usable.
            Err(_) => Err(VerifyError::Session {
                target: self.target.clone(),
                query: query.to_string(),
                message: format!(
                    "no answer within {} s; the instance may be overloaded, or its inspector hung",
                    self.query_timeout.as_secs()
                ),
            }),
        }
    }

    async fn run_unbounded(&self, query: &Query) -> Result<Reply, VerifyError> {
        let argv = query.argv();
        let session_error = |message: String| VerifyError::Session {
            target: self.target.clone(),
            query: query.to_string(),
            message,
        };
        let mut child = self
            .session
            .raw_command(&argv[0])
            .raw_args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .await
            .map_err(|err| session_error(ssh_message(&err)))?;
        let (stdout, stderr) = match read_both(child.stdout().take(), child.stderr().take()).await {
            Ok(both) => both,
            Err(over) => {
                if let Err(err) = child.disconnect().await {
                    // The master closes with the connection; nothing to undo.
                    tracing::debug!(target = %self.target, "leaving `{query}`: {err}");
                }
                return Err(match over {
                    Overflow::Io(err) => session_error(err.to_string()),
                    Overflow::Stdout => VerifyError::Protocol {
                        query: query.to_string(),
                        message: format!(
                            "the reply is over respot's cap of {MAX_REPLY_BYTES} bytes; respot read no further"
                        ),
                    },
                    Overflow::Stderr => VerifyError::Protocol {
                        query: query.to_string(),
                        message: format!("the inspector wrote over {MAX_STDERR_BYTES} bytes to stderr"),
                    },
                });
            }
        };
        let status = child
            .wait()
            .await
            .map_err(|err| session_error(ssh_message(&err)))?;
        let stderr = one_line(&String::from_utf8_lossy(&stderr));
        match status.code() {
            Some(0) => Reply::parse(query, &stdout),
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

/// Why a command's output was not read to the end.
#[derive(Debug)]
enum Overflow {
    Stdout,
    Stderr,
    Io(std::io::Error),
}

/// Both streams of a command, read together (a full pipe would stall the
/// other), each up to its cap: at most one byte past it is ever read.
async fn read_both<O, E>(stdout: Option<O>, stderr: Option<E>) -> Result<(Vec<u8>, Vec<u8>), Overflow>
where
    O: AsyncRead + Unpin,
    E: AsyncRead + Unpin,
{
    let out = read_capped(stdout, MAX_REPLY_BYTES, Overflow::Stdout);
    let err = read_capped(stderr, MAX_STDERR_BYTES, Overflow::Stderr);
    // try_join: the first stream over its cap ends both reads at once.
    futures::try_join!(out, err)
}

async fn read_capped<R: AsyncRead + Unpin>(
    reader: Option<R>,
    cap: usize,
    over: Overflow,
) -> Result<Vec<u8>, Overflow> {
    let mut bytes = Vec::new();
    if let Some(reader) = reader {
        let limit = u64::try_from(cap).unwrap_or(u64::MAX).saturating_add(1);
        reader
            .take(limit)
            .read_to_end(&mut bytes)
            .await
            .map_err(Overflow::Io)?;
    }
    if bytes.len() > cap { Err(over) } else { Ok(bytes) }
}

/// ssh's error and its causes, control characters stripped (ssh relays
/// some text of the server's); line breaks stay for `last_line`.
fn ssh_message(err: &openssh::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    strip_controls(&text)
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

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime")
            .block_on(future)
    }

    #[test]
    fn reads_stop_one_byte_past_the_cap() {
        let at_cap = vec![b'x'; MAX_REPLY_BYTES];
        let (out, err) = block_on(read_both(Some(&at_cap[..]), Some(&b"refused\tno"[..]))).unwrap();
        assert_eq!(
            (out.len(), err.as_slice()),
            (MAX_REPLY_BYTES, &b"refused\tno"[..])
        );

        // An endless stdout: the read ends at cap + 1 bytes, as an overflow.
        let endless = tokio::io::repeat(b'y');
        let result = block_on(read_both(Some(endless), Some(&b""[..])));
        assert!(matches!(result, Err(Overflow::Stdout)), "{result:?}");
        let endless = tokio::io::repeat(b'z');
        let result = block_on(read_both(Some(&b"ok"[..]), Some(endless)));
        assert!(matches!(result, Err(Overflow::Stderr)), "{result:?}");
        let (out, err) = block_on(read_both(None::<&[u8]>, None::<&[u8]>)).unwrap();
        assert!(out.is_empty() && err.is_empty());
    }

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
