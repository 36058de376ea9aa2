//! `respot history`: every create, deploy, rollback and destroy of the
//! deployment, oldest first. Also what the other commands call to record
//! themselves: [`finish`] appends the record to the history file and, where
//! the blueprint is a git repository, to the deployed commit's note under
//! `refs/notes/respot`. Neither can fail the command that is recorded.

use super::{Context, ExitStatus};
use crate::engine::CreateReport;
use crate::error::{Error, Result};
use crate::history::{self, History, Record, Recorder};
use crate::output::Table;
use crate::provenance;
use crate::provider::Instance;
use crate::template::Blueprint;

#[derive(Debug, Clone, Default)]
pub struct HistoryOptions {
    /// Only the newest `limit` records.
    pub limit: Option<usize>,
}

pub fn history(context: &Context<'_>, options: &HistoryOptions) -> Result<ExitStatus> {
    let (config, printer) = (context.config()?, context.printer);
    let history = History::open(&context.paths, &config.deployment.name)?;
    let mut records = history.read()?;
    if let Some(limit) = options.limit {
        records.drain(..records.len().saturating_sub(limit));
    }
    if printer.is_json() {
        printer.json(&records).map_err(Error::Output)?;
        return Ok(ExitStatus::Success);
    }
    if records.is_empty() {
        printer.info(&format!(
            "`{}` has no history yet ({})",
            config.deployment.name,
            history.path().display()
        ));
        return Ok(ExitStatus::Success);
    }
    printer.data(&table(&records).render()).map_err(Error::Output)?;
    Ok(ExitStatus::Success)
}

fn table(records: &[Record]) -> Table {
    let mut table = Table::new([
        "TIME",
        "ACTION",
        "RESULT",
        "WHO",
        "COMMIT",
        "DIGEST",
        "STRATEGY",
        "CREATED",
        "DESTROYED",
        "SECS",
        "REASON",
    ]);
    for r in records {
        let short = |v: &Option<String>, n: usize| {
            v.as_deref()
                .map_or("-".to_string(), |s| s.chars().take(n).collect())
        };
        table.row([
            r.time.clone(),
            r.action.as_str().to_string(),
            if r.succeeded() { "ok" } else { "FAILED" }.to_string(),
            format!("{}@{}", r.user, r.host),
            short(&r.commit, 10),
            short(&r.digest, 12),
            r.strategy.clone().unwrap_or_else(|| "-".to_string()),
            generations(&r.created),
            generations(&r.destroyed),
            format!("{:.1}", r.total_secs()),
            r.reason.clone().unwrap_or_default(),
        ]);
    }
    table
}

/// "g2×3" per generation, or "-".
fn generations(list: &[history::Generation]) -> String {
    if list.is_empty() {
        return "-".to_string();
    }
    list.iter()
        .map(|g| match g.generation {
            Some(n) => format!("g{n}×{}", g.instances),
            None => format!("?×{}", g.instances),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The phases the engine timed in a created generation: launch, verify.
pub(super) fn engine_phases(report: &CreateReport) -> Vec<(&'static str, f64)> {
    let mut phases = vec![("launch", report.launch_secs)];
    if let Some(verify) = report.verify_secs {
        phases.push(("verify", verify));
    }
    phases
}

/// What the rendered `blueprint` tells the record: digest, version, commit
/// and signer.
pub(super) fn note_blueprint(recorder: &mut Recorder, blueprint: &Blueprint) {
    let record = &mut recorder.record;
    record.digest = Some(blueprint.digest.to_string());
    record.version = Some(blueprint.version.clone());
    record.commit = blueprint.git.commit.clone();
    record.signer = blueprint.git.signer.clone();
}

/// Records `instances` as destroyed; when they share one generation, the
/// record names its digest and, from the history, its commit.
pub(super) fn note_destroyed(context: &Context<'_>, recorder: &mut Recorder, instances: &[Instance]) {
    recorder.destroyed(instances);
    let mut digests: Vec<String> = instances
        .iter()
        .filter_map(|i| i.digest.as_ref().map(|d| d.to_string()))
        .collect();
    digests.dedup();
    if recorder.record.digest.is_none() && digests.len() == 1 {
        recorder.record.digest = digests.pop();
    }
    let mut generations: Vec<u64> = instances.iter().filter_map(|i| i.generation).collect();
    generations.dedup();
    if recorder.record.commit.is_none()
        && let [generation] = generations[..]
        && let Ok(config) = context.config()
        && let Ok(history) = History::open(&context.paths, &config.deployment.name)
        && let Ok(records) = history.read()
        && let Some(creator) = history::creator_of(&records, generation)
    {
        recorder.record.commit = creator.commit.clone();
        recorder.record.version = creator.version.clone();
    }
}

/// Ends the record with `result` and writes it: to the history file, and
/// as a git note on its commit. Without a deployment name (the settings did
/// not load) there is nothing to record. Failures to write only warn.
pub(super) fn finish(context: &Context<'_>, mut recorder: Recorder, result: &Result<ExitStatus>) {
    let Ok(config) = context.config() else {
        return;
    };
    recorder.record.deployment = config.deployment.name.clone();
    match result {
        Ok(ExitStatus::Success) => recorder.succeed(),
        Ok(status) => recorder.fail(format!("exit {}", status.code())),
        Err(err) => recorder.fail(err.chain()),
    }
    let record = recorder.record;
    let printer = context.printer;
    match History::open(&context.paths, &record.deployment).map(|h| h.append(&record).map(|()| h)) {
        Ok(Ok(history)) => tracing::debug!("recorded in {}", history.path().display()),
        Ok(Err(err)) => printer.warn(&format!("not recorded in the history: {err}")),
        Err(err) => printer.warn(&format!("not recorded in the history: {err}")),
    }
    let Some(commit) = &record.commit else {
        return;
    };
    let line = match serde_json::to_string(&record) {
        Ok(line) => line,
        Err(err) => return printer.warn(&format!("no git note: {err}")),
    };
    if let Err(why) = provenance::append_note(&config.base_dir(), commit, &line) {
        printer.warn(&format!(
            "the history note on {commit} (refs/notes/{}) was not written: {why}",
            provenance::NOTES_REF
        ));
    }
}
