//! `respot destroy`: terminate every instance of the deployment, and only
//! those, then clean up what respot created. Works even when the blueprint
//! no longer renders: it needs only the settings and the key store.
//!
//! `--deployment NAME` does the same for another deployment (one that
//! `list --all-deployments` found): the same exact-tag scoping, so `app`
//! never touches `app-2`, and the same confirmation.

use super::locking::{OnCtrlC, locked_for};
use super::verification::HostKeys;
use super::{Context, ExitStatus, history};
use crate::engine::{self, Confirm, DestroyOptions, DestroyOutcome, EngineError};
use crate::error::{Error, Result};
use crate::history::{Action, Recorder};
use crate::keys::KeyStore;
use crate::output::Table;
use crate::provider::AnyProvider;
use crate::traffic::FrontDoor;
use crate::traffic::alb::remove_tagged;

#[derive(Debug, Clone, Default)]
pub struct DestroyCommand {
    pub destroy: DestroyOptions,
    /// Another deployment than `respot.toml`'s, by its exact name.
    pub deployment: Option<String>,
}

pub async fn destroy(context: &Context<'_>, options: &DestroyCommand) -> Result<ExitStatus> {
    let mut recorder = Recorder::start(Action::Destroy);
    let result = destroy_recorded(context, options, &mut recorder).await;
    // A dry run changes nothing, so it is not history; another deployment's
    // destroy is not this deployment's history.
    let ours = match (&options.deployment, context.config()) {
        (Some(name), Ok(config)) => *name == config.deployment.name,
        _ => true,
    };
    if !options.destroy.dry_run && ours {
        history::finish(context, recorder, &result);
    }
    result
}

async fn destroy_recorded(
    context: &Context<'_>,
    options: &DestroyCommand,
    recorder: &mut Recorder,
) -> Result<ExitStatus> {
    let (config, printer) = (context.config()?, context.printer);
    let deployment = options.deployment.as_deref().unwrap_or(&config.deployment.name);
    if deployment != config.deployment.name {
        printer.info(&format!(
            "destroying `{deployment}`, not this blueprint's `{}`",
            config.deployment.name
        ));
    }
    let provider = context.connect().await?;
    recorder.mark("connect");
    let keys = KeyStore::open(&context.paths, deployment)?;
    let host_keys = HostKeys { keys: &keys, printer };
    let ask = |question: &str| printer.ask(question);
    let confirm: Option<Confirm> = printer.can_ask().then_some(&ask);
    let work = async {
        Ok(engine::destroy(
            &provider,
            &host_keys,
            deployment,
            &options.destroy,
            confirm,
            printer,
        )
        .await?)
    };
    let outcome = if options.destroy.dry_run {
        // A dry run changes nothing, so it takes no lock.
        work.await?
    } else {
        locked_for(context, &provider, deployment, "destroy", OnCtrlC::Stop, work).await?
    };
    recorder.mark("destroy");
    history::note_destroyed(context, recorder, &outcome.instances);
    // The whole deployment is gone: so is its front door (this blueprint's
    // door only: another deployment's is not described here).
    if !outcome.dry_run
        && deployment == config.deployment.name
        && let Ok(Some(door)) = super::door::connect(context, &provider)
    {
        for removed in door.remove().await.map_err(EngineError::from)? {
            printer.info(&format!("removed {removed}"));
        }
    }
    // Target groups still tagged for the deployment: another deployment's
    // door, or this one's after its `[traffic]` section was removed.
    if !outcome.dry_run
        && let AnyProvider::Aws(aws) = &provider
    {
        let removed = remove_tagged(aws.sdk_config(), &aws.region_names(), deployment)
            .await
            .map_err(EngineError::from)?;
        for removed in removed {
            printer.info(&format!("removed {removed}"));
        }
    }
    if printer.is_json() {
        printer.json(&outcome).map_err(Error::Output)?;
    } else if outcome.dry_run && !outcome.instances.is_empty() {
        printer.data(&table(&outcome).render()).map_err(Error::Output)?;
    }
    Ok(ExitStatus::Success)
}

fn table(outcome: &DestroyOutcome) -> Table {
    let mut table = Table::new(["REGION", "ID", "NAME", "STATE"]);
    for i in &outcome.instances {
        table.row([
            i.region.clone(),
            i.id.to_string(),
            i.name.clone(),
            i.state.to_string(),
        ]);
    }
    table
}
