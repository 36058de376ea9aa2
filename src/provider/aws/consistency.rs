//! EC2's eventual consistency: a resource respot just created may be
//! unknown to the next call for a while (the EC2 API guide: retry with
//! backoff). Here are the codes that mean "not visible yet" and the retry
//! loop, with capped exponential backoff and jitter, bounded by
//! [`Waits::consistency`].

use std::future::Future;
use std::time::Duration;

use super::Waits;
use super::ec2::{Ec2Error, Ec2Result};

/// What EC2 answers about a security group it has not propagated yet.
const GROUP_NOT_FOUND: &[&str] = &["InvalidGroup.NotFound", "InvalidGroupId.NotFound"];

/// Whether `err` says a group respot just created is not visible yet.
pub fn is_group_not_found(err: &Ec2Error) -> bool {
    err.code().is_some_and(|c| GROUP_NOT_FOUND.contains(&c))
}

impl Waits {
    /// The pause before retry `attempt` (0-based): a quarter pause unit
    /// doubling up to 8 units, each drawn between half and all of it
    /// (jitter spreads the retries of many regions and runs).
    pub(super) fn jittered(&self, attempt: u32) -> Duration {
        let full = (self.pause / 4) * (1 << attempt.min(5));
        let full = full.min(self.pause * 8);
        let millis = u64::try_from(full.as_millis()).unwrap_or(u64::MAX);
        if millis < 2 {
            return full;
        }
        Duration::from_millis(fastrand::u64(millis / 2..=millis))
    }
}

/// Runs `call` until it stops answering "group not found", for up to
/// `waits.consistency`; the last answer is returned as it is.
pub async fn retry_group_not_found<T, F, Fut>(
    waits: &Waits,
    region: &str,
    what: &str,
    mut call: F,
) -> Ec2Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Ec2Result<T>>,
{
    let started = tokio::time::Instant::now();
    let mut attempt = 0;
    loop {
        match call().await {
            Err(err) if is_group_not_found(&err) && started.elapsed() < waits.consistency => {
                tracing::debug!(
                    "{region}: {what}: {} (the new group is not visible yet); retrying",
                    err.code().unwrap_or_default()
                );
                tokio::time::sleep(waits.jittered(attempt)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jittered_backoff_grows_caps_and_stays_in_its_band() {
        let waits = Waits::AWS;
        for attempt in 0..10 {
            let full = (Duration::from_millis(250) * (1 << attempt.min(5))).min(Duration::from_secs(8));
            for _ in 0..20 {
                let pause = waits.jittered(attempt);
                assert!(
                    pause <= full && pause >= full / 2,
                    "attempt {attempt}: {pause:?} vs {full:?}"
                );
            }
        }
        let zero = Waits {
            pause: Duration::ZERO,
            ..Waits::AWS
        };
        assert_eq!(zero.jittered(3), Duration::ZERO);
    }

    #[tokio::test]
    async fn not_found_is_retried_until_visible_and_other_errors_are_not() {
        let waits = Waits {
            pause: Duration::from_millis(4),
            ..Waits::AWS
        };
        let mut calls = 0;
        let got = retry_group_not_found(&waits, "eu-west-1", "test", || {
            calls += 1;
            let n = calls;
            async move {
                if n < 4 {
                    Err(Ec2Error::service("RunInstances", "InvalidGroup.NotFound", "sg-1"))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(got, Ok(4));
        let mut calls = 0;
        let got: Ec2Result<()> = retry_group_not_found(&waits, "eu-west-1", "test", || {
            calls += 1;
            async { Err(Ec2Error::service("RunInstances", "InvalidAMIID.NotFound", "ami")) }
        })
        .await;
        assert!(got.is_err());
        assert_eq!(calls, 1, "only NotFound of a group is eventual consistency");
        let bounded = Waits {
            consistency: Duration::ZERO,
            ..waits
        };
        let mut calls = 0;
        let got: Ec2Result<()> = retry_group_not_found(&bounded, "eu-west-1", "test", || {
            calls += 1;
            async { Err(Ec2Error::service("RunInstances", "InvalidGroupId.NotFound", "sg")) }
        })
        .await;
        assert!(got.is_err());
        assert_eq!(calls, 1, "bounded by waits.consistency");
    }
}
