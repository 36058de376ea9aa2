//! `render --check`: the real `cloud-init schema` on a rendered document.
//! The one place in `template` that starts a process.
//!
//! The document goes through a private temporary directory (`tempfile`:
//! a fresh random name, mode 0700), never a predictable path another local
//! user could plant a symlink at; it is gone when the check returns, so the
//! output names it `user-data`, not by its temporary path.

use std::process::Command;

use super::TemplateError;

/// Runs the real `cloud-init schema` on `document`. `Ok(None)` means
/// cloud-init is not installed.
pub fn schema_check(document: &str) -> Result<Option<String>, TemplateError> {
    let io_err = |path: &str, source| TemplateError::Read {
        path: path.to_string(),
        source,
    };
    let dir = tempfile::Builder::new()
        .prefix("respot-schema-")
        .tempdir()
        .map_err(|e| io_err("a private temporary directory", e))?;
    let file = dir.path().join("user-data");
    std::fs::write(&file, document).map_err(|e| io_err(&file.display().to_string(), e))?;
    let result = Command::new("cloud-init")
        .args(["schema", "--config-file"])
        .arg(&file)
        .output();
    let output = match result {
        Ok(output) => output,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(io_err("cloud-init", source)),
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
    .replace(&file.display().to_string(), "user-data")
    .trim()
    .to_string();
    if output.status.success() {
        Ok(Some(text))
    } else {
        Err(TemplateError::Schema {
            path: "rendered user-data".to_string(),
            output: text,
        })
    }
}
