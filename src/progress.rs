//! Progress of a launch as a provider-neutral stream of events: each
//! instance of a generation moves through `requested → running → ssh →
//! cloud-init → units → verified` (or `failed`), in its region.
//!
//! The engine and the verification fan-out emit events through the
//! `Observer` trait and nothing else; they never know how (or whether) the
//! events are shown. `output` renders them (live bars on a terminal, plain
//! lines off one, JSON lines for scripts) and keeps a `Timeline`, from which
//! a command builds the `Summary` it ends with. Pure data: no I/O here.

mod summary;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

pub use summary::{InstanceSummary, PhaseTime, Summary, human};

use crate::provider::Instance;

/// Where an instance is in its launch. The order is the order of a
/// successful launch; `Failed` ends it anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// The provider was asked for the generation's instances.
    Requested,
    /// The provider reports it running (with its address).
    Running,
    /// respot's verification login answered over SSH.
    Ssh,
    /// cloud-init finished (done, degraded or error: the checks judge).
    CloudInit,
    /// The units were read back.
    Units,
    /// Every check passed.
    Verified,
    Failed,
}

impl Phase {
    /// The phases of a successful launch, in order.
    pub const STEPS: [Phase; 6] = [
        Phase::Requested,
        Phase::Running,
        Phase::Ssh,
        Phase::CloudInit,
        Phase::Units,
        Phase::Verified,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Requested => "requested",
            Phase::Running => "running",
            Phase::Ssh => "ssh",
            Phase::CloudInit => "cloud-init",
            Phase::Units => "units",
            Phase::Verified => "verified",
            Phase::Failed => "failed",
        }
    }

    /// How many steps of `STEPS` are behind an instance in this phase
    /// (`Failed` counts as none, it is shown apart).
    pub fn step(self) -> u64 {
        Phase::STEPS
            .iter()
            .position(|p| *p == self)
            .map_or(0, |i| i as u64)
    }

    /// Whether nothing follows this phase.
    pub fn is_final(self) -> bool {
        matches!(self, Phase::Verified | Phase::Failed)
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One instance as events name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub region: String,
    pub instance: String,
    pub name: String,
}

/// Something that happened to a generation or to one of its instances.
/// Events carry no time: the observer stamps them when they arrive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub deployment: String,
    pub generation: Option<u64>,
    /// `None`: the whole generation (before the provider named instances,
    /// or when a launch failed as a whole).
    pub subject: Option<Subject>,
    pub phase: Phase,
    /// Why, for `failed`; what cloud-init said, for `cloud-init`.
    pub detail: Option<String>,
}

impl Event {
    /// An event of the whole generation.
    pub fn generation(deployment: &str, generation: u64, phase: Phase) -> Event {
        Event {
            deployment: deployment.to_string(),
            generation: Some(generation),
            subject: None,
            phase,
            detail: None,
        }
    }

    /// An event of one instance.
    pub fn instance(deployment: &str, instance: &Instance, phase: Phase) -> Event {
        Event {
            deployment: deployment.to_string(),
            generation: instance.generation,
            subject: Some(Subject {
                region: instance.region.clone(),
                instance: instance.id.to_string(),
                name: instance.name.clone(),
            }),
            phase,
            detail: None,
        }
    }

    #[must_use]
    pub fn detail(mut self, detail: impl Into<String>) -> Event {
        self.detail = Some(detail.into());
        self
    }
}

/// Receives events. Implementations must be cheap and must not fail: a
/// display that cannot draw is not a reason to stop a launch.
pub trait Observer: Send + Sync {
    fn observe(&self, event: Event);
}

/// An observer that drops everything.
pub struct Ignore;

impl Observer for Ignore {
    fn observe(&self, _event: Event) {}
}

/// An event with the time it arrived, since the operation began.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamped {
    pub event: Event,
    pub elapsed: Duration,
    /// Since the previous event of the same instance (or, for an
    /// instance's first, the generation's request); `None` for the first.
    pub took: Option<Duration>,
}

/// Every event of a run, stamped, in arrival order.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    events: Vec<Stamped>,
}

impl Timeline {
    /// Records `event` at `elapsed` and returns it stamped.
    pub fn record(&mut self, event: Event, elapsed: Duration) -> Stamped {
        let generation_level = |s: &&Stamped| {
            s.event.subject.is_none()
                && s.event.generation == event.generation
                && s.event.deployment == event.deployment
        };
        let previous = match &event.subject {
            Some(subject) => self
                .events
                .iter()
                .rev()
                .find(|s| {
                    s.event
                        .subject
                        .as_ref()
                        .is_some_and(|o| o.instance == subject.instance)
                })
                .or_else(|| self.events.iter().rev().find(generation_level)),
            // A request starts the generation's clock.
            None if event.phase == Phase::Requested => None,
            None => self.events.iter().rev().find(generation_level),
        };
        let stamped = Stamped {
            took: previous.map(|p| elapsed.saturating_sub(p.elapsed)),
            event,
            elapsed,
        };
        self.events.push(stamped.clone());
        stamped
    }

    pub fn events(&self) -> &[Stamped] {
        &self.events
    }

    /// For each phase an instance reached, how long the slowest instance
    /// took to get there from its previous phase, in `Phase::STEPS` order.
    pub fn phase_times(&self) -> Vec<(Phase, Duration)> {
        let mut slowest: BTreeMap<Phase, Duration> = BTreeMap::new();
        for stamped in self.events.iter().filter(|s| s.event.subject.is_some()) {
            if let Some(took) = stamped.took {
                let entry = slowest.entry(stamped.event.phase).or_default();
                *entry = (*entry).max(took);
            }
        }
        slowest.into_iter().collect()
    }

    /// The last phase each instance reached, by instance id.
    pub fn last_phases(&self) -> BTreeMap<String, Phase> {
        self.events
            .iter()
            .filter_map(|s| Some((s.event.subject.as_ref()?.instance.clone(), s.event.phase)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(event: Event, timeline: &mut Timeline, secs: u64) -> Stamped {
        timeline.record(event, Duration::from_secs(secs))
    }

    fn on(instance: &str, phase: Phase) -> Event {
        Event {
            deployment: "d".into(),
            generation: Some(1),
            subject: Some(Subject {
                region: "r".into(),
                instance: instance.into(),
                name: instance.into(),
            }),
            phase,
            detail: None,
        }
    }

    #[test]
    fn an_instance_phase_takes_the_time_since_its_previous_one() {
        let mut t = Timeline::default();
        let requested = at(Event::generation("d", 1, Phase::Requested), &mut t, 0);
        assert_eq!(requested.took, None);
        assert_eq!(
            at(on("a", Phase::Running), &mut t, 3).took,
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            at(on("b", Phase::Running), &mut t, 4).took,
            Some(Duration::from_secs(4))
        );
        assert_eq!(
            at(on("a", Phase::Ssh), &mut t, 10).took,
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            at(on("b", Phase::Ssh), &mut t, 20).took,
            Some(Duration::from_secs(16))
        );
        assert_eq!(
            t.phase_times(),
            vec![
                (Phase::Running, Duration::from_secs(4)),
                (Phase::Ssh, Duration::from_secs(16)),
            ],
            "the slowest instance of each phase"
        );
        at(on("b", Phase::Failed), &mut t, 21);
        let last = t.last_phases();
        assert_eq!(last["a"], Phase::Ssh);
        assert_eq!(last["b"], Phase::Failed);
    }

    #[test]
    fn steps_follow_the_phases() {
        let steps: Vec<u64> = Phase::STEPS.iter().map(|p| p.step()).collect();
        assert_eq!(steps, vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(Phase::Failed.step(), 0);
        assert!(Phase::Verified.is_final() && Phase::Failed.is_final() && !Phase::Units.is_final());
    }
}
