//! The top-level error: every module's error enum meets here, plus the few
//! failures that belong to the commands themselves. `Error::exit_status` is
//! the only place that decides a process exit code, and each module's error
//! decides its own part of it.

use std::path::PathBuf;

use crate::config::ConfigError;
use crate::engine::EngineError;
use crate::exit::ExitStatus;
use crate::history::HistoryError;
use crate::keys::KeyError;
use crate::lock::LockError;
use crate::paths::PathsError;
use crate::provenance::ProvenanceError;
use crate::provider::ProviderError;
use crate::scaffold::ScaffoldError;
use crate::template::TemplateError;
use crate::verify::VerifyError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Scaffold(#[from] ScaffoldError),
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(transparent)]
    Paths(#[from] PathsError),
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error(transparent)]
    Provenance(#[from] ProvenanceError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(
        "`--all-regions` works with `list`, `destroy`, `verify` and `debug`; \
         `{command}` works in the regions of `aws.regions` (or `--region`)"
    )]
    AllRegions { command: &'static str },
    #[error("no live instance of `{deployment}` is `{wanted}`; `respot list` shows them")]
    NoSuchInstance { deployment: String, wanted: String },
    #[error("`{deployment}` has no live instances to verify; `respot create` makes some")]
    NoLiveInstances { deployment: String },
    #[error("instance `{instance}` has no SSH endpoint yet (no public IP)")]
    NoEndpoint { instance: String },
    #[error("{purpose} needs `{tool}`, which is not installed; install it with {install}")]
    ToolMissing {
        tool: &'static str,
        purpose: &'static str,
        install: &'static str,
    },
    #[error("cannot write `{}`: {source}", path.display())]
    WriteFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the current directory: {0}")]
    CurrentDir(#[source] std::io::Error),
    #[error("`{command}` was interrupted (Ctrl-C); run it again to finish")]
    Interrupted { command: &'static str },
    /// Writing to stdout failed for a reason other than a closed pipe.
    #[error("cannot write output: {0}")]
    Output(#[source] std::io::Error),
}

impl Error {
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            Error::Config(err) => err.exit_status(),
            Error::Template(err) => err.exit_status(),
            Error::Scaffold(err) => err.exit_status(),
            Error::Provider(err) => err.exit_status(),
            Error::Engine(err) => err.exit_status(),
            Error::Verify(err) => err.exit_status(),
            Error::Keys(err) => err.exit_status(),
            Error::History(err) => err.exit_status(),
            Error::Provenance(err) => err.exit_status(),
            Error::Lock(err) => err.exit_status(),
            Error::Paths(_)
            | Error::AllRegions { .. }
            | Error::NoSuchInstance { .. }
            | Error::WriteFile { .. }
            | Error::CurrentDir(_) => ExitStatus::Usage,
            Error::ToolMissing { .. } => ExitStatus::Provider,
            Error::NoLiveInstances { .. }
            | Error::NoEndpoint { .. }
            | Error::Output(_)
            | Error::Interrupted { .. } => ExitStatus::Failure,
        }
    }

    /// A closed stdout (`respot list | head`) is not a failure.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Error::Output(err) if err.kind() == std::io::ErrorKind::BrokenPipe)
    }

    /// The message and every cause that adds something, on one line.
    pub fn chain(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            let cause_text = cause.to_string();
            if !text.contains(&cause_text) {
                text.push_str(&format!(": {cause_text}"));
            }
            source = cause.source();
        }
        text
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
