//! CLI wiring: parse flags, load the blueprint once, run one command, map
//! the outcome to an exit code. Commands live in the library modules.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use respot::config::{Accel, Config, HostKeyPolicy, ProviderKind};
use respot::engine::{self, CreateOptions, DestroyOptions};
use respot::error::{EXIT_FAILED, EXIT_OK, Error, Result, exit_code_help};
use respot::keys::KeyStore;
use respot::output::{Format, Printer, Table};
use respot::provider::aws::{AwsOptions, AwsProvider};
use respot::provider::local::LocalProvider;
use respot::provider::{AnyProvider, Instance, Provider, SshEndpoint};
use respot::scaffold;
use respot::template::{self, Blueprint, InstanceFile, LaunchMaterial, Origin};
use respot::verify::fleet::SshVerification;
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
    /// Run against this provider instead of `deployment.provider`
    #[arg(long, global = true, value_enum)]
    provider: Option<ProviderKind>,
    #[command(flatten)]
    aws: AwsArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the rendered user-data (stdout); digest, version and sizes go to stderr
    Render(RenderArgs),
    /// Create a new blueprint folder from the embedded sample
    Init(InitArgs),
    /// List the deployment's instances, marking those stale against the current render
    List,
    /// Show what `deploy` would destroy and create per region, the digest change and the price
    Plan(PlanArgs),
    /// Launch a fresh generation, wait for it, verify it; roll back on failure
    Create(CreateArgs),
    /// Terminate every instance of the deployment and clean up what respot created
    Destroy(DestroyArgs),
    /// Ship the current blueprint: a fresh, verified generation replaces the live one
    Deploy(DeployArgs),
    /// Check live instances read-only over SSH; exit 0 only when every check passes
    Verify(VerifyArgs),
    /// A read-only inspection report for one instance
    Debug(DebugArgs),
}

/// AWS-only choices; the local provider ignores them.
#[derive(Debug, Args)]
struct AwsArgs {
    /// AWS: the named profile to use instead of AWS_PROFILE (SSO and credential_process work)
    #[arg(long, global = true, value_name = "NAME")]
    profile: Option<String>,
    /// AWS: work in this region only
    #[arg(long, global = true, value_name = "REGION")]
    region: Option<String>,
    /// AWS: list or destroy in every region enabled for the account
    #[arg(long, global = true, conflicts_with = "region")]
    all_regions: bool,
}

#[derive(Debug, Args)]
struct CreateArgs {
    /// Create even though the blueprint's git tree has uncommitted changes
    #[arg(long)]
    allow_dirty: bool,
    /// On failure keep the instances (still tagged) for `respot debug`
    #[arg(long)]
    keep_on_failure: bool,
    /// Wait for running instances but skip SSH verification
    #[arg(long)]
    no_verify: bool,
    /// Local provider: CPU acceleration [default: from respot.toml, auto]
    #[arg(long, value_enum)]
    accel: Option<Accel>,
}

#[derive(Debug, Args)]
struct PlanArgs {
    /// The strategy `deploy` would use
    #[arg(long, value_enum, default_value_t = engine::Strategy::Recreate)]
    strategy: engine::Strategy,
}

#[derive(Debug, Args)]
struct DeployArgs {
    /// recreate: destroy, then create; blue-green: create and verify, then destroy the old
    #[arg(long, value_enum, default_value_t = engine::Strategy::Recreate)]
    strategy: engine::Strategy,
    /// Do not ask before replacing live instances
    #[arg(long, short = 'y')]
    yes: bool,
    #[command(flatten)]
    create: CreateArgs,
}

#[derive(Debug, Args)]
struct DestroyArgs {
    /// Do not ask for confirmation
    #[arg(long, short = 'y')]
    yes: bool,
    /// Show what would be destroyed, change nothing
    #[arg(long)]
    dry_run: bool,
    /// Return once termination has started
    #[arg(long)]
    no_wait: bool,
}

#[derive(Debug, Args)]
struct VerifyArgs {
    /// Only these live instances, by id, name or IP (repeatable) [default: all]
    #[arg(long = "instance", value_name = "ID")]
    instances: Vec<String>,
    /// Verify this SSH endpoint, HOST:PORT, as an instance of the deployment
    /// without asking the provider (repeatable)
    #[arg(long = "target", value_name = "HOST:PORT", value_parser = parse_endpoint, conflicts_with = "instances")]
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
    /// The instance: its id, name, IP, or an SSH endpoint HOST:PORT
    #[arg(value_name = "INSTANCE")]
    target: String,
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
        Command::List
        | Command::Plan(_)
        | Command::Create(_)
        | Command::Destroy(_)
        | Command::Deploy(_)
        | Command::Verify(_)
        | Command::Debug(_) => {
            let config = load_config(cli.config.as_deref())?;
            runtime()?.block_on(run_async(cli, &config, printer))
        }
    }
}

async fn run_async(cli: &Cli, config: &Config, printer: &Printer) -> Result<u8> {
    if let Command::Verify(args) = &cli.command
        && !args.targets.is_empty()
    {
        return verify_command(None::<&AnyProvider>, config, args, printer).await;
    }
    let accel = match &cli.command {
        Command::Create(args) => args.accel,
        Command::Deploy(args) => args.create.accel,
        _ => None,
    };
    let provider = connect(cli, config, accel).await?;
    let keys = KeyStore::open(&config.deployment.name)?;
    match &cli.command {
        Command::List => list(&provider, config, printer).await,
        Command::Plan(args) => plan(&provider, config, args, printer).await,
        Command::Create(args) => create(&provider, &keys, config, args, printer).await,
        Command::Destroy(args) => destroy(&provider, &keys, config, args, printer).await,
        Command::Deploy(args) => deploy(&provider, &keys, config, args, printer).await,
        Command::Verify(args) => verify_command(Some(&provider), config, args, printer).await,
        Command::Debug(args) => debug_command(&provider, config, args, printer).await,
        Command::Render(_) | Command::Init(_) => unreachable!("synchronous commands are dispatched in `run`"),
    }
}

async fn connect(cli: &Cli, config: &Config, accel: Option<Accel>) -> Result<AnyProvider> {
    match cli.provider.unwrap_or(config.deployment.provider) {
        ProviderKind::Local => Ok(AnyProvider::Local(LocalProvider::new(config, accel)?)),
        ProviderKind::Aws => {
            if cli.aws.all_regions && matches!(cli.command, Command::Create(_)) {
                return Err(Error::Usage(
                    "`--all-regions` works with `list` and `destroy`; `create` launches in `aws.regions`"
                        .to_string(),
                ));
            }
            let options = AwsOptions {
                profile: cli.aws.profile.clone(),
                region: cli.aws.region.clone(),
                all_regions: cli.aws.all_regions,
            };
            Ok(AnyProvider::Aws(Box::new(
                AwsProvider::new(config, &options).await?,
            )))
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

/// The endpoints given with `--target`, as instances of their own.
fn endpoint_targets(endpoints: &[SshEndpoint]) -> Vec<Target> {
    endpoints
        .iter()
        .map(|endpoint| {
            let shown = format!("{}:{}", endpoint.host, endpoint.port);
            Target {
                instance: shown.clone(),
                name: shown,
                endpoint: endpoint.clone(),
            }
        })
        .collect()
}

/// The live instances `wanted` names (by id, name, IP or HOST:PORT), or all
/// live instances when `wanted` is empty.
async fn live_instances<P: Provider>(
    provider: &P,
    config: &Config,
    wanted: &[String],
) -> Result<Vec<Instance>> {
    let live: Vec<Instance> = provider
        .list(&config.deployment.name)
        .await?
        .into_iter()
        .filter(|i| i.state.is_live())
        .collect();
    if wanted.is_empty() {
        return Ok(live);
    }
    let mut chosen = Vec::new();
    for want in wanted {
        let found = live.iter().find(|i| {
            i.id.0 == *want
                || i.name == *want
                || i.public_ip.as_deref() == Some(want.as_str())
                || i.ssh
                    .as_ref()
                    .is_some_and(|e| format!("{}:{}", e.host, e.port) == *want)
        });
        match found {
            Some(instance) => chosen.push(instance.clone()),
            None => {
                return Err(Error::Usage(format!(
                    "no live instance of `{}` is `{want}`; `respot list` shows them",
                    config.deployment.name
                )));
            }
        }
    }
    Ok(chosen)
}

fn verify_settings(config: &Config, timeout: Option<u64>, strict: bool) -> VerifySettings {
    VerifySettings {
        user: config.ssh.user.clone(),
        timeout: std::time::Duration::from_secs(timeout.unwrap_or(config.verify.timeout_secs)),
        strict,
        host_keys: config.ssh.host_keys,
    }
}

/// The digest the instances must report: the one they were launched with,
/// when they agree, else the current render's.
fn expected_digest(instances: &[Instance], blueprint: &Blueprint) -> Expected {
    let mut digests = instances.iter().filter_map(|i| i.digest.as_deref());
    let digest = match digests.next() {
        Some(first) if digests.all(|d| d == first) => template::Digest::parse(first),
        _ => None,
    };
    Expected {
        digest: digest.unwrap_or_else(|| blueprint.digest.clone()),
    }
}

async fn verify_command<P: Provider>(
    provider: Option<&P>,
    config: &Config,
    args: &VerifyArgs,
    printer: &Printer,
) -> Result<u8> {
    let blueprint = Blueprint::render(config)?;
    let keys = KeyStore::open(&blueprint.deployment)?;
    let settings = verify_settings(config, args.timeout, args.strict);
    let (targets, expected) = match provider {
        None => (
            endpoint_targets(&args.targets),
            Expected {
                digest: blueprint.digest.clone(),
            },
        ),
        Some(provider) => {
            let instances = live_instances(provider, config, &args.instances).await?;
            if instances.is_empty() {
                return Err(Error::Failed(format!(
                    "`{}` has no live instances to verify; `respot create` makes some",
                    config.deployment.name
                )));
            }
            if config.ssh.host_keys == HostKeyPolicy::Pinned {
                let unpinned = verify::fleet::pin_host_keys(&keys, &instances);
                if !unpinned.is_empty() {
                    printer.warn(&format!(
                        "this machine holds no pinned host key for {}; they will fail as not pinned",
                        unpinned.join(", ")
                    ));
                }
            }
            let expected = expected_digest(&instances, &blueprint);
            if expected.digest != blueprint.digest {
                printer.warn(&format!(
                    "the instances run digest {}, not the current render's {}: they are stale; \
                     `respot destroy` then `respot create` ships the change",
                    expected.digest.short(),
                    blueprint.digest.short()
                ));
            }
            (verify::fleet::targets(&instances), expected)
        }
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

async fn debug_command(
    provider: &AnyProvider,
    config: &Config,
    args: &DebugArgs,
    printer: &Printer,
) -> Result<u8> {
    let keys = KeyStore::open(&config.deployment.name)?;
    let settings = verify_settings(config, args.timeout, false);
    // A name the provider knows wins; otherwise a HOST:PORT is an endpoint
    // of its own.
    let found = live_instances(provider, config, std::slice::from_ref(&args.target)).await;
    let (target, instance) = match (found, parse_endpoint(&args.target)) {
        (Ok(instances), _) => {
            if config.ssh.host_keys == HostKeyPolicy::Pinned {
                verify::fleet::pin_host_keys(&keys, &instances);
            }
            let Some(instance) = instances.into_iter().next() else {
                return Err(Error::Usage(format!("no live instance is `{}`", args.target)));
            };
            let Some(target) = verify::fleet::targets(std::slice::from_ref(&instance)).pop() else {
                return Err(Error::Failed(format!(
                    "instance `{}` has no SSH endpoint yet (no public IP)",
                    instance.id
                )));
            };
            (target, Some(instance))
        }
        (Err(_), Ok(endpoint)) => (endpoint_targets(&[endpoint]).remove(0), None),
        (Err(err), Err(_)) => return Err(err),
    };
    let report = verify::debug_report(&keys, &target, &args.sections, &settings).await?;
    let console = match (provider, &instance) {
        (AnyProvider::Local(local), Some(instance)) if args.sections.is_empty() => Some(tail_lines(
            &local.console_log(&config.deployment.name, &instance.id),
            40,
        )),
        _ => None,
    };
    if printer.is_json() {
        let mut value = serde_json::to_value(&report).map_err(|e| Error::Output(std::io::Error::other(e)))?;
        if let (Some(lines), Some(object)) = (&console, value.as_object_mut()) {
            object.insert("console_tail".to_string(), serde_json::json!(lines));
        }
        printer.json(&value).map_err(Error::Output)?;
    } else {
        let mut text = String::new();
        if let Some(lines) = &console {
            text.push_str("== serial console (last 40 lines) ==\n");
            for line in lines {
                text.push_str(line);
                text.push('\n');
            }
            text.push('\n');
        }
        text.push_str(&report.render_text());
        if !text.ends_with('\n') {
            text.push('\n');
        }
        printer.data(&text).map_err(Error::Output)?;
    }
    Ok(EXIT_OK)
}

/// The last `n` lines of a text file, control characters removed.
fn tail_lines(path: &Path, n: usize) -> Vec<String> {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).to_string())
        .unwrap_or_default();
    let lines: Vec<String> = text
        .lines()
        .map(|l| l.chars().filter(|c| !c.is_control() || *c == '\t').collect())
        .collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
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
    origin: Origin,
    mode: &'a str,
    sha256: &'a str,
    bytes: usize,
}

impl<'a> From<&'a InstanceFile> for FileReport<'a> {
    fn from(f: &'a InstanceFile) -> Self {
        FileReport {
            path: &f.path,
            source: &f.source,
            origin: f.origin,
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

/// "42s", "12m", "3h", "2d".
fn short_age(launched: Option<std::time::SystemTime>) -> String {
    let Some(secs) = launched.and_then(|t| t.elapsed().ok()).map(|d| d.as_secs()) else {
        return "-".to_string();
    };
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    }
}

#[derive(Serialize)]
struct ListedInstance<'a> {
    #[serde(flatten)]
    instance: &'a Instance,
    age_secs: Option<u64>,
    /// True when the instance runs another digest than the current render.
    stale: Option<bool>,
}

async fn list<P: Provider>(provider: &P, config: &Config, printer: &Printer) -> Result<u8> {
    let current = match Blueprint::render(config) {
        Ok(blueprint) => Some(blueprint.digest),
        Err(err) => {
            printer.warn(&format!(
                "cannot render the blueprint, so staleness is unknown: {err}"
            ));
            None
        }
    };
    let instances = provider.list(&config.deployment.name).await?;
    let stale = |i: &Instance| current.as_ref().map(|d| i.digest.as_deref() != Some(d.as_str()));
    if printer.is_json() {
        let rows: Vec<ListedInstance> = instances
            .iter()
            .map(|i| ListedInstance {
                instance: i,
                age_secs: i.launched_at.and_then(|t| t.elapsed().ok()).map(|d| d.as_secs()),
                stale: stale(i),
            })
            .collect();
        printer.json(&rows).map_err(Error::Output)?;
        return Ok(0);
    }
    let mut table = Table::new([
        "REGION",
        "ZONE",
        "ID",
        "NAME",
        "TYPE",
        "LIFECYCLE",
        "STATE",
        "ADDRESS",
        "VERSION",
        "GEN",
        "AGE",
        "STALE",
    ]);
    for i in &instances {
        let address = match (&i.ssh, &i.public_ip) {
            (Some(ssh), _) if ssh.port != 22 => format!("{}:{}", ssh.host, ssh.port),
            (_, Some(ip)) => ip.clone(),
            _ => "-".to_string(),
        };
        let mut state = i.state.to_string();
        if let Some(reason) = &i.state_reason {
            state.push_str(&format!(" ({reason})"));
        }
        table.row([
            i.region.clone(),
            i.zone.clone().unwrap_or_else(|| "-".to_string()),
            i.id.to_string(),
            i.name.clone(),
            i.instance_type.clone(),
            i.lifecycle.to_string(),
            state,
            address,
            i.version.clone().unwrap_or_else(|| "-".to_string()),
            i.generation.map_or_else(|| "-".to_string(), |g| g.to_string()),
            short_age(i.launched_at),
            match stale(i) {
                Some(true) => "stale".to_string(),
                Some(false) => String::new(),
                None => "?".to_string(),
            },
        ]);
    }
    if table.is_empty() {
        printer.info(&format!("`{}` has no instances", config.deployment.name));
    } else {
        printer.data(&table.render()).map_err(Error::Output)?;
        printer.info(&format!(
            "{} instance(s): {}",
            instances.len(),
            engine::count_by(instances.iter().map(|i| i.state.as_str()))
        ));
    }
    Ok(0)
}

async fn create<P: Provider>(
    provider: &P,
    keys: &KeyStore,
    config: &Config,
    args: &CreateArgs,
    printer: &Printer,
) -> Result<u8> {
    let blueprint = Blueprint::render(config)?;
    let verification = launch_verification(keys, config, &blueprint, printer);
    let report = engine::create(
        provider,
        &verification,
        &blueprint,
        &create_options(args),
        printer,
    )
    .await?;
    if printer.is_json() {
        printer.json(&report).map_err(Error::Output)?;
    } else {
        print_created(&report, printer)?;
    }
    Ok(0)
}

/// Verification of a generation launched from `blueprint`: it must report
/// that blueprint's digest.
fn launch_verification<'a>(
    keys: &'a KeyStore,
    config: &Config,
    blueprint: &Blueprint,
    printer: &'a Printer,
) -> SshVerification<'a> {
    let expected = Expected {
        digest: blueprint.digest.clone(),
    };
    SshVerification::new(keys, verify_settings(config, None, false), expected, printer)
}

fn create_options(args: &CreateArgs) -> CreateOptions {
    CreateOptions {
        allow_dirty: args.allow_dirty,
        keep_on_failure: args.keep_on_failure,
        verify: !args.no_verify,
    }
}

fn print_created(report: &engine::CreateReport, printer: &Printer) -> Result<()> {
    let mut table = Table::new(["REGION", "ID", "NAME", "TYPE", "LIFECYCLE", "ADDRESS"]);
    for i in &report.instances {
        let address = match &i.ssh {
            Some(ssh) => format!("{}:{}", ssh.host, ssh.port),
            None => i.public_ip.clone().unwrap_or_else(|| "-".to_string()),
        };
        table.row([
            i.region.clone(),
            i.id.to_string(),
            i.name.clone(),
            i.instance_type.clone(),
            i.lifecycle.to_string(),
            address,
        ]);
    }
    printer.data(&table.render()).map_err(Error::Output)?;
    if let Some(verdict) = &report.verification {
        printer.data(&verdict.table).map_err(Error::Output)?;
    }
    printer.info(&format!(
        "created generation {} of `{}` ({}): {} instance(s){}",
        report.generation,
        report.deployment,
        report.version,
        report.instances.len(),
        if report.verification.is_some() {
            ", verified"
        } else {
            ", not verified (--no-verify)"
        }
    ));
    Ok(())
}

/// Asks on the terminal; `None` when stdin is not one (scripts must pass --yes).
fn terminal_confirm() -> Option<fn(&str) -> std::io::Result<bool>> {
    use std::io::IsTerminal;
    fn ask(question: &str) -> std::io::Result<bool> {
        eprint!("{question} [y/N] ");
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
    }
    std::io::stdin()
        .is_terminal()
        .then_some(ask as fn(&str) -> std::io::Result<bool>)
}

async fn plan<P: Provider>(provider: &P, config: &Config, args: &PlanArgs, printer: &Printer) -> Result<u8> {
    let blueprint = Blueprint::render(config)?;
    let plan = engine::plan(provider, &blueprint, args.strategy).await?;
    if printer.is_json() {
        printer.json(&plan).map_err(Error::Output)?;
        return Ok(0);
    }
    let money = |value: Option<f64>| value.map_or_else(|| "?".to_string(), |v| format!("${v:.4}"));
    let mut table = Table::new([
        "REGION",
        "DESTROY",
        "RUNNING",
        "CREATE",
        "TYPE",
        "LIFECYCLE",
        "PRICE/H",
        "COST/H",
    ]);
    for r in &plan.regions {
        table.row([
            r.region.clone(),
            r.destroy.to_string(),
            if r.destroy_digests.is_empty() {
                "-".to_string()
            } else {
                r.destroy_digests.join(",")
            },
            r.create.to_string(),
            r.instance_type.clone(),
            r.lifecycle.map_or_else(|| "-".to_string(), |l| l.to_string()),
            money(r.price_per_hour),
            money(r.cost_per_hour),
        ]);
    }
    printer.data(&table.render()).map_err(Error::Output)?;
    for r in &plan.regions {
        if let Some(note) = &r.price_note {
            printer.warn(&format!("{}: {note}", r.region));
        }
    }
    printer.info(&format!(
        "digest {} ({}): {}; strategy {}",
        blueprint.digest.short(),
        plan.version,
        match plan.change {
            "new" => "nothing is live, deploy would create",
            "unchanged" => "the live fleet already runs it; deploy would still replace every instance",
            _ => "changed against the live fleet",
        },
        match plan.strategy {
            engine::Strategy::Recreate => "recreate (destroy, then create)",
            engine::Strategy::BlueGreen => "blue-green (create and verify, then destroy)",
        }
    ));
    printer.info(&format!(
        "estimated cost {} per hour at current spot prices (billing may differ)",
        money(plan.cost_per_hour)
    ));
    Ok(0)
}

async fn deploy<P: Provider>(
    provider: &P,
    keys: &KeyStore,
    config: &Config,
    args: &DeployArgs,
    printer: &Printer,
) -> Result<u8> {
    let blueprint = Blueprint::render(config)?;
    let verification = launch_verification(keys, config, &blueprint, printer);
    let ask = terminal_confirm();
    let confirm: Option<engine::Confirm> = ask.as_ref().map(|f| f as engine::Confirm);
    let report = engine::deploy(
        provider,
        &verification,
        &blueprint,
        &engine::DeployOptions {
            strategy: args.strategy,
            create: create_options(&args.create),
            yes: args.yes,
        },
        confirm,
        printer,
    )
    .await?;
    if printer.is_json() {
        printer.json(&report).map_err(Error::Output)?;
    } else {
        print_created(&report.created, printer)?;
        if let Some(destroyed) = &report.destroyed {
            printer.info(&format!(
                "replaced {} instance(s) of the previous generation",
                destroyed.terminated.len()
            ));
        }
    }
    Ok(0)
}

async fn destroy<P: Provider>(
    provider: &P,
    keys: &KeyStore,
    config: &Config,
    args: &DestroyArgs,
    printer: &Printer,
) -> Result<u8> {
    // Destroy must work even when the blueprint no longer renders: it only
    // needs the key store, to forget the destroyed instances' host keys.
    let verification = SshVerification::cleanup_only(keys, verify_settings(config, None, false), printer);
    let options = DestroyOptions {
        yes: args.yes,
        dry_run: args.dry_run,
        wait: !args.no_wait,
    };
    let ask = terminal_confirm();
    let confirm: Option<engine::Confirm> = ask.as_ref().map(|f| f as engine::Confirm);
    let plan = engine::destroy(
        provider,
        &verification,
        &config.deployment.name,
        &options,
        confirm,
        printer,
    )
    .await?;
    if printer.is_json() {
        printer.json(&plan).map_err(Error::Output)?;
    } else if plan.dry_run && !plan.instances.is_empty() {
        let mut table = Table::new(["REGION", "ID", "NAME", "STATE"]);
        for i in &plan.instances {
            table.row([
                i.region.clone(),
                i.id.to_string(),
                i.name.clone(),
                i.state.to_string(),
            ]);
        }
        printer.data(&table.render()).map_err(Error::Output)?;
    }
    Ok(0)
}
