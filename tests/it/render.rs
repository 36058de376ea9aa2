//! `respot render`: determinism, digest, packing and cloud-init's schema.

use std::io::Read;

use sha2::{Digest as _, Sha256};

use crate::support::{Test, TestContext, copy_tree_reversed};

fn render_json(context: &TestContext, dir: &std::path::Path) -> serde_json::Value {
    let out = context
        .command_in(dir)
        .args(["render", "--output", "json"])
        .output()
        .expect("run respot");
    assert!(
        out.status.success(),
        "render failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("render --output json is JSON")
}

fn digest(context: &TestContext, dir: &std::path::Path) -> String {
    render_json(context, dir)["digest"]
        .as_str()
        .expect("digest is a string")
        .to_string()
}

#[test]
fn digest_is_the_sha256_of_stdout_and_stable() {
    let (out, test) = Test::sample()
        .args(["render"])
        .status(0)
        .stderr_contains("digest   ")
        .run();
    let stdout_sha = hex::encode(Sha256::digest(&out.stdout));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("digest   {stdout_sha}")),
        "stderr: {stderr}"
    );
    assert_eq!(digest(test.context(), test.path()), stdout_sha);
    let (again, _) = Test::sample().args(["render"]).status(0).run();
    assert_eq!(
        again.stdout, out.stdout,
        "two scaffolds render byte-identical documents"
    );
}

#[test]
fn digest_ignores_listing_order_and_sees_every_byte() {
    let original = Test::sample();
    let want = digest(original.context(), original.path());
    let copy = tempfile::tempdir().unwrap();
    copy_tree_reversed(original.path(), copy.path());
    assert_eq!(
        digest(original.context(), copy.path()),
        want,
        "a copy created in another order renders the same digest"
    );

    let files = [
        "instance/files/opt/hello/health.py",
        "instance/units/hello-reporter.service",
        "templates/cloud-init.yaml",
    ];
    for rel in files {
        let path = copy.path().join(rel);
        let mut bytes = std::fs::read(&path).unwrap();
        // A bit of the template's first comment, so the document stays YAML.
        let last = match rel.ends_with(".yaml") {
            true => bytes
                .iter()
                .position(|b| *b == b'S')
                .expect("the sample's comment"),
            false => bytes.len() - 2,
        };
        bytes[last] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let changed = digest(original.context(), copy.path());
        assert_ne!(changed, want, "flipping one bit of {rel} must change the digest");
        bytes[last] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(
            digest(original.context(), copy.path()),
            want,
            "restoring {rel} restores the digest"
        );
    }
}

#[test]
fn json_report_lists_files_units_and_sizes() {
    let test = Test::sample();
    let report = render_json(test.context(), test.path());
    let paths: Vec<&str> = report["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    for want in [
        "/etc/systemd/system/hello-health.service",
        "/etc/systemd/system/hello-reporter.service",
        "/opt/hello/health.py",
        "/opt/hello/reporter.sh",
        "/usr/lib/respot/deploy-log",
        "/etc/respot/probes",
    ] {
        assert!(paths.contains(&want), "files lack {want}: {paths:?}");
    }
    for file in report["files"].as_array().unwrap() {
        let respots = file["path"] == "/etc/respot/probes"
            || file["path"] == "/etc/ssh/sshd_config.d/60-respot.conf"
            || file["path"] == "/etc/sudoers.d/respot"
            || file["path"].as_str().unwrap().starts_with("/usr/lib/respot/");
        let want = if respots { "respot" } else { "blueprint" };
        assert_eq!(file["origin"], want, "origin of {}", file["path"]);
    }
    let reporter = report["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "/opt/hello/reporter.sh")
        .unwrap();
    assert_eq!(reporter["mode"], "0755");
    assert_eq!(
        report["units"],
        serde_json::json!(["hello-health.service", "hello-reporter.service"])
    );
    // The inspector alone is ~8 KB, so the sample is gzipped (EC2 and cloud-init accept it).
    assert_eq!(report["gzipped"], true);
    assert!(report["raw_bytes"].as_u64().unwrap() > 1000);
    assert_eq!(report["git_dirty"], false, "a folder outside git is not dirty");
    let redacted = redact(report);
    insta::assert_json_snapshot!("render_json", redacted);
}

fn redact(mut report: serde_json::Value) -> serde_json::Value {
    report["digest"] = "[digest]".into();
    report["version"] = "[version]".into();
    report["document"] = "[document]".into();
    report["raw_bytes"] = "[bytes]".into();
    report["packed_bytes"] = "[bytes]".into();
    for part in ["user_bytes", "respot_bytes", "left_bytes"] {
        report["budget"][part] = "[bytes]".into();
    }
    for file in report["files"].as_array_mut().unwrap() {
        file["sha256"] = "[sha256]".into();
        file["bytes"] = "[bytes]".into();
    }
    report
}

/// Deterministic bytes that do not compress: a 64-bit LCG.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u8
        })
        .collect()
}

#[test]
fn large_blueprints_are_gzipped_and_round_trip() {
    let text: String = (0..800)
        .map(|i| format!("line {i}: the same words again and again\n"))
        .collect();
    let test = Test::sample().write("instance/files/opt/hello/big.txt", &text);
    let packed_path = test.path().join("user-data.bin");
    let out = test
        .context()
        .command()
        .args(["render", "--output", "json", "--user-data-out"])
        .arg(&packed_path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["gzipped"], true);
    assert!(report["raw_bytes"].as_u64().unwrap() > 16384);
    assert!(report["packed_bytes"].as_u64().unwrap() <= 16384);
    let packed = std::fs::read(&packed_path).unwrap();
    assert_eq!(packed.len() as u64, report["packed_bytes"].as_u64().unwrap());
    let mut unpacked = String::new();
    flate2::read::GzDecoder::new(&packed[..])
        .read_to_string(&mut unpacked)
        .unwrap();
    let document = report["document"].as_str().unwrap();
    assert!(
        unpacked.starts_with(document),
        "the packed user-data starts with the blueprint document"
    );
    assert!(
        unpacked.contains("# ---- respot launch material"),
        "and carries the launch part"
    );
}

/// The sample with `[deployment] transport` set to `transport`.
fn with_transport(test: Test, transport: &str) -> Test {
    let path = test.path().join("respot.toml");
    let text = std::fs::read_to_string(&path).unwrap().replacen(
        "[deployment]\n",
        &format!("[deployment]\ntransport = \"{transport}\"\n"),
        1,
    );
    std::fs::write(&path, text).unwrap();
    test
}

#[test]
fn too_large_even_gzipped_names_the_largest_files() {
    let test = with_transport(Test::sample(), "inline");
    std::fs::write(
        test.path().join("instance/files/opt/hello/noise.bin"),
        noise(30_000, 7),
    )
    .unwrap();
    std::fs::write(
        test.path().join("instance/files/opt/hello/small-noise.bin"),
        noise(9_000, 9),
    )
    .unwrap();
    test
        .args(["render"])
        .status(2)
        .stderr_contains("even gzipped, over EC2's limit of 16384")
        .stderr_contains("the largest files are: `instance/files/opt/hello/noise.bin` (30000 bytes), `instance/files/opt/hello/small-noise.bin` (9000 bytes)")
        .stderr_lacks("inspect")
        .run();
}

#[test]
fn auto_bundles_what_does_not_fit_and_bundle_always_does() {
    let big = |test: Test| {
        std::fs::write(
            test.path().join("instance/files/opt/hello/noise.bin"),
            noise(30_000, 7),
        )
        .unwrap();
        test
    };
    let auto = big(Test::sample());
    let report = render_json(auto.context(), auto.path());
    assert_eq!(report["transport"], "bundle");
    let document = report["document"].as_str().unwrap();
    let sha256 = report["bundle"]["sha256"].as_str().unwrap();
    assert!(document.contains(&format!("# respot bundle: sha256 {sha256}, 5 files")));
    assert!(
        !document.contains("/opt/hello/health.py"),
        "no blueprint file inline"
    );
    assert!(
        document.contains("path: /usr/lib/respot/inspect"),
        "respot's own stay inline"
    );
    assert!(report["packed_bytes"].as_u64().unwrap() <= 16384);
    assert!(
        report["budget"]["user_bytes"].as_u64().unwrap() < 2000,
        "{}",
        report["budget"]
    );

    let small = Test::sample();
    assert_eq!(render_json(small.context(), small.path())["transport"], "inline");
    let forced = with_transport(Test::sample(), "bundle");
    let report = render_json(forced.context(), forced.path());
    assert_eq!(report["transport"], "bundle");
    assert_eq!(report["bundle"]["files"], 4);
    let inline = render_json(small.context(), small.path());
    assert_ne!(
        report["digest"], inline["digest"],
        "the transport is part of the document"
    );
}

#[test]
fn too_large_prints_json_with_output_json() {
    let test = with_transport(Test::sample(), "inline");
    std::fs::write(
        test.path().join("instance/files/opt/hello/noise.bin"),
        noise(30_000, 7),
    )
    .unwrap();
    let (out, _) = test.args(["render", "--output", "json"]).status(2).run();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(report["error"], "too_large");
    assert_eq!(report["limit_bytes"], 16384);
    assert!(report["packed_bytes"].as_u64().unwrap() > 16384);
    let largest = report["largest_files"].as_array().unwrap();
    assert_eq!(
        largest[0],
        serde_json::json!({"source": "instance/files/opt/hello/noise.bin", "bytes": 30000})
    );
    assert_eq!(largest.len(), 5, "the five largest: {largest:?}");
    for file in largest {
        let source = file["source"].as_str().unwrap();
        assert!(
            source.starts_with("instance/"),
            "only the blueprint's files: {source}"
        );
    }
}

#[test]
fn files_git_ignores_in_instance_count_as_dirty() {
    let test = Test::sample().write("instance/.gitignore", "*.local\n");
    let git = |args: &[&str]| {
        let ok = std::process::Command::new("git")
            .args(["-c", "user.email=t@example.invalid", "-c", "user.name=t"])
            .args(args)
            .current_dir(test.path())
            .output()
            .unwrap()
            .status
            .success();
        assert!(ok, "git {args:?}");
    };
    git(&["init", "-q"]);
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "sample"]);
    let clean = render_json(test.context(), test.path());
    assert_eq!(clean["git_dirty"], false);
    std::fs::write(test.path().join("instance/files/opt/hello/secret.local"), "x\n").unwrap();
    let ignored = render_json(test.context(), test.path());
    assert_eq!(
        ignored["git_dirty"], true,
        "an ignored file that ships is uncommitted"
    );
    assert!(ignored["git_commit"].is_null());
    assert!(ignored["version"].as_str().unwrap().ends_with("-dirty"));
    assert_ne!(
        ignored["digest"], clean["digest"],
        "it ships, so the digest changes"
    );
    test.args(["render"])
        .status(0)
        .stderr_contains("git ignores files of the instance directory that respot ships (instance/files/opt/hello/secret.local)")
        .run();
}

#[test]
fn sample_passes_cloud_init_schema() {
    Test::sample()
        .args(["render", "--check"])
        .status(0)
        .stderr_contains("schema   cloud-init schema: ")
        .stderr_contains("Valid")
        .stderr_lacks("respot-schema-")
        .stderr_lacks("/tmp/")
        .run();
}

#[test]
fn broken_template_fails_with_cloud_inits_message() {
    Test::sample()
        .write(
            "templates/cloud-init.yaml",
            "#cloud-config\npackage_update: maybe\nruncmd: [[echo, {{ deployment.name }}]]\n",
        )
        .args(["render", "--check"])
        .status(2)
        .stderr_contains("fails cloud-init's schema check")
        .stderr_contains("package_update: 'maybe' is not of type 'boolean'")
        .run();
}

#[test]
fn template_errors_name_the_file_and_line() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "undefined variable",
            "#cloud-config\nruncmd:\n  - [echo, {{ deployment.nmae }}]\n",
            &[
                "templates/cloud-init.yaml`: line 3:",
                "`deployment.nmae` is undefined",
            ],
        ),
        (
            "reserved key",
            "#cloud-config\nbootcmd:\n  - [echo, hi]\n",
            &["sets the top-level key `bootcmd`"],
        ),
        (
            "no header",
            "runcmd: []\n",
            &["must start with the line `#cloud-config`"],
        ),
        (
            "syntax",
            "#cloud-config\n{% for x in %}\n",
            &["templates/cloud-init.yaml`: line 2:"],
        ),
    ];
    for (name, template, want) in cases {
        let mut test = Test::sample()
            .write("templates/cloud-init.yaml", template)
            .args(["render"])
            .status(2);
        for fragment in *want {
            test = test.stderr_contains(fragment);
        }
        eprintln!("case: {name}");
        test.run();
    }
}

#[test]
fn instance_files_outside_the_convention_are_refused() {
    Test::sample()
        .write("instance/notes.txt", "hi\n")
        .args(["render"])
        .status(2)
        .stderr_contains("instance/notes.txt`: expected under `units/` (systemd units) or `files/`")
        .run();
}

#[test]
fn blueprint_files_at_respot_paths_are_refused() {
    // (blueprint file, instance path); an identical copy of respot's own
    // file is refused too.
    let cases = [
        (
            "instance/files/usr/lib/respot/deploy-log",
            "/usr/lib/respot/deploy-log",
        ),
        ("instance/files/usr/lib/respot/inspect", "/usr/lib/respot/inspect"),
        (
            "instance/files/etc/ssh/sshd_config.d/60-respot.conf",
            "/etc/ssh/sshd_config.d/60-respot.conf",
        ),
        ("instance/files/etc/respot/probes", "/etc/respot/probes"),
        (
            "instance/files/etc/respot/verify_keys/respot",
            "/etc/respot/verify_keys/respot",
        ),
    ];
    for (file, path) in cases {
        let content = if path == "/usr/lib/respot/inspect" {
            include_str!("../../src/guest/inspect.sh")
        } else {
            "#!/bin/sh\nrm -rf /\n"
        };
        eprintln!("case: {file}");
        Test::sample()
            .write(file, content)
            .args(["render"])
            .status(2)
            .stderr_contains(&format!("`{file}`: `{path}` is respot's own"))
            .stderr_contains(&format!("remove `{file}` from the blueprint"))
            .run();
    }
}

#[test]
fn dirty_git_tree_is_flagged() {
    let test = Test::sample();
    let git = |args: &[&str]| {
        let ok = std::process::Command::new("git")
            .args(["-c", "user.email=t@example.invalid", "-c", "user.name=t"])
            .args(args)
            .current_dir(test.path())
            .output()
            .unwrap()
            .status
            .success();
        assert!(ok, "git {args:?}");
    };
    git(&["init", "-q"]);
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "sample"]);
    // A repository's config can name programs git runs; respot must run none.
    let planted = test.context().home().join("fsmonitor-ran");
    let hook = test.context().home().join("fsmonitor");
    std::fs::write(&hook, format!("#!/bin/sh\ntouch {}\n", planted.display())).unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    git(&["config", "core.fsmonitor", hook.to_str().unwrap()]);
    let clean = render_json(test.context(), test.path());
    assert!(!planted.exists(), "respot ran the repository's fsmonitor hook");
    assert_eq!(clean["git_dirty"], false);
    assert_eq!(clean["git_commit"].as_str().unwrap().len(), 40);
    let version = clean["version"].as_str().unwrap();
    assert!(
        version.starts_with(&clean["digest"].as_str().unwrap()[..12]),
        "{version}"
    );
    assert!(version.contains('@') && !version.ends_with("-dirty"), "{version}");

    std::fs::write(test.path().join("instance/files/opt/hello/new.txt"), "new\n").unwrap();
    let dirty = render_json(test.context(), test.path());
    assert_eq!(dirty["git_dirty"], true);
    assert!(
        dirty["git_commit"].is_null(),
        "no commit is recorded for a dirty tree"
    );
    assert!(dirty["version"].as_str().unwrap().ends_with("-dirty"));
    test.args(["render"])
        .status(0)
        .stderr_contains("the git tree is dirty")
        .run();
}

#[test]
fn help_lists_commands_and_exit_codes() {
    let (out, _) = Test::new().args(["--help"]).status(0).run();
    insta::assert_snapshot!("help", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn init_refuses_to_overwrite() {
    let test = Test::sample();
    let before = std::fs::read(test.path().join("respot.toml")).unwrap();
    let (_, test) = test
        .args(["init", ".", "--name", "other"])
        .status(2)
        .stderr_contains("refusing to overwrite existing files")
        .run();
    assert_eq!(
        std::fs::read(test.path().join("respot.toml")).unwrap(),
        before,
        "nothing was overwritten"
    );
}

#[test]
fn init_names_the_deployment() {
    let (_, test) = Test::new()
        .args(["init", "fleet", "--name", "edge-1"])
        .status(0)
        .run();
    let toml = std::fs::read_to_string(test.path().join("fleet/respot.toml")).unwrap();
    assert!(toml.contains("name = \"edge-1\""), "{toml}");
    let report = render_json(test.context(), &test.path().join("fleet"));
    assert_eq!(report["deployment"], "edge-1");
}

/// Appends `extra` to the sample template.
fn with_template_tail(test: Test, extra: &str) -> Test {
    let path = test.path().join("templates/cloud-init.yaml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(extra);
    std::fs::write(&path, text).unwrap();
    test
}

#[test]
fn blueprints_that_could_weaken_verification_are_refused_before_any_cloud_call() {
    let cases: Vec<(&str, Test, &str)> = vec![
        (
            "an early sshd drop-in",
            Test::sample().write(
                "instance/files/etc/ssh/sshd_config.d/10-early.conf",
                "AuthorizedKeysFile .ssh/authorized_keys\n",
            ),
            "may not ship `/etc/ssh/sshd_config.d/10-early.conf`",
        ),
        (
            "sshd_config itself",
            Test::sample().write("instance/files/etc/ssh/sshd_config", "PermitRootLogin yes\n"),
            "may not ship `/etc/ssh/sshd_config`",
        ),
        (
            "a login user's .ssh",
            Test::sample().write(
                "instance/files/home/respot/.ssh/authorized_keys",
                "ssh-ed25519 AAAA me\n",
            ),
            "may not ship `/home/respot/.ssh/authorized_keys`",
        ),
        (
            "sudo for the verification account",
            Test::sample().write(
                "instance/files/etc/sudoers.d/verify",
                "respot-verify ALL=(ALL) NOPASSWD: ALL\n",
            ),
            "may not ship `/etc/sudoers.d/verify`",
        ),
        (
            "a template that renders invalid YAML",
            with_template_tail(Test::sample(), "packages: [curl\n"),
            "is not valid YAML at rendered line",
        ),
        (
            "a template that changes the verification account",
            with_template_tail(Test::sample(), "groups:\n  - wheel: [respot-verify]\n"),
            "mentions `respot-verify` at `groups[0].wheel[0]`",
        ),
    ];
    for (name, test, want) in cases {
        eprintln!("case: {name}");
        let (_, test) = test.args(["render"]).status(2).stderr_contains(want).run();
        // `create` refuses the same way, before asking any provider (this
        // context has no VM image and no credentials).
        test.args(["create", "--allow-dirty", "--provider", "aws"])
            .status(2)
            .stderr_contains(want)
            .run();
    }
}

#[test]
fn the_verification_key_cannot_be_a_login_key() {
    let test = Test::sample();
    let keys = respot::keys::KeyStore::at(&test.context().keys_dir("hello"), "hello");
    keys.verify_public_key().unwrap();
    let public = test.context().keys_dir("hello").join("verify_ed25519.pub");
    let toml = std::fs::read_to_string(test.path().join("respot.toml"))
        .unwrap()
        .replace(
            "# authorized_key = \"~/.ssh/id_ed25519.pub\"",
            &format!("authorized_key = \"{}\"", public.display()),
        );
    let want = "`ssh.authorized_key` contains respot's verification public key";
    let (_, test) = test
        .write("respot.toml", &toml)
        .args(["render"])
        .status(2)
        .stderr_contains(want)
        .run();
    test.args(["create", "--allow-dirty", "--provider", "aws"])
        .status(2)
        .stderr_contains(want)
        .run();
}

#[test]
fn completions_and_man_page_come_from_the_cli_and_need_no_blueprint() {
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["completions", "bash"],
            &["_respot()", "deploy", "--all-regions"],
        ),
        (&["completions", "zsh"], &["#compdef respot", "blue-green"]),
        (&["completions", "fish"], &["complete -c respot", "cloud-init"]),
        (
            &["man"],
            &[
                ".TH respot 1",
                ".SH SUBCOMMANDS",
                "Exit codes:",
                "a confirmation was declined",
            ],
        ),
    ];
    for (args, wants) in cases {
        // An empty directory: no respot.toml, and none is needed.
        let mut test = Test::new().args(args.iter().copied()).status(0);
        for want in *wants {
            test = test.stdout_contains(want);
        }
        test.run();
    }
    Test::new()
        .args(["completions", "tcsh"])
        .status(2)
        .stderr_contains("invalid value 'tcsh'")
        .run();
}

/// Text files land as plain block scalars and binary ones as `b64`, and
/// cloud-init's own YAML loader (PyYAML, as `cloud-init` runs it) reads
/// every file back byte for byte.
#[test]
fn file_contents_round_trip_through_cloud_inits_yaml_loader() {
    let tricky: &[(&str, &str)] = &[
        ("lead.txt", "  two leading spaces\nthen none\n"),
        ("noeol.conf", "no final newline"),
        ("blank-tail.txt", "two newlines at the end\n\n"),
        (
            "blank-head.txt",
            "\n\nafter two empty lines\n   \nspaces-only line above\n",
        ),
        ("yamlish.yaml", "key: value\n- item\n---\n...\n# not a comment\n"),
        ("tabs.sh", "\tindented with a tab\ntrailing spaces   \n"),
        ("unicode.txt", "gr\u{fc}\u{df}e \u{1f600}\n"),
        ("crlf.txt", "dos\r\nline\r\n"),
    ];
    let mut test = Test::sample();
    for (name, content) in tricky {
        test = test.write(&format!("instance/files/opt/t/{name}"), content);
    }
    std::fs::write(test.path().join("instance/files/opt/t/blob.bin"), noise(300, 3)).unwrap();
    let report = render_json(test.context(), test.path());
    let document = report["document"].as_str().unwrap();
    assert!(
        document.contains("    content: |2-\n      no final newline\n"),
        "text is a block scalar"
    );
    assert_eq!(
        document.matches("encoding: b64").count(),
        2,
        "only the binary file and the CRLF file are base64"
    );
    let script = "import sys, json, yaml, base64\n\
                  doc = yaml.safe_load(sys.stdin.read())\n\
                  out = {}\n\
                  for f in doc['write_files']:\n\
                  \x20   c = f['content']\n\
                  \x20   b = base64.b64decode(c) if f.get('encoding') == 'b64' else c.encode()\n\
                  \x20   out[f['path']] = b.hex()\n\
                  print(json.dumps(out))\n";
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 (cloud-init's interpreter) runs");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), document.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "PyYAML could not load the document");
    let loaded: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut checked = 0;
    for file in report["files"].as_array().unwrap() {
        let path = file["path"].as_str().unwrap();
        let hex = loaded[path]
            .as_str()
            .unwrap_or_else(|| panic!("{path} not written"));
        let bytes = hex::decode(hex).unwrap();
        assert_eq!(
            hex::encode(Sha256::digest(&bytes)),
            file["sha256"].as_str().unwrap(),
            "{path} does not round-trip"
        );
        checked += 1;
    }
    assert_eq!(checked, report["files"].as_array().unwrap().len());
    assert!(checked >= 13, "{checked}");
}

/// Per-instance values render into cloud-init's own instance-data Jinja:
/// the digest covers the template, the values stay `{{ v1.… }}`, the rest
/// is literal (`raw`), and cloud-init's schema accepts what it renders.
#[test]
fn per_instance_values_become_cloud_init_jinja() {
    let test = with_template_tail(
        Test::sample(),
        "hostname: node-{{ instance.region }}\n",
    )
    .write(
        "instance/files/opt/hello/node.conf",
        "node = {{ instance.id }}\nzone = {{ instance.zone }}\nindex = {{ instance.index }}\nliteral = {{ '{{' }} x }}\n",
    );
    let toml = test.path().join("respot.toml");
    let mut text = std::fs::read_to_string(&toml).unwrap();
    text.push_str("\n[[files]]\npath = \"files/opt/hello/node.conf\"\ntemplate = true\n");
    std::fs::write(&toml, text).unwrap();
    let report = render_json(test.context(), test.path());
    let document = report["document"].as_str().unwrap();
    assert!(
        document.starts_with("## template: jinja\n{% raw %}#cloud-config\n"),
        "{}",
        &document[..80]
    );
    assert!(document.contains("hostname: node-{% endraw %}{{ v1.region }}{% raw %}\n"));
    assert!(document.contains("node = {% endraw %}{{ v1.instance_id }}{% raw %}\n"));
    assert!(document.contains("{{ v1.availability_zone }}"));
    assert!(document.contains("{{ ds.meta_data.ami_launch_index }}"));
    assert!(
        document.contains("literal = {{ x }}"),
        "a file's own braces stay literal, inside raw"
    );
    let node = report["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "/opt/hello/node.conf")
        .unwrap();
    assert_eq!(node["template"], true);
    assert_eq!(digest(test.context(), test.path()), report["digest"], "stable");

    // cloud-init's own Jinja, with instance data, renders the whole
    // user-data (launch part included) to the literal text plus the values.
    let packed_path = test.path().join("user-data.bin");
    let out = test
        .context()
        .command()
        .args(["render", "--user-data-out"])
        .arg(&packed_path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let packed = std::fs::read(&packed_path).unwrap();
    let mut user_data = Vec::new();
    flate2::read::MultiGzDecoder::new(&packed[..])
        .read_to_end(&mut user_data)
        .unwrap();
    std::fs::write(test.path().join("user-data"), &user_data).unwrap();
    std::fs::write(
        test.path().join("instance-data.json"),
        r#"{"v1": {"instance_id": "i-0abc", "region": "r-1", "availability_zone": "r-1b"},
            "ds": {"meta_data": {"ami_launch_index": 3}}}"#,
    )
    .unwrap();
    let rendered = std::process::Command::new("cloud-init")
        .args(["devel", "render", "user-data", "-i", "instance-data.json"])
        .current_dir(test.path())
        .output()
        .expect("cloud-init runs");
    assert!(
        rendered.status.success(),
        "{}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let user_data = String::from_utf8(user_data).unwrap();
    let want = user_data
        .strip_prefix("## template: jinja\n")
        .unwrap()
        .replace("{% raw %}", "")
        .replace("{% endraw %}", "")
        .replace("{{ v1.instance_id }}", "i-0abc")
        .replace("{{ v1.region }}", "r-1")
        .replace("{{ v1.availability_zone }}", "r-1b")
        .replace("{{ ds.meta_data.ami_launch_index }}", "3");
    let got = String::from_utf8(rendered.stdout).unwrap();
    assert!(got.contains("node = i-0abc\n      zone = r-1b\n      index = 3\n      literal = {{ x }}\n"));
    assert_eq!(
        got, want,
        "cloud-init renders exactly the literal text and the values"
    );

    test.args(["render", "--check"])
        .status(0)
        .stderr_contains("Valid")
        .run();
}

#[test]
fn an_unknown_transport_is_a_config_error_with_its_place() {
    with_transport(Test::sample(), "ftp")
        .args(["render"])
        .status(2)
        .stderr_contains("respot.toml:3:")
        .stderr_contains("transport")
        .run();
}

/// cloud-init's own user-data processor reads the two gzip members (the
/// compressed document and the stored keys) as one cloud-config, whole.
#[test]
fn cloud_init_reads_both_gzip_members_as_one_cloud_config() {
    let test = Test::sample();
    let packed_path = test.path().join("user-data.bin");
    let out = test
        .context()
        .command()
        .args(["render", "--output", "json", "--user-data-out"])
        .arg(&packed_path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["gzipped"], true);
    let script = "import sys\n\
                  from cloudinit import user_data\n\
                  data = open(sys.argv[1], 'rb').read()\n\
                  message = user_data.UserDataProcessor({}).process(data)\n\
                  parts = [p for p in message.walk() if not p.is_multipart()]\n\
                  print(len(parts), parts[0].get_content_type(), len(parts[0].get_payload()))\n\
                  print(parts[0].get_payload().splitlines()[-1])\n";
    let processed = std::process::Command::new("/usr/bin/python3")
        .args(["-c", script])
        .arg(&packed_path)
        .output()
        .expect("cloud-init's python runs");
    assert!(
        processed.status.success(),
        "{}",
        String::from_utf8_lossy(&processed.stderr)
    );
    let stdout = String::from_utf8(processed.stdout).unwrap();
    let mut lines = stdout.lines();
    assert_eq!(
        lines.next().unwrap(),
        format!("1 text/cloud-config {}", report["raw_bytes"]),
        "one cloud-config part, every byte"
    );
    assert!(
        lines
            .next()
            .unwrap()
            .contains("-----END OPENSSH PRIVATE KEY-----"),
        "the stored members (the keys) are read too"
    );
}
