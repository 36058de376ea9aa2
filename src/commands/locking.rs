//! The deployment lock as commands take it: one call before a command
//! changes anything, one call after, whatever happened in between.
//!
//! `create`, `deploy` and `destroy` run their work inside [`locked`]; a
//! command added later that changes a deployment (`heal`) does the same.
//! Read-only commands (`list`, `plan`, `verify`, `debug`) never call it.

use std::path::PathBuf;

use super::Context;
use crate::error::{Error, Result};
use crate::lock::{DeploymentLock, Holder, LocalLock};
use crate::provider::AnyProvider;

/// Where the local provider's lock of `deployment` lives: next to its VMs'
/// state directory, never inside it (every entry in there is an instance).
pub(super) fn local_lock_path(context: &Context<'_>, deployment: &str) -> Result<PathBuf> {
    Ok(context.paths.vms_root()?.join(format!("{deployment}.lock")))
}

/// Takes the deployment's lock for `command`; a held lock is
/// `LockError::Held` (exit 4), naming the holder and since when.
async fn lock(
    context: &Context<'_>,
    provider: &AnyProvider,
    deployment: &str,
    command: &'static str,
) -> Result<DeploymentLock> {
    let holder = Holder::current(command);
    match provider {
        AnyProvider::Local(_) => {
            let path = local_lock_path(context, deployment)?;
            Ok(DeploymentLock::Local(LocalLock::acquire(
                &path, deployment, &holder,
            )?))
        }
        AnyProvider::Aws(aws) => Ok(DeploymentLock::Aws(Box::new(
            aws.acquire_lock(deployment, &holder).await?,
        ))),
    }
}

/// What Ctrl-C does while a command holds the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OnCtrlC {
    /// The work handles it (`create` and `deploy` roll back, then return).
    Work,
    /// The work stops where it is; the lock is released and the command
    /// fails as interrupted (`destroy`: run it again, it is idempotent).
    Stop,
}

/// Runs `work` holding the deployment's lock, then releases it, on success,
/// error and Ctrl-C alike (a panic or a dropped future releases it in
/// `Drop`).
pub(super) async fn locked<T, F>(
    context: &Context<'_>,
    provider: &AnyProvider,
    command: &'static str,
    on_ctrl_c: OnCtrlC,
    work: F,
) -> Result<T>
where
    F: std::future::Future<Output = Result<T>>,
{
    let deployment = context.config()?.deployment.name.clone();
    locked_for(context, provider, &deployment, command, on_ctrl_c, work).await
}

/// As [`locked`], for `deployment` rather than `respot.toml`'s
/// (`destroy --deployment NAME` takes NAME's lock).
pub(super) async fn locked_for<T, F>(
    context: &Context<'_>,
    provider: &AnyProvider,
    deployment: &str,
    command: &'static str,
    on_ctrl_c: OnCtrlC,
    work: F,
) -> Result<T>
where
    F: std::future::Future<Output = Result<T>>,
{
    let lock = lock(context, provider, deployment, command).await?;
    let result = match on_ctrl_c {
        OnCtrlC::Work => work.await,
        OnCtrlC::Stop => tokio::select! {
            result = work => result,
            _ = tokio::signal::ctrl_c() => Err(Error::Interrupted { command }),
        },
    };
    if let Err(err) = lock.release().await {
        context.printer.warn(&format!(
            "could not release the deployment lock: {err}; `respot unlock` removes it"
        ));
    }
    result
}
