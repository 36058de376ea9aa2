//! What `heal` and `list --all-deployments` ask of a provider beyond one
//! generation's launch: the configured counts, the pools (type × zone) a
//! replacement should avoid, and an inventory of everything respot tagged,
//! every deployment.
//!
//! Plain data; the providers fill it and the engine and commands read it.

use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::{Instance, serialize_time};

/// How many instances one region should run (or gets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegionCount {
    pub region: String,
    pub count: u32,
}

/// One place instances launch: an instance type in a zone of a region.
/// The local provider has one pool, its VM shape, with no zone.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PoolKey {
    pub region: String,
    pub instance_type: String,
    pub zone: Option<String>,
}

impl PoolKey {
    /// The pool `instance` runs in.
    pub fn of(instance: &Instance) -> PoolKey {
        PoolKey {
            region: instance.region.clone(),
            instance_type: instance.instance_type.clone(),
            zone: instance.zone.clone(),
        }
    }
}

/// `t3.small in eu-west-1a`
impl fmt::Display for PoolKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.zone {
            Some(zone) => write!(f, "{} in {zone}", self.instance_type),
            None => write!(f, "{} in {}", self.instance_type, self.region),
        }
    }
}

/// A respot-tagged resource other than an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResourceKind {
    SecurityGroup,
    SpotRequest,
    TargetGroup,
    /// A local VM directory without a record (a launch that died halfway).
    VmDirectory,
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResourceKind::SecurityGroup => "security group",
            ResourceKind::SpotRequest => "spot request",
            ResourceKind::TargetGroup => "target group",
            ResourceKind::VmDirectory => "half-made VM directory",
        })
    }
}

/// One tagged resource, with what it belongs to.
#[derive(Debug, Clone, Serialize)]
pub struct TaggedResource {
    pub kind: ResourceKind,
    pub id: String,
    /// Its name, where it has one (`respot-<deployment>` for a group).
    pub name: Option<String>,
    pub region: String,
    pub deployment: String,
    /// The state the provider reports (a spot request's `open`, `active`…).
    pub state: Option<String>,
    /// The instance it serves, where it names one (a spot request).
    pub instance: Option<String>,
    #[serde(serialize_with = "serialize_time")]
    pub created_at: Option<SystemTime>,
}

/// Everything respot tagged, in the regions a command covers.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Inventory {
    /// (deployment, instance), terminated ones included while listed.
    pub instances: Vec<(String, Instance)>,
    pub resources: Vec<TaggedResource>,
    /// Kinds of resource not looked for, with why (e.g. target groups
    /// without a front door): the output says so instead of implying none.
    pub not_checked: Vec<String>,
}

/// What one pool answered a launch (issue 13.3): the instances it gave,
/// or the error code it answered (capacity, price, a quota...). `create`
/// reports them, so a user sees which pools an allocation chose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolAnswer {
    pub region: String,
    /// `None` for an error of a whole request (a fleet's, not a pool's).
    pub instance_type: Option<String>,
    pub zone: Option<String>,
    pub lifecycle: super::Lifecycle,
    pub launched: u32,
    /// AWS's error code, e.g. `InsufficientInstanceCapacity`.
    pub error: Option<String>,
}

/// `t3.small in eu-west-1a: 3 spot` or `t3a.small in eu-west-1b: InsufficientInstanceCapacity`.
impl fmt::Display for PoolAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.instance_type, &self.zone) {
            (Some(itype), Some(zone)) => write!(f, "{itype} in {zone}")?,
            (Some(itype), None) => write!(f, "{itype} in {}", self.region)?,
            (None, _) => write!(f, "{} {}", self.region, self.lifecycle)?,
        }
        match &self.error {
            Some(code) => write!(f, ": {code}"),
            None => write!(f, ": {} {}", self.launched, self.lifecycle),
        }
    }
}
