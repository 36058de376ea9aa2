//! `destroy`: terminate every live instance of a deployment, then let the
//! provider clean up what it created for it.

use serde::Serialize;

use super::{Confirm, EngineError, Forget, confirm_or_refuse, count_by, live};
use crate::output::{Count, Printer};
use crate::provider::{DestroyReport, Instance, Provider};

#[derive(Debug, Clone, Default)]
pub struct DestroyOptions {
    pub yes: bool,
    pub dry_run: bool,
    pub wait: bool,
}

/// What `destroy` found and did.
#[derive(Debug, Serialize)]
pub struct DestroyOutcome {
    pub deployment: String,
    pub instances: Vec<Instance>,
    pub dry_run: bool,
    /// `None` for a dry run.
    pub report: Option<DestroyReport>,
}

/// Terminates every live instance of the deployment, then cleans up.
/// Idempotent: with nothing live it still lets the provider clean up.
pub async fn destroy<P: Provider, F: Forget>(
    provider: &P,
    host_keys: &F,
    deployment: &str,
    options: &DestroyOptions,
    confirm: Option<Confirm<'_>>,
    printer: &Printer,
) -> Result<DestroyOutcome, EngineError> {
    let live = live(provider, deployment).await?;
    if live.is_empty() {
        printer.info(&format!("`{deployment}` has no live instances"));
    } else {
        printer.info(&format!(
            "`{deployment}`: {}: {}",
            Count(live.len(), "live instance"),
            count_by(live.iter().map(|i| i.region.as_str()))
        ));
    }
    if options.dry_run {
        printer.info("--dry-run: nothing was changed");
        return Ok(DestroyOutcome {
            deployment: deployment.to_string(),
            instances: live,
            dry_run: true,
            report: None,
        });
    }
    if !live.is_empty() && !options.yes {
        confirm_or_refuse(confirm, "terminate", deployment, live.len())?;
    }
    let report = provider
        .destroy_deployment(deployment, &live, options.wait)
        .await?;
    host_keys.forget(&live);
    if !report.left_behind.is_empty() {
        return Err(EngineError::LeftBehind(report.left_behind));
    }
    if report.terminated.is_empty() && report.cleaned.is_empty() {
        printer.info("nothing to do");
    } else {
        printer.info(&report.summary());
    }
    Ok(DestroyOutcome {
        deployment: deployment.to_string(),
        instances: live,
        dry_run: false,
        report: Some(report),
    })
}
