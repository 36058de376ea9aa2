//! `render --check`: the real `cloud-init schema` on a rendered document.
//! The one place in `template` that starts a process.

use std::process::Command;

use super::TemplateError;

/// Runs the real `cloud-init schema` on `document`. `Ok(None)` means
/// cloud-init is not installed.
pub fn schema_check(document: &str) -> Result<Option<String>, TemplateError> {
    let dir = std::env::temp_dir().join(format!("respot-schema-{}", std::process::id()));
    let io_err = |source| TemplateError::Read {
        path: dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(io_err)?;
    let file = dir.join("user-data.yaml");
    std::fs::write(&file, document).map_err(io_err)?;
    let result = Command::new("cloud-init")
        .args(["schema", "--config-file"])
        .arg(&file)
        .output();
    // Best effort: a leftover temp file is harmless.
    let _ = std::fs::remove_dir_all(&dir);
    let output = match result {
        Ok(output) => output,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(io_err(source)),
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
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
