//! The AWS front door: an existing Application Load Balancer listener per
//! region (`[[traffic.aws.listeners]]`), whose default action respot points
//! at two target groups of the deployment, blue and green, with a weighted
//! `ForwardConfig`.
//!
//! Tags are the only state. Each target group carries `respot:deployment`,
//! `respot:colour`, the generation it holds (`respot:generation`) and the
//! generation kept out of the door (`respot:kept`, `<generation>@<time>`).
//! The listener's weights say who serves. A run that dies mid-shift is
//! picked up from what the listener and the tags say, never from memory.
//!
//! A shift is one `ModifyListener` per region, every region at once.
//! Registration waits for `DescribeTargetHealth` to say healthy;
//! deregistration waits while the ALB reports the targets draining, up to
//! the group's deregistration delay. `remove` points the listener at a
//! fixed 503 (a listener forwarding to a group cannot lose it) and deletes
//! both groups; it restores nothing else.

mod elbv2;
#[cfg(test)]
mod fake;
mod inventory;
mod probe;
mod sdk;
mod sweep;
#[cfg(test)]
mod tests;
mod wire;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

pub use self::elbv2::{ElbError, Elbv2Api};
use self::elbv2::{NewTargetGroup, Tags};
pub use self::inventory::tagged_target_groups;
pub use self::sdk::SdkElbv2;
pub use self::sweep::remove_tagged;
use self::wire::{kept_text, parse_kept};
use super::{DoorError, DoorState, FrontDoor, Kept, Probe, Result, Weights};
use crate::config::{ProbeUrl, TrafficSection};
use crate::provider::{Instance, InstanceId, tag};

const COLOUR: &str = "respot:colour";
const KEPT: &str = "respot:kept";
const COLOURS: [&str; 2] = ["blue", "green"];

/// One of the deployment's two target groups in a region, as its tags say.
#[derive(Debug, Clone, PartialEq)]
struct Group {
    colour: &'static str,
    arn: String,
    generation: Option<u64>,
}

/// The listener and the deployment's groups in one region.
#[derive(Debug)]
struct RegionDoor<E> {
    api: E,
    listener_arn: String,
    /// The groups once read or created; the shift needs no other call.
    groups: Mutex<Option<Vec<Group>>>,
    /// `probe_url` of this listener; else the guard probes the balancer's
    /// DNS name on the listener's port.
    probe_url: Option<ProbeUrl>,
    /// Where `probe` sends its GET (host, port, path), found once.
    address: tokio::sync::OnceCell<(String, u16, String)>,
}

/// The ALB door of one deployment, across its regions.
#[derive(Debug)]
pub struct AlbDoor<E: Elbv2Api = SdkElbv2> {
    deployment: String,
    guest_port: u16,
    health_path: String,
    regions: Vec<RegionDoor<E>>,
    /// How often health and draining are polled.
    poll: Duration,
}

impl AlbDoor {
    /// The door `traffic.aws.listeners` names, with clients from `sdk`.
    pub fn new(sdk: &aws_config::SdkConfig, deployment: &str, traffic: &TrafficSection) -> AlbDoor {
        let listeners = traffic
            .aws
            .as_ref()
            .map(|a| a.listeners.as_slice())
            .unwrap_or_default();
        let apis = listeners
            .iter()
            .map(|l| (SdkElbv2::new(sdk, &l.region), l.listener_arn.clone()))
            .collect();
        AlbDoor::with_api(apis, deployment, traffic.guest_port, &traffic.health_path)
            .with_probe_urls(listeners.iter().map(|l| l.probe(&traffic.health_path)).collect())
    }
}

impl<E: Elbv2Api> AlbDoor<E> {
    /// A door over any [`Elbv2Api`]: one (client, listener ARN) per region.
    pub fn with_api(
        listeners: Vec<(E, String)>,
        deployment: &str,
        guest_port: u16,
        health_path: &str,
    ) -> Self {
        AlbDoor {
            deployment: deployment.to_string(),
            guest_port,
            health_path: health_path.to_string(),
            regions: listeners
                .into_iter()
                .map(|(api, listener_arn)| RegionDoor {
                    api,
                    listener_arn,
                    groups: Mutex::new(None),
                    probe_url: None,
                    address: tokio::sync::OnceCell::new(),
                })
                .collect(),
            poll: Duration::from_secs(2),
        }
    }

    /// The guard probes these URLs instead of the balancers' DNS names: one
    /// per listener, in the listeners' order (`None` keeps the DNS name).
    pub fn with_probe_urls(mut self, urls: Vec<Option<ProbeUrl>>) -> Self {
        for (region, url) in self.regions.iter_mut().zip(urls) {
            region.probe_url = url;
        }
        self
    }

    /// Polls every `poll` instead (tests).
    pub fn with_poll(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// The target group name of `colour`: `respot-<deployment>-<colour>`,
    /// or, past ELB's 32 characters, a hash of the deployment name.
    pub fn group_name(&self, colour: &str) -> String {
        let plain = format!("respot-{}-{colour}", self.deployment);
        if plain.len() <= 32 {
            return plain;
        }
        let hash = hex::encode(Sha256::digest(self.deployment.as_bytes()));
        format!("respot-{}-{colour}", &hash[..12])
    }

    fn failed(&self, region: &RegionDoor<E>, action: &str, err: impl std::fmt::Display) -> DoorError {
        DoorError::Failed {
            door: format!("ALB listener {} ({})", region.listener_arn, region.api.region()),
            action: action.to_string(),
            detail: err.to_string(),
        }
    }

    /// The region's groups, read from ELB (and created when `create` and
    /// missing); `None` when they do not exist and `create` is false.
    async fn groups(&self, region: &RegionDoor<E>, create: bool) -> Result<Option<Vec<Group>>> {
        if let Some(groups) = region.groups.lock().expect("not poisoned").clone() {
            return Ok(Some(groups));
        }
        let names: Vec<String> = COLOURS.iter().map(|c| self.group_name(c)).collect();
        let api = &region.api;
        let found = api
            .target_groups_named(&names)
            .await
            .map_err(|e| self.failed(region, "find its target groups", e))?;
        let arns: Vec<String> = found.iter().map(|g| g.arn.clone()).collect();
        let tags = api
            .describe_tags(&arns)
            .await
            .map_err(|e| self.failed(region, "read its target groups' tags", e))?;
        let mut groups = Vec::new();
        for (colour, name) in COLOURS.iter().zip(&names) {
            let Some(existing) = found.iter().find(|g| &g.name == name) else {
                continue;
            };
            let tags = tags
                .iter()
                .find(|(arn, _)| arn == &existing.arn)
                .map(|(_, t)| t.as_slice());
            if value(tags.unwrap_or_default(), tag::DEPLOYMENT) != Some(self.deployment.as_str()) {
                return Err(self.failed(
                    region,
                    "use its target groups",
                    format!(
                        "target group `{name}` exists but is not tagged {}={}; rename or delete it",
                        tag::DEPLOYMENT,
                        self.deployment
                    ),
                ));
            }
            groups.push(Group {
                colour,
                arn: existing.arn.clone(),
                generation: value(tags.unwrap_or_default(), tag::GENERATION).and_then(|g| g.parse().ok()),
            });
        }
        if groups.len() < COLOURS.len() {
            if !create {
                // Nothing, or half of what an interrupted run created: use
                // what is there, and remember nothing.
                return Ok((!groups.is_empty()).then_some(groups));
            }
            self.create_missing(region, &mut groups).await?;
        }
        *region.groups.lock().expect("not poisoned") = Some(groups.clone());
        Ok(Some(groups))
    }

    /// Creates the colours `groups` lacks, in the listener's VPC.
    async fn create_missing(&self, region: &RegionDoor<E>, groups: &mut Vec<Group>) -> Result<()> {
        let api = &region.api;
        let listener = api
            .describe_listener(&region.listener_arn)
            .await
            .map_err(|e| self.failed(region, "be read", e))?;
        let lb = api
            .describe_load_balancer(&listener.load_balancer_arn)
            .await
            .map_err(|e| self.failed(region, "read its load balancer", e))?;
        for colour in COLOURS {
            if groups.iter().any(|g| g.colour == colour) {
                continue;
            }
            let new = NewTargetGroup {
                name: self.group_name(colour),
                vpc_id: lb.vpc_id.clone(),
                port: self.guest_port,
                health_path: self.health_path.clone(),
                tags: vec![
                    (tag::DEPLOYMENT.to_string(), self.deployment.clone()),
                    (COLOUR.to_string(), colour.to_string()),
                ],
            };
            let arn = api
                .create_target_group(&new)
                .await
                .map_err(|e| self.failed(region, "create a target group", e))?;
            groups.push(Group {
                colour,
                arn,
                generation: None,
            });
        }
        groups.sort_by_key(|g| g.colour);
        Ok(())
    }

    /// Runs `work` in every region at once; the first error wins.
    async fn every_region<'a, T, F, Fut>(&'a self, work: F) -> Result<Vec<T>>
    where
        F: Fn(&'a RegionDoor<E>) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        futures::future::try_join_all(self.regions.iter().map(work)).await
    }

    /// Registers the instances of `region` (of `targets`) in the group that
    /// holds `generation`, or in a free one, tagging it with the generation.
    async fn register_in(&self, region: &RegionDoor<E>, generation: u64, targets: &[Instance]) -> Result<()> {
        let ids = ids_in(region.api.region(), targets);
        let groups = self.groups(region, true).await?.unwrap_or_default();
        let listener = region
            .api
            .describe_listener(&region.listener_arn)
            .await
            .map_err(|e| self.failed(region, "be read", e))?;
        let weight = |arn: &str| {
            listener
                .forward
                .iter()
                .find(|(a, _)| a == arn)
                .map_or(0, |(_, w)| *w)
        };
        let chosen = groups
            .iter()
            .find(|g| g.generation == Some(generation))
            .or_else(|| groups.iter().find(|g| g.generation.is_none()))
            .or_else(|| groups.iter().find(|g| weight(&g.arn) == 0))
            .cloned()
            .ok_or_else(|| {
                self.failed(
                    region,
                    &format!("take generation {generation}"),
                    "both target groups serve traffic; shift everything to one generation first",
                )
            })?;
        if chosen.generation != Some(generation) {
            self.empty_group(region, &chosen).await?;
            let tags: Tags = vec![(tag::GENERATION.to_string(), generation.to_string())];
            region
                .api
                .add_tags(&chosen.arn, &tags)
                .await
                .map_err(|e| self.failed(region, "tag a target group", e))?;
            let mut cache = region.groups.lock().expect("not poisoned");
            if let Some(g) = cache.iter_mut().flatten().find(|g| g.arn == chosen.arn) {
                g.generation = Some(generation);
            }
        }
        if ids.is_empty() {
            return Ok(());
        }
        region
            .api
            .register_targets(&chosen.arn, &ids, self.guest_port)
            .await
            .map_err(|e| self.failed(region, "register targets", e))
    }

    /// Deregisters whatever an older generation left in a group being reused.
    async fn empty_group(&self, region: &RegionDoor<E>, group: &Group) -> Result<()> {
        let left: Vec<String> = region
            .api
            .target_health(&group.arn)
            .await
            .map_err(|e| self.failed(region, "read target health", e))?
            .into_iter()
            .filter(|t| t.state != "draining" && t.state != "unused")
            .map(|t| t.id)
            .collect();
        if left.is_empty() {
            return Ok(());
        }
        region
            .api
            .deregister_targets(&group.arn, &left)
            .await
            .map_err(|e| self.failed(region, "deregister old targets", e))
    }

    async fn wait_healthy_in(
        &self,
        region: &RegionDoor<E>,
        generation: u64,
        targets: &[Instance],
        timeout: Duration,
    ) -> Result<()> {
        let ids = ids_in(region.api.region(), targets);
        if ids.is_empty() {
            return Ok(());
        }
        let group = self.group_of(region, generation).await?;
        let deadline = Instant::now() + timeout;
        loop {
            let health = region
                .api
                .target_health(&group.arn)
                .await
                .map_err(|e| self.failed(region, "read target health", e))?;
            let pending: Vec<String> = ids
                .iter()
                .filter(|id| !health.iter().any(|h| &&h.id == id && h.state == "healthy"))
                .map(|id| {
                    let seen = health.iter().find(|h| &h.id == id);
                    format!(
                        "{id} ({})",
                        seen.map_or("not registered".to_string(), |h| match &h.reason {
                            Some(r) => format!("{}: {r}", h.state),
                            None => h.state.clone(),
                        })
                    )
                })
                .collect();
            if pending.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(DoorError::Unhealthy {
                    generation,
                    waited: timeout,
                    detail: format!("{}: {}", region.api.region(), pending.join(", ")),
                });
            }
            tokio::time::sleep(self.poll).await;
        }
    }

    async fn group_of(&self, region: &RegionDoor<E>, generation: u64) -> Result<Group> {
        self.groups(region, false)
            .await?
            .unwrap_or_default()
            .into_iter()
            .find(|g| g.generation == Some(generation))
            .ok_or_else(|| {
                self.failed(
                    region,
                    "find a generation",
                    format!("no target group holds generation {generation}"),
                )
            })
    }

    /// One `ModifyListener`: the groups' weights from `weights`, or a fixed
    /// 503 when every weight is 0.
    async fn shift_in(&self, region: &RegionDoor<E>, weights: &Weights) -> Result<()> {
        let groups = self.groups(region, false).await?.unwrap_or_default();
        for (generation, weight) in weights {
            if *weight > 0 && !groups.iter().any(|g| g.generation == Some(*generation)) {
                return Err(self.failed(
                    region,
                    "shift traffic",
                    format!("generation {generation} is not registered behind the door"),
                ));
            }
        }
        let forward: Vec<(String, i32)> = groups
            .iter()
            .map(|g| {
                let w = g.generation.and_then(|n| weights.get(&n)).copied().unwrap_or(0);
                (g.arn.clone(), i32::try_from(w).unwrap_or(i32::MAX))
            })
            .collect();
        let result = if forward.iter().all(|(_, w)| *w == 0) {
            region.api.answer_503(&region.listener_arn).await
        } else {
            region.api.forward(&region.listener_arn, &forward).await
        };
        result.map_err(|e| self.failed(region, "shift traffic", e))
    }

    async fn drain_in(&self, region: &RegionDoor<E>, targets: &[Instance]) -> Result<()> {
        let ids = ids_in(region.api.region(), targets);
        if ids.is_empty() {
            return Ok(());
        }
        let groups = self.groups(region, false).await?.unwrap_or_default();
        for group in &groups {
            let health = region
                .api
                .target_health(&group.arn)
                .await
                .map_err(|e| self.failed(region, "read target health", e))?;
            let registered: Vec<String> = ids
                .iter()
                .filter(|id| {
                    health
                        .iter()
                        .any(|h| &&h.id == id && h.state != "unused" && h.state != "draining")
                })
                .cloned()
                .collect();
            if registered.is_empty() {
                continue;
            }
            region
                .api
                .deregister_targets(&group.arn, &registered)
                .await
                .map_err(|e| self.failed(region, "deregister targets", e))?;
            self.wait_drained(region, group, &registered).await?;
        }
        Ok(())
    }

    /// Waits while the ALB reports `ids` draining, at most the group's
    /// deregistration delay (plus a little for the ALB's own clock).
    async fn wait_drained(&self, region: &RegionDoor<E>, group: &Group, ids: &[String]) -> Result<()> {
        let delay = region
            .api
            .deregistration_delay(&group.arn)
            .await
            .map_err(|e| self.failed(region, "read the deregistration delay", e))?;
        let deadline = Instant::now() + delay + Duration::from_secs(10);
        loop {
            let health = region
                .api
                .target_health(&group.arn)
                .await
                .map_err(|e| self.failed(region, "read target health", e))?;
            let draining = health
                .iter()
                .any(|h| ids.contains(&h.id) && h.state == "draining");
            if !draining || Instant::now() >= deadline {
                return Ok(());
            }
            tokio::time::sleep(self.poll).await;
        }
    }

    /// Weights, targets and the kept generation, as the listener and the
    /// tags of one region say.
    async fn state_in(&self, region: &RegionDoor<E>) -> Result<DoorState> {
        let Some(groups) = self.groups(region, false).await? else {
            return Ok(DoorState::default());
        };
        let api = &region.api;
        let listener = api
            .describe_listener(&region.listener_arn)
            .await
            .map_err(|e| self.failed(region, "be read", e))?;
        let arns: Vec<String> = groups.iter().map(|g| g.arn.clone()).collect();
        let tags = api
            .describe_tags(&arns)
            .await
            .map_err(|e| self.failed(region, "read its target groups' tags", e))?;
        let mut state = DoorState::default();
        for group in &groups {
            let Some(generation) = group.generation else {
                continue;
            };
            let weight = listener
                .forward
                .iter()
                .find(|(a, _)| a == &group.arn)
                .map_or(0, |(_, w)| *w);
            state
                .weights
                .insert(generation, u32::try_from(weight).unwrap_or(0));
            let health = api
                .target_health(&group.arn)
                .await
                .map_err(|e| self.failed(region, "read target health", e))?;
            let registered = health
                .into_iter()
                .filter(|h| h.state != "unused" && h.state != "draining")
                .map(|h| InstanceId(h.id));
            state.targets.entry(generation).or_default().extend(registered);
            let kept = tags
                .iter()
                .find(|(a, _)| a == &group.arn)
                .and_then(|(_, t)| value(t, KEPT));
            state.kept = state.kept.or(kept.and_then(parse_kept));
        }
        Ok(state)
    }

    async fn keep_in(&self, region: &RegionDoor<E>, text: &str) -> Result<()> {
        let Some(groups) = self.groups(region, false).await? else {
            return Ok(());
        };
        for group in groups {
            region
                .api
                .add_tags(&group.arn, &vec![(KEPT.to_string(), text.to_string())])
                .await
                .map_err(|e| self.failed(region, "tag a target group", e))?;
        }
        Ok(())
    }

    async fn remove_in(&self, region: &RegionDoor<E>) -> Result<Vec<String>> {
        let Some(groups) = self.groups(region, false).await? else {
            return Ok(Vec::new());
        };
        let api = &region.api;
        let listener = api
            .describe_listener(&region.listener_arn)
            .await
            .map_err(|e| self.failed(region, "be read", e))?;
        if listener
            .forward
            .iter()
            .any(|(arn, _)| groups.iter().any(|g| &g.arn == arn))
        {
            api.answer_503(&region.listener_arn)
                .await
                .map_err(|e| self.failed(region, "stop forwarding", e))?;
        }
        let mut removed = Vec::new();
        for group in &groups {
            api.delete_target_group(&group.arn)
                .await
                .map_err(|e| self.failed(region, "delete a target group", e))?;
            removed.push(format!(
                "target group {} ({})",
                self.group_name(group.colour),
                api.region()
            ));
        }
        *region.groups.lock().expect("not poisoned") = None;
        Ok(removed)
    }
}

fn value<'a>(tags: &'a [(String, String)], key: &str) -> Option<&'a str> {
    tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn ids_in(region: &str, targets: &[Instance]) -> Vec<String> {
    targets
        .iter()
        .filter(|i| i.region == region)
        .map(|i| i.id.0.clone())
        .collect()
}

impl<E: Elbv2Api> FrontDoor for AlbDoor<E> {
    fn describe(&self) -> String {
        let regions: Vec<&str> = self.regions.iter().map(|r| r.api.region()).collect();
        format!("ALB listeners in {}", regions.join(", "))
    }

    async fn register(&self, generation: u64, targets: &[Instance]) -> Result<()> {
        self.every_region(|r| self.register_in(r, generation, targets))
            .await?;
        Ok(())
    }

    async fn wait_healthy(&self, generation: u64, targets: &[Instance], timeout: Duration) -> Result<()> {
        self.every_region(|r| self.wait_healthy_in(r, generation, targets, timeout))
            .await?;
        Ok(())
    }

    async fn shift(&self, weights: &Weights) -> Result<()> {
        self.every_region(|r| self.shift_in(r, weights)).await?;
        Ok(())
    }

    async fn drain(&self, targets: &[Instance]) -> Result<()> {
        self.every_region(|r| self.drain_in(r, targets)).await?;
        Ok(())
    }

    /// A GET of the health path through every region's door at once.
    async fn probe(&self) -> Probe {
        self.probe_every_region().await
    }

    /// The regions' states merged: weights from the first region that has
    /// the door, targets from all; `diverged` when regions route
    /// differently (a run killed between two regions' `ModifyListener`).
    async fn state(&self) -> Result<DoorState> {
        let states = self.every_region(|r| self.state_in(r)).await?;
        let mut merged = DoorState::default();
        let mut routes: Vec<Weights> = states
            .iter()
            .filter(|s| !s.weights.is_empty())
            .map(DoorState::serving_weights)
            .collect();
        routes.dedup();
        merged.diverged = routes.len() > 1;
        for state in states {
            if merged.weights.is_empty() {
                merged.weights = state.weights;
            }
            for (generation, ids) in state.targets {
                merged.targets.entry(generation).or_default().extend(ids);
            }
            merged.kept = merged.kept.or(state.kept);
        }
        Ok(merged)
    }

    async fn keep(&self, kept: Option<Kept>) -> Result<()> {
        let text = kept_text(kept);
        self.every_region(|r| self.keep_in(r, &text)).await?;
        Ok(())
    }

    async fn remove(&self) -> Result<Vec<String>> {
        Ok(self.every_region(|r| self.remove_in(r)).await?.concat())
    }
}
