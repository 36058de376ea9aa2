//! [`Elbv2Api`] over the AWS SDK; the only place ELBv2 SDK types appear.

use std::time::Duration;

use aws_config::{Region, SdkConfig};
use aws_sdk_elasticloadbalancingv2 as elb;
use aws_sdk_elasticloadbalancingv2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use elb::types;

use super::elbv2::{
    ElbError, ElbResult, Elbv2Api, ListedTargetGroup, Listener, LoadBalancer, NewTargetGroup, Tags,
    TargetGroup, TargetHealth,
};

/// An ELBv2 client for one region.
#[derive(Debug, Clone)]
pub struct SdkElbv2 {
    region: String,
    client: elb::Client,
}

impl SdkElbv2 {
    pub fn new(sdk: &SdkConfig, region: &str) -> SdkElbv2 {
        let config = elb::config::Builder::from(sdk)
            .region(Region::new(region.to_string()))
            .build();
        SdkElbv2 {
            region: region.to_string(),
            client: elb::Client::from_conf(config),
        }
    }
}

fn from_sdk<E, R>(action: &'static str, err: &SdkError<E, R>) -> ElbError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    ElbError {
        action,
        code: err.code().map(str::to_string),
        message: err
            .message()
            .map(str::to_string)
            .unwrap_or_else(|| DisplayErrorContext(err).to_string()),
    }
}

fn missing(action: &'static str, what: &str) -> ElbError {
    ElbError {
        action,
        code: None,
        message: format!("the answer has no {what}"),
    }
}

fn tag(key: &str, value: &str) -> types::Tag {
    types::Tag::builder().key(key).value(value).build()
}

/// A listener as [`Listener`]: where its default action forwards.
fn listener_of(listener: &types::Listener) -> ElbResult<Listener> {
    const ACTION: &str = "DescribeListeners";
    let forward = listener
        .default_actions()
        .iter()
        .filter(|a| a.r#type() == Some(&types::ActionTypeEnum::Forward))
        .flat_map(|a| match a.forward_config() {
            Some(config) => config
                .target_groups()
                .iter()
                .filter_map(|t| Some((t.target_group_arn()?.to_string(), t.weight().unwrap_or(1))))
                .collect::<Vec<_>>(),
            None => a
                .target_group_arn()
                .map(|arn| vec![(arn.to_string(), 1)])
                .unwrap_or_default(),
        })
        .collect();
    Ok(Listener {
        arn: listener.listener_arn().unwrap_or_default().to_string(),
        load_balancer_arn: listener
            .load_balancer_arn()
            .ok_or_else(|| missing(ACTION, "load balancer ARN"))?
            .to_string(),
        port: listener.port(),
        forward,
    })
}

impl Elbv2Api for SdkElbv2 {
    fn region(&self) -> &str {
        &self.region
    }

    async fn describe_listener(&self, arn: &str) -> ElbResult<Listener> {
        const ACTION: &str = "DescribeListeners";
        let out = self
            .client
            .describe_listeners()
            .listener_arns(arn)
            .send()
            .await
            .map_err(|e| from_sdk(ACTION, &e))?;
        let listener = out
            .listeners()
            .first()
            .ok_or_else(|| missing(ACTION, "listener"))?;
        let mut converted = listener_of(listener)?;
        converted.arn = arn.to_string();
        Ok(converted)
    }

    async fn describe_load_balancer(&self, arn: &str) -> ElbResult<LoadBalancer> {
        const ACTION: &str = "DescribeLoadBalancers";
        let out = self
            .client
            .describe_load_balancers()
            .load_balancer_arns(arn)
            .send()
            .await
            .map_err(|e| from_sdk(ACTION, &e))?;
        let lb = out
            .load_balancers()
            .first()
            .ok_or_else(|| missing(ACTION, "load balancer"))?;
        Ok(LoadBalancer {
            arn: arn.to_string(),
            vpc_id: lb.vpc_id().ok_or_else(|| missing(ACTION, "VPC"))?.to_string(),
            dns_name: lb.dns_name().map(str::to_string),
        })
    }

    async fn target_groups_named(&self, names: &[String]) -> ElbResult<Vec<TargetGroup>> {
        const ACTION: &str = "DescribeTargetGroups";
        // A name that does not exist fails the whole call: ask one by one.
        let mut found = Vec::new();
        for name in names {
            match self.client.describe_target_groups().names(name).send().await {
                Ok(out) => found.extend(out.target_groups().iter().filter_map(|g| {
                    Some(TargetGroup {
                        arn: g.target_group_arn()?.to_string(),
                        name: g.target_group_name()?.to_string(),
                    })
                })),
                Err(err) if err.code() == Some("TargetGroupNotFound") => {}
                Err(err) => return Err(from_sdk(ACTION, &err)),
            }
        }
        Ok(found)
    }

    async fn describe_tags(&self, arns: &[String]) -> ElbResult<Vec<(String, Tags)>> {
        const ACTION: &str = "DescribeTags";
        if arns.is_empty() {
            return Ok(Vec::new());
        }
        let out = self
            .client
            .describe_tags()
            .set_resource_arns(Some(arns.to_vec()))
            .send()
            .await
            .map_err(|e| from_sdk(ACTION, &e))?;
        Ok(out
            .tag_descriptions()
            .iter()
            .filter_map(|d| {
                let tags = d
                    .tags()
                    .iter()
                    .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or_default().to_string())))
                    .collect();
                Some((d.resource_arn()?.to_string(), tags))
            })
            .collect())
    }

    async fn create_target_group(&self, group: &NewTargetGroup) -> ElbResult<String> {
        const ACTION: &str = "CreateTargetGroup";
        let mut call = self
            .client
            .create_target_group()
            .name(&group.name)
            .protocol(types::ProtocolEnum::Http)
            .port(i32::from(group.port))
            .vpc_id(&group.vpc_id)
            .target_type(types::TargetTypeEnum::Instance)
            .health_check_protocol(types::ProtocolEnum::Http)
            .health_check_path(&group.health_path);
        for (k, v) in &group.tags {
            call = call.tags(tag(k, v));
        }
        let out = call.send().await.map_err(|e| from_sdk(ACTION, &e))?;
        out.target_groups()
            .first()
            .and_then(|g| g.target_group_arn())
            .map(str::to_string)
            .ok_or_else(|| missing(ACTION, "target group ARN"))
    }

    async fn add_tags(&self, arn: &str, tags: &Tags) -> ElbResult<()> {
        let mut call = self.client.add_tags().resource_arns(arn);
        for (k, v) in tags {
            call = call.tags(tag(k, v));
        }
        call.send().await.map_err(|e| from_sdk("AddTags", &e))?;
        Ok(())
    }

    async fn forward(&self, listener_arn: &str, weights: &[(String, i32)]) -> ElbResult<()> {
        let mut config = types::ForwardActionConfig::builder();
        for (arn, weight) in weights {
            config = config.target_groups(
                types::TargetGroupTuple::builder()
                    .target_group_arn(arn)
                    .weight(*weight)
                    .build(),
            );
        }
        let action = types::Action::builder()
            .r#type(types::ActionTypeEnum::Forward)
            .forward_config(config.build())
            .build();
        self.client
            .modify_listener()
            .listener_arn(listener_arn)
            .default_actions(action)
            .send()
            .await
            .map_err(|e| from_sdk("ModifyListener", &e))?;
        Ok(())
    }

    async fn answer_503(&self, listener_arn: &str) -> ElbResult<()> {
        let fixed = types::FixedResponseActionConfig::builder()
            .status_code("503")
            .content_type("text/plain")
            .message_body("no generation is deployed behind this listener\n")
            .build();
        let action = types::Action::builder()
            .r#type(types::ActionTypeEnum::FixedResponse)
            .fixed_response_config(fixed)
            .build();
        self.client
            .modify_listener()
            .listener_arn(listener_arn)
            .default_actions(action)
            .send()
            .await
            .map_err(|e| from_sdk("ModifyListener", &e))?;
        Ok(())
    }

    async fn register_targets(&self, arn: &str, ids: &[String], port: u16) -> ElbResult<()> {
        let mut call = self.client.register_targets().target_group_arn(arn);
        for id in ids {
            call = call.targets(
                types::TargetDescription::builder()
                    .id(id)
                    .port(i32::from(port))
                    .build(),
            );
        }
        call.send().await.map_err(|e| from_sdk("RegisterTargets", &e))?;
        Ok(())
    }

    async fn deregister_targets(&self, arn: &str, ids: &[String]) -> ElbResult<()> {
        let mut call = self.client.deregister_targets().target_group_arn(arn);
        for id in ids {
            call = call.targets(types::TargetDescription::builder().id(id).build());
        }
        call.send().await.map_err(|e| from_sdk("DeregisterTargets", &e))?;
        Ok(())
    }

    async fn target_health(&self, arn: &str) -> ElbResult<Vec<TargetHealth>> {
        let out = self
            .client
            .describe_target_health()
            .target_group_arn(arn)
            .send()
            .await
            .map_err(|e| from_sdk("DescribeTargetHealth", &e))?;
        Ok(out
            .target_health_descriptions()
            .iter()
            .filter_map(|d| {
                let health = d.target_health();
                Some(TargetHealth {
                    id: d.target()?.id()?.to_string(),
                    state: health
                        .and_then(|h| h.state())
                        .map_or("unknown".to_string(), |s| s.as_str().to_string()),
                    reason: health
                        .and_then(|h| h.description().or(h.reason().map(|r| r.as_str())))
                        .map(str::to_string),
                })
            })
            .collect())
    }

    async fn deregistration_delay(&self, arn: &str) -> ElbResult<Duration> {
        let out = self
            .client
            .describe_target_group_attributes()
            .target_group_arn(arn)
            .send()
            .await
            .map_err(|e| from_sdk("DescribeTargetGroupAttributes", &e))?;
        let secs = out
            .attributes()
            .iter()
            .find(|a| a.key() == Some("deregistration_delay.timeout_seconds"))
            .and_then(|a| a.value())
            .and_then(|v| v.parse().ok())
            .unwrap_or(300);
        Ok(Duration::from_secs(secs))
    }

    async fn delete_target_group(&self, arn: &str) -> ElbResult<()> {
        self.client
            .delete_target_group()
            .target_group_arn(arn)
            .send()
            .await
            .map_err(|e| from_sdk("DeleteTargetGroup", &e))?;
        Ok(())
    }

    async fn all_target_groups(&self) -> ElbResult<Vec<ListedTargetGroup>> {
        const ACTION: &str = "DescribeTargetGroups";
        let mut found = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let out = self
                .client
                .describe_target_groups()
                .page_size(400)
                .set_marker(marker.take())
                .send()
                .await
                .map_err(|e| from_sdk(ACTION, &e))?;
            found.extend(out.target_groups().iter().filter_map(|g| {
                Some(ListedTargetGroup {
                    arn: g.target_group_arn()?.to_string(),
                    name: g.target_group_name()?.to_string(),
                    load_balancers: g.load_balancer_arns().to_vec(),
                })
            }));
            match out.next_marker() {
                Some(next) if !next.is_empty() => marker = Some(next.to_string()),
                _ => return Ok(found),
            }
        }
    }

    async fn listeners_of(&self, load_balancer_arn: &str) -> ElbResult<Vec<Listener>> {
        const ACTION: &str = "DescribeListeners";
        let mut found = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let out = self
                .client
                .describe_listeners()
                .load_balancer_arn(load_balancer_arn)
                .set_marker(marker.take())
                .send()
                .await
                .map_err(|e| from_sdk(ACTION, &e))?;
            for listener in out.listeners() {
                found.push(listener_of(listener)?);
            }
            match out.next_marker() {
                Some(next) if !next.is_empty() => marker = Some(next.to_string()),
                _ => return Ok(found),
            }
        }
    }
}
