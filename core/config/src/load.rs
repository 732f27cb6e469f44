//! Reading `connectors.toml`: syntax, shape, references, schedules and secrets, all errors at once.
//!
//! The file is parsed once into a span-carrying tree. Each section is deserialised on its own, so a mistake
//! in one section does not hide mistakes in another; then cross-section checks run on whatever deserialised.
//! Nothing here touches the network or a database; only `${env:...}` and `${file:...}` secrets are read.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::de::DeserializeOwned;
use spindle_scheduler::Schedule;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use crate::diagnostic::{Diagnostic, render, suggest};
use crate::model::{
    AdminToken, AllowedHost, Config, DestinationConfig, FileSourceSettings, IdentityConfig,
    PluginLimits, SOURCE_KINDS, SegmentConfig, ServerConfig, SourceConfig, SourceSettings,
    StoreConfig, SyncConfig, WriteKey,
};
use crate::model::{CompoundRule, ProfilesConfig, Survivorship};
use crate::model::{HubspotAuth, HubspotSettings, ShopifySettings};
use crate::raw::{
    RawDestination, RawFileSource, RawHubspotSource, RawIdentity, RawProfiles, RawSegment,
    RawServer, RawShopifySource, RawSourceCommon, RawStore, RawSync,
};
use crate::secret::{ProcessSecrets, SecretSource, has_reference, resolve};
use crate::store_url::{DEFAULT_STORE_URL, StoreUrl};

/// Default path of the configuration file.
pub const DEFAULT_CONFIG_PATH: &str = "connectors.toml";

const TOP_LEVEL: &[&str] = &[
    "profiles",
    "store",
    "server",
    "identity",
    "sources",
    "destinations",
    "segments",
    "syncs",
];
/// Identifier types with a meaning of their own; any `<name>_id` is accepted too (vendor ids).
pub const IDENTIFIER_TYPES: &[&str] = &["email", "phone", "user_id", "anonymous_id"];
const DEFAULT_LINK_ON: &[&str] = &["email", "phone", "user_id"];

/// A configuration that could not be loaded, with every problem found.
#[derive(Debug, Clone)]
pub struct LoadError {
    /// The file.
    pub path: PathBuf,
    /// Its content (empty when it could not be read).
    pub source_text: String,
    /// The problems, each with its place.
    pub diagnostics: Vec<Diagnostic>,
}

impl LoadError {
    /// Renders every problem as `error: ... --> path:line:col` blocks; `styled` adds colours.
    pub fn render(&self, styled: bool) -> String {
        let mut out = render(
            &self.diagnostics,
            &self.path.display().to_string(),
            &self.source_text,
            styled,
        );
        let n = self.diagnostics.len();
        out.push_str(&format!(
            "error: {} has {n} problem{}\n",
            self.path.display(),
            if n == 1 { "" } else { "s" }
        ));
        out
    }
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render(false))
    }
}

impl std::error::Error for LoadError {}

/// Loads and validates the file at `path`, resolving secrets from the process environment.
pub fn load(path: &Path) -> Result<Config, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|err| LoadError {
        path: path.to_owned(),
        source_text: String::new(),
        diagnostics: vec![Diagnostic::new(None, format!("cannot read {}: {err}", path.display()), "").with_hint(
            "pass the file with --config PATH or SPINDLE_CONFIG; `spindle config schema` describes its format",
        )],
    })?;
    let base_dir = base_dir_of(path);
    load_str(&text, path, &ProcessSecrets::new(&base_dir))
}

fn base_dir_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Validates `text` as the content of `path`, resolving secrets from `secrets`.
pub fn load_str(text: &str, path: &Path, secrets: &dyn SecretSource) -> Result<Config, LoadError> {
    let mut loader = Loader {
        diagnostics: Vec::new(),
        secrets,
        base_dir: base_dir_of(path),
    };
    let config = loader.load(text, path);
    if let (true, Some(config)) = (loader.diagnostics.is_empty(), config) {
        return Ok(config);
    }
    Err(LoadError {
        path: path.to_owned(),
        source_text: text.to_owned(),
        diagnostics: loader.diagnostics,
    })
}

struct Loader<'s> {
    diagnostics: Vec<Diagnostic>,
    secrets: &'s dyn SecretSource,
    base_dir: PathBuf,
}

/// Sections whose entries are keyed by id, as deserialised, with the span of each id.
type Entries<T> = Vec<(Spanned<String>, T)>;

impl Loader<'_> {
    fn error(
        &mut self,
        span: Range<usize>,
        message: impl Into<String>,
        label: impl Into<String>,
    ) -> &mut Diagnostic {
        self.diagnostics
            .push(Diagnostic::new(Some(span), message, label));
        let last = self.diagnostics.len() - 1;
        &mut self.diagnostics[last]
    }

    fn load(&mut self, text: &str, path: &Path) -> Option<Config> {
        let (document, syntax_errors) = DeTable::parse_recoverable(text);
        if !syntax_errors.is_empty() {
            self.syntax_errors(text, syntax_errors);
            // What follows a syntax error is only partly understood; checking it would report guesses.
            return None;
        }
        let mut store = None;
        let mut server = None;
        let mut identity = None;
        let mut profiles = None;
        let mut sources = Vec::new();
        let mut destinations = Vec::new();
        let mut segments = Vec::new();
        let mut syncs = Vec::new();
        for (key, value) in document.into_inner() {
            let key_span = key.span();
            match key.get_ref().as_ref() {
                "store" => store = self.section::<RawStore>(value, "[store]"),
                "server" => server = self.section::<RawServer>(value, "[server]"),
                "identity" => identity = self.section::<RawIdentity>(value, "[identity]"),
                "profiles" => profiles = self.section::<RawProfiles>(value, "[profiles]"),
                "sources" => sources = self.entries(value, "sources", |l, v, id| l.source(v, id)),
                "destinations" => {
                    destinations = self.entries(value, "destinations", |l, v, id| {
                        l.section::<RawDestination>(v, &format!("[destinations.{id}]"))
                    })
                }
                "segments" => {
                    segments = self.entries(value, "segments", |l, v, id| {
                        l.section::<RawSegment>(v, &format!("[segments.{id}]"))
                    })
                }
                "syncs" => {
                    syncs = self.entries(value, "syncs", |l, v, id| {
                        l.section::<RawSync>(v, &format!("[syncs.{id}]"))
                    })
                }
                other => {
                    let hint = suggest(other, TOP_LEVEL.iter().copied(), "sections");
                    self.error(
                        key_span,
                        format!("unknown section `{other}`"),
                        "not a section of connectors.toml",
                    )
                    .hint = Some(hint);
                }
            }
        }

        let store = self.store(store.unwrap_or_default());
        let source_ids: Vec<String> = sources.iter().map(|(id, _)| id.get_ref().clone()).collect();
        let server = server.unwrap_or_default();
        // Records come from the sources and from the collector, under its write keys' sources.
        let record_sources: Vec<String> = source_ids
            .iter()
            .cloned()
            .chain(
                server
                    .write_keys
                    .keys()
                    .map(|source| source.get_ref().clone()),
            )
            .collect();
        let server = self.server(server, &source_ids);
        let identity = self.identity(identity.unwrap_or_default(), &source_ids);
        let profiles = self.profiles(profiles.unwrap_or_default(), &record_sources);
        let sources: BTreeMap<String, SourceConfig> = sources
            .into_iter()
            .filter_map(|(id, (common, settings))| {
                self.source_config(id.into_inner(), common, settings)
            })
            .map(|s| (s.id.clone(), s))
            .collect();
        let destinations: BTreeMap<String, DestinationConfig> = destinations
            .into_iter()
            .filter_map(|(id, raw)| self.destination(id.into_inner(), raw))
            .map(|d| (d.id.clone(), d))
            .collect();
        let segment_ids: Vec<String> = segments
            .iter()
            .map(|(id, _)| id.get_ref().clone())
            .collect();
        let segments: BTreeMap<String, SegmentConfig> = segments
            .into_iter()
            .filter_map(|(id, raw)| self.segment(id.into_inner(), raw))
            .map(|s| (s.id.clone(), s))
            .collect();
        let destination_ids: Vec<String> = destinations.keys().cloned().collect();
        let syncs: BTreeMap<String, SyncConfig> = syncs
            .into_iter()
            .filter_map(|(id, raw)| self.sync(id.into_inner(), raw, &segment_ids, &destination_ids))
            .map(|s| (s.id.clone(), s))
            .collect();
        Some(Config {
            path: path.to_owned(),
            store: store?,
            server: server?,
            identity: identity?,
            profiles: profiles?,
            sources,
            destinations,
            segments,
            syncs,
        })
    }

    /// Reports TOML syntax errors. A table defined twice is reported once, at its second header, instead
    /// of once per repeated key.
    fn syntax_errors(&mut self, text: &str, errors: Vec<toml::de::Error>) {
        let mut in_repeated_table = false;
        for err in errors {
            let span = err.span().unwrap_or(0..0);
            let message = err.message().trim().to_owned();
            if message == "duplicate key" {
                let line_start = text[..span.start.min(text.len())]
                    .rfind('\n')
                    .map_or(0, |i| i + 1);
                if text[line_start..].trim_start().starts_with('[') {
                    in_repeated_table = true;
                    let header = text[line_start..]
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .trim()
                        .to_owned();
                    self.error(
                        span,
                        format!("{header} is defined twice"),
                        "second definition",
                    )
                    .hint = Some(
                        "each id can appear once; rename one of them or merge the two tables"
                            .into(),
                    );
                    continue;
                }
                if in_repeated_table {
                    continue;
                }
                self.error(span, "key is defined twice", "second definition")
                    .hint = Some("remove one of the two definitions".into());
                continue;
            }
            in_repeated_table = false;
            self.error(span, format!("invalid TOML: {message}"), "here")
                .hint = Some("see https://toml.io for the syntax".into());
        }
    }

    /// Deserialises one section, turning serde's error into a diagnostic that names the section.
    fn section<T: DeserializeOwned>(
        &mut self,
        value: Spanned<DeValue<'_>>,
        section: &str,
    ) -> Option<T> {
        let span = value.span();
        if !matches!(value.get_ref(), DeValue::Table(_)) {
            let found = value.get_ref().type_str();
            self.error(
                span,
                format!("{section} must be a table, found {found}"),
                "expected a table",
            );
            return None;
        }
        match T::deserialize(ValueDeserializer::from(value)) {
            Ok(parsed) => Some(parsed),
            Err(err) => {
                let diagnostic =
                    serde_diagnostic(err.message(), err.span().unwrap_or(span), section);
                self.diagnostics.push(diagnostic);
                None
            }
        }
    }

    /// Walks a table of `id -> table` entries, checking ids and deserialising each entry.
    fn entries<T>(
        &mut self,
        value: Spanned<DeValue<'_>>,
        section: &str,
        mut parse: impl FnMut(&mut Self, Spanned<DeValue<'_>>, &str) -> Option<T>,
    ) -> Entries<T> {
        let span = value.span();
        let DeValue::Table(table) = value.into_inner() else {
            self.error(
                span,
                format!("`{section}` must hold tables such as [{section}.my-id]"),
                "expected a table",
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for (key, entry) in table {
            let id_span = key.span();
            let id = key.into_inner().into_owned();
            if let Err(reason) = check_id(&id) {
                self.error(
                    id_span.clone(),
                    format!("invalid id `{id}` in [{section}]"),
                    reason,
                )
                .hint = Some(
                    "ids are lowercase letters, digits, `-` and `_`, starting with a letter".into(),
                );
                continue;
            }
            if let Some(parsed) = parse(self, entry, &id) {
                out.push((Spanned::new(id_span, id), parsed));
            }
        }
        out
    }

    fn source(
        &mut self,
        value: Spanned<DeValue<'_>>,
        id: &str,
    ) -> Option<(RawSourceCommon, Spanned<SourceSettings>)> {
        let span = value.span();
        let section = format!("[sources.{id}]");
        let DeValue::Table(table) = value.into_inner() else {
            self.error(
                span,
                format!("{section} must be a table"),
                "expected a table",
            );
            return None;
        };
        let (common, rest): (DeTable<'_>, DeTable<'_>) = table.into_iter().partition(|(key, _)| {
            matches!(key.get_ref().as_ref(), "kind" | "schedule" | "timezone")
        });
        let common: RawSourceCommon =
            self.section(Spanned::new(span.clone(), DeValue::Table(common)), &section)?;
        let kind_span = common.kind.span();
        let rest = Spanned::new(span.clone(), DeValue::Table(rest));
        let settings = match common.kind.get_ref().as_str() {
            "csv" | "jsonl" => {
                let raw: RawFileSource = self.section(rest, &section)?;
                let is_csv = common.kind.get_ref() == "csv";
                let file = self.file_source(raw, is_csv)?;
                if is_csv {
                    SourceSettings::Csv(file)
                } else {
                    SourceSettings::Jsonl(file)
                }
            }
            "hubspot" => {
                let raw: RawHubspotSource = self.section(rest, &section)?;
                SourceSettings::Hubspot(self.hubspot(raw, span.clone(), &section)?)
            }
            "shopify" => {
                let raw: RawShopifySource = self.section(rest, &section)?;
                SourceSettings::Shopify(self.shopify(raw, span.clone(), &section)?)
            }
            other => {
                let hint = suggest(other, SOURCE_KINDS.iter().copied(), "known kinds");
                let hint = if hint.starts_with("did you mean") {
                    format!("{hint} known kinds: {}", SOURCE_KINDS.join(", "))
                } else {
                    hint
                };
                self.error(
                    kind_span,
                    format!("unknown source kind `{other}`"),
                    "no connector of this kind",
                )
                .hint = Some(hint);
                return None;
            }
        };
        Some((common, Spanned::new(span, settings)))
    }

    fn file_source(&mut self, raw: RawFileSource, is_csv: bool) -> Option<FileSourceSettings> {
        let mut ok = true;
        if raw.path.get_ref().trim().is_empty() {
            self.error(raw.path.span(), "`path` is empty", "expected a file path");
            ok = false;
        }
        let identifiers_span = raw.identifiers.span();
        let mapping = raw.identifiers.into_inner();
        if mapping.is_empty() {
            self.error(
                identifiers_span,
                "a file source needs at least one identifier",
                "empty mapping",
            )
            .hint = Some(
                "map an identifier type to a column, e.g. `identifiers = { email = \"Email\" }`"
                    .into(),
            );
            ok = false;
        }
        let mut identifiers = BTreeMap::new();
        for (kind, field) in mapping {
            if let Err(hint) = check_identifier_type(kind.get_ref()) {
                self.error(
                    kind.span(),
                    format!("unknown identifier type `{}`", kind.get_ref()),
                    "not an identifier type",
                )
                .hint = Some(hint);
                ok = false;
            }
            if field.get_ref().trim().is_empty() {
                self.error(
                    field.span(),
                    format!(
                        "identifier `{}` maps to an empty column name",
                        kind.get_ref()
                    ),
                    "empty",
                )
                .hint = Some("write the column (CSV) or field (JSONL) that holds it".into());
                ok = false;
            }
            identifiers.insert(kind.into_inner(), field.into_inner());
        }
        let delimiter = match raw.delimiter {
            None => b',',
            Some(d) if !is_csv => {
                self.error(
                    d.span(),
                    "`delimiter` applies to CSV sources only",
                    "remove this key",
                );
                ok = false;
                b','
            }
            Some(d) => match d.get_ref().as_bytes() {
                [byte] if byte.is_ascii() => *byte,
                _ => {
                    self.error(
                        d.span(),
                        "`delimiter` must be one ASCII character",
                        "e.g. \",\" or \";\" or \"\\t\"",
                    );
                    ok = false;
                    b','
                }
            },
        };
        if raw.batch_size == Some(0) {
            self.diagnostics
                .push(Diagnostic::new(None, "`batch_size` must be at least 1", ""));
            ok = false;
        }
        ok.then(|| FileSourceSettings {
            path: self.base_dir.join(raw.path.get_ref()),
            stream: raw.stream.unwrap_or_else(|| "rows".into()),
            id_field: raw.id,
            identifiers,
            traits: raw.traits,
            delimiter,
            batch_size: raw.batch_size.map_or(1000, |n| n as usize),
        })
    }

    /// Checks a list of stream names against the ones a connector knows; `None` means all of them.
    fn streams(
        &mut self,
        list: Option<Vec<Spanned<String>>>,
        known: &[&str],
        key: &str,
    ) -> Option<Vec<String>> {
        let Some(list) = list else {
            return Some(known.iter().map(|s| (*s).to_owned()).collect());
        };
        let mut ok = true;
        let mut out: Vec<String> = Vec::new();
        for name in list {
            if !known.contains(&name.get_ref().as_str()) {
                let hint = suggest(name.get_ref(), known.iter().copied(), "known");
                self.error(
                    name.span(),
                    format!("unknown entry `{}` in `{key}`", name.get_ref()),
                    "not supported",
                )
                .hint = Some(hint);
                ok = false;
            } else if out.contains(name.get_ref()) {
                self.error(
                    name.span(),
                    format!("`{}` is listed twice in `{key}`", name.get_ref()),
                    "duplicate",
                );
                ok = false;
            } else {
                out.push(name.into_inner());
            }
        }
        if out.is_empty() && ok {
            self.diagnostics.push(
                Diagnostic::new(None, format!("`{key}` is empty"), "")
                    .with_hint(format!("list at least one of: {}", known.join(", "))),
            );
            ok = false;
        }
        ok.then_some(out)
    }

    /// An API origin: http(s), a host, no path.
    fn origin(&mut self, value: &Spanned<String>) -> Option<String> {
        match url::Url::parse(value.get_ref()) {
            Ok(url)
                if matches!(url.scheme(), "http" | "https")
                    && url.host_str().is_some()
                    && url.path() == "/" =>
            {
                Some(value.get_ref().trim_end_matches('/').to_owned())
            }
            _ => {
                self.error(
                    value.span(),
                    format!("invalid `base_url` `{}`", value.get_ref()),
                    "expected an origin",
                )
                .hint = Some(
                    "write scheme and host (and port), e.g. \"https://api.hubapi.com\"".into(),
                );
                None
            }
        }
    }

    fn hubspot(
        &mut self,
        raw: RawHubspotSource,
        span: Range<usize>,
        section: &str,
    ) -> Option<HubspotSettings> {
        let objects = self.streams(raw.objects, &["contacts", "companies"], "objects");
        let base_url = match &raw.base_url {
            Some(url) => self.origin(url),
            None => Some("https://api.hubapi.com".to_owned()),
        };
        let auth = match (&raw.token, raw.oauth) {
            (Some(token), None) => self.secret(token).map(HubspotAuth::PrivateApp),
            (None, Some(oauth)) => {
                let client_secret = self.secret(&oauth.client_secret);
                let refresh_token = self.secret(&oauth.refresh_token);
                Some(HubspotAuth::OAuth {
                    client_id: oauth.client_id,
                    client_secret: client_secret?,
                    refresh_token: refresh_token?,
                })
            }
            (Some(token), Some(_)) => {
                self.error(token.span(), format!("{section} has both `token` and `oauth`"), "keep one").hint = Some(
                    "a private app uses `token`; an OAuth app uses `oauth = { client_id, client_secret, refresh_token }`"
                        .into(),
                );
                None
            }
            (None, None) => {
                self.error(
                    span,
                    format!("{section} needs `token` or `oauth`"),
                    "no credentials",
                )
                .hint = Some(
                    "add `token = \"${env:HUBSPOT_TOKEN}\"` (private app) or `oauth = { ... }`"
                        .into(),
                );
                None
            }
        };
        if raw.requests_per_10s == Some(0) {
            self.diagnostics.push(Diagnostic::new(
                None,
                format!("{section} `requests_per_10s` must be at least 1"),
                "",
            ));
            return None;
        }
        Some(HubspotSettings {
            base_url: base_url?,
            auth: auth?,
            objects: objects?,
            requests_per_10s: raw.requests_per_10s.unwrap_or(100),
        })
    }

    fn shopify(
        &mut self,
        raw: RawShopifySource,
        span: Range<usize>,
        section: &str,
    ) -> Option<ShopifySettings> {
        let streams = self.streams(raw.streams, &["customers", "orders"], "streams");
        let valid_shop = |shop: &str| {
            !shop.is_empty() && shop.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        let base_url = match (&raw.shop, &raw.base_url) {
            (Some(shop), None) if valid_shop(shop.get_ref()) => {
                Some(format!("https://{}.myshopify.com", shop.get_ref()))
            }
            (None, Some(url)) => self.origin(url),
            (Some(shop), None) => {
                self.error(
                    shop.span(),
                    format!("invalid shop name `{}`", shop.get_ref()),
                    "not a shop name",
                )
                .hint =
                    Some("write the name before .myshopify.com, e.g. `shop = \"my-store\"`".into());
                None
            }
            (Some(_), Some(url)) => {
                self.error(
                    url.span(),
                    format!("{section} has both `shop` and `base_url`"),
                    "keep one",
                );
                None
            }
            (None, None) => {
                self.error(
                    span,
                    format!("{section} needs `shop` or `base_url`"),
                    "no shop",
                )
                .hint = Some("add `shop = \"my-store\"` for https://my-store.myshopify.com".into());
                None
            }
        };
        let access_token = self.secret(&raw.access_token);
        let rate = raw.requests_per_second.unwrap_or(2.0);
        if !(rate.is_finite() && rate > 0.0) {
            self.diagnostics.push(Diagnostic::new(
                None,
                format!("{section} `requests_per_second` must be positive"),
                "",
            ));
            return None;
        }
        Some(ShopifySettings {
            base_url: base_url?,
            access_token: access_token?,
            api_version: raw.api_version.unwrap_or_else(|| "2024-01".to_owned()),
            streams: streams?,
            requests_per_second: rate,
            bucket_size: raw.bucket_size.unwrap_or(40).max(1),
        })
    }

    fn schedule(
        &mut self,
        schedule: Option<Spanned<String>>,
        timezone: Option<Spanned<String>>,
    ) -> Result<Option<Schedule>, ()> {
        let mut ok = true;
        if let Some(expr) = &schedule
            && let Err(reason) = spindle_scheduler::parse_cron(expr.get_ref())
        {
            {
                self.error(expr.span(), format!("invalid cron expression `{}`", expr.get_ref()), reason)
                    .hint = Some(
                    "write `sec min hour day month weekday`, e.g. \"0 */15 * * * *\" (every 15 minutes) or \"0 0 9 * * Mon-Fri\""
                        .into(),
                );
                ok = false;
            }
        }
        if let Some(tz) = &timezone {
            if let Err(reason) = spindle_scheduler::parse_timezone(tz.get_ref()) {
                self.error(
                    tz.span(),
                    format!("invalid time zone `{}`", tz.get_ref()),
                    "not an IANA time zone",
                )
                .hint = Some(reason);
                ok = false;
            } else if schedule.is_none() {
                self.error(
                    tz.span(),
                    "`timezone` without `schedule` has no effect",
                    "remove it or add a schedule",
                );
                ok = false;
            }
        }
        if !ok {
            return Err(());
        }
        match schedule {
            None => Ok(None),
            Some(expr) => match Schedule::parse(
                expr.get_ref(),
                timezone.as_ref().map(|t| t.get_ref().as_str()),
            ) {
                Ok(parsed) => Ok(Some(parsed)),
                Err(err) => {
                    self.error(expr.span(), err.to_string(), "here");
                    Err(())
                }
            },
        }
    }

    fn secret(&mut self, template: &Spanned<String>) -> Option<SecretString> {
        match resolve(template.get_ref(), self.secrets) {
            Ok(secret) => Some(secret),
            Err(err) => {
                self.error(
                    template.span(),
                    err.message,
                    "this secret cannot be resolved",
                )
                .hint = Some(err.hint);
                None
            }
        }
    }

    fn store(&mut self, raw: RawStore) -> Option<StoreConfig> {
        let default = Spanned::new(0..0, DEFAULT_STORE_URL.to_owned());
        let url_template = raw.url.unwrap_or(default);
        let url = self.secret(&url_template)?;
        let schema = raw.schema.as_ref().map(|s| s.get_ref().as_str());
        match StoreUrl::parse(
            secrecy::ExposeSecret::expose_secret(&url),
            &self.base_dir,
            schema,
        ) {
            Ok(url) => Some(StoreConfig {
                url,
                max_connections: raw.max_connections.unwrap_or(8).max(1),
                busy_timeout: Duration::from_millis(raw.busy_timeout_ms.unwrap_or(10_000)),
            }),
            Err(err) => {
                let span = match (&raw.schema, err.reason.contains("schema")) {
                    (Some(schema), true) => schema.span(),
                    _ => url_template.span(),
                };
                self.error(span, "invalid store url", err.reason).hint = Some(
                    "use `sqlite://spindle.db` (embedded) or `postgres://USER@HOST:5432/DATABASE`"
                        .into(),
                );
                None
            }
        }
    }

    fn server(&mut self, raw: RawServer, source_ids: &[String]) -> Option<ServerConfig> {
        let listen = match &raw.listen {
            None => Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
            Some(text) => match text.get_ref().parse::<SocketAddr>() {
                Ok(addr) => Some(addr),
                Err(_) => {
                    self.error(
                        text.span(),
                        format!("invalid listen address `{}`", text.get_ref()),
                        "expected IP:PORT",
                    )
                    .hint = Some("e.g. \"127.0.0.1:8080\" or \"0.0.0.0:8080\"".into());
                    None
                }
            },
        };
        let mut ok = true;
        let mut write_keys = Vec::new();
        // Keys seen so far and their sources: one key must name one source.
        let mut seen: Vec<(String, String)> = Vec::new();
        for (source, template) in &raw.write_keys {
            if let Err(reason) = check_id(source.get_ref()) {
                self.error(
                    source.span(),
                    format!("invalid source id `{}` in `write_keys`", source.get_ref()),
                    reason,
                )
                .hint = Some(
                    "write keys are keyed by the source id their events are stored under, e.g. `write_keys = { website = \"${env:SPINDLE_WRITE_KEY_WEB}\" }`".into(),
                );
                ok = false;
                continue;
            }
            if source_ids.contains(source.get_ref()) {
                self.error(
                    source.span(),
                    format!(
                        "write key source `{}` is also a [sources.{}]",
                        source.get_ref(),
                        source.get_ref()
                    ),
                    "collector events would mix with that source's records",
                )
                .hint = Some("give the collector's source an id of its own, e.g. `website`".into());
                ok = false;
                continue;
            }
            let Some(key) = self.secret(template) else {
                ok = false;
                continue;
            };
            let exposed = secrecy::ExposeSecret::expose_secret(&key);
            if exposed.trim().is_empty() {
                self.error(
                    template.span(),
                    format!("the write key of `{}` is empty", source.get_ref()),
                    "empty key",
                )
                .hint = Some("set the variable or file it refers to to a non-empty key".into());
                ok = false;
                continue;
            }
            if let Some((_, other)) = seen.iter().find(|(k, _)| k == exposed) {
                self.error(
                    template.span(),
                    format!(
                        "sources `{other}` and `{}` have the same write key",
                        source.get_ref()
                    ),
                    "duplicate key",
                )
                .hint = Some("each source needs a key of its own".into());
                ok = false;
                continue;
            }
            seen.push((exposed.to_owned(), source.get_ref().clone()));
            write_keys.push(WriteKey {
                source: source.get_ref().clone(),
                key,
            });
        }
        let mut cors_origins = Vec::new();
        for origin in &raw.cors_origins {
            let text = origin.get_ref().trim_end_matches('/');
            let valid = text == "*"
                || url::Url::parse(text).is_ok_and(|u| {
                    matches!(u.scheme(), "http" | "https")
                        && u.host_str().is_some()
                        && u.path() == "/"
                        && u.query().is_none()
                });
            if valid {
                cors_origins.push(text.to_owned());
            } else {
                self.error(
                    origin.span(),
                    format!("invalid CORS origin `{}`", origin.get_ref()),
                    "expected scheme://host[:port]",
                )
                .hint = Some(
                    "e.g. \"https://www.example.com\" (no path), or \"*\" for any origin".into(),
                );
                ok = false;
            }
        }
        let dedupe_window = match &raw.dedupe_window {
            None => Some(Duration::from_secs(24 * 3600)),
            Some(text) => match crate::computed::parse_window(text.get_ref().trim())
                .and_then(|d| d.to_std().ok())
            {
                Some(window) => Some(window),
                None => {
                    self.error(
                        text.span(),
                        format!("invalid dedupe_window `{}`", text.get_ref()),
                        "expected a number followed by m, h, d or w",
                    )
                    .hint = Some("e.g. \"24h\" (the default) or \"7d\"".into());
                    None
                }
            },
        };
        let admin_tokens: Vec<Option<AdminToken>> = raw
            .admin_tokens
            .into_iter()
            .map(|t| {
                self.secret(&t.token).map(|token| AdminToken {
                    name: t.name,
                    role: t.role,
                    token,
                })
            })
            .collect();
        let admin_tokens = admin_tokens.into_iter().collect::<Option<_>>()?;
        if !ok {
            return None;
        }
        Some(ServerConfig {
            listen: listen?,
            write_keys,
            cors_origins,
            dedupe_window: dedupe_window?,
            admin_tokens,
        })
    }

    fn identity(&mut self, raw: RawIdentity, source_ids: &[String]) -> Option<IdentityConfig> {
        let mut ok = true;
        let link_on: Vec<Spanned<String>> = raw.link_on.unwrap_or_else(|| {
            DEFAULT_LINK_ON
                .iter()
                .map(|t| Spanned::new(0..0, (*t).to_owned()))
                .collect()
        });
        // The valid types linked on, which `limits` and `priority` may name (a misspelt one has an error
        // of its own and is not offered as a suggestion).
        let names: Vec<String> = link_on
            .iter()
            .map(|t| t.get_ref().clone())
            .filter(|t| check_identifier_type(t).is_ok())
            .collect();
        for kind in &link_on {
            if let Err(hint) = check_identifier_type(kind.get_ref()) {
                self.error(
                    kind.span(),
                    format!("unknown identifier type `{}`", kind.get_ref()),
                    "in `link_on`",
                )
                .hint = Some(hint);
                ok = false;
            } else if let Some(source) = kind.get_ref().strip_suffix("_id").filter(|s| {
                !IDENTIFIER_TYPES.contains(&kind.get_ref().as_str())
                    && !source_ids.iter().any(|id| id == s)
            }) {
                let known: Vec<String> = source_ids.iter().map(|s| format!("{s}_id")).collect();
                let hint = suggest(
                    kind.get_ref(),
                    known.iter().map(String::as_str),
                    "vendor id types of the defined sources",
                );
                self.error(
                    kind.span(),
                    format!(
                        "`{}` names no source: there is no [sources.{source}]",
                        kind.get_ref()
                    ),
                    "in `link_on`",
                )
                .hint = Some(hint);
                ok = false;
            }
        }
        let mut limits = BTreeMap::new();
        for (kind, limit) in raw.limits {
            let message = format!("limit for `{}`, which is not in `link_on`", kind.get_ref());
            ok &= self.require_listed(&kind, &names, message);
            if *limit.get_ref() == 0 {
                self.error(limit.span(), "a limit must be at least 1", "zero");
                ok = false;
            }
            limits.insert(kind.into_inner(), limit.into_inner());
        }
        ok &= self.no_repeats(&link_on, "`link_on`");
        ok &= self.no_repeats(&raw.priority, "`priority`");
        for kind in &raw.priority {
            let message = format!(
                "`priority` lists `{}`, which is not in `link_on`",
                kind.get_ref()
            );
            ok &= self.require_listed(kind, &names, message);
        }
        if let Some(region) = &raw.default_region {
            let text = region.get_ref();
            if text.len() != 2 || !text.chars().all(|c| c.is_ascii_uppercase()) {
                self.error(
                    region.span(),
                    format!("invalid region `{text}`"),
                    "expected two capital letters",
                )
                .hint =
                    Some("use an ISO 3166 alpha-2 code such as \"FR\", \"GB\" or \"US\"".into());
                ok = false;
            } else if phone_region(text).is_none() {
                // Phones written without a country code would all be refused.
                self.error(
                    region.span(),
                    format!("unknown region `{text}`"),
                    "no phone numbering plan is known for it",
                )
                .hint = Some(if text == "UK" {
                    "the United Kingdom's ISO 3166 code is \"GB\"".into()
                } else {
                    "use an ISO 3166 alpha-2 code such as \"FR\", \"GB\" or \"US\"".into()
                });
                ok = false;
            }
        }
        for pattern in &raw.blocked_patterns {
            if let Err(err) = regex::Regex::new(pattern.get_ref()) {
                let reason = err
                    .to_string()
                    .lines()
                    .last()
                    .unwrap_or_default()
                    .trim()
                    .to_owned();
                self.error(pattern.span(), format!("invalid pattern `{}` in `blocked_patterns`", pattern.get_ref()), reason)
                    .hint = Some("patterns are regular expressions matched against normalised values, e.g. \"^test@\"".into());
                ok = false;
            }
        }
        let mut compound = Vec::new();
        for rule in raw.compound {
            let named = format!("compound rule `{}`", rule.name.get_ref());
            ok &= self.no_repeats(&rule.fields, &named);
            if rule.fields.len() < 2 {
                self.error(rule.name.span(), format!("compound rule `{}` needs at least two fields", rule.name.get_ref()), "too few fields")
                    .hint = Some("e.g. fields = [\"last_name\", \"first_initial\", \"birth_date\", \"postal_code\"]".into());
                ok = false;
            }
            if compound
                .iter()
                .any(|c: &CompoundRule| &c.name == rule.name.get_ref())
            {
                self.error(
                    rule.name.span(),
                    format!("compound rule `{}` is defined twice", rule.name.get_ref()),
                    "duplicate name",
                );
                ok = false;
            }
            compound.push(CompoundRule {
                name: rule.name.into_inner(),
                fields: rule.fields.into_iter().map(Spanned::into_inner).collect(),
            });
        }
        ok.then(|| IdentityConfig {
            link_on: names,
            limits,
            blocked: raw.blocked,
            priority: raw.priority.into_iter().map(Spanned::into_inner).collect(),
            default_region: raw.default_region.map(Spanned::into_inner),
            blocked_patterns: raw
                .blocked_patterns
                .into_iter()
                .map(Spanned::into_inner)
                .collect(),
            compound,
        })
    }

    /// The survivorship rule `value` of `trait_name`; a `source_priority` must name only sources records
    /// come from (`record_sources`).
    fn survivorship(
        &mut self,
        value: &Spanned<toml::Value>,
        trait_name: &str,
        record_sources: &[String],
    ) -> Option<Survivorship> {
        let hint = "use \"latest\", \"first_seen\", \"max\", \"min\" or { source_priority = [\"shop\", \"crm\"] }";
        let parsed = match value.get_ref() {
            toml::Value::String(rule) => match rule.as_str() {
                "latest" => Some(Survivorship::Latest),
                "first_seen" => Some(Survivorship::FirstSeen),
                "max" => Some(Survivorship::Max),
                "min" => Some(Survivorship::Min),
                _ => None,
            },
            toml::Value::Table(table) => match (table.len(), table.get("source_priority")) {
                (1, Some(toml::Value::Array(list))) if !list.is_empty() => list
                    .iter()
                    .map(|s| s.as_str().map(str::to_owned))
                    .collect::<Option<Vec<String>>>()
                    .map(Survivorship::SourcePriority),
                _ => None,
            },
            _ => None,
        };
        if parsed.is_none() {
            self.error(
                value.span(),
                format!("invalid survivorship rule for `{trait_name}`"),
                "not a rule",
            )
            .hint = Some(hint.into());
        }
        if let Some(Survivorship::SourcePriority(names)) = &parsed
            && let Some(unknown) = names.iter().find(|name| !record_sources.contains(name))
        {
            let hint = suggest(unknown, record_sources.iter().map(String::as_str), "source");
            self.error(
                value.span(),
                format!(
                    "`source_priority` of `{trait_name}` names `{unknown}`, which is no source"
                ),
                "unknown source",
            )
            .hint = Some(hint);
            return None;
        }
        parsed
    }

    /// `[profiles]`; `record_sources` are the sources records come from.
    fn profiles(&mut self, raw: RawProfiles, record_sources: &[String]) -> Option<ProfilesConfig> {
        let mut ok = true;
        let default_survivorship = match &raw.default_survivorship {
            None => Survivorship::Latest,
            Some(rule) => {
                let value = Spanned::new(rule.span(), toml::Value::String(rule.get_ref().clone()));
                match self.survivorship(&value, "default_survivorship", record_sources) {
                    Some(rule) => rule,
                    None => {
                        ok = false;
                        Survivorship::Latest
                    }
                }
            }
        };
        let mut survivorship = BTreeMap::new();
        for (name, value) in &raw.survivorship {
            match self.survivorship(value, name, record_sources) {
                Some(rule) => {
                    survivorship.insert(name.clone(), rule);
                }
                None => ok = false,
            }
        }
        let mut computed = Vec::new();
        for (name, expression) in &raw.computed {
            match crate::computed::parse_computed(name, expression.get_ref()) {
                Ok(parsed) => computed.push(parsed),
                Err(err) => {
                    // The span covers the quoted string; the expression starts one byte in.
                    let start = expression.span().start + 1 + err.offset;
                    self.error(start..start + 1, format!("invalid computed trait `{name}`"), err.message).hint =
                        Some("write `function(event[.property] [within 90d])`, e.g. \"sum(order_completed.amount within 90d)\"".into());
                    ok = false;
                }
            }
        }
        ok.then_some(ProfilesConfig {
            default_survivorship,
            survivorship,
            computed,
        })
    }

    /// True when `kind` is one of the `link_on` types; otherwise reports `message` with the closest one.
    /// Reports each entry of `list` (`what` names the list) that repeats an earlier one; false when
    /// there is one.
    fn no_repeats(&mut self, list: &[Spanned<String>], what: &str) -> bool {
        let mut ok = true;
        for (at, entry) in list.iter().enumerate() {
            if list[..at]
                .iter()
                .any(|earlier| earlier.get_ref() == entry.get_ref())
            {
                self.error(
                    entry.span(),
                    format!("{what} lists `{}` twice", entry.get_ref()),
                    "listed before",
                )
                .hint = Some("remove this entry".into());
                ok = false;
            }
        }
        ok
    }

    fn require_listed(
        &mut self,
        kind: &Spanned<String>,
        link_on: &[String],
        message: String,
    ) -> bool {
        if link_on.contains(kind.get_ref()) {
            return true;
        }
        let hint = if link_on.is_empty() {
            format!(
                "add `{}` to `link_on`, which lists no valid type",
                kind.get_ref()
            )
        } else {
            suggest(
                kind.get_ref(),
                link_on.iter().map(String::as_str),
                "`link_on` has",
            )
        };
        self.error(kind.span(), message, "not linked on").hint = Some(hint);
        false
    }

    fn source_config(
        &mut self,
        id: String,
        common: RawSourceCommon,
        settings: Spanned<SourceSettings>,
    ) -> Option<SourceConfig> {
        let schedule = self.schedule(common.schedule, common.timezone).ok()?;
        Some(SourceConfig {
            id,
            schedule,
            settings: settings.into_inner(),
        })
    }

    fn destination(&mut self, id: String, raw: RawDestination) -> Option<DestinationConfig> {
        let mut ok = true;
        if raw.plugin.get_ref().trim().is_empty() {
            self.error(
                raw.plugin.span(),
                "`plugin` is empty",
                "expected a plugin name or a .wasm path",
            );
            ok = false;
        }
        let mut allow_hosts = Vec::new();
        for entry in &raw.allow_hosts {
            match parse_allowed_host(entry.get_ref()) {
                Ok(host) => allow_hosts.push(host),
                Err(reason) => {
                    self.error(entry.span(), format!("invalid host `{}` in `allow_hosts`", entry.get_ref()), reason)
                        .hint = Some("write a host (`api.example.com`) or an origin (`https://api.example.com:8443`)".into());
                    ok = false;
                }
            }
        }
        let config = serde_json::to_value(&raw.config).unwrap_or(serde_json::Value::Null);
        if contains_reference(&config) {
            self.error(raw.plugin.span(), format!("[destinations.{id}] `config` holds a secret reference"), "in this destination")
                .hint = Some("move credentials to `secrets = { name = \"${env:NAME}\" }`; the host fills them in for the plugin".into());
            ok = false;
        }
        let mut secrets = BTreeMap::new();
        for (name, template) in &raw.secrets {
            match self.secret(template) {
                Some(secret) => {
                    secrets.insert(name.clone(), secret);
                }
                None => ok = false,
            }
        }
        let plugin = if raw.plugin.get_ref().ends_with(".wasm") {
            self.base_dir
                .join(raw.plugin.get_ref())
                .display()
                .to_string()
        } else {
            raw.plugin.get_ref().clone()
        };
        ok.then(|| DestinationConfig {
            id,
            plugin,
            allow_hosts,
            config,
            secrets,
            limits: PluginLimits {
                memory_bytes: u64::from(raw.limits.memory_mb.unwrap_or(64)) * 1024 * 1024,
                timeout: Duration::from_secs(u64::from(raw.limits.timeout_secs.unwrap_or(30))),
                fuel: raw.limits.fuel,
            },
            batch_size: raw.batch_size,
            requests_per_second: raw.requests_per_second,
        })
    }

    fn segment(&mut self, id: String, raw: RawSegment) -> Option<SegmentConfig> {
        if raw.expression.get_ref().trim().is_empty() {
            self.error(
                raw.expression.span(),
                format!("segment `{id}` has an empty `where`"),
                "empty expression",
            )
            .hint = Some("e.g. where = \"total_spent > 500 and consent.email\"".into());
            return None;
        }
        Some(SegmentConfig {
            id,
            expression: raw.expression.into_inner(),
            description: raw.description,
        })
    }

    fn sync(
        &mut self,
        id: String,
        raw: RawSync,
        segments: &[String],
        destinations: &[String],
    ) -> Option<SyncConfig> {
        let mut ok = true;
        for (reference, known, what) in [
            (&raw.segment, segments, "segment"),
            (&raw.destination, destinations, "destination"),
        ] {
            if !known.contains(reference.get_ref()) {
                let plural = format!("{what}s defined");
                let hint = suggest(
                    reference.get_ref(),
                    known.iter().map(String::as_str),
                    &plural,
                );
                self.error(
                    reference.span(),
                    format!("sync `{id}` names unknown {what} `{}`", reference.get_ref()),
                    format!("no [{what}s.{}]", reference.get_ref()),
                )
                .hint = Some(hint);
                ok = false;
            }
        }
        let schedule = self.schedule(raw.schedule, raw.timezone);
        (ok && schedule.is_ok()).then(|| SyncConfig {
            id,
            segment: raw.segment.into_inner(),
            destination: raw.destination.into_inner(),
            mode: raw.mode,
            fields: raw.fields,
            schedule: schedule.ok().flatten(),
            consent: raw.consent,
        })
    }
}

/// Turns serde's messages into diagnostics that say which section and what to write instead.
fn serde_diagnostic(message: &str, span: Range<usize>, section: &str) -> Diagnostic {
    let message = message.trim();
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (field, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let known: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        let hint = match crate::diagnostic::closest(field, known.iter().copied()) {
            Some(close) => format!(
                "did you mean `{close}`? {section} accepts: {}",
                known.join(", ")
            ),
            None => format!("{section} accepts: {}", known.join(", ")),
        };
        return Diagnostic::new(
            Some(span),
            format!("unknown key `{field}` in {section}"),
            "unknown key",
        )
        .with_hint(hint);
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or(rest);
        return Diagnostic::new(
            Some(span),
            format!("{section} is missing required key `{field}`"),
            format!("add `{field} = ...` here"),
        );
    }
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        let (value, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let known: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        let hint = suggest(value, known.iter().copied(), "allowed values");
        return Diagnostic::new(
            Some(span),
            format!("invalid value `{value}` in {section}"),
            "not an allowed value",
        )
        .with_hint(hint);
    }
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        return Diagnostic::new(
            Some(span),
            format!("wrong type in {section}: {rest}"),
            "wrong type",
        );
    }
    Diagnostic::new(Some(span), format!("{message} in {section}"), "here")
}

/// The region of the ISO 3166 alpha-2 `code` when libphonenumber (through `rlibphonenumber`, with which
/// identity resolution parses phones) has a numbering plan for it: what `default_region` must name.
pub fn phone_region(code: &str) -> Option<rlibphonenumber::Region> {
    code.parse::<rlibphonenumber::Region>()
        .ok()
        .filter(|region| {
            rlibphonenumber::PHONE_NUMBER_UTIL
                .get_country_code_for_region(*region)
                .is_some()
        })
}

fn check_id(id: &str) -> Result<(), String> {
    let mut chars = id.chars();
    match chars.next() {
        Some(c) if c.is_ascii_lowercase() => {}
        _ => return Err("must start with a lowercase letter".into()),
    }
    if id.len() > 64 {
        return Err("at most 64 characters".into());
    }
    if let Some(bad) =
        chars.find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'))
    {
        return Err(format!("`{bad}` is not allowed"));
    }
    Ok(())
}

fn check_identifier_type(kind: &str) -> Result<(), String> {
    if IDENTIFIER_TYPES.contains(&kind) {
        return Ok(());
    }
    if kind
        .strip_suffix("_id")
        .is_some_and(|vendor| check_id(vendor).is_ok())
    {
        return Ok(());
    }
    let hint = suggest(kind, IDENTIFIER_TYPES.iter().copied(), "known types");
    Err(format!(
        "{hint} (identifier types: {}, or `<source>_id` for a vendor id)",
        IDENTIFIER_TYPES.join(", ")
    ))
}

fn parse_allowed_host(entry: &str) -> Result<AllowedHost, String> {
    let with_scheme = entry.contains("://");
    let text = if with_scheme {
        entry.to_owned()
    } else {
        format!("https://{entry}")
    };
    let url = url::Url::parse(&text).map_err(|err| err.to_string())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("scheme `{}` is not http or https", url.scheme()));
    }
    if url.path() != "/" || url.query().is_some() || !url.username().is_empty() {
        return Err("only scheme, host and port are allowed, no path or credentials".into());
    }
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or("no host")?
        .to_ascii_lowercase();
    Ok(AllowedHost {
        scheme: with_scheme.then(|| url.scheme().to_owned()),
        host,
        port: url.port(),
    })
}

fn contains_reference(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(s) => has_reference(s),
        serde_json::Value::Array(items) => items.iter().any(contains_reference),
        serde_json::Value::Object(map) => map.values().any(contains_reference),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::secret::ProcessSecrets;

    fn load(text: &str) -> Result<crate::Config, super::LoadError> {
        super::load_str(
            text,
            Path::new("connectors.toml"),
            &ProcessSecrets::new(Path::new(".")),
        )
    }

    #[test]
    fn source_priority_names_sources_and_collector_sources() {
        let config = r#"
[server]
write_keys = { website = "wk-web-0123456789" }

[sources.crm]
kind = "csv"
path = "crm.csv"
id = "Contact ID"
identifiers = { email = "Email" }
schedule = "0 */15 * * * *"

[profiles]
survivorship = { first_name = { source_priority = ["website", "crm"] } }
"#;
        load(config).expect("a source and a collector source");
        let misspelt = config.replace(r#"["website", "crm"]"#, r#"["website", "crm_export"]"#);
        let err = load(&misspelt).expect_err("no source is named crm_export");
        let rendered = err.render(false);
        assert!(
            rendered.contains("names `crm_export`, which is no source")
                && rendered.contains("did you mean `crm`?"),
            "{rendered}"
        );
    }

    #[test]
    fn limits_of_types_not_linked_on_suggest_only_valid_types() {
        let empty = load("[identity]\nlink_on = []\nlimits = { email = 5 }\n")
            .expect_err("email is not linked on")
            .render(false);
        assert!(
            empty.contains("add `email` to `link_on`, which lists no valid type"),
            "{empty}"
        );
        let misspelt =
            load("[identity]\nlink_on = [\"userid\", \"email\"]\nlimits = { user_id = 1 }\n")
                .expect_err("userid is no type")
                .render(false);
        assert!(
            misspelt.contains("unknown identifier type `userid`"),
            "{misspelt}"
        );
        assert!(!misspelt.contains("did you mean `userid`"), "{misspelt}");
    }

    #[test]
    fn a_default_region_must_have_a_phone_numbering_plan() {
        load("[identity]\ndefault_region = \"GB\"\n").expect("GB is known");
        let rendered = load("[identity]\ndefault_region = \"UK\"\n")
            .expect_err("UK is not an ISO 3166 code")
            .render(false);
        assert!(rendered.contains("\"GB\""), "{rendered}");
    }
}
