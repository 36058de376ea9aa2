//! Which instances a command works on, and what they must report: the
//! selection `verify`, `debug` and launch verification share.

use std::time::Duration;

use crate::config::{Config, HostKeyPolicy};
use crate::error::{Error, Result};
use crate::keys::KeyStore;
use crate::provider::{Instance, InstanceState, Provider, SshEndpoint};
use crate::template::{Blueprint, Digest};
use crate::verify::{Expected, ExpectedFile, ExpectedProbe, Shipped, Target, VerifySettings};

/// The live instances `wanted` names (by id, name, IP or HOST:PORT), or all
/// live instances when `wanted` is empty. A name that matches nothing is an
/// error that says how to see what exists.
pub async fn live_instances<P: Provider>(
    provider: &P,
    config: &Config,
    wanted: &[String],
) -> Result<Vec<Instance>> {
    let live: Vec<Instance> = provider
        .list(&config.deployment.name)
        .await?
        .into_iter()
        .filter(|i| i.state.is_live())
        .collect();
    if wanted.is_empty() {
        return Ok(live);
    }
    wanted
        .iter()
        .map(|want| {
            live.iter()
                .find(|i| is_named(i, want))
                .cloned()
                .ok_or_else(|| Error::NoSuchInstance {
                    deployment: config.deployment.name.clone(),
                    wanted: want.clone(),
                })
        })
        .collect()
}

fn is_named(instance: &Instance, want: &str) -> bool {
    instance.id.0 == want
        || instance.name == want
        || instance.public_ip.as_deref() == Some(want)
        || instance.private_ip.as_deref() == Some(want)
        || instance
            .ssh
            .as_ref()
            .is_some_and(|e| e.to_string() == want || format!("{}:{}", e.host, e.port) == want)
}

/// Where verification reaches `instance`: the provider's SSH endpoint (on
/// AWS, the public address), else port 22 of its private address, which
/// works from inside its network (the VPC, or over a VPN into it), as with
/// `aws.public_ip = false`.
pub fn endpoint(instance: &Instance) -> Option<SshEndpoint> {
    if let Some(endpoint) = &instance.ssh {
        return Some(endpoint.clone());
    }
    if instance.state != InstanceState::Running {
        return None;
    }
    instance.private_ip.as_ref().map(|ip| SshEndpoint {
        host: ip.clone(),
        port: 22,
    })
}

/// The instances respot can reach over SSH, as verification targets.
pub fn targets(instances: &[Instance]) -> Vec<Target> {
    instances
        .iter()
        .filter_map(|i| {
            endpoint(i).map(|endpoint| Target {
                instance: i.id.to_string(),
                name: i.name.clone(),
                endpoint,
            })
        })
        .collect()
}

/// An endpoint given on the command line, as an instance of its own.
pub fn endpoint_target(endpoint: &SshEndpoint) -> Target {
    Target {
        instance: endpoint.to_string(),
        name: endpoint.to_string(),
        endpoint: endpoint.clone(),
    }
}

/// Pins each instance's generation host key for its endpoint, so the first
/// connection is already strict. Returns the instances whose key this
/// machine does not hold (another operator created them). Does nothing
/// under record-on-first-use.
pub fn pin_host_keys(keys: &KeyStore, config: &Config, instances: &[Instance]) -> Vec<String> {
    if config.ssh.host_keys != HostKeyPolicy::Pinned {
        return Vec::new();
    }
    let mut unpinned = Vec::new();
    for instance in instances {
        let (Some(endpoint), Some(generation)) = (endpoint(instance), instance.generation) else {
            continue;
        };
        let pinned = keys.has_host_key(generation)
            && keys
                .host_key(generation)
                .and_then(|(_, public)| keys.pin(&endpoint, &public))
                .is_ok();
        if !pinned {
            unpinned.push(instance.id.to_string());
        }
    }
    unpinned
}

/// What instances launched from `blueprint` must report: its digest, and
/// the files and health probes it ships (the probes are `[verify]`'s, which
/// the render wrote to the instance), so the instance's own lists are held
/// to respot's render instead of trusted.
pub fn expected_from(config: &Config, blueprint: &Blueprint) -> Expected {
    let files = blueprint
        .files
        .iter()
        // A per-instance template differs by instance: not checked.
        .filter(|f| !f.template)
        .map(|f| ExpectedFile {
            path: f.path.clone(),
            sha256: f.sha256.clone(),
            owner: f.owner.clone(),
            group: f.group.clone(),
            mode: f.mode.clone(),
        })
        .collect();
    let probes = config
        .verify
        .http
        .iter()
        .map(|p| ExpectedProbe {
            port: p.port,
            path: p.path.clone(),
            status: p.expect_status,
        })
        .collect();
    Expected {
        digest: blueprint.digest.clone(),
        shipped: Some(Shipped {
            files,
            probes,
            ..crate::verify::expected_blueprint_inputs(config)
        }),
    }
}

/// What the live `instances` must report: the digest they were launched
/// with, when they agree, else the current render's. Only when that is the
/// current render's does respot know the files and probes to expect.
pub fn expected_for(config: &Config, instances: &[Instance], blueprint: &Blueprint) -> Expected {
    let mut digests = instances.iter().map(|i| i.digest.as_ref());
    let agreed: Option<&Digest> = match digests.next() {
        Some(Some(first)) if digests.all(|d| d == Some(first)) => Some(first),
        _ => None,
    };
    match agreed {
        Some(digest) if *digest != blueprint.digest => Expected {
            digest: digest.clone(),
            shipped: None,
        },
        _ => expected_from(config, blueprint),
    }
}

/// How verification runs for this deployment; `timeout` overrides
/// `verify.timeout_secs`. The login is always `guest::VERIFY_USER`, never
/// `ssh.user`.
pub fn verify_settings(config: &Config, timeout: Option<u64>, strict: bool) -> VerifySettings {
    VerifySettings {
        timeout: Duration::from_secs(timeout.unwrap_or(config.verify.timeout_secs)),
        strict,
        host_keys: config.ssh.host_keys,
        concurrency: config.verify.concurrency,
        key_exchange: config.verify.key_exchange,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{InstanceId, Lifecycle};

    fn aws_instance(public: Option<&str>, private: Option<&str>, state: InstanceState) -> Instance {
        Instance {
            id: InstanceId("i-1".to_string()),
            name: "respot-fleet-g1".to_string(),
            region: "eu-west-1".to_string(),
            zone: None,
            instance_type: "t3.small".to_string(),
            lifecycle: Lifecycle::Spot,
            state,
            state_reason: None,
            public_ip: public.map(str::to_string),
            private_ip: private.map(str::to_string),
            ssh: public.map(|ip| SshEndpoint {
                host: ip.to_string(),
                port: 22,
            }),
            digest: None,
            version: None,
            generation: Some(1),
            launched_at: None,
            secrets: None,
        }
    }

    #[test]
    fn verification_reaches_the_public_address_else_the_private_one() {
        let cases = [
            (
                "public",
                Some("203.0.113.5"),
                Some("172.31.0.5"),
                InstanceState::Running,
                Some("203.0.113.5:22"),
            ),
            (
                "private only (aws.public_ip = false)",
                None,
                Some("172.31.0.5"),
                InstanceState::Running,
                Some("172.31.0.5:22"),
            ),
            (
                "not running yet",
                None,
                Some("172.31.0.5"),
                InstanceState::Pending,
                None,
            ),
            ("no address", None, None, InstanceState::Running, None),
        ];
        for (name, public, private, state, want) in cases {
            let instance = aws_instance(public, private, state);
            let got = endpoint(&instance).map(|e| e.to_string());
            assert_eq!(got.as_deref(), want, "{name}");
            assert_eq!(targets(&[instance]).len(), usize::from(want.is_some()), "{name}");
        }
        let private = aws_instance(None, Some("172.31.0.5"), InstanceState::Running);
        assert!(
            is_named(&private, "172.31.0.5"),
            "a private address names its instance"
        );
    }
}
