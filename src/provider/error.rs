//! `ProviderError`: every way a provider can fail, as data.
//!
//! Each variant names what failed and carries the thing it failed on (the
//! region, the EC2 action, AWS's error code, the quota to raise, the tool
//! that is missing), so callers and tests match on fields rather than on
//! text. Each variant also knows its exit status; `Display` is the message a
//! user reads, saying what failed, where, and the fix when there is one.
//! This module formats and classifies; it never calls a provider.

use std::path::PathBuf;
use std::time::Duration;

use super::{InstanceId, InstanceState, Lifecycle, tag};
use crate::exit::ExitStatus;

/// One region's failure inside a multi-region action.
#[derive(Debug)]
pub struct RegionFailure {
    pub region: String,
    pub error: ProviderError,
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    // The cloud cannot be used as configured: credentials, regions, reach.
    #[error("`{name}` is not an AWS region name; expected something like `eu-west-1`")]
    RegionName { name: String },
    #[error(
        "`{name}` is not an AWS region; fix `aws.regions` in respot.toml or `--region`; regions: {}",
        .known.join(", ")
    )]
    UnknownRegion { name: String, known: Vec<String> },
    #[error("no AWS region: add `[[aws.regions]]` to respot.toml, pass `--region`, or set AWS_REGION")]
    NoRegion,
    /// No credentials could be loaded before any call was made.
    #[error("cannot load AWS credentials: {why}; {hint}")]
    Credentials { why: String, hint: String },
    /// AWS answered, and refused the credentials (expired, unknown, wrong).
    #[error("{region}: AWS rejected the credentials ({action}: {reason}); {hint}")]
    CredentialsRejected {
        region: String,
        action: String,
        /// AWS's code and message, or the SDK's error when there is no code.
        reason: String,
        hint: String,
    },
    /// An opt-in region the account has not enabled; `evidence` is what
    /// said so (`RunInstances: OptInRequired`, or DescribeRegions' status).
    #[error(
        "{region}: the region is not enabled for this account ({evidence}); enable it in the AWS \
         console (Account → AWS Regions) or with `aws account enable-region --region-name {region}`, \
         or remove it from `aws.regions`"
    )]
    RegionNotEnabled { region: String, evidence: String },
    #[error(
        "{region}: cannot reach the EC2 endpoint ({action}): {detail}; check that `{region}` is a real \
         region and, if set, AWS_ENDPOINT_URL"
    )]
    Unreachable {
        region: String,
        action: String,
        detail: String,
    },

    // An API call failed.
    /// IAM denied a call; `denied` is the IAM action that was missing
    /// (read from AWS's message when it names one: a launch that tags at
    /// creation is denied for `ec2:CreateTags` under `RunInstances`).
    #[error(
        "{region}: {call} was denied ({code}): the credentials may not perform `{denied}`; \
         grant it to the caller: `respot iam-policy` prints every action respot needs"
    )]
    NotAuthorized {
        region: String,
        call: String,
        denied: String,
        code: String,
    },
    /// Spot needs its service-linked role, and the caller may not create it.
    #[error(
        "{region}: {call} needs the EC2 Spot service-linked role, which does not exist and which \
         these credentials may not create ({code}); create it once per account with \
         `aws iam create-service-linked-role --aws-service-name spot.amazonaws.com`, or grant \
         iam:CreateServiceLinkedRole (`respot iam-policy` includes it)"
    )]
    SpotRoleMissing {
        region: String,
        call: String,
        code: String,
    },
    /// The SDK's own retries ran out while AWS kept throttling.
    #[error(
        "{region}: AWS throttled {action} ({code}) through every retry; run again in a minute, \
         or cover fewer regions at once"
    )]
    Throttled {
        region: String,
        action: String,
        code: String,
    },
    /// An EC2 error code respot does not map: the raw code is kept.
    #[error("{region}: {action} failed: {code}: {message}")]
    Api {
        region: String,
        action: String,
        code: String,
        message: String,
    },
    /// A call failed without an AWS error code (a malformed answer, a
    /// request the SDK could not build).
    #[error("{region}: {action} failed: {detail}; check that `{region}` is a real region")]
    Request {
        region: String,
        action: String,
        detail: String,
    },
    /// An account quota stopped the launch; `quota` is its name in Service Quotas.
    #[error(
        "{region}: the {market} quota is used up ({code}: {message}); raise \"{quota}\" for {region} \
         in Service Quotas (https://{region}.console.aws.amazon.com/servicequotas/home/services/ec2/quotas), \
         lower the count{}",
        if *.suggest_fallback { ", or set aws.fallback = \"on-demand\"" } else { "" }
    )]
    Quota {
        region: String,
        code: String,
        quota: &'static str,
        /// `Spot` or `OnDemand`: the market whose quota ran out.
        market: Lifecycle,
        /// Whether on-demand instances could take over (`aws.fallback`).
        suggest_fallback: bool,
        message: String,
    },

    // The launch did not finish.
    #[error(
        "{region}: aws.max_price = {} is below the current spot price ({message}); raise aws.max_price \
         or remove it (the on-demand price is the cap then)",
        .max_price.map_or_else(|| "(unset)".to_string(), |p| p.to_string())
    )]
    PriceTooLow {
        region: String,
        max_price: Option<f64>,
        message: String,
    },
    /// Every pool (instance type × zone) was out of capacity.
    #[error(
        "{region}: launched {launched} of {wanted} instance(s); no capacity left in any pool ({}); \
         add instance types or zones in respot.toml{}",
        .tried.join(", "),
        if *.suggest_fallback { ", or set aws.fallback = \"on-demand\"" } else { "" }
    )]
    NoCapacity {
        region: String,
        launched: usize,
        wanted: u32,
        /// `t3.small in eu-west-1a: InsufficientInstanceCapacity`, one per pool tried.
        tried: Vec<String>,
        suggest_fallback: bool,
    },
    /// An instance ended while respot waited for it (a spot reclaim).
    #[error(
        "{region}: instance {id} became {state} while starting: {}",
        .reason.as_deref().unwrap_or("no reason given")
    )]
    InstanceLost {
        region: String,
        id: InstanceId,
        state: InstanceState,
        reason: Option<String>,
    },
    #[error(
        "{region}: timed out after {}s waiting for {count} instance(s) to run with a public IP \
         (the default subnets must assign public IPs)",
        .after.as_secs()
    )]
    NotRunning {
        region: String,
        count: usize,
        after: Duration,
    },
    #[error(
        "{region}: instances still not terminated after {}s; run `respot destroy` again",
        .after.as_secs()
    )]
    NotTerminated { region: String, after: Duration },
    #[error(
        "{region}: security group {group} is still in use after {}s (DependencyViolation){}; \
         run `respot destroy` again later",
        .after.as_secs(),
        if .holders.is_empty() {
            ", by network interfaces still detaching".to_string()
        } else {
            format!(", held by instance(s) {}", .holders.join(", "))
        }
    )]
    GroupInUse {
        region: String,
        group: String,
        after: Duration,
        /// The live instances still in the group.
        holders: Vec<String>,
    },
    #[error(
        "`ssh.allow_cidr` is not set; set it to the address respot connects from \
         (e.g. \"203.0.113.7/32\") so the security group opens SSH only to it"
    )]
    AllowCidrUnset,
    #[error("nothing to launch: no region in `aws.regions` has a count above 0")]
    NothingToLaunch,
    #[error("unknown image alias `{alias}`; use `ami-...` or one of {known}")]
    UnknownImage {
        alias: String,
        /// The aliases there are, quoted for the message.
        known: String,
    },
    #[error(
        "{region}: the vendor's SSM parameter `{parameter}` of `{alias}` names no image in this \
         region; set `aws.image` to an `ami-...` id from that region"
    )]
    NoImage {
        region: String,
        alias: String,
        parameter: String,
    },
    /// With `aws.encrypt_volumes`, the root volume is encrypted through a
    /// block device mapping on the image's root device; without its name
    /// the instance would boot unencrypted, holding the SSH host key.
    #[error(
        "{region}: image `{image}` has no root device name, so respot cannot encrypt its root volume \
         and will not launch it unencrypted; use an EBS-backed image, or set \
         `aws.encrypt_volumes = false` in respot.toml"
    )]
    NoRootDevice { region: String, image: String },
    #[error(
        "`aws.instance_types` mixes architectures (`{first}` is {first_arch}, `{other}` is {other_arch}); \
         one image serves every type, so list only one architecture"
    )]
    MixedArchitectures {
        first: String,
        first_arch: &'static str,
        other: String,
        other_arch: &'static str,
    },
    #[error(
        "{region}: no default VPC subnets; respot launches into the default VPC, \
         create it with `aws ec2 create-default-vpc --region {region}`"
    )]
    NoDefaultVpc { region: String },
    #[error("{region}: zone `{zone}` has no default subnet; zones with one: {}", .zones.join(", "))]
    ZoneWithoutSubnet {
        region: String,
        zone: String,
        zones: Vec<String>,
    },
    #[error(
        "{region}: a security group named `{name}` exists without the tag {}={deployment}; \
         respot never reuses a group it did not create: delete or rename it",
        tag::DEPLOYMENT
    )]
    ForeignGroup {
        region: String,
        name: String,
        deployment: String,
    },
    /// The deployment's own group (tagged, left by an earlier run) admits
    /// more than respot writes: rules added by hand, or left from an
    /// earlier `ssh.allow_cidr` or `aws.open_ports`. Reusing it would put
    /// hosts holding the generation's SSH host key behind rules nobody
    /// reviewed. Exit `Failure`, as for `ForeignGroup`: AWS answered every
    /// call and the credentials work, so the provider needs no fix (exit 3
    /// would send the user to credentials and quotas); the launch was
    /// refused on the account's state, which the user changes before
    /// running again.
    #[error(
        "{region}: the deployment's security group {group} has ingress rules respot did not write: {}; \
         respot opens only {expected} and does not launch behind other rules: remove them \
         (`aws ec2 revoke-security-group-ingress --region {region} --group-id {group} ...`), \
         or run `respot destroy` to delete the group",
        .rules.join(", ")
    )]
    UnexpectedIngress {
        region: String,
        group: String,
        /// One per rule and source, e.g. `tcp 443 from 0.0.0.0/0`.
        rules: Vec<String>,
        /// What respot opens, e.g. `TCP 22 from 203.0.113.7/32 (ssh.allow_cidr)`.
        expected: String,
    },
    /// Some regions of a multi-region action failed; the others are in the
    /// action's result (or rolled back by the caller).
    #[error(
        "{action} failed in {} of {total} region(s):{}",
        .failures.len(),
        .failures.iter().map(|f| format!("\n  {}", f.error)).collect::<String>()
    )]
    Regions {
        action: &'static str,
        total: usize,
        failures: Vec<RegionFailure>,
    },

    // The local provider.
    #[error(
        "the local VM image is missing `{}`; build it once with `scripts/build-image` \
         (or set `local.image` in respot.toml)",
        .path.display()
    )]
    MissingImage { path: PathBuf },
    #[error("`{tool}` is not installed; {fix}")]
    MissingTool { tool: String, fix: String },
    #[error("cannot run `{tool}`: {source}")]
    ToolStart {
        tool: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{tool}` failed ({status}): {stderr}")]
    ToolFailed {
        tool: String,
        status: String,
        stderr: String,
    },
    #[error("`{}`: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{}` is not a respot instance record: {source}", .path.display())]
    BadRecord {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A host resource a launch needs (a free port, randomness).
    #[error("cannot {what}: {source}")]
    Host {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("qemu for `{name}` exited right after starting; see `{}`", .console.display())]
    VmExited { name: String, console: PathBuf },
    #[error("VM `{name}` is not running after launch")]
    VmNotRunning { name: String },
    /// A blocking task of the provider panicked or was cancelled.
    #[error("{task} task failed: {detail}")]
    Task { task: &'static str, detail: String },
}

/// How bad a failure is, from which the exit status follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Severity {
    /// The operation ran and did not finish: exit `Failure`.
    Unfinished,
    /// An API, a quota or a tool refused: exit `Provider`.
    Refused,
    /// The provider cannot be used at all (credentials, a region that is
    /// off or unreachable, a missing tool): exit `Provider`.
    Unavailable,
}

impl ProviderError {
    /// The exit status this failure earns (BRIEF.md): `Provider` when the
    /// cloud, the credentials, an API, a quota or a tool could not be used;
    /// `Failure` when the operation ran and did not finish.
    pub fn exit_status(&self) -> ExitStatus {
        match self.severity() {
            Severity::Unfinished => ExitStatus::Failure,
            Severity::Refused | Severity::Unavailable => ExitStatus::Provider,
        }
    }

    /// The provider cannot be used at all: retrying or moving on to the
    /// next step cannot help until the user fixes credentials, the region
    /// or the tools.
    pub fn is_unavailable(&self) -> bool {
        self.severity() == Severity::Unavailable
    }

    fn severity(&self) -> Severity {
        use ProviderError::*;
        match self {
            RegionName { .. }
            | UnknownRegion { .. }
            | NoRegion
            | Credentials { .. }
            | CredentialsRejected { .. }
            | RegionNotEnabled { .. }
            | Unreachable { .. }
            | MissingImage { .. }
            | MissingTool { .. }
            | ToolStart { .. } => Severity::Unavailable,
            NotAuthorized { .. }
            | SpotRoleMissing { .. }
            | Throttled { .. }
            | Api { .. }
            | Request { .. }
            | Quota { .. }
            | Io { .. }
            | BadRecord { .. } => Severity::Refused,
            PriceTooLow { .. }
            | NoCapacity { .. }
            | InstanceLost { .. }
            | NotRunning { .. }
            | NotTerminated { .. }
            | GroupInUse { .. }
            | AllowCidrUnset
            | NothingToLaunch
            | UnknownImage { .. }
            | NoImage { .. }
            | NoRootDevice { .. }
            | MixedArchitectures { .. }
            | NoDefaultVpc { .. }
            | ZoneWithoutSubnet { .. }
            | ForeignGroup { .. }
            | UnexpectedIngress { .. }
            | ToolFailed { .. }
            | Host { .. }
            | VmExited { .. }
            | VmNotRunning { .. }
            | Task { .. } => Severity::Unfinished,
            // The most severe region decides: what blocks the cloud must
            // be fixed first.
            Regions { failures, .. } => failures
                .iter()
                .map(|f| f.error.severity())
                .max()
                .unwrap_or(Severity::Unfinished),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_region_failure_that_blocks_the_cloud_decides_the_exit_status() {
        let capacity = ProviderError::NoCapacity {
            region: "eu-west-1".to_string(),
            launched: 0,
            wanted: 2,
            tried: vec!["t3.small in eu-west-1a: InsufficientInstanceCapacity".to_string()],
            suggest_fallback: true,
        };
        let quota = ProviderError::Quota {
            region: "us-east-1".to_string(),
            code: "MaxSpotInstanceCountExceeded".to_string(),
            quota: "All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests",
            market: Lifecycle::Spot,
            suggest_fallback: true,
            message: "Max spot instance count exceeded".to_string(),
        };
        assert_eq!(capacity.exit_status(), ExitStatus::Failure);
        assert_eq!(quota.exit_status(), ExitStatus::Provider);
        let both = ProviderError::Regions {
            action: "create",
            total: 3,
            failures: vec![
                RegionFailure {
                    region: "eu-west-1".to_string(),
                    error: capacity,
                },
                RegionFailure {
                    region: "us-east-1".to_string(),
                    error: quota,
                },
            ],
        };
        assert_eq!(both.exit_status(), ExitStatus::Provider);
        let text = both.to_string();
        assert!(
            text.starts_with("create failed in 2 of 3 region(s):\n  eu-west-1: launched 0 of 2"),
            "{text}"
        );
        assert!(
            text.contains("\n  us-east-1: the spot quota is used up"),
            "{text}"
        );
        assert!(text.contains("or set aws.fallback = \"on-demand\""), "{text}");
    }
}
