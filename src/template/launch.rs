//! The launch part: per-generation material appended after the
//! digest-covered document (the manifest, respot's verification account and
//! key, the pinned host key), written only under top-level keys the template
//! may not use.

use serde::Serialize;

use super::{Blueprint, BundleSource, Digest, LaunchMaterial, yaml_text};
use crate::guest;
use crate::guest::{
    DEPLOY_LOG_PATH, INSPECTOR_PATH, MANIFEST_PATH, SUMS_PATH, UNITS_PATH, VERIFY_HOME, VERIFY_KEYS_DIR,
    VERIFY_USER,
};

/// `text` as a YAML double-quoted scalar (a URL's `&`, `%` and `:` are
/// safe there; `"` and `\\` are escaped).
fn quoted(text: &str) -> String {
    serde_json::to_string(text).expect("a string always serializes")
}

/// Makes respot's verification account, or on every later boot (bootcmd runs
/// each boot) puts it back as it must be: a system account with shell
/// `/bin/sh` and no password (`!`: locked), whose supplementary groups are
/// exactly those of `adm` and `systemd-journal` that exist (it creates
/// neither), and whose home is root-owned 0755, so it cannot write there.
/// `$1` is the account, `$2` its home. No `'` inside: it is a YAML
/// single-quoted scalar.
/// Short options (`-r` system, `-M` no home made, `-d` home, `-s` shell,
/// `-G` groups, `-p` password): the same in shadow-utils everywhere, and
/// shorter on every instance.
const VERIFY_ACCOUNT_SCRIPT: &str = "set -e; g=; for x in adm systemd-journal; do \
    getent group $x >/dev/null && g=${g:+$g,}$x || :; done; \
    getent passwd \"$1\" >/dev/null || useradd -r -M -d \"$2\" -s /bin/sh \"$1\"; \
    usermod -d \"$2\" -s /bin/sh -G \"$g\" -p ! \"$1\"; \
    install -d -o root -g root -m 0755 \"$2\"";

/// The bootcmd step that writes respot's verification key, in two parts:
/// the fixed text (script, key type), which ends the compressed launch
/// part, and the key's random base64 and comment, which begin the stored
/// keys. The key file gets `restrict,command="INSPECTOR_PATH" KEY`.
fn verify_key_step(verify_key: &str) -> (String, String) {
    // Type and key; the comment is for people, and costs user-data.
    let mut words = verify_key.split_whitespace();
    let (kind, blob) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let quoted_key = quoted(&format!("{kind} {blob}"));
    let fixed_blob = match blob.starts_with(ED25519_BLOB_HEADER) {
        true => ED25519_BLOB_HEADER.len(),
        false => 0,
    };
    let split = 1 + kind.len() + 1 + fixed_blob;
    let (fixed, random) = quoted_key.split_at(split.min(quoted_key.len()));
    (
        format!(
            "  - [sh, -c, 'umask 022 && mkdir -p {VERIFY_KEYS_DIR} && printf \"restrict,command=\\\"%s\\\" %s\\n\" {INSPECTOR_PATH} \"$1\" > {VERIFY_KEYS_DIR}/{VERIFY_USER}', respot, {fixed}"
        ),
        format!("{random}]\n"),
    )
}

/// The first 25 base64 characters of every ed25519 public key: the length
/// and name of its type, and the length of the key (19 bytes, the 25th
/// character's top bits).
const ED25519_BLOB_HEADER: &str = "AAAAC3NzaC1lZDI1NTE5AAAAI";

/// The first 70 base64 characters of every unencrypted OpenSSH ed25519
/// private key (magic, cipher and KDF `none`, one key, its type): the
/// first line of the key's armoured text, the same for every key.
const ED25519_KEY_HEADER: &str = "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW";

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
    owner: &'a str,
    group: &'a str,
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
                    owner: &f.owner,
                    group: &f.group,
                    mode: &f.mode,
                    sha256: &f.sha256,
                })
                .collect(),
            units: &self.units,
            rendered_by: format!("respot {}", env!("CARGO_PKG_VERSION")),
        };
        serde_json::to_string(&manifest).expect("manifest is plain data and always serializes")
    }

    /// `sha256sum`-format lines for every file, which the inspector checks
    /// for drift without parsing JSON.
    pub fn sha256_list(&self) -> String {
        self.files
            .iter()
            .filter(|f| !f.template)
            .map(|f| format!("{}  {}\n", f.sha256, f.path))
            .collect()
    }

    /// The launch part: reserved top-level keys carrying per-generation data.
    /// Its `bootcmd` does, before sshd starts: write the manifest (JSON), the
    /// same file list in `sha256sum` format and the unit list; make the
    /// verification account `VERIFY_USER`; and write its one key
    /// ([`Blueprint::key_section`], which continues this `bootcmd` list).
    pub fn launch_section(&self, launch: &LaunchMaterial) -> String {
        self.launch_parts(launch)
            .into_iter()
            .map(|(text, _)| text)
            .collect()
    }

    /// The launch part in parts, each `(text, random)` as in
    /// [`Blueprint::key_parts`]: a presigned bundle URL is random (its
    /// signature, its token) and padded to its reserve, so it is stored.
    pub fn launch_parts(&self, launch: &LaunchMaterial) -> Vec<(String, bool)> {
        let manifest = self.manifest_json(launch.generation);
        let sums = self.sha256_list();
        let units: String = self.units.iter().map(|u| format!("{u}\n")).collect();
        let mut out = String::new();
        out.push_str("\n# ---- respot launch material: per generation, outside the digest ----\n");
        out.push_str("bootcmd:\n");
        // Plain text (block scalars), not base64: the outer gzip then packs
        // the manifest and shares the hashes it repeats with the file list.
        out.push_str(&format!(
            "  - - sh\n    - -c\n    - 'umask 022 && mkdir -p /etc/respot /var/log/respot && printf %s \"$1\" > {MANIFEST_PATH} && printf %s \"$2\" > {SUMS_PATH} && printf %s \"$3\" > {UNITS_PATH} && printf \"%s bootcmd: manifest written (generation %s, digest %s)\\n\" \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\" \"$4\" \"$5\" >> {DEPLOY_LOG_PATH}'\n    - respot\n"
        ));
        for text in [manifest.as_str(), sums.as_str(), units.as_str()] {
            out.push_str("    - ");
            out.push_str(&yaml_text::block_value(text, 6));
        }
        out.push_str(&format!(
            "    - \"{}\"\n    - \"{}\"\n",
            launch.generation,
            self.digest.short()
        ));
        out.push_str(&format!(
            "  - [sh, -c, '{VERIFY_ACCOUNT_SCRIPT}', respot, {VERIFY_USER}, {VERIFY_HOME}]\n"
        ));
        let mut parts = Vec::new();
        if let Some(bundle) = &self.bundle {
            out.push_str("  - - python3\n    - -I\n    - -c\n    - ");
            out.push_str(&yaml_text::block_value(&guest::bundle_step(), 6));
            out.push_str(&format!("    - {}\n    - ", bundle.sha256));
            match &launch.bundle_source {
                Some(BundleSource::Url { url, reserve }) => {
                    // Trailing spaces after a quoted scalar are nothing to
                    // YAML; they pad the URL to its reserve.
                    let text = quoted(url);
                    let pad = (reserve + 2).saturating_sub(text.len());
                    parts.push((std::mem::take(&mut out), false));
                    parts.push((format!("{text}{}\n", " ".repeat(pad)), true));
                }
                Some(BundleSource::Seed(name)) => {
                    out.push_str(&format!("{}\n", quoted(&format!("seed:{name}"))))
                }
                None => out.push_str(&format!(
                    "{}\n",
                    quoted(&format!("seed:{}", guest::SEED_BUNDLE_NAME))
                )),
            }
        }
        if let Some(verify_key) = &launch.verify_key {
            out.push_str(&verify_key_step(verify_key).0);
        }
        parts.push((out, false));
        parts
    }

    /// The keys: the end of the launch part, all of [`Blueprint::key_parts`].
    pub fn key_section(&self, launch: &LaunchMaterial) -> String {
        self.key_parts(launch).into_iter().map(|(text, _)| text).collect()
    }

    /// The keys in parts, each `(text, random)`. A random part holds key
    /// bytes, of a length fixed by the key types and comments: packing
    /// stores it uncompressed, so the packed size does not depend on which
    /// keys they are. The parts between (YAML keys, the fixed first line of
    /// an OpenSSH ed25519 key) are compressed. The host key's public half
    /// is left out: cloud-init derives it from the private key
    /// (`ssh-keygen -y`), and respot pins it from its own key store.
    pub fn key_parts(&self, launch: &LaunchMaterial) -> Vec<(String, bool)> {
        let mut parts = Vec::new();
        if let Some(verify_key) = &launch.verify_key {
            parts.push((verify_key_step(verify_key).1, true));
        }
        if let Some((private, _public)) = &launch.host_key {
            let mut fixed = String::from(
                "ssh_deletekeys: true\nssh_genkeytypes: [ed25519]\nssh_keys:\n  ed25519_private: |\n",
            );
            let mut lines = private.lines().peekable();
            // The armour line, then the key's first base64 line when it is
            // the header every unencrypted ed25519 key starts with.
            if let Some(line) = lines.next_if(|l| l.starts_with("-----BEGIN")) {
                fixed.push_str(&format!("    {line}\n"));
            }
            if let Some(line) = lines.next_if(|l| *l == ED25519_KEY_HEADER) {
                fixed.push_str(&format!("    {line}\n"));
            }
            parts.push((fixed, false));
            let random: String = lines.map(|line| format!("    {line}\n")).collect();
            parts.push((random, true));
        }
        parts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::GitInfo;

    fn blueprint() -> Blueprint {
        Blueprint {
            deployment: "demo".to_string(),
            document: "#cloud-config\n".to_string(),
            digest: Digest::parse(&"a".repeat(64)).expect("64 hex chars"),
            version: "test".to_string(),
            git: GitInfo::default(),
            files: Vec::new(),
            units: Vec::new(),
            ssh_user: "alice".to_string(),
            authorized_keys: Vec::new(),
            bundle: None,
        }
    }

    /// The key step's script and argument, run by `sh` as cloud-init would
    /// (the YAML parsed), rooted in a temporary directory: the key file.
    fn run_key_step(line: &str) -> String {
        let step: Vec<String> =
            serde_norway::from_str(line.trim_start_matches("  - ")).expect("a flow sequence");
        let dir = tempfile::tempdir().unwrap();
        let script = step[2].replace(VERIFY_KEYS_DIR, &dir.path().display().to_string());
        let status = std::process::Command::new("sh")
            .args(["-c", &script, &step[3], &step[4]])
            .status()
            .unwrap();
        assert!(status.success());
        std::fs::read_to_string(dir.path().join(VERIFY_USER)).unwrap()
    }

    /// A presigned URL is stored, padded to its reserve: any URL up to it
    /// packs to the same size, which is what `render` counts.
    #[test]
    fn a_bundle_url_packs_to_its_reserve_whatever_its_length() {
        let mut bundled = blueprint();
        bundled.document = format!("#cloud-config\n{}", "# filler line\n".repeat(2000));
        bundled.bundle = Some(crate::template::Bundle {
            archive: Vec::new(),
            sha256: "b".repeat(64),
            files: 0,
        });
        let packed = |url: &str| {
            let launch = LaunchMaterial {
                generation: 1,
                host_key: None,
                verify_key: Some("ssh-ed25519 AAAAtest respot-verify\n".to_string()),
                bundle_source: Some(BundleSource::Url {
                    url: url.to_string(),
                    reserve: 300,
                }),
            };
            let parts = bundled.launch_parts(&launch);
            assert!(
                parts
                    .iter()
                    .any(|(text, random)| *random && text.starts_with(&format!("\"{url}\"")))
            );
            let user_data = bundled.user_data(&launch).unwrap();
            assert!(user_data.gzipped);
            let yaml: serde_norway::Value = serde_norway::from_str(&user_data.document).unwrap();
            let step = &yaml["bootcmd"][2];
            assert_eq!(
                step[5].as_str(),
                Some(url),
                "the URL reads back without its padding"
            );
            user_data.packed.len()
        };
        let short = packed("https://b.s3.eu-west-1.amazonaws.com/k?X-Amz-Signature=1");
        let long = packed(&format!(
            "https://b.s3.eu-west-1.amazonaws.com/k?X-Amz-Signature={}",
            "f".repeat(200)
        ));
        assert_eq!(short, long);
    }

    #[test]
    fn bootcmd_makes_the_verification_account_and_keys_it_alone() {
        let launch = LaunchMaterial {
            generation: 3,
            host_key: None,
            verify_key: Some("ssh-ed25519 AAAAtest respot-verify\n".to_string()),
            bundle_source: None,
        };
        let part = format!(
            "{}{}",
            blueprint().launch_section(&launch),
            blueprint().key_section(&launch)
        );
        let bootcmd: Vec<&str> = part.lines().filter(|l| l.starts_with("  - ")).collect();
        assert_eq!(bootcmd.len(), 3, "{part}");
        assert_eq!(bootcmd[0], "  - - sh", "the manifest step, as a block sequence");
        assert!(bootcmd[1].contains("useradd -r -M"), "{}", bootcmd[1]);
        assert!(
            bootcmd[1].ends_with("', respot, respot-verify, /var/lib/respot-verify]"),
            "{}",
            bootcmd[1]
        );
        assert!(
            !VERIFY_ACCOUNT_SCRIPT.contains('\''),
            "it sits in a single-quoted YAML scalar"
        );
        // The key goes to respot-verify's file, never to ssh.user's, and
        // runs the inspector only.
        assert!(
            bootcmd[2].contains(" > /etc/respot/verify_keys/respot-verify'"),
            "{}",
            bootcmd[2]
        );
        assert!(!bootcmd[2].contains("alice"));
        assert_eq!(
            run_key_step(bootcmd[2]),
            "restrict,command=\"/usr/lib/respot/inspect\" ssh-ed25519 AAAAtest\n"
        );
        // Only the key's random part is stored (uncompressed); no comment.
        assert_eq!(blueprint().key_section(&launch), "AAAAtest\"]\n");
        let real = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJSH2pFJW1xcFGl+wag9EQFNUVe3GmxLruPv/d/3wjro respot-verify@demo\n";
        let (fixed, random) = verify_key_step(real);
        assert!(
            fixed.ends_with(", respot, \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI"),
            "{fixed}"
        );
        assert_eq!(random, "JSH2pFJW1xcFGl+wag9EQFNUVe3GmxLruPv/d/3wjro\"]\n");
        assert_eq!(
            run_key_step(&format!("{fixed}{random}")),
            format!("restrict,command=\"/usr/lib/respot/inspect\" {}\n", &real[..80])
        );
        // Without a key, the account is still made.
        let part = blueprint().launch_section(&LaunchMaterial::default())
            + &blueprint().key_section(&LaunchMaterial::default());
        assert!(part.contains("useradd -r -M"));
        assert!(!part.contains(VERIFY_KEYS_DIR));
    }
}
