//! The deployment lock on AWS: a security group `respot.lock.<deployment>`
//! in the first configured region. `CreateSecurityGroup` of a name is
//! atomic per VPC (a second one fails with `InvalidGroup.Duplicate`), it
//! costs nothing, needs no setup and no permission beyond those respot
//! already uses, and its tags (set at creation) say who holds it, since
//! when and for which command.
//!
//! The group has no rules and no instance ever uses it. Releasing it is a
//! `DeleteSecurityGroup`; a killed process leaves it, named with its
//! command, for `respot unlock`.

use super::AwsProvider;
use super::ec2::{Ec2Api, Ec2Error, SecurityGroup, Tags, tag_value};
use super::errors::api_error;
use crate::lock::{Holder, LockError};
use crate::provider::{ProviderError, Result, tag};

/// Tags of a lock group; `respot:deployment` and `Name` come too.
const TAG_LOCK: &str = "respot:lock";
const TAG_WHO: &str = "respot:lock-holder";
const TAG_SINCE: &str = "respot:lock-since";
const TAG_COMMAND: &str = "respot:lock-command";
const TAG_PID: &str = "respot:lock-pid";

/// Tries to create a group that a concurrent release has just deleted.
const ACQUIRE_ATTEMPTS: u32 = 3;

/// The lock group's name.
pub fn lock_group_name(deployment: &str) -> String {
    // A dot cannot appear in a deployment name ([a-z0-9-]), so no
    // deployment's own group `respot-<name>` can take this name.
    format!("respot.lock.{deployment}")
}

/// A held AWS lock: the group's id and a client of its region. Release it
/// with [`AwsLock::release`]; `Drop` deletes the group too, blocking, when
/// a panic or a dropped future skipped that.
#[derive(Debug)]
pub struct AwsLock<E: Ec2Api + Send + Sync + 'static> {
    ec2: E,
    group_id: String,
    hint: String,
    released: bool,
}

impl<E: Ec2Api + Send + Sync + 'static> AwsLock<E> {
    /// Deletes the lock group.
    pub async fn release(mut self) -> Result<()> {
        self.released = true;
        delete(&self.ec2, &self.group_id, &self.hint).await
    }
}

impl<E: Ec2Api + Send + Sync + 'static> Drop for AwsLock<E> {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let (ec2, group_id, hint) = (&self.ec2, self.group_id.as_str(), self.hint.as_str());
        if let Err(err) = block_on_detached(|| delete(ec2, group_id, hint)) {
            tracing::warn!("could not release the deployment lock {group_id}: {err}; run `respot unlock`");
        }
    }
}

async fn delete<E: Ec2Api>(ec2: &E, group_id: &str, hint: &str) -> Result<()> {
    match ec2.delete_security_group(group_id).await {
        Ok(()) => Ok(()),
        // Gone already (`respot unlock` from elsewhere): released.
        Err(err) if err.code() == Some("InvalidGroup.NotFound") => Ok(()),
        Err(err) => Err(api_error(ec2.region(), &err, hint)),
    }
}

/// Runs the future `make` builds to completion from synchronous code (a
/// `Drop`): on the multi-threaded runtime respot runs on, in place;
/// elsewhere (a unit test's current-thread runtime, or none) on a thread
/// of its own with its own runtime.
fn block_on_detached<Make, Fut>(make: Make) -> Fut::Output
where
    Make: FnOnce() -> Fut + Send,
    Fut: std::future::Future,
    Fut::Output: Send,
{
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| handle.block_on(make()))
        }
        _ => std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("a current-thread runtime builds")
                        .block_on(make())
                })
                .join()
                .expect("the release thread does not panic")
        }),
    }
}

fn holder_tags(deployment: &str, holder: &Holder) -> Tags {
    [
        (tag::DEPLOYMENT, deployment.to_string()),
        (tag::NAME, lock_group_name(deployment)),
        (TAG_LOCK, "true".to_string()),
        (TAG_WHO, holder.who.clone()),
        (TAG_SINCE, holder.since.clone()),
        (TAG_COMMAND, holder.command.clone()),
        (TAG_PID, holder.pid.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The holder a lock group's tags name; `None` when it is no lock.
fn holder_of(group: &SecurityGroup) -> Option<Holder> {
    tag_value(&group.tags, TAG_LOCK)?;
    let value = |key: &str| tag_value(&group.tags, key).unwrap_or("unknown").to_string();
    Some(Holder {
        who: value(TAG_WHO),
        since: value(TAG_SINCE),
        command: value(TAG_COMMAND),
        pid: tag_value(&group.tags, TAG_PID)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0),
    })
}

/// A held lock: its group and who holds it.
#[derive(Debug, Clone)]
pub struct HeldLock {
    pub group_id: String,
    pub holder: Holder,
    /// `security group respot.lock.web in eu-west-1`.
    pub place: String,
}

impl<E: Ec2Api + Send + Sync + 'static> AwsProvider<E> {
    /// The client of the region that holds the lock: the first of
    /// `aws.regions` whatever `--region` says, so every operator meets the
    /// same lock.
    fn lock_region(&self) -> E {
        match self.settings.regions.first() {
            Some(first) => self.home.in_region(&first.name),
            None => self.home.clone(),
        }
    }

    /// Takes `deployment`'s lock for `holder`, or says who holds it.
    pub async fn acquire_lock(
        &self,
        deployment: &str,
        holder: &Holder,
    ) -> std::result::Result<AwsLock<E>, LockError> {
        let ec2 = self.lock_region();
        let name = lock_group_name(deployment);
        let description = format!("respot lock of deployment {deployment}: one operation at a time");
        let tags = holder_tags(deployment, holder);
        let mut last: Option<Ec2Error> = None;
        for _ in 0..ACQUIRE_ATTEMPTS {
            match ec2.create_security_group(&name, &description, &tags).await {
                Ok(group_id) => {
                    return Ok(AwsLock {
                        ec2,
                        group_id,
                        hint: self.credentials_hint.clone(),
                        released: false,
                    });
                }
                Err(err) if err.code() == Some("InvalidGroup.Duplicate") => {
                    if let Some(held) = self.lock_holder(deployment).await? {
                        return Err(LockError::Held {
                            deployment: deployment.to_string(),
                            holder: Box::new(held.holder),
                            place: held.place,
                        });
                    }
                    // Released between our create and describe: try again.
                    last = Some(err);
                }
                Err(err) => {
                    let err = self.api_error(ec2.region(), &err);
                    return Err(self.explain_rejection(err).await.into());
                }
            }
        }
        let err = last.expect("the loop ran and saw a duplicate");
        Err(self.api_error(ec2.region(), &err).into())
    }

    /// The lock of `deployment`, when one is held.
    pub async fn lock_holder(&self, deployment: &str) -> Result<Option<HeldLock>> {
        let ec2 = self.lock_region();
        let name = lock_group_name(deployment);
        let groups = ec2
            .describe_security_groups(&name, None)
            .await
            .map_err(|err| self.api_error(ec2.region(), &err))?;
        let Some(group) = groups.first() else {
            return Ok(None);
        };
        let Some(holder) = holder_of(group) else {
            return Err(ProviderError::ForeignGroup {
                region: ec2.region().to_string(),
                name,
                deployment: deployment.to_string(),
            });
        };
        Ok(Some(HeldLock {
            group_id: group.id.clone(),
            holder,
            place: format!("security group {name} in {}", ec2.region()),
        }))
    }

    /// Removes a lock found by [`AwsProvider::lock_holder`] (`respot unlock`).
    pub async fn break_lock(&self, held: &HeldLock) -> Result<()> {
        delete(&self.lock_region(), &held.group_id, &self.credentials_hint).await
    }
}

#[cfg(test)]
mod tests {
    use super::super::access_tests::provider_with;
    use super::super::fake::FakeEc2;
    use super::*;

    #[test]
    fn no_deployment_group_can_take_a_lock_groups_name() {
        use super::super::group_name;
        assert_eq!(lock_group_name("x"), "respot.lock.x");
        assert_ne!(group_name("lock-x"), lock_group_name("x"));
        assert!(!lock_group_name("web").starts_with(&group_name("")));
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(future)
    }

    #[test]
    fn one_holder_at_a_time_and_release_frees_it() {
        let fake = FakeEc2::new("eu-west-1");
        let provider = provider_with(&fake, &[("eu-west-1", 1), ("us-east-1", 1)]);
        let alice = Holder::current("create");
        block_on(async {
            let lock = provider.acquire_lock("web", &alice).await.unwrap();
            let err = provider
                .acquire_lock("web", &Holder::current("destroy"))
                .await
                .unwrap_err();
            match &err {
                LockError::Held { holder, place, .. } => {
                    assert_eq!(**holder, alice);
                    assert_eq!(place, "security group respot.lock.web in eu-west-1");
                }
                other => panic!("want Held, got {other:?}"),
            }
            assert_eq!(err.exit_status().code(), 4);
            // Another deployment has its own lock.
            let other = provider.acquire_lock("api", &alice).await.unwrap();
            lock.release().await.unwrap();
            other.release().await.unwrap();
        });
        assert!(fake.group_names("eu-west-1").is_empty());
        assert!(fake.group_names("us-east-1").is_empty());
    }

    #[test]
    fn a_dropped_lock_is_released_and_unlock_breaks_a_stale_one() {
        let fake = FakeEc2::new("eu-west-1");
        let provider = provider_with(&fake, &[("eu-west-1", 1)]);
        block_on(async {
            drop(
                provider
                    .acquire_lock("web", &Holder::current("deploy"))
                    .await
                    .unwrap(),
            );
        });
        assert!(fake.group_names("eu-west-1").is_empty(), "Drop released it");
        let stale = block_on(provider.acquire_lock("web", &Holder::current("create"))).unwrap();
        // A crash: the group stays, as after a SIGKILL.
        std::mem::forget(stale);
        let held = block_on(provider.lock_holder("web")).unwrap().expect("held");
        assert_eq!(held.holder.command, "create");
        block_on(provider.break_lock(&held)).unwrap();
        assert!(block_on(provider.lock_holder("web")).unwrap().is_none());
    }

    #[test]
    fn a_group_of_that_name_that_is_no_lock_is_refused() {
        let fake = FakeEc2::new("eu-west-1");
        fake.seed_group("eu-west-1", "respot.lock.web", &[("team", "x")], Vec::new());
        let provider = provider_with(&fake, &[("eu-west-1", 1)]);
        let err = block_on(provider.acquire_lock("web", &Holder::current("create"))).unwrap_err();
        assert!(
            matches!(&err, LockError::Provider(ProviderError::ForeignGroup { name, .. }) if name == "respot.lock.web"),
            "{err:?}"
        );
    }
}
