//! `respot debug`: a read-only report on one instance, built from the same
//! queries as `verify`. It shows; it never fixes. The fix path is always
//! the source and a new deployment. Everything in it is the instance's
//! text, so the report for people loses its control characters.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use tokio::time::Instant;

use super::checks::{Drift, drift};
use super::query::{JournalLines, ProbeResult, Query, Reply, UnitName};
use super::text::strip_controls;
use super::transport::{Connection, Transport};
use super::{Target, VerifyError, VerifySettings};
use crate::keys::KeyStore;

pub const FIX_PATH: &str = "fix path: change the blueprint (respot.toml, templates/, instance/), \
                            commit, then `respot deploy`; never fix a live instance by hand";

/// Journal lines shown for each unit that is not active.
const JOURNAL_TAIL: u16 = 50;

/// A part of the debug report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Section {
    CloudInit,
    Units,
    Log,
    Drift,
    Health,
    Facts,
}

impl Section {
    pub const ALL: &'static [Section] = &[
        Section::CloudInit,
        Section::Units,
        Section::Log,
        Section::Drift,
        Section::Health,
        Section::Facts,
    ];

    /// The name people type (`--section cloud-init`).
    pub fn name(self) -> &'static str {
        match self {
            Section::CloudInit => "cloud-init",
            Section::Units => "units",
            Section::Log => "log",
            Section::Drift => "drift",
            Section::Health => "health",
            Section::Facts => "facts",
        }
    }

    pub fn from_name(name: &str) -> Option<Section> {
        Section::ALL.iter().copied().find(|s| s.name() == name)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DebugReport {
    pub instance: String,
    pub name: String,
    pub endpoint: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloud_init: Option<CloudInitPart>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub units: Option<UnitsPart>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<LogPart>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift: Option<DriftPart>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthPart>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub facts: Option<BTreeMap<String, String>>,
    pub fix_path: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct CloudInitPart {
    /// done, degraded, error, running, not-run, disabled, unavailable, unknown.
    pub status: String,
    pub exit_code: Option<i32>,
    pub errors: Vec<String>,
    pub status_json: Option<serde_json::Value>,
    pub output_log_tail: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct UnitsPart {
    /// `available` or `unavailable`.
    pub systemd: String,
    pub units: Vec<UnitPart>,
    pub failed: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct UnitPart {
    pub name: String,
    pub state: String,
    /// The journal tail, for units that are not active.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub journal: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LogPart {
    pub present: bool,
    pub lines: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DriftPart {
    pub manifest_present: bool,
    pub digest: Option<String>,
    pub generation: Option<serde_json::Value>,
    pub version: Option<String>,
    pub commit: Option<String>,
    pub files: usize,
    /// Files changed since launch, missing, or unchecked.
    pub drifted: Vec<Drift>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HealthPart {
    pub available: bool,
    pub probes: Vec<ProbeResult>,
}

/// Connects to `target` (waiting for boot up to `settings.timeout`) and
/// gathers `sections` (all when empty).
pub async fn debug_report(
    keys: &KeyStore,
    target: &Target,
    sections: &[Section],
    settings: &VerifySettings,
) -> Result<DebugReport, VerifyError> {
    let sections: &[Section] = if sections.is_empty() {
        Section::ALL
    } else {
        sections
    };
    let transport = Transport::new()?;
    let deadline = Instant::now() + settings.timeout;
    let connection = transport.connect(keys, target, settings, deadline).await?;
    let report = gather(&connection, target, sections).await;
    connection.close().await;
    report
}

async fn gather(
    connection: &Connection,
    target: &Target,
    sections: &[Section],
) -> Result<DebugReport, VerifyError> {
    let mut report = DebugReport {
        instance: target.instance.clone(),
        name: target.name.clone(),
        endpoint: format!("{}:{}", target.endpoint.host, target.endpoint.port),
        cloud_init: None,
        units: None,
        log: None,
        drift: None,
        health: None,
        facts: None,
        fix_path: FIX_PATH,
    };
    for section in sections {
        match section {
            Section::CloudInit => {
                report.cloud_init = Some(cloud_init_part(&connection.run(&Query::CloudInit).await?))
            }
            Section::Units => report.units = Some(units_part(connection).await?),
            Section::Log => {
                let reply = connection.run(&Query::Log).await?;
                report.log = Some(LogPart {
                    present: reply.status("log") == Some("present"),
                    lines: reply.text("log"),
                });
            }
            Section::Drift => report.drift = Some(drift_part(&connection.run(&Query::Manifest).await?)),
            Section::Health => {
                let reply = connection.run(&Query::Health).await?;
                report.health = Some(HealthPart {
                    available: reply.status("health") == Some("available"),
                    probes: reply.probes(),
                });
            }
            Section::Facts => {
                report.facts = Some(super::facts::facts(&connection.run(&Query::Facts).await?));
            }
        }
    }
    Ok(report)
}

fn cloud_init_part(reply: &Reply) -> CloudInitPart {
    let status_json = reply.cloud_init_json();
    let errors = reply.cloud_init_errors();
    CloudInitPart {
        status: reply.cloud_init_status(),
        exit_code: reply.kv("exit").and_then(|c| c.parse().ok()),
        errors,
        status_json,
        output_log_tail: reply.text("output-log"),
    }
}

async fn units_part(connection: &Connection) -> Result<UnitsPart, VerifyError> {
    let reply = connection.run(&Query::Units).await?;
    let mut units = Vec::new();
    for (name, state) in reply.units() {
        let mut journal = Vec::new();
        if state != "active"
            && let Some(unit) = UnitName::parse(&name)
        {
            let query = Query::Journal {
                unit,
                lines: JournalLines::clamped(JOURNAL_TAIL),
            };
            journal = connection.run(&query).await?.text("journal");
        }
        units.push(UnitPart { name, state, journal });
    }
    Ok(UnitsPart {
        systemd: reply.status("systemd").unwrap_or("unknown").to_string(),
        units,
        failed: reply
            .text("failed")
            .into_iter()
            .filter(|l| !l.trim().is_empty())
            .collect(),
    })
}

fn drift_part(reply: &Reply) -> DriftPart {
    let manifest: Option<serde_json::Value> = serde_json::from_str(&reply.text("manifest").join("\n")).ok();
    let get = |key: &str| manifest.as_ref().and_then(|m| m.get(key)).cloned();
    let as_string = |v: Option<serde_json::Value>| v.and_then(|v| v.as_str().map(strip_controls));
    let (files, drifted) = match &manifest {
        Some(m) => drift(m, reply),
        None => (0, Vec::new()),
    };
    DriftPart {
        manifest_present: reply.status("manifest") == Some("present"),
        digest: as_string(get("digest")),
        generation: get("generation"),
        version: as_string(get("version")),
        commit: as_string(get("commit")),
        files,
        drifted,
    }
}

/// The report for people; ends with a newline. Its parts are written out
/// first, then stripped of control characters as a whole.
impl fmt::Display for DebugReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write as _;
        let mut text = format!(
            "instance {} ({}) at {}\n",
            self.instance, self.name, self.endpoint
        );
        if let Some(part) = &self.cloud_init {
            write!(text, "{part}")?;
        }
        if let Some(part) = &self.units {
            write!(text, "{part}")?;
        }
        if let Some(part) = &self.log {
            write!(text, "{part}")?;
        }
        if let Some(part) = &self.drift {
            write!(text, "{part}")?;
        }
        if let Some(part) = &self.health {
            write!(text, "{part}")?;
        }
        if let Some(facts) = &self.facts {
            writeln!(text, "\n== facts")?;
            for (k, v) in facts {
                writeln!(text, "{k}: {v}")?;
            }
        }
        writeln!(text, "\n{}", self.fix_path)?;
        f.write_str(&strip_controls(&text))
    }
}

impl fmt::Display for CloudInitPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "\n== cloud-init\nstatus: {}", self.status)?;
        if let Some(code) = self.exit_code {
            writeln!(f, "exit code: {code}")?;
        }
        for e in &self.errors {
            writeln!(f, "error: {e}")?;
        }
        if !self.output_log_tail.is_empty() {
            writeln!(f, "output log (tail):")?;
            for l in &self.output_log_tail {
                writeln!(f, "  {l}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for UnitsPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "\n== units")?;
        if self.systemd != "available" {
            writeln!(f, "systemd: {}", self.systemd)?;
        }
        for unit in &self.units {
            writeln!(f, "{}: {}", unit.name, unit.state)?;
            for l in &unit.journal {
                writeln!(f, "  | {l}")?;
            }
        }
        for failed in &self.failed {
            writeln!(f, "failed: {failed}")?;
        }
        Ok(())
    }
}

impl fmt::Display for LogPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "\n== deployment log")?;
        if !self.present {
            writeln!(f, "(no /var/log/respot/deploy.log)")?;
        }
        for line in &self.lines {
            writeln!(f, "{line}")?;
        }
        Ok(())
    }
}

impl fmt::Display for DriftPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "\n== drift")?;
        if !self.manifest_present {
            writeln!(f, "no manifest at /etc/respot/manifest.json")?;
        }
        if let Some(digest) = &self.digest {
            writeln!(
                f,
                "digest {digest}, generation {}, version {}, commit {}",
                self.generation
                    .as_ref()
                    .map_or("?".to_string(), |g| g.to_string()),
                self.version.as_deref().unwrap_or("?"),
                self.commit.as_deref().unwrap_or("(dirty or none)")
            )?;
        }
        if self.drifted.is_empty() {
            writeln!(f, "no drift: {} files match their recorded sha256", self.files)?;
        }
        for d in &self.drifted {
            writeln!(f, "DRIFT {}: recorded {}, live {}", d.path, d.recorded, d.live)?;
        }
        Ok(())
    }
}

impl fmt::Display for HealthPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "\n== health")?;
        if !self.available {
            writeln!(f, "unavailable (no curl or python3 on the instance)")?;
        }
        for p in &self.probes {
            writeln!(
                f,
                ":{}{} want {} got {} {}",
                p.port, p.path, p.want, p.got, p.body
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_for_people_has_no_control_characters() {
        let report = DebugReport {
            instance: "i-1".into(),
            name: "n".into(),
            endpoint: "127.0.0.1:22".into(),
            cloud_init: None,
            units: Some(UnitsPart {
                systemd: "available".into(),
                units: vec![UnitPart {
                    name: "a.service".into(),
                    state: "failed".into(),
                    journal: vec!["\x1b]0;owned\x07boom\rok".into()],
                }],
                failed: Vec::new(),
            }),
            log: Some(LogPart {
                present: true,
                lines: vec!["\x1b[2Jdeployed\u{202e}".into()],
            }),
            drift: None,
            health: None,
            facts: Some(BTreeMap::from([(
                "kernel".to_string(),
                "6.1\x1b[1m\u{9b}".to_string(),
            )])),
            fix_path: FIX_PATH,
        };
        let text = report.to_string();
        assert!(!text.chars().any(|c| c.is_control() && c != '\n'), "{text:?}");
        assert!(text.contains("\n  | ]0;ownedboomok\n"), "{text}");
        assert!(text.contains("\n[2Jdeployed\n"), "{text}");
        assert!(text.contains("\nkernel: 6.1[1m\n"), "{text}");
    }
}
