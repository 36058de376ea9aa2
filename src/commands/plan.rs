//! `respot plan`: what `deploy` would destroy and create per region, the
//! digest change and the estimated price. Reads only; writes nothing.

use super::images::show_resolved_images;
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
    show_resolved_images(context, &provider).await?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Change, PlanRegion};
    use crate::provider::Lifecycle;
    use crate::template::Digest;

    #[test]
    fn the_table_shows_unknown_prices_and_digests_as_such() {
        let region = |name: &str, destroy_digests: Vec<String>, price: Option<f64>| PlanRegion {
            region: name.to_string(),
            destroy: destroy_digests.len(),
            destroy_digests,
            create: 2,
            instance_type: "t3.small".to_string(),
            lifecycle: Some(Lifecycle::Spot),
            price_per_hour: price,
            cost_per_hour: price.map(|p| p * 2.0),
            price_note: None,
        };
        let plan = Plan {
            deployment: "demo".to_string(),
            strategy: Strategy::BlueGreen,
            digest: Digest::parse(&"a".repeat(64)).expect("64 hex chars"),
            version: "v".to_string(),
            change: Change::Changed,
            regions: vec![
                region("eu-west-1", vec!["bbbbbbbbbbbb".to_string()], Some(0.0125)),
                region("us-east-1", Vec::new(), None),
            ],
            cost_per_hour: None,
        };
        let text = table(&plan).render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[1].starts_with("eu-west-1  1        bbbbbbbbbbbb  2"),
            "{text}"
        );
        assert!(lines[1].ends_with("$0.0125  $0.0250"), "{text}");
        assert!(
            lines[2].contains(" -  ") && lines[2].ends_with("?        ?"),
            "{text}"
        );
    }
}
