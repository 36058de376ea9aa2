//! CLI wiring: parse flags, load the blueprint once, run one command, map
//! the outcome to an exit code. Commands live in the library modules.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use respot::config::Config;
use respot::error::{EXIT_FAILED, EXIT_OK, Error, Result, exit_code_help};
use respot::keys::KeyStore;
use respot::output::{Format, Printer};
use respot::provider::SshEndpoint;
use respot::scaffold;
use respot::template::{self, Blueprint, InstanceFile, LaunchMaterial};
use respot::verify::{self, Expected, Section, Target, VerifySettings};

#[derive(Debug, Parser)]
#[command(
    name = "respot",
    version,
    about = "Run fleets of EC2 spot instances the immutable way: never change a live \
             instance, recreate it from a versioned blueprint, then prove it read-only over SSH.",
    after_help = exit_code_help()
)]
struct Cli {
    /// The blueprint settings file [default: respot.toml in the current directory]
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Output for scripts (json) or people (table)
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    output: Format,
    /// More logs on stderr (-v info, -vv debug); RUST_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Only errors and warnings on stderr
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the rendered user-data (stdout); digest, version and sizes go to stderr
    Render(RenderArgs),
    /// Create a new blueprint folder from the embedded sample
    Init(InitArgs),
    /// Check live instances read-only over SSH; exit 0 only when every check passes
    Verify(VerifyArgs),
    /// A read-only inspection report for one instance
    Debug(DebugArgs),
}

#[derive(Debug, Args)]
struct VerifyArgs {
    /// An instance's SSH endpoint, HOST:PORT (repeatable)
    #[arg(long = "target", value_name = "HOST:PORT", value_parser = parse_endpoint)]
    targets: Vec<SshEndpoint>,
    /// Fail on warnings too (cloud-init degraded, a check the instance cannot answer)
    #[arg(long)]
    strict: bool,
    /// Seconds to wait for each instance, boot included [default: verify.timeout_secs]
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    timeout: Option<u64>,
}

#[derive(Debug, Args)]
struct DebugArgs {
    /// The instance's SSH endpoint, HOST:PORT
    #[arg(value_name = "HOST:PORT", value_parser = parse_endpoint)]
    target: SshEndpoint,
    /// Only these parts of the report (repeatable) [default: all]
    #[arg(long = "section", value_enum, value_name = "SECTION")]
    sections: Vec<Section>,
    /// Seconds to wait for the instance [default: verify.timeout_secs]
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    timeout: Option<u64>,
}

/// `HOST:PORT`, `[v6]:PORT`; the host may use only hostname/IP characters.
fn parse_endpoint(text: &str) -> std::result::Result<SshEndpoint, String> {
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("`{text}`: expected HOST:PORT"))?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("`{text}`: `{port}` is not a port number"))?;
    let valid_host = !host.is_empty()
        && !host.starts_with('-')
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'));
    if !valid_host {
        return Err(format!("`{text}`: `{host}` is not a host name or IP address"));
    }
    Ok(SshEndpoint {
        host: host.to_string(),
        port,
    })
}

#[derive(Debug, Args)]
struct RenderArgs {
    /// Also validate the user-data with `cloud-init schema`
    #[arg(long)]
    check: bool,
    /// Also write the packed user-data (raw or gzip), exactly as a launch
    /// would send it with sample key material, to this file
    #[arg(long, value_name = "PATH")]
    user_data_out: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct InitArgs {
    /// Where to create the blueprint
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// The deployment name written into respot.toml
    #[arg(long, default_value = "hello")]
    name: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    let printer = Printer::new(cli.output, cli.quiet, cli.verbose);
    match run(&cli, &printer) {
        Ok(code) => ExitCode::from(code),
        Err(Error::Output(err)) if err.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(err) => {
            printer.error(&error_chain(&err));
            ExitCode::from(err.exit_code())
        }
    }
}

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

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(&format!(": {cause_text}"));
        }
        source = cause.source();
    }
    text
}

fn run(cli: &Cli, printer: &Printer) -> Result<u8> {
    match &cli.command {
        Command::Init(args) => init(args, printer),
        Command::Render(args) => {
            let config = load_config(cli.config.as_deref())?;
            render(&config, args, printer)
        }
        Command::Verify(args) => {
            let config = load_config(cli.config.as_deref())?;
            runtime()?.block_on(verify_command(&config, args, printer))
        }
        Command::Debug(args) => {
            let config = load_config(cli.config.as_deref())?;
            runtime()?.block_on(debug_command(&config, args, printer))
        }
    }
}

/// The one tokio runtime, for commands that talk to instances or clouds.
fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Tool(format!("cannot start the async runtime: {e}")))
}

/// Which instances to talk to. Without a provider lookup, the endpoints
/// given on the command line are the instances.
fn resolve_targets(endpoints: &[SshEndpoint]) -> Result<Vec<Target>> {
    if endpoints.is_empty() {
        return Err(Error::Usage(
            "no instances to verify: pass `--target HOST:PORT` (repeatable)".to_string(),
        ));
    }
    Ok(endpoints
        .iter()
        .map(|endpoint| {
            let shown = format!("{}:{}", endpoint.host, endpoint.port);
            Target {
                instance: shown.clone(),
                name: shown,
                endpoint: endpoint.clone(),
            }
        })
        .collect())
}

fn verify_settings(config: &Config, timeout: Option<u64>, strict: bool) -> VerifySettings {
    VerifySettings {
        user: config.ssh.user.clone(),
        timeout: std::time::Duration::from_secs(timeout.unwrap_or(config.verify.timeout_secs)),
        strict,
        host_keys: config.ssh.host_keys,
    }
}

async fn verify_command(config: &Config, args: &VerifyArgs, printer: &Printer) -> Result<u8> {
    let blueprint = Blueprint::render(config)?;
    let targets = resolve_targets(&args.targets)?;
    let keys = KeyStore::open(&blueprint.deployment)?;
    let settings = verify_settings(config, args.timeout, args.strict);
    let expected = Expected {
        digest: blueprint.digest.clone(),
    };
    let report = verify::verify_fleet(&keys, &targets, &expected, &settings, printer).await;
    if printer.is_json() {
        printer.json(&report).map_err(Error::Output)?;
    } else {
        printer.data(&report.table().render()).map_err(Error::Output)?;
    }
    if report.passed() {
        printer.info(&report.summary());
        Ok(EXIT_OK)
    } else {
        printer.error(&format!(
            "{}; failed: {}",
            report.summary(),
            report.failed_instances.join(", ")
        ));
        Ok(EXIT_FAILED)
    }
}

async fn debug_command(config: &Config, args: &DebugArgs, printer: &Printer) -> Result<u8> {
    let targets = resolve_targets(std::slice::from_ref(&args.target))?;
    let keys = KeyStore::open(&config.deployment.name)?;
    let settings = verify_settings(config, args.timeout, false);
    let report = verify::debug_report(&keys, &targets[0], &args.sections, &settings).await?;
    if printer.is_json() {
        printer.json(&report).map_err(Error::Output)?;
    } else {
        printer.data(&report.render_text()).map_err(Error::Output)?;
    }
    Ok(EXIT_OK)
}

fn load_config(explicit: Option<&Path>) -> Result<Config> {
    let cwd = std::env::current_dir()
        .map_err(|e| Error::Usage(format!("cannot read the current directory: {e}")))?;
    let path = Config::locate(explicit, &cwd)?;
    Ok(Config::load(&path)?)
}

fn init(args: &InitArgs, printer: &Printer) -> Result<u8> {
    let written = scaffold::init(&args.dir, &args.name)?;
    if printer.is_json() {
        let paths: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
        printer
            .json(&serde_json::json!({ "created": paths }))
            .map_err(Error::Output)?;
    } else {
        for path in &written {
            printer.info(&format!("created {}", path.display()));
        }
        printer.info(&format!(
            "next: `cd {}` and `respot render --check`, then `respot create`",
            args.dir.display()
        ));
    }
    Ok(0)
}

#[derive(Serialize)]
struct RenderReport<'a> {
    deployment: &'a str,
    digest: &'a str,
    version: &'a str,
    git_commit: Option<&'a str>,
    git_dirty: bool,
    raw_bytes: usize,
    packed_bytes: usize,
    gzipped: bool,
    files: Vec<FileReport<'a>>,
    units: &'a [String],
    schema: Option<String>,
    document: &'a str,
}

#[derive(Serialize)]
struct FileReport<'a> {
    path: &'a str,
    source: &'a str,
    mode: &'a str,
    sha256: &'a str,
    bytes: usize,
}

impl<'a> From<&'a InstanceFile> for FileReport<'a> {
    fn from(f: &'a InstanceFile) -> Self {
        FileReport {
            path: &f.path,
            source: &f.source,
            mode: &f.mode,
            sha256: &f.sha256,
            bytes: f.content.len(),
        }
    }
}

fn render(config: &Config, args: &RenderArgs, printer: &Printer) -> Result<u8> {
    let blueprint = Blueprint::render(config)?;
    // Sizes and the schema check cover the whole user-data, launch part
    // included, with key material of realistic shape.
    let sample_launch = LaunchMaterial {
        generation: 1,
        host_key: Some((
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZWQyNTUxOQAAACA=\n-----END OPENSSH PRIVATE KEY-----\n".to_string(),
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA== respot-host".to_string(),
        )),
        verify_key: Some("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA== respot-verify".to_string()),
    };
    let user_data = blueprint.user_data(&sample_launch)?;
    let schema = if args.check {
        match template::schema_check(&user_data.document)? {
            Some(output) => Some(if output.is_empty() {
                "valid".to_string()
            } else {
                output
            }),
            None => {
                return Err(Error::Tool(
                    "`render --check` needs `cloud-init` (for `cloud-init schema`), which is not installed; \
                     install it with `apt-get install cloud-init` or run `scripts/setup`"
                        .to_string(),
                ));
            }
        }
    } else {
        None
    };
    if let Some(path) = &args.user_data_out {
        std::fs::write(path, &user_data.packed)
            .map_err(|e| Error::Usage(format!("cannot write `{}`: {e}", path.display())))?;
    }
    if blueprint.git.dirty {
        printer.warn("the git tree is dirty: the version is marked -dirty and `create` will refuse without --allow-dirty");
    }
    if printer.is_json() {
        let report = RenderReport {
            deployment: &blueprint.deployment,
            digest: blueprint.digest.as_str(),
            version: &blueprint.version,
            git_commit: blueprint.git.commit.as_deref(),
            git_dirty: blueprint.git.dirty,
            raw_bytes: user_data.document.len(),
            packed_bytes: user_data.packed.len(),
            gzipped: user_data.gzipped,
            files: blueprint.files.iter().map(FileReport::from).collect(),
            units: &blueprint.units,
            schema,
            document: &blueprint.document,
        };
        printer.json(&report).map_err(Error::Output)?;
    } else {
        printer.data(&blueprint.document).map_err(Error::Output)?;
        printer.info(&format!("digest   {}", blueprint.digest));
        printer.info(&format!("version  {}", blueprint.version));
        printer.info(&format!(
            "size     {} bytes raw with launch material, {} bytes packed{}",
            user_data.document.len(),
            user_data.packed.len(),
            if user_data.gzipped { " (gzip)" } else { "" }
        ));
        if let Some(result) = schema {
            printer.info(&format!("schema   cloud-init schema: {result}"));
        }
    }
    Ok(0)
}
