//! A scripted stand-in for AWS, for unit tests of the provider's logic
//! (pools, fallback, quotas, rollback, destroy) without moto.
//!
//! [`FakeEc2`] keeps a small world per region (instances, security groups,
//! spot requests) so that what one call creates the next call sees, and it
//! records every call (and every `LaunchSpec` in full). [`Rule`]s script failures: the next `times` calls of
//! an action (in a region, whose recorded detail contains a text) fail with
//! an EC2 error code. Pools can hold fewer instances than asked for
//! ([`FakeEc2::capacity`]), a group with live instances refuses deletion
//! (`DependencyViolation`), and new instances can stay invisible to a few
//! `DescribeInstances` ([`FakeEc2::hide_launches`]). It never opens a socket.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use super::ec2::{
    Ec2Api, Ec2Error, Ec2Result, FleetAnswer, FleetSpec, Image, IngressRule, LaunchSpec, Market, RawInstance,
    RegionOptIn, SecurityGroup, SpotPrice, SpotRequest, SpotRequestStatus, Subnet, TaggedGroup, Tags,
    TemplateSpec, tag_value,
};
use crate::provider::{InstanceState, tag};

mod fleet;
mod glob;
mod script;
use glob::glob;

/// One call as the fake saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub region: String,
    pub action: &'static str,
    /// What the call asked for, e.g. `t3.small eu-west-1a spot x2` for
    /// `RunInstances`, or the ids for `TerminateInstances`.
    pub detail: String,
}

/// A scripted failure.
#[derive(Debug, Clone)]
pub struct Rule {
    action: &'static str,
    code: String,
    message: String,
    region: Option<String>,
    when: Option<String>,
    /// `None`: every matching call fails.
    times: Option<u32>,
}

impl Rule {
    /// Every call of `action` fails with `code`.
    pub fn fail(action: &'static str, code: &str) -> Rule {
        Rule {
            action,
            code: code.to_string(),
            message: "scripted by the test".to_string(),
            region: None,
            when: None,
            times: None,
        }
    }

    pub fn in_region(mut self, region: &str) -> Rule {
        self.region = Some(region.to_string());
        self
    }

    /// Only calls whose detail contains `text`.
    pub fn when(mut self, text: &str) -> Rule {
        self.when = Some(text.to_string());
        self
    }

    /// AWS's message with the code.
    pub fn message(mut self, message: &str) -> Rule {
        self.message = message.to_string();
        self
    }

    pub fn times(mut self, times: u32) -> Rule {
        self.times = Some(times);
        self
    }

    fn matches(&self, call: &Call) -> bool {
        self.action == call.action
            && self.times != Some(0)
            && self.region.as_ref().is_none_or(|r| *r == call.region)
            && self
                .when
                .as_ref()
                .is_none_or(|w| call.detail.contains(w.as_str()))
    }
}

#[derive(Debug)]
struct Group {
    region: String,
    name: String,
    group: SecurityGroup,
}

#[derive(Debug)]
struct World {
    calls: Vec<Call>,
    /// Every `RunInstances`, scripted failures included: (region, spec).
    launches: Vec<(String, LaunchSpec)>,
    rules: Vec<Rule>,
    instances: Vec<(String, RawInstance)>,
    groups: Vec<Group>,
    /// (region, request, still open)
    spot_requests: Vec<(String, SpotRequest, bool)>,
    /// (spot request, its instance); instances with an interruption notice.
    request_instance: Vec<(String, String)>,
    marked: Vec<String>,
    next_id: u32,
    /// The state (and reason) new instances launch in; `running` by default.
    launch_state: (InstanceState, Option<String>),
    /// Every region AWS has (`DescribeRegions` with `AllRegions`).
    all_regions: Vec<String>,
    images: Vec<(String, Image)>,
    /// (text in a `RunInstances` detail, instances the pool still holds).
    capacity: Vec<(String, u32)>,
    /// (instance, its security group).
    instance_groups: Vec<(String, String)>,
    /// New instances stay out of this many `DescribeInstances` answers.
    hide_for: u32,
    /// (instance, answers it still stays out of).
    hidden: Vec<(String, u32)>,
    /// Public SSM parameters: (region or `*` for every region, name, value).
    parameters: Vec<(String, String, String)>,
    /// Opt-in regions the account has not enabled.
    disabled_regions: Vec<String>,
    /// Launch templates: (region, id, spec); deleted ones leave.
    templates: Vec<(String, String, TemplateSpec)>,
    /// Every `CreateFleet`, scripted failures included: (region, spec).
    fleets: Vec<(String, FleetSpec)>,
    /// (text in a fleet pool's detail, or `*` for the whole fleet, code):
    /// errors `CreateFleet` answers in its `Errors`.
    fleet_errors: Vec<(String, String)>,
}

/// A fake AWS account, seen from one region. Clones share the world.
#[derive(Debug, Clone)]
pub struct FakeEc2 {
    region: String,
    world: Arc<Mutex<World>>,
}

impl World {
    fn new_id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}-{:04}", self.next_id)
    }

    /// The instances one `DescribeInstances` answer leaves out; each
    /// answer counts down every hidden instance.
    fn answer_hides(&mut self) -> Vec<String> {
        let hidden: Vec<String> = self
            .hidden
            .iter()
            .filter(|(_, left)| *left > 0)
            .map(|(id, _)| id.clone())
            .collect();
        for (_, left) in self.hidden.iter_mut() {
            *left = left.saturating_sub(1);
        }
        hidden
    }

    /// How many of `wanted` the pool of `detail` launches, and the error
    /// when it holds none.
    fn take_capacity(&mut self, detail: &str, wanted: u32) -> Ec2Result<u32> {
        let Some((_, left)) = self
            .capacity
            .iter_mut()
            .find(|(when, _)| detail.contains(when.as_str()))
        else {
            return Ok(wanted);
        };
        if *left == 0 {
            let message = format!("We currently do not have sufficient capacity for {detail}");
            return Err(Ec2Error::service(
                "RunInstances",
                "InsufficientInstanceCapacity",
                &message,
            ));
        }
        let given = wanted.min(*left);
        *left -= given;
        Ok(given)
    }
}

/// Where one fake instance launches.
struct Place<'a> {
    region: &'a str,
    instance_type: &'a str,
    zone: &'a str,
    market: Market,
    public_ip: bool,
    group_id: &'a str,
}

impl World {
    /// One instance (and for spot its request) in `place`, tagged `tags`,
    /// as `RunInstances` or `CreateFleet` makes it: its id.
    fn launch_one(&mut self, place: &Place, tags: &Tags) -> String {
        let id = self.new_id("i");
        let (state, state_reason) = self.launch_state.clone();
        let instance = RawInstance {
            id: id.clone(),
            instance_type: place.instance_type.to_string(),
            zone: Some(place.zone.to_string()),
            state,
            state_reason,
            public_ip: place
                .public_ip
                .then(|| format!("198.51.100.{}", self.next_id % 250)),
            private_ip: Some(format!("172.31.0.{}", self.next_id % 250)),
            spot: place.market == Market::Spot,
            launched_at: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(self.next_id))),
            tags: tags.clone(),
        };
        self.instances.push((place.region.to_string(), instance));
        self.instance_groups
            .push((id.clone(), place.group_id.to_string()));
        if self.hide_for > 0 {
            self.hidden.push((id.clone(), self.hide_for));
        }
        if place.market == Market::Spot {
            let request = SpotRequest {
                id: self.new_id("sir"),
                tags: tags.clone(),
            };
            self.request_instance.push((request.id.clone(), id.clone()));
            self.spot_requests.push((place.region.to_string(), request, true));
        }
        id
    }
}

fn ids_detail(ids: &[String]) -> String {
    ids.join(" ")
}

impl Ec2Api for FakeEc2 {
    fn region(&self) -> &str {
        &self.region
    }

    fn in_region(&self, region: &str) -> FakeEc2 {
        FakeEc2 {
            region: region.to_string(),
            world: Arc::clone(&self.world),
        }
    }

    async fn caller_arn(&self) -> Ec2Result<String> {
        self.call("GetCallerIdentity", String::new())?;
        Ok("arn:aws:iam::123456789012:user/fake".to_string())
    }

    async fn describe_regions(&self, all: bool) -> Ec2Result<Vec<String>> {
        self.call("DescribeRegions", format!("all={all}"))?;
        let world = self.world();
        Ok(world.all_regions.clone())
    }

    async fn describe_instances(&self, deployment: &str, ids: &[String]) -> Ec2Result<Vec<RawInstance>> {
        self.call("DescribeInstances", format!("{deployment} {}", ids_detail(ids)))?;
        let mut world = self.world();
        let hidden = world.answer_hides();
        Ok(world
            .instances
            .iter()
            .filter(|(region, i)| {
                *region == self.region
                    && tag_value(&i.tags, tag::DEPLOYMENT) == Some(deployment)
                    && (ids.is_empty() || ids.contains(&i.id))
                    && !hidden.contains(&i.id)
            })
            .map(|(_, i)| i.clone())
            .collect())
    }

    async fn run_instances(&self, spec: &LaunchSpec) -> Ec2Result<Vec<String>> {
        let detail = format!(
            "{} {} {} x{}",
            spec.instance_type,
            spec.zone,
            spec.market.as_str(),
            spec.count
        );
        self.world().launches.push((self.region.clone(), spec.clone()));
        self.call("RunInstances", detail.clone())?;
        let mut world = self.world();
        if !world.groups.iter().any(|g| g.group.id == spec.machine.group_id) {
            return Err(Ec2Error::service(
                "RunInstances",
                "InvalidGroup.NotFound",
                &spec.machine.group_id,
            ));
        }
        let given = world.take_capacity(&detail, spec.count)?;
        let place = Place {
            region: &self.region,
            instance_type: &spec.instance_type,
            zone: &spec.zone,
            market: spec.market,
            public_ip: spec.machine.public_ip,
            group_id: &spec.machine.group_id,
        };
        let ids = (0..given)
            .map(|_| world.launch_one(&place, &spec.machine.tags))
            .collect();
        Ok(ids)
    }

    async fn terminate_instances(&self, ids: &[String]) -> Ec2Result<()> {
        const ACTION: &str = "TerminateInstances";
        self.call(ACTION, ids_detail(ids))?;
        let mut world = self.world();
        let region = self.region.clone();
        let known = |id: &String| world.instances.iter().any(|(r, i)| *r == region && i.id == *id);
        if let Some(unknown) = ids.iter().find(|id| !known(id)) {
            let message = format!("The instance ID '{unknown}' does not exist");
            return Err(Ec2Error::service(ACTION, "InvalidInstanceID.NotFound", &message));
        }
        for (_, instance) in world
            .instances
            .iter_mut()
            .filter(|(r, i)| *r == region && ids.contains(&i.id))
        {
            instance.state = InstanceState::Terminated;
            instance.state_reason = Some("Client.UserInitiatedShutdown".to_string());
        }
        Ok(())
    }

    async fn describe_images(&self, owner: &str, name_pattern: &str) -> Ec2Result<Vec<Image>> {
        self.call("DescribeImages", format!("{owner} {name_pattern}"))?;
        let world = self.world();
        Ok(world
            .images
            .iter()
            .filter(|(o, image)| o == owner && glob(name_pattern, &image.name))
            .map(|(_, image)| image.clone())
            .collect())
    }

    async fn describe_image(&self, id: &str) -> Ec2Result<Image> {
        const ACTION: &str = "DescribeImages";
        self.call(ACTION, id.to_string())?;
        let world = self.world();
        match world.images.iter().find(|(_, image)| image.id == id) {
            Some((_, image)) => Ok(image.clone()),
            None => {
                let message = format!("The image id '[{id}]' does not exist");
                Err(Ec2Error::service(ACTION, "InvalidAMIID.NotFound", &message))
            }
        }
    }

    async fn describe_default_subnets(&self) -> Ec2Result<Vec<Subnet>> {
        self.call("DescribeSubnets", String::new())?;
        Ok(["a", "b"]
            .iter()
            .map(|letter| Subnet {
                zone: format!("{}{letter}", self.region),
                id: format!("subnet-{}{letter}", self.region),
            })
            .collect())
    }

    async fn describe_spot_prices(&self, instance_types: &[String]) -> Ec2Result<Vec<SpotPrice>> {
        self.call("DescribeSpotPriceHistory", instance_types.join(" "))?;
        let price = |itype: &str, zone: &str, product: &str, price: f64| SpotPrice {
            instance_type: Some(itype.to_string()),
            zone: Some(format!("{}{zone}", self.region)),
            product: Some(product.to_string()),
            price: Some(format!("{price:.4}")),
        };
        // Each later type costs a little more; Windows is cheapest and
        // must never be picked.
        Ok(instance_types
            .iter()
            .enumerate()
            .flat_map(|(n, itype)| {
                let step = n as f64 * 0.001;
                [
                    price(itype, "a", "Linux/UNIX", 0.0100 + step),
                    price(itype, "b", "Linux/UNIX (Amazon VPC)", 0.0080 + step),
                    price(itype, "a", "Windows", 0.0010),
                ]
            })
            .collect())
    }

    async fn create_security_group(&self, name: &str, _description: &str, tags: &Tags) -> Ec2Result<String> {
        const ACTION: &str = "CreateSecurityGroup";
        self.call(ACTION, name.to_string())?;
        let mut world = self.world();
        if world
            .groups
            .iter()
            .any(|g| g.region == self.region && g.name == name)
        {
            let message = format!("The security group '{name}' already exists");
            return Err(Ec2Error::service(ACTION, "InvalidGroup.Duplicate", &message));
        }
        let id = world.new_id("sg");
        world.groups.push(Group {
            region: self.region.clone(),
            name: name.to_string(),
            group: SecurityGroup {
                id: id.clone(),
                tags: tags.clone(),
                rules: Vec::new(),
            },
        });
        Ok(id)
    }

    async fn describe_security_groups(
        &self,
        name: &str,
        deployment: Option<&str>,
    ) -> Ec2Result<Vec<SecurityGroup>> {
        self.call("DescribeSecurityGroups", name.to_string())?;
        let world = self.world();
        Ok(world
            .groups
            .iter()
            .filter(|g| g.region == self.region && g.name == name)
            .filter(|g| deployment.is_none_or(|d| tag_value(&g.group.tags, tag::DEPLOYMENT) == Some(d)))
            .map(|g| g.group.clone())
            .collect())
    }

    async fn authorize_ingress(&self, group_id: &str, ports: &[u16], cidr: &str) -> Ec2Result<()> {
        const ACTION: &str = "AuthorizeSecurityGroupIngress";
        self.call(ACTION, format!("{group_id} {ports:?} {cidr}"))?;
        let mut world = self.world();
        let Some(group) = world.groups.iter_mut().find(|g| g.group.id == group_id) else {
            return Err(Ec2Error::service(ACTION, "InvalidGroup.NotFound", group_id));
        };
        for port in ports {
            group.group.rules.push(IngressRule {
                protocol: "tcp".to_string(),
                from_port: Some(i32::from(*port)),
                to_port: Some(i32::from(*port)),
                sources: vec![cidr.to_string()],
            });
        }
        Ok(())
    }

    async fn delete_security_group(&self, group_id: &str) -> Ec2Result<()> {
        const ACTION: &str = "DeleteSecurityGroup";
        self.call(ACTION, group_id.to_string())?;
        let mut world = self.world();
        let held = world.instance_groups.iter().any(|(id, group)| {
            group == group_id
                && world
                    .instances
                    .iter()
                    .any(|(_, i)| i.id == *id && i.state.is_live())
        });
        if held {
            let message = format!("resource {group_id} has a dependent object");
            return Err(Ec2Error::service(ACTION, "DependencyViolation", &message));
        }
        let before = world.groups.len();
        world.groups.retain(|g| g.group.id != group_id);
        if world.groups.len() == before {
            return Err(Ec2Error::service(ACTION, "InvalidGroup.NotFound", group_id));
        }
        Ok(())
    }

    async fn describe_group_instances(&self, group_id: &str) -> Ec2Result<Vec<RawInstance>> {
        self.call("DescribeInstances", format!("group {group_id}"))?;
        let mut world = self.world();
        let hidden = world.answer_hides();
        let members: Vec<&String> = world
            .instance_groups
            .iter()
            .filter(|(_, group)| group == group_id)
            .map(|(id, _)| id)
            .collect();
        Ok(world
            .instances
            .iter()
            .filter(|(region, i)| {
                *region == self.region && members.contains(&&i.id) && !hidden.contains(&i.id)
            })
            .map(|(_, i)| i.clone())
            .collect())
    }

    async fn describe_spot_requests(&self, deployment: &str) -> Ec2Result<Vec<SpotRequest>> {
        self.call("DescribeSpotInstanceRequests", deployment.to_string())?;
        let world = self.world();
        Ok(world
            .spot_requests
            .iter()
            .filter(|(region, request, open)| {
                *open
                    && *region == self.region
                    && tag_value(&request.tags, tag::DEPLOYMENT) == Some(deployment)
            })
            .map(|(_, request, _)| request.clone())
            .collect())
    }

    async fn cancel_spot_requests(&self, ids: &[String]) -> Ec2Result<()> {
        self.call("CancelSpotInstanceRequests", ids_detail(ids))?;
        let mut world = self.world();
        for (_, request, open) in world.spot_requests.iter_mut() {
            if ids.contains(&request.id) {
                *open = false;
            }
        }
        Ok(())
    }

    async fn ssm_parameter(&self, name: &str) -> Ec2Result<Option<String>> {
        self.call("GetParameter", name.to_string())?;
        let world = self.world();
        Ok(world
            .parameters
            .iter()
            .rev()
            .find(|(region, n, _)| (*region == self.region || region == "*") && n == name)
            .map(|(_, _, value)| value.clone()))
    }

    async fn describe_region_opt_in(&self) -> Ec2Result<Vec<RegionOptIn>> {
        self.call("DescribeRegions", "all=true".to_string())?;
        let world = self.world();
        Ok(world
            .all_regions
            .iter()
            .map(|name| RegionOptIn {
                name: name.clone(),
                status: Some(
                    if world.disabled_regions.contains(name) {
                        "not-opted-in"
                    } else {
                        "opt-in-not-required"
                    }
                    .to_string(),
                ),
            })
            .collect())
    }

    async fn describe_spot_request_statuses(
        &self,
        deployment: Option<&str>,
    ) -> Ec2Result<Vec<SpotRequestStatus>> {
        self.call(
            "DescribeSpotInstanceRequests",
            deployment.unwrap_or("*").to_string(),
        )?;
        let world = self.world();
        Ok(world
            .spot_requests
            .iter()
            .filter(|(region, request, _)| {
                let tagged = tag_value(&request.tags, tag::DEPLOYMENT);
                *region == self.region && tagged.is_some() && deployment.is_none_or(|d| tagged == Some(d))
            })
            .map(|(_, request, open)| {
                let instance = world
                    .request_instance
                    .iter()
                    .find(|(r, _)| *r == request.id)
                    .map(|(_, i)| i.clone());
                let marked = instance.as_ref().is_some_and(|i| world.marked.contains(i));
                SpotRequestStatus {
                    id: request.id.clone(),
                    state: if *open { "active" } else { "cancelled" }.to_string(),
                    status: Some(
                        if marked {
                            "marked-for-termination"
                        } else {
                            "fulfilled"
                        }
                        .to_string(),
                    ),
                    instance_id: instance,
                    created_at: None,
                    tags: request.tags.clone(),
                }
            })
            .collect())
    }

    async fn create_launch_template(&self, spec: &TemplateSpec) -> Ec2Result<String> {
        self.call("CreateLaunchTemplate", spec.name.clone())?;
        Ok(self.make_template(spec))
    }

    async fn delete_launch_template(&self, id: &str) -> Ec2Result<()> {
        self.call("DeleteLaunchTemplate", id.to_string())?;
        self.drop_template(id)
    }

    async fn describe_launch_templates(&self, deployment: &str) -> Ec2Result<Vec<(String, String)>> {
        self.call("DescribeLaunchTemplates", deployment.to_string())?;
        Ok(self.tagged_templates(deployment))
    }

    async fn create_fleet(&self, spec: &FleetSpec) -> Ec2Result<FleetAnswer> {
        self.world().fleets.push((self.region.clone(), spec.clone()));
        self.call("CreateFleet", fleet::detail(spec))?;
        self.instant_fleet(spec)
    }

    async fn describe_tagged_instances(&self) -> Ec2Result<Vec<RawInstance>> {
        self.call("DescribeInstances", "*".to_string())?;
        let world = self.world();
        Ok(world
            .instances
            .iter()
            .filter(|(region, i)| *region == self.region && tag_value(&i.tags, tag::DEPLOYMENT).is_some())
            .map(|(_, i)| i.clone())
            .collect())
    }

    async fn describe_tagged_groups(&self) -> Ec2Result<Vec<TaggedGroup>> {
        self.call("DescribeSecurityGroups", "*".to_string())?;
        let world = self.world();
        Ok(world
            .groups
            .iter()
            .filter(|g| g.region == self.region && tag_value(&g.group.tags, tag::DEPLOYMENT).is_some())
            .map(|g| TaggedGroup {
                id: g.group.id.clone(),
                name: g.name.clone(),
                tags: g.group.tags.clone(),
            })
            .collect())
    }
}
