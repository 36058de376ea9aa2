//! The closed set of questions respot may ask an instance, and the parser
//! for the inspector's answers.
//!
//! `Query` is the only way to talk to an instance: every variant renders to
//! a fixed argument vector of tokens the inspector allowlists. There is no
//! constructor from free text; a unit name (the one argument that comes
//! from outside) is a `UnitName`, validated to the inspector's charset.

use std::fmt;

use super::VerifyError;

/// The inspector refuses journal tails longer than this.
pub const MAX_JOURNAL_LINES: u16 = 500;

/// A systemd unit name in the charset the inspector accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitName(String);

impl UnitName {
    pub fn parse(name: &str) -> Option<UnitName> {
        let ok = !name.is_empty()
            && name.len() <= 255
            && !name.starts_with('-')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'@' | b'.' | b'_' | b':' | b'-'));
        ok.then(|| UnitName(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How many journal lines to ask for: 1 to `MAX_JOURNAL_LINES`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalLines(u16);

impl JournalLines {
    /// Clamps `n` into 1..=500.
    pub fn clamped(n: u16) -> JournalLines {
        JournalLines(n.clamp(1, MAX_JOURNAL_LINES))
    }
}

/// One read-only query of the inspector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    CloudInit,
    Units,
    Journal { unit: UnitName, lines: JournalLines },
    Manifest,
    Health,
    Log,
    Facts,
}

impl Query {
    /// The exact argument vector sent as the SSH command (and seen by the
    /// inspector as `SSH_ORIGINAL_COMMAND`, joined by single spaces).
    pub fn argv(&self) -> Vec<String> {
        match self {
            Query::CloudInit => vec!["cloud-init".into()],
            Query::Units => vec!["units".into()],
            Query::Journal { unit, lines } => {
                vec!["journal".into(), unit.0.clone(), lines.0.to_string()]
            }
            Query::Manifest => vec!["manifest".into()],
            Query::Health => vec!["health".into()],
            Query::Log => vec!["log".into()],
            Query::Facts => vec!["facts".into()],
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Query::CloudInit => "cloud-init",
            Query::Units => "units",
            Query::Journal { .. } => "journal",
            Query::Manifest => "manifest",
            Query::Health => "health",
            Query::Log => "log",
            Query::Facts => "facts",
        }
    }
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.argv().join(" "))
    }
}

/// The inspector's answer: tab-separated records, header and `end` checked.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    records: Vec<Vec<String>>,
}

impl Reply {
    pub fn parse(query: &Query, stdout: &str) -> Result<Reply, VerifyError> {
        let bad = |message: String| VerifyError::Protocol {
            query: query.to_string(),
            message,
        };
        let mut lines = stdout.lines();
        let header = lines.next().unwrap_or_default();
        let want = format!("respot-inspect\t1\t{}", query.name());
        if header != want {
            return Err(bad(format!(
                "expected the header `{}`, got `{}`; is /usr/lib/respot/inspect respot's inspector?",
                want.replace('\t', " "),
                header.replace('\t', " ")
            )));
        }
        let mut records = Vec::new();
        let mut ended = false;
        for line in lines {
            if ended {
                return Err(bad("output continues after the `end` record".to_string()));
            }
            let fields: Vec<String> = line.split('\t').map(str::to_string).collect();
            if fields[0] == "end" {
                ended = true;
            } else {
                records.push(fields);
            }
        }
        if !ended {
            return Err(bad("the answer was cut short (no `end` record)".to_string()));
        }
        Ok(Reply { records })
    }

    fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a [String]> + 'a {
        self.records.iter().filter(move |r| r[0] == kind).map(|r| &r[1..])
    }

    /// The word of `status <component> <word>`.
    pub fn status(&self, component: &str) -> Option<&str> {
        self.of_kind("status")
            .find(|r| r.first().map(String::as_str) == Some(component))
            .and_then(|r| r.get(1))
            .map(String::as_str)
    }

    pub fn kv(&self, key: &str) -> Option<&str> {
        self.of_kind("kv")
            .find(|r| r.first().map(String::as_str) == Some(key))
            .map(|r| r.get(1).map_or("", String::as_str))
    }

    pub fn kvs(&self) -> Vec<(String, String)> {
        self.of_kind("kv").map(|r| (field(r, 0), field(r, 1))).collect()
    }

    /// The lines of text block `block`, in order.
    pub fn text(&self, block: &str) -> Vec<String> {
        self.records
            .iter()
            .filter(|r| r[0] == "text" && r.get(1).map(String::as_str) == Some(block))
            .map(|r| r[2..].join("\t"))
            .collect()
    }

    /// cloud-init's `status --format json` (from the `cloud-init` query).
    pub fn cloud_init_json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.text("status-json").join("\n")).ok()
    }

    /// The errors cloud-init lists in its status JSON.
    pub fn cloud_init_errors(&self) -> Vec<String> {
        self.cloud_init_json()
            .as_ref()
            .and_then(|j| j.get("errors"))
            .and_then(|e| e.as_array())
            .map(|errs| {
                errs.iter()
                    .map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `unit` records: (name, active state).
    pub fn units(&self) -> Vec<(String, String)> {
        self.of_kind("unit").map(|r| (field(r, 0), field(r, 1))).collect()
    }

    /// `file` records: (path, recorded sha256, live sha256 or `missing`).
    pub fn files(&self) -> Vec<(String, String, String)> {
        self.of_kind("file")
            .map(|r| (field(r, 0), field(r, 1), field(r, 2)))
            .collect()
    }

    /// `probe` records.
    pub fn probes(&self) -> Vec<ProbeResult> {
        self.of_kind("probe")
            .map(|r| ProbeResult {
                port: field(r, 0),
                path: field(r, 1),
                want: field(r, 2),
                got: field(r, 3),
                body: field(r, 4),
            })
            .collect()
    }
}

fn field(record: &[String], i: usize) -> String {
    record.get(i).cloned().unwrap_or_default()
}

/// One HTTP probe as the instance saw it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProbeResult {
    pub port: String,
    pub path: String,
    pub want: String,
    /// The status code, or `none` when nothing answered.
    pub got: String,
    /// The first bytes of the body.
    pub body: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    const INSPECTOR: &str = include_str!("../guest/inspect.sh");

    /// Every variant, through an exhaustive match: a new variant does not
    /// compile until it is listed here, and so checked below.
    fn every_query() -> Vec<Query> {
        let unit = UnitName::parse("hello-health.service").unwrap();
        let all = vec![
            Query::CloudInit,
            Query::Units,
            Query::Journal {
                unit,
                lines: JournalLines::clamped(50),
            },
            Query::Manifest,
            Query::Health,
            Query::Log,
            Query::Facts,
        ];
        for q in &all {
            match q {
                Query::CloudInit
                | Query::Units
                | Query::Journal { .. }
                | Query::Manifest
                | Query::Health
                | Query::Log
                | Query::Facts => {}
            }
        }
        all
    }

    fn allowlist() -> Vec<String> {
        let line = INSPECTOR
            .lines()
            .find_map(|l| l.strip_prefix("QUERIES=\""))
            .expect("the inspector defines QUERIES=\"...\"");
        line.trim_end_matches('"')
            .split(' ')
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn every_query_is_in_the_inspector_allowlist() {
        let allowed = allowlist();
        let queries = every_query();
        let mut names: Vec<&str> = queries.iter().map(Query::name).collect();
        names.sort();
        let mut sorted = allowed.clone();
        sorted.sort();
        assert_eq!(
            names, sorted,
            "the enum and the inspector's allowlist must match exactly"
        );
        for q in &queries {
            let argv = q.argv();
            assert_eq!(argv[0], q.name());
            for token in &argv {
                assert!(
                    !token.is_empty()
                        && token
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"@._:-".contains(&b)),
                    "{q:?}: token {token:?} is outside the inspector's charset"
                );
            }
        }
    }

    /// Runs the real inspector (sh) on a fixture root for every variant: none
    /// may be refused, and each answer parses.
    #[test]
    fn the_inspector_answers_every_query() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc/respot")).unwrap();
        std::fs::write(root.path().join("etc/respot/units"), "hello-health.service\n").unwrap();
        std::fs::write(root.path().join("etc/respot/manifest.json"), "{}\n").unwrap();
        let script = root.path().join("inspect");
        std::fs::write(&script, INSPECTOR).unwrap();
        for q in every_query() {
            let out = Command::new("sh")
                .arg(&script)
                .env("SSH_ORIGINAL_COMMAND", q.argv().join(" "))
                .env("RESPOT_INSPECT_ROOT", root.path())
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{q}: {}\n{stdout}",
                String::from_utf8_lossy(&out.stderr)
            );
            Reply::parse(&q, &stdout).unwrap_or_else(|e| panic!("{q}: {e}\n{stdout}"));
        }
    }

    #[test]
    fn the_inspector_refuses_everything_else() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc/respot")).unwrap();
        std::fs::write(root.path().join("etc/respot/units"), "a.service\n").unwrap();
        let script = root.path().join("inspect");
        std::fs::write(&script, INSPECTOR).unwrap();
        let cases = [
            "",
            "touch /tmp/x",
            "manifest; rm -rf /",
            "journal ../../etc/shadow 5",
            "$(id)",
            "`id`",
            "units extra",
            "units ",
            " units",
            "units  units",
            "journal a.service",
            "journal a.service 501",
            "journal a.service 0",
            "journal a.service 010",
            "journal a.service 5 6",
            "journal b.service 5",
            "journal -a.service 5",
            "facts\nid",
            "sh",
            "MANIFEST",
        ];
        for case in cases {
            let out = Command::new("sh")
                .arg(&script)
                .env("SSH_ORIGINAL_COMMAND", case)
                .env("RESPOT_INSPECT_ROOT", root.path())
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(64), "{case:?} must be refused");
            assert!(out.stdout.is_empty(), "{case:?} printed {:?}", out.stdout);
            assert!(
                String::from_utf8_lossy(&out.stderr).starts_with("refused\t"),
                "{case:?}"
            );
        }
    }

    #[test]
    fn unit_names_are_validated() {
        for good in ["a.service", "getty@tty1.service", "x_y-z:1.timer"] {
            assert!(UnitName::parse(good).is_some(), "{good}");
        }
        for bad in ["", "../x", "a b", "a;b", "-x", "$(id)", "a/b", "a\nb"] {
            assert!(UnitName::parse(bad).is_none(), "{bad:?}");
        }
        assert_eq!(JournalLines::clamped(0), JournalLines(1));
        assert_eq!(JournalLines::clamped(9999), JournalLines(500));
    }

    #[test]
    fn replies_need_the_header_and_the_end() {
        let q = Query::Facts;
        let ok = Reply::parse(&q, "respot-inspect\t1\tfacts\nkv\tkernel\t6.1\nend\tok\n").unwrap();
        assert_eq!(ok.kv("kernel"), Some("6.1"));
        assert!(Reply::parse(&q, "respot-inspect\t1\tfacts\nkv\tkernel\t6.1\n").is_err());
        assert!(Reply::parse(&q, "respot-inspect\t1\tunits\nend\tok\n").is_err());
        assert!(Reply::parse(&q, "hello\n").is_err());
        let text = Reply::parse(
            &Query::Log,
            "respot-inspect\t1\tlog\ntext\tlog\ta\tb\ntext\tlog\t\nend\tok\n",
        )
        .unwrap();
        assert_eq!(text.text("log"), vec!["a\tb".to_string(), String::new()]);
    }
}
