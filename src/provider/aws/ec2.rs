//! The seam between respot and AWS: [`Ec2Api`] has one method per call
//! respot makes, speaking respot's plain types, and [`SdkEc2`] implements it
//! with the AWS SDK.
//!
//! This module owns the SDK clients, their retry policy and the translation
//! of SDK errors into [`Ec2Error`] (code, message, throttling). It decides
//! nothing: which pool to try, what an error means to the user and when to
//! give up live in `launch`, `destroy` and `errors`, so a scripted fake can
//! stand in for AWS in unit tests. SDK types never leave this module and
//! `convert`.

use std::time::SystemTime;

use aws_config::{Region, SdkConfig};
use aws_sdk_ec2::config::interceptors::InterceptorContext;
use aws_sdk_ec2::config::retry::{ClassifyRetry, RetryAction, RetryConfig};
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::operation::run_instances::RunInstancesError;
use aws_sdk_ec2::types as ec2;

use super::convert;
use super::errors::is_pool_error;
use crate::provider::{InstanceState, Lifecycle};

/// Attempts for throttled or transient calls. The SDK default of 3 gives
/// up too early for fleets that share an account's request budget.
const MIN_ATTEMPTS: u32 = 5;

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

/// One `RunInstances`: `count` instances of one type in one subnet, all or
/// nothing (MinCount = MaxCount).
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchSpec {
    pub image: String,
    pub instance_type: String,
    pub count: u32,
    pub zone: String,
    pub subnet: String,
    pub group_id: String,
    /// Base64 of the packed user-data.
    pub user_data: String,
    /// Makes the SDK's own retries idempotent.
    pub client_token: String,
    pub market: Market,
    /// The spot price cap; ignored on demand.
    pub max_price: Option<f64>,
    /// Applied at creation to the instances, their volumes and, for spot,
    /// the spot requests.
    pub tags: Tags,
}

/// A security group, with the single-port TCP rules respot reads.
#[derive(Debug, Clone, PartialEq)]
pub struct SecurityGroup {
    pub id: String,
    pub tags: Tags,
    pub rules: Vec<IngressRule>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IngressRule {
    pub from_port: Option<i32>,
    pub to_port: Option<i32>,
    pub cidrs: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub id: String,
    pub name: String,
    pub creation_date: String,
    pub architecture: Option<String>,
}

/// A default subnet of the default VPC.
#[derive(Debug, Clone, PartialEq)]
pub struct Subnet {
    pub zone: String,
    pub id: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SpotPrice {
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

    fn from_sdk<E, R>(action: &'static str, err: &SdkError<E, R>) -> Ec2Error
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let kind = match err.code() {
            Some(code) => Ec2ErrorKind::Service {
                code: code.to_string(),
                message: err.message().unwrap_or("no message").to_string(),
            },
            None => match err {
                SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => {
                    Ec2ErrorKind::Unreachable(DisplayErrorContext(err).to_string())
                }
                _ => Ec2ErrorKind::Other(DisplayErrorContext(err).to_string()),
            },
        };
        Ec2Error { action, kind }
    }

    fn missing(action: &'static str, what: &str) -> Ec2Error {
        Ec2Error {
            action,
            kind: Ec2ErrorKind::Other(format!("the answer has no {what}")),
        }
    }
}

pub type Ec2Result<T> = std::result::Result<T, Ec2Error>;

/// Every AWS call respot makes, in one region. Implementations keep the
/// SDK's retries (throttling, transient errors) but never decide anything;
/// callers batch ids (at most 1000 per call).
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

    /// `DescribeSubnets` of the default subnets (one per zone).
    async fn describe_default_subnets(&self) -> Ec2Result<Vec<Subnet>>;

    /// `DescribeSpotPriceHistory` of the current prices of `instance_type`.
    async fn describe_spot_prices(&self, instance_type: &str) -> Ec2Result<Vec<SpotPrice>>;

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

    /// `DescribeSpotInstanceRequests` that are open or active and tagged
    /// for `deployment`.
    async fn describe_spot_requests(&self, deployment: &str) -> Ec2Result<Vec<SpotRequest>>;

    /// `CancelSpotInstanceRequests`.
    async fn cancel_spot_requests(&self, ids: &[String]) -> Ec2Result<()>;
}

/// [`Ec2Api`] over the AWS SDK: one EC2 and one STS client for a region,
/// sharing the loaded configuration.
#[derive(Debug, Clone)]
pub struct SdkEc2 {
    sdk: SdkConfig,
    region: String,
    ec2: aws_sdk_ec2::Client,
    sts: aws_sdk_sts::Client,
}

impl SdkEc2 {
    /// Clients for `region`. Throttling and transient errors get a few more
    /// attempts than the SDK default; capacity errors of `RunInstances` get
    /// none (see [`CapacityIsFinal`]).
    pub fn new(sdk: &SdkConfig, region: &str) -> SdkEc2 {
        let retry = sdk.retry_config().cloned().unwrap_or_else(RetryConfig::standard);
        let retry = if retry.max_attempts() < MIN_ATTEMPTS {
            retry.with_max_attempts(MIN_ATTEMPTS)
        } else {
            retry
        };
        let ec2 = aws_sdk_ec2::config::Builder::from(sdk)
            .region(Region::new(region.to_string()))
            .retry_config(retry)
            .retry_classifier(CapacityIsFinal)
            .build();
        let sts = aws_sdk_sts::config::Builder::from(sdk)
            .region(Region::new(region.to_string()))
            .build();
        SdkEc2 {
            sdk: sdk.clone(),
            region: region.to_string(),
            ec2: aws_sdk_ec2::Client::from_conf(ec2),
            sts: aws_sdk_sts::Client::from_conf(sts),
        }
    }
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
            Some(code) if is_pool_error(code) => RetryAction::RetryForbidden,
            _ => RetryAction::NoActionIndicated,
        }
    }

    fn name(&self) -> &'static str {
        "respot: capacity errors move to the next pool"
    }
}

impl Ec2Api for SdkEc2 {
    fn region(&self) -> &str {
        &self.region
    }

    fn in_region(&self, region: &str) -> SdkEc2 {
        SdkEc2::new(&self.sdk, region)
    }

    async fn caller_arn(&self) -> Ec2Result<String> {
        const ACTION: &str = "GetCallerIdentity";
        let out = self
            .sts
            .get_caller_identity()
            .send()
            .await
            .map_err(|err| Ec2Error::from_sdk(ACTION, &err))?;
        Ok(out.arn().unwrap_or("unknown").to_string())
    }

    async fn describe_regions(&self, all: bool) -> Ec2Result<Vec<String>> {
        let out = self
            .ec2
            .describe_regions()
            .all_regions(all)
            .send()
            .await
            .map_err(|err| Ec2Error::from_sdk("DescribeRegions", &err))?;
        Ok(out
            .regions()
            .iter()
            .filter_map(|r| r.region_name().map(str::to_string))
            .collect())
    }

    async fn describe_instances(&self, deployment: &str, ids: &[String]) -> Ec2Result<Vec<RawInstance>> {
        const ACTION: &str = "DescribeInstances";
        let mut request = self
            .ec2
            .describe_instances()
            .filters(convert::deployment_filter(deployment));
        if ids.is_empty() {
            request = request.max_results(1000);
        } else {
            let values: Vec<&str> = ids.iter().map(String::as_str).collect();
            request = request.filters(convert::filter("instance-id", &values));
        }
        let mut found = Vec::new();
        let mut pages = request.into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|err| Ec2Error::from_sdk(ACTION, &err))?;
            for reservation in page.reservations() {
                found.extend(reservation.instances().iter().filter_map(convert::raw_instance));
            }
        }
        Ok(found)
    }

    async fn run_instances(&self, spec: &LaunchSpec) -> Ec2Result<Vec<String>> {
        let batch = i32::try_from(spec.count).unwrap_or(i32::MAX);
        let mut call = self
            .ec2
            .run_instances()
            .image_id(&spec.image)
            .instance_type(ec2::InstanceType::from(spec.instance_type.as_str()))
            .min_count(batch)
            .max_count(batch)
            .subnet_id(&spec.subnet)
            .security_group_ids(&spec.group_id)
            .user_data(&spec.user_data)
            .instance_initiated_shutdown_behavior(ec2::ShutdownBehavior::Terminate)
            .client_token(&spec.client_token)
            .set_tag_specifications(Some(convert::launch_tag_specs(spec)));
        if spec.market == Market::Spot {
            call = call.instance_market_options(convert::spot_options(spec.max_price));
        }
        let out = call
            .send()
            .await
            .map_err(|err| Ec2Error::from_sdk("RunInstances", &err))?;
        Ok(out
            .instances()
            .iter()
            .filter_map(|i| i.instance_id().map(str::to_string))
            .collect())
    }

    async fn terminate_instances(&self, ids: &[String]) -> Ec2Result<()> {
        self.ec2
            .terminate_instances()
            .set_instance_ids(Some(ids.to_vec()))
            .send()
            .await
            .map_err(|err| Ec2Error::from_sdk("TerminateInstances", &err))?;
        Ok(())
    }

    async fn describe_images(&self, owner: &str, name_pattern: &str) -> Ec2Result<Vec<Image>> {
        let out = self
            .ec2
            .describe_images()
            .owners(owner)
            .filters(convert::filter("name", &[name_pattern]))
            .filters(convert::filter("state", &["available"]))
            .send()
            .await
            .map_err(|err| Ec2Error::from_sdk("DescribeImages", &err))?;
        Ok(out.images().iter().filter_map(convert::image).collect())
    }

    async fn describe_default_subnets(&self) -> Ec2Result<Vec<Subnet>> {
        let out = self
            .ec2
            .describe_subnets()
            .filters(convert::filter("default-for-az", &["true"]))
            .send()
            .await
            .map_err(|err| Ec2Error::from_sdk("DescribeSubnets", &err))?;
        Ok(out
            .subnets()
            .iter()
            .filter_map(|s| {
                Some(Subnet {
                    zone: s.availability_zone()?.to_string(),
                    id: s.subnet_id()?.to_string(),
                })
            })
            .collect())
    }

    async fn describe_spot_prices(&self, instance_type: &str) -> Ec2Result<Vec<SpotPrice>> {
        let out = self
            .ec2
            .describe_spot_price_history()
            .instance_types(ec2::InstanceType::from(instance_type))
            .start_time(aws_sdk_ec2::primitives::DateTime::from(SystemTime::now()))
            .max_results(100)
            .send()
            .await
            .map_err(|err| Ec2Error::from_sdk("DescribeSpotPriceHistory", &err))?;
        Ok(out.spot_price_history().iter().map(convert::spot_price).collect())
    }

    async fn create_security_group(&self, name: &str, description: &str, tags: &Tags) -> Ec2Result<String> {
        const ACTION: &str = "CreateSecurityGroup";
        let out = self
            .ec2
            .create_security_group()
            .group_name(name)
            .description(description)
            .tag_specifications(convert::tag_spec(ec2::ResourceType::SecurityGroup, tags))
            .send()
            .await
            .map_err(|err| Ec2Error::from_sdk(ACTION, &err))?;
        out.group_id()
            .map(str::to_string)
            .ok_or_else(|| Ec2Error::missing(ACTION, "group id"))
    }

    async fn describe_security_groups(
        &self,
        name: &str,
        deployment: Option<&str>,
    ) -> Ec2Result<Vec<SecurityGroup>> {
        let mut call = self
            .ec2
            .describe_security_groups()
            .filters(convert::filter("group-name", &[name]));
        if let Some(deployment) = deployment {
            call = call.filters(convert::deployment_filter(deployment));
        }
        let out = call
            .send()
            .await
            .map_err(|err| Ec2Error::from_sdk("DescribeSecurityGroups", &err))?;
        Ok(out
            .security_groups()
            .iter()
            .filter_map(convert::security_group)
            .collect())
    }

    async fn authorize_ingress(&self, group_id: &str, ports: &[u16], cidr: &str) -> Ec2Result<()> {
        self.ec2
            .authorize_security_group_ingress()
            .group_id(group_id)
            .set_ip_permissions(Some(convert::tcp_permissions(ports, cidr)))
            .send()
            .await
            .map_err(|err| Ec2Error::from_sdk("AuthorizeSecurityGroupIngress", &err))?;
        Ok(())
    }

    async fn delete_security_group(&self, group_id: &str) -> Ec2Result<()> {
        self.ec2
            .delete_security_group()
            .group_id(group_id)
            .send()
            .await
            .map_err(|err| Ec2Error::from_sdk("DeleteSecurityGroup", &err))?;
        Ok(())
    }

    async fn describe_spot_requests(&self, deployment: &str) -> Ec2Result<Vec<SpotRequest>> {
        let out = self
            .ec2
            .describe_spot_instance_requests()
            .filters(convert::deployment_filter(deployment))
            .filters(convert::filter("state", &["open", "active"]))
            .send()
            .await
            .map_err(|err| Ec2Error::from_sdk("DescribeSpotInstanceRequests", &err))?;
        Ok(out
            .spot_instance_requests()
            .iter()
            .filter_map(|r| {
                Some(SpotRequest {
                    id: r.spot_instance_request_id()?.to_string(),
                    tags: convert::tags(r.tags()),
                })
            })
            .collect())
    }

    async fn cancel_spot_requests(&self, ids: &[String]) -> Ec2Result<()> {
        self.ec2
            .cancel_spot_instance_requests()
            .set_spot_instance_request_ids(Some(ids.to_vec()))
            .send()
            .await
            .map_err(|err| Ec2Error::from_sdk("CancelSpotInstanceRequests", &err))?;
        Ok(())
    }
}
