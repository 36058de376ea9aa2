//! `respot list`: the deployment's instances in every configured region,
//! marked stale when they run another digest than the current render, with
//! why an instance is gone or going (the provider's reason, a spot
//! interruption notice, a VM whose qemu died).
//! `--all-deployments` lists every deployment respot tagged instead (see
//! `inventory`). Reads only, from the provider; writes nothing to disk.

mod inventory;

use serde::Serialize;

use super::{Context, ExitStatus};
use crate::engine::count_by;
use crate::error::{Error, Result};
use crate::output::{Count, Table};
use crate::provider::{Instance, InstanceId, Provider};
use crate::template::{Blueprint, Digest};

/// The reason shown for an instance with a spot interruption notice.
const NOTICE: &str = "marked-for-termination: spot interruption notice";

#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// Every deployment respot tagged, grouped, with what is left behind.
    pub all_deployments: bool,
}

#[derive(Serialize)]
struct ListedInstance<'a> {
    #[serde(flatten)]
    instance: &'a Instance,
    age_secs: Option<u64>,
    /// True when the instance runs another digest than the current render;
    /// `None` when the blueprint does not render.
    stale: Option<bool>,
    /// The provider announced it will take the instance back.
    interruption_notice: bool,
}

impl<'a> ListedInstance<'a> {
    fn new(instance: &'a Instance, current: Option<&Digest>, notices: &[InstanceId]) -> Self {
        ListedInstance {
            instance,
            age_secs: age_secs(instance),
            stale: current.map(|digest| instance.digest.as_ref() != Some(digest)),
            interruption_notice: notices.contains(&instance.id),
        }
    }
}

fn age_secs(instance: &Instance) -> Option<u64> {
    instance
        .launched_at
        .and_then(|t| t.elapsed().ok())
        .map(|d| d.as_secs())
}

/// The current render's digest, or `None` (with a warning) when the
/// blueprint does not render.
fn current_digest(context: &Context<'_>) -> Result<Option<Digest>> {
    Ok(match Blueprint::render(context.config()?) {
        Ok(blueprint) => Some(blueprint.digest),
        Err(err) => {
            context.printer.warn(&format!(
                "cannot render the blueprint, so staleness is unknown: {err}"
            ));
            None
        }
    })
}

pub async fn list(context: &Context<'_>, options: &ListOptions) -> Result<ExitStatus> {
    if options.all_deployments {
        return inventory::list_all(context).await;
    }
    let (config, printer) = (context.config()?, context.printer);
    let provider = context.connect().await?;
    let current = current_digest(context)?;
    let deployment = &config.deployment.name;
    let (instances, notices) = tokio::join!(
        provider.list(deployment),
        provider.interruption_notices(deployment)
    );
    let (instances, notices) = (instances?, notices?);
    let rows: Vec<ListedInstance> = instances
        .iter()
        .map(|i| ListedInstance::new(i, current.as_ref(), &notices))
        .collect();
    if printer.is_json() {
        printer.json(&rows).map_err(Error::Output)?;
    } else if rows.is_empty() {
        printer.info(&format!("`{}` has no instances", config.deployment.name));
    } else {
        printer.data(&table(&rows).render()).map_err(Error::Output)?;
        printer.info(&format!(
            "{}: {}",
            Count(instances.len(), "instance"),
            count_by(instances.iter().map(|i| i.state.as_str()))
        ));
    }
    Ok(ExitStatus::Success)
}

fn table(rows: &[ListedInstance]) -> Table {
    let mut table = Table::new([
        "REGION",
        "ZONE",
        "ID",
        "NAME",
        "TYPE",
        "LIFECYCLE",
        "STATE",
        "ADDRESS",
        "VERSION",
        "GEN",
        "AGE",
        "STALE",
        "SECRETS",
    ]);
    for row in rows {
        let i = row.instance;
        let address = match (&i.ssh, &i.public_ip) {
            (Some(ssh), _) if ssh.port != 22 => ssh.to_string(),
            (_, Some(ip)) => ip.clone(),
            _ => i.private_ip.clone().unwrap_or_else(|| "-".to_string()),
        };
        let reason = i
            .state_reason
            .as_deref()
            .or(row.interruption_notice.then_some(NOTICE));
        let state = match reason {
            Some(reason) => format!("{} ({reason})", i.state),
            None => i.state.to_string(),
        };
        table.row([
            i.region.clone(),
            i.zone.clone().unwrap_or_else(|| "-".to_string()),
            i.id.to_string(),
            i.name.clone(),
            i.instance_type.clone(),
            i.lifecycle.to_string(),
            state,
            address,
            i.version.clone().unwrap_or_else(|| "-".to_string()),
            i.generation.map_or_else(|| "-".to_string(), |g| g.to_string()),
            short_age(row.age_secs),
            match row.stale {
                Some(true) => "stale".to_string(),
                Some(false) => String::new(),
                None => "?".to_string(),
            },
            i.secrets.clone().unwrap_or_else(|| "-".to_string()),
        ]);
    }
    table
}

/// "42s", "12m", "3h", "2d".
fn short_age(secs: Option<u64>) -> String {
    match secs {
        None => "-".to_string(),
        Some(secs @ 0..60) => format!("{secs}s"),
        Some(secs @ 60..3600) => format!("{}m", secs / 60),
        Some(secs @ 3600..86400) => format!("{}h", secs / 3600),
        Some(secs) => format!("{}d", secs / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_use_the_largest_whole_unit() {
        let cases = [
            (None, "-"),
            (Some(0), "0s"),
            (Some(59), "59s"),
            (Some(60), "1m"),
            (Some(3599), "59m"),
            (Some(3600), "1h"),
            (Some(86_400 * 3 + 5), "3d"),
        ];
        for (secs, want) in cases {
            assert_eq!(short_age(secs), want, "{secs:?}");
        }
    }
}
