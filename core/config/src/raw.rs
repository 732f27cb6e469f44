//! The file as written: serde types that mirror `connectors.toml` section by section.
//!
//! Every struct denies unknown keys. Fields that later checks point at are `Spanned`, so an error can show
//! where the value is. These types are also the source of the JSON Schema (`spindle config schema`).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use toml::Spanned;

/// `[store]`: where Spindle keeps its data.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    /// `sqlite://PATH` (embedded, default `sqlite://spindle.db`, relative to this file) or
    /// `postgres://USER@HOST:PORT/DATABASE`. May contain `${env:NAME}` / `${file:PATH}` references.
    #[schemars(with = "Option<String>")]
    pub url: Option<Spanned<String>>,
    /// PostgreSQL schema to use (created if missing). Default: the server's `search_path`.
    #[schemars(with = "Option<String>")]
    pub schema: Option<Spanned<String>>,
    /// Most database connections to keep open. Default 8.
    pub max_connections: Option<u32>,
    /// How long SQLite waits for a lock before failing, in milliseconds. Default 10000.
    pub busy_timeout_ms: Option<u64>,
}

/// Role of an admin API token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, including configuration and privacy requests.
    Admin,
    /// Segments, syncs and profiles.
    Marketer,
    /// Read only.
    Viewer,
}

/// One admin API token.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAdminToken {
    /// Name shown in the audit log.
    pub name: String,
    /// What the token may do.
    pub role: Role,
    /// The token, normally `${env:NAME}` or `${file:PATH}`.
    #[schemars(with = "String")]
    pub token: Spanned<String>,
}

/// `[server]`: the HTTP collector and admin API.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Address to listen on. Default `127.0.0.1:8080`.
    #[schemars(with = "Option<String>")]
    pub listen: Option<Spanned<String>>,
    /// Write keys of the event collector, by the source id their events are stored under, e.g.
    /// `{ website = "${env:SPINDLE_WRITE_KEY_WEB}" }`. Clients send the key as the HTTP Basic user name
    /// (Segment's convention) or as `writeKey` in the body.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub write_keys: BTreeMap<Spanned<String>, Spanned<String>>,
    /// Origins allowed to call the collector from a browser (CORS), e.g. `["https://www.example.com"]`;
    /// `["*"]` allows any origin. Default: none.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub cors_origins: Vec<Spanned<String>>,
    /// How long a `messageId` is remembered to drop duplicates: `N` followed by `m`, `h`, `d` or `w`.
    /// Default `24h`.
    #[schemars(with = "Option<String>")]
    pub dedupe_window: Option<Spanned<String>>,
    /// Bearer tokens of the admin API.
    #[serde(default)]
    pub admin_tokens: Vec<RawAdminToken>,
}

/// `[identity]`: how records are linked into profiles.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawIdentity {
    /// Identifier types that link records into one profile. Default `["email", "phone", "user_id"]`.
    #[schemars(with = "Option<Vec<String>>")]
    pub link_on: Option<Vec<Spanned<String>>>,
    /// Most identifiers of a type one profile may hold, e.g. `{ user_id = 1, email = 5 }`.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, u32>")]
    pub limits: BTreeMap<Spanned<String>, Spanned<u32>>,
    /// Identifier values that never link (shared or placeholder addresses).
    #[serde(default)]
    pub blocked: Vec<String>,
    /// Which identifier type wins when a merge would break a limit, strongest first.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub priority: Vec<Spanned<String>>,
    /// Region for phone numbers written without a country code (ISO 3166 alpha-2, e.g. `FR`).
    #[schemars(with = "Option<String>")]
    pub default_region: Option<Spanned<String>>,
    /// Regular expressions; a normalised identifier value that matches one never links (e.g. `"^test@"`).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub blocked_patterns: Vec<Spanned<String>>,
    /// Rules that link records without a shared identifier, when all their fields agree.
    #[serde(default)]
    pub compound: Vec<RawCompoundRule>,
}

/// A compound matching rule: records whose normalised fields all agree are linked.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCompoundRule {
    /// The rule's name, shown in explanations.
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// Trait names compared after normalisation (trimmed, lower-case, single spaces); `first_initial` is the
    /// first letter of `first_name`. At least two.
    #[schemars(with = "Vec<String>")]
    pub fields: Vec<Spanned<String>>,
}

/// `[profiles]`: how a profile's traits are chosen and computed.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawProfiles {
    /// Rule for traits not listed in `survivorship`: `latest` (default), `first_seen`, `max` or `min`.
    #[schemars(with = "Option<String>")]
    pub default_survivorship: Option<Spanned<String>>,
    /// Per trait: `"latest"`, `"first_seen"`, `"max"`, `"min"` or `{ source_priority = ["shop", "crm"] }`.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, serde_json::Value>")]
    pub survivorship: BTreeMap<String, Spanned<toml::Value>>,
    /// Traits computed over the timeline, e.g. `orders_90d = "count(order_completed within 90d)"`,
    /// `total_spent = "sum(order_completed.amount)"`. Functions: count, sum, min, max, first, last, distinct.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub computed: BTreeMap<String, Spanned<String>>,
}

/// Keys every source has, whatever its kind.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSourceCommon {
    /// Connector kind (`csv`, `jsonl`).
    #[schemars(with = "String")]
    pub kind: Spanned<String>,
    /// When to pull: cron with seconds (`0 */15 * * * *`) or classic 5-field crontab. Without it the source
    /// only runs on demand (`spindle sources sync`, `spindle run --once`).
    #[schemars(with = "Option<String>")]
    pub schedule: Option<Spanned<String>>,
    /// IANA time zone of the schedule, e.g. `Europe/Paris`. Default UTC.
    #[schemars(with = "Option<String>")]
    pub timezone: Option<Spanned<String>>,
}

/// Settings of the file sources (`kind = "csv"` and `kind = "jsonl"`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawFileSource {
    /// The file to read, relative to this configuration file.
    #[schemars(with = "String")]
    pub path: Spanned<String>,
    /// Stream name recorded with each row. Default `rows`.
    pub stream: Option<String>,
    /// Column (CSV) or field (JSONL) holding the row's stable id. Default: the line number.
    pub id: Option<String>,
    /// Identifier type to column/field, e.g. `{ email = "Email", phone = "Phone" }`. At least one.
    #[schemars(with = "BTreeMap<String, String>")]
    pub identifiers: Spanned<BTreeMap<Spanned<String>, Spanned<String>>>,
    /// Trait name to column/field, e.g. `{ first_name = "First Name" }`.
    #[serde(default)]
    pub traits: BTreeMap<String, String>,
    /// CSV field delimiter, one ASCII character. Default `,`. CSV only.
    #[schemars(with = "Option<String>")]
    pub delimiter: Option<Spanned<String>>,
    /// Rows committed per transaction. Default 1000.
    #[schemars(range(min = 1))]
    pub batch_size: Option<u32>,
}

/// OAuth app credentials: the connector exchanges the refresh token for short-lived access tokens.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawOAuth {
    /// The app's client id.
    pub client_id: String,
    /// The app's client secret, normally `${env:NAME}`.
    #[schemars(with = "String")]
    pub client_secret: Spanned<String>,
    /// The installation's refresh token, normally `${env:NAME}`.
    #[schemars(with = "String")]
    pub refresh_token: Spanned<String>,
}

/// Settings of a HubSpot source (`kind = "hubspot"`): contacts and companies from the CRM v3 API.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawHubspotSource {
    /// A private app's access token, normally `${env:HUBSPOT_TOKEN}`. Give this or `oauth`.
    #[schemars(with = "Option<String>")]
    pub token: Option<Spanned<String>>,
    /// OAuth app credentials instead of a private app token.
    pub oauth: Option<RawOAuth>,
    /// Objects to read: `contacts`, `companies`. Default both.
    #[schemars(with = "Option<Vec<String>>")]
    pub objects: Option<Vec<Spanned<String>>>,
    /// API origin. Default `https://api.hubapi.com`.
    #[schemars(with = "Option<String>")]
    pub base_url: Option<Spanned<String>>,
    /// Request budget per rolling 10 seconds. Default 100 (private apps on the free and starter tiers).
    #[schemars(range(min = 1))]
    pub requests_per_10s: Option<u32>,
}

/// Settings of a Shopify source (`kind = "shopify"`): customers and orders from the REST Admin API.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawShopifySource {
    /// The shop's name: `my-store` for `https://my-store.myshopify.com`. Give this or `base_url`.
    #[schemars(with = "Option<String>")]
    pub shop: Option<Spanned<String>>,
    /// The shop's origin, e.g. `https://my-store.myshopify.com`.
    #[schemars(with = "Option<String>")]
    pub base_url: Option<Spanned<String>>,
    /// Admin API access token, normally `${env:SHOPIFY_TOKEN}`.
    #[schemars(with = "String")]
    pub access_token: Spanned<String>,
    /// Admin API version. Default `2024-01`.
    pub api_version: Option<String>,
    /// Streams to read: `customers`, `orders`. Default both.
    #[schemars(with = "Option<Vec<String>>")]
    pub streams: Option<Vec<Spanned<String>>>,
    /// The plan's leak rate in requests per second. Default 2 (standard plans).
    pub requests_per_second: Option<f64>,
    /// The plan's bucket size. Default 40.
    pub bucket_size: Option<u32>,
}

/// Resource limits of a destination plugin.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPluginLimits {
    /// Most linear memory a plugin instance may use, in MiB. Default 64.
    pub memory_mb: Option<u32>,
    /// Wall-clock limit of one plugin call, in seconds. Default 30.
    pub timeout_secs: Option<u32>,
    /// CPU budget of one plugin call, in wasmtime fuel units. Default: bounded by the timeout only.
    pub fuel: Option<u64>,
}

/// `[destinations.<id>]`: where audiences are sent, through a WebAssembly plugin.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawDestination {
    /// A built plugin's name (`mailchimp`) or a path to a `.wasm` component.
    #[schemars(with = "String")]
    pub plugin: Spanned<String>,
    /// Hosts the plugin may call: `api.example.com`, `https://api.example.com`, `http://127.0.0.1:9000`.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub allow_hosts: Vec<Spanned<String>>,
    /// Plugin settings, passed to the plugin as they are. No secrets here: use `secrets`.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, serde_json::Value>")]
    pub config: toml::Table,
    /// Credentials the host fills in for the plugin by name (`secret:api_key`); the plugin never holds them.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub secrets: BTreeMap<String, Spanned<String>>,
    /// Resource limits of each plugin call.
    #[serde(default)]
    pub limits: RawPluginLimits,
    /// Most records per batch sent to the plugin. Default: the plugin's own maximum.
    pub batch_size: Option<u32>,
    /// Most requests per second to the vendor. Default: the plugin's documented limit.
    pub requests_per_second: Option<f64>,
}

/// `[segments.<id>]`: an audience.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSegment {
    /// The segment expression, e.g. `total_spent > 500 and consent.email`.
    #[serde(rename = "where")]
    #[schemars(with = "String")]
    pub expression: Spanned<String>,
    /// What the audience is for.
    pub description: Option<String>,
}

/// How an audience sync treats the destination's list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// Add new members and update changed ones.
    Upsert,
    /// Upsert, and remove members who left the segment.
    Mirror,
    /// Only add new members.
    AddOnly,
}

/// `[syncs.<id>]`: send a segment to a destination on a schedule.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSync {
    /// The segment to send.
    #[schemars(with = "String")]
    pub segment: Spanned<String>,
    /// The destination to send it to.
    #[schemars(with = "String")]
    pub destination: Spanned<String>,
    /// `upsert`, `mirror` or `add_only`.
    pub mode: SyncMode,
    /// Destination field to profile trait, e.g. `{ email = "email", FNAME = "first_name" }`.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    /// When to run: cron with seconds or classic 5-field crontab. Without it the sync runs on demand.
    #[schemars(with = "Option<String>")]
    pub schedule: Option<Spanned<String>>,
    /// IANA time zone of the schedule. Default UTC.
    #[schemars(with = "Option<String>")]
    pub timezone: Option<Spanned<String>>,
    /// Consent purpose a member must have granted to be sent, e.g. `email`.
    pub consent: Option<String>,
}
