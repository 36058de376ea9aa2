//! Rolling: for fleets too large to double. Each round launches and
//! verifies at most `traffic.batch` new instances per region, puts them
//! behind the door, holds under the guard, then drains and destroys as many
//! old ones. `traffic.max_unavailable` old instances per round may leave
//! the door before their replacements serve. A failure stops the rollout:
//! the new instances leave the door and are destroyed, and the old ones
//! that remain keep serving.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::create::CreateReport;
use super::deploy::destroy_old;
use super::guard;
use super::rollout::{DoorReport, Fleet, Shift, abandon, admit, debug_command};
use super::{EngineError, Verification};
use crate::config::TrafficSection;
use crate::output::{Count, Printer};
use crate::progress::{Event, Phase};
use crate::provider::{DestroyReport, Instance, InstanceId, LaunchRequest, Provider, ProviderError};
use crate::template::Blueprint;
use crate::traffic::{FrontDoor, Weights};

/// The old instances one round replaces: up to `per_region` per region.
pub(super) fn next_round(old: &[Instance], per_region: usize) -> Vec<Instance> {
    let mut taken: BTreeMap<&str, usize> = BTreeMap::new();
    old.iter()
        .filter(|i| {
            let n = taken.entry(i.region.as_str()).or_default();
            *n += 1;
            *n <= per_region
        })
        .cloned()
        .collect()
}

/// Shares by instance count: each instance gets the same traffic.
pub(super) fn weights_by_count(blue: Option<u64>, old: usize, green: u64, new: usize) -> Weights {
    let total = (old + new).max(1);
    let green_share = (100 * new / total) as u32;
    let mut weights: Weights = [(green, green_share)].into_iter().collect();
    if let Some(blue) = blue {
        weights.insert(blue, 100 - green_share);
    }
    weights
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn rolling<P: Provider, V: Verification, D: FrontDoor>(
    provider: &P,
    verification: &V,
    door: &D,
    traffic: &TrafficSection,
    blueprint: &Blueprint,
    fleet: &Fleet,
    verify: bool,
    printer: &Printer,
    report: &mut DoorReport,
) -> Result<(CreateReport, Option<DestroyReport>), EngineError> {
    let deployment = &blueprint.deployment;
    let existing = provider.list(deployment).await?;
    let generation = super::next_generation(&existing);
    let material = verification.launch_material(generation)?;
    let material = super::create::staged(provider, blueprint, material).await?;
    let mut request = LaunchRequest {
        deployment: deployment.clone(),
        digest: blueprint.digest.clone(),
        version: blueprint.version.clone(),
        generation,
        user_data: blueprint.user_data(&material)?,
        signer: blueprint.git.signer.clone(),
        upto: None,
        bundle: blueprint.bundle.clone(),
    };
    let started = std::time::Instant::now();
    let largest = count_by_region(&fleet.blue_instances)
        .into_values()
        .max()
        .unwrap_or(0);
    let per_round = traffic.batch.of(largest);
    let mut old = fleet.blue_instances.clone();
    let mut green: Vec<Instance> = Vec::new();
    let mut destroyed = DestroyReport::default();
    let step = Round {
        provider,
        verification,
        door,
        traffic,
        printer,
        deployment,
        generation,
        blue: fleet.blue,
        verify,
    };
    let mut round = 0;
    while !old.is_empty() {
        round += 1;
        let leaving = next_round(&old, per_round);
        let early = next_round(&leaving, traffic.max_unavailable as usize);
        step.retire(&early, &mut old, &mut destroyed).await?;
        request.upto = Some((round * per_round) as u32);
        step.add(&request, &mut green, old.len(), report).await?;
        let late: Vec<Instance> = leaving
            .iter()
            .filter(|i| !early.iter().any(|e| e.id == i.id))
            .cloned()
            .collect();
        step.retire(&late, &mut old, &mut destroyed).await?;
    }
    // Up to the configured count (all of it on a first deploy).
    request.upto = Some(u32::MAX);
    step.add(&request, &mut green, 0, report).await?;
    door.shift(&[(generation, 100)].into_iter().collect()).await?;
    let created = CreateReport {
        deployment: deployment.clone(),
        digest: request.digest,
        version: request.version,
        generation,
        gzipped: request.user_data.gzipped,
        user_data_bytes: request.user_data.packed.len(),
        instances: green,
        verification: None,
        // Launches and verifications interleave in rounds: all of it.
        launch_secs: started.elapsed().as_secs_f64(),
        verify_secs: None,
    };
    Ok((created, Some(destroyed).filter(|d| !d.terminated.is_empty())))
}

fn count_by_region(instances: &[Instance]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for instance in instances {
        *counts.entry(instance.region.clone()).or_default() += 1;
    }
    counts
}

struct Round<'a, P, V, D> {
    provider: &'a P,
    verification: &'a V,
    door: &'a D,
    traffic: &'a TrafficSection,
    printer: &'a Printer,
    deployment: &'a str,
    generation: u64,
    blue: Option<u64>,
    /// false with `--no-verify`: no SSH, the guard probes only.
    verify: bool,
}

impl<P: Provider, V: Verification, D: FrontDoor> Round<'_, P, V, D> {
    /// Drains `leaving` out of the door and destroys it.
    async fn retire(
        &self,
        leaving: &[Instance],
        old: &mut Vec<Instance>,
        destroyed: &mut DestroyReport,
    ) -> Result<(), EngineError> {
        if leaving.is_empty() {
            return Ok(());
        }
        self.door.drain(leaving).await?;
        if let Some(report) = destroy_old(self.provider, self.verification, self.deployment, leaving).await? {
            destroyed.terminated.extend(report.terminated);
            destroyed.cleaned.extend(report.cleaned);
        }
        let gone: BTreeSet<&InstanceId> = leaving.iter().map(|i| &i.id).collect();
        old.retain(|i| !gone.contains(&i.id));
        Ok(())
    }

    /// Launches, verifies and admits the next batch, shifts by instance
    /// count and holds under the guard; any failure stops the rollout.
    async fn add(
        &self,
        request: &LaunchRequest,
        green: &mut Vec<Instance>,
        old: usize,
        report: &mut DoorReport,
    ) -> Result<(), EngineError> {
        let added = match self.launch(request, green).await {
            Ok(added) => added,
            Err((reason, verdict)) => return Err(self.fail(green, &reason, verdict).await),
        };
        if added.is_empty() {
            return Ok(());
        }
        green.extend(added.iter().cloned());
        if let Err(err) = admit(self.door, self.generation, &added).await {
            return Err(self.fail(green, &err.to_string(), None).await);
        }
        let weights = weights_by_count(self.blue, old, self.generation, green.len());
        let decided_at_ms = super::rollout::unix_ms();
        self.door.shift(&weights).await?;
        self.printer.info(&format!(
            "{} of generation {} behind {}, {} old",
            Count(green.len(), "instance"),
            self.generation,
            self.door.describe(),
            old
        ));
        let hold = Duration::from_secs(self.traffic.hold_secs);
        match guard::hold(
            self.door,
            self.verify.then_some(self.verification),
            green,
            hold,
            self.traffic.max_error_rate,
            self.printer,
        )
        .await
        {
            Ok(held) => {
                report.shifts.push(Shift {
                    weights,
                    decided_at_ms,
                    hold: Some(held),
                });
                Ok(())
            }
            Err(breach) => {
                let reason = format!(
                    "{}; inspect with `{}`",
                    breach.check(),
                    debug_command(green, &breach)
                );
                Err(self.fail(green, &reason, None).await)
            }
        }
    }

    /// Launches up to `request.upto` per region and verifies what is new.
    async fn launch(
        &self,
        request: &LaunchRequest,
        green: &[Instance],
    ) -> Result<Vec<Instance>, (String, Option<Box<super::Verdict>>)> {
        let progress = self.printer.observer();
        progress.observe(Event::generation(
            self.deployment,
            request.generation,
            Phase::Requested,
        ));
        match self.provider.launch(request).await {
            Ok(_) | Err(ProviderError::NothingToLaunch) => {}
            Err(err) => {
                progress.observe(
                    Event::generation(self.deployment, request.generation, Phase::Failed)
                        .detail(err.to_string()),
                );
                return Err((err.to_string(), None));
            }
        }
        let listed = super::live(self.provider, self.deployment)
            .await
            .map_err(|e| (e.to_string(), None))?;
        let added: Vec<Instance> = listed
            .into_iter()
            .filter(|i| i.generation == Some(request.generation) && !green.iter().any(|g| g.id == i.id))
            .collect();
        if added.is_empty() {
            return Ok(added);
        }
        for instance in &added {
            progress.observe(Event::instance(self.deployment, instance, Phase::Running));
        }
        if !self.verify {
            self.printer.warn(&format!(
                "--no-verify: {} running but NOT verified over SSH",
                Count(added.len(), "new instance")
            ));
            return Ok(added);
        }
        self.printer
            .info(&format!("verifying {}", Count(added.len(), "new instance")));
        let verdict = self.verification.verify(&added).await;
        if !verdict.passed() {
            return Err((
                format!("verification failed: {}", verdict.summary()),
                Some(Box::new(verdict)),
            ));
        }
        Ok(added)
    }

    /// Stops the rollout: every new instance leaves the door and is
    /// destroyed (listed again, so a half-made launch is found too); the
    /// old ones that remain keep serving.
    async fn fail(
        &self,
        green: &[Instance],
        reason: &str,
        verdict: Option<Box<super::Verdict>>,
    ) -> EngineError {
        self.printer.warn(&format!(
            "rolling stopped: {reason}; the old instances keep serving"
        ));
        if let Some(blue) = self.blue {
            // Best effort: abandon drains the new ones out of the door anyway.
            let _ = self.door.shift(&[(blue, 100)].into_iter().collect()).await;
        }
        let mut all = green.to_vec();
        if let Ok(listed) = super::live(self.provider, self.deployment).await {
            all.extend(
                listed
                    .into_iter()
                    .filter(|i| i.generation == Some(self.generation) && !green.iter().any(|g| g.id == i.id)),
            );
        }
        abandon(
            self.provider,
            self.verification,
            self.door,
            self.deployment,
            &all,
            reason.to_string(),
            verdict,
        )
        .await
    }
}
