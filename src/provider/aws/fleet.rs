//! `aws.allocation = "price-capacity-optimized"` (issue 13.3): a region's
//! whole count in one `CreateFleet` of type `instant` over every pool
//! (each instance type in each zone's subnet), AWS choosing the pools with
//! its price-capacity-optimized spot strategy.
//!
//! The fleet launches from a launch template made for this run and region
//! (the same image, user data, interface with the security group and the
//! public address, IMDSv2, root volume, profile and tags at creation as
//! the ordered walk's `RunInstances`), deleted once the fleet call has
//! answered, whatever it answered: alongside the wait for running
//! instances, so it costs no round trip of its own. The answer's `Instances` say which pools gave
//! what and its `Errors` what each other pool said; both are reported.
//! Pool errors (capacity, price, a type the zone lacks) only shorten the
//! answer; a quota (`MaxSpotInstanceCountExceeded`, `VcpuLimitExceeded`)
//! ends the region naming its Service Quotas code, as the ordered walk
//! does; with `aws.fallback = "on-demand"` what spot could not give goes to
//! a second, on-demand fleet. A region still short fails like the ordered
//! walk's (`NoCapacity`, every pool's answer named): the other regions
//! launch meanwhile, and the engine rolls the generation back.

use super::consistency::retry_group_not_found;
use super::ec2::{
    Ec2Api, Ec2Error, Ec2Result, FleetAnswer, FleetPlace, FleetPool, FleetSpec, Market, TemplateSpec,
};
use super::errors::is_pool_error;
use super::launch::Prepared;
use super::pools::{Pool, PoolOutcome, Verdicts, pools};
use super::{AwsProvider, Pending, RegionTarget};
use crate::config::{Allocation, Fallback};
use crate::provider::{DestroyReport, PoolAnswer, ProviderError, Result, tag};

/// A launch template made for one fleet.
pub(super) struct Template {
    id: String,
    name: String,
}

/// What one fleet call means for the region.
enum FleetStep {
    /// These launched (maybe fewer than asked); the rest goes on.
    Launched(Vec<String>),
    /// Spot stopped on a spot-only quota: on-demand may take the rest.
    FallBack(String),
    Fatal(ProviderError),
}

impl<E: Ec2Api> AwsProvider<E> {
    /// The region's launch by fleet: the ids, and the launch template for
    /// the caller to delete (with [`AwsProvider::release_template`]) while
    /// the instances boot. On failure it is deleted here.
    pub(super) async fn run_fleet(
        &self,
        target: &RegionTarget<E>,
        prepared: &Prepared,
    ) -> Result<(Vec<String>, Template)> {
        let spec = self.template_spec(prepared);
        let id = retry_group_not_found(&self.waits, &target.name, "CreateLaunchTemplate", || {
            target.ec2.create_launch_template(&spec)
        })
        .await
        .map_err(|err| self.api_error(&target.name, &err))?;
        let template = Template { id, name: spec.name };
        match self.run_markets(target, prepared, &template.id).await {
            Ok(ids) => Ok((ids, template)),
            Err(err) => {
                self.release_template(target, Some(&template)).await;
                Err(err)
            }
        }
    }

    /// Deletes a fleet's launch template. The instances no longer need it;
    /// should the delete fail, it costs nothing but is left behind, so the
    /// warning says how to remove it.
    pub(super) async fn release_template(&self, target: &RegionTarget<E>, template: Option<&Template>) {
        let Some(template) = template else {
            return;
        };
        if let Err(err) = target.ec2.delete_launch_template(&template.id).await {
            tracing::warn!(
                "{}: launch template {} ({}) was not deleted: {}; remove it with \
                 `aws ec2 delete-launch-template --region {} --launch-template-id {}`",
                target.name,
                template.id,
                template.name,
                self.api_error(&target.name, &err),
                target.name,
                template.id
            );
        }
    }

    /// With `price-capacity-optimized`, deletes the deployment's launch
    /// templates a run killed between making and deleting one left behind
    /// (while `destroy` terminates: no round trip of its own).
    pub(super) async fn sweep_templates(&self, target: &RegionTarget<E>, deployment: &str) -> DestroyReport {
        let mut report = DestroyReport::default();
        if self.settings.allocation != Allocation::PriceCapacityOptimized {
            return report;
        }
        let found = match target.ec2.describe_launch_templates(deployment).await {
            Ok(found) => found,
            Err(err) => {
                report
                    .left_behind
                    .push(self.api_error(&target.name, &err).to_string());
                return report;
            }
        };
        for (id, name) in found {
            match target.ec2.delete_launch_template(&id).await {
                Ok(()) => report
                    .cleaned
                    .push(format!("launch template {id} ({name}) in {}", target.name)),
                Err(err) => report
                    .left_behind
                    .push(self.api_error(&target.name, &err).to_string()),
            }
        }
        report
    }

    fn template_spec(&self, prepared: &Prepared) -> TemplateSpec {
        let deployment = super::ec2::tag_value(&prepared.machine.tags, tag::DEPLOYMENT).unwrap_or("respot");
        TemplateSpec {
            // `respot-<run>-...` made `respot-<deployment>-<run>-...`.
            name: prepared
                .token_prefix
                .replacen("respot-", &format!("respot-{deployment}-"), 1),
            machine: prepared.machine.clone(),
        }
    }

    /// One fleet for spot, then (with `aws.fallback = "on-demand"`) one
    /// for what spot did not give.
    async fn run_markets(
        &self,
        target: &RegionTarget<E>,
        prepared: &Prepared,
        template: &str,
    ) -> Result<Vec<String>> {
        let region = target.name.as_str();
        let markets: &[Market] = match self.settings.fallback {
            Fallback::None => &[Market::Spot],
            Fallback::OnDemand => &[Market::Spot, Market::OnDemand],
        };
        let mut launched: Vec<String> = Vec::new();
        let mut tried: Vec<String> = Vec::new();
        for (call, market) in markets.iter().enumerate() {
            let remaining = target.count.saturating_sub(count(&launched));
            if remaining == 0 {
                break;
            }
            let spec = FleetSpec {
                template_id: template.to_string(),
                pools: self.fleet_pools(target, prepared),
                count: remaining,
                market: *market,
                max_price: prepared.max_price,
                tags: prepared.machine.tags.clone(),
                client_token: format!("{}-fleet-{call}", prepared.token_prefix),
            };
            let answer = retry_group_not_found(&self.waits, region, "CreateFleet", || {
                target.ec2.create_fleet(&spec)
            })
            .await;
            match self.fleet_step(target, prepared, &spec, answer, &mut tried) {
                FleetStep::Launched(ids) => launched.extend(ids),
                FleetStep::FallBack(code) => {
                    tracing::warn!("{region}: {code} for spot; falling back to on-demand");
                    tried.push(format!("spot: {code}"));
                }
                FleetStep::Fatal(err) => return Err(err),
            }
        }
        if count(&launched) < target.count {
            return Err(self.short_of_capacity(region, launched.len(), target.count, tried));
        }
        Ok(launched)
    }

    /// Every pool of the region (types × zones); `heal`'s pools to avoid
    /// are left out, unless that leaves none.
    fn fleet_pools(&self, target: &RegionTarget<E>, prepared: &Prepared) -> Vec<FleetPool> {
        let all: Vec<Pool> = pools(Fallback::None, &target.instance_types, &prepared.subnets).collect();
        let preferred: Vec<&Pool> = all.iter().filter(|p| !target.avoids(p)).collect();
        let chosen: Vec<&Pool> = if preferred.is_empty() {
            all.iter().collect()
        } else {
            preferred
        };
        chosen
            .into_iter()
            .map(|p| FleetPool {
                instance_type: p.instance_type.to_string(),
                zone: p.zone.to_string(),
                subnet: p.subnet.to_string(),
            })
            .collect()
    }

    /// Reads one fleet answer: remembers what launched (pending, for a
    /// rollback) and what every pool answered; decides the next step.
    fn fleet_step(
        &self,
        target: &RegionTarget<E>,
        prepared: &Prepared,
        spec: &FleetSpec,
        answer: Ec2Result<FleetAnswer>,
        tried: &mut Vec<String>,
    ) -> FleetStep {
        let region = target.name.as_str();
        let whole = Pool {
            market: spec.market,
            instance_type: "",
            zone: "",
            subnet: "",
        };
        let answer = match answer {
            Ok(answer) => answer,
            // The call itself failed: as the ordered walk reads a pool's.
            Err(err) => {
                return match self.verdicts(region).outcome(&whole, Err(err)) {
                    PoolOutcome::NoCapacity(code) => {
                        self.note_fleet(
                            region,
                            prepared,
                            spec.market,
                            &FleetPlace::default(),
                            0,
                            Some(&code),
                        );
                        tried.push(format!("{} fleet: {code}", spec.market.as_str()));
                        FleetStep::Launched(Vec::new())
                    }
                    PoolOutcome::FallBack(code) => FleetStep::FallBack(code),
                    PoolOutcome::Fatal(err) => FleetStep::Fatal(err),
                    PoolOutcome::Launched(ids) => FleetStep::Launched(ids),
                };
            }
        };
        let mut ids = Vec::new();
        for (place, launched) in &answer.launched {
            self.note_fleet(region, prepared, spec.market, place, count(launched), None);
            ids.extend(launched.iter().cloned());
        }
        self.pending().extend(ids.iter().map(|id| Pending {
            region: region.to_string(),
            id: id.clone(),
            generation: prepared.generation,
        }));
        tracing::info!(
            "{region}: the {} fleet launched {} of {}",
            spec.market.as_str(),
            ids.len(),
            spec.count
        );
        let mut stop = None;
        for (place, code, message) in &answer.errors {
            self.note_fleet(region, prepared, spec.market, place, 0, Some(code));
            tried.push(format!("{}: {code}", self.place_name(prepared, place)));
            let err = Ec2Error::service("CreateFleet", code, message);
            match self.verdicts(region).outcome(&whole, Err(err)) {
                PoolOutcome::FallBack(code) if stop.is_none() => stop = Some(FleetStep::FallBack(code)),
                // A quota, a denial: no other pool can change it. Any
                // other code is that pool's answer only.
                PoolOutcome::Fatal(
                    err @ (ProviderError::Quota { .. }
                    | ProviderError::SpotRoleMissing { .. }
                    | ProviderError::NotAuthorized { .. }
                    | ProviderError::CredentialsRejected { .. }),
                ) => stop = Some(FleetStep::Fatal(err)),
                _ => {}
            }
        }
        match stop {
            Some(step) if count(&ids) < spec.count => step,
            _ => FleetStep::Launched(ids),
        }
    }

    fn verdicts<'a>(&'a self, region: &'a str) -> Verdicts<'a> {
        Verdicts {
            region,
            fallback: self.settings.fallback,
            max_price: self.settings.max_price,
            credentials_hint: &self.credentials_hint,
        }
    }

    /// `t3.small in eu-west-1a`, from what the answer echoed.
    fn place_name(&self, prepared: &Prepared, place: &FleetPlace) -> String {
        match (&place.instance_type, zone_of(prepared, place)) {
            (Some(itype), Some(zone)) => format!("{itype} in {zone}"),
            (Some(itype), None) => itype.clone(),
            (None, _) => "fleet".to_string(),
        }
    }

    /// Remembers what a fleet pool answered, for the report, and a pool
    /// without capacity for `heal`.
    fn note_fleet(
        &self,
        region: &str,
        prepared: &Prepared,
        market: Market,
        place: &FleetPlace,
        launched: u32,
        error: Option<&str>,
    ) {
        let zone = zone_of(prepared, place);
        if let (Some(code), Some(itype), Some(zone)) = (error, &place.instance_type, &zone)
            && is_pool_error(code)
        {
            let pool = Pool {
                market,
                instance_type: itype,
                zone,
                subnet: "",
            };
            self.note_no_capacity(region, &pool);
        }
        self.push_answer(PoolAnswer {
            region: region.to_string(),
            instance_type: place.instance_type.clone(),
            zone,
            lifecycle: market.lifecycle(),
            launched,
            error: error.map(str::to_string),
        });
    }

    /// Remembers what a pool of the ordered walk answered.
    pub(super) fn note_answer(&self, region: &str, pool: &Pool, launched: u32, error: Option<&str>) {
        self.push_answer(PoolAnswer {
            region: region.to_string(),
            instance_type: Some(pool.instance_type.to_string()),
            zone: Some(pool.zone.to_string()),
            lifecycle: pool.market.lifecycle(),
            launched,
            error: error.map(str::to_string),
        });
    }

    /// One entry per pool and outcome: an answer may list a pool's
    /// instances in several items (moto gives one per instance).
    fn push_answer(&self, answer: PoolAnswer) {
        // A panic while holding the lock leaves a valid list behind.
        let mut answers = self
            .answers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let same = answers.iter_mut().find(|a| {
            a.region == answer.region
                && a.instance_type == answer.instance_type
                && a.zone == answer.zone
                && a.lifecycle == answer.lifecycle
                && a.error.is_none()
                && answer.error.is_none()
        });
        match same {
            Some(found) => found.launched += answer.launched,
            None => answers.push(answer),
        }
    }

    pub(super) fn drain_answers(&self) -> Vec<PoolAnswer> {
        std::mem::take(
            &mut *self
                .answers
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }
}

fn zone_of(prepared: &Prepared, place: &FleetPlace) -> Option<String> {
    place.zone.clone().or_else(|| {
        let subnet = place.subnet.as_deref()?;
        prepared
            .subnets
            .iter()
            .find(|s| s.id == subnet)
            .map(|s| s.zone.clone())
    })
}

fn count(ids: &[String]) -> u32 {
    u32::try_from(ids.len()).unwrap_or(u32::MAX)
}
