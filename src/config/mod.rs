//! `respot.toml`, the deployment blueprint's settings: parsing, validation and
//! error locations.
//!
//! Parsing has two stages. serde (with `deny_unknown_fields`) checks shape and
//! types; `validate` checks meaning (ranges, names, referenced files). Both
//! report `file:line:col: key: message`, with the line taken from the TOML
//! source, so a user can jump straight to the mistake. This module reads files
//! but never touches the network, a provider or an instance.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::exit::ExitStatus;

mod aws_launch;
mod files;
mod files_check;
mod glob;
mod located;
mod traffic;
pub mod units;
mod validate;

pub use aws_launch::Allocation;
pub use files::{
    DirectoryRule, FileRule, Mode, Ownership, PackageManager, PackageSpec, PackagesSection, SecretEntry,
    UnitStep, file_attributes,
};
use located::Located;
pub use located::Seg;
pub use traffic::{Batch, ListenerSection, ProbeUrl, TrafficAws, TrafficSection, listener_region};
pub use validate::valid_deployment_name;

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

/// The SSH key exchange verification offers (`verify.key_exchange`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyExchange {
    /// ML-KEM hybrid where both ends have it, else X25519: not
    /// sntrup761, whose key generation costs each connection ~40 ms of the
    /// operator's CPU (BENCHMARKS.md).
    #[default]
    Fast,
    /// Post-quantum hybrids only (ML-KEM, then sntrup761); refused when
    /// the local ssh has neither.
    PostQuantum,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fallback {
    #[default]
    None,
    OnDemand,
}

/// How the blueprint's files reach an instance (`[deployment] transport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// In the user-data while it fits, in a bundle otherwise.
    #[default]
    Auto,
    /// Always in the user-data; refused when it does not fit.
    Inline,
    /// Always in a bundle (S3 on AWS, the seed locally).
    Bundle,
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
    /// The front door and rollout settings; `None`: no door.
    #[serde(default)]
    pub traffic: Option<TrafficSection>,
    /// `[[files]]`, `[[directories]]`, `[[secrets]]`, `[packages]`: see `files`.
    #[serde(default)]
    pub files: Vec<FileRule>,
    #[serde(default)]
    pub directories: Vec<DirectoryRule>,
    #[serde(default)]
    pub secrets: Vec<SecretEntry>,
    #[serde(default)]
    pub packages: PackagesSection,
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
    /// Ship only commits that `git verify-commit` accepts, from a clean tree
    /// (`create`, `deploy`, `rollback`); the signer goes into the tags.
    #[serde(default)]
    pub require_signed: bool,
    #[serde(default)]
    pub transport: Transport,
    /// The unit start order (see `units`); file name order when absent.
    #[serde(default)]
    pub units: Option<Vec<UnitStep>>,
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
    /// Launch with the root volume encrypted (the account's default KMS
    /// key). User data carries the generation's SSH host private key, and
    /// cloud-init writes it to the root volume.
    #[serde(default = "default_encrypt_volumes")]
    pub encrypt_volumes: bool,
    /// The S3 bucket for bundles; respot makes one per account and home
    /// region when unset.
    #[serde(default)]
    pub bundle_bucket: Option<String>,
    /// Ask for a public IPv4 address at launch; with `false`, instances get
    /// none and verification uses their private address.
    #[serde(default = "default_public_ip")]
    pub public_ip: bool,
    /// The root volume's size in GiB; the image's when unset.
    #[serde(default)]
    pub root_volume_gb: Option<u32>,
    /// The root volume's EBS type (`gp3`, `gp2`, `io1`, ...); the image's
    /// when unset.
    #[serde(default)]
    pub volume_type: Option<String>,
    /// Extra tags on everything respot launches; never `respot:*`.
    #[serde(default)]
    pub tags: std::collections::BTreeMap<String, String>,
    /// The IAM instance profile (name or ARN) instances launch with.
    #[serde(default)]
    pub instance_profile: Option<String>,
    /// How a region's count is spread over its pools (`ordered` or
    /// `price-capacity-optimized`).
    #[serde(default)]
    pub allocation: aws_launch::Allocation,
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
            encrypt_volumes: default_encrypt_volumes(),
            bundle_bucket: None,
            public_ip: default_public_ip(),
            root_volume_gb: None,
            volume_type: None,
            tags: std::collections::BTreeMap::new(),
            instance_profile: None,
            allocation: aws_launch::Allocation::default(),
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
    /// Instance types for this region, in order; `aws.instance_types` when unset.
    #[serde(default)]
    pub instance_types: Option<Vec<String>>,
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
    /// Instances verified at once (each holds one ssh master process and
    /// a few descriptors while it runs).
    #[serde(default = "default_verify_concurrency")]
    pub concurrency: usize,
    #[serde(default)]
    pub key_exchange: KeyExchange,
}

impl Default for VerifySection {
    fn default() -> Self {
        VerifySection {
            timeout_secs: default_timeout_secs(),
            http: Vec::new(),
            concurrency: default_verify_concurrency(),
            key_exchange: KeyExchange::default(),
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
fn default_encrypt_volumes() -> bool {
    true
}
fn default_public_ip() -> bool {
    true
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
/// From `scripts/bench-verify` (BENCHMARKS.md): 1,000 targets at 100 ms
/// round trip verify well inside a minute at this width, with descriptors
/// and processes bounded by it.
pub const DEFAULT_VERIFY_CONCURRENCY: usize = 64;
fn default_verify_concurrency() -> usize {
    DEFAULT_VERIFY_CONCURRENCY
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
}

/// Expands a leading `~/` and resolves relative paths against `base`.
pub fn resolve_path(base: &Path, raw: &str) -> PathBuf {
    crate::paths::resolve(base, raw)
}
