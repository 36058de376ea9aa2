//! `respot destroy`: terminate every instance of the deployment, and only
//! those, then clean up what respot created. Works even when the blueprint
//! no longer renders: it needs only the settings and the key store.

use super::locking::{OnCtrlC, locked};
use super::verification::HostKeys;
use super::{Context, ExitStatus};
use crate::engine::{self, Confirm, DestroyOptions, DestroyOutcome};
use crate::error::{Error, Result};
use crate::output::Table;

pub async fn destroy(context: &Context<'_>, options: &DestroyOptions) -> Result<ExitStatus> {
    let (config, printer) = (context.config()?, context.printer);
    let provider = context.connect().await?;
    let keys = context.keys()?;
    let host_keys = HostKeys { keys: &keys, printer };
    let ask = |question: &str| printer.ask(question);
    let confirm: Option<Confirm> = printer.can_ask().then_some(&ask);
    let work = async {
        Ok(engine::destroy(
            &provider,
            &host_keys,
            &config.deployment.name,
            options,
            confirm,
            printer,
        )
        .await?)
    };
    let outcome = if options.dry_run {
        // A dry run changes nothing, so it takes no lock.
        work.await?
    } else {
        locked(context, &provider, "destroy", OnCtrlC::Stop, work).await?
    };
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
