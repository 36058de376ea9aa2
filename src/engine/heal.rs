//! `heal`: bring the live generation back to its configured count after
//! spot reclaims, from the same digest, without touching a healthy
//! instance.
//!
//! One check lists the deployment and the provider's interruption notices,
//! then decides (pure, [`assess`]): which generation is live, which of its
//! instances serve, which are gone or going, and how many each region
//! lacks. A marked instance (EC2's two-minute notice) counts as lost but
//! keeps serving until its replacement is verified; only then is it, and
//! any dead VM, let go. A failed heal rolls back only what it launched:
//! instances of the generation that the first listing did not show.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::bad_pools::BadPools;
use super::create::{Outcome, interruptible};
use super::{EngineError, Verdict, Verification, live};
use crate::output::{Count, Printer};
use crate::progress::{Event, Phase};
use crate::provider::{
    DestroyReport, Instance, InstanceId, InstanceState, LaunchRequest, Lifecycle, PoolKey, Provider,
    RegionCount,
};
use crate::template::{Blueprint, Digest};

#[derive(Debug, Clone, Default)]
pub struct HealOptions {
    /// Verify replacements over SSH before letting anything go.
    pub verify: bool,
}

/// The front door (issue 14's `[traffic]`), as heal uses it: a verified
/// replacement joins it, and an instance heal lets go leaves it first.
/// Without a front door, [`NoFrontDoor`].
#[allow(async_fn_in_trait)]
pub trait HealDoor {
    async fn admit(&self, instances: &[Instance]) -> Result<(), EngineError>;
    async fn drain(&self, instances: &[Instance]) -> Result<(), EngineError>;
}

/// A deployment without `[traffic]`: its instances are reached directly.
pub struct NoFrontDoor;

impl HealDoor for NoFrontDoor {
    async fn admit(&self, _instances: &[Instance]) -> Result<(), EngineError> {
        Ok(())
    }

    async fn drain(&self, _instances: &[Instance]) -> Result<(), EngineError> {
        Ok(())
    }
}

/// What one check found about the live generation.
#[derive(Debug, Clone, Serialize)]
pub struct Assessment {
    pub generation: u64,
    pub digest: Option<Digest>,
    pub version: Option<String>,
    /// Serving, without an interruption notice.
    pub healthy: Vec<Instance>,
    /// Serving, with an interruption notice: lost, but not yet gone.
    pub marked: Vec<Instance>,
    /// Not serving any more (terminated, shutting down, stopped, dead),
    /// with the provider's reason.
    pub gone: Vec<Instance>,
    /// How many each region lacks to reach its configured count.
    pub missing: Vec<RegionCount>,
}

impl Assessment {
    pub fn missing_total(&self) -> u32 {
        self.missing.iter().map(|m| m.count).sum()
    }

    /// What heal lets go once the replacements are verified: the marked
    /// instances, and those that stopped or died but still exist.
    pub fn to_release(&self) -> Vec<Instance> {
        let mut release = self.marked.clone();
        release.extend(
            self.gone
                .iter()
                .filter(|i| {
                    matches!(
                        i.state,
                        InstanceState::Dead | InstanceState::Stopped | InstanceState::Stopping
                    )
                })
                .cloned(),
        );
        release
    }
}

/// Serving traffic, or about to.
fn serving(instance: &Instance) -> bool {
    matches!(instance.state, InstanceState::Running | InstanceState::Pending)
}

/// Lost without anyone asking: a VM whose process died, or an instance the
/// provider took (`Server.SpotInstanceTermination`, `Server.InternalError`…).
/// A `destroy` (`Client.UserInitiatedShutdown`) is not a loss to heal.
fn taken(instance: &Instance) -> bool {
    instance.state == InstanceState::Dead
        || instance
            .state_reason
            .as_deref()
            .is_some_and(|r| r.contains("Server."))
}

fn interrupted(instance: &Instance) -> bool {
    instance.lifecycle == Lifecycle::Spot
        && instance
            .state_reason
            .as_deref()
            .is_some_and(|r| r.contains("SpotInstanceTermination"))
}

/// The live generation and what it lacks: the newest generation with an
/// instance that serves or was taken (so a fleet reclaimed whole still
/// heals, and a destroyed one does not come back). `None` when there is
/// no such generation.
pub fn assess(listed: &[Instance], notices: &[InstanceId], wanted: &[RegionCount]) -> Option<Assessment> {
    let generation = listed
        .iter()
        .filter(|i| serving(i) || taken(i))
        .filter_map(|i| i.generation)
        .max()?;
    let members: Vec<&Instance> = listed
        .iter()
        .filter(|i| i.generation == Some(generation))
        .collect();
    let noticed = |i: &Instance| notices.contains(&i.id);
    let healthy: Vec<Instance> = members
        .iter()
        .filter(|i| serving(i) && !noticed(i))
        .map(|i| (*i).clone())
        .collect();
    let marked = members
        .iter()
        .filter(|i| serving(i) && noticed(i))
        .map(|i| (*i).clone())
        .collect();
    let gone = members
        .iter()
        .filter(|i| !serving(i))
        .map(|i| (*i).clone())
        .collect();
    let missing = wanted
        .iter()
        .filter_map(|want| {
            let have = healthy.iter().filter(|i| i.region == want.region).count();
            let lack = want.count.saturating_sub(u32::try_from(have).unwrap_or(u32::MAX));
            (lack > 0).then(|| RegionCount {
                region: want.region.clone(),
                count: lack,
            })
        })
        .collect();
    let first = members.iter().find(|i| serving(i)).or(members.first())?;
    Some(Assessment {
        generation,
        digest: first.digest.clone(),
        version: first.version.clone(),
        healthy,
        marked,
        gone,
        missing,
    })
}

/// Notes the pools of interrupted and marked instances as bad.
fn note_interrupted(assessment: &Assessment, memory: &mut BadPools, now: SystemTime) {
    for instance in &assessment.marked {
        if instance.lifecycle == Lifecycle::Spot {
            let reason = format!("interruption notice for {}", instance.id);
            memory.note(&PoolKey::of(instance), &reason, Some(&instance.id), now);
        }
    }
    for instance in assessment.gone.iter().filter(|i| interrupted(i)) {
        let reason = format!("spot interruption of {}", instance.id);
        memory.note(&PoolKey::of(instance), &reason, Some(&instance.id), now);
    }
}

/// What one heal found and did.
#[derive(Debug, Serialize)]
pub struct HealReport {
    pub deployment: String,
    pub assessment: Assessment,
    pub wanted: Vec<RegionCount>,
    /// Pools tried last because they were just interrupted or full.
    pub avoided_pools: Vec<PoolKey>,
    pub launched: Vec<Instance>,
    /// `None` with `--no-verify` or when nothing launched.
    pub verification: Option<Verdict>,
    /// What heal let go once the replacements were up.
    pub released: Option<DestroyReport>,
}

impl HealReport {
    /// Whether this check changed nothing.
    pub fn is_noop(&self) -> bool {
        self.launched.is_empty() && self.released.is_none()
    }
}

/// One heal of `blueprint`'s deployment. `memory` holds the bad pools; it
/// is read and updated, and the caller keeps it.
pub async fn heal<P: Provider, V: Verification, D: HealDoor>(
    provider: &P,
    verification: &V,
    door: &D,
    blueprint: &Blueprint,
    memory: &mut BadPools,
    options: &HealOptions,
    printer: &Printer,
) -> Result<HealReport, EngineError> {
    let deployment = &blueprint.deployment;
    let (listed, notices) = tokio::join!(
        provider.list(deployment),
        provider.interruption_notices(deployment)
    );
    let (listed, notices) = (listed?, notices?);
    let wanted = provider.wanted();
    let Some(assessment) = assess(&listed, &notices, &wanted) else {
        return Err(EngineError::NothingToHeal {
            deployment: deployment.clone(),
        });
    };
    if assessment.digest.as_ref() != Some(&blueprint.digest) {
        return Err(EngineError::HealIsDeploy {
            deployment: deployment.clone(),
            generation: assessment.generation,
            live: assessment
                .digest
                .as_ref()
                .map_or_else(|| "none".to_string(), |d| d.short().to_string()),
            current: blueprint.digest.short().to_string(),
        });
    }
    let now = SystemTime::now();
    memory.prune(now);
    note_interrupted(&assessment, memory, now);
    let mut report = HealReport {
        deployment: deployment.clone(),
        avoided_pools: memory.avoided(now),
        assessment,
        wanted,
        launched: Vec::new(),
        verification: None,
        released: None,
    };
    if report.assessment.missing_total() > 0 {
        let before: BTreeSet<InstanceId> = listed.iter().map(|i| i.id.clone()).collect();
        let replaced = replace(
            provider,
            verification,
            blueprint,
            &report,
            &before,
            options,
            printer,
        )
        .await;
        // Full pools are remembered whether or not the heal got through.
        for pool in provider.take_pools_without_capacity() {
            memory.note(&pool, "no capacity", None, SystemTime::now());
        }
        let (launched, verdict) = replaced?;
        door.admit(&launched).await?;
        report.launched = launched;
        report.verification = verdict;
    }
    report.released = release_lost(provider, verification, door, &report, printer).await?;
    Ok(report)
}

/// Drains and terminates what the assessment lost (dead, stopped, or
/// marked for termination), once its replacements serve.
async fn release_lost<P: Provider, V: Verification, D: HealDoor>(
    provider: &P,
    verification: &V,
    door: &D,
    report: &HealReport,
    printer: &Printer,
) -> Result<Option<DestroyReport>, EngineError> {
    let release = report.assessment.to_release();
    if !release.is_empty() {
        door.drain(&release).await?;
        printer.info(&format!(
            "letting go of {}",
            Count(release.len(), "lost instance")
        ));
        let released = provider.destroy(&report.deployment, &release, true).await?;
        verification.forget(&release);
        if !released.left_behind.is_empty() {
            return Err(EngineError::LeftBehind(released.left_behind));
        }
        return Ok(Some(released));
    }
    Ok(None)
}

/// Launches and verifies what `report`'s assessment lacks; on failure or
/// Ctrl-C, rolls back what it launched and nothing else.
async fn replace<P: Provider, V: Verification>(
    provider: &P,
    verification: &V,
    blueprint: &Blueprint,
    report: &HealReport,
    before: &BTreeSet<InstanceId>,
    options: &HealOptions,
    printer: &Printer,
) -> Result<(Vec<Instance>, Option<Verdict>), EngineError> {
    let assessment = &report.assessment;
    let generation = assessment.generation;
    let request = heal_request(provider, verification, blueprint, assessment, printer).await?;
    let progress = printer.observer();
    progress.observe(Event::generation(
        &request.deployment,
        generation,
        Phase::Requested,
    ));
    let rollback = |reason: String, verdict: Option<Verdict>, interrupted: bool| {
        progress.observe(
            Event::generation(&request.deployment, generation, Phase::Failed).detail(reason.clone()),
        );
        roll_back(
            provider,
            verification,
            &request,
            before,
            reason,
            verdict,
            interrupted,
            printer,
        )
    };
    let launched =
        match interruptible(provider.launch_more(&request, &assessment.missing, &report.avoided_pools)).await
        {
            Outcome::Done(Ok(instances)) => instances,
            Outcome::Done(Err(err)) => return Err(rollback(err.to_string(), None, false).await),
            Outcome::Interrupted => {
                return Err(rollback("interrupted by Ctrl-C during launch".to_string(), None, true).await);
            }
        };
    for instance in &launched {
        progress.observe(Event::instance(&request.deployment, instance, Phase::Running));
    }
    if !options.verify {
        printer.warn("--no-verify: replacements are running but were NOT verified over SSH");
        return Ok((launched, None));
    }
    printer.info("verifying the replacements over SSH with the read-only inspector");
    let verdict = match interruptible(verification.verify(&launched)).await {
        Outcome::Done(verdict) => verdict,
        Outcome::Interrupted => {
            return Err(rollback(
                "interrupted by Ctrl-C during verification".to_string(),
                None,
                true,
            )
            .await);
        }
    };
    if !verdict.passed() {
        let reason = format!("verification failed: {}", verdict.summary());
        return Err(rollback(reason, Some(verdict), false).await);
    }
    Ok((launched, Some(verdict)))
}

/// The launch request of the replacements: the live generation's own
/// material (its host key), the same digest; announced.
async fn heal_request<P: Provider, V: Verification>(
    provider: &P,
    verification: &V,
    blueprint: &Blueprint,
    assessment: &Assessment,
    printer: &Printer,
) -> Result<LaunchRequest, EngineError> {
    let generation = assessment.generation;
    let material = verification.heal_material(generation)?;
    let material = super::create::staged(provider, blueprint, material).await?;
    let request = LaunchRequest {
        deployment: blueprint.deployment.clone(),
        digest: blueprint.digest.clone(),
        version: assessment
            .version
            .clone()
            .unwrap_or_else(|| blueprint.version.clone()),
        generation,
        user_data: blueprint.user_data(&material)?,
        signer: blueprint.git.signer.clone(),
        upto: None,
        bundle: blueprint.bundle.clone(),
    };
    printer.info(&format!(
        "healing generation {generation} of `{}`: launching {} ({})",
        request.deployment,
        Count(assessment.missing_total() as usize, "instance"),
        assessment
            .missing
            .iter()
            .map(|m| format!("{}: {}", m.region, m.count))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Ok(request)
}

/// Terminates the instances of `request`'s generation that `before` did
/// not list: only what this heal launched, found by listing (a dropped
/// launch may still land, so it looks again).
#[allow(clippy::too_many_arguments)]
async fn roll_back<P: Provider, V: Verification>(
    provider: &P,
    verification: &V,
    request: &LaunchRequest,
    before: &BTreeSet<InstanceId>,
    reason: String,
    verdict: Option<Verdict>,
    interrupted: bool,
    printer: &Printer,
) -> EngineError {
    if interrupted {
        printer.warn("interrupted: rolling back what this heal launched");
    }
    let mut cleanup = DestroyReport::default();
    let pauses: &[u64] = if interrupted {
        &[0, 500, 2_500, 5_000]
    } else {
        &[0, 500]
    };
    for pause in pauses {
        tokio::time::sleep(Duration::from_millis(*pause)).await;
        let ours: Vec<Instance> = match live(provider, &request.deployment).await {
            Ok(found) => found
                .into_iter()
                .filter(|i| i.generation == Some(request.generation) && !before.contains(&i.id))
                .collect(),
            Err(err) => {
                cleanup
                    .left_behind
                    .push(format!("unknown: could not list instances to roll back: {err}"));
                continue;
            }
        };
        if ours.is_empty() {
            continue;
        }
        printer.info(&format!(
            "rolling back: terminating {}",
            Count(ours.len(), "instance")
        ));
        match provider.destroy(&request.deployment, &ours, true).await {
            Ok(report) => {
                cleanup.terminated.extend(report.terminated);
                cleanup.cleaned.extend(report.cleaned);
                cleanup.left_behind.extend(report.left_behind);
            }
            Err(err) => cleanup.left_behind.push(format!("rollback failed: {err}")),
        }
        verification.forget(&ours);
    }
    EngineError::HealRolledBack {
        reason,
        cleanup,
        verdict: verdict.map(Box::new),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::SshEndpoint;

    fn instance(
        id: &str,
        region: &str,
        generation: u64,
        state: InstanceState,
        reason: Option<&str>,
    ) -> Instance {
        Instance {
            id: InstanceId(id.to_string()),
            name: id.to_string(),
            region: region.to_string(),
            zone: Some(format!("{region}a")),
            instance_type: "t3.small".to_string(),
            lifecycle: Lifecycle::Spot,
            state,
            state_reason: reason.map(str::to_string),
            public_ip: None,
            private_ip: None,
            ssh: Some(SshEndpoint {
                host: "192.0.2.1".to_string(),
                port: 22,
            }),
            digest: Digest::parse(&"a".repeat(64)),
            version: Some("v1".to_string()),
            generation: Some(generation),
            launched_at: None,
            secrets: None,
        }
    }

    fn want(region: &str, count: u32) -> RegionCount {
        RegionCount {
            region: region.to_string(),
            count,
        }
    }

    #[test]
    fn assess_counts_what_each_region_lacks() {
        use InstanceState::*;
        const SPOT: Option<&str> = Some("Server.SpotInstanceTermination: Spot instance termination");
        const USER: Option<&str> = Some("Client.UserInitiatedShutdown: User initiated shutdown");
        let wanted = [want("eu-west-1", 2), want("us-east-1", 2)];
        // (generation, missing, marked, gone)
        type Want = Option<(u64, Vec<RegionCount>, usize, usize)>;
        let cases: Vec<(&str, Vec<Instance>, Vec<&str>, Want)> = vec![
            (
                "all healthy",
                vec![
                    instance("a", "eu-west-1", 1, Running, None),
                    instance("b", "eu-west-1", 1, Running, None),
                    instance("c", "us-east-1", 1, Running, None),
                    instance("d", "us-east-1", 1, Pending, None),
                ],
                vec![],
                Some((1, vec![], 0, 0)),
            ),
            (
                "one reclaimed, one marked",
                vec![
                    instance("a", "eu-west-1", 1, Terminated, SPOT),
                    instance("b", "eu-west-1", 1, Running, None),
                    instance("c", "us-east-1", 1, Running, None),
                    instance("d", "us-east-1", 1, Running, None),
                ],
                vec!["d"],
                Some((1, vec![want("eu-west-1", 1), want("us-east-1", 1)], 1, 1)),
            ),
            (
                "reclaimed whole still heals",
                vec![
                    instance("a", "eu-west-1", 2, Terminated, SPOT),
                    instance("z", "eu-west-1", 1, Terminated, USER),
                ],
                vec![],
                Some((2, vec![want("eu-west-1", 2), want("us-east-1", 2)], 0, 1)),
            ),
            (
                "destroyed does not come back",
                vec![instance("a", "eu-west-1", 2, Terminated, USER)],
                vec![],
                None,
            ),
            (
                "the newest serving generation is the live one",
                vec![
                    instance("old", "eu-west-1", 1, Running, None),
                    instance("new", "eu-west-1", 2, Running, None),
                ],
                vec![],
                Some((2, vec![want("eu-west-1", 1), want("us-east-1", 2)], 0, 0)),
            ),
        ];
        for (name, listed, notices, expected) in cases {
            let notices: Vec<InstanceId> = notices.iter().map(|n| InstanceId(n.to_string())).collect();
            let got = assess(&listed, &notices, &wanted)
                .map(|a| (a.generation, a.missing.clone(), a.marked.len(), a.gone.len()));
            assert_eq!(got, expected, "{name}");
        }
    }

    #[test]
    fn only_marked_stopped_and_dead_instances_are_released() {
        use InstanceState::*;
        let listed = [
            instance("marked", "local", 1, Running, None),
            instance("dead", "local", 1, Dead, Some("qemu process is not running")),
            instance(
                "gone",
                "local",
                1,
                Terminated,
                Some("Server.SpotInstanceTermination"),
            ),
            instance("ok", "local", 1, Running, None),
        ];
        let assessment = assess(&listed, &[InstanceId("marked".to_string())], &[want("local", 2)])
            .expect("a live generation");
        let released: Vec<String> = assessment.to_release().iter().map(|i| i.id.0.clone()).collect();
        assert_eq!(released, ["marked", "dead"]);
        let mut memory = BadPools::default();
        note_interrupted(&assessment, &mut memory, SystemTime::now());
        assert_eq!(
            memory.pools.len(),
            1,
            "marked and reclaimed share one pool: {memory:?}"
        );
    }
}
