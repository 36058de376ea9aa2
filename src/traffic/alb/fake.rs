//! An in-memory ELBv2 region for unit tests of the ALB door: listeners,
//! target groups, tags and targets, with every call recorded. Registered
//! targets are healthy after `healthy_after` health reads; deregistered
//! ones drain for `draining_reads` reads. It never opens a socket.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::elbv2::{
    ElbError, ElbResult, Elbv2Api, ListedTargetGroup, Listener, LoadBalancer, NewTargetGroup, Tags,
    TargetGroup, TargetHealth,
};

#[derive(Debug, Default)]
pub struct World {
    pub listeners: BTreeMap<String, Listener>,
    pub groups: BTreeMap<String, (NewTargetGroup, Tags)>,
    /// Per group: target id → health reads left before healthy (or, when
    /// negative, draining reads left).
    pub targets: BTreeMap<String, BTreeMap<String, i32>>,
    pub calls: Vec<(String, &'static str)>,
    pub answers_503: bool,
    pub healthy_after: i32,
    pub draining_reads: i32,
}

#[derive(Debug, Clone)]
pub struct FakeElb {
    region: String,
    pub world: Arc<Mutex<World>>,
}

impl FakeElb {
    /// A region with one listener `listener` on a load balancer in `vpc-1`.
    pub fn new(region: &str, listener: &str) -> FakeElb {
        let mut world = World::default();
        world.listeners.insert(
            listener.to_string(),
            Listener {
                arn: listener.to_string(),
                load_balancer_arn: format!("lb-{region}"),
                port: Some(80),
                forward: Vec::new(),
            },
        );
        FakeElb {
            region: region.to_string(),
            world: Arc::new(Mutex::new(world)),
        }
    }

    fn call(&self, action: &'static str) -> std::sync::MutexGuard<'_, World> {
        let mut world = self.world.lock().expect("not poisoned");
        world.calls.push((self.region.clone(), action));
        world
    }

    /// A target group `arn` (named after its last `/` segment) with
    /// `tags`, as another run or another tool left it.
    pub fn add_group(&self, arn: &str, tags: &[(&str, &str)]) {
        let tags: Tags = tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let group = NewTargetGroup {
            name: arn.rsplit('/').next().unwrap_or(arn).to_string(),
            vpc_id: "vpc-1".to_string(),
            port: 8080,
            health_path: "/health".to_string(),
            tags: tags.clone(),
        };
        let mut world = self.world.lock().expect("not poisoned");
        world.groups.insert(arn.to_string(), (group, tags));
    }

    pub fn count(&self, action: &str) -> usize {
        self.world
            .lock()
            .expect("not poisoned")
            .calls
            .iter()
            .filter(|(_, a)| *a == action)
            .count()
    }
}

fn not_found(action: &'static str, what: &str) -> ElbError {
    ElbError::service(action, "NotFound", what)
}

impl Elbv2Api for FakeElb {
    fn region(&self) -> &str {
        &self.region
    }

    async fn describe_listener(&self, arn: &str) -> ElbResult<Listener> {
        let world = self.call("DescribeListeners");
        world
            .listeners
            .get(arn)
            .cloned()
            .ok_or_else(|| not_found("DescribeListeners", arn))
    }

    async fn describe_load_balancer(&self, arn: &str) -> ElbResult<LoadBalancer> {
        drop(self.call("DescribeLoadBalancers"));
        Ok(LoadBalancer {
            arn: arn.to_string(),
            vpc_id: "vpc-1".to_string(),
            dns_name: None,
        })
    }

    async fn target_groups_named(&self, names: &[String]) -> ElbResult<Vec<TargetGroup>> {
        let world = self.call("DescribeTargetGroups");
        Ok(world
            .groups
            .iter()
            .filter(|(_, (g, _))| names.contains(&g.name))
            .map(|(arn, (g, _))| TargetGroup {
                arn: arn.clone(),
                name: g.name.clone(),
            })
            .collect())
    }

    async fn describe_tags(&self, arns: &[String]) -> ElbResult<Vec<(String, Tags)>> {
        let world = self.call("DescribeTags");
        if arns.len() > 20 {
            // ELB's own limit on ResourceArns.
            return Err(ElbError::service(
                "DescribeTags",
                "ValidationError",
                "at most 20 resource ARNs",
            ));
        }
        Ok(arns
            .iter()
            .filter_map(|a| world.groups.get(a).map(|(_, t)| (a.clone(), t.clone())))
            .collect())
    }

    async fn create_target_group(&self, group: &NewTargetGroup) -> ElbResult<String> {
        let mut world = self.call("CreateTargetGroup");
        let arn = format!("tg-{}-{}", self.region, group.name);
        world
            .groups
            .insert(arn.clone(), (group.clone(), group.tags.clone()));
        Ok(arn)
    }

    async fn add_tags(&self, arn: &str, tags: &Tags) -> ElbResult<()> {
        let mut world = self.call("AddTags");
        let (_, existing) = world
            .groups
            .get_mut(arn)
            .ok_or_else(|| not_found("AddTags", arn))?;
        for (k, v) in tags {
            existing.retain(|(key, _)| key != k);
            existing.push((k.clone(), v.clone()));
        }
        Ok(())
    }

    async fn forward(&self, listener_arn: &str, weights: &[(String, i32)]) -> ElbResult<()> {
        let mut world = self.call("ModifyListener");
        world.answers_503 = false;
        let listener = world
            .listeners
            .get_mut(listener_arn)
            .ok_or_else(|| not_found("ModifyListener", listener_arn))?;
        listener.forward = weights.to_vec();
        Ok(())
    }

    async fn answer_503(&self, listener_arn: &str) -> ElbResult<()> {
        let mut world = self.call("ModifyListener");
        world.answers_503 = true;
        let listener = world
            .listeners
            .get_mut(listener_arn)
            .ok_or_else(|| not_found("ModifyListener", listener_arn))?;
        listener.forward.clear();
        Ok(())
    }

    async fn register_targets(&self, arn: &str, ids: &[String], _port: u16) -> ElbResult<()> {
        let mut world = self.call("RegisterTargets");
        let after = world.healthy_after;
        let targets = world.targets.entry(arn.to_string()).or_default();
        for id in ids {
            targets.insert(id.clone(), after);
        }
        Ok(())
    }

    async fn deregister_targets(&self, arn: &str, ids: &[String]) -> ElbResult<()> {
        let mut world = self.call("DeregisterTargets");
        let reads = world.draining_reads;
        let targets = world.targets.entry(arn.to_string()).or_default();
        for id in ids {
            targets.insert(id.clone(), -reads - 1);
        }
        Ok(())
    }

    async fn target_health(&self, arn: &str) -> ElbResult<Vec<TargetHealth>> {
        let mut world = self.call("DescribeTargetHealth");
        let targets = world.targets.entry(arn.to_string()).or_default();
        let mut health = Vec::new();
        for (id, left) in targets.iter_mut() {
            let state = match *left {
                0 => "healthy",
                -1 => "unused",
                n if n > 0 => "initial",
                _ => "draining",
            };
            health.push(TargetHealth {
                id: id.clone(),
                state: state.to_string(),
                reason: None,
            });
            if *left > 0 {
                *left -= 1;
            } else if *left < -1 {
                *left += 1;
            }
        }
        Ok(health)
    }

    async fn deregistration_delay(&self, _arn: &str) -> ElbResult<Duration> {
        drop(self.call("DescribeTargetGroupAttributes"));
        Ok(Duration::from_secs(300))
    }

    async fn delete_target_group(&self, arn: &str) -> ElbResult<()> {
        let mut world = self.call("DeleteTargetGroup");
        if world
            .listeners
            .values()
            .any(|l| l.forward.iter().any(|(a, _)| a == arn))
        {
            return Err(ElbError::service(
                "DeleteTargetGroup",
                "ResourceInUse",
                "in use by a listener",
            ));
        }
        world.groups.remove(arn);
        world.targets.remove(arn);
        Ok(())
    }

    async fn all_target_groups(&self) -> ElbResult<Vec<ListedTargetGroup>> {
        let world = self.call("DescribeTargetGroups");
        Ok(world
            .groups
            .iter()
            .map(|(arn, (group, _))| ListedTargetGroup {
                arn: arn.clone(),
                name: group.name.clone(),
                load_balancers: world
                    .listeners
                    .values()
                    .filter(|l| l.forward.iter().any(|(g, _)| g == arn))
                    .map(|l| l.load_balancer_arn.clone())
                    .collect(),
            })
            .collect())
    }

    async fn listeners_of(&self, load_balancer_arn: &str) -> ElbResult<Vec<Listener>> {
        let world = self.call("DescribeListeners");
        Ok(world
            .listeners
            .values()
            .filter(|l| l.load_balancer_arn == load_balancer_arn)
            .cloned()
            .collect())
    }
}
