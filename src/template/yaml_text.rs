//! File contents as YAML: plain literal block scalars for text, so the
//! outer gzip packs them like the files themselves; `b64` for anything a
//! block scalar cannot carry byte for byte.
//!
//! A block scalar always gets an explicit indentation indicator (a first
//! line that starts with spaces stays exact) and the chomping indicator its
//! trailing newlines need.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

/// How a file's content is written in the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// A literal block scalar.
    Text,
    /// `encoding: b64`.
    Base64,
}

/// Text when every byte survives a YAML literal block scalar: valid UTF-8,
/// not empty, only printable characters, tabs and `\n` (no `\r`, which YAML
/// folds into `\n`; no NEL, LS or PS, which YAML 1.1 reads as line breaks;
/// no byte order mark), and not only newlines.
pub fn encoding_for(content: &[u8]) -> Encoding {
    let Ok(text) = std::str::from_utf8(content) else {
        return Encoding::Base64;
    };
    let printable = |c: char| match c {
        '\t' | '\n' => true,
        '\u{20}'..='\u{7e}' => true,
        '\u{a0}'..='\u{d7ff}' => !matches!(c, '\u{2028}' | '\u{2029}'),
        '\u{e000}'..='\u{fffd}' => c != '\u{feff}',
        '\u{10000}'..='\u{10ffff}' => true,
        _ => false,
    };
    if text.trim_matches('\n').is_empty() || !text.chars().all(printable) {
        return Encoding::Base64;
    }
    Encoding::Text
}

/// The `content:` value (and the `encoding:` line before it when needed)
/// of a `write_files` entry whose keys sit at `indent` spaces.
pub fn content_entry(content: &[u8], indent: usize) -> String {
    let pad = " ".repeat(indent);
    match encoding_for(content) {
        Encoding::Base64 => format!("{pad}encoding: b64\n{pad}content: {}\n", B64.encode(content)),
        Encoding::Text => {
            let text = std::str::from_utf8(content).expect("encoding_for checked UTF-8");
            format!("{pad}content: {}", block_value(text, indent + 2))
        }
    }
}

/// `text` as a YAML value for a sequence item or key whose lines sit at
/// `indent` spaces: a literal block scalar (header and lines), or `""`
/// when empty. `text` must be [`Encoding::Text`] or empty.
pub fn block_value(text: &str, indent: usize) -> String {
    if text.is_empty() {
        return "\"\"\n".to_string();
    }
    debug_assert_eq!(encoding_for(text.as_bytes()), Encoding::Text);
    format!("{}\n{}", block_scalar_header(text), indented_lines(text, indent))
}

/// The header of a literal block scalar for `text`: `|`, the indentation
/// indicator (always 2: the lines sit two spaces deeper than their key),
/// and the chomping that keeps exactly `text`'s trailing newlines.
fn block_scalar_header(text: &str) -> &'static str {
    let trailing = text.len() - text.trim_end_matches('\n').len();
    match trailing {
        0 => "|2-",
        1 => "|2",
        _ => "|2+",
    }
}

/// Every line of `text` at `indent` spaces; empty lines stay empty.
fn indented_lines(text: &str, indent: usize) -> String {
    let pad = " ".repeat(indent);
    let body = text.strip_suffix('\n').unwrap_or(text);
    let mut out = String::with_capacity(text.len() + text.lines().count() * indent);
    for line in body.split('\n') {
        if !line.is_empty() {
            out.push_str(&pad);
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_goes_as_text() {
        let cases: &[(&str, &[u8], Encoding)] = &[
            ("script", b"#!/bin/sh\necho hi\n", Encoding::Text),
            ("no final newline", b"a = 1", Encoding::Text),
            (
                "tabs and unicode",
                "\tgr\u{fc}\u{df}e \u{1f600}\n".as_bytes(),
                Encoding::Text,
            ),
            ("empty", b"", Encoding::Base64),
            ("only newlines", b"\n\n", Encoding::Base64),
            ("binary", &[0x7f, b'E', b'L', b'F', 0, 1], Encoding::Base64),
            ("NUL", b"a\0b\n", Encoding::Base64),
            ("CRLF", b"a\r\nb\r\n", Encoding::Base64),
            ("invalid UTF-8", &[b'a', 0xff, b'\n'], Encoding::Base64),
            ("NEL", "a\u{85}b\n".as_bytes(), Encoding::Base64),
            ("LS", "a\u{2028}b\n".as_bytes(), Encoding::Base64),
            ("BOM", "\u{feff}a\n".as_bytes(), Encoding::Base64),
            ("escape", b"\x1b[0m\n", Encoding::Base64),
        ];
        for (name, content, want) in cases {
            assert_eq!(encoding_for(content), *want, "case {name}");
        }
    }

    #[test]
    fn block_scalars_round_trip_through_yaml() {
        let cases: &[&str] = &[
            "plain\n",
            "no newline",
            "two newlines\n\n",
            "  leading spaces\nthen none\n",
            "\n\nleading empty lines\n",
            "a\n   \n\nspace-only lines\n",
            "key: value\n- item\n# comment\n---\n...\n",
            "\ttab first\n",
            "ends with spaces   \n",
        ];
        for text in cases {
            let document = format!(
                "write_files:\n  - path: /a\n{}  - path: /b\n    content: after\n",
                content_entry(text.as_bytes(), 4)
            );
            let value: serde_norway::Value =
                serde_norway::from_str(&document).unwrap_or_else(|e| panic!("{text:?}: {e}\n{document}"));
            assert_eq!(
                value["write_files"][0]["content"].as_str(),
                Some(*text),
                "{document}"
            );
            assert_eq!(value["write_files"][1]["content"].as_str(), Some("after"));
        }
    }

    #[test]
    fn binary_goes_as_base64() {
        let entry = content_entry(&[0, 1, 2], 4);
        assert_eq!(entry, "    encoding: b64\n    content: AAEC\n");
    }
}
