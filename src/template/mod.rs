//! Rendering a blueprint into EC2/NoCloud user-data: render, digest, pack.
//!
//! The document has two parts:
//!
//! 1. The **blueprint** part: the Jinja template rendered with every file of
//!    the instance directory, plus respot's own files (`crate::guest`). It
//!    depends only on the blueprint folder and the respot version, so the
//!    same inputs give the same bytes on any machine; its sha256 is the
//!    deployment **digest**.
//! 2. The **launch** part, appended at launch: per-generation material (the
//!    pinned SSH host key, respot's verification key, the manifest naming the
//!    digest and generation). It is outside the digest. It uses only top-level
//!    keys the template may not use (`bootcmd`, `ssh_keys`, ...), so the two
//!    parts join into one valid `#cloud-config` without merging.
//!
//! Rendering has two steps: [`load`] reads the blueprint from disk and git
//! into a [`Source`] (all the I/O), and [`render`] turns a `Source` into a
//! [`Blueprint`] without any I/O. [`Blueprint::render`] does both.
//!
//! This module knows no AWS, no QEMU and no SSH.

mod bundle;
mod gzip;
mod inputs;
mod instance;
mod launch;
mod pack;
mod render;
mod schema;
mod source;
mod structure;
mod transport;
mod yaml_text;

#[cfg(test)]
mod budget_tests;

use std::fmt;

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::config::Config;
use crate::exit::ExitStatus;

pub use self::bundle::Bundle;
pub use self::inputs::{Inputs, Placed, seed_name};
pub use self::instance::preview as jinja_preview;
pub use self::pack::{Budget, USER_DATA_LIMIT, pack};
pub use self::render::render;
pub use self::schema::schema_check;
pub use self::source::{GitInfo, Source, SourceFile, load};
// The instance-side paths live with respot's instance files; these names
// stay here for callers that knew them as `template::…`.
pub use crate::guest::{
    DEPLOY_LOG_PATH, INSPECTOR_PATH, MANIFEST_PATH, PROBES_PATH, SUMS_PATH, UNITS_PATH, VERIFY_KEYS_DIR,
};

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("cannot read `{path}`: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{path}`: {problem}")]
    InstanceFile { path: String, problem: String },
    #[error(
        "`{file}`: `{path}` is respot's own: respot ships it to every instance itself \
         (its inspector, deploy-log, 60-respot.conf and everything under `/etc/respot/`); \
         remove `{file}` from the blueprint"
    )]
    RespotPath { file: String, path: String },
    #[error("`{file}`: a blueprint may not ship `{path}`: {reason}; remove `{file}` from the blueprint")]
    Guarded {
        file: String,
        path: String,
        reason: &'static str,
    },
    /// The rendered document is not YAML; cloud-init would ignore it whole.
    #[error(
        "`{path}`: the rendered document is not valid YAML at rendered line {line}, column {column}: {message}\n  {line}| {text}"
    )]
    Yaml {
        path: String,
        line: usize,
        column: usize,
        message: String,
        /// The rendered line, so the user can find the template line that made it.
        text: String,
    },
    #[error("`{path}`: {problem}")]
    Structure { path: String, problem: String },
    #[error(
        "`{path}`: the template mentions `{user}` at `{at}`; that account is respot's verification \
         account, which respot creates itself and no blueprint may create or change"
    )]
    VerifyAccount {
        path: String,
        user: &'static str,
        at: String,
    },
    #[error(
        "`ssh.authorized_key` contains respot's verification public key; that key must stay \
         restricted to the read-only inspector, so it may not be a login key. Use your own key"
    )]
    VerifyKeyReused,
    #[error("`{path}`: {message}")]
    Render { path: String, message: String },
    #[error(
        "`{path}`: the template sets the top-level key `{key}`, which respot writes itself \
         (reserved: {reserved}); remove it from the template (files belong in the instance directory)"
    )]
    ReservedKey {
        path: String,
        key: String,
        reserved: String,
    },
    #[error(
        "user data is {packed} bytes even gzipped, over EC2's limit of {USER_DATA_LIMIT}; \
         the largest files are: {}; shrink them, or let respot ship them as a bundle \
         (`[deployment] transport = \"auto\"`, the default, or `\"bundle\"`)",
        LargeFile::list(largest)
    )]
    TooLarge { packed: usize, largest: Vec<LargeFile> },
    #[error("`{path}` fails cloud-init's schema check:\n{output}")]
    Schema { path: String, output: String },
}

impl TemplateError {
    /// Every template error is the blueprint's: fix it and render again.
    /// Nothing was touched.
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            TemplateError::Read { .. }
            | TemplateError::InstanceFile { .. }
            | TemplateError::RespotPath { .. }
            | TemplateError::Guarded { .. }
            | TemplateError::Yaml { .. }
            | TemplateError::Structure { .. }
            | TemplateError::VerifyAccount { .. }
            | TemplateError::VerifyKeyReused
            | TemplateError::Render { .. }
            | TemplateError::ReservedKey { .. }
            | TemplateError::TooLarge { .. }
            | TemplateError::Schema { .. } => ExitStatus::Usage,
        }
    }
}

/// One of the blueprint's largest files, named in a size refusal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LargeFile {
    /// The file in the blueprint folder (`instance/files/...`).
    pub source: String,
    pub bytes: usize,
}

impl LargeFile {
    fn list(files: &[LargeFile]) -> String {
        files
            .iter()
            .map(|f| format!("`{}` ({} bytes)", f.source, f.bytes))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The sha256 (hex) of the blueprint part of the user-data.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Digest(String);

impl Digest {
    fn of(bytes: &[u8]) -> Digest {
        Digest(hex::encode(Sha256::digest(bytes)))
    }

    pub fn parse(hex_text: &str) -> Option<Digest> {
        (hex_text.len() == 64
            && hex_text
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
        .then(|| Digest(hex_text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn short(&self) -> &str {
        &self.0[..12]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who a file on the instance comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// The user's instance directory.
    Blueprint,
    /// respot itself: its own files (`crate::guest`) and the generated ones.
    Respot,
}

/// One file the instance receives.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceFile {
    /// Absolute path on the instance.
    pub path: String,
    /// Where it came from: relative to the blueprint folder for blueprint
    /// files, `respot` for respot's own.
    pub source: String,
    pub origin: Origin,
    /// Octal mode such as `0644`.
    pub mode: String,
    /// `root` unless `[[files]]` says otherwise.
    pub owner: String,
    pub group: String,
    pub sha256: String,
    /// A `[[files]] template = true` file that uses per-instance values: its
    /// content differs by instance, so `sha256` is its template's and the
    /// instance does not check it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub template: bool,
    #[serde(skip)]
    pub content: Vec<u8>,
}

impl InstanceFile {
    fn new(path: String, source: String, origin: Origin, mode: &str, content: Vec<u8>) -> InstanceFile {
        InstanceFile {
            sha256: hex::encode(Sha256::digest(&content)),
            path,
            source,
            origin,
            mode: mode.to_string(),
            owner: "root".to_string(),
            group: "root".to_string(),
            template: false,
            content,
        }
    }
}

/// A rendered blueprint: the digest-covered part of the user-data.
#[derive(Debug, Clone)]
pub struct Blueprint {
    pub deployment: String,
    pub document: String,
    pub digest: Digest,
    pub version: String,
    pub git: GitInfo,
    /// Every file that lands, blueprint's and respot's, sorted by path.
    pub files: Vec<InstanceFile>,
    pub units: Vec<String>,
    pub ssh_user: String,
    /// The person's own login keys (`ssh.authorized_key`).
    pub authorized_keys: Vec<String>,
    /// The blueprint's files as one archive, when they travel as a bundle
    /// rather than in the user-data (`[deployment] transport`).
    pub bundle: Option<Bundle>,
}

impl Blueprint {
    /// Whether `public_line` (`type base64 [comment]`) is one of the
    /// blueprint's login keys, whatever the comments say.
    pub fn logs_in_with(&self, public_line: &str) -> bool {
        let blob = |line: &str| line.split_whitespace().nth(1).map(str::to_string);
        let Some(wanted) = blob(public_line) else {
            return false;
        };
        self.authorized_keys
            .iter()
            .any(|key| blob(key).as_deref() == Some(wanted.as_str()))
    }

    /// Loads and renders the blueprint named by `config`: `render(&load(config)?)`.
    pub fn render(config: &Config) -> Result<Blueprint, TemplateError> {
        render(&load(config)?)
    }
}

/// Per-generation material appended at launch, outside the digest.
#[derive(Debug, Clone, Default)]
pub struct LaunchMaterial {
    pub generation: u64,
    /// The pinned host key: (OpenSSH private key text, public key line).
    pub host_key: Option<(String, String)>,
    /// respot's verification public key line (`ssh-ed25519 AAAA... comment`).
    pub verify_key: Option<String>,
    /// Where the instance fetches the bundle, when the blueprint has one.
    pub bundle_source: Option<BundleSource>,
}

/// Where an instance fetches its bundle: launch material, outside the
/// digest (a presigned URL changes at every launch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundleSource {
    /// An HTTPS GET (a presigned S3 URL), in the user-data padded to
    /// `reserve` bytes, the longest such URL, so that `render` (which
    /// counts a placeholder of that length) and `create` send the same size.
    Url { url: String, reserve: usize },
    /// A file of this name on the NoCloud seed (volume `cidata`).
    Seed(String),
}

/// The user-data exactly as a provider hands it to an instance.
#[derive(Debug, Clone)]
pub struct UserData {
    pub document: String,
    pub packed: Vec<u8>,
    pub gzipped: bool,
}
