//! The fake's EC2 Fleet: launch templates, and instant fleets that launch
//! into the same world as `RunInstances`, pool by pool as far as each
//! pool's scripted capacity goes, answering per-pool errors in `Errors`.

use super::*;
use crate::provider::aws::ec2::{FleetPlace, FleetPool};

/// What a `CreateFleet` call records: `spot x5 over t3.small eu-west-1a, ...`.
pub(super) fn detail(spec: &FleetSpec) -> String {
    let pools: Vec<String> = spec
        .pools
        .iter()
        .map(|p| format!("{} {}", p.instance_type, p.zone))
        .collect();
    format!(
        "{} x{} over {}",
        spec.market.as_str(),
        spec.count,
        pools.join(", ")
    )
}

impl FakeEc2 {
    pub(super) fn make_template(&self, spec: &TemplateSpec) -> String {
        let mut world = self.world();
        let id = world.new_id("lt");
        world
            .templates
            .push((self.region.clone(), id.clone(), spec.clone()));
        id
    }

    pub(super) fn drop_template(&self, id: &str) -> Ec2Result<()> {
        let mut world = self.world();
        let before = world.templates.len();
        world.templates.retain(|(_, t, _)| t != id);
        if world.templates.len() == before {
            let message = format!("The specified launch template, with template ID {id}, does not exist.");
            return Err(Ec2Error::service(
                "DeleteLaunchTemplate",
                "InvalidLaunchTemplateId.NotFound",
                &message,
            ));
        }
        Ok(())
    }

    /// An instant fleet: each pool in turn gives what its scripted capacity
    /// holds (all, when unscripted) until the count is met; a pool with a
    /// scripted error or no capacity answers an error of its own.
    pub(super) fn instant_fleet(&self, spec: &FleetSpec) -> Ec2Result<FleetAnswer> {
        const ACTION: &str = "CreateFleet";
        let mut world = self.world();
        let Some((_, _, template)) = world
            .templates
            .iter()
            .find(|(_, id, _)| *id == spec.template_id)
            .cloned()
        else {
            return Err(Ec2Error::service(
                ACTION,
                "InvalidLaunchTemplateId.NotFound",
                &spec.template_id,
            ));
        };
        if !world
            .groups
            .iter()
            .any(|g| g.group.id == template.machine.group_id)
        {
            return Err(Ec2Error::service(
                ACTION,
                "InvalidGroup.NotFound",
                &template.machine.group_id,
            ));
        }
        let mut answer = FleetAnswer::default();
        if let Some((_, code)) = world.fleet_errors.iter().find(|(when, _)| when == "*") {
            answer.errors.push((
                FleetPlace::default(),
                code.clone(),
                "scripted by the test".to_string(),
            ));
            return Ok(answer);
        }
        let mut tags = template.machine.tags.clone();
        tags.extend(
            spec.tags
                .iter()
                .filter(|t| !template.machine.tags.contains(t))
                .cloned(),
        );
        let mut remaining = spec.count;
        for pool in &spec.pools {
            if remaining == 0 {
                break;
            }
            remaining -= world.fleet_pool(&self.region, pool, spec, &template, &tags, remaining, &mut answer);
        }
        Ok(answer)
    }

    /// Fleet pools whose detail (`t3.small eu-west-1a spot x5`) contains
    /// `when` answer `code` in `CreateFleet`'s `Errors` and launch nothing;
    /// `*` makes it the whole fleet's one error.
    pub fn fleet_error(&self, when: &str, code: &str) {
        self.world()
            .fleet_errors
            .push((when.to_string(), code.to_string()));
    }

    /// Every `CreateFleet`, failed ones included: (region, spec).
    pub fn fleet_specs(&self) -> Vec<(String, FleetSpec)> {
        self.world().fleets.clone()
    }

    pub(super) fn tagged_templates(&self, deployment: &str) -> Vec<(String, String)> {
        self.world()
            .templates
            .iter()
            .filter(|(region, _, t)| {
                *region == self.region
                    && tag_value(&t.machine.tags, crate::provider::tag::DEPLOYMENT) == Some(deployment)
            })
            .map(|(_, id, t)| (id.clone(), t.name.clone()))
            .collect()
    }

    /// The launch templates not deleted: (region, id, spec).
    pub fn templates(&self) -> Vec<(String, String, TemplateSpec)> {
        self.world().templates.clone()
    }
}

impl World {
    /// One pool of an instant fleet: its scripted error, or up to
    /// `remaining` instances as far as its capacity goes. How many launched.
    #[allow(clippy::too_many_arguments)]
    fn fleet_pool(
        &mut self,
        region: &str,
        pool: &FleetPool,
        spec: &FleetSpec,
        template: &TemplateSpec,
        tags: &Tags,
        remaining: u32,
        answer: &mut FleetAnswer,
    ) -> u32 {
        let pool_detail = format!(
            "{} {} {} x{remaining}",
            pool.instance_type,
            pool.zone,
            spec.market.as_str()
        );
        let place = FleetPlace {
            instance_type: Some(pool.instance_type.clone()),
            subnet: Some(pool.subnet.clone()),
            zone: None,
        };
        let scripted = self
            .fleet_errors
            .iter()
            .find(|(when, _)| when != "*" && pool_detail.contains(when.as_str()))
            .map(|(_, code)| code.clone());
        if let Some(code) = scripted {
            answer
                .errors
                .push((place, code, "scripted by the test".to_string()));
            return 0;
        }
        match self.take_capacity(&pool_detail, remaining) {
            Ok(given) => {
                let at = Place {
                    region,
                    instance_type: &pool.instance_type,
                    zone: &pool.zone,
                    market: spec.market,
                    public_ip: template.machine.public_ip,
                    group_id: &template.machine.group_id,
                };
                let ids: Vec<String> = (0..given).map(|_| self.launch_one(&at, tags)).collect();
                answer.launched.push((place, ids));
                given
            }
            Err(err) => {
                let code = err.code().unwrap_or_default().to_string();
                answer.errors.push((place, code, err.message().to_string()));
                0
            }
        }
    }
}
