//! `respot rollback`: all traffic back to the previous generation. The
//! instant path while it is alive (kept with `deploy --keep-old`, or left
//! by an interrupted deploy): one shift of the front door, then the newer
//! generation is drained and destroyed.

use super::verification::HostKeys;
use super::{Context, ExitStatus};
use crate::engine::{self, Confirm, EngineError};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Default)]
pub struct RollbackOptions {
    /// Do not ask before terminating the newer generation.
    pub yes: bool,
}

pub async fn rollback(context: &Context<'_>, options: &RollbackOptions) -> Result<ExitStatus> {
    let (config, printer) = (context.config()?, context.printer);
    let provider = context.connect().await?;
    let Some(door) = super::door::connect(context, &provider)? else {
        return Err(EngineError::NeedsDoor {
            what: "`respot rollback`".to_string(),
        }
        .into());
    };
    let keys = context.keys()?;
    let host_keys = HostKeys { keys: &keys, printer };
    let ask = |question: &str| printer.ask(question);
    let confirm: Option<Confirm> = printer.can_ask().then_some(&ask);
    let name = &config.deployment.name;
    let report = engine::rollback(&provider, &host_keys, &door, name, options.yes, confirm, printer).await?;
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
