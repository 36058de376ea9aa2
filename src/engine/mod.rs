//! The lifecycle: create (launch, verify, roll back), deploy, destroy and
//! plan, against any `Provider`.
//!
//! The engine decides *what* happens and in which order; providers decide
//! *how*. It never imports an SDK, starts a process or talks SSH: it asks a
//! `Verification` to check a generation and gets back a typed report.
//! Rollback does not trust in-memory state: every resource is tagged with
//! its generation at launch, so the engine finds what a failed or
//! interrupted run launched by listing, even when the launch future was
//! dropped halfway.
//!
//! It prints progress through the `Printer` but never a report: reports go
//! back to the command, which owns how they look.

mod bad_pools;
mod create;
mod deploy;
mod destroy;
mod guard;
mod heal;
mod plan;
mod rollback;
mod rolling;
mod rollout;
#[cfg(test)]
pub(crate) mod tests;

use std::collections::BTreeMap;

use serde::Serialize;

pub use bad_pools::{BadPool, BadPools};
pub use create::{CreateOptions, CreateReport, create};
pub use deploy::{DeployOptions, DeployReport, Strategy, deploy};
pub use destroy::{DestroyOptions, DestroyOutcome, destroy};
pub use guard::HoldReport;
pub use heal::{Assessment, HealDoor, HealOptions, HealReport, NoFrontDoor, assess, heal};
pub use plan::{Change, Plan, PlanRegion, plan};
pub use rollback::{RollbackReport, rollback};
pub use rollout::{DoorReport, Shift, rollout};

use crate::exit::ExitStatus;
use crate::keys::KeyError;
use crate::output::Count;
use crate::provider::{DestroyReport, Instance, Provider, ProviderError};
use crate::template::{LaunchMaterial, TemplateError};
use crate::traffic::DoorError;
use crate::verify::FleetReport;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(
        "deployment `{deployment}` already has {} ({regions}); \
         run `respot destroy` first: a partial deployment is never patched in place",
        Count(*.count, "live instance")
    )]
    AlreadyLive {
        deployment: String,
        count: usize,
        regions: String,
    },
    #[error(
        "the blueprint's git tree is dirty, so instances could not name the commit they came from; \
         commit your changes, or pass --allow-dirty"
    )]
    Dirty,
    #[error(
        "refusing to {action} {} of `{deployment}` without confirmation: \
         stdin is not a terminal; pass --yes",
        Count(*.count, "instance")
    )]
    NeedsConfirmation {
        action: &'static str,
        deployment: String,
        count: usize,
    },
    #[error("cancelled: nothing was changed")]
    Declined,
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// The create failed and what it launched was terminated. `verdict` is
    /// the failed verification, when verification was the reason.
    #[error("create failed and was rolled back: {reason}{}", left_behind_note(.cleanup))]
    RolledBack {
        reason: String,
        cleanup: DestroyReport,
        verdict: Option<Box<Verdict>>,
    },
    /// The create failed; `--keep-on-failure` kept the instances for `debug`.
    #[error(
        "create failed; kept {} for `respot debug` (--keep-on-failure): {reason}",
        Count(*.kept, "instance")
    )]
    Kept {
        reason: String,
        kept: usize,
        verdict: Option<Box<Verdict>>,
    },
    #[error("destroy left resources behind: {}", .0.join(", "))]
    LeftBehind(Vec<String>),
    #[error(transparent)]
    Door(#[from] DoorError),
    /// The guard saw a breach during a hold: traffic went back, the new
    /// generation was destroyed.
    #[error("{0}")]
    Breach(Box<BreachReport>),
    #[error("{what} needs a front door: add a `[traffic]` section to respot.toml")]
    NeedsDoor { what: String },
    #[error("nothing to roll back: {0}")]
    NothingToRollBack(String),
    #[error(
        "`{deployment}` has no live generation to heal: nothing runs, and nothing was taken by the \
         provider; run `respot create`"
    )]
    NothingToHeal { deployment: String },
    #[error(
        "generation {generation} of `{deployment}` runs digest {live}, but the blueprint now renders \
         {current}: that is a deploy, not a heal; run `respot deploy` (heal only restores the \
         live digest)"
    )]
    HealIsDeploy {
        deployment: String,
        generation: u64,
        live: String,
        current: String,
    },
    /// The heal failed and what it launched was terminated; the instances
    /// that were healthy before were not touched.
    #[error("heal failed and what it launched was rolled back: {reason}{}", left_behind_note(.cleanup))]
    HealRolledBack {
        reason: String,
        cleanup: DestroyReport,
        verdict: Option<Box<Verdict>>,
    },
}

impl EngineError {
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            EngineError::Dirty | EngineError::NeedsConfirmation { .. } | EngineError::NeedsDoor { .. } => {
                ExitStatus::Usage
            }
            EngineError::Door(err) => err.exit_status(),
            EngineError::Breach(_) | EngineError::NothingToRollBack(_) => ExitStatus::Failure,
            EngineError::Keys(err) => err.exit_status(),
            EngineError::Template(err) => err.exit_status(),
            EngineError::Provider(err) => err.exit_status(),
            EngineError::AlreadyLive { .. }
            | EngineError::Declined
            | EngineError::RolledBack { .. }
            | EngineError::Kept { .. }
            | EngineError::LeftBehind(_)
            | EngineError::NothingToHeal { .. }
            | EngineError::HealIsDeploy { .. }
            | EngineError::HealRolledBack { .. } => ExitStatus::Failure,
        }
    }

    /// The failed verification behind a rollback, for the command to show
    /// before the error: it says which check failed.
    pub fn verdict(&self) -> Option<&Verdict> {
        match self {
            EngineError::RolledBack { verdict, .. }
            | EngineError::Kept { verdict, .. }
            | EngineError::HealRolledBack { verdict, .. } => verdict.as_deref(),
            EngineError::Breach(breach) => breach.verdict.as_deref(),
            _ => None,
        }
    }
}

/// What the guard stopped, where traffic went, and how to look.
#[derive(Debug)]
pub struct BreachReport {
    pub generation: u64,
    /// The failed check.
    pub check: String,
    pub back_on: String,
    /// The `respot debug` command for the failing instance.
    pub debug: String,
    pub cleanup: DestroyReport,
    pub verdict: Option<Box<Verdict>>,
}

impl std::fmt::Display for BreachReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the guard stopped generation {}: {}; traffic is back on {}; generation {} was destroyed ({}){}; \
             before the next deploy, see why with `{}`",
            self.generation,
            self.check,
            self.back_on,
            self.generation,
            self.cleanup.summary(),
            left_behind_note(&self.cleanup),
            self.debug
        )
    }
}

fn left_behind_note(cleanup: &DestroyReport) -> String {
    if cleanup.left_behind.is_empty() {
        String::new()
    } else {
        format!(
            "; rollback LEFT BEHIND: {} (run `respot destroy`)",
            cleanup.left_behind.join(", ")
        )
    }
}

/// The result of verifying a generation: the typed fleet report, and
/// whether every launched instance could be checked at all.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub report: FleetReport,
    /// Instances launched but not verifiable (no SSH endpoint).
    pub unreachable: usize,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.report.passed() && self.unreachable == 0
    }

    /// One line for the failure message, e.g. "verified 1/2 instances; failed: ...".
    pub fn summary(&self) -> String {
        let mut summary = self.report.summary();
        let failed = self.report.failures();
        if !failed.is_empty() {
            summary.push_str(&format!("; failed: {}", failed.join("; ")));
        }
        if self.unreachable > 0 {
            summary.push_str(&format!(
                "; {} without an SSH endpoint",
                Count(self.unreachable, "instance")
            ));
        }
        summary
    }
}

/// Forgets what the operator's machine remembers of instances that are gone
/// (their pinned host keys).
pub trait Forget {
    fn forget(&self, instances: &[Instance]);
}

/// What verification needs from the lifecycle. Implemented over SSH by the
/// commands; the engine only decides when to call it.
#[allow(async_fn_in_trait)]
pub trait Verification: Forget {
    /// Key material for a new generation: the pinned host key and the
    /// verification key go into the launch part of the user-data.
    fn launch_material(&self, generation: u64) -> Result<LaunchMaterial, KeyError>;
    /// Verifies freshly launched instances (pinning their host keys first).
    async fn verify(&self, instances: &[Instance]) -> Verdict;

    /// Key material for more instances of a live generation (`heal`): the
    /// generation's own host key, never a fresh one, so its other
    /// instances stay pinned. By default, the same as a new generation's.
    fn heal_material(&self, generation: u64) -> Result<LaunchMaterial, KeyError> {
        self.launch_material(generation)
    }
}

/// Asks a person to confirm; `Ok(false)` when they decline. `None` where
/// no person can answer (stdin is not a terminal).
pub type Confirm<'a> = &'a dyn Fn(&str) -> std::io::Result<bool>;

/// Asks `question` when a person can answer; without a terminal, refuses
/// (scripts must pass --yes). A declined answer is `EngineError::Declined`.
fn confirm_or_refuse(
    confirm: Option<Confirm<'_>>,
    action: &'static str,
    deployment: &str,
    count: usize,
) -> Result<(), EngineError> {
    let Some(ask) = confirm else {
        return Err(EngineError::NeedsConfirmation {
            action,
            deployment: deployment.to_string(),
            count,
        });
    };
    let question = format!("{action} {} of `{deployment}`?", Count(count, "instance"));
    match ask(&question) {
        Ok(true) => Ok(()),
        // An unreadable answer is not a yes.
        Ok(false) | Err(_) => Err(EngineError::Declined),
    }
}

/// The live instances of `deployment`, as the provider lists them now.
async fn live<P: Provider>(provider: &P, deployment: &str) -> Result<Vec<Instance>, ProviderError> {
    Ok(provider
        .list(deployment)
        .await?
        .into_iter()
        .filter(|i| i.state.is_live())
        .collect())
}

/// The next generation: one above any the provider still remembers.
pub fn next_generation(instances: &[Instance]) -> u64 {
    instances.iter().filter_map(|i| i.generation).max().unwrap_or(0) + 1
}

/// "eu-west-1: 2, us-east-1: 3"
pub fn count_by<'a>(keys: impl Iterator<Item = &'a str>) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for key in keys {
        *counts.entry(key).or_default() += 1;
    }
    counts
        .iter()
        .map(|(k, n)| format!("{k}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}
