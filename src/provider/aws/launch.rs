//! Launching one generation: per region, prepare (caller, image, subnets,
//! security group), run the batch through the pools, then wait until every
//! instance runs with a public IP.
//!
//! Every `RunInstances` asks for IMDSv2 only and, with
//! `aws.encrypt_volumes`, an encrypted root volume: user data carries the
//! generation's SSH host private key. It asks each pool for MinCount = 1
//! and MaxCount = what is left, takes what the pool holds and carries the
//! rest to the next pool; and for a public address explicitly, unless
//! `aws.public_ip = false`.
//!
//! Everything is tagged at creation. On an error it returns at once and
//! does not clean up: what launched is tagged with its generation, and the
//! engine's rollback finds it by listing.

use std::time::SystemTime;

use base64::Engine as _;

use super::consistency::retry_group_not_found;
use super::ec2::{Ec2Api, LaunchSpec, MachineSpec, Market, MetadataOptions, RootVolume, Subnet};
use super::errors::caller_error;
use super::pools::{Pool, PoolOutcome, Verdicts, pools};
use super::{AwsProvider, Pending, RegionTarget, gather, per_region};
use crate::config::{Allocation, Fallback};
use crate::provider::{Instance, InstanceId, InstanceState, LaunchRequest, ProviderError, Result, tag};

/// Tag holding the AMI id the image alias resolved to.
const TAG_IMAGE: &str = "respot:image";

/// IMDSv2 only, one hop, on every launch. User data carries the
/// generation's SSH host private key, and the metadata service hands it to
/// whoever asks: with tokens required, a server-side request forgery (a
/// plain `GET`) cannot read it; with one hop, neither can a container
/// behind a bridge.
const METADATA: MetadataOptions = MetadataOptions {
    tokens_required: true,
    hop_limit: 1,
};

/// What the first stage of a region's launch found out.
pub(super) struct Prepared {
    /// What every instance of the region's launch is, whichever call makes
    /// it; its tags include `respot:created-by` and `respot:image`.
    pub(super) machine: MachineSpec,
    /// Default subnets, in the order to try.
    pub(super) subnets: Vec<Subnet>,
    /// Ingress rules still to add (all of them for a new group).
    missing_ports: Vec<u16>,
    pub(super) max_price: Option<f64>,
    /// `respot-<run>-<generation>-<region>`: unique per run and region, for
    /// the idempotency tokens of `RunInstances` and `CreateFleet`.
    pub(super) token_prefix: String,
    pub(super) generation: u64,
}

impl Prepared {
    /// One pool's `RunInstances` of up to `count` instances.
    fn spec(&self, pool: &Pool, count: u32, call: u32) -> LaunchSpec {
        LaunchSpec {
            machine: self.machine.clone(),
            instance_type: pool.instance_type.to_string(),
            count,
            zone: pool.zone.to_string(),
            subnet: pool.subnet.to_string(),
            // The token makes the SDK's own retries idempotent: a retried
            // call cannot launch a second batch.
            client_token: format!("{}-{call}", self.token_prefix),
            market: pool.market,
            max_price: self.max_price,
        }
    }
}

impl<E: Ec2Api> AwsProvider<E> {
    pub(super) async fn launch_all(&self, request: &LaunchRequest) -> Result<Vec<Instance>> {
        let Some(allow_cidr) = self.settings.allow_cidr.as_deref() else {
            return Err(ProviderError::AllowCidrUnset);
        };
        if allow_cidr == "0.0.0.0/0" {
            tracing::warn!(
                "ssh.allow_cidr is 0.0.0.0/0: SSH{} is open to the whole internet; \
                 set it to your own address (x.x.x.x/32)",
                if self.settings.open_ports.is_empty() {
                    ""
                } else {
                    " and aws.open_ports"
                }
            );
        }
        use crate::provider::Provider as _;
        let mut targets: Vec<RegionTarget<E>> =
            self.regions.iter().filter(|r| r.count > 0).cloned().collect();
        if let Some(upto) = request.upto {
            // A rolling batch: what this generation still lacks per region.
            let have = self.list(&request.deployment).await?;
            for target in &mut targets {
                let live = have
                    .iter()
                    .filter(|i| i.state.is_live() && i.generation == Some(request.generation))
                    .filter(|i| i.region == target.name)
                    .count() as u32;
                target.count = target.count.min(upto).saturating_sub(live);
            }
            targets.retain(|t| t.count > 0);
        }
        if targets.is_empty() {
            return Err(ProviderError::NothingToLaunch);
        }
        let created_at = SystemTime::now();
        let results = per_region(targets, |target| async move {
            self.launch_region(&target, request, allow_cidr, created_at).await
        })
        .await;
        let launched: Vec<Instance> = gather("create", results)?.into_iter().flatten().collect();
        // Delivered: the caller holds these now.
        self.pending().retain(|p| p.generation != request.generation);
        Ok(launched)
    }

    pub(super) async fn launch_region(
        &self,
        target: &RegionTarget<E>,
        request: &LaunchRequest,
        allow_cidr: &str,
        created_at: SystemTime,
    ) -> Result<Vec<Instance>> {
        let prepared = self.prepare(target, request, created_at).await?;
        // The rules and the launch are independent; instances need the
        // rules only once they boot, seconds later.
        let (rules, allocated) = tokio::join!(
            self.authorize_ingress(
                target,
                &prepared.machine.group_id,
                &prepared.missing_ports,
                allow_cidr
            ),
            self.allocate(target, &prepared),
        );
        let (ids, template) = allocated?;
        // A fleet's launch template goes while the instances boot: no
        // round trip of its own.
        let (running, ()) = tokio::join!(
            async {
                rules?;
                self.wait_running(target, &request.deployment, &ids).await
            },
            self.release_template(target, template.as_ref()),
        );
        running
    }

    /// The independent lookups and the security group, all at once.
    async fn prepare(
        &self,
        target: &RegionTarget<E>,
        request: &LaunchRequest,
        created_at: SystemTime,
    ) -> Result<Prepared> {
        let launch = &self.settings.launch;
        let (caller, image, subnets, (group_id, missing_ports)) = tokio::try_join!(
            self.caller_arn(target),
            self.launch_image(target),
            self.default_subnets(target),
            self.ensure_group(target, &request.deployment),
        )?;
        tracing::info!("{}: image {} is {}", target.name, self.settings.image, image.id);
        let name = format!("respot-{}-g{}", request.deployment, request.generation);
        let nonce = created_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        let mut tags = request.tags(&name, created_at);
        tags.push((tag::CREATED_BY.to_string(), caller));
        tags.push((TAG_IMAGE.to_string(), image.id.clone()));
        if let Some(ssm) = self
            .ssm
            .as_ref()
            .filter(|_| !self.settings.ssm_parameters.is_empty())
        {
            let versions = ssm.versions(&target.name, &self.settings.ssm_parameters).await?;
            tags.push((
                super::secrets::TAG_SECRETS.to_string(),
                super::secrets::tag_value(&versions),
            ));
        }
        // Config validation refuses `respot:*`, `aws:*` and `Name` here.
        tags.extend(launch.tags.iter().cloned());
        let root = image.encrypted_root.map(|found| RootVolume {
            device: found.device,
            size_gib: launch
                .root_volume_gb
                .and_then(|gb| i32::try_from(gb).ok())
                .or(found.size_gib),
            encrypted: self.settings.encrypt_volumes,
            volume_type: launch.volume_type.clone(),
        });
        Ok(Prepared {
            machine: MachineSpec {
                image: image.id,
                group_id,
                user_data: base64::engine::general_purpose::STANDARD.encode(&request.user_data.packed),
                tags,
                metadata: METADATA,
                root,
                public_ip: launch.public_ip,
                instance_profile: launch.instance_profile.clone(),
            },
            subnets,
            missing_ports,
            max_price: self.settings.max_price,
            token_prefix: format!("respot-{nonce}-{}-{}", request.generation, target.name),
            generation: request.generation,
        })
    }

    /// The caller ARN, fetched once with STS `GetCallerIdentity`.
    async fn caller_arn(&self, target: &RegionTarget<E>) -> Result<String> {
        self.caller
            .get_or_try_init(|| async {
                target
                    .ec2
                    .caller_arn()
                    .await
                    .map_err(|err| caller_error(&target.name, &err, &self.credentials_hint))
            })
            .await
            .cloned()
    }

    /// The default subnets of the configured zones, in configured order
    /// (every default subnet, by zone, when none are configured).
    async fn default_subnets(&self, target: &RegionTarget<E>) -> Result<Vec<Subnet>> {
        let mut subnets = target
            .ec2
            .describe_default_subnets()
            .await
            .map_err(|err| self.api_error(&target.name, &err))?;
        subnets.sort_by(|a, b| a.zone.cmp(&b.zone));
        subnets.dedup_by(|a, b| a.zone == b.zone);
        if subnets.is_empty() {
            return Err(ProviderError::NoDefaultVpc {
                region: target.name.clone(),
            });
        }
        if target.zones.is_empty() {
            return Ok(subnets);
        }
        target
            .zones
            .iter()
            .map(|zone| match subnets.iter().find(|s| &s.zone == zone) {
                Some(subnet) => Ok(subnet.clone()),
                None => Err(ProviderError::ZoneWithoutSubnet {
                    region: target.name.clone(),
                    zone: zone.clone(),
                    zones: subnets.iter().map(|s| s.zone.clone()).collect(),
                }),
            })
            .collect()
    }

    /// Launches `target.count` instances as `aws.allocation` says: their
    /// ids, and a fleet's launch template, for the caller to delete.
    async fn allocate(
        &self,
        target: &RegionTarget<E>,
        prepared: &Prepared,
    ) -> Result<(Vec<String>, Option<super::fleet::Template>)> {
        match self.settings.allocation {
            Allocation::Ordered => Ok((self.run_pools(target, prepared).await?, None)),
            Allocation::PriceCapacityOptimized => {
                let (ids, template) = self.run_fleet(target, prepared).await?;
                Ok((ids, Some(template)))
            }
        }
    }

    /// Launches `target.count` instances, one `RunInstances` per pool,
    /// each pool giving what it holds, moving on while some are left.
    /// Returns the ids launched; on error, whatever was launched is tagged,
    /// remembered as pending, and rolled back by the caller.
    async fn run_pools(&self, target: &RegionTarget<E>, prepared: &Prepared) -> Result<Vec<String>> {
        let region = target.name.as_str();
        let mut launched: Vec<String> = Vec::new();
        let mut tried: Vec<String> = Vec::new();
        let mut abandoned: Option<Market> = None;
        let mut calls = 0u32;
        let mut order: Vec<Pool> =
            pools(self.settings.fallback, &target.instance_types, &prepared.subnets).collect();
        // `heal`: pools just interrupted or out of capacity go last.
        order.sort_by_key(|pool| target.avoids(pool));
        for pool in order {
            let remaining = target.count.saturating_sub(count(&launched));
            if remaining == 0 {
                break;
            }
            if abandoned == Some(pool.market) {
                continue;
            }
            calls += 1;
            match self
                .launch_in_pool(target, prepared, &pool, remaining, calls)
                .await
            {
                PoolOutcome::Launched(ids) => {
                    self.note_answer(region, &pool, count(&ids), None);
                    tracing::info!(
                        "{region}: launched {} of {remaining} {} {} in {}",
                        ids.len(),
                        pool.market.as_str(),
                        pool.instance_type,
                        pool.zone
                    );
                    if count(&ids) < remaining {
                        tried.push(format!(
                            "{} in {}: {} of {remaining}",
                            pool.instance_type,
                            pool.zone,
                            ids.len()
                        ));
                    }
                    launched.extend(ids);
                }
                PoolOutcome::NoCapacity(code) => {
                    self.note_no_capacity(region, &pool);
                    self.note_answer(region, &pool, 0, Some(&code));
                    tracing::warn!(
                        "{region}: {} in {} cannot launch ({code}); trying the next pool",
                        pool.instance_type,
                        pool.zone
                    );
                    tried.push(format!("{} in {}: {code}", pool.instance_type, pool.zone));
                }
                PoolOutcome::FallBack(code) => {
                    tracing::warn!("{region}: {code} for spot; falling back to on-demand");
                    tried.push(format!("spot: {code}"));
                    abandoned = Some(pool.market);
                }
                PoolOutcome::Fatal(err) => return Err(err),
            }
        }
        if count(&launched) < target.count {
            return Err(self.short_of_capacity(region, launched.len(), target.count, tried));
        }
        Ok(launched)
    }

    /// One pool's `RunInstances`, retried while the group created a moment
    /// ago is not visible yet; what it launched is remembered as pending.
    async fn launch_in_pool(
        &self,
        target: &RegionTarget<E>,
        prepared: &Prepared,
        pool: &Pool<'_>,
        remaining: u32,
        call: u32,
    ) -> PoolOutcome {
        let spec = prepared.spec(pool, remaining, call);
        let answer = retry_group_not_found(&self.waits, &target.name, "RunInstances", || {
            target.ec2.run_instances(&spec)
        })
        .await;
        if let Ok(ids) = &answer {
            self.pending().extend(ids.iter().map(|id| Pending {
                region: target.name.clone(),
                id: id.clone(),
                generation: prepared.generation,
            }));
        }
        let verdicts = Verdicts {
            region: &target.name,
            fallback: self.settings.fallback,
            max_price: self.settings.max_price,
            credentials_hint: &self.credentials_hint,
        };
        verdicts.outcome(pool, answer)
    }

    /// The region's failure when the pools held fewer than `wanted`: the
    /// price, when that is what every pool said, else capacity.
    pub(super) fn short_of_capacity(
        &self,
        region: &str,
        launched: usize,
        wanted: u32,
        tried: Vec<String>,
    ) -> ProviderError {
        let price = "SpotMaxPriceTooLow";
        if launched == 0 && !tried.is_empty() && tried.iter().all(|t| t.ends_with(price)) {
            return ProviderError::PriceTooLow {
                region: region.to_string(),
                max_price: self.settings.max_price,
                message: format!("{price} in every pool: {}", tried.join(", ")),
            };
        }
        ProviderError::NoCapacity {
            region: region.to_string(),
            launched,
            wanted,
            tried,
            suggest_fallback: self.settings.fallback == Fallback::None,
        }
    }

    /// Polls the launched ids in one batched call per round until all run
    /// with a public IP. An instance that ends during the wait (a spot
    /// reclaim) fails the region, with AWS's reason.
    async fn wait_running(
        &self,
        target: &RegionTarget<E>,
        deployment: &str,
        ids: &[String],
    ) -> Result<Vec<Instance>> {
        let region = target.name.as_str();
        let poll = async {
            let mut attempt = 0;
            loop {
                tokio::time::sleep(self.waits.backoff(attempt)).await;
                attempt += 1;
                let found = self.list_region(target, deployment, ids).await?;
                if let Some(gone) = found.iter().find(|i| {
                    matches!(
                        i.state,
                        InstanceState::ShuttingDown | InstanceState::Terminated | InstanceState::Stopped
                    )
                }) {
                    return Err(ProviderError::InstanceLost {
                        region: region.to_string(),
                        id: InstanceId(gone.id.0.clone()),
                        state: gone.state.clone(),
                        reason: gone.state_reason.clone(),
                    });
                }
                // Right after RunInstances, DescribeInstances may not know
                // the ids yet (eventual consistency): keep polling.
                let public = self.settings.launch.public_ip;
                let ready = found
                    .iter()
                    .filter(|i| i.state == InstanceState::Running && (i.public_ip.is_some() || !public))
                    .count();
                if ready == ids.len() {
                    return Ok(found);
                }
                tracing::debug!("{region}: {ready}/{} running with a public IP", ids.len());
            }
        };
        match tokio::time::timeout(self.waits.running, poll).await {
            Ok(result) => result,
            Err(_) => Err(ProviderError::NotRunning {
                region: region.to_string(),
                count: ids.len(),
                after: self.waits.running,
            }),
        }
    }
}

fn count(ids: &[String]) -> u32 {
    u32::try_from(ids.len()).unwrap_or(u32::MAX)
}
