//! The real `place` step (`place.sh`, run by `sh` as root, as runcmd runs
//! it) on a fixture root: directories made or set, bundled files' owners,
//! secrets installed from a directory standing for the seed, with owner and
//! mode, and a failure logged when a secret cannot be had. Tests run as
//! root here (they chown); without root they check nothing and say so.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use super::PLACE;

fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn run_place(root: &Path, seed: &Path) -> bool {
    let script = root.join("place");
    let copy = PLACE
        .shipped()
        .replacen("\nROOT=\n", &format!("\nROOT={}\n", root.display()), 1)
        .replacen("\nSEED=\n", &format!("\nSEED={}\n", seed.display()), 1);
    assert_ne!(
        copy,
        PLACE.shipped(),
        "place has ROOT= and SEED= lines to rewrite"
    );
    std::fs::write(&script, copy).unwrap();
    Command::new("sh").arg(&script).status().unwrap().success()
}

fn write(root: &Path, path: &str, content: &str) {
    let full = root.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(full.parent().unwrap()).unwrap();
    std::fs::write(full, content).unwrap();
}

fn attributes(root: &Path, path: &str) -> (u32, u32, u32) {
    let meta = std::fs::symlink_metadata(root.join(path.trim_start_matches('/'))).unwrap();
    (meta.uid(), meta.gid(), meta.permissions().mode() & 0o7777)
}

#[test]
fn place_makes_directories_sets_owners_and_installs_secrets() {
    if !is_root() {
        eprintln!("skipped: place chowns, which needs root");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let seed = tempfile::tempdir().unwrap();
    let r = root.path();
    write(
        r,
        "/etc/respot/directories",
        "/var/lib/app nobody nogroup 2750\n/srv/empty root root 0700\n",
    );
    std::fs::create_dir_all(r.join("srv/empty")).unwrap();
    write(r, "/opt/app/conf.ini", "x=1\n");
    write(r, "/etc/respot/owners", "/opt/app/conf.ini nobody nogroup\n");
    std::fs::write(seed.path().join("secret-0"), "s3cret\n").unwrap();
    write(
        r,
        "/etc/respot/secrets",
        "/etc/app/token nobody nogroup 0600 seed:secret-0\n",
    );
    assert!(run_place(r, seed.path()), "place succeeds");

    let nobody = 65534;
    assert_eq!(attributes(r, "/var/lib/app"), (nobody, nobody, 0o2750));
    assert_eq!(
        attributes(r, "/srv/empty"),
        (0, 0, 0o700),
        "an existing directory is set too"
    );
    assert_eq!(attributes(r, "/opt/app/conf.ini").0, nobody);
    assert_eq!(attributes(r, "/etc/app/token"), (nobody, nobody, 0o600));
    assert_eq!(
        std::fs::read_to_string(r.join("etc/app/token")).unwrap(),
        "s3cret\n"
    );
    let leftovers: Vec<_> = std::fs::read_dir(r.join("etc/app")).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temporary file is left");
    let log = std::fs::read_to_string(r.join("var/log/respot/deploy.log")).unwrap();
    assert!(
        log.contains("place: secret /etc/app/token (nobody:nogroup 0600, from seed)"),
        "{log}"
    );
    assert!(
        !log.contains("s3cret"),
        "a secret's content is never logged: {log}"
    );

    // A secret the seed does not have: nothing written, a FAILED line, exit 1.
    write(
        r,
        "/etc/respot/secrets",
        "/etc/app/other nobody nogroup 0600 seed:secret-9\n",
    );
    assert!(!run_place(r, seed.path()), "place fails");
    assert!(!r.join("etc/app/other").exists());
    let log = std::fs::read_to_string(r.join("var/log/respot/deploy.log")).unwrap();
    assert!(
        log.contains("place: FAILED: secret /etc/app/other from seed:secret-9"),
        "{log}"
    );
}
