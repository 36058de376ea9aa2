//! `plan`: what `deploy` would destroy and create, from reads only.

use serde::Serialize;

use super::{EngineError, Strategy, live};
use crate::provider::{Instance, Lifecycle, Provider};
use crate::template::{Blueprint, Digest};

/// One region of a plan: what `deploy` would destroy and create there.
#[derive(Debug, Serialize)]
pub struct PlanRegion {
    pub region: String,
    pub destroy: usize,
    /// The digests the instances to destroy run (short form; `-` unknown).
    pub destroy_digests: Vec<String>,
    pub create: u32,
    pub instance_type: String,
    pub lifecycle: Option<Lifecycle>,
    pub price_per_hour: Option<f64>,
    /// `create × price_per_hour`.
    pub cost_per_hour: Option<f64>,
    pub price_note: Option<String>,
}

/// How the render compares with what is live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Change {
    /// Nothing is live: deploy would create.
    New,
    /// The live fleet runs this digest: deploy would still replace it.
    Unchanged,
    Changed,
}

impl Change {
    fn of(live: &[Instance], digest: &Digest) -> Change {
        if live.is_empty() {
            Change::New
        } else if live.iter().all(|i| i.digest.as_ref() == Some(digest)) {
            Change::Unchanged
        } else {
            Change::Changed
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Change::New => "nothing is live, deploy would create",
            Change::Unchanged => "the live fleet already runs it; deploy would still replace every instance",
            Change::Changed => "changed against the live fleet",
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Plan {
    pub deployment: String,
    pub strategy: Strategy,
    pub digest: Digest,
    pub version: String,
    pub change: Change,
    pub regions: Vec<PlanRegion>,
    /// The sum over regions, when every region has a price.
    pub cost_per_hour: Option<f64>,
}

/// What `deploy` would do, computed from reads only.
pub async fn plan<P: Provider>(
    provider: &P,
    blueprint: &Blueprint,
    strategy: Strategy,
) -> Result<Plan, EngineError> {
    let deployment = &blueprint.deployment;
    let (listed, planned) = tokio::join!(live(provider, deployment), provider.capacity_plan());
    let (live, planned) = (listed?, planned?);
    let mut names: Vec<String> = planned.iter().map(|p| p.region.clone()).collect();
    for instance in &live {
        if !names.contains(&instance.region) {
            names.push(instance.region.clone());
        }
    }
    let regions: Vec<PlanRegion> = names
        .into_iter()
        .map(|region| {
            let here: Vec<&Instance> = live.iter().filter(|i| i.region == region).collect();
            let mut digests: Vec<String> = here
                .iter()
                .map(|i| i.digest.as_ref().map_or("-", Digest::short).to_string())
                .collect();
            digests.sort();
            digests.dedup();
            let pool = planned.iter().find(|p| p.region == region);
            PlanRegion {
                destroy: here.len(),
                destroy_digests: digests,
                create: pool.map_or(0, |p| p.count),
                instance_type: pool.map_or_else(|| "-".to_string(), |p| p.instance_type.clone()),
                lifecycle: pool.map(|p| p.lifecycle),
                price_per_hour: pool.and_then(|p| p.price_per_hour),
                cost_per_hour: pool.and_then(|p| p.price_per_hour.map(|price| price * f64::from(p.count))),
                price_note: pool.and_then(|p| p.price_note.clone()),
                region,
            }
        })
        .collect();
    let cost_per_hour = regions
        .iter()
        .filter(|r| r.create > 0)
        .map(|r| r.cost_per_hour)
        .sum::<Option<f64>>();
    Ok(Plan {
        deployment: deployment.clone(),
        strategy,
        digest: blueprint.digest.clone(),
        version: blueprint.version.clone(),
        change: Change::of(&live, &blueprint.digest),
        regions,
        cost_per_hour,
    })
}
