//! Where a key sits in `respot.toml`: key paths (`aws.regions[1].count`),
//! their line and column in the source, and serde's messages made readable.

use std::ops::Range;

use super::ConfigError;

/// One step of a key path: `aws.regions[1].count` is
/// `[Key("aws"), Key("regions"), Index(1), Key("count")]`.
#[derive(Debug, Clone, Copy)]
pub enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

fn format_key_path(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// The TOML source with spans, used to point errors at a line and column.
pub(super) struct Located<'a> {
    text: &'a str,
    file: &'a str,
    doc: Option<toml_edit::ImDocument<&'a str>>,
}

impl<'a> Located<'a> {
    pub(super) fn new(text: &'a str, file: &'a str) -> Self {
        Located {
            text,
            file,
            doc: toml_edit::ImDocument::parse(text).ok(),
        }
    }

    pub(super) fn line_col(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, col)
    }

    pub(super) fn span_of(&self, path: &[Seg]) -> Option<Range<usize>> {
        let doc = self.doc.as_ref()?;
        let mut item: &toml_edit::Item = doc.as_item();
        for seg in path {
            item = match seg {
                Seg::Key(key) => item.get(*key)?,
                Seg::Index(i) => item.get(*i)?,
            };
        }
        item.span()
    }

    pub(super) fn invalid(&self, path: &[Seg], message: String) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_string(),
            location: self.span_of(path).map(|span| self.line_col(span.start)),
            key: format_key_path(path),
            message,
        }
    }

    pub(super) fn serde_error(&self, err: &serde_path_to_error::Error<toml::de::Error>) -> ConfigError {
        let inner = err.inner();
        let key = err.path().to_string();
        let key = if key == "." { String::new() } else { key };
        ConfigError::Invalid {
            file: self.file.to_string(),
            location: inner.span().map(|span| self.line_col(span.start)),
            key,
            message: explain_serde_message(inner.message()),
        }
    }
}

/// Rewrites serde's wording into what a user can act on: unknown keys get the
/// nearest known key, type names become plain words.
fn explain_serde_message(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((unknown, expected)) = rest.split_once('`')
    {
        let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        let nearest = candidates
            .iter()
            .map(|c| (strsim::damerau_levenshtein(unknown, c), *c))
            .min();
        let known = quoted_list(&candidates);
        return match nearest {
            Some((distance, best))
                if distance <= 3 || best.starts_with(unknown) || unknown.starts_with(best) =>
            {
                format!("unknown key `{unknown}`; did you mean `{best}`? (known keys: {known})")
            }
            _ if candidates.is_empty() => format!("unknown key `{unknown}`; this table takes no keys"),
            _ => format!("unknown key `{unknown}`; known keys: {known}"),
        };
    }
    message
        .replace("expected u32", "expected an integer >= 0")
        .replace("expected u16", "expected an integer from 0 to 65535")
        .replace("expected u64", "expected an integer >= 0")
        .replace("expected f64", "expected a number")
}

fn quoted_list(items: &[&str]) -> String {
    items
        .iter()
        .map(|i| format!("`{i}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_paths_format_like_toml() {
        let path = [
            Seg::Key("aws"),
            Seg::Key("regions"),
            Seg::Index(1),
            Seg::Key("count"),
        ];
        assert_eq!(format_key_path(&path), "aws.regions[1].count");
    }

    #[test]
    fn unknown_keys_suggest_the_nearest() {
        let got = explain_serde_message("unknown field `cont`, expected one of `name`, `count`, `zones`");
        assert_eq!(
            got,
            "unknown key `cont`; did you mean `count`? (known keys: `name`, `count`, `zones`)"
        );
    }

    #[test]
    fn line_and_column_are_one_based() {
        let located = Located::new("a = 1\nbb = 2\n", "x.toml");
        assert_eq!(located.line_col(0), (1, 1));
        assert_eq!(located.line_col(11), (2, 6));
    }
}
