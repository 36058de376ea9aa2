//! `respot debug <target>`: a read-only inspection report for one instance.
//! It shows; it never fixes.

use std::path::Path;

use serde::Serialize;

use super::select::{endpoint_target, live_instances, pin_host_keys, targets, verify_settings};
use super::{Context, ExitStatus};
use crate::error::{Error, Result};
use crate::keys::KeyStore;
use crate::provider::{AnyProvider, Instance, SshEndpoint};
use crate::verify::{DebugReport, Section, Target, debug_report};

/// Serial console lines shown for a local VM.
const CONSOLE_TAIL: usize = 40;

#[derive(Debug, Clone)]
pub struct DebugOptions {
    /// An instance id, name or IP, or an SSH endpoint HOST:PORT.
    pub target: String,
    /// Only these parts (all when empty).
    pub sections: Vec<Section>,
    pub timeout: Option<u64>,
}

#[derive(Serialize)]
struct DebugOutput<'a> {
    #[serde(flatten)]
    report: &'a DebugReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    console_tail: Option<&'a [String]>,
}

pub async fn debug(context: &Context<'_>, options: &DebugOptions) -> Result<ExitStatus> {
    let (config, printer) = (context.config()?, context.printer);
    let keys = context.keys()?;
    let endpoint = SshEndpoint::parse(&options.target);
    // An endpoint needs no provider: `debug HOST:PORT` works where the
    // provider cannot be used (no credentials, no VM image).
    let provider = match (context.connect().await, &endpoint) {
        (Ok(provider), _) => Some(provider),
        (Err(err), Ok(_)) => {
            tracing::info!("no provider, so `{}` is only an endpoint: {err}", options.target);
            None
        }
        (Err(err), Err(_)) => return Err(err),
    };
    let (target, instance) =
        find_target(provider.as_ref(), context, &keys, &options.target, endpoint).await?;
    let settings = verify_settings(config, options.timeout, false);
    let report = debug_report(&keys, &target, &options.sections, &settings).await?;
    let console = match (&provider, &instance) {
        (Some(AnyProvider::Local(local)), Some(instance)) if options.sections.is_empty() => Some(tail_lines(
            &local.console_log(&config.deployment.name, &instance.id),
            CONSOLE_TAIL,
        )),
        _ => None,
    };
    if printer.is_json() {
        let output = DebugOutput {
            report: &report,
            console_tail: console.as_deref(),
        };
        printer.json(&output).map_err(Error::Output)?;
        return Ok(ExitStatus::Success);
    }
    let mut text = String::new();
    if let Some(lines) = &console {
        text.push_str(&format!("== serial console (last {CONSOLE_TAIL} lines) ==\n"));
        for line in lines {
            text.push_str(line);
            text.push('\n');
        }
        text.push('\n');
    }
    text.push_str(&report.to_string());
    printer.data(&text).map_err(Error::Output)?;
    Ok(ExitStatus::Success)
}

/// The instance `wanted` names: one the provider lists wins; otherwise a
/// HOST:PORT is an endpoint of its own.
async fn find_target(
    provider: Option<&AnyProvider>,
    context: &Context<'_>,
    keys: &KeyStore,
    wanted: &str,
    endpoint: std::result::Result<SshEndpoint, String>,
) -> Result<(Target, Option<Instance>)> {
    let config = context.config()?;
    if let Some(provider) = provider {
        match live_instances(provider, config, &[wanted.to_string()]).await {
            Ok(instances) => {
                pin_host_keys(keys, config, &instances);
                if let Some(instance) = instances.into_iter().next() {
                    return Ok((instance_target(&instance)?, Some(instance)));
                }
            }
            Err(err) if endpoint.is_err() => return Err(err),
            Err(_) => {}
        }
    }
    let endpoint = endpoint.map_err(|_| Error::NoSuchInstance {
        deployment: config.deployment.name.clone(),
        wanted: wanted.to_string(),
    })?;
    Ok((endpoint_target(&endpoint), None))
}

fn instance_target(instance: &Instance) -> Result<Target> {
    targets(std::slice::from_ref(instance))
        .pop()
        .ok_or_else(|| Error::NoEndpoint {
            instance: instance.id.to_string(),
        })
}

/// The last `n` lines of a text file, control characters removed.
fn tail_lines(path: &Path, n: usize) -> Vec<String> {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).to_string())
        .unwrap_or_default();
    let lines: Vec<String> = text
        .lines()
        .map(|l| l.chars().filter(|c| !c.is_control() || *c == '\t').collect())
        .collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}
