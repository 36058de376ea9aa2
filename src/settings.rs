//! The command line resolved into what commands take, once, the way uv's
//! `settings.rs` does. The only module that knows both `cli` and
//! `commands`; `commands` never imports `cli`, so no circle can form.
//! Rules that span commands (which of them accept `--all-regions`) live
//! here, where every command is in view.

use crate::cli::{
    AccelArg, AwsArgs, Cli, Command, CreateArgs, DebugArgs, OutputArg, ProviderArg, StrategyArg, VerifyArgs,
};
use crate::commands::{
    CommandOptions, CreateCommand, DebugOptions, DeployCommand, Generated, HistoryOptions, InitOptions,
    Invocation, ProviderOptions, RenderOptions, RollbackOptions, UnlockOptions, VerifyOptions,
};
use crate::commands::{DestroyCommand, HealCommand, ListOptions};
use crate::config::{Accel, ProviderKind};
use crate::engine::{CreateOptions, DeployOptions, DestroyOptions, HealOptions, Strategy};
use crate::error::{Error, Result};
use crate::output::{Format, Printer};
use crate::provider::aws::AwsOptions;
use crate::verify::Section;

/// The printer the flags ask for.
pub fn printer(cli: &Cli) -> Printer {
    let format = match cli.output {
        OutputArg::Table => Format::Table,
        OutputArg::Json => Format::Json,
    };
    Printer::new(format, cli.quiet, cli.verbose)
}

/// Resolves the parsed command line; refuses flag combinations that clap
/// cannot see, before anything is touched.
pub fn resolve(cli: Cli) -> Result<Invocation> {
    if cli.aws.all_regions
        && let Some(command) = refuses_all_regions(&cli.command)
    {
        return Err(Error::AllRegions { command });
    }
    let accel = match &cli.command {
        Command::Create(args) => args.accel,
        Command::Deploy(args) => args.create.accel,
        _ => None,
    };
    let provider = ProviderOptions {
        kind: cli.provider.map(provider_kind),
        accel: accel.map(accel_of),
        aws: aws_options(&cli.aws),
    };
    Ok(Invocation {
        config: cli.config,
        provider,
        command: command_options(cli.command),
    })
}

/// `--all-regions` widens the search for *existing* instances; a command
/// that launches or plans works in `aws.regions`. Returns the name of a
/// command that refuses it.
fn refuses_all_regions(command: &Command) -> Option<&'static str> {
    match command {
        Command::List(_) | Command::Destroy(_) | Command::Verify(_) | Command::Debug(_) => None,
        Command::Heal(_) => Some("heal"),
        Command::Render(_) => Some("render"),
        Command::Init(_) => Some("init"),
        Command::Plan(_) => Some("plan"),
        Command::Completions(_) => Some("completions"),
        Command::Man => Some("man"),
        Command::Create(_) => Some("create"),
        Command::Deploy(_) => Some("deploy"),
        Command::History(_) => Some("history"),
        Command::Rollback(_) => Some("rollback"),
        Command::Unlock(_) => Some("unlock"),
        Command::IamPolicy => Some("iam-policy"),
    }
}

fn command_options(command: Command) -> CommandOptions {
    match command {
        Command::Init(args) => CommandOptions::Init(InitOptions {
            dir: args.dir,
            name: args.name,
        }),
        Command::Render(args) => CommandOptions::Render(RenderOptions {
            check: args.check,
            user_data_out: args.user_data_out,
        }),
        Command::List(args) => CommandOptions::List(ListOptions {
            all_deployments: args.all_deployments,
        }),
        Command::Plan(args) => CommandOptions::Plan(strategy(args.strategy)),
        Command::Create(args) => CommandOptions::Create(CreateCommand {
            create: create_options(&args),
        }),
        Command::Destroy(args) => CommandOptions::Destroy(DestroyCommand {
            destroy: DestroyOptions {
                yes: args.yes,
                dry_run: args.dry_run,
                wait: !args.no_wait,
            },
            deployment: args.deployment,
        }),
        Command::Deploy(args) => CommandOptions::Deploy(DeployCommand {
            deploy: DeployOptions {
                strategy: strategy(args.strategy),
                create: create_options(&args.create),
                yes: args.yes,
                keep_old: args.keep_old,
            },
            git_ref: args.git_ref,
        }),
        Command::Verify(args) => CommandOptions::Verify(verify_options(args)),
        Command::Completions(args) => CommandOptions::Print(Generated {
            what: "completions",
            text: crate::cli::completion_script(args.shell),
        }),
        Command::Man => CommandOptions::Print(Generated {
            what: "man",
            text: crate::cli::man_page(),
        }),
        Command::Debug(args) => CommandOptions::Debug(debug_options(args)),
        Command::History(args) => CommandOptions::History(HistoryOptions { limit: args.limit }),
        Command::Rollback(args) => CommandOptions::Rollback(RollbackOptions {
            yes: args.yes,
            verify: !args.no_verify,
        }),
        Command::Heal(args) => CommandOptions::Heal(HealCommand {
            heal: HealOptions {
                verify: !args.no_verify,
            },
            watch: args.watch,
        }),
        Command::Unlock(args) => CommandOptions::Unlock(UnlockOptions { yes: args.yes }),
        Command::IamPolicy => CommandOptions::IamPolicy,
    }
}

fn create_options(args: &CreateArgs) -> CreateOptions {
    CreateOptions {
        allow_dirty: args.allow_dirty,
        keep_on_failure: args.keep_on_failure,
        verify: !args.no_verify,
    }
}

fn verify_options(args: VerifyArgs) -> VerifyOptions {
    VerifyOptions {
        instances: args.instances,
        targets: args.targets,
        strict: args.strict,
        timeout: args.timeout,
    }
}

fn debug_options(args: DebugArgs) -> DebugOptions {
    // clap accepts only `Section` names, so every name maps.
    let mut sections: Vec<Section> = args
        .sections
        .iter()
        .filter_map(|name| Section::from_name(name))
        .collect();
    sections.sort();
    sections.dedup();
    DebugOptions {
        target: args.target,
        sections,
        timeout: args.timeout,
    }
}

fn aws_options(args: &AwsArgs) -> AwsOptions {
    AwsOptions {
        profile: args.profile.clone(),
        region: args.region.clone(),
        all_regions: args.all_regions,
    }
}

fn provider_kind(arg: ProviderArg) -> ProviderKind {
    match arg {
        ProviderArg::Local => ProviderKind::Local,
        ProviderArg::Aws => ProviderKind::Aws,
    }
}

fn accel_of(arg: AccelArg) -> Accel {
    match arg {
        AccelArg::Auto => Accel::Auto,
        AccelArg::Kvm => Accel::Kvm,
        AccelArg::Tcg => Accel::Tcg,
    }
}

fn strategy(arg: StrategyArg) -> Strategy {
    match arg {
        StrategyArg::Recreate => Strategy::Recreate,
        StrategyArg::BlueGreen => Strategy::BlueGreen,
        StrategyArg::Canary => Strategy::Canary,
        StrategyArg::Rolling => Strategy::Rolling,
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn resolved(args: &[&str]) -> Result<Invocation> {
        resolve(Cli::try_parse_from(args).expect("valid flags"))
    }

    #[test]
    fn all_regions_is_refused_by_commands_that_launch_or_plan() {
        let cases: &[(&[&str], Option<&str>)] = &[
            (&["respot", "list", "--all-regions"], None),
            (&["respot", "destroy", "--all-regions"], None),
            (&["respot", "verify", "--all-regions"], None),
            (&["respot", "debug", "i-1", "--all-regions"], None),
            (&["respot", "create", "--all-regions"], Some("create")),
            (&["respot", "deploy", "--all-regions"], Some("deploy")),
            (&["respot", "plan", "--all-regions"], Some("plan")),
            (&["respot", "render", "--all-regions"], Some("render")),
        ];
        for (args, refused_by) in cases {
            match (resolved(args), refused_by) {
                (Ok(_), None) => {}
                (Err(Error::AllRegions { command }), Some(want)) => assert_eq!(command, *want, "{args:?}"),
                (other, want) => panic!("{args:?}: want refusal by {want:?}, got {other:?}"),
            }
        }
        let err = resolved(&["respot", "create", "--all-regions"]).unwrap_err();
        assert!(
            err.to_string()
                .contains("`list`, `destroy`, `verify` and `debug`"),
            "{err}"
        );
        assert_eq!(err.exit_status().code(), 2);
    }

    #[test]
    fn flags_become_options() {
        let invocation = resolved(&[
            "respot",
            "deploy",
            "--strategy",
            "blue-green",
            "--yes",
            "--no-verify",
            "--accel",
            "tcg",
            "--provider",
            "local",
        ])
        .unwrap();
        assert_eq!(invocation.provider.kind, Some(ProviderKind::Local));
        assert_eq!(invocation.provider.accel, Some(Accel::Tcg));
        let CommandOptions::Deploy(deploy) = invocation.command else {
            panic!("want deploy, got {:?}", invocation.command);
        };
        assert_eq!(deploy.deploy.strategy, Strategy::BlueGreen);
        assert!(deploy.deploy.yes && !deploy.deploy.create.verify);

        let CommandOptions::Debug(debug) = resolved(&[
            "respot",
            "debug",
            "x",
            "--section",
            "units",
            "--section",
            "cloud-init",
            "--section",
            "units",
        ])
        .unwrap()
        .command
        else {
            panic!("want debug");
        };
        assert_eq!(debug.sections, vec![Section::CloudInit, Section::Units]);
    }

    #[test]
    fn bad_targets_are_refused_by_the_parser() {
        for bad in ["nohost", "-oProxyCommand=x:22", "h:0", "h:99999", ":22"] {
            assert!(
                Cli::try_parse_from(["respot", "verify", "--target", bad]).is_err(),
                "{bad}"
            );
        }
        let cli = Cli::try_parse_from(["respot", "verify", "--target", "[::1]:2222"]).unwrap();
        let Command::Verify(args) = cli.command else {
            panic!("want verify");
        };
        assert_eq!(args.targets[0].to_string(), "[::1]:2222");
    }
}
