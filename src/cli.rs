//! The command line, as clap types only. Nothing here does work: the
//! `settings` module turns a parsed `Cli` into the options commands take,
//! and commands never see these types. The value enums below mirror domain
//! enums (`ProviderKind`, `Accel`, `Strategy`), which stay free of clap;
//! debug sections take their names from `Section` itself.

use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use crate::exit::ExitStatus;
use crate::provider::SshEndpoint;
use crate::verify::Section;

#[derive(Debug, Parser)]
#[command(
    name = "respot",
    version,
    about = "Run fleets of EC2 spot instances the immutable way: never change a live \
             instance, recreate it from a versioned blueprint, then prove it read-only over SSH.",
    after_help = ExitStatus::help_footer()
)]
pub struct Cli {
    /// The blueprint settings file [default: respot.toml in the current directory]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Output for scripts (json) or people (table)
    #[arg(long, global = true, value_enum, default_value_t = OutputArg::Table)]
    pub output: OutputArg,
    /// More logs on stderr (-v info, -vv debug); RUST_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors and warnings on stderr
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Run against this provider instead of `deployment.provider`
    #[arg(long, global = true, value_enum)]
    pub provider: Option<ProviderArg>,
    #[command(flatten)]
    pub aws: AwsArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the rendered user-data (stdout); digest, version and sizes go to stderr
    Render(RenderArgs),
    /// Create a new blueprint folder from the embedded sample
    Init(InitArgs),
    /// List the deployment's instances, marking those stale against the current render
    List(ListArgs),
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
    /// Every create, deploy, rollback and destroy: who, when, commit, digest, result
    History(HistoryArgs),
    /// Send all traffic back to the previous generation, then destroy the newer one
    Rollback(RollbackArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions(CompletionsArgs),
    /// Print the man page (roff), generated from this help
    Man,
    /// Bring the live generation back to its count from the same digest, after spot reclaims
    Heal(HealArgs),
    /// Remove a stale deployment lock (a killed create, deploy or destroy), after a confirmation
    Unlock(UnlockArgs),
    /// Print the minimal IAM policy (JSON) this deployment needs on AWS
    IamPolicy,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Every respot-tagged instance and resource, grouped by deployment, with what is left
    /// without a live instance
    #[arg(long)]
    pub all_deployments: bool,
}

#[derive(Debug, Args)]
pub struct HealArgs {
    /// Wait for running replacements but skip SSH verification
    #[arg(long)]
    pub no_verify: bool,
    /// Check again every INTERVAL (e.g. 60s, 5m) until Ctrl-C; one line per check and per
    /// replacement
    #[arg(long, value_name = "INTERVAL", value_parser = parse_interval)]
    pub watch: Option<std::time::Duration>,
}

/// An interval of at least one second, in humantime's syntax (`90s`, `5m`).
fn parse_interval(text: &str) -> Result<std::time::Duration, String> {
    let interval = humantime::parse_duration(text).map_err(|err| format!("`{text}`: {err}"))?;
    if interval < std::time::Duration::from_secs(1) {
        return Err(format!("`{text}`: the interval must be at least 1s"));
    }
    Ok(interval)
}

/// A deployment name as `respot.toml` allows it, so it can never name a path.
fn deployment_name(text: &str) -> Result<String, String> {
    if crate::config::valid_deployment_name(text) {
        Ok(text.to_string())
    } else {
        Err(format!(
            "`{text}`: expected 1 to 40 characters of [a-z0-9-], not starting or ending with `-`"
        ))
    }
}

#[derive(Debug, Args)]
pub struct UnlockArgs {
    /// Do not ask for confirmation
    #[arg(long, short = 'y')]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// The completion script for `shell`, generated from these clap types.
pub fn completion_script(shell: clap_complete::Shell) -> String {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "respot", &mut script);
    String::from_utf8_lossy(&script).into_owned()
}

/// The man page, in roff, generated from these clap types.
pub fn man_page() -> String {
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut page)
        .expect("rendering into a Vec cannot fail");
    String::from_utf8_lossy(&page).into_owned()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputArg {
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProviderArg {
    Local,
    Aws,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AccelArg {
    /// KVM where it really works, TCG otherwise.
    Auto,
    Kvm,
    Tcg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StrategyArg {
    /// Destroy the live generation, then create the new one (downtime,
    /// never two generations at once).
    Recreate,
    /// Create and verify the new generation next to the old one, then
    /// destroy the old one; a failed new generation is rolled back and the
    /// old one keeps running. With `[traffic]`: shift 100 % behind the
    /// front door, hold under the guard, then drain the old one.
    BlueGreen,
    /// Needs `[traffic]`: shift in steps (`traffic.steps`), guarded at each.
    Canary,
    /// Needs `[traffic]`: replace `traffic.batch` instances per region at a time.
    Rolling,
}

/// AWS-only choices; the local provider ignores them.
#[derive(Debug, Args)]
pub struct AwsArgs {
    /// AWS: the named profile to use instead of AWS_PROFILE (SSO and credential_process work)
    #[arg(long, global = true, value_name = "NAME")]
    pub profile: Option<String>,
    /// AWS: work in this region only
    #[arg(long, global = true, value_name = "REGION")]
    pub region: Option<String>,
    /// AWS: list, destroy, verify or debug in every region enabled for the account
    #[arg(long, global = true, conflicts_with = "region")]
    pub all_regions: bool,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Create even though the blueprint's git tree has uncommitted changes
    #[arg(long)]
    pub allow_dirty: bool,
    /// On failure keep the instances (still tagged) for `respot debug`
    #[arg(long)]
    pub keep_on_failure: bool,
    /// Wait for running instances but skip SSH verification
    #[arg(long)]
    pub no_verify: bool,
    /// Local provider: CPU acceleration [default: from respot.toml, auto]
    #[arg(long, value_enum)]
    pub accel: Option<AccelArg>,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The strategy `deploy` would use
    #[arg(long, value_enum, default_value_t = StrategyArg::Recreate)]
    pub strategy: StrategyArg,
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// recreate: destroy, then create; blue-green: create and verify, then destroy the old
    #[arg(long, value_enum, default_value_t = StrategyArg::Recreate)]
    pub strategy: StrategyArg,
    /// Do not ask before replacing live instances
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Deploy the blueprint as it was at this git commit, branch or tag
    /// (its digest must match the one recorded when it was first deployed)
    #[arg(long = "ref", value_name = "GIT-REF")]
    pub git_ref: Option<String>,
    /// With `[traffic]`: keep the old generation alive, out of the door, this
    /// long (e.g. 30m) so `respot rollback` stays instant; the next deploy or
    /// rollback reaps it
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub keep_old: Option<std::time::Duration>,
    #[command(flatten)]
    pub create: CreateArgs,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Only the newest N records
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Do not ask before terminating the newer generation
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Forward path (the previous commit deployed again): skip SSH verification
    #[arg(long)]
    pub no_verify: bool,
}

#[derive(Debug, Args)]
pub struct DestroyArgs {
    /// Do not ask for confirmation
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Show what would be destroyed, change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Return once termination has started
    #[arg(long)]
    pub no_wait: bool,
    /// Destroy another deployment's resources, by its exact name (`respot list
    /// --all-deployments` shows them) [default: the one in respot.toml]
    #[arg(long, value_name = "NAME", value_parser = deployment_name)]
    pub deployment: Option<String>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Only these live instances, by id, name or IP (repeatable) [default: all]
    #[arg(long = "instance", value_name = "ID")]
    pub instances: Vec<String>,
    /// Verify this SSH endpoint, HOST:PORT, as an instance of the deployment
    /// without asking the provider (repeatable)
    #[arg(long = "target", value_name = "HOST:PORT", value_parser = SshEndpoint::parse, conflicts_with = "instances")]
    pub targets: Vec<SshEndpoint>,
    /// Fail on warnings too (cloud-init degraded, a check the instance cannot answer)
    #[arg(long)]
    pub strict: bool,
    /// Seconds to wait for each instance, boot included [default: verify.timeout_secs]
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: Option<u64>,
}

#[derive(Debug, Args)]
pub struct DebugArgs {
    /// The instance: its id, name, IP, or an SSH endpoint HOST:PORT
    #[arg(value_name = "INSTANCE")]
    pub target: String,
    /// Only these parts of the report (repeatable) [default: all]
    #[arg(long = "section", value_name = "SECTION", value_parser = section_names())]
    pub sections: Vec<String>,
    /// Seconds to wait for the instance [default: verify.timeout_secs]
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: Option<u64>,
}

/// The debug report's part names, straight from `Section`.
fn section_names() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(Section::ALL.iter().map(|s| s.name()))
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// Also validate the user-data with `cloud-init schema`
    #[arg(long)]
    pub check: bool,
    /// Also write the packed user-data (raw or gzip), exactly as a launch
    /// would send it with sample key material, to this file
    #[arg(long, value_name = "PATH")]
    pub user_data_out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Where to create the blueprint
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// The deployment name written into respot.toml
    #[arg(long, default_value = "hello")]
    pub name: String,
}
