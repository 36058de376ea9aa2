//! The deployment's security group, `respot-<deployment>`: created tagged,
//! reused only when it carries our tag and admits nothing respot did not
//! write, opened to `ssh.allow_cidr` only, and deleted once no instance
//! uses it.
//!
//! It never touches a group it did not create, and never removes a rule:
//! one it did not write is reported for the user to remove.

use std::collections::BTreeSet;

use super::consistency::{is_group_not_found, retry_group_not_found};
use super::ec2::{Ec2Api, IngressRule, SecurityGroup, tag_value};
use super::{AwsProvider, RegionTarget};
use crate::provider::{InstanceState, ProviderError, Result, tag};

/// How often a long `DependencyViolation` wait says it is still waiting.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// The security group's name; one per deployment and region.
pub fn group_name(deployment: &str) -> String {
    format!("respot-{deployment}")
}

impl<E: Ec2Api> AwsProvider<E> {
    /// Creates `respot-<deployment>`, tagged at creation. If it already
    /// exists (a run that died before `destroy`), it is reused only when it
    /// carries our tag and every ingress rule is one respot writes; returns
    /// its id and the ports still to open.
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
        let cidr = self.settings.allow_cidr.as_deref().unwrap_or_default();
        let (open, unexpected) = audit(group, &ports, cidr);
        if !unexpected.is_empty() {
            let listed: Vec<String> = ports.iter().map(u16::to_string).collect();
            return Err(ProviderError::UnexpectedIngress {
                region: target.name.clone(),
                group: group.id.clone(),
                rules: unexpected,
                expected: format!("TCP {} from {cidr} (ssh.allow_cidr)", listed.join(", ")),
            });
        }
        Ok((
            group.id.clone(),
            ports.into_iter().filter(|p| !open.contains(p)).collect(),
        ))
    }

    /// Opens TCP `ports` to `cidr`; rules that exist already are fine. A
    /// group created a moment ago may not be visible yet: retried.
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
        let answer =
            retry_group_not_found(&self.waits, &target.name, "AuthorizeSecurityGroupIngress", || {
                target.ec2.authorize_ingress(group, ports, cidr)
            })
            .await;
        match answer {
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
    /// interfaces of terminated instances detach (tens of seconds on EC2),
    /// for up to `waits.group_delete`, saying what holds it. Called once no
    /// instance of the deployment is meant to live in the region, so a live
    /// holder tagged for the deployment is one a listing had not shown yet
    /// (eventual consistency): it is terminated. Returns those ids.
    pub(super) async fn delete_group(
        &self,
        target: &RegionTarget<E>,
        deployment: &str,
        group: &str,
    ) -> Result<Vec<String>> {
        let region = target.name.as_str();
        let started = tokio::time::Instant::now();
        let mut said = None::<tokio::time::Instant>;
        let mut stragglers: Vec<String> = Vec::new();
        let mut attempt = 0;
        loop {
            let err = match target.ec2.delete_security_group(group).await {
                Ok(()) => return Ok(stragglers),
                Err(err) if is_group_not_found(&err) => return Ok(stragglers),
                Err(err) if err.code() == Some("DependencyViolation") => err,
                Err(err) => return Err(self.api_error(region, &err)),
            };
            let holders = self
                .group_holders(target, deployment, group, &mut stragglers)
                .await?;
            if started.elapsed() >= self.waits.group_delete {
                return Err(ProviderError::GroupInUse {
                    region: region.to_string(),
                    group: group.to_string(),
                    after: self.waits.group_delete,
                    holders,
                });
            }
            if said.is_none_or(|at| at.elapsed() >= PROGRESS_EVERY) {
                said = Some(tokio::time::Instant::now());
                let by = if holders.is_empty() {
                    "network interfaces still detaching".to_string()
                } else {
                    holders.join(", ")
                };
                let left = self.waits.group_delete.saturating_sub(started.elapsed());
                tracing::warn!(
                    "{region}: security group {group} is still in use ({}: {by}); retrying for up to {}s",
                    err.code().unwrap_or_default(),
                    left.as_secs()
                );
            }
            attempt += 1;
            tokio::time::sleep(self.waits.backoff(attempt).max(self.waits.pause)).await;
        }
    }

    /// The live instances in `group`, as ids; those tagged for the
    /// deployment and not yet terminating are terminated first and added
    /// to `stragglers`.
    async fn group_holders(
        &self,
        target: &RegionTarget<E>,
        deployment: &str,
        group: &str,
        stragglers: &mut Vec<String>,
    ) -> Result<Vec<String>> {
        let region = target.name.as_str();
        // The group's members, and the deployment's live instances by tag:
        // EC2 counts an instance in the group through its network
        // interface, which not every emulator's group filter does.
        let (members, tagged) = tokio::join!(
            target.ec2.describe_group_instances(group),
            target.ec2.describe_instances(deployment, &[]),
        );
        let mut holders: Vec<_> = members.map_err(|err| self.api_error(region, &err))?;
        for instance in tagged.map_err(|err| self.api_error(region, &err))? {
            if !holders.iter().any(|h| h.id == instance.id) {
                holders.push(instance);
            }
        }
        holders.retain(|i| i.state.is_live());
        let missed: Vec<String> = holders
            .iter()
            .filter(|i| tag_value(&i.tags, tag::DEPLOYMENT) == Some(deployment))
            .filter(|i| !matches!(i.state, InstanceState::ShuttingDown) && !stragglers.contains(&i.id))
            .map(|i| i.id.clone())
            .collect();
        if !missed.is_empty() {
            tracing::warn!(
                "{region}: terminating {} of `{deployment}` that hold security group {group} but no \
                 listing showed yet: {}",
                missed.len(),
                missed.join(", ")
            );
            for batch in missed.chunks(super::ec2::TERMINATE_IDS) {
                target
                    .ec2
                    .terminate_instances(batch)
                    .await
                    .map_err(|err| self.api_error(region, &err))?;
            }
            stragglers.extend(missed);
        }
        Ok(holders.into_iter().map(|i| i.id).collect())
    }
}

/// Sorts the group's ingress into what respot writes (single-port TCP
/// rules of `ports` from `cidr`: returns those ports) and everything else,
/// one entry per rule and source, e.g. `tcp 443 from 0.0.0.0/0`.
fn audit(group: &SecurityGroup, ports: &[u16], cidr: &str) -> (BTreeSet<u16>, Vec<String>) {
    let mut open = BTreeSet::new();
    let mut unexpected = Vec::new();
    for rule in &group.rules {
        let ours = single_tcp_port(rule).filter(|port| ports.contains(port));
        for source in &rule.sources {
            match ours {
                Some(port) if source == cidr => {
                    open.insert(port);
                }
                _ => unexpected.push(format!("{} from {source}", traffic(rule))),
            }
        }
    }
    (open, unexpected)
}

/// The port of a TCP rule that opens exactly one.
fn single_tcp_port(rule: &IngressRule) -> Option<u16> {
    let tcp = rule.protocol == "tcp" || rule.protocol == "6";
    match (rule.from_port, rule.to_port) {
        (Some(from), Some(to)) if tcp && from == to => u16::try_from(from).ok(),
        _ => None,
    }
}

/// What a rule lets in, as a person reads it: `tcp 22`, `udp 1000-2000`,
/// `all traffic`.
fn traffic(rule: &IngressRule) -> String {
    if rule.protocol == "-1" {
        return "all traffic".to_string();
    }
    match (rule.from_port, rule.to_port) {
        // ICMP's -1: every type.
        (Some(-1), _) | (None, _) | (_, None) => rule.protocol.clone(),
        (Some(from), Some(to)) if from == to => format!("{} {from}", rule.protocol),
        (Some(from), Some(to)) => format!("{} {from}-{to}", rule.protocol),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_single_tcp_ports_of_ours_from_allow_cidr_are_respots() {
        const CIDR: &str = "203.0.113.7/32";
        let rule = |protocol: &str, from: Option<i32>, to: Option<i32>, source: &str| IngressRule {
            protocol: protocol.to_string(),
            from_port: from,
            to_port: to,
            sources: vec![source.to_string()],
        };
        let cases = [
            ("ssh", rule("tcp", Some(22), Some(22), CIDR), vec![22], vec![]),
            (
                "open port",
                rule("tcp", Some(8080), Some(8080), CIDR),
                vec![8080],
                vec![],
            ),
            (
                "protocol number",
                rule("6", Some(22), Some(22), CIDR),
                vec![22],
                vec![],
            ),
            (
                "udp",
                rule("udp", Some(22), Some(22), CIDR),
                vec![],
                vec!["udp 22 from 203.0.113.7/32"],
            ),
            (
                "range",
                rule("tcp", Some(20), Some(30), CIDR),
                vec![],
                vec!["tcp 20-30 from 203.0.113.7/32"],
            ),
            (
                "other port",
                rule("tcp", Some(443), Some(443), CIDR),
                vec![],
                vec!["tcp 443 from 203.0.113.7/32"],
            ),
            (
                "other cidr",
                rule("tcp", Some(22), Some(22), "10.0.0.0/8"),
                vec![],
                vec!["tcp 22 from 10.0.0.0/8"],
            ),
            (
                "ipv6",
                rule("tcp", Some(22), Some(22), "::/0"),
                vec![],
                vec!["tcp 22 from ::/0"],
            ),
            (
                "all traffic",
                rule("-1", None, None, "sg-0abc"),
                vec![],
                vec!["all traffic from sg-0abc"],
            ),
            (
                "icmp",
                rule("icmp", Some(-1), Some(-1), CIDR),
                vec![],
                vec!["icmp from 203.0.113.7/32"],
            ),
        ];
        for (name, rule, want_open, want_unexpected) in cases {
            let group = SecurityGroup {
                id: "sg-0ours".to_string(),
                tags: Vec::new(),
                rules: vec![rule],
            };
            let (open, unexpected) = audit(&group, &[22, 8080], CIDR);
            assert_eq!(open.into_iter().collect::<Vec<_>>(), want_open, "{name}");
            assert_eq!(unexpected, want_unexpected, "{name}");
        }
    }
}
