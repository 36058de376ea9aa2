//! Packing the user-data to fit EC2's limit: raw when it fits, gzip
//! otherwise, refused with the largest files named when even gzip is too
//! large.
//!
//! Gzip packs in several members, which gzip (and cloud-init, through
//! Python's `gzip`) reads as one stream: the document and the deterministic
//! launch part compressed; the random parts (key bytes, a presigned URL
//! padded to its reserve) stored, with the fixed text between them
//! compressed (with Zopfli, `gzip.rs`). Compressing random bytes gains little
//! and would make the size depend on which bytes they are; stored, the
//! packed size `render` reports is the size `create` sends.

use serde::Serialize;

use super::gzip::{compressed_member, stored_member};
use super::{Blueprint, InstanceFile, LargeFile, LaunchMaterial, Origin, TemplateError, UserData, instance};

/// EC2 limits raw user data to 16 KB; above it respot gzips.
pub const USER_DATA_LIMIT: usize = 16 * 1024;

impl Blueprint {
    /// Joins both parts and packs them to fit EC2's limit.
    pub fn user_data(&self, launch: &LaunchMaterial) -> Result<UserData, TemplateError> {
        if let Some(verify_key) = &launch.verify_key
            && self.logs_in_with(verify_key)
        {
            return Err(TemplateError::VerifyKeyReused);
        }
        // A Jinja document (per-instance values) keeps the launch part
        // literal with `raw` blocks.
        let literal = |text: String| match self.document.starts_with(instance::JINJA_HEADER) {
            true => instance::raw(&text),
            false => text,
        };
        let mut parts = vec![(self.document.clone(), false)];
        parts.extend(
            self.launch_parts(launch)
                .into_iter()
                .map(|(text, random)| (literal(text), random)),
        );
        parts.extend(
            self.key_parts(launch)
                .into_iter()
                .map(|(text, random)| (literal(text), random)),
        );
        let document: String = parts.iter().map(|(text, _)| text.as_str()).collect();
        let slices: Vec<(&[u8], bool)> = parts
            .iter()
            .map(|(text, random)| (text.as_bytes(), *random))
            .collect();
        let (packed, gzipped) = pack_parts(&slices);
        if packed.len() > USER_DATA_LIMIT {
            return Err(TemplateError::TooLarge {
                packed: packed.len(),
                largest: largest_files(&self.files, 5),
            });
        }
        Ok(UserData {
            document,
            packed,
            gzipped,
        })
    }
}

/// How the packed user-data spends EC2's limit: the blueprint's own part
/// (its template and files, packed alone as the whole is packed) and
/// respot's (its own files, the manifest, the keys; the rest of the
/// packed size).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Budget {
    pub limit_bytes: usize,
    pub user_bytes: usize,
    pub respot_bytes: usize,
    pub left_bytes: usize,
}

impl Blueprint {
    /// The budget of `user_data`, packed from this blueprint.
    pub fn budget(&self, user_data: &UserData) -> Budget {
        let user_document = self.user_document();
        let user_bytes = if user_data.gzipped {
            gzipped_len(user_document.as_bytes())
        } else {
            user_document.len()
        };
        Budget {
            limit_bytes: USER_DATA_LIMIT,
            user_bytes,
            respot_bytes: user_data.packed.len().saturating_sub(user_bytes),
            left_bytes: USER_DATA_LIMIT.saturating_sub(user_data.packed.len()),
        }
    }
}

/// Raw when it fits, gzip otherwise. The gzip header carries no time or
/// name, so packing is as deterministic as the document.
pub fn pack(document: &[u8]) -> (Vec<u8>, bool) {
    pack_parts(&[(document, false)])
}

/// The parts `(text, random)` in order, raw when they fit, else one gzip
/// member per part that is not empty: a random part stored (its size then
/// depends on its length only), the others compressed.
fn pack_parts(parts: &[(&[u8], bool)]) -> (Vec<u8>, bool) {
    let raw: Vec<u8> = parts.iter().flat_map(|(text, _)| text.iter().copied()).collect();
    if raw.len() <= USER_DATA_LIMIT {
        return (raw, false);
    }
    // Neighbours of one kind share a member.
    let mut merged: Vec<(Vec<u8>, bool)> = Vec::new();
    for (text, random) in parts.iter().filter(|(text, _)| !text.is_empty()) {
        match merged.last_mut() {
            Some((bytes, kind)) if kind == random => bytes.extend_from_slice(text),
            _ => merged.push((text.to_vec(), *random)),
        }
    }
    let mut packed = Vec::new();
    for (bytes, random) in &merged {
        packed.extend(match random {
            true => stored_member(bytes),
            false => compressed_member(bytes),
        });
    }
    (packed, true)
}

/// The gzip size of `bytes`, as packing would compress them.
fn gzipped_len(bytes: &[u8]) -> usize {
    compressed_member(bytes).len()
}

/// The blueprint's `n` largest files: the ones the user can shrink.
/// respot's own files are left out; they are the same for every blueprint.
fn largest_files(files: &[InstanceFile], n: usize) -> Vec<LargeFile> {
    let mut by_size: Vec<&InstanceFile> = files.iter().filter(|f| f.origin == Origin::Blueprint).collect();
    by_size.sort_by(|a, b| b.content.len().cmp(&a.content.len()).then(a.path.cmp(&b.path)));
    by_size
        .iter()
        .take(n)
        .map(|f| LargeFile {
            source: f.source.clone(),
            bytes: f.content.len(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    #[test]
    fn packing_is_raw_below_the_limit_and_gzip_above() {
        let small = b"#cloud-config\n".to_vec();
        assert_eq!(pack(&small), (small.clone(), false));
        let big: Vec<u8> = (0..40_000).map(|i| b"abcdefgh\n"[i % 9]).collect();
        let (packed, gzipped) = pack(&big);
        assert!(gzipped);
        assert_eq!(&packed[..2], &[0x1f, 0x8b]);
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&packed[..]), &mut back).unwrap();
        assert_eq!(back, big);
        assert_eq!(pack(&big).0, packed, "packing is deterministic");
    }

    #[test]
    fn stored_part_costs_the_same_whatever_its_bytes() {
        let body: Vec<u8> = (0..20_000).map(|i| b"abcdefgh\n"[i % 9]).collect();
        let (a, gzipped) = pack_parts(&[(&body, false), (&[b'x'; 500], true)]);
        assert!(gzipped);
        let random: Vec<u8> = (0..500u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let (b, _) = pack_parts(&[(&body, false), (&random, true)]);
        assert_eq!(
            a.len(),
            b.len(),
            "the stored member's size depends on its length only"
        );
        assert_eq!(
            a[..a.len() - 523],
            b[..b.len() - 523],
            "the compressed member is the same"
        );
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(&b[..]), &mut back).unwrap();
        assert_eq!(
            back,
            [&body[..], &random[..]].concat(),
            "one stream to a gzip reader"
        );
    }

    /// cloud-init reads the user-data with Python's `gzip.decompress`.
    fn python_gunzip(packed: &[u8]) -> Vec<u8> {
        use std::process::{Command, Stdio};
        let mut python = Command::new("python3")
            .args([
                "-c",
                "import gzip,sys; sys.stdout.buffer.write(gzip.decompress(sys.stdin.buffer.read()))",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        python.stdin.take().unwrap().write_all(packed).unwrap();
        let out = python.wait_with_output().unwrap();
        assert!(out.status.success(), "python3's gzip refused the packed bytes");
        out.stdout
    }

    #[test]
    fn pythons_gzip_reads_the_zopfli_and_stored_members_as_one_stream() {
        let text: Vec<u8> = (0..4_000)
            .flat_map(|i| format!("line {i}: value {}\n", i * 7919 % 10007).into_bytes())
            .collect();
        let random: Vec<u8> = (0..600u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let parts: [(&[u8], bool); 4] = [
            (&text, false),
            (&random, true),
            (b"\n-----END OPENSSH PRIVATE KEY-----\n", false),
            (&random[..100], true),
        ];
        let (packed, gzipped) = pack_parts(&parts);
        assert!(gzipped);
        assert_eq!(
            packed.windows(3).filter(|w| w == &[0x1f, 0x8b, 0x08]).count(),
            4,
            "one member per part"
        );
        let whole: Vec<u8> = parts.iter().flat_map(|(bytes, _)| bytes.to_vec()).collect();
        assert_eq!(python_gunzip(&packed), whole);
        assert_eq!(pack_parts(&parts).0, packed, "packing is deterministic");
    }

    #[test]
    fn largest_files_name_only_the_blueprints_files_by_source() {
        let sized = |path: &str, source: &str, origin, len| {
            InstanceFile::new(
                path.to_string(),
                source.to_string(),
                origin,
                "0644",
                vec![b'x'; len],
            )
        };
        let files = [
            sized("/opt/a", "instance/files/opt/a", Origin::Blueprint, 10),
            sized("/usr/lib/respot/inspect", "respot", Origin::Respot, 30),
            sized("/opt/b", "instance/files/opt/b", Origin::Blueprint, 20),
            sized("/opt/c", "instance/files/opt/c", Origin::Blueprint, 20),
        ];
        assert_eq!(
            LargeFile::list(&largest_files(&files, 3)),
            "`instance/files/opt/b` (20 bytes), `instance/files/opt/c` (20 bytes), \
             `instance/files/opt/a` (10 bytes)"
        );
    }
}
