//! The gzip members of the packed user-data: text compressed with Zopfli,
//! random parts stored. Zopfli's deflate is 4 to 9 % smaller than zlib's
//! best on respot's documents, and as deterministic; it costs CPU (about
//! 0.25 s for the sample), so it runs only where its bytes can matter.

use std::io::Write;
use std::num::NonZeroU64;

/// Zopfli's optimisation passes per block, its own default: on the sample
/// 15 passes pack 6 bytes smaller than 5 and 16 smaller than 1, and cost
/// about 10 % more time, since Zopfli's block splitting, not its passes,
/// takes most of it. See BENCHMARKS.md ("User-data size: zopfli").
const ZOPFLI_ITERATIONS: u64 = 15;

/// A member whose zlib size is above this is kept as zlib made it: Zopfli
/// saves under 10 %, so a document this large is refused either way
/// (EC2's limit is 16 KB), and refusing it stays as quick as before.
const ZOPFLI_MAX_OUTPUT: usize = 20 * 1024;

/// Nor does Zopfli compress more than this, however well zlib packs it:
/// its time grows with the input (0.5 s for 250 KB).
const ZOPFLI_MAX_INPUT: usize = 256 * 1024;

/// A gzip member of `bytes`: Zopfli's, or zlib's best where that is no
/// larger or where Zopfli cannot change the outcome. The header carries no
/// time or name, so the member is as deterministic as `bytes`.
pub(super) fn compressed_member(bytes: &[u8]) -> Vec<u8> {
    let zlib = flate2_member(bytes, flate2::Compression::best());
    if beyond_zopfli(bytes, &zlib) {
        return zlib;
    }
    let zopfli = zopfli_member(bytes);
    match zopfli.len() <= zlib.len() {
        true => zopfli,
        false => zlib,
    }
}

/// Whether `compressed_member(bytes)` takes at most `room` bytes, without
/// running Zopfli when zlib's member answers already.
pub(super) fn compresses_within(bytes: &[u8], room: usize) -> bool {
    let zlib = flate2_member(bytes, flate2::Compression::best());
    match zlib.len() <= room || beyond_zopfli(bytes, &zlib) {
        true => zlib.len() <= room,
        false => compressed_member(bytes).len() <= room,
    }
}

/// A gzip member of `bytes` stored, not compressed: its size depends on
/// their length only.
pub(super) fn stored_member(bytes: &[u8]) -> Vec<u8> {
    flate2_member(bytes, flate2::Compression::none())
}

fn beyond_zopfli(bytes: &[u8], zlib: &[u8]) -> bool {
    zlib.len() > ZOPFLI_MAX_OUTPUT || bytes.len() > ZOPFLI_MAX_INPUT
}

/// Zopfli's gzip member: no name, time zero.
fn zopfli_member(bytes: &[u8]) -> Vec<u8> {
    let options = zopfli::Options {
        iteration_count: NonZeroU64::new(ZOPFLI_ITERATIONS).expect("not zero"),
        ..zopfli::Options::default()
    };
    let mut out = Vec::new();
    zopfli::compress(options, zopfli::Format::Gzip, bytes, &mut out)
        .expect("compressing into a Vec cannot fail");
    out
}

fn flate2_member(bytes: &[u8], level: flate2::Compression) -> Vec<u8> {
    let mut encoder = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), level);
    encoder.write_all(bytes).expect("writing into a Vec cannot fail");
    encoder
        .finish()
        .expect("finishing a gzip stream into a Vec cannot fail")
}

#[cfg(test)]
#[path = "gzip_tests.rs"]
mod tests;
