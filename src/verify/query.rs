//! The closed set of questions respot may ask an instance, and the parser
//! for the inspector's answers.
//!
//! `Query` is the only way to talk to an instance: every variant renders to
//! a fixed argument vector of tokens the inspector allowlists. There is no
//! constructor from free text; a unit name (the one argument that comes
//! from outside) is a `UnitName`, validated to the inspector's charset.

use std::fmt;

use super::VerifyError;
use super::text::{strip_controls, strip_json_controls};

/// The inspector refuses journal tails longer than this.
pub const MAX_JOURNAL_LINES: u16 = 500;

/// The most a reply may hold, on both sides: the inspector stops short of it
/// and ends with a `truncated` record, and the client reads no further and
/// refuses a reply past it, so a hostile or broken instance cannot make
/// respot hold more than this per query.
pub const MAX_REPLY_BYTES: usize = 1024 * 1024;

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
    Journal {
        unit: UnitName,
        lines: JournalLines,
    },
    Manifest,
    Health,
    Log,
    Facts,
    /// What `verify` asks: the cloud-init, units, manifest and health
    /// records and the installed packages, in one inspector run.
    Check,
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
            Query::Check => vec!["check".into()],
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
            Query::Check => "check",
        }
    }
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.argv().join(" "))
    }
}

/// The inspector's answer: tab-separated records, header and `end` checked,
/// every field stripped of terminal control characters.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    records: Vec<Vec<String>>,
}

impl Reply {
    /// Parses the inspector's stdout for `query`. A reply over
    /// `MAX_REPLY_BYTES`, one the inspector marked `truncated`, and one
    /// without its header or `end` record are protocol errors.
    pub fn parse(query: &Query, stdout: &[u8]) -> Result<Reply, VerifyError> {
        let bad = |message: String| VerifyError::Protocol {
            query: query.to_string(),
            message,
        };
        if stdout.len() > MAX_REPLY_BYTES {
            return Err(bad(format!(
                "the reply is over respot's cap of {MAX_REPLY_BYTES} bytes; respot read no further"
            )));
        }
        let stdout = strip_controls(&String::from_utf8_lossy(stdout));
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
            match fields[0].as_str() {
                "end" => ended = true,
                "truncated" => {
                    return Err(bad(format!(
                        "the inspector cut its reply at its cap of {} bytes (`truncated` record)",
                        fields.get(1).map_or("?", String::as_str)
                    )));
                }
                _ => records.push(fields),
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

    /// cloud-init's state: `running` or `unavailable` as the inspector
    /// says them; else read from `cloud-init status --format json`, its
    /// exit code and its `status`: 0 is that status (`done`, `running`,
    /// `disabled`; `not-run` for "not run"), 1 `error`, 2 `degraded` (newer
    /// releases; older ones also exit 2 on a usage error, so only with a
    /// JSON answer); anything else `unknown`.
    pub fn cloud_init_status(&self) -> String {
        if let Some(word) = self.status("cloud-init") {
            return word.to_string();
        }
        let json = self.cloud_init_json().filter(serde_json::Value::is_object);
        let word = match self.kv("exit") {
            Some("0") => match json.as_ref().and_then(|j| j.get("status")?.as_str()) {
                Some(status @ ("done" | "running" | "disabled")) => status,
                Some("not run") | None => "not-run",
                Some(_) => "unknown",
            },
            Some("1") => "error",
            Some("2") if json.is_some() => "degraded",
            _ => "unknown",
        };
        word.to_string()
    }

    /// cloud-init's `status --format json` (from the `cloud-init` query).
    /// Its strings lose control characters too: JSON escapes such as
    /// `\u001b` decode into them.
    pub fn cloud_init_json(&self) -> Option<serde_json::Value> {
        let mut json = serde_json::from_str(&self.text("status-json").join("\n")).ok()?;
        strip_json_controls(&mut json);
        Some(json)
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

    /// The owner, group and mode of each `file` record that has them
    /// (`-` when there was no regular file), by path.
    pub fn file_attributes(&self) -> Vec<(String, Attributes)> {
        self.of_kind("file")
            .filter(|r| r.len() >= 6)
            .map(|r| (field(r, 0), Attributes::of(&r[3..])))
            .collect()
    }

    /// `dir` or `secret` records (`kind`): path, what is there, attributes.
    pub fn entries(&self, kind: &str) -> Vec<Entry> {
        self.of_kind(kind)
            .map(|r| Entry {
                path: field(r, 0),
                state: field(r, 1),
                attributes: Attributes::of(r.get(2..).unwrap_or_default()),
            })
            .collect()
    }

    /// `package` records: (name, installed version or `missing`).
    pub fn packages(&self) -> Vec<(String, String)> {
        self.of_kind("package")
            .map(|r| (field(r, 0), field(r, 1)))
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

/// Owner, group and mode (`0640`) as the inspector's `stat` saw them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Attributes {
    pub owner: String,
    pub group: String,
    pub mode: String,
}

impl Attributes {
    fn of(fields: &[String]) -> Attributes {
        Attributes {
            owner: field(fields, 0),
            group: field(fields, 1),
            mode: field(fields, 2),
        }
    }
}

/// A directory or secret as the instance has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    /// `present`, `missing`, `symlink`, `special`.
    pub state: String,
    pub attributes: Attributes,
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
pub(super) mod tests {
    use super::*;

    /// Every variant, through an exhaustive match: a new variant does not
    /// compile until it is listed here, and so checked below (and run
    /// through the real inspector in `inspector_tests`).
    pub(in crate::verify) fn every_query() -> Vec<Query> {
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
            Query::Check,
        ];
        for q in &all {
            match q {
                Query::CloudInit
                | Query::Units
                | Query::Journal { .. }
                | Query::Manifest
                | Query::Health
                | Query::Log
                | Query::Facts
                | Query::Check => {}
            }
        }
        all
    }

    fn allowlist() -> Vec<String> {
        let inspector = crate::guest::INSPECTOR.shipped();
        let line = inspector
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
        let ok = Reply::parse(&q, b"respot-inspect\t1\tfacts\nkv\tkernel\t6.1\nend\tok\n").unwrap();
        assert_eq!(ok.kv("kernel"), Some("6.1"));
        assert!(Reply::parse(&q, b"respot-inspect\t1\tfacts\nkv\tkernel\t6.1\n").is_err());
        assert!(Reply::parse(&q, b"respot-inspect\t1\tunits\nend\tok\n").is_err());
        assert!(Reply::parse(&q, b"hello\n").is_err());
        let text = Reply::parse(
            &Query::Log,
            b"respot-inspect\t1\tlog\ntext\tlog\ta\tb\ntext\tlog\t\nend\tok\n",
        )
        .unwrap();
        assert_eq!(text.text("log"), vec!["a\tb".to_string(), String::new()]);
    }

    fn protocol_message(result: Result<Reply, VerifyError>) -> String {
        match result {
            Err(VerifyError::Protocol { query, message }) => format!("{query}: {message}"),
            other => panic!("want a protocol error, got {other:?}"),
        }
    }

    #[test]
    fn replies_over_the_cap_or_cut_by_the_inspector_are_refused() {
        let q = Query::Log;
        let line = format!("text\tlog\t{}\n", "y".repeat(1000));
        let mut at_cap = "respot-inspect\t1\tlog\n".to_string();
        while at_cap.len() + line.len() + "end\tok\n".len() <= MAX_REPLY_BYTES {
            at_cap.push_str(&line);
        }
        at_cap.push_str("end\tok\n");
        assert!(at_cap.len() <= MAX_REPLY_BYTES);
        let reply = Reply::parse(&q, at_cap.as_bytes()).expect("a reply within the cap parses");
        assert!(reply.text("log").len() > 1000);

        let mut over = at_cap.clone().into_bytes();
        over.resize(MAX_REPLY_BYTES + 1, b'y');
        let message = protocol_message(Reply::parse(&q, &over));
        assert!(
            message.starts_with("log: the reply is over respot's cap of 1048576 bytes"),
            "{message}"
        );

        let cut = "respot-inspect\t1\tlog\ntext\tlog\tyyy\ntruncated\t1048576\n";
        let message = protocol_message(Reply::parse(&q, cut.as_bytes()));
        assert_eq!(
            message,
            "log: the inspector cut its reply at its cap of 1048576 bytes (`truncated` record)"
        );
    }

    #[test]
    fn cloud_inits_state_comes_from_its_exit_code_and_json() {
        let state = |body: &str| {
            let raw = format!("respot-inspect\t1\tcloud-init\n{body}end\tok\n");
            Reply::parse(&Query::CloudInit, raw.as_bytes())
                .unwrap()
                .cloud_init_status()
        };
        let json =
            |status: &str| format!("text\tstatus-json\t{{\"status\": \"{status}\", \"errors\": []}}\n");
        assert_eq!(state("status\tcloud-init\trunning\n"), "running");
        assert_eq!(state("status\tcloud-init\tunavailable\n"), "unavailable");
        assert_eq!(state(&format!("kv\texit\t0\n{}", json("done"))), "done");
        assert_eq!(state(&format!("kv\texit\t0\n{}", json("disabled"))), "disabled");
        assert_eq!(state(&format!("kv\texit\t0\n{}", json("not run"))), "not-run");
        assert_eq!(
            state(&format!("kv\texit\t0\n{}", json("\\u001b[31mdone"))),
            "unknown"
        );
        assert_eq!(state("kv\texit\t0\ntext\tstatus-json\t\n"), "not-run");
        assert_eq!(state(&format!("kv\texit\t1\n{}", json("error"))), "error");
        assert_eq!(state(&format!("kv\texit\t2\n{}", json("done"))), "degraded");
        assert_eq!(
            state("kv\texit\t2\ntext\tstatus-json\tusage: cloud-init\n"),
            "unknown"
        );
        assert_eq!(state("kv\texit\t127\n"), "unknown");
        assert_eq!(state(""), "unknown");
    }

    #[test]
    fn reply_fields_lose_terminal_control_characters() {
        let q = Query::Units;
        let raw = "respot-inspect\t1\tunits\r\nstatus\tsystemd\tavailable\nunit\ta\x1b[2J.service\tact\rive\x07\n\
                   text\tfailed\tb.service \u{9b}31mfailed\u{202e}\nend\tok\n";
        let reply = Reply::parse(&q, raw.as_bytes()).expect("parses");
        assert_eq!(
            reply.units(),
            vec![("a[2J.service".to_string(), "active".to_string())]
        );
        assert_eq!(reply.text("failed"), vec!["b.service 31mfailed".to_string()]);
        let header = protocol_message(Reply::parse(&q, b"\x1b]0;owned\x07hi\nend\tok\n"));
        assert!(header.contains("got `]0;ownedhi`"), "{header}");
        let cloud_init = Reply::parse(
            &Query::CloudInit,
            b"respot-inspect\t1\tcloud-init\ntext\tstatus-json\t{\"errors\": [\"\\u001b[31mboom\"]}\nend\tok\n",
        )
        .expect("parses");
        assert_eq!(cloud_init.cloud_init_errors(), vec!["[31mboom".to_string()]);
    }
}
