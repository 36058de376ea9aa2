//! The guard's probe through the ALB door: one GET of the health path per
//! region, every region at once, at the listener's `probe_url` or else at
//! the balancer's DNS name on the listener's port. A probe passes only
//! when every region answers 2xx; a failure names its region.

use super::elbv2::{ElbError, Elbv2Api};
use super::wire::http_get;
use super::{AlbDoor, RegionDoor};
use crate::traffic::Probe;

impl<E: Elbv2Api> AlbDoor<E> {
    pub(super) async fn probe_every_region(&self) -> Probe {
        if self.regions.is_empty() {
            return Probe {
                ok: false,
                detail: "no listener configured".to_string(),
            };
        }
        let probes = futures::future::join_all(self.regions.iter().map(|r| self.probe_in(r))).await;
        let failed: Vec<String> = self
            .regions
            .iter()
            .zip(&probes)
            .filter(|(_, p)| !p.ok)
            .map(|(r, p)| format!("{}: {}", r.api.region(), p.detail))
            .collect();
        match failed.is_empty() {
            true => Probe {
                ok: true,
                detail: probes[0].detail.clone(),
            },
            false => Probe {
                ok: false,
                detail: failed.join("; "),
            },
        }
    }

    async fn probe_in(&self, region: &RegionDoor<E>) -> Probe {
        let found = region
            .address
            .get_or_try_init(|| async {
                if let Some(url) = &region.probe_url {
                    let path = url.path.clone().unwrap_or_else(|| self.health_path.clone());
                    return Ok((url.host.clone(), url.port, path));
                }
                self.balancer_address(region).await
            })
            .await;
        match found {
            Ok((host, port, path)) => http_get(host, *port, path).await,
            Err(err) => Probe {
                ok: false,
                detail: err.to_string(),
            },
        }
    }

    /// The balancer's DNS name and the listener's port.
    async fn balancer_address(&self, region: &RegionDoor<E>) -> Result<(String, u16, String), ElbError> {
        let listener = region.api.describe_listener(&region.listener_arn).await?;
        let lb = region
            .api
            .describe_load_balancer(&listener.load_balancer_arn)
            .await?;
        match (lb.dns_name, listener.port.and_then(|p| u16::try_from(p).ok())) {
            (Some(host), Some(port)) => Ok((host, port, self.health_path.clone())),
            _ => Err(ElbError {
                action: "DescribeLoadBalancers",
                code: None,
                message: "the load balancer has no DNS name or the listener no port; set probe_url"
                    .to_string(),
            }),
        }
    }
}
