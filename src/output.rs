//! What reaches stdout and stderr: tables, JSON, progress, warnings and
//! the confirmation prompt.
//!
//! One `Printer` decides, and it is the only writer to stdout and stderr
//! (tracing's log lines aside). stdout carries data only (a table or one
//! JSON document); everything for people goes to stderr. Live progress is
//! shown only on a terminal, and not with `--quiet` or in verbose mode,
//! where it would interleave with logs; there, phase changes are plain
//! lines (or JSON lines with `--output json`), see `progress`.

mod progress;

use std::fmt;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use self::progress::{Display, Hub};
pub use self::progress::{SCHEMA as PROGRESS_SCHEMA, VERSION as PROGRESS_VERSION, json_line, plain_line};
use crate::progress::{Observer, Timeline};

/// `Count(2, "instance")` shows `2 instances`; `Count(1, "instance")` shows
/// `1 instance`. Nouns here all take a plain `s`.
pub struct Count<'a>(pub usize, pub &'a str);

impl fmt::Display for Count<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Count(n, noun) = *self;
        write!(f, "{n} {noun}{}", if n == 1 { "" } else { "s" })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Table,
    Json,
}

#[derive(Debug, Clone)]
pub struct Printer {
    pub format: Format,
    quiet: bool,
    progress: bool,
    color: bool,
    hub: Arc<Hub>,
}

impl Printer {
    pub fn new(format: Format, quiet: bool, verbosity: u8) -> Printer {
        let stderr_tty = std::io::stderr().is_terminal();
        let progress = stderr_tty && !quiet && verbosity == 0;
        let color = stderr_tty && std::env::var_os("NO_COLOR").is_none();
        let display = Display::pick(format, quiet, progress);
        Printer {
            format,
            quiet,
            progress,
            color,
            hub: Arc::new(Hub::new(display, color)),
        }
    }

    /// Where the engine and verification report the phases of a launch.
    pub fn observer(&self) -> &dyn Observer {
        &*self.hub
    }

    /// Every progress event so far, stamped: what a summary is made of.
    pub fn timeline(&self) -> Timeline {
        self.hub.timeline()
    }

    /// Time since this printer (so, the command) started.
    pub fn elapsed(&self) -> Duration {
        self.hub.elapsed()
    }

    /// Ends the live progress lines (they vanish from the terminal); call it
    /// before the summary or the error, so nothing is printed under them.
    pub fn finish_progress(&self) {
        self.hub.finish();
    }

    pub fn is_json(&self) -> bool {
        self.format == Format::Json
    }

    /// Writes a JSON document to stdout.
    pub fn json<T: Serialize>(&self, value: &T) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
        self.hub.suspend(|| {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{text}")?;
            out.flush()
        })
    }

    /// Writes raw data (a rendered document, a table) to stdout.
    pub fn data(&self, text: &str) -> std::io::Result<()> {
        self.hub.suspend(|| {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            out.flush()
        })
    }

    /// A line for people on stderr; hidden by `--quiet`.
    pub fn info(&self, message: &str) {
        if !self.quiet {
            self.hub.suspend(|| eprintln!("{message}"));
        }
    }

    /// A warning on stderr; never hidden.
    pub fn warn(&self, message: &str) {
        self.hub.suspend(|| {
            if self.color {
                eprintln!("\x1b[33mwarning\x1b[0m: {message}");
            } else {
                eprintln!("warning: {message}");
            }
        });
    }

    /// A progress line for long waits: only on a terminal, not quiet, not verbose.
    pub fn progress(&self, message: &str) {
        if self.progress {
            self.hub.suspend(|| eprintln!("… {message}"));
        }
    }

    /// Text that explains a failure (a table of failed checks) on stderr;
    /// never hidden, since the error that follows refers to it. Not in JSON
    /// mode, where the report travels in the JSON document.
    pub fn evidence(&self, text: &str) {
        if !self.is_json() {
            self.hub.suspend(|| eprint!("{text}"));
        }
    }

    /// Whether a person can answer `ask` (stdin is a terminal).
    pub fn can_ask(&self) -> bool {
        std::io::stdin().is_terminal()
    }

    /// Asks a yes/no question on stderr and reads the answer from stdin;
    /// only `y` or `yes` is a yes.
    pub fn ask(&self, question: &str) -> std::io::Result<bool> {
        eprint!("{question} [y/N] ");
        std::io::stderr().flush()?;
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
    }

    /// An error on stderr.
    pub fn error(&self, message: &str) {
        self.hub.suspend(|| {
            if self.color {
                eprintln!("\x1b[31merror\x1b[0m: {message}");
            } else {
                eprintln!("error: {message}");
            }
        });
    }
}

/// A plain column-aligned text table.
#[derive(Debug, Clone)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(header: I) -> Table {
        Table {
            header: header.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row<I: IntoIterator<Item = S>, S: Into<String>>(&mut self, cells: I) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn render(&self) -> String {
        let columns = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let mut line = |cells: &[String]| {
            let mut text = String::new();
            for (i, cell) in cells.iter().enumerate().take(columns) {
                if i + 1 == columns {
                    text.push_str(cell);
                } else {
                    text.push_str(&format!("{cell:<width$}  ", width = widths[i]));
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        };
        line(&self.header);
        for row in &self.rows {
            line(row);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_pick_singular_or_plural() {
        let cases = [(0, "0 instances"), (1, "1 instance"), (2, "2 instances")];
        for (n, want) in cases {
            assert_eq!(Count(n, "instance").to_string(), want);
        }
    }

    #[test]
    fn progress_shows_live_only_on_a_terminal_and_never_with_quiet() {
        // (format, quiet, live-capable: a terminal and not verbose, want)
        let cases = [
            (Format::Table, false, true, Display::Live),
            (Format::Table, false, false, Display::Lines),
            (Format::Json, false, true, Display::Json),
            (Format::Json, false, false, Display::Json),
            (Format::Table, true, true, Display::Hidden),
            (Format::Json, true, false, Display::Hidden),
        ];
        for (format, quiet, live, want) in cases {
            assert_eq!(
                Display::pick(format, quiet, live),
                want,
                "{format:?} quiet={quiet} live={live}"
            );
        }
    }

    #[test]
    fn tables_align_columns() {
        let mut table = Table::new(["id", "state"]);
        table.row(["i-1", "running"]);
        table.row(["i-12345", "dead"]);
        assert_eq!(
            table.render(),
            "id       state\ni-1      running\ni-12345  dead\n"
        );
    }
}
