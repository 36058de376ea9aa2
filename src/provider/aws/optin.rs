//! Opt-in regions: AWS answers every call in a region the account has not
//! enabled with `AuthFailure`, which reads as bad credentials. When a
//! region rejects the credentials, one `DescribeRegions` (asked of a region
//! every account has) tells the two apart, and a region that is
//! `not-opted-in` is reported as such.
//!
//! It costs nothing on the paths that succeed: only a rejection is
//! explained.

use super::AwsProvider;
use super::ec2::Ec2Api;
use super::regions::is_enabled_everywhere;
use crate::provider::{ProviderError, RegionFailure};

impl<E: Ec2Api> AwsProvider<E> {
    /// `err`, with every region that rejected the credentials and is an
    /// opt-in region the account has not enabled turned into
    /// `RegionNotEnabled`.
    pub(super) async fn explain_rejection(&self, err: ProviderError) -> ProviderError {
        let rejected: Vec<String> = rejected_regions(&err)
            .into_iter()
            .filter(|r| !is_enabled_everywhere(r))
            .collect();
        if rejected.is_empty() {
            return err;
        }
        let anchor = if is_enabled_everywhere(self.home.region()) {
            self.home.clone()
        } else {
            self.home.in_region("us-east-1")
        };
        let Ok(regions) = anchor.describe_region_opt_in().await else {
            // The rejection stands as AWS gave it.
            return err;
        };
        let disabled: Vec<String> = rejected
            .into_iter()
            .filter(|name| regions.iter().any(|r| &r.name == name && r.is_disabled()))
            .collect();
        replace_disabled(err, &disabled)
    }
}

/// The regions whose credentials `err` says were rejected.
fn rejected_regions(err: &ProviderError) -> Vec<String> {
    match err {
        ProviderError::CredentialsRejected { region, .. } => vec![region.clone()],
        ProviderError::Regions { failures, .. } => {
            failures.iter().flat_map(|f| rejected_regions(&f.error)).collect()
        }
        _ => Vec::new(),
    }
}

fn replace_disabled(err: ProviderError, disabled: &[String]) -> ProviderError {
    match err {
        ProviderError::CredentialsRejected {
            region,
            action,
            reason,
            ..
        } if disabled.contains(&region) => ProviderError::RegionNotEnabled {
            evidence: format!("{action} answered {reason}; DescribeRegions says `not-opted-in`"),
            region,
        },
        ProviderError::Regions {
            action,
            total,
            failures,
        } => ProviderError::Regions {
            action,
            total,
            failures: failures
                .into_iter()
                .map(|f| RegionFailure {
                    region: f.region,
                    error: replace_disabled(f.error, disabled),
                })
                .collect(),
        },
        other => other,
    }
}
