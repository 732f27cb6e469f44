//! Command-line interface.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Spindle: a customer data platform in one binary.
#[derive(Debug, Parser)]
#[command(name = "spindle", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// The configuration file.
    #[arg(long, short, global = true, env = "SPINDLE_CONFIG", default_value = spindle_config::DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,

    /// Log line format on standard error.
    #[arg(long, global = true, value_enum, env = "SPINDLE_LOG_FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter, e.g. `info` or `spindle=debug,sqlx=warn` (tracing's EnvFilter syntax).
    #[arg(long, global = true, env = "SPINDLE_LOG", default_value = "info")]
    pub log: String,

    #[command(subcommand)]
    pub command: Command,
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: schedule sources until SIGINT/SIGTERM.
    Run {
        /// Run every job once, then exit (for cron-driven installs and tests).
        #[arg(long)]
        once: bool,
    },
    /// Run the example end to end: build missing plugins, start a local inbox standing in for the
    /// destination, run every source and sync once, and print what happened.
    Demo {
        /// Where the inbox listens; the example destination posts to 127.0.0.1:8787.
        #[arg(long, default_value = "127.0.0.1:8787")]
        inbox: std::net::SocketAddr,
    },
    /// Check the configuration and report every problem.
    Validate {
        /// Also probe the store and each source, read-only.
        #[arg(long)]
        check_connections: bool,
    },
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Store maintenance.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Source connectors.
    Sources {
        #[command(subcommand)]
        command: SourcesCommand,
    },
    /// Customer profiles.
    Profiles {
        #[command(subcommand)]
        command: ProfilesCommand,
    },
    /// Identity resolution.
    Identity {
        #[command(subcommand)]
        command: IdentityCommand,
    },
    /// Segments (audiences).
    Segments {
        #[command(subcommand)]
        command: SegmentsCommand,
    },
    /// Audience syncs.
    Syncs {
        #[command(subcommand)]
        command: SyncsCommand,
    },
    /// Destination plugins: create, build, inspect, test.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum SegmentsCommand {
    /// Count and sample the members of a configured segment or of an expression.
    Preview {
        /// A segment id, or an expression such as `total_spent > 500 and consent.email`.
        segment: String,
        /// How many members to show.
        #[arg(long, default_value_t = 10)]
        sample: usize,
    },
}

#[derive(Debug, Subcommand)]
pub enum SyncsCommand {
    /// List syncs with their last run, pending changes and dead letters.
    List,
    /// Run a sync now.
    Run {
        /// The sync id.
        id: String,
        /// Show the changes it would send, as a table, and send nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// A sync's recent runs.
    History {
        /// The sync id.
        id: String,
    },
    /// Give a sync's dead letters another chance, then run it.
    Replay {
        /// The sync id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Create `plugins/<name>` from the template and add it to the plugin workspace.
    New {
        /// The plugin's name (lowercase, `-` allowed).
        name: String,
        /// The plugin workspace.
        #[arg(long, default_value = "plugins")]
        workspace: PathBuf,
    },
    /// Build plugins for `wasm32-wasip2` (release, size-optimised).
    Build {
        /// Plugins to build; all when none are named.
        names: Vec<String>,
        /// The plugin workspace.
        #[arg(long, default_value = "plugins")]
        workspace: PathBuf,
    },
    /// Show a component's world, version, imports and config schema.
    Inspect {
        /// The `.wasm` file.
        file: PathBuf,
    },
    /// Run a plugin against recorded request/response pairs and print every HTTP exchange.
    Test {
        /// A plugin name or `.wasm` path.
        plugin: String,
        /// A folder with `batch.json`, `exchanges.json` and optionally `secrets.json`.
        #[arg(long)]
        fixture: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProfilesCommand {
    /// The 360° view: traits, computed traits, consent, identifiers, sources and timeline.
    Show {
        /// A profile id, an e-mail, a phone number, or `type:value` (e.g. `crm_id:1001`).
        who: String,
    },
    /// Why a profile's records are one customer: its records, the links and their evidence.
    Explain {
        /// A profile id, an e-mail, a phone number, or `type:value`.
        who: String,
    },
    /// Profiles whose names, e-mails, phones or ids contain TEXT.
    Search {
        /// Text to look for (case-insensitive).
        text: String,
        /// Most profiles to list.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum IdentityCommand {
    /// Resolve records changed since the last resolution (the daemon does this after each source run).
    Resolve,
    /// Resolve every record again from scratch with the current rules; report profiles split, merged, unchanged.
    Rebuild,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the JSON Schema of connectors.toml (for editor completion and checks).
    Schema,
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Write a consistent copy of the embedded SQLite store to PATH (safe while the daemon runs).
    Backup {
        /// Where to write the backup; must not exist.
        path: PathBuf,
    },
    /// Replace the embedded SQLite store with the backup at PATH (the daemon must be stopped).
    Restore {
        /// The backup file.
        path: PathBuf,
        /// Replace an existing store.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SourcesCommand {
    /// List sources with their schedule, last run, cursor and record count.
    List,
    /// Pull one source now.
    Sync {
        /// The source id, as in `[sources.<id>]`.
        id: String,
        /// Forget the cursor and read everything again (stored records de-duplicate the re-read).
        #[arg(long)]
        full: bool,
    },
}
