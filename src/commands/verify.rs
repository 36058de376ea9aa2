//! `respot verify`: read-only checks over SSH on live instances (or on
//! endpoints given with `--target`); the exit status says pass or fail.

use super::select::{
    endpoint_target, expected_for, expected_from, live_instances, pin_host_keys, targets, verify_settings,
};
use super::{Context, ExitStatus};
use crate::error::{Error, Result};
use crate::keys::KeyStore;
use crate::provider::SshEndpoint;
use crate::template::Blueprint;
use crate::verify::{Expected, Target, verify_fleet};

#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Only these live instances, by id, name, IP or HOST:PORT.
    pub instances: Vec<String>,
    /// Endpoints to verify without asking the provider.
    pub targets: Vec<SshEndpoint>,
    /// Warnings fail too.
    pub strict: bool,
    /// Seconds per instance, overriding `verify.timeout_secs`.
    pub timeout: Option<u64>,
}

pub async fn verify(context: &Context<'_>, options: &VerifyOptions) -> Result<ExitStatus> {
    let (config, printer) = (context.config()?, context.printer);
    let blueprint = Blueprint::render(config)?;
    let keys = context.keys()?;
    let (targets, expected) = if options.targets.is_empty() {
        provider_targets(context, &keys, &blueprint, &options.instances).await?
    } else {
        let targets = options.targets.iter().map(endpoint_target).collect();
        (targets, expected_from(config, &blueprint))
    };
    let settings = verify_settings(config, options.timeout, options.strict);
    let report = verify_fleet(&keys, &targets, &expected, &settings, printer).await;
    if printer.is_json() {
        printer.json(&report).map_err(Error::Output)?;
    } else {
        printer.data(&report.table().render()).map_err(Error::Output)?;
    }
    if report.passed() {
        printer.info(&report.summary());
        Ok(ExitStatus::Success)
    } else {
        printer.error(&format!(
            "{}; failed: {}",
            report.summary(),
            report.failed_instances.join(", ")
        ));
        Ok(ExitStatus::Failure)
    }
}

/// The live instances the provider knows (all, or those named), their
/// host keys pinned, and the digest they must report.
async fn provider_targets(
    context: &Context<'_>,
    keys: &KeyStore,
    blueprint: &Blueprint,
    wanted: &[String],
) -> Result<(Vec<Target>, Expected)> {
    let (config, printer) = (context.config()?, context.printer);
    let provider = context.connect().await?;
    let instances = live_instances(&provider, config, wanted).await?;
    if instances.is_empty() {
        return Err(Error::NoLiveInstances {
            deployment: config.deployment.name.clone(),
        });
    }
    let unpinned = pin_host_keys(keys, config, &instances);
    if !unpinned.is_empty() {
        printer.warn(&format!(
            "this machine holds no pinned host key for {}; they will fail as not pinned",
            unpinned.join(", ")
        ));
    }
    let expected = expected_for(config, &instances, blueprint);
    if expected.digest != blueprint.digest {
        printer.warn(&format!(
            "the instances run digest {}, not the current render's {}: they are stale; \
             `respot destroy` then `respot create` ships the change",
            expected.digest.short(),
            blueprint.digest.short()
        ));
    }
    Ok((targets(&instances), expected))
}
