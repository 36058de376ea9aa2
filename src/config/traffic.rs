//! `[traffic]`: the deployment's front door, and how `deploy` moves traffic
//! through it (steps, holds, batches, the guard's error budget). Optional:
//! without it, deploy replaces instances as before and nothing routes to
//! them.
//!
//! The section is provider-neutral except for its provider parts: the local
//! front door (HAProxy) listens on `port`; on AWS the door is an existing
//! ALB listener per region, named in `[[traffic.aws.listeners]]`.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::located::{Located, Seg};
use super::{Config, ConfigError, ProviderKind};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficSection {
    /// Local provider: the front door listens on `127.0.0.1:<port>`.
    #[serde(default)]
    pub port: Option<u16>,
    /// The TCP port each instance serves traffic on (and answers
    /// `health_path` on).
    #[serde(default = "default_guest_port")]
    pub guest_port: u16,
    /// The door's own HTTP health check on each instance.
    #[serde(default = "default_health_path")]
    pub health_path: String,
    /// How long the guard watches after each shift, in seconds.
    #[serde(default = "default_hold_secs")]
    pub hold_secs: u64,
    /// The guard's budget: a share of failed probes above this (0 to 1)
    /// shifts everything back.
    #[serde(default = "default_max_error_rate")]
    pub max_error_rate: f64,
    /// Canary: the new generation's share after each step, in percent.
    #[serde(default = "default_steps")]
    pub steps: Vec<u8>,
    /// Rolling: instances replaced per region at a time, a count (`2`) or a
    /// share (`"25%"`).
    #[serde(default)]
    pub batch: Batch,
    /// Rolling: how many old instances per region may leave the door before
    /// their replacements serve (0: launch first, never below the count).
    #[serde(default)]
    pub max_unavailable: u32,
    /// AWS provider: the ALB listener of each region.
    #[serde(default)]
    pub aws: Option<TrafficAws>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficAws {
    #[serde(default)]
    pub listeners: Vec<ListenerSection>,
}

/// An existing ALB listener whose default action respot points at the
/// deployment's weighted target groups.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerSection {
    pub region: String,
    pub listener_arn: String,
    /// Where the guard probes this region's door, `http://HOST[:PORT][/PATH]`,
    /// instead of the load balancer's DNS name, the listener's port and
    /// `health_path` (a DNS name of your own in front of the ALB, or a
    /// balancer the guard's host cannot reach by its AWS name).
    #[serde(default)]
    pub probe_url: Option<String>,
}

impl ListenerSection {
    /// `probe_url`, parsed (validated at load), with `health_path` where
    /// the URL names no path.
    pub fn probe(&self, health_path: &str) -> Option<ProbeUrl> {
        let url = ProbeUrl::parse(self.probe_url.as_deref()?).ok()?;
        Some(ProbeUrl {
            path: url.path.or_else(|| Some(health_path.to_string())),
            ..url
        })
    }
}

/// A plain-HTTP URL the guard sends its GET to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeUrl {
    pub host: String,
    pub port: u16,
    /// `None` when the URL ends at the authority.
    pub path: Option<String>,
}

impl ProbeUrl {
    /// `http://HOST[:PORT][/PATH]`; the error says what is wrong.
    pub fn parse(url: &str) -> Result<ProbeUrl, String> {
        let Some(rest) = url.strip_prefix("http://") else {
            return Err(format!(
                "expected a plain-HTTP URL such as `http://web.example.com/health` (the guard's probe \
                 speaks HTTP/1.0 without TLS), got `{url}`"
            ));
        };
        let (authority, path) = match rest.find('/') {
            Some(at) => (&rest[..at], Some(rest[at..].to_string())),
            None => (rest, None),
        };
        // `[v6]:port`, `[v6]`, `host:port`, `host`.
        let (host, port) = match authority.strip_prefix('[').and_then(|a| a.split_once(']')) {
            Some((host, "")) => (host, None),
            Some((host, rest)) => (host, Some(rest.strip_prefix(':').unwrap_or(rest))),
            None => match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        let port = match port.map(str::parse::<u16>) {
            None => 80,
            Some(Ok(port)) if port > 0 => port,
            _ => return Err(format!("expected a TCP port from 1 to 65535 in `{url}`")),
        };
        let bad_host = host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:_".contains(&b));
        if bad_host {
            return Err(format!(
                "expected a host name or address after `http://`, got `{url}`"
            ));
        }
        if path
            .as_ref()
            .is_some_and(|p| p.len() > 200 || !p.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(format!(
                "expected a URL path of printable characters, got `{url}`"
            ));
        }
        Ok(ProbeUrl {
            host: host.to_string(),
            port,
            path,
        })
    }
}

/// How many instances a rolling deploy replaces at a time, per region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batch {
    Count(u32),
    /// A share of the region's count, in percent (`"25%"`).
    Share(u32),
}

impl Default for Batch {
    fn default() -> Self {
        Batch::Count(1)
    }
}

impl Batch {
    /// Instances per round for a region of `count` instances: at least 1.
    pub fn of(self, count: usize) -> usize {
        let n = match self {
            Batch::Count(n) => n as usize,
            Batch::Share(p) => (count * p as usize).div_ceil(100),
        };
        n.clamp(1, count.max(1))
    }
}

impl fmt::Display for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Batch::Count(n) => write!(f, "{n}"),
            Batch::Share(p) => write!(f, "{p}%"),
        }
    }
}

impl Serialize for Batch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Batch::Count(n) => s.serialize_u32(*n),
            Batch::Share(_) => s.serialize_str(&self.to_string()),
        }
    }
}

/// `2` or `"25%"`.
impl<'de> Deserialize<'de> for Batch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Batch, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Batch;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a count such as 2 or a share such as \"25%\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Batch, E> {
                u32::try_from(v)
                    .map(Batch::Count)
                    .map_err(|_| E::custom(format!("expected a count >= 1, got {v}")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Batch, E> {
                v.strip_suffix('%')
                    .and_then(|n| n.trim().parse::<u32>().ok())
                    .map(Batch::Share)
                    .ok_or_else(|| {
                        E::custom(format!(
                            "expected a count such as 2 or a share such as \"25%\", got `{v}`"
                        ))
                    })
            }
        }
        d.deserialize_any(Visitor)
    }
}

fn default_guest_port() -> u16 {
    8080
}
fn default_health_path() -> String {
    "/health".to_string()
}
fn default_hold_secs() -> u64 {
    30
}
fn default_max_error_rate() -> f64 {
    0.01
}
fn default_steps() -> Vec<u8> {
    vec![5, 25, 50, 100]
}

impl Config {
    pub(super) fn validate_traffic(&self, at: &Located) -> Result<(), ConfigError> {
        let Some(traffic) = &self.traffic else {
            return Ok(());
        };
        let key = |k: &'static str| [Seg::Key("traffic"), Seg::Key(k)];
        if let Some(0) = traffic.port {
            return Err(at.invalid(
                &key("port"),
                "expected a TCP port from 1 to 65535, got 0".to_string(),
            ));
        }
        if self.deployment.provider == ProviderKind::Local && traffic.port.is_none() {
            return Err(at.invalid(
                &[Seg::Key("traffic")],
                "the local front door needs `port`, where it listens on 127.0.0.1 (e.g. port = 8000)"
                    .to_string(),
            ));
        }
        if traffic.guest_port == 0 || traffic.guest_port == 22 {
            return Err(at.invalid(
                &key("guest_port"),
                format!(
                    "expected the instances' service port, not 0 or 22, got {}",
                    traffic.guest_port
                ),
            ));
        }
        if !traffic.health_path.starts_with('/')
            || traffic.health_path.len() > 200
            || !traffic.health_path.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(at.invalid(
                &key("health_path"),
                format!(
                    "expected an absolute URL path starting with `/`, such as `/health`, got `{}`",
                    traffic.health_path
                ),
            ));
        }
        if !(traffic.max_error_rate.is_finite() && (0.0..=1.0).contains(&traffic.max_error_rate)) {
            return Err(at.invalid(
                &key("max_error_rate"),
                format!(
                    "expected a share from 0 to 1 (0.01 is 1 %), got {}",
                    traffic.max_error_rate
                ),
            ));
        }
        self.validate_steps(traffic, at)?;
        self.validate_batch(traffic, at)?;
        self.validate_listeners(traffic, at)
    }

    fn validate_steps(&self, traffic: &TrafficSection, at: &Located) -> Result<(), ConfigError> {
        let here = [Seg::Key("traffic"), Seg::Key("steps")];
        for (i, step) in traffic.steps.iter().enumerate() {
            let rising = i == 0 || traffic.steps[i - 1] < *step;
            if *step == 0 || *step > 100 || !rising {
                return Err(at.invalid(
                    &[Seg::Key("traffic"), Seg::Key("steps"), Seg::Index(i)],
                    format!("expected rising percentages from 1 to 100, got {step}"),
                ));
            }
        }
        if traffic.steps.last() != Some(&100) {
            return Err(at.invalid(
                &here,
                format!(
                    "the last step must be 100 (everything on the new generation), got {:?}",
                    traffic.steps
                ),
            ));
        }
        Ok(())
    }

    fn validate_batch(&self, traffic: &TrafficSection, at: &Located) -> Result<(), ConfigError> {
        let bad = match traffic.batch {
            Batch::Count(0) => Some("expected a count >= 1 or a share like \"25%\", got 0"),
            Batch::Share(p) if p == 0 || p > 100 => Some("expected a share from 1% to 100%"),
            _ => None,
        };
        match bad {
            Some(message) => Err(at.invalid(&[Seg::Key("traffic"), Seg::Key("batch")], message.to_string())),
            None => Ok(()),
        }
    }

    fn validate_listeners(&self, traffic: &TrafficSection, at: &Located) -> Result<(), ConfigError> {
        let Some(aws) = &traffic.aws else {
            return Ok(());
        };
        if self.deployment.provider != ProviderKind::Aws {
            return Err(at.invalid(
                &[Seg::Key("traffic"), Seg::Key("aws")],
                format!(
                    "`[traffic.aws]` is for the aws provider, but `deployment.provider` is \"{}\"; \
                     remove it, or set provider = \"aws\"",
                    self.deployment.provider
                ),
            ));
        }
        for (i, listener) in aws.listeners.iter().enumerate() {
            let here = |k: &'static str| {
                [
                    Seg::Key("traffic"),
                    Seg::Key("aws"),
                    Seg::Key("listeners"),
                    Seg::Index(i),
                    Seg::Key(k),
                ]
            };
            if !self.aws.regions.iter().any(|r| r.name == listener.region) {
                return Err(at.invalid(
                    &here("region"),
                    format!(
                        "region `{}` is not one of `aws.regions`; a listener serves a region the deployment runs in",
                        listener.region
                    ),
                ));
            }
            match listener_region(&listener.listener_arn) {
                Some(region) if region == listener.region => {}
                Some(region) => {
                    return Err(at.invalid(
                        &here("listener_arn"),
                        format!(
                            "this listener is in `{region}`, not `{}`; use a listener of that region",
                            listener.region
                        ),
                    ));
                }
                None => {
                    return Err(at.invalid(
                        &here("listener_arn"),
                        format!(
                            "expected an ALB listener ARN, arn:aws:elasticloadbalancing:REGION:ACCOUNT:listener/app/..., got `{}`",
                            listener.listener_arn
                        ),
                    ));
                }
            }
            if let Some(Err(message)) = listener.probe_url.as_deref().map(ProbeUrl::parse) {
                return Err(at.invalid(&here("probe_url"), message));
            }
        }
        Ok(())
    }
}

/// The region of an ALB listener ARN, or `None` when it is not one.
pub fn listener_region(arn: &str) -> Option<&str> {
    let mut parts = arn.splitn(6, ':');
    let (
        Some("arn"),
        Some(_partition),
        Some("elasticloadbalancing"),
        Some(region),
        Some(_account),
        Some(rest),
    ) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    )
    else {
        return None;
    };
    (!region.is_empty() && rest.starts_with("listener/")).then_some(region)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_at_least_one_and_at_most_the_count() {
        let cases: &[(Batch, usize, usize)] = &[
            (Batch::Count(2), 6, 2),
            (Batch::Count(9), 6, 6),
            (Batch::Share(25), 6, 2),
            (Batch::Share(1), 6, 1),
            (Batch::Share(100), 6, 6),
            (Batch::Count(1), 0, 1),
        ];
        for (batch, count, want) in cases {
            assert_eq!(batch.of(*count), *want, "{batch} of {count}");
        }
    }

    #[test]
    fn listener_arns_name_their_region() {
        let arn = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:listener/app/web/50dc6c495c0c9188/f2f7dc8efc522ab2";
        assert_eq!(listener_region(arn), Some("eu-west-1"));
        assert_eq!(listener_region("arn:aws:ec2:eu-west-1:1:instance/i-1"), None);
        assert_eq!(listener_region("nonsense"), None);
    }

    #[test]
    fn probe_urls_are_plain_http_with_a_host() {
        let url = |host: &str, port, path: Option<&str>| ProbeUrl {
            host: host.to_string(),
            port,
            path: path.map(str::to_string),
        };
        let good = [
            (
                "http://127.0.0.1:8123/health/eu",
                url("127.0.0.1", 8123, Some("/health/eu")),
            ),
            ("http://web.example.com", url("web.example.com", 80, None)),
            ("http://web.example.com/", url("web.example.com", 80, Some("/"))),
            ("http://[::1]:81/h", url("::1", 81, Some("/h"))),
        ];
        for (text, want) in good {
            assert_eq!(ProbeUrl::parse(text), Ok(want), "{text}");
        }
        for bad in [
            "https://web.example.com/health",
            "web.example.com",
            "http://",
            "http://h:0/",
            "http://h:x/",
            "http://a b/",
            "http://[::1]x/",
        ] {
            assert!(ProbeUrl::parse(bad).is_err(), "{bad}");
        }
        let listener = ListenerSection {
            region: "eu-west-1".to_string(),
            listener_arn: String::new(),
            probe_url: Some("http://web.example.com:8080".to_string()),
        };
        assert_eq!(
            listener.probe("/health"),
            Some(url("web.example.com", 8080, Some("/health")))
        );
    }

    #[test]
    fn batch_reads_a_count_or_a_share() {
        let parse = |line: &str| {
            let text = format!("[deployment]\nname = \"web\"\n\n[traffic]\nport = 8000\n{line}\n");
            Config::parse(&text, std::path::Path::new("respot.toml")).map(|c| c.traffic.map(|t| t.batch))
        };
        assert_eq!(parse("batch = 2").unwrap(), Some(Batch::Count(2)));
        assert_eq!(parse("batch = \"25%\"").unwrap(), Some(Batch::Share(25)));
        for bad in ["batch = 0", "batch = \"0%\"", "batch = \"x\"", "batch = \"150%\""] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(err.contains("traffic.batch"), "{bad}: {err}");
        }
    }
}
