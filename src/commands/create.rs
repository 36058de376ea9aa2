//! `respot create`: launch a fresh generation from the current render, wait
//! for it, verify it read-only, and roll back on failure.

use super::images::show_resolved_images;
use super::locking::{OnCtrlC, locked};
use super::select::{expected_from, verify_settings};
use super::verification::SshVerification;
use super::{Context, ExitStatus};
use crate::engine::{self, CreateOptions, CreateReport, EngineError};
use crate::error::{Error, Result};
use crate::keys::KeyStore;
use crate::output::{Count, Printer, Table};
use crate::template::{Blueprint, TemplateError};

#[derive(Debug, Clone, Default)]
pub struct CreateCommand {
    pub create: CreateOptions,
}

pub async fn create(context: &Context<'_>, options: &CreateCommand) -> Result<ExitStatus> {
    let printer = context.printer;
    let keys = context.keys()?;
    let blueprint = launchable_blueprint(context, &keys)?;
    let provider = context.connect().await?;
    let verification = launch_verification(context, &keys, &blueprint)?;
    let work = async {
        show_resolved_images(context, &provider).await?;
        let result = engine::create(&provider, &verification, &blueprint, &options.create, printer).await;
        show_failed_checks(result, printer)
    };
    let report = locked(context, &provider, "create", OnCtrlC::Work, work).await?;
    if printer.is_json() {
        printer.json(&report).map_err(Error::Output)?;
    } else {
        print_created(&report, printer)?;
    }
    Ok(ExitStatus::Success)
}

/// The current render, refused before any provider is asked when a login
/// key is respot's verification key (that key must run only the inspector).
pub(super) fn launchable_blueprint(context: &Context<'_>, keys: &KeyStore) -> Result<Blueprint> {
    let blueprint = Blueprint::render(context.config()?)?;
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
            None => i.public_ip.clone().unwrap_or_else(|| "-".to_string()),
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
