//! `respot plan`: what `deploy` would destroy and create per region, the
//! digest change and the estimated price. Reads only; writes nothing.

use super::{Context, ExitStatus};
use crate::engine::{self, Plan, Strategy};
use crate::error::{Error, Result};
use crate::output::Table;
use crate::template::Blueprint;

pub async fn plan(context: &Context<'_>, strategy: Strategy) -> Result<ExitStatus> {
    let printer = context.printer;
    let provider = context.connect().await?;
    let blueprint = Blueprint::render(context.config()?)?;
    let plan = engine::plan(&provider, &blueprint, strategy).await?;
    if printer.is_json() {
        printer.json(&plan).map_err(Error::Output)?;
        return Ok(ExitStatus::Success);
    }
    printer.data(&table(&plan).render()).map_err(Error::Output)?;
    for r in &plan.regions {
        if let Some(note) = &r.price_note {
            printer.warn(&format!("{}: {note}", r.region));
        }
    }
    printer.info(&format!(
        "digest {} ({}): {}; strategy {}",
        plan.digest.short(),
        plan.version,
        plan.change.describe(),
        plan.strategy.describe()
    ));
    printer.info(&format!(
        "estimated cost {} per hour at current spot prices (billing may differ)",
        money(plan.cost_per_hour)
    ));
    Ok(ExitStatus::Success)
}

fn money(value: Option<f64>) -> String {
    value.map_or_else(|| "?".to_string(), |v| format!("${v:.4}"))
}

fn table(plan: &Plan) -> Table {
    let mut table = Table::new([
        "REGION",
        "DESTROY",
        "RUNNING",
        "CREATE",
        "TYPE",
        "LIFECYCLE",
        "PRICE/H",
        "COST/H",
    ]);
    for r in &plan.regions {
        table.row([
            r.region.clone(),
            r.destroy.to_string(),
            if r.destroy_digests.is_empty() {
                "-".to_string()
            } else {
                r.destroy_digests.join(",")
            },
            r.create.to_string(),
            r.instance_type.clone(),
            r.lifecycle.map_or_else(|| "-".to_string(), |l| l.to_string()),
            money(r.price_per_hour),
            money(r.cost_per_hour),
        ]);
    }
    table
}
