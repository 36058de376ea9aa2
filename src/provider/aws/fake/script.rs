//! The fake's scripting side: building its world, scripting failures and
//! capacity, and reading back what respot asked for.

#[allow(unused_imports)]
use super::*;

impl FakeEc2 {
    pub fn new(region: &str) -> FakeEc2 {
        let image = |id: &str, name: &str, arch: &str| Image {
            id: id.to_string(),
            name: name.to_string(),
            creation_date: "2025-01-01T00:00:00.000Z".to_string(),
            architecture: Some(arch.to_string()),
            root_device: Some("/dev/xvda".to_string()),
            root_volume_size: Some(8),
        };
        let world = World {
            calls: Vec::new(),
            launches: Vec::new(),
            rules: Vec::new(),
            instances: Vec::new(),
            groups: Vec::new(),
            spot_requests: Vec::new(),
            request_instance: Vec::new(),
            marked: Vec::new(),
            next_id: 0,
            launch_state: (InstanceState::Running, None),
            all_regions: ["eu-future-1", "eu-west-1", "us-east-1", "us-west-2"]
                .map(String::from)
                .to_vec(),
            images: vec![
                (
                    "amazon".to_string(),
                    image("ami-al2023x86", "al2023-ami-2023.6-kernel-6.1-x86_64", "x86_64"),
                ),
                (
                    "amazon".to_string(),
                    image("ami-al2023arm", "al2023-ami-2023.6-kernel-6.1-arm64", "arm64"),
                ),
            ],
            capacity: Vec::new(),
            instance_groups: Vec::new(),
            hide_for: 0,
            hidden: Vec::new(),
            // AWS publishes Amazon Linux's parameters in every region.
            parameters: [("x86_64", "ami-al2023x86"), ("arm64", "ami-al2023arm")]
                .iter()
                .map(|(arch, id)| {
                    (
                        "*".to_string(),
                        format!("/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-{arch}"),
                        id.to_string(),
                    )
                })
                .collect(),
            disabled_regions: Vec::new(),
            templates: Vec::new(),
            fleets: Vec::new(),
            fleet_errors: Vec::new(),
        };
        FakeEc2 {
            region: region.to_string(),
            world: Arc::new(Mutex::new(world)),
        }
    }

    pub(super) fn world(&self) -> MutexGuard<'_, World> {
        self.world
            .lock()
            .expect("no test panics while holding the fake's lock")
    }

    pub fn script(&self, rule: Rule) {
        self.world().rules.push(rule);
    }

    /// Pools whose `RunInstances` detail contains `when` (e.g.
    /// `t3.small eu-west-1a spot`) hold `instances` in all; asked for more,
    /// they launch what they hold (MinCount = 1), and none at all is
    /// `InsufficientInstanceCapacity`.
    pub fn capacity(&self, when: &str, instances: u32) {
        self.world().capacity.push((when.to_string(), instances));
    }

    /// Instances launched from now on stay out of the next `answers`
    /// `DescribeInstances` (EC2's eventual consistency).
    pub fn hide_launches(&self, answers: u32) {
        self.world().hide_for = answers;
    }

    /// Instances `ids` stay out of the next `answers` `DescribeInstances`.
    pub fn hide_ids(&self, ids: &[String], answers: u32) {
        self.world()
            .hidden
            .extend(ids.iter().map(|id| (id.clone(), answers)));
    }

    /// Puts instance `id` into security group `group` (as its interface).
    pub fn join_group(&self, id: &str, group: &str) {
        self.world()
            .instance_groups
            .push((id.to_string(), group.to_string()));
    }

    /// New instances launch in `state`, with AWS's `reason`.
    pub fn launch_as(&self, state: InstanceState, reason: &str) {
        self.world().launch_state = (state, Some(reason.to_string()));
    }

    pub fn calls(&self) -> Vec<Call> {
        self.world().calls.clone()
    }

    /// The spec of every `RunInstances`, failed ones included: (region, spec).
    pub fn launch_specs(&self) -> Vec<(String, LaunchSpec)> {
        self.world().launches.clone()
    }

    /// An image `owner` publishes, for `DescribeImages`.
    pub fn add_image(&self, owner: &str, image: Image) {
        self.world().images.push((owner.to_string(), image));
    }

    /// A security group respot did not create in this run: tagged `tags`,
    /// admitting `rules`. Returns its id.
    pub fn seed_group(
        &self,
        region: &str,
        name: &str,
        tags: &[(&str, &str)],
        rules: Vec<IngressRule>,
    ) -> String {
        let mut world = self.world();
        let id = world.new_id("sg");
        world.groups.push(Group {
            region: region.to_string(),
            name: name.to_string(),
            group: SecurityGroup {
                id: id.clone(),
                tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                rules,
            },
        });
        id
    }

    /// The calls of `action`, as (region, detail).
    pub fn calls_of(&self, action: &str) -> Vec<(String, String)> {
        self.calls()
            .into_iter()
            .filter(|c| c.action == action)
            .map(|c| (c.region, c.detail))
            .collect()
    }

    /// Every instance, any owner: (region, instance).
    pub fn instances(&self) -> Vec<(String, RawInstance)> {
        self.world().instances.clone()
    }

    /// Live instances, any owner: (region, id).
    pub fn live(&self) -> Vec<(String, String)> {
        self.instances()
            .into_iter()
            .filter(|(_, i)| i.state.is_live())
            .map(|(r, i)| (r, i.id))
            .collect()
    }

    /// Security group names in `region`.
    pub fn group_names(&self, region: &str) -> Vec<String> {
        self.world()
            .groups
            .iter()
            .filter(|g| g.region == region)
            .map(|g| g.name.clone())
            .collect()
    }

    /// Open spot requests: (region, id).
    pub fn open_spot_requests(&self) -> Vec<(String, String)> {
        self.world()
            .spot_requests
            .iter()
            .filter(|(_, _, open)| *open)
            .map(|(r, s, _)| (r.clone(), s.id.clone()))
            .collect()
    }

    /// An instance respot did not launch, with `tags`; returns its id.
    pub fn seed_instance(&self, region: &str, tags: &[(&str, &str)]) -> String {
        let mut world = self.world();
        let id = world.new_id("i");
        let instance = RawInstance {
            id: id.clone(),
            instance_type: "t3.micro".to_string(),
            zone: Some(format!("{region}a")),
            state: InstanceState::Running,
            state_reason: None,
            public_ip: Some("203.0.113.9".to_string()),
            private_ip: Some("172.31.0.9".to_string()),
            spot: false,
            launched_at: Some(SystemTime::UNIX_EPOCH),
            tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        world.instances.push((region.to_string(), instance));
        id
    }

    /// EC2's two-minute interruption notice for `instance`: its spot
    /// request's status turns to `marked-for-termination`.
    pub fn mark_for_termination(&self, instance: &str) {
        self.world().marked.push(instance.to_string());
    }

    /// Sets AWS's reason for `instance`'s state (a spot reclaim's).
    pub fn set_state_reason(&self, instance: &str, reason: &str) {
        for (_, raw) in self
            .world()
            .instances
            .iter_mut()
            .filter(|(_, i)| i.id == instance)
        {
            raw.state_reason = Some(reason.to_string());
        }
    }

    /// A public SSM parameter in `region`.
    pub fn add_parameter(&self, region: &str, name: &str, value: &str) {
        self.world()
            .parameters
            .push((region.to_string(), name.to_string(), value.to_string()));
    }

    /// `region` becomes an opt-in region the account has not enabled.
    pub fn disable_region(&self, region: &str) {
        let mut world = self.world();
        world.disabled_regions.push(region.to_string());
        if !world.all_regions.iter().any(|r| r == region) {
            world.all_regions.push(region.to_string());
        }
    }

    /// Records the call and returns the scripted failure, if any.
    pub(super) fn call(&self, action: &'static str, detail: String) -> Ec2Result<()> {
        let mut world = self.world();
        let call = Call {
            region: self.region.clone(),
            action,
            detail,
        };
        let scripted = world.rules.iter_mut().find(|r| r.matches(&call)).map(|rule| {
            rule.times = rule.times.map(|t| t - 1);
            Ec2Error::service(action, &rule.code, &rule.message)
        });
        world.calls.push(call);
        match scripted {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }
}
