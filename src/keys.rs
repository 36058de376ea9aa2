//! respot's SSH key material for one deployment, kept on the operator's
//! machine under `paths::Paths::keys_dir` (`$XDG_STATE_HOME/respot/keys/<deployment>/`,
//! fallback `$HOME/.local/state/respot/keys/<deployment>/`):
//!
//! - `verify_ed25519` (+ `.pub`): the verification key. Generated once per
//!   deployment; only its public half travels (in user-data, as a
//!   `restrict,command=` forced-command key). The private half never leaves.
//! - `host_ed25519_g<N>` (+ `.pub`): the SSH host key of generation N,
//!   injected through cloud-init so it is known before the first connection.
//! - `known_hosts`: respot's own, never the user's. Entries are per
//!   `[host]:port`, written by `pin` (or by ssh itself under
//!   record-on-first-use) and removed by `forget` when instances go away.
//! - `ssh_config`: options every respot ssh process uses.
//!
//! Keys are made by the system `ssh-keygen`, so no crypto lives here. This
//! module never connects anywhere, and opening a store writes nothing: the
//! directory is made (0700) on the first write.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::exit::ExitStatus;
use crate::paths::{self, Paths, PathsError};
use crate::provider::SshEndpoint;

const VERIFY_KEY_FILE: &str = "verify_ed25519";
const KNOWN_HOSTS_FILE: &str = "known_hosts";
const SSH_CONFIG_FILE: &str = "ssh_config";

/// Options for every ssh process respot starts. Command-line options from
/// the transport (host key checking, identity, known_hosts) come on top.
/// Nothing here may weaken host key checking.
const SSH_CONFIG: &str = "\
# Written by respot; used only for respot's read-only verification.
GlobalKnownHostsFile /dev/null
HashKnownHosts no
CheckHostIP no
UpdateHostKeys no
IdentityAgent none
AddKeysToAgent no
ForwardAgent no
ForwardX11 no
ClearAllForwardings yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
HostKeyAlgorithms ssh-ed25519
LogLevel ERROR
";

/// Why the key store cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Paths(#[from] PathsError),
    /// respot's state directory (keys, known_hosts) cannot be read or written.
    #[error("`{}`: {source}; check that respot's state directory is writable", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot pin `{line}` in `{}`: expected `<type> <base64> [comment]`", path.display())]
    BadPublicKey { path: PathBuf, line: String },
    #[error(
        "`ssh-keygen` cannot run: {source}; install OpenSSH's client tools (apt-get install openssh-client)"
    )]
    KeygenMissing {
        #[source]
        source: std::io::Error,
    },
    #[error("`ssh-keygen` failed generating `{}`: {stderr}", path.display())]
    KeygenFailed { path: PathBuf, stderr: String },
}

impl KeyError {
    /// A missing or broken `ssh-keygen` is a missing tool (provider); a
    /// state directory respot cannot use is the environment's configuration.
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            KeyError::Paths(_) | KeyError::Io { .. } | KeyError::BadPublicKey { .. } => ExitStatus::Usage,
            KeyError::KeygenMissing { .. } | KeyError::KeygenFailed { .. } => ExitStatus::Provider,
        }
    }
}

/// The key material of one deployment. Cheap to clone: it is only paths.
#[derive(Debug, Clone)]
pub struct KeyStore {
    dir: PathBuf,
    deployment: String,
}

impl KeyStore {
    /// The store of `deployment` under the user's state directory. Writes
    /// nothing, except moving a store from where respot kept it before keys
    /// had a root of their own (once).
    pub fn open(paths: &Paths, deployment: &str) -> Result<KeyStore, KeyError> {
        let dir = paths.keys_dir(deployment)?;
        if let Some(legacy) = paths.legacy_keys_dir(deployment)
            && !dir.exists()
            && legacy.join(VERIFY_KEY_FILE).is_file()
        {
            let parent = dir.parent().unwrap_or(&dir);
            std::fs::create_dir_all(parent).map_err(|e| state_err(parent, e))?;
            std::fs::rename(&legacy, &dir).map_err(|e| state_err(&legacy, e))?;
        }
        Ok(KeyStore::at(&dir, deployment))
    }

    /// A store in an explicit directory (tests, or a custom layout).
    pub fn at(dir: &Path, deployment: &str) -> KeyStore {
        KeyStore {
            dir: dir.to_path_buf(),
            deployment: deployment.to_string(),
        }
    }

    /// Creates the store's directory (0700) before the first write.
    fn ensure_dir(&self) -> Result<(), KeyError> {
        paths::private_dir(&self.dir).map_err(|e| state_err(&self.dir, e))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn deployment(&self) -> &str {
        &self.deployment
    }

    /// The private verification key; generated on first use.
    pub fn verify_key_path(&self) -> Result<PathBuf, KeyError> {
        self.ensure_dir()?;
        let path = self.dir.join(VERIFY_KEY_FILE);
        ensure_key(&path, &format!("respot-verify@{}", self.deployment))?;
        Ok(path)
    }

    /// The verification key's public line (`ssh-ed25519 AAAA… comment`), for
    /// `LaunchMaterial::verify_key`.
    pub fn verify_public_key(&self) -> Result<String, KeyError> {
        let path = self.verify_key_path()?;
        read_public(&path)
    }

    /// The verification key's public line if this machine already has one;
    /// never generates.
    pub fn existing_verify_public_key(&self) -> Option<String> {
        read_public(&self.dir.join(VERIFY_KEY_FILE)).ok()
    }

    /// The host key of `generation`: (OpenSSH private key text, public line).
    /// Generated on first use and kept, so a later `pin` or a re-verify of
    /// the same generation uses the same key.
    pub fn host_key(&self, generation: u64) -> Result<(String, String), KeyError> {
        self.ensure_dir()?;
        let path = self.dir.join(format!("host_ed25519_g{generation}"));
        // No comment: the private key rides in every instance's user-data,
        // stored uncompressed, and a comment naming the generation would
        // also make its size depend on the number of digits.
        ensure_key(&path, "")?;
        let private = std::fs::read_to_string(&path).map_err(|e| state_err(&path, e))?;
        Ok((private, read_public(&path)?))
    }

    /// A new host key for `generation`, replacing any older one of the same
    /// number (generation numbers restart once a fleet is fully gone), so
    /// no two fleets ever share a host key.
    pub fn fresh_host_key(&self, generation: u64) -> Result<(String, String), KeyError> {
        let path = self.dir.join(format!("host_ed25519_g{generation}"));
        for stale in [path.clone(), path.with_extension("pub")] {
            match std::fs::remove_file(&stale) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(state_err(&stale, e)),
            }
        }
        self.host_key(generation)
    }

    /// Whether this machine holds the host key of `generation`.
    pub fn has_host_key(&self, generation: u64) -> bool {
        self.dir.join(format!("host_ed25519_g{generation}")).is_file()
    }

    pub fn known_hosts_path(&self) -> PathBuf {
        self.dir.join(KNOWN_HOSTS_FILE)
    }

    /// The options file every respot ssh process uses, (re)written now so
    /// that it always matches this binary; `kex`, when given, is its
    /// `KexAlgorithms` list.
    pub fn ssh_config(&self, kex: Option<&str>) -> Result<PathBuf, KeyError> {
        self.ensure_dir()?;
        let path = self.dir.join(SSH_CONFIG_FILE);
        let mut text = SSH_CONFIG.to_string();
        if let Some(kex) = kex {
            text.push_str(&format!("KexAlgorithms {kex}\n"));
        }
        // Verification connects to many instances at once, and each ssh
        // reads this file: it is replaced whole (a new file renamed over
        // it), never truncated under a reader, and only when it changed.
        if std::fs::read(&path).ok().as_deref() != Some(text.as_bytes()) {
            let mut file = tempfile::Builder::new()
                .prefix(".ssh_config.")
                .tempfile_in(&self.dir)
                .map_err(|e| state_err(&self.dir, e))?;
            std::io::Write::write_all(&mut file, text.as_bytes()).map_err(|e| state_err(file.path(), e))?;
            file.persist(&path).map_err(|e| state_err(&path, e.error))?;
        }
        Ok(path)
    }

    /// Pins `public_line` as the only host key of `endpoint`, replacing any
    /// earlier entry for it.
    pub fn pin(&self, endpoint: &SshEndpoint, public_line: &str) -> Result<(), KeyError> {
        let mut fields = public_line.split_whitespace();
        let (Some(kind), Some(key)) = (fields.next(), fields.next()) else {
            return Err(KeyError::BadPublicKey {
                path: self.known_hosts_path(),
                line: public_line.to_string(),
            });
        };
        let pattern = known_hosts_pattern(endpoint);
        self.rewrite_known_hosts(|lines| {
            lines.retain(|line| line.split_whitespace().next() != Some(pattern.as_str()));
            lines.push(format!("{pattern} {kind} {key}"));
        })
    }

    /// Removes every entry of `endpoints` (their instances are gone; the
    /// address may come back with another key).
    pub fn forget(&self, endpoints: &[SshEndpoint]) -> Result<(), KeyError> {
        let patterns: Vec<String> = endpoints.iter().map(known_hosts_pattern).collect();
        self.rewrite_known_hosts(|lines| {
            lines.retain(|line| {
                line.split_whitespace()
                    .next()
                    .is_none_or(|host| !patterns.iter().any(|p| p == host))
            });
        })
    }

    /// Whether respot's known_hosts holds a key for `endpoint`.
    pub fn is_known(&self, endpoint: &SshEndpoint) -> bool {
        let pattern = known_hosts_pattern(endpoint);
        std::fs::read_to_string(self.known_hosts_path())
            .map(|text| {
                text.lines()
                    .any(|l| l.split_whitespace().next() == Some(pattern.as_str()))
            })
            .unwrap_or(false)
    }

    fn rewrite_known_hosts(&self, edit: impl FnOnce(&mut Vec<String>)) -> Result<(), KeyError> {
        let path = self.known_hosts_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(state_err(&path, e)),
        };
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        let before = lines.clone();
        edit(&mut lines);
        if lines == before {
            return Ok(());
        }
        self.ensure_dir()?;
        let mut out = lines.join("\n");
        if !out.is_empty() {
            out.push('\n');
        }
        // Write then rename, so a concurrent ssh never reads half a file.
        let tmp = self
            .dir
            .join(format!(".{KNOWN_HOSTS_FILE}.{}", std::process::id()));
        write_private(&tmp, out.as_bytes())?;
        std::fs::rename(&tmp, &path).map_err(|e| state_err(&path, e))
    }
}

/// How ssh names an endpoint in known_hosts: `host` on port 22, else
/// `[host]:port`.
pub fn known_hosts_pattern(endpoint: &SshEndpoint) -> String {
    if endpoint.port == 22 {
        endpoint.host.clone()
    } else {
        format!("[{}]:{}", endpoint.host, endpoint.port)
    }
}

fn state_err(path: &Path, source: std::io::Error) -> KeyError {
    KeyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn write_private(path: &Path, content: &[u8]) -> Result<(), KeyError> {
    paths::write_private(path, content).map_err(|e| state_err(path, e))
}

fn read_public(private: &Path) -> Result<String, KeyError> {
    let path = public_path(private);
    let text = std::fs::read_to_string(&path).map_err(|e| state_err(&path, e))?;
    Ok(text.trim().to_string())
}

fn public_path(private: &Path) -> PathBuf {
    let mut name = private.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// Generates an ed25519 key at `path` unless both halves exist.
fn ensure_key(path: &Path, comment: &str) -> Result<(), KeyError> {
    if path.is_file() && public_path(path).is_file() {
        return Ok(());
    }
    // A half-written pair from an interrupted run: start over.
    for stale in [path.to_path_buf(), public_path(path)] {
        match std::fs::remove_file(&stale) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(state_err(&stale, e)),
        }
    }
    let output = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .output()
        .map_err(|source| KeyError::KeygenMissing { source })?;
    if !output.status.success() {
        return Err(KeyError::KeygenFailed {
            path: path.to_path_buf(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| state_err(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(host: &str, port: u16) -> SshEndpoint {
        SshEndpoint {
            host: host.to_string(),
            port,
        }
    }

    #[test]
    fn keys_are_generated_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::at(&dir.path().join("d"), "demo");
        let public = store.verify_public_key().unwrap();
        assert!(public.starts_with("ssh-ed25519 AAAA"), "{public}");
        assert!(public.ends_with("respot-verify@demo"), "{public}");
        assert_eq!(store.verify_public_key().unwrap(), public, "generated once");
        let mode = std::fs::metadata(store.verify_key_path().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = std::fs::metadata(store.dir()).unwrap().permissions().mode();
        assert_eq!(dir_mode & 0o777, 0o700);

        let (private, host_public) = store.host_key(3).unwrap();
        assert!(private.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
        assert_eq!(store.host_key(3).unwrap().1, host_public);
        assert_ne!(
            store.host_key(4).unwrap().1,
            host_public,
            "one key per generation"
        );
        assert_ne!(host_public, public);
    }

    #[test]
    fn the_ssh_options_are_replaced_whole_and_only_when_they_change() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::at(&dir.path().join("d"), "demo");
        let path = store.ssh_config(Some("curve25519-sha256")).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(SSH_CONFIG), "{text}");
        assert!(text.ends_with("KexAlgorithms curve25519-sha256\n"), "{text}");
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        // The same options: the very same file (a reader is never cut short).
        store.ssh_config(Some("curve25519-sha256")).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), meta.ino());
        // Other options: a new file took its place.
        store.ssh_config(None).unwrap();
        assert_ne!(std::fs::metadata(&path).unwrap().ino(), meta.ino());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), SSH_CONFIG);
        let left: Vec<_> = std::fs::read_dir(store.dir())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(
            left.iter()
                .all(|n| !n.to_string_lossy().starts_with(".ssh_config.")),
            "no temporary file left: {left:?}"
        );
    }

    #[test]
    fn opening_and_forgetting_nothing_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::from_vars(|name| (name == "HOME").then(|| dir.path().into()));
        let store = KeyStore::open(&paths, "demo").unwrap();
        store.forget(&[endpoint("127.0.0.1", 2201)]).unwrap();
        assert!(!store.is_known(&endpoint("127.0.0.1", 2201)));
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "nothing written"
        );
    }

    #[test]
    fn a_store_from_before_the_keys_root_is_moved_once() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::from_vars(|name| (name == "HOME").then(|| dir.path().into()));
        let legacy = KeyStore::at(&paths.legacy_keys_dir("demo").unwrap(), "demo");
        let public = legacy.verify_public_key().unwrap();
        let store = KeyStore::open(&paths, "demo").unwrap();
        assert_eq!(store.dir(), paths.keys_dir("demo").unwrap());
        assert_eq!(store.verify_public_key().unwrap(), public);
        assert!(!paths.legacy_keys_dir("demo").unwrap().exists());
    }

    #[test]
    fn pin_replaces_and_forget_removes_per_endpoint() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::at(dir.path(), "demo");
        let a = endpoint("127.0.0.1", 2201);
        let b = endpoint("10.0.0.5", 22);
        store.pin(&a, "ssh-ed25519 AAAAone c").unwrap();
        store.pin(&b, "ssh-ed25519 AAAAtwo").unwrap();
        store.pin(&a, "ssh-ed25519 AAAAthree").unwrap();
        let text = std::fs::read_to_string(store.known_hosts_path()).unwrap();
        assert_eq!(
            text,
            "10.0.0.5 ssh-ed25519 AAAAtwo\n[127.0.0.1]:2201 ssh-ed25519 AAAAthree\n"
        );
        assert!(store.is_known(&a) && store.is_known(&b));
        store.forget(std::slice::from_ref(&a)).unwrap();
        assert!(!store.is_known(&a) && store.is_known(&b));
        assert!(store.pin(&a, "garbage").is_err());
    }
}
