//! The rendered document must be YAML that cloud-init will act on, checked
//! before anything reaches a cloud: cloud-init ignores a document it cannot
//! parse, so an instance would boot with none of the blueprint and respot
//! would only learn it from a failed verification.
//!
//! Beyond parsing, a few structural rules: the document is a mapping, the
//! keys respot relies on have the shape cloud-init expects, and nothing in
//! it names respot's verification account, which respot alone creates.

use serde_norway::Value;

use super::TemplateError;
use crate::guest::VERIFY_USER;

/// Top-level keys that cloud-init takes as lists.
const LIST_KEYS: &[&str] = &["users", "groups", "runcmd", "write_files", "packages"];

/// Parses `document` and checks its structure; `path` is the template, as
/// messages show it.
pub fn check(document: &str, path: &str) -> Result<(), TemplateError> {
    let value: Value = serde_norway::from_str(document).map_err(|err| yaml_error(document, path, &err))?;
    let Value::Mapping(top) = &value else {
        return Err(TemplateError::Structure {
            path: path.to_string(),
            problem: "the rendered document must be a YAML mapping of cloud-config keys".to_string(),
        });
    };
    for key in LIST_KEYS {
        if let Some(found) = top.get(*key)
            && !matches!(found, Value::Sequence(_) | Value::Null)
        {
            return Err(TemplateError::Structure {
                path: path.to_string(),
                problem: format!("`{key}` must be a list"),
            });
        }
    }
    if let Some(Value::Sequence(files)) = top.get("write_files") {
        for (i, file) in files.iter().enumerate() {
            if !matches!(file.get("path"), Some(Value::String(_))) {
                return Err(TemplateError::Structure {
                    path: path.to_string(),
                    problem: format!("`write_files[{i}]` has no `path`"),
                });
            }
        }
    }
    match mention(&value, "", VERIFY_USER) {
        Some(at) => Err(TemplateError::VerifyAccount {
            path: path.to_string(),
            user: VERIFY_USER,
            at,
        }),
        None => Ok(()),
    }
}

fn yaml_error(document: &str, path: &str, err: &serde_norway::Error) -> TemplateError {
    let (line, column) = err.location().map_or((0, 0), |l| (l.line(), l.column()));
    let text = line
        .checked_sub(1)
        .and_then(|i| document.lines().nth(i))
        .unwrap_or("")
        .to_string();
    let message = err.to_string();
    // serde_norway appends " at line L column C"; the error says it already.
    let message = message.split(" at line ").next().unwrap_or(&message).to_string();
    TemplateError::Yaml {
        path: path.to_string(),
        line,
        column,
        message,
        text,
    }
}

/// Where a key or string of `value` contains `needle`, as a key path
/// (`users[1].name`). File contents (`write_files[].content`) are the
/// blueprint's files, checked by path elsewhere, and public key lines
/// (`ssh_authorized_keys`) name no account whatever their comment says;
/// both are skipped.
fn mention(value: &Value, at: &str, needle: &str) -> Option<String> {
    match value {
        Value::String(text) => text.contains(needle).then(|| at.to_string()),
        Value::Sequence(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| mention(item, &format!("{at}[{i}]"), needle)),
        Value::Mapping(map) => map.iter().find_map(|(key, item)| {
            let name = match key {
                Value::String(name) => name.clone(),
                other => serde_norway::to_string(other)
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
            };
            let here = if at.is_empty() {
                name.clone()
            } else {
                format!("{at}.{name}")
            };
            if name.contains(needle) {
                return Some(here);
            }
            if (name == "content" && at.starts_with("write_files[")) || name == "ssh_authorized_keys" {
                return None;
            }
            mention(item, &here, needle)
        }),
        Value::Tagged(tagged) => mention(&tagged.value, at, needle),
        Value::Null | Value::Bool(_) | Value::Number(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(document: &str) -> Option<String> {
        check(document, "templates/cloud-init.yaml")
            .err()
            .map(|e| e.to_string())
    }

    #[test]
    fn valid_cloud_config_passes() {
        let doc = "#cloud-config\nusers:\n  - name: admin\n    groups: [adm]\nruncmd:\n  - [echo, hi]\n\
                   write_files:\n  - path: /opt/a\n    content: respot-verify is only text here\n";
        assert_eq!(problem(doc), None);
    }

    #[test]
    fn refusals_name_the_place() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "invalid YAML names the rendered line",
                "#cloud-config\nruncmd:\n  - [echo, hi\npackages: [curl]\n",
                "rendered line",
            ),
            (
                "not a mapping",
                "#cloud-config\n- a\n- b\n",
                "must be a YAML mapping",
            ),
            (
                "runcmd not a list",
                "#cloud-config\nruncmd: echo hi\n",
                "`runcmd` must be a list",
            ),
            (
                "file without path",
                "#cloud-config\nwrite_files:\n  - content: x\n",
                "`write_files[0]` has no `path`",
            ),
            (
                "creates the verification account",
                "#cloud-config\nusers:\n  - default\n  - name: respot-verify\n    sudo: ALL=(ALL) NOPASSWD:ALL\n",
                "at `users[1].name`",
            ),
            (
                "changes it in runcmd",
                "#cloud-config\nruncmd:\n  - [usermod, -aG, sudo, respot-verify]\n",
                "at `runcmd[0][3]`",
            ),
            (
                "as a group member",
                "#cloud-config\ngroups:\n  - wheel: [respot-verify]\n",
                "at `groups[0].wheel[0]`",
            ),
        ];
        for (name, doc, want) in cases {
            let got = problem(doc).unwrap_or_else(|| panic!("{name}: accepted"));
            assert!(got.contains(want), "{name}: {got}");
        }
    }
}
