//! What `heal` needs of AWS: the configured counts, a launch of some more
//! instances of a live generation into the regions that lost some (the
//! pools to avoid go last), the spot interruption notices, and the pools
//! that had no capacity.
//!
//! Launching reuses `launch`'s region launch whole (security group,
//! image, pools, wait); only the count and the pool order differ.

use std::time::SystemTime;

use super::ec2::Ec2Api;
use super::pools::Pool;
use super::{AwsProvider, RegionTarget, gather, per_region};
use crate::provider::{Instance, InstanceId, LaunchRequest, PoolKey, ProviderError, RegionCount, Result};

/// The spot request status of EC2's two-minute interruption notice.
pub const MARKED_FOR_TERMINATION: &str = "marked-for-termination";

impl<E: Ec2Api> RegionTarget<E> {
    /// Whether `pool` is one `heal` tries last.
    pub(super) fn avoids(&self, pool: &Pool) -> bool {
        self.avoid
            .iter()
            .any(|(itype, zone)| itype == pool.instance_type && zone == pool.zone)
    }
}

impl<E: Ec2Api> AwsProvider<E> {
    pub(super) fn wanted_counts(&self) -> Vec<RegionCount> {
        self.settings
            .regions
            .iter()
            .filter(|r| r.count > 0)
            .map(|r| RegionCount {
                region: r.name.clone(),
                count: r.count,
            })
            .collect()
    }

    /// Launches `counts` in their regions, all at once, each region like a
    /// create's (and failing the same way), with `avoid`'s pools last.
    pub(super) async fn launch_counts(
        &self,
        request: &LaunchRequest,
        counts: &[RegionCount],
        avoid: &[PoolKey],
    ) -> Result<Vec<Instance>> {
        let Some(allow_cidr) = self.settings.allow_cidr.as_deref() else {
            return Err(ProviderError::AllowCidrUnset);
        };
        let targets: Vec<RegionTarget<E>> = counts
            .iter()
            .filter(|c| c.count > 0)
            .map(|c| {
                let mut target = self.target(&c.region);
                target.count = c.count;
                target.avoid = avoid
                    .iter()
                    .filter(|p| p.region == c.region)
                    .filter_map(|p| Some((p.instance_type.clone(), p.zone.clone()?)))
                    .collect();
                target
            })
            .collect();
        if targets.is_empty() {
            return Err(ProviderError::NothingToLaunch);
        }
        let created_at = SystemTime::now();
        let results = per_region(targets, |target| async move {
            self.launch_region(&target, request, allow_cidr, created_at).await
        })
        .await;
        Ok(gather("heal", results)?.into_iter().flatten().collect())
    }

    /// The deployment's instances whose spot request carries the
    /// interruption notice, in every region covered.
    pub(super) async fn marked_for_termination(&self, deployment: &str) -> Result<Vec<InstanceId>> {
        let results = per_region(self.regions.clone(), |target| async move {
            target
                .ec2
                .describe_spot_request_statuses(Some(deployment))
                .await
                .map_err(|err| self.api_error(&target.name, &err))
        })
        .await;
        Ok(gather("list", results)?
            .into_iter()
            .flatten()
            .filter(|r| r.status.as_deref() == Some(MARKED_FOR_TERMINATION))
            .filter_map(|r| r.instance_id.map(InstanceId))
            .collect())
    }

    /// Remembers a pool that answered "no capacity" (for `heal`).
    pub(super) fn note_no_capacity(&self, region: &str, pool: &Pool) {
        let key = PoolKey {
            region: region.to_string(),
            instance_type: pool.instance_type.to_string(),
            zone: Some(pool.zone.to_string()),
        };
        if let Ok(mut pools) = self.no_capacity.lock()
            && !pools.contains(&key)
        {
            pools.push(key);
        }
    }

    pub(super) fn drain_no_capacity(&self) -> Vec<PoolKey> {
        match self.no_capacity.lock() {
            Ok(mut pools) => std::mem::take(&mut *pools),
            // A panic elsewhere poisoned it; nothing trustworthy to report.
            Err(_) => Vec::new(),
        }
    }
}
