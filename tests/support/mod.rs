//! Test harness shared by the integration tests: a builder that runs the
//! real `respot` binary in its own `TestContext` (temporary root, `HOME` and
//! `XDG_*`) and reports every mismatch before failing.

#![allow(dead_code)]

pub mod context;
pub mod moto;
pub mod sshd;
pub mod terminal;
pub mod vms;

use std::path::{Path, PathBuf};
use std::process::Output;

pub use context::{TestContext, raw_ssh};

/// One run of the `respot` binary and what it must produce.
pub struct Test {
    context: TestContext,
    args: Vec<String>,
    env: Vec<(String, String)>,
    stdin: Option<String>,
    status: Option<i32>,
    stdout_contains: Vec<String>,
    stderr_contains: Vec<String>,
    stderr_lacks: Vec<String>,
}

impl Test {
    #[must_use]
    pub fn new() -> Test {
        Test {
            context: TestContext::new(),
            args: Vec::new(),
            env: Vec::new(),
            stdin: None,
            status: None,
            stdout_contains: Vec::new(),
            stderr_contains: Vec::new(),
            stderr_lacks: Vec::new(),
        }
    }

    /// The sample blueprint, scaffolded by `respot init` into the temp dir.
    #[must_use]
    pub fn sample() -> Test {
        let test = Test::new();
        let out = test
            .context
            .command()
            .args(["init", "."])
            .output()
            .expect("run respot init");
        assert!(
            out.status.success(),
            "respot init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        test
    }

    pub fn path(&self) -> &Path {
        self.context.path()
    }

    pub fn context(&self) -> &TestContext {
        &self.context
    }

    /// Runs respot with `args` in this test's context; what it printed goes
    /// to the test's output (the long VM tests read it when they fail).
    pub fn respot_logged(&self, args: &[&str]) -> Output {
        let out = self.context.command().args(args).output().expect("run respot");
        eprintln!(
            "respot {args:?} -> {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    pub fn write(self, rel: &str, content: &str) -> Test {
        let path = self.path().join(rel);
        std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
        std::fs::write(&path, content).expect("write test file");
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Test {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Test {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    pub fn stdin(mut self, input: &str) -> Test {
        self.stdin = Some(input.to_string());
        self
    }

    pub fn status(mut self, code: i32) -> Test {
        self.status = Some(code);
        self
    }

    pub fn stdout_contains(mut self, text: &str) -> Test {
        self.stdout_contains.push(text.to_string());
        self
    }

    pub fn stderr_contains(mut self, text: &str) -> Test {
        self.stderr_contains.push(text.to_string());
        self
    }

    pub fn stderr_lacks(mut self, text: &str) -> Test {
        self.stderr_lacks.push(text.to_string());
        self
    }

    /// Runs the binary, checks every expectation, and returns the output and
    /// the test (whose temp dir lives as long as it does).
    pub fn run(self) -> (Output, Test) {
        let mut cmd = self.context.command();
        cmd.args(&self.args);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        if let Some(input) = &self.stdin {
            cmd.write_stdin(input.clone());
        }
        let out = cmd.output().expect("run respot");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let mut problems = Vec::new();
        if let Some(want) = self.status
            && out.status.code() != Some(want)
        {
            problems.push(format!("exit status: want {want}, got {:?}", out.status.code()));
        }
        for text in &self.stdout_contains {
            if !stdout.contains(text.as_str()) {
                problems.push(format!("stdout lacks {text:?}"));
            }
        }
        for text in &self.stderr_contains {
            if !stderr.contains(text.as_str()) {
                problems.push(format!("stderr lacks {text:?}"));
            }
        }
        for text in &self.stderr_lacks {
            if stderr.contains(text.as_str()) {
                problems.push(format!("stderr has {text:?}"));
            }
        }
        if !problems.is_empty() {
            panic!(
                "respot {:?}:\n  {}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
                self.args,
                problems.join("\n  ")
            );
        }
        (out, self)
    }
}

/// Copies a directory tree, creating files in the reverse of the source's
/// sorted order, so directory listing order differs from the original.
pub fn copy_tree_reversed(from: &Path, to: &Path) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(from)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    entries.reverse();
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in entries {
        let target = to.join(entry.file_name().expect("named"));
        if entry.is_dir() {
            copy_tree_reversed(&entry, &target);
        } else {
            std::fs::copy(&entry, &target).expect("copy file");
        }
    }
}

/// Stops a child we spawned, by its PID: SIGTERM, then SIGKILL once `grace`
/// has passed. Used by the `Drop` guards of every server the tests start.
pub fn stop_child(child: &mut std::process::Child, grace: std::time::Duration) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let deadline = std::time::Instant::now() + grace;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // It ignored SIGTERM; the kill is harmless if it exits meanwhile.
    let _ = child.kill();
    let _ = child.wait();
}
