//! Checks `[[files]]`, `[[directories]]`, `[[secrets]]`, `[packages]` and
//! `deployment.units` against the instance directory, each refusal with
//! file:line:key.

use std::path::Path;

use super::files::{PackageSpec, UnitStep};
use super::located::{Located, Seg};
use super::validate::valid_unix_user;
use super::{Config, ConfigError, ProviderKind, glob, units};
use crate::guest;

type Result<T> = std::result::Result<T, ConfigError>;

impl Config {
    pub(super) fn validate_blueprint_inputs(&self, at: &Located) -> Result<()> {
        let instance_files = list_files(&self.instance_dir().join("files"), "files")?;
        self.validate_file_rules(at, &instance_files)?;
        self.validate_directories(at)?;
        self.validate_secrets(at, &instance_files)?;
        self.validate_packages(at)?;
        self.validate_units(at)
    }

    fn validate_file_rules(&self, at: &Located, instance_files: &[String]) -> Result<()> {
        for (i, rule) in self.files.iter().enumerate() {
            let here = |key: &'static str| [Seg::Key("files"), Seg::Index(i), Seg::Key(key)];
            let pattern = &rule.path;
            let shape_ok = pattern.starts_with("files/")
                && pattern.bytes().all(|b| {
                    b.is_ascii_alphanumeric()
                        || matches!(b, b'/' | b'.' | b'_' | b'-' | b'@' | b'+' | b'*' | b'?')
                })
                && !pattern.split('/').any(|s| s == ".." || s.is_empty());
            if !shape_ok {
                return Err(at.invalid(
                    &here("path"),
                    format!(
                        "expected a path or glob under `files/` of the instance directory, such as \
                         `files/opt/app/*.sh`, of [A-Za-z0-9/._@+-*?], got `{pattern}`"
                    ),
                ));
            }
            if !instance_files.iter().any(|f| glob::matches_path(pattern, f)) {
                let what = if glob::is_glob(pattern) {
                    "matches no file"
                } else {
                    "is not a file"
                };
                return Err(at.invalid(
                    &here("path"),
                    format!(
                        "`{pattern}` {what} in `{}`; fix the path or remove the entry",
                        self.deployment.instance_dir.display()
                    ),
                ));
            }
            check_ownership(
                at,
                &[Seg::Key("files"), Seg::Index(i)],
                rule.owner.as_deref(),
                rule.group.as_deref(),
            )?;
        }
        Ok(())
    }

    fn validate_directories(&self, at: &Located) -> Result<()> {
        for (i, dir) in self.directories.iter().enumerate() {
            let base = [Seg::Key("directories"), Seg::Index(i)];
            check_instance_path(at, &base, &dir.path, "directory")?;
            if self.directories[..i].iter().any(|d| d.path == dir.path) {
                return Err(at.invalid(
                    &[Seg::Key("directories"), Seg::Index(i), Seg::Key("path")],
                    format!("`{}` is listed twice; merge the entries", dir.path),
                ));
            }
            check_ownership(at, &base, dir.owner.as_deref(), dir.group.as_deref())?;
        }
        Ok(())
    }

    fn validate_secrets(&self, at: &Located, instance_files: &[String]) -> Result<()> {
        for (i, secret) in self.secrets.iter().enumerate() {
            let base = [Seg::Key("secrets"), Seg::Index(i)];
            let here = |key: &'static str| [Seg::Key("secrets"), Seg::Index(i), Seg::Key(key)];
            check_instance_path(at, &base, &secret.path, "secret")?;
            let shipped = format!("files{}", secret.path);
            if instance_files.contains(&shipped) || self.secrets[..i].iter().any(|s| s.path == secret.path) {
                return Err(at.invalid(
                    &here("path"),
                    format!(
                        "`{}` is also shipped by the blueprint or another secret; one file, one source",
                        secret.path
                    ),
                ));
            }
            check_ownership(at, &base, secret.owner.as_deref(), secret.group.as_deref())?;
            if let Some(name) = &secret.ssm
                && !valid_ssm_name(name)
            {
                return Err(at.invalid(
                    &here("ssm"),
                    format!(
                        "expected an SSM parameter name such as `/app/token` ([A-Za-z0-9/._-], starting with `/`), got `{name}`"
                    ),
                ));
            }
            match self.deployment.provider {
                ProviderKind::Aws if secret.ssm.is_none() => {
                    return Err(at.invalid(
                        &base,
                        format!(
                            "secret `{}` has no source for provider \"aws\"; add `ssm = \"/parameter/name\"` \
                             (an SSM SecureString)",
                            secret.path
                        ),
                    ));
                }
                ProviderKind::Local => self.check_local_secret(at, i)?,
                ProviderKind::Aws => {}
            }
        }
        Ok(())
    }

    fn check_local_secret(&self, at: &Located, i: usize) -> Result<()> {
        let secret = &self.secrets[i];
        let Some(raw) = &secret.local_file else {
            return Err(at.invalid(
                &[Seg::Key("secrets"), Seg::Index(i)],
                format!(
                    "secret `{}` has no source for provider \"local\"; add `local_file = \"path\"`, \
                     a file on this machine outside git",
                    secret.path
                ),
            ));
        };
        let path = super::resolve_path(&self.base_dir(), raw);
        if !path.is_file() {
            return Err(at.invalid(
                &[Seg::Key("secrets"), Seg::Index(i), Seg::Key("local_file")],
                format!("`{}` does not exist or is not a file", path.display()),
            ));
        }
        Ok(())
    }

    fn validate_packages(&self, at: &Located) -> Result<()> {
        for (key, list) in [("apt", &self.packages.apt), ("dnf", &self.packages.dnf)] {
            for (i, text) in list.iter().enumerate() {
                let here = [Seg::Key("packages"), Seg::Key(key), Seg::Index(i)];
                let Some(spec) = PackageSpec::parse(text) else {
                    return Err(at.invalid(
                        &here,
                        format!(
                            "expected `name` or `name=version` (a trailing `*` matches the rest), \
                             such as `jq` or `jq=1.7*`, got `{text}`"
                        ),
                    ));
                };
                if list[..i]
                    .iter()
                    .filter_map(|p| PackageSpec::parse(p))
                    .any(|p| p.name == spec.name)
                {
                    return Err(at.invalid(&here, format!("package `{}` is listed twice", spec.name)));
                }
            }
        }
        Ok(())
    }

    fn validate_units(&self, at: &Located) -> Result<()> {
        let Some(order) = &self.deployment.units else {
            return Ok(());
        };
        let all: Vec<String> = list_files(&self.instance_dir().join("units"), "")?
            .into_iter()
            .filter(|n| !n.contains('/'))
            .collect();
        let mut listed: Vec<&str> = Vec::new();
        for (i, step) in order.iter().enumerate() {
            if matches!(step, UnitStep::Together(names) if names.is_empty()) {
                return Err(at.invalid(
                    &[Seg::Key("deployment"), Seg::Key("units"), Seg::Index(i)],
                    "an empty group starts nothing; remove it".to_string(),
                ));
            }
            for (j, name) in step.names().iter().enumerate() {
                let mut here = vec![Seg::Key("deployment"), Seg::Key("units"), Seg::Index(i)];
                if matches!(step, UnitStep::Together(_)) {
                    here.push(Seg::Index(j));
                }
                let problem = if !all.contains(name) {
                    Some(format!(
                        "`{name}` is not a unit in `{}/units/`",
                        self.deployment.instance_dir.display()
                    ))
                } else if listed.contains(&name.as_str()) {
                    Some(format!("`{name}` is listed twice"))
                } else {
                    units::not_started_because(name, &all)
                };
                if let Some(problem) = problem {
                    return Err(at.invalid(&here, problem));
                }
                listed.push(name);
            }
        }
        let omitted: Vec<String> = units::startable(&all)
            .into_iter()
            .filter(|u| !listed.contains(&u.as_str()))
            .map(|u| format!("`{u}`"))
            .collect();
        if !omitted.is_empty() {
            return Err(at.invalid(
                &[Seg::Key("deployment"), Seg::Key("units")],
                format!(
                    "the start order omits {}; list every unit respot starts (or remove `units` to start \
                     them all at once)",
                    omitted.join(", ")
                ),
            ));
        }
        Ok(())
    }
}

/// An absolute instance path for a directory or secret: plain characters,
/// not respot's own, not one that could widen what verification may do.
fn check_instance_path(at: &Located, base: &[Seg], path: &str, what: &str) -> Result<()> {
    let mut here = base.to_vec();
    here.push(Seg::Key("path"));
    let ok = path.starts_with('/')
        && path.len() > 1
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-' | b'@' | b'+'))
        && !path[1..]
            .split('/')
            .any(|s| s == ".." || s == "." || s.is_empty());
    if !ok {
        return Err(at.invalid(
            &here,
            format!("expected an absolute {what} path on the instance of [A-Za-z0-9/._@+-], got `{path}`"),
        ));
    }
    if guest::owns(path) {
        return Err(at.invalid(&here, format!("`{path}` is respot's own; choose another path")));
    }
    // A secret's or directory's content is not known here: refuse where a
    // file could change what keys or accounts may do.
    if let Some(reason) = guest::guarded(path, b"") {
        return Err(at.invalid(
            &here,
            format!("a blueprint may not place a {what} at `{path}`: {reason}"),
        ));
    }
    if what == "secret" && guest::guarded_dir(path) {
        return Err(at.invalid(
            &here,
            format!("a secret may not be placed at `{path}`: respot cannot check what its content grants"),
        ));
    }
    Ok(())
}

fn check_ownership(at: &Located, base: &[Seg], owner: Option<&str>, group: Option<&str>) -> Result<()> {
    let key = |k: &'static str| {
        let mut here = base.to_vec();
        here.push(Seg::Key(k));
        here
    };
    if let Some(owner) = owner {
        let (user, owner_group) = match owner.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (owner, None),
        };
        if !valid_unix_user(user) || owner_group.is_some_and(|g| !valid_unix_user(g)) {
            return Err(at.invalid(
                &key("owner"),
                format!("expected `user` or `user:group` of [a-z_][a-z0-9_-]*, got `{owner}`"),
            ));
        }
        if owner_group.is_some() && group.is_some() {
            return Err(at.invalid(
                &key("group"),
                "the group is given twice, in `owner` and in `group`; keep one".to_string(),
            ));
        }
    }
    if let Some(group) = group
        && !valid_unix_user(group)
    {
        return Err(at.invalid(
            &key("group"),
            format!("expected a group name of [a-z_][a-z0-9_-]*, got `{group}`"),
        ));
    }
    for (k, name) in [("owner", owner), ("group", group)] {
        if name.is_some_and(|n| n.split(':').any(|part| part == guest::VERIFY_USER)) {
            return Err(at.invalid(
                &key(k),
                format!(
                    "`{}` is respot's verification account, which owns nothing",
                    guest::VERIFY_USER
                ),
            ));
        }
    }
    Ok(())
}

fn valid_ssm_name(name: &str) -> bool {
    name.starts_with('/')
        && name.len() <= 1011
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-'))
}

/// Every regular file below `dir` as `prefix/relative` (or `relative` when
/// `prefix` is empty), sorted. A missing directory has none.
fn list_files(dir: &Path, prefix: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    walk(dir, prefix, &mut out)?;
    out.sort();
    Ok(out)
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        let entry = entry.map_err(|source| ConfigError::Read {
            path: dir.display().to_string(),
            source,
        })?;
        let name = entry.file_name().to_string_lossy().to_string();
        let relative = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let file_type = entry.file_type().map_err(|source| ConfigError::Read {
            path: entry.path().display().to_string(),
            source,
        })?;
        if file_type.is_dir() {
            walk(&entry.path(), &relative, out)?;
        } else if file_type.is_file() && entry.file_name() != ".gitkeep" {
            out.push(relative);
        }
    }
    Ok(())
}
