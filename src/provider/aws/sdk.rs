//! [`Ec2Api`] over the AWS SDK: the clients, their retry policy, and the
//! translation of SDK answers and errors into respot's types. With
//! `convert`, the only place SDK types appear.

use std::time::SystemTime;

use aws_config::{Region, SdkConfig};
use aws_sdk_ec2::config::interceptors::InterceptorContext;
use aws_sdk_ec2::config::retry::{ClassifyRetry, RetryAction, RetryConfig};
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::operation::run_instances::RunInstancesError;
use aws_sdk_ec2::types as ec2;

use super::convert;
use super::ec2::{
    Ec2Api, Ec2Error, Ec2ErrorKind, Ec2Result, FleetAnswer, FleetSpec, Image, LaunchSpec, Market,
    RawInstance, RegionOptIn, SecurityGroup, SpotPrice, SpotRequest, SpotRequestStatus, Subnet, TaggedGroup,
    Tags, TemplateSpec,
};
use super::errors::is_pool_error;
use crate::provider::tag;

/// Attempts for throttled or transient calls. The SDK default of 3 gives
/// up too early for fleets that share an account's request budget.
const MIN_ATTEMPTS: u32 = 5;

/// [`Ec2Api`] over the AWS SDK: one EC2 and one STS client for a region,
/// sharing the loaded configuration.
#[derive(Debug, Clone)]
pub struct SdkEc2 {
    sdk: SdkConfig,
    region: String,
    ec2: aws_sdk_ec2::Client,
    sts: aws_sdk_sts::Client,
    ssm: aws_sdk_ssm::Client,
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
        let ssm = aws_sdk_ssm::config::Builder::from(sdk)
            .region(Region::new(region.to_string()))
            .build();
        SdkEc2 {
            sdk: sdk.clone(),
            region: region.to_string(),
            ec2: aws_sdk_ec2::Client::from_conf(ec2),
            sts: aws_sdk_sts::Client::from_conf(sts),
            ssm: aws_sdk_ssm::Client::from_conf(ssm),
        }
    }
}

impl SdkEc2 {
    /// The loaded configuration (credentials, endpoint, retries), for the
    /// other AWS clients a command needs (the ALB front door).
    pub fn sdk_config(&self) -> &SdkConfig {
        &self.sdk
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
            .map_err(|err| from_sdk(ACTION, &err))?;
        Ok(out.arn().unwrap_or("unknown").to_string())
    }

    async fn describe_regions(&self, all: bool) -> Ec2Result<Vec<String>> {
        let out = self
            .ec2
            .describe_regions()
            .all_regions(all)
            .send()
            .await
            .map_err(|err| from_sdk("DescribeRegions", &err))?;
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
            let page = page.map_err(|err| from_sdk(ACTION, &err))?;
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
            .image_id(&spec.machine.image)
            .instance_type(ec2::InstanceType::from(spec.instance_type.as_str()))
            .min_count(1)
            .max_count(batch)
            .user_data(&spec.machine.user_data)
            .instance_initiated_shutdown_behavior(ec2::ShutdownBehavior::Terminate)
            .client_token(&spec.client_token)
            .set_tag_specifications(Some(convert::launch_tag_specs(spec)))
            .metadata_options(convert::metadata_options(spec.machine.metadata));
        // The primary interface says whether to have a public address, so
        // the subnet's default (`MapPublicIpOnLaunch`) does not decide it.
        call = call.network_interfaces(convert::primary_interface(
            &spec.subnet,
            &spec.machine.group_id,
            spec.machine.public_ip,
        ));
        if let Some(root) = &spec.machine.root {
            call = call.block_device_mappings(convert::root_volume(root));
        }
        if let Some(profile) = &spec.machine.instance_profile {
            call = call.iam_instance_profile(convert::instance_profile(profile));
        }
        if spec.market == Market::Spot {
            call = call.instance_market_options(convert::spot_options(spec.max_price));
        }
        let out = call.send().await.map_err(|err| from_sdk("RunInstances", &err))?;
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
            .map_err(|err| from_sdk("TerminateInstances", &err))?;
        Ok(())
    }

    async fn describe_images(&self, owner: &str, name_pattern: &str) -> Ec2Result<Vec<Image>> {
        const ACTION: &str = "DescribeImages";
        let mut pages = self
            .ec2
            .describe_images()
            .owners(owner)
            .filters(convert::filter("name", &[name_pattern]))
            .filters(convert::filter("state", &["available"]))
            .into_paginator()
            .send();
        let mut found = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|err| from_sdk(ACTION, &err))?;
            found.extend(page.images().iter().filter_map(convert::image));
        }
        Ok(found)
    }

    async fn describe_image(&self, id: &str) -> Ec2Result<Image> {
        const ACTION: &str = "DescribeImages";
        let out = self
            .ec2
            .describe_images()
            .image_ids(id)
            .send()
            .await
            .map_err(|err| from_sdk(ACTION, &err))?;
        out.images()
            .iter()
            .find_map(convert::image)
            .ok_or_else(|| missing(ACTION, "image"))
    }

    async fn describe_default_subnets(&self) -> Ec2Result<Vec<Subnet>> {
        const ACTION: &str = "DescribeSubnets";
        let mut pages = self
            .ec2
            .describe_subnets()
            .filters(convert::filter("default-for-az", &["true"]))
            .into_paginator()
            .send();
        let mut found = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|err| from_sdk(ACTION, &err))?;
            found.extend(page.subnets().iter().filter_map(|s| {
                Some(Subnet {
                    zone: s.availability_zone()?.to_string(),
                    id: s.subnet_id()?.to_string(),
                })
            }));
        }
        Ok(found)
    }

    async fn describe_spot_prices(&self, instance_types: &[String]) -> Ec2Result<Vec<SpotPrice>> {
        const ACTION: &str = "DescribeSpotPriceHistory";
        let mut pages = self
            .ec2
            .describe_spot_price_history()
            .set_instance_types(Some(
                instance_types
                    .iter()
                    .map(|t| ec2::InstanceType::from(t.as_str()))
                    .collect(),
            ))
            .start_time(aws_sdk_ec2::primitives::DateTime::from(SystemTime::now()))
            .max_results(1000)
            .into_paginator()
            .send();
        let mut found = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|err| from_sdk(ACTION, &err))?;
            found.extend(page.spot_price_history().iter().map(convert::spot_price));
        }
        Ok(found)
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
            .map_err(|err| from_sdk(ACTION, &err))?;
        out.group_id()
            .map(str::to_string)
            .ok_or_else(|| missing(ACTION, "group id"))
    }

    async fn describe_security_groups(
        &self,
        name: &str,
        deployment: Option<&str>,
    ) -> Ec2Result<Vec<SecurityGroup>> {
        const ACTION: &str = "DescribeSecurityGroups";
        let mut call = self
            .ec2
            .describe_security_groups()
            .filters(convert::filter("group-name", &[name]));
        if let Some(deployment) = deployment {
            call = call.filters(convert::deployment_filter(deployment));
        }
        let mut pages = call.into_paginator().send();
        let mut found = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|err| from_sdk(ACTION, &err))?;
            found.extend(page.security_groups().iter().filter_map(convert::security_group));
        }
        Ok(found)
    }

    async fn authorize_ingress(&self, group_id: &str, ports: &[u16], cidr: &str) -> Ec2Result<()> {
        self.ec2
            .authorize_security_group_ingress()
            .group_id(group_id)
            .set_ip_permissions(Some(convert::tcp_permissions(ports, cidr)))
            .send()
            .await
            .map_err(|err| from_sdk("AuthorizeSecurityGroupIngress", &err))?;
        Ok(())
    }

    async fn delete_security_group(&self, group_id: &str) -> Ec2Result<()> {
        self.ec2
            .delete_security_group()
            .group_id(group_id)
            .send()
            .await
            .map_err(|err| from_sdk("DeleteSecurityGroup", &err))?;
        Ok(())
    }

    async fn describe_group_instances(&self, group_id: &str) -> Ec2Result<Vec<RawInstance>> {
        const ACTION: &str = "DescribeInstances";
        let mut pages = self
            .ec2
            .describe_instances()
            .filters(convert::filter("instance.group-id", &[group_id]))
            .max_results(1000)
            .into_paginator()
            .send();
        let mut found = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|err| from_sdk(ACTION, &err))?;
            for reservation in page.reservations() {
                found.extend(reservation.instances().iter().filter_map(convert::raw_instance));
            }
        }
        Ok(found)
    }

    async fn describe_spot_requests(&self, deployment: &str) -> Ec2Result<Vec<SpotRequest>> {
        const ACTION: &str = "DescribeSpotInstanceRequests";
        let mut pages = self
            .ec2
            .describe_spot_instance_requests()
            .filters(convert::deployment_filter(deployment))
            .filters(convert::filter("state", &["open", "active"]))
            .into_paginator()
            .send();
        let mut found = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|err| from_sdk(ACTION, &err))?;
            found.extend(page.spot_instance_requests().iter().filter_map(|r| {
                Some(SpotRequest {
                    id: r.spot_instance_request_id()?.to_string(),
                    tags: convert::tags(r.tags()),
                })
            }));
        }
        Ok(found)
    }

    async fn cancel_spot_requests(&self, ids: &[String]) -> Ec2Result<()> {
        self.ec2
            .cancel_spot_instance_requests()
            .set_spot_instance_request_ids(Some(ids.to_vec()))
            .send()
            .await
            .map_err(|err| from_sdk("CancelSpotInstanceRequests", &err))?;
        Ok(())
    }

    async fn describe_spot_request_statuses(
        &self,
        deployment: Option<&str>,
    ) -> Ec2Result<Vec<SpotRequestStatus>> {
        const ACTION: &str = "DescribeSpotInstanceRequests";
        let filter = match deployment {
            Some(deployment) => convert::deployment_filter(deployment),
            None => convert::filter("tag-key", &[tag::DEPLOYMENT]),
        };
        let mut pages = self
            .ec2
            .describe_spot_instance_requests()
            .filters(filter)
            .into_paginator()
            .send();
        let mut found = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|err| from_sdk(ACTION, &err))?;
            found.extend(page.spot_instance_requests().iter().filter_map(|r| {
                Some(SpotRequestStatus {
                    id: r.spot_instance_request_id()?.to_string(),
                    state: r.state().map(|s| s.as_str().to_string()).unwrap_or_default(),
                    status: r.status().and_then(|s| s.code()).map(str::to_string),
                    instance_id: r.instance_id().map(str::to_string),
                    created_at: r.create_time().and_then(|t| SystemTime::try_from(*t).ok()),
                    tags: convert::tags(r.tags()),
                })
            }));
        }
        Ok(found)
    }

    async fn describe_tagged_instances(&self) -> Ec2Result<Vec<RawInstance>> {
        const ACTION: &str = "DescribeInstances";
        let mut pages = self
            .ec2
            .describe_instances()
            .filters(convert::filter("tag-key", &[tag::DEPLOYMENT]))
            .max_results(1000)
            .into_paginator()
            .send();
        let mut found = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|err| from_sdk(ACTION, &err))?;
            for reservation in page.reservations() {
                found.extend(reservation.instances().iter().filter_map(convert::raw_instance));
            }
        }
        Ok(found)
    }

    async fn describe_tagged_groups(&self) -> Ec2Result<Vec<TaggedGroup>> {
        const ACTION: &str = "DescribeSecurityGroups";
        let mut pages = self
            .ec2
            .describe_security_groups()
            .filters(convert::filter("tag-key", &[tag::DEPLOYMENT]))
            .into_paginator()
            .send();
        let mut found = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|err| from_sdk(ACTION, &err))?;
            found.extend(page.security_groups().iter().filter_map(|g| {
                Some(TaggedGroup {
                    id: g.group_id()?.to_string(),
                    name: g.group_name().unwrap_or_default().to_string(),
                    tags: convert::tags(g.tags()),
                })
            }));
        }
        Ok(found)
    }

    async fn ssm_parameter(&self, name: &str) -> Ec2Result<Option<String>> {
        const ACTION: &str = "GetParameter";
        match self.ssm.get_parameter().name(name).send().await {
            Ok(out) => Ok(out.parameter().and_then(|p| p.value()).map(str::to_string)),
            Err(err) if err.code() == Some("ParameterNotFound") => Ok(None),
            Err(err) => Err(from_sdk(ACTION, &err)),
        }
    }

    async fn create_launch_template(&self, spec: &TemplateSpec) -> Ec2Result<String> {
        self.make_template(spec).await
    }

    async fn delete_launch_template(&self, id: &str) -> Ec2Result<()> {
        self.ec2
            .delete_launch_template()
            .launch_template_id(id)
            .send()
            .await
            .map_err(|err| from_sdk("DeleteLaunchTemplate", &err))?;
        Ok(())
    }

    async fn create_fleet(&self, spec: &FleetSpec) -> Ec2Result<FleetAnswer> {
        self.instant_fleet(spec).await
    }

    async fn describe_launch_templates(&self, deployment: &str) -> Ec2Result<Vec<(String, String)>> {
        const ACTION: &str = "DescribeLaunchTemplates";
        let mut pages = self
            .ec2
            .describe_launch_templates()
            .filters(convert::deployment_filter(deployment))
            .into_paginator()
            .send();
        let mut found = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|err| from_sdk(ACTION, &err))?;
            found.extend(page.launch_templates().iter().filter_map(|t| {
                Some((
                    t.launch_template_id()?.to_string(),
                    t.launch_template_name().unwrap_or_default().to_string(),
                ))
            }));
        }
        Ok(found)
    }

    async fn describe_region_opt_in(&self) -> Ec2Result<Vec<RegionOptIn>> {
        let out = self
            .ec2
            .describe_regions()
            .all_regions(true)
            .send()
            .await
            .map_err(|err| from_sdk("DescribeRegions", &err))?;
        Ok(out
            .regions()
            .iter()
            .filter_map(|r| {
                Some(RegionOptIn {
                    name: r.region_name()?.to_string(),
                    status: r.opt_in_status().map(str::to_string),
                })
            })
            .collect())
    }
}

impl SdkEc2 {
    /// `CreateLaunchTemplate`, the template tagged at creation.
    async fn make_template(&self, spec: &TemplateSpec) -> Ec2Result<String> {
        const ACTION: &str = "CreateLaunchTemplate";
        let out = self
            .ec2
            .create_launch_template()
            .launch_template_name(&spec.name)
            .launch_template_data(convert::template_data(spec))
            .tag_specifications(convert::tag_spec(
                ec2::ResourceType::LaunchTemplate,
                &spec.machine.tags,
            ))
            .send()
            .await
            .map_err(|err| from_sdk(ACTION, &err))?;
        out.launch_template()
            .and_then(|t| t.launch_template_id())
            .map(str::to_string)
            .ok_or_else(|| missing(ACTION, "launch template id"))
    }

    /// `CreateFleet` of type `instant`; the fleet and its instances tagged
    /// at creation.
    async fn instant_fleet(&self, spec: &FleetSpec) -> Ec2Result<FleetAnswer> {
        const ACTION: &str = "CreateFleet";
        let mut call = self
            .ec2
            .create_fleet()
            .r#type(ec2::FleetType::Instant)
            .client_token(&spec.client_token)
            .launch_template_configs(convert::fleet_config(spec))
            .target_capacity_specification(convert::fleet_target(spec))
            .tag_specifications(convert::tag_spec(ec2::ResourceType::Instance, &spec.tags))
            .tag_specifications(convert::tag_spec(ec2::ResourceType::Fleet, &spec.tags));
        call = match spec.market {
            Market::Spot => call.spot_options(convert::fleet_spot_options()),
            Market::OnDemand => call.on_demand_options(convert::fleet_on_demand_options()),
        };
        let out = call.send().await.map_err(|err| from_sdk(ACTION, &err))?;
        Ok(convert::fleet_answer(out.instances(), out.errors()))
    }
}

/// A failed SDK call as respot's error: the AWS code when AWS answered.
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

/// An answer without a field respot needs.
fn missing(action: &'static str, what: &str) -> Ec2Error {
    Ec2Error {
        action,
        kind: Ec2ErrorKind::Other(format!("the answer has no {what}")),
    }
}
