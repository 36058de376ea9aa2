//! One isolated environment per test, like uv's `TestContext`: a temporary
//! root holding the working directory (the blueprint folder) and, beside
//! it, `HOME` and every `XDG_*` directory. No test reads or writes
//! the developer's keys, state or cache; the local VM image is the one
//! exception, linked read-only-by-convention from the real cache because it
//! takes minutes to build.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct TestContext {
    root: tempfile::TempDir,
    work: PathBuf,
}

impl TestContext {
    #[must_use]
    pub fn new() -> TestContext {
        let root = tempfile::Builder::new()
            .prefix("respot-test-")
            .tempdir()
            .expect("create a temp dir");
        let work = root.path().join("work");
        let context = TestContext { root, work };
        let dirs = [
            context.path().to_path_buf(),
            context.home(),
            context.state(),
            context.cache(),
            context.config_home(),
        ];
        for dir in dirs {
            std::fs::create_dir_all(dir).expect("create an isolated directory");
        }
        context
    }

    /// The working directory of every command, and the blueprint folder.
    pub fn path(&self) -> &Path {
        &self.work
    }

    pub fn home(&self) -> PathBuf {
        self.root.path().join("home")
    }

    pub fn state(&self) -> PathBuf {
        self.root.path().join("state")
    }

    pub fn cache(&self) -> PathBuf {
        self.root.path().join("cache")
    }

    fn config_home(&self) -> PathBuf {
        self.root.path().join("config")
    }

    /// Where respot keeps `deployment`'s SSH keys under this context.
    pub fn keys_dir(&self, deployment: &str) -> PathBuf {
        self.state().join("respot/keys").join(deployment)
    }

    /// Where the local provider keeps `deployment`'s VMs under this context.
    pub fn vms_dir(&self, deployment: &str) -> PathBuf {
        self.state().join("respot/local").join(deployment)
    }

    /// The variables that isolate a respot process.
    pub fn env(&self) -> Vec<(&'static str, OsString)> {
        vec![
            ("HOME", self.home().into()),
            ("XDG_STATE_HOME", self.state().into()),
            ("XDG_CACHE_HOME", self.cache().into()),
            ("XDG_CONFIG_HOME", self.config_home().into()),
            ("NO_COLOR", "1".into()),
        ]
    }

    /// `respot`, isolated, in this context's root.
    pub fn command(&self) -> assert_cmd::Command {
        self.command_in(self.path())
    }

    /// `respot`, isolated, in another directory (a copied blueprint).
    pub fn command_in(&self, dir: &Path) -> assert_cmd::Command {
        let mut cmd = assert_cmd::Command::cargo_bin("respot").expect("the respot binary is built");
        cmd.current_dir(dir).env_remove("RUST_LOG").envs(self.env());
        cmd
    }

    /// The same as a plain `std::process::Command`, for tests that spawn
    /// respot and interact with it while it runs.
    pub fn std_command(&self) -> Command {
        let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("respot"));
        cmd.current_dir(self.path())
            .env_remove("RUST_LOG")
            .envs(self.env());
        cmd
    }

    /// Makes the VM image that `scripts/build-image` cached for this user
    /// visible under the isolated cache.
    pub fn link_vm_image(&self) {
        let real = respot::paths::Paths::from_env()
            .image_dir()
            .expect("HOME is set for the test process");
        let link = self.cache().join("respot/images/debian-12");
        std::fs::create_dir_all(link.parent().expect("has a parent")).expect("mkdir images");
        std::os::unix::fs::symlink(&real, &link).expect("link the VM image");
    }
}

/// The ssh client as someone holding respot's verification key would run
/// it by hand: no config file, no agent, strict host keys. Used to prove
/// that the key runs nothing but the inspector.
pub fn raw_ssh(key: &Path, known_hosts: &Path, user: &str, port: u16, command: &str) -> Command {
    raw_ssh_with(key, known_hosts, user, port, &[], Some(command))
}

/// [`raw_ssh`] with more client options (`-tt`, `-L …`, `-N`), and with no
/// command at all when `command` is `None`.
pub fn raw_ssh_with(
    key: &Path,
    known_hosts: &Path,
    user: &str,
    port: u16,
    options: &[&str],
    command: Option<&str>,
) -> Command {
    let mut ssh = Command::new("ssh");
    ssh.args(["-F", "/dev/null"])
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "IdentityAgent=none",
        ])
        .args([
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
        ])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .arg("-i")
        .arg(key)
        .args(options)
        .args(["-p", &port.to_string(), "-l", user, "127.0.0.1"])
        .stdin(std::process::Stdio::null());
    if let Some(command) = command {
        ssh.args(["--", command]);
    }
    ssh
}
