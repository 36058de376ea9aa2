//! `respot iam-policy`: prints the minimal IAM policies the configured
//! deployment needs on AWS, derived from the calls respot makes
//! (`provider::aws::permissions`, `provider::aws::policies`): the
//! operator's (the user or role respot runs as) and, when the instances
//! fetch SSM secrets, the instance profile's. Reads the configuration (and
//! renders the blueprint, for `transport = "auto"`); never calls AWS.

use serde::Serialize;
use serde_json::Value;

use super::{Context, ExitStatus};
use crate::config::{Config, ProviderKind, Transport};
use crate::error::{Error, Result};
use crate::provider::aws::permissions;
use crate::provider::aws::policies::{self, ProfilePolicy};
use crate::template::Blueprint;

#[derive(Serialize)]
struct Report {
    /// For the user or role respot runs as.
    operator: Value,
    /// For the role of `aws.instance_profile`; `None` when the instances
    /// need nothing of AWS.
    instance_profile: Option<ProfilePolicy>,
    /// Where to narrow them.
    notes: Vec<String>,
}

/// Whether the files travel as a bundle (S3 on AWS): `auto` bundles only
/// a blueprint that does not fit, so it is rendered; one that does not
/// render yet is counted as bundled, so the policy is not short.
fn bundled(config: &Config) -> bool {
    match config.deployment.transport {
        Transport::Inline => false,
        Transport::Bundle => true,
        Transport::Auto => Blueprint::render(config).map_or(true, |b| b.bundle.is_some()),
    }
}

pub fn iam_policy(context: &Context<'_>) -> Result<ExitStatus> {
    let (config, printer) = (context.config()?, context.printer);
    if context.provider.kind.unwrap_or(config.deployment.provider) == ProviderKind::Local {
        printer.warn(
            "this deployment runs on the local provider, which calls no AWS API; \
             the policies below are what it would need with `--provider aws`",
        );
    }
    let bundled = bundled(config);
    let features = permissions::features_of(config, bundled);
    let report = Report {
        operator: permissions::policy(config, bundled),
        instance_profile: policies::instance_profile_policy(config, &features),
        notes: policies::notes(config, &features),
    };
    if printer.is_json() {
        printer.json(&report).map_err(Error::Output)?;
        return Ok(ExitStatus::Success);
    }
    let pretty = |value: &Value| serde_json::to_string_pretty(value).expect("a JSON value always serializes");
    let mut text = format!(
        "operator policy: attach it to the user or role respot runs as (e.g. `aws iam put-user-policy`)\n{}\n",
        pretty(&report.operator)
    );
    if let Some(profile) = &report.instance_profile {
        let whose = match profile.name.as_deref() {
            Some(name) => format!("instance profile `{name}`"),
            None => "the instance profile `aws.instance_profile` will name".to_string(),
        };
        text.push_str(&format!(
            "\ninstance profile policy: attach it to the role of {whose}\n{}\n",
            pretty(&profile.policy)
        ));
    }
    for note in &report.notes {
        text.push_str(&format!("\nnote: {note}"));
    }
    if !report.notes.is_empty() {
        text.push('\n');
    }
    printer.data(&text).map_err(Error::Output)?;
    printer.info("`--output json` gives both policies as one object (`operator`, `instance_profile`)");
    Ok(ExitStatus::Success)
}
