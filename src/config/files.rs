//! The blueprint's file attributes and extra inputs in `respot.toml`:
//! `[[files]]` (owner, group and mode of instance files, by path or glob),
//! `[[directories]]`, `[[secrets]]`, `[packages]` and the unit start order
//! (`deployment.units`).
//!
//! Only the shapes and their resolution live here; `files_check` checks
//! them against the instance directory with file:line:key errors.
//!
//! Ownership follows `chown`: `owner = "app"` sets the user and leaves the
//! group `root`; `owner = "app:app"` or `group = "app"` sets the group.
//! When several `[[files]]` entries match one file, the last one wins, key
//! by key (a later entry that only sets `mode` keeps an earlier `owner`).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::glob;

/// A file mode such as `0640`, written in `respot.toml` as a string of
/// octal digits (TOML would read `640` as a decimal number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mode(pub u32);

impl Mode {
    /// `0640`, `640`, `2775`: 3 or 4 octal digits, at most `07777`.
    pub fn parse(text: &str) -> Option<Mode> {
        let digits = text.strip_prefix("0o").unwrap_or(text);
        if !(3..=4).contains(&digits.len()) || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            return None;
        }
        u32::from_str_radix(digits, 8).ok().map(Mode)
    }

    /// Four octal digits, as cloud-init's `permissions` and `stat -c %04a`.
    pub fn octal(&self) -> String {
        format!("{:04o}", self.0)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.octal())
    }
}

impl Serialize for Mode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.octal())
    }
}

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Mode, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Mode;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an octal mode as a string, such as \"0640\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Mode, E> {
                Mode::parse(v).ok_or_else(|| {
                    E::custom(format!(
                        "expected an octal mode of 3 or 4 digits 0-7 such as \"0640\", got `{v}`"
                    ))
                })
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Mode, E> {
                Err(E::custom(format!(
                    "write the mode as a quoted octal string such as \"0640\"; TOML reads {v} as a number"
                )))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `[[files]]`: attributes of the instance files that `path` matches.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileRule {
    /// Relative to the instance directory, under `files/`; may hold `*`,
    /// `?` and whole-segment `**`.
    pub path: String,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub mode: Option<Mode>,
    /// The file is rendered with per-instance values at boot.
    #[serde(default)]
    pub template: bool,
}

/// `[[directories]]`: a directory the instance gets, empty unless files
/// land in it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryRule {
    /// Absolute path on the instance.
    pub path: String,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub mode: Option<Mode>,
}

/// `[[secrets]]`: a file whose content never enters git or user-data.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SecretEntry {
    /// Absolute path on the instance.
    pub path: String,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    /// Defaults to `0600`.
    #[serde(default)]
    pub mode: Option<Mode>,
    /// AWS: an SSM Parameter Store parameter (a `SecureString`), fetched at
    /// boot with the instance profile.
    #[serde(default)]
    pub ssm: Option<String>,
    /// Local VMs: a file on the operator's machine, relative to
    /// `respot.toml`'s directory (`~/` expands).
    #[serde(default)]
    pub local_file: Option<String>,
}

/// `[packages]`: `name` or `name=version` (a trailing `*` matches any rest).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PackagesSection {
    #[serde(default)]
    pub apt: Vec<String>,
    #[serde(default)]
    pub dnf: Vec<String>,
}

/// One step of `deployment.units`: a unit started alone, after the steps
/// before it, or a group started together in one `systemctl` call.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum UnitStep {
    One(String),
    Together(Vec<String>),
}

impl UnitStep {
    pub fn names(&self) -> &[String] {
        match self {
            UnitStep::One(name) => std::slice::from_ref(name),
            UnitStep::Together(names) => names,
        }
    }
}

/// A package and its optional version pin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PackageSpec {
    pub name: String,
    /// As written after `=`: `1.6*`, `1.6-2ubuntu1`.
    pub pin: Option<String>,
}

impl PackageSpec {
    /// `name` or `name=pin`; `None` when either part has characters no
    /// package manager uses.
    pub fn parse(text: &str) -> Option<PackageSpec> {
        let (name, pin) = match text.split_once('=') {
            Some((name, pin)) => (name, Some(pin)),
            None => (text, None),
        };
        let name_ok = name.len() <= 100
            && name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.' | b'_'));
        let pin_ok = pin.is_none_or(|p| {
            !p.is_empty()
                && p.len() <= 100
                && p.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'~' | b':' | b'-' | b'_' | b'*')
                })
        });
        (name_ok && pin_ok).then(|| PackageSpec {
            name: name.to_string(),
            pin: pin.map(str::to_string),
        })
    }

    /// Whether an installed `version` satisfies the pin (`*` matches any run).
    pub fn accepts(&self, version: &str) -> bool {
        match &self.pin {
            None => true,
            Some(pin) => glob::matches_text(pin, version),
        }
    }
}

/// Which package list an instance uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageManager {
    Apt,
    Dnf,
}

/// Owner, group and mode as they land on the instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ownership {
    pub owner: String,
    pub group: String,
    pub mode: Option<Mode>,
}

/// `owner` (`user` or `user:group`) and `group` resolved: (user, group).
/// Validation has refused a group given twice.
pub fn owner_and_group(owner: Option<&str>, group: Option<&str>) -> (String, String) {
    let (user, from_owner) = match owner.map(|o| o.split_once(':')) {
        Some(Some((user, group))) => (user.to_string(), Some(group.to_string())),
        Some(None) => (owner.unwrap_or("root").to_string(), None),
        None => ("root".to_string(), None),
    };
    let group = from_owner
        .or_else(|| group.map(str::to_string))
        .unwrap_or_else(|| "root".to_string());
    (user, group)
}

/// The attributes of the instance file at `relative` (to the instance
/// directory): the matching `rules`, later ones winning key by key;
/// root:root and no mode (the mapping convention's) when none match. Also
/// whether the file is a template.
pub fn file_attributes(rules: &[FileRule], relative: &str) -> (Ownership, bool) {
    let mut owner: Option<&str> = None;
    let mut group: Option<&str> = None;
    let mut mode = None;
    let mut template = false;
    for rule in rules.iter().filter(|r| glob::matches_path(&r.path, relative)) {
        if let Some(o) = rule.owner.as_deref() {
            owner = Some(o);
            if o.contains(':') {
                group = None;
            }
        }
        if rule.group.is_some() {
            group = rule.group.as_deref();
        }
        mode = rule.mode.or(mode);
        template |= rule.template;
    }
    let (owner, group) = match (owner, group) {
        (Some(o), Some(g)) if !o.contains(':') => (o.to_string(), g.to_string()),
        (o, g) => owner_and_group(o, g),
    };
    (Ownership { owner, group, mode }, template)
}

impl DirectoryRule {
    /// Owner and group as for files; mode `0755` unless given.
    pub fn ownership(&self) -> Ownership {
        let (owner, group) = owner_and_group(self.owner.as_deref(), self.group.as_deref());
        Ownership {
            owner,
            group,
            mode: Some(self.mode.unwrap_or(Mode(0o755))),
        }
    }
}

impl SecretEntry {
    /// Owner and group as for files; mode `0600` unless given.
    pub fn ownership(&self) -> Ownership {
        let (owner, group) = owner_and_group(self.owner.as_deref(), self.group.as_deref());
        Ownership {
            owner,
            group,
            mode: Some(self.mode.unwrap_or(Mode(0o600))),
        }
    }
}

impl super::Config {
    /// The attributes of the instance file at `relative`: see
    /// [`file_attributes`].
    pub fn file_attributes(&self, relative: &str) -> (Ownership, bool) {
        file_attributes(&self.files, relative)
    }

    /// The package manager of the instances: `dnf` on Amazon Linux images
    /// (`al2023`), `apt` on Ubuntu and local VMs. A literal `ami-...` id
    /// uses `dnf` only when the blueprint lists dnf packages and no apt ones.
    pub fn package_manager(&self) -> PackageManager {
        use super::ProviderKind;
        let image = self.aws.image.as_str();
        match self.deployment.provider {
            ProviderKind::Local => PackageManager::Apt,
            ProviderKind::Aws if image.starts_with("al") => PackageManager::Dnf,
            ProviderKind::Aws
                if image.starts_with("ami-")
                    && self.packages.apt.is_empty()
                    && !self.packages.dnf.is_empty() =>
            {
                PackageManager::Dnf
            }
            ProviderKind::Aws => PackageManager::Apt,
        }
    }

    /// The packages the instances install, for their package manager.
    pub fn package_specs(&self) -> Vec<PackageSpec> {
        let list = match self.package_manager() {
            PackageManager::Apt => &self.packages.apt,
            PackageManager::Dnf => &self.packages.dnf,
        };
        list.iter().filter_map(|p| PackageSpec::parse(p)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_octal_strings() {
        let cases: &[(&str, Option<u32>)] = &[
            ("0640", Some(0o640)),
            ("640", Some(0o640)),
            ("2775", Some(0o2775)),
            ("0o600", Some(0o600)),
            ("0800", None),
            ("64", None),
            ("07777", None),
            ("rw-r--r--", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(Mode::parse(text).map(|m| m.0), *want, "{text:?}");
        }
        assert_eq!(Mode(0o600).octal(), "0600");
    }

    #[test]
    fn packages_and_pins() {
        let jq = PackageSpec::parse("jq=1.6*").unwrap();
        assert_eq!((jq.name.as_str(), jq.pin.as_deref()), ("jq", Some("1.6*")));
        assert!(jq.accepts("1.6-2.1ubuntu3"));
        assert!(!jq.accepts("1.7.1-3build1"));
        let any = PackageSpec::parse("docker.io").unwrap();
        assert!(any.accepts("24.0"));
        let exact = PackageSpec::parse("curl=8.5.0-2ubuntu10.6").unwrap();
        assert!(exact.accepts("8.5.0-2ubuntu10.6"));
        assert!(!exact.accepts("8.5.0-2ubuntu10.61"));
        for bad in ["", "jq=", "-jq", "jq;rm", "jq=1 2", "a b"] {
            assert!(PackageSpec::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn owners_follow_chown() {
        type Case<'a> = (Option<&'a str>, Option<&'a str>, (&'a str, &'a str));
        let cases: &[Case] = &[
            (None, None, ("root", "root")),
            (Some("app"), None, ("app", "root")),
            (Some("app:web"), None, ("app", "web")),
            (Some("app"), Some("web"), ("app", "web")),
            (None, Some("web"), ("root", "web")),
        ];
        for (owner, group, (user, want_group)) in cases {
            let got = owner_and_group(*owner, *group);
            assert_eq!(
                (got.0.as_str(), got.1.as_str()),
                (*user, *want_group),
                "{owner:?} {group:?}"
            );
        }
    }
}
