//! One row of the verification table, and the wording of rows that both
//! the instance's own lists (`checks`) and respot's render (`expect`) use.

use std::fmt;

use serde::Serialize;

use super::Target;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    Warn,
    Fail,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Pass => "pass",
            Outcome::Warn => "warn",
            Outcome::Fail => "fail",
        })
    }
}

/// One row of the verification table.
#[derive(Debug, Clone, Serialize)]
pub struct CheckRow {
    pub instance: String,
    pub name: String,
    /// `reachable`, `cloud-init`, `unit <name>`, `units`, `digest`,
    /// `files`, `health <port><path>`.
    pub check: String,
    pub result: Outcome,
    pub detail: String,
    /// The host presented an unexpected key (possible MITM).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub mismatch: bool,
}

impl CheckRow {
    pub fn new(target: &Target, check: &str, result: Outcome, detail: impl Into<String>) -> CheckRow {
        CheckRow {
            instance: target.instance.clone(),
            name: target.name.clone(),
            check: check.to_string(),
            result,
            detail: detail.into(),
            mismatch: false,
        }
    }
}

/// Why file `path`, recorded (or rendered) with sha256 `recorded`, fails,
/// given what the inspector found: `live`.
pub fn drift_detail(path: &str, recorded: &str, live: &str) -> String {
    let what = match live {
        "missing" => "is missing".to_string(),
        "unchecked" => "is not in /etc/respot/manifest.sha256, so it was not checked".to_string(),
        "symlink" => "is a symlink on the instance; respot does not follow it".to_string(),
        "special" => {
            "is not a regular file on the instance (a directory, device, FIFO or socket)".to_string()
        }
        "unreadable" => "cannot be read by the inspector".to_string(),
        live => format!(
            "changed on the instance: recorded {}, live {}",
            recorded.get(..12).unwrap_or(recorded),
            live.get(..12).unwrap_or(live)
        ),
    };
    format!("`{path}` {what}")
}

/// One probe's row: it passes when it answered `want`.
pub fn probe_row(target: &Target, check: &str, got: &str, want: &str, body: &str) -> CheckRow {
    if got == want {
        CheckRow::new(target, check, Outcome::Pass, format!("HTTP {got}"))
    } else if got == "none" {
        CheckRow::new(
            target,
            check,
            Outcome::Fail,
            format!("no answer (want HTTP {want})"),
        )
    } else {
        CheckRow::new(
            target,
            check,
            Outcome::Fail,
            format!("HTTP {got} (want {want}): {}", body.trim()),
        )
    }
}
