//! Where a generation comes from, as git tells it: the blueprint at a
//! commit (`deploy --ref`), the commit's signature (`[deployment]
//! require_signed`), and the history note on the deployed commit.
//!
//! Every git command runs with the repository's hooks and fsmonitor turned
//! off: respot reads a repository and adds notes to it, and nothing in the
//! repository's own config may make that run a program.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::exit::ExitStatus;
use crate::template::GitInfo;

/// The notes ref history records are written under (`git notes --ref respot`).
pub const NOTES_REF: &str = "respot";

#[derive(Debug, thiserror::Error)]
pub enum ProvenanceError {
    #[error("{purpose} needs `git`, which is not installed; install it with `apt install git`")]
    GitMissing { purpose: &'static str },
    #[error(
        "`{}` is not in a git repository with commits, so {purpose}; \
         run `git init` and commit the blueprint",
        dir.display()
    )]
    NotARepository { dir: PathBuf, purpose: &'static str },
    #[error("`{reference}` is not a commit of the blueprint's repository: {detail}")]
    UnknownRef { reference: String, detail: String },
    #[error("cannot read the blueprint at {commit}: {detail}")]
    Archive { commit: String, detail: String },
    #[error("commit {commit} has no `{path}`; `--ref` deploys a blueprint that existed at that commit")]
    NoConfigAtRef { commit: String, path: String },
    #[error(
        "the blueprint at {commit} is deployment `{theirs}`, not `{ours}`; \
         `--ref` deploys an older version of this deployment only"
    )]
    OtherDeployment {
        commit: String,
        theirs: String,
        ours: String,
    },
    #[error(
        "the blueprint at {commit} renders digest {rendered}, but {commit} was first deployed \
         with digest {recorded} ({when}); refusing to ship a different render under the same \
         commit (did respot's version or a file outside git change?)"
    )]
    DigestMismatch {
        commit: String,
        recorded: String,
        rendered: String,
        when: String,
    },
    #[error(
        "`[deployment] require_signed`: the blueprint's git tree is dirty; \
         only a signed commit ships: commit (signed) and retry"
    )]
    DirtyUnsigned,
    #[error(
        "`[deployment] require_signed`: `git verify-commit {commit}` does not accept it: {detail}; \
         sign the commit (`git commit -S`) with a key git trusts \
         (for SSH keys, list it in `gpg.ssh.allowedSignersFile`)"
    )]
    Unsigned { commit: String, detail: String },
}

impl ProvenanceError {
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            ProvenanceError::GitMissing { .. } => ExitStatus::Provider,
            ProvenanceError::NotARepository { .. }
            | ProvenanceError::UnknownRef { .. }
            | ProvenanceError::NoConfigAtRef { .. }
            | ProvenanceError::OtherDeployment { .. }
            | ProvenanceError::DirtyUnsigned
            | ProvenanceError::Unsigned { .. } => ExitStatus::Usage,
            ProvenanceError::Archive { .. } | ProvenanceError::DigestMismatch { .. } => ExitStatus::Failure,
        }
    }
}

/// `git -C dir <args>`, hooks and fsmonitor off, no optional locks.
fn git(dir: &Path, args: &[&str], purpose: &'static str) -> Result<Output, ProvenanceError> {
    Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "core.fsmonitor=false", "-c", "core.hooksPath=/dev/null"])
        .env("GIT_OPTIONAL_LOCKS", "0")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|err| match err.kind() {
            std::io::ErrorKind::NotFound => ProvenanceError::GitMissing { purpose },
            _ => ProvenanceError::Archive {
                commit: args.last().copied().unwrap_or_default().to_string(),
                detail: format!("cannot run git: {err}"),
            },
        })
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The last lines of git's complaint, on one line.
fn complaint(out: &Output) -> String {
    let text = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let tail = &lines[lines.len().saturating_sub(3)..];
    if tail.is_empty() {
        format!("git exited with {}", out.status)
    } else {
        tail.join("; ")
    }
}

/// The full commit id `reference` names in the repository holding `dir`.
pub fn resolve(dir: &Path, reference: &str) -> Result<String, ProvenanceError> {
    const PURPOSE: &str = "`deploy --ref`";
    if reference.starts_with('-') || reference.is_empty() {
        return Err(ProvenanceError::UnknownRef {
            reference: reference.to_string(),
            detail: "a git ref cannot start with `-` or be empty".to_string(),
        });
    }
    let inside = git(dir, &["rev-parse", "--is-inside-work-tree"], PURPOSE)?;
    if stdout(&inside) != "true" {
        return Err(ProvenanceError::NotARepository {
            dir: dir.to_path_buf(),
            purpose: "`deploy --ref` has no commits to deploy",
        });
    }
    let spec = format!("{reference}^{{commit}}");
    let out = git(
        dir,
        &["rev-parse", "--verify", "--quiet", "--end-of-options", &spec],
        PURPOSE,
    )?;
    if !out.status.success() {
        return Err(ProvenanceError::UnknownRef {
            reference: reference.to_string(),
            detail: "git knows no such commit, branch or tag".to_string(),
        });
    }
    Ok(stdout(&out))
}

/// The blueprint as it was at one commit, in a temporary directory that
/// lives as long as this value.
#[derive(Debug)]
pub struct Checkout {
    _dir: tempfile::TempDir,
    /// The settings file inside the checkout.
    pub config: PathBuf,
    /// What git says of the commit: clean, its id and `git describe`.
    pub git: GitInfo,
    /// The repository the commit came from (its notes and signatures).
    pub repo: PathBuf,
    /// The working tree's `require_signed`, which holds whatever the
    /// commit's own settings say.
    pub require_signed: bool,
}

/// Extracts `reference`'s tree (`git archive`) of the repository holding
/// `config` into a temporary directory: the blueprint folder sits at the
/// same place relative to the repository's top as `config` does.
pub fn checkout(config: &Path, reference: &str) -> Result<Checkout, ProvenanceError> {
    const PURPOSE: &str = "`deploy --ref`";
    let base = match config.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let commit = resolve(&base, reference)?;
    let prefix = stdout(&git(&base, &["rev-parse", "--show-prefix"], PURPOSE)?);
    // Run from a subdirectory, `git archive` keeps only that subtree: ask
    // the top for the whole commit.
    let top = PathBuf::from(stdout(&git(&base, &["rev-parse", "--show-toplevel"], PURPOSE)?));
    let archive = git(&top, &["archive", "--format=tar", &commit], PURPOSE)?;
    if !archive.status.success() {
        return Err(ProvenanceError::Archive {
            commit,
            detail: complaint(&archive),
        });
    }
    let dir = tempfile::Builder::new()
        .prefix("respot-ref-")
        .tempdir()
        .map_err(|err| ProvenanceError::Archive {
            commit: commit.clone(),
            detail: format!("cannot create a temporary directory: {err}"),
        })?;
    tar::Archive::new(archive.stdout.as_slice())
        .unpack(dir.path())
        .map_err(|err| ProvenanceError::Archive {
            commit: commit.clone(),
            detail: format!("cannot unpack `git archive`: {err}"),
        })?;
    let file_name = config.file_name().map(PathBuf::from).unwrap_or_default();
    let inside = dir.path().join(&prefix).join(&file_name);
    if !inside.is_file() {
        return Err(ProvenanceError::NoConfigAtRef {
            commit,
            path: Path::new(&prefix).join(&file_name).display().to_string(),
        });
    }
    let describe = git(&base, &["describe", "--always", &commit], PURPOSE)
        .ok()
        .filter(|o| o.status.success())
        .map(|o| stdout(&o));
    Ok(Checkout {
        _dir: dir,
        config: inside,
        git: GitInfo {
            describe,
            commit: Some(commit),
            dirty: false,
            ignored: Vec::new(),
            signer: None,
        },
        repo: base,
        require_signed: false,
    })
}

/// `[deployment] require_signed`: the commit `git` names must be clean and
/// accepted by `git verify-commit`. Returns the signing key's fingerprint.
pub fn require_signed(repo: &Path, git_info: &GitInfo) -> Result<String, ProvenanceError> {
    const PURPOSE: &str = "`[deployment] require_signed`";
    if git_info.dirty {
        return Err(ProvenanceError::DirtyUnsigned);
    }
    let Some(commit) = &git_info.commit else {
        return Err(ProvenanceError::NotARepository {
            dir: repo.to_path_buf(),
            purpose: "`[deployment] require_signed` has no signed commit to check",
        });
    };
    let verified = git(repo, &["verify-commit", commit], PURPOSE)?;
    if !verified.status.success() {
        return Err(ProvenanceError::Unsigned {
            commit: commit.clone(),
            detail: complaint(&verified),
        });
    }
    let keys = git(repo, &["log", "-1", "--format=%GF%n%GK", commit], PURPOSE)?;
    let fingerprint = stdout(&keys)
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string);
    fingerprint.ok_or_else(|| ProvenanceError::Unsigned {
        commit: commit.clone(),
        detail: "git accepted the signature but names no key".to_string(),
    })
}

/// Appends `text` to the note of `commit` under `refs/notes/respot`. When
/// git has no identity configured here, the note is written as
/// `respot <respot@localhost>` rather than failing.
pub fn append_note(repo: &Path, commit: &str, text: &str) -> Result<(), String> {
    const PURPOSE: &str = "the history note";
    let configured = |key: &str, variable: &str| -> Result<bool, String> {
        if std::env::var_os(variable).is_some_and(|v| !v.is_empty()) {
            return Ok(true);
        }
        let out = git(repo, &["config", "--get", key], PURPOSE).map_err(|e| e.to_string())?;
        Ok(out.status.success() && !stdout(&out).is_empty())
    };
    let has_identity =
        configured("user.name", "GIT_COMMITTER_NAME")? && configured("user.email", "GIT_COMMITTER_EMAIL")?;
    let mut command = Command::new("git");
    command
        .arg("-C")
        .arg(repo)
        .args(["-c", "core.fsmonitor=false", "-c", "core.hooksPath=/dev/null"])
        .args(["notes", "--ref", NOTES_REF, "append", "-m", text, commit])
        .stdin(Stdio::null());
    if !has_identity {
        for (key, value) in [
            ("GIT_AUTHOR_NAME", "respot"),
            ("GIT_AUTHOR_EMAIL", "respot@localhost"),
            ("GIT_COMMITTER_NAME", "respot"),
            ("GIT_COMMITTER_EMAIL", "respot@localhost"),
        ] {
            command.env(key, value);
        }
    }
    let out = command.output().map_err(|err| format!("cannot run git: {err}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(complaint(&out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "-c",
                "commit.gpgsign=false",
            ])
            .args(args)
            .output()
            .expect("git runs");
        assert!(out.status.success(), "git {args:?}: {}", complaint(&out));
        stdout(&out)
    }

    /// A repository whose blueprint sits in `bp/`, with two commits.
    fn repo() -> (tempfile::TempDir, String, String) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        sh(root, &["init", "-q"]);
        std::fs::create_dir_all(root.join("bp")).unwrap();
        std::fs::write(root.join("bp/respot.toml"), "one").unwrap();
        sh(root, &["add", "."]);
        sh(root, &["commit", "-qm", "one"]);
        let first = sh(root, &["rev-parse", "HEAD"]);
        std::fs::write(root.join("bp/respot.toml"), "two").unwrap();
        sh(root, &["commit", "-qam", "two"]);
        let second = sh(root, &["rev-parse", "HEAD"]);
        (dir, first, second)
    }

    #[test]
    fn checkout_extracts_the_blueprint_as_it_was() {
        let (dir, first, _) = repo();
        let config = dir.path().join("bp/respot.toml");
        let at = checkout(&config, "HEAD~1").unwrap();
        assert_eq!(std::fs::read_to_string(&at.config).unwrap(), "one");
        assert_eq!(at.git.commit.as_deref(), Some(first.as_str()));
        assert!(!at.git.dirty && at.git.describe.is_some());
        let err = checkout(&config, "no-such-branch").unwrap_err();
        assert!(matches!(err, ProvenanceError::UnknownRef { .. }), "{err}");
        let err = checkout(&config, "--output=/tmp/x").unwrap_err();
        assert!(matches!(err, ProvenanceError::UnknownRef { .. }), "{err}");
        let err = checkout(&dir.path().join("bp/other.toml"), "HEAD").unwrap_err();
        assert!(err.to_string().contains("bp/other.toml"), "{err}");
    }

    #[test]
    fn unsigned_and_dirty_commits_are_refused_and_notes_append() {
        let (dir, first, second) = repo();
        let clean = GitInfo {
            describe: None,
            commit: Some(second.clone()),
            dirty: false,
            ignored: Vec::new(),
            signer: None,
        };
        let err = require_signed(dir.path(), &clean).unwrap_err();
        assert!(matches!(err, ProvenanceError::Unsigned { .. }), "{err}");
        assert_eq!(err.exit_status(), ExitStatus::Usage);
        let dirty = GitInfo { dirty: true, ..clean };
        assert!(matches!(
            require_signed(dir.path(), &dirty),
            Err(ProvenanceError::DirtyUnsigned)
        ));
        append_note(dir.path(), &first, "{\"a\":1}").unwrap();
        append_note(dir.path(), &first, "{\"a\":2}").unwrap();
        let note = sh(dir.path(), &["notes", "--ref", NOTES_REF, "show", &first]);
        assert_eq!(note, "{\"a\":1}\n\n{\"a\":2}");
    }
}
