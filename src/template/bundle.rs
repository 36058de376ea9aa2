//! The bundle transport's archive: the blueprint's files in one
//! deterministic, content-addressed tar+gzip, for blueprints too large for
//! user-data.
//!
//! The same files always give the same bytes: entries sorted by path,
//! owner root, time zero, no user or group names, gzip without a time or
//! name. Its sha256 goes into the digest-covered document, so the digest
//! covers every file; its name is the digest.

use std::io::Write;

use sha2::{Digest as _, Sha256};

use super::transport::in_bundle;
use super::{Digest, InstanceFile};

/// The archive of a blueprint's own files.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub archive: Vec<u8>,
    /// The archive's sha256 (hex), which the instance checks before it
    /// writes anything.
    pub sha256: String,
    pub files: usize,
}

impl Bundle {
    /// Packs the blueprint's files of `files` (respot's own stay inline).
    pub fn pack(files: &[InstanceFile]) -> Bundle {
        let mut ordered: Vec<&InstanceFile> = files.iter().filter(|f| in_bundle(f)).collect();
        ordered.sort_by(|a, b| a.path.cmp(&b.path));
        let mut builder = tar::Builder::new(Vec::new());
        builder.mode(tar::HeaderMode::Deterministic);
        for file in &ordered {
            let mut header = tar::Header::new_ustar();
            header.set_size(file.content.len() as u64);
            header.set_mode(u32::from_str_radix(&file.mode, 8).unwrap_or(0o644));
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            header.set_entry_type(tar::EntryType::Regular);
            let relative = file.path.trim_start_matches('/');
            builder
                .append_data(&mut header, relative, &file.content[..])
                .expect("appending to an in-memory tar cannot fail for checked paths");
        }
        let tar = builder
            .into_inner()
            .expect("finishing an in-memory tar cannot fail");
        let mut gzip = flate2::GzBuilder::new()
            .mtime(0)
            .operating_system(255)
            .write(Vec::new(), flate2::Compression::best());
        gzip.write_all(&tar).expect("writing into a Vec cannot fail");
        let archive = gzip.finish().expect("finishing gzip into a Vec cannot fail");
        Bundle {
            sha256: hex::encode(Sha256::digest(&archive)),
            archive,
            files: ordered.len(),
        }
    }

    /// The archive's name: the digest it belongs to.
    pub fn name(digest: &Digest) -> String {
        format!("{digest}.tar.gz")
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::template::Origin;

    fn file(path: &str, mode: &str, content: &[u8], origin: Origin) -> InstanceFile {
        InstanceFile::new(path.to_string(), String::new(), origin, mode, content.to_vec())
    }

    #[test]
    fn archive_is_deterministic_and_holds_the_blueprints_files_only() {
        let files = vec![
            file("/opt/b/run.sh", "0755", b"#!/bin/sh\n", Origin::Blueprint),
            file("/opt/a.bin", "0644", &[0, 1, 2, 255], Origin::Blueprint),
            file("/usr/lib/respot/inspect", "0755", b"x", Origin::Respot),
        ];
        let first = Bundle::pack(&files);
        let mut reversed = files.clone();
        reversed.reverse();
        let second = Bundle::pack(&reversed);
        assert_eq!(first.archive, second.archive, "same files, same bytes");
        assert_eq!(first.sha256, hex::encode(Sha256::digest(&first.archive)));
        assert_eq!(first.files, 2);

        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&first.archive[..])
            .read_to_end(&mut tar)
            .unwrap();
        let mut archive = tar::Archive::new(&tar[..]);
        let entries: Vec<(String, u32, u64, Vec<u8>)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let mut content = Vec::new();
                e.read_to_end(&mut content).unwrap();
                let path = e.path().unwrap().display().to_string();
                (
                    path,
                    e.header().mode().unwrap(),
                    e.header().mtime().unwrap(),
                    content,
                )
            })
            .collect();
        assert_eq!(
            entries,
            vec![
                ("opt/a.bin".to_string(), 0o644, 0, vec![0, 1, 2, 255]),
                ("opt/b/run.sh".to_string(), 0o755, 0, b"#!/bin/sh\n".to_vec()),
            ]
        );

        let mut changed = files;
        changed[0].content.push(b'\n');
        assert_ne!(Bundle::pack(&changed).sha256, first.sha256, "every byte counts");
    }
}
