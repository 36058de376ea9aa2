//! The inspector as shipped to one blueprint: its optional parts only when
//! the blueprint uses them.
//!
//! Every byte of the inspector counts against EC2's 16 KB of user-data, on
//! every instance. The parts a blueprint does not use (package versions,
//! directories and secrets, hashing as root through sudo) stay out of its
//! instances, and so does the sudo rule. In `inspect.sh` a part is the lines
//! between `# respot:only NAME` and `# respot:end`.

use super::{INSPECTOR, minify};

/// Which optional parts of the inspector a blueprint needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InspectorParts {
    /// `[packages]`: the installed versions, in the `check` query.
    pub packages: bool,
    /// `[[directories]]` or `[[secrets]]`: their records in `manifest`.
    pub placed: bool,
    /// Files `respot-verify` cannot read (a secret, a file or directory
    /// closed to others): `hash-manifest` as root through the one sudo
    /// rule, which ships with it.
    pub root_hash: bool,
}

impl InspectorParts {
    /// Every part: the inspector the tests run.
    pub const ALL: InspectorParts = InspectorParts {
        packages: true,
        placed: true,
        root_hash: true,
    };

    /// Whether part `name` ships; `None` for a name respot does not know.
    fn wants(&self, name: &str) -> Option<bool> {
        match name {
            "packages" => Some(self.packages),
            "placed" => Some(self.placed),
            "root-hash" => Some(self.root_hash),
            _ => None,
        }
    }
}

/// The inspector for a blueprint that needs `parts`, minified.
pub fn inspector(parts: InspectorParts) -> String {
    minify::shell(&select(INSPECTOR.content, parts))
}

/// `source` without the parts `parts` leaves out. A part of a name respot
/// does not know is kept (the tests refuse one).
fn select(source: &str, parts: InspectorParts) -> String {
    let mut out = String::with_capacity(source.len());
    let mut keep = true;
    for line in source.split_inclusive('\n') {
        if let Some(name) = line.trim_end().strip_prefix("# respot:only ") {
            keep = parts.wants(name).unwrap_or(true);
        } else if line.trim_end() == "# respot:end" {
            keep = true;
        } else if keep {
            out.push_str(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every part is opened with a known name and closed before the next.
    #[test]
    fn the_parts_are_known_and_balanced() {
        let mut open: Option<&str> = None;
        let mut names = Vec::new();
        for (n, line) in INSPECTOR.content.lines().enumerate() {
            if let Some(name) = line.strip_prefix("# respot:only ") {
                assert!(
                    open.is_none(),
                    "inspect.sh:{}: `{name}` opens inside `{open:?}`",
                    n + 1
                );
                assert!(
                    InspectorParts::ALL.wants(name).is_some(),
                    "inspect.sh:{}: unknown part `{name}`",
                    n + 1
                );
                open = Some(name);
                names.push(name);
            } else if line == "# respot:end" {
                assert!(
                    open.take().is_some(),
                    "inspect.sh:{}: an end without a part",
                    n + 1
                );
            } else {
                assert!(
                    !line.trim_start().starts_with("# respot:"),
                    "inspect.sh:{}: a marker starts its line, `# respot:only NAME` or `# respot:end`",
                    n + 1
                );
            }
        }
        assert!(open.is_none(), "inspect.sh: part `{open:?}` is not closed");
        names.sort();
        names.dedup();
        assert_eq!(names, ["packages", "placed", "root-hash"]);
    }

    #[test]
    fn each_part_leaves_out_its_code_only() {
        let all = inspector(InspectorParts::ALL);
        assert_eq!(all, INSPECTOR.shipped());
        let none = inspector(InspectorParts::default());
        for gone in ["q_packages", "kind_at", "sudo", "hash-manifest"] {
            assert!(all.contains(gone), "{gone}");
            assert!(!none.contains(gone), "{gone}");
        }
        let packages = inspector(InspectorParts {
            packages: true,
            ..InspectorParts::default()
        });
        assert!(packages.contains("q_packages") && !packages.contains("sudo"));
        assert!(none.len() < packages.len() && packages.len() < all.len());
    }
}
