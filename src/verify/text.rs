//! Text from an instance is untrusted: before respot prints any of it
//! (tables, the debug report, error messages) it loses every character that
//! could drive the terminal instead of being shown.
//!
//! Pure functions; the parsers and the transport call them at the boundary,
//! and the report renderers again on the way out.

/// `text` without terminal control characters: the C0 controls but tab and
/// newline (ESC starts escape sequences, CR rewrites a line, BS erases), DEL,
/// the C1 controls (U+0080..U+009F, which some terminals obey as escapes),
/// and the Unicode bidi controls that reorder what a terminal shows. Tab and
/// newline stay: they carry structure, and callers split on them.
pub fn strip_controls(text: &str) -> String {
    text.chars()
        .filter(|&c| c == '\t' || c == '\n' || !(c.is_control() || is_bidi_control(c)))
        .collect()
}

/// [`strip_controls`], then every line break as `; `, for one-line
/// messages such as an error's reason.
pub fn one_line(text: &str) -> String {
    strip_controls(text)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Every string in `json`, keys included, through [`strip_controls`].
pub fn strip_json_controls(json: &mut serde_json::Value) {
    match json {
        serde_json::Value::String(text) => *text = strip_controls(text),
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_json_controls),
        serde_json::Value::Object(map) => {
            let entries = std::mem::take(map);
            for (key, mut value) in entries {
                strip_json_controls(&mut value);
                map.insert(strip_controls(&key), value);
            }
        }
        serde_json::Value::Null | serde_json::Value::Bool(_) | serde_json::Value::Number(_) => {}
    }
}

/// U+061C, U+200E/F, U+202A..U+202E and U+2066..U+2069: the marks,
/// embeddings, overrides and isolates of the Unicode bidi algorithm.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_stripped_and_text_stays() {
        let cases = [
            ("plain", "hello world", "hello world"),
            ("csi clear screen", "a\x1b[2Jb", "a[2Jb"),
            ("osc title", "\x1b]0;pwned\x07x", "]0;pwnedx"),
            ("carriage return", "fail\rpass", "failpass"),
            ("backspace", "fail\x08\x08\x08\x08pass", "failpass"),
            ("del and nul", "a\x7fb\0c", "abc"),
            ("c1 csi", "a\u{9b}31mb", "a31mb"),
            ("bidi override", "x\u{202E}gnp.exe", "xgnp.exe"),
            ("bidi isolate", "\u{2066}a\u{2069}", "a"),
            ("tab and newline stay", "a\tb\nc", "a\tb\nc"),
            ("unicode text stays", "état ✓ 日本", "état ✓ 日本"),
        ];
        for (name, input, want) in cases {
            assert_eq!(strip_controls(input), want, "{name}");
        }
    }

    #[test]
    fn json_strings_and_keys_lose_them_too() {
        let mut json = serde_json::json!({
            "errors": ["\u{1b}[31mboom", {"k\u{7}": "\u{9b}v"}],
            "n": 1,
            "ok": true,
        });
        strip_json_controls(&mut json);
        assert_eq!(
            json,
            serde_json::json!({"errors": ["[31mboom", {"k": "v"}], "n": 1, "ok": true})
        );
    }

    #[test]
    fn one_line_joins_lines() {
        assert_eq!(
            one_line("refused\tno\n\x1b[1Averified 1/1 instances\r\n\n"),
            "refused\tno; [1Averified 1/1 instances"
        );
        assert_eq!(one_line(""), "");
    }
}
