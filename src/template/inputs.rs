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
use crate::config::{Config, FileRule, PackageSpec, UnitStep, file_attributes, units};
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
    pub packages: Vec<PackageSpec>,
    pub unit_order: Option<Vec<UnitStep>>,
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

    /// The lists the inspector checks, for those that are not empty:
    /// (path, mode, content).
    pub fn generated_files(&self) -> Vec<(&'static str, &'static str, Vec<u8>)> {
        let paths = |list: &[Placed]| list.iter().map(|p| p.path.clone()).collect::<Vec<_>>();
        let names: Vec<&str> = self.packages.iter().map(|p| p.name.as_str()).collect();
        [
            (
                guest::DIRECTORIES_PATH,
                guest::lines_file(&paths(&self.directories)),
            ),
            (guest::SECRETS_PATH, guest::lines_file(&paths(&self.secrets))),
            (guest::PACKAGES_PATH, guest::lines_file(&names)),
        ]
        .into_iter()
        .filter(|(_, content)| !content.is_empty())
        .map(|(path, content)| (path, "0644", content.into_bytes()))
        .collect()
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
        assert!(inputs.generated_files().is_empty());
        inputs.directories.push(Placed {
            path: "/var/lib/app".into(),
            owner: "app".into(),
            group: "app".into(),
            mode: Mode(0o750).octal(),
        });
        inputs.packages.push(PackageSpec::parse("curl=7.88*").unwrap());
        let got: Vec<(&str, String)> = inputs
            .generated_files()
            .into_iter()
            .map(|(p, _, c)| (p, String::from_utf8(c).unwrap()))
            .collect();
        assert_eq!(
            got,
            vec![
                (guest::DIRECTORIES_PATH, "/var/lib/app\n".to_string()),
                (guest::PACKAGES_PATH, "curl\n".to_string()),
            ]
        );
        assert_eq!(
            inputs.package_entries(),
            vec![serde_json::json!(["curl", "7.88*"])]
        );
    }
}
