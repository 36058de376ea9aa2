//! A deployment's history: one JSON line per create, deploy, rollback and
//! destroy, appended to `$XDG_STATE_HOME/respot/history/<deployment>.jsonl`
//! (see `paths`). Each line says when, who, which commit and digest, which
//! strategy, the result, the generations created and destroyed with their
//! instance counts, how long each phase took and why a failure failed.
//!
//! The file is the operator's machine's view. Where the blueprint is a git
//! repository, the commands also write each record as a git note under
//! `refs/notes/respot` on the deployed commit, so a team can share it by
//! pushing the notes (see `provenance::append_note`).
//!
//! This module reads and writes the file and answers questions about it
//! ("the previous successful generation"); it knows no provider and no git.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::exit::ExitStatus;
use crate::paths::{Paths, PathsError, private_dir};
use crate::provider::Instance;

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error(transparent)]
    Paths(#[from] PathsError),
    #[error("cannot read the history `{}`: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the history `{}`: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "`{}`:{line}: not a history record ({message}); move the file aside to start a new history",
        path.display()
    )]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

impl HistoryError {
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            HistoryError::Paths(_) | HistoryError::Parse { .. } => ExitStatus::Usage,
            HistoryError::Read { .. } | HistoryError::Write { .. } => ExitStatus::Failure,
        }
    }
}

/// What a record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Create,
    Deploy,
    Rollback,
    Destroy,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Deploy => "deploy",
            Action::Rollback => "rollback",
            Action::Destroy => "destroy",
        }
    }

    /// Whether a successful record of this action left a generation live.
    pub fn ships(self) -> bool {
        matches!(self, Action::Create | Action::Deploy | Action::Rollback)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Success,
    Failure,
}

/// One generation and how many of its instances were created or destroyed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation {
    /// `None` for instances without a generation tag.
    pub generation: Option<u64>,
    pub instances: usize,
}

/// How long one phase took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    pub name: String,
    pub secs: f64,
}

/// One line of the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// RFC 3339, UTC, when the command started.
    pub time: String,
    pub action: Action,
    pub deployment: String,
    pub user: String,
    pub host: String,
    /// The commit the generation came from (a clean tree or `--ref`).
    #[serde(default)]
    pub commit: Option<String>,
    /// `digest-short@git-describe`, as the instances' version tag says.
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub digest: Option<String>,
    /// The `--ref` a deploy was asked for, as typed.
    #[serde(default)]
    pub git_ref: Option<String>,
    #[serde(default)]
    pub strategy: Option<String>,
    /// The signing key's fingerprint (`[deployment] require_signed`).
    #[serde(default)]
    pub signer: Option<String>,
    pub result: Outcome,
    #[serde(default)]
    pub created: Vec<Generation>,
    #[serde(default)]
    pub destroyed: Vec<Generation>,
    #[serde(default)]
    pub phases: Vec<Phase>,
    /// Why it failed, for a failure.
    #[serde(default)]
    pub reason: Option<String>,
}

impl Record {
    /// The first generation this record created, if any.
    pub fn created_generation(&self) -> Option<u64> {
        self.created.iter().find_map(|g| g.generation)
    }

    pub fn succeeded(&self) -> bool {
        self.result == Outcome::Success
    }

    /// The total of its phases, in seconds.
    pub fn total_secs(&self) -> f64 {
        self.phases.iter().map(|p| p.secs).sum()
    }
}

/// Builds one record while a command runs: phases are timed between marks.
#[derive(Debug)]
pub struct Recorder {
    pub record: Record,
    mark: Instant,
}

impl Recorder {
    /// A record of `action` by this user on this host, starting now. The
    /// result stays a failure until `succeed`.
    pub fn start(action: Action) -> Recorder {
        let (user, host) = who();
        Recorder {
            record: Record {
                time: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
                action,
                deployment: String::new(),
                user,
                host,
                commit: None,
                version: None,
                digest: None,
                git_ref: None,
                strategy: None,
                signer: None,
                result: Outcome::Failure,
                created: Vec::new(),
                destroyed: Vec::new(),
                phases: Vec::new(),
                reason: None,
            },
            mark: Instant::now(),
        }
    }

    /// Ends the phase `name` now; the next phase starts.
    pub fn mark(&mut self, name: &str) {
        let now = Instant::now();
        let secs = (now - self.mark).as_secs_f64();
        self.record.phases.push(Phase {
            name: name.to_string(),
            secs: (secs * 1000.0).round() / 1000.0,
        });
        self.mark = now;
    }

    /// Ends a phase whose parts someone else timed: records `parts` (in
    /// seconds) and, under `name`, whatever time since the last mark they
    /// do not cover (listing, rollback), when there is any to speak of.
    pub fn mark_parts(&mut self, name: &str, parts: &[(&str, f64)]) {
        let now = Instant::now();
        let total = (now - self.mark).as_secs_f64();
        let mut covered = 0.0;
        for (part, secs) in parts {
            covered += secs;
            self.record.phases.push(Phase {
                name: (*part).to_string(),
                secs: (secs * 1000.0).round() / 1000.0,
            });
        }
        if total - covered >= 0.001 {
            self.record.phases.push(Phase {
                name: name.to_string(),
                secs: ((total - covered) * 1000.0).round() / 1000.0,
            });
        }
        self.mark = now;
    }

    /// Restarts the clock without recording (time nobody should be billed for).
    pub fn restart(&mut self) {
        self.mark = Instant::now();
    }

    pub fn created(&mut self, generation: u64, instances: usize) {
        self.record.created.push(Generation {
            generation: Some(generation),
            instances,
        });
    }

    /// Records `instances` as destroyed, counted per generation.
    pub fn destroyed(&mut self, instances: &[Instance]) {
        self.record.destroyed.extend(per_generation(instances));
    }

    pub fn succeed(&mut self) {
        self.record.result = Outcome::Success;
        self.record.reason = None;
    }

    pub fn fail(&mut self, reason: String) {
        self.record.result = Outcome::Failure;
        self.record.reason = Some(reason);
    }
}

/// Instance counts per generation, in generation order.
pub fn per_generation(instances: &[Instance]) -> Vec<Generation> {
    let mut counts: BTreeMap<Option<u64>, usize> = BTreeMap::new();
    for instance in instances {
        *counts.entry(instance.generation).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|(generation, instances)| Generation {
            generation,
            instances,
        })
        .collect()
}

/// The history file of one deployment.
#[derive(Debug, Clone)]
pub struct History {
    path: PathBuf,
}

impl History {
    /// The history of `deployment`. Opening writes nothing.
    pub fn open(paths: &Paths, deployment: &str) -> Result<History, HistoryError> {
        Ok(History {
            path: paths.history_file(deployment)?,
        })
    }

    /// The history at `path` (tests).
    pub fn at(path: &Path) -> History {
        History {
            path: path.to_path_buf(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `record` as one line, in one write, creating the file (0600)
    /// and its directory (0700) on first use.
    pub fn append(&self, record: &Record) -> Result<(), HistoryError> {
        use std::os::unix::fs::OpenOptionsExt;
        let write_err = |source| HistoryError::Write {
            path: self.path.clone(),
            source,
        };
        if let Some(dir) = self.path.parent() {
            private_dir(dir).map_err(write_err)?;
        }
        let mut line = serde_json::to_string(record).map_err(|e| write_err(std::io::Error::other(e)))?;
        line.push('\n');
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(write_err)?;
        file.write_all(line.as_bytes()).map_err(write_err)
    }

    /// Every record, oldest first; no file is an empty history. Blank lines
    /// are skipped; a line that is not a record names its line number.
    pub fn read(&self) -> Result<Vec<Record>, HistoryError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(HistoryError::Read {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let mut records = Vec::new();
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let record = serde_json::from_str(line).map_err(|err| HistoryError::Parse {
                path: self.path.clone(),
                line: index + 1,
                message: err.to_string(),
            })?;
            records.push(record);
        }
        Ok(records)
    }
}

/// The newest successful record that left a generation live and whose
/// generation no later record destroyed: what is deployed now, as far as
/// this history knows.
pub fn current(records: &[Record]) -> Option<&Record> {
    let mut destroyed: Vec<u64> = Vec::new();
    for record in records.iter().rev().filter(|r| r.succeeded()) {
        if let Some(generation) = record.created_generation()
            && record.action.ships()
            && !destroyed.contains(&generation)
        {
            return Some(record);
        }
        destroyed.extend(record.destroyed.iter().filter_map(|g| g.generation));
    }
    None
}

/// The last successful generation before `current_generation`, with a
/// different digest: what `rollback` goes back to. Records of generations
/// at or above `current_generation` are ignored, so a rollback that shipped
/// an old commit as a new generation does not make that commit "previous".
pub fn previous_success(records: &[Record], current_generation: u64) -> Option<&Record> {
    let current_digest = records
        .iter()
        .rev()
        .find(|r| r.succeeded() && r.created_generation() == Some(current_generation))
        .and_then(|r| r.digest.as_deref());
    records.iter().rev().find(|r| {
        r.succeeded()
            && r.action.ships()
            && r.created_generation().is_some_and(|g| g < current_generation)
            && (current_digest.is_none() || r.digest.as_deref() != current_digest)
    })
}

/// The first successful record that shipped `commit`: its digest is the
/// one `deploy --ref` must reproduce.
pub fn first_shipped<'a>(records: &'a [Record], commit: &str) -> Option<&'a Record> {
    records
        .iter()
        .find(|r| r.succeeded() && r.action.ships() && r.commit.as_deref() == Some(commit))
}

/// The newest successful record that created `generation`.
pub fn creator_of(records: &[Record], generation: u64) -> Option<&Record> {
    records
        .iter()
        .rev()
        .find(|r| r.succeeded() && r.created_generation() == Some(generation))
}

/// The user running respot (from the password database, else `USER`) and
/// this host's name.
fn who() -> (String, String) {
    let user = user_name()
        .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "unknown".to_string());
    let host = host_name().unwrap_or_else(|| "unknown".to_string());
    (user, host)
}

fn user_name() -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: a zeroed passwd is a valid out-parameter; getpwuid_r writes
    // only into it and `buf` (of the length given), and `result` points to
    // `pwd` or is null.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(libc::getuid(), &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result);
        if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
            return None;
        }
        let name = std::ffi::CStr::from_ptr(pwd.pw_name)
            .to_string_lossy()
            .to_string();
        (!name.is_empty()).then_some(name)
    }
}

fn host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into `buf`.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).to_string();
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(action: Action, ok: bool, generation: Option<u64>, digest: &str, commit: &str) -> Record {
        let mut recorder = Recorder::start(action);
        recorder.record.deployment = "web".to_string();
        recorder.record.digest = Some(digest.to_string());
        recorder.record.commit = Some(commit.to_string());
        if let Some(g) = generation {
            recorder.created(g, 2);
        }
        if ok {
            recorder.succeed();
        } else {
            recorder.fail("verification failed".to_string());
        }
        recorder.record
    }

    fn destroying(mut record: Record, generation: u64) -> Record {
        record.destroyed.push(Generation {
            generation: Some(generation),
            instances: 2,
        });
        record
    }

    #[test]
    fn records_round_trip_one_line_each() {
        let dir = tempfile::tempdir().unwrap();
        let history = History::at(&dir.path().join("h/web.jsonl"));
        assert_eq!(history.read().unwrap(), Vec::new(), "no file, no records");
        let mut first = Recorder::start(Action::Create);
        first.mark("render");
        first.created(1, 3);
        first.succeed();
        let second = record(Action::Destroy, false, None, "d", "c");
        history.append(&first.record).unwrap();
        history.append(&second).unwrap();
        let text = std::fs::read_to_string(history.path()).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert_eq!(history.read().unwrap(), vec![first.record.clone(), second]);
        assert_eq!(first.record.phases[0].name, "render");
        assert!(!first.record.user.is_empty() && !first.record.host.is_empty());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(history.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_bad_line_names_its_line_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.jsonl");
        let good = serde_json::to_string(&record(Action::Create, true, Some(1), "a", "c1")).unwrap();
        std::fs::write(&path, format!("{good}\n\n{{oops\n")).unwrap();
        let err = History::at(&path).read().unwrap_err();
        assert!(err.to_string().contains("web.jsonl`:3:"), "{err}");
        assert_eq!(err.exit_status(), ExitStatus::Usage);
    }

    #[test]
    fn previous_success_skips_failures_and_the_current_digest() {
        let records = vec![
            record(Action::Create, true, Some(1), "a", "c1"),
            record(Action::Deploy, false, Some(2), "b", "c2"),
            destroying(record(Action::Deploy, true, Some(3), "b", "c2"), 1),
            destroying(record(Action::Deploy, true, Some(4), "c", "c3"), 3),
            destroying(record(Action::Destroy, true, None, "c", "c3"), 4),
        ];
        assert_eq!(current(&records), None, "the destroy ended generation 4");
        assert_eq!(current(&records[..4]).unwrap().created_generation(), Some(4));
        // An instant rollback from 4 to 3 destroys 4: 3 is current again.
        // 4 deployed with --keep-old (3 stays), then an instant rollback
        // destroys 4: 3 is current again.
        let mut back = records[..3].to_vec();
        back.push(record(Action::Deploy, true, Some(4), "c", "c3"));
        back.push(destroying(record(Action::Rollback, true, None, "b", "c2"), 4));
        assert_eq!(current(&back).unwrap().created_generation(), Some(3));
        assert_eq!(
            previous_success(&records, 4).unwrap().commit.as_deref(),
            Some("c2")
        );
        assert_eq!(
            previous_success(&records, 3).unwrap().commit.as_deref(),
            Some("c1")
        );
        assert_eq!(previous_success(&records, 1), None);
        // A rollback shipped c2 again as generation 5: previous is c3's 4.
        let mut more = records.clone();
        more.push(record(Action::Rollback, true, Some(5), "b", "c2"));
        assert_eq!(previous_success(&more, 5).unwrap().commit.as_deref(), Some("c3"));
        assert_eq!(first_shipped(&more, "c2").unwrap().created_generation(), Some(3));
        assert_eq!(creator_of(&more, 4).unwrap().commit.as_deref(), Some("c3"));
        assert!(first_shipped(&more, "nope").is_none());
    }
}
