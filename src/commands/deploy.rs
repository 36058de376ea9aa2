//! `respot deploy`: ship the current blueprint; a fresh, verified
//! generation replaces the live one (recreate or blue-green).

use super::create::{launch_verification, launchable_blueprint, print_created, show_failed_checks};
use super::images::show_resolved_images;
use super::locking::{OnCtrlC, locked};
use super::{Context, ExitStatus};
use crate::engine::{self, Confirm, DeployOptions};
use crate::error::{Error, Result};
use crate::output::Count;

#[derive(Debug, Clone, Default)]
pub struct DeployCommand {
    pub deploy: DeployOptions,
}

pub async fn deploy(context: &Context<'_>, options: &DeployCommand) -> Result<ExitStatus> {
    let printer = context.printer;
    let keys = context.keys()?;
    let blueprint = launchable_blueprint(context, &keys)?;
    let provider = context.connect().await?;
    let verification = launch_verification(context, &keys, &blueprint)?;
    let ask = |question: &str| printer.ask(question);
    let confirm: Option<Confirm> = printer.can_ask().then_some(&ask);
    let work = async {
        show_resolved_images(context, &provider).await?;
        let result = engine::deploy(
            &provider,
            &verification,
            &blueprint,
            &options.deploy,
            confirm,
            printer,
        )
        .await;
        show_failed_checks(result, printer)
    };
    let report = locked(context, &provider, "deploy", OnCtrlC::Work, work).await?;
    if printer.is_json() {
        printer.json(&report).map_err(Error::Output)?;
        return Ok(ExitStatus::Success);
    }
    print_created(&report.created, printer)?;
    if let Some(destroyed) = &report.destroyed {
        printer.info(&format!(
            "replaced {} of the previous generation",
            Count(destroyed.terminated.len(), "instance")
        ));
    }
    Ok(ExitStatus::Success)
}
