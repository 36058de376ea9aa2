//! The sample blueprint booted on real local VMs, for the tests that need
//! them: its own state directory, `respot` runs that log what they printed,
//! and a `Drop` that destroys what the test left and, as a last resort,
//! kills the qemu and haproxy processes whose command line names this
//! test's state directory (ours only, by PID).

use std::path::{Path, PathBuf};
use std::process::Output;

use super::Test;

/// Processes running one of `programs` whose command line names `state`.
pub fn pids_under(state: &Path, programs: &[&str]) -> Vec<i32> {
    let needle = state.display().to_string();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if programs.iter().any(|p| cmdline.contains(p)) && cmdline.contains(&needle) {
            pids.push(pid);
        }
    }
    pids
}

/// Kills (SIGKILL) the processes running one of `programs` under `state`.
pub fn kill_under(state: &Path, programs: &[&str]) {
    for pid in pids_under(state, programs) {
        // SAFETY: kill(2) on a process whose command line names this test's state dir.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

pub struct SampleVms {
    pub test: Test,
    pub state: PathBuf,
}

impl SampleVms {
    /// The sample with `[local] count = count`, each `(from, to)` of
    /// `edits` then replaced in its `respot.toml`.
    pub fn new(count: u32, edits: &[(&str, String)]) -> SampleVms {
        let test = Test::sample();
        let path = test.path().join("respot.toml");
        let mut toml = std::fs::read_to_string(&path).unwrap();
        toml = toml.replace("[local]\ncount = 2", &format!("[local]\ncount = {count}"));
        for (from, to) in edits {
            toml = toml.replace(from, to);
        }
        std::fs::write(&path, toml).unwrap();
        test.context().link_vm_image();
        let state = test.context().state();
        SampleVms { test, state }
    }

    pub fn path(&self) -> &Path {
        self.test.path()
    }

    /// Runs respot; what it printed goes to the test's output.
    pub fn respot(&self, args: &[&str]) -> Output {
        self.test.respot_logged(args)
    }

    /// Processes running one of `programs` for this test.
    pub fn pids(&self, programs: &[&str]) -> Vec<i32> {
        pids_under(&self.state, programs)
    }
}

impl Drop for SampleVms {
    fn drop(&mut self) {
        // Best effort: the kill below is the backstop.
        let _ = self.test.context().command().args(["destroy", "--yes"]).output();
        kill_under(&self.state, &["qemu-system-x86_64", "haproxy"]);
    }
}
