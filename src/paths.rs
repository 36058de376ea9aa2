//! Where respot keeps things on the operator's machine.
//!
//! The only code that reads `HOME` and the `XDG_*` variables. Key material
//! and local VM state have separate roots, so no deployment name (not even
//! `local` or `keys`) can make one land inside the other:
//!
//! - keys:  `$XDG_STATE_HOME/respot/keys/<deployment>/` (fallback
//!   `~/.local/state`)
//! - VMs:   `$XDG_STATE_HOME/respot/local/<deployment>/`
//! - history: `$XDG_STATE_HOME/respot/history/<deployment>.jsonl`
//! - door:  `$XDG_STATE_HOME/respot/door/<deployment>/` (HAProxy)
//! - heal:  `$XDG_STATE_HOME/respot/heal/<deployment>/` (the bad pools)
//! - image: `$XDG_CACHE_HOME/respot/images/debian-12/` (fallback `~/.cache`)
//!
//! Nothing here creates a directory; callers that write create what they
//! need, so read-only commands (`list`, `plan`) leave the disk untouched.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The variables respot's paths depend on, read once.
#[derive(Debug, Clone, Default)]
pub struct Paths {
    home: Option<PathBuf>,
    state_home: Option<PathBuf>,
    cache_home: Option<PathBuf>,
}

/// Why a path cannot be resolved.
#[derive(Debug, thiserror::Error)]
#[error(
    "neither {variable} nor HOME is set, so respot does not know where to keep {what}; \
     set HOME (or {variable})"
)]
pub struct PathsError {
    pub variable: &'static str,
    pub what: &'static str,
}

impl Paths {
    /// Reads `HOME`, `XDG_STATE_HOME` and `XDG_CACHE_HOME` from the process
    /// environment. Empty values count as unset (XDG base directory spec).
    pub fn from_env() -> Paths {
        Paths::from_vars(|name| std::env::var_os(name))
    }

    /// The same, from any lookup (tests).
    pub fn from_vars(var: impl Fn(&str) -> Option<OsString>) -> Paths {
        let path = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        Paths {
            home: path("HOME"),
            state_home: path("XDG_STATE_HOME"),
            cache_home: path("XDG_CACHE_HOME"),
        }
    }

    fn state_root(&self, what: &'static str) -> Result<PathBuf, PathsError> {
        match (&self.state_home, &self.home) {
            (Some(state), _) => Ok(state.join("respot")),
            (None, Some(home)) => Ok(home.join(".local/state/respot")),
            (None, None) => Err(PathsError {
                variable: "XDG_STATE_HOME",
                what,
            }),
        }
    }

    /// The key store of one deployment.
    pub fn keys_dir(&self, deployment: &str) -> Result<PathBuf, PathsError> {
        Ok(self.state_root("SSH keys")?.join("keys").join(deployment))
    }

    /// Where key stores lived before they had a root of their own
    /// (`respot/<deployment>/`); `KeyStore::open` moves them once. `None`
    /// where that place is another root (a deployment named `local` shared
    /// its directory with the VMs, which must never move).
    pub fn legacy_keys_dir(&self, deployment: &str) -> Option<PathBuf> {
        let root = self.state_root("SSH keys").ok()?;
        let legacy = root.join(deployment);
        let other_roots = [
            self.vms_root().ok()?,
            root.join("keys"),
            root.join("history"),
            root.join("door"),
            root.join("heal"),
        ];
        (!other_roots.contains(&legacy)).then_some(legacy)
    }

    /// The root of the local provider's VM state.
    pub fn vms_root(&self) -> Result<PathBuf, PathsError> {
        Ok(self.state_root("local VM state")?.join("local"))
    }

    /// The history of one deployment: one JSON line per create, deploy,
    /// rollback and destroy (`crate::history`).
    pub fn history_file(&self, deployment: &str) -> Result<PathBuf, PathsError> {
        Ok(self
            .state_root("the deployment history")?
            .join("history")
            .join(format!("{deployment}.jsonl")))
    }

    /// The local front door (HAProxy) of a deployment: its config, PID and
    /// admin socket. Not under `vms_root`, whose entries are all VMs.
    pub fn door_dir(&self, deployment: &str) -> Result<PathBuf, PathsError> {
        Ok(self
            .state_root("the local front door")?
            .join("door")
            .join(deployment))
    }

    /// What `heal` remembers of one deployment between runs (the pools it
    /// avoids).
    pub fn heal_dir(&self, deployment: &str) -> Result<PathBuf, PathsError> {
        Ok(self.state_root("heal state")?.join("heal").join(deployment))
    }

    /// The default local VM image, built by `scripts/build-image`.
    pub fn image_dir(&self) -> Result<PathBuf, PathsError> {
        let cache = match (&self.cache_home, &self.home) {
            (Some(cache), _) => cache.clone(),
            (None, Some(home)) => home.join(".cache"),
            (None, None) => {
                return Err(PathsError {
                    variable: "XDG_CACHE_HOME",
                    what: "the local VM image",
                });
            }
        };
        Ok(cache.join("respot/images/debian-12"))
    }

    /// `~/rest` → `$HOME/rest`; any other path unchanged.
    pub fn expand_tilde(&self, raw: &str) -> PathBuf {
        match (raw.strip_prefix("~/"), &self.home) {
            (Some(rest), Some(home)) => home.join(rest),
            _ => PathBuf::from(raw),
        }
    }
}

/// Writes `content` to `path`, readable and writable by this user only
/// (0600): key material, seeds that carry a host private key.
pub fn write_private(path: &Path, content: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(content)
}

/// Creates `dir` and any missing parent with mode 0700, and makes `dir`
/// itself 0700 if it existed.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// `raw` relative to `base` unless absolute; `~/` expands to `HOME`.
pub fn resolve(base: &Path, raw: &str) -> PathBuf {
    let expanded = Paths::from_env().expand_tilde(raw);
    if expanded.is_absolute() {
        expanded
    } else {
        base.join(expanded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(vars: &[(&str, &str)]) -> Paths {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Paths::from_vars(move |name| {
            vars.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| OsString::from(v))
        })
    }

    #[test]
    fn keys_and_vms_never_share_a_directory() {
        let p = paths(&[("HOME", "/h")]);
        for name in ["local", "keys", "hello"] {
            let keys = p.keys_dir(name).unwrap();
            let vms = p.vms_root().unwrap();
            assert!(!keys.starts_with(&vms), "{name}: {keys:?} inside {vms:?}");
            assert!(!vms.starts_with(&keys), "{name}: {vms:?} inside {keys:?}");
        }
        assert_eq!(
            p.keys_dir("a").unwrap(),
            PathBuf::from("/h/.local/state/respot/keys/a")
        );
        assert_eq!(
            p.vms_root().unwrap(),
            PathBuf::from("/h/.local/state/respot/local")
        );
    }

    #[test]
    fn no_legacy_key_store_is_another_root() {
        let p = paths(&[("HOME", "/h")]);
        assert_eq!(p.legacy_keys_dir("local"), None, "the VM root must never move");
        assert_eq!(p.legacy_keys_dir("keys"), None);
        assert_eq!(p.legacy_keys_dir("heal"), None, "heal's memory must never move");
        assert_eq!(
            p.legacy_keys_dir("history"),
            None,
            "the history root must never move"
        );
        assert_eq!(
            p.legacy_keys_dir("web"),
            Some(PathBuf::from("/h/.local/state/respot/web"))
        );
    }

    #[test]
    fn xdg_wins_and_empty_counts_as_unset() {
        type Vars<'a> = &'a [(&'a str, &'a str)];
        let cases: &[(&str, Vars, &str)] = &[
            (
                "xdg",
                &[("HOME", "/h"), ("XDG_CACHE_HOME", "/c")],
                "/c/respot/images/debian-12",
            ),
            (
                "empty xdg",
                &[("HOME", "/h"), ("XDG_CACHE_HOME", "")],
                "/h/.cache/respot/images/debian-12",
            ),
        ];
        for (name, vars, want) in cases {
            assert_eq!(paths(vars).image_dir().unwrap(), PathBuf::from(want), "{name}");
        }
        let err = paths(&[]).keys_dir("a").unwrap_err();
        assert!(err.to_string().contains("set HOME"), "{err}");
    }

    #[test]
    fn tilde_expands_only_at_the_start() {
        let p = paths(&[("HOME", "/h")]);
        assert_eq!(p.expand_tilde("~/k.pub"), PathBuf::from("/h/k.pub"));
        assert_eq!(p.expand_tilde("a/~/b"), PathBuf::from("a/~/b"));
        assert_eq!(paths(&[]).expand_tilde("~/k"), PathBuf::from("~/k"));
    }
}
