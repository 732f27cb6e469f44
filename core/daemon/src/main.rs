//! The `spindle` binary: command line, daemon wiring, scheduler, shutdown and telemetry.
//!
//! Exit codes: 0 success, 1 a command or job failed, 2 the configuration is invalid.

mod admin_wiring;
mod cli;
mod commands;
mod executor;
mod serve;
mod telemetry;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

use crate::cli::{
    Cli, Command, ConfigCommand, IdentityCommand, PluginCommand, ProfilesCommand, SegmentsCommand,
    SourcesCommand, StoreCommand, SyncsCommand,
};

/// How a command ended, mapped to the process exit code.
#[derive(Debug)]
pub enum Failure {
    /// The configuration has problems; they were printed.
    InvalidConfig,
    /// Anything else.
    Other(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(err: anyhow::Error) -> Self {
        Failure::Other(err)
    }
}

/// mimalloc instead of the system allocator: resolution and segment evaluation allocate many small,
/// short-lived values, where glibc's malloc spent about a third of the CPU time (measured with `perf` on
/// the identity benchmark).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format, &cli.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(dispatch(cli));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::InvalidConfig) => ExitCode::from(2),
        Err(Failure::Other(err)) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> Result<(), Failure> {
    let path = cli.config;
    match cli.command {
        Command::Config {
            command: ConfigCommand::Schema,
        } => commands::config::schema(),
        Command::Validate { check_connections } => {
            commands::validate::run(&path, check_connections).await
        }
        Command::Run { once } => commands::run::run(&path, once).await,
        Command::Demo { inbox } => commands::demo::demo(&path, inbox).await,
        Command::Store {
            command: StoreCommand::Backup { path: target },
        } => commands::store::backup(&path, &target).await,
        Command::Store {
            command:
                StoreCommand::Restore {
                    path: backup,
                    force,
                },
        } => commands::store::restore(&path, &backup, force).await,
        Command::Sources {
            command: SourcesCommand::List,
        } => commands::sources::list(&path).await,
        Command::Profiles {
            command: ProfilesCommand::Show { who },
        } => commands::profiles::show(&path, &who).await,
        Command::Profiles {
            command: ProfilesCommand::Explain { who },
        } => commands::profiles::explain(&path, &who).await,
        Command::Profiles {
            command: ProfilesCommand::Search { text, limit },
        } => commands::profiles::search(&path, &text, limit).await,
        Command::Identity {
            command: IdentityCommand::Resolve,
        } => commands::profiles::resolve(&path).await,
        Command::Identity {
            command: IdentityCommand::Rebuild,
        } => commands::profiles::rebuild(&path).await,
        Command::Segments {
            command: SegmentsCommand::Preview { segment, sample },
        } => commands::syncs::preview(&path, &segment, sample).await,
        Command::Syncs {
            command: SyncsCommand::List,
        } => commands::syncs::list(&path).await,
        Command::Syncs {
            command: SyncsCommand::Run { id, dry_run },
        } => commands::syncs::run(&path, &id, dry_run).await,
        Command::Syncs {
            command: SyncsCommand::History { id },
        } => commands::syncs::history(&path, &id).await,
        Command::Syncs {
            command: SyncsCommand::Replay { id },
        } => commands::syncs::replay(&path, &id).await,
        Command::Plugin {
            command: PluginCommand::New { name, workspace },
        } => commands::plugin::new(&workspace, &name),
        Command::Plugin {
            command: PluginCommand::Build { names, workspace },
        } => commands::plugin::build(&workspace, &names),
        Command::Plugin {
            command: PluginCommand::Inspect { file },
        } => commands::plugin::inspect(&file).await,
        Command::Plugin {
            command: PluginCommand::Test { plugin, fixture },
        } => commands::plugin::test(&plugin, &fixture).await,
        Command::Sources {
            command: SourcesCommand::Sync { id, full },
        } => commands::sources::sync(&path, &id, full).await,
    }
}

/// Loads the configuration, printing every problem to standard error when it is invalid.
pub fn load_config(path: &std::path::Path) -> Result<spindle_config::Config, Failure> {
    spindle_config::load(path).map_err(|err| {
        eprint!("{}", err.render(std::io::stderr().is_terminal()));
        Failure::InvalidConfig
    })
}
