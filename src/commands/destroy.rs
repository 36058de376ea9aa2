//! `respot destroy`: terminate every instance of the deployment, and only
//! those, then clean up what respot created. Works even when the blueprint
//! no longer renders: it needs only the settings and the key store.

use super::verification::HostKeys;
use super::{Context, ExitStatus, history};
use crate::engine::{self, Confirm, DestroyOptions, DestroyOutcome, EngineError};
use crate::error::{Error, Result};
use crate::history::{Action, Recorder};
use crate::output::Table;
use crate::traffic::FrontDoor;

pub async fn destroy(context: &Context<'_>, options: &DestroyOptions) -> Result<ExitStatus> {
    let mut recorder = Recorder::start(Action::Destroy);
    let result = destroy_recorded(context, options, &mut recorder).await;
    // A dry run changes nothing, so it is not history.
    if !options.dry_run {
        history::finish(context, recorder, &result);
    }
    result
}

async fn destroy_recorded(
    context: &Context<'_>,
    options: &DestroyOptions,
    recorder: &mut Recorder,
) -> Result<ExitStatus> {
    let (config, printer) = (context.config()?, context.printer);
    let provider = context.connect().await?;
    recorder.mark("connect");
    let keys = context.keys()?;
    let host_keys = HostKeys { keys: &keys, printer };
    let ask = |question: &str| printer.ask(question);
    let confirm: Option<Confirm> = printer.can_ask().then_some(&ask);
    let outcome = engine::destroy(
        &provider,
        &host_keys,
        &config.deployment.name,
        options,
        confirm,
        printer,
    )
    .await?;
    recorder.mark("destroy");
    history::note_destroyed(context, recorder, &outcome.instances);
    // The whole deployment is gone: so is its front door.
    if !outcome.dry_run
        && let Ok(Some(door)) = super::door::connect(context, &provider)
    {
        for removed in door.remove().await.map_err(EngineError::from)? {
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
