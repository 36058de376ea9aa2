//! `deploy`: a fresh generation replaces the live one. Nothing live is ever
//! modified; old instances are only terminated.

use serde::Serialize;

use super::create::launch_generation;
use super::{
    Confirm, CreateOptions, CreateReport, EngineError, Forget, Verification, confirm_or_refuse, count_by,
};
use crate::output::{Count, Printer};
use crate::provider::{DestroyReport, Instance, Provider};
use crate::template::Blueprint;

/// How `deploy` replaces a live generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Destroy the live generation, then create the new one (downtime,
    /// never two generations at once).
    #[default]
    Recreate,
    /// Create and verify the new generation next to the old one, then
    /// destroy the old one; a failed new generation is rolled back and the
    /// old one keeps running.
    BlueGreen,
    /// Behind a front door: shift to the new generation in steps
    /// (`traffic.steps`), held under the guard at each.
    Canary,
    /// Behind a front door: replace `traffic.batch` instances per region at
    /// a time, for fleets too large to double.
    Rolling,
}

impl Strategy {
    /// For people: what the strategy does with the old generation.
    pub fn describe(self) -> &'static str {
        match self {
            Strategy::Recreate => "recreate (destroy, then create)",
            Strategy::BlueGreen => "blue-green (create and verify, then destroy)",
            Strategy::Canary => "canary (shift in steps, guarded)",
            Strategy::Rolling => "rolling (replace in batches)",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct DeployOptions {
    pub strategy: Strategy,
    pub create: CreateOptions,
    /// Replace live instances without asking.
    pub yes: bool,
    /// With a front door: keep the old generation alive out of the door
    /// this long after a successful shift, so `rollback` stays instant.
    pub keep_old: Option<std::time::Duration>,
}

#[derive(Debug, Serialize)]
pub struct DeployReport {
    pub strategy: Strategy,
    /// The generations that were live before, now destroyed.
    pub replaced: Vec<Instance>,
    pub created: CreateReport,
    pub destroyed: Option<DestroyReport>,
    /// What the front door did; `None` without `[traffic]`.
    pub door: Option<super::rollout::DoorReport>,
}

/// Ships the current blueprint: a fresh generation replaces the live one.
pub async fn deploy<P: Provider, V: Verification>(
    provider: &P,
    verification: &V,
    blueprint: &Blueprint,
    options: &DeployOptions,
    confirm: Option<Confirm<'_>>,
    printer: &Printer,
) -> Result<DeployReport, EngineError> {
    let strategy = options.strategy;
    if matches!(strategy, Strategy::Canary | Strategy::Rolling) {
        let what = format!(
            "--strategy {}",
            if strategy == Strategy::Canary {
                "canary"
            } else {
                "rolling"
            }
        );
        return Err(EngineError::NeedsDoor { what });
    }
    if blueprint.git.dirty && !options.create.allow_dirty {
        return Err(EngineError::Dirty);
    }
    let deployment = &blueprint.deployment;
    let existing = provider.list(deployment).await?;
    let old: Vec<Instance> = existing.iter().filter(|i| i.state.is_live()).cloned().collect();
    if !old.is_empty() {
        printer.info(&format!(
            "`{deployment}`: {} will be replaced ({}): {}",
            Count(old.len(), "live instance"),
            match strategy {
                Strategy::Recreate => "recreate: destroyed first",
                _ => "blue-green: destroyed once the new generation is verified",
            },
            count_by(old.iter().map(|i| i.region.as_str()))
        ));
        if !options.yes {
            confirm_or_refuse(confirm, "replace", deployment, old.len())?;
        }
    }
    // Recreate: the old generation goes first, and the new one is numbered
    // after a fresh listing. Blue-green: the old one stays until the new one
    // is verified, and a failed new one is rolled back without touching it.
    let (existing, destroyed_first) = match strategy {
        Strategy::Recreate => {
            let destroyed = destroy_old(provider, verification, deployment, &old).await?;
            (provider.list(deployment).await?, destroyed)
        }
        _ => (existing, None),
    };
    let created = launch_generation(
        provider,
        verification,
        blueprint,
        &existing,
        &options.create,
        printer,
    )
    .await?;
    let destroyed = match strategy {
        Strategy::Recreate => destroyed_first,
        _ => {
            if !old.is_empty() {
                printer.info(&format!(
                    "generation {} is up; destroying the {}",
                    created.generation,
                    Count(old.len(), "old instance")
                ));
            }
            destroy_old(provider, verification, deployment, &old).await?
        }
    };
    Ok(DeployReport {
        strategy,
        replaced: old,
        created,
        destroyed,
        door: None,
    })
}

/// Terminates the replaced generation (waiting for it) and forgets its host
/// keys; `None` when nothing was live.
pub(super) async fn destroy_old<P: Provider, V: Forget>(
    provider: &P,
    verification: &V,
    deployment: &str,
    old: &[Instance],
) -> Result<Option<DestroyReport>, EngineError> {
    if old.is_empty() {
        return Ok(None);
    }
    let report = provider.destroy(deployment, old, true).await?;
    verification.forget(old);
    if !report.left_behind.is_empty() {
        return Err(EngineError::LeftBehind(report.left_behind));
    }
    Ok(Some(report))
}
