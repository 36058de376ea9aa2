//! Removing a deployment's target groups by their tag, without its
//! `[traffic]` settings: `destroy --deployment NAME` of another
//! deployment, or a blueprint whose `[traffic]` section is gone. Exact-tag
//! scoping, as for instances: `app` never touches `app-2`'s groups.
//!
//! A group a listener's default action forwards to cannot be deleted
//! (`ResourceInUse`): each such listener first forwards to the other groups
//! it names, or answers a fixed 503 when none is left. Nothing else on the
//! listener changes.

use super::SdkElbv2;
use super::elbv2::{ElbResult, Elbv2Api, ListedTargetGroup};
use super::inventory::tagged;
use crate::traffic::{DoorError, Result};

/// Removes every target group tagged `respot:deployment = deployment` in
/// `regions`; returns what was removed, for the report.
pub async fn remove_tagged(
    sdk: &aws_config::SdkConfig,
    regions: &[String],
    deployment: &str,
) -> Result<Vec<String>> {
    let work = regions.iter().map(|region| async move {
        let api = SdkElbv2::new(sdk, region);
        remove_in(&api, deployment)
            .await
            .map_err(|err| DoorError::Failed {
                door: format!("ELBv2 in {region}"),
                action: format!("remove the target groups of `{deployment}`"),
                detail: err.to_string(),
            })
    });
    let mut removed = Vec::new();
    for part in futures::future::join_all(work).await {
        removed.extend(part?);
    }
    Ok(removed)
}

/// The same, in one region.
pub async fn remove_in<E: Elbv2Api>(api: &E, deployment: &str) -> ElbResult<Vec<String>> {
    let mut removed = Vec::new();
    for (group, tagged_for) in tagged(api).await? {
        if tagged_for != deployment {
            continue;
        }
        unhook(api, &group).await?;
        api.delete_target_group(&group.arn).await?;
        removed.push(format!("target group {} in {}", group.name, api.region()));
    }
    Ok(removed)
}

/// Takes `group` out of every listener default action that forwards to it.
async fn unhook<E: Elbv2Api>(api: &E, group: &ListedTargetGroup) -> ElbResult<()> {
    for balancer in &group.load_balancers {
        for listener in api.listeners_of(balancer).await? {
            if !listener.forward.iter().any(|(arn, _)| *arn == group.arn) {
                continue;
            }
            let rest: Vec<(String, i32)> = listener
                .forward
                .iter()
                .filter(|(arn, _)| *arn != group.arn)
                .cloned()
                .collect();
            if rest.iter().any(|(_, weight)| *weight > 0) {
                api.forward(&listener.arn, &rest).await?;
            } else {
                api.answer_503(&listener.arn).await?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::elbv2::Listener;
    use super::super::fake::FakeElb;
    use super::*;

    fn listener(elb: &FakeElb, arn: &str) -> Listener {
        elb.world.lock().unwrap().listeners[arn].clone()
    }

    #[tokio::test]
    async fn only_the_named_deployments_groups_go_and_listeners_keep_the_rest() {
        let elb = FakeElb::new("eu-west-1", "l-shared");
        elb.add_group("app-blue", &[("respot:deployment", "app")]);
        elb.add_group("app-2-blue", &[("respot:deployment", "app-2")]);
        elb.add_group("solo-green", &[("respot:deployment", "solo")]);
        {
            let mut world = elb.world.lock().unwrap();
            world.listeners.get_mut("l-shared").unwrap().forward =
                vec![("app-blue".to_string(), 50), ("app-2-blue".to_string(), 50)];
            world.listeners.insert(
                "l-solo".to_string(),
                Listener {
                    arn: "l-solo".to_string(),
                    load_balancer_arn: "lb-eu-west-1".to_string(),
                    port: Some(81),
                    forward: vec![("solo-green".to_string(), 100)],
                },
            );
        }
        let removed = remove_in(&elb, "app").await.unwrap();
        assert_eq!(removed, ["target group app-blue in eu-west-1"]);
        assert_eq!(
            listener(&elb, "l-shared").forward,
            [("app-2-blue".to_string(), 50)]
        );
        assert!(
            elb.world.lock().unwrap().groups.contains_key("app-2-blue"),
            "app-2 untouched"
        );

        let removed = remove_in(&elb, "solo").await.unwrap();
        assert_eq!(removed, ["target group solo-green in eu-west-1"]);
        assert!(listener(&elb, "l-solo").forward.is_empty());
        assert!(
            elb.world.lock().unwrap().answers_503,
            "the last group out leaves a fixed 503"
        );
        assert_eq!(
            remove_in(&elb, "solo").await.unwrap(),
            Vec::<String>::new(),
            "idempotent"
        );
    }
}
