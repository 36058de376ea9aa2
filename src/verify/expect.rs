//! What an instance must report, from respot's own render: the digest, and
//! the files and health probes that render ships.
//!
//! The client holds the instance's lists to these instead of trusting them:
//! an instance that checks fewer files or probes than the render ships
//! (none at all, say), other ones, or files with other hashes, fails. The
//! types are built in `commands` from the `Blueprint`; the comparisons here
//! are pure (replies in, rows out).

use std::collections::BTreeMap;

use super::query::{Attributes, Reply};
use super::row::{CheckRow, Outcome, drift_detail, probe_row};
use super::{Target, text::strip_controls};
use crate::config::{Config, Ownership, PackageSpec};
use crate::output::Count;
use crate::template::Digest;

/// What the instances must report.
#[derive(Debug, Clone)]
pub struct Expected {
    pub digest: Digest,
    /// What the render of `digest` ships. `None` when the instances run a
    /// digest other than this machine's render (they are stale, and are
    /// verified against the digest they were launched with): the instance's
    /// manifest is then the only record of its files, and must list some.
    pub shipped: Option<Shipped>,
}

/// The files, directories, secrets, packages and health probes of one
/// render.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shipped {
    /// Every file that lands, respot's own included.
    pub files: Vec<ExpectedFile>,
    /// The `[verify]` HTTP probes, in order.
    pub probes: Vec<ExpectedProbe>,
    /// `[[directories]]`: path, owner, group, mode.
    pub directories: Vec<ExpectedEntry>,
    /// `[[secrets]]`: path, owner, group, mode; never content.
    pub secrets: Vec<ExpectedEntry>,
    /// `[packages]` for the instances' package manager.
    pub packages: Vec<PackageSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedFile {
    pub path: String,
    pub sha256: String,
    pub owner: String,
    pub group: String,
    /// Four octal digits, `0644`.
    pub mode: String,
}

/// A directory or secret: where, and with which owner, group and mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedEntry {
    pub path: String,
    pub owner: String,
    pub group: String,
    pub mode: String,
}

/// The directories, secrets and packages `config` declares, as a
/// `Shipped` without files or probes (the render adds those).
pub fn expected_blueprint_inputs(config: &Config) -> Shipped {
    let entry = |path: &str, own: Ownership| ExpectedEntry {
        path: path.to_string(),
        owner: own.owner,
        group: own.group,
        mode: own.mode.map_or_else(String::new, |m| m.octal()),
    };
    Shipped {
        directories: config
            .directories
            .iter()
            .map(|d| entry(&d.path, d.ownership()))
            .collect(),
        secrets: config
            .secrets
            .iter()
            .map(|s| entry(&s.path, s.ownership()))
            .collect(),
        packages: config.package_specs(),
        ..Shipped::default()
    }
}

impl ExpectedEntry {
    fn differs(&self, live: &Attributes) -> Option<String> {
        attributes_differ(&self.owner, &self.group, &self.mode, live)
    }
}

/// `owner:group mode` as rendered against as found, when they differ.
fn attributes_differ(owner: &str, group: &str, mode: &str, live: &Attributes) -> Option<String> {
    let want = format!("{owner}:{group} {mode}");
    let got = format!("{}:{} {}", live.owner, live.group, live.mode);
    (want != got).then(|| {
        format!(
            "is {} on the instance, the render says {want}",
            strip_controls(&got)
        )
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedProbe {
    pub port: u16,
    pub path: String,
    pub status: u16,
}

/// The `files` rows: the live sha256 of every file the render ships must be
/// the render's, and the instance must check nothing else. One row per
/// problem, or one passing row.
pub(super) fn file_rows(target: &Target, shipped: &Shipped, reply: &Reply) -> Vec<CheckRow> {
    let fail = |detail: String| CheckRow::new(target, "files", Outcome::Fail, detail);
    let reported = reply.files();
    if reported.is_empty() {
        return vec![fail(format!(
            "the instance checked no files; the render ships {}",
            Count(shipped.files.len(), "file")
        ))];
    }
    let mut live: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (path, _, now) in &reported {
        live.entry(path.as_str()).or_default().push(now.as_str());
    }
    let attributes: BTreeMap<String, Attributes> = reply.file_attributes().into_iter().collect();
    let mut rows = Vec::new();
    for file in &shipped.files {
        match live.get(file.path.as_str()).map(Vec::as_slice) {
            None => rows.push(fail(format!(
                "`{}` is in the render, but the instance did not check it (its /etc/respot/manifest.sha256 \
                 does not list it)",
                file.path
            ))),
            Some([now]) if *now == file.sha256 => {
                let differs = match attributes.get(&file.path) {
                    Some(live) => attributes_differ(&file.owner, &file.group, &file.mode, live),
                    None => Some("has no owner, group or mode in the instance's answer".to_string()),
                };
                if let Some(differs) = differs {
                    rows.push(fail(format!("`{}` {differs}", file.path)));
                }
            }
            Some([now]) => rows.push(fail(drift_detail(&file.path, &file.sha256, now))),
            Some(_) => rows.push(fail(format!(
                "`{}` is listed more than once by the instance",
                file.path
            ))),
        }
    }
    for path in live
        .keys()
        .filter(|p| !shipped.files.iter().any(|f| f.path == **p))
    {
        rows.push(fail(format!(
            "`{}` is checked by the instance, but the render ships no such file",
            strip_controls(path)
        )));
    }
    if rows.is_empty() {
        rows.push(CheckRow::new(
            target,
            "files",
            Outcome::Pass,
            format!(
                "{} match the render's sha256, owner, group and mode",
                Count(shipped.files.len(), "file")
            ),
        ));
    }
    rows
}

/// The `directories` or `secrets` rows (`kind` is `dir` or `secret`):
/// each entry of the render is there, of the right kind, with its owner,
/// group and mode. A secret's content is never looked at.
pub(super) fn entry_rows(
    target: &Target,
    kind: &str,
    expected: &[ExpectedEntry],
    reply: &Reply,
) -> Vec<CheckRow> {
    let check = if kind == "dir" { "directories" } else { "secrets" };
    if expected.is_empty() {
        return Vec::new();
    }
    let live = reply.entries(kind);
    let mut rows = Vec::new();
    for entry in expected {
        let found = live.iter().find(|e| e.path == entry.path);
        let problem = match found {
            None => Some("was not checked: the instance's list does not have it".to_string()),
            Some(e) if e.state == "present" => entry.differs(&e.attributes),
            Some(e) if e.state == "missing" => Some("is missing".to_string()),
            Some(e) => Some(format!("is a {} on the instance", strip_controls(&e.state))),
        };
        if let Some(problem) = problem {
            rows.push(CheckRow::new(
                target,
                check,
                Outcome::Fail,
                format!("`{}` {problem}", entry.path),
            ));
        }
    }
    if rows.is_empty() {
        let n = expected.len();
        let what = match (kind, n) {
            ("dir", 1) => "directory",
            ("dir", _) => "directories",
            (_, 1) => "secret",
            _ => "secrets",
        };
        rows.push(CheckRow::new(
            target,
            check,
            Outcome::Pass,
            format!("{n} {what} with the render's owner, group and mode"),
        ));
    }
    rows
}

/// The `packages` rows: each package of the render is installed, at a
/// version its pin accepts.
pub(super) fn package_rows(target: &Target, expected: &[PackageSpec], reply: &Reply) -> Vec<CheckRow> {
    let live = reply.packages();
    expected
        .iter()
        .map(|spec| {
            let check = format!("package {}", spec.name);
            let version = live
                .iter()
                .find(|(name, _)| *name == spec.name)
                .map(|(_, v)| v.as_str());
            let pin = spec
                .pin
                .as_deref()
                .map(|p| format!(" (pinned {p})"))
                .unwrap_or_default();
            match version {
                None => CheckRow::new(
                    target,
                    &check,
                    Outcome::Fail,
                    "not checked: the instance's list does not have it",
                ),
                Some("missing") => {
                    CheckRow::new(target, &check, Outcome::Fail, format!("not installed{pin}"))
                }
                Some(v) if spec.accepts(v) => CheckRow::new(
                    target,
                    &check,
                    Outcome::Pass,
                    format!("{}{pin}", strip_controls(v)),
                ),
                Some(v) => CheckRow::new(
                    target,
                    &check,
                    Outcome::Fail,
                    format!(
                        "{} installed, the pin wants {}",
                        strip_controls(v),
                        spec.pin.as_deref().unwrap_or("")
                    ),
                ),
            }
        })
        .collect()
}

/// The `health` rows: every probe the render has must have run, answering
/// the render's status (not the one the instance says it wants), and the
/// instance must have run no other.
pub(super) fn probe_rows(target: &Target, probes: &[ExpectedProbe], reply: &Reply) -> Vec<CheckRow> {
    let reported = reply.probes();
    if reported.is_empty() && !probes.is_empty() {
        return vec![CheckRow::new(
            target,
            "health",
            Outcome::Fail,
            format!(
                "the instance ran no health probes; the render has {}",
                Count(probes.len(), "probe")
            ),
        )];
    }
    let same = |port: &str, path: &str, p: &ExpectedProbe| port == p.port.to_string() && path == p.path;
    let mut rows: Vec<CheckRow> = probes
        .iter()
        .map(|p| {
            let check = format!("health :{}{}", p.port, p.path);
            match reported.iter().find(|r| same(&r.port, &r.path, p)) {
                Some(r) => probe_row(target, &check, &r.got, &p.status.to_string(), &r.body),
                None => CheckRow::new(
                    target,
                    &check,
                    Outcome::Fail,
                    "not run: the instance's /etc/respot/probes does not have it",
                ),
            }
        })
        .collect();
    for r in reported
        .iter()
        .filter(|r| !probes.iter().any(|p| same(&r.port, &r.path, p)))
    {
        rows.push(CheckRow::new(
            target,
            &format!("health :{}{}", r.port, r.path),
            Outcome::Fail,
            "run by the instance, but the render has no such probe",
        ));
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::checks::tests::{reply, target};
    use crate::verify::query::Query;

    fn shipped() -> Shipped {
        let file = |path: &str, sha: &str| ExpectedFile {
            path: path.into(),
            sha256: sha.repeat(64),
            owner: "root".into(),
            group: "root".into(),
            mode: "0644".into(),
        };
        Shipped {
            files: vec![file("/a", "1"), file("/b", "2")],
            probes: vec![ExpectedProbe {
                port: 8080,
                path: "/health".into(),
                status: 200,
            }],
            ..Shipped::default()
        }
    }

    /// (name, the instance's records, what each row must be).
    type Case<Want> = (&'static str, String, Vec<Want>);

    /// (result, detail) of every row.
    fn results(rows: &[CheckRow]) -> Vec<(Outcome, String)> {
        rows.iter().map(|r| (r.result, r.detail.clone())).collect()
    }

    #[test]
    fn files_are_held_to_the_render_not_to_the_instance_list() {
        let (one, two, nine) = ("1".repeat(64), "2".repeat(64), "9".repeat(64));
        let file = |path: &str, live: &str| format!("file\t{path}\t{live}\t{live}\troot\troot\t0644\n");
        let cases: Vec<Case<(Outcome, &str)>> = vec![
            (
                "all match",
                file("/a", &one) + &file("/b", &two),
                vec![(
                    Outcome::Pass,
                    "2 files match the render's sha256, owner, group and mode",
                )],
            ),
            (
                "no files at all",
                String::new(),
                vec![(
                    Outcome::Fail,
                    "the instance checked no files; the render ships 2 files",
                )],
            ),
            (
                "one left out",
                file("/a", &one),
                vec![(
                    Outcome::Fail,
                    "`/b` is in the render, but the instance did not check it",
                )],
            ),
            (
                "its own hash agrees with itself, not with the render",
                file("/a", &one) + &file("/b", &nine),
                vec![(
                    Outcome::Fail,
                    "`/b` changed on the instance: recorded 222222222222, live 999999999999",
                )],
            ),
            (
                "a file the render does not ship",
                file("/a", &one) + &file("/b", &two) + &file("/x", &one),
                vec![(
                    Outcome::Fail,
                    "`/x` is checked by the instance, but the render ships no such file",
                )],
            ),
            (
                "listed twice",
                file("/a", &one) + &file("/a", &nine) + &file("/b", &two),
                vec![(Outcome::Fail, "`/a` is listed more than once by the instance")],
            ),
            (
                "a symlink",
                file("/a", "symlink") + &file("/b", &two),
                vec![(
                    Outcome::Fail,
                    "`/a` is a symlink on the instance; respot does not follow it",
                )],
            ),
            (
                "a special file",
                file("/a", "special") + &file("/b", &two),
                vec![(Outcome::Fail, "`/a` is not a regular file on the instance")],
            ),
        ];
        for (name, body, want) in cases {
            let rows = file_rows(&target(), &shipped(), &reply(&Query::Manifest, &body));
            let got = results(&rows);
            assert_eq!(got.len(), want.len(), "{name}: {got:?}");
            for ((outcome, detail), (want_outcome, want_start)) in got.iter().zip(&want) {
                assert_eq!(outcome, want_outcome, "{name}: {got:?}");
                assert!(detail.starts_with(want_start), "{name}: {detail}");
            }
        }
    }

    #[test]
    fn owner_group_and_mode_are_held_to_the_render_too() {
        let (one, two) = ("1".repeat(64), "2".repeat(64));
        let file = |path: &str, live: &str| format!("file\t{path}\t{live}\t{live}\troot\troot\t0644\n");
        let cases: Vec<Case<(Outcome, &str)>> = vec![
            (
                "a changed mode, same content",
                file("/a", &one) + &format!("file\t/b\t{two}\t{two}\troot\troot\t0666\n"),
                vec![(
                    Outcome::Fail,
                    "`/b` is root:root 0666 on the instance, the render says root:root 0644",
                )],
            ),
            (
                "a changed owner, same content",
                file("/a", &one) + &format!("file\t/b\t{two}\t{two}\tnobody\troot\t0644\n"),
                vec![(Outcome::Fail, "`/b` is nobody:root 0644 on the instance")],
            ),
            (
                "no attributes at all",
                file("/a", &one) + &format!("file\t/b\t{two}\t{two}\n"),
                vec![(Outcome::Fail, "`/b` has no owner, group or mode")],
            ),
        ];
        for (name, body, want) in cases {
            let rows = file_rows(&target(), &shipped(), &reply(&Query::Manifest, &body));
            let got = results(&rows);
            assert_eq!(got.len(), want.len(), "{name}: {got:?}");
            for ((outcome, detail), (want_outcome, want_start)) in got.iter().zip(&want) {
                assert_eq!(outcome, want_outcome, "{name}: {got:?}");
                assert!(detail.starts_with(want_start), "{name}: {detail}");
            }
        }
    }

    #[test]
    fn probes_are_held_to_the_render_not_to_the_instance_list() {
        let ok = "probe\t8080\t/health\t200\t200\tok\n";
        let cases: Vec<Case<(&str, Outcome, &str)>> = vec![
            (
                "as rendered",
                ok.into(),
                vec![("health :8080/health", Outcome::Pass, "HTTP 200")],
            ),
            (
                "no probes at all",
                String::new(),
                vec![(
                    "health",
                    Outcome::Fail,
                    "the instance ran no health probes; the render has 1 probe",
                )],
            ),
            (
                "it wants what it got, the render wants 200",
                "probe\t8080\t/health\t500\t500\tdown\n".into(),
                vec![("health :8080/health", Outcome::Fail, "HTTP 500 (want 200): down")],
            ),
            (
                "another probe instead",
                "probe\t9090\t/\t200\t200\tok\n".into(),
                vec![
                    (
                        "health :8080/health",
                        Outcome::Fail,
                        "not run: the instance's /etc/respot/probes",
                    ),
                    (
                        "health :9090/",
                        Outcome::Fail,
                        "run by the instance, but the render has no such probe",
                    ),
                ],
            ),
            (
                "no answer",
                "probe\t8080\t/health\t200\tnone\t\n".into(),
                vec![("health :8080/health", Outcome::Fail, "no answer (want HTTP 200)")],
            ),
        ];
        for (name, body, want) in cases {
            let rows = probe_rows(&target(), &shipped().probes, &reply(&Query::Health, &body));
            assert_eq!(rows.len(), want.len(), "{name}: {rows:?}");
            for (row, (check, outcome, detail)) in rows.iter().zip(&want) {
                assert_eq!(
                    (row.check.as_str(), row.result),
                    (*check, *outcome),
                    "{name}: {rows:?}"
                );
                assert!(row.detail.starts_with(detail), "{name}: {}", row.detail);
            }
        }
        let none = probe_rows(&target(), &[], &reply(&Query::Health, ""));
        assert!(none.is_empty(), "no probes rendered, none run: nothing to say");
    }

    #[test]
    fn directories_and_secrets_are_held_to_the_render_never_their_content() {
        let entry = |path: &str, owner: &str, mode: &str| ExpectedEntry {
            path: path.into(),
            owner: owner.into(),
            group: owner.into(),
            mode: mode.into(),
        };
        let expected = [
            entry("/var/lib/app", "app", "0750"),
            entry("/srv/cache", "root", "0755"),
        ];
        let cases: &[(&str, &str, &[&str])] = &[
            (
                "as rendered",
                "dir\t/var/lib/app\tpresent\tapp\tapp\t0750\ndir\t/srv/cache\tpresent\troot\troot\t0755\n",
                &["2 directories with the render's owner, group and mode"],
            ),
            (
                "a mode and a kind",
                "dir\t/var/lib/app\tpresent\tapp\tapp\t0777\ndir\t/srv/cache\tsymlink\t-\t-\t-\n",
                &[
                    "`/var/lib/app` is app:app 0777 on the instance, the render says app:app 0750",
                    "`/srv/cache` is a symlink on the instance",
                ],
            ),
            (
                "missing and unlisted",
                "dir\t/var/lib/app\tmissing\t-\t-\t-\n",
                &[
                    "`/var/lib/app` is missing",
                    "`/srv/cache` was not checked: the instance's list does not have it",
                ],
            ),
        ];
        for (name, body, want) in cases {
            let rows = entry_rows(&target(), "dir", &expected, &reply(&Query::Manifest, body));
            let details: Vec<&str> = rows.iter().map(|r| r.detail.as_str()).collect();
            assert_eq!(details, *want, "{name}");
        }
        let secret = [entry("/etc/app/token", "app", "0600")];
        let rows = entry_rows(
            &target(),
            "secret",
            &secret,
            &reply(
                &Query::Manifest,
                "secret\t/etc/app/token\tpresent\tapp\tapp\t0644\n",
            ),
        );
        assert_eq!(
            (rows[0].check.as_str(), rows[0].result),
            ("secrets", Outcome::Fail)
        );
        assert!(entry_rows(&target(), "secret", &[], &reply(&Query::Manifest, "")).is_empty());
    }

    #[test]
    fn packages_must_be_installed_at_their_pin() {
        let specs: Vec<PackageSpec> = ["curl=7.88*", "jq", "sudo"]
            .iter()
            .map(|p| PackageSpec::parse(p).unwrap())
            .collect();
        let body = "status\tpackages\tdpkg\npackage\tcurl\t7.88.1-10+deb12u14\npackage\tjq\tmissing\n";
        let rows = package_rows(&target(), &specs, &reply(&Query::Check, body));
        let got: Vec<(&str, Outcome, &str)> = rows
            .iter()
            .map(|r| (r.check.as_str(), r.result, r.detail.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("package curl", Outcome::Pass, "7.88.1-10+deb12u14 (pinned 7.88*)"),
                ("package jq", Outcome::Fail, "not installed"),
                (
                    "package sudo",
                    Outcome::Fail,
                    "not checked: the instance's list does not have it"
                ),
            ]
        );
        let other = reply(&Query::Check, "package\tcurl\t8.5.0\n");
        let rows = package_rows(&target(), &specs[..1], &other);
        assert_eq!(rows[0].detail, "8.5.0 installed, the pin wants 7.88*");
    }
}
