//! Destroying a deployment: terminate its instances, cancel its open spot
//! requests and, once no instance of it is left in a region, delete its
//! security group.
//!
//! Only resources tagged for the deployment are touched. Cleanup tries
//! every resource even when one fails: what could not be removed goes to
//! `left_behind`, and only a region that cannot be used at all (credentials,
//! reach) fails the whole action.

use std::collections::{BTreeMap, BTreeSet};

use futures::stream::{self, StreamExt};

use super::ec2::{Ec2Api, TERMINATE_IDS, tag_value};
use super::list::CHUNKS_AT_ONCE;
use super::{AwsProvider, RegionTarget, gather, group_name, per_region};
use crate::provider::{DestroyReport, Instance, InstanceId, InstanceState, ProviderError, Result, tag};

/// What a destroy is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scope {
    /// The instances given (an old generation): a live instance of the
    /// deployment that is not among them keeps the region's group.
    Instances,
    /// The whole deployment: every live instance of it goes, listed or not
    /// (one a listing behind a launch missed shows up while we wait).
    Deployment,
}

impl<E: Ec2Api> AwsProvider<E> {
    /// Destroys, then empties the deployment's bundle bucket.
    pub(super) async fn destroy_scoped(
        &self,
        deployment: &str,
        instances: &[Instance],
        wait: bool,
        scope: Scope,
    ) -> Result<DestroyReport> {
        let mut report = match self.destroy_all(deployment, instances, wait, scope).await {
            Ok(report) => report,
            Err(err) => return Err(self.explain_rejection(err).await),
        };
        match self.empty_bundles(deployment).await {
            Ok(removed) => report.cleaned.extend(removed),
            Err(err) => report.left_behind.push(err.to_string()),
        }
        Ok(report)
    }

    async fn destroy_all(
        &self,
        deployment: &str,
        instances: &[Instance],
        wait: bool,
        scope: Scope,
    ) -> Result<DestroyReport> {
        let mut by_region: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for instance in instances {
            let ids = by_region.entry(instance.region.clone()).or_default();
            if instance.state.is_live() {
                ids.push(instance.id.0.clone());
            }
        }
        // The union with what `RunInstances` returned to a launch that did
        // not finish (a listing right after a launch may not show it yet):
        // of the generations being destroyed, or all of them when the
        // listing showed none.
        let generations: BTreeSet<u64> = instances.iter().filter_map(|i| i.generation).collect();
        let pending: Vec<super::Pending> = {
            let mut all = self.pending();
            let (taken, kept) = std::mem::take(&mut *all).into_iter().partition(|p| {
                scope == Scope::Deployment || instances.is_empty() || generations.contains(&p.generation)
            });
            *all = kept;
            taken
        };
        for launched in &pending {
            let ids = by_region.entry(launched.region.clone()).or_default();
            if !ids.contains(&launched.id) {
                ids.push(launched.id.clone());
            }
        }
        let mut targets: Vec<RegionTarget<E>> = self.regions.clone();
        for region in by_region.keys() {
            if !targets.iter().any(|t| &t.name == region) {
                targets.push(self.target(region));
            }
        }
        let by_region = &by_region;
        let results = per_region(targets, |target| async move {
            let ids = by_region.get(&target.name).cloned().unwrap_or_default();
            match self.destroy_region(&target, deployment, &ids, wait, scope).await {
                Err(err) if !err.is_unavailable() => Ok(DestroyReport {
                    left_behind: vec![err.to_string()],
                    ..DestroyReport::default()
                }),
                other => other,
            }
        })
        .await;
        let mut report = DestroyReport::default();
        for part in gather("destroy", results)? {
            report.terminated.extend(part.terminated);
            report.cleaned.extend(part.cleaned);
            report.left_behind.extend(part.left_behind);
        }
        Ok(report)
    }

    async fn destroy_region(
        &self,
        target: &RegionTarget<E>,
        deployment: &str,
        ids: &[String],
        wait: bool,
        scope: Scope,
    ) -> Result<DestroyReport> {
        let region = target.name.as_str();
        let mut report = DestroyReport::default();
        let (terminated, requests, group, templates) = tokio::join!(
            self.terminate(target, deployment, ids),
            self.open_spot_requests(target, deployment),
            self.find_group(target, deployment),
            self.sweep_templates(target, deployment),
        );
        report.cleaned.extend(templates.cleaned);
        report.left_behind.extend(templates.left_behind);
        let terminated = terminated?;
        report
            .terminated
            .extend(terminated.iter().cloned().map(InstanceId));
        let requests = requests?;
        let group = group?;
        let (cancelled, others_live) = tokio::join!(self.cancel_spot_requests(target, &requests), async {
            if wait {
                self.wait_terminated(target, deployment, &terminated)
                    .await
                    .map(Some)
            } else {
                Ok(None)
            }
        });
        match cancelled {
            Ok(()) => report
                .cleaned
                .extend(requests.iter().map(|r| format!("spot request {r} in {region}"))),
            Err(err) => report.left_behind.push(err.to_string()),
        }
        let Some(group) = group else {
            return Ok(report);
        };
        // Destroying the whole deployment, a live instance the first listing
        // missed is no other generation: the group goes, and deleting it
        // terminates the stragglers that hold it.
        let others_live = match (others_live, scope) {
            (Ok(Some(_)), Scope::Deployment) => Ok(Some(0)),
            (others, _) => others,
        };
        match others_live {
            Ok(Some(0)) => match self.delete_group(target, deployment, &group).await {
                Ok(stragglers) => {
                    report.terminated.extend(stragglers.into_iter().map(InstanceId));
                    report.cleaned.push(format!(
                        "security group {group} ({}) in {region}",
                        group_name(deployment)
                    ))
                }
                Err(err) => report.left_behind.push(err.to_string()),
            },
            // Another generation still runs in this region and uses the group.
            Ok(Some(_)) => {}
            Ok(None) => tracing::warn!(
                "{region}: kept security group {group}: it is deleted once the instances are gone; \
                 run `respot destroy` again without --no-wait"
            ),
            Err(err) => report.left_behind.push(err.to_string()),
        }
        Ok(report)
    }

    /// Terminates `ids` in chunks of [`TERMINATE_IDS`], called
    /// concurrently; ids AWS no longer knows are skipped.
    async fn terminate(
        &self,
        target: &RegionTarget<E>,
        deployment: &str,
        ids: &[String],
    ) -> Result<Vec<String>> {
        let done: Vec<Result<Vec<String>>> = stream::iter(ids.chunks(TERMINATE_IDS))
            .map(|chunk| self.terminate_chunk(target, deployment, chunk))
            .buffer_unordered(CHUNKS_AT_ONCE)
            .collect()
            .await;
        let mut terminated = Vec::new();
        for chunk in done {
            terminated.extend(chunk?);
        }
        Ok(terminated)
    }

    async fn terminate_chunk(
        &self,
        target: &RegionTarget<E>,
        deployment: &str,
        chunk: &[String],
    ) -> Result<Vec<String>> {
        match target.ec2.terminate_instances(chunk).await {
            Ok(()) => Ok(chunk.to_vec()),
            Err(err) if err.code() == Some("InvalidInstanceID.NotFound") => {
                // Some ids are gone already; terminate the ones AWS
                // still lists under our tag.
                let known: Vec<String> = self
                    .list_region(target, deployment, chunk)
                    .await?
                    .into_iter()
                    .filter(|i| i.state.is_live())
                    .map(|i| i.id.0)
                    .collect();
                if known.is_empty() {
                    return Ok(known);
                }
                target
                    .ec2
                    .terminate_instances(&known)
                    .await
                    .map_err(|err| self.api_error(&target.name, &err))?;
                Ok(known)
            }
            Err(err) => Err(self.api_error(&target.name, &err)),
        }
    }

    async fn open_spot_requests(&self, target: &RegionTarget<E>, deployment: &str) -> Result<Vec<String>> {
        let requests = target
            .ec2
            .describe_spot_requests(deployment)
            .await
            .map_err(|err| self.api_error(&target.name, &err))?;
        Ok(requests
            .into_iter()
            .filter(|r| tag_value(&r.tags, tag::DEPLOYMENT) == Some(deployment))
            .map(|r| r.id)
            .collect())
    }

    async fn cancel_spot_requests(&self, target: &RegionTarget<E>, requests: &[String]) -> Result<()> {
        for batch in requests.chunks(TERMINATE_IDS) {
            target
                .ec2
                .cancel_spot_requests(batch)
                .await
                .map_err(|err| self.api_error(&target.name, &err))?;
        }
        Ok(())
    }

    /// Waits until `ids` are terminated; returns how many other instances
    /// of the deployment are still live in the region (their group stays).
    async fn wait_terminated(
        &self,
        target: &RegionTarget<E>,
        deployment: &str,
        ids: &[String],
    ) -> Result<usize> {
        let region = target.name.as_str();
        let ours: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
        let poll = async {
            let mut attempt = 0;
            loop {
                tokio::time::sleep(self.waits.backoff(attempt)).await;
                attempt += 1;
                let found = self.list_region(target, deployment, &[]).await?;
                let waiting = found
                    .iter()
                    .filter(|i| ours.contains(i.id.0.as_str()) && i.state != InstanceState::Terminated)
                    .count();
                if waiting == 0 {
                    return Ok(found
                        .iter()
                        .filter(|i| !ours.contains(i.id.0.as_str()) && i.state.is_live())
                        .count());
                }
                tracing::debug!("{region}: waiting for {waiting} instance(s) to terminate");
            }
        };
        match tokio::time::timeout(self.waits.terminated, poll).await {
            Ok(result) => result,
            Err(_) => Err(ProviderError::NotTerminated {
                region: region.to_string(),
                after: self.waits.terminated,
            }),
        }
    }
}
