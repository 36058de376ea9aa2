//! Where instances run: the `Provider` trait and the types it speaks.
//!
//! A provider launches, lists and terminates the instances of one
//! deployment, and nothing else. Tags (AWS) or the state directory (local)
//! are its only state. It knows nothing about verification; the engine hands
//! the instances it returns to `verify`. Provider-specific types (SDK
//! structs, QEMU arguments) never leave their submodule.

pub mod aws;
mod error;
mod fleet;
pub mod local;

use std::fmt;
use std::time::SystemTime;

use serde::Serialize;

use crate::output::Count;
use crate::template::{Bundle, BundleSource, Digest, UserData};

pub use self::error::{ProviderError, RegionFailure};
pub use self::fleet::{Inventory, PoolAnswer, PoolKey, RegionCount, ResourceKind, TaggedResource};

/// Tag keys, the same on AWS and in the local provider's state.
pub mod tag {
    pub const DEPLOYMENT: &str = "respot:deployment";
    pub const DIGEST: &str = "respot:digest";
    pub const VERSION: &str = "respot:version";
    pub const GENERATION: &str = "respot:generation";
    pub const CREATED_AT: &str = "respot:created-at";
    pub const CREATED_BY: &str = "respot:created-by";
    /// The fingerprint of the key that signed the commit (`require_signed`).
    pub const SIGNER: &str = "respot:signer";
    pub const NAME: &str = "Name";
    /// The `[[secrets]]` versions an instance booted with: `name=version`
    /// pairs separated by spaces (SSM: parameter name and version; local:
    /// the file as configured and a fingerprint of its content).
    pub const SECRETS: &str = "respot:secrets";
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct InstanceId(pub String);

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Lifecycle {
    Spot,
    OnDemand,
    /// A local QEMU virtual machine.
    Vm,
}

impl fmt::Display for Lifecycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Lifecycle::Spot => "spot",
            Lifecycle::OnDemand => "on-demand",
            Lifecycle::Vm => "vm",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceState {
    Pending,
    Running,
    Stopping,
    Stopped,
    ShuttingDown,
    Terminated,
    /// A local VM whose process is gone.
    Dead,
}

impl InstanceState {
    /// Live instances count against `create` and are what `destroy` ends.
    pub fn is_live(&self) -> bool {
        !matches!(self, InstanceState::Terminated)
    }

    /// The EC2 state name (plus `dead` for a local VM whose process is gone).
    pub fn as_str(&self) -> &'static str {
        match self {
            InstanceState::Pending => "pending",
            InstanceState::Running => "running",
            InstanceState::Stopping => "stopping",
            InstanceState::Stopped => "stopped",
            InstanceState::ShuttingDown => "shutting-down",
            InstanceState::Terminated => "terminated",
            InstanceState::Dead => "dead",
        }
    }
}

impl fmt::Display for InstanceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where respot's verification reaches an instance's sshd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SshEndpoint {
    pub host: String,
    pub port: u16,
}

impl SshEndpoint {
    /// `HOST:PORT` or `[v6]:PORT`; the host may use only hostname and IP
    /// characters, so it can never be read as an ssh option.
    pub fn parse(text: &str) -> std::result::Result<SshEndpoint, String> {
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| format!("`{text}`: expected HOST:PORT"))?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("`{text}`: `{port}` is not a port number"))?;
        let valid_host = !host.is_empty()
            && !host.starts_with('-')
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'));
        if !valid_host {
            return Err(format!("`{text}`: `{host}` is not a host name or IP address"));
        }
        Ok(SshEndpoint {
            host: host.to_string(),
            port,
        })
    }
}

/// `host:port`, with an IPv6 host in brackets.
impl fmt::Display for SshEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// One managed instance, as read back from the provider.
#[derive(Debug, Clone, Serialize)]
pub struct Instance {
    pub id: InstanceId,
    pub name: String,
    /// AWS region, or `local`.
    pub region: String,
    pub zone: Option<String>,
    pub instance_type: String,
    pub lifecycle: Lifecycle,
    pub state: InstanceState,
    /// Why the provider stopped or terminated it (e.g. a spot interruption).
    pub state_reason: Option<String>,
    pub public_ip: Option<String>,
    /// The address inside the cloud network (AWS: the VPC), when there is one.
    pub private_ip: Option<String>,
    /// The endpoint the provider serves SSH on (AWS: the public address);
    /// `commands::select` falls back to `private_ip` without one.
    pub ssh: Option<SshEndpoint>,
    /// The digest it was launched from; `None` when the tag is missing or
    /// not a digest.
    pub digest: Option<Digest>,
    pub version: Option<String>,
    pub generation: Option<u64>,
    #[serde(serialize_with = "serialize_time")]
    pub launched_at: Option<SystemTime>,
    /// The `[[secrets]]` versions it booted with (the `respot:secrets`
    /// tag: `name=version ...`); `None` without secrets.
    pub secrets: Option<String>,
}

fn serialize_time<S: serde::Serializer>(time: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match time {
        Some(t) => s.serialize_str(&humantime::format_rfc3339_seconds(*t).to_string()),
        None => s.serialize_none(),
    }
}

/// Everything a provider needs to launch one generation.
#[derive(Debug, Clone)]
pub struct LaunchRequest {
    pub deployment: String,
    pub digest: Digest,
    pub version: String,
    pub generation: u64,
    pub user_data: UserData,
    /// The commit's signing key fingerprint, tagged as `respot:signer`.
    pub signer: Option<String>,
    /// A rolling deploy's batches: launch until the generation has this
    /// many instances per region (never more than the configured count);
    /// `None`: the configured count.
    pub upto: Option<u32>,
    /// The blueprint's files, when they travel as a bundle (the local
    /// provider puts it on the seed).
    pub bundle: Option<Bundle>,
}

impl LaunchRequest {
    /// The tags every launched resource carries, `Name` included.
    pub fn tags(&self, name: &str, created_at: SystemTime) -> Vec<(String, String)> {
        let mut tags = vec![
            (tag::DEPLOYMENT.to_string(), self.deployment.clone()),
            (tag::DIGEST.to_string(), self.digest.to_string()),
            (tag::VERSION.to_string(), self.version.clone()),
            (tag::GENERATION.to_string(), self.generation.to_string()),
            (
                tag::CREATED_AT.to_string(),
                humantime::format_rfc3339_seconds(created_at).to_string(),
            ),
            (tag::NAME.to_string(), name.to_string()),
        ];
        if let Some(signer) = &self.signer {
            tags.push((tag::SIGNER.to_string(), signer.clone()));
        }
        tags
    }
}

pub type Result<T, E = ProviderError> = std::result::Result<T, E>;

/// What `destroy` did, for the report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DestroyReport {
    pub terminated: Vec<InstanceId>,
    /// Other resources removed (security groups, spot requests, state dirs).
    pub cleaned: Vec<String>,
    /// What could not be removed; a non-empty list fails the command.
    pub left_behind: Vec<String>,
}

impl DestroyReport {
    /// "terminated 2 instances; removed security group sg-1 (eu-west-1)".
    pub fn summary(&self) -> String {
        let mut text = format!("terminated {}", Count(self.terminated.len(), "instance"));
        if !self.cleaned.is_empty() {
            text.push_str(&format!("; removed {}", self.cleaned.join(", ")));
        }
        text
    }
}

/// What `create` would launch in one region, for `plan`.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedRegion {
    pub region: String,
    pub count: u32,
    /// The first pool tried (`aws.instance_types[0]`, or the VM shape).
    pub instance_type: String,
    pub lifecycle: Lifecycle,
    /// USD per instance-hour right now, when the provider can tell.
    pub price_per_hour: Option<f64>,
    /// Why the price is missing or what qualifies it.
    pub price_note: Option<String>,
}

/// A place instances run. Implementations bound their own concurrency.
#[allow(async_fn_in_trait)]
pub trait Provider {
    /// Managed instances of `deployment`, including recently terminated
    /// ones (so a user sees why a fleet is short). Never anything untagged.
    async fn list(&self, deployment: &str) -> Result<Vec<Instance>>;

    /// Launches one generation and waits until every instance is running
    /// and reachable. Every resource is tagged at creation, so if this
    /// future is dropped halfway, `list` still finds what it launched.
    async fn launch(&self, request: &LaunchRequest) -> Result<Vec<Instance>>;

    /// Terminates `instances`; then, when the deployment has no other live
    /// instance, removes what the provider created for it (security group,
    /// spot requests, state). Idempotent.
    async fn destroy(&self, deployment: &str, instances: &[Instance], wait: bool) -> Result<DestroyReport>;

    /// As [`Provider::destroy`], for the whole deployment (`respot
    /// destroy`): an instance of it that `instances` missed (a listing
    /// behind a launch, on EC2) goes too, rather than being taken for
    /// another generation that still needs the deployment's resources.
    async fn destroy_deployment(
        &self,
        deployment: &str,
        instances: &[Instance],
        wait: bool,
    ) -> Result<DestroyReport> {
        self.destroy(deployment, instances, wait).await
    }

    /// What `launch` would create, per region, with current prices. Only
    /// reads; never creates anything.
    async fn capacity_plan(&self) -> Result<Vec<PlannedRegion>>;

    /// The count each region should run, as configured; `heal` brings a
    /// generation back to it. Regions with none are left out.
    fn wanted(&self) -> Vec<RegionCount>;

    /// Launches `counts` more instances of `request`'s generation (which
    /// already runs), tagged like any launch. Pools in `avoid` are tried
    /// only after every other pool. Waits like `launch`; on error, what
    /// launched is tagged and found by listing.
    async fn launch_more(
        &self,
        request: &LaunchRequest,
        counts: &[RegionCount],
        avoid: &[PoolKey],
    ) -> Result<Vec<Instance>>;

    /// Live instances of `deployment` the provider has announced it will
    /// take back (a spot interruption notice). Only reads.
    async fn interruption_notices(&self, deployment: &str) -> Result<Vec<InstanceId>>;

    /// The pools that answered "no capacity" since the last call.
    fn take_pools_without_capacity(&self) -> Vec<PoolKey>;

    /// Every respot-tagged instance and resource, every deployment, in the
    /// regions this provider covers. Only reads.
    async fn inventory(&self) -> Result<Inventory>;
    /// Puts `bundle` where the instances of the next launch can fetch it,
    /// and says where. By default the launch request carries it to the
    /// instance (`LaunchRequest::bundle`, a file on the seed).
    async fn stage_bundle(&self, deployment: &str, digest: &Digest, bundle: &Bundle) -> Result<BundleSource> {
        let _ = (deployment, digest, bundle);
        Ok(BundleSource::Seed(crate::guest::SEED_BUNDLE_NAME.to_string()))
    }

    /// What each pool answered the launches since the last call: how many
    /// it gave, or its error code. Providers without pools answer none.
    fn take_pool_answers(&self) -> Vec<PoolAnswer> {
        Vec::new()
    }
}

/// The provider a command runs against, picked from `respot.toml` or
/// `--provider`. An enum rather than a trait object: `Provider` has async
/// methods, and the set of providers is closed.
pub enum AnyProvider {
    Local(local::LocalProvider),
    Aws(Box<aws::AwsProvider>),
}

impl Provider for AnyProvider {
    async fn list(&self, deployment: &str) -> Result<Vec<Instance>> {
        match self {
            AnyProvider::Local(p) => p.list(deployment).await,
            AnyProvider::Aws(p) => p.list(deployment).await,
        }
    }

    async fn launch(&self, request: &LaunchRequest) -> Result<Vec<Instance>> {
        match self {
            AnyProvider::Local(p) => p.launch(request).await,
            AnyProvider::Aws(p) => p.launch(request).await,
        }
    }

    async fn capacity_plan(&self) -> Result<Vec<PlannedRegion>> {
        match self {
            AnyProvider::Local(p) => p.capacity_plan().await,
            AnyProvider::Aws(p) => p.capacity_plan().await,
        }
    }

    async fn destroy(&self, deployment: &str, instances: &[Instance], wait: bool) -> Result<DestroyReport> {
        match self {
            AnyProvider::Local(p) => p.destroy(deployment, instances, wait).await,
            AnyProvider::Aws(p) => p.destroy(deployment, instances, wait).await,
        }
    }

    async fn destroy_deployment(
        &self,
        deployment: &str,
        instances: &[Instance],
        wait: bool,
    ) -> Result<DestroyReport> {
        match self {
            AnyProvider::Local(p) => p.destroy_deployment(deployment, instances, wait).await,
            AnyProvider::Aws(p) => p.destroy_deployment(deployment, instances, wait).await,
        }
    }

    fn wanted(&self) -> Vec<RegionCount> {
        match self {
            AnyProvider::Local(p) => p.wanted(),
            AnyProvider::Aws(p) => p.wanted(),
        }
    }

    async fn launch_more(
        &self,
        request: &LaunchRequest,
        counts: &[RegionCount],
        avoid: &[PoolKey],
    ) -> Result<Vec<Instance>> {
        match self {
            AnyProvider::Local(p) => p.launch_more(request, counts, avoid).await,
            AnyProvider::Aws(p) => p.launch_more(request, counts, avoid).await,
        }
    }

    async fn interruption_notices(&self, deployment: &str) -> Result<Vec<InstanceId>> {
        match self {
            AnyProvider::Local(p) => p.interruption_notices(deployment).await,
            AnyProvider::Aws(p) => p.interruption_notices(deployment).await,
        }
    }

    fn take_pools_without_capacity(&self) -> Vec<PoolKey> {
        match self {
            AnyProvider::Local(p) => p.take_pools_without_capacity(),
            AnyProvider::Aws(p) => p.take_pools_without_capacity(),
        }
    }

    async fn inventory(&self) -> Result<Inventory> {
        match self {
            AnyProvider::Local(p) => p.inventory().await,
            AnyProvider::Aws(p) => p.inventory().await,
        }
    }

    async fn stage_bundle(&self, deployment: &str, digest: &Digest, bundle: &Bundle) -> Result<BundleSource> {
        match self {
            AnyProvider::Local(p) => p.stage_bundle(deployment, digest, bundle).await,
            AnyProvider::Aws(p) => p.stage_bundle(deployment, digest, bundle).await,
        }
    }

    fn take_pool_answers(&self) -> Vec<PoolAnswer> {
        match self {
            AnyProvider::Local(p) => p.take_pool_answers(),
            AnyProvider::Aws(p) => p.take_pool_answers(),
        }
    }
}
