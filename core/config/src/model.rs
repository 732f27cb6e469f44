//! The validated configuration: what the rest of Spindle reads. Built only by [`crate::load`].
//!
//! Everything here has been checked: references between sections resolve, schedules parse, secrets are
//! resolved and held as [`SecretString`] (whose `Debug` is redacted).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use spindle_scheduler::Schedule;

pub use crate::raw::{Role, SyncMode};
use crate::store_url::StoreUrl;

/// A whole, valid `connectors.toml`.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    /// `[store]`.
    pub store: StoreConfig,
    /// `[server]`.
    pub server: ServerConfig,
    /// `[identity]`.
    pub identity: IdentityConfig,
    /// `[profiles]`.
    pub profiles: ProfilesConfig,
    /// `[sources.<id>]`, by id.
    pub sources: BTreeMap<String, SourceConfig>,
    /// `[destinations.<id>]`, by id.
    pub destinations: BTreeMap<String, DestinationConfig>,
    /// `[segments.<id>]`, by id.
    pub segments: BTreeMap<String, SegmentConfig>,
    /// `[syncs.<id>]`, by id.
    pub syncs: BTreeMap<String, SyncConfig>,
}

/// `[store]`.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Where the store is.
    pub url: StoreUrl,
    /// Most pooled connections.
    pub max_connections: u32,
    /// SQLite lock wait.
    pub busy_timeout: Duration,
}

/// An admin API token.
#[derive(Debug, Clone)]
pub struct AdminToken {
    /// Name shown in the audit log.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// The token itself.
    pub token: SecretString,
}

/// A collector write key and the source its events are stored under.
#[derive(Debug, Clone)]
pub struct WriteKey {
    /// Source id of the events sent with this key.
    pub source: String,
    /// The key itself.
    pub key: SecretString,
}

/// `[server]`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Collector write keys, ordered by source id; keys and source ids are distinct.
    pub write_keys: Vec<WriteKey>,
    /// Origins allowed to call the collector from a browser; `*` allows any.
    pub cors_origins: Vec<String>,
    /// How long a `messageId` is remembered to drop duplicates.
    pub dedupe_window: Duration,
    /// Admin API tokens.
    pub admin_tokens: Vec<AdminToken>,
}

/// `[identity]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdentityConfig {
    /// Identifier types that link records.
    pub link_on: Vec<String>,
    /// Per-type limit of identifiers on one profile.
    pub limits: BTreeMap<String, u32>,
    /// Values that never link.
    pub blocked: Vec<String>,
    /// Identifier types by strength, strongest first.
    pub priority: Vec<String>,
    /// Default phone region (ISO 3166 alpha-2).
    pub default_region: Option<String>,
    /// Patterns of values that never link (checked regular expressions).
    pub blocked_patterns: Vec<String>,
    /// Compound rules.
    pub compound: Vec<CompoundRule>,
}

/// A compound matching rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CompoundRule {
    /// Its name.
    pub name: String,
    /// Trait names (or `first_initial`) that must all agree.
    pub fields: Vec<String>,
}

/// How one trait's value is chosen among a profile's records.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub enum Survivorship {
    /// From the most recently updated record.
    #[default]
    Latest,
    /// From the record Spindle saw first.
    FirstSeen,
    /// The largest value (numbers by value, else text order).
    Max,
    /// The smallest value.
    Min,
    /// From the first listed source that has it, else the latest.
    SourcePriority(Vec<String>),
}

/// What a computed trait aggregates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Aggregate {
    /// Number of events.
    Count,
    /// Sum of a numeric property.
    Sum,
    /// Smallest property value.
    Min,
    /// Largest property value.
    Max,
    /// Property of the earliest event (its time when no property is named).
    First,
    /// Property of the latest event (its time when no property is named).
    Last,
    /// Number of distinct property values.
    Distinct,
}

/// A trait computed over the timeline, e.g. `sum(order_completed.amount within 90d)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ComputedTrait {
    /// The trait's name.
    pub name: String,
    /// The function.
    pub aggregate: Aggregate,
    /// Event name.
    pub event: String,
    /// Event property, when the function reads one.
    pub property: Option<String>,
    /// Only events this recent count.
    pub within: Option<chrono::Duration>,
    /// The expression as written.
    pub expression: String,
}

/// `[profiles]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct ProfilesConfig {
    /// Rule for traits without their own.
    pub default_survivorship: Survivorship,
    /// Rules per trait.
    pub survivorship: BTreeMap<String, Survivorship>,
    /// Computed traits, by name order.
    pub computed: Vec<ComputedTrait>,
}

/// A source connector.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// Its id in `[sources.<id>]`.
    pub id: String,
    /// When it runs on its own.
    pub schedule: Option<Schedule>,
    /// What it reads.
    pub settings: SourceSettings,
}

impl SourceConfig {
    /// The connector kind, as written in `kind`.
    pub fn kind(&self) -> &'static str {
        self.settings.kind()
    }
}

/// Kind-specific settings of a source. Adding a connector adds a variant here and one arm in the
/// connector registry (`spindle-sources`), which the compiler then requires.
#[derive(Debug, Clone)]
pub enum SourceSettings {
    /// `kind = "csv"`.
    Csv(FileSourceSettings),
    /// `kind = "jsonl"`.
    Jsonl(FileSourceSettings),
    /// `kind = "hubspot"`.
    Hubspot(HubspotSettings),
    /// `kind = "shopify"`.
    Shopify(ShopifySettings),
}

impl SourceSettings {
    /// The kind name.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceSettings::Csv(_) => "csv",
            SourceSettings::Jsonl(_) => "jsonl",
            SourceSettings::Hubspot(_) => "hubspot",
            SourceSettings::Shopify(_) => "shopify",
        }
    }
}

/// Every source kind this build knows, as written in `kind`.
pub const SOURCE_KINDS: &[&str] = &["csv", "hubspot", "jsonl", "shopify"];

/// How a HubSpot source authenticates.
#[derive(Debug, Clone)]
pub enum HubspotAuth {
    /// A private app's static token.
    PrivateApp(SecretString),
    /// An OAuth app: access tokens are obtained from the refresh token.
    OAuth {
        /// Client id.
        client_id: String,
        /// Client secret.
        client_secret: SecretString,
        /// Refresh token.
        refresh_token: SecretString,
    },
}

/// Settings of a HubSpot source.
#[derive(Debug, Clone)]
pub struct HubspotSettings {
    /// API origin without a trailing slash.
    pub base_url: String,
    /// Credentials.
    pub auth: HubspotAuth,
    /// `contacts` and/or `companies`, in reading order.
    pub objects: Vec<String>,
    /// Requests per rolling 10 seconds.
    pub requests_per_10s: u32,
}

/// Settings of a Shopify source.
#[derive(Debug, Clone)]
pub struct ShopifySettings {
    /// Shop origin without a trailing slash.
    pub base_url: String,
    /// Admin API access token.
    pub access_token: SecretString,
    /// Admin API version, e.g. `2024-01`.
    pub api_version: String,
    /// `customers` and/or `orders`, in reading order.
    pub streams: Vec<String>,
    /// Leak rate, requests per second.
    pub requests_per_second: f64,
    /// Bucket size.
    pub bucket_size: u32,
}

/// Settings of a CSV or JSONL file source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSourceSettings {
    /// The file, resolved against the config file's folder.
    pub path: PathBuf,
    /// Stream name.
    pub stream: String,
    /// Column/field with the row id; `None` uses the line number.
    pub id_field: Option<String>,
    /// Identifier type to column/field.
    pub identifiers: BTreeMap<String, String>,
    /// Trait name to column/field.
    pub traits: BTreeMap<String, String>,
    /// CSV delimiter byte.
    pub delimiter: u8,
    /// Rows per transaction.
    pub batch_size: usize,
}

/// A host a plugin may call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    /// `http` or `https`; `None` allows `https` only.
    pub scheme: Option<String>,
    /// Host name or IP address, lowercase.
    pub host: String,
    /// Port; `None` means the scheme's default.
    pub port: Option<u16>,
}

/// Resource limits of one plugin call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PluginLimits {
    /// Linear memory cap in bytes.
    pub memory_bytes: u64,
    /// Wall-clock limit.
    pub timeout: Duration,
    /// Fuel budget, if any.
    pub fuel: Option<u64>,
}

/// A destination.
#[derive(Debug, Clone)]
pub struct DestinationConfig {
    /// Its id.
    pub id: String,
    /// Plugin name or `.wasm` path (resolved against the config file's folder when it is a path).
    pub plugin: String,
    /// Hosts the plugin may call.
    pub allow_hosts: Vec<AllowedHost>,
    /// Plugin settings as JSON.
    pub config: serde_json::Value,
    /// Secrets the host fills in by name.
    pub secrets: BTreeMap<String, SecretString>,
    /// Limits per call.
    pub limits: PluginLimits,
    /// Batch size override.
    pub batch_size: Option<u32>,
    /// Rate limit override.
    pub requests_per_second: Option<f64>,
}

/// A segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentConfig {
    /// Its id.
    pub id: String,
    /// The expression.
    pub expression: String,
    /// Description.
    pub description: Option<String>,
}

/// An audience sync.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// Its id.
    pub id: String,
    /// Segment id (exists).
    pub segment: String,
    /// Destination id (exists).
    pub destination: String,
    /// Mode.
    pub mode: SyncMode,
    /// Destination field to trait.
    pub fields: BTreeMap<String, String>,
    /// When it runs on its own.
    pub schedule: Option<Schedule>,
    /// Required consent purpose.
    pub consent: Option<String>,
}
