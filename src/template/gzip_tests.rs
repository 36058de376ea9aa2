use std::io::Read as _;

use super::*;

fn gunzip(member: &[u8]) -> Vec<u8> {
    let mut back = Vec::new();
    flate2::read::GzDecoder::new(member)
        .read_to_end(&mut back)
        .expect("a gzip member");
    back
}

/// Text like a document's: lines that repeat with variations.
fn text(lines: usize) -> Vec<u8> {
    (0..lines)
        .flat_map(|i| {
            format!("  - path: /opt/app/{}\n    value: {}\n", i % 37, i * 7919 % 10007).into_bytes()
        })
        .collect()
}

#[test]
fn zopfli_members_are_smaller_than_zlibs_and_deterministic() {
    let bytes = text(600);
    let zlib = flate2_member(&bytes, flate2::Compression::best());
    let member = compressed_member(&bytes);
    assert!(
        member.len() < zlib.len(),
        "Zopfli {} bytes, zlib {}",
        member.len(),
        zlib.len()
    );
    assert_eq!(
        member[..10],
        [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 3],
        "no name, no time"
    );
    assert_eq!(gunzip(&member), bytes);
    assert_eq!(compressed_member(&bytes), member, "deterministic");
}

#[test]
fn a_member_zopfli_cannot_bring_under_the_limit_is_zlibs() {
    let mut state = 7u64;
    let bytes: Vec<u8> = (0..40_000)
        .map(|_| {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            b"abcdefghijklmnopqrstuvwxyz0123456789\n"[(state >> 33) as usize % 37]
        })
        .collect();
    let zlib = flate2_member(&bytes, flate2::Compression::best());
    assert!(zlib.len() > ZOPFLI_MAX_OUTPUT);
    assert_eq!(compressed_member(&bytes), zlib);
    let long = vec![b'x'; ZOPFLI_MAX_INPUT + 1];
    assert_eq!(
        compressed_member(&long),
        flate2_member(&long, flate2::Compression::best())
    );
}

#[test]
fn compresses_within_answers_as_the_member_measures() {
    let bytes = text(600);
    let size = compressed_member(&bytes).len();
    let zlib = flate2_member(&bytes, flate2::Compression::best()).len();
    for room in [size - 1, size, zlib - 1, zlib, zlib + 1] {
        assert_eq!(compresses_within(&bytes, room), size <= room, "room {room}");
    }
}
