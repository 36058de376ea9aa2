//! How progress events reach people and scripts: the `Hub` behind every
//! `Printer` stamps each event, records it in the run's `Timeline`, and
//! shows it in one of three ways, picked once from the flags:
//!
//! - on a terminal (not `--quiet`, not verbose): live indicatif lines, one
//!   per region and one per instance, with their elapsed time, cleared when
//!   the command finishes;
//! - off a terminal, or in verbose mode: one plain line per phase change;
//! - with `--output json`: one JSON object per line (schema
//!   `respot.progress`, version 1; see the README).
//!
//! Everything goes to stderr: stdout keeps its one data document.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::progress::{Event, Observer, Phase, Stamped, Timeline, human};

/// The JSON lines' `schema` and `version`: a field is only ever added
/// under the same version; renaming or removing one bumps it.
pub const SCHEMA: &str = "respot.progress";
pub const VERSION: u32 = 1;

/// How events are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Display {
    Hidden,
    Live,
    Lines,
    Json,
}

impl Display {
    /// `--quiet` hides progress, JSON output gets JSON lines, and live lines
    /// need `live` (stderr is a terminal and logs are not verbose).
    pub(super) fn pick(format: super::Format, quiet: bool, live: bool) -> Display {
        if quiet {
            Display::Hidden
        } else if format == super::Format::Json {
            Display::Json
        } else if live {
            Display::Live
        } else {
            Display::Lines
        }
    }
}

/// Stamps, records and shows events; shared by every clone of a `Printer`.
pub(super) struct Hub {
    start: Instant,
    display: Display,
    color: bool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    timeline: Timeline,
    live: Option<Live>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("display", &self.display)
            .finish_non_exhaustive()
    }
}

impl Hub {
    pub(super) fn new(display: Display, color: bool) -> Hub {
        Hub {
            start: Instant::now(),
            display,
            color,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while drawing poisons nothing that matters: the timeline
        // is append-only.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    pub(super) fn timeline(&self) -> Timeline {
        self.state().timeline.clone()
    }

    /// Runs `write` with the live lines lifted off the terminal, so that a
    /// message never lands in the middle of them.
    pub(super) fn suspend<R>(&self, write: impl FnOnce() -> R) -> R {
        let state = self.state();
        match &state.live {
            Some(live) => live.multi.suspend(write),
            None => write(),
        }
    }

    /// Clears the live lines; later events start new ones.
    pub(super) fn finish(&self) {
        if let Some(live) = self.state().live.take() {
            live.clear();
        }
    }
}

impl Observer for Hub {
    fn observe(&self, event: Event) {
        let elapsed = self.start.elapsed();
        let mut state = self.state();
        let stamped = state.timeline.record(event, elapsed);
        match self.display {
            Display::Hidden => {}
            Display::Lines => eprintln!("{}", plain_line(&stamped)),
            Display::Json => eprintln!("{}", json_line(&stamped)),
            Display::Live => state
                .live
                .get_or_insert_with(|| Live::new(self.color))
                .show(&stamped),
        }
    }
}

/// `[  12.3s] local hello-g1-1 (i-0abc): ssh (+9.1s)`, or for the whole
/// generation `[   0.0s] hello generation 1: requested`.
pub fn plain_line(stamped: &Stamped) -> String {
    let event = &stamped.event;
    let who = match &event.subject {
        Some(s) => format!("{} {} ({})", s.region, s.name, s.instance),
        None => match event.generation {
            Some(generation) => format!("{} generation {generation}", event.deployment),
            None => event.deployment.clone(),
        },
    };
    let mut line = format!("[{:>7}] {who}: {}", tenths(stamped.elapsed), event.phase);
    if let Some(took) = stamped.took {
        line.push_str(&format!(" (+{})", tenths(took)));
    }
    if let Some(detail) = &event.detail {
        line.push_str(&format!(": {detail}"));
    }
    line
}

/// One event as a JSON line; the README documents every field.
#[derive(Serialize)]
struct JsonEvent<'a> {
    schema: &'static str,
    version: u32,
    event: &'static str,
    deployment: &'a str,
    generation: Option<u64>,
    region: Option<&'a str>,
    instance: Option<&'a str>,
    name: Option<&'a str>,
    phase: Phase,
    elapsed_ms: u64,
    took_ms: Option<u64>,
    detail: Option<&'a str>,
}

pub fn json_line(stamped: &Stamped) -> String {
    let event = &stamped.event;
    let subject = event.subject.as_ref();
    let line = JsonEvent {
        schema: SCHEMA,
        version: VERSION,
        event: "phase",
        deployment: &event.deployment,
        generation: event.generation,
        region: subject.map(|s| s.region.as_str()),
        instance: subject.map(|s| s.instance.as_str()),
        name: subject.map(|s| s.name.as_str()),
        phase: event.phase,
        elapsed_ms: millis(stamped.elapsed),
        took_ms: stamped.took.map(millis),
        detail: event.detail.as_deref(),
    };
    serde_json::to_string(&line).expect("an event is plain data")
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn tenths(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// The live lines: a header per generation, then per region a line and
/// one line per instance under it.
struct Live {
    multi: MultiProgress,
    color: bool,
    headers: BTreeMap<(String, Option<u64>), ProgressBar>,
    regions: BTreeMap<String, Region>,
}

struct Region {
    bar: ProgressBar,
    /// By instance id, in arrival order.
    instances: Vec<(String, ProgressBar, Phase)>,
}

const TICK: Duration = Duration::from_millis(120);

impl Live {
    fn new(color: bool) -> Live {
        Live {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            color,
            headers: BTreeMap::new(),
            regions: BTreeMap::new(),
        }
    }

    fn style(&self, plain: &str, colored: &str) -> ProgressStyle {
        let template = if self.color { colored } else { plain };
        ProgressStyle::with_template(template).expect("the progress templates are valid")
    }

    fn show(&mut self, stamped: &Stamped) {
        let event = &stamped.event;
        match &event.subject {
            None => self.show_generation(stamped),
            Some(subject) => {
                let since_request = self.since_request(stamped);
                if !self.regions.contains_key(&subject.region) {
                    let bar = self.multi.add(
                        ProgressBar::new_spinner()
                            .with_style(self.style(
                                "{spinner} {prefix} {wide_msg} {elapsed_precise}",
                                "{spinner:.cyan} {prefix:.bold} {wide_msg} {elapsed_precise}",
                            ))
                            .with_prefix(subject.region.clone())
                            .with_elapsed(since_request),
                    );
                    bar.enable_steady_tick(TICK);
                    self.regions.insert(
                        subject.region.clone(),
                        Region {
                            bar,
                            instances: Vec::new(),
                        },
                    );
                }
                self.show_instance(stamped, since_request);
            }
        }
    }

    /// How long ago the instance's generation was requested, by its events.
    fn since_request(&self, stamped: &Stamped) -> Duration {
        match stamped.took {
            Some(took) if stamped.event.phase == Phase::Running => took,
            _ => self
                .headers
                .get(&(stamped.event.deployment.clone(), stamped.event.generation))
                .map_or(Duration::ZERO, ProgressBar::elapsed),
        }
    }

    fn show_generation(&mut self, stamped: &Stamped) {
        let event = &stamped.event;
        let key = (event.deployment.clone(), event.generation);
        let message = match &event.detail {
            Some(detail) => format!("{}: {detail}", event.phase),
            None => event.phase.to_string(),
        };
        if let Some(bar) = self.headers.get(&key) {
            bar.set_message(message);
            return;
        }
        let prefix = match event.generation {
            Some(generation) => format!("`{}` generation {generation}", event.deployment),
            None => format!("`{}`", event.deployment),
        };
        let bar = self.multi.add(
            ProgressBar::new_spinner()
                .with_style(self.style(
                    "{spinner} {prefix} {wide_msg} {elapsed_precise}",
                    "{spinner:.cyan} {prefix:.bold} {wide_msg} {elapsed_precise}",
                ))
                .with_prefix(prefix)
                .with_message(message),
        );
        bar.enable_steady_tick(TICK);
        self.headers.insert(key, bar);
    }

    fn show_instance(&mut self, stamped: &Stamped, since_request: Duration) {
        let (event, subject) = match &stamped.event.subject {
            Some(subject) => (&stamped.event, subject),
            None => return,
        };
        let running = self.style(
            "  {spinner} {prefix:<40} [{bar:6}] {msg:<10} {elapsed_precise}",
            "  {spinner:.cyan} {prefix:<40} [{bar:6.green}] {msg:<10} {elapsed_precise}",
        );
        let ended = self.style(
            "    {prefix:<40} [{bar:6}] {msg}",
            "    {prefix:<40} [{bar:6.green}] {msg}",
        );
        let multi = self.multi.clone();
        let Some(region) = self.regions.get_mut(&subject.region) else {
            return;
        };
        let bar = match region
            .instances
            .iter_mut()
            .find(|(id, _, _)| *id == subject.instance)
        {
            Some((_, bar, phase)) => {
                *phase = event.phase;
                bar.clone()
            }
            None => {
                let after = region.instances.last().map_or(&region.bar, |(_, bar, _)| bar);
                let bar = multi.insert_after(
                    after,
                    ProgressBar::new(Phase::STEPS.len() as u64 - 1)
                        .with_style(running)
                        .with_prefix(format!("{} {}", subject.name, subject.instance))
                        .with_elapsed(since_request),
                );
                bar.enable_steady_tick(TICK);
                region
                    .instances
                    .push((subject.instance.clone(), bar.clone(), event.phase));
                bar
            }
        };
        if event.phase != Phase::Failed {
            bar.set_position(event.phase.step());
        }
        if event.phase.is_final() {
            bar.disable_steady_tick();
            bar.set_style(ended);
            let mut message = format!("{} after {}", event.phase, human(bar.elapsed().as_secs_f64()));
            if let Some(detail) = &event.detail {
                message.push_str(&format!(": {detail}"));
            }
            bar.finish_with_message(message);
        } else {
            bar.set_message(event.phase.to_string());
        }
        region.bar.set_message(region_message(&region.instances));
        let everywhere: Vec<Phase> = self
            .regions
            .values()
            .flat_map(|r| r.instances.iter().map(|(_, _, phase)| *phase))
            .collect();
        if let Some(header) = self.headers.get(&(event.deployment.clone(), event.generation)) {
            header.set_message(phase_counts(&everywhere));
        }
    }

    fn clear(self) {
        for region in self.regions.values() {
            for (_, bar, _) in &region.instances {
                bar.finish_and_clear();
            }
            region.bar.finish_and_clear();
        }
        for bar in self.headers.values() {
            bar.finish_and_clear();
        }
        // Best effort: a terminal that cannot be cleared keeps a few lines.
        let _ = self.multi.clear();
    }
}

fn region_message(instances: &[(String, ProgressBar, Phase)]) -> String {
    let phases: Vec<Phase> = instances.iter().map(|(_, _, phase)| *phase).collect();
    phase_counts(&phases)
}

/// `2 instances: 1 ssh, 1 verified`.
fn phase_counts(phases: &[Phase]) -> String {
    let mut by_phase: BTreeMap<Phase, usize> = BTreeMap::new();
    for phase in phases {
        *by_phase.entry(*phase).or_default() += 1;
    }
    let parts: Vec<String> = by_phase.iter().map(|(phase, n)| format!("{n} {phase}")).collect();
    format!(
        "{}: {}",
        crate::output::Count(phases.len(), "instance"),
        parts.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Subject;

    fn stamped(subject: Option<&str>, phase: Phase, elapsed: u64, took: Option<u64>) -> Stamped {
        Stamped {
            event: Event {
                deployment: "hello".into(),
                generation: Some(2),
                subject: subject.map(|id| Subject {
                    region: "eu-west-1".into(),
                    instance: id.into(),
                    name: "hello-g2-1".into(),
                }),
                phase,
                detail: (phase == Phase::Failed).then(|| "unit a.service failed".into()),
            },
            elapsed: Duration::from_millis(elapsed),
            took: took.map(Duration::from_millis),
        }
    }

    #[test]
    fn plain_lines_name_who_what_and_when() {
        let cases = [
            (
                stamped(None, Phase::Requested, 0, None),
                "[   0.0s] hello generation 2: requested",
            ),
            (
                stamped(Some("i-1"), Phase::Ssh, 12_340, Some(9_100)),
                "[  12.3s] eu-west-1 hello-g2-1 (i-1): ssh (+9.1s)",
            ),
            (
                stamped(Some("i-1"), Phase::Failed, 20_000, Some(7_660)),
                "[  20.0s] eu-west-1 hello-g2-1 (i-1): failed (+7.7s): unit a.service failed",
            ),
        ];
        for (event, want) in cases {
            assert_eq!(plain_line(&event), want);
        }
    }

    #[test]
    fn json_lines_always_carry_every_field() {
        let text = json_line(&stamped(None, Phase::Requested, 5, None));
        assert!(
            text.starts_with(r#"{"schema":"respot.progress","version":1,"event":"phase","#),
            "schema and version lead: {text}"
        );
        let line: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut keys: Vec<&str> = line.as_object().unwrap().keys().map(String::as_str).collect();
        let mut want = [
            "schema",
            "version",
            "event",
            "deployment",
            "generation",
            "region",
            "instance",
            "name",
            "phase",
            "elapsed_ms",
            "took_ms",
            "detail",
        ];
        keys.sort_unstable();
        want.sort_unstable();
        assert_eq!(keys, want);
        assert_eq!(line["schema"], SCHEMA);
        assert_eq!(line["region"], serde_json::Value::Null);
        let line: serde_json::Value = serde_json::from_str(&json_line(&stamped(
            Some("i-1"),
            Phase::CloudInit,
            70_001,
            Some(20_000),
        )))
        .unwrap();
        assert_eq!(line["phase"], "cloud-init");
        assert_eq!(line["instance"], "i-1");
        assert_eq!(line["elapsed_ms"], 70_001);
        assert_eq!(line["took_ms"], 20_000);
    }

    #[test]
    fn the_hub_records_even_when_hidden() {
        let hub = Hub::new(Display::Hidden, false);
        hub.observe(stamped(None, Phase::Requested, 0, None).event);
        hub.observe(stamped(Some("i-1"), Phase::Running, 0, None).event);
        let timeline = hub.timeline();
        let phases: Vec<Phase> = timeline.events().iter().map(|s| s.event.phase).collect();
        assert_eq!(phases, [Phase::Requested, Phase::Running]);
        assert!(timeline.events()[1].took.is_some(), "running follows the request");
    }
}
