//! The AWS provider: spot fleets in many regions, with tags as the only state.
//!
//! This module holds [`AwsProvider`] and its `Provider` methods, which fan
//! out over regions and gather the results; each concern lives in its own
//! file: `connect` (credentials, regions), `ec2` (the seam: every AWS call,
//! behind the `Ec2Api` trait), `sdk` (the trait over the AWS SDK, with its
//! retry policy), `convert` (SDK ↔ respot types), `errors` (codes →
//! `ProviderError`), `consistency` (retries of what EC2 has not propagated
//! yet), `image`, `regions`, `list`, `plan`, `launch`, `pools`, `fleet`
//! (`aws.allocation = "price-capacity-optimized"`), `group` and `destroy`. SDK types never leave `sdk`, `convert` and
//! `connect`, so everything else runs against a scripted fake in tests.
//!
//! Every resource respot creates (instances, their volumes, spot requests,
//! the security group) is tagged at creation through `TagSpecifications`,
//! never afterwards, so a run killed right after `RunInstances` returns
//! still leaves findable instances. It reads and modifies only resources
//! tagged `respot:deployment=<name>`.
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

#[cfg(test)]
mod access_tests;
mod bundle;
pub mod bundle_url;
mod connect;
mod consistency;
mod convert;
mod destroy;
pub mod ec2;
mod errors;
#[cfg(test)]
mod fake;
mod fleet;
mod group;
mod heal;
pub mod image;
mod launch;
mod list;
pub mod lock;
mod optin;
mod orphans;
pub mod permissions;
mod plan;
pub mod policies;
mod pools;
pub mod regions;
mod sdk;
pub mod secrets;
#[cfg(test)]
mod tests;

use std::time::Duration;

use futures::stream::{self, StreamExt};

use self::destroy::Scope;
use self::ec2::Ec2Api;
use self::sdk::SdkEc2;
use super::{
    DestroyReport, Instance, LaunchRequest, PlannedRegion, Provider, ProviderError, RegionFailure, Result,
};
use crate::config::{Allocation, Config, Fallback, RegionSection};

pub use self::group::group_name;
pub use self::lock::{AwsLock, HeldLock};

/// The lock a command holds on AWS.
pub type SdkLock = AwsLock<SdkEc2>;

/// Regions contacted at once. Every region is a separate endpoint, so this
/// bounds sockets and memory rather than load on any one server.
const MAX_REGIONS: usize = 16;

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

/// The `[aws]` and `ssh.allow_cidr` settings a provider acts on.
#[derive(Debug, Clone)]
struct Settings {
    image: String,
    instance_types: Vec<String>,
    max_price: Option<f64>,
    fallback: Fallback,
    open_ports: Vec<u16>,
    allow_cidr: Option<String>,
    regions: Vec<RegionSection>,
    encrypt_volumes: bool,
    bundle_bucket: Option<String>,
    /// `[[secrets]]`' SSM parameters, whose versions launch tags.
    ssm_parameters: Vec<String>,
    launch: LaunchSettings,
    /// `aws.allocation`: the ordered walk or one fleet per region.
    allocation: Allocation,
}

/// `[aws]` launch settings beyond the pools (issue 11 item 7, issue 13.4).
#[derive(Debug, Clone)]
struct LaunchSettings {
    public_ip: bool,
    root_volume_gb: Option<u32>,
    volume_type: Option<String>,
    /// `aws.tags`, applied at launch after respot's own.
    tags: Vec<(String, String)>,
    instance_profile: Option<String>,
}

impl Default for LaunchSettings {
    fn default() -> Self {
        LaunchSettings {
            public_ip: true,
            root_volume_gb: None,
            volume_type: None,
            tags: Vec::new(),
            instance_profile: None,
        }
    }
}

impl Settings {
    fn from_config(config: &Config) -> Settings {
        Settings {
            image: config.aws.image.clone(),
            instance_types: config.aws.instance_types.clone(),
            max_price: config.aws.max_price,
            fallback: config.aws.fallback,
            open_ports: config.aws.open_ports.clone(),
            allow_cidr: config.ssh.allow_cidr.clone(),
            regions: config.aws.regions.clone(),
            encrypt_volumes: config.aws.encrypt_volumes,
            bundle_bucket: config.aws.bundle_bucket.clone(),
            ssm_parameters: config.secrets.iter().filter_map(|s| s.ssm.clone()).collect(),
            launch: LaunchSettings {
                public_ip: config.aws.public_ip,
                root_volume_gb: config.aws.root_volume_gb,
                volume_type: config.aws.volume_type.clone(),
                tags: config.aws.tags.clone().into_iter().collect(),
                instance_profile: config.aws.instance_profile.clone(),
            },
            allocation: config.aws.allocation,
        }
    }
}

/// How long respot waits for AWS, and the unit of its polling pauses.
/// Tests shrink them, so waits and retries cost no wall time.
#[derive(Debug, Clone, Copy)]
struct Waits {
    /// `launch` waits this long for instances to run with a public IP.
    running: Duration,
    /// `destroy` waits this long for instances to reach `terminated`.
    terminated: Duration,
    /// `destroy` retries `DependencyViolation` this long while ENIs detach.
    group_delete: Duration,
    /// How long a resource respot just created may stay unknown to other
    /// calls (EC2's eventual consistency): `InvalidGroup.NotFound` right
    /// after `CreateSecurityGroup` is retried this long.
    consistency: Duration,
    /// The first pause of [`Waits::backoff`].
    pause: Duration,
}

impl Waits {
    const AWS: Waits = Waits {
        running: Duration::from_secs(600),
        terminated: Duration::from_secs(600),
        // Terraform's AWS provider waits as long for a group to delete.
        group_delete: Duration::from_secs(300),
        consistency: Duration::from_secs(120),
        pause: Duration::from_secs(1),
    };

    /// Polls with growing pauses: the first check is immediate (an emulator
    /// or a fast API is done at once), then 1, 2, 4, 8, 8… pause units.
    fn backoff(&self, attempt: u32) -> Duration {
        match attempt {
            0 => Duration::ZERO,
            n => self.pause * (1 << (n - 1).min(3)),
        }
    }
}

/// One region respot works in, with its own client.
#[derive(Debug, Clone)]
struct RegionTarget<E> {
    name: String,
    /// Instances to launch here; 0 outside `aws.regions`.
    count: u32,
    zones: Vec<String>,
    /// The region's `instance_types`, else `aws.instance_types`.
    instance_types: Vec<String>,
    ec2: E,
    /// Pools (instance type, zone) tried only after every other (`heal`).
    avoid: Vec<(String, String)>,
}

/// An instance `RunInstances` returned whose launch has not been handed
/// to the caller yet: a rollback terminates it even when a listing does
/// not show it yet (eventual consistency).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pending {
    region: String,
    id: String,
    generation: u64,
}

/// The EC2 provider. Build it once per command with [`AwsProvider::new`];
/// `E` is the AWS API, the SDK except in unit tests.
#[derive(Debug)]
pub struct AwsProvider<E: Ec2Api = SdkEc2> {
    /// A client in the home region, for regions outside `regions`.
    home: E,
    regions: Vec<RegionTarget<E>>,
    settings: Settings,
    credentials_hint: String,
    /// The caller ARN for `respot:created-by`, fetched once by `launch`.
    caller: tokio::sync::OnceCell<String>,
    waits: Waits,
    /// Pools that answered "no capacity", until `heal` takes them.
    no_capacity: std::sync::Mutex<Vec<super::PoolKey>>,
    /// What each pool answered the launches, until `create` reports it.
    answers: std::sync::Mutex<Vec<super::PoolAnswer>>,
    /// S3 for bundles, in the home region (absent in unit tests).
    bundles: Option<bundle::SdkBundleStore>,
    /// SSM, for the versions of secrets (absent in unit tests).
    ssm: Option<secrets::SsmVersions>,
    /// Launched and not yet delivered; see [`Pending`].
    pending: std::sync::Mutex<Vec<Pending>>,
    /// The image resolved per region, so that what `plan` and `create`
    /// show is what launches.
    images: std::sync::Mutex<std::collections::BTreeMap<String, image::LaunchImage>>,
}

impl AwsProvider {
    /// Loads credentials and builds one client per region; see `connect`.
    /// `list` and `destroy` pay no extra round trip: the caller ARN is
    /// fetched by `launch` alongside its first EC2 calls.
    pub async fn new(config: &Config, options: &AwsOptions) -> Result<AwsProvider> {
        let configured: Vec<String> = config.aws.regions.iter().map(|r| r.name.clone()).collect();
        let connection = connect::connect(&configured, options).await?;
        let bundles = bundle::SdkBundleStore::new(&connection.sdk, connection.home.region());
        let mut provider = AwsProvider::with_api(
            connection.home,
            &connection.regions,
            Settings::from_config(config),
            connection.credentials_hint,
        );
        provider.bundles = Some(bundles);
        provider.ssm = Some(secrets::SsmVersions::new(&connection.sdk));
        Ok(provider)
    }

    /// The loaded AWS configuration, for other clients (the ALB door).
    pub fn sdk_config(&self) -> &aws_config::SdkConfig {
        self.home.sdk_config()
    }
}

impl<E: Ec2Api> AwsProvider<E> {
    /// The regions this provider covers (configured, or every enabled
    /// one with `--all-regions`).
    pub fn region_names(&self) -> Vec<String> {
        self.regions.iter().map(|r| r.name.clone()).collect()
    }

    fn with_api(home: E, regions: &[String], settings: Settings, credentials_hint: String) -> Self {
        let regions = regions
            .iter()
            .map(|name| {
                let section = settings.regions.iter().find(|r| &r.name == name);
                RegionTarget {
                    name: name.clone(),
                    count: section.map_or(0, |r| r.count),
                    zones: section.map(|r| r.zones.clone()).unwrap_or_default(),
                    instance_types: section
                        .and_then(|r| r.instance_types.clone())
                        .unwrap_or_else(|| settings.instance_types.clone()),
                    ec2: home.in_region(name),
                    avoid: Vec::new(),
                }
            })
            .collect();
        AwsProvider {
            home,
            regions,
            settings,
            credentials_hint,
            caller: tokio::sync::OnceCell::new(),
            waits: Waits::AWS,
            no_capacity: std::sync::Mutex::new(Vec::new()),
            answers: std::sync::Mutex::new(Vec::new()),
            bundles: None,
            ssm: None,
            pending: std::sync::Mutex::new(Vec::new()),
            images: std::sync::Mutex::default(),
        }
    }

    /// The target for `region`: a configured one, or a client for a region
    /// outside the configuration (instances found by `--all-regions`).
    fn target(&self, region: &str) -> RegionTarget<E> {
        match self.regions.iter().find(|r| r.name == region) {
            Some(target) => target.clone(),
            None => RegionTarget {
                name: region.to_string(),
                count: 0,
                zones: Vec::new(),
                instance_types: self.settings.instance_types.clone(),
                ec2: self.home.in_region(region),
                avoid: Vec::new(),
            },
        }
    }

    fn api_error(&self, region: &str, err: &ec2::Ec2Error) -> ProviderError {
        errors::api_error(region, err, &self.credentials_hint)
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Vec<Pending>> {
        // A panic while holding the lock leaves a valid list behind.
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Runs `work` for every region, at most `MAX_REGIONS` at once, and returns
/// every result in region order: one bad region must not hide the others.
async fn per_region<'a, E, T, F, Fut>(
    regions: impl IntoIterator<Item = RegionTarget<E>>,
    work: F,
) -> Vec<(String, T)>
where
    F: Fn(RegionTarget<E>) -> Fut,
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

/// The successes of every region, or, when any region failed, one error
/// naming every failed region.
fn gather<T>(action: &'static str, results: Vec<(String, Result<T>)>) -> Result<Vec<T>> {
    let total = results.len();
    let mut done = Vec::new();
    let mut failures = Vec::new();
    for (region, result) in results {
        match result {
            Ok(value) => done.push(value),
            Err(error) => failures.push(RegionFailure { region, error }),
        }
    }
    if failures.is_empty() {
        Ok(done)
    } else {
        Err(ProviderError::Regions {
            action,
            total,
            failures,
        })
    }
}

impl<E: Ec2Api> Provider for AwsProvider<E> {
    async fn list(&self, deployment: &str) -> Result<Vec<Instance>> {
        let results = per_region(self.regions.clone(), |target| async move {
            self.list_region(&target, deployment, &[]).await
        })
        .await;
        match gather("list", results) {
            Ok(lists) => Ok(lists.into_iter().flatten().collect()),
            Err(err) => Err(self.explain_rejection(err).await),
        }
    }

    async fn launch(&self, request: &LaunchRequest) -> Result<Vec<Instance>> {
        match self.launch_all(request).await {
            Ok(instances) => Ok(instances),
            Err(err) => Err(self.explain_rejection(err).await),
        }
    }

    async fn destroy(&self, deployment: &str, instances: &[Instance], wait: bool) -> Result<DestroyReport> {
        self.destroy_scoped(deployment, instances, wait, Scope::Instances)
            .await
    }

    async fn destroy_deployment(
        &self,
        deployment: &str,
        instances: &[Instance],
        wait: bool,
    ) -> Result<DestroyReport> {
        self.destroy_scoped(deployment, instances, wait, Scope::Deployment)
            .await
    }

    async fn stage_bundle(
        &self,
        deployment: &str,
        digest: &crate::template::Digest,
        bundle: &crate::template::Bundle,
    ) -> Result<crate::template::BundleSource> {
        self.stage_in_s3(deployment, digest, bundle).await
    }

    async fn capacity_plan(&self) -> Result<Vec<PlannedRegion>> {
        Ok(self.plan_regions().await)
    }

    fn wanted(&self) -> Vec<super::RegionCount> {
        self.wanted_counts()
    }

    async fn launch_more(
        &self,
        request: &LaunchRequest,
        counts: &[super::RegionCount],
        avoid: &[super::PoolKey],
    ) -> Result<Vec<Instance>> {
        let launched = self.launch_counts(request, counts, avoid).await?;
        // Delivered: the caller holds these now, so a later destroy of one
        // instance of this generation must not take them as pending.
        self.pending()
            .retain(|p| !launched.iter().any(|i| i.id.0 == p.id));
        Ok(launched)
    }

    async fn interruption_notices(&self, deployment: &str) -> Result<Vec<super::InstanceId>> {
        self.marked_for_termination(deployment).await
    }

    fn take_pools_without_capacity(&self) -> Vec<super::PoolKey> {
        self.drain_no_capacity()
    }

    async fn inventory(&self) -> Result<super::Inventory> {
        self.tagged_inventory().await
    }

    fn take_pool_answers(&self) -> Vec<super::PoolAnswer> {
        self.drain_answers()
    }
}
