//! `respot deploy`: ship the current blueprint, or with `--ref` the
//! blueprint as it was at a commit; a fresh, verified generation replaces
//! the live one. Without `[traffic]`: recreate or blue-green as instances
//! only. With it: through the front door (recreate, blue-green, canary,
//! rolling), traffic shifted only after verification.

use std::cell::OnceCell;

use super::create::{
    Summarized, current_prices, launch_verification, print_created, shippable_blueprint, show_failed_checks,
};
use super::images::show_resolved_images;
use super::locking::{OnCtrlC, locked};
use super::{Context, ExitStatus, history};
use crate::engine::{self, Confirm, DeployOptions, DeployReport};
use crate::error::{Error, Result};
use crate::history::{Action, History, Recorder, first_shipped};
use crate::output::{Count, Printer};
use crate::progress::Summary;
use crate::provenance::{self, Checkout, ProvenanceError};
use crate::provider::PlannedRegion;
use crate::template::Blueprint;

#[derive(Debug, Clone, Default)]
pub struct DeployCommand {
    pub deploy: DeployOptions,
    /// `--ref`: deploy the blueprint as it was at this git ref.
    pub git_ref: Option<String>,
}

pub async fn deploy(context: &Context<'_>, options: &DeployCommand) -> Result<ExitStatus> {
    deploy_as(context, options, Action::Deploy).await
}

/// A deploy recorded in the history as `action`: `rollback`'s forward path
/// deploys the previous successful commit (`git_ref`) as a rollback.
pub(super) async fn deploy_as(
    context: &Context<'_>,
    options: &DeployCommand,
    action: Action,
) -> Result<ExitStatus> {
    let mut recorder = Recorder::start(action);
    recorder.record.strategy = serde_json::to_value(options.deploy.strategy)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string));
    recorder.record.git_ref = options.git_ref.clone();
    let result = match &options.git_ref {
        None => deploy_from(context, options, None, &mut recorder).await,
        Some(reference) => deploy_ref(context, options, reference, &mut recorder).await,
    };
    history::finish(context, recorder, &result);
    result
}

/// `--ref`: the blueprint at `reference`, extracted with `git archive`,
/// deployed as the same deployment.
async fn deploy_ref(
    context: &Context<'_>,
    options: &DeployCommand,
    reference: &str,
    recorder: &mut Recorder,
) -> Result<ExitStatus> {
    let config = context.config()?;
    let mut checkout = provenance::checkout(&config.source, reference)?;
    checkout.require_signed = config.deployment.require_signed;
    let at_ref = Context {
        config_path: Some(checkout.config.clone()),
        config: OnceCell::new(),
        provider: context.provider.clone(),
        paths: context.paths.clone(),
        printer: context.printer,
    };
    let theirs = &at_ref.config()?.deployment.name;
    if theirs != &config.deployment.name {
        return Err(ProvenanceError::OtherDeployment {
            commit: checkout.git.commit.clone().unwrap_or_default(),
            theirs: theirs.clone(),
            ours: config.deployment.name.clone(),
        }
        .into());
    }
    deploy_from(&at_ref, options, Some(&checkout), recorder).await
}

async fn deploy_from(
    context: &Context<'_>,
    options: &DeployCommand,
    at: Option<&Checkout>,
    recorder: &mut Recorder,
) -> Result<ExitStatus> {
    let printer = context.printer;
    let keys = context.keys()?;
    let blueprint = shippable_blueprint(context, &keys, at)?;
    history::note_blueprint(recorder, &blueprint);
    if at.is_some() {
        same_digest_as_recorded(context, &blueprint)?;
    }
    recorder.mark("render");
    let provider = context.connect().await?;
    let door = super::door::connect(context, &provider)?;
    let verification = launch_verification(context, &keys, &blueprint)?;
    recorder.mark("connect");
    let ask = |question: &str| printer.ask(question);
    let confirm: Option<Confirm> = printer.can_ask().then_some(&ask);
    let traffic = context.config()?.traffic.as_ref();
    // The prices for the summary are read while the instances boot.
    let rollout = async {
        match (&door, traffic) {
            (Some(door), Some(traffic)) => {
                engine::rollout(
                    &provider,
                    &verification,
                    door,
                    traffic,
                    &blueprint,
                    &options.deploy,
                    confirm,
                    printer,
                )
                .await
            }
            _ => {
                engine::deploy(
                    &provider,
                    &verification,
                    &blueprint,
                    &options.deploy,
                    confirm,
                    printer,
                )
                .await
            }
        }
    };
    let work = async {
        show_resolved_images(context, &provider).await?;
        Ok(tokio::join!(rollout, current_prices(&provider)))
    };
    let (result, prices) = locked(context, &provider, "deploy", OnCtrlC::Work, work).await?;
    printer.finish_progress();
    match &result {
        Ok(report) => recorder.mark_parts("rollout", &history::engine_phases(&report.created)),
        Err(_) => recorder.mark("rollout"),
    }
    let report = show_failed_checks(result, printer)?;
    recorder.created(report.created.generation, report.created.instances.len());
    if report.destroyed.is_some() {
        recorder.destroyed(&report.replaced);
    }
    print_deployed(&report, &prices, printer)
}

/// The report, the door's state and the run's summary.
fn print_deployed(report: &DeployReport, prices: &[PlannedRegion], printer: &Printer) -> Result<ExitStatus> {
    let summary = Summary::new(
        &printer.timeline(),
        printer.elapsed(),
        &report.created.instances,
        prices,
    );
    if printer.is_json() {
        let output = Summarized {
            report,
            summary: &summary,
        };
        printer.json(&output).map_err(Error::Output)?;
        return Ok(ExitStatus::Success);
    }
    print_created(&report.created, printer)?;
    print_door(report, printer);
    printer.info(summary.render().trim_end());
    Ok(ExitStatus::Success)
}

/// The render of a commit must be the one recorded when that commit was
/// first deployed (the render is deterministic); a commit never deployed
/// from this machine has nothing to compare with.
fn same_digest_as_recorded(context: &Context<'_>, blueprint: &Blueprint) -> Result<()> {
    let Some(commit) = &blueprint.git.commit else {
        return Ok(());
    };
    let records = History::open(&context.paths, &blueprint.deployment)?.read()?;
    match first_shipped(&records, commit) {
        Some(first) if first.digest.as_deref() != Some(blueprint.digest.as_str()) => {
            Err(ProvenanceError::DigestMismatch {
                commit: commit.clone(),
                recorded: first.digest.clone().unwrap_or_else(|| "none".to_string()),
                rendered: blueprint.digest.to_string(),
                when: format!(
                    "{} {} by {}@{}",
                    first.action.as_str(),
                    first.time,
                    first.user,
                    first.host
                ),
            }
            .into())
        }
        Some(_) => {
            context.printer.info(&format!(
                "{commit} renders digest {}, as recorded when it was first deployed",
                blueprint.digest.short()
            ));
            Ok(())
        }
        None => {
            context.printer.info(&format!(
                "{commit} was never deployed from this machine's history: nothing to compare its digest with"
            ));
            Ok(())
        }
    }
}

fn print_door(report: &DeployReport, printer: &Printer) {
    if let Some(destroyed) = &report.destroyed {
        printer.info(&format!(
            "replaced {} of the previous generation",
            Count(destroyed.terminated.len(), "instance")
        ));
    }
    let Some(door) = &report.door else {
        return;
    };
    for shift in &report
        .door
        .iter()
        .flat_map(|d| d.shifts.clone())
        .collect::<Vec<_>>()
    {
        if let Some(hold) = &shift.hold {
            printer.info(&format!(
                "shift {:?}: held {:.0} s, {}/{} probes failed, {} verify runs passed",
                shift.weights, hold.held_secs, hold.failed_probes, hold.probes, hold.verifies
            ));
        }
    }
    printer.info(&format!(
        "{} serves generation {}",
        door.address, report.created.generation
    ));
    if let Some(kept) = &door.kept {
        printer.info(&format!(
            "generation {} is kept out of the door until {}; `respot rollback` shifts back to it instantly",
            kept.generation,
            humantime::format_rfc3339_seconds(kept.until)
        ));
    }
}
