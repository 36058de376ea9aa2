//! The deployment's security group, `respot-<deployment>`: created tagged,
//! reused only when it carries our tag, opened to `ssh.allow_cidr` only,
//! and deleted once no instance uses it.
//!
//! It never touches a group it did not create.

use std::collections::BTreeSet;

use super::ec2::{Ec2Api, SecurityGroup, tag_value};
use super::{AwsProvider, RegionTarget};
use crate::provider::{ProviderError, Result, tag};

/// The security group's name; one per deployment and region.
pub fn group_name(deployment: &str) -> String {
    format!("respot-{deployment}")
}

impl<E: Ec2Api> AwsProvider<E> {
    /// Creates `respot-<deployment>`, tagged at creation. If it already
    /// exists (a run that died before `destroy`), it is reused only when it
    /// carries our tag; returns its id and the ports still to open.
    pub(super) async fn ensure_group(
        &self,
        target: &RegionTarget<E>,
        deployment: &str,
    ) -> Result<(String, Vec<u16>)> {
        let name = group_name(deployment);
        let mut ports = vec![22];
        ports.extend(self.settings.open_ports.iter().copied().filter(|p| *p != 22));
        let description = format!("respot deployment {deployment}: SSH and open_ports from ssh.allow_cidr");
        let tags = vec![
            (tag::DEPLOYMENT.to_string(), deployment.to_string()),
            (tag::NAME.to_string(), name.clone()),
        ];
        let err = match target.ec2.create_security_group(&name, &description, &tags).await {
            Ok(id) => return Ok((id, ports)),
            Err(err) if err.code() == Some("InvalidGroup.Duplicate") => err,
            Err(err) => return Err(self.api_error(&target.name, &err)),
        };
        let groups = target
            .ec2
            .describe_security_groups(&name, None)
            .await
            .map_err(|err| self.api_error(&target.name, &err))?;
        let Some(group) = groups.first() else {
            // It exists, yet cannot be described: report the duplicate.
            return Err(self.api_error(&target.name, &err));
        };
        if tag_value(&group.tags, tag::DEPLOYMENT) != Some(deployment) {
            return Err(ProviderError::ForeignGroup {
                region: target.name.clone(),
                name,
                deployment: deployment.to_string(),
            });
        }
        let open = open_ports(group, self.settings.allow_cidr.as_deref().unwrap_or_default());
        Ok((
            group.id.clone(),
            ports.into_iter().filter(|p| !open.contains(p)).collect(),
        ))
    }

    /// Opens TCP `ports` to `cidr`; rules that exist already are fine.
    pub(super) async fn authorize_ingress(
        &self,
        target: &RegionTarget<E>,
        group: &str,
        ports: &[u16],
        cidr: &str,
    ) -> Result<()> {
        if ports.is_empty() {
            return Ok(());
        }
        match target.ec2.authorize_ingress(group, ports, cidr).await {
            Ok(()) => Ok(()),
            Err(err) if err.code() == Some("InvalidPermission.Duplicate") => Ok(()),
            Err(err) => Err(self.api_error(&target.name, &err)),
        }
    }

    /// The id of our group in `target`, if there is one.
    pub(super) async fn find_group(
        &self,
        target: &RegionTarget<E>,
        deployment: &str,
    ) -> Result<Option<String>> {
        let groups = target
            .ec2
            .describe_security_groups(&group_name(deployment), Some(deployment))
            .await
            .map_err(|err| self.api_error(&target.name, &err))?;
        Ok(groups
            .into_iter()
            .find(|g| tag_value(&g.tags, tag::DEPLOYMENT) == Some(deployment))
            .map(|g| g.id))
    }

    /// Deletes the group, retrying `DependencyViolation` while the network
    /// interfaces of terminated instances detach (tens of seconds on EC2).
    pub(super) async fn delete_group(&self, target: &RegionTarget<E>, group: &str) -> Result<()> {
        let region = target.name.as_str();
        let started = tokio::time::Instant::now();
        let mut attempt = 0;
        loop {
            match target.ec2.delete_security_group(group).await {
                Ok(()) => return Ok(()),
                Err(err) if err.code() == Some("InvalidGroup.NotFound") => return Ok(()),
                Err(err) if err.code() == Some("DependencyViolation") => {
                    if started.elapsed() >= self.waits.group_delete {
                        return Err(ProviderError::GroupInUse {
                            region: region.to_string(),
                            group: group.to_string(),
                            after: self.waits.group_delete,
                        });
                    }
                    attempt += 1;
                    tracing::debug!("{region}: security group {group} still in use; retrying");
                    tokio::time::sleep(self.waits.backoff(attempt).max(self.waits.pause)).await;
                }
                Err(err) => return Err(self.api_error(region, &err)),
            }
        }
    }
}

/// Single-port rules already open to `cidr`.
fn open_ports(group: &SecurityGroup, cidr: &str) -> BTreeSet<u16> {
    group
        .rules
        .iter()
        .filter(|r| r.cidrs.iter().any(|c| c == cidr))
        .filter(|r| r.from_port == r.to_port)
        .filter_map(|r| r.from_port.and_then(|port| u16::try_from(port).ok()))
        .collect()
}
