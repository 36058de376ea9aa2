//! `deploy` through a front door: the new generation gets traffic only
//! after it is verified and healthy behind the door, and shifting back is
//! the rollback.
//!
//! Every run starts from what the door and the provider report, never from
//! memory: the generation the door serves is blue, any other live
//! generation (kept with `--keep-old`, or left by an interrupted run) is
//! reaped first, and blue is put behind the door if it is not.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::create::launch_generation;
use super::deploy::{DeployOptions, DeployReport, Strategy, destroy_old};
use super::guard::{self, Breach, HoldReport};
use super::{Confirm, EngineError, Verification, confirm_or_refuse, count_by, live};
use crate::config::TrafficSection;
use crate::output::{Count, Printer};
use crate::provider::{DestroyReport, Instance, Provider};
use crate::template::Blueprint;
use crate::traffic::{DoorState, FrontDoor, Kept, Weights};

/// How long a verified generation gets to pass the door's health check.
pub(super) const DOOR_HEALTH_TIMEOUT: Duration = Duration::from_secs(90);

/// What the front door did during a deploy.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DoorReport {
    /// Where the door is reached.
    pub address: String,
    /// Each shift, in order, with the hold that followed it.
    pub shifts: Vec<Shift>,
    /// The old generation kept out of the door (`--keep-old`).
    pub kept: Option<Kept>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Shift {
    pub weights: Weights,
    /// When respot decided the shift, in milliseconds since the Unix epoch
    /// (for latency measurements against what clients saw).
    pub decided_at_ms: u128,
    pub hold: Option<HoldReport>,
}

/// The live generations as blue (the one the door serves, else the newest)
/// and the others.
pub(super) struct Fleet {
    pub blue: Option<u64>,
    pub blue_instances: Vec<Instance>,
    pub others: Vec<Instance>,
}

pub(super) fn split(live: &[Instance], serving: Option<u64>) -> Fleet {
    let newest = live.iter().filter_map(|i| i.generation).max();
    let blue = serving
        .filter(|g| live.iter().any(|i| i.generation == Some(*g)))
        .or(newest);
    let (blue_instances, others) = live
        .iter()
        .cloned()
        .partition(|i| blue.is_some() && i.generation == blue);
    Fleet {
        blue,
        blue_instances,
        others,
    }
}

/// Ships the current blueprint through `door` with the chosen strategy.
#[allow(clippy::too_many_arguments)]
pub async fn rollout<P: Provider, V: Verification, D: FrontDoor>(
    provider: &P,
    verification: &V,
    door: &D,
    traffic: &TrafficSection,
    blueprint: &Blueprint,
    options: &DeployOptions,
    confirm: Option<Confirm<'_>>,
    printer: &Printer,
) -> Result<DeployReport, EngineError> {
    if blueprint.git.dirty && !options.create.allow_dirty {
        return Err(EngineError::Dirty);
    }
    let deployment = &blueprint.deployment;
    let live_now = live(provider, deployment).await?;
    let state = door.state().await?;
    let fleet = split(&live_now, state.serving());
    announce(&live_now, deployment, &door.describe(), options, confirm, printer)?;
    if let Some(blue) = fleet.blue {
        settle(door, blue, &fleet.blue_instances, &state, printer).await?;
    }
    let mut reaped = reap(provider, verification, door, deployment, &fleet.others, printer).await?;
    let mut report = DoorReport {
        address: door.describe(),
        ..DoorReport::default()
    };
    if let Some(blue) = fleet.blue {
        ensure_serving(door, blue, &fleet.blue_instances, printer).await?;
    }
    let outcome = match options.strategy {
        Strategy::Recreate => {
            recreate(provider, verification, door, blueprint, options, &fleet, printer).await
        }
        Strategy::BlueGreen | Strategy::Canary => {
            let steps = if options.strategy == Strategy::Canary {
                traffic.steps.clone()
            } else {
                vec![100]
            };
            let shifted = Shifted {
                provider,
                verification,
                door,
                traffic,
                printer,
            };
            shifted.run(blueprint, options, &fleet, &steps, &mut report).await
        }
        Strategy::Rolling => {
            super::rolling::rolling(
                provider,
                verification,
                door,
                traffic,
                blueprint,
                &fleet,
                options.create.verify,
                printer,
                &mut report,
            )
            .await
        }
    }?;
    let (created, destroyed) = outcome;
    if let Some(destroyed) = destroyed {
        reaped.terminated.extend(destroyed.terminated);
        reaped.cleaned.extend(destroyed.cleaned);
    }
    Ok(DeployReport {
        strategy: options.strategy,
        replaced: live_now,
        created,
        destroyed: Some(reaped).filter(|r| !r.terminated.is_empty()),
        door: Some(report),
    })
}

/// Says what will be replaced, and asks unless `--yes`.
fn announce(
    live_now: &[Instance],
    deployment: &str,
    door: &str,
    options: &DeployOptions,
    confirm: Option<Confirm<'_>>,
    printer: &Printer,
) -> Result<(), EngineError> {
    if live_now.is_empty() {
        return Ok(());
    }
    printer.info(&format!(
        "`{deployment}`: {} will be replaced ({}) behind {door}: {}",
        Count(live_now.len(), "live instance"),
        options.strategy.describe(),
        count_by(live_now.iter().map(|i| i.region.as_str()))
    ));
    if !options.yes {
        confirm_or_refuse(confirm, "replace", deployment, live_now.len())?;
    }
    Ok(())
}

/// Takes generations that are neither blue nor new out of the door and
/// destroys them: a kept blue from `--keep-old`, or what an interrupted
/// run left.
pub(super) async fn reap<P: Provider, V: Verification, D: FrontDoor>(
    provider: &P,
    verification: &V,
    door: &D,
    deployment: &str,
    others: &[Instance],
    printer: &Printer,
) -> Result<DestroyReport, EngineError> {
    if others.is_empty() {
        return Ok(DestroyReport::default());
    }
    printer.info(&format!(
        "reaping {} of older generations (kept, or left by an interrupted run)",
        Count(others.len(), "instance")
    ));
    door.drain(others).await?;
    door.keep(None).await?;
    Ok(destroy_old(provider, verification, deployment, others)
        .await?
        .unwrap_or_default())
}

/// Puts blue behind the door with all the traffic, unless it already is.
pub(super) async fn ensure_serving<D: FrontDoor>(
    door: &D,
    blue: u64,
    instances: &[Instance],
    printer: &Printer,
) -> Result<(), EngineError> {
    let state = door.state().await?;
    let registered = state.targets.get(&blue).cloned().unwrap_or_default();
    if instances.iter().any(|i| !registered.contains(&i.id)) {
        printer.info(&format!("putting generation {blue} behind {}", door.describe()));
        door.register(blue, instances).await?;
        door.wait_healthy(blue, instances, DOOR_HEALTH_TIMEOUT).await?;
    }
    if !blue_alone(&state, blue) {
        door.shift(&[(blue, 100)].into_iter().collect()).await?;
    }
    Ok(())
}

/// Every part of the door routes to `blue` and nothing else.
fn blue_alone(state: &DoorState, blue: u64) -> bool {
    let all: Weights = [(blue, 100)].into_iter().collect();
    !state.diverged && state.serving_weights() == all
}

/// Before anything leaves the door, all of it routes to blue alone when
/// blue is behind it: a run killed mid-shift leaves a share on the new
/// generation (a canary step), or some ALB regions on the new generation
/// and others on the old; reaping first would leave the door forwarding
/// to an empty group.
async fn settle<D: FrontDoor>(
    door: &D,
    blue: u64,
    instances: &[Instance],
    state: &DoorState,
    printer: &Printer,
) -> Result<(), EngineError> {
    let registered = state.targets.get(&blue).cloned().unwrap_or_default();
    if instances.iter().any(|i| !registered.contains(&i.id)) || blue_alone(state, blue) {
        // Not behind the door yet, or nothing to mend: `ensure_serving`
        // after the reap does the rest.
        return Ok(());
    }
    let left = match state.diverged {
        true => "its regions route differently",
        false => "other generations still have a share",
    };
    printer.warn(&format!(
        "{} was left mid-shift by an interrupted run ({left}); all traffic back to generation {blue} first",
        door.describe()
    ));
    door.shift(&[(blue, 100)].into_iter().collect()).await?;
    Ok(())
}

/// Recreate with a door: blue leaves the door and is destroyed, then green
/// is created and gets all the traffic. The door answers 503 in between.
async fn recreate<P: Provider, V: Verification, D: FrontDoor>(
    provider: &P,
    verification: &V,
    door: &D,
    blueprint: &Blueprint,
    options: &DeployOptions,
    fleet: &Fleet,
    printer: &Printer,
) -> Result<(super::CreateReport, Option<DestroyReport>), EngineError> {
    let deployment = &blueprint.deployment;
    let mut destroyed = None;
    if !fleet.blue_instances.is_empty() {
        printer.warn(&format!(
            "recreate: {} answers 503 until the new generation is up; \
             --strategy blue-green ships without a gap",
            door.describe()
        ));
        door.drain(&fleet.blue_instances).await?;
        destroyed = destroy_old(provider, verification, deployment, &fleet.blue_instances).await?;
    }
    let existing = provider.list(deployment).await?;
    let created = launch_generation(
        provider,
        verification,
        blueprint,
        &existing,
        &options.create,
        printer,
    )
    .await?;
    let green = created.instances.clone();
    if let Err(err) = admit(door, created.generation, &green).await {
        return Err(abandon(
            provider,
            verification,
            door,
            deployment,
            &green,
            err.to_string(),
            None,
        )
        .await);
    }
    door.shift(&[(created.generation, 100)].into_iter().collect())
        .await?;
    printer.info(&format!(
        "{} now serves generation {}",
        door.describe(),
        created.generation
    ));
    Ok((created, destroyed))
}

/// Registers a verified generation and waits for the door's health check.
pub(super) async fn admit<D: FrontDoor>(
    door: &D,
    generation: u64,
    green: &[Instance],
) -> Result<(), EngineError> {
    door.register(generation, green).await?;
    door.wait_healthy(generation, green, DOOR_HEALTH_TIMEOUT).await?;
    Ok(())
}

/// Takes `green` out of the door and destroys it after a failure that
/// happened before or during its shift; the error says why.
pub(super) async fn abandon<P: Provider, V: Verification, D: FrontDoor>(
    provider: &P,
    verification: &V,
    door: &D,
    deployment: &str,
    green: &[Instance],
    reason: String,
    verdict: Option<Box<super::Verdict>>,
) -> EngineError {
    let mut cleanup = DestroyReport::default();
    if let Err(err) = door.drain(green).await {
        cleanup.left_behind.push(format!("front door: {err}"));
    }
    match provider.destroy(deployment, green, true).await {
        Ok(report) => {
            cleanup.terminated = report.terminated;
            cleanup.cleaned = report.cleaned;
            cleanup.left_behind.extend(report.left_behind);
        }
        Err(err) => cleanup.left_behind.push(format!("rollback failed: {err}")),
    }
    verification.forget(green);
    EngineError::RolledBack {
        reason,
        cleanup,
        verdict,
    }
}

/// Blue-green (one step of 100 %) and canary (the configured steps).
struct Shifted<'a, P, V, D> {
    provider: &'a P,
    verification: &'a V,
    door: &'a D,
    traffic: &'a TrafficSection,
    printer: &'a Printer,
}

impl<P: Provider, V: Verification, D: FrontDoor> Shifted<'_, P, V, D> {
    async fn run(
        &self,
        blueprint: &Blueprint,
        options: &DeployOptions,
        fleet: &Fleet,
        steps: &[u8],
        report: &mut DoorReport,
    ) -> Result<(super::CreateReport, Option<DestroyReport>), EngineError> {
        let deployment = &blueprint.deployment;
        let existing = self.provider.list(deployment).await?;
        let created = launch_generation(
            self.provider,
            self.verification,
            blueprint,
            &existing,
            &options.create,
            self.printer,
        )
        .await?;
        let (generation, green) = (created.generation, created.instances.clone());
        if let Err(err) = admit(self.door, generation, &green).await {
            let reason = err.to_string();
            return Err(abandon(
                self.provider,
                self.verification,
                self.door,
                deployment,
                &green,
                reason,
                None,
            )
            .await);
        }
        for step in steps {
            let mut weights: Weights = [(generation, u32::from(*step))].into_iter().collect();
            if let Some(blue) = fleet.blue {
                weights.insert(blue, 100 - u32::from(*step));
            }
            let decided_at_ms = unix_ms();
            self.door.shift(&weights).await?;
            self.printer.info(&format!(
                "shifted {step} % of {} to generation {generation}",
                self.door.describe()
            ));
            let held = guard::hold(
                self.door,
                options.create.verify.then_some(self.verification),
                &green,
                Duration::from_secs(self.traffic.hold_secs),
                self.traffic.max_error_rate,
                self.printer,
            )
            .await;
            match held {
                Ok(hold) => report.shifts.push(Shift {
                    weights,
                    decided_at_ms,
                    hold: Some(hold),
                }),
                Err(breach) => return Err(self.breach(deployment, fleet, generation, &green, breach).await),
            }
        }
        let destroyed = self.retire(deployment, fleet, options.keep_old, report).await?;
        Ok((created, destroyed))
    }

    /// Everything back on blue at once, then green goes.
    async fn breach(
        &self,
        deployment: &str,
        fleet: &Fleet,
        generation: u64,
        green: &[Instance],
        breach: Breach,
    ) -> EngineError {
        let check = breach.check();
        self.printer
            .warn(&format!("guard breach: {check}; shifting everything back"));
        let back: Weights = fleet.blue.map(|b| (b, 100)).into_iter().collect();
        let shifted_back = self.door.shift(&back).await;
        let debug = debug_command(green, &breach);
        let verdict = match breach {
            Breach::Verify(verdict) => Some(verdict),
            Breach::ErrorRate { .. } => None,
        };
        let rolled_back = abandon(
            self.provider,
            self.verification,
            self.door,
            deployment,
            green,
            check.clone(),
            None,
        )
        .await;
        let cleanup = match rolled_back {
            EngineError::RolledBack { cleanup, .. } => cleanup,
            _ => DestroyReport::default(),
        };
        EngineError::Breach(Box::new(super::BreachReport {
            generation,
            check,
            back_on: match (fleet.blue, shifted_back) {
                (Some(blue), Ok(())) => format!("generation {blue}"),
                (Some(blue), Err(err)) => format!("NOT generation {blue} ({err})"),
                (None, _) => "nothing (there was no previous generation)".to_string(),
            },
            debug,
            cleanup,
            verdict,
        }))
    }

    /// Blue leaves the door; it is destroyed, or kept for `keep_old`.
    async fn retire(
        &self,
        deployment: &str,
        fleet: &Fleet,
        keep_old: Option<Duration>,
        report: &mut DoorReport,
    ) -> Result<Option<DestroyReport>, EngineError> {
        let (Some(blue), false) = (fleet.blue, fleet.blue_instances.is_empty()) else {
            return Ok(None);
        };
        self.door.drain(&fleet.blue_instances).await?;
        if let Some(keep) = keep_old {
            let kept = Kept {
                generation: blue,
                until: SystemTime::now() + keep,
            };
            self.door.keep(Some(kept)).await?;
            report.kept = Some(kept);
            self.printer.info(&format!(
                "keeping generation {blue} out of the door for {} (`respot rollback` is instant until then)",
                humantime::format_duration(keep)
            ));
            return Ok(None);
        }
        self.printer
            .info(&format!("drained generation {blue}; destroying it"));
        destroy_old(
            self.provider,
            self.verification,
            deployment,
            &fleet.blue_instances,
        )
        .await
    }
}

/// Now, in milliseconds since the Unix epoch.
pub(super) fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// `respot debug <id>` for the instance whose check failed (else the first).
pub(super) fn debug_command(green: &[Instance], breach: &Breach) -> String {
    let failed = match breach {
        Breach::Verify(verdict) => verdict.report.failed_instances.first().cloned(),
        Breach::ErrorRate { .. } => None,
    };
    let target = failed.or_else(|| green.first().map(|i| i.id.0.clone()));
    format!(
        "respot debug {}",
        target.unwrap_or_else(|| "<instance>".to_string())
    )
}
