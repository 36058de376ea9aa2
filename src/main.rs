//! CLI wiring: parse flags, load the blueprint once, run one command, map
//! the outcome to an exit code. Commands live in the library modules.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use respot::config::{Accel, Config, ProviderKind};
use respot::engine::{self, CreateOptions, DestroyOptions, Verdict, Verification};
use respot::error::{Error, Result, exit_code_help};
use respot::output::{Format, Printer, Table};
use respot::provider::aws::{AwsOptions, AwsProvider};
use respot::provider::local::LocalProvider;
use respot::provider::{AnyProvider, Instance, Provider};
use respot::scaffold;
use respot::template::{self, Blueprint, InstanceFile, LaunchMaterial};

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
    /// Launch a fresh generation, wait for it, verify it; roll back on failure
    Create(CreateArgs),
    /// Terminate every instance of the deployment and clean up what respot created
    Destroy(DestroyArgs),
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
        Command::List | Command::Create(_) | Command::Destroy(_) => {
            let config = load_config(cli.config.as_deref())?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| Error::Usage(format!("cannot start the async runtime: {e}")))?;
            runtime.block_on(run_async(cli, &config, printer))
        }
    }
}

async fn run_async(cli: &Cli, config: &Config, printer: &Printer) -> Result<u8> {
    let accel = match &cli.command {
        Command::Create(args) => args.accel,
        _ => None,
    };
    let provider = connect(cli, config, accel).await?;
    let verification = NoVerification;
    match &cli.command {
        Command::List => list(&provider, config, printer).await,
        Command::Create(args) => create(&provider, &verification, config, args, printer).await,
        Command::Destroy(args) => destroy(&provider, &verification, config, args, printer).await,
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

/// Until SSH verification is wired in, only `--no-verify` creates exist:
/// no verification key or pinned host key goes into the user-data.
struct NoVerification;

impl Verification for NoVerification {
    fn launch_material(&self, generation: u64) -> std::result::Result<LaunchMaterial, String> {
        Ok(LaunchMaterial {
            generation,
            ..LaunchMaterial::default()
        })
    }

    async fn verify(&self, _instances: &[Instance]) -> Verdict {
        Verdict {
            passed: false,
            summary: "SSH verification is not available in this build; pass --no-verify".to_string(),
            report: serde_json::Value::Null,
            table: String::new(),
        }
    }

    fn forget(&self, _instances: &[Instance]) {}
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
            engine::count_by(instances.iter().map(|i| match i.state.to_string().as_str() {
                "running" => "running",
                "pending" => "pending",
                "terminated" => "terminated",
                "dead" => "dead",
                "shutting-down" => "shutting-down",
                _ => "other",
            }))
        ));
    }
    Ok(0)
}

async fn create<P: Provider, V: Verification>(
    provider: &P,
    verification: &V,
    config: &Config,
    args: &CreateArgs,
    printer: &Printer,
) -> Result<u8> {
    let blueprint = Blueprint::render(config)?;
    let options = CreateOptions {
        allow_dirty: args.allow_dirty,
        keep_on_failure: args.keep_on_failure,
        verify: !args.no_verify,
    };
    let report = engine::create(provider, verification, &blueprint, &options, printer).await?;
    if printer.is_json() {
        printer.json(&report).map_err(Error::Output)?;
    } else {
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
    }
    Ok(0)
}

async fn destroy<P: Provider, V: Verification>(
    provider: &P,
    verification: &V,
    config: &Config,
    args: &DestroyArgs,
    printer: &Printer,
) -> Result<u8> {
    use std::io::IsTerminal;
    let options = DestroyOptions {
        yes: args.yes,
        dry_run: args.dry_run,
        wait: !args.no_wait,
    };
    let ask = |question: &str| -> std::io::Result<bool> {
        eprint!("{question} [y/N] ");
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
    };
    let confirm: Option<engine::Confirm> = if std::io::stdin().is_terminal() {
        Some(&ask)
    } else {
        None
    };
    let plan = engine::destroy(
        provider,
        verification,
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
