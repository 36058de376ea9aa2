//! Which version of each local `[[secrets]]` file a VM booted with, for
//! `list`: a fingerprint of the bytes put on its seed, recorded with the
//! VM's tags (`respot:secrets`, as on AWS), never the value.

use sha2::Digest as _;

/// The first 12 hex digits of a domain-separated sha256 of `content`:
/// enough to tell versions apart. It reveals nothing about a secret with
/// real entropy (a token, a key); the record stays on this machine, next
/// to the file itself.
pub fn version(content: &[u8]) -> String {
    let mut hasher = sha2::Sha256::new();
    hasher.update(b"respot secret version\0");
    hasher.update(content);
    hex::encode(hasher.finalize())[..12].to_string()
}

/// The `respot:secrets` tag of a launch record, when there are secrets:
/// each `(file, name)` of `secrets` with its version from the seed.
pub fn record_tag(secrets: &[(std::path::PathBuf, String)], versions: &[String]) -> Option<(String, String)> {
    let names: Vec<String> = secrets.iter().map(|(_, name)| name.clone()).collect();
    (!versions.is_empty()).then(|| {
        (
            crate::provider::tag::SECRETS.to_string(),
            tag_value(&names, versions),
        )
    })
}

/// The `respot:secrets` value: `name=version` pairs, in order.
pub fn tag_value(names: &[String], versions: &[String]) -> String {
    names
        .iter()
        .zip(versions)
        .map(|(name, version)| format!("{name}={version}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_tells_contents_apart_and_never_holds_them() {
        let one = version(b"token-one\n");
        assert_eq!(one.len(), 12);
        assert!(one.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(one, version(b"token-one\n"), "the same bytes, the same version");
        assert_ne!(one, version(b"token-two\n"));
        assert!(!one.contains("token"));
        assert_eq!(
            tag_value(&["secrets/a".into(), "b".into()], &[one.clone(), "x".into()]),
            format!("secrets/a={one} b=x")
        );
    }

    /// The seed holds the secret's bytes; the version returned (what the
    /// launch records) is theirs; `list` reads it back from the record.
    #[test]
    fn the_launch_record_carries_the_version_on_the_seed_and_list_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("token");
        let who = super::super::Identity {
            id: "vm-1",
            name: "demo-g1-1",
            index: 0,
        };
        let mut seen = Vec::new();
        for value in ["tok-1\n", "tok-2\n"] {
            std::fs::write(&source, value).unwrap();
            let vm = dir.path().join(format!("vm-{}", seen.len()));
            std::fs::create_dir(&vm).unwrap();
            let (_, versions) = super::super::write_seed(
                &vm,
                &who,
                b"#cloud-config\n",
                None,
                &[(source.clone(), "secrets/token".to_string())],
            )
            .expect("genisoimage writes the seed");
            assert_eq!(std::fs::read(vm.join("seed/secret-0")).unwrap(), value.as_bytes());
            assert_eq!(versions, [version(value.as_bytes())]);
            let record = super::super::Record {
                id: "vm-1".to_string(),
                name: "demo-g1-1".to_string(),
                deployment: "demo".to_string(),
                digest: "0".repeat(64),
                version: "v".to_string(),
                generation: 1,
                created_at: "2026-01-01T00:00:00Z".to_string(),
                ssh_port: 2222,
                forwards: Vec::new(),
                accel: "tcg".to_string(),
                memory_mib: 512,
                cpus: 1,
                tags: record_tag(&[(source.clone(), "secrets/token".to_string())], &versions)
                    .into_iter()
                    .collect(),
            };
            let listed = provider().to_instance(&vm, &record);
            let shown = listed.secrets.expect("the record's versions");
            assert!(!shown.contains("tok-"), "never the value: {shown}");
            seen.push(shown);
        }
        assert_eq!(seen[0], format!("secrets/token={}", version(b"tok-1\n")));
        assert_ne!(seen[0], seen[1], "a new value is a new version");
    }

    fn provider() -> super::super::LocalProvider {
        super::super::LocalProvider {
            count: 1,
            memory_mib: 512,
            cpus: 1,
            accel: crate::config::Accel::Tcg,
            forward_ports: Vec::new(),
            image_dir: std::path::PathBuf::from("/nonexistent"),
            state_root: std::path::PathBuf::from("/nonexistent"),
            secrets: Vec::new(),
        }
    }
}
