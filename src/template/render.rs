//! The pure render: a [`Source`] in, a [`Blueprint`] out. No disk, no git,
//! no clock: the same `Source` always gives the same bytes, whatever the
//! order of its files.

use serde::Serialize;

use super::{
    Blueprint, Bundle, Digest, InstanceFile, Origin, Source, SourceFile, TemplateError, instance, structure,
    transport,
};
use crate::config::Transport;
use crate::guest;

/// Top-level cloud-config keys that belong to the launch part.
const RESERVED_KEYS: &[&str] = &["bootcmd", "ssh_keys", "ssh_deletekeys", "ssh_genkeytypes"];

/// Top-level keys respot writes into the digest-covered part itself.
const RESPOT_KEYS: &[&str] = &["write_files"];

const UNIT_SUFFIXES: &[&str] = &["service", "timer", "socket", "path", "target", "mount"];

/// What the template sees of each file. respot writes the files itself
/// (see `transport::files_section`); the template may count or name them.
#[derive(Serialize)]
struct TemplateFile<'a> {
    path: &'a str,
    mode: &'a str,
    sha256: &'a str,
    bytes: usize,
}

/// Renders `source` into the digest-covered part of the user-data, with
/// the blueprint's files inline or in a bundle as `source.transport` says.
pub fn render(source: &Source) -> Result<Blueprint, TemplateError> {
    let files = instance_files(source)?;
    let steps = unit_steps(source, &files);
    let units: Vec<String> = steps.concat();
    let template_output = render_document(source, &files, &units, &steps)?;
    let inline = assemble(source, &template_output, files.clone(), units.clone(), None)?;
    let bundled = match source.transport {
        Transport::Inline => false,
        Transport::Bundle => true,
        Transport::Auto => !transport::fits_inline(&inline),
    };
    if !bundled {
        return Ok(inline);
    }
    let bundle = Bundle::pack(&files);
    assemble(source, &template_output, files, units, Some(bundle))
}

/// The template's output joined with respot's files section: the document,
/// its digest and version.
fn assemble(
    source: &Source,
    template_output: &str,
    files: Vec<InstanceFile>,
    units: Vec<String>,
    bundle: Option<Bundle>,
) -> Result<Blueprint, TemplateError> {
    let document = format!(
        "{template_output}{}",
        transport::files_section(&files, bundle.as_ref())
    );
    structure::check(&document, &source.template_path)?;
    let document = match instance::uses_values(document.as_bytes()) {
        true => instance::to_jinja(&document, &source.template_path)?,
        false => document,
    };
    let digest = Digest::of(document.as_bytes());
    let version = match &source.git.describe {
        Some(describe) => format!("{}@{}", digest.short(), describe),
        None => digest.short().to_string(),
    };
    Ok(Blueprint {
        deployment: source.deployment.clone(),
        document,
        digest,
        version,
        git: source.git.clone(),
        files,
        units,
        ssh_user: source.ssh_user.clone(),
        authorized_keys: source.authorized_keys.clone(),
        bundle,
    })
}

/// The blueprint's files placed by the mapping convention, then respot's
/// own, sorted by instance path. A blueprint file at one of respot's paths
/// is refused, even an identical copy: those files are respot's alone.
fn instance_files(source: &Source) -> Result<Vec<InstanceFile>, TemplateError> {
    let mut ordered: Vec<&SourceFile> = source.files.iter().collect();
    ordered.sort_by(|a, b| a.relative.cmp(&b.relative));
    let mut files = Vec::new();
    for file in ordered {
        let shown = format!("{}/{}", source.instance_dir, file.relative);
        let (path, mode) =
            target_for(&file.relative, file.executable).map_err(|problem| TemplateError::InstanceFile {
                path: shown.clone(),
                problem,
            })?;
        if guest::owns(&path) {
            return Err(TemplateError::RespotPath { file: shown, path });
        }
        if let Some(reason) = guest::guarded(&path, &file.content) {
            return Err(TemplateError::Guarded {
                file: shown,
                path,
                reason,
            });
        }
        let content = match source.inputs.is_template(&file.relative) {
            true => template_file(source, &shown, &file.content)?,
            false => file.content.clone(),
        };
        let mut placed = InstanceFile::new(path, shown, Origin::Blueprint, mode, content);
        placed.template = instance::uses_values(&placed.content);
        source.inputs.apply(&file.relative, &mut placed);
        files.push(placed);
    }
    let generated = source.inputs.generated_files(&files);
    let parts = source.inputs.inspector_parts(&files);
    files.extend(respot_files(source, parts, generated));
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// A `[[files]] template = true` file rendered with the deployment name
/// and the per-instance values (as placeholders, see `instance`).
fn template_file(source: &Source, shown: &str, content: &[u8]) -> Result<Vec<u8>, TemplateError> {
    let text = std::str::from_utf8(content).map_err(|_| TemplateError::InstanceFile {
        path: shown.to_string(),
        problem: "`[[files]]` marks it as a template, but it is not UTF-8 text".to_string(),
    })?;
    let context = minijinja::context! {
        deployment => minijinja::context! { name => &source.deployment },
        instance => instance::context(),
    };
    let mut rendered = render_template(text, shown, context)?;
    if !text.ends_with('\n') {
        rendered.pop();
    }
    Ok(rendered.into_bytes())
}

/// respot's files as shipped (the inspector with `parts`, the sudo rule
/// when it hashes as root), the probe list generated from `[verify]`, and
/// the lists of directories, secrets and packages to check.
fn respot_files(
    source: &Source,
    parts: guest::InspectorParts,
    lists: Vec<(&'static str, &'static str, Vec<u8>)>,
) -> Vec<InstanceFile> {
    let sudoers = parts.root_hash.then_some(guest::SUDOERS);
    let shipped = [guest::DEPLOY_LOG_HELPER, guest::SSHD_CONFIG]
        .into_iter()
        .chain(sudoers)
        .map(|f| (f.path, f.mode, f.shipped().into_bytes()))
        .chain([(
            guest::INSPECTOR.path,
            guest::INSPECTOR.mode,
            guest::inspector(parts).into_bytes(),
        )]);
    let generated = [(
        guest::PROBES_PATH,
        "0644",
        guest::probes_file(&source.probes).into_bytes(),
    )];
    shipped
        .chain(generated)
        .chain(lists)
        .map(|(path, mode, content)| {
            InstanceFile::new(
                path.to_string(),
                "respot".to_string(),
                Origin::Respot,
                mode,
                content,
            )
        })
        .collect()
}

/// The mapping convention (documented in the README):
/// `units/<name>.<unit suffix>` → `/etc/systemd/system/<name>`, mode 0644;
/// `files/<path>` → `/<path>`, mode 0755 when executable, else 0644.
fn target_for(relative: &str, executable: bool) -> Result<(String, &'static str), String> {
    if let Some(name) = relative.strip_prefix("units/") {
        let suffix = name.rsplit_once('.').map(|(_, s)| s).unwrap_or("");
        if name.contains('/') || !UNIT_SUFFIXES.contains(&suffix) {
            return Err(format!(
                "files under `units/` must be systemd units directly in it, ending in .{}",
                UNIT_SUFFIXES.join(", .")
            ));
        }
        return Ok((format!("/etc/systemd/system/{name}"), "0644"));
    }
    if let Some(path) = relative.strip_prefix("files/") {
        let safe = path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-' | b'@' | b'+'));
        if !safe || path.split('/').any(|seg| seg == "..") {
            return Err("file paths may use only [A-Za-z0-9/._@+-]".to_string());
        }
        return Ok((format!("/{path}"), if executable { "0755" } else { "0644" }));
    }
    Err("expected under `units/` (systemd units) or `files/` (files by absolute target path)".to_string())
}

/// The start steps of the blueprint's units (see `config::units`): each
/// step one `systemctl enable --now`, after the one before.
fn unit_steps(source: &Source, files: &[InstanceFile]) -> Vec<Vec<String>> {
    let names: Vec<String> = files
        .iter()
        .filter_map(|f| f.path.strip_prefix("/etc/systemd/system/"))
        .filter(|name| !name.contains('/'))
        .map(str::to_string)
        .collect();
    source.inputs.unit_steps(&names)
}

fn render_document(
    source: &Source,
    files: &[InstanceFile],
    units: &[String],
    unit_steps: &[Vec<String>],
) -> Result<String, TemplateError> {
    let template_files: Vec<TemplateFile> = files
        .iter()
        .map(|f| TemplateFile {
            path: &f.path,
            mode: &f.mode,
            sha256: &f.sha256,
            bytes: f.content.len(),
        })
        .collect();
    let context = minijinja::context! {
        deployment => minijinja::context! { name => &source.deployment },
        ssh => minijinja::context! {
            user => &source.ssh_user,
            authorized_keys => &source.authorized_keys,
        },
        files => template_files,
        units => units,
        unit_steps => unit_steps,
        directories => &source.inputs.directories,
        secrets => &source.inputs.secrets,
        instance => instance::context(),
        packages => source.inputs.package_entries(),
        respot => minijinja::context! {
            deploy_log => guest::DEPLOY_LOG_HELPER.path,
            // Empty when respot ships no `place` (nothing for it to do).
            place => if files.iter().any(|f| f.path == guest::PLACE.path) { guest::PLACE.path } else { "" },
            manifest => guest::MANIFEST_PATH,
            log_file => guest::DEPLOY_LOG_PATH,
        },
    };
    let document = render_template(&source.template_text, &source.template_path, context)?;
    check_blueprint_document(&document, &source.template_path)?;
    Ok(document)
}

fn render_template(text: &str, path: &str, context: minijinja::Value) -> Result<String, TemplateError> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    let to_render_error = |err: minijinja::Error| TemplateError::Render {
        path: path.to_string(),
        message: render_message(&err, text),
    };
    env.add_template("cloud-init", text).map_err(to_render_error)?;
    let template = env.get_template("cloud-init").map_err(to_render_error)?;
    let mut document = template.render(context).map_err(to_render_error)?;
    if !document.ends_with('\n') {
        document.push('\n');
    }
    Ok(document)
}

/// minijinja's message, with the line and, for an undefined value, the
/// expression that was undefined (minijinja says only "undefined value").
fn render_message(err: &minijinja::Error, text: &str) -> String {
    let mut message = err.to_string();
    if err.kind() == minijinja::ErrorKind::UndefinedError
        && let Some(expression) = err.range().and_then(|range| text.get(range))
    {
        message = format!(
            "`{}` is undefined (strict: every name the template uses must exist; \
             the sample template's header lists them)",
            expression.trim()
        );
    }
    match err.line() {
        Some(line) => format!("line {line}: {message}"),
        None => message,
    }
}

fn check_blueprint_document(document: &str, path: &str) -> Result<(), TemplateError> {
    if document.lines().next().map(str::trim_end) != Some("#cloud-config") {
        return Err(TemplateError::Render {
            path: path.to_string(),
            message: "the rendered document must start with the line `#cloud-config`".to_string(),
        });
    }
    for line in document.lines() {
        for key in RESERVED_KEYS.iter().chain(RESPOT_KEYS) {
            let Some(rest) = line.strip_prefix(key) else {
                continue;
            };
            if rest.trim_start().starts_with(':') {
                return Err(TemplateError::ReservedKey {
                    path: path.to_string(),
                    key: key.to_string(),
                    reserved: RESERVED_KEYS
                        .iter()
                        .chain(RESPOT_KEYS)
                        .copied()
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use sha2::{Digest as _, Sha256};

    use super::*;
    use crate::config::HttpProbe;
    use crate::template::GitInfo;

    fn file(relative: &str, executable: bool, content: &str) -> SourceFile {
        SourceFile {
            relative: relative.to_string(),
            executable,
            content: content.as_bytes().to_vec(),
        }
    }

    /// The repository's sample, in memory.
    fn sample() -> Source {
        Source {
            deployment: "hello".to_string(),
            ssh_user: "respot".to_string(),
            authorized_keys: vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA== me".to_string()],
            probes: vec![HttpProbe {
                port: 8080,
                path: "/health".to_string(),
                expect_status: 200,
            }],
            template_path: "templates/cloud-init.yaml".to_string(),
            template_text: include_str!("../../templates/cloud-init.yaml").to_string(),
            instance_dir: "instance".to_string(),
            files: vec![
                file(
                    "units/hello-health.service",
                    false,
                    "[Service]\nExecStart=/opt/hello/health.py\n",
                ),
                file("files/opt/hello/health.py", true, "#!/usr/bin/env python3\n"),
                file("files/opt/hello/hello.conf", false, "greeting = hi\n"),
            ],
            git: GitInfo::default(),
            transport: Transport::Auto,
            inputs: Default::default(),
        }
    }

    fn refusal(source: &Source) -> String {
        match render(source) {
            Err(err @ TemplateError::RespotPath { .. }) => err.to_string(),
            Err(err) => panic!("expected a RespotPath refusal, got: {err}"),
            Ok(blueprint) => panic!(
                "expected a RespotPath refusal, got {} files",
                blueprint.files.len()
            ),
        }
    }

    #[test]
    fn render_is_deterministic_whatever_the_file_order() {
        let source = sample();
        let first = render(&source).unwrap();
        let mut reversed = source.clone();
        reversed.files.reverse();
        let second = render(&reversed).unwrap();
        assert_eq!(first.document, second.document);
        assert_eq!(first.digest, second.digest);
        assert_eq!(
            first.digest.as_str(),
            hex::encode(Sha256::digest(&first.document))
        );
        assert_eq!(first.version, first.digest.short(), "no git, no describe");
        assert!(
            first.document.contains("\n      QUERIES=\"cloud-init units"),
            "text files land as block scalars"
        );

        let mut changed = source.clone();
        changed.files[2].content.push(b'\n');
        assert_ne!(
            render(&changed).unwrap().digest,
            first.digest,
            "every byte counts"
        );

        let mut described = source;
        described.git.describe = Some("abc1234-dirty".to_string());
        let third = render(&described).unwrap();
        assert_eq!(third.digest, first.digest, "git info is outside the digest");
        assert_eq!(third.version, format!("{}@abc1234-dirty", first.digest.short()));
    }

    #[test]
    fn every_file_carries_its_origin() {
        let blueprint = render(&sample()).unwrap();
        let got: Vec<(&str, Origin, &str, &str)> = blueprint
            .files
            .iter()
            .map(|f| (f.path.as_str(), f.origin, f.source.as_str(), f.mode.as_str()))
            .collect();
        let want = vec![
            ("/etc/respot/probes", Origin::Respot, "respot", "0644"),
            (
                "/etc/ssh/sshd_config.d/60-respot.conf",
                Origin::Respot,
                "respot",
                "0644",
            ),
            (
                "/etc/systemd/system/hello-health.service",
                Origin::Blueprint,
                "instance/units/hello-health.service",
                "0644",
            ),
            (
                "/opt/hello/health.py",
                Origin::Blueprint,
                "instance/files/opt/hello/health.py",
                "0755",
            ),
            (
                "/opt/hello/hello.conf",
                Origin::Blueprint,
                "instance/files/opt/hello/hello.conf",
                "0644",
            ),
            ("/usr/lib/respot/deploy-log", Origin::Respot, "respot", "0755"),
            ("/usr/lib/respot/inspect", Origin::Respot, "respot", "0755"),
        ];
        assert_eq!(got, want);
        let probes = &blueprint.files[0];
        assert_eq!(probes.content, b"http 8080 /health 200\n");
        assert_eq!(blueprint.units, vec!["hello-health.service"]);
    }

    #[test]
    fn respot_paths_are_refused_even_as_identical_copies() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "files/usr/lib/respot/inspect",
                guest::INSPECTOR.content,
                "/usr/lib/respot/inspect",
            ),
            (
                "files/usr/lib/respot/deploy-log",
                "#!/bin/sh\nrm -rf /\n",
                "/usr/lib/respot/deploy-log",
            ),
            (
                "files/etc/ssh/sshd_config.d/60-respot.conf",
                guest::SSHD_CONFIG.content,
                "/etc/ssh/sshd_config.d/60-respot.conf",
            ),
            ("files/etc/respot/probes", "", "/etc/respot/probes"),
            (
                "files/etc/respot/manifest.json",
                "{}",
                "/etc/respot/manifest.json",
            ),
            (
                "files/etc/respot/verify_keys/root",
                "ssh-ed25519 A",
                "/etc/respot/verify_keys/root",
            ),
            ("files/etc/respot", "x", "/etc/respot"),
        ];
        for (relative, content, path) in cases {
            let mut source = sample();
            source.files.push(file(relative, true, content));
            let message = refusal(&source);
            for fragment in [
                &format!("`instance/{relative}`"),
                &format!("`{path}`"),
                "respot's own",
            ] {
                assert!(
                    message.contains(fragment),
                    "case {relative}: `{fragment}` not in: {message}"
                );
            }
        }
        let mut neighbour = sample();
        neighbour
            .files
            .push(file("files/usr/lib/respot-tools/x", false, "x\n"));
        let blueprint = render(&neighbour).unwrap();
        assert_eq!(blueprint.files.len(), 8, "a neighbour of respot's paths lands");
    }

    /// The sample needs none of the inspector's optional parts; a package,
    /// or a file respot-verify may not be able to read, brings its part.
    #[test]
    fn the_inspectors_parts_and_the_sudo_rule_ship_only_when_used() {
        let shipped = |source: &Source| {
            let blueprint = render(source).unwrap();
            let inspector = blueprint.files.iter().find(|f| f.path == guest::INSPECTOR.path);
            let inspector = String::from_utf8(inspector.unwrap().content.clone()).unwrap();
            let sudo = blueprint.files.iter().any(|f| f.path == guest::SUDOERS.path);
            (inspector, sudo)
        };
        let (plain, sudo) = shipped(&sample());
        assert!(!sudo && !plain.contains("sudo") && !plain.contains("q_packages"));
        let mut packages = sample();
        packages
            .inputs
            .packages
            .push(crate::config::PackageSpec::parse("jq").unwrap());
        let (inspector, sudo) = shipped(&packages);
        assert!(!sudo && inspector.contains("q_packages"));
        for (relative, why) in [
            ("files/root/app.conf", "outside the open trees"),
            ("files/etc/app.conf", "/etc"),
        ] {
            let mut closed = sample();
            closed.files.push(file(relative, false, "x\n"));
            let (inspector, sudo) = shipped(&closed);
            assert!(sudo && inspector.contains("hash-manifest"), "{relative}: {why}");
        }
    }

    #[test]
    fn files_that_could_weaken_verification_are_refused() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "files/etc/ssh/sshd_config.d/10-early.conf",
                "AuthorizedKeysFile .ssh/authorized_keys\n",
                "/etc/ssh/sshd_config.d/10-early.conf",
            ),
            (
                "files/etc/ssh/sshd_config",
                "PermitRootLogin yes\n",
                "/etc/ssh/sshd_config",
            ),
            (
                "files/root/.ssh/authorized_keys",
                "ssh-ed25519 AAAA x\n",
                "/root/.ssh/authorized_keys",
            ),
            (
                "files/etc/sudoers.d/verify",
                "respot-verify ALL=(ALL) NOPASSWD: ALL\n",
                "/etc/sudoers.d/verify",
            ),
        ];
        for (relative, content, path) in cases {
            let mut source = sample();
            source.files.push(file(relative, false, content));
            match render(&source) {
                Err(err @ TemplateError::Guarded { .. }) => {
                    let message = err.to_string();
                    assert!(message.contains(&format!("`instance/{relative}`")), "{message}");
                    assert!(message.contains(&format!("may not ship `{path}`")), "{message}");
                    assert_eq!(err.exit_status(), crate::exit::ExitStatus::Usage);
                }
                other => panic!("{relative}: want a Guarded refusal, got {other:?}"),
            }
        }
    }

    #[test]
    fn mapping_convention() {
        type Case = (&'static str, bool, Result<(&'static str, &'static str), ()>);
        let cases: &[Case] = &[
            (
                "units/a.service",
                false,
                Ok(("/etc/systemd/system/a.service", "0644")),
            ),
            ("units/a.timer", true, Ok(("/etc/systemd/system/a.timer", "0644"))),
            ("units/a.txt", false, Err(())),
            ("units/sub/a.service", false, Err(())),
            ("files/opt/x/run.sh", true, Ok(("/opt/x/run.sh", "0755"))),
            ("files/etc/x.conf", false, Ok(("/etc/x.conf", "0644"))),
            ("files/etc/x y", false, Err(())),
            ("other/x", false, Err(())),
        ];
        for (input, exec, want) in cases {
            let got = target_for(input, *exec);
            match want {
                Ok((path, mode)) => assert_eq!(got, Ok((path.to_string(), *mode)), "case {input}"),
                Err(()) => assert!(got.is_err(), "case {input} should fail, got {got:?}"),
            }
        }
    }

    #[test]
    fn activated_services_are_not_started_directly() {
        let unit = |name: &str| {
            InstanceFile::new(
                format!("/etc/systemd/system/{name}"),
                String::new(),
                Origin::Blueprint,
                "0644",
                Vec::new(),
            )
        };
        let files = vec![
            unit("a.service"),
            unit("b.service"),
            unit("b.timer"),
            unit("c@.service"),
        ];
        assert_eq!(unit_steps(&sample(), &files), vec![vec!["a.service", "b.timer"]]);
        let mut ordered = sample();
        ordered.inputs.unit_order = Some(vec![
            crate::config::UnitStep::One("b.timer".into()),
            crate::config::UnitStep::One("a.service".into()),
        ]);
        assert_eq!(
            unit_steps(&ordered, &files),
            vec![vec!["b.timer"], vec!["a.service"]]
        );
    }

    #[test]
    fn owners_and_modes_from_files_rules_land_deferred() {
        let mut source = sample();
        source.inputs.rules = vec![crate::config::FileRule {
            path: "files/opt/hello/*.conf".into(),
            owner: Some("hello:hello".into()),
            group: None,
            mode: crate::config::Mode::parse("0600"),
            template: false,
        }];
        let blueprint = render(&source).unwrap();
        let conf = blueprint
            .files
            .iter()
            .find(|f| f.path == "/opt/hello/hello.conf")
            .unwrap();
        assert_eq!(
            (conf.owner.as_str(), conf.group.as_str(), conf.mode.as_str()),
            ("hello", "hello", "0600")
        );
        assert!(
            blueprint.document.contains(
                "  - path: /opt/hello/hello.conf\n    permissions: '0600'\n    owner: 'hello:hello'\n    defer: true\n"
            ),
            "{}",
            blueprint.document
        );
        let py = blueprint
            .files
            .iter()
            .find(|f| f.path == "/opt/hello/health.py")
            .unwrap();
        assert_eq!((py.owner.as_str(), py.mode.as_str()), ("root", "0755"));
        assert!(
            blueprint
                .document
                .contains("  - path: /opt/hello/health.py\n    permissions: '0755'\n    content")
        );
        assert_ne!(
            blueprint.digest,
            render(&sample()).unwrap().digest,
            "owners are in the digest"
        );
    }

    #[test]
    fn reserved_keys_are_refused() {
        let err = check_blueprint_document("#cloud-config\nbootcmd:\n  - x\n", "t.yaml").unwrap_err();
        assert!(err.to_string().contains("`bootcmd`"), "{err}");
        check_blueprint_document("#cloud-config\nruncmd:\n  - [echo, bootcmd:]\n", "t.yaml").unwrap();
        assert!(check_blueprint_document("write_files: []\n", "t.yaml").is_err());
    }
}
