//! `respot init`: a new blueprint folder from the sample embedded in the
//! binary. It only ever creates files; it refuses to overwrite any.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::config::valid_deployment_name;
use crate::error::{Error, Result};

/// The sample blueprint of this repository: (relative path, content, executable).
/// A unit test checks this list against the files in the repository, so the
/// embedded copy cannot drift from the sample the README deploys. It holds
/// the user's files only: respot's own (`crate::guest`) are added at render.
pub const SAMPLE: &[(&str, &str, bool)] = &[
    ("respot.toml", include_str!("../respot.toml"), false),
    (
        "templates/cloud-init.yaml",
        include_str!("../templates/cloud-init.yaml"),
        false,
    ),
    (
        "instance/units/hello-health.service",
        include_str!("../instance/units/hello-health.service"),
        false,
    ),
    (
        "instance/units/hello-reporter.service",
        include_str!("../instance/units/hello-reporter.service"),
        false,
    ),
    (
        "instance/files/opt/hello/health.py",
        include_str!("../instance/files/opt/hello/health.py"),
        false,
    ),
    (
        "instance/files/opt/hello/reporter.sh",
        include_str!("../instance/files/opt/hello/reporter.sh"),
        true,
    ),
];

const SAMPLE_NAME_LINE: &str = "name = \"hello\"";

/// Writes the sample into `dir`, naming the deployment `name`. Checks every
/// target first, so a refusal leaves the folder untouched.
pub fn init(dir: &Path, name: &str) -> Result<Vec<PathBuf>> {
    if !valid_deployment_name(name) {
        return Err(Error::Usage(format!(
            "`--name {name}`: expected 1 to 40 characters of [a-z0-9-], not starting or ending with `-`"
        )));
    }
    let existing: Vec<String> = SAMPLE
        .iter()
        .map(|(rel, _, _)| dir.join(rel))
        .filter(|p| p.exists())
        .map(|p| format!("`{}`", p.display()))
        .collect();
    if !existing.is_empty() {
        return Err(Error::Usage(format!(
            "refusing to overwrite existing files: {}; choose an empty directory",
            existing.join(", ")
        )));
    }
    let mut written = Vec::new();
    for (rel, content, executable) in SAMPLE {
        let path = dir.join(rel);
        let io_err = |e: std::io::Error| Error::Usage(format!("cannot write `{}`: {e}", path.display()));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io_err)?;
        }
        let content = if *rel == "respot.toml" {
            content.replacen(SAMPLE_NAME_LINE, &format!("name = \"{name}\""), 1)
        } else {
            content.to_string()
        };
        std::fs::write(&path, content).map_err(io_err)?;
        let mode = if *executable { 0o755 } else { 0o644 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(io_err)?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files_under(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files_under(root, &path, out);
            } else {
                out.push(path.strip_prefix(root).unwrap().to_string_lossy().to_string());
            }
        }
    }

    #[test]
    fn embedded_sample_matches_the_repository() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut on_disk = vec!["respot.toml".to_string()];
        files_under(root, &root.join("templates"), &mut on_disk);
        files_under(root, &root.join("instance"), &mut on_disk);
        on_disk.sort();
        let mut embedded: Vec<String> = SAMPLE.iter().map(|(rel, _, _)| rel.to_string()).collect();
        embedded.sort();
        assert_eq!(embedded, on_disk, "scaffold::SAMPLE must list every sample file");
        for (rel, _, executable) in SAMPLE {
            let mode = std::fs::metadata(root.join(rel)).unwrap().permissions().mode();
            assert_eq!(mode & 0o111 != 0, *executable, "executable bit of {rel}");
        }
        assert!(
            SAMPLE[0].1.contains(SAMPLE_NAME_LINE),
            "init renames the deployment through this line"
        );
    }
}
