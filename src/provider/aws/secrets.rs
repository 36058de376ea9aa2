//! The versions of `[[secrets]]`' SSM parameters, read at launch into the
//! `respot:secrets` tag, so `list` and the console show which version an
//! instance booted with. respot reads metadata only (`DescribeParameters`):
//! never a value, encrypted or not. The instance fetches the value itself,
//! at boot, with its instance profile.

use aws_sdk_ssm::error::ProvideErrorMetadata;
use aws_sdk_ssm::types::ParameterStringFilter;

use crate::provider::{ProviderError, Result};

/// The tag that records the versions: `/app/token=3 /app/db=12`.
pub const TAG_SECRETS: &str = crate::provider::tag::SECRETS;

/// EC2 tag values hold at most 256 characters.
const TAG_VALUE_MAX: usize = 256;

/// SSM in one region.
#[derive(Debug, Clone)]
pub struct SsmVersions {
    sdk: aws_config::SdkConfig,
}

impl SsmVersions {
    pub fn new(sdk: &aws_config::SdkConfig) -> SsmVersions {
        SsmVersions { sdk: sdk.clone() }
    }

    /// The current version of each parameter of `names`, in `region`, in
    /// the order of `names`. A parameter that does not exist there is an
    /// error naming it: the instance could not fetch it at boot.
    pub async fn versions(&self, region: &str, names: &[String]) -> Result<Vec<(String, i64)>> {
        let config = aws_sdk_ssm::config::Builder::from(&self.sdk)
            .region(aws_sdk_ssm::config::Region::new(region.to_string()))
            .build();
        let client = aws_sdk_ssm::Client::from_conf(config);
        let mut found = Vec::new();
        // DescribeParameters takes at most 50 names per filter.
        for chunk in names.chunks(50) {
            let filter = ParameterStringFilter::builder()
                .key("Name")
                .option("Equals")
                .set_values(Some(chunk.to_vec()))
                .build()
                .map_err(|e| request_error(region, &e.to_string()))?;
            let mut pages = client
                .describe_parameters()
                .parameter_filters(filter)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| api_error(region, &e))?;
                for parameter in page.parameters() {
                    if let Some(name) = parameter.name() {
                        found.push((name.to_string(), parameter.version()));
                    }
                }
            }
        }
        names
            .iter()
            .map(|name| {
                found
                    .iter()
                    .find(|(n, _)| n == name)
                    .cloned()
                    .ok_or_else(|| ProviderError::Api {
                        region: region.to_string(),
                        action: "DescribeParameters".to_string(),
                        code: "ParameterNotFound".to_string(),
                        message: format!(
                            "SSM parameter `{name}` does not exist in {region}; create it there with \
                             `aws ssm put-parameter --region {region} --type SecureString --name {name} --value ...`"
                        ),
                    })
            })
            .collect()
    }
}

/// The `respot:secrets` tag value: `name=version` pairs separated by
/// spaces, cut at EC2's 256 characters with a trailing `…` when too long.
pub fn tag_value(versions: &[(String, i64)]) -> String {
    let full = versions
        .iter()
        .map(|(name, version)| format!("{name}={version}"))
        .collect::<Vec<_>>()
        .join(" ");
    if full.chars().count() <= TAG_VALUE_MAX {
        return full;
    }
    let mut cut: String = full.chars().take(TAG_VALUE_MAX - 1).collect();
    cut.push('…');
    cut
}

fn api_error<E: ProvideErrorMetadata>(region: &str, err: &E) -> ProviderError {
    ProviderError::Api {
        region: region.to_string(),
        action: "DescribeParameters".to_string(),
        code: err.code().unwrap_or("Unknown").to_string(),
        message: err.message().unwrap_or("no message").to_string(),
    }
}

fn request_error(region: &str, detail: &str) -> ProviderError {
    ProviderError::Request {
        region: region.to_string(),
        action: "DescribeParameters".to_string(),
        detail: detail.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tag_lists_versions_and_fits_ec2s_limit() {
        let versions = vec![("/app/token".to_string(), 3), ("/app/db".to_string(), 12)];
        assert_eq!(tag_value(&versions), "/app/token=3 /app/db=12");
        let many: Vec<(String, i64)> = (0..40).map(|i| (format!("/app/secret-{i}"), i)).collect();
        let value = tag_value(&many);
        assert_eq!(value.chars().count(), 256);
        assert!(value.ends_with('…'));
    }
}
