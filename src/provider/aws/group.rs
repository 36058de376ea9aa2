//! The deployment's security group, `respot-<deployment>`: created tagged,
//! reused only when it carries our tag and admits nothing respot did not
//! write, opened to `ssh.allow_cidr` only, and deleted once no instance
//! uses it.
//!
//! It never touches a group it did not create, and never removes a rule:
//! one it did not write is reported for the user to remove.

use std::collections::BTreeSet;

use super::ec2::{Ec2Api, IngressRule, SecurityGroup, tag_value};
use super::{AwsProvider, RegionTarget};
use crate::provider::{ProviderError, Result, tag};

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
