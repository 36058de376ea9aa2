//! `respot unlock`: removes a stale deployment lock, after showing who
//! holds it (and for which command) and a confirmation.
//!
//! On AWS the lock is a security group that a killed process leaves
//! behind; this deletes it. A local lock is an `flock`, which ends with
//! its process: one that is held belongs to a live process and is refused.

use super::locking::local_lock_path;
use super::{Context, ExitStatus};
use crate::engine::EngineError;
use crate::error::Result;
use crate::lock::{LocalLock, LockError};
use crate::provider::AnyProvider;

#[derive(Debug, Clone, Default)]
pub struct UnlockOptions {
    /// Do not ask before removing the lock.
    pub yes: bool,
}

pub async fn unlock(context: &Context<'_>, options: &UnlockOptions) -> Result<ExitStatus> {
    let (config, printer) = (context.config()?, context.printer);
    let deployment = config.deployment.name.clone();
    let provider = context.connect().await?;
    match &provider {
        AnyProvider::Local(_) => {
            let path = local_lock_path(context, &deployment)?;
            match LocalLock::holder(&path)? {
                None => printer.info(&format!("`{deployment}` is not locked")),
                Some(holder) => {
                    return Err(LockError::HeldByLiveProcess {
                        deployment,
                        holder: Box::new(holder),
                    }
                    .into());
                }
            }
        }
        AnyProvider::Aws(aws) => {
            let Some(held) = aws.lock_holder(&deployment).await? else {
                printer.info(&format!("`{deployment}` is not locked"));
                return Ok(ExitStatus::Success);
            };
            printer.warn(&format!(
                "`{deployment}` is locked by {} ({}); remove the lock only if that run is gone",
                held.holder, held.place
            ));
            if !options.yes {
                if !printer.can_ask() {
                    return Err(LockError::NeedsConfirmation { deployment }.into());
                }
                let question = format!("Remove the lock taken by `respot {}`?", held.holder.command);
                if !printer.ask(&question).unwrap_or(false) {
                    return Err(EngineError::Declined.into());
                }
            }
            aws.break_lock(&held).await?;
            printer.info(&format!(
                "removed the lock of `{deployment}` taken by `respot {}` ({})",
                held.holder.command, held.holder.who
            ));
        }
    }
    Ok(ExitStatus::Success)
}
