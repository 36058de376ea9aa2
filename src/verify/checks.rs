//! From inspector answers to pass/warn/fail rows, one concern per row.
//!
//! The evaluation functions are pure (replies in, rows out), so they are
//! unit-tested without SSH. Where respot has its own render of what the
//! instance runs, files and probes are held to it (`expect`); the
//! instance's own lists count only when it has none.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::expect::{Expected, entry_rows, file_rows, package_rows, probe_rows};
use super::query::{Query, Reply};
use super::row::{CheckRow, Outcome, drift_detail, probe_row};
use super::text::strip_controls;
use super::transport::{Connection, HostKeyTrust, Transport};
use super::{Stage, Target, VerifyError, VerifySettings, Watch};
use crate::guest::VERIFY_USER;
use crate::keys::KeyStore;

/// Pass/fail/warn for one instance; a warning fails under `--strict`.
fn warn_or_fail(strict: bool) -> Outcome {
    if strict { Outcome::Fail } else { Outcome::Warn }
}

/// While cloud-init still runs, ask again this often. Cheap for the
/// instance: the inspector answers "running" from cloud-init's status files
/// without starting Python.
const CLOUD_INIT_POLL: Duration = Duration::from_secs(1);

pub(crate) async fn verify_target(
    transport: &Transport,
    keys: &KeyStore,
    target: &Target,
    expected: &Expected,
    settings: &VerifySettings,
    deadline: Instant,
    watch: &dyn Watch,
) -> Vec<CheckRow> {
    let _slot = transport.host_slot(&target.endpoint.host).await;
    let connection = match transport.connect(keys, target, settings, deadline).await {
        Ok(c) => c,
        Err(err) => {
            let mut row = CheckRow::new(target, "reachable", Outcome::Fail, err.to_string());
            row.mismatch = err.is_host_key_mismatch();
            return vec![row];
        }
    };
    watch.reached(target, Stage::Connected);
    let trust = match connection.host_key_trust() {
        HostKeyTrust::Pinned => "host key pinned",
        HostKeyTrust::Recorded => "host key as recorded on first contact",
        HostKeyTrust::FirstContact => "first contact: host key recorded now, not checked",
    };
    let mut rows = vec![CheckRow::new(
        target,
        "reachable",
        Outcome::Pass,
        format!(
            "ssh {VERIFY_USER}@{}:{} ({trust})",
            target.endpoint.host, target.endpoint.port
        ),
    )];
    rows.extend(checks_over(&connection, target, expected, settings, deadline, watch).await);
    connection.close().await;
    rows
}

async fn checks_over(
    connection: &Connection,
    target: &Target,
    expected: &Expected,
    settings: &VerifySettings,
    deadline: Instant,
    watch: &dyn Watch,
) -> Vec<CheckRow> {
    let reply = check_when_booted(connection, target, deadline, watch).await;
    watch.reached(target, Stage::Units);
    let strict = settings.strict;
    let Ok(reply) = reply else {
        return answer_or_fail(target, "inspector", reply, |_| Vec::new());
    };
    let mut rows = eval_cloud_init(target, &reply, strict);
    rows.extend(eval_units(target, &reply, strict));
    rows.extend(eval_manifest(target, &reply, expected));
    rows.extend(eval_health(target, &reply, strict, expected));
    if let Some(shipped) = &expected.shipped {
        rows.extend(package_rows(target, &shipped.packages, &reply));
    }
    rows
}

/// One `check` (every answer `verify` needs, one inspector run). While
/// cloud-init still runs on a fresh instance, it waits with the cheap
/// `cloud-init` query and then asks `check` again; at the deadline the
/// last `check` stands, cloud-init's row saying it was still running.
async fn check_when_booted(
    connection: &Connection,
    target: &Target,
    deadline: Instant,
    watch: &dyn Watch,
) -> Result<Reply, VerifyError> {
    let booting = |reply: &Reply| matches!(reply.cloud_init_status().as_str(), "running" | "not-run");
    let reached = |reply: &Reply| {
        let status = reply.cloud_init_status();
        watch.reached(target, Stage::CloudInit(strip_controls(&status)));
    };
    let check = connection.run(&Query::Check).await?;
    if !booting(&check) {
        reached(&check);
        return Ok(check);
    }
    loop {
        if Instant::now() + CLOUD_INIT_POLL >= deadline {
            reached(&check);
            return Ok(check);
        }
        tokio::time::sleep(CLOUD_INIT_POLL).await;
        let status = connection.run(&Query::CloudInit).await?;
        if !booting(&status) {
            break;
        }
    }
    let check = connection.run(&Query::Check).await?;
    reached(&check);
    Ok(check)
}

fn answer_or_fail(
    target: &Target,
    check: &str,
    reply: Result<Reply, VerifyError>,
    eval: impl FnOnce(&Reply) -> Vec<CheckRow>,
) -> Vec<CheckRow> {
    match reply {
        Ok(reply) => eval(&reply),
        Err(err) => vec![CheckRow::new(target, check, Outcome::Fail, err.to_string())],
    }
}

pub(crate) fn eval_cloud_init(target: &Target, reply: &Reply, strict: bool) -> Vec<CheckRow> {
    let status = reply.cloud_init_status();
    let errors = reply.cloud_init_errors().join("; ");
    let (outcome, detail) = match status.as_str() {
        "done" => (Outcome::Pass, "done".to_string()),
        "degraded" => (
            warn_or_fail(strict),
            format!(
                "degraded (exit 2){}",
                if errors.is_empty() {
                    String::new()
                } else {
                    format!(": {errors}")
                }
            ),
        ),
        "error" => (
            Outcome::Fail,
            format!(
                "error{}",
                if errors.is_empty() {
                    String::new()
                } else {
                    format!(": {errors}")
                }
            ),
        ),
        "running" | "not-run" => (Outcome::Fail, format!("still {status} when the timeout ran out")),
        "unavailable" => (
            warn_or_fail(strict),
            "unavailable: cloud-init has not run on this host; not checked".to_string(),
        ),
        other => (Outcome::Fail, format!("unexpected status `{other}`")),
    };
    vec![CheckRow::new(target, "cloud-init", outcome, detail)]
}

pub(crate) fn eval_units(target: &Target, reply: &Reply, strict: bool) -> Vec<CheckRow> {
    if reply.status("systemd") != Some("available") {
        return vec![CheckRow::new(
            target,
            "units",
            warn_or_fail(strict),
            "unavailable: systemd is not running on this host; units not checked",
        )];
    }
    let mut rows: Vec<CheckRow> = reply
        .units()
        .into_iter()
        .map(|(unit, state)| {
            let outcome = if state == "active" {
                Outcome::Pass
            } else {
                Outcome::Fail
            };
            CheckRow::new(target, &format!("unit {unit}"), outcome, state)
        })
        .collect();
    let failed: Vec<String> = reply
        .text("failed")
        .into_iter()
        .filter(|l| !l.trim().is_empty())
        .collect();
    if failed.is_empty() {
        rows.push(CheckRow::new(target, "units", Outcome::Pass, "no failed units"));
    } else {
        let names: Vec<&str> = failed
            .iter()
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        rows.push(CheckRow::new(
            target,
            "units",
            Outcome::Fail,
            format!("failed units: {}", names.join(", ")),
        ));
    }
    rows
}

pub(crate) fn eval_manifest(target: &Target, reply: &Reply, expected: &Expected) -> Vec<CheckRow> {
    if reply.status("manifest") != Some("present") {
        return vec![CheckRow::new(
            target,
            "digest",
            Outcome::Fail,
            "no manifest at /etc/respot/manifest.json: not launched by respot, or its launch part failed",
        )];
    }
    let manifest: serde_json::Value = match serde_json::from_str(&reply.text("manifest").join("\n")) {
        Ok(v) => v,
        Err(e) => {
            return vec![CheckRow::new(
                target,
                "digest",
                Outcome::Fail,
                format!("the manifest is not JSON: {e}"),
            )];
        }
    };
    let mut rows = Vec::new();
    let digest = strip_controls(manifest.get("digest").and_then(|d| d.as_str()).unwrap_or(""));
    let generation = manifest
        .get("generation")
        .map_or_else(String::new, |g| g.to_string());
    if digest == expected.digest.as_str() {
        rows.push(CheckRow::new(
            target,
            "digest",
            Outcome::Pass,
            format!("{} (generation {generation})", expected.digest.short()),
        ));
    } else {
        rows.push(CheckRow::new(
            target,
            "digest",
            Outcome::Fail,
            format!(
                "instance runs `{}`, expected `{}`: it is stale; `respot deploy` replaces it",
                if digest.is_empty() {
                    "(none)"
                } else {
                    digest.get(..12).unwrap_or(&digest)
                },
                expected.digest.short()
            ),
        ));
    }
    rows.extend(match &expected.shipped {
        Some(shipped) => {
            let mut rows = file_rows(target, shipped, reply);
            rows.extend(entry_rows(target, "dir", &shipped.directories, reply));
            rows.extend(entry_rows(target, "secret", &shipped.secrets, reply));
            rows
        }
        None => drift_rows(target, &manifest, reply),
    });
    rows
}

/// A file that is not as the manifest recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drift {
    pub path: String,
    pub recorded: String,
    /// The live sha256, or `missing`, `symlink`, `special`, `unreadable`
    /// (as the inspector says), or `unchecked` (not in its list).
    pub live: String,
}

/// Files whose live sha256 differs from the manifest's. The JSON manifest
/// is the record; the `sha256sum` list only says which files to hash, so a
/// file missing from that list counts as drift too.
pub(crate) fn drift(manifest: &serde_json::Value, reply: &Reply) -> (usize, Vec<Drift>) {
    let live: HashMap<String, (String, String)> = reply
        .files()
        .into_iter()
        .map(|(path, recorded, live)| (path, (recorded, live)))
        .collect();
    let files = manifest
        .get("files")
        .and_then(|f| f.as_array())
        .cloned()
        .unwrap_or_default();
    let mut drifted = Vec::new();
    for file in &files {
        let path = strip_controls(file.get("path").and_then(|p| p.as_str()).unwrap_or(""));
        let recorded = strip_controls(file.get("sha256").and_then(|p| p.as_str()).unwrap_or(""));
        match live.get(&path) {
            Some((listed, now)) if *listed == recorded && *now == recorded => {}
            Some((_, now)) => drifted.push(Drift {
                path,
                recorded,
                live: now.clone(),
            }),
            None => drifted.push(Drift {
                path,
                recorded,
                live: "unchecked".to_string(),
            }),
        }
    }
    (files.len(), drifted)
}

/// The `files` rows when respot has no render of the instance's digest:
/// the manifest is the record, and it must list some files.
fn drift_rows(target: &Target, manifest: &serde_json::Value, reply: &Reply) -> Vec<CheckRow> {
    let (total, drifted) = drift(manifest, reply);
    if total == 0 {
        return vec![CheckRow::new(
            target,
            "files",
            Outcome::Fail,
            "the instance's manifest lists no files; respot ships some to every instance",
        )];
    }
    if drifted.is_empty() {
        return vec![CheckRow::new(
            target,
            "files",
            Outcome::Pass,
            format!("{total} files match their recorded sha256"),
        )];
    }
    drifted
        .iter()
        .map(|d| {
            CheckRow::new(
                target,
                "files",
                Outcome::Fail,
                drift_detail(&d.path, &d.recorded, &d.live),
            )
        })
        .collect()
}

pub(crate) fn eval_health(
    target: &Target,
    reply: &Reply,
    strict: bool,
    expected: &Expected,
) -> Vec<CheckRow> {
    if reply.status("health") != Some("available") {
        return vec![CheckRow::new(
            target,
            "health",
            warn_or_fail(strict),
            "unavailable: neither curl nor python3 on the instance; probes not run",
        )];
    }
    if let Some(shipped) = &expected.shipped {
        return probe_rows(target, &shipped.probes, reply);
    }
    reply
        .probes()
        .into_iter()
        .map(|p| {
            probe_row(
                target,
                &format!("health :{}{}", p.port, p.path),
                &p.got,
                &p.want,
                &p.body,
            )
        })
        .collect()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::provider::SshEndpoint;
    use crate::template::Digest;
    use crate::verify::{ExpectedFile, ExpectedProbe, Shipped};

    pub(in crate::verify) fn target() -> Target {
        Target {
            instance: "i-1".into(),
            name: "n".into(),
            endpoint: SshEndpoint {
                host: "127.0.0.1".into(),
                port: 22,
            },
        }
    }

    /// The inspector's answer to `query` with the records of `body`.
    pub(in crate::verify) fn reply(query: &Query, body: &str) -> Reply {
        let text = format!("respot-inspect\t1\t{}\n{body}end\tok\n", query.name());
        Reply::parse(query, text.as_bytes()).unwrap()
    }

    fn outcomes(rows: &[CheckRow]) -> Vec<(String, Outcome)> {
        rows.iter().map(|r| (r.check.clone(), r.result)).collect()
    }

    fn failed_details(rows: &[CheckRow]) -> Vec<&str> {
        rows.iter()
            .filter(|r| r.result == Outcome::Fail)
            .map(|r| r.detail.as_str())
            .collect()
    }

    #[test]
    fn cloud_init_statuses() {
        let cases = [
            ("done", false, Outcome::Pass),
            ("degraded", false, Outcome::Warn),
            ("degraded", true, Outcome::Fail),
            ("error", false, Outcome::Fail),
            ("running", false, Outcome::Fail),
            ("unavailable", false, Outcome::Warn),
            ("unavailable", true, Outcome::Fail),
            ("weird", false, Outcome::Fail),
        ];
        for (status, strict, want) in cases {
            let r = reply(
                &Query::CloudInit,
                &format!("status\tcloud-init\t{status}\ntext\tstatus-json\t{{\"errors\": [\"boom\"]}}\n"),
            );
            let rows = eval_cloud_init(&target(), &r, strict);
            assert_eq!(rows[0].result, want, "{status} strict={strict}");
        }
        let r = reply(
            &Query::CloudInit,
            "status\tcloud-init\terror\ntext\tstatus-json\t{\"errors\": [\"boom\"]}\n",
        );
        assert!(eval_cloud_init(&target(), &r, false)[0].detail.contains("boom"));
    }

    #[test]
    fn units_must_be_active_and_none_failed() {
        let r = reply(
            &Query::Units,
            "status\tsystemd\tavailable\nunit\ta.service\tactive\nunit\tb.service\tfailed\ntext\tfailed\tb.service loaded failed failed B\n",
        );
        assert_eq!(
            outcomes(&eval_units(&target(), &r, false)),
            vec![
                ("unit a.service".to_string(), Outcome::Pass),
                ("unit b.service".to_string(), Outcome::Fail),
                ("units".to_string(), Outcome::Fail),
            ]
        );
        let r = reply(&Query::Units, "status\tsystemd\tunavailable\n");
        assert_eq!(
            outcomes(&eval_units(&target(), &r, false)),
            vec![("units".to_string(), Outcome::Warn)]
        );
    }

    #[test]
    fn manifest_digest_and_drift() {
        let digest = "a".repeat(64);
        let expected = Expected {
            digest: Digest::parse(&digest).unwrap(),
            shipped: None,
        };
        let manifest = format!(
            "{{\"digest\": \"{digest}\", \"generation\": 2, \"files\": [{{\"path\": \"/a\", \"sha256\": \"11\"}}, {{\"path\": \"/b\", \"sha256\": \"22\"}}, {{\"path\": \"/c\", \"sha256\": \"33\"}}]}}"
        );
        let body = format!(
            "status\tmanifest\tpresent\ntext\tmanifest\t{manifest}\nfile\t/a\t11\t11\troot\troot\t0644\nfile\t/b\t22\t99\nfile\t/c\t33\tmissing\n"
        );
        let rows = eval_manifest(&target(), &reply(&Query::Manifest, &body), &expected);
        assert_eq!(rows[0].result, Outcome::Pass);
        let failed = failed_details(&rows);
        assert_eq!(failed.len(), 2, "{rows:?}");
        assert!(failed[0].starts_with("`/b` changed"), "{failed:?}");
        assert!(failed[1].starts_with("`/c` is missing"), "{failed:?}");

        let other = Expected {
            digest: Digest::parse(&"b".repeat(64)).unwrap(),
            shipped: None,
        };
        let rows = eval_manifest(&target(), &reply(&Query::Manifest, &body), &other);
        assert_eq!(rows[0].result, Outcome::Fail);
        assert!(rows[0].detail.contains("stale"));
        let rows = eval_manifest(
            &target(),
            &reply(&Query::Manifest, "status\tmanifest\tmissing\n"),
            &expected,
        );
        assert_eq!(outcomes(&rows), vec![("digest".to_string(), Outcome::Fail)]);

        // Without a render, a manifest that lists no files fails.
        let empty = format!(
            "status\tmanifest\tpresent\ntext\tmanifest\t{{\"digest\": \"{digest}\", \"files\": []}}\n"
        );
        let rows = eval_manifest(&target(), &reply(&Query::Manifest, &empty), &expected);
        assert_eq!(rows[1].result, Outcome::Fail, "{rows:?}");
        assert!(rows[1].detail.contains("lists no files"), "{rows:?}");

        // With one, the render decides: /a and /b as rendered, but the
        // instance never checked the render's /d.
        let rendered = Expected {
            shipped: Some(Shipped {
                files: [("/a", "11"), ("/b", "22"), ("/d", "44")]
                    .iter()
                    .map(|(path, sha256)| ExpectedFile {
                        path: path.to_string(),
                        sha256: sha256.to_string(),
                        owner: "root".to_string(),
                        group: "root".to_string(),
                        mode: "0644".to_string(),
                    })
                    .collect(),
                ..Shipped::default()
            }),
            ..expected.clone()
        };
        let rows = eval_manifest(&target(), &reply(&Query::Manifest, &body), &rendered);
        let failed = failed_details(&rows);
        assert_eq!(failed.len(), 3, "{rows:?}");
        assert!(failed[0].starts_with("`/b` changed"), "{failed:?}");
        assert!(failed[1].starts_with("`/d` is in the render"), "{failed:?}");
        assert!(
            failed[2].starts_with("`/c` is checked by the instance"),
            "{failed:?}"
        );
    }

    #[test]
    fn health_probes() {
        let r = reply(
            &Query::Health,
            "status\thealth\tavailable\nprobe\t8080\t/health\t200\t200\tok\nprobe\t8081\t/\t200\t503\tdown\nprobe\t8082\t/\t200\tnone\t\n",
        );
        let unrendered = Expected {
            digest: Digest::parse(&"a".repeat(64)).unwrap(),
            shipped: None,
        };
        let want = vec![
            ("health :8080/health".to_string(), Outcome::Pass),
            ("health :8081/".to_string(), Outcome::Fail),
            ("health :8082/".to_string(), Outcome::Fail),
        ];
        assert_eq!(outcomes(&eval_health(&target(), &r, false, &unrendered)), want);
        // With a render, its probes decide, not the instance's.
        let rendered = Expected {
            shipped: Some(Shipped {
                files: Vec::new(),
                probes: vec![ExpectedProbe {
                    port: 8080,
                    path: "/health".to_string(),
                    status: 200,
                }],
                ..Shipped::default()
            }),
            ..unrendered
        };
        assert_eq!(outcomes(&eval_health(&target(), &r, false, &rendered)), want);
        let r = reply(&Query::Health, "status\thealth\tavailable\n");
        assert_eq!(
            outcomes(&eval_health(&target(), &r, false, &rendered)),
            vec![("health".to_string(), Outcome::Fail)]
        );
    }
}
