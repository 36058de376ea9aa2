//! A real pseudo-terminal for tests of what people see: a private tmux
//! server (its own socket name, no config file) running one command in a
//! fixed-size pane. `Drop` stops that server only.

use std::path::Path;
use std::process::{Command, Output};

pub struct Terminal {
    socket: String,
}

impl Terminal {
    /// Runs `respot ARGS` in `dir` with exactly `env` added, in a 120x30
    /// pane that stays after it exits, with `respot-exit:CODE` as its last
    /// line. `script` is where the wrapper script is written.
    pub fn start(name: &str, script: &Path, dir: &Path, env: &[(String, String)], args: &str) -> Terminal {
        let terminal = Terminal {
            socket: format!("respot-{name}-{}", std::process::id()),
        };
        let mut text = format!("#!/bin/sh\ncd '{}'\n", dir.display());
        for (key, value) in env {
            text.push_str(&format!("export {key}='{value}'\n"));
        }
        let respot = assert_cmd::cargo::cargo_bin("respot");
        text.push_str(&format!(
            "'{}' {args}\necho \"respot-exit:$?\"\nexec sleep 900\n",
            respot.display()
        ));
        std::fs::write(script, text).expect("write the terminal script");
        std::fs::set_permissions(script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("make the terminal script executable");
        let script = script.display().to_string();
        let out = terminal.tmux(&[
            "new-session",
            "-d",
            "-x",
            "120",
            "-y",
            "30",
            "-s",
            "main",
            &script,
        ]);
        assert!(
            out.status.success(),
            "tmux: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        terminal
    }

    fn tmux(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .output()
            .expect("run tmux (apt-get install tmux)")
    }

    /// The pane as shown, or with `history` every line it ever held.
    pub fn screen(&self, history: bool) -> String {
        let mut args = vec!["capture-pane", "-p", "-t", "main"];
        if history {
            args.extend(["-S", "-"]);
        }
        String::from_utf8_lossy(&self.tmux(&args).stdout).to_string()
    }

    /// Polls the screen until `respot-exit:` shows (or `limit` passes);
    /// returns the first screen `during` accepted, and the last one.
    pub fn watch(
        &self,
        limit: std::time::Duration,
        during: impl Fn(&str) -> bool,
    ) -> (Option<String>, String) {
        let started = std::time::Instant::now();
        let mut seen = None;
        loop {
            assert!(
                started.elapsed() < limit,
                "respot did not end: {}",
                self.screen(false)
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
            let screen = self.screen(false);
            if seen.is_none() && during(&screen) {
                seen = Some(screen.clone());
            }
            if screen.contains("respot-exit:") {
                return (seen, screen);
            }
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        // Our own server only: it was started on our socket name.
        let _ = self.tmux(&["kill-server"]);
    }
}
