//! Shipping respot's scripts compactly: what runs is unchanged, only the
//! text the reader needs goes (comment lines, blank lines, indentation).
//! Every byte respot ships counts against EC2's 16 KB, and a third of its
//! scripts was comments and indentation.
//!
//! [`shell`] reads POSIX sh the way sh does, as far as these scripts need:
//! single and double quotes, `\` escapes and line continuations, `$( … )`
//! (nested, inside double quotes too), comments from a `#` that starts a
//! word, and here-documents (`<<WORD`, `<<'WORD'`, `<<-WORD`), whose bodies
//! it keeps byte for byte. A line that begins inside a quoted string or a
//! here-document is kept as it is; only lines that begin in code lose their
//! indentation, and only whole comment lines and blank lines in code go.

/// Where the lexer stands between characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    Single,
    Double,
    Backquote,
    /// Inside `$(`, with the depth of plain parentheses opened since.
    Substitution(u32),
}

/// Lexer state carried from line to line.
#[derive(Default)]
struct Lexer {
    stack: Vec<Context>,
    /// Here-documents opened on the current line: (delimiter, `<<-`).
    pending: Vec<(String, bool)>,
    /// The here-documents whose bodies come next, the current one first.
    bodies: std::collections::VecDeque<(String, bool)>,
    /// The last line ended with a `\` in code.
    continued: bool,
}

/// A shell script without comment lines, blank lines or indentation in
/// code; a `#!` first line, quoted strings and here-documents unchanged.
pub fn shell(text: &str) -> String {
    let mut lexer = Lexer::default();
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        if let Some((word, dash)) = lexer.bodies.front().cloned() {
            out.push_str(line);
            out.push('\n');
            let end = if dash { line.trim_start_matches('\t') } else { line };
            if end == word {
                lexer.bodies.pop_front();
            }
            continue;
        }
        let in_code = matches!(lexer.stack.last(), None | Some(Context::Substitution(_)));
        let kept = if in_code && !lexer.continued {
            let code = line.trim_start();
            let shebang = i == 0 && code.starts_with("#!");
            if code.is_empty() || (code.starts_with('#') && !shebang) {
                continue;
            }
            code
        } else {
            line
        };
        lexer.scan(kept);
        out.push_str(kept);
        out.push('\n');
    }
    out
}

impl Lexer {
    /// Follows one line, updating quotes, substitutions and here-documents.
    fn scan(&mut self, line: &str) {
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        self.continued = false;
        while i < chars.len() {
            let c = chars[i];
            let next = chars.get(i + 1).copied();
            match self.stack.last().copied() {
                Some(Context::Single) => {
                    if c == '\'' {
                        self.stack.pop();
                    }
                }
                Some(Context::Backquote) => match c {
                    '\\' => i += 1,
                    '`' => {
                        self.stack.pop();
                    }
                    _ => {}
                },
                Some(Context::Double) => match c {
                    '\\' => i += 1,
                    '"' => {
                        self.stack.pop();
                    }
                    '`' => self.stack.push(Context::Backquote),
                    '$' if next == Some('(') => {
                        self.stack.push(Context::Substitution(0));
                        i += 1;
                    }
                    _ => {}
                },
                top @ (None | Some(Context::Substitution(_))) => {
                    if c == '\\' && next.is_none() {
                        self.continued = true;
                    }
                    if c == '#' && starts_word(&chars, i) {
                        break;
                    }
                    i = self.code_char(&chars, i, top);
                }
            }
            i += 1;
        }
        if !self.continued && self.stack.is_empty() {
            self.bodies.extend(self.pending.drain(..));
        }
    }

    /// One character in code; returns the index of the last one it used.
    fn code_char(&mut self, chars: &[char], i: usize, top: Option<Context>) -> usize {
        let next = chars.get(i + 1).copied();
        match (chars[i], top) {
            ('\\', _) => i + 1,
            ('\'', _) => {
                self.stack.push(Context::Single);
                i
            }
            ('"', _) => {
                self.stack.push(Context::Double);
                i
            }
            ('`', _) => {
                self.stack.push(Context::Backquote);
                i
            }
            ('$', _) if next == Some('(') => {
                self.stack.push(Context::Substitution(0));
                i + 1
            }
            ('(', Some(Context::Substitution(depth))) => {
                *self.stack.last_mut().expect("a substitution is open") = Context::Substitution(depth + 1);
                i
            }
            (')', Some(Context::Substitution(0))) => {
                self.stack.pop();
                i
            }
            (')', Some(Context::Substitution(depth))) => {
                *self.stack.last_mut().expect("a substitution is open") = Context::Substitution(depth - 1);
                i
            }
            ('<', _) if next == Some('<') && chars.get(i + 2) != Some(&'<') => {
                self.here_document(chars, i + 2)
            }
            _ => i,
        }
    }

    /// A here-document's operator after `<<` at `start`: records its
    /// delimiter (quotes removed) and returns the index of its last char.
    fn here_document(&mut self, chars: &[char], start: usize) -> usize {
        let mut i = start;
        let dash = chars.get(i) == Some(&'-');
        if dash {
            i += 1;
        }
        while chars.get(i).is_some_and(|c| *c == ' ' || *c == '\t') {
            i += 1;
        }
        let mut word = String::new();
        while let Some(&c) = chars.get(i) {
            match c {
                '\'' | '"' | '\\' => {}
                c if c.is_ascii_alphanumeric() || c == '_' => word.push(c),
                _ => break,
            }
            i += 1;
        }
        if !word.is_empty() {
            self.pending.push((word, dash));
        }
        i.saturating_sub(1).max(start - 1)
    }
}

/// Whether the `#` at `i` starts a word (and so a comment).
fn starts_word(chars: &[char], i: usize) -> bool {
    i == 0 || matches!(chars[i - 1], ' ' | '\t' | ';' | '&' | '|' | '(' | ')' | '<' | '>')
}

/// A configuration file whose comments start with `#` at the start of a
/// line and whose indentation means nothing (sshd_config, sudoers): without
/// comment lines, blank lines or indentation.
pub fn config(text: &str) -> String {
    text.lines()
        .map(str::trim_start)
        .filter(|line| !(line.is_empty() || line.starts_with('#')))
        .map(|line| format!("{line}\n"))
        .collect()
}

/// Lines that are neither blank nor comments, a `#!` first line kept:
/// enough for Python, whose indentation is its syntax.
pub fn comment_lines(text: &str) -> String {
    text.lines()
        .enumerate()
        .filter(|(i, line)| {
            let code = line.trim_start();
            (*i == 0 && code.starts_with("#!")) || !(code.is_empty() || code.starts_with('#'))
        })
        .map(|(_, line)| format!("{line}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `script` with `sh -c`, stdout and exit status.
    fn run(script: &str) -> (String, Option<i32>) {
        let out = std::process::Command::new("sh")
            .args(["-c", script, "sh", "arg one", "two"])
            .output()
            .expect("sh runs");
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            out.status.code(),
        )
    }

    const TRICKY: &str = r#"#!/bin/sh
# a comment: it's got a quote, and a "double" one
    # an indented comment with a ( and a `
x=1   # a trailing comment, kept

if [ "$x" = 1 ]; then
    echo "indented, then $# args, ${#x} long"
fi
ml='first
    indented inside single quotes
# not a comment'
printf '%s\n' "$ml"
dq="a
    indented inside double quotes $(echo "nested
        $(echo 'deep
   quote')")"
printf '%s\n' "$dq"
cat <<'EOF'
    a here-document keeps its indentation
# and its comment-like lines

EOF
cat <<-EOT
	tabs stripped by sh, kept by us
	EOT
echo joined\
    continued
echo a \
    b
case $x in
    1) echo one ;;
    *) echo other ;;
esac
v=$( (echo sub) )
echo "$v" "`echo back
    quote`"
"#;

    #[test]
    fn minified_shell_behaves_as_the_original() {
        let small = shell(TRICKY);
        assert!(small.len() < TRICKY.len());
        assert_eq!(run(&small), run(TRICKY), "{small}");
        assert!(small.starts_with("#!/bin/sh\n"));
        assert!(small.contains("\nx=1   # a trailing comment, kept\n"));
        assert!(!small.contains("# a comment"));
        assert!(!small.contains("an indented comment"));
        assert!(small.contains("\n    indented inside single quotes\n# not a comment'"));
        assert!(
            small.contains(
                "\n    a here-document keeps its indentation\n# and its comment-like lines\n\nEOF\n"
            )
        );
        assert!(small.contains("\necho \"indented, then"), "{small}");
        assert!(
            small.contains("\n        $(echo 'deep\n   quote')\")\"\n"),
            "{small}"
        );
        assert!(!small.contains("\n\n\n"));
    }

    #[test]
    fn respots_scripts_keep_their_behaviour_markers() {
        for file in [
            super::super::INSPECTOR,
            super::super::PLACE,
            super::super::DEPLOY_LOG_HELPER,
        ] {
            let small = shell(file.content);
            let status = std::process::Command::new("sh")
                .args(["-n", "-c", &small])
                .status()
                .expect("sh runs");
            assert!(status.success(), "{} parses as sh", file.path);
            // Every word of code survives, in order.
            let words = |text: &str| -> Vec<String> {
                comment_lines(text)
                    .split_whitespace()
                    .map(str::to_string)
                    .collect()
            };
            assert_eq!(words(&small), words(file.content), "{}", file.path);
        }
    }

    #[test]
    fn config_loses_comments_and_indentation_only() {
        let text = "# a comment\nKey value\n\nMatch User x\n    Inner yes  # kept\n";
        assert_eq!(config(text), "Key value\nMatch User x\nInner yes  # kept\n");
    }
}
