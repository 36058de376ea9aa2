//! respot's own side of the instance: the files and paths respot itself puts
//! on every instance, whatever the blueprint says.
//!
//! These are respot's, not the user's. They are versioned with the binary
//! (embedded here with `include_str!`), added at render time, and they are
//! what keeps verification read-only: the inspector is the only command
//! respot's verification key can run, and `60-respot.conf` tells sshd where
//! that key lives. So a blueprint may not ship a file at any of these paths,
//! nor anything under `/etc/respot/` (see [`owns`]).
//!
//! This module only names and holds them; `template` renders them.

use crate::config::HttpProbe;

mod inspector;
pub mod minify;

pub use inspector::{InspectorParts, inspector};
#[cfg(test)]
mod place_tests;

/// One of respot's own files, the same on every instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestFile {
    /// Absolute path on the instance.
    pub path: &'static str,
    /// Octal mode, as cloud-init's `write_files` takes it.
    pub mode: &'static str,
    pub content: &'static str,
}

/// Appends one timestamped line to the deployment log; the template's
/// `runcmd` steps call it as `respot.deploy_log`.
pub const DEPLOY_LOG_HELPER: GuestFile = GuestFile {
    path: "/usr/lib/respot/deploy-log",
    mode: "0755",
    content: include_str!("deploy-log.sh"),
};

/// The read-only inspector: the forced command of the verification key.
pub const INSPECTOR: GuestFile = GuestFile {
    path: INSPECTOR_PATH,
    mode: "0755",
    content: include_str!("inspect.sh"),
};

/// Points sshd at `VERIFY_KEYS_DIR`, outside the login user's home.
pub const SSHD_CONFIG: GuestFile = GuestFile {
    path: "/etc/ssh/sshd_config.d/60-respot.conf",
    mode: "0644",
    content: include_str!("60-respot.conf"),
};

/// The one sudo rule of `VERIFY_USER`: the inspector's `hash-manifest`
/// entry as root, with that fixed argument, so files it cannot read (0600
/// ones) are hashed too. Mode 0444, not sudo's customary 0440: the rule is
/// no secret, and so respot-verify can hash this file too (sudo refuses
/// only rule files others may write).
pub const SUDOERS: GuestFile = GuestFile {
    path: "/etc/sudoers.d/respot",
    mode: "0444",
    content: include_str!("sudoers-respot-verify"),
};

/// Places what `write_files` cannot: `[[directories]]`, the owners of
/// bundled files, `[[secrets]]` (from the local seed, or from SSM with the
/// instance profile). Shipped only to blueprints that need it, and run by
/// the template's `runcmd` as `respot.place`.
pub const PLACE: GuestFile = GuestFile {
    path: "/usr/lib/respot/place",
    mode: "0755",
    content: include_str!("place.sh"),
};

/// Every file respot ships (see [`GuestFile::shipped`]); the sudo rule
/// only with the inspector's `root-hash` part (see [`inspector`]).
pub const FILES: [GuestFile; 4] = [DEPLOY_LOG_HELPER, INSPECTOR, SSHD_CONFIG, SUDOERS];

impl GuestFile {
    /// The content as shipped: a shell script through [`minify::shell`],
    /// anything else (sshd_config, sudoers) through [`minify::config`].
    /// The comments are for this repository's readers and cost a third of
    /// respot's share of EC2's 16 KB; what runs is unchanged.
    pub fn shipped(&self) -> String {
        if self.content.starts_with("#!/bin/sh\n") {
            minify::shell(self.content)
        } else {
            minify::config(self.content)
        }
    }
}

/// The bundle step (Python, as cloud-init runs it): fetches the bundle,
/// checks its sha256 before writing anything, writes its files, and fails
/// closed with a line in the deployment log. Its arguments are the sha256
/// and the source (`https://…` or `seed:NAME`).
pub fn bundle_step() -> String {
    minify::comment_lines(include_str!("bundle-boot.py"))
}

/// The bundle's file name on the local provider's NoCloud seed.
pub const SEED_BUNDLE_NAME: &str = "bundle.tar.gz";

pub const INSPECTOR_PATH: &str = "/usr/lib/respot/inspect";
/// respot's state on the instance. Everything below it is respot's.
pub const STATE_DIR: &str = "/etc/respot";
/// The manifest, written at launch (JSON).
pub const MANIFEST_PATH: &str = "/etc/respot/manifest.json";
/// The manifest's files in `sha256sum` format, written at launch.
pub const SUMS_PATH: &str = "/etc/respot/manifest.sha256";
/// The units to check, one per line, written at launch.
pub const UNITS_PATH: &str = "/etc/respot/units";
/// The `[verify]` health probes, written at render (see [`probes_file`]).
pub const PROBES_PATH: &str = "/etc/respot/probes";
/// The `[[directories]]`, `path owner group mode` per line, written at
/// render: what `PLACE` makes and the inspector checks.
pub const DIRECTORIES_PATH: &str = "/etc/respot/directories";
/// Bundled blueprint files not owned by root, `path owner group` per line:
/// the bundle lands as root in bootcmd, before `users`; `PLACE` chowns.
pub const OWNERS_PATH: &str = "/etc/respot/owners";
/// The `[[secrets]]`, `path owner group mode source` per line: what
/// `PLACE` installs and the inspector checks (existence,
/// owner, mode; never content).
pub const SECRETS_PATH: &str = "/etc/respot/secrets";
/// The `[packages]` to check, one name per line, written at render.
pub const PACKAGES_PATH: &str = "/etc/respot/packages";
/// sshd reads the verification key from here (see `60-respot.conf`).
pub const VERIFY_KEYS_DIR: &str = "/etc/respot/verify_keys";
/// `VERIFY_USER`'s home: root-owned and 0755, so the account cannot write
/// anything there that a login would read.
pub const VERIFY_HOME: &str = "/var/lib/respot-verify";
/// The deployment log that `DEPLOY_LOG_HELPER` appends to.
pub const DEPLOY_LOG_PATH: &str = "/var/log/respot/deploy.log";

/// Whether `path` on the instance is respot's own: one of [`FILES`], a path
/// below one of them, or anything in [`STATE_DIR`]. A blueprint file at such
/// a path is refused at render.
pub fn owns(path: &str) -> bool {
    FILES
        .iter()
        .map(|f| f.path)
        .chain([PLACE.path, STATE_DIR])
        .any(|owned| path == owned || path.strip_prefix(owned).is_some_and(|rest| rest.starts_with('/')))
}

/// The account that answers respot's verification: the inspector runs as
/// it, never as the login user. respot creates it at boot; a blueprint may
/// neither create nor change it.
pub const VERIFY_USER: &str = "respot-verify";

/// Why a blueprint may not ship a file at `path` (with `content`) even
/// though respot does not own that path: it could decide which key runs
/// what over SSH, or give the verification account rights. `None` when
/// the file is the blueprint's business.
pub fn guarded(path: &str, content: &[u8]) -> Option<&'static str> {
    let under = |dir: &str| path.strip_prefix(dir).is_some_and(|rest| rest.starts_with('/'));
    if path == "/etc/ssh" || under("/etc/ssh") {
        return Some(
            "sshd's configuration, host keys and key files decide which key may run what; \
             respot's drop-in and pinned host keys must be the only word there",
        );
    }
    if path.split('/').any(|part| part == ".ssh") {
        return Some(
            "`.ssh/` holds login keys, which could reach the instance outside respot's \
             restricted verification key; set `ssh.authorized_key` in respot.toml instead",
        );
    }
    if path == "/etc/sudoers" || path == "/etc/sudoers.d" {
        return Some("sudo's own configuration decides who may run what as root");
    }
    if under("/etc/sudoers.d") && widens_sudo(content) {
        return Some(
            "it could grant rights to respot's verification account (by name, by a group it is \
             in, as `ALL`, through an alias, an include or `Defaults`), which must stay read-only",
        );
    }
    None
}

/// Whether a sudoers drop-in could reach `VERIFY_USER`: it names the
/// account, a user id (`#998`), a group or group id (it is in `adm` and `systemd-journal`), a
/// netgroup, every user (`ALL` as the user list), an alias or an include,
/// or changes `Defaults`. Plain `user host=(runas) commands` lines for other
/// named users pass.
fn widens_sudo(content: &[u8]) -> bool {
    let text = String::from_utf8_lossy(content);
    if text.contains(VERIFY_USER) {
        return true;
    }
    text.lines().map(str::trim).filter(|l| !l.is_empty()).any(|line| {
        let first = line.split([' ', '\t', ',', '=']).next().unwrap_or("");
        line.starts_with("@include")
            || line.starts_with("#include")
            || line
                .strip_prefix('#')
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
            || (!line.starts_with('#') && (line.contains('%') || line.contains('+')))
            || first == "ALL"
            || first.ends_with("_Alias")
            || first.starts_with("Defaults")
    })
}

/// Whether `path` is where sudo reads its rules (`/etc/sudoers`,
/// `/etc/sudoers.d/`): a file there whose content respot cannot see (a
/// secret) could grant the verification account anything.
pub fn guarded_dir(path: &str) -> bool {
    path == "/etc/sudoers" || path == "/etc/sudoers.d" || path.starts_with("/etc/sudoers.d/")
}

/// One path or name per line: `DIRECTORIES_PATH`, `SECRETS_PATH`,
/// `PACKAGES_PATH`. Config validation keeps them free of spaces and
/// shell metacharacters.
pub fn lines_file<S: AsRef<str>>(items: &[S]) -> String {
    items.iter().map(|i| format!("{}\n", i.as_ref())).collect()
}

/// The content of `PROBES_PATH`: one probe per line, `http PORT PATH STATUS`,
/// so the POSIX-shell inspector reads it without a JSON parser. Config
/// validation keeps every field free of spaces and shell metacharacters.
pub fn probes_file(probes: &[HttpProbe]) -> String {
    probes
        .iter()
        .map(|p| format!("http {} {} {}\n", p.port, p.path, p.expect_status))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn respot_owns_its_files_and_state_dir_only() {
        let cases: &[(&str, bool)] = &[
            ("/usr/lib/respot/inspect", true),
            ("/usr/lib/respot/deploy-log", true),
            ("/etc/sudoers.d/respot", true),
            ("/usr/lib/respot/place", true),
            ("/etc/ssh/sshd_config.d/60-respot.conf", true),
            ("/usr/lib/respot/inspect/x", true),
            ("/etc/respot", true),
            ("/etc/respot/manifest.json", true),
            ("/etc/respot/verify_keys/root", true),
            ("/etc/respot/anything/else", true),
            ("/etc/respotx", false),
            ("/etc/respot.conf", false),
            ("/usr/lib/respot/other", false),
            ("/usr/lib/respot/inspect.bak", false),
            ("/etc/ssh/sshd_config.d/50-mine.conf", false),
            ("/opt/hello/health.py", false),
        ];
        for (path, want) in cases {
            assert_eq!(owns(path), *want, "owns({path})");
        }
    }

    #[test]
    fn files_that_could_weaken_verification_are_guarded() {
        let cases: &[(&str, &str, bool)] = &[
            ("/etc/ssh/sshd_config", "", true),
            ("/etc/ssh/sshd_config.d/10-early.conf", "", true),
            ("/etc/ssh/sshd_config.d/99-late.conf", "", true),
            ("/etc/ssh/ssh_host_ed25519_key", "", true),
            ("/root/.ssh/authorized_keys", "", true),
            ("/home/admin/.ssh/config", "", true),
            ("/etc/skel/.ssh/authorized_keys", "", true),
            (
                "/etc/sudoers.d/verify",
                "respot-verify ALL=(ALL) NOPASSWD: ALL\n",
                true,
            ),
            ("/etc/sudoers.d/admin", "admin ALL=(ALL) ALL\n", false),
            (
                "/etc/sudoers.d/admin",
                "# admins\nadmin ALL=(ALL) NOPASSWD: /usr/bin/systemctl\n",
                false,
            ),
            ("/etc/sudoers.d/adm", "%adm ALL=(ALL) NOPASSWD: ALL\n", true),
            ("/etc/sudoers.d/gid", "%#4 ALL=(ALL) ALL\n", true),
            ("/etc/sudoers.d/all", "ALL ALL=(ALL) NOPASSWD: ALL\n", true),
            (
                "/etc/sudoers.d/alias",
                "User_Alias V = admin\nV ALL=(ALL) ALL\n",
                true,
            ),
            ("/etc/sudoers.d/inc", "@includedir /tmp/x\n", true),
            ("/etc/sudoers.d/inc2", "#includedir /tmp/x\n", true),
            ("/etc/sudoers.d/def", "Defaults:admin !authenticate\n", true),
            ("/etc/sudoers.d/net", "+ops ALL=(ALL) ALL\n", true),
            ("/etc/sudoers.d/uid", "#998 ALL=(ALL) NOPASSWD: ALL\n", true),
            ("/etc/sudoers", "admin ALL=(ALL) ALL\n", true),
            ("/etc/sshx", "", false),
            ("/opt/app/ssh/config", "", false),
            ("/opt/app/.sshrc", "", false),
            ("/opt/hello/health.py", "", false),
        ];
        for (path, content, want) in cases {
            assert_eq!(
                guarded(path, content.as_bytes()).is_some(),
                *want,
                "guarded({path})"
            );
        }
    }

    #[test]
    fn scripts_and_config_name_the_paths_respot_writes() {
        for path in [MANIFEST_PATH, SUMS_PATH, UNITS_PATH, PROBES_PATH, DEPLOY_LOG_PATH] {
            assert!(INSPECTOR.content.contains(path), "the inspector reads {path}");
        }
        assert!(DEPLOY_LOG_HELPER.content.contains(DEPLOY_LOG_PATH));
        assert!(SSHD_CONFIG.content.contains(VERIFY_KEYS_DIR));
        assert!(SSHD_CONFIG.content.contains(INSPECTOR_PATH));
        for path in [SECRETS_PATH, DIRECTORIES_PATH, OWNERS_PATH] {
            assert!(PLACE.content.contains(path), "place reads {path}");
        }
        assert!(PLACE.content.contains(DEPLOY_LOG_PATH));
        for path in [DIRECTORIES_PATH, SECRETS_PATH, PACKAGES_PATH] {
            assert!(INSPECTOR.content.contains(path), "the inspector reads {path}");
        }
        // The one rule: the inspector as root with its one fixed argument,
        // which the inspector itself names.
        let rules: Vec<&str> = SUDOERS
            .content
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .collect();
        assert_eq!(
            rules,
            [format!(
                "{VERIFY_USER} ALL=(root) NOPASSWD: {INSPECTOR_PATH} hash-manifest"
            )]
        );
        assert!(
            INSPECTOR
                .content
                .contains(&format!("sudo -n {INSPECTOR_PATH} hash-manifest"))
        );
        for file in FILES {
            assert!(owns(file.path), "{} is respot's", file.path);
        }
    }

    #[test]
    fn shipped_files_keep_every_command() {
        for file in FILES {
            let shipped = file.shipped();
            assert!(
                shipped.len() < file.content.len(),
                "{} loses its comments",
                file.path
            );
            let code = |text: &str| -> Vec<String> {
                minify::comment_lines(text)
                    .split_whitespace()
                    .map(str::to_string)
                    .collect()
            };
            assert_eq!(code(&shipped), code(file.content), "{}", file.path);
        }
        assert!(INSPECTOR.shipped().starts_with("#!/bin/sh\n"));
        for script in [INSPECTOR, DEPLOY_LOG_HELPER] {
            let status = std::process::Command::new("sh")
                .args(["-n", "-c", &script.shipped()])
                .status()
                .expect("sh runs");
            assert!(status.success(), "{} parses as sh", script.path);
        }
    }

    /// The bundle step as cloud-init runs it (`python3 -I -c`), rooted in
    /// a temporary directory, on an archive given as a `file://` URL.
    fn run_bundle_step(root: &std::path::Path, sha256: &str, archive: &std::path::Path) -> bool {
        std::process::Command::new("python3")
            .args(["-I", "-c", &bundle_step(), sha256])
            .arg(format!("file://{}", archive.display()))
            .arg(root)
            .status()
            .expect("python3 runs")
            .success()
    }

    #[test]
    fn bundle_step_checks_the_sha256_before_writing_and_fails_closed() {
        use sha2::Digest as _;
        let dir = tempfile::tempdir().unwrap();
        let mut tar = tar::Builder::new(Vec::new());
        for (path, mode, content) in [
            ("opt/app/run.sh", 0o755, &b"#!/bin/sh\n"[..]),
            ("etc/app.conf", 0o600, b"k=v\n"),
        ] {
            let mut header = tar::Header::new_ustar();
            header.set_size(content.len() as u64);
            header.set_mode(mode);
            header.set_cksum();
            tar.append_data(&mut header, path, content).unwrap();
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, &tar.into_inner().unwrap()).unwrap();
        let archive_bytes = gz.finish().unwrap();
        let archive = dir.path().join("bundle.tar.gz");
        std::fs::write(&archive, &archive_bytes).unwrap();
        let sha256 = hex::encode(sha2::Sha256::digest(&archive_bytes));
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let log = || std::fs::read_to_string(root.join("var/log/respot/deploy.log")).unwrap_or_default();

        assert!(
            !run_bundle_step(&root, &"0".repeat(64), &archive),
            "a wrong sha256 fails"
        );
        assert!(
            !root.join("opt").exists() && !root.join("etc").exists(),
            "nothing written"
        );
        assert!(log().contains("FAILED: sha256 is"), "{}", log());
        assert!(log().contains("nothing written"), "{}", log());

        assert!(run_bundle_step(&root, &sha256, &archive));
        assert_eq!(std::fs::read(root.join("etc/app.conf")).unwrap(), b"k=v\n");
        let mode = |p: &str| {
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(root.join(p)).unwrap().permissions())
                & 0o7777
        };
        assert_eq!((mode("opt/app/run.sh"), mode("etc/app.conf")), (0o755, 0o600));
        assert!(log().contains("2 files written"), "{}", log());

        // A later boot skips it, even if the source is gone.
        std::fs::remove_file(&archive).unwrap();
        assert!(
            run_bundle_step(&root, &sha256, &archive),
            "done once, skipped after"
        );
    }

    #[test]
    fn probes_file_has_one_line_per_probe() {
        let probe = |port, path: &str, expect_status| HttpProbe {
            port,
            path: path.to_string(),
            expect_status,
        };
        let text = probes_file(&[probe(8080, "/health", 200), probe(9000, "/", 204)]);
        assert_eq!(text, "http 8080 /health 200\nhttp 9000 / 204\n");
        assert_eq!(probes_file(&[]), "");
    }
}
