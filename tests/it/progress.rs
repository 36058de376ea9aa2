//! Progress as people and scripts see it, on a real local VM: live lines in
//! a real pseudo-terminal (a private tmux server) that are gone when the
//! create ends, the summary it ends with, the JSON lines of `--output json`,
//! and `debug`'s header-first report.

use std::process::Output;
use std::time::Duration;

use crate::support::terminal::Terminal;
use crate::support::vms::SampleVms;

/// One VM of the sample blueprint, on `SampleVms` (whose drop destroys it
/// and kills, by PID, what names this test's state directory).
struct Session(SampleVms);

impl std::ops::Deref for Session {
    type Target = SampleVms;
    fn deref(&self) -> &SampleVms {
        &self.0
    }
}

impl Session {
    fn new() -> Session {
        Session(SampleVms::new(1, &[]))
    }

    /// `respot ARGS` in a real terminal of its own.
    fn in_terminal(&self, args: &str) -> Terminal {
        let context = self.test.context();
        let env: Vec<(String, String)> = context
            .env()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string_lossy().to_string()))
            .collect();
        Terminal::start(
            "progress",
            &context.home().join("in-terminal.sh"),
            self.test.path(),
            &env,
            args,
        )
    }
}

/// A line of the live display: an instance with its phase bar.
fn progress_line(line: &str) -> bool {
    line.contains("hello-g1-1 i-") && line.contains("[█")
}

/// The live lines appear while the VM boots and are gone when create ends;
/// the summary names the phases, the address and the cost. Then `debug`
/// shows the header before the console, and a JSON create reports each
/// phase as a JSON line.
#[test]
fn a_local_create_shows_live_progress_then_a_summary() {
    let session = Session::new();
    let terminal = session.in_terminal("create");
    let (during, end) = terminal.watch(Duration::from_secs(900), |screen| {
        screen.lines().any(progress_line) && screen.contains(" ssh ")
    });
    let during =
        during.unwrap_or_else(|| panic!("no live progress line with ssh was seen; at the end:\n{end}"));
    eprintln!("--- during ---\n{during}\n--- end ---\n{end}");
    if let Some(path) = std::env::var_os("RESPOT_PROGRESS_CAPTURE") {
        std::fs::write(path, format!("{during}\n--- at the end ---\n{end}")).unwrap();
    }
    assert!(end.contains("respot-exit:0"), "create succeeded: {end}");
    assert!(
        during.contains("`hello` generation 1"),
        "a line for the generation: {during}"
    );
    // The region line redraws on its own tick, so it may still say
    // `1 running` while the instance line already says `ssh`.
    assert!(
        during.contains("local 1 instance (1 ssh)") || during.contains("local 1 instance (1 running)"),
        "a line for the region: {during}"
    );
    let history = terminal.screen(true);
    assert!(
        !history.lines().any(progress_line) && !history.contains('░'),
        "the live lines are gone at the end: {history}"
    );
    assert!(end.contains("done in "), "{end}");
    assert!(
        end.contains("slowest instance: running ") && end.contains(", verified "),
        "phase durations: {end}"
    );
    assert!(
        end.contains("hello-g1-1 (i-") && end.contains("127.0.0.1:"),
        "{end}"
    );
    assert!(end.contains("estimated cost: $0.00/hour"), "{end}");

    let listed: serde_json::Value =
        serde_json::from_slice(&session.respot(&["list", "--output", "json"]).stdout).unwrap();
    let id = listed[0]["id"].as_str().unwrap().to_string();
    assert_debug_shows_the_header_first(&session, &id);
    assert_eq!(session.respot(&["destroy", "--yes"]).status.code(), Some(0));

    let created = session.respot(&["create", "--output", "json"]);
    assert_eq!(created.status.code(), Some(0));
    assert_json_lines(&created);
}

fn assert_debug_shows_the_header_first(session: &Session, id: &str) {
    let out = session.respot(&["debug", id]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.starts_with(&format!("instance {id} (hello-g1-1) at 127.0.0.1:")),
        "{text}"
    );
    let console = text.find("== serial console").expect("the console is shown");
    let cloud_init = text.find("== cloud-init").expect("the report follows");
    assert!(
        console < cloud_init,
        "the console comes before the report: {text}"
    );
    assert!(
        !text.chars().any(|c| c.is_control() && c != '\n' && c != '\t'),
        "no terminal control characters: {text:?}"
    );
}

/// Each phase of the VM as one JSON line on stderr, in order, and the
/// summary in the report on stdout.
fn assert_json_lines(created: &Output) {
    let stderr = String::from_utf8_lossy(&created.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with('{')).collect();
    for line in &lines {
        let event: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert_eq!(event["schema"], "respot.progress", "{line}");
        assert_eq!(event["version"], 1, "{line}");
    }
    insta::with_settings!({filters => vec![
        (r#""(elapsed|took)_ms":\d+"#, r#""${1}_ms":"[ms]""#),
        (r"i-[0-9a-f]{16}", "[id]"),
    ]}, {
        insta::assert_snapshot!(lines.join("\n"));
    });
    let report: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
    let summary = &report["summary"];
    assert_eq!(summary["cost_per_hour"], 0.0, "{summary}");
    assert_eq!(summary["instances"][0]["phase"], "verified", "{summary}");
    assert!(
        summary["instances"][0]["address"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{summary}"
    );
    let phases: Vec<&str> = summary["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
    assert_eq!(
        phases,
        ["running", "ssh", "cloud-init", "units", "verified"],
        "{summary}"
    );
}
