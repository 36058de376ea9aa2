//! Packing the user-data to fit EC2's limit: raw when it fits, gzip
//! otherwise, refused with the largest files named when even gzip is too
//! large.

use std::io::Write;

use super::{Blueprint, InstanceFile, LaunchMaterial, Origin, TemplateError, UserData};

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
        let document = format!("{}{}", self.document, self.launch_section(launch));
        let (packed, gzipped) = pack(document.as_bytes());
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

/// Raw when it fits, gzip otherwise. The gzip header carries no time or
/// name, so packing is as deterministic as the document.
pub fn pack(document: &[u8]) -> (Vec<u8>, bool) {
    if document.len() <= USER_DATA_LIMIT {
        return (document.to_vec(), false);
    }
    let mut encoder = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), flate2::Compression::best());
    encoder
        .write_all(document)
        .expect("writing into a Vec cannot fail");
    let packed = encoder
        .finish()
        .expect("finishing a gzip stream into a Vec cannot fail");
    (packed, true)
}

/// The `n` largest files, for the refusal: blueprint files by their place
/// in the blueprint, respot's own by their path on the instance.
/// The blueprint's `n` largest files: the ones the user can shrink.
/// respot's own files are left out; they are the same for every blueprint.
fn largest_files(files: &[InstanceFile], n: usize) -> String {
    let mut by_size: Vec<&InstanceFile> = files.iter().filter(|f| f.origin == Origin::Blueprint).collect();
    by_size.sort_by(|a, b| b.content.len().cmp(&a.content.len()).then(a.path.cmp(&b.path)));
    by_size
        .iter()
        .take(n)
        .map(|f| format!("`{}` ({} bytes)", f.source, f.content.len()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
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
            largest_files(&files, 3),
            "`instance/files/opt/b` (20 bytes), `instance/files/opt/c` (20 bytes), \
             `instance/files/opt/a` (10 bytes)"
        );
    }
}
