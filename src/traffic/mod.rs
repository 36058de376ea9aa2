//! The front door: one stable address in front of a deployment, whose
//! weights decide which generation serves. `deploy` shifts traffic only
//! after verification, and shifting back is the rollback.
//!
//! `FrontDoor` is what the engine drives; it knows generations and
//! instances, never HAProxy or an ALB. Each implementation keeps its own
//! state where its provider keeps state (the local door in the deployment's
//! state directory, the ALB door in tags), so a run that dies mid-shift is
//! picked up by the next one from what the door reports, not from memory.

pub mod alb;
mod any;
pub mod haproxy;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::exit::ExitStatus;
use crate::provider::{Instance, InstanceId};

pub use any::AnyDoor;

/// Share of the traffic per generation, in percent. A generation that is
/// not listed gets none; the shares of a shift sum to 100, or to 0 for a
/// door that answers 503 (recreate's gap).
pub type Weights = BTreeMap<u64, u32>;

/// An old generation kept alive out of the door (`deploy --keep-old`), so
/// a rollback stays instant until `until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Kept {
    pub generation: u64,
    #[serde(serialize_with = "serialize_time")]
    pub until: SystemTime,
}

impl Kept {
    pub fn expired(&self, now: SystemTime) -> bool {
        now >= self.until
    }
}

/// What the door routes now, as read back from it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DoorState {
    /// Percent per generation; empty when the door does not exist yet.
    pub weights: Weights,
    /// Instances registered behind the door, by generation.
    pub targets: BTreeMap<u64, Vec<InstanceId>>,
    pub kept: Option<Kept>,
    /// The door's parts route differently (ALB listeners of a run killed
    /// mid-shift: some regions shifted, others not). `weights` is then the
    /// first part's; the next shift brings every part to the same weights.
    pub diverged: bool,
}

impl DoorState {
    /// The generations with a share, and their shares.
    pub fn serving_weights(&self) -> Weights {
        self.weights
            .iter()
            .filter(|(_, w)| **w > 0)
            .map(|(g, w)| (*g, *w))
            .collect()
    }

    /// The generation with the largest share (the newest on a tie), if any
    /// gets traffic.
    pub fn serving(&self) -> Option<u64> {
        self.weights
            .iter()
            .filter(|(_, w)| **w > 0)
            .max_by_key(|(g, w)| (**w, **g))
            .map(|(g, _)| *g)
    }
}

/// One request through the door, as the guard sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Probe {
    /// A 2xx answer.
    pub ok: bool,
    /// "200", "503", "connection refused": for the breach message.
    pub detail: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DoorError {
    #[error("the front door ({door}) could not {action}: {detail}")]
    Failed {
        door: String,
        action: String,
        detail: String,
    },
    #[error(
        "generation {generation} did not pass the front door's health check within {} s: {detail}; \
         `respot debug <id>` shows why",
        .waited.as_secs()
    )]
    Unhealthy {
        generation: u64,
        waited: Duration,
        detail: String,
    },
    #[error("the front door needs `{tool}`, which is not installed; {fix}")]
    MissingTool { tool: String, fix: String },
    #[error("front door state `{}`: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl DoorError {
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            DoorError::Unhealthy { .. } => ExitStatus::Failure,
            DoorError::Failed { .. } | DoorError::MissingTool { .. } | DoorError::Io { .. } => {
                ExitStatus::Provider
            }
        }
    }
}

pub type Result<T, E = DoorError> = std::result::Result<T, E>;

/// A deployment's front door. Every method is idempotent: the engine may
/// repeat a step after an interruption.
#[allow(async_fn_in_trait)]
pub trait FrontDoor {
    /// Where people reach it, for messages ("http://127.0.0.1:8000").
    fn describe(&self) -> String;

    /// Puts `targets` of `generation` behind the door (creating the door on
    /// first use), at no share of the traffic until a `shift` gives their
    /// generation one. Targets already registered stay.
    async fn register(&self, generation: u64, targets: &[Instance]) -> Result<()>;

    /// Waits until the door's own health check passes on every one of
    /// `targets`; `DoorError::Unhealthy` after `timeout`.
    async fn wait_healthy(&self, generation: u64, targets: &[Instance], timeout: Duration) -> Result<()>;

    /// Routes traffic by `weights`, without dropping a connection: one
    /// reload (local) or one listener change per region, in parallel (AWS).
    async fn shift(&self, weights: &Weights) -> Result<()>;

    /// Takes `targets` out of the door, letting connections in flight
    /// finish (the ALB's deregistration delay, HAProxy's drain state).
    async fn drain(&self, targets: &[Instance]) -> Result<()>;

    /// One HTTP request through the door to the health path.
    async fn probe(&self) -> Probe;

    /// What the door routes now; the default state when it does not exist.
    async fn state(&self) -> Result<DoorState>;

    /// Records (or clears) the generation kept out of the door.
    async fn keep(&self, kept: Option<Kept>) -> Result<()>;

    /// Removes the door and everything respot made for it (destroy of the
    /// whole deployment); what it removed, for the report.
    async fn remove(&self) -> Result<Vec<String>>;
}

fn serialize_time<S: serde::Serializer>(time: &SystemTime, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_rfc3339_seconds(*time).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_serving_generation_has_the_largest_share() {
        let state = |w: &[(u64, u32)]| DoorState {
            weights: w.iter().copied().collect(),
            ..DoorState::default()
        };
        assert_eq!(state(&[]).serving(), None);
        assert_eq!(state(&[(1, 0), (2, 0)]).serving(), None);
        assert_eq!(state(&[(1, 95), (2, 5)]).serving(), Some(1));
        assert_eq!(state(&[(1, 50), (2, 50)]).serving(), Some(2));
        assert_eq!(state(&[(1, 0), (2, 100)]).serving(), Some(2));
    }
}
