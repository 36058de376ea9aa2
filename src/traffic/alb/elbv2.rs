//! The seam between the ALB door and AWS: [`Elbv2Api`] has one method per
//! Elastic Load Balancing v2 call the door makes, in one region, speaking
//! plain types. `sdk` implements it with the AWS SDK; `fake` in unit tests.
//! It decides nothing.

use std::time::Duration;

/// Tags as ELB stores them.
pub type Tags = Vec<(String, String)>;

/// A listener, and where its default action forwards (target group ARN and
/// weight); empty when the default action is not a forward.
#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    pub arn: String,
    pub load_balancer_arn: String,
    pub port: Option<i32>,
    pub forward: Vec<(String, i32)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LoadBalancer {
    pub arn: String,
    pub vpc_id: String,
    pub dns_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TargetGroup {
    pub arn: String,
    pub name: String,
}

/// A target group as `DescribeTargetGroups` lists it, with the load
/// balancers whose listeners or rules use it.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedTargetGroup {
    pub arn: String,
    pub name: String,
    pub load_balancers: Vec<String>,
}

/// What the target group should look like when respot creates it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTargetGroup {
    pub name: String,
    pub vpc_id: String,
    pub port: u16,
    pub health_path: String,
    pub tags: Tags,
}

/// One target's health, as `DescribeTargetHealth` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetHealth {
    pub id: String,
    /// `initial`, `healthy`, `unhealthy`, `unused`, `draining`, `unavailable`.
    pub state: String,
    pub reason: Option<String>,
}

/// A failed call, after the SDK's retries.
#[derive(Debug, Clone, PartialEq)]
pub struct ElbError {
    pub action: &'static str,
    /// AWS's error code, when it answered.
    pub code: Option<String>,
    pub message: String,
}

impl ElbError {
    pub fn service(action: &'static str, code: &str, message: &str) -> ElbError {
        ElbError {
            action,
            code: Some(code.to_string()),
            message: message.to_string(),
        }
    }

    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }
}

impl std::fmt::Display for ElbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.code {
            Some(code) => write!(f, "{} failed: {code}: {}", self.action, self.message),
            None => write!(f, "{} failed: {}", self.action, self.message),
        }
    }
}

pub type ElbResult<T> = std::result::Result<T, ElbError>;

/// Every ELBv2 call the ALB door makes, in one region.
#[allow(async_fn_in_trait)]
pub trait Elbv2Api: Clone {
    fn region(&self) -> &str;

    /// `DescribeListeners` of one ARN.
    async fn describe_listener(&self, arn: &str) -> ElbResult<Listener>;

    /// `DescribeLoadBalancers` of one ARN.
    async fn describe_load_balancer(&self, arn: &str) -> ElbResult<LoadBalancer>;

    /// `DescribeTargetGroups` by name; names that do not exist are left out.
    async fn target_groups_named(&self, names: &[String]) -> ElbResult<Vec<TargetGroup>>;

    /// `DescribeTags` of target groups: (ARN, tags).
    async fn describe_tags(&self, arns: &[String]) -> ElbResult<Vec<(String, Tags)>>;

    /// `CreateTargetGroup` (instance targets, HTTP, tagged at creation): its ARN.
    async fn create_target_group(&self, group: &NewTargetGroup) -> ElbResult<String>;

    /// `AddTags` (overwrites the values of existing keys).
    async fn add_tags(&self, arn: &str, tags: &Tags) -> ElbResult<()>;

    /// `ModifyListener`: the default action forwards by weight.
    async fn forward(&self, listener_arn: &str, weights: &[(String, i32)]) -> ElbResult<()>;

    /// `ModifyListener`: the default action answers a fixed 503.
    async fn answer_503(&self, listener_arn: &str) -> ElbResult<()>;

    /// `RegisterTargets` of instances on `port`.
    async fn register_targets(&self, arn: &str, ids: &[String], port: u16) -> ElbResult<()>;

    /// `DeregisterTargets`.
    async fn deregister_targets(&self, arn: &str, ids: &[String]) -> ElbResult<()>;

    /// `DescribeTargetHealth` of every target of the group.
    async fn target_health(&self, arn: &str) -> ElbResult<Vec<TargetHealth>>;

    /// `DescribeTargetGroupAttributes`: `deregistration_delay.timeout_seconds`.
    async fn deregistration_delay(&self, arn: &str) -> ElbResult<Duration>;

    /// `DeleteTargetGroup`.
    async fn delete_target_group(&self, arn: &str) -> ElbResult<()>;

    /// `DescribeTargetGroups` of every group in the region, every page.
    async fn all_target_groups(&self) -> ElbResult<Vec<ListedTargetGroup>>;

    /// `DescribeListeners` of a load balancer, every page.
    async fn listeners_of(&self, load_balancer_arn: &str) -> ElbResult<Vec<Listener>>;
}
