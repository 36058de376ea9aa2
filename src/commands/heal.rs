//! `respot heal`: bring the live generation back to its configured count
//! from the same digest, after spot reclaims, and let go of what the
//! provider is taking back once the replacements are verified.
//! `--watch INTERVAL` checks again until Ctrl-C, logging one line per
//! check and one per replacement (JSON lines with `--output json`).
//!
//! The bad pools heal avoids live in the deployment's state directory
//! (`paths::heal_dir`), so a watch and separate runs share them.

use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::json;

use super::create::{Summarized, current_prices, launch_verification, shippable_blueprint};
use super::locking::{OnCtrlC, locked};
use super::{Context, ExitStatus, history};
use crate::engine::{self, BadPools, EngineError, HealDoor, HealOptions, HealReport};
use crate::error::{Error, Result};
use crate::history::{Action, Generation, Recorder, per_generation};
use crate::output::{Count, Printer, Table};
use crate::progress::Summary;
use crate::provider::{AnyProvider, Instance, Provider};
use crate::traffic::{AnyDoor, FrontDoor};

/// How long a replacement gets to pass the front door's own health check.
const DOOR_HEALTH_TIMEOUT: Duration = Duration::from_secs(300);

/// The deployment's front door as heal uses it, when `[traffic]` has one
/// and its generation is behind it: a verified replacement is registered
/// with its generation (which keeps its share of the traffic) and must pass
/// the door's health check; what heal lets go is drained first.
struct HealThroughDoor(Option<AnyDoor>);

impl HealDoor for HealThroughDoor {
    async fn admit(&self, instances: &[Instance]) -> Result<(), EngineError> {
        let (Some(door), Some(generation)) = (&self.0, instances.first().and_then(|i| i.generation)) else {
            return Ok(());
        };
        // Only a generation the door already routes gets its replacements
        // there: heal never creates a door nor gives a generation a share.
        if !door.state().await?.targets.contains_key(&generation) {
            return Ok(());
        }
        door.register(generation, instances).await?;
        door.wait_healthy(generation, instances, DOOR_HEALTH_TIMEOUT)
            .await?;
        Ok(())
    }

    async fn drain(&self, instances: &[Instance]) -> Result<(), EngineError> {
        match &self.0 {
            Some(door) if !instances.is_empty() => Ok(door.drain(instances).await?),
            _ => Ok(()),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct HealCommand {
    pub heal: HealOptions,
    /// Check again at this interval until Ctrl-C.
    pub watch: Option<Duration>,
}

pub async fn heal(context: &Context<'_>, options: &HealCommand) -> Result<ExitStatus> {
    let provider = context.connect().await?;
    match options.watch {
        None => {
            let result = heal_once(context, &provider, &options.heal).await;
            // The table of checks says which one failed: the rollback has
            // already erased the replacements.
            if let Err(Error::Engine(err)) = &result
                && let Some(verdict) = err.verdict()
            {
                context.printer.evidence(&verdict.report.table().render());
            }
            let report = result?;
            // What the replacements cost is read only when there are some:
            // a heal with nothing to do makes no extra call.
            let summary = if report.launched.is_empty() {
                None
            } else {
                let prices = current_prices(&provider).await;
                let printer = context.printer;
                Some(Summary::new(
                    &printer.timeline(),
                    printer.elapsed(),
                    &report.launched,
                    &prices,
                ))
            };
            print_report(&report, summary.as_ref(), context.printer)?;
            Ok(ExitStatus::Success)
        }
        Some(interval) => watch(context, &provider, &options.heal, interval).await,
    }
}

/// One heal of the current render, with the bad pools read before and
/// written after (whatever the outcome: a full pool is worth remembering).
async fn heal_once(
    context: &Context<'_>,
    provider: &AnyProvider,
    options: &HealOptions,
) -> Result<HealReport> {
    let printer = context.printer;
    let mut recorder = Recorder::start(Action::Heal);
    let keys = context.keys()?;
    // Replacements are shipped too: `require_signed` holds for them.
    let blueprint = shippable_blueprint(context, &keys, None)?;
    history::note_blueprint(&mut recorder, &blueprint);
    let verification = launch_verification(context, &keys, &blueprint)?;
    let file = context
        .paths
        .heal_dir(&blueprint.deployment)
        .map(|dir| dir.join("bad-pools.json"))
        .ok();
    let mut memory = file.as_deref().map(|f| load(f, printer)).unwrap_or_default();
    let door = HealThroughDoor(super::door::connect(context, provider)?);
    let heal = async {
        Ok(engine::heal(
            provider,
            &verification,
            &door,
            &blueprint,
            &mut memory,
            options,
            printer,
        )
        .await)
    };
    // A heal with nothing to do only reads, so it takes no lock; one that
    // will launch or let go holds the deployment's lock (and looks again
    // under it, inside the engine).
    let result = if needs_work(provider, &blueprint.deployment).await? {
        locked(context, provider, "heal", OnCtrlC::Work, heal).await?
    } else {
        heal.await?
    };
    printer.finish_progress();
    if let Some(file) = &file {
        save(file, &memory, printer);
    }
    recorder.mark("heal");
    // A check that changed nothing is not history (a watch checks often).
    match &result {
        Ok(report) if report.is_noop() => {}
        Ok(report) => {
            recorder.record.created = per_generation(&report.launched);
            if let Some(released) = &report.released {
                recorder.record.destroyed = vec![Generation {
                    generation: report.launched.iter().find_map(|i| i.generation),
                    instances: released.terminated.len(),
                }];
            }
            history::finish_outcome(context, recorder, None);
        }
        Err(err) => history::finish_outcome(context, recorder, Some(err.to_string())),
    }
    Ok(result?)
}

/// Whether a heal would launch or let go of anything now; read-only.
async fn needs_work(provider: &AnyProvider, deployment: &str) -> Result<bool> {
    let (listed, notices) = tokio::join!(
        provider.list(deployment),
        provider.interruption_notices(deployment)
    );
    let (listed, notices) = (listed?, notices?);
    Ok(engine::assess(&listed, &notices, &provider.wanted())
        .is_some_and(|a| a.missing_total() > 0 || !a.to_release().is_empty()))
}

fn load(file: &Path, printer: &Printer) -> BadPools {
    match std::fs::read_to_string(file) {
        Ok(text) => serde_json::from_str(&text).unwrap_or_else(|err| {
            printer.warn(&format!(
                "ignoring `{}`, which is not heal's bad-pool list ({err}); it will be rewritten",
                file.display()
            ));
            BadPools::default()
        }),
        Err(_) => BadPools::default(),
    }
}

/// Writes the bad pools; a failure is a warning (heal still worked, it
/// only forgets which pools to avoid).
fn save(file: &Path, memory: &BadPools, printer: &Printer) {
    let written = file
        .parent()
        .map_or(Ok(()), crate::paths::private_dir)
        .and_then(|()| {
            let text = serde_json::to_string_pretty(memory).map_err(std::io::Error::other)?;
            crate::paths::write_private(file, text.as_bytes())
        });
    if let Err(err) = written {
        printer.warn(&format!(
            "could not remember bad pools in `{}`: {err}",
            file.display()
        ));
    }
}

fn print_report(report: &HealReport, summary: Option<&Summary>, printer: &Printer) -> Result<()> {
    if printer.is_json() {
        return match summary {
            Some(summary) => printer.json(&Summarized { report, summary }),
            None => printer.json(report),
        }
        .map_err(Error::Output);
    }
    if !report.launched.is_empty() {
        printer
            .data(&launched_table(&report.launched).render())
            .map_err(Error::Output)?;
    }
    if let Some(verdict) = &report.verification {
        printer
            .data(&verdict.report.table().render())
            .map_err(Error::Output)?;
    }
    printer.info(&summary_line(report));
    if let Some(summary) = summary {
        printer.info(summary.render().trim_end());
    }
    Ok(())
}

fn launched_table(instances: &[Instance]) -> Table {
    let mut table = Table::new(["REGION", "ZONE", "ID", "NAME", "TYPE", "LIFECYCLE", "ADDRESS"]);
    for i in instances {
        table.row([
            i.region.clone(),
            i.zone.clone().unwrap_or_else(|| "-".to_string()),
            i.id.to_string(),
            i.name.clone(),
            i.instance_type.clone(),
            i.lifecycle.to_string(),
            i.ssh
                .as_ref()
                .map_or_else(|| "-".to_string(), ToString::to_string),
        ]);
    }
    table
}

/// "`app` generation 2: 3/4 healthy, 1 marked for termination; launched 1, verified; let go of 1".
fn summary_line(report: &HealReport) -> String {
    let a = &report.assessment;
    let wanted: u32 = report.wanted.iter().map(|w| w.count).sum();
    let mut text = format!(
        "`{}` generation {}: {}/{wanted} healthy",
        report.deployment,
        a.generation,
        a.healthy.len()
    );
    if !a.marked.is_empty() {
        text.push_str(&format!(", {} marked for termination", a.marked.len()));
    }
    if report.launched.is_empty() && report.released.is_none() {
        text.push_str("; nothing to heal");
        return text;
    }
    if !report.launched.is_empty() {
        text.push_str(&format!(
            "; launched {}{}",
            Count(report.launched.len(), "replacement"),
            if report.verification.is_some() {
                ", verified"
            } else {
                ", not verified (--no-verify)"
            }
        ));
    }
    if let Some(released) = &report.released {
        text.push_str(&format!(
            "; let go of {}",
            Count(released.terminated.len(), "lost instance")
        ));
    }
    if !report.avoided_pools.is_empty() {
        let pools: Vec<String> = report.avoided_pools.iter().map(ToString::to_string).collect();
        text.push_str(&format!(" (pools tried last: {})", pools.join(", ")));
    }
    text
}

/// Heals every `interval` until Ctrl-C. A failed check is logged and the
/// next one comes; a Ctrl-C during a launch rolls it back first.
async fn watch(
    context: &Context<'_>,
    provider: &AnyProvider,
    options: &HealOptions,
    interval: Duration,
) -> Result<ExitStatus> {
    let printer = context.printer;
    // Created before the first check, so a Ctrl-C that lands during a
    // check is not lost: the stream keeps it until the next `recv`.
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|err| Error::Output(std::io::Error::other(format!("cannot catch Ctrl-C: {err}"))))?;
    printer.info(&format!(
        "healing every {}; Ctrl-C stops",
        humantime::format_duration(interval)
    ));
    loop {
        match heal_once(context, provider, options).await {
            Ok(report) => log_check(&report, printer)?,
            Err(err) => log_line(
                printer,
                "failed",
                json!({ "error": err.to_string() }),
                &err.to_string(),
            )?,
        }
        tokio::select! {
            biased;
            _ = interrupt.recv() => break,
            _ = tokio::time::sleep(interval) => {}
        }
    }
    printer.info("stopped watching");
    Ok(ExitStatus::Success)
}

fn log_check(report: &HealReport, printer: &Printer) -> Result<()> {
    let a = &report.assessment;
    let check = json!({
        "deployment": report.deployment,
        "generation": a.generation,
        "healthy": a.healthy.len(),
        "wanted": report.wanted.iter().map(|w| w.count).sum::<u32>(),
        "marked": a.marked.iter().map(|i| &i.id).collect::<Vec<_>>(),
        "launched": report.launched.len(),
        "released": report.released.as_ref().map_or(0, |r| r.terminated.len()),
        "avoided_pools": report.avoided_pools,
    });
    log_line(printer, "check", check, &summary_line(report))?;
    for instance in &report.launched {
        let text = format!(
            "replacement {} in {} ({}{}), generation {}{}",
            instance.id,
            instance.region,
            instance.instance_type,
            instance
                .zone
                .as_deref()
                .map(|z| format!(" in {z}"))
                .unwrap_or_default(),
            a.generation,
            if report.verification.is_some() {
                ", verified"
            } else {
                ""
            }
        );
        log_line(printer, "replacement", replacement_json(instance, report), &text)?;
    }
    Ok(())
}

#[derive(Serialize)]
struct Replacement<'a> {
    instance: &'a Instance,
    verified: bool,
}

fn replacement_json(instance: &Instance, report: &HealReport) -> serde_json::Value {
    serde_json::to_value(Replacement {
        instance,
        verified: report.verification.is_some(),
    })
    .unwrap_or_default()
}

/// One timestamped line on stdout: text, or a JSON object per line.
fn log_line(printer: &Printer, event: &str, mut fields: serde_json::Value, text: &str) -> Result<()> {
    let time = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let line = if printer.is_json() {
        if let Some(object) = fields.as_object_mut() {
            object.insert("event".to_string(), json!(event));
            object.insert("time".to_string(), json!(time));
        }
        fields.to_string()
    } else {
        format!("{time} {text}")
    };
    printer.data(&format!("{line}\n")).map_err(Error::Output)
}
