//! Which account and which regions: credentials (the default chain, a
//! profile, SSO, `credential_process`), the home region, `AWS_ENDPOINT_URL`
//! (read by `aws-config` itself), and the regions a command covers.
//!
//! Credentials are resolved before any EC2 call, so missing or expired ones
//! fail with the command to run and cost no request. This module only
//! reads (`DescribeRegions`); it never creates anything. The caller ARN is
//! fetched later through `Ec2Api::caller_arn`, by `launch` alone.

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_ec2::config::ProvideCredentials;
use aws_sdk_ec2::error::DisplayErrorContext;

use super::AwsOptions;
use super::ec2::Ec2Api;
use super::errors::{api_error, credentials_hint};
use super::regions::{is_known, valid_region};
use super::sdk::SdkEc2;
use crate::provider::{ProviderError, Result};

/// An account to call, and the regions to call it in.
pub struct Connection {
    /// A client in the home region; clients for other regions derive from it.
    pub home: SdkEc2,
    /// The regions the command covers, in configuration order.
    pub regions: Vec<String>,
    /// The fix to print when AWS rejects the credentials.
    pub credentials_hint: String,
    /// The loaded configuration, for clients of other services (S3).
    pub sdk: SdkConfig,
}

/// Loads credentials and decides the regions. `configured` is
/// `aws.regions` by name, in order.
pub async fn connect(configured: &[String], options: &AwsOptions) -> Result<Connection> {
    let hint = credentials_hint(options.profile.as_deref());
    if let Some(region) = &options.region
        && !valid_region(region)
    {
        return Err(ProviderError::RegionName { name: region.clone() });
    }
    let home_region = options.region.clone().or_else(|| configured.first().cloned());
    let sdk = load(options.profile.as_deref(), home_region, &hint).await?;
    let Some(home_region) = sdk.region().map(|r| r.to_string()) else {
        return Err(ProviderError::NoRegion);
    };
    let home = SdkEc2::new(&sdk, &home_region);
    let regions = region_names(&home, configured, options, &hint).await?;
    check_regions(&home, &regions, &hint).await?;
    Ok(Connection {
        home,
        regions,
        credentials_hint: hint,
        sdk,
    })
}

/// The loaded configuration, with credentials that resolve.
async fn load(profile: Option<&str>, region: Option<String>, hint: &str) -> Result<SdkConfig> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(profile) = profile {
        // An explicit profile wins over AWS_ACCESS_KEY_ID in the
        // environment, as with the AWS CLI; the default chain would
        // silently prefer the environment.
        loader = loader.profile_name(profile).credentials_provider(
            aws_config::profile::ProfileFileCredentialsProvider::builder()
                .profile_name(profile)
                .build(),
        );
    }
    if let Some(region) = region {
        loader = loader.region(Region::new(region));
    }
    let sdk = loader.load().await;
    let Some(credentials) = sdk.credentials_provider() else {
        return Err(ProviderError::Credentials {
            why: "no credentials provider is configured".to_string(),
            hint: hint.to_string(),
        });
    };
    if let Err(err) = credentials.provide_credentials().await {
        let why = match &err {
            CredentialsError::CredentialsNotLoaded(_) => {
                "none found (tried the environment, profiles, SSO, web identity, ECS and instance metadata)"
                    .to_string()
            }
            other => DisplayErrorContext(other).to_string(),
        };
        return Err(ProviderError::Credentials {
            why,
            hint: hint.to_string(),
        });
    }
    Ok(sdk)
}

/// `--all-regions`: every enabled region; `--region`: that one; else
/// `aws.regions`, or the home region when there are none.
async fn region_names(
    home: &impl Ec2Api,
    configured: &[String],
    options: &AwsOptions,
    hint: &str,
) -> Result<Vec<String>> {
    if options.all_regions {
        return describe_regions(home, false, hint).await;
    }
    Ok(match &options.region {
        Some(region) => vec![region.clone()],
        None if configured.is_empty() => vec![home.region().to_string()],
        None => configured.to_vec(),
    })
}

/// Fails on a region AWS does not have. Names respot knows cost nothing;
/// any other name costs one `DescribeRegions`, asked of a region that
/// certainly exists.
pub async fn check_regions(home: &impl Ec2Api, names: &[String], hint: &str) -> Result<()> {
    let unknown: Vec<&String> = names.iter().filter(|n| !is_known(n)).collect();
    if unknown.is_empty() {
        return Ok(());
    }
    let anchor = if is_known(home.region()) {
        home.clone()
    } else {
        home.in_region("us-east-1")
    };
    let all = describe_regions(&anchor, true, hint).await?;
    match unknown.into_iter().find(|n| !all.contains(n)) {
        Some(bad) => Err(ProviderError::UnknownRegion {
            name: bad.clone(),
            known: all,
        }),
        None => Ok(()),
    }
}

async fn describe_regions(ec2: &impl Ec2Api, all: bool, hint: &str) -> Result<Vec<String>> {
    let mut names = ec2
        .describe_regions(all)
        .await
        .map_err(|err| api_error(ec2.region(), &err, hint))?;
    names.sort();
    Ok(names)
}
