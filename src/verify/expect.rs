//! What an instance must report, from respot's own render: the digest, and
//! the files and health probes that render ships.
//!
//! The client holds the instance's lists to these instead of trusting them:
//! an instance that checks fewer files or probes than the render ships
//! (none at all, say), other ones, or files with other hashes, fails. The
//! types are built in `commands` from the `Blueprint`; the comparisons here
//! are pure (replies in, rows out).

use std::collections::BTreeMap;

use super::query::Reply;
use super::row::{CheckRow, Outcome, drift_detail, probe_row};
use super::{Target, text::strip_controls};
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

/// The files and health probes of one render.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shipped {
    /// Every file that lands, respot's own included.
    pub files: Vec<ExpectedFile>,
    /// The `[verify]` HTTP probes, in order.
    pub probes: Vec<ExpectedProbe>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedFile {
    pub path: String,
    pub sha256: String,
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
    let mut rows = Vec::new();
    for file in &shipped.files {
        match live.get(file.path.as_str()).map(Vec::as_slice) {
            None => rows.push(fail(format!(
                "`{}` is in the render, but the instance did not check it (its /etc/respot/manifest.sha256 \
                 does not list it)",
                file.path
            ))),
            Some([now]) if *now == file.sha256 => {}
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
            format!("{} match the render's sha256", Count(shipped.files.len(), "file")),
        ));
    }
    rows
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
        };
        Shipped {
            files: vec![file("/a", "1"), file("/b", "2")],
            probes: vec![ExpectedProbe {
                port: 8080,
                path: "/health".into(),
                status: 200,
            }],
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
        let file = |path: &str, live: &str| format!("file\t{path}\t{live}\t{live}\n");
        let cases: Vec<Case<(Outcome, &str)>> = vec![
            (
                "all match",
                file("/a", &one) + &file("/b", &two),
                vec![(Outcome::Pass, "2 files match the render's sha256")],
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
}
