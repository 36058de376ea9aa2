//! The load step: everything a render reads, read once from disk and git
//! into a [`Source`]. All of rendering's I/O is here; `render` is pure.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

use super::{Inputs, TemplateError};
use crate::config::{Config, HttpProbe, Transport};

/// A blueprint as read from disk: the config values the template needs, the
/// template text, the instance files and what git says. Rendering the same
/// `Source` always gives the same bytes.
#[derive(Debug, Clone)]
pub struct Source {
    pub deployment: String,
    pub ssh_user: String,
    /// The person's own login keys from `ssh.authorized_key` (may be empty).
    pub authorized_keys: Vec<String>,
    /// `[verify]`'s HTTP probes, shipped for the inspector.
    pub probes: Vec<HttpProbe>,
    /// The template's path, as messages show it.
    pub template_path: String,
    pub template_text: String,
    /// The instance directory's name, as messages show it (`instance`).
    pub instance_dir: String,
    /// Every file under the instance directory, in any order.
    pub files: Vec<SourceFile>,
    pub git: GitInfo,
    /// `[deployment] transport`.
    pub transport: Transport,
    /// Owners, modes, directories, secrets, packages, unit order.
    pub inputs: Inputs,
}

/// One file of the instance directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// Relative to the instance directory, `/`-separated:
    /// `units/a.service`, `files/opt/a/run.sh`.
    pub relative: String,
    /// Whether the file is executable in the folder (git keeps the bit).
    pub executable: bool,
    pub content: Vec<u8>,
}

/// Reads the blueprint named by `config`: the template, every instance file,
/// the authorized keys file and git's view of the folder.
pub fn load(config: &Config) -> Result<Source, TemplateError> {
    let template_path = config.template_path();
    let template_text = std::fs::read_to_string(&template_path).map_err(|source| TemplateError::Read {
        path: template_path.display().to_string(),
        source,
    })?;
    let instance_dir = config.instance_dir();
    let files = read_instance_files(&instance_dir)?;
    let authorized_keys = match config.authorized_key_path() {
        Some(path) => read_authorized_keys(&path)?,
        None => Vec::new(),
    };
    Ok(Source {
        deployment: config.deployment.name.clone(),
        ssh_user: config.ssh.user.clone(),
        authorized_keys,
        probes: config.verify.http.clone(),
        template_path: template_path.display().to_string(),
        template_text,
        instance_dir: instance_dir
            .file_name()
            .map_or_else(|| "instance".to_string(), |n| n.to_string_lossy().to_string()),
        files,
        git: GitInfo::probe(&config.base_dir()).with_ignored(&instance_dir),
        transport: config.deployment.transport,
        inputs: Inputs::from_config(config),
    })
}

fn read_authorized_keys(path: &Path) -> Result<Vec<String>, TemplateError> {
    let text = std::fs::read_to_string(path).map_err(|source| TemplateError::Read {
        path: path.display().to_string(),
        source,
    })?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect())
}

/// Reads every file under `dir`, in byte order of their relative paths.
fn read_instance_files(dir: &Path) -> Result<Vec<SourceFile>, TemplateError> {
    let mut found: BTreeMap<String, PathBuf> = BTreeMap::new();
    walk(dir, dir, &mut found)?;
    let mut files = Vec::new();
    for (relative, full) in found {
        let read_err = |source| TemplateError::Read {
            path: full.display().to_string(),
            source,
        };
        let content = std::fs::read(&full).map_err(read_err)?;
        let executable = std::fs::metadata(&full).map_err(read_err)?.permissions().mode() & 0o111 != 0;
        files.push(SourceFile {
            relative,
            executable,
            content,
        });
    }
    Ok(files)
}

/// Walks `dir`, skipping `.gitkeep` files and the instance directory's own
/// `.gitignore` (git's business, not the instance's).
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
        } else if entry.file_name() != ".gitkeep" && !(dir == root && entry.file_name() == ".gitignore") {
            found.insert(relative, path);
        }
    }
    Ok(())
}

/// What git says about the blueprint folder.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GitInfo {
    /// `git describe --always --dirty`, when inside a repository with commits.
    pub describe: Option<String>,
    /// HEAD, recorded only when the tree is clean.
    pub commit: Option<String>,
    /// True when inside a repository and anything is modified or untracked,
    /// or a file of the instance directory is ignored by git.
    pub dirty: bool,
    /// Files of the instance directory that git ignores: respot ships them,
    /// but no commit holds them, so they make the tree dirty.
    pub ignored: Vec<String>,
    /// The signing key's fingerprint, once `[deployment] require_signed`
    /// has checked the commit (`crate::provenance`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
}

/// Runs a read-only git command in `dir`; `None` when it fails.
fn git_in(dir: &Path, args: &[&str]) -> Option<String> {
    // A repository's own config may name programs git runs (an fsmonitor
    // hook, hooks); respot only reads, so it turns them off, and asks git
    // not to refresh the index while reading.
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "core.fsmonitor=false", "-c", "core.hooksPath=/dev/null"])
        .env("GIT_OPTIONAL_LOCKS", "0")
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl GitInfo {
    /// Marks the tree dirty when git ignores files of `instance_dir`: they
    /// are shipped and change the digest, but no commit has them, so the
    /// version must not claim a commit.
    pub fn with_ignored(mut self, instance_dir: &Path) -> GitInfo {
        if self.describe.is_none() && !self.dirty {
            return self;
        }
        let listed = git_in(
            instance_dir,
            &[
                "ls-files",
                "--others",
                "--ignored",
                "--exclude-standard",
                "--full-name",
                ".",
            ],
        );
        self.ignored = listed
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .filter(|path| !path.ends_with("/.gitkeep") && !path.ends_with(".gitignore"))
            .collect();
        if !self.ignored.is_empty() {
            self.dirty = true;
            self.commit = None;
            if let Some(describe) = &self.describe
                && !describe.ends_with("-dirty")
            {
                self.describe = Some(format!("{describe}-dirty"));
            }
        }
        self
    }

    pub fn probe(dir: &Path) -> GitInfo {
        let git = |args: &[&str]| git_in(dir, args);
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
            ignored: Vec::new(),
            signer: None,
        }
    }
}
