//! What `respot.toml` adds to the instance files: owners, groups and modes
//! (`[[files]]`), directories, secrets' places, packages and the unit start
//! order. Read from the config at load, applied in the pure render.
//!
//! In the document: files not owned by root:root are written with
//! `defer: true` (cloud-init's final stage, after `users` has created their
//! owner); the template gets `directories`, `packages` and `unit_steps` to
//! render into `runcmd` and `packages` (the sample template shows how); and
//! respot ships the lists the inspector checks (`/etc/respot/directories`,
//! `secrets`, `packages`) when they are not empty.

use serde::Serialize;

use super::InstanceFile;
use crate::config::{Config, FileRule, PackageSpec, ProviderKind, UnitStep, file_attributes, units};
use crate::guest;

/// A directory or secret on the instance, as the template sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Placed {
    pub path: String,
    pub owner: String,
    pub group: String,
    /// Four octal digits.
    pub mode: String,
}

/// The config's part of a render.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub rules: Vec<FileRule>,
    pub directories: Vec<Placed>,
    pub secrets: Vec<Placed>,
    /// Where each secret comes from, for the installer: `seed:secret-N`
    /// (local VMs, see `seed_name`) or `ssm:/name`.
    pub secret_sources: Vec<String>,
    pub packages: Vec<PackageSpec>,
    pub unit_order: Option<Vec<UnitStep>>,
}

/// Where every image's directories are open to all (0755), so a file
/// open to others there is one `respot-verify` can hash itself.
const OPEN_TREES: [&str; 5] = [
    "/etc/systemd/system/",
    "/opt/",
    "/srv/",
    "/usr/local/",
    "/usr/lib/",
];

/// The name of secret `index` in a local VM's NoCloud seed.
pub fn seed_name(index: usize) -> String {
    format!("secret-{index}")
}

impl Inputs {
    pub fn from_config(config: &Config) -> Inputs {
        let placed = |path: &str, own: crate::config::Ownership| Placed {
            path: path.to_string(),
            owner: own.owner,
            group: own.group,
            mode: own.mode.map_or_else(String::new, |m| m.octal()),
        };
        Inputs {
            rules: config.files.clone(),
            directories: config
                .directories
                .iter()
                .map(|d| placed(&d.path, d.ownership()))
                .collect(),
            secrets: config
                .secrets
                .iter()
                .map(|s| placed(&s.path, s.ownership()))
                .collect(),
            secret_sources: config
                .secrets
                .iter()
                .enumerate()
                .map(|(i, s)| match (config.deployment.provider, &s.ssm) {
                    (ProviderKind::Aws, Some(name)) => format!("ssm:{name}"),
                    _ => format!("seed:{}", seed_name(i)),
                })
                .collect(),
            packages: config.package_specs(),
            unit_order: config.deployment.units.clone(),
        }
    }

    /// Sets the owner, group and mode `[[files]]` gives the blueprint file
    /// at `relative` (to the instance directory).
    pub fn apply(&self, relative: &str, file: &mut InstanceFile) {
        let (own, _) = file_attributes(&self.rules, relative);
        file.owner = own.owner;
        file.group = own.group;
        if let Some(mode) = own.mode {
            file.mode = mode.octal();
        }
    }

    /// Whether `[[files]]` marks the file at `relative` as a template.
    pub fn is_template(&self, relative: &str) -> bool {
        file_attributes(&self.rules, relative).1
    }

    /// The lists the inspector and `guest::PLACE` read, those not empty,
    /// and `PLACE` itself when it has work: (path, mode, content). `files`
    /// are the blueprint's, owners applied.
    pub fn generated_files(&self, files: &[InstanceFile]) -> Vec<(&'static str, &'static str, Vec<u8>)> {
        let line = |p: &Placed| format!("{} {} {} {}", p.path, p.owner, p.group, p.mode);
        let directories: Vec<String> = self.directories.iter().map(line).collect();
        let owners: Vec<String> = files
            .iter()
            .filter(|f| deferred(f))
            .map(|f| format!("{} {} {}", f.path, f.owner, f.group))
            .collect();
        let secrets: Vec<String> = self
            .secrets
            .iter()
            .zip(&self.secret_sources)
            .map(|(s, source)| format!("{} {source}", line(s)))
            .collect();
        let names: Vec<&str> = self.packages.iter().map(|p| p.name.as_str()).collect();
        let place = if secrets.is_empty() && directories.is_empty() && owners.is_empty() {
            String::new()
        } else {
            guest::PLACE.shipped()
        };
        [
            (guest::DIRECTORIES_PATH, "0644", guest::lines_file(&directories)),
            (guest::OWNERS_PATH, "0644", guest::lines_file(&owners)),
            (guest::SECRETS_PATH, "0644", guest::lines_file(&secrets)),
            (guest::PACKAGES_PATH, "0644", guest::lines_file(&names)),
            (guest::PLACE.path, guest::PLACE.mode, place),
        ]
        .into_iter()
        .filter(|(_, _, content)| !content.is_empty())
        .map(|(path, mode, content)| (path, mode, content.into_bytes()))
        .collect()
    }

    /// The inspector's parts this blueprint's instances need. Hashing as
    /// root (`root_hash`, with its sudo rule) ships with a secret, a
    /// directory closed to others, a file closed to others, and a file
    /// outside the trees that are open on every image (`OPEN_TREES`), whose
    /// directories respot cannot vouch for (`/root`, `/etc/ssl/private`).
    pub fn inspector_parts(&self, files: &[InstanceFile]) -> guest::InspectorParts {
        let closed = |mode: &str, bit: u32| u32::from_str_radix(mode, 8).map_or(true, |m| m & bit == 0);
        let open_tree = |path: &str| OPEN_TREES.iter().any(|tree| path.starts_with(tree));
        guest::InspectorParts {
            packages: !self.packages.is_empty(),
            placed: !self.directories.is_empty() || !self.secrets.is_empty(),
            root_hash: !self.secrets.is_empty()
                || self
                    .directories
                    .iter()
                    .any(|d| !d.mode.is_empty() && closed(&d.mode, 0o001))
                || files
                    .iter()
                    .any(|f| closed(&f.mode, 0o004) || !open_tree(&f.path)),
        }
    }

    /// The start steps for the unit files `all` (file names).
    pub fn unit_steps(&self, all: &[String]) -> Vec<Vec<String>> {
        units::start_steps(self.unit_order.as_deref(), all)
    }

    /// cloud-init's `packages` entries: `name`, or `[name, pin]`.
    pub fn package_entries(&self) -> Vec<serde_json::Value> {
        self.packages
            .iter()
            .map(|p| match &p.pin {
                Some(pin) => serde_json::json!([p.name, pin]),
                None => serde_json::json!(p.name),
            })
            .collect()
    }
}

/// Whether a file must wait for cloud-init's final stage: its owner or
/// group may be created by the same document's `users`.
pub fn deferred(file: &InstanceFile) -> bool {
    file.owner != "root" || file.group != "root"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mode;

    #[test]
    fn generated_lists_only_when_not_empty() {
        let mut inputs = Inputs::default();
        assert!(inputs.generated_files(&[]).is_empty());
        inputs.directories.push(Placed {
            path: "/var/lib/app".into(),
            owner: "app".into(),
            group: "app".into(),
            mode: Mode(0o750).octal(),
        });
        inputs.packages.push(PackageSpec::parse("curl=7.88*").unwrap());
        let got: Vec<(&str, String)> = inputs
            .generated_files(&[])
            .into_iter()
            .map(|(p, _, c)| (p, String::from_utf8(c).unwrap()))
            .collect();
        assert_eq!(
            got,
            vec![
                (guest::DIRECTORIES_PATH, "/var/lib/app app app 0750\n".to_string()),
                (guest::PACKAGES_PATH, "curl\n".to_string()),
                (guest::PLACE.path, guest::PLACE.shipped()),
            ]
        );
        assert_eq!(
            inputs.package_entries(),
            vec![serde_json::json!(["curl", "7.88*"])]
        );
    }

    #[test]
    fn hashing_as_root_ships_with_what_respot_verify_may_not_read() {
        let file = |path: &str, mode: &str| {
            InstanceFile::new(
                path.into(),
                "t".into(),
                super::super::Origin::Blueprint,
                mode,
                Vec::new(),
            )
        };
        let open = [
            file("/opt/app/a.conf", "0644"),
            file("/etc/systemd/system/a.service", "0644"),
        ];
        let mut inputs = Inputs::default();
        assert_eq!(inputs.inspector_parts(&open), guest::InspectorParts::default());
        assert!(inputs.inspector_parts(&[file("/opt/app/key", "0600")]).root_hash);
        assert!(inputs.inspector_parts(&[file("/opt/app/key", "0640")]).root_hash);
        assert!(
            inputs
                .inspector_parts(&[file("/var/lib/app/x", "0644")])
                .root_hash
        );
        let dir = |mode: &str| Placed {
            path: "/opt/app".into(),
            owner: "app".into(),
            group: "app".into(),
            mode: mode.into(),
        };
        inputs.directories.push(dir("0755"));
        let parts = inputs.inspector_parts(&open);
        assert!(parts.placed && !parts.root_hash && !parts.packages);
        inputs.directories[0] = dir("0750");
        assert!(inputs.inspector_parts(&open).root_hash);
        inputs.directories.clear();
        inputs.secrets.push(dir("0600"));
        let parts = inputs.inspector_parts(&open);
        assert!(parts.placed && parts.root_hash);
    }
}
