//! The door a command drives, picked by provider. An enum rather than a
//! trait object, like `AnyProvider`: `FrontDoor` has async methods.

use std::time::Duration;

use super::alb::AlbDoor;
use super::haproxy::HaproxyDoor;
use super::{DoorState, FrontDoor, Kept, Probe, Result, Weights};
use crate::provider::Instance;

pub enum AnyDoor {
    Local(HaproxyDoor),
    Aws(Box<AlbDoor>),
}

impl FrontDoor for AnyDoor {
    fn describe(&self) -> String {
        match self {
            AnyDoor::Local(d) => d.describe(),
            AnyDoor::Aws(d) => d.describe(),
        }
    }

    async fn register(&self, generation: u64, targets: &[Instance]) -> Result<()> {
        match self {
            AnyDoor::Local(d) => d.register(generation, targets).await,
            AnyDoor::Aws(d) => d.register(generation, targets).await,
        }
    }

    async fn wait_healthy(&self, generation: u64, targets: &[Instance], timeout: Duration) -> Result<()> {
        match self {
            AnyDoor::Local(d) => d.wait_healthy(generation, targets, timeout).await,
            AnyDoor::Aws(d) => d.wait_healthy(generation, targets, timeout).await,
        }
    }

    async fn shift(&self, weights: &Weights) -> Result<()> {
        match self {
            AnyDoor::Local(d) => d.shift(weights).await,
            AnyDoor::Aws(d) => d.shift(weights).await,
        }
    }

    async fn drain(&self, targets: &[Instance]) -> Result<()> {
        match self {
            AnyDoor::Local(d) => d.drain(targets).await,
            AnyDoor::Aws(d) => d.drain(targets).await,
        }
    }

    async fn probe(&self) -> Probe {
        match self {
            AnyDoor::Local(d) => d.probe().await,
            AnyDoor::Aws(d) => d.probe().await,
        }
    }

    async fn state(&self) -> Result<DoorState> {
        match self {
            AnyDoor::Local(d) => d.state().await,
            AnyDoor::Aws(d) => d.state().await,
        }
    }

    async fn keep(&self, kept: Option<Kept>) -> Result<()> {
        match self {
            AnyDoor::Local(d) => d.keep(kept).await,
            AnyDoor::Aws(d) => d.keep(kept).await,
        }
    }

    async fn remove(&self) -> Result<Vec<String>> {
        match self {
            AnyDoor::Local(d) => d.remove().await,
            AnyDoor::Aws(d) => d.remove().await,
        }
    }
}
