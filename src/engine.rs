//! The lifecycle: create (launch, verify, roll back), destroy and list,
//! against any `Provider`.
//!
//! The engine decides *what* happens and in which order; providers decide
//! *how*. It never imports an SDK or starts a process. Rollback does not
//! trust in-memory state: every resource is tagged with its generation at
//! launch, so the engine finds what a failed or interrupted run launched by
//! listing, even when the launch future was dropped halfway.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::output::Printer;
use crate::provider::{DestroyReport, Instance, LaunchRequest, Lifecycle, Provider, ProviderError};
use crate::template::{Blueprint, LaunchMaterial, TemplateError};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(
        "deployment `{deployment}` already has {count} live instance(s) ({regions}); \
         run `respot destroy` first: a partial deployment is never patched in place"
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
        "refusing to destroy {count} instance(s) of `{deployment}` without confirmation: \
         stdin is not a terminal; pass --yes"
    )]
    NeedsConfirmation { deployment: String, count: usize },
    #[error("cancelled: nothing was changed")]
    Declined,
    #[error("{0}")]
    Keys(String),
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// The create failed and what it launched was terminated.
    #[error("create failed and was rolled back: {reason}{}", left_behind_note(.cleanup))]
    RolledBack { reason: String, cleanup: DestroyReport },
    /// The create failed; `--keep-on-failure` kept the instances for `debug`.
    #[error("create failed; kept {kept} instance(s) for `respot debug` (--keep-on-failure): {reason}")]
    Kept { reason: String, kept: usize },
    #[error("destroy left resources behind: {}", .0.join(", "))]
    LeftBehind(Vec<String>),
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

/// The result of verifying a fleet, as the engine needs it.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub passed: bool,
    /// One line for the failure message, e.g. "1 of 2 instances failed: ...".
    pub summary: String,
    /// The full report, for `--output json`.
    pub report: serde_json::Value,
    /// The human table.
    #[serde(skip)]
    pub table: String,
}

/// What verification needs from the lifecycle. Implemented by `verify`;
/// the engine only decides when to call it.
#[allow(async_fn_in_trait)]
pub trait Verification {
    /// Key material for a new generation: the pinned host key and the
    /// verification key go into the launch part of the user-data.
    fn launch_material(&self, generation: u64) -> Result<LaunchMaterial, String>;
    /// Verifies freshly launched instances (pinning their host keys first).
    async fn verify(&self, instances: &[Instance]) -> Verdict;
    /// The instances are gone: forget their host keys.
    fn forget(&self, instances: &[Instance]);
}

#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub allow_dirty: bool,
    pub keep_on_failure: bool,
    pub verify: bool,
}

#[derive(Debug, Serialize)]
pub struct CreateReport {
    pub deployment: String,
    pub digest: String,
    pub version: String,
    pub generation: u64,
    pub gzipped: bool,
    pub user_data_bytes: usize,
    pub instances: Vec<Instance>,
    /// `None` with `--no-verify`.
    pub verification: Option<Verdict>,
}

enum Outcome<T> {
    Done(T),
    Interrupted,
}

/// Runs `work` unless Ctrl-C comes first; then the future is dropped.
async fn interruptible<T>(work: impl std::future::Future<Output = T>) -> Outcome<T> {
    tokio::select! {
        result = work => Outcome::Done(result),
        _ = tokio::signal::ctrl_c() => Outcome::Interrupted,
    }
}

/// The next generation: one above any the provider still remembers.
pub fn next_generation(instances: &[Instance]) -> u64 {
    instances.iter().filter_map(|i| i.generation).max().unwrap_or(0) + 1
}

/// Launches a fresh generation, verifies it, and rolls back on any failure
/// or Ctrl-C unless `keep_on_failure`.
pub async fn create<P: Provider, V: Verification>(
    provider: &P,
    verification: &V,
    blueprint: &Blueprint,
    options: &CreateOptions,
    printer: &Printer,
) -> Result<CreateReport, EngineError> {
    if blueprint.git.dirty && !options.allow_dirty {
        return Err(EngineError::Dirty);
    }
    let deployment = &blueprint.deployment;
    let existing = provider.list(deployment).await?;
    let live: Vec<&Instance> = existing.iter().filter(|i| i.state.is_live()).collect();
    if !live.is_empty() {
        return Err(EngineError::AlreadyLive {
            deployment: deployment.clone(),
            count: live.len(),
            regions: count_by(live.iter().map(|i| i.region.as_str())),
        });
    }
    launch_generation(provider, verification, blueprint, &existing, options, printer).await
}

/// Launches and verifies the generation after `existing`'s, rolling back
/// only that generation on failure: live instances of older generations
/// (blue-green) are never touched here.
async fn launch_generation<P: Provider, V: Verification>(
    provider: &P,
    verification: &V,
    blueprint: &Blueprint,
    existing: &[Instance],
    options: &CreateOptions,
    printer: &Printer,
) -> Result<CreateReport, EngineError> {
    let deployment = &blueprint.deployment;
    let generation = next_generation(existing);
    let material = verification
        .launch_material(generation)
        .map_err(EngineError::Keys)?;
    let user_data = blueprint.user_data(&material)?;
    let request = LaunchRequest {
        deployment: deployment.clone(),
        digest: blueprint.digest.clone(),
        version: blueprint.version.clone(),
        generation,
        user_data,
    };
    printer.info(&format!(
        "creating generation {generation} of `{deployment}` ({}), {} bytes of user-data{}",
        blueprint.version,
        request.user_data.packed.len(),
        if request.user_data.gzipped { " (gzip)" } else { "" }
    ));
    let instances = match interruptible(provider.launch(&request)).await {
        Outcome::Done(Ok(instances)) => instances,
        Outcome::Done(Err(err)) => {
            return Err(fail_create(
                provider,
                verification,
                &request,
                options,
                printer,
                err.to_string(),
                false,
            )
            .await);
        }
        Outcome::Interrupted => {
            printer.warn("interrupted: rolling back what this run launched");
            let reason = "interrupted by Ctrl-C during launch".to_string();
            return Err(fail_create(provider, verification, &request, options, printer, reason, true).await);
        }
    };
    printer.info(&format!("{} instance(s) running", instances.len()));
    let verification_result = if options.verify {
        printer.info("verifying over SSH with the read-only inspector");
        let verdict = match interruptible(verification.verify(&instances)).await {
            Outcome::Done(verdict) => verdict,
            Outcome::Interrupted => {
                printer.warn("interrupted: rolling back what this run launched");
                let reason = "interrupted by Ctrl-C during verification".to_string();
                return Err(
                    fail_create(provider, verification, &request, options, printer, reason, true).await,
                );
            }
        };
        if !verdict.passed {
            if !printer.is_json() {
                // The table says which check failed before the rollback erases the evidence.
                eprint!("{}", verdict.table);
            }
            let reason = format!("verification failed: {}", verdict.summary);
            return Err(fail_create(provider, verification, &request, options, printer, reason, false).await);
        }
        Some(verdict)
    } else {
        printer.warn("--no-verify: instances are running but were NOT verified over SSH");
        None
    };
    Ok(CreateReport {
        deployment: deployment.clone(),
        digest: blueprint.digest.to_string(),
        version: blueprint.version.clone(),
        generation,
        gzipped: request.user_data.gzipped,
        user_data_bytes: request.user_data.packed.len(),
        instances,
        verification: verification_result,
    })
}

/// Rolls back (or keeps) everything of `request`'s generation.
async fn fail_create<P: Provider, V: Verification>(
    provider: &P,
    verification: &V,
    request: &LaunchRequest,
    options: &CreateOptions,
    printer: &Printer,
    reason: String,
    interrupted: bool,
) -> EngineError {
    let launched = match generation_instances(provider, request).await {
        Ok(instances) => instances,
        Err(err) => {
            return EngineError::RolledBack {
                reason,
                cleanup: DestroyReport {
                    left_behind: vec![format!("unknown: could not list instances to roll back: {err}")],
                    ..DestroyReport::default()
                },
            };
        }
    };
    if options.keep_on_failure {
        return EngineError::Kept {
            reason,
            kept: launched.len(),
        };
    }
    printer.info(&format!(
        "rolling back: terminating {} instance(s)",
        launched.len()
    ));
    let mut cleanup = match provider.destroy(&request.deployment, &launched, true).await {
        Ok(report) => report,
        Err(err) => DestroyReport {
            left_behind: vec![format!("rollback failed: {err}")],
            ..DestroyReport::default()
        },
    };
    verification.forget(&launched);
    // A launch call dropped mid-flight (Ctrl-C) may still complete on the
    // provider's side after the first listing: look again for stragglers of
    // this generation, for longer than one API call takes to land.
    let pauses: &[u64] = if interrupted { &[500, 2_500, 5_000] } else { &[500] };
    for pause in pauses {
        tokio::time::sleep(Duration::from_millis(*pause)).await;
        let Ok(stragglers) = generation_instances(provider, request).await else {
            continue;
        };
        if stragglers.is_empty() {
            continue;
        }
        printer.info(&format!(
            "rolling back {} straggler instance(s)",
            stragglers.len()
        ));
        match provider.destroy(&request.deployment, &stragglers, true).await {
            Ok(report) => {
                cleanup.terminated.extend(report.terminated);
                cleanup.cleaned.extend(report.cleaned);
                cleanup.left_behind.extend(report.left_behind);
            }
            Err(err) => cleanup
                .left_behind
                .push(format!("straggler rollback failed: {err}")),
        }
        verification.forget(&stragglers);
    }
    EngineError::RolledBack { reason, cleanup }
}

async fn generation_instances<P: Provider>(
    provider: &P,
    request: &LaunchRequest,
) -> Result<Vec<Instance>, ProviderError> {
    Ok(provider
        .list(&request.deployment)
        .await?
        .into_iter()
        .filter(|i| i.state.is_live() && i.generation == Some(request.generation))
        .collect())
}

/// How `deploy` replaces a live generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, clap::ValueEnum)]
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
}

#[derive(Debug, Clone, Default)]
pub struct DeployOptions {
    pub strategy: Strategy,
    pub create: CreateOptions,
    /// Replace live instances without asking.
    pub yes: bool,
}

#[derive(Debug, Serialize)]
pub struct DeployReport {
    pub strategy: Strategy,
    /// The generations that were live before, now destroyed.
    pub replaced: Vec<Instance>,
    pub created: CreateReport,
    pub destroyed: Option<DestroyReport>,
}

/// Ships the current blueprint: a fresh generation replaces the live one.
/// Nothing live is ever modified; old instances are only terminated.
pub async fn deploy<P: Provider, V: Verification>(
    provider: &P,
    verification: &V,
    blueprint: &Blueprint,
    deploy: &DeployOptions,
    confirm: Option<Confirm<'_>>,
    printer: &Printer,
) -> Result<DeployReport, EngineError> {
    let (strategy, options, yes) = (deploy.strategy, &deploy.create, deploy.yes);
    if blueprint.git.dirty && !options.allow_dirty {
        return Err(EngineError::Dirty);
    }
    let deployment = &blueprint.deployment;
    let existing = provider.list(deployment).await?;
    let old: Vec<Instance> = existing.iter().filter(|i| i.state.is_live()).cloned().collect();
    if !old.is_empty() {
        printer.info(&format!(
            "`{deployment}`: {} live instance(s) will be replaced ({}): {}",
            old.len(),
            match strategy {
                Strategy::Recreate => "recreate: destroyed first",
                Strategy::BlueGreen => "blue-green: destroyed once the new generation is verified",
            },
            count_by(old.iter().map(|i| i.region.as_str()))
        ));
        let question = format!("replace {} instance(s) of `{deployment}`?", old.len());
        if !yes && !confirmed(confirm, &question, deployment, old.len())? {
            return Err(EngineError::Declined);
        }
    }
    match strategy {
        Strategy::Recreate => {
            let destroyed = destroy_old(provider, verification, deployment, &old).await?;
            let existing = provider.list(deployment).await?;
            let created =
                launch_generation(provider, verification, blueprint, &existing, options, printer).await?;
            Ok(DeployReport {
                strategy,
                replaced: old,
                created,
                destroyed,
            })
        }
        Strategy::BlueGreen => {
            let created =
                launch_generation(provider, verification, blueprint, &existing, options, printer).await?;
            if !old.is_empty() {
                printer.info(&format!(
                    "generation {} is up; destroying the {} old instance(s)",
                    created.generation,
                    old.len()
                ));
            }
            let destroyed = destroy_old(provider, verification, deployment, &old).await?;
            Ok(DeployReport {
                strategy,
                replaced: old,
                created,
                destroyed,
            })
        }
    }
}

/// Terminates the replaced generation (waiting for it) and forgets its host
/// keys; `None` when nothing was live.
async fn destroy_old<P: Provider, V: Verification>(
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

/// Asks `question` when a person can answer; without a terminal, refuses
/// (scripts must pass --yes).
fn confirmed(
    confirm: Option<Confirm<'_>>,
    question: &str,
    deployment: &str,
    count: usize,
) -> Result<bool, EngineError> {
    match confirm {
        Some(ask) => Ok(ask(question).unwrap_or(false)),
        None => Err(EngineError::NeedsConfirmation {
            deployment: deployment.to_string(),
            count,
        }),
    }
}

/// One region of a plan: what `deploy` would destroy and create there.
#[derive(Debug, Serialize)]
pub struct PlanRegion {
    pub region: String,
    pub destroy: usize,
    /// The digests the instances to destroy run (short form).
    pub destroy_digests: Vec<String>,
    pub create: u32,
    pub instance_type: String,
    pub lifecycle: Option<Lifecycle>,
    pub price_per_hour: Option<f64>,
    /// `create × price_per_hour`.
    pub cost_per_hour: Option<f64>,
    pub price_note: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Plan {
    pub deployment: String,
    pub strategy: Strategy,
    pub digest: String,
    pub version: String,
    /// `new` (nothing live), `unchanged` (the live fleet runs this digest:
    /// deploy would still replace it) or `changed`.
    pub change: &'static str,
    pub regions: Vec<PlanRegion>,
    /// The sum over regions, when every region has a price.
    pub cost_per_hour: Option<f64>,
}

/// What `deploy` would do, computed from reads only.
pub async fn plan<P: Provider>(
    provider: &P,
    blueprint: &Blueprint,
    strategy: Strategy,
) -> Result<Plan, EngineError> {
    let deployment = &blueprint.deployment;
    let (listed, planned) = tokio::join!(provider.list(deployment), provider.capacity_plan());
    let live: Vec<Instance> = listed?.into_iter().filter(|i| i.state.is_live()).collect();
    let planned = planned?;
    let mut names: Vec<String> = planned.iter().map(|p| p.region.clone()).collect();
    for instance in &live {
        if !names.contains(&instance.region) {
            names.push(instance.region.clone());
        }
    }
    let regions: Vec<PlanRegion> = names
        .into_iter()
        .map(|region| {
            let here: Vec<&Instance> = live.iter().filter(|i| i.region == region).collect();
            let mut digests: Vec<String> = here
                .iter()
                .map(|i| {
                    i.digest
                        .as_deref()
                        .map_or("-", |d| &d[..d.len().min(12)])
                        .to_string()
                })
                .collect();
            digests.sort();
            digests.dedup();
            let pool = planned.iter().find(|p| p.region == region);
            PlanRegion {
                destroy: here.len(),
                destroy_digests: digests,
                create: pool.map_or(0, |p| p.count),
                instance_type: pool.map_or_else(|| "-".to_string(), |p| p.instance_type.clone()),
                lifecycle: pool.map(|p| p.lifecycle),
                price_per_hour: pool.and_then(|p| p.price_per_hour),
                cost_per_hour: pool.and_then(|p| p.price_per_hour.map(|price| price * f64::from(p.count))),
                price_note: pool.and_then(|p| p.price_note.clone()),
                region,
            }
        })
        .collect();
    let change = if live.is_empty() {
        "new"
    } else if live
        .iter()
        .all(|i| i.digest.as_deref() == Some(blueprint.digest.as_str()))
    {
        "unchanged"
    } else {
        "changed"
    };
    let cost_per_hour = regions
        .iter()
        .filter(|r| r.create > 0)
        .map(|r| r.cost_per_hour)
        .sum::<Option<f64>>();
    Ok(Plan {
        deployment: deployment.clone(),
        strategy,
        digest: blueprint.digest.to_string(),
        version: blueprint.version.clone(),
        change,
        regions,
        cost_per_hour,
    })
}

#[derive(Debug, Clone, Default)]
pub struct DestroyOptions {
    pub yes: bool,
    pub dry_run: bool,
    pub wait: bool,
}

#[derive(Debug, Serialize)]
pub struct DestroyPlan {
    pub deployment: String,
    pub instances: Vec<Instance>,
    pub dry_run: bool,
    pub report: Option<DestroyReport>,
}

/// Asks a person to confirm; `Ok(false)` when they decline.
pub type Confirm<'a> = &'a dyn Fn(&str) -> std::io::Result<bool>;

/// Terminates every live instance of the deployment, then cleans up.
pub async fn destroy<P: Provider, V: Verification>(
    provider: &P,
    verification: &V,
    deployment: &str,
    options: &DestroyOptions,
    confirm: Option<Confirm<'_>>,
    printer: &Printer,
) -> Result<DestroyPlan, EngineError> {
    let live: Vec<Instance> = provider
        .list(deployment)
        .await?
        .into_iter()
        .filter(|i| i.state.is_live())
        .collect();
    if live.is_empty() {
        printer.info(&format!("`{deployment}` has no live instances"));
    } else {
        printer.info(&format!(
            "`{deployment}`: {} live instance(s): {}",
            live.len(),
            count_by(live.iter().map(|i| i.region.as_str()))
        ));
    }
    if options.dry_run {
        printer.info("--dry-run: nothing was changed");
        return Ok(DestroyPlan {
            deployment: deployment.to_string(),
            instances: live,
            dry_run: true,
            report: None,
        });
    }
    let question = format!("terminate {} instance(s) of `{deployment}`?", live.len());
    if !live.is_empty() && !options.yes && !confirmed(confirm, &question, deployment, live.len())? {
        printer.info("cancelled: nothing was changed");
        return Ok(DestroyPlan {
            deployment: deployment.to_string(),
            instances: live,
            dry_run: true,
            report: None,
        });
    }
    let report = provider.destroy(deployment, &live, options.wait).await?;
    verification.forget(&live);
    if !report.left_behind.is_empty() {
        return Err(EngineError::LeftBehind(report.left_behind));
    }
    if report.terminated.is_empty() && report.cleaned.is_empty() {
        printer.info("nothing to do");
    } else {
        printer.info(&format!(
            "terminated {} instance(s){}",
            report.terminated.len(),
            if report.cleaned.is_empty() {
                String::new()
            } else {
                format!("; removed {}", report.cleaned.join(", "))
            }
        ));
    }
    Ok(DestroyPlan {
        deployment: deployment.to_string(),
        instances: live,
        dry_run: false,
        report: Some(report),
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_sorted_by_key() {
        assert_eq!(count_by(["b", "a", "b"].into_iter()), "a: 1, b: 2");
        assert_eq!(count_by(std::iter::empty()), "");
    }
}
