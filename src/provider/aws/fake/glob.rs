//! EC2's filter wildcards, as the fake matches image names.

/// `*` matches any run of characters; everything else matches itself.
pub fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, rest)) => {
            text.starts_with(head)
                && (0..=text.len() - head.len()).any(|skip| glob(rest, &text[head.len() + skip..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn glob_matches_like_ec2_filters() {
        let cases = [
            (
                "al2023-ami-2023*-kernel-*-x86_64",
                "al2023-ami-2023.6-kernel-6.1-x86_64",
                true,
            ),
            (
                "al2023-ami-2023*-kernel-*-x86_64",
                "al2023-ami-2023.6-kernel-6.1-arm64",
                false,
            ),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("*", "", true),
        ];
        for (pattern, text, want) in cases {
            assert_eq!(glob(pattern, text), want, "{pattern} ~ {text}");
        }
    }
}
