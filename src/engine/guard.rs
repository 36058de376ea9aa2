//! The guard: during each hold after a shift, HTTP probes through the front
//! door and the read-only `verify` of the new instances, repeated. A failed
//! verify, or a probe error rate above `traffic.max_error_rate`, is a
//! breach: the caller shifts everything back at once.

use std::time::Duration;

use tokio::time::Instant;

use serde::Serialize;

use super::{Verdict, Verification};
use crate::output::Printer;
use crate::provider::Instance;
use crate::traffic::FrontDoor;

/// Time between two probes through the door.
pub(super) const PROBE_EVERY: Duration = Duration::from_millis(200);
/// Time between two verify runs of the new instances.
const VERIFY_PAUSE: Duration = Duration::from_secs(1);

/// What one hold saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HoldReport {
    pub held_secs: f64,
    pub probes: usize,
    pub failed_probes: usize,
    /// Complete verify runs of the new instances, all passed (0 with
    /// `--no-verify`).
    pub verifies: usize,
}

/// Why the guard stopped a rollout.
#[derive(Debug)]
pub enum Breach {
    /// A verify of the new instances failed.
    Verify(Box<Verdict>),
    /// Too many probes through the door failed.
    ErrorRate {
        failed: usize,
        probes: usize,
        max_rate: f64,
        last: String,
    },
}

impl Breach {
    /// The failed check, for the error message.
    pub fn check(&self) -> String {
        match self {
            Breach::Verify(verdict) => format!("verify failed: {}", verdict.summary()),
            Breach::ErrorRate {
                failed,
                probes,
                max_rate,
                last,
            } => format!(
                "{failed} of {probes} probes through the front door failed (last: {last}), \
                 above traffic.max_error_rate = {max_rate}"
            ),
        }
    }
}

/// Holds for `hold` under the guard: probes through `door` and verifies
/// `green` again and again (at least once, even past the hold). Without a
/// `verification` (`--no-verify`) the guard runs its probes only.
pub(super) async fn hold<D: FrontDoor, V: Verification>(
    door: &D,
    verification: Option<&V>,
    green: &[Instance],
    hold: Duration,
    max_rate: f64,
    printer: &Printer,
) -> Result<HoldReport, Breach> {
    let watching = match verification {
        Some(_) => "and verify of the new instances",
        None => "only (--no-verify: the new instances are not verified over SSH)",
    };
    printer.info(&format!(
        "holding {} s under the guard: probes through {} {watching}",
        hold.as_secs(),
        door.describe()
    ));
    let started = Instant::now();
    let deadline = started + hold;
    // The budget in failed probes over the whole hold: passing it early is
    // already a breach.
    let expected = (hold.as_millis() / PROBE_EVERY.as_millis()).max(1) as f64;
    let probes = async {
        let (mut total, mut failed, mut last) = (0usize, 0usize, String::new());
        while Instant::now() < deadline {
            let probe = door.probe().await;
            total += 1;
            if !probe.ok {
                failed += 1;
                last = probe.detail;
                if failed as f64 > max_rate * expected {
                    return Err(Breach::ErrorRate {
                        failed,
                        probes: total,
                        max_rate,
                        last,
                    });
                }
            }
            tokio::time::sleep(PROBE_EVERY).await;
        }
        if total > 0 && failed as f64 / total as f64 > max_rate {
            return Err(Breach::ErrorRate {
                failed,
                probes: total,
                max_rate,
                last,
            });
        }
        Ok((total, failed))
    };
    let verifies = async {
        let mut runs = 0;
        let Some(verification) = verification else {
            return Ok(runs);
        };
        loop {
            let verdict = verification.verify(green).await;
            if !verdict.passed() {
                return Err(Breach::Verify(Box::new(verdict)));
            }
            runs += 1;
            if Instant::now() >= deadline {
                return Ok(runs);
            }
            tokio::time::sleep(VERIFY_PAUSE).await;
        }
    };
    let ((probes, failed_probes), verifies) = tokio::try_join!(probes, verifies)?;
    Ok(HoldReport {
        held_secs: started.elapsed().as_secs_f64(),
        probes,
        failed_probes,
        verifies,
    })
}
