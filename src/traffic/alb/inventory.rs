//! The target groups respot tagged, for `list --all-deployments`: every
//! group in a region whose `respot:deployment` tag names a deployment,
//! whichever blueprint made it. Read only: `DescribeTargetGroups` (every
//! page) and `DescribeTags` (20 ARNs a call, the API's limit).

use futures::stream::{self, StreamExt};

use super::elbv2::{ElbResult, Elbv2Api, ListedTargetGroup, Tags};
use super::{SdkElbv2, value};
use crate::provider::{ResourceKind, TaggedResource, tag};
use crate::traffic::{DoorError, Result};

/// `DescribeTags` takes at most 20 resource ARNs.
const TAGS_PER_CALL: usize = 20;

/// Tag reads in flight at once, per region.
const TAG_CALLS_AT_ONCE: usize = 4;

/// The respot-tagged target groups of every region in `regions`, read
/// concurrently.
pub async fn tagged_target_groups(
    sdk: &aws_config::SdkConfig,
    regions: &[String],
) -> Result<Vec<TaggedResource>> {
    let reads = regions.iter().map(|region| async move {
        let api = SdkElbv2::new(sdk, region);
        in_region(&api).await.map_err(|err| DoorError::Failed {
            door: format!("ELBv2 in {region}"),
            action: "list the target groups respot tagged".to_string(),
            detail: err.to_string(),
        })
    });
    let mut found = Vec::new();
    for part in futures::future::join_all(reads).await {
        found.extend(part?);
    }
    Ok(found)
}

/// The respot-tagged target groups of one region.
pub async fn in_region<E: Elbv2Api>(api: &E) -> ElbResult<Vec<TaggedResource>> {
    Ok(tagged(api)
        .await?
        .into_iter()
        .map(|(group, deployment)| resource(api.region(), deployment, group))
        .collect())
}

/// Every target group of the region with a `respot:deployment` tag, with
/// the deployment it names.
pub async fn tagged<E: Elbv2Api>(api: &E) -> ElbResult<Vec<(ListedTargetGroup, String)>> {
    let groups = api.all_target_groups().await?;
    let arns: Vec<String> = groups.iter().map(|g| g.arn.clone()).collect();
    let tagged: Vec<ElbResult<Vec<(String, Tags)>>> = stream::iter(arns.chunks(TAGS_PER_CALL))
        .map(|chunk| api.describe_tags(chunk))
        .buffer_unordered(TAG_CALLS_AT_ONCE)
        .collect()
        .await;
    let mut tags = std::collections::BTreeMap::new();
    for part in tagged {
        tags.extend(part?);
    }
    Ok(groups
        .into_iter()
        .filter_map(|group| {
            let deployment = value(tags.get(&group.arn)?, tag::DEPLOYMENT)?.to_string();
            Some((group, deployment))
        })
        .collect())
}

fn resource(region: &str, deployment: String, group: ListedTargetGroup) -> TaggedResource {
    let state = match group.load_balancers.len() {
        0 => "not used by a load balancer".to_string(),
        n => format!("used by {n} load balancer(s)"),
    };
    TaggedResource {
        kind: ResourceKind::TargetGroup,
        id: group.arn,
        name: Some(group.name),
        region: region.to_string(),
        deployment,
        state: Some(state),
        instance: None,
        created_at: None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::fake::FakeElb;
    use super::*;

    #[tokio::test]
    async fn only_groups_tagged_with_a_deployment_are_listed_with_their_use() {
        let elb = FakeElb::new("eu-west-1", "listener-1");
        elb.add_group(
            "tg/app-blue",
            &[("respot:deployment", "app"), ("respot:colour", "blue")],
        );
        elb.add_group("tg/app-2-green", &[("respot:deployment", "app-2")]);
        elb.add_group("tg/theirs", &[("team", "web")]);
        elb.world
            .lock()
            .unwrap()
            .listeners
            .get_mut("listener-1")
            .unwrap()
            .forward = vec![("tg/app-blue".to_string(), 100)];
        let mut found = in_region(&elb).await.unwrap();
        found.sort_by(|a, b| a.id.cmp(&b.id));
        let seen: Vec<(&str, &str, &str)> = found
            .iter()
            .map(|r| {
                (
                    r.id.as_str(),
                    r.deployment.as_str(),
                    r.state.as_deref().unwrap_or(""),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("tg/app-2-green", "app-2", "not used by a load balancer"),
                ("tg/app-blue", "app", "used by 1 load balancer(s)"),
            ]
        );
        assert!(
            found
                .iter()
                .all(|r| r.kind == ResourceKind::TargetGroup && r.region == "eu-west-1")
        );
    }

    #[tokio::test]
    async fn tags_are_read_twenty_arns_at_a_time() {
        let elb = FakeElb::new("eu-west-1", "listener-1");
        for n in 0..45 {
            elb.add_group(&format!("tg/g{n:02}"), &[("respot:deployment", "big")]);
        }
        let found = in_region(&elb).await.unwrap();
        assert_eq!(found.len(), 45);
        assert_eq!(elb.count("DescribeTags"), 3, "45 ARNs in calls of at most 20");
    }
}
