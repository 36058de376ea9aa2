//! How far the check of each target got, while verification runs, for
//! progress displays. Verification calls a `Watch` and never knows what it
//! does with the news; without one, `verify` counts finished targets.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::Target;
use crate::output::Printer;

/// A step one target's verification reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// respot's verification login answered over SSH.
    Connected,
    /// cloud-init stopped running; its status (`done`, `degraded`, ...).
    CloudInit(String),
    /// The units were read back.
    Units,
    /// Every check of the target ran; `failure` names the first that failed.
    Done { failure: Option<String> },
}

/// Told about each stage of each target; must be cheap and never fail.
pub trait Watch: Sync {
    fn reached(&self, target: &Target, stage: Stage);
}

/// `verify`'s own progress: "verified 3/40: name" as targets finish.
pub(super) struct Counter<'a> {
    pub(super) printer: &'a Printer,
    pub(super) total: usize,
    pub(super) done: AtomicUsize,
}

impl Watch for Counter<'_> {
    fn reached(&self, target: &Target, stage: Stage) {
        if let Stage::Done { .. } = stage {
            let n = self.done.fetch_add(1, Ordering::Relaxed) + 1;
            self.printer
                .progress(&format!("verified {n}/{}: {}", self.total, target.name));
        }
    }
}
