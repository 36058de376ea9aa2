//! Read-only verification of live instances over SSH.
//!
//! The only way this module (and so respot) talks to an instance is a
//! closed `Query` enum, answered by the inspector installed as the forced
//! command of respot's verification key (see `query`), logged in as
//! respot's own account `respot-verify`, never as `ssh.user`. The transport
//! pins host keys, bounds its own concurrency and caps every reply (see
//! `transport`). `checks` turns answers into pass/warn/fail rows, holding
//! the instance's lists to respot's own render (`expect`); `debug` turns
//! them into a report. Instance text loses its control characters before
//! anything prints it (`text`).
//!
//! Nothing here knows a provider: targets are endpoints. Nothing here can
//! change an instance.

mod checks;
mod debug;
mod expect;
mod facts;
#[cfg(test)]
mod inspector_tests;
mod kex;
pub mod query;
mod row;
mod text;
mod transport;
mod watch;

use std::time::Duration;

use futures::stream::{self, StreamExt};
use serde::Serialize;
use tokio::time::Instant;

pub use debug::{DebugReport, Section, debug_report};
pub use expect::{Expected, ExpectedEntry, ExpectedFile, ExpectedProbe, Shipped, expected_blueprint_inputs};
pub use query::{Query, UnitName};
pub use row::{CheckRow, Outcome};
pub use watch::{Stage, Watch};

use crate::config::HostKeyPolicy;
use crate::config::KeyExchange;
use crate::exit::ExitStatus;
use crate::keys::{KeyError, KeyStore};
use crate::output::{Printer, Table};
use crate::provider::SshEndpoint;
use text::one_line;
use transport::Transport;

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The key store (keys, known_hosts, ssh options) cannot be used.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// The directory for ssh's control sockets cannot be made.
    #[error("cannot create ssh's control socket directory in `/tmp`: {0}")]
    ControlDir(#[source] std::io::Error),
    #[error(
        "HOST KEY MISMATCH for `{endpoint}`: it presented a key other than the one respot pinned \
         ({detail}). This may be a man-in-the-middle; respot did not log in. If the instance was \
         really replaced, recreate it with `respot deploy` so its new key is pinned"
    )]
    HostKeyMismatch { endpoint: String, detail: String },
    #[error(
        "no host key is pinned for `{endpoint}` and `ssh.host_keys = \"pinned\"`; respot pins keys \
         when it launches instances, so this endpoint is not one of them (or set \
         `host_keys = \"record-on-first-use\"` in respot.toml)"
    )]
    NotPinned { endpoint: String },
    #[error("`{endpoint}` did not become reachable in {} ({attempts} attempts); last error: {last}", humantime::format_duration(std::time::Duration::from_millis(waited.as_millis() as u64 / 100 * 100)))]
    Unreachable {
        endpoint: String,
        waited: Duration,
        attempts: u32,
        last: String,
    },
    #[error("`{target}`: `{query}` failed over ssh: {message}")]
    Session {
        target: String,
        query: String,
        message: String,
    },
    #[error("the inspector refused `{query}`: {reason}")]
    Refused { query: String, reason: String },
    #[error("`{query}`: unexpected answer from the inspector: {message}")]
    Protocol { query: String, message: String },
    #[error(
        "`verify.key_exchange = \"post-quantum\"`, but this ssh offers none of {wanted}; \
         install OpenSSH 8.5 or later, or set `key_exchange = \"fast\"`"
    )]
    NoPostQuantumKex { wanted: String },
}

impl VerifyError {
    /// Key-store problems keep their own status; anything that went wrong
    /// talking to an instance means the verification failed.
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            VerifyError::Keys(err) => err.exit_status(),
            VerifyError::ControlDir(_) | VerifyError::NoPostQuantumKex { .. } => ExitStatus::Usage,
            VerifyError::HostKeyMismatch { .. }
            | VerifyError::NotPinned { .. }
            | VerifyError::Unreachable { .. }
            | VerifyError::Session { .. }
            | VerifyError::Refused { .. }
            | VerifyError::Protocol { .. } => ExitStatus::Failure,
        }
    }

    /// True for a possible man in the middle.
    pub fn is_host_key_mismatch(&self) -> bool {
        matches!(self, VerifyError::HostKeyMismatch { .. })
    }
}

/// One instance to verify.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// The instance id (or, without a provider, the endpoint).
    pub instance: String,
    /// The instance's name, for people.
    pub name: String,
    pub endpoint: SshEndpoint,
}

/// How verification runs. There is no user to choose: respot logs in as
/// `guest::VERIFY_USER` only.
#[derive(Debug, Clone)]
pub struct VerifySettings {
    /// How long to wait for each instance (boot included).
    pub timeout: Duration,
    /// Warnings (cloud-init degraded, nothing to check) fail.
    pub strict: bool,
    pub host_keys: HostKeyPolicy,
    /// Targets verified at once (`verify.concurrency`, at least 1).
    pub concurrency: usize,
    /// The key exchange offered (`verify.key_exchange`).
    pub key_exchange: KeyExchange,
}

/// Every check of every instance.
#[derive(Debug, Clone, Serialize)]
pub struct FleetReport {
    pub passed: bool,
    pub instances: usize,
    pub failed_instances: Vec<String>,
    pub checks: Vec<CheckRow>,
}

impl FleetReport {
    /// The report of `instances` instances from their check rows; it passes
    /// when there was something to check and no row failed.
    pub fn new(instances: usize, checks: Vec<CheckRow>) -> FleetReport {
        let mut failed_instances: Vec<String> = checks
            .iter()
            .filter(|c| c.result == Outcome::Fail)
            .map(|c| c.instance.clone())
            .collect();
        failed_instances.dedup();
        FleetReport {
            passed: failed_instances.is_empty() && instances > 0,
            instances,
            failed_instances,
            checks,
        }
    }

    pub fn passed(&self) -> bool {
        self.passed
    }

    /// The rows for people. Checks and details hold instance text, so every
    /// cell loses its control characters (and line breaks) here too.
    pub fn table(&self) -> Table {
        let mut table = Table::new(["instance", "check", "result", "detail"]);
        for row in &self.checks {
            table.row([
                one_line(&row.instance),
                one_line(&row.check),
                row.result.to_string(),
                one_line(&row.detail),
            ]);
        }
        table
    }

    /// `name check: detail` of every failed row, one line each.
    pub fn failures(&self) -> Vec<String> {
        self.checks
            .iter()
            .filter(|c| c.result == Outcome::Fail)
            .map(|c| one_line(&format!("{} {}: {}", c.name, c.check, c.detail)))
            .collect()
    }

    /// One line for people, e.g. `verified 2/2 instances`.
    pub fn summary(&self) -> String {
        let ok = self.instances - self.failed_instances.len();
        format!("verified {ok}/{} instances", self.instances)
    }
}

/// Verifies every target: connects (waiting for boot up to
/// `settings.timeout`), asks the inspector, and checks the answers. Never
/// fails as a whole: an unreachable instance or a host key mismatch is a
/// failed check of that instance, and the others still run.
///
/// At most `settings.concurrency` targets run at once, so descriptors, ssh
/// processes and memory stay bounded whatever the fleet size. Each target's
/// timeout starts when its turn does: one that cannot be reached holds its
/// own slot for its own timeout, never the others'.
pub async fn verify_fleet(
    keys: &KeyStore,
    targets: &[Target],
    expected: &Expected,
    settings: &VerifySettings,
    printer: &Printer,
) -> FleetReport {
    let counter = watch::Counter {
        printer,
        total: targets.len(),
        done: std::sync::atomic::AtomicUsize::new(0),
    };
    verify_fleet_watched(keys, targets, expected, settings, printer, &counter).await
}

/// [`verify_fleet`], telling `watch` each stage each target reaches.
pub async fn verify_fleet_watched(
    keys: &KeyStore,
    targets: &[Target],
    expected: &Expected,
    settings: &VerifySettings,
    printer: &Printer,
    watch: &dyn Watch,
) -> FleetReport {
    let transport = match Transport::new() {
        Ok(t) => t,
        Err(err) => {
            let rows = targets
                .iter()
                .map(|t| CheckRow::new(t, "reachable", Outcome::Fail, err.to_string()))
                .collect();
            return FleetReport::new(targets.len(), rows);
        }
    };
    let done = std::sync::atomic::AtomicUsize::new(0);
    let total = targets.len();
    let mut per_target: Vec<(usize, Vec<CheckRow>)> = stream::iter(targets.iter().enumerate())
        .map(|(i, target)| {
            let transport = &transport;
            let done = &done;
            async move {
                // A target's time limit starts when its turn comes, so a
                // queue of 1,000 never eats the limit of the last ones.
                let deadline = Instant::now() + settings.timeout;
                let rows =
                    checks::verify_target(transport, keys, target, expected, settings, deadline, watch).await;
                for row in rows.iter().filter(|r| r.mismatch) {
                    printer.error(&one_line(&row.detail));
                }
                let failure = rows
                    .iter()
                    .find(|r| r.result == Outcome::Fail)
                    .map(|r| one_line(&format!("{}: {}", r.check, r.detail)));
                watch.reached(target, Stage::Done { failure });
                let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                printer.progress(&progress_line(n, total, &target.name));
                (i, rows)
            }
        })
        .buffer_unordered(settings.concurrency.max(1))
        .collect()
        .await;
    per_target.sort_by_key(|(i, _)| *i);
    let rows = per_target.into_iter().flat_map(|(_, rows)| rows).collect();
    FleetReport::new(targets.len(), rows)
}

/// `verified 12/1000, 988 remaining: web-3`.
fn progress_line(done: usize, total: usize, name: &str) -> String {
    format!(
        "verified {done}/{total}, {} remaining: {}",
        total.saturating_sub(done),
        one_line(name)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_says_how_many_remain() {
        assert_eq!(
            progress_line(12, 1000, "web-3"),
            "verified 12/1000, 988 remaining: web-3"
        );
        assert_eq!(progress_line(3, 3, "x"), "verified 3/3, 0 remaining: x");
    }
}
