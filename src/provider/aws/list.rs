//! Reading a deployment's instances in one region: the one place that
//! turns `DescribeInstances` answers into provider instances.
//!
//! `list`, the launch's wait and the destroy's wait all read through here.
//! It only reads.

use futures::stream::{self, StreamExt, TryStreamExt};

use super::ec2::{Ec2Api, FILTER_VALUES};
use super::{AwsProvider, RegionTarget, convert};
use crate::provider::{Instance, Result};

/// Calls of one region in flight at once when a list of ids takes several:
/// enough to keep 1,000 ids (5 chunks) in one round trip.
pub const CHUNKS_AT_ONCE: usize = 8;

impl<E: Ec2Api> AwsProvider<E> {
    /// The deployment's instances in `target`, oldest first: all of them,
    /// or only `ids` (in chunks of [`FILTER_VALUES`], the most one filter
    /// takes, called concurrently; ids AWS forgot are skipped, not an
    /// error).
    pub(super) async fn list_region(
        &self,
        target: &RegionTarget<E>,
        deployment: &str,
        ids: &[String],
    ) -> Result<Vec<Instance>> {
        let chunks: Vec<&[String]> = if ids.is_empty() {
            vec![&[]]
        } else {
            ids.chunks(FILTER_VALUES).collect()
        };
        let pages: Vec<Vec<Instance>> = stream::iter(chunks)
            .map(|chunk| async move {
                let raw = target
                    .ec2
                    .describe_instances(deployment, chunk)
                    .await
                    .map_err(|err| self.api_error(&target.name, &err))?;
                Ok::<_, crate::provider::ProviderError>(
                    raw.iter()
                        .filter_map(|raw| convert::instance(&target.name, deployment, raw))
                        .collect(),
                )
            })
            .buffer_unordered(CHUNKS_AT_ONCE)
            .try_collect()
            .await?;
        let mut found: Vec<Instance> = pages.into_iter().flatten().collect();
        found.sort_by(|a, b| (a.launched_at, &a.id).cmp(&(b.launched_at, &b.id)));
        found.dedup_by(|a, b| a.id == b.id);
        Ok(found)
    }
}
