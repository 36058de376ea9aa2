//! `respot deploy`: ship the current blueprint; a fresh, verified
//! generation replaces the live one (recreate or blue-green).

use super::create::{
    Summarized, current_prices, launch_verification, launchable_blueprint, print_created, show_failed_checks,
};
use super::{Context, ExitStatus};
use crate::engine::{self, Confirm, DeployOptions};
use crate::error::{Error, Result};
use crate::output::Count;
use crate::progress::Summary;

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
    // The prices for the summary are read while the instances boot.
    let (result, prices) = tokio::join!(
        engine::deploy(
            &provider,
            &verification,
            &blueprint,
            &options.deploy,
            confirm,
            printer,
        ),
        current_prices(&provider),
    );
    printer.finish_progress();
    let report = show_failed_checks(result, printer)?;
    let summary = Summary::new(
        &printer.timeline(),
        printer.elapsed(),
        &report.created.instances,
        &prices,
    );
    if printer.is_json() {
        let output = Summarized {
            report: &report,
            summary: &summary,
        };
        printer.json(&output).map_err(Error::Output)?;
        return Ok(ExitStatus::Success);
    }
    print_created(&report.created, printer)?;
    if let Some(destroyed) = &report.destroyed {
        printer.info(&format!(
            "replaced {} of the previous generation",
            Count(destroyed.terminated.len(), "instance")
        ));
    }
    printer.info(summary.render().trim_end());
    Ok(ExitStatus::Success)
}
