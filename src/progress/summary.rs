//! What every create, deploy and heal ends with: how long each phase took,
//! where the instances are, and what they cost per hour. Built from the
//! run's `Timeline`, the instances the engine returned and the provider's
//! current prices; rendered for people here, serialized for scripts.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::{Phase, Timeline};
use crate::provider::{Instance, Lifecycle, PlannedRegion};

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// From the start of the command to the summary.
    pub total_seconds: f64,
    /// Each phase instances went through, and how long the slowest one
    /// took to reach it from its previous phase.
    pub phases: Vec<PhaseTime>,
    pub instances: Vec<InstanceSummary>,
    /// USD per hour for the instances that have a price (all of them
    /// unless `cost_note` says otherwise); `None` when none has one.
    pub cost_per_hour: Option<f64>,
    pub cost_note: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PhaseTime {
    pub phase: Phase,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct InstanceSummary {
    pub region: String,
    pub id: String,
    pub name: String,
    pub instance_type: String,
    pub lifecycle: Lifecycle,
    /// The SSH endpoint, or else the public IP.
    pub address: Option<String>,
    /// The last phase it reached in this run, when it was watched.
    pub phase: Option<Phase>,
    pub price_per_hour: Option<f64>,
}

impl Summary {
    /// The summary of `instances` after a run recorded in `timeline`,
    /// priced by `prices` (a provider's `capacity_plan`): an instance has a
    /// price when its region's planned pool is its type and lifecycle; a
    /// local VM costs nothing.
    pub fn new(
        timeline: &Timeline,
        total: Duration,
        instances: &[Instance],
        prices: &[PlannedRegion],
    ) -> Summary {
        let last = timeline.last_phases();
        let instances: Vec<InstanceSummary> = instances
            .iter()
            .map(|i| InstanceSummary {
                region: i.region.clone(),
                id: i.id.to_string(),
                name: i.name.clone(),
                instance_type: i.instance_type.clone(),
                lifecycle: i.lifecycle,
                address: i
                    .ssh
                    .as_ref()
                    .map(ToString::to_string)
                    .or_else(|| i.public_ip.clone()),
                phase: last.get(&i.id.to_string()).copied(),
                price_per_hour: price_of(i, prices),
            })
            .collect();
        let unpriced: Vec<String> = instances
            .iter()
            .filter(|i| i.price_per_hour.is_none())
            .map(|i| format!("{} {} in {}", i.instance_type, i.lifecycle, i.region))
            .collect();
        let priced: Vec<f64> = instances.iter().filter_map(|i| i.price_per_hour).collect();
        let cost_per_hour = (!priced.is_empty()).then(|| priced.iter().sum());
        let cost_note = (!unpriced.is_empty()).then(|| {
            let mut kinds = unpriced;
            kinds.sort();
            kinds.dedup();
            format!("no current price for {}", kinds.join(", "))
        });
        Summary {
            total_seconds: seconds(total),
            phases: timeline
                .phase_times()
                .into_iter()
                .map(|(phase, took)| PhaseTime {
                    phase,
                    seconds: seconds(took),
                })
                .collect(),
            instances,
            cost_per_hour,
            cost_note,
        }
    }

    /// For people, several lines, e.g.
    /// `done in 1m 32s; slowest instance: running 2.1s, ssh 55.0s, ...`.
    pub fn render(&self) -> String {
        let mut text = format!("done in {}", human(self.total_seconds));
        if !self.phases.is_empty() {
            let phases: Vec<String> = self
                .phases
                .iter()
                .map(|p| format!("{} {}", p.phase, human(p.seconds)))
                .collect();
            let _ = write!(text, "; slowest instance: {}", phases.join(", "));
        }
        text.push('\n');
        for i in &self.instances {
            let _ = writeln!(
                text,
                "  {}  {} ({})  {}  {}",
                i.region,
                i.name,
                i.id,
                i.address.as_deref().unwrap_or("-"),
                i.phase.map_or("", Phase::as_str)
            );
        }
        let cost = match self.cost_per_hour {
            Some(cost) => format!("estimated cost: {}/hour", dollars(cost)),
            None => "estimated cost: unknown".to_string(),
        };
        text.push_str(&cost);
        if let Some(note) = &self.cost_note {
            let _ = write!(text, " ({note})");
        }
        text.push('\n');
        text
    }
}

fn price_of(instance: &Instance, prices: &[PlannedRegion]) -> Option<f64> {
    if instance.lifecycle == Lifecycle::Vm {
        return Some(0.0);
    }
    prices
        .iter()
        .find(|p| {
            p.region == instance.region
                && p.instance_type == instance.instance_type
                && p.lifecycle == instance.lifecycle
        })
        .and_then(|p| p.price_per_hour)
}

/// `$0.00` for nothing, `$0.004200` below a cent (spot prices are that
/// small), `$1.2345` otherwise.
fn dollars(amount: f64) -> String {
    if amount == 0.0 {
        "$0.00".to_string()
    } else if amount < 0.01 {
        format!("${amount:.6}")
    } else {
        format!("${amount:.4}")
    }
}

/// Seconds to a tenth.
fn seconds(d: Duration) -> f64 {
    (d.as_secs_f64() * 10.0).round() / 10.0
}

/// `4.2s`, `1m 05s`.
pub fn human(seconds: f64) -> String {
    if seconds < 60.0 {
        format!("{seconds:.1}s")
    } else {
        let whole = seconds.round() as u64;
        format!("{}m {:02}s", whole / 60, whole % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Event;
    use crate::provider::{InstanceId, InstanceState, SshEndpoint};

    fn instance(id: &str, region: &str, itype: &str, lifecycle: Lifecycle) -> Instance {
        Instance {
            id: InstanceId(id.into()),
            name: format!("d-g1-{id}"),
            region: region.into(),
            zone: None,
            instance_type: itype.into(),
            lifecycle,
            state: InstanceState::Running,
            state_reason: None,
            public_ip: Some("203.0.113.9".into()),
            private_ip: None,
            ssh: (lifecycle == Lifecycle::Vm).then(|| SshEndpoint {
                host: "127.0.0.1".into(),
                port: 2201,
            }),
            digest: None,
            version: None,
            generation: Some(1),
            launched_at: None,
            secrets: None,
        }
    }

    fn planned(region: &str, itype: &str, price: Option<f64>) -> PlannedRegion {
        PlannedRegion {
            region: region.into(),
            count: 1,
            instance_type: itype.into(),
            lifecycle: Lifecycle::Spot,
            price_per_hour: price,
            price_note: None,
        }
    }

    #[test]
    fn prices_come_from_the_planned_pool_of_the_same_type_and_lifecycle() {
        let prices = [planned("eu-west-1", "t3.micro", Some(0.004))];
        let cases = [
            (
                "the planned pool",
                instance("a", "eu-west-1", "t3.micro", Lifecycle::Spot),
                Some(0.004),
            ),
            (
                "a fallback type",
                instance("b", "eu-west-1", "t3.small", Lifecycle::Spot),
                None,
            ),
            (
                "on-demand fallback",
                instance("c", "eu-west-1", "t3.micro", Lifecycle::OnDemand),
                None,
            ),
            (
                "another region",
                instance("d", "us-east-1", "t3.micro", Lifecycle::Spot),
                None,
            ),
            (
                "a local VM",
                instance("e", "local", "qemu-1cpu", Lifecycle::Vm),
                Some(0.0),
            ),
        ];
        for (name, instance, want) in cases {
            assert_eq!(price_of(&instance, &prices), want, "{name}");
        }
    }

    #[test]
    fn dollars_keep_small_prices_visible() {
        let cases = [
            (0.0, "$0.00"),
            (0.00002, "$0.000020"),
            (0.0042, "$0.004200"),
            (1.23456, "$1.2346"),
        ];
        for (amount, want) in cases {
            assert_eq!(dollars(amount), want);
        }
    }

    #[test]
    fn the_summary_names_phases_addresses_and_cost() {
        let mut timeline = Timeline::default();
        let a = instance("i-a", "eu-west-1", "t3.micro", Lifecycle::Spot);
        let b = instance("i-b", "eu-west-1", "t3.small", Lifecycle::Spot);
        timeline.record(Event::generation("d", 1, Phase::Requested), Duration::ZERO);
        timeline.record(Event::instance("d", &a, Phase::Running), Duration::from_secs(3));
        timeline.record(Event::instance("d", &b, Phase::Running), Duration::from_secs(3));
        timeline.record(Event::instance("d", &a, Phase::Ssh), Duration::from_secs(65));
        let prices = [planned("eu-west-1", "t3.micro", Some(0.0042))];
        let summary = Summary::new(&timeline, Duration::from_millis(70_040), &[a, b], &prices);
        assert_eq!(summary.cost_per_hour, Some(0.0042));
        assert_eq!(
            summary.render(),
            "done in 1m 10s; slowest instance: running 3.0s, ssh 1m 02s\n\
             \x20 eu-west-1  d-g1-i-a (i-a)  203.0.113.9  ssh\n\
             \x20 eu-west-1  d-g1-i-b (i-b)  203.0.113.9  running\n\
             estimated cost: $0.004200/hour (no current price for t3.small spot in eu-west-1)\n"
        );
        let json = serde_json::to_value(&summary).unwrap();
        assert_eq!(json["phases"][1]["phase"], "ssh");
        assert_eq!(json["phases"][1]["seconds"], 62.0);
        assert_eq!(json["instances"][0]["address"], "203.0.113.9");
    }
}
