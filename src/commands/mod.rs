//! One file per command, the way uv lays them out. Each command takes its
//! resolved options (never clap types: `settings` maps the command line to
//! them), does its work through the library, prints its own report through
//! the `Printer`, and returns an `ExitStatus`.
//!
//! This module holds the one dispatcher and what several commands share:
//! loading the blueprint settings and connecting to the provider.

mod create;
mod debug;
mod deploy;
mod destroy;
mod door;
mod generated;
mod heal;
mod history;
mod iam_policy;
mod images;
mod init;
mod list;
mod locking;
mod plan;
mod render;
mod rollback;
mod select;
mod unlock;
mod verification;
mod verify;

use std::cell::OnceCell;
use std::path::{Path, PathBuf};

pub use crate::exit::ExitStatus;
pub use create::CreateCommand;
pub use debug::DebugOptions;
pub use deploy::DeployCommand;
pub use destroy::DestroyCommand;
pub use generated::Generated;
pub use heal::HealCommand;
pub use history::HistoryOptions;
pub use init::InitOptions;
pub use list::ListOptions;
pub use render::RenderOptions;
pub use rollback::RollbackOptions;
pub use unlock::UnlockOptions;
pub use verify::VerifyOptions;

use crate::config::{Accel, Config, ProviderKind};
use crate::engine::Strategy;
use crate::error::{Error, Result};
use crate::keys::KeyStore;
use crate::output::Printer;
use crate::paths::Paths;
use crate::provider::AnyProvider;
use crate::provider::aws::{AwsOptions, AwsProvider};
use crate::provider::local::LocalProvider;

/// Which provider to use, and how; resolved from flags.
#[derive(Debug, Clone, Default)]
pub struct ProviderOptions {
    /// `--provider`, overriding `deployment.provider`.
    pub kind: Option<ProviderKind>,
    /// `--accel`, for commands that launch local VMs.
    pub accel: Option<Accel>,
    pub aws: AwsOptions,
}

/// A command with everything it needs from the command line.
#[derive(Debug)]
pub enum CommandOptions {
    Init(InitOptions),
    Render(RenderOptions),
    List(ListOptions),
    Plan(Strategy),
    Create(CreateCommand),
    Destroy(DestroyCommand),
    Deploy(DeployCommand),
    Verify(VerifyOptions),
    Debug(DebugOptions),
    History(HistoryOptions),
    Rollback(RollbackOptions),
    /// Text generated from the command line itself (completions, man page).
    Print(Generated),
    Heal(HealCommand),
    Unlock(UnlockOptions),
    IamPolicy,
}

/// One run of respot: the command and the options every command shares.
#[derive(Debug)]
pub struct Invocation {
    /// `--config`: the blueprint settings file.
    pub config: Option<PathBuf>,
    pub provider: ProviderOptions,
    pub command: CommandOptions,
}

/// The one dispatcher.
pub async fn run(invocation: Invocation, printer: &Printer) -> Result<ExitStatus> {
    let paths = Paths::from_env();
    let context = Context {
        config_path: invocation.config,
        config: OnceCell::new(),
        provider: invocation.provider,
        paths,
        printer,
    };
    match &invocation.command {
        CommandOptions::Init(options) => init::init(options, printer),
        CommandOptions::Render(options) => render::render(&context, options),
        CommandOptions::List(options) => list::list(&context, options).await,
        CommandOptions::Plan(strategy) => plan::plan(&context, *strategy).await,
        CommandOptions::Create(options) => create::create(&context, options).await,
        CommandOptions::Destroy(options) => destroy::destroy(&context, options).await,
        CommandOptions::Deploy(options) => deploy::deploy(&context, options).await,
        CommandOptions::Verify(options) => verify::verify(&context, options).await,
        CommandOptions::Debug(options) => debug::debug(&context, options).await,
        CommandOptions::History(options) => history::history(&context, options),
        CommandOptions::Rollback(options) => rollback::rollback(&context, options).await,
        CommandOptions::Print(generated) => generated::print(generated, printer),
        CommandOptions::Heal(options) => heal::heal(&context, options).await,
        CommandOptions::Unlock(options) => unlock::unlock(&context, options).await,
        CommandOptions::IamPolicy => iam_policy::iam_policy(&context),
    }
}

/// What the commands share: the blueprint settings (loaded on first use,
/// so `init` needs none), the provider choice, paths and the printer.
struct Context<'a> {
    config_path: Option<PathBuf>,
    config: OnceCell<Config>,
    provider: ProviderOptions,
    paths: Paths,
    printer: &'a Printer,
}

impl Context<'_> {
    /// `respot.toml` (or `--config`), loaded and validated once.
    fn config(&self) -> Result<&Config> {
        if let Some(config) = self.config.get() {
            return Ok(config);
        }
        let loaded = load_config(self.config_path.as_deref())?;
        Ok(self.config.get_or_init(|| loaded))
    }

    /// The provider the deployment runs on (or `--provider`). Connecting
    /// checks that it can be used at all (credentials, QEMU, the image) and
    /// changes nothing.
    async fn connect(&self) -> Result<AnyProvider> {
        let config = self.config()?;
        match self.provider.kind.unwrap_or(config.deployment.provider) {
            ProviderKind::Local => Ok(AnyProvider::Local(LocalProvider::new(
                config,
                self.paths.vms_root()?,
                self.paths.image_dir()?,
                self.provider.accel,
            )?)),
            ProviderKind::Aws => Ok(AnyProvider::Aws(Box::new(
                AwsProvider::new(config, &self.provider.aws).await?,
            ))),
        }
    }

    /// The operator's key store for this deployment. Opening writes nothing.
    fn keys(&self) -> Result<KeyStore> {
        Ok(KeyStore::open(&self.paths, &self.config()?.deployment.name)?)
    }
}

fn load_config(explicit: Option<&Path>) -> Result<Config> {
    let cwd = std::env::current_dir().map_err(Error::CurrentDir)?;
    let path = Config::locate(explicit, &cwd)?;
    Ok(Config::load(&path)?)
}
