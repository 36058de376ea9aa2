//! `respot init`: a new blueprint folder from the sample embedded in the
//! binary. It only ever creates files; it refuses to overwrite any.
//! It has its own error type and knows nothing of the top-level `Error`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::config::valid_deployment_name;
use crate::exit::ExitStatus;

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

#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error("`--name {name}`: expected 1 to 40 characters of [a-z0-9-], not starting or ending with `-`")]
    InvalidName { name: String },
    /// Sample files already in `dir`; `existing` is relative to it.
    #[error(
        "refusing to overwrite existing files in `{}`: {}; choose an empty directory",
        .dir.display(),
        quoted(.existing)
    )]
    Exists { dir: PathBuf, existing: Vec<PathBuf> },
    #[error("cannot write `{}`: {source}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ScaffoldError {
    /// A bad name or an existing file is a usage error (nothing was
    /// written); a failed write is a failure (some files may exist).
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            ScaffoldError::InvalidName { .. } | ScaffoldError::Exists { .. } => ExitStatus::Usage,
            ScaffoldError::Write { .. } => ExitStatus::Failure,
        }
    }
}

fn quoted(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| format!("`{}`", p.display()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Writes the sample into `dir`, naming the deployment `name`. Checks every
/// target first, so a refusal leaves the folder untouched.
pub fn init(dir: &Path, name: &str) -> Result<Vec<PathBuf>, ScaffoldError> {
    if !valid_deployment_name(name) {
        return Err(ScaffoldError::InvalidName {
            name: name.to_string(),
        });
    }
    let existing: Vec<PathBuf> = SAMPLE
        .iter()
        .map(|(rel, _, _)| PathBuf::from(rel))
        .filter(|rel| dir.join(rel).exists())
        .collect();
    if !existing.is_empty() {
        return Err(ScaffoldError::Exists {
            dir: dir.to_path_buf(),
            existing,
        });
    }
    let mut written = Vec::new();
    for (rel, content, executable) in SAMPLE {
        let path = dir.join(rel);
        let write_err = |source| ScaffoldError::Write {
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(write_err)?;
        }
        let content = if *rel == "respot.toml" {
            content.replacen(SAMPLE_NAME_LINE, &format!("name = \"{name}\""), 1)
        } else {
            content.to_string()
        };
        std::fs::write(&path, content).map_err(write_err)?;
        let mode = if *executable { 0o755 } else { 0o644 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(write_err)?;
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

    #[test]
    fn init_writes_the_sample_once() {
        let dir = tempfile::tempdir().unwrap();
        let written = init(dir.path(), "edge-1").unwrap();
        assert_eq!(written.len(), SAMPLE.len());
        let toml = std::fs::read_to_string(dir.path().join("respot.toml")).unwrap();
        assert!(toml.contains("name = \"edge-1\""), "{toml}");
        let mode = |rel: &str| {
            std::fs::metadata(dir.path().join(rel))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("instance/files/opt/hello/reporter.sh"), 0o755);
        assert_eq!(mode("instance/files/opt/hello/health.py"), 0o644);

        let err = init(dir.path(), "other").unwrap_err();
        let ScaffoldError::Exists {
            dir: in_dir,
            existing,
        } = &err
        else {
            panic!("expected Exists, got {err}");
        };
        assert_eq!(in_dir, dir.path());
        assert_eq!(existing.len(), SAMPLE.len());
        assert_eq!(existing[0], Path::new("respot.toml"));
        assert_eq!(err.exit_status(), ExitStatus::Usage);
        assert!(
            err.to_string()
                .starts_with("refusing to overwrite existing files in `"),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("`respot.toml`, `templates/cloud-init.yaml`"),
            "{err}"
        );
    }

    #[test]
    fn bad_names_and_failed_writes_have_their_own_status() {
        let dir = tempfile::tempdir().unwrap();
        let err = init(dir.path(), "Bad_Name").unwrap_err();
        assert!(
            matches!(&err, ScaffoldError::InvalidName { name } if name == "Bad_Name"),
            "{err}"
        );
        assert_eq!(err.exit_status(), ExitStatus::Usage);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "nothing written"
        );

        let file = dir.path().join("a-file");
        std::fs::write(&file, "").unwrap();
        let err = init(&file, "hello").unwrap_err();
        let ScaffoldError::Write { path, .. } = &err else {
            panic!("expected Write, got {err}");
        };
        assert_eq!(path, &file.join("respot.toml"));
        assert_eq!(err.exit_status(), ExitStatus::Failure);
        assert!(
            err.to_string()
                .starts_with(&format!("cannot write `{}", path.display())),
            "{err}"
        );
    }
}
