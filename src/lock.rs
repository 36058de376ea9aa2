//! One operation at a time per deployment: who holds the lock, the error
//! a second operation gets, and the local provider's lock (an `flock`).
//!
//! `create`, `deploy` and `destroy` (and every command that changes a
//! deployment) take the lock before they touch anything and release it on
//! every exit path: explicitly with [`DeploymentLock::release`], and, when a
//! panic or a dropped future skips that, in `Drop`. Read-only commands take
//! none. Where the lock lives is the provider's business: a security group
//! on AWS (`provider::aws::lock`), an `flock` on a file next to the VMs'
//! state directory locally. An `flock` ends with its process, so a crashed
//! local holder leaves nothing; an AWS lock outlives a killed process and
//! names its command so that `respot unlock` can judge it stale.

use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::exit::ExitStatus;
use crate::provider::ProviderError;
use crate::provider::aws::SdkLock;

/// Who holds a lock: enough for a person to decide whether it is stale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// `user@host`.
    pub who: String,
    /// RFC 3339, UTC.
    pub since: String,
    /// The respot command that took it, e.g. `create`.
    pub command: String,
    pub pid: u32,
}

impl Holder {
    /// This process, about to run `command`.
    pub fn current(command: &str) -> Holder {
        Holder {
            who: format!("{}@{}", user_name(), host_name()),
            since: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            command: command.to_string(),
            pid: std::process::id(),
        }
    }

    /// A holder whose record is missing or unreadable.
    pub fn unknown() -> Holder {
        Holder {
            who: "an unknown holder".to_string(),
            since: "an unknown time".to_string(),
            command: "unknown".to_string(),
            pid: 0,
        }
    }
}

/// `alice@laptop (pid 4242, respot create) since 2026-01-02T03:04:05Z`.
impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (pid {}, `respot {}`) since {}",
            self.who, self.pid, self.command, self.since
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another operation holds the lock; nothing was touched.
    #[error(
        "`{deployment}` is locked by {holder} ({place}); wait for it to finish, or, if that run \
         is gone, run `respot unlock`"
    )]
    Held {
        deployment: String,
        holder: Box<Holder>,
        /// Where the lock lives, e.g. `security group respot.lock.web in eu-west-1`.
        place: String,
    },
    /// A local lock is held by a live process: an `flock` cannot be stale.
    #[error(
        "`{deployment}` is locked by {holder}, a process that is still running; a local lock \
         ends with its process, so it is not stale: let it finish or stop it"
    )]
    HeldByLiveProcess { deployment: String, holder: Box<Holder> },
    #[error(
        "refusing to remove the lock of `{deployment}` without confirmation: stdin is not a \
         terminal; pass --yes"
    )]
    NeedsConfirmation { deployment: String },
    #[error("cannot lock `{}`: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Provider(#[from] ProviderError),
}

impl LockError {
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            LockError::Held { .. } | LockError::HeldByLiveProcess { .. } => ExitStatus::Locked,
            LockError::Io { .. } | LockError::NeedsConfirmation { .. } => ExitStatus::Usage,
            LockError::Provider(err) => err.exit_status(),
        }
    }
}

/// A held deployment lock. Release it with [`DeploymentLock::release`];
/// dropping it releases it too (blocking), for the paths that cannot await.
#[derive(Debug)]
pub enum DeploymentLock {
    Local(LocalLock),
    Aws(Box<SdkLock>),
}

impl DeploymentLock {
    /// Gives the lock back. A failure is returned for a warning: the
    /// operation itself is over, and `respot unlock` removes what is left.
    pub async fn release(self) -> Result<(), LockError> {
        match self {
            DeploymentLock::Local(lock) => {
                lock.release();
                Ok(())
            }
            DeploymentLock::Aws(lock) => lock.release().await.map_err(LockError::Provider),
        }
    }
}

/// The local provider's lock: an exclusive `flock` on
/// `<vms root>/<deployment>.lock`, whose content names the holder. The
/// file is never removed (removing it would let two processes lock two
/// different files of the same name); its content is cleared on release.
#[derive(Debug)]
pub struct LocalLock {
    file: File,
    path: PathBuf,
}

impl LocalLock {
    /// Takes the lock at `path` for `holder`, or says who holds it.
    pub fn acquire(path: &Path, deployment: &str, holder: &Holder) -> Result<LocalLock, LockError> {
        let io = |source| LockError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            crate::paths::private_dir(dir).map_err(io)?;
        }
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        if !try_flock(&file).map_err(io)? {
            return Err(LockError::Held {
                deployment: deployment.to_string(),
                holder: Box::new(read_holder(&mut file)),
                place: format!("file {}", path.display()),
            });
        }
        let record = serde_json::to_vec(holder).expect("a holder always serializes");
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        file.write_all(&record).map_err(io)?;
        Ok(LocalLock {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Who holds the lock at `path`, if anyone; takes nothing.
    pub fn holder(path: &Path) -> Result<Option<Holder>, LockError> {
        let io = |source| LockError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = match File::options().read(true).write(true).open(path) {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(io(err)),
        };
        if try_flock(&file).map_err(io)? {
            // Free: closing `file` lets it go again.
            return Ok(None);
        }
        Ok(Some(read_holder(&mut file)))
    }

    fn release(self) {
        drop(self);
    }
}

impl Drop for LocalLock {
    fn drop(&mut self) {
        if let Err(err) = self.file.set_len(0) {
            // Harmless: the record is read only while the lock is held.
            tracing::debug!(path = %self.path.display(), "clearing the lock record: {err}");
        }
        // Closing the file (after this) releases the flock.
    }
}

/// `flock(LOCK_EX | LOCK_NB)`: `true` when taken, `false` when another
/// open file description holds it.
fn try_flock(file: &File) -> std::io::Result<bool> {
    // SAFETY: flock(2) on a descriptor this `File` owns and keeps open.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(err)
    }
}

/// The holder's record; a holder that has not written it yet (it writes
/// right after taking the lock) is unknown.
fn read_holder(file: &mut File) -> Holder {
    let mut text = String::new();
    let read = file.rewind().and_then(|()| file.read_to_string(&mut text));
    match read {
        Ok(_) => serde_json::from_str(&text).unwrap_or_else(|_| Holder::unknown()),
        Err(_) => Holder::unknown(),
    }
}

fn user_name() -> String {
    ["USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        // SAFETY: getuid(2) cannot fail.
        .unwrap_or_else(|| format!("uid{}", unsafe { libc::getuid() }))
}

fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates
    // within it when the name fits.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown-host".to_string();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_local_lock_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/web.lock");
        let first = Holder::current("create");
        let held = LocalLock::acquire(&path, "web", &first).unwrap();
        let err = LocalLock::acquire(&path, "web", &Holder::current("destroy")).unwrap_err();
        let LockError::Held { holder, .. } = &err else {
            panic!("want Held, got {err:?}");
        };
        assert_eq!(**holder, first);
        assert_eq!(err.exit_status(), ExitStatus::Locked);
        let text = err.to_string();
        assert!(
            text.contains("`respot create`") && text.contains("respot unlock"),
            "{text}"
        );
        assert_eq!(LocalLock::holder(&path).unwrap(), Some(first));
        held.release();
        assert_eq!(LocalLock::holder(&path).unwrap(), None);
        let again = LocalLock::acquire(&path, "web", &Holder::current("deploy"));
        assert!(again.is_ok(), "{again:?}");
    }

    #[test]
    fn dropping_a_local_lock_releases_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.lock");
        {
            let _held = LocalLock::acquire(&path, "web", &Holder::current("create")).unwrap();
            assert!(LocalLock::holder(&path).unwrap().is_some());
        }
        assert_eq!(LocalLock::holder(&path).unwrap(), None);
        assert_eq!(LocalLock::holder(&dir.path().join("none.lock")).unwrap(), None);
    }
}
