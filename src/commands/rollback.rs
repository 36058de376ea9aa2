//! `respot rollback`: all traffic back to the previous generation. The
//! instant path while it is alive (kept with `deploy --keep-old`, or left
//! by an interrupted deploy): one shift of the front door, then the newer
//! generation is drained and destroyed. Otherwise (gone, or no front door)
//! the forward path: deploy the previous successful commit from the history
//! (`deploy --ref`, blue-green through the door, recreate without one).
//! Either way the history records a `rollback`.

use super::deploy::{DeployCommand, deploy_as};
use super::verification::HostKeys;
use super::{Context, ExitStatus, history};
use crate::engine::{self, Confirm, CreateOptions, DeployOptions, EngineError, Strategy};
use crate::error::{Error, Result};
use crate::history::{Action, History, Recorder, creator_of, current, previous_success};
use crate::provider::{AnyProvider, Provider};

#[derive(Debug, Clone, Default)]
pub struct RollbackOptions {
    /// Do not ask before terminating the newer generation.
    pub yes: bool,
    /// Forward path: verify the redeployed generation over SSH.
    pub verify: bool,
}

pub async fn rollback(context: &Context<'_>, options: &RollbackOptions) -> Result<ExitStatus> {
    let mut recorder = Recorder::start(Action::Rollback);
    let provider = match context.connect().await {
        Ok(provider) => provider,
        Err(err) => {
            let result = Err(err);
            history::finish(context, recorder, &result);
            return result;
        }
    };
    recorder.mark("connect");
    match instant(context, options, &provider, &mut recorder).await {
        Err(Error::Engine(EngineError::NothingToRollBack(why))) => {
            context.printer.info(&format!(
                "no instant rollback ({why}): rolling back forward, from the history"
            ));
            forward(context, options, &provider).await
        }
        result => {
            history::finish(context, recorder, &result);
            result
        }
    }
}

/// The instant path: the front door shifts back to a generation still alive.
async fn instant(
    context: &Context<'_>,
    options: &RollbackOptions,
    provider: &AnyProvider,
    recorder: &mut Recorder,
) -> Result<ExitStatus> {
    let (config, printer) = (context.config()?, context.printer);
    let Some(door) = super::door::connect(context, provider)? else {
        return Err(EngineError::NothingToRollBack("there is no front door ([traffic])".to_string()).into());
    };
    let keys = context.keys()?;
    let host_keys = HostKeys { keys: &keys, printer };
    let ask = |question: &str| printer.ask(question);
    let confirm: Option<Confirm> = printer.can_ask().then_some(&ask);
    let name = &config.deployment.name;
    let report = engine::rollback(provider, &host_keys, &door, name, options.yes, confirm, printer).await?;
    recorder.mark("shift-and-destroy");
    if let Some(destroyed) = &report.destroyed {
        recorder.record.destroyed.push(crate::history::Generation {
            generation: Some(report.from),
            instances: destroyed.terminated.len(),
        });
    }
    let records = History::open(&context.paths, name)?.read().unwrap_or_default();
    if let Some(back) = creator_of(&records, report.to) {
        recorder.record.commit = back.commit.clone();
        recorder.record.digest = back.digest.clone();
        recorder.record.version = back.version.clone();
    }
    if printer.is_json() {
        printer.json(&report).map_err(Error::Output)?;
    } else {
        printer.info(&format!(
            "rolled `{name}` back to generation {} in {} ms{}",
            report.to,
            report.shift_ms,
            report
                .destroyed
                .as_ref()
                .map(|d| format!("; {}", d.summary()))
                .unwrap_or_default()
        ));
    }
    Ok(ExitStatus::Success)
}

/// The forward path: `deploy --ref` of the last successful commit before
/// the live generation, recorded as a rollback by the deploy itself.
async fn forward(
    context: &Context<'_>,
    options: &RollbackOptions,
    provider: &AnyProvider,
) -> Result<ExitStatus> {
    let mut recorder = Recorder::start(Action::Rollback);
    let found = previous_commit(context, provider).await;
    let commit = match found {
        Ok(commit) => commit,
        Err(err) => {
            let result = Err(err);
            history::finish(context, recorder, &result);
            return result;
        }
    };
    recorder.restart();
    let has_door = context.config()?.traffic.is_some();
    let command = DeployCommand {
        deploy: DeployOptions {
            strategy: if has_door {
                Strategy::BlueGreen
            } else {
                Strategy::Recreate
            },
            create: CreateOptions {
                verify: options.verify,
                ..CreateOptions::default()
            },
            yes: options.yes,
            ..DeployOptions::default()
        },
        git_ref: Some(commit),
    };
    deploy_as(context, &command, Action::Rollback).await
}

/// The commit of the last successful generation before the live one.
async fn previous_commit(context: &Context<'_>, provider: &AnyProvider) -> Result<String> {
    let name = &context.config()?.deployment.name;
    let records = History::open(&context.paths, name)?.read()?;
    let live = provider.list(name).await.map_err(EngineError::from)?;
    let live_generation = live
        .iter()
        .filter(|i| i.state.is_live())
        .filter_map(|i| i.generation)
        .max();
    let Some(generation) = live_generation.or_else(|| current(&records).and_then(|r| r.created_generation()))
    else {
        return Err(EngineError::NothingToRollBack(format!(
            "`{name}` has no live generation and its history none either"
        ))
        .into());
    };
    let Some(previous) = previous_success(&records, generation) else {
        return Err(EngineError::NothingToRollBack(format!(
            "the history of `{name}` has no successful deployment before generation {generation}"
        ))
        .into());
    };
    previous.commit.clone().ok_or_else(|| {
        EngineError::NothingToRollBack(format!(
            "generation {} (digest {}) was deployed from a dirty tree: there is no commit to deploy again",
            previous.created_generation().unwrap_or_default(),
            previous.digest.as_deref().unwrap_or("unknown")
        ))
        .into()
    })
}
