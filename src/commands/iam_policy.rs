//! `respot iam-policy`: prints the minimal IAM policy (JSON) the
//! configured deployment needs on AWS, derived from the calls respot makes
//! (`provider::aws::permissions`). Reads the configuration only; never
//! calls AWS.

use super::{Context, ExitStatus};
use crate::config::ProviderKind;
use crate::error::{Error, Result};
use crate::provider::aws::permissions;

pub fn iam_policy(context: &Context<'_>) -> Result<ExitStatus> {
    let (config, printer) = (context.config()?, context.printer);
    if context.provider.kind.unwrap_or(config.deployment.provider) == ProviderKind::Local {
        printer.warn(
            "this deployment runs on the local provider, which calls no AWS API; \
             the policy below is what it would need with `--provider aws`",
        );
    }
    let policy = permissions::policy(config);
    let text = serde_json::to_string_pretty(&policy).expect("a JSON value always serializes");
    printer.data(&format!("{text}\n")).map_err(Error::Output)?;
    printer.info("attach it to the user or role respot runs as (e.g. `aws iam put-user-policy`)");
    Ok(ExitStatus::Success)
}
