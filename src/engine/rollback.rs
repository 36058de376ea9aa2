//! `rollback`, the instant path: while the previous generation is alive
//! (kept with `--keep-old`, or still there after an interrupted deploy),
//! all traffic goes back to it in one shift, then the newer generation is
//! drained and destroyed.

use std::time::Instant;

use serde::Serialize;

use super::deploy::destroy_old;
use super::rollout::DOOR_HEALTH_TIMEOUT;
use super::{Confirm, EngineError, Forget, confirm_or_refuse, live};
use crate::output::{Count, Printer};
use crate::provider::{DestroyReport, Instance, Provider};
use crate::traffic::{FrontDoor, Weights};

#[derive(Debug, Serialize)]
pub struct RollbackReport {
    pub deployment: String,
    /// The generation that served before.
    pub from: u64,
    /// The generation that serves now.
    pub to: u64,
    /// Milliseconds from the decision to the door serving `to`.
    pub shift_ms: u128,
    pub destroyed: Option<DestroyReport>,
}

/// The generation the door serves and the newest older one still alive;
/// `None` for the second when there is nothing to go back to instantly.
pub fn previous_alive(live: &[Instance], serving: Option<u64>) -> (Option<u64>, Option<u64>) {
    let newest = live.iter().filter_map(|i| i.generation).max();
    let current = serving
        .filter(|g| live.iter().any(|i| i.generation == Some(*g)))
        .or(newest);
    let previous = current.and_then(|c| live.iter().filter_map(|i| i.generation).filter(|g| *g < c).max());
    (current, previous)
}

/// Shifts everything back to the previous generation, which must be alive,
/// then destroys the newer one. `NothingToRollBack` when it is gone: the
/// command then rolls back forward, from the history.
pub async fn rollback<P: Provider, F: Forget, D: FrontDoor>(
    provider: &P,
    host_keys: &F,
    door: &D,
    deployment: &str,
    yes: bool,
    confirm: Option<Confirm<'_>>,
    printer: &Printer,
) -> Result<RollbackReport, EngineError> {
    let live = live(provider, deployment).await?;
    let state = door.state().await?;
    let (Some(current), previous) = previous_alive(&live, state.serving()) else {
        return Err(EngineError::NothingToRollBack(format!(
            "`{deployment}` has no live instances"
        )));
    };
    let Some(previous) = previous else {
        return Err(EngineError::NothingToRollBack(format!(
            "generation {current} serves and no older generation of `{deployment}` is alive"
        )));
    };
    let back: Vec<Instance> = live
        .iter()
        .filter(|i| i.generation == Some(previous))
        .cloned()
        .collect();
    let newer: Vec<Instance> = live
        .iter()
        .filter(|i| i.generation.is_some_and(|g| g > previous))
        .cloned()
        .collect();
    printer.info(&format!(
        "rolling `{deployment}` back from generation {current} to generation {previous} \
         (alive: the instant path); then destroying {}",
        Count(newer.len(), "instance")
    ));
    if !yes {
        confirm_or_refuse(confirm, "roll back and terminate", deployment, newer.len())?;
    }
    let registered = state.targets.get(&previous).cloned().unwrap_or_default();
    if back.iter().any(|i| !registered.contains(&i.id)) {
        // A kept generation left the door: back in first, at no share, and
        // healthy before it takes the traffic.
        door.register(previous, &back).await?;
        door.wait_healthy(previous, &back, DOOR_HEALTH_TIMEOUT).await?;
    }
    let decided = Instant::now();
    let weights: Weights = [(previous, 100)].into_iter().collect();
    door.shift(&weights).await?;
    let shift_ms = decided.elapsed().as_millis();
    printer.info(&format!(
        "{} serves generation {previous} again ({shift_ms} ms)",
        door.describe()
    ));
    door.keep(None).await?;
    door.drain(&newer).await?;
    let destroyed = destroy_old(provider, host_keys, deployment, &newer).await?;
    Ok(RollbackReport {
        deployment: deployment.to_string(),
        from: current,
        to: previous,
        shift_ms,
        destroyed,
    })
}
