//! Verification as the lifecycle sees it: `engine::Verification` over SSH.
//!
//! The engine decides when to verify and when to roll back; this type knows
//! how: which key material goes into a generation's user-data, which host
//! keys to pin before connecting, and which known_hosts entries to drop when
//! instances go away.

use crate::config::HostKeyPolicy;
use crate::engine::{Verdict, Verification};
use crate::keys::KeyStore;
use crate::output::Printer;
use crate::provider::Instance;
use crate::template::LaunchMaterial;

use super::{Expected, Target, VerifySettings, verify_fleet};

pub struct SshVerification<'a> {
    keys: &'a KeyStore,
    settings: VerifySettings,
    /// `None` for commands that only forget instances (destroy), which must
    /// work even when the blueprint no longer renders.
    expected: Option<Expected>,
    printer: &'a Printer,
}

impl<'a> SshVerification<'a> {
    pub fn new(
        keys: &'a KeyStore,
        settings: VerifySettings,
        expected: Expected,
        printer: &'a Printer,
    ) -> Self {
        SshVerification {
            keys,
            settings,
            expected: Some(expected),
            printer,
        }
    }

    /// For `destroy`: key cleanup only; `verify` always fails.
    pub fn cleanup_only(keys: &'a KeyStore, settings: VerifySettings, printer: &'a Printer) -> Self {
        SshVerification {
            keys,
            settings,
            expected: None,
            printer,
        }
    }
}

/// The instances respot can reach over SSH, as verification targets.
pub fn targets(instances: &[Instance]) -> Vec<Target> {
    instances
        .iter()
        .filter_map(|i| {
            i.ssh.as_ref().map(|endpoint| Target {
                instance: i.id.to_string(),
                name: i.name.clone(),
                endpoint: endpoint.clone(),
            })
        })
        .collect()
}

/// Pins each instance's generation host key for its endpoint, so the
/// first connection is already strict. Returns the instances whose key this
/// machine does not hold (another operator created them).
pub fn pin_host_keys(keys: &KeyStore, instances: &[Instance]) -> Vec<String> {
    let mut unpinned = Vec::new();
    for instance in instances {
        let (Some(endpoint), Some(generation)) = (&instance.ssh, instance.generation) else {
            continue;
        };
        if !keys.has_host_key(generation) {
            unpinned.push(instance.id.to_string());
            continue;
        }
        let pinned = keys
            .host_key(generation)
            .and_then(|(_, public)| keys.pin(endpoint, &public));
        if pinned.is_err() {
            unpinned.push(instance.id.to_string());
        }
    }
    unpinned
}

impl Verification for SshVerification<'_> {
    fn launch_material(&self, generation: u64) -> Result<LaunchMaterial, String> {
        let verify_key = self.keys.verify_public_key().map_err(|e| e.to_string())?;
        let host_key = match self.settings.host_keys {
            HostKeyPolicy::Pinned => Some(self.keys.fresh_host_key(generation).map_err(|e| e.to_string())?),
            HostKeyPolicy::RecordOnFirstUse => None,
        };
        Ok(LaunchMaterial {
            generation,
            host_key,
            verify_key: Some(verify_key),
        })
    }

    async fn verify(&self, instances: &[Instance]) -> Verdict {
        let Some(expected) = &self.expected else {
            return Verdict {
                passed: false,
                summary: "no expected digest to verify against".to_string(),
                report: serde_json::Value::Null,
                table: String::new(),
            };
        };
        if self.settings.host_keys == HostKeyPolicy::Pinned {
            pin_host_keys(self.keys, instances);
        }
        let targets = targets(instances);
        let report = verify_fleet(self.keys, &targets, expected, &self.settings, self.printer).await;
        let mut summary = report.summary();
        let failed: Vec<String> = report
            .checks
            .iter()
            .filter(|c| c.result == super::checks::Outcome::Fail)
            .map(|c| format!("{} {}: {}", c.name, c.check, c.detail))
            .collect();
        if !failed.is_empty() {
            summary.push_str(&format!("; failed: {}", failed.join("; ")));
        }
        Verdict {
            passed: report.passed() && targets.len() == instances.len(),
            summary,
            report: serde_json::to_value(&report).unwrap_or(serde_json::Value::Null),
            table: report.table().render(),
        }
    }

    fn forget(&self, instances: &[Instance]) {
        let endpoints: Vec<_> = instances.iter().filter_map(|i| i.ssh.clone()).collect();
        if let Err(err) = self.keys.forget(&endpoints) {
            self.printer
                .warn(&format!("could not drop known_hosts entries: {err}"));
        }
    }
}
