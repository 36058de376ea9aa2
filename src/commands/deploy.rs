//! `respot deploy`: ship the current blueprint; a fresh, verified
//! generation replaces the live one. Without `[traffic]`: recreate or
//! blue-green as instances only. With it: through the front door (recreate,
//! blue-green, canary, rolling), traffic shifted only after verification.

use super::create::{launch_verification, launchable_blueprint, print_created, show_failed_checks};
use super::{Context, ExitStatus};
use crate::engine::{self, Confirm, DeployOptions, DeployReport};
use crate::error::{Error, Result};
use crate::output::{Count, Printer};

#[derive(Debug, Clone, Default)]
pub struct DeployCommand {
    pub deploy: DeployOptions,
}

pub async fn deploy(context: &Context<'_>, options: &DeployCommand) -> Result<ExitStatus> {
    let printer = context.printer;
    let keys = context.keys()?;
    let blueprint = launchable_blueprint(context, &keys)?;
    let provider = context.connect().await?;
    let door = super::door::connect(context, &provider)?;
    let verification = launch_verification(context, &keys, &blueprint)?;
    let ask = |question: &str| printer.ask(question);
    let confirm: Option<Confirm> = printer.can_ask().then_some(&ask);
    let traffic = context.config()?.traffic.as_ref();
    let result = match (&door, traffic) {
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
    };
    let report = show_failed_checks(result, printer)?;
    if printer.is_json() {
        printer.json(&report).map_err(Error::Output)?;
        return Ok(ExitStatus::Success);
    }
    print_created(&report.created, printer)?;
    print_door(&report, printer);
    Ok(ExitStatus::Success)
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
