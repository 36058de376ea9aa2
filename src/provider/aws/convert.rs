//! Conversions between the SDK's types and respot's: SDK structs into the
//! plain types of `ec2`, and respot's requests into SDK builders.
//!
//! Pure functions of their input; no calls. SDK optionals are never
//! unwrapped: a field EC2 left out becomes `None` or drops the record.
//! It also turns a [`RawInstance`] into a provider [`Instance`], which is
//! where the tag decides what is ours.

use std::time::SystemTime;

use aws_sdk_ec2::types as ec2;

use super::ec2::{
    FleetAnswer, FleetPlace, FleetSpec, Image, IngressRule, LaunchSpec, Market, MetadataOptions, RawInstance,
    RootVolume, SecurityGroup, SpotPrice, Tags, TemplateSpec, tag_value,
};
use crate::provider::{Instance, InstanceId, InstanceState, Lifecycle, SshEndpoint, tag};
use crate::template::Digest;

pub fn filter(name: &str, values: &[&str]) -> ec2::Filter {
    ec2::Filter::builder()
        .name(name)
        .set_values(Some(values.iter().map(|v| v.to_string()).collect()))
        .build()
}

pub fn deployment_filter(deployment: &str) -> ec2::Filter {
    filter(&format!("tag:{}", tag::DEPLOYMENT), &[deployment])
}

pub fn tags(sdk: &[ec2::Tag]) -> Tags {
    sdk.iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
        .collect()
}

pub fn tag_spec(resource: ec2::ResourceType, tags: &Tags) -> ec2::TagSpecification {
    ec2::TagSpecification::builder()
        .resource_type(resource)
        .set_tags(Some(
            tags.iter()
                .map(|(k, v)| ec2::Tag::builder().key(k).value(v).build())
                .collect(),
        ))
        .build()
}

/// Tags for everything one `RunInstances` creates: the instances, their
/// volumes and, for spot, the spot requests.
pub fn launch_tag_specs(spec: &LaunchSpec) -> Vec<ec2::TagSpecification> {
    let mut specs = vec![
        tag_spec(ec2::ResourceType::Instance, &spec.machine.tags),
        tag_spec(ec2::ResourceType::Volume, &spec.machine.tags),
    ];
    if spec.market == Market::Spot {
        specs.push(tag_spec(
            ec2::ResourceType::SpotInstancesRequest,
            &spec.machine.tags,
        ));
    }
    specs
}

/// One-time spot instances that terminate when interrupted.
pub fn spot_options(max_price: Option<f64>) -> ec2::InstanceMarketOptionsRequest {
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

/// The metadata service on, with tokens required or optional.
pub fn metadata_options(options: MetadataOptions) -> ec2::InstanceMetadataOptionsRequest {
    ec2::InstanceMetadataOptionsRequest::builder()
        .http_endpoint(ec2::InstanceMetadataEndpointState::Enabled)
        .http_tokens(if options.tokens_required {
            ec2::HttpTokensState::Required
        } else {
            ec2::HttpTokensState::Optional
        })
        .http_put_response_hop_limit(i32::from(options.hop_limit))
        .build()
}

/// The image's root device as respot sets it, deleted with the instance;
/// what is left out (type, size) stays the image's.
pub fn root_volume(root: &RootVolume) -> ec2::BlockDeviceMapping {
    let mut ebs = ec2::EbsBlockDevice::builder()
        .delete_on_termination(true)
        .set_volume_size(root.size_gib)
        .set_volume_type(root.volume_type.as_deref().map(ec2::VolumeType::from));
    if root.encrypted {
        ebs = ebs.encrypted(true);
    }
    ec2::BlockDeviceMapping::builder()
        .device_name(&root.device)
        .ebs(ebs.build())
        .build()
}

/// The primary network interface in `subnet`, behind `group`, with or
/// without a public IPv4 address, asked for explicitly (not left to the
/// subnet's default).
pub fn primary_interface(
    subnet: &str,
    group: &str,
    public_ip: bool,
) -> ec2::InstanceNetworkInterfaceSpecification {
    ec2::InstanceNetworkInterfaceSpecification::builder()
        .device_index(0)
        .subnet_id(subnet)
        .groups(group)
        .associate_public_ip_address(public_ip)
        .delete_on_termination(true)
        .build()
}

/// An instance profile by ARN (`arn:...`) or by name.
pub fn instance_profile(profile: &str) -> ec2::IamInstanceProfileSpecification {
    let builder = ec2::IamInstanceProfileSpecification::builder();
    if profile.starts_with("arn:") {
        builder.arn(profile).build()
    } else {
        builder.name(profile).build()
    }
}

/// One single-port TCP rule per port, open to `cidr`.
pub fn tcp_permissions(ports: &[u16], cidr: &str) -> Vec<ec2::IpPermission> {
    ports
        .iter()
        .map(|port| {
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
        })
        .collect()
}

fn state(state: Option<&ec2::InstanceState>) -> InstanceState {
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

/// An instance without an id is dropped: nothing could act on it.
pub fn raw_instance(sdk: &ec2::Instance) -> Option<RawInstance> {
    Some(RawInstance {
        id: sdk.instance_id()?.to_string(),
        instance_type: sdk
            .instance_type()
            .map(|t| t.as_str().to_string())
            .unwrap_or_default(),
        zone: sdk
            .placement()
            .and_then(|p| p.availability_zone())
            .map(str::to_string),
        state: state(sdk.state()),
        // AWS keeps the reason for a stop or termination (a spot
        // interruption shows as `Server.SpotInstanceTermination`).
        state_reason: sdk
            .state_reason()
            .and_then(|r| r.message().or(r.code()))
            .or(sdk.state_transition_reason())
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        public_ip: sdk.public_ip_address().map(str::to_string),
        private_ip: sdk.private_ip_address().map(str::to_string),
        spot: sdk.instance_lifecycle() == Some(&ec2::InstanceLifecycleType::Spot),
        launched_at: sdk.launch_time().and_then(|t| SystemTime::try_from(*t).ok()),
        tags: tags(sdk.tags()),
    })
}

pub fn image(sdk: &ec2::Image) -> Option<Image> {
    let root_device = sdk.root_device_name();
    let root_volume_size = sdk
        .block_device_mappings()
        .iter()
        .find(|m| root_device.is_some() && m.device_name() == root_device)
        .and_then(|m| m.ebs())
        .and_then(|ebs| ebs.volume_size());
    Some(Image {
        id: sdk.image_id()?.to_string(),
        name: sdk.name().unwrap_or_default().to_string(),
        creation_date: sdk.creation_date().unwrap_or_default().to_string(),
        architecture: sdk.architecture().map(|a| a.as_str().to_string()),
        root_device: root_device.map(str::to_string),
        root_volume_size,
    })
}

pub fn spot_price(sdk: &ec2::SpotPrice) -> SpotPrice {
    SpotPrice {
        instance_type: sdk.instance_type().map(|t| t.as_str().to_string()),
        zone: sdk.availability_zone().map(str::to_string),
        product: sdk.product_description().map(|d| d.as_str().to_string()),
        price: sdk.spot_price().map(str::to_string),
    }
}

pub fn security_group(sdk: &ec2::SecurityGroup) -> Option<SecurityGroup> {
    Some(SecurityGroup {
        id: sdk.group_id()?.to_string(),
        tags: tags(sdk.tags()),
        rules: sdk
            .ip_permissions()
            .iter()
            .map(|p| IngressRule {
                protocol: p.ip_protocol().unwrap_or("-1").to_string(),
                from_port: p.from_port(),
                to_port: p.to_port(),
                sources: p
                    .ip_ranges()
                    .iter()
                    .filter_map(|r| r.cidr_ip())
                    .chain(p.ipv6_ranges().iter().filter_map(|r| r.cidr_ipv6()))
                    .chain(p.prefix_list_ids().iter().filter_map(|r| r.prefix_list_id()))
                    .chain(p.user_id_group_pairs().iter().filter_map(|r| r.group_id()))
                    .map(str::to_string)
                    .collect(),
            })
            .collect(),
    })
}

/// Ours when, and only when, it carries `respot:deployment=<deployment>`.
pub fn instance(region: &str, deployment: &str, raw: &RawInstance) -> Option<Instance> {
    if tag_value(&raw.tags, tag::DEPLOYMENT) != Some(deployment) {
        return None;
    }
    let state_reason = match raw.state {
        InstanceState::Running | InstanceState::Pending => None,
        _ => raw.state_reason.clone(),
    };
    let ssh = match (&raw.state, &raw.public_ip) {
        (InstanceState::Running, Some(ip)) => Some(SshEndpoint {
            host: ip.clone(),
            port: 22,
        }),
        _ => None,
    };
    Some(Instance {
        id: InstanceId(raw.id.clone()),
        name: tag_value(&raw.tags, tag::NAME).unwrap_or(&raw.id).to_string(),
        region: region.to_string(),
        zone: raw.zone.clone(),
        instance_type: raw.instance_type.clone(),
        lifecycle: if raw.spot {
            Lifecycle::Spot
        } else {
            Lifecycle::OnDemand
        },
        state: raw.state.clone(),
        state_reason,
        public_ip: raw.public_ip.clone(),
        private_ip: raw.private_ip.clone(),
        ssh,
        digest: tag_value(&raw.tags, tag::DIGEST).and_then(Digest::parse),
        version: tag_value(&raw.tags, tag::VERSION).map(str::to_string),
        generation: tag_value(&raw.tags, tag::GENERATION).and_then(|g| g.parse().ok()),
        launched_at: raw.launched_at,
        secrets: tag_value(&raw.tags, tag::SECRETS).map(str::to_string),
    })
}

/// The launch template of a fleet: what [`TemplateSpec`] says, as a
/// `RunInstances` of the ordered walk would set it (the same interface,
/// metadata, root volume, profile and tags at creation).
pub fn template_data(spec: &TemplateSpec) -> ec2::RequestLaunchTemplateData {
    let interface = ec2::LaunchTemplateInstanceNetworkInterfaceSpecificationRequest::builder()
        .device_index(0)
        .groups(&spec.machine.group_id)
        .associate_public_ip_address(spec.machine.public_ip)
        .delete_on_termination(true)
        .build();
    let metadata = ec2::LaunchTemplateInstanceMetadataOptionsRequest::builder()
        .http_endpoint(ec2::LaunchTemplateInstanceMetadataEndpointState::Enabled)
        .http_tokens(if spec.machine.metadata.tokens_required {
            ec2::LaunchTemplateHttpTokensState::Required
        } else {
            ec2::LaunchTemplateHttpTokensState::Optional
        })
        .http_put_response_hop_limit(i32::from(spec.machine.metadata.hop_limit))
        .build();
    let tag = |resource| {
        ec2::LaunchTemplateTagSpecificationRequest::builder()
            .resource_type(resource)
            .set_tags(Some(
                spec.machine
                    .tags
                    .iter()
                    .map(|(k, v)| ec2::Tag::builder().key(k).value(v).build())
                    .collect(),
            ))
            .build()
    };
    let mut data = ec2::RequestLaunchTemplateData::builder()
        .image_id(&spec.machine.image)
        .user_data(&spec.machine.user_data)
        .instance_initiated_shutdown_behavior(ec2::ShutdownBehavior::Terminate)
        .network_interfaces(interface)
        .metadata_options(metadata)
        .tag_specifications(tag(ec2::ResourceType::Instance))
        .tag_specifications(tag(ec2::ResourceType::Volume))
        .tag_specifications(tag(ec2::ResourceType::SpotInstancesRequest));
    if let Some(root) = &spec.machine.root {
        let mut ebs = ec2::LaunchTemplateEbsBlockDeviceRequest::builder()
            .delete_on_termination(true)
            .set_volume_size(root.size_gib)
            .set_volume_type(root.volume_type.as_deref().map(ec2::VolumeType::from));
        if root.encrypted {
            ebs = ebs.encrypted(true);
        }
        data = data.block_device_mappings(
            ec2::LaunchTemplateBlockDeviceMappingRequest::builder()
                .device_name(&root.device)
                .ebs(ebs.build())
                .build(),
        );
    }
    if let Some(profile) = &spec.machine.instance_profile {
        let builder = ec2::LaunchTemplateIamInstanceProfileSpecificationRequest::builder();
        data = data.iam_instance_profile(if profile.starts_with("arn:") {
            builder.arn(profile).build()
        } else {
            builder.name(profile).build()
        });
    }
    data.build()
}

/// The fleet's one launch template config: the template, and one override
/// per pool (type × subnet; spot pools with the price cap).
pub fn fleet_config(spec: &FleetSpec) -> ec2::FleetLaunchTemplateConfigRequest {
    let overrides = spec
        .pools
        .iter()
        .map(|pool| {
            ec2::FleetLaunchTemplateOverridesRequest::builder()
                .instance_type(ec2::InstanceType::from(pool.instance_type.as_str()))
                .subnet_id(&pool.subnet)
                .set_max_price(
                    spec.max_price
                        .filter(|_| spec.market == Market::Spot)
                        .map(|p| format!("{p}")),
                )
                .build()
        })
        .collect();
    ec2::FleetLaunchTemplateConfigRequest::builder()
        .launch_template_specification(
            ec2::FleetLaunchTemplateSpecificationRequest::builder()
                .launch_template_id(&spec.template_id)
                .version("$Latest")
                .build(),
        )
        .set_overrides(Some(overrides))
        .build()
}

/// `count` units of `market`, all or what the pools hold (no minimum).
pub fn fleet_target(spec: &FleetSpec) -> ec2::TargetCapacitySpecificationRequest {
    let count = i32::try_from(spec.count).unwrap_or(i32::MAX);
    let builder = ec2::TargetCapacitySpecificationRequest::builder().total_target_capacity(count);
    match spec.market {
        Market::Spot => builder
            .spot_target_capacity(count)
            .default_target_capacity_type(ec2::DefaultTargetCapacityType::Spot),
        Market::OnDemand => builder
            .on_demand_target_capacity(count)
            .default_target_capacity_type(ec2::DefaultTargetCapacityType::OnDemand),
    }
    .build()
}

/// Spot: AWS's price-capacity-optimized strategy. Interrupted instances
/// terminate: EC2's default, left unsaid (an instant fleet's spot
/// instances are one-time).
pub fn fleet_spot_options() -> ec2::SpotOptionsRequest {
    ec2::SpotOptionsRequest::builder()
        .allocation_strategy(ec2::SpotAllocationStrategy::PriceCapacityOptimized)
        .build()
}

/// On demand (`aws.fallback`): the cheapest pools first.
pub fn fleet_on_demand_options() -> ec2::OnDemandOptionsRequest {
    ec2::OnDemandOptionsRequest::builder()
        .allocation_strategy(ec2::FleetOnDemandAllocationStrategy::LowestPrice)
        .build()
}

fn fleet_place(
    overrides: Option<&ec2::FleetLaunchTemplateOverrides>,
    subnet: Option<&str>,
    zone: Option<&str>,
) -> FleetPlace {
    FleetPlace {
        instance_type: overrides
            .and_then(|o| o.instance_type())
            .map(|t| t.as_str().to_string()),
        subnet: subnet
            .or_else(|| overrides.and_then(|o| o.subnet_id()))
            .map(str::to_string),
        zone: zone
            .or_else(|| overrides.and_then(|o| o.availability_zone()))
            .map(str::to_string),
    }
}

/// `CreateFleet`'s answer: instances and errors, each with its pool.
pub fn fleet_answer(instances: &[ec2::CreateFleetInstance], errors: &[ec2::CreateFleetError]) -> FleetAnswer {
    let launched = instances
        .iter()
        .map(|i| {
            let overrides = i.launch_template_and_overrides().and_then(|l| l.overrides());
            let mut place = fleet_place(overrides, i.subnet_id(), i.availability_zone());
            if place.instance_type.is_none() {
                place.instance_type = i.instance_type().map(|t| t.as_str().to_string());
            }
            (place, i.instance_ids().to_vec())
        })
        .collect();
    let errors = errors
        .iter()
        .map(|e| {
            let overrides = e.launch_template_and_overrides().and_then(|l| l.overrides());
            (
                fleet_place(overrides, None, None),
                e.error_code().unwrap_or("Unknown").to_string(),
                e.error_message().unwrap_or_default().to_string(),
            )
        })
        .collect();
    FleetAnswer { launched, errors }
}
