//! `respot.toml`, the deployment blueprint's settings: parsing, validation and
//! error locations.
//!
//! Parsing has two stages. serde (with `deny_unknown_fields`) checks shape and
//! types; `validate` checks meaning (ranges, names, referenced files). Both
//! report `file:line:col: key: message`, with the line taken from the TOML
//! source, so a user can jump straight to the mistake. This module reads files
//! but never touches the network, a provider or an instance.

use std::fmt;
use std::net::Ipv4Addr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::exit::ExitStatus;
use crate::provider::aws::{image, regions};

pub const DEFAULT_CONFIG_FILE: &str = "respot.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "no `{DEFAULT_CONFIG_FILE}` in `{dir}`; run `respot init` to create a blueprint here, \
         or pass `--config PATH`"
    )]
    NotFound { dir: String },
    #[error("cannot read `{path}`: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A problem at a known place in the file.
    #[error("{}", format_invalid(.file, .location, .key, .message))]
    Invalid {
        file: String,
        /// 1-based line and column, when the key exists in the file.
        location: Option<(usize, usize)>,
        key: String,
        message: String,
    },
}

impl ConfigError {
    /// A missing, unreadable or invalid `respot.toml` is the user's to fix;
    /// nothing was touched.
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            ConfigError::NotFound { .. } | ConfigError::Read { .. } | ConfigError::Invalid { .. } => {
                ExitStatus::Usage
            }
        }
    }
}

fn format_invalid(file: &str, location: &Option<(usize, usize)>, key: &str, message: &str) -> String {
    let place = match location {
        Some((line, col)) => format!("{file}:{line}:{col}"),
        None => file.to_string(),
    };
    if key.is_empty() {
        format!("{place}: {message}")
    } else {
        format!("{place}: {key}: {message}")
    }
}

/// Which backend runs the instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderKind {
    Local,
    Aws,
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProviderKind::Local => "local",
            ProviderKind::Aws => "aws",
        })
    }
}

/// How respot learns an instance's SSH host key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostKeyPolicy {
    /// respot generates the host key per generation and injects it through
    /// cloud-init, so the key is known before the first connection.
    #[default]
    Pinned,
    /// The key is recorded on first contact and enforced from then on.
    RecordOnFirstUse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fallback {
    #[default]
    None,
    OnDemand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Accel {
    /// KVM where it really works, TCG otherwise.
    #[default]
    Auto,
    Kvm,
    Tcg,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub deployment: DeploymentSection,
    #[serde(default)]
    pub ssh: SshSection,
    #[serde(default)]
    pub aws: AwsSection,
    #[serde(default)]
    pub local: LocalSection,
    #[serde(default)]
    pub verify: VerifySection,
    /// Where the file was read from; relative paths in it resolve against
    /// its directory.
    #[serde(skip)]
    pub source: PathBuf,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentSection {
    pub name: String,
    #[serde(default = "default_provider")]
    pub provider: ProviderKind,
    #[serde(default = "default_template")]
    pub template: PathBuf,
    #[serde(default = "default_instance_dir")]
    pub instance_dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SshSection {
    #[serde(default = "default_ssh_user")]
    pub user: String,
    /// A person's own login key, installed for the login user. respot never
    /// uses it; verification has its own restricted key.
    #[serde(default)]
    pub authorized_key: Option<String>,
    /// Who may reach port 22 (and `aws.open_ports`) on AWS.
    #[serde(default)]
    pub allow_cidr: Option<String>,
    #[serde(default)]
    pub host_keys: HostKeyPolicy,
}

impl Default for SshSection {
    fn default() -> Self {
        SshSection {
            user: default_ssh_user(),
            authorized_key: None,
            allow_cidr: None,
            host_keys: HostKeyPolicy::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AwsSection {
    #[serde(default = "default_image")]
    pub image: String,
    #[serde(default = "default_instance_types")]
    pub instance_types: Vec<String>,
    #[serde(default)]
    pub max_price: Option<f64>,
    #[serde(default)]
    pub fallback: Fallback,
    #[serde(default)]
    pub regions: Vec<RegionSection>,
    /// Extra TCP ports opened to `ssh.allow_cidr`, besides 22.
    #[serde(default)]
    pub open_ports: Vec<u16>,
}

impl Default for AwsSection {
    fn default() -> Self {
        AwsSection {
            image: default_image(),
            instance_types: default_instance_types(),
            max_price: None,
            fallback: Fallback::None,
            regions: Vec::new(),
            open_ports: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegionSection {
    pub name: String,
    pub count: u32,
    /// Availability zones to try, in order; empty means every default subnet.
    #[serde(default)]
    pub zones: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LocalSection {
    #[serde(default = "default_local_count")]
    pub count: u32,
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u32,
    #[serde(default = "default_cpus")]
    pub cpus: u32,
    /// Directory holding `disk.raw`, `vmlinuz` and `initrd.img`, as built by
    /// `scripts/build-image`. Defaults to respot's image cache.
    #[serde(default)]
    pub image: Option<PathBuf>,
    #[serde(default)]
    pub accel: Accel,
    /// Guest TCP ports forwarded to 127.0.0.1, besides SSH.
    #[serde(default)]
    pub forward_ports: Vec<u16>,
}

impl Default for LocalSection {
    fn default() -> Self {
        LocalSection {
            count: default_local_count(),
            memory_mib: default_memory_mib(),
            cpus: default_cpus(),
            image: None,
            accel: Accel::Auto,
            forward_ports: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VerifySection {
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    #[serde(default)]
    pub http: Vec<HttpProbe>,
}

impl Default for VerifySection {
    fn default() -> Self {
        VerifySection {
            timeout_secs: default_timeout_secs(),
            http: Vec::new(),
        }
    }
}

/// An HTTP health probe, run on the instance against localhost by the
/// inspector.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpProbe {
    pub port: u16,
    #[serde(default = "default_probe_path")]
    pub path: String,
    #[serde(default = "default_expect_status")]
    pub expect_status: u16,
}

fn default_provider() -> ProviderKind {
    ProviderKind::Local
}
fn default_template() -> PathBuf {
    PathBuf::from("templates/cloud-init.yaml")
}
fn default_instance_dir() -> PathBuf {
    PathBuf::from("instance")
}
fn default_ssh_user() -> String {
    "respot".to_string()
}
fn default_image() -> String {
    "ubuntu-24.04".to_string()
}
fn default_instance_types() -> Vec<String> {
    vec!["t3.small".to_string()]
}
fn default_local_count() -> u32 {
    2
}
fn default_memory_mib() -> u32 {
    1024
}
fn default_cpus() -> u32 {
    1
}
fn default_timeout_secs() -> u64 {
    600
}
fn default_probe_path() -> String {
    "/health".to_string()
}
fn default_expect_status() -> u16 {
    200
}

impl Config {
    /// Finds the config: `explicit` if given, else `respot.toml` in `cwd`.
    pub fn locate(explicit: Option<&Path>, cwd: &Path) -> Result<PathBuf, ConfigError> {
        match explicit {
            Some(path) => Ok(path.to_path_buf()),
            None => {
                let candidate = cwd.join(DEFAULT_CONFIG_FILE);
                if candidate.is_file() {
                    Ok(PathBuf::from(DEFAULT_CONFIG_FILE))
                } else {
                    Err(ConfigError::NotFound {
                        dir: cwd.display().to_string(),
                    })
                }
            }
        }
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates `text` as if read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let located = Located::new(text, &file);
        let deserializer = toml::Deserializer::new(text);
        let mut config: Config =
            serde_path_to_error::deserialize(deserializer).map_err(|err| located.serde_error(&err))?;
        config.source = path.to_path_buf();
        config.validate(&located)?;
        Ok(config)
    }

    /// The directory relative paths resolve against.
    pub fn base_dir(&self) -> PathBuf {
        match self.source.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    pub fn template_path(&self) -> PathBuf {
        self.base_dir().join(&self.deployment.template)
    }

    pub fn instance_dir(&self) -> PathBuf {
        self.base_dir().join(&self.deployment.instance_dir)
    }

    /// The person's login key file, with `~` expanded.
    pub fn authorized_key_path(&self) -> Option<PathBuf> {
        self.ssh
            .authorized_key
            .as_deref()
            .map(|raw| resolve_path(&self.base_dir(), raw))
    }

    fn validate(&self, at: &Located) -> Result<(), ConfigError> {
        let name = &self.deployment.name;
        if !valid_deployment_name(name) {
            return Err(at.invalid(
                &[Seg::Key("deployment"), Seg::Key("name")],
                format!(
                    "expected 1 to 40 characters of [a-z0-9-], not starting or ending with `-`, got `{name}`"
                ),
            ));
        }
        let template = self.template_path();
        if !template.is_file() {
            return Err(at.invalid(
                &[Seg::Key("deployment"), Seg::Key("template")],
                format!("template file `{}` does not exist", template.display()),
            ));
        }
        let instance_dir = self.instance_dir();
        if !instance_dir.is_dir() {
            return Err(at.invalid(
                &[Seg::Key("deployment"), Seg::Key("instance_dir")],
                format!("directory `{}` does not exist", instance_dir.display()),
            ));
        }
        self.validate_ssh(at)?;
        self.validate_aws(at)?;
        self.validate_local(at)?;
        self.validate_verify(at)
    }

    fn validate_ssh(&self, at: &Located) -> Result<(), ConfigError> {
        let user = &self.ssh.user;
        if !valid_unix_user(user) || user == "root" {
            return Err(at.invalid(
                &[Seg::Key("ssh"), Seg::Key("user")],
                format!(
                    "expected a login name of [a-z_][a-z0-9_-]* up to 32 characters, not root, got `{user}`"
                ),
            ));
        }
        if let Some(path) = self.authorized_key_path()
            && !path.is_file()
        {
            let private = path.with_extension("");
            return Err(at.invalid(
                &[Seg::Key("ssh"), Seg::Key("authorized_key")],
                format!(
                    "public key `{}` does not exist; create it with `ssh-keygen -t ed25519 -f {}`, \
                         or remove the key to log in only through respot's read-only inspector",
                    path.display(),
                    private.display()
                ),
            ));
        }
        if let Some(cidr) = &self.ssh.allow_cidr
            && !valid_ipv4_cidr(cidr)
        {
            return Err(at.invalid(
                &[Seg::Key("ssh"), Seg::Key("allow_cidr")],
                format!("expected an IPv4 CIDR such as `203.0.113.0/24`, got `{cidr}`"),
            ));
        }
        Ok(())
    }

    fn validate_aws(&self, at: &Located) -> Result<(), ConfigError> {
        let aws = &self.aws;
        let image = &aws.image;
        if !image::is_valid_image(image) {
            return Err(at.invalid(
                &[Seg::Key("aws"), Seg::Key("image")],
                format!(
                    "expected a literal `ami-...` id or one of {}, got `{image}`",
                    image::quoted_aliases()
                ),
            ));
        }
        if aws.instance_types.is_empty() {
            return Err(at.invalid(
                &[Seg::Key("aws"), Seg::Key("instance_types")],
                "expected at least one instance type, e.g. [\"t3.small\"]".to_string(),
            ));
        }
        for (i, itype) in aws.instance_types.iter().enumerate() {
            if !valid_instance_type(itype) {
                return Err(at.invalid(
                    &[Seg::Key("aws"), Seg::Key("instance_types"), Seg::Index(i)],
                    format!("expected an instance type such as `t3.small`, got `{itype}`"),
                ));
            }
        }
        if let Some(price) = aws.max_price
            && !(price.is_finite() && price > 0.0)
        {
            return Err(at.invalid(
                &[Seg::Key("aws"), Seg::Key("max_price")],
                format!("expected a price in USD per hour > 0, got {price}"),
            ));
        }
        for (i, region) in aws.regions.iter().enumerate() {
            let here =
                |key: &'static str| [Seg::Key("aws"), Seg::Key("regions"), Seg::Index(i), Seg::Key(key)];
            if !regions::valid_region(&region.name) {
                return Err(at.invalid(
                    &here("name"),
                    format!(
                        "expected a region name such as `eu-west-1`, got `{}`",
                        region.name
                    ),
                ));
            }
            if aws.regions[..i].iter().any(|r| r.name == region.name) {
                return Err(at.invalid(
                    &here("name"),
                    format!("region `{}` is listed twice; merge the entries", region.name),
                ));
            }
            if region.count == 0 {
                return Err(at.invalid(&here("count"), "expected an integer >= 1, got 0".to_string()));
            }
            for (z, zone) in region.zones.iter().enumerate() {
                if !zone.starts_with(&region.name) {
                    return Err(at.invalid(
                        &[
                            Seg::Key("aws"),
                            Seg::Key("regions"),
                            Seg::Index(i),
                            Seg::Key("zones"),
                            Seg::Index(z),
                        ],
                        format!("zone `{zone}` is not in region `{}`", region.name),
                    ));
                }
            }
        }
        for (i, port) in aws.open_ports.iter().enumerate() {
            if *port == 0 {
                return Err(at.invalid(
                    &[Seg::Key("aws"), Seg::Key("open_ports"), Seg::Index(i)],
                    "expected a TCP port from 1 to 65535, got 0".to_string(),
                ));
            }
        }
        Ok(())
    }

    fn validate_local(&self, at: &Located) -> Result<(), ConfigError> {
        let local = &self.local;
        let checks: [(&'static str, u32, u32, u32); 3] = [
            ("count", local.count, 1, 16),
            ("memory_mib", local.memory_mib, 256, 65536),
            ("cpus", local.cpus, 1, 64),
        ];
        for (key, value, min, max) in checks {
            if value < min || value > max {
                return Err(at.invalid(
                    &[Seg::Key("local"), Seg::Key(key)],
                    format!("expected an integer from {min} to {max}, got {value}"),
                ));
            }
        }
        for (i, port) in local.forward_ports.iter().enumerate() {
            if *port == 0 || *port == 22 {
                return Err(at.invalid(
                    &[Seg::Key("local"), Seg::Key("forward_ports"), Seg::Index(i)],
                    format!("expected a guest TCP port other than 22 (SSH is always forwarded), got {port}"),
                ));
            }
        }
        Ok(())
    }

    fn validate_verify(&self, at: &Located) -> Result<(), ConfigError> {
        if self.verify.timeout_secs == 0 {
            return Err(at.invalid(
                &[Seg::Key("verify"), Seg::Key("timeout_secs")],
                "expected an integer >= 1, got 0".to_string(),
            ));
        }
        for (i, probe) in self.verify.http.iter().enumerate() {
            let here =
                |key: &'static str| [Seg::Key("verify"), Seg::Key("http"), Seg::Index(i), Seg::Key(key)];
            if probe.port == 0 {
                return Err(at.invalid(
                    &here("port"),
                    "expected a TCP port from 1 to 65535, got 0".to_string(),
                ));
            }
            if !valid_probe_path(&probe.path) {
                return Err(at.invalid(
                    &here("path"),
                    format!(
                        "expected an absolute URL path of [A-Za-z0-9/._~-] such as `/health`, got `{}`",
                        probe.path
                    ),
                ));
            }
            if !(100..=599).contains(&probe.expect_status) {
                return Err(at.invalid(
                    &here("expect_status"),
                    format!(
                        "expected an HTTP status from 100 to 599, got {}",
                        probe.expect_status
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Expands a leading `~/` and resolves relative paths against `base`.
pub fn resolve_path(base: &Path, raw: &str) -> PathBuf {
    crate::paths::resolve(base, raw)
}

pub fn valid_deployment_name(name: &str) -> bool {
    (1..=40).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

fn valid_unix_user(user: &str) -> bool {
    let mut bytes = user.bytes();
    match bytes.next() {
        Some(first) if first.is_ascii_lowercase() || first == b'_' => {}
        _ => return false,
    }
    user.len() <= 32 && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn valid_ipv4_cidr(cidr: &str) -> bool {
    let Some((addr, bits)) = cidr.split_once('/') else {
        return false;
    };
    addr.parse::<Ipv4Addr>().is_ok() && bits.parse::<u8>().is_ok_and(|b| b <= 32)
}

fn valid_instance_type(itype: &str) -> bool {
    let Some((family, size)) = itype.split_once('.') else {
        return false;
    };
    !family.is_empty()
        && !size.is_empty()
        && itype
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
}

fn valid_probe_path(path: &str) -> bool {
    path.starts_with('/')
        && path.len() <= 200
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'~' | b'-'))
}

fn quoted_list(items: &[&str]) -> String {
    items
        .iter()
        .map(|i| format!("`{i}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One step of a key path: `aws.regions[1].count` is
/// `[Key("aws"), Key("regions"), Index(1), Key("count")]`.
#[derive(Debug, Clone, Copy)]
pub enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

fn format_key_path(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// The TOML source with spans, used to point errors at a line and column.
struct Located<'a> {
    text: &'a str,
    file: &'a str,
    doc: Option<toml_edit::ImDocument<&'a str>>,
}

impl<'a> Located<'a> {
    fn new(text: &'a str, file: &'a str) -> Self {
        Located {
            text,
            file,
            doc: toml_edit::ImDocument::parse(text).ok(),
        }
    }

    fn line_col(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, col)
    }

    fn span_of(&self, path: &[Seg]) -> Option<Range<usize>> {
        let doc = self.doc.as_ref()?;
        let mut item: &toml_edit::Item = doc.as_item();
        for seg in path {
            item = match seg {
                Seg::Key(key) => item.get(*key)?,
                Seg::Index(i) => item.get(*i)?,
            };
        }
        item.span()
    }

    fn invalid(&self, path: &[Seg], message: String) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_string(),
            location: self.span_of(path).map(|span| self.line_col(span.start)),
            key: format_key_path(path),
            message,
        }
    }

    fn serde_error(&self, err: &serde_path_to_error::Error<toml::de::Error>) -> ConfigError {
        let inner = err.inner();
        let key = err.path().to_string();
        let key = if key == "." { String::new() } else { key };
        ConfigError::Invalid {
            file: self.file.to_string(),
            location: inner.span().map(|span| self.line_col(span.start)),
            key,
            message: explain_serde_message(inner.message()),
        }
    }
}

/// Rewrites serde's wording into what a user can act on: unknown keys get the
/// nearest known key, type names become plain words.
fn explain_serde_message(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((unknown, expected)) = rest.split_once('`')
    {
        let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        let nearest = candidates
            .iter()
            .map(|c| (strsim::damerau_levenshtein(unknown, c), *c))
            .min();
        let known = quoted_list(&candidates);
        return match nearest {
            Some((distance, best))
                if distance <= 3 || best.starts_with(unknown) || unknown.starts_with(best) =>
            {
                format!("unknown key `{unknown}`; did you mean `{best}`? (known keys: {known})")
            }
            _ if candidates.is_empty() => format!("unknown key `{unknown}`; this table takes no keys"),
            _ => format!("unknown key `{unknown}`; known keys: {known}"),
        };
    }
    message
        .replace("expected u32", "expected an integer >= 0")
        .replace("expected u16", "expected an integer from 0 to 65535")
        .replace("expected u64", "expected an integer >= 0")
        .replace("expected f64", "expected a number")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_paths_format_like_toml() {
        let path = [
            Seg::Key("aws"),
            Seg::Key("regions"),
            Seg::Index(1),
            Seg::Key("count"),
        ];
        assert_eq!(format_key_path(&path), "aws.regions[1].count");
    }

    #[test]
    fn names_and_cidrs() {
        let cases: &[(&str, bool)] = &[
            ("hello", true),
            ("a", true),
            ("-a", false),
            ("A", false),
            ("a_b", false),
            ("", false),
        ];
        for (name, want) in cases {
            assert_eq!(valid_deployment_name(name), *want, "deployment name {name:?}");
        }
        let cidrs: &[(&str, bool)] = &[
            ("10.0.0.0/8", true),
            ("0.0.0.0/0", true),
            ("1.2.3.4/33", false),
            ("1.2.3/8", false),
            ("x", false),
        ];
        for (cidr, want) in cidrs {
            assert_eq!(valid_ipv4_cidr(cidr), *want, "cidr {cidr:?}");
        }
    }

    #[test]
    fn unknown_keys_suggest_the_nearest() {
        let got = explain_serde_message("unknown field `cont`, expected one of `name`, `count`, `zones`");
        assert_eq!(
            got,
            "unknown key `cont`; did you mean `count`? (known keys: `name`, `count`, `zones`)"
        );
    }

    #[test]
    fn line_and_column_are_one_based() {
        let located = Located::new("a = 1\nbb = 2\n", "x.toml");
        assert_eq!(located.line_col(0), (1, 1));
        assert_eq!(located.line_col(11), (2, 6));
    }
}
