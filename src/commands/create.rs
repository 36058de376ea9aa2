//! `respot create`: launch a fresh generation from the current render, wait
//! for it, verify it read-only, and roll back on failure.

use serde::Serialize;

use super::images::show_resolved_images;
use super::locking::{OnCtrlC, locked};
use super::select::{expected_from, verify_settings};
use super::verification::SshVerification;
use super::{Context, ExitStatus, history};
use crate::engine::{self, CreateOptions, CreateReport, EngineError};
use crate::error::{Error, Result};
use crate::history::{Action, Recorder};
use crate::keys::KeyStore;
use crate::output::{Count, Printer, Table};
use crate::progress::Summary;
use crate::provenance::{self, Checkout};
use crate::provider::{AnyProvider, PlannedRegion, PoolAnswer, Provider};
use crate::template::{self, Blueprint, TemplateError};

#[derive(Debug, Clone, Default)]
pub struct CreateCommand {
    pub create: CreateOptions,
}

pub async fn create(context: &Context<'_>, options: &CreateCommand) -> Result<ExitStatus> {
    let mut recorder = Recorder::start(Action::Create);
    let result = create_recorded(context, options, &mut recorder).await;
    history::finish(context, recorder, &result);
    result
}

async fn create_recorded(
    context: &Context<'_>,
    options: &CreateCommand,
    recorder: &mut Recorder,
) -> Result<ExitStatus> {
    let printer = context.printer;
    let keys = context.keys()?;
    let blueprint = shippable_blueprint(context, &keys, None)?;
    history::note_blueprint(recorder, &blueprint);
    recorder.mark("render");
    let provider = context.connect().await?;
    let verification = launch_verification(context, &keys, &blueprint)?;
    recorder.mark("connect");
    let work = async {
        show_resolved_images(context, &provider).await?;
        // The prices for the summary are read while the instances boot: no
        // round trip of their own.
        Ok(tokio::join!(
            engine::create(&provider, &verification, &blueprint, &options.create, printer),
            current_prices(&provider),
        ))
    };
    let (result, prices) = locked(context, &provider, "create", OnCtrlC::Work, work).await?;
    printer.finish_progress();
    match &result {
        Ok(report) => recorder.mark_parts("create", &history::engine_phases(report)),
        Err(_) => recorder.mark("create"),
    }
    let report = show_failed_checks(result, printer)?;
    recorder.created(report.generation, report.instances.len());
    let summary = Summary::new(&printer.timeline(), printer.elapsed(), &report.instances, &prices);
    let pools = provider.take_pool_answers();
    if printer.is_json() {
        let output = Created {
            report: &report,
            pools: &pools,
            summary: &summary,
        };
        printer.json(&output).map_err(Error::Output)?;
    } else {
        print_created(&report, printer)?;
        if !pools.is_empty() {
            let answers: Vec<String> = pools.iter().map(ToString::to_string).collect();
            printer.info(&format!("pools: {}", answers.join("; ")));
        }
        printer.info(summary.render().trim_end());
    }
    Ok(ExitStatus::Success)
}

/// A command's JSON report with the run's summary beside its fields.
#[derive(Serialize)]
pub(super) struct Summarized<'a, T: Serialize> {
    #[serde(flatten)]
    pub report: &'a T,
    pub summary: &'a Summary,
}

/// `create`'s JSON: the report, what each pool answered the launch (the
/// pools `aws.allocation` chose, and the errors of the others), the summary.
#[derive(Serialize)]
struct Created<'a> {
    #[serde(flatten)]
    report: &'a CreateReport,
    pools: &'a [PoolAnswer],
    summary: &'a Summary,
}

/// The provider's current prices per region, for a run's `Summary`: none
/// when the provider cannot say (the summary then says so), never an error.
pub(super) async fn current_prices(provider: &AnyProvider) -> Vec<PlannedRegion> {
    match provider.capacity_plan().await {
        Ok(prices) => prices,
        Err(err) => {
            tracing::info!("no prices for the summary: {err}");
            Vec::new()
        }
    }
}

/// The current render, refused before any provider is asked when a login
/// key is respot's verification key (that key must run only the inspector).
pub(super) fn launchable_blueprint(context: &Context<'_>, keys: &KeyStore) -> Result<Blueprint> {
    refuse_verify_key(Blueprint::render(context.config()?)?, keys)
}

/// What `create`, `deploy` and `rollback` ship: the current render or,
/// `at` a commit, that commit's; refused like [`launchable_blueprint`], and
/// with `require_signed` unless git accepts the commit's signature (whose
/// key becomes the blueprint's signer).
pub(super) fn shippable_blueprint(
    context: &Context<'_>,
    keys: &KeyStore,
    at: Option<&Checkout>,
) -> Result<Blueprint> {
    let config = context.config()?;
    let mut source = template::load(config)?;
    let repo = match at {
        Some(checkout) => {
            source.git = checkout.git.clone();
            checkout.repo.clone()
        }
        None => config.base_dir(),
    };
    if config.deployment.require_signed || at.is_some_and(|c| c.require_signed) {
        source.git.signer = Some(provenance::require_signed(&repo, &source.git)?);
    }
    refuse_verify_key(template::render(&source)?, keys)
}

fn refuse_verify_key(blueprint: Blueprint, keys: &KeyStore) -> Result<Blueprint> {
    if let Some(verify_key) = keys.existing_verify_public_key()
        && blueprint.logs_in_with(&verify_key)
    {
        return Err(TemplateError::VerifyKeyReused.into());
    }
    Ok(blueprint)
}

/// Verification of a generation launched from `blueprint`: it must report
/// that blueprint's digest, files and probes.
pub(super) fn launch_verification<'a>(
    context: &'a Context<'_>,
    keys: &'a KeyStore,
    blueprint: &Blueprint,
) -> Result<SshVerification<'a>> {
    let config = context.config()?;
    Ok(SshVerification::new(
        keys,
        config,
        verify_settings(config, None, false),
        expected_from(config, blueprint),
        context.printer,
    ))
}

/// Before a failed create's error, the table of checks says which one
/// failed: the rollback has already erased the instances.
pub(super) fn show_failed_checks<T>(result: Result<T, EngineError>, printer: &Printer) -> Result<T> {
    result.map_err(|err| {
        if let Some(verdict) = err.verdict() {
            printer.evidence(&verdict.report.table().render());
        }
        Error::Engine(err)
    })
}

pub(super) fn print_created(report: &CreateReport, printer: &Printer) -> Result<()> {
    let mut table = Table::new(["REGION", "ID", "NAME", "TYPE", "LIFECYCLE", "ADDRESS"]);
    for i in &report.instances {
        let address = match &i.ssh {
            Some(ssh) => ssh.to_string(),
            None => i
                .public_ip
                .clone()
                .or_else(|| i.private_ip.clone())
                .unwrap_or_else(|| "-".to_string()),
        };
        table.row([
            i.region.clone(),
            i.id.to_string(),
            i.name.clone(),
            i.instance_type.clone(),
            i.lifecycle.to_string(),
            address,
        ]);
    }
    printer.data(&table.render()).map_err(Error::Output)?;
    if let Some(verdict) = &report.verification {
        printer
            .data(&verdict.report.table().render())
            .map_err(Error::Output)?;
    }
    printer.info(&format!(
        "created generation {} of `{}` ({}): {}{}",
        report.generation,
        report.deployment,
        report.version,
        Count(report.instances.len(), "instance"),
        if report.verification.is_some() {
            ", verified"
        } else {
            ", not verified (--no-verify)"
        }
    ));
    Ok(())
}
