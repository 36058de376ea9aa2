//! `respot debug <target>`: a read-only inspection report for one instance.
//! It shows; it never fixes.

use std::path::Path;

use serde::Serialize;

use super::select::{endpoint_target, live_instances, pin_host_keys, targets, verify_settings};
use super::{Context, ExitStatus};
use crate::error::{Error, Result};
use crate::keys::KeyStore;
use crate::provider::{AnyProvider, Instance, SshEndpoint};
use crate::verify::{DebugReport, Section, Target, debug_report};

/// Serial console lines shown for a local VM.
const CONSOLE_TAIL: usize = 40;

#[derive(Debug, Clone)]
pub struct DebugOptions {
    /// An instance id, name or IP, or an SSH endpoint HOST:PORT.
    pub target: String,
    /// Only these parts (all when empty).
    pub sections: Vec<Section>,
    pub timeout: Option<u64>,
}

#[derive(Serialize)]
struct DebugOutput<'a> {
    #[serde(flatten)]
    report: &'a DebugReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    console_tail: Option<&'a [String]>,
}

pub async fn debug(context: &Context<'_>, options: &DebugOptions) -> Result<ExitStatus> {
    let (config, printer) = (context.config()?, context.printer);
    let keys = context.keys()?;
    let endpoint = SshEndpoint::parse(&options.target);
    // An endpoint needs no provider: `debug HOST:PORT` works where the
    // provider cannot be used (no credentials, no VM image).
    let provider = match (context.connect().await, &endpoint) {
        (Ok(provider), _) => Some(provider),
        (Err(err), Ok(_)) => {
            tracing::info!("no provider, so `{}` is only an endpoint: {err}", options.target);
            None
        }
        (Err(err), Err(_)) => return Err(err),
    };
    let (target, instance) =
        find_target(provider.as_ref(), context, &keys, &options.target, endpoint).await?;
    let settings = verify_settings(config, options.timeout, false);
    let report = debug_report(&keys, &target, &options.sections, &settings).await?;
    let console = match (&provider, &instance) {
        (Some(AnyProvider::Local(local)), Some(instance)) if options.sections.is_empty() => Some(tail_lines(
            &local.console_log(&config.deployment.name, &instance.id),
            CONSOLE_TAIL,
        )),
        _ => None,
    };
    if printer.is_json() {
        let output = DebugOutput {
            report: &report,
            console_tail: console.as_deref(),
        };
        printer.json(&output).map_err(Error::Output)?;
        return Ok(ExitStatus::Success);
    }
    let text = compose(&report.to_string(), console.as_deref());
    printer.data(&text).map_err(Error::Output)?;
    Ok(ExitStatus::Success)
}

/// The instance `wanted` names: one the provider lists wins; otherwise a
/// HOST:PORT is an endpoint of its own.
async fn find_target(
    provider: Option<&AnyProvider>,
    context: &Context<'_>,
    keys: &KeyStore,
    wanted: &str,
    endpoint: std::result::Result<SshEndpoint, String>,
) -> Result<(Target, Option<Instance>)> {
    let config = context.config()?;
    if let Some(provider) = provider {
        match live_instances(provider, config, &[wanted.to_string()]).await {
            Ok(instances) => {
                pin_host_keys(keys, config, &instances);
                if let Some(instance) = instances.into_iter().next() {
                    return Ok((instance_target(&instance)?, Some(instance)));
                }
            }
            Err(err) if endpoint.is_err() => return Err(err),
            Err(_) => {}
        }
    }
    let endpoint = endpoint.map_err(|_| Error::NoSuchInstance {
        deployment: config.deployment.name.clone(),
        wanted: wanted.to_string(),
    })?;
    Ok((endpoint_target(&endpoint), None))
}

fn instance_target(instance: &Instance) -> Result<Target> {
    targets(std::slice::from_ref(instance))
        .pop()
        .ok_or_else(|| Error::NoEndpoint {
            instance: instance.id.to_string(),
        })
}

/// The report for people: its header line (which instance, where) first,
/// then the serial console when there is one, then the rest of the report.
fn compose(report: &str, console: Option<&[String]>) -> String {
    let (header, rest) = report.split_once('\n').unwrap_or((report, ""));
    let mut text = format!("{header}\n");
    if let Some(lines) = console {
        text.push_str(&format!("\n== serial console (last {CONSOLE_TAIL} lines)\n"));
        for line in lines {
            text.push_str(line);
            text.push('\n');
        }
    }
    text.push_str(rest);
    text
}

/// The last `n` lines of a console log, as a terminal would have shown
/// them but inert: see [`console_lines`].
fn tail_lines(path: &Path, n: usize) -> Vec<String> {
    let raw = std::fs::read(path).unwrap_or_default();
    let lines = console_lines(&String::from_utf8_lossy(&raw));
    lines[lines.len().saturating_sub(n)..].to_vec()
}

/// A serial console's text with nothing left that could drive a terminal:
/// escape sequences go whole (CSI `ESC [ … final`, OSC `ESC ] … BEL` or
/// `ESC \`, and two-character `ESC x`), so no `[0;32m` is left behind; a
/// carriage return keeps what was written after it, as a terminal shows it;
/// every other control character and the Unicode bidi controls go. Tabs stay.
fn console_lines(text: &str) -> Vec<String> {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            plain.push(c);
            continue;
        }
        match chars.next() {
            // CSI: parameters and intermediates, then one final byte.
            Some('[') => {
                for c in chars.by_ref() {
                    if ('\x40'..='\x7e').contains(&c) {
                        break;
                    }
                }
            }
            // OSC, DCS, SOS, PM, APC: a string ended by BEL or ST.
            Some(']' | 'P' | 'X' | '^' | '_') => {
                while let Some(c) = chars.next() {
                    if c == '\x07' || (c == '\x1b' && chars.next_if_eq(&'\\').is_some()) {
                        break;
                    }
                }
            }
            // nF: intermediates, then one final character (`ESC ( B`).
            Some(' '..='/') => {
                while chars.next_if(|c| (' '..='/').contains(c)).is_some() {}
                chars.next();
            }
            // Fp, Fe, Fs: the one character after ESC is the whole sequence.
            _ => {}
        }
    }
    plain
        .lines()
        .map(|line| {
            let shown = line.rsplit('\r').find(|part| !part.is_empty()).unwrap_or("");
            shown
                .chars()
                .filter(|&c| c == '\t' || !(c.is_control() || is_bidi_control(c)))
                .collect()
        })
        .collect()
}

/// The marks, embeddings, overrides and isolates of the Unicode bidi
/// algorithm: they reorder what a terminal shows.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_lines_lose_every_terminal_control() {
        let cases = [
            ("plain", "Booting Linux", "Booting Linux"),
            (
                "systemd colours",
                "[\x1b[0;32m  OK  \x1b[0m] Started ssh",
                "[  OK  ] Started ssh",
            ),
            ("clear screen and home", "\x1b[2J\x1b[Hlogin:", "login:"),
            ("osc title with bel", "\x1b]0;owned\x07shell", "shell"),
            ("osc with st", "\x1b]8;;http://x\x1b\\link", "link"),
            ("charset select", "\x1b(Bdone", "done"),
            ("keypad mode", "\x1b=ready", "ready"),
            ("carriage return overwrite", "50%\r100%", "100%"),
            ("crlf line end", "cloud-init done\r", "cloud-init done"),
            ("bell and backspace", "a\x07b\x08c", "abc"),
            ("c1 csi", "x\u{9b}31my", "x31my"),
            ("bidi override", "abc\u{202E}def", "abcdef"),
            ("tab stays", "key\tvalue", "key\tvalue"),
        ];
        for (name, input, want) in cases {
            assert_eq!(console_lines(input), vec![want.to_string()], "{name}");
        }
    }

    #[test]
    fn the_header_comes_first_then_the_console_then_the_report() {
        let report = "instance i-1 (web-1) at 127.0.0.1:2222\n\n== cloud-init\nstatus: done\n";
        let console = ["[  OK  ] Reached target".to_string()];
        let text = compose(report, Some(&console));
        assert_eq!(
            text,
            "instance i-1 (web-1) at 127.0.0.1:2222\n\n== serial console (last 40 lines)\n\
             [  OK  ] Reached target\n\n== cloud-init\nstatus: done\n"
        );
        assert_eq!(
            compose(report, None),
            report,
            "without a console, the report as it is"
        );
    }
}
