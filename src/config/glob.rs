//! The small glob language of `[[files]] path` and of package pins:
//! `*` matches any run of characters but `/`, `?` one character but `/`,
//! and `**` as a whole path segment matches any number of segments
//! (none included). No braces, no classes: a path either has these or is
//! literal.

/// Whether `pattern` holds any wildcard.
pub fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?'])
}

/// Whether the `/`-separated `path` matches `pattern`.
pub fn matches_path(pattern: &str, path: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('/').collect();
    let path: Vec<&str> = path.split('/').collect();
    segments(&pattern, &path)
}

fn segments(pattern: &[&str], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((&"**", rest)) => (0..=path.len()).any(|skip| segments(rest, &path[skip..])),
        Some((first, rest)) => match path.split_first() {
            Some((segment, path_rest)) => segment_matches(first, segment) && segments(rest, path_rest),
            None => false,
        },
    }
}

fn segment_matches(pattern: &str, text: &str) -> bool {
    wildcard(pattern.as_bytes(), text.as_bytes(), true)
}

/// Whether `text` matches `pattern`, where `*` matches any run of
/// characters (`/` included) and `?` any one.
pub fn matches_text(pattern: &str, text: &str) -> bool {
    wildcard(pattern.as_bytes(), text.as_bytes(), false)
}

/// Iterative wildcard matching with one backtrack point: linear in
/// practice, never exponential.
fn wildcard(pattern: &[u8], text: &[u8], stop_at_slash: bool) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        let slash = stop_at_slash && text[t] == b'/';
        if p < pattern.len() && (pattern[p] == text[t] || (pattern[p] == b'?' && !slash)) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star
            && !(stop_at_slash && text[st] == b'/')
        {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_globs() {
        let cases: &[(&str, &str, bool)] = &[
            ("files/opt/a/run.sh", "files/opt/a/run.sh", true),
            ("files/opt/a/*.sh", "files/opt/a/run.sh", true),
            ("files/opt/a/*.sh", "files/opt/a/b/run.sh", false),
            ("files/opt/*/run.sh", "files/opt/a/run.sh", true),
            ("files/opt/**", "files/opt/a/b/c", true),
            ("files/opt/**/*.conf", "files/opt/x.conf", true),
            ("files/opt/**/*.conf", "files/opt/a/b/x.conf", true),
            ("files/opt/**/*.conf", "files/opt/a/b/x.confx", false),
            ("files/etc/app/token?", "files/etc/app/token1", true),
            ("files/etc/app/token?", "files/etc/app/token", false),
            ("files/*", "files/a/b", false),
            ("files/a*b*c", "files/aXbYc", true),
            ("files/a*b*c", "files/aXbY", false),
        ];
        for (pattern, path, want) in cases {
            assert_eq!(matches_path(pattern, path), *want, "{pattern} ~ {path}");
        }
        assert!(is_glob("a/*.sh") && is_glob("a?") && !is_glob("a/b"));
    }

    #[test]
    fn text_globs_cross_slashes() {
        assert!(matches_text("1.6*", "1.6-2.1ubuntu3"));
        assert!(matches_text("*ubuntu*", "1:2/ubuntu3"));
        assert!(!matches_text("1.6*", "1.7"));
        assert!(matches_text("1.6", "1.6"));
    }
}
