//! `engine::Verification` over SSH: the adapter between the lifecycle and
//! `verify`. The engine decides when to verify and when to roll back; this
//! type knows which key material goes into a generation's user-data, which
//! host keys to pin before connecting, and which known_hosts entries to drop
//! when instances go away.

use super::select::{pin_host_keys, targets};
use crate::config::{Config, HostKeyPolicy};
use crate::engine::{Forget, Verdict, Verification};
use crate::keys::{KeyError, KeyStore};
use crate::output::Printer;
use crate::progress::{Event, Phase};
use crate::provider::Instance;
use crate::template::LaunchMaterial;
use crate::verify::{Expected, Stage, Target, VerifySettings, Watch, verify_fleet_watched};

pub struct SshVerification<'a> {
    keys: &'a KeyStore,
    config: &'a Config,
    settings: VerifySettings,
    expected: Expected,
    printer: &'a Printer,
}

impl<'a> SshVerification<'a> {
    pub fn new(
        keys: &'a KeyStore,
        config: &'a Config,
        settings: VerifySettings,
        expected: Expected,
        printer: &'a Printer,
    ) -> Self {
        SshVerification {
            keys,
            config,
            settings,
            expected,
            printer,
        }
    }
}

impl Verification for SshVerification<'_> {
    fn launch_material(&self, generation: u64) -> Result<LaunchMaterial, KeyError> {
        let host_key = match self.settings.host_keys {
            HostKeyPolicy::Pinned => Some(self.keys.fresh_host_key(generation)?),
            HostKeyPolicy::RecordOnFirstUse => None,
        };
        Ok(LaunchMaterial {
            generation,
            host_key,
            verify_key: Some(self.keys.verify_public_key()?),
            bundle_source: None,
        })
    }

    fn heal_material(&self, generation: u64) -> Result<LaunchMaterial, KeyError> {
        let host_key = match self.settings.host_keys {
            HostKeyPolicy::Pinned => Some(self.keys.host_key(generation)?),
            HostKeyPolicy::RecordOnFirstUse => None,
        };
        Ok(LaunchMaterial {
            generation,
            host_key,
            verify_key: Some(self.keys.verify_public_key()?),
            bundle_source: None,
        })
    }

    async fn verify(&self, instances: &[Instance]) -> Verdict {
        pin_host_keys(self.keys, self.config, instances);
        let targets = targets(instances);
        let watch = PhaseWatch {
            deployment: &self.config.deployment.name,
            instances,
            printer: self.printer,
        };
        let report = verify_fleet_watched(
            self.keys,
            &targets,
            &self.expected,
            &self.settings,
            self.printer,
            &watch,
        )
        .await;
        Verdict {
            report,
            unreachable: instances.len() - targets.len(),
        }
    }
}

/// Verification stages as the launch phases of the instances they check.
struct PhaseWatch<'a> {
    deployment: &'a str,
    instances: &'a [Instance],
    printer: &'a Printer,
}

impl Watch for PhaseWatch<'_> {
    fn reached(&self, target: &Target, stage: Stage) {
        let Some(instance) = self.instances.iter().find(|i| i.id.0 == target.instance) else {
            return;
        };
        let event = |phase| Event::instance(self.deployment, instance, phase);
        let event = match stage {
            Stage::Connected => event(Phase::Ssh),
            Stage::CloudInit(status) => event(Phase::CloudInit).detail(status),
            Stage::Units => event(Phase::Units),
            Stage::Done { failure: None } => event(Phase::Verified),
            Stage::Done { failure: Some(why) } => event(Phase::Failed).detail(why),
        };
        self.printer.observer().observe(event);
    }
}

impl Forget for SshVerification<'_> {
    fn forget(&self, instances: &[Instance]) {
        HostKeys {
            keys: self.keys,
            printer: self.printer,
        }
        .forget(instances);
    }
}

/// The known_hosts side alone, for `destroy`, which must work even when
/// the blueprint no longer renders and so has nothing to verify against.
pub struct HostKeys<'a> {
    pub keys: &'a KeyStore,
    pub printer: &'a Printer,
}

impl Forget for HostKeys<'_> {
    /// Drops the entries of instances that are gone; a failure is a
    /// warning (a stale entry is never trusted for a new key: pins replace).
    fn forget(&self, instances: &[Instance]) {
        let endpoints: Vec<_> = instances.iter().filter_map(super::select::endpoint).collect();
        if let Err(err) = self.keys.forget(&endpoints) {
            self.printer
                .warn(&format!("could not drop known_hosts entries: {err}"));
        }
    }
}
