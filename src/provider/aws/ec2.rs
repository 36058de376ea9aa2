//! The seam between respot and AWS: [`Ec2Api`] has one method per call
//! respot makes, speaking respot's plain types, and [`Ec2Error`] is what a
//! failed call tells (code, message, throttling). `sdk` implements the
//! trait with the AWS SDK; a scripted fake implements it in unit tests.
//!
//! It decides nothing: which pool to try, what an error means to the user
//! and when to give up live in `launch`, `destroy` and `errors`. No SDK type
//! appears here.

use std::time::SystemTime;

use crate::provider::{InstanceState, Lifecycle};

/// AWS's throttling codes (the SDK's `THROTTLING_ERRORS`). The SDK retries
/// them itself; one that reaches respot has outlasted every attempt.
const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "RequestThrottled",
    "SlowDown",
    "EC2ThrottledException",
];

/// The most values EC2 accepts in one filter (`FilterLimitExceeded`).
pub const FILTER_VALUES: usize = 200;

/// The most ids one `TerminateInstances` takes (the API reference:
/// "Up to 1000 instance IDs").
pub const TERMINATE_IDS: usize = 1000;

/// Tags as EC2 stores them, in order.
pub type Tags = Vec<(String, String)>;

/// The value of `key` in `tags`.
pub fn tag_value<'a>(tags: &'a [(String, String)], key: &str) -> Option<&'a str> {
    tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// What respot reads of an EC2 instance, whoever owns it.
#[derive(Debug, Clone, PartialEq)]
pub struct RawInstance {
    pub id: String,
    pub instance_type: String,
    pub zone: Option<String>,
    pub state: InstanceState,
    /// AWS's reason for a stop or termination: `StateReason`'s message or
    /// code, else `StateTransitionReason` (a spot reclaim shows here).
    pub state_reason: Option<String>,
    pub public_ip: Option<String>,
    /// The address inside the VPC.
    pub private_ip: Option<String>,
    pub spot: bool,
    pub launched_at: Option<SystemTime>,
    pub tags: Tags,
}

/// Which market a `RunInstances` buys from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Market {
    Spot,
    OnDemand,
}

impl Market {
    pub fn as_str(self) -> &'static str {
        match self {
            Market::Spot => "spot",
            Market::OnDemand => "on-demand",
        }
    }

    pub fn lifecycle(self) -> Lifecycle {
        match self {
            Market::Spot => Lifecycle::Spot,
            Market::OnDemand => Lifecycle::OnDemand,
        }
    }
}

/// What every instance of one launch is, whichever call makes it: a
/// `RunInstances` of a [`LaunchSpec`], or the launch template of a fleet
/// ([`TemplateSpec`]).
#[derive(Debug, Clone, PartialEq)]
pub struct MachineSpec {
    pub image: String,
    pub group_id: String,
    /// Base64 of the packed user-data.
    pub user_data: String,
    /// Applied at creation to the instances, their volumes and, for spot,
    /// the spot requests (and to a launch template itself).
    pub tags: Tags,
    /// How the instance metadata service answers (`launch` asks for IMDSv2
    /// only, one hop).
    pub metadata: MetadataOptions,
    /// `Some`: the root volume as respot sets it (encrypted, size, type);
    /// `None`: it is as the image says.
    pub root: Option<RootVolume>,
    /// Ask for a public IPv4 address on the primary network interface
    /// (`aws.public_ip`), instead of the subnet's default.
    pub public_ip: bool,
    /// The IAM instance profile (name or ARN), `aws.instance_profile`.
    pub instance_profile: Option<String>,
}

/// One `RunInstances`: up to `count` instances of one type in one subnet
/// (MinCount = 1, MaxCount = `count`): EC2 launches what the pool holds.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchSpec {
    pub machine: MachineSpec,
    pub instance_type: String,
    pub count: u32,
    pub zone: String,
    pub subnet: String,
    /// Makes the SDK's own retries idempotent.
    pub client_token: String,
    pub market: Market,
    /// The spot price cap; ignored on demand.
    pub max_price: Option<f64>,
}

/// The root volume of a launch, on the image's root device, deleted with
/// the instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootVolume {
    /// The image's root device name, e.g. `/dev/xvda`.
    pub device: String,
    /// GiB: `aws.root_volume_gb`, else the image's own size (moto refuses a
    /// mapping with neither a size nor a snapshot).
    pub size_gib: Option<i32>,
    /// With the account's default KMS key (`aws.encrypt_volumes`).
    pub encrypted: bool,
    /// `aws.volume_type` (gp3, gp2, io1, ...); `None` keeps the image's.
    pub volume_type: Option<String>,
}

/// The instance metadata service (IMDS) settings of a launch; the endpoint
/// is always on (cloud-init reads user data through it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetadataOptions {
    /// IMDSv2 only: a read needs a session token from a `PUT` first.
    pub tokens_required: bool,
    /// How many network hops the token's answer may travel.
    pub hop_limit: u8,
}

/// The root volume of a launch, encrypted (with the account's default KMS
/// key) and deleted with the instance. Size and type stay the image's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedRoot {
    /// The image's root device name, e.g. `/dev/xvda`.
    pub device: String,
    /// The image's own root volume size (GiB), repeated as it is: EC2 takes
    /// the size from the image when it is left out, but moto refuses a
    /// mapping with neither a size nor a snapshot.
    pub size_gib: Option<i32>,
}

/// A security group, with its ingress rules.
#[derive(Debug, Clone, PartialEq)]
pub struct SecurityGroup {
    pub id: String,
    pub tags: Tags,
    pub rules: Vec<IngressRule>,
}

/// One ingress permission as EC2 groups it: a protocol and port range,
/// open to every source listed.
#[derive(Debug, Clone, PartialEq)]
pub struct IngressRule {
    /// `tcp`, `udp`, `icmp`, a protocol number, or `-1` for all traffic.
    pub protocol: String,
    pub from_port: Option<i32>,
    pub to_port: Option<i32>,
    /// Everything the rule admits: IPv4 and IPv6 CIDRs, prefix list ids
    /// (`pl-…`) and security group ids (`sg-…`).
    pub sources: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub id: String,
    pub name: String,
    pub creation_date: String,
    pub architecture: Option<String>,
    /// Where the root volume attaches (`/dev/xvda`, `/dev/sda1`); EBS-backed
    /// images have one.
    pub root_device: Option<String>,
    /// The size (GiB) of the root volume in the image's own block device
    /// mapping.
    pub root_volume_size: Option<i32>,
}

/// A default subnet of the default VPC.
#[derive(Debug, Clone, PartialEq)]
pub struct Subnet {
    pub zone: String,
    pub id: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SpotPrice {
    pub instance_type: Option<String>,
    pub zone: Option<String>,
    /// E.g. `Linux/UNIX`.
    pub product: Option<String>,
    pub price: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SpotRequest {
    pub id: String,
    pub tags: Tags,
}

/// A spot request with its state and status: `status` is AWS's status
/// code, e.g. `fulfilled`, or `marked-for-termination` once the two-minute
/// interruption notice is out.
#[derive(Debug, Clone, PartialEq)]
pub struct SpotRequestStatus {
    pub id: String,
    /// `open`, `active`, `closed`, `cancelled` or `failed`.
    pub state: String,
    pub status: Option<String>,
    pub instance_id: Option<String>,
    pub created_at: Option<SystemTime>,
    pub tags: Tags,
}

/// A security group with its name, for the inventory.
#[derive(Debug, Clone, PartialEq)]
pub struct TaggedGroup {
    pub id: String,
    pub name: String,
    pub tags: Tags,
}

/// A failed call, after the SDK's retries.
#[derive(Debug, Clone, PartialEq)]
pub struct Ec2Error {
    /// The API action, e.g. `RunInstances`.
    pub action: &'static str,
    pub kind: Ec2ErrorKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Ec2ErrorKind {
    /// AWS answered with an error code (read with `ProvideErrorMetadata`).
    Service { code: String, message: String },
    /// No answer: the endpoint could not be reached or timed out.
    Unreachable(String),
    /// Anything else: a malformed answer, a request that could not be built.
    Other(String),
}

impl Ec2Error {
    pub fn service(action: &'static str, code: &str, message: &str) -> Ec2Error {
        Ec2Error {
            action,
            kind: Ec2ErrorKind::Service {
                code: code.to_string(),
                message: message.to_string(),
            },
        }
    }

    pub fn code(&self) -> Option<&str> {
        match &self.kind {
            Ec2ErrorKind::Service { code, .. } => Some(code),
            _ => None,
        }
    }

    /// AWS's message, or what the SDK said when AWS did not answer.
    pub fn message(&self) -> &str {
        match &self.kind {
            Ec2ErrorKind::Service { message, .. } => message,
            Ec2ErrorKind::Unreachable(detail) | Ec2ErrorKind::Other(detail) => detail,
        }
    }

    /// AWS throttled the call through every retry the SDK made.
    pub fn is_throttling(&self) -> bool {
        self.code().is_some_and(|c| THROTTLING_CODES.contains(&c))
    }
}

pub type Ec2Result<T> = std::result::Result<T, Ec2Error>;

/// Every AWS call respot makes, in one region. Implementations keep the
/// SDK's retries (throttling, transient errors) and follow every
/// `NextToken`, but never decide anything; callers batch ids (at most
/// [`FILTER_VALUES`] in a filter, [`TERMINATE_IDS`] per termination).
#[allow(async_fn_in_trait)]
pub trait Ec2Api: Clone {
    /// The region this handle calls.
    fn region(&self) -> &str;

    /// The same account and settings, in another region.
    fn in_region(&self, region: &str) -> Self;

    /// STS `GetCallerIdentity`: the caller's ARN. The one call that is not
    /// EC2, here so that one fake covers everything a launch calls.
    async fn caller_arn(&self) -> Ec2Result<String>;

    /// `DescribeRegions`: the enabled regions, or with `all` every region.
    async fn describe_regions(&self, all: bool) -> Ec2Result<Vec<String>>;

    /// `DescribeInstances` (every page) of instances tagged for
    /// `deployment`: all of them, or only `ids` (filtered by the
    /// `instance-id` filter, so ids AWS forgot do not fail the call).
    async fn describe_instances(&self, deployment: &str, ids: &[String]) -> Ec2Result<Vec<RawInstance>>;

    /// `RunInstances`: the ids launched.
    async fn run_instances(&self, spec: &LaunchSpec) -> Ec2Result<Vec<String>>;

    /// `TerminateInstances`.
    async fn terminate_instances(&self, ids: &[String]) -> Ec2Result<()>;

    /// `DescribeImages` of `owner` whose name matches `name_pattern` and
    /// which are available.
    async fn describe_images(&self, owner: &str, name_pattern: &str) -> Ec2Result<Vec<Image>>;

    /// `DescribeImages` of one image id; AWS answers an unknown id with
    /// `InvalidAMIID.NotFound`.
    async fn describe_image(&self, id: &str) -> Ec2Result<Image>;

    /// `DescribeSubnets` of the default subnets (one per zone).
    async fn describe_default_subnets(&self) -> Ec2Result<Vec<Subnet>>;

    /// `DescribeSpotPriceHistory` (every page) of the current prices of
    /// `instance_types`.
    async fn describe_spot_prices(&self, instance_types: &[String]) -> Ec2Result<Vec<SpotPrice>>;

    /// `CreateSecurityGroup` in the default VPC, tagged at creation: its id.
    async fn create_security_group(&self, name: &str, description: &str, tags: &Tags) -> Ec2Result<String>;

    /// `DescribeSecurityGroups` named `name`, and when given, tagged
    /// `respot:deployment=<deployment>`.
    async fn describe_security_groups(
        &self,
        name: &str,
        deployment: Option<&str>,
    ) -> Ec2Result<Vec<SecurityGroup>>;

    /// `AuthorizeSecurityGroupIngress` of TCP `ports` from `cidr`.
    async fn authorize_ingress(&self, group_id: &str, ports: &[u16], cidr: &str) -> Ec2Result<()>;

    /// `DeleteSecurityGroup`.
    async fn delete_security_group(&self, group_id: &str) -> Ec2Result<()>;

    /// `DescribeInstances` (every page) of the instances in security group
    /// `group_id`, whoever owns them: what holds a group that will not delete.
    async fn describe_group_instances(&self, group_id: &str) -> Ec2Result<Vec<RawInstance>>;

    /// `DescribeSpotInstanceRequests` that are open or active and tagged
    /// for `deployment`.
    async fn describe_spot_requests(&self, deployment: &str) -> Ec2Result<Vec<SpotRequest>>;

    /// `CancelSpotInstanceRequests`.
    async fn cancel_spot_requests(&self, ids: &[String]) -> Ec2Result<()>;

    /// `DescribeSpotInstanceRequests` (every page) in any state, tagged for
    /// `deployment`, or carrying any `respot:deployment` tag when `None`.
    async fn describe_spot_request_statuses(
        &self,
        deployment: Option<&str>,
    ) -> Ec2Result<Vec<SpotRequestStatus>>;

    /// `DescribeInstances` (every page) of every instance carrying a
    /// `respot:deployment` tag, whatever its value.
    async fn describe_tagged_instances(&self) -> Ec2Result<Vec<RawInstance>>;

    /// `DescribeSecurityGroups` (every page) of every group carrying a
    /// `respot:deployment` tag.
    async fn describe_tagged_groups(&self) -> Ec2Result<Vec<TaggedGroup>>;
    // Account access (issue 13.5, 13.7): images by public SSM parameter,
    // and which regions the account has enabled.

    /// SSM `GetParameter`: the value of a (public) parameter, or `None`
    /// when it does not exist in this region (`ParameterNotFound`).
    async fn ssm_parameter(&self, name: &str) -> Ec2Result<Option<String>>;

    /// `DescribeRegions` with `AllRegions`: every region and its opt-in
    /// status (`opt-in-not-required`, `opted-in`, `not-opted-in`).
    async fn describe_region_opt_in(&self) -> Ec2Result<Vec<RegionOptIn>>;
    // Allocation by EC2 Fleet (issue 13.3): one instant fleet per region
    // over a launch template made for it and deleted after it.

    /// `CreateLaunchTemplate`, tagged at creation: its id.
    async fn create_launch_template(&self, spec: &TemplateSpec) -> Ec2Result<String>;

    /// `DeleteLaunchTemplate`.
    async fn delete_launch_template(&self, id: &str) -> Ec2Result<()>;

    /// `CreateFleet` of type `instant`: what it launched and its errors.
    async fn create_fleet(&self, spec: &FleetSpec) -> Ec2Result<FleetAnswer>;

    /// `DescribeLaunchTemplates` (every page) tagged for `deployment`:
    /// (id, name) of each, what a run killed mid-launch left.
    async fn describe_launch_templates(&self, deployment: &str) -> Ec2Result<Vec<(String, String)>>;
}

/// What a launch template holds for `CreateFleet` (issue 13.3,
/// `aws.allocation = "price-capacity-optimized"`): everything a
/// `RunInstances` of [`LaunchSpec`] sets except the pool (type, subnet),
/// the market and the count, which the fleet's overrides and options say.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateSpec {
    /// `respot-<deployment>-g<generation>-<run>`, unique per run and region.
    pub name: String,
    pub machine: MachineSpec,
}

/// One pool of a fleet: an instance type in a zone's subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetPool {
    pub instance_type: String,
    pub zone: String,
    pub subnet: String,
}

/// One `CreateFleet` of type `instant`: `count` instances of `market` over
/// `pools`, spot with the price-capacity-optimized strategy.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetSpec {
    pub template_id: String,
    pub pools: Vec<FleetPool>,
    pub count: u32,
    pub market: Market,
    /// The spot price cap, per pool; ignored on demand.
    pub max_price: Option<f64>,
    /// Tags of the fleet and its instances (`TagSpecifications`).
    pub tags: Tags,
    /// Makes the SDK's own retries idempotent.
    pub client_token: String,
}

/// Where a fleet answer says something happened: what its overrides
/// echo (the instance type and the subnet, sometimes the zone); all
/// `None` for an error of the whole fleet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FleetPlace {
    pub instance_type: Option<String>,
    pub subnet: Option<String>,
    pub zone: Option<String>,
}

/// `CreateFleet`'s answer: the instances it launched per pool, and an
/// error per pool that launched fewer (or none).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FleetAnswer {
    pub launched: Vec<(FleetPlace, Vec<String>)>,
    /// (place, code, message)
    pub errors: Vec<(FleetPlace, String, String)>,
}

/// A region and whether the account may use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionOptIn {
    pub name: String,
    /// `None` when AWS (or an emulator) does not say.
    pub status: Option<String>,
}

impl RegionOptIn {
    /// An opt-in region the account has not enabled.
    pub fn is_disabled(&self) -> bool {
        self.status.as_deref() == Some("not-opted-in")
    }
}
