//! `respot completions SHELL` and `respot man`: text that `settings`
//! generates from the command line's own definition (so it cannot drift
//! from `--help`), printed as is. They need no `respot.toml`, and
//! `--output json` does not apply: a shell script or a roff page is the
//! output.

use super::ExitStatus;
use crate::error::{Error, Result};
use crate::output::Printer;

/// Generated text and what it is, for the log.
#[derive(Debug, Clone)]
pub struct Generated {
    pub what: &'static str,
    pub text: String,
}

pub fn print(generated: &Generated, printer: &Printer) -> Result<ExitStatus> {
    tracing::debug!("printing {} ({} bytes)", generated.what, generated.text.len());
    printer.data(&generated.text).map_err(Error::Output)?;
    Ok(ExitStatus::Success)
}
