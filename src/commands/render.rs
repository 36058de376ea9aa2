//! `respot render`: the rendered user-data on stdout; digest, version and
//! sizes on stderr, or one JSON document with all of them.

use std::path::PathBuf;

use serde::Serialize;

use super::create::launchable_blueprint;
use super::{Context, ExitStatus};
use crate::config::{HostKeyPolicy, ProviderKind};
use crate::error::{Error, Result};
use crate::keys::KeyStore;
use crate::provider::aws::bundle_url;
use crate::template::{
    self, Budget, BundleSource, InstanceFile, LargeFile, LaunchMaterial, Origin, TemplateError, UserData,
};

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
    budget: Budget,
    /// `inline` or `bundle`: how the blueprint's files travel.
    transport: &'static str,
    bundle: Option<BundleReport>,
    files: Vec<FileReport<'a>>,
    units: &'a [String],
    schema: Option<String>,
    document: &'a str,
}

#[derive(Serialize)]
struct BundleReport {
    sha256: String,
    bytes: usize,
    files: usize,
}

/// What `--output json` prints when even gzip does not fit.
#[derive(Serialize)]
struct TooLargeReport<'a> {
    error: &'static str,
    packed_bytes: usize,
    limit_bytes: usize,
    largest_files: &'a [LargeFile],
}

#[derive(Serialize)]
struct FileReport<'a> {
    path: &'a str,
    source: &'a str,
    origin: Origin,
    mode: &'a str,
    owner: &'a str,
    group: &'a str,
    sha256: &'a str,
    bytes: usize,
    /// A per-instance template (not checked by verification).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    template: bool,
}

impl<'a> From<&'a InstanceFile> for FileReport<'a> {
    fn from(f: &'a InstanceFile) -> Self {
        FileReport {
            path: &f.path,
            source: &f.source,
            origin: f.origin,
            mode: &f.mode,
            owner: &f.owner,
            group: &f.group,
            sha256: &f.sha256,
            bytes: f.content.len(),
            template: f.template,
        }
    }
}

/// On AWS, a bundle's presigned URL counted at its longest (see
/// `provider::aws::bundle_url`), which is what `create` pads its URL to;
/// locally (and without a bundle) the seed name, as a launch has it.
fn bundle_placeholder(context: &Context, blueprint: &template::Blueprint) -> Result<Option<BundleSource>> {
    let config = context.config()?;
    if blueprint.bundle.is_none()
        || context.provider.kind.unwrap_or(config.deployment.provider) != ProviderKind::Aws
    {
        return Ok(None);
    }
    let Some(region) = context
        .provider
        .aws
        .region
        .clone()
        .or_else(|| config.aws.regions.first().map(|r| r.name.clone()))
    else {
        return Ok(None);
    };
    let url = bundle_url::longest_url(
        bundle_url::endpoint_from_env().as_deref(),
        config.aws.bundle_bucket.as_deref(),
        &region,
        &blueprint.deployment,
        &blueprint.digest,
    );
    let reserve = url.len();
    Ok(Some(BundleSource::Url { url, reserve }))
}

/// Launch material of the real size, so the size `render` reports is the
/// size `create` sends: generation 1, this machine's verification key when
/// it has one, and throwaway keys of the same type and comment made in a
/// private temporary directory otherwise. Nothing in the key store changes.
/// A later generation packs within a few bytes of it: its number is in the
/// compressed manifest, which Zopfli packs a little differently.
fn launch_material(keys: &KeyStore, host_keys: HostKeyPolicy) -> Result<LaunchMaterial> {
    let scratch = tempfile::Builder::new()
        .prefix("respot-render-")
        .tempdir()
        .map_err(|source| Error::WriteFile {
            path: std::env::temp_dir(),
            source,
        })?;
    let throwaway = KeyStore::at(&scratch.path().join("keys"), keys.deployment());
    let verify_key = match keys.existing_verify_public_key() {
        Some(line) => line,
        None => throwaway.verify_public_key()?,
    };
    let host_key = match host_keys {
        HostKeyPolicy::Pinned => Some(throwaway.host_key(1)?),
        HostKeyPolicy::RecordOnFirstUse => None,
    };
    Ok(LaunchMaterial {
        generation: 1,
        host_key,
        verify_key: Some(verify_key),
        bundle_source: None,
    })
}

pub fn render(context: &Context, options: &RenderOptions) -> Result<ExitStatus> {
    let printer = context.printer;
    // `create` refuses a login key that is the verification key; say so now.
    let keys = context.keys()?;
    let blueprint = launchable_blueprint(context, &keys)?;
    let mut material = launch_material(&keys, context.config()?.ssh.host_keys)?;
    material.bundle_source = bundle_placeholder(context, &blueprint)?;
    let user_data = match blueprint.user_data(&material) {
        Err(TemplateError::TooLarge { packed, largest }) => {
            if printer.is_json() {
                let report = TooLargeReport {
                    error: "too_large",
                    packed_bytes: packed,
                    limit_bytes: template::USER_DATA_LIMIT,
                    largest_files: &largest,
                };
                printer.json(&report).map_err(Error::Output)?;
            }
            return Err(TemplateError::TooLarge { packed, largest }.into());
        }
        other => other?,
    };
    let budget = blueprint.budget(&user_data);
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
    warn_git(&blueprint.git, printer);
    if printer.is_json() {
        json_report(&blueprint, &user_data, budget, schema, printer)?;
    } else {
        text_report(&blueprint, &user_data, &budget, schema, printer)?;
    }
    Ok(ExitStatus::Success)
}

/// Warnings about provenance: ignored files shipped, a dirty tree.
fn warn_git(git: &template::GitInfo, printer: &crate::output::Printer) {
    if !git.ignored.is_empty() {
        printer.warn(&format!(
            "git ignores files of the instance directory that respot ships ({}); no commit holds them, \
             so they count as uncommitted changes",
            git.ignored.join(", ")
        ));
    }
    if git.dirty {
        printer.warn("the git tree is dirty: the version is marked -dirty and `create` will refuse without --allow-dirty");
    }
}

fn json_report(
    blueprint: &template::Blueprint,
    user_data: &UserData,
    budget: Budget,
    schema: Option<String>,
    printer: &crate::output::Printer,
) -> Result<()> {
    let report = RenderReport {
        deployment: &blueprint.deployment,
        digest: blueprint.digest.as_str(),
        version: &blueprint.version,
        git_commit: blueprint.git.commit.as_deref(),
        git_dirty: blueprint.git.dirty,
        raw_bytes: user_data.document.len(),
        packed_bytes: user_data.packed.len(),
        gzipped: user_data.gzipped,
        budget,
        transport: if blueprint.bundle.is_some() {
            "bundle"
        } else {
            "inline"
        },
        bundle: blueprint.bundle.as_ref().map(|b| BundleReport {
            sha256: b.sha256.clone(),
            bytes: b.archive.len(),
            files: b.files,
        }),
        files: blueprint.files.iter().map(FileReport::from).collect(),
        units: &blueprint.units,
        schema,
        document: &blueprint.document,
    };
    printer.json(&report).map_err(Error::Output)
}

fn text_report(
    blueprint: &template::Blueprint,
    user_data: &UserData,
    budget: &Budget,
    schema: Option<String>,
    printer: &crate::output::Printer,
) -> Result<()> {
    printer.data(&blueprint.document).map_err(Error::Output)?;
    printer.info(&format!("digest   {}", blueprint.digest));
    printer.info(&format!("version  {}", blueprint.version));
    printer.info(&format!(
        "size     {} bytes raw with launch material, {} bytes packed{}",
        user_data.document.len(),
        user_data.packed.len(),
        if user_data.gzipped { " (gzip)" } else { "" }
    ));
    printer.info(&format!(
        "budget   {} of {} bytes packed: {} the blueprint's, {} respot's; {} left",
        user_data.packed.len(),
        budget.limit_bytes,
        budget.user_bytes,
        budget.respot_bytes,
        budget.left_bytes
    ));
    if let Some(bundle) = &blueprint.bundle {
        printer.info(&format!(
            "bundle   {} files in {} bytes (tar+gzip), sha256 {}; fetched and checked at boot",
            bundle.files,
            bundle.archive.len(),
            bundle.sha256
        ));
    }
    if let Some(result) = schema {
        printer.info(&format!("schema   cloud-init schema: {result}"));
    }
    Ok(())
}

/// Runs the real `cloud-init schema`; `valid` when it has nothing to say.
fn schema_check(user_data: &UserData) -> Result<String> {
    // A Jinja document is checked as cloud-init renders it for a sample
    // instance: this machine has no instance data.
    match template::schema_check(&template::jinja_preview(&user_data.document))? {
        Some(output) if output.is_empty() => Ok("valid".to_string()),
        Some(output) => Ok(output),
        None => Err(Error::ToolMissing {
            tool: "cloud-init",
            purpose: "`render --check` (for `cloud-init schema`)",
            install: "`apt-get install cloud-init` or run `scripts/setup`",
        }),
    }
}
