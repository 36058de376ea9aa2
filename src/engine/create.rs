//! `create`: launch a fresh generation, verify it, and roll back on any
//! failure or Ctrl-C. Also the launch step `deploy` reuses.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::{EngineError, Verdict, Verification, count_by, live, next_generation};
use crate::output::{Count, Printer};
use crate::progress::{Event, Phase};
use crate::provider::{DestroyReport, Instance, LaunchRequest, Provider, ProviderError};
use crate::template::{Blueprint, Digest, LaunchMaterial};

#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub allow_dirty: bool,
    pub keep_on_failure: bool,
    pub verify: bool,
}

#[derive(Debug, Serialize)]
pub struct CreateReport {
    pub deployment: String,
    pub digest: Digest,
    pub version: String,
    pub generation: u64,
    pub gzipped: bool,
    pub user_data_bytes: usize,
    pub instances: Vec<Instance>,
    /// `None` with `--no-verify`.
    pub verification: Option<Verdict>,
    /// Seconds from the launch call until every instance was running.
    pub launch_secs: f64,
    /// Seconds verification took; `None` with `--no-verify`.
    pub verify_secs: Option<f64>,
}

pub(super) enum Outcome<T> {
    Done(T),
    Interrupted,
}

/// Runs `work` unless Ctrl-C comes first; then the future is dropped.
pub(super) async fn interruptible<T>(work: impl std::future::Future<Output = T>) -> Outcome<T> {
    tokio::select! {
        result = work => Outcome::Done(result),
        _ = tokio::signal::ctrl_c() => Outcome::Interrupted,
    }
}

/// Launches a fresh generation, verifies it, and rolls back on any failure
/// or Ctrl-C unless `keep_on_failure`. Refuses while anything is live.
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

/// Why a launched generation is being given up.
struct Failure {
    reason: String,
    interrupted: bool,
    verdict: Option<Box<Verdict>>,
}

impl Failure {
    fn interrupted(during: &str, printer: &Printer) -> Failure {
        printer.warn("interrupted: rolling back what this run launched");
        Failure {
            reason: format!("interrupted by Ctrl-C during {during}"),
            interrupted: true,
            verdict: None,
        }
    }
}

/// Launches and verifies the generation after `existing`'s, rolling back
/// only that generation on failure: live instances of older generations
/// (blue-green) are never touched here.
pub(super) async fn launch_generation<P: Provider, V: Verification>(
    provider: &P,
    verification: &V,
    blueprint: &Blueprint,
    existing: &[Instance],
    options: &CreateOptions,
    printer: &Printer,
) -> Result<CreateReport, EngineError> {
    let generation = next_generation(existing);
    let request = generation_request(provider, verification, blueprint, generation, printer).await?;
    let progress = printer.observer();
    progress.observe(Event::generation(
        &request.deployment,
        generation,
        Phase::Requested,
    ));
    let started = Instant::now();
    let instances = match interruptible(provider.launch(&request)).await {
        Outcome::Done(Ok(instances)) => instances,
        Outcome::Done(Err(err)) => {
            let failure = Failure {
                reason: err.to_string(),
                interrupted: false,
                verdict: None,
            };
            return Err(fail_create(provider, verification, &request, options, printer, failure).await);
        }
        Outcome::Interrupted => {
            let failure = Failure::interrupted("launch", printer);
            return Err(fail_create(provider, verification, &request, options, printer, failure).await);
        }
    };
    for instance in &instances {
        progress.observe(Event::instance(&request.deployment, instance, Phase::Running));
    }
    let launch_secs = started.elapsed().as_secs_f64();
    printer.info(&format!("{} running", Count(instances.len(), "instance")));
    let started = Instant::now();
    let verdict = if options.verify {
        printer.info("verifying over SSH with the read-only inspector");
        let verdict = match interruptible(verification.verify(&instances)).await {
            Outcome::Done(verdict) => verdict,
            Outcome::Interrupted => {
                let failure = Failure::interrupted("verification", printer);
                return Err(fail_create(provider, verification, &request, options, printer, failure).await);
            }
        };
        if !verdict.passed() {
            let failure = Failure {
                reason: format!("verification failed: {}", verdict.summary()),
                interrupted: false,
                verdict: Some(Box::new(verdict)),
            };
            return Err(fail_create(provider, verification, &request, options, printer, failure).await);
        }
        Some(verdict)
    } else {
        printer.warn("--no-verify: instances are running but were NOT verified over SSH");
        None
    };
    Ok(CreateReport {
        deployment: request.deployment,
        digest: request.digest,
        version: request.version,
        generation,
        gzipped: request.user_data.gzipped,
        user_data_bytes: request.user_data.packed.len(),
        instances,
        launch_secs,
        verify_secs: verdict.as_ref().map(|_| started.elapsed().as_secs_f64()),
        verification: verdict,
    })
}

/// The launch request of `generation`, its material staged, announced.
async fn generation_request<P: Provider, V: Verification>(
    provider: &P,
    verification: &V,
    blueprint: &Blueprint,
    generation: u64,
    printer: &Printer,
) -> Result<LaunchRequest, EngineError> {
    let material = verification.launch_material(generation)?;
    let material = staged(provider, blueprint, material).await?;
    let request = LaunchRequest {
        deployment: blueprint.deployment.clone(),
        digest: blueprint.digest.clone(),
        version: blueprint.version.clone(),
        generation,
        user_data: blueprint.user_data(&material)?,
        signer: blueprint.git.signer.clone(),
        upto: None,
        bundle: blueprint.bundle.clone(),
    };
    printer.info(&format!(
        "creating generation {generation} of `{}` ({}), {} bytes of user-data{}",
        request.deployment,
        request.version,
        request.user_data.packed.len(),
        if request.user_data.gzipped { " (gzip)" } else { "" }
    ));
    Ok(request)
}

/// Rolls back (or keeps) everything of `request`'s generation.
async fn fail_create<P: Provider, V: Verification>(
    provider: &P,
    verification: &V,
    request: &LaunchRequest,
    options: &CreateOptions,
    printer: &Printer,
    failure: Failure,
) -> EngineError {
    let Failure {
        reason,
        interrupted,
        verdict,
    } = failure;
    printer.observer().observe(
        Event::generation(&request.deployment, request.generation, Phase::Failed).detail(reason.clone()),
    );
    let launched = match generation_instances(provider, request).await {
        Ok(instances) => instances,
        Err(err) => {
            let cleanup = DestroyReport {
                left_behind: vec![format!("unknown: could not list instances to roll back: {err}")],
                ..DestroyReport::default()
            };
            return EngineError::RolledBack {
                reason,
                cleanup,
                verdict,
            };
        }
    };
    if options.keep_on_failure {
        return EngineError::Kept {
            reason,
            kept: launched.len(),
            verdict,
        };
    }
    printer.info(&format!(
        "rolling back: terminating {}",
        Count(launched.len(), "instance")
    ));
    let mut cleanup = destroy_or_record(provider, verification, request, &launched, "rollback").await;
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
            "rolling back {}",
            Count(stragglers.len(), "straggler instance")
        ));
        let report =
            destroy_or_record(provider, verification, request, &stragglers, "straggler rollback").await;
        cleanup.terminated.extend(report.terminated);
        cleanup.cleaned.extend(report.cleaned);
        cleanup.left_behind.extend(report.left_behind);
    }
    printer.info(&format!("rolled back: {}", cleanup.summary()));
    EngineError::RolledBack {
        reason,
        cleanup,
        verdict,
    }
}

/// Destroys `instances` and forgets their keys; a failure becomes a
/// `left_behind` entry, so a rollback always reports what it could not do.
async fn destroy_or_record<P: Provider, V: Verification>(
    provider: &P,
    verification: &V,
    request: &LaunchRequest,
    instances: &[Instance],
    what: &str,
) -> DestroyReport {
    let report = match provider.destroy(&request.deployment, instances, true).await {
        Ok(report) => report,
        Err(err) => DestroyReport {
            left_behind: vec![format!("{what} failed: {err}")],
            ..DestroyReport::default()
        },
    };
    verification.forget(instances);
    report
}

/// The live instances of `request`'s generation, listed now (never from memory).
async fn generation_instances<P: Provider>(
    provider: &P,
    request: &LaunchRequest,
) -> Result<Vec<Instance>, ProviderError> {
    Ok(live(provider, &request.deployment)
        .await?
        .into_iter()
        .filter(|i| i.generation == Some(request.generation))
        .collect())
}

/// `material` with the blueprint's bundle staged where the instances fetch
/// it, when its files travel as a bundle. Staged (and, on AWS, signed) at
/// every launch, heal and rolling batch included: the digest stays.
pub(super) async fn staged<P: Provider>(
    provider: &P,
    blueprint: &Blueprint,
    mut material: LaunchMaterial,
) -> Result<LaunchMaterial, EngineError> {
    if let Some(bundle) = &blueprint.bundle {
        material.bundle_source = Some(
            provider
                .stage_bundle(&blueprint.deployment, &blueprint.digest, bundle)
                .await?,
        );
    }
    Ok(material)
}
