//! `respot init`: a new blueprint folder from the embedded sample.

use std::path::PathBuf;

use serde::Serialize;

use super::ExitStatus;
use crate::error::{Error, Result};
use crate::output::Printer;
use crate::scaffold;

#[derive(Debug, Clone)]
pub struct InitOptions {
    pub dir: PathBuf,
    pub name: String,
}

#[derive(Debug, Serialize)]
struct InitReport {
    created: Vec<String>,
}

pub fn init(options: &InitOptions, printer: &Printer) -> Result<ExitStatus> {
    let written = scaffold::init(&options.dir, &options.name)?;
    if printer.is_json() {
        let report = InitReport {
            created: written.iter().map(|p| p.display().to_string()).collect(),
        };
        printer.json(&report).map_err(Error::Output)?;
    } else {
        for path in &written {
            printer.info(&format!("created {}", path.display()));
        }
        printer.info(&format!(
            "next: `cd {}` and `respot render --check`, then `respot create`",
            options.dir.display()
        ));
    }
    Ok(ExitStatus::Success)
}
