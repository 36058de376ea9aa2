//! `respot list --all-deployments`: every respot-tagged instance and
//! resource in the covered regions, grouped by deployment, with its age,
//! regions and generations, whether it is this blueprint's deployment (and
//! runs its current render), and what is left without a live instance: a
//! security group whose instances are gone, an open spot request, a
//! half-made VM directory. `respot destroy --deployment NAME` removes them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use serde::Serialize;

use super::{age_secs, current_digest, short_age};
use crate::commands::{Context, ExitStatus};
use crate::engine::EngineError;
use crate::error::{Error, Result};
use crate::output::{Count, Table};
use crate::provider::{AnyProvider, Instance, Inventory, Provider, ResourceKind, TaggedResource};
use crate::template::Digest;
use crate::traffic::alb::tagged_target_groups;

/// One deployment, as the inventory found it.
#[derive(Debug, Serialize)]
struct DeploymentRow {
    deployment: String,
    /// It is the deployment `respot.toml` names.
    this_blueprint: bool,
    /// For this blueprint's deployment: every live instance runs the
    /// current render. `None` for other deployments, or when unknown.
    current: Option<bool>,
    regions: Vec<String>,
    /// Generations with a live instance.
    generations: Vec<u64>,
    live: usize,
    /// Terminated instances the provider still lists.
    gone: usize,
    /// The oldest live instance's (or, without one, resource's) age.
    age_secs: Option<u64>,
    instances: Vec<Instance>,
    resources: Vec<TaggedResource>,
    /// Resources left without a live instance, each with why.
    leftovers: Vec<String>,
}

#[derive(Debug, Serialize)]
struct AllDeployments {
    deployments: Vec<DeploymentRow>,
    /// What was not looked for, and why.
    not_checked: Vec<String>,
}

pub async fn list_all(context: &Context<'_>) -> Result<ExitStatus> {
    let (config, printer) = (context.config()?, context.printer);
    let provider = context.connect().await?;
    let current = current_digest(context)?;
    let mut inventory = provider.inventory().await?;
    if let AnyProvider::Aws(aws) = &provider {
        // Front doors' target groups, whichever blueprint made them.
        let groups = tagged_target_groups(aws.sdk_config(), &aws.region_names())
            .await
            .map_err(EngineError::from)?;
        inventory.resources.extend(groups);
    }
    let report = AllDeployments {
        not_checked: inventory.not_checked.clone(),
        deployments: group(inventory, &config.deployment.name, current.as_ref()),
    };
    if printer.is_json() {
        printer.json(&report).map_err(Error::Output)?;
        return Ok(ExitStatus::Success);
    }
    if report.deployments.is_empty() {
        printer.info("nothing tagged by respot was found");
    } else {
        printer
            .data(&table(&report.deployments).render())
            .map_err(Error::Output)?;
        let leftovers: usize = report.deployments.iter().map(|d| d.leftovers.len()).sum();
        printer.info(&format!(
            "{}; {} left without a live instance{}",
            Count(report.deployments.len(), "deployment"),
            Count(leftovers, "resource"),
            if leftovers > 0 {
                " (`respot destroy --deployment NAME` removes a deployment's)"
            } else {
                ""
            }
        ));
    }
    for skipped in &report.not_checked {
        printer.info(&format!("not checked: {skipped}"));
    }
    Ok(ExitStatus::Success)
}

/// Groups the inventory by deployment, in name order.
fn group(inventory: Inventory, this: &str, current: Option<&Digest>) -> Vec<DeploymentRow> {
    let mut instances: BTreeMap<String, Vec<Instance>> = BTreeMap::new();
    for (deployment, instance) in inventory.instances {
        instances.entry(deployment).or_default().push(instance);
    }
    let mut resources: BTreeMap<String, Vec<TaggedResource>> = BTreeMap::new();
    for resource in inventory.resources {
        resources
            .entry(resource.deployment.clone())
            .or_default()
            .push(resource);
    }
    let names: BTreeSet<String> = instances.keys().chain(resources.keys()).cloned().collect();
    names
        .into_iter()
        .map(|name| {
            let instances = instances.remove(&name).unwrap_or_default();
            let resources = resources.remove(&name).unwrap_or_default();
            row(name, instances, resources, this, current)
        })
        .collect()
}

fn row(
    deployment: String,
    instances: Vec<Instance>,
    resources: Vec<TaggedResource>,
    this: &str,
    current: Option<&Digest>,
) -> DeploymentRow {
    let live: Vec<&Instance> = instances.iter().filter(|i| i.state.is_live()).collect();
    let this_blueprint = deployment == this;
    let regions: BTreeSet<String> = instances
        .iter()
        .map(|i| i.region.clone())
        .chain(resources.iter().map(|r| r.region.clone()))
        .collect();
    let generations: BTreeSet<u64> = live.iter().filter_map(|i| i.generation).collect();
    let age = live.iter().filter_map(|i| age_secs(i)).max().or_else(|| {
        resources
            .iter()
            .filter_map(|r| {
                r.created_at
                    .and_then(|t| SystemTime::now().duration_since(t).ok())
            })
            .map(|d| d.as_secs())
            .max()
    });
    let leftovers = resources.iter().filter_map(|r| leftover(r, &live)).collect();
    DeploymentRow {
        this_blueprint,
        current: match (this_blueprint, current) {
            (true, Some(digest)) => Some(live.iter().all(|i| i.digest.as_ref() == Some(digest))),
            _ => None,
        },
        regions: regions.into_iter().collect(),
        generations: generations.into_iter().collect(),
        live: live.len(),
        gone: instances.len() - live.len(),
        age_secs: age,
        deployment,
        leftovers,
        instances,
        resources,
    }
}

/// Why `resource` is left without a live instance, or `None` when one
/// still uses it.
fn leftover(resource: &TaggedResource, live: &[&Instance]) -> Option<String> {
    let here = format!("{} {} in {}", resource.kind, resource.id, resource.region);
    match resource.kind {
        ResourceKind::SecurityGroup | ResourceKind::TargetGroup => {
            let used = live.iter().any(|i| i.region == resource.region);
            (!used).then(|| format!("{here}: no live instance there"))
        }
        ResourceKind::SpotRequest => {
            let open = matches!(resource.state.as_deref(), Some("open" | "active"));
            let served = resource
                .instance
                .as_ref()
                .is_some_and(|id| live.iter().any(|i| i.id.0 == *id));
            (open && !served).then(|| format!("{here}: still open, its instance is gone"))
        }
        ResourceKind::VmDirectory => Some(format!("{here}: a launch left it without a record")),
    }
}

fn table(rows: &[DeploymentRow]) -> Table {
    let mut table = Table::new([
        "DEPLOYMENT",
        "BLUEPRINT",
        "REGIONS",
        "LIVE",
        "GONE",
        "GEN",
        "AGE",
        "LEFT WITHOUT A LIVE INSTANCE",
    ]);
    for row in rows {
        let blueprint = match (row.this_blueprint, row.current) {
            (true, Some(true)) => "this, current",
            (true, Some(false)) => "this, stale",
            (true, None) => "this",
            (false, _) => "other",
        };
        let generations: Vec<String> = row.generations.iter().map(u64::to_string).collect();
        table.row([
            row.deployment.clone(),
            blueprint.to_string(),
            row.regions.join(","),
            row.live.to_string(),
            row.gone.to_string(),
            if generations.is_empty() {
                "-".to_string()
            } else {
                generations.join(",")
            },
            short_age(row.age_secs),
            if row.leftovers.is_empty() {
                "-".to_string()
            } else {
                row.leftovers.join("; ")
            },
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{InstanceId, InstanceState, Lifecycle};

    fn instance(id: &str, region: &str, state: InstanceState) -> Instance {
        Instance {
            id: InstanceId(id.to_string()),
            name: id.to_string(),
            region: region.to_string(),
            zone: None,
            instance_type: "t3.small".to_string(),
            lifecycle: Lifecycle::Spot,
            state,
            state_reason: None,
            public_ip: None,
            private_ip: None,
            ssh: None,
            digest: None,
            version: None,
            generation: Some(1),
            launched_at: None,
            secrets: None,
        }
    }

    fn resource(kind: ResourceKind, region: &str, state: Option<&str>, of: Option<&str>) -> TaggedResource {
        TaggedResource {
            kind,
            id: "r-1".to_string(),
            name: None,
            region: region.to_string(),
            deployment: "app".to_string(),
            state: state.map(str::to_string),
            instance: of.map(str::to_string),
            created_at: None,
        }
    }

    #[test]
    fn what_is_left_without_a_live_instance() {
        let running = instance("i-1", "eu-west-1", InstanceState::Running);
        let live = [&running];
        let cases = [
            (
                "group with a live instance",
                resource(ResourceKind::SecurityGroup, "eu-west-1", None, None),
                &live[..],
                false,
            ),
            (
                "group in another region",
                resource(ResourceKind::SecurityGroup, "us-east-1", None, None),
                &live[..],
                true,
            ),
            (
                "group, nothing live",
                resource(ResourceKind::SecurityGroup, "eu-west-1", None, None),
                &[][..],
                true,
            ),
            (
                "active request, instance live",
                resource(
                    ResourceKind::SpotRequest,
                    "eu-west-1",
                    Some("active"),
                    Some("i-1"),
                ),
                &live[..],
                false,
            ),
            (
                "active request, instance gone",
                resource(
                    ResourceKind::SpotRequest,
                    "eu-west-1",
                    Some("active"),
                    Some("i-9"),
                ),
                &live[..],
                true,
            ),
            (
                "open request, no instance",
                resource(ResourceKind::SpotRequest, "eu-west-1", Some("open"), None),
                &live[..],
                true,
            ),
            (
                "cancelled request",
                resource(ResourceKind::SpotRequest, "eu-west-1", Some("cancelled"), None),
                &[][..],
                false,
            ),
            (
                "half-made VM dir",
                resource(ResourceKind::VmDirectory, "local", None, None),
                &live[..],
                true,
            ),
        ];
        for (name, resource, live, want) in cases {
            assert_eq!(leftover(&resource, live).is_some(), want, "{name}");
        }
    }

    #[test]
    fn deployments_are_grouped_and_this_one_is_marked() {
        let digest = Digest::parse(&"a".repeat(64)).unwrap();
        let mut current = instance("i-1", "eu-west-1", InstanceState::Running);
        current.digest = Some(digest.clone());
        let inventory = Inventory {
            instances: vec![
                ("app".to_string(), current),
                (
                    "app-2".to_string(),
                    instance("i-2", "eu-west-1", InstanceState::Terminated),
                ),
            ],
            resources: vec![resource(ResourceKind::SecurityGroup, "eu-west-1", None, None)],
            not_checked: Vec::new(),
        };
        let rows = group(inventory, "app", Some(&digest));
        let names: Vec<&str> = rows.iter().map(|r| r.deployment.as_str()).collect();
        assert_eq!(names, ["app", "app-2"]);
        assert_eq!((rows[0].this_blueprint, rows[0].current), (true, Some(true)));
        assert_eq!((rows[0].live, rows[0].leftovers.len()), (1, 0));
        assert_eq!((rows[1].this_blueprint, rows[1].current), (false, None));
        assert_eq!((rows[1].live, rows[1].gone), (0, 1));
    }
}
