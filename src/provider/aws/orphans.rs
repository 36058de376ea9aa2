//! The inventory for `list --all-deployments`: every instance, security
//! group and spot request carrying a `respot:deployment` tag, whatever its
//! value, in every region covered (three reads per region, together).
//!
//! It only reads. Target groups belong to the front door: `list` adds them
//! from `traffic::alb::tagged_target_groups`.

use super::ec2::{Ec2Api, tag_value};
use super::{AwsProvider, RegionTarget, convert, gather, per_region};
use crate::provider::{Inventory, ResourceKind, Result, TaggedResource, tag};

impl<E: Ec2Api> AwsProvider<E> {
    pub(super) async fn tagged_inventory(&self) -> Result<Inventory> {
        let results = per_region(self.regions.clone(), |target| async move {
            self.region_inventory(&target).await
        })
        .await;
        let mut inventory = Inventory::default();
        for part in gather("list", results)? {
            inventory.instances.extend(part.instances);
            inventory.resources.extend(part.resources);
        }
        Ok(inventory)
    }

    async fn region_inventory(&self, target: &RegionTarget<E>) -> Result<Inventory> {
        let region = target.name.as_str();
        let (instances, groups, requests) = tokio::join!(
            target.ec2.describe_tagged_instances(),
            target.ec2.describe_tagged_groups(),
            target.ec2.describe_spot_request_statuses(None),
        );
        let fail = |err| self.api_error(region, &err);
        let mut inventory = Inventory::default();
        for raw in instances.map_err(fail)? {
            let Some(deployment) = tag_value(&raw.tags, tag::DEPLOYMENT).map(str::to_string) else {
                continue;
            };
            if let Some(instance) = convert::instance(region, &deployment, &raw) {
                inventory.instances.push((deployment, instance));
            }
        }
        for group in groups.map_err(fail)? {
            let Some(deployment) = tag_value(&group.tags, tag::DEPLOYMENT) else {
                continue;
            };
            inventory.resources.push(TaggedResource {
                kind: ResourceKind::SecurityGroup,
                id: group.id.clone(),
                name: Some(group.name.clone()),
                region: region.to_string(),
                deployment: deployment.to_string(),
                state: None,
                instance: None,
                created_at: None,
            });
        }
        for request in requests.map_err(fail)? {
            let Some(deployment) = tag_value(&request.tags, tag::DEPLOYMENT) else {
                continue;
            };
            inventory.resources.push(TaggedResource {
                kind: ResourceKind::SpotRequest,
                id: request.id.clone(),
                name: None,
                region: region.to_string(),
                deployment: deployment.to_string(),
                state: Some(request.state.clone()),
                instance: request.instance_id.clone(),
                created_at: request.created_at,
            });
        }
        Ok(inventory)
    }
}
