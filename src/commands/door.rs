//! The deployment's front door, when `respot.toml` has `[traffic]`: the
//! local provider's HAProxy, or on AWS the ALB listeners of
//! `[[traffic.aws.listeners]]`. Building it checks the tool and touches
//! nothing.

use super::Context;
use crate::engine::EngineError;
use crate::error::Result;
use crate::provider::AnyProvider;
use crate::traffic::AnyDoor;
use crate::traffic::alb::AlbDoor;
use crate::traffic::haproxy::HaproxyDoor;

/// `None` without `[traffic]`, or where this provider has no door yet.
pub(super) fn connect(context: &Context<'_>, provider: &AnyProvider) -> Result<Option<AnyDoor>> {
    let config = context.config()?;
    let Some(traffic) = &config.traffic else {
        return Ok(None);
    };
    match provider {
        AnyProvider::Local(local) => {
            let name = &config.deployment.name;
            let dir = context.paths.door_dir(name)?;
            let door = HaproxyDoor::new(traffic, name, dir, local.clone()).map_err(EngineError::from)?;
            Ok(Some(AnyDoor::Local(door)))
        }
        AnyProvider::Aws(aws) => {
            let listeners = traffic.aws.as_ref().map_or(0, |a| a.listeners.len());
            Ok((listeners > 0).then(|| {
                AnyDoor::Aws(Box::new(AlbDoor::new(
                    aws.sdk_config(),
                    &config.deployment.name,
                    traffic,
                )))
            }))
        }
    }
}
