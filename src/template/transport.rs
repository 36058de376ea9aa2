//! How the files reach the instance: respot's `write_files` section of the
//! document, with the blueprint's files inline or, in a bundle, replaced by
//! the bundle's sha256; and the `auto` choice between the two.

use super::gzip;
use super::pack::USER_DATA_LIMIT;
use super::{Blueprint, Bundle, InstanceFile, LaunchMaterial, Origin, inputs, instance, yaml_text};

/// What `auto` sets aside for the keys of the launch part (the host key
/// pair and the verification key, about 1 KB with their comments), which a
/// pure render cannot know: `auto` bundles when the inline user-data would
/// come closer than this to EC2's limit.
const KEYS_ALLOWANCE: usize = 1024;

/// The digest-covered files section: respot's own files always, and the
/// blueprint's inline, or a line naming the bundle that carries them.
pub(super) fn files_section(files: &[InstanceFile], bundle: Option<&Bundle>) -> String {
    match bundle {
        None => write_files_section(files.iter()),
        Some(bundle) => {
            let inline = files.iter().filter(|f| !in_bundle(f));
            format!("{}{}", write_files_section(inline), bundle_line(bundle))
        }
    }
}

/// Whether `file` travels in the bundle: the blueprint's files, except
/// per-instance templates, which cloud-init's Jinja fills in. A bundled
/// file not owned by root lands as root with its mode (the bundle step runs
/// before `users`); `respot.place` gives it its owner from
/// `/etc/respot/owners` in runcmd, before the units start. So a large
/// blueprint of a service user's files still fits.
pub(super) fn in_bundle(file: &InstanceFile) -> bool {
    file.origin == Origin::Blueprint && !file.template
}

/// The bundle's sha256 in the document, so the digest covers every file
/// of the bundle.
fn bundle_line(bundle: &Bundle) -> String {
    format!(
        "# respot bundle: sha256 {}, {} files, {} bytes; written at boot before anything else\n",
        bundle.sha256,
        bundle.files,
        bundle.archive.len()
    )
}

/// respot's `write_files`: text as a literal block scalar so gzip packs it
/// like the file itself, anything else as `b64`. A file not owned by
/// root:root waits for the final stage (`defer`), after `users`.
pub(super) fn write_files_section<'a>(files: impl Iterator<Item = &'a InstanceFile>) -> String {
    let mut out =
        String::from("\n# ---- files: instance/ and respot's own, written by respot ----\nwrite_files:\n");
    for file in files {
        out.push_str(&format!(
            "  - path: {}\n    permissions: '{}'\n",
            file.path, file.mode
        ));
        if inputs::deferred(file) {
            out.push_str(&format!(
                "    owner: '{}:{}'\n    defer: true\n",
                file.owner, file.group
            ));
        }
        out.push_str(&yaml_text::content_entry(&file.content, 4));
    }
    out
}

/// Whether `inline` (rendered with its files inline) fits EC2's limit with
/// its launch part, keys allowed for.
pub(super) fn fits_inline(inline: &Blueprint) -> bool {
    let launch = LaunchMaterial {
        generation: 1,
        ..LaunchMaterial::default()
    };
    let body = format!("{}{}", inline.document, inline.launch_section(&launch));
    body.len() + KEYS_ALLOWANCE <= USER_DATA_LIMIT
        || gzip::compresses_within(body.as_bytes(), USER_DATA_LIMIT - KEYS_ALLOWANCE)
}

impl Blueprint {
    /// The document as the blueprint alone makes it: the template's output
    /// and the blueprint's files (or the line naming their bundle), without
    /// respot's own files.
    pub(super) fn user_document(&self) -> String {
        let section = files_section(&self.files, self.bundle.as_ref());
        let document = instance::with_placeholders(&self.document);
        let Some(template_output) = document.strip_suffix(&section) else {
            return document;
        };
        let own = match &self.bundle {
            None => write_files_section(self.files.iter().filter(|f| f.origin == Origin::Blueprint)),
            Some(bundle) => {
                let inline = self
                    .files
                    .iter()
                    .filter(|f| f.origin == Origin::Blueprint && !in_bundle(f));
                format!("{}{}", write_files_section(inline), bundle_line(bundle))
            }
        };
        format!("{template_output}{own}")
    }
}
