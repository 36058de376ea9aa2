//! Rendering a blueprint into EC2/NoCloud user-data: render, digest, pack.
//!
//! The document has two parts:
//!
//! 1. The **blueprint** part: the Jinja template rendered with every file of
//!    the instance directory. It depends only on the blueprint folder, so the
//!    same inputs give the same bytes on any machine; its sha256 is the
//!    deployment **digest**.
//! 2. The **launch** part, appended at launch: per-generation material (the
//!    pinned SSH host key, respot's verification key, the manifest naming the
//!    digest and generation). It is outside the digest. It uses only top-level
//!    keys the template may not use (`bootcmd`, `ssh_keys`, ...), so the two
//!    parts join into one valid `#cloud-config` without merging.
//!
//! This module knows no AWS, no QEMU and no SSH.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::config::{Config, HttpProbe};

/// EC2 limits raw user data to 16 KB; above it respot gzips.
pub const USER_DATA_LIMIT: usize = 16 * 1024;

/// Where the instance keeps respot's own state.
pub const MANIFEST_PATH: &str = "/etc/respot/manifest.json";
pub const DEPLOY_LOG_PATH: &str = "/var/log/respot/deploy.log";
pub const PROBES_PATH: &str = "/etc/respot/probes";
/// The manifest's files in `sha256sum` format, and the units, one per line.
pub const SUMS_PATH: &str = "/etc/respot/manifest.sha256";
pub const UNITS_PATH: &str = "/etc/respot/units";
pub const INSPECTOR_PATH: &str = "/usr/lib/respot/inspect";
/// sshd reads the verification key from here (see `60-respot.conf`).
pub const VERIFY_KEYS_DIR: &str = "/etc/respot/verify_keys";

/// Files respot itself ships to every instance, whatever the blueprint says.
/// A blueprint may carry a copy (the sample does, so users can read them),
/// but it must be identical: they are what keeps verification read-only.
const FRAMEWORK_FILES: &[(&str, &str)] = &[
    (
        "/usr/lib/respot/deploy-log",
        include_str!("../instance/files/usr/lib/respot/deploy-log"),
    ),
    (
        INSPECTOR_PATH,
        include_str!("../instance/files/usr/lib/respot/inspect"),
    ),
    (
        "/etc/ssh/sshd_config.d/60-respot.conf",
        include_str!("../instance/files/etc/ssh/sshd_config.d/60-respot.conf"),
    ),
];

/// Top-level cloud-config keys that belong to the launch part.
const RESERVED_KEYS: &[&str] = &["bootcmd", "ssh_keys", "ssh_deletekeys", "ssh_genkeytypes"];

const UNIT_SUFFIXES: &[&str] = &["service", "timer", "socket", "path", "target", "mount"];

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
    #[error("`{path}`: {message}")]
    Render { path: String, message: String },
    #[error(
        "`{path}`: the template sets the top-level key `{key}`, which respot adds at launch \
         (reserved: {reserved}); remove it from the template"
    )]
    ReservedKey {
        path: String,
        key: String,
        reserved: String,
    },
    #[error(
        "user data is {packed} bytes even gzipped, over EC2's limit of {USER_DATA_LIMIT}; \
         the largest files are: {largest}"
    )]
    TooLarge { packed: usize, largest: String },
    #[error("`{path}` fails cloud-init's schema check:\n{output}")]
    Schema { path: String, output: String },
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

/// One file the instance receives.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceFile {
    /// Absolute path on the instance.
    pub path: String,
    /// Where it came from, relative to the blueprint (or `respot` for
    /// generated and framework files).
    pub source: String,
    /// Octal mode such as `0644`.
    pub mode: String,
    pub sha256: String,
    #[serde(skip)]
    pub content: Vec<u8>,
}

/// What git says about the blueprint folder.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GitInfo {
    /// `git describe --always --dirty`, when inside a repository with commits.
    pub describe: Option<String>,
    /// HEAD, recorded only when the tree is clean.
    pub commit: Option<String>,
    /// True when inside a repository and anything is modified or untracked.
    pub dirty: bool,
}

impl GitInfo {
    pub fn probe(dir: &Path) -> GitInfo {
        let git = |args: &[&str]| -> Option<String> {
            let out = Command::new("git").arg("-C").arg(dir).args(args).output().ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        };
        if git(&["rev-parse", "--is-inside-work-tree"]).as_deref() != Some("true") {
            return GitInfo::default();
        }
        let head = git(&["rev-parse", "--verify", "HEAD"]);
        let status = git(&["status", "--porcelain", "--untracked-files=normal"]);
        let dirty = head.is_none() || status.is_none_or(|s| !s.is_empty());
        let describe = head
            .as_ref()
            .and_then(|_| git(&["describe", "--always", "--dirty"]));
        let describe = match (describe, dirty) {
            (Some(d), true) if !d.ends_with("-dirty") => Some(format!("{d}-dirty")),
            (d, _) => d,
        };
        GitInfo {
            describe,
            commit: if dirty { None } else { head },
            dirty,
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
    pub files: Vec<InstanceFile>,
    pub units: Vec<String>,
    pub ssh_user: String,
}

/// Per-generation material appended at launch, outside the digest.
#[derive(Debug, Clone, Default)]
pub struct LaunchMaterial {
    pub generation: u64,
    /// The pinned host key: (OpenSSH private key text, public key line).
    pub host_key: Option<(String, String)>,
    /// respot's verification public key line (`ssh-ed25519 AAAA... comment`).
    pub verify_key: Option<String>,
}

/// The user-data exactly as a provider hands it to an instance.
#[derive(Debug, Clone)]
pub struct UserData {
    pub document: String,
    pub packed: Vec<u8>,
    pub gzipped: bool,
}

#[derive(Serialize)]
struct Manifest<'a> {
    deployment: &'a str,
    digest: &'a Digest,
    version: &'a str,
    commit: Option<&'a str>,
    generation: u64,
    user: &'a str,
    files: Vec<ManifestFile<'a>>,
    units: &'a [String],
    rendered_by: String,
}

#[derive(Serialize)]
struct ManifestFile<'a> {
    path: &'a str,
    mode: &'a str,
    sha256: &'a str,
}

#[derive(Serialize)]
struct TemplateFile<'a> {
    path: &'a str,
    mode: &'a str,
    content_b64: String,
    sha256: &'a str,
}

impl Blueprint {
    /// Renders the blueprint named by `config`.
    pub fn render(config: &Config) -> Result<Blueprint, TemplateError> {
        let template_path = config.template_path();
        let template_text =
            std::fs::read_to_string(&template_path).map_err(|source| TemplateError::Read {
                path: template_path.display().to_string(),
                source,
            })?;
        let mut files = collect_instance_files(&config.instance_dir())?;
        add_generated_files(&mut files, &config.verify.http)?;
        let units = units_to_start(&files);
        let authorized_keys = match config.authorized_key_path() {
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|source| TemplateError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_string)
                    .collect()
            }
            None => Vec::new(),
        };
        let template_files: Vec<TemplateFile> = files
            .iter()
            .map(|f| TemplateFile {
                path: &f.path,
                mode: &f.mode,
                content_b64: B64.encode(&f.content),
                sha256: &f.sha256,
            })
            .collect();
        let context = minijinja::context! {
            deployment => minijinja::context! { name => &config.deployment.name },
            ssh => minijinja::context! { user => &config.ssh.user, authorized_keys => authorized_keys },
            files => template_files,
            units => &units,
            respot => minijinja::context! {
                deploy_log => "/usr/lib/respot/deploy-log",
                manifest => MANIFEST_PATH,
                log_file => DEPLOY_LOG_PATH,
            },
        };
        let shown_path = template_path.display().to_string();
        let document = render_template(&template_text, &shown_path, context)?;
        check_blueprint_document(&document, &shown_path)?;
        let digest = Digest::of(document.as_bytes());
        let git = GitInfo::probe(&config.base_dir());
        let version = match &git.describe {
            Some(describe) => format!("{}@{}", digest.short(), describe),
            None => digest.short().to_string(),
        };
        Ok(Blueprint {
            deployment: config.deployment.name.clone(),
            document,
            digest,
            version,
            git,
            files,
            units,
            ssh_user: config.ssh.user.clone(),
        })
    }

    /// The manifest the instance stores at `MANIFEST_PATH`.
    pub fn manifest_json(&self, generation: u64) -> String {
        let manifest = Manifest {
            deployment: &self.deployment,
            digest: &self.digest,
            version: &self.version,
            commit: self.git.commit.as_deref(),
            generation,
            user: &self.ssh_user,
            files: self
                .files
                .iter()
                .map(|f| ManifestFile {
                    path: &f.path,
                    mode: &f.mode,
                    sha256: &f.sha256,
                })
                .collect(),
            units: &self.units,
            rendered_by: format!("respot {}", env!("CARGO_PKG_VERSION")),
        };
        serde_json::to_string_pretty(&manifest).expect("manifest is plain data and always serializes")
    }

    /// `sha256sum`-format lines for every file, which the inspector checks
    /// for drift without parsing JSON.
    pub fn sha256_list(&self) -> String {
        self.files
            .iter()
            .map(|f| format!("{}  {}\n", f.sha256, f.path))
            .collect()
    }

    /// The launch part: reserved top-level keys carrying per-generation data.
    /// Its `bootcmd` writes, before sshd starts: the manifest (JSON), the
    /// same file list in `sha256sum` format, and the unit list.
    pub fn launch_section(&self, launch: &LaunchMaterial) -> String {
        let manifest_b64 = B64.encode(self.manifest_json(launch.generation));
        let sums_b64 = B64.encode(self.sha256_list());
        let units_b64 = B64.encode(self.units.iter().map(|u| format!("{u}\n")).collect::<String>());
        let mut out = String::new();
        out.push_str("\n# ---- respot launch material: per generation, outside the digest ----\n");
        out.push_str("bootcmd:\n");
        out.push_str(&format!(
            "  - [sh, -c, 'umask 022 && mkdir -p /etc/respot /var/log/respot && printf %s \"$1\" | base64 -d > {MANIFEST_PATH} && printf %s \"$2\" | base64 -d > {SUMS_PATH} && printf %s \"$3\" | base64 -d > {UNITS_PATH} && printf \"%s bootcmd: manifest written (generation %s, digest %s)\\n\" \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\" \"$4\" \"$5\" >> {DEPLOY_LOG_PATH}', respot, \"{manifest_b64}\", \"{sums_b64}\", \"{units_b64}\", \"{}\", \"{}\"]\n",
            launch.generation,
            self.digest.short()
        ));
        if let Some(verify_key) = &launch.verify_key {
            let line = format!("restrict,command=\"{INSPECTOR_PATH}\" {}\n", verify_key.trim());
            out.push_str(&format!(
                "  - [sh, -c, 'umask 022 && mkdir -p {VERIFY_KEYS_DIR} && printf %s \"$1\" | base64 -d > {VERIFY_KEYS_DIR}/{user}', respot, \"{}\"]\n",
                B64.encode(line),
                user = self.ssh_user,
            ));
        }
        if let Some((private, public)) = &launch.host_key {
            out.push_str("ssh_deletekeys: true\n");
            out.push_str("ssh_genkeytypes: [ed25519]\n");
            out.push_str("ssh_keys:\n");
            out.push_str("  ed25519_private: |\n");
            for line in private.lines() {
                out.push_str("    ");
                out.push_str(line);
                out.push('\n');
            }
            out.push_str(&format!("  ed25519_public: {}\n", public.trim()));
        }
        out
    }

    /// Joins both parts and packs them to fit EC2's limit.
    pub fn user_data(&self, launch: &LaunchMaterial) -> Result<UserData, TemplateError> {
        let document = format!("{}{}", self.document, self.launch_section(launch));
        let (packed, gzipped) = pack(document.as_bytes());
        if packed.len() > USER_DATA_LIMIT {
            return Err(TemplateError::TooLarge {
                packed: packed.len(),
                largest: largest_files(&self.files, 5),
            });
        }
        Ok(UserData {
            document,
            packed,
            gzipped,
        })
    }
}

/// Raw when it fits, gzip otherwise. The gzip header carries no time or
/// name, so packing is as deterministic as the document.
pub fn pack(document: &[u8]) -> (Vec<u8>, bool) {
    if document.len() <= USER_DATA_LIMIT {
        return (document.to_vec(), false);
    }
    let mut encoder = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), flate2::Compression::best());
    encoder
        .write_all(document)
        .expect("writing into a Vec cannot fail");
    let packed = encoder
        .finish()
        .expect("finishing a gzip stream into a Vec cannot fail");
    (packed, true)
}

fn largest_files(files: &[InstanceFile], n: usize) -> String {
    let mut by_size: Vec<&InstanceFile> = files.iter().collect();
    by_size.sort_by(|a, b| {
        b.content
            .len()
            .cmp(&a.content.len())
            .then(a.source.cmp(&b.source))
    });
    by_size
        .iter()
        .take(n)
        .map(|f| format!("`{}` ({} bytes)", f.source, f.content.len()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn render_template(text: &str, path: &str, context: minijinja::Value) -> Result<String, TemplateError> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    let to_render_error = |err: minijinja::Error| {
        let mut message = err.to_string();
        if let Some(line) = err.line() {
            message = format!("line {line}: {message}");
        }
        TemplateError::Render {
            path: path.to_string(),
            message,
        }
    };
    env.add_template("cloud-init", text).map_err(to_render_error)?;
    let template = env.get_template("cloud-init").map_err(to_render_error)?;
    let mut document = template.render(context).map_err(to_render_error)?;
    if !document.ends_with('\n') {
        document.push('\n');
    }
    Ok(document)
}

fn check_blueprint_document(document: &str, path: &str) -> Result<(), TemplateError> {
    if document.lines().next().map(str::trim_end) != Some("#cloud-config") {
        return Err(TemplateError::Render {
            path: path.to_string(),
            message: "the rendered document must start with the line `#cloud-config`".to_string(),
        });
    }
    for line in document.lines() {
        for key in RESERVED_KEYS {
            let Some(rest) = line.strip_prefix(key) else {
                continue;
            };
            if rest.trim_start().starts_with(':') {
                return Err(TemplateError::ReservedKey {
                    path: path.to_string(),
                    key: key.to_string(),
                    reserved: RESERVED_KEYS.join(", "),
                });
            }
        }
    }
    Ok(())
}

/// Reads every file under `dir`, in byte order of their relative paths, so
/// directory listing order never shows in the render.
fn collect_instance_files(dir: &Path) -> Result<Vec<InstanceFile>, TemplateError> {
    let mut found: BTreeMap<String, PathBuf> = BTreeMap::new();
    walk(dir, dir, &mut found)?;
    let dir_name = dir
        .file_name()
        .map_or_else(|| "instance".to_string(), |n| n.to_string_lossy().to_string());
    let mut files = Vec::new();
    for (relative, full) in found {
        let shown = format!("{dir_name}/{relative}");
        let read_err = |source| TemplateError::Read {
            path: full.display().to_string(),
            source,
        };
        let content = std::fs::read(&full).map_err(read_err)?;
        let executable = std::fs::metadata(&full).map_err(read_err)?.permissions().mode() & 0o111 != 0;
        let (target, mode) =
            target_for(&relative, executable).map_err(|problem| TemplateError::InstanceFile {
                path: shown.clone(),
                problem,
            })?;
        files.push(InstanceFile {
            sha256: hex::encode(Sha256::digest(&content)),
            path: target,
            source: shown,
            mode: mode.to_string(),
            content,
        });
    }
    Ok(files)
}

fn walk(root: &Path, dir: &Path, found: &mut BTreeMap<String, PathBuf>) -> Result<(), TemplateError> {
    let read_err = |source| TemplateError::Read {
        path: dir.display().to_string(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        let path = entry.path();
        let file_type = entry.file_type().map_err(read_err)?;
        let relative = path
            .strip_prefix(root)
            .expect("walked paths are under the root")
            .to_string_lossy()
            .replace('\\', "/");
        if file_type.is_symlink() {
            return Err(TemplateError::InstanceFile {
                path: path.display().to_string(),
                problem: "symbolic links are not allowed in the instance directory; copy the file instead"
                    .to_string(),
            });
        } else if file_type.is_dir() {
            walk(root, &path, found)?;
        } else if entry.file_name() != ".gitkeep" {
            found.insert(relative, path);
        }
    }
    Ok(())
}

/// The mapping convention (documented in the README):
/// `units/<name>.<unit suffix>` → `/etc/systemd/system/<name>`, mode 0644;
/// `files/<path>` → `/<path>`, mode 0755 when executable, else 0644.
fn target_for(relative: &str, executable: bool) -> Result<(String, &'static str), String> {
    if let Some(name) = relative.strip_prefix("units/") {
        let suffix = name.rsplit_once('.').map(|(_, s)| s).unwrap_or("");
        if name.contains('/') || !UNIT_SUFFIXES.contains(&suffix) {
            return Err(format!(
                "files under `units/` must be systemd units directly in it, ending in .{}",
                UNIT_SUFFIXES.join(", .")
            ));
        }
        return Ok((format!("/etc/systemd/system/{name}"), "0644"));
    }
    if let Some(path) = relative.strip_prefix("files/") {
        let safe = path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-' | b'@' | b'+'));
        if !safe || path.split('/').any(|seg| seg == "..") {
            return Err("file paths may use only [A-Za-z0-9/._@+-]".to_string());
        }
        return Ok((format!("/{path}"), if executable { "0755" } else { "0644" }));
    }
    Err("expected under `units/` (systemd units) or `files/` (files by absolute target path)".to_string())
}

/// Adds respot's framework files and the generated probe list. A blueprint
/// copy of a framework file must be identical to respot's.
fn add_generated_files(files: &mut Vec<InstanceFile>, probes: &[HttpProbe]) -> Result<(), TemplateError> {
    let mut generated: Vec<(String, &'static str, Vec<u8>)> = FRAMEWORK_FILES
        .iter()
        .map(|(path, content)| {
            (
                path.to_string(),
                framework_mode(path),
                content.as_bytes().to_vec(),
            )
        })
        .collect();
    // One probe per line, `http PORT PATH STATUS`, so the POSIX-shell
    // inspector reads it without a JSON parser. Config validation keeps
    // every field free of spaces and shell metacharacters.
    let probe_lines: String = probes
        .iter()
        .map(|p| format!("http {} {} {}\n", p.port, p.path, p.expect_status))
        .collect();
    generated.push((PROBES_PATH.to_string(), "0644", probe_lines.into_bytes()));
    for (path, mode, content) in generated {
        let sha256 = hex::encode(Sha256::digest(&content));
        match files.iter().find(|f| f.path == path) {
            Some(existing) if existing.sha256 == sha256 && existing.mode == mode => {}
            Some(existing) => {
                return Err(TemplateError::InstanceFile {
                    path: existing.source.clone(),
                    problem: format!(
                        "`{path}` belongs to respot and must be identical to the copy respot ships \
                         (mode {mode}, sha256 {sha256}); delete the file or restore it with `respot init`"
                    ),
                });
            }
            None => files.push(InstanceFile {
                path,
                source: "respot".to_string(),
                mode: mode.to_string(),
                sha256,
                content,
            }),
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(())
}

fn framework_mode(path: &str) -> &'static str {
    if path.starts_with("/usr/lib/respot/") {
        "0755"
    } else {
        "0644"
    }
}

/// Every unit is enabled and started, except a service activated by a
/// timer, socket or path unit of the same name, and template units.
fn units_to_start(files: &[InstanceFile]) -> Vec<String> {
    let names: Vec<&str> = files
        .iter()
        .filter_map(|f| f.path.strip_prefix("/etc/systemd/system/"))
        .filter(|name| !name.contains('/'))
        .collect();
    names
        .iter()
        .filter(|name| !name.contains("@."))
        .filter(|name| match name.strip_suffix(".service") {
            Some(stem) => !["timer", "socket", "path"]
                .iter()
                .any(|activator| names.contains(&format!("{stem}.{activator}").as_str())),
            None => true,
        })
        .map(|name| name.to_string())
        .collect()
}

/// Runs the real `cloud-init schema` on `document`. `Ok(None)` means
/// cloud-init is not installed.
pub fn schema_check(document: &str) -> Result<Option<String>, TemplateError> {
    let dir = std::env::temp_dir().join(format!("respot-schema-{}", std::process::id()));
    let io_err = |source| TemplateError::Read {
        path: dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(io_err)?;
    let file = dir.join("user-data.yaml");
    std::fs::write(&file, document).map_err(io_err)?;
    let result = Command::new("cloud-init")
        .args(["schema", "--config-file"])
        .arg(&file)
        .output();
    // Best effort: a leftover temp file is harmless.
    let _ = std::fs::remove_dir_all(&dir);
    let output = match result {
        Ok(output) => output,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(io_err(source)),
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
    .trim()
    .to_string();
    if output.status.success() {
        Ok(Some(text))
    } else {
        Err(TemplateError::Schema {
            path: "rendered user-data".to_string(),
            output: text,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_convention() {
        type Case = (&'static str, bool, Result<(&'static str, &'static str), ()>);
        let cases: &[Case] = &[
            (
                "units/a.service",
                false,
                Ok(("/etc/systemd/system/a.service", "0644")),
            ),
            ("units/a.timer", true, Ok(("/etc/systemd/system/a.timer", "0644"))),
            ("units/a.txt", false, Err(())),
            ("units/sub/a.service", false, Err(())),
            ("files/opt/x/run.sh", true, Ok(("/opt/x/run.sh", "0755"))),
            ("files/etc/x.conf", false, Ok(("/etc/x.conf", "0644"))),
            ("files/etc/x y", false, Err(())),
            ("other/x", false, Err(())),
        ];
        for (input, exec, want) in cases {
            let got = target_for(input, *exec);
            match want {
                Ok((path, mode)) => assert_eq!(got, Ok((path.to_string(), *mode)), "case {input}"),
                Err(()) => assert!(got.is_err(), "case {input} should fail, got {got:?}"),
            }
        }
    }

    #[test]
    fn activated_services_are_not_started_directly() {
        let file = |name: &str| InstanceFile {
            path: format!("/etc/systemd/system/{name}"),
            source: String::new(),
            mode: "0644".into(),
            sha256: String::new(),
            content: Vec::new(),
        };
        let files = vec![
            file("a.service"),
            file("b.service"),
            file("b.timer"),
            file("c@.service"),
        ];
        assert_eq!(units_to_start(&files), vec!["a.service", "b.timer"]);
    }

    #[test]
    fn reserved_keys_are_refused() {
        let err = check_blueprint_document("#cloud-config\nbootcmd:\n  - x\n", "t.yaml").unwrap_err();
        assert!(err.to_string().contains("`bootcmd`"), "{err}");
        check_blueprint_document("#cloud-config\nruncmd:\n  - [echo, bootcmd:]\n", "t.yaml").unwrap();
        assert!(check_blueprint_document("write_files: []\n", "t.yaml").is_err());
    }

    #[test]
    fn packing_is_raw_below_the_limit_and_gzip_above() {
        let small = b"#cloud-config\n".to_vec();
        assert_eq!(pack(&small), (small.clone(), false));
        let big: Vec<u8> = (0..40_000).map(|i| b"abcdefgh\n"[i % 9]).collect();
        let (packed, gzipped) = pack(&big);
        assert!(gzipped);
        assert_eq!(&packed[..2], &[0x1f, 0x8b]);
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&packed[..]), &mut back).unwrap();
        assert_eq!(back, big);
        assert_eq!(pack(&big).0, packed, "packing is deterministic");
    }
}
