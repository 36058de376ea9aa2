//! The `respot` binary: parse, set up logs and the printer, run one command,
//! map the outcome to an exit code. Everything else lives in the library.

use std::process::ExitCode;

use clap::Parser;

use respot::cli::Cli;
use respot::commands::{self, ExitStatus};
use respot::settings;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    let printer = settings::printer(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            printer.error(&format!("cannot start the async runtime: {err}"));
            return ExitStatus::Provider.into();
        }
    };
    let result =
        settings::resolve(cli).and_then(|invocation| runtime.block_on(commands::run(invocation, &printer)));
    match result {
        Ok(status) => status.into(),
        Err(err) if err.is_broken_pipe() => ExitStatus::Success.into(),
        Err(err) => {
            printer.error(&err.chain());
            err.exit_status().into()
        }
    }
}

/// Logs go to stderr: warnings by default, `-v` info, `-vv` debug;
/// `RUST_LOG` overrides.
fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "respot=info",
        _ => "respot=debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
