//! The AWS provider: spot fleets in many regions, with tags as the only state.
//!
//! It owns one loaded `aws-config` shared by one EC2 client per region. Every
//! resource it creates (instances, their volumes, spot requests, the security
//! group) is tagged at creation through `TagSpecifications`, never afterwards,
//! so a run killed right after `RunInstances` returns still leaves findable
//! instances. It reads and modifies only resources tagged
//! `respot:deployment=<name>`. SDK types never leave this module.
//!
//! Round trips are the cost that matters (each is 50–300 ms to a far region),
//! so every action runs its regions concurrently and, inside a region, issues
//! independent calls together:
//!
//! - `list`: one `DescribeInstances` per region.
//! - `launch`: [STS caller, image, default subnets, create security group]
//!   together, then [`RunInstances`, ingress rules] together, then batched
//!   `DescribeInstances` polls until running.
//! - `destroy`: [terminate, find open spot requests, find the security
//!   group] together, then [cancel requests, poll until terminated], then
//!   delete the security group.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use aws_config::{BehaviorVersion, Region};
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_ec2::config::retry::{ClassifyRetry, RetryAction, RetryConfig};
use aws_sdk_ec2::config::{ProvideCredentials, interceptors::InterceptorContext};
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::operation::run_instances::RunInstancesError;
use aws_sdk_ec2::types as ec2;
use base64::Engine as _;
use futures::stream::{self, StreamExt};

use super::{
    DestroyReport, Instance, InstanceId, InstanceState, LaunchRequest, Lifecycle, PlannedRegion, Provider,
    ProviderError, Result, SshEndpoint, tag,
};
use crate::config::{Config, Fallback};
use crate::template::Digest;

/// Regions contacted at once. Every region is a separate endpoint, so this
/// bounds sockets and memory rather than load on any one server.
const MAX_REGIONS: usize = 16;
/// How long `launch` waits for instances to run with a public IP.
const WAIT_RUNNING: Duration = Duration::from_secs(600);
/// How long `destroy` waits for instances to reach `terminated`.
const WAIT_TERMINATED: Duration = Duration::from_secs(600);
/// How long `destroy` retries `DependencyViolation` while ENIs detach.
const WAIT_GROUP_DELETE: Duration = Duration::from_secs(180);
/// The most ids one `TerminateInstances` or `DescribeInstances` call takes.
const ID_BATCH: usize = 1000;
/// Attempts for throttled or transient calls. The SDK default of 3 gives
/// up too early for fleets that share an account's request budget.
const MIN_ATTEMPTS: u32 = 5;
/// Tag holding the AMI id the image alias resolved to.
const TAG_IMAGE: &str = "respot:image";
/// Regions known when this was written. A configured region outside this
/// list costs one `DescribeRegions` to tell a new region from a typo; one
/// inside it costs nothing.
const KNOWN_REGIONS: &[&str] = &[
    "af-south-1",
    "ap-east-1",
    "ap-east-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-south-1",
    "ap-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ap-southeast-7",
    "ca-central-1",
    "ca-west-1",
    "eu-central-1",
    "eu-central-2",
    "eu-north-1",
    "eu-south-1",
    "eu-south-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "il-central-1",
    "me-central-1",
    "me-south-1",
    "mx-central-1",
    "sa-east-1",
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "us-gov-east-1",
    "us-gov-west-1",
    "cn-north-1",
    "cn-northwest-1",
];

/// Capacity errors of one pool (instance type × zone): try the next pool.
const POOL_ERRORS: &[&str] = &[
    "InsufficientInstanceCapacity",
    "InsufficientCapacity",
    "InsufficientHostCapacity",
    "InsufficientAddressCapacity",
    "InsufficientReservedInstanceCapacity",
    "InsufficientCapacityOnOutpost",
    "Unsupported",
];

/// Errors that mean the credentials are missing, wrong or expired.
const AUTH_ERRORS: &[&str] = &[
    "AuthFailure",
    "ExpiredToken",
    "ExpiredTokenException",
    "RequestExpired",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
    "InvalidAccessKeyId",
];

/// Command-line choices that change which account and regions are used.
#[derive(Debug, Clone, Default)]
pub struct AwsOptions {
    /// A named profile from `~/.aws/config` (SSO and `credential_process` work).
    pub profile: Option<String>,
    /// Only this region (for `create`, it must be one of `aws.regions`).
    pub region: Option<String>,
    /// `list`/`destroy` cover every region enabled for the account.
    pub all_regions: bool,
}

/// One region respot works in, with its own client.
#[derive(Debug, Clone)]
struct RegionTarget {
    name: String,
    /// Instances to launch here; 0 outside `aws.regions`.
    count: u32,
    zones: Vec<String>,
    ec2: aws_sdk_ec2::Client,
}

/// The EC2 provider. Build it once per command with [`AwsProvider::new`].
#[derive(Debug)]
pub struct AwsProvider {
    sdk: aws_config::SdkConfig,
    regions: Vec<RegionTarget>,
    sts: aws_sdk_sts::Client,
    image: String,
    instance_types: Vec<String>,
    max_price: Option<f64>,
    fallback: Fallback,
    open_ports: Vec<u16>,
    allow_cidr: Option<String>,
    credentials_hint: String,
    caller: tokio::sync::OnceCell<String>,
    resolved_images: Mutex<Vec<(String, String)>>,
}

impl AwsProvider {
    /// Loads credentials and builds one client per region.
    ///
    /// Credentials are resolved here, before any EC2 call, so missing or
    /// expired ones (an SSO session past its lifetime, an unknown profile)
    /// fail with the command to run. The caller ARN for `respot:created-by`
    /// is fetched by `launch` alongside its first EC2 calls, so `list` and
    /// `destroy` pay no extra round trip for it.
    pub async fn new(config: &Config, options: &AwsOptions) -> Result<AwsProvider> {
        let credentials_hint = credentials_hint(options.profile.as_deref());
        let configured = &config.aws.regions;
        if let Some(region) = &options.region
            && !valid_region(region)
        {
            return Err(ProviderError::Unavailable(format!(
                "`{region}` is not an AWS region name; expected something like `eu-west-1`"
            )));
        }
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(profile) = &options.profile {
            // An explicit profile wins over AWS_ACCESS_KEY_ID in the
            // environment, as with the AWS CLI; the default chain would
            // silently prefer the environment.
            loader = loader.profile_name(profile).credentials_provider(
                aws_config::profile::ProfileFileCredentialsProvider::builder()
                    .profile_name(profile)
                    .build(),
            );
        }
        let home_region = options
            .region
            .clone()
            .or_else(|| configured.first().map(|r| r.name.clone()));
        if let Some(region) = &home_region {
            loader = loader.region(Region::new(region.clone()));
        }
        let sdk = loader.load().await;
        let Some(credentials) = sdk.credentials_provider() else {
            return Err(ProviderError::Unavailable(format!(
                "no AWS credentials provider is configured; {credentials_hint}"
            )));
        };
        if let Err(err) = credentials.provide_credentials().await {
            let why = match &err {
                CredentialsError::CredentialsNotLoaded(_) => {
                    "none found (tried the environment, profiles, SSO, web identity, ECS and instance metadata)"
                        .to_string()
                }
                other => DisplayErrorContext(other).to_string(),
            };
            return Err(ProviderError::Unavailable(format!(
                "cannot load AWS credentials: {why}; {credentials_hint}"
            )));
        }
        let Some(home_region) = sdk.region().map(|r| r.to_string()) else {
            return Err(ProviderError::Unavailable(
                "no AWS region: add `[[aws.regions]]` to respot.toml, pass `--region`, or set AWS_REGION"
                    .to_string(),
            ));
        };
        let sts = aws_sdk_sts::Client::new(&sdk);
        let names: Vec<String> = if options.all_regions {
            enabled_regions(&ec2_client(&sdk, &home_region), &home_region, &credentials_hint).await?
        } else if let Some(region) = &options.region {
            vec![region.clone()]
        } else if configured.is_empty() {
            vec![home_region.clone()]
        } else {
            configured.iter().map(|r| r.name.clone()).collect()
        };
        let unknown: Vec<&String> = names
            .iter()
            .filter(|n| !KNOWN_REGIONS.contains(&n.as_str()))
            .collect();
        if !unknown.is_empty() {
            // Ask a region that certainly exists which regions there are.
            let anchor = if KNOWN_REGIONS.contains(&home_region.as_str()) {
                home_region.as_str()
            } else {
                "us-east-1"
            };
            let all = all_regions(&ec2_client(&sdk, anchor), anchor, &credentials_hint).await?;
            if let Some(bad) = unknown.iter().find(|n| !all.contains(n)) {
                return Err(ProviderError::Unavailable(format!(
                    "`{bad}` is not an AWS region; fix `aws.regions` in respot.toml or `--region`; \
                     regions: {}",
                    all.join(", ")
                )));
            }
        }
        let regions = names
            .into_iter()
            .map(|name| {
                let section = configured.iter().find(|r| r.name == name);
                RegionTarget {
                    count: section.map_or(0, |r| r.count),
                    zones: section.map(|r| r.zones.clone()).unwrap_or_default(),
                    ec2: ec2_client(&sdk, &name),
                    name,
                }
            })
            .collect();
        Ok(AwsProvider {
            sdk,
            regions,
            sts,
            image: config.aws.image.clone(),
            instance_types: config.aws.instance_types.clone(),
            max_price: config.aws.max_price,
            fallback: config.aws.fallback,
            open_ports: config.aws.open_ports.clone(),
            allow_cidr: config.ssh.allow_cidr.clone(),
            credentials_hint,
            caller: tokio::sync::OnceCell::new(),
            resolved_images: Mutex::new(Vec::new()),
        })
    }

    /// The regions this provider covers, in configuration order.
    pub fn regions(&self) -> Vec<String> {
        self.regions.iter().map(|r| r.name.clone()).collect()
    }

    /// `(region, ami-id)` for every image the last `launch` resolved.
    pub fn resolved_images(&self) -> Vec<(String, String)> {
        self.resolved_images.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// The caller ARN, fetched once with STS `GetCallerIdentity`.
    async fn caller_arn(&self) -> Result<String> {
        self.caller
            .get_or_try_init(|| async {
                let out = self.sts.get_caller_identity().send().await.map_err(|err| {
                    let code = err.code().unwrap_or_default().to_string();
                    ProviderError::Unavailable(format!(
                        "AWS rejected the credentials (STS GetCallerIdentity: {}); {}",
                        if code.is_empty() {
                            DisplayErrorContext(&err).to_string()
                        } else {
                            code
                        },
                        self.credentials_hint
                    ))
                })?;
                Ok(out.arn().unwrap_or("unknown").to_string())
            })
            .await
            .cloned()
    }

    fn target(&self, region: &str) -> RegionTarget {
        match self.regions.iter().find(|r| r.name == region) {
            Some(target) => target.clone(),
            None => RegionTarget {
                name: region.to_string(),
                count: 0,
                zones: Vec::new(),
                ec2: ec2_client(&self.sdk, region),
            },
        }
    }

    fn api_error<E>(&self, region: &str, action: &str, err: &SdkError<E>) -> ProviderError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        api_error(region, action, err, &self.credentials_hint)
    }
}

/// One EC2 client for `region`, sharing the loaded config. Throttling and
/// transient errors get a few more attempts than the SDK default; capacity
/// errors of `RunInstances` get none (see [`CapacityIsFinal`]).
fn ec2_client(sdk: &aws_config::SdkConfig, region: &str) -> aws_sdk_ec2::Client {
    let retry = sdk.retry_config().cloned().unwrap_or_else(RetryConfig::standard);
    let retry = if retry.max_attempts() < MIN_ATTEMPTS {
        retry.with_max_attempts(MIN_ATTEMPTS)
    } else {
        retry
    };
    let config = aws_sdk_ec2::config::Builder::from(sdk)
        .region(Region::new(region.to_string()))
        .retry_config(retry)
        .retry_classifier(CapacityIsFinal)
        .build();
    aws_sdk_ec2::Client::from_conf(config)
}

/// EC2 sends `InsufficientInstanceCapacity` as HTTP 500, which the SDK would
/// retry against the same empty pool. Forbidding the retry moves respot to
/// the next instance type or zone at once; throttling is still retried.
#[derive(Debug)]
struct CapacityIsFinal;

impl ClassifyRetry for CapacityIsFinal {
    fn classify_retry(&self, ctx: &InterceptorContext) -> RetryAction {
        let code = match ctx.output_or_error() {
            Some(Err(err)) => err
                .as_operation_error()
                .and_then(|e| e.downcast_ref::<RunInstancesError>())
                .and_then(|e| e.code()),
            _ => None,
        };
        match code {
            Some(code) if POOL_ERRORS.contains(&code) => RetryAction::RetryForbidden,
            _ => RetryAction::NoActionIndicated,
        }
    }

    fn name(&self) -> &'static str {
        "respot: capacity errors move to the next pool"
    }
}

fn credentials_hint(profile: Option<&str>) -> String {
    match profile {
        Some(p) => format!(
            "run `aws sso login --profile {p}` if it is an SSO profile, or check profile `{p}` in ~/.aws/config and ~/.aws/credentials"
        ),
        None => "run `aws sso login --profile NAME` and pass `--profile NAME` (or set AWS_PROFILE), \
                 or run `aws configure`, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            .to_string(),
    }
}

/// Shape check only; AWS adds regions, so the real check is the endpoint.
fn valid_region(name: &str) -> bool {
    let parts: Vec<&str> = name.split('-').collect();
    parts.len() >= 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
        && parts
            .last()
            .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
}

async fn enabled_regions(ec2: &aws_sdk_ec2::Client, home: &str, hint: &str) -> Result<Vec<String>> {
    region_names(ec2, home, hint, false).await
}

async fn all_regions(ec2: &aws_sdk_ec2::Client, home: &str, hint: &str) -> Result<Vec<String>> {
    region_names(ec2, home, hint, true).await
}

async fn region_names(ec2: &aws_sdk_ec2::Client, home: &str, hint: &str, all: bool) -> Result<Vec<String>> {
    let out = ec2
        .describe_regions()
        .all_regions(all)
        .send()
        .await
        .map_err(|err| api_error(home, "DescribeRegions", &err, hint))?;
    let mut names: Vec<String> = out
        .regions()
        .iter()
        .filter_map(|r| r.region_name().map(str::to_string))
        .collect();
    names.sort();
    Ok(names)
}

/// Turns an SDK error into ours: credentials problems become `Unavailable`
/// with the fix; unreachable endpoints name the region; everything else
/// keeps EC2's code and message.
fn api_error<E>(region: &str, action: &str, err: &SdkError<E>, hint: &str) -> ProviderError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match err.code() {
        Some(code) if AUTH_ERRORS.contains(&code) => ProviderError::Unavailable(format!(
            "{region}: AWS rejected the credentials ({action}: {code}: {}); {hint}",
            err.message().unwrap_or("no message")
        )),
        Some("OptInRequired") => ProviderError::Unavailable(format!(
            "{region}: the region is not enabled for this account ({action}: OptInRequired); \
             enable it in the AWS console (Account → AWS Regions) or remove it from `aws.regions`"
        )),
        Some("UnauthorizedOperation") => ProviderError::Api(format!(
            "{region}: the credentials may not call ec2:{action} (UnauthorizedOperation); \
             grant it in the IAM policy of the caller"
        )),
        Some(code) => ProviderError::Api(format!(
            "{region}: {action} failed: {code}: {}",
            err.message().unwrap_or("no message")
        )),
        None => match err {
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => ProviderError::Unavailable(format!(
                "{region}: cannot reach the EC2 endpoint ({action}): {}; check that `{region}` is a real \
                 region and, if set, AWS_ENDPOINT_URL",
                DisplayErrorContext(err)
            )),
            _ => ProviderError::Api(format!(
                "{region}: {action} failed: {}; check that `{region}` is a real region",
                DisplayErrorContext(err)
            )),
        },
    }
}

fn filter(name: &str, values: &[&str]) -> ec2::Filter {
    ec2::Filter::builder()
        .name(name)
        .set_values(Some(values.iter().map(|v| v.to_string()).collect()))
        .build()
}

fn deployment_filter(deployment: &str) -> ec2::Filter {
    filter(&format!("tag:{}", tag::DEPLOYMENT), &[deployment])
}

fn tag_value<'a>(tags: &'a [ec2::Tag], key: &str) -> Option<&'a str> {
    tags.iter().find(|t| t.key() == Some(key)).and_then(|t| t.value())
}

fn state_of(state: Option<&ec2::InstanceState>) -> InstanceState {
    match state.and_then(|s| s.name()) {
        Some(ec2::InstanceStateName::Pending) => InstanceState::Pending,
        Some(ec2::InstanceStateName::Running) => InstanceState::Running,
        Some(ec2::InstanceStateName::Stopping) => InstanceState::Stopping,
        Some(ec2::InstanceStateName::Stopped) => InstanceState::Stopped,
        Some(ec2::InstanceStateName::ShuttingDown) => InstanceState::ShuttingDown,
        Some(ec2::InstanceStateName::Terminated) => InstanceState::Terminated,
        // Unknown future states: not terminated, so `create` refuses and
        // `destroy` acts; the safe direction.
        _ => InstanceState::Pending,
    }
}

/// Ours when, and only when, it carries `respot:deployment=<deployment>`.
fn convert(region: &str, deployment: &str, raw: &ec2::Instance) -> Option<Instance> {
    let tags = raw.tags();
    if tag_value(tags, tag::DEPLOYMENT) != Some(deployment) {
        return None;
    }
    let id = raw.instance_id()?.to_string();
    let state = state_of(raw.state());
    // AWS keeps the reason for a stop or termination (a spot interruption
    // shows as `Server.SpotInstanceTermination`) in `StateReason`.
    let state_reason = match state {
        InstanceState::Running | InstanceState::Pending => None,
        _ => raw
            .state_reason()
            .and_then(|r| r.message().or(r.code()))
            .or(raw.state_transition_reason())
            .filter(|s| !s.is_empty())
            .map(str::to_string),
    };
    let public_ip = raw.public_ip_address().map(str::to_string);
    let lifecycle = match raw.instance_lifecycle() {
        Some(ec2::InstanceLifecycleType::Spot) => Lifecycle::Spot,
        _ => Lifecycle::OnDemand,
    };
    Some(Instance {
        name: tag_value(tags, tag::NAME).unwrap_or(&id).to_string(),
        id: InstanceId(id),
        region: region.to_string(),
        zone: raw
            .placement()
            .and_then(|p| p.availability_zone())
            .map(str::to_string),
        instance_type: raw
            .instance_type()
            .map(|t| t.as_str().to_string())
            .unwrap_or_default(),
        lifecycle,
        ssh: match (&state, &public_ip) {
            (InstanceState::Running, Some(ip)) => Some(SshEndpoint {
                host: ip.clone(),
                port: 22,
            }),
            _ => None,
        },
        state,
        state_reason,
        public_ip,
        digest: tag_value(tags, tag::DIGEST).and_then(Digest::parse),
        version: tag_value(tags, tag::VERSION).map(str::to_string),
        generation: tag_value(tags, tag::GENERATION).and_then(|g| g.parse().ok()),
        launched_at: raw.launch_time().and_then(|t| SystemTime::try_from(*t).ok()),
    })
}

/// Runs `work` for every region, at most `MAX_REGIONS` at once, and returns
/// every result in region order: one bad region must not hide the others.
async fn per_region<'a, T, F, Fut>(
    regions: impl IntoIterator<Item = RegionTarget>,
    work: F,
) -> Vec<(String, T)>
where
    F: Fn(RegionTarget) -> Fut,
    Fut: std::future::Future<Output = T> + 'a,
{
    let mut results: Vec<(usize, String, T)> = stream::iter(regions.into_iter().enumerate())
        .map(|(i, target)| {
            let name = target.name.clone();
            let fut = work(target);
            async move { (i, name, fut.await) }
        })
        .buffer_unordered(MAX_REGIONS)
        .collect()
        .await;
    results.sort_by_key(|(i, _, _)| *i);
    results
        .into_iter()
        .map(|(_, name, value)| (name, value))
        .collect()
}

/// Joins per-region failures into one error. The most severe kind wins:
/// credentials over quotas over the rest, since that is what the user must
/// fix first.
fn combine_failures(action: &str, total: usize, failures: Vec<(String, ProviderError)>) -> ProviderError {
    let mut text = format!("{action} failed in {} of {total} region(s):", failures.len());
    let mut unavailable = false;
    let mut capacity = false;
    let mut api = false;
    for (_, err) in &failures {
        match err {
            ProviderError::Unavailable(_) => unavailable = true,
            ProviderError::Capacity(_) => capacity = true,
            ProviderError::Api(_) => api = true,
            ProviderError::Launch(_) => {}
        }
        let _ = write!(text, "\n  {err}"); // writing to a String cannot fail
    }
    if unavailable {
        ProviderError::Unavailable(text)
    } else if capacity {
        ProviderError::Capacity(text)
    } else if api {
        ProviderError::Api(text)
    } else {
        ProviderError::Launch(text)
    }
}

/// Polls with growing pauses: the first check is immediate (an emulator or
/// a fast API is done at once), then 1, 2, 4, 8, 8… seconds.
fn backoff(attempt: u32) -> Duration {
    match attempt {
        0 => Duration::ZERO,
        n => Duration::from_secs(1 << (n - 1).min(3)),
    }
}

impl Provider for AwsProvider {
    async fn list(&self, deployment: &str) -> Result<Vec<Instance>> {
        let results = per_region(self.regions.clone(), |target| async move {
            self.list_region(&target, deployment, &[]).await
        })
        .await;
        let total = results.len();
        let mut instances = Vec::new();
        let mut failures = Vec::new();
        for (region, result) in results {
            match result {
                Ok(found) => instances.extend(found),
                Err(err) => failures.push((region, err)),
            }
        }
        if !failures.is_empty() {
            return Err(combine_failures("list", total, failures));
        }
        Ok(instances)
    }

    async fn launch(&self, request: &LaunchRequest) -> Result<Vec<Instance>> {
        let Some(allow_cidr) = self.allow_cidr.clone() else {
            return Err(ProviderError::Launch(
                "`ssh.allow_cidr` is not set; set it to the address respot connects from \
                 (e.g. \"203.0.113.7/32\") so the security group opens SSH only to it"
                    .to_string(),
            ));
        };
        if allow_cidr == "0.0.0.0/0" {
            tracing::warn!(
                "ssh.allow_cidr is 0.0.0.0/0: SSH{} is open to the whole internet; \
                 set it to your own address (x.x.x.x/32)",
                if self.open_ports.is_empty() {
                    ""
                } else {
                    " and aws.open_ports"
                }
            );
        }
        let targets: Vec<RegionTarget> = self.regions.iter().filter(|r| r.count > 0).cloned().collect();
        if targets.is_empty() {
            return Err(ProviderError::Launch(
                "nothing to launch: no region in `aws.regions` has a count above 0".to_string(),
            ));
        }
        if let Ok(mut images) = self.resolved_images.lock() {
            images.clear();
        }
        let created_at = SystemTime::now();
        let allow_cidr = allow_cidr.as_str();
        let results = per_region(targets, |target| async move {
            self.launch_region(&target, request, allow_cidr, created_at).await
        })
        .await;
        let total = results.len();
        let mut launched = Vec::new();
        let mut failures = Vec::new();
        for (region, result) in results {
            match result {
                Ok(instances) => launched.extend(instances),
                Err(err) => failures.push((region, err)),
            }
        }
        if !failures.is_empty() {
            return Err(combine_failures("create", total, failures));
        }
        Ok(launched)
    }

    async fn capacity_plan(&self) -> Result<Vec<PlannedRegion>> {
        let launching: Vec<RegionTarget> = self.regions.iter().filter(|r| r.count > 0).cloned().collect();
        let results = per_region(launching, |target| async move {
            let priced = self.spot_price(&target).await;
            (target.count, priced)
        })
        .await;
        let first_type = self.instance_types.first().cloned().unwrap_or_default();
        Ok(results
            .into_iter()
            .map(|(region, (count, priced))| {
                let (price_per_hour, price_note) = match priced {
                    Ok(Some(price)) => {
                        let note = self.max_price.filter(|cap| price > *cap).map(|cap| {
                            format!("above max_price {cap}: expect the next pool or SpotMaxPriceTooLow")
                        });
                        (Some(price), note)
                    }
                    Ok(None) => (None, Some(format!("no spot price for {first_type} in {region}"))),
                    Err(err) => (None, Some(format!("spot price unavailable: {err}"))),
                };
                PlannedRegion {
                    region,
                    count,
                    instance_type: first_type.clone(),
                    lifecycle: Lifecycle::Spot,
                    price_per_hour,
                    price_note,
                }
            })
            .collect())
    }

    async fn destroy(&self, deployment: &str, instances: &[Instance], wait: bool) -> Result<DestroyReport> {
        let mut by_region: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for instance in instances {
            let ids = by_region.entry(instance.region.clone()).or_default();
            if instance.state.is_live() {
                ids.push(instance.id.0.clone());
            }
        }
        let mut targets: Vec<RegionTarget> = self.regions.clone();
        for region in by_region.keys() {
            if !targets.iter().any(|t| &t.name == region) {
                targets.push(self.target(region));
            }
        }
        let by_region = &by_region;
        let results = per_region(targets, |target| async move {
            let ids = by_region.get(&target.name).cloned().unwrap_or_default();
            self.destroy_region(&target, deployment, &ids, wait).await
        })
        .await;
        let total = results.len();
        let mut report = DestroyReport::default();
        let mut failures = Vec::new();
        for (region, result) in results {
            match result {
                Ok(part) => {
                    report.terminated.extend(part.terminated);
                    report.cleaned.extend(part.cleaned);
                    report.left_behind.extend(part.left_behind);
                }
                Err(err @ ProviderError::Unavailable(_)) => failures.push((region, err)),
                Err(err) => report.left_behind.push(err.to_string()),
            }
        }
        if !failures.is_empty() {
            return Err(combine_failures("destroy", total, failures));
        }
        Ok(report)
    }
}

/// What stage one of a region's launch found out.
struct Prepared {
    caller: String,
    image: String,
    /// (zone, default subnet), in the order to try.
    zones: Vec<(String, String)>,
    group_id: String,
    /// Ingress rules still to add (all of them for a new group).
    missing_ports: Vec<u16>,
}

impl AwsProvider {
    /// The lowest current Linux spot price of the first instance type over
    /// the region's (configured) zones: one DescribeSpotPriceHistory call.
    async fn spot_price(&self, target: &RegionTarget) -> Result<Option<f64>> {
        let Some(itype) = self.instance_types.first() else {
            return Ok(None);
        };
        let out = target
            .ec2
            .describe_spot_price_history()
            .instance_types(ec2::InstanceType::from(itype.as_str()))
            .start_time(aws_sdk_ec2::primitives::DateTime::from(SystemTime::now()))
            .max_results(100)
            .send()
            .await
            .map_err(|err| self.api_error(&target.name, "DescribeSpotPriceHistory", &err))?;
        let lowest = out
            .spot_price_history()
            .iter()
            .filter(|p| {
                p.product_description()
                    .is_some_and(|d| d.as_str().starts_with("Linux/UNIX"))
            })
            .filter(|p| {
                target.zones.is_empty()
                    || p.availability_zone()
                        .is_some_and(|z| target.zones.iter().any(|c| c == z))
            })
            .filter_map(|p| p.spot_price()?.parse::<f64>().ok())
            .fold(None, |low: Option<f64>, price| {
                Some(low.map_or(price, |l| l.min(price)))
            });
        Ok(lowest)
    }

    async fn list_region(
        &self,
        target: &RegionTarget,
        deployment: &str,
        ids: &[String],
    ) -> Result<Vec<Instance>> {
        let mut found = Vec::new();
        for chunk in chunks_or_all(ids) {
            let mut request = target
                .ec2
                .describe_instances()
                .filters(deployment_filter(deployment));
            if chunk.is_empty() {
                request = request.max_results(1000);
            } else {
                // The `instance-id` filter, not `InstanceIds`: an id AWS
                // already forgot must not fail the whole batch.
                let values: Vec<&str> = chunk.iter().map(String::as_str).collect();
                request = request.filters(filter("instance-id", &values));
            }
            let mut pages = request.into_paginator().send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|err| self.api_error(&target.name, "DescribeInstances", &err))?;
                for reservation in page.reservations() {
                    found.extend(
                        reservation
                            .instances()
                            .iter()
                            .filter_map(|raw| convert(&target.name, deployment, raw)),
                    );
                }
            }
        }
        found.sort_by(|a, b| (a.launched_at, &a.id).cmp(&(b.launched_at, &b.id)));
        Ok(found)
    }

    async fn launch_region(
        &self,
        target: &RegionTarget,
        request: &LaunchRequest,
        allow_cidr: &str,
        created_at: SystemTime,
    ) -> Result<Vec<Instance>> {
        let region = target.name.as_str();
        let (caller, image, zones, (group_id, missing_ports)) = tokio::try_join!(
            self.caller_arn(),
            self.resolve_image(target),
            self.default_subnets(target),
            self.create_security_group(target, &request.deployment),
        )?;
        if let Ok(mut images) = self.resolved_images.lock() {
            images.push((region.to_string(), image.clone()));
        }
        tracing::info!("{region}: image {} is {image}", self.image);
        let prepared = Prepared {
            caller,
            image,
            zones,
            group_id,
            missing_ports,
        };
        // The rules and the launch are independent; instances need the
        // rules only once they boot, seconds later.
        let (rules, ids) = tokio::join!(
            self.authorize_ingress(target, &prepared.group_id, &prepared.missing_ports, allow_cidr),
            self.run_pools(target, request, &prepared, created_at),
        );
        let ids = ids?;
        rules?;
        self.wait_running(target, &request.deployment, &ids).await
    }

    async fn resolve_image(&self, target: &RegionTarget) -> Result<String> {
        if self.image.starts_with("ami-") {
            return Ok(self.image.clone());
        }
        let arch = self.architecture()?;
        let (owner, pattern) = match self.image.as_str() {
            "al2023" => ("amazon", format!("al2023-ami-2023*-kernel-*-{arch}")),
            "ubuntu-24.04" => (
                "099720109477",
                format!(
                    "ubuntu/images/hvm-ssd*/ubuntu-noble-24.04-{}-server-*",
                    ubuntu_arch(arch)
                ),
            ),
            "ubuntu-22.04" => (
                "099720109477",
                format!(
                    "ubuntu/images/hvm-ssd*/ubuntu-jammy-22.04-{}-server-*",
                    ubuntu_arch(arch)
                ),
            ),
            other => {
                return Err(ProviderError::Launch(format!(
                    "unknown image alias `{other}`; use `ami-...`, `al2023`, `ubuntu-24.04` or `ubuntu-22.04`"
                )));
            }
        };
        let out = target
            .ec2
            .describe_images()
            .owners(owner)
            .filters(filter("name", &[&pattern]))
            .filters(filter("state", &["available"]))
            .send()
            .await
            .map_err(|err| self.api_error(&target.name, "DescribeImages", &err))?;
        // Newest first; images published together tie on CreationDate, and
        // then the later name (e.g. the newer kernel) wins.
        out.images()
            .iter()
            .filter(|i| i.architecture().is_none_or(|a| a.as_str() == arch))
            .filter_map(|i| {
                Some((
                    i.creation_date().unwrap_or(""),
                    i.name().unwrap_or(""),
                    i.image_id()?,
                ))
            })
            .max()
            .map(|(_, _, id)| id.to_string())
            .ok_or_else(|| {
                ProviderError::Launch(format!(
                    "{}: no official image matches `{}` (owner {owner}, name {pattern}); \
                     set `aws.image` to an `ami-...` id from that region",
                    target.name, self.image
                ))
            })
    }

    /// The CPU architecture of the configured instance types, which must
    /// agree: one image serves every pool.
    fn architecture(&self) -> Result<&'static str> {
        let arch = |t: &str| if is_graviton(t) { "arm64" } else { "x86_64" };
        let first = arch(&self.instance_types[0]);
        if let Some(other) = self.instance_types.iter().find(|t| arch(t) != first) {
            return Err(ProviderError::Launch(format!(
                "`aws.instance_types` mixes architectures (`{}` is {first}, `{other}` is {}); \
                 one image serves every type, so list only one architecture",
                self.instance_types[0],
                arch(other)
            )));
        }
        Ok(first)
    }

    async fn default_subnets(&self, target: &RegionTarget) -> Result<Vec<(String, String)>> {
        let out = target
            .ec2
            .describe_subnets()
            .filters(filter("default-for-az", &["true"]))
            .send()
            .await
            .map_err(|err| self.api_error(&target.name, "DescribeSubnets", &err))?;
        let mut by_zone: BTreeMap<String, String> = BTreeMap::new();
        for subnet in out.subnets() {
            if let (Some(zone), Some(id)) = (subnet.availability_zone(), subnet.subnet_id()) {
                by_zone.insert(zone.to_string(), id.to_string());
            }
        }
        if by_zone.is_empty() {
            return Err(ProviderError::Launch(format!(
                "{0}: no default VPC subnets; respot launches into the default VPC, \
                 create it with `aws ec2 create-default-vpc --region {0}`",
                target.name
            )));
        }
        if target.zones.is_empty() {
            return Ok(by_zone.into_iter().collect());
        }
        target
            .zones
            .iter()
            .map(|zone| match by_zone.get(zone) {
                Some(subnet) => Ok((zone.clone(), subnet.clone())),
                None => Err(ProviderError::Launch(format!(
                    "{}: zone `{zone}` has no default subnet; zones with one: {}",
                    target.name,
                    by_zone.keys().cloned().collect::<Vec<_>>().join(", ")
                ))),
            })
            .collect()
    }

    /// Creates `respot-<deployment>`, tagged at creation. If it already
    /// exists (a run that died before `destroy`), it is reused only when it
    /// carries our tag; returns its id and the ports still to open.
    async fn create_security_group(
        &self,
        target: &RegionTarget,
        deployment: &str,
    ) -> Result<(String, Vec<u16>)> {
        let name = group_name(deployment);
        let mut ports = vec![22];
        ports.extend(self.open_ports.iter().copied().filter(|p| *p != 22));
        let created = target
            .ec2
            .create_security_group()
            .group_name(&name)
            .description(format!(
                "respot deployment {deployment}: SSH and open_ports from ssh.allow_cidr"
            ))
            .tag_specifications(
                ec2::TagSpecification::builder()
                    .resource_type(ec2::ResourceType::SecurityGroup)
                    .tags(ec2_tag(tag::DEPLOYMENT, deployment))
                    .tags(ec2_tag(tag::NAME, &name))
                    .build(),
            )
            .send()
            .await;
        match created {
            Ok(out) => match out.group_id() {
                Some(id) => Ok((id.to_string(), ports)),
                None => Err(ProviderError::Api(format!(
                    "{}: CreateSecurityGroup returned no group id",
                    target.name
                ))),
            },
            Err(err) if err.code() == Some("InvalidGroup.Duplicate") => {
                let out = target
                    .ec2
                    .describe_security_groups()
                    .filters(filter("group-name", &[&name]))
                    .send()
                    .await
                    .map_err(|err| self.api_error(&target.name, "DescribeSecurityGroups", &err))?;
                let Some(group) = out.security_groups().first() else {
                    return Err(ProviderError::Api(format!(
                        "{}: security group `{name}` exists but cannot be described",
                        target.name
                    )));
                };
                if tag_value(group.tags(), tag::DEPLOYMENT) != Some(deployment) {
                    return Err(ProviderError::Launch(format!(
                        "{}: a security group named `{name}` exists without the tag {}={deployment}; \
                         respot never reuses a group it did not create: delete or rename it",
                        target.name,
                        tag::DEPLOYMENT
                    )));
                }
                let allow = self.allow_cidr.as_deref().unwrap_or_default();
                let open: BTreeSet<u16> = group
                    .ip_permissions()
                    .iter()
                    .filter(|p| p.ip_ranges().iter().any(|r| r.cidr_ip() == Some(allow)))
                    .filter(|p| p.from_port() == p.to_port())
                    .filter_map(|p| p.from_port().and_then(|port| u16::try_from(port).ok()))
                    .collect();
                let id = group.group_id().unwrap_or_default().to_string();
                Ok((id, ports.into_iter().filter(|p| !open.contains(p)).collect()))
            }
            Err(err) => Err(self.api_error(&target.name, "CreateSecurityGroup", &err)),
        }
    }

    async fn authorize_ingress(
        &self,
        target: &RegionTarget,
        group: &str,
        ports: &[u16],
        cidr: &str,
    ) -> Result<()> {
        if ports.is_empty() {
            return Ok(());
        }
        let permissions = ports.iter().map(|port| {
            ec2::IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(i32::from(*port))
                .to_port(i32::from(*port))
                .ip_ranges(
                    ec2::IpRange::builder()
                        .cidr_ip(cidr)
                        .description("respot: ssh.allow_cidr")
                        .build(),
                )
                .build()
        });
        match target
            .ec2
            .authorize_security_group_ingress()
            .group_id(group)
            .set_ip_permissions(Some(permissions.collect()))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(err) if err.code() == Some("InvalidPermission.Duplicate") => Ok(()),
            Err(err) => Err(self.api_error(&target.name, "AuthorizeSecurityGroupIngress", &err)),
        }
    }

    /// Launches `target.count` instances, one `RunInstances` per pool
    /// (instance type × zone, in configured order), moving on when a pool
    /// has no capacity. Returns the ids launched; on error, whatever was
    /// launched is tagged and the engine's rollback finds it.
    async fn run_pools(
        &self,
        target: &RegionTarget,
        request: &LaunchRequest,
        prepared: &Prepared,
        created_at: SystemTime,
    ) -> Result<Vec<String>> {
        let region = target.name.as_str();
        let user_data = base64::engine::general_purpose::STANDARD.encode(&request.user_data.packed);
        let name = format!("respot-{}-g{}", request.deployment, request.generation);
        let mut tags: Vec<ec2::Tag> = request
            .tags(&name, created_at)
            .iter()
            .map(|(k, v)| ec2_tag(k, v))
            .collect();
        tags.push(ec2_tag(tag::CREATED_BY, &prepared.caller));
        tags.push(ec2_tag(TAG_IMAGE, &prepared.image));
        let nonce = created_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        let mut markets = vec![true];
        if self.fallback == Fallback::OnDemand {
            markets.push(false);
        }
        let mut remaining = target.count;
        let mut launched: Vec<String> = Vec::new();
        let mut pool_errors: Vec<String> = Vec::new();
        let mut attempt = 0u32;
        'markets: for spot in markets {
            for itype in &self.instance_types {
                for (zone, subnet) in &prepared.zones {
                    if remaining == 0 {
                        break 'markets;
                    }
                    attempt += 1;
                    // All or nothing per pool: a pool that cannot hold the
                    // whole batch fails with a capacity error and the next
                    // pool gets the batch (moto also launches MinCount).
                    let batch = i32::try_from(remaining).unwrap_or(i32::MAX);
                    let mut specs = vec![
                        tag_spec(ec2::ResourceType::Instance, &tags),
                        tag_spec(ec2::ResourceType::Volume, &tags),
                    ];
                    if spot {
                        specs.push(tag_spec(ec2::ResourceType::SpotInstancesRequest, &tags));
                    }
                    // The token makes the SDK's own retries idempotent: a
                    // retried call cannot launch a second batch.
                    let token = format!("respot-{nonce}-{}-{region}-{attempt}", request.generation);
                    let mut call = target
                        .ec2
                        .run_instances()
                        .image_id(&prepared.image)
                        .instance_type(ec2::InstanceType::from(itype.as_str()))
                        .min_count(batch)
                        .max_count(batch)
                        .subnet_id(subnet)
                        .security_group_ids(&prepared.group_id)
                        .user_data(&user_data)
                        .instance_initiated_shutdown_behavior(ec2::ShutdownBehavior::Terminate)
                        .client_token(token)
                        .set_tag_specifications(Some(specs));
                    if spot {
                        call = call.instance_market_options(spot_options(self.max_price));
                    }
                    match call.send().await {
                        Ok(out) => {
                            let ids: Vec<String> = out
                                .instances()
                                .iter()
                                .filter_map(|i| i.instance_id().map(str::to_string))
                                .collect();
                            remaining =
                                remaining.saturating_sub(u32::try_from(ids.len()).unwrap_or(u32::MAX));
                            tracing::info!(
                                "{region}: launched {} {} {itype} in {zone}",
                                ids.len(),
                                if spot { "spot" } else { "on-demand" }
                            );
                            launched.extend(ids);
                        }
                        Err(err) => {
                            let code = err.code().unwrap_or_default().to_string();
                            if POOL_ERRORS.contains(&code.as_str()) {
                                tracing::warn!(
                                    "{region}: no capacity for {itype} in {zone} ({code}); trying the next pool"
                                );
                                pool_errors.push(format!("{itype} in {zone}: {code}"));
                                continue;
                            }
                            if let Some(quota) = quota_message(&code, region, spot, self.max_price) {
                                if spot && self.fallback == Fallback::OnDemand && code != "VcpuLimitExceeded"
                                {
                                    tracing::warn!("{region}: {code} for spot; falling back to on-demand");
                                    pool_errors.push(format!("spot: {code}"));
                                    continue 'markets;
                                }
                                return Err(ProviderError::Capacity(format!(
                                    "{quota} ({code}: {})",
                                    err.message().unwrap_or("no message")
                                )));
                            }
                            return Err(self.api_error(region, "RunInstances", &err));
                        }
                    }
                }
            }
        }
        if remaining > 0 {
            return Err(ProviderError::Capacity(format!(
                "{region}: launched {} of {} instance(s); no capacity left in any pool ({}); \
                 add instance types or zones in respot.toml{}",
                launched.len(),
                target.count,
                pool_errors.join(", "),
                if self.fallback == Fallback::None {
                    ", or set aws.fallback = \"on-demand\""
                } else {
                    ""
                }
            )));
        }
        Ok(launched)
    }

    /// Polls the launched ids in one batched call per round until all run
    /// with a public IP. An instance that ends during the wait (a spot
    /// reclaim) fails the region, with AWS's reason.
    async fn wait_running(
        &self,
        target: &RegionTarget,
        deployment: &str,
        ids: &[String],
    ) -> Result<Vec<Instance>> {
        let region = target.name.as_str();
        let poll = async {
            let mut attempt = 0;
            loop {
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
                let found = self.list_region(target, deployment, ids).await?;
                if let Some(gone) = found.iter().find(|i| {
                    matches!(
                        i.state,
                        InstanceState::ShuttingDown | InstanceState::Terminated | InstanceState::Stopped
                    )
                }) {
                    return Err(ProviderError::Launch(format!(
                        "{region}: instance {} became {} while starting: {}",
                        gone.id,
                        gone.state,
                        gone.state_reason.as_deref().unwrap_or("no reason given")
                    )));
                }
                // Right after RunInstances, DescribeInstances may not know
                // the ids yet (eventual consistency): keep polling.
                let ready = found
                    .iter()
                    .filter(|i| i.state == InstanceState::Running && i.public_ip.is_some())
                    .count();
                if ready == ids.len() {
                    return Ok(found);
                }
                tracing::debug!("{region}: {ready}/{} running with a public IP", ids.len());
            }
        };
        match tokio::time::timeout(WAIT_RUNNING, poll).await {
            Ok(result) => result,
            Err(_) => Err(ProviderError::Launch(format!(
                "{region}: timed out after {}s waiting for {} instance(s) to run with a public IP \
                 (the default subnets must assign public IPs)",
                WAIT_RUNNING.as_secs(),
                ids.len()
            ))),
        }
    }

    async fn destroy_region(
        &self,
        target: &RegionTarget,
        deployment: &str,
        ids: &[String],
        wait: bool,
    ) -> Result<DestroyReport> {
        let region = target.name.as_str();
        let mut report = DestroyReport::default();
        let (terminated, requests, group) = tokio::join!(
            self.terminate(target, deployment, ids),
            self.open_spot_requests(target, deployment),
            self.find_security_group(target, deployment),
        );
        let terminated = terminated?;
        report
            .terminated
            .extend(terminated.iter().cloned().map(InstanceId));
        let requests = requests?;
        let group = group?;
        let (cancelled, others_live) = tokio::join!(self.cancel_spot_requests(target, &requests), async {
            if wait {
                self.wait_terminated(target, deployment, &terminated)
                    .await
                    .map(Some)
            } else {
                Ok(None)
            }
        });
        match cancelled {
            Ok(()) => report
                .cleaned
                .extend(requests.iter().map(|r| format!("spot request {r} in {region}"))),
            Err(err) => report.left_behind.push(err.to_string()),
        }
        let Some(group) = group else {
            return Ok(report);
        };
        match others_live {
            Ok(Some(0)) => match self.delete_security_group(target, &group).await {
                Ok(()) => report.cleaned.push(format!(
                    "security group {group} ({}) in {region}",
                    group_name(deployment)
                )),
                Err(err) => report.left_behind.push(err.to_string()),
            },
            // Another generation still runs in this region and uses the group.
            Ok(Some(_)) => {}
            Ok(None) => tracing::warn!(
                "{region}: kept security group {group}: it is deleted once the instances are gone; \
                 run `respot destroy` again without --no-wait"
            ),
            Err(err) => report.left_behind.push(err.to_string()),
        }
        Ok(report)
    }

    /// Terminates `ids` in batches; ids AWS no longer knows are skipped.
    async fn terminate(
        &self,
        target: &RegionTarget,
        deployment: &str,
        ids: &[String],
    ) -> Result<Vec<String>> {
        let mut done = Vec::new();
        for chunk in ids.chunks(ID_BATCH) {
            match target
                .ec2
                .terminate_instances()
                .set_instance_ids(Some(chunk.to_vec()))
                .send()
                .await
            {
                Ok(_) => done.extend(chunk.iter().cloned()),
                Err(err) if err.code() == Some("InvalidInstanceID.NotFound") => {
                    // Some ids are gone already; terminate the ones AWS
                    // still lists under our tag.
                    let known: Vec<String> = self
                        .list_region(target, deployment, chunk)
                        .await?
                        .into_iter()
                        .filter(|i| i.state.is_live())
                        .map(|i| i.id.0)
                        .collect();
                    if known.is_empty() {
                        continue;
                    }
                    target
                        .ec2
                        .terminate_instances()
                        .set_instance_ids(Some(known.clone()))
                        .send()
                        .await
                        .map_err(|err| self.api_error(&target.name, "TerminateInstances", &err))?;
                    done.extend(known);
                }
                Err(err) => return Err(self.api_error(&target.name, "TerminateInstances", &err)),
            }
        }
        Ok(done)
    }

    async fn open_spot_requests(&self, target: &RegionTarget, deployment: &str) -> Result<Vec<String>> {
        let out = target
            .ec2
            .describe_spot_instance_requests()
            .filters(deployment_filter(deployment))
            .filters(filter("state", &["open", "active"]))
            .send()
            .await
            .map_err(|err| self.api_error(&target.name, "DescribeSpotInstanceRequests", &err))?;
        Ok(out
            .spot_instance_requests()
            .iter()
            .filter(|r| tag_value(r.tags(), tag::DEPLOYMENT) == Some(deployment))
            .filter_map(|r| r.spot_instance_request_id().map(str::to_string))
            .collect())
    }

    async fn cancel_spot_requests(&self, target: &RegionTarget, requests: &[String]) -> Result<()> {
        for chunk in requests.chunks(ID_BATCH) {
            target
                .ec2
                .cancel_spot_instance_requests()
                .set_spot_instance_request_ids(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|err| self.api_error(&target.name, "CancelSpotInstanceRequests", &err))?;
        }
        Ok(())
    }

    async fn find_security_group(&self, target: &RegionTarget, deployment: &str) -> Result<Option<String>> {
        let out = target
            .ec2
            .describe_security_groups()
            .filters(filter("group-name", &[&group_name(deployment)]))
            .filters(deployment_filter(deployment))
            .send()
            .await
            .map_err(|err| self.api_error(&target.name, "DescribeSecurityGroups", &err))?;
        Ok(out
            .security_groups()
            .iter()
            .find(|g| tag_value(g.tags(), tag::DEPLOYMENT) == Some(deployment))
            .and_then(|g| g.group_id())
            .map(str::to_string))
    }

    /// Waits until `ids` are terminated; returns how many other instances
    /// of the deployment are still live in the region (their group stays).
    async fn wait_terminated(
        &self,
        target: &RegionTarget,
        deployment: &str,
        ids: &[String],
    ) -> Result<usize> {
        let region = target.name.as_str();
        let ours: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
        let poll = async {
            let mut attempt = 0;
            loop {
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
                let found = self.list_region(target, deployment, &[]).await?;
                let waiting = found
                    .iter()
                    .filter(|i| ours.contains(i.id.0.as_str()) && i.state != InstanceState::Terminated)
                    .count();
                if waiting == 0 {
                    return Ok(found
                        .iter()
                        .filter(|i| !ours.contains(i.id.0.as_str()) && i.state.is_live())
                        .count());
                }
                tracing::debug!("{region}: waiting for {waiting} instance(s) to terminate");
            }
        };
        match tokio::time::timeout(WAIT_TERMINATED, poll).await {
            Ok(result) => result,
            Err(_) => Err(ProviderError::Launch(format!(
                "{region}: instances still not terminated after {}s; run `respot destroy` again",
                WAIT_TERMINATED.as_secs()
            ))),
        }
    }

    /// Deletes the group, retrying `DependencyViolation` while the network
    /// interfaces of terminated instances detach (tens of seconds on EC2).
    async fn delete_security_group(&self, target: &RegionTarget, group: &str) -> Result<()> {
        let region = target.name.as_str();
        let started = tokio::time::Instant::now();
        let mut attempt = 0;
        loop {
            match target.ec2.delete_security_group().group_id(group).send().await {
                Ok(_) => return Ok(()),
                Err(err) if err.code() == Some("InvalidGroup.NotFound") => return Ok(()),
                Err(err) if err.code() == Some("DependencyViolation") => {
                    if started.elapsed() >= WAIT_GROUP_DELETE {
                        return Err(ProviderError::Api(format!(
                            "{region}: security group {group} is still in use after {}s \
                             (DependencyViolation); run `respot destroy` again later",
                            WAIT_GROUP_DELETE.as_secs()
                        )));
                    }
                    attempt += 1;
                    tracing::debug!("{region}: security group {group} still in use; retrying");
                    tokio::time::sleep(backoff(attempt).max(Duration::from_secs(1))).await;
                }
                Err(err) => return Err(self.api_error(region, "DeleteSecurityGroup", &err)),
            }
        }
    }
}

fn chunks_or_all(ids: &[String]) -> Vec<&[String]> {
    if ids.is_empty() {
        vec![&[]]
    } else {
        ids.chunks(ID_BATCH).collect()
    }
}

pub fn group_name(deployment: &str) -> String {
    format!("respot-{deployment}")
}

fn ec2_tag(key: &str, value: &str) -> ec2::Tag {
    ec2::Tag::builder().key(key).value(value).build()
}

fn tag_spec(resource: ec2::ResourceType, tags: &[ec2::Tag]) -> ec2::TagSpecification {
    ec2::TagSpecification::builder()
        .resource_type(resource)
        .set_tags(Some(tags.to_vec()))
        .build()
}

fn spot_options(max_price: Option<f64>) -> ec2::InstanceMarketOptionsRequest {
    ec2::InstanceMarketOptionsRequest::builder()
        .market_type(ec2::MarketType::Spot)
        .spot_options(
            ec2::SpotMarketOptions::builder()
                .spot_instance_type(ec2::SpotInstanceType::OneTime)
                .instance_interruption_behavior(ec2::InstanceInterruptionBehavior::Terminate)
                .set_max_price(max_price.map(|p| format!("{p}")))
                .build(),
        )
        .build()
}

/// The actionable message for a quota or price error, or `None` when
/// `code` is not one.
fn quota_message(code: &str, region: &str, spot: bool, max_price: Option<f64>) -> Option<String> {
    let quotas = format!("https://{region}.console.aws.amazon.com/servicequotas/home/services/ec2/quotas");
    Some(match code {
        "MaxSpotInstanceCountExceeded" => format!(
            "{region}: the spot quota is used up; raise \"All Standard (A, C, D, H, I, M, R, T, Z) Spot \
             Instance Requests\" for {region} in Service Quotas ({quotas}), lower the count, \
             or set aws.fallback = \"on-demand\""
        ),
        "VcpuLimitExceeded" | "InstanceLimitExceeded" => format!(
            "{region}: the {} vCPU quota is used up; raise \"{}\" for {region} in Service Quotas \
             ({quotas}) or lower the count",
            if spot { "spot" } else { "on-demand" },
            if spot {
                "All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests"
            } else {
                "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances"
            }
        ),
        "SpotMaxPriceTooLow" => format!(
            "{region}: aws.max_price = {} is below the current spot price; raise aws.max_price or \
             remove it (the on-demand price is the cap then)",
            max_price.map_or_else(|| "(unset)".to_string(), |p| p.to_string())
        ),
        _ => return None,
    })
}

/// Graviton families carry a `g` after the generation digit (t4g, c7gn, m6gd).
fn is_graviton(instance_type: &str) -> bool {
    let family = instance_type.split('.').next().unwrap_or_default();
    match family.find(|c: char| c.is_ascii_digit()) {
        Some(at) => {
            let suffix = family[at..].trim_start_matches(|c: char| c.is_ascii_digit());
            !family[..at].is_empty() && suffix.contains('g')
        }
        None => false,
    }
}

fn ubuntu_arch(arch: &str) -> &'static str {
    if arch == "arm64" { "arm64" } else { "amd64" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graviton_detection() {
        let cases = [
            ("t3.small", false),
            ("t4g.small", true),
            ("c7gn.large", true),
            ("m6gd.xlarge", true),
            ("g5.xlarge", false),
            ("g4dn.xlarge", false),
            ("m7i.large", false),
        ];
        for (itype, want) in cases {
            assert_eq!(is_graviton(itype), want, "{itype}");
        }
    }

    #[test]
    fn region_names() {
        let cases = [
            ("eu-west-1", true),
            ("us-gov-west-1", true),
            ("ap-southeast-2", true),
            ("eu-west", false),
            ("EU-west-1", false),
            ("eu--1", false),
        ];
        for (name, want) in cases {
            assert_eq!(valid_region(name), want, "{name}");
        }
    }

    #[test]
    fn backoff_grows_and_caps() {
        let got: Vec<u64> = (0..7).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(got, [0, 1, 2, 4, 8, 8, 8]);
    }

    #[test]
    fn quota_messages_name_the_fix() {
        let spot = quota_message("MaxSpotInstanceCountExceeded", "eu-west-1", true, None).expect("a quota");
        assert!(
            spot.contains("Service Quotas") && spot.contains("eu-west-1"),
            "{spot}"
        );
        let price = quota_message("SpotMaxPriceTooLow", "eu-west-1", true, Some(0.002)).expect("a quota");
        assert!(price.contains("aws.max_price = 0.002"), "{price}");
        assert_eq!(
            quota_message("InvalidAMIID.NotFound", "eu-west-1", true, None),
            None
        );
    }
}
