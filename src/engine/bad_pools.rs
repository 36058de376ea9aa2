//! Bad pools: the pools (instance type × zone) `heal` avoids for a while
//! because an instance there was just interrupted, or the pool had no
//! capacity, the way Karpenter keeps an insufficient-capacity cache, so a
//! replacement does not land where the next interruption comes from.
//!
//! Pure data with times passed in; the command keeps it in the
//! deployment's state directory, so `heal --watch` and separate runs share it.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::provider::{InstanceId, PoolKey};

/// How long a bad pool is avoided.
pub const AVOID_FOR: Duration = Duration::from_secs(30 * 60);

/// How long an interrupted instance is remembered: longer than EC2 keeps
/// listing a terminated instance (about an hour), so one reclaim bans its
/// pool once, not again on every later check.
const NOTED_FOR: Duration = Duration::from_secs(3 * 3600);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadPool {
    pub pool: PoolKey,
    /// Why, e.g. `spot interruption of i-0abc` or `no capacity`.
    pub reason: String,
    /// Avoided until then (seconds since the Unix epoch).
    pub until_unix: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadPools {
    pub pools: Vec<BadPool>,
    /// Interrupted instances already counted: (id, forgotten after, Unix secs).
    pub noted: Vec<(String, u64)>,
}

fn unix(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

impl BadPools {
    /// Avoids `pool` from `now` for [`AVOID_FOR`]. With `instance`, only
    /// the first time that instance is seen. Returns whether it was new.
    pub fn note(
        &mut self,
        pool: &PoolKey,
        reason: &str,
        instance: Option<&InstanceId>,
        now: SystemTime,
    ) -> bool {
        let now = unix(now);
        if let Some(id) = instance {
            if self.noted.iter().any(|(noted, _)| *noted == id.0) {
                return false;
            }
            self.noted.push((id.0.clone(), now + NOTED_FOR.as_secs()));
        }
        let until_unix = now + AVOID_FOR.as_secs();
        match self.pools.iter_mut().find(|p| p.pool == *pool) {
            Some(known) => {
                known.until_unix = known.until_unix.max(until_unix);
                known.reason = reason.to_string();
            }
            None => self.pools.push(BadPool {
                pool: pool.clone(),
                reason: reason.to_string(),
                until_unix,
            }),
        }
        true
    }

    /// The pools still avoided at `now`.
    pub fn avoided(&self, now: SystemTime) -> Vec<PoolKey> {
        let now = unix(now);
        self.pools
            .iter()
            .filter(|p| p.until_unix > now)
            .map(|p| p.pool.clone())
            .collect()
    }

    /// Forgets what has expired by `now`.
    pub fn prune(&mut self, now: SystemTime) {
        let now = unix(now);
        self.pools.retain(|p| p.until_unix > now);
        self.noted.retain(|(_, until)| *until > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(zone: &str) -> PoolKey {
        PoolKey {
            region: "eu-west-1".to_string(),
            instance_type: "t3.small".to_string(),
            zone: Some(zone.to_string()),
        }
    }

    #[test]
    fn a_pool_is_avoided_for_thirty_minutes_and_one_reclaim_bans_it_once() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let id = InstanceId("i-1".to_string());
        let mut bad = BadPools::default();
        assert!(bad.note(&pool("eu-west-1a"), "spot interruption", Some(&id), start));
        assert_eq!(bad.avoided(start), [pool("eu-west-1a")]);
        let later = start + Duration::from_secs(29 * 60);
        assert_eq!(bad.avoided(later), [pool("eu-west-1a")]);
        // The same terminated instance, listed again: no new ban.
        assert!(!bad.note(&pool("eu-west-1a"), "spot interruption", Some(&id), later));
        let expired = start + AVOID_FOR + Duration::from_secs(1);
        assert!(bad.avoided(expired).is_empty());
        bad.prune(expired);
        assert!(bad.pools.is_empty());
        assert_eq!(
            bad.noted.len(),
            1,
            "the instance is remembered longer than its ban"
        );
        // A capacity failure (no instance) bans again and extends.
        assert!(bad.note(&pool("eu-west-1a"), "no capacity", None, expired));
        assert_eq!(bad.avoided(expired), [pool("eu-west-1a")]);
        bad.prune(expired + NOTED_FOR);
        assert!(bad.noted.is_empty() && bad.pools.is_empty());
    }
}
