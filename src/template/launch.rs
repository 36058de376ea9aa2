//! The launch part: per-generation material appended after the
//! digest-covered document (the manifest, respot's verification key, the
//! pinned host key), written only under top-level keys the template may not
//! use.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Serialize;

use super::{Blueprint, Digest, LaunchMaterial};
use crate::guest::{DEPLOY_LOG_PATH, INSPECTOR_PATH, MANIFEST_PATH, SUMS_PATH, UNITS_PATH, VERIFY_KEYS_DIR};

#[derive(Serialize)]
struct Manifest<'a> {
    deployment: &'a str,
    digest: &'a Digest,
    version: &'a str,
    commit: Option<&'a str>,
    generation: u64,
    user: &'a str,
    files: Vec<ManifestFile<'a>>,
    units: &'a [String],
    rendered_by: String,
}

#[derive(Serialize)]
struct ManifestFile<'a> {
    path: &'a str,
    mode: &'a str,
    sha256: &'a str,
}

impl Blueprint {
    /// The manifest the instance stores at `MANIFEST_PATH`.
    pub fn manifest_json(&self, generation: u64) -> String {
        let manifest = Manifest {
            deployment: &self.deployment,
            digest: &self.digest,
            version: &self.version,
            commit: self.git.commit.as_deref(),
            generation,
            user: &self.ssh_user,
            files: self
                .files
                .iter()
                .map(|f| ManifestFile {
                    path: &f.path,
                    mode: &f.mode,
                    sha256: &f.sha256,
                })
                .collect(),
            units: &self.units,
            rendered_by: format!("respot {}", env!("CARGO_PKG_VERSION")),
        };
        serde_json::to_string_pretty(&manifest).expect("manifest is plain data and always serializes")
    }

    /// `sha256sum`-format lines for every file, which the inspector checks
    /// for drift without parsing JSON.
    pub fn sha256_list(&self) -> String {
        self.files
            .iter()
            .map(|f| format!("{}  {}\n", f.sha256, f.path))
            .collect()
    }

    /// The launch part: reserved top-level keys carrying per-generation data.
    /// Its `bootcmd` writes, before sshd starts: the manifest (JSON), the
    /// same file list in `sha256sum` format, and the unit list.
    pub fn launch_section(&self, launch: &LaunchMaterial) -> String {
        let manifest_b64 = B64.encode(self.manifest_json(launch.generation));
        let sums_b64 = B64.encode(self.sha256_list());
        let units_b64 = B64.encode(self.units.iter().map(|u| format!("{u}\n")).collect::<String>());
        let mut out = String::new();
        out.push_str("\n# ---- respot launch material: per generation, outside the digest ----\n");
        out.push_str("bootcmd:\n");
        out.push_str(&format!(
            "  - [sh, -c, 'umask 022 && mkdir -p /etc/respot /var/log/respot && printf %s \"$1\" | base64 -d > {MANIFEST_PATH} && printf %s \"$2\" | base64 -d > {SUMS_PATH} && printf %s \"$3\" | base64 -d > {UNITS_PATH} && printf \"%s bootcmd: manifest written (generation %s, digest %s)\\n\" \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\" \"$4\" \"$5\" >> {DEPLOY_LOG_PATH}', respot, \"{manifest_b64}\", \"{sums_b64}\", \"{units_b64}\", \"{}\", \"{}\"]\n",
            launch.generation,
            self.digest.short()
        ));
        if let Some(verify_key) = &launch.verify_key {
            let line = format!("restrict,command=\"{INSPECTOR_PATH}\" {}\n", verify_key.trim());
            out.push_str(&format!(
                "  - [sh, -c, 'umask 022 && mkdir -p {VERIFY_KEYS_DIR} && printf %s \"$1\" | base64 -d > {VERIFY_KEYS_DIR}/{user}', respot, \"{}\"]\n",
                B64.encode(line),
                user = self.ssh_user,
            ));
        }
        if let Some((private, public)) = &launch.host_key {
            out.push_str("ssh_deletekeys: true\n");
            out.push_str("ssh_genkeytypes: [ed25519]\n");
            out.push_str("ssh_keys:\n");
            out.push_str("  ed25519_private: |\n");
            for line in private.lines() {
                out.push_str("    ");
                out.push_str(line);
                out.push('\n');
            }
            out.push_str(&format!("  ed25519_public: {}\n", public.trim()));
        }
        out
    }
}
