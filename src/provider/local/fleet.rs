//! What `heal` and `list --all-deployments` need of the local provider:
//! more VMs of a live generation, named after the ones it already has,
//! and every deployment's VMs under the state root.
//!
//! A local VM has no interruption notice and no capacity pools: what goes
//! is a VM whose qemu died, which `list` shows as `dead`.

use std::collections::BTreeSet;

use super::{LocalProvider, io_error};
use crate::config::valid_deployment_name;
use crate::provider::{
    Instance, InstanceState, Inventory, LaunchRequest, ProviderError, RegionCount, ResourceKind, Result,
    TaggedResource,
};

/// The one region of the local provider.
pub const LOCAL: &str = "local";

impl LocalProvider {
    pub(super) fn wanted_counts(&self) -> Vec<RegionCount> {
        vec![RegionCount {
            region: LOCAL.to_string(),
            count: self.count,
        }]
    }

    /// Launches `count` more VMs of `request`'s generation, numbered after
    /// the highest its names already use, and returns them once running.
    pub(super) async fn launch_counted(&self, request: &LaunchRequest, count: u32) -> Result<Vec<Instance>> {
        let before = self.records(&request.deployment)?;
        let known: BTreeSet<String> = before.iter().map(|(_, r)| r.id.clone()).collect();
        let prefix = format!("{}-g{}-", request.deployment, request.generation);
        let highest = before
            .iter()
            .filter_map(|(_, r)| r.name.strip_prefix(&prefix)?.parse::<u32>().ok())
            .max()
            .unwrap_or(0);
        let accel = self.resolved_accel();
        for index in highest..highest + count {
            let this = self.clone();
            let request = request.clone();
            tokio::task::spawn_blocking(move || this.launch_one(&request, index, accel))
                .await
                .map_err(|e| ProviderError::Task {
                    task: "launch",
                    detail: e.to_string(),
                })??;
        }
        let launched: Vec<Instance> = self
            .records(&request.deployment)?
            .iter()
            .filter(|(_, r)| !known.contains(&r.id))
            .map(|(dir, r)| self.to_instance(dir, r))
            .collect();
        if let Some(dead) = launched.iter().find(|i| i.state != InstanceState::Running) {
            return Err(ProviderError::VmNotRunning {
                name: dead.name.clone(),
            });
        }
        Ok(launched)
    }

    /// Every deployment's VMs under the state root, and the half-made
    /// instance directories (no record) a launch left behind.
    pub(super) fn all_deployments(&self) -> Result<Inventory> {
        let mut inventory = Inventory::default();
        let entries = match std::fs::read_dir(&self.state_root) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(inventory),
            Err(err) => return Err(io_error(&self.state_root, err)),
        };
        let mut deployments: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|name| valid_deployment_name(name))
            .collect();
        deployments.sort();
        for deployment in deployments {
            let records = self.records(&deployment)?;
            for (dir, record) in &records {
                inventory
                    .instances
                    .push((deployment.clone(), self.to_instance(dir, record)));
            }
            let dir = self.deployment_dir(&deployment);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.filter_map(|e| e.ok()) {
                let path = entry.path();
                if records.iter().any(|(d, _)| *d == path) {
                    continue;
                }
                inventory.resources.push(TaggedResource {
                    kind: ResourceKind::VmDirectory,
                    id: entry.file_name().to_string_lossy().to_string(),
                    name: Some(path.display().to_string()),
                    region: LOCAL.to_string(),
                    deployment: deployment.clone(),
                    state: None,
                    instance: None,
                    created_at: entry.metadata().and_then(|m| m.modified()).ok(),
                });
            }
        }
        Ok(inventory)
    }
}
