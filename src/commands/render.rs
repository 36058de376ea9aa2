//! `respot render`: the rendered user-data on stdout; digest, version and
//! sizes on stderr, or one JSON document with all of them.

use std::path::PathBuf;

use serde::Serialize;

use super::create::launchable_blueprint;
use super::{Context, ExitStatus};
use crate::error::{Error, Result};
use crate::template::{self, InstanceFile, LaunchMaterial, Origin, UserData};

#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    /// Validate the whole user-data with `cloud-init schema`.
    pub check: bool,
    /// Write the packed user-data here, as a launch would send it.
    pub user_data_out: Option<PathBuf>,
}

#[derive(Serialize)]
struct RenderReport<'a> {
    deployment: &'a str,
    digest: &'a str,
    version: &'a str,
    git_commit: Option<&'a str>,
    git_dirty: bool,
    raw_bytes: usize,
    packed_bytes: usize,
    gzipped: bool,
    files: Vec<FileReport<'a>>,
    units: &'a [String],
    schema: Option<String>,
    document: &'a str,
}

#[derive(Serialize)]
struct FileReport<'a> {
    path: &'a str,
    source: &'a str,
    origin: Origin,
    mode: &'a str,
    sha256: &'a str,
    bytes: usize,
}

impl<'a> From<&'a InstanceFile> for FileReport<'a> {
    fn from(f: &'a InstanceFile) -> Self {
        FileReport {
            path: &f.path,
            source: &f.source,
            origin: f.origin,
            mode: &f.mode,
            sha256: &f.sha256,
            bytes: f.content.len(),
        }
    }
}

/// Key material of realistic shape, so sizes and the schema check cover the
/// whole user-data, launch part included.
fn sample_launch() -> LaunchMaterial {
    LaunchMaterial {
        generation: 1,
        host_key: Some((
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZWQyNTUxOQAAACA=\n-----END OPENSSH PRIVATE KEY-----\n".to_string(),
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA== respot-host".to_string(),
        )),
        verify_key: Some("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA== respot-verify".to_string()),
    }
}

pub fn render(context: &Context, options: &RenderOptions) -> Result<ExitStatus> {
    let printer = context.printer;
    // `create` refuses a login key that is the verification key; say so now.
    let blueprint = launchable_blueprint(context, &context.keys()?)?;
    let user_data = blueprint.user_data(&sample_launch())?;
    let schema = if options.check {
        Some(schema_check(&user_data)?)
    } else {
        None
    };
    if let Some(path) = &options.user_data_out {
        std::fs::write(path, &user_data.packed).map_err(|source| Error::WriteFile {
            path: path.clone(),
            source,
        })?;
    }
    if blueprint.git.dirty {
        printer.warn("the git tree is dirty: the version is marked -dirty and `create` will refuse without --allow-dirty");
    }
    if printer.is_json() {
        let report = RenderReport {
            deployment: &blueprint.deployment,
            digest: blueprint.digest.as_str(),
            version: &blueprint.version,
            git_commit: blueprint.git.commit.as_deref(),
            git_dirty: blueprint.git.dirty,
            raw_bytes: user_data.document.len(),
            packed_bytes: user_data.packed.len(),
            gzipped: user_data.gzipped,
            files: blueprint.files.iter().map(FileReport::from).collect(),
            units: &blueprint.units,
            schema,
            document: &blueprint.document,
        };
        printer.json(&report).map_err(Error::Output)?;
        return Ok(ExitStatus::Success);
    }
    printer.data(&blueprint.document).map_err(Error::Output)?;
    printer.info(&format!("digest   {}", blueprint.digest));
    printer.info(&format!("version  {}", blueprint.version));
    printer.info(&format!(
        "size     {} bytes raw with launch material, {} bytes packed{}",
        user_data.document.len(),
        user_data.packed.len(),
        if user_data.gzipped { " (gzip)" } else { "" }
    ));
    if let Some(result) = schema {
        printer.info(&format!("schema   cloud-init schema: {result}"));
    }
    Ok(ExitStatus::Success)
}

/// Runs the real `cloud-init schema`; `valid` when it has nothing to say.
fn schema_check(user_data: &UserData) -> Result<String> {
    match template::schema_check(&user_data.document)? {
        Some(output) if output.is_empty() => Ok("valid".to_string()),
        Some(output) => Ok(output),
        None => Err(Error::ToolMissing {
            tool: "cloud-init",
            purpose: "`render --check` (for `cloud-init schema`)",
            install: "`apt-get install cloud-init` or run `scripts/setup`",
        }),
    }
}
