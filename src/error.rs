//! The top-level error and the exit-code contract.
//!
//! Every module has its own error enum; they meet here. `Error::exit_code`
//! is the only place that decides a process exit code, and `EXIT_CODES` is
//! the table printed in `--help`, so the two cannot drift apart.

use crate::config::ConfigError;
use crate::engine::EngineError;
use crate::provider::ProviderError;
use crate::template::TemplateError;
use crate::verify::VerifyError;

/// The exit-code contract shared by every command (see BRIEF.md).
pub const EXIT_CODES: &[(u8, &str)] = &[
    (0, "done; every check passed"),
    (
        1,
        "the operation failed: a verification check failed, a create was rolled back, \
         a destroy left something behind",
    ),
    (
        2,
        "usage or configuration error (bad flag, bad respot.toml, bad template): nothing was touched",
    ),
    (
        3,
        "the cloud or provider could not be used: credentials, API errors, quotas, a missing tool",
    ),
];

pub const EXIT_OK: u8 = 0;
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_PROVIDER: u8 = 3;

/// Renders `EXIT_CODES` for the `--help` footer.
pub fn exit_code_help() -> String {
    let mut help = String::from("Exit codes:\n");
    for (code, meaning) in EXIT_CODES {
        help.push_str(&format!("  {code}  {meaning}\n"));
    }
    help
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The command ran, and what it checked failed (verification).
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// A command-line or environment problem found before anything was touched.
    #[error("{0}")]
    Usage(String),
    /// A required local tool is missing or unusable (cloud-init, qemu, ssh-keygen).
    #[error("{0}")]
    Tool(String),
    /// Writing to stdout failed for a reason other than a closed pipe.
    #[error("cannot write output: {0}")]
    Output(#[source] std::io::Error),
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) | Error::Template(_) | Error::Usage(_) => EXIT_USAGE,
            Error::Tool(_) => EXIT_PROVIDER,
            Error::Provider(err) => provider_exit_code(err),
            Error::Engine(err) => match err {
                EngineError::Dirty | EngineError::NeedsConfirmation { .. } | EngineError::Template(_) => {
                    EXIT_USAGE
                }
                EngineError::Keys(_) => EXIT_PROVIDER,
                EngineError::Provider(err) => provider_exit_code(err),
                EngineError::AlreadyLive { .. }
                | EngineError::Declined
                | EngineError::RolledBack { .. }
                | EngineError::Kept { .. }
                | EngineError::LeftBehind(_) => EXIT_FAILED,
            },
            Error::Failed(_) | Error::Output(_) => EXIT_FAILED,
            Error::Verify(err) => match err {
                VerifyError::State { .. } => EXIT_USAGE,
                VerifyError::Tool { .. } => EXIT_PROVIDER,
                // Unreachable, mismatched, refused: the operation failed.
                _ => EXIT_FAILED,
            },
        }
    }
}

fn provider_exit_code(err: &ProviderError) -> u8 {
    err.exit_status().code()
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
