//! Reading a deployment's instances in one region: the one place that
//! turns `DescribeInstances` answers into provider instances.
//!
//! `list`, the launch's wait and the destroy's wait all read through here.
//! It only reads.

use super::ec2::Ec2Api;
use super::{AwsProvider, RegionTarget, convert};
use crate::provider::{Instance, Result};

/// The most ids one `TerminateInstances` or `DescribeInstances` call takes.
pub const ID_BATCH: usize = 1000;

impl<E: Ec2Api> AwsProvider<E> {
    /// The deployment's instances in `target`, oldest first: all of them,
    /// or only `ids` (in batches of [`ID_BATCH`]; ids AWS forgot are
    /// skipped, not an error).
    pub(super) async fn list_region(
        &self,
        target: &RegionTarget<E>,
        deployment: &str,
        ids: &[String],
    ) -> Result<Vec<Instance>> {
        let batches: Vec<&[String]> = if ids.is_empty() {
            vec![&[]]
        } else {
            ids.chunks(ID_BATCH).collect()
        };
        let mut found = Vec::new();
        for batch in batches {
            let raw = target
                .ec2
                .describe_instances(deployment, batch)
                .await
                .map_err(|err| self.api_error(&target.name, &err))?;
            found.extend(
                raw.iter()
                    .filter_map(|raw| convert::instance(&target.name, deployment, raw)),
            );
        }
        found.sort_by(|a, b| (a.launched_at, &a.id).cmp(&(b.launched_at, &b.id)));
        Ok(found)
    }
}
