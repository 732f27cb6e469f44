//! A fake HubSpot CRM v3 API (contacts and companies) for connector tests and benchmarks.
//!
//! # Contract
//!
//! Faithful to HubSpot's public API:
//! - **Auth**: `Authorization: Bearer <token>` must be the private-app token or a live OAuth access token.
//!   Missing, unknown or malformed credentials answer 401 `{"status":"error","message":"Authentication
//!   credentials not found. …","correlationId":…,"category":"INVALID_AUTHENTICATION"}`; an OAuth access token
//!   past its `expires_in` (or invalidated by [`FakeHubspot::expire_access_tokens`]) answers 401 with HubSpot's
//!   real body for that case: `"message":"The OAuth token used to make this call expired N second(s) ago."`,
//!   `"category":"EXPIRED_AUTHENTICATION"`, `"context":{"expire time":[…]}`.
//! - **OAuth**: `POST /oauth/v1/token`, form-encoded `grant_type=refresh_token&client_id=…&client_secret=…&
//!   refresh_token=…` → `{"token_type":"bearer","refresh_token":…,"access_token":…,"expires_in":…}`. The
//!   refresh token never changes nor expires. A bad grant answers 400 with HubSpot's token-endpoint body
//!   `{"status":"BAD_REFRESH_TOKEN"|"BAD_CLIENT_ID"|"BAD_CLIENT_SECRET"|"BAD_GRANT_TYPE","message":…,
//!   "correlationId":…,"requestId":…}`. Faults and rate limits do not apply to this endpoint.
//! - **List** `GET /crm/v3/objects/{contacts|companies}`: `limit` 1–100 (default 10; outside → 400),
//!   `after` opaque cursor from `paging.next.after` (base64 of the next id; a plain numeric id is accepted too,
//!   as HubSpot does), `properties` (comma list, may repeat), `associations` (`companies` / `contacts`),
//!   `archived=true` (archived objects only). Results in id order; `paging` is absent on the last page.
//!   Without `properties` only the default properties come back (contacts `firstname, lastname, email`,
//!   companies `name, domain`, plus `createdate`, the modified-date property and `hs_object_id`); with it, the
//!   listed ones plus those three system properties. A requested property the object has no value for comes
//!   back as `null`; an unknown property name is silently left out. Every value is a string.
//! - **Records**: `{"id","properties","createdAt","updatedAt","archived"}` (+ `archivedAt` when archived),
//!   timestamps ISO-8601 UTC with milliseconds. Contacts carry `lastmodifieddate`, companies
//!   `hs_lastmodifieddate`; `updatedAt` equals it.
//! - **Inline associations** as HubSpot sends them today: a contact's primary company appears twice, once as
//!   `contact_to_company` and once as `contact_to_company_unlabeled`; further companies only as
//!   `…_unlabeled` (same for `company_to_contact`). The first company associated with a contact is its
//!   primary. The `associations` key is absent when there are none.
//! - **Search** `POST /crm/v3/objects/{type}/search`: `filterGroups` (ORed, at most 5) of `filters` (ANDed,
//!   at most 6 per group and 18 in all), operators `EQ NEQ LT LTE GT GTE BETWEEN IN NOT_IN HAS_PROPERTY
//!   NOT_HAS_PROPERTY CONTAINS_TOKEN NOT_CONTAINS_TOKEN` on any property (dates accept ISO-8601 or epoch-ms
//!   strings; filtering or sorting on a property the object type does not have → 400); at most one entry in
//!   `sorts` (`{"propertyName","direction":"ASCENDING"|"DESCENDING"}`), default order is creation (id) order;
//!   `query` free text; `properties`; `limit` 1–200 (default 10); `after` = numeric offset string.
//!   The answer has `total` (the true count, even beyond 10,000) and `paging.next.after` while more results
//!   exist. **Paging cap**: a request whose `after + limit` exceeds 10,000 answers 400 `VALIDATION_ERROR`.
//!   Search results never carry associations and never include archived objects.
//! - **v4 associations** `POST /crm/v4/associations/{from}/{to}/batch/read` with `{"inputs":[{"id":…}]}` (at
//!   most 1,000): `{"status":"COMPLETE","results":[{"from":{"id"},"to":[{"toObjectId":<number>,
//!   "associationTypes":[{"category":"HUBSPOT_DEFINED","typeId":1|279,"label":"Primary"|null}]}]}],
//!   "startedAt","completedAt"}`. Inputs without associations are left out of `results` and reported in
//!   `errors` (`numErrors`), and the status is then 207 Multi-Status.
//! - **Single object** `GET /crm/v3/objects/{type}/{id}` (with `properties`, `associations`, `archived`,
//!   `idProperty`), 404 `OBJECT_NOT_FOUND` when missing.
//! - **Rate limits**: a rolling 10-second window per private-app token, and per OAuth app for OAuth tokens
//!   (HubSpot counts per app and account, so refreshing a token does not reset the window). While a limit is
//!   set, every authenticated API response carries `X-HubSpot-RateLimit-Max`, `-Remaining` and
//!   `-Interval-Milliseconds: 10000`; private-app tokens also get `-Daily`, `-Daily-Remaining` and the
//!   deprecated `-Secondly`, `-Secondly-Remaining`. Over the limit: 429 `{"status":"error","message":"You
//!   have reached your ten_secondly_rolling limit.","errorType":"RATE_LIMIT","correlationId":…,
//!   "policyName":"TEN_SECONDLY_ROLLING","requestId":…}` **without** `Retry-After`. Search requests also
//!   count against a per-second limit (`policyName":"SECONDLY"`). Rejected requests are not counted.
//! - Object types are also accepted as `contact`/`company` and `0-1`/`0-2`; unknown ones answer 400 "Unable to
//!   infer object type from: …".
//! - Windows and token lifetimes run on Tokio's clock (see the crate documentation).
//!
//! Simplified:
//! - Only contacts and companies; no deals, no writes through the API (seed and edit with the methods here),
//!   no `propertiesWithHistory` (ignored), no property schema endpoint. The property "schema" of a type is
//!   the set of names generated or ever written.
//! - New and modified records are searchable at once (HubSpot lags a few seconds).
//! - Ties in search sort order are broken by id (HubSpot leaves them unspecified). `CONTAINS_TOKEN` matches
//!   whitespace-separated tokens with `*` wildcards at either end; `query` is a case-insensitive substring
//!   match on the default searchable properties.
//! - Inline and v4 association lists are never paginated.
//! - The wording of 400 messages is ours; status, `status`/`category` fields and body shape are HubSpot's.
//! - The daily limit (250,000/500,000/1,000,000 by tier, from the 10-second limit) never resets.
//! - Injected 5xx answers carry HubSpot's error body shape but no rate-limit headers.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::http::{HeaderName, Method, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, NaiveDate, SecondsFormat, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

pub use crate::common::{Fault, RecordedRequest};
use crate::common::{
    FaultQueue, Incoming, Reply, RequestLog, Server, Vendor, lock, parse_form, random_token, read,
    retry_after_text, uuid, write,
};
use crate::data;

const JSON: &str = "application/json;charset=utf-8";
const WINDOW: Duration = Duration::from_secs(10);
const SEARCH_CAP: u64 = 10_000;
const LIST_MAX: usize = 100;
const SEARCH_MAX: usize = 200;
const MAX_GROUPS: usize = 5;
const MAX_FILTERS_PER_GROUP: usize = 6;
const MAX_FILTERS: usize = 18;
const BATCH_MAX: usize = 1_000;
const NO_CREDENTIALS: &str = "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview";

/// An OAuth app the fake accepts refresh-token grants for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthClient {
    pub client_id: String,
    pub client_secret: String,
    pub refresh_token: String,
}

/// How a [`FakeHubspot`] behaves.
#[derive(Debug, Clone)]
pub struct FakeHubspotConfig {
    /// The private-app token accepted as `Authorization: Bearer …`; `None` accepts none.
    pub private_app_token: Option<String>,
    /// The OAuth app whose refresh token `POST /oauth/v1/token` accepts; `None` refuses every grant.
    pub oauth: Option<OAuthClient>,
    /// Lifetime of issued access tokens (`expires_in`); HubSpot's is 30 minutes.
    pub access_token_ttl: Duration,
    /// Requests per rolling 10 seconds (per private-app token / per OAuth app); `None` disables the limit and
    /// its headers.
    pub rate_limit_per_10s: Option<u32>,
    /// Search requests per rolling second; `None` disables it.
    pub search_rate_per_second: Option<u32>,
}

impl Default for FakeHubspotConfig {
    fn default() -> Self {
        Self {
            private_app_token: Some("hubspot-test-token".to_owned()),
            oauth: None,
            access_token_ttl: Duration::from_secs(1800),
            rate_limit_per_10s: Some(100),
            search_rate_per_second: Some(5),
        }
    }
}

/// A running fake HubSpot on `127.0.0.1`; it stops when dropped.
pub struct FakeHubspot {
    inner: Arc<Inner>,
    server: Server,
}

impl fmt::Debug for FakeHubspot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeHubspot")
            .field("base_url", &self.server.base_url())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ObjectType {
    Contacts,
    Companies,
}

impl ObjectType {
    fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "contacts" | "contact" | "0-1" => Some(Self::Contacts),
            "companies" | "company" | "0-2" => Some(Self::Companies),
            _ => None,
        }
    }

    /// For the test-helper methods: a wrong name is a bug in the test.
    fn expect(text: &str) -> Self {
        Self::parse(text).unwrap_or_else(|| panic!("testkit: unknown HubSpot object type {text:?}"))
    }

    fn plural(self) -> &'static str {
        match self {
            Self::Contacts => "contacts",
            Self::Companies => "companies",
        }
    }

    fn singular(self) -> &'static str {
        match self {
            Self::Contacts => "contact",
            Self::Companies => "company",
        }
    }

    fn modified_property(self) -> &'static str {
        match self {
            Self::Contacts => "lastmodifieddate",
            Self::Companies => "hs_lastmodifieddate",
        }
    }

    fn default_properties(self) -> &'static [&'static str] {
        match self {
            Self::Contacts => &["firstname", "lastname", "email"],
            Self::Companies => &["name", "domain"],
        }
    }

    fn query_properties(self) -> &'static [&'static str] {
        match self {
            Self::Contacts => &["firstname", "lastname", "email", "phone", "company"],
            Self::Companies => &["name", "domain", "website", "phone"],
        }
    }

    fn generated_properties(self) -> &'static [&'static str] {
        match self {
            Self::Contacts => &[
                "email",
                "firstname",
                "lastname",
                "phone",
                "company",
                "city",
                "country",
                "zip",
                "jobtitle",
                "lifecyclestage",
                "hs_lead_status",
            ],
            Self::Companies => &[
                "name",
                "domain",
                "website",
                "industry",
                "city",
                "country",
                "phone",
                "numberofemployees",
                "annualrevenue",
                "lifecyclestage",
            ],
        }
    }

    fn other(self) -> Self {
        match self {
            Self::Contacts => Self::Companies,
            Self::Companies => Self::Contacts,
        }
    }
}

#[derive(Debug, Clone)]
struct HubRecord {
    /// Non-system properties; empty values are not stored (HubSpot treats "" as no value).
    props: BTreeMap<String, String>,
    created: DateTime<Utc>,
    modified: DateTime<Utc>,
    archived_at: Option<DateTime<Utc>>,
    /// Fault injection: top-level fields that replace the rendered ones (see [`FakeHubspot::corrupt`]).
    corrupted: Option<Map<String, Value>>,
}

#[derive(Debug)]
struct ObjectStore {
    kind: ObjectType,
    records: BTreeMap<u64, HubRecord>,
    /// (modified ms, id) of live records: search in modified-date order without sorting.
    by_modified: BTreeSet<(i64, u64)>,
    schema: BTreeSet<String>,
    next_id: u64,
    live: usize,
}

impl ObjectStore {
    fn new(kind: ObjectType, first_id: u64) -> Self {
        let mut schema: BTreeSet<String> = kind
            .generated_properties()
            .iter()
            .map(|p| (*p).to_owned())
            .collect();
        for system in ["hs_object_id", "createdate", kind.modified_property()] {
            schema.insert(system.to_owned());
        }
        Self {
            kind,
            records: BTreeMap::new(),
            by_modified: BTreeSet::new(),
            schema,
            next_id: first_id,
            live: 0,
        }
    }

    fn allocate(&mut self, gap: u64) -> u64 {
        let id = self.next_id;
        self.next_id += gap.max(1);
        id
    }

    fn index(&mut self, id: u64, record: &HubRecord) {
        if record.archived_at.is_none() {
            self.by_modified
                .insert((record.modified.timestamp_millis(), id));
            self.live += 1;
        }
    }

    fn unindex(&mut self, id: u64, record: &HubRecord) {
        if record.archived_at.is_none() {
            self.by_modified
                .remove(&(record.modified.timestamp_millis(), id));
            self.live -= 1;
        }
    }

    fn upsert(&mut self, id: u64, record: HubRecord) {
        if let Some(old) = self.records.remove(&id) {
            self.unindex(id, &old);
        }
        self.index(id, &record);
        for name in record.props.keys() {
            if !self.schema.contains(name) {
                self.schema.insert(name.clone());
            }
        }
        self.records.insert(id, record);
        self.next_id = self.next_id.max(id + 1);
    }

    fn modify(&mut self, id: u64, change: impl FnOnce(&mut HubRecord)) -> bool {
        let Some(mut record) = self.records.remove(&id) else {
            return false;
        };
        self.unindex(id, &record);
        change(&mut record);
        self.index(id, &record);
        self.records.insert(id, record);
        true
    }

    fn live(&self, id: u64) -> bool {
        self.records
            .get(&id)
            .is_some_and(|r| r.archived_at.is_none())
    }

    /// A property as HubSpot would return it (system properties derived from the record).
    fn value(&self, id: u64, record: &HubRecord, name: &str) -> Option<String> {
        match name {
            "hs_object_id" => Some(id.to_string()),
            "createdate" => Some(iso(record.created)),
            n if n == self.kind.modified_property() => Some(iso(record.modified)),
            n => record.props.get(n).cloned(),
        }
    }
}

#[derive(Debug)]
struct HubData {
    contacts: ObjectStore,
    companies: ObjectStore,
    /// Contact → companies, in association order (the first live one is the primary).
    contact_companies: BTreeMap<u64, Vec<u64>>,
    company_contacts: BTreeMap<u64, Vec<u64>>,
    /// Makes generated e-mails and domains unique.
    seq: u64,
}

impl HubData {
    fn store(&self, kind: ObjectType) -> &ObjectStore {
        match kind {
            ObjectType::Contacts => &self.contacts,
            ObjectType::Companies => &self.companies,
        }
    }

    fn store_mut(&mut self, kind: ObjectType) -> &mut ObjectStore {
        match kind {
            ObjectType::Contacts => &mut self.contacts,
            ObjectType::Companies => &mut self.companies,
        }
    }

    fn primary_company(&self, contact: u64) -> Option<u64> {
        self.contact_companies
            .get(&contact)?
            .iter()
            .copied()
            .find(|c| self.companies.live(*c))
    }

    /// Live associated ids of `id` (of `from`) and whether each is the primary pair.
    fn associated(&self, from: ObjectType, id: u64) -> Vec<(u64, bool)> {
        match from {
            ObjectType::Contacts => {
                let primary = self.primary_company(id);
                self.contact_companies
                    .get(&id)
                    .into_iter()
                    .flatten()
                    .filter(|c| self.companies.live(**c))
                    .map(|c| (*c, Some(*c) == primary))
                    .collect()
            }
            ObjectType::Companies => self
                .company_contacts
                .get(&id)
                .into_iter()
                .flatten()
                .filter(|c| self.contacts.live(**c))
                .map(|c| (*c, self.primary_company(*c) == Some(id)))
                .collect(),
        }
    }
}

#[derive(Debug, Default)]
struct Usage {
    window: VecDeque<Instant>,
    search: VecDeque<Instant>,
    daily: u64,
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    per_10s: Option<u32>,
    search_per_second: Option<u32>,
}

#[derive(Debug)]
struct Inner {
    base_url: String,
    private_app_token: Option<String>,
    oauth: Option<OAuthClient>,
    ttl: Duration,
    limits: Mutex<Limits>,
    data: RwLock<HubData>,
    /// Issued OAuth access tokens and when each expires (Tokio's clock, so paused-time tests can age them).
    tokens: Mutex<HashMap<String, Instant>>,
    usage: Mutex<HashMap<String, Usage>>,
    faults: FaultQueue,
    log: RequestLog,
}

enum Principal {
    PrivateApp(String),
    OAuth,
}

fn iso(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn truncate_ms(at: DateTime<Utc>) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(at.timestamp_millis())
        .single()
        .unwrap_or(at)
}

fn from_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// A date as HubSpot accepts it in filters: epoch milliseconds, ISO-8601, or a bare date (midnight UTC).
fn parse_date_ms(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(ms) = text.parse::<i64>() {
        return Some(ms);
    }
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Some(at.timestamp_millis());
    }
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    Some(date.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis())
}

fn error_reply(status: StatusCode, message: &str, category: &str) -> Reply {
    let correlation = uuid();
    Reply::json(
        status,
        JSON,
        &json!({"status": "error", "message": message, "correlationId": correlation, "category": category}),
    )
    .header("x-hubspot-correlation-id", correlation)
}

fn validation(message: impl AsRef<str>) -> Reply {
    error_reply(
        StatusCode::BAD_REQUEST,
        message.as_ref(),
        "VALIDATION_ERROR",
    )
}

fn unknown_type(name: &str) -> Reply {
    error_reply(
        StatusCode::BAD_REQUEST,
        &format!("Unable to infer object type from: {name}"),
        "OBJECT_NOT_FOUND",
    )
}

fn not_found() -> Reply {
    error_reply(
        StatusCode::NOT_FOUND,
        "resource not found",
        "OBJECT_NOT_FOUND",
    )
}

fn rate_limited(message: &str, policy: &str) -> Reply {
    let correlation = uuid();
    Reply::json(
        StatusCode::TOO_MANY_REQUESTS,
        JSON,
        &json!({
            "status": "error",
            "message": message,
            "errorType": "RATE_LIMIT",
            "correlationId": correlation,
            "policyName": policy,
            "requestId": uuid(),
        }),
    )
    .header("x-hubspot-correlation-id", correlation)
}

fn encode_after(id: u64) -> String {
    URL_SAFE_NO_PAD.encode(id.to_string())
}

fn decode_after(token: &str) -> Option<u64> {
    let token = token.trim();
    let decoded = URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.trim().parse::<u64>().ok());
    decoded.or_else(|| token.parse::<u64>().ok())
}

fn duration_ago(seconds: i64) -> String {
    let seconds = seconds.max(0);
    match seconds {
        s if s < 60 => format!("{s} second(s)"),
        s if s < 3_600 => format!("{} minute(s)", s / 60),
        s if s < 86_400 => format!("{} hour(s)", s / 3_600),
        s => format!("{} day(s)", s / 86_400),
    }
}

/// A property value as HubSpot stores it: a string, `None` for no value.
fn property_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        other => Some(other.to_string()),
    }
}

// ---------------------------------------------------------------------------------------------------------
// Search filters

#[derive(Debug, Clone, Copy, PartialEq)]
enum PropKind {
    Date,
    Number,
    Text,
}

fn prop_kind(kind: ObjectType, name: &str) -> PropKind {
    match name {
        "createdate" | "lastmodifieddate" | "hs_lastmodifieddate" | "closedate" => PropKind::Date,
        n if n == kind.modified_property() => PropKind::Date,
        "hs_object_id" | "numberofemployees" | "annualrevenue" => PropKind::Number,
        _ => PropKind::Text,
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Ms(i64),
    Num(f64),
    Text(String),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Neq,
    Lt,
    Lte,
    Gt,
    Gte,
    Between,
    In,
    NotIn,
    Has,
    NotHas,
    ContainsToken,
    NotContainsToken,
}

#[derive(Debug)]
struct Filter {
    prop: String,
    op: Op,
    value: Option<Operand>,
    high: Option<Operand>,
    values: Vec<Operand>,
}

fn operand(kind: PropKind, prop: &str, raw: &Value) -> Result<Operand, Reply> {
    let text = match raw {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => {
            return Err(validation(format!(
                "Invalid filter value for property {prop}: {raw}"
            )));
        }
    };
    match kind {
        PropKind::Date => parse_date_ms(&text).map(Operand::Ms).ok_or_else(|| {
            validation(format!(
                "{text} is not a valid date value for property {prop}"
            ))
        }),
        PropKind::Number => {
            text.trim().parse::<f64>().map(Operand::Num).map_err(|_| {
                validation(format!("{text} is not a valid number for property {prop}"))
            })
        }
        PropKind::Text => Ok(Operand::Text(text.to_lowercase())),
    }
}

fn parse_filter(kind: ObjectType, raw: &Value, schema: &BTreeSet<String>) -> Result<Filter, Reply> {
    let prop = raw
        .get("propertyName")
        .and_then(Value::as_str)
        .ok_or_else(|| validation("Every filter needs a propertyName"))?
        .to_owned();
    if !schema.contains(&prop) {
        return Err(validation(format!(
            "There was a problem with the request: property {prop} does not exist for object type {}",
            kind.plural()
        )));
    }
    let op = match raw.get("operator").and_then(Value::as_str).unwrap_or("EQ") {
        "EQ" => Op::Eq,
        "NEQ" => Op::Neq,
        "LT" => Op::Lt,
        "LTE" => Op::Lte,
        "GT" => Op::Gt,
        "GTE" => Op::Gte,
        "BETWEEN" => Op::Between,
        "IN" => Op::In,
        "NOT_IN" => Op::NotIn,
        "HAS_PROPERTY" => Op::Has,
        "NOT_HAS_PROPERTY" => Op::NotHas,
        "CONTAINS_TOKEN" => Op::ContainsToken,
        "NOT_CONTAINS_TOKEN" => Op::NotContainsToken,
        other => return Err(validation(format!("Unknown filter operator: {other}"))),
    };
    let pkind = if matches!(op, Op::ContainsToken | Op::NotContainsToken) {
        PropKind::Text
    } else {
        prop_kind(kind, &prop)
    };
    let mut filter = Filter {
        prop,
        op,
        value: None,
        high: None,
        values: Vec::new(),
    };
    match op {
        Op::Has | Op::NotHas => {}
        Op::In | Op::NotIn => {
            let values = raw.get("values").and_then(Value::as_array).ok_or_else(|| {
                validation(format!(
                    "Operator {op:?} needs `values` for {}",
                    filter.prop
                ))
            })?;
            filter.values = values
                .iter()
                .map(|v| operand(pkind, &filter.prop, v))
                .collect::<Result<_, _>>()?;
        }
        Op::Between => {
            let value = raw
                .get("value")
                .ok_or_else(|| validation("BETWEEN needs `value`"))?;
            let high = raw
                .get("highValue")
                .ok_or_else(|| validation("BETWEEN needs `highValue`"))?;
            filter.value = Some(operand(pkind, &filter.prop, value)?);
            filter.high = Some(operand(pkind, &filter.prop, high)?);
        }
        _ => {
            let value = raw
                .get("value")
                .ok_or_else(|| validation(format!("Filter on {} needs a value", filter.prop)))?;
            filter.value = Some(operand(pkind, &filter.prop, value)?);
        }
    }
    Ok(filter)
}

/// A record's value for a filter, typed like the operand.
fn record_operand(
    store: &ObjectStore,
    id: u64,
    record: &HubRecord,
    prop: &str,
    pkind: PropKind,
) -> Option<Operand> {
    match prop {
        "hs_object_id" => Some(Operand::Num(id as f64)),
        "createdate" => Some(Operand::Ms(record.created.timestamp_millis())),
        p if p == store.kind.modified_property() => {
            Some(Operand::Ms(record.modified.timestamp_millis()))
        }
        p => {
            let text = record.props.get(p)?;
            match pkind {
                PropKind::Date => parse_date_ms(text).map(Operand::Ms),
                PropKind::Number => text.trim().parse::<f64>().ok().map(Operand::Num),
                PropKind::Text => Some(Operand::Text(text.to_lowercase())),
            }
        }
    }
}

fn compare(a: &Operand, b: &Operand) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Operand::Ms(a), Operand::Ms(b)) => Some(a.cmp(b)),
        (Operand::Num(a), Operand::Num(b)) => a.partial_cmp(b),
        (Operand::Text(a), Operand::Text(b)) => match (a.parse::<f64>(), b.parse::<f64>()) {
            (Ok(x), Ok(y)) => x.partial_cmp(&y),
            _ => Some(a.cmp(b)),
        },
        _ => None,
    }
}

fn token_matches(value: &str, pattern: &str) -> bool {
    let glob = |candidate: &str| match (pattern.strip_prefix('*'), pattern.strip_suffix('*')) {
        (Some(rest), Some(_)) => candidate.contains(rest.trim_end_matches('*')),
        (Some(rest), None) => candidate.ends_with(rest),
        (None, Some(rest)) => candidate.starts_with(rest),
        (None, None) => candidate == pattern,
    };
    glob(value) || value.split_whitespace().any(glob)
}

impl Filter {
    fn matches(&self, store: &ObjectStore, id: u64, record: &HubRecord) -> bool {
        use std::cmp::Ordering::{Equal, Greater, Less};
        let pkind = if matches!(self.op, Op::ContainsToken | Op::NotContainsToken) {
            PropKind::Text
        } else {
            prop_kind(store.kind, &self.prop)
        };
        let actual = record_operand(store, id, record, &self.prop, pkind);
        let cmp_value = |operand: &Option<Operand>| match (&actual, operand) {
            (Some(a), Some(b)) => compare(a, b),
            _ => None,
        };
        let equal_any = || {
            self.values
                .iter()
                .any(|v| actual.as_ref().and_then(|a| compare(a, v)) == Some(Equal))
        };
        match self.op {
            Op::Has => actual.is_some(),
            Op::NotHas => actual.is_none(),
            Op::Eq => cmp_value(&self.value) == Some(Equal),
            Op::Neq => cmp_value(&self.value) != Some(Equal),
            Op::Lt => cmp_value(&self.value) == Some(Less),
            Op::Lte => matches!(cmp_value(&self.value), Some(Less | Equal)),
            Op::Gt => cmp_value(&self.value) == Some(Greater),
            Op::Gte => matches!(cmp_value(&self.value), Some(Greater | Equal)),
            Op::Between => {
                matches!(cmp_value(&self.value), Some(Greater | Equal))
                    && matches!(cmp_value(&self.high), Some(Less | Equal))
            }
            Op::In => equal_any(),
            Op::NotIn => !equal_any(),
            Op::ContainsToken | Op::NotContainsToken => {
                let found = match (&actual, &self.value) {
                    (Some(Operand::Text(value)), Some(Operand::Text(pattern))) => {
                        token_matches(value, pattern)
                    }
                    _ => false,
                };
                found == (self.op == Op::ContainsToken)
            }
        }
    }
}

/// Collects one page of an ordered walk and counts every match.
struct Pager {
    after: usize,
    limit: usize,
    total: usize,
    page: Vec<u64>,
}

impl Pager {
    fn offer(&mut self, id: u64) {
        if self.total >= self.after && self.page.len() < self.limit {
            self.page.push(id);
        }
        self.total += 1;
    }
}

fn json_u64(value: Option<&Value>, default: u64, name: &str) -> Result<u64, Reply> {
    match value {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| validation(format!("Invalid {name}: {n}"))),
        Some(Value::String(s)) => s
            .trim()
            .parse::<u64>()
            .map_err(|_| validation(format!("Invalid {name}: {s}"))),
        Some(other) => Err(validation(format!("Invalid {name}: {other}"))),
    }
}

/// Which properties to return.
enum Selection {
    Default,
    Named(Vec<String>),
}

impl Selection {
    fn names(&self, kind: ObjectType) -> BTreeSet<String> {
        let mut names: BTreeSet<String> = ["hs_object_id", "createdate", kind.modified_property()]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        match self {
            Selection::Default => {
                names.extend(kind.default_properties().iter().map(|s| (*s).to_owned()))
            }
            Selection::Named(list) => names.extend(list.iter().cloned()),
        }
        names
    }
}

fn render(
    data: &HubData,
    kind: ObjectType,
    id: u64,
    record: &HubRecord,
    names: &BTreeSet<String>,
    associations: &[ObjectType],
) -> Value {
    let store = data.store(kind);
    let mut properties = Map::new();
    for name in names {
        match store.value(id, record, name) {
            Some(value) => {
                properties.insert(name.clone(), Value::String(value));
            }
            None if store.schema.contains(name) => {
                properties.insert(name.clone(), Value::Null);
            }
            None => {}
        }
    }
    let mut object = Map::new();
    object.insert("id".into(), Value::String(id.to_string()));
    object.insert("properties".into(), Value::Object(properties));
    object.insert("createdAt".into(), Value::String(iso(record.created)));
    object.insert("updatedAt".into(), Value::String(iso(record.modified)));
    object.insert("archived".into(), Value::Bool(record.archived_at.is_some()));
    if let Some(at) = record.archived_at {
        object.insert("archivedAt".into(), Value::String(iso(at)));
    }
    if let Some(fields) = &record.corrupted {
        object.extend(fields.clone());
    }
    let mut assoc = Map::new();
    for target in associations {
        if *target != kind.other() {
            continue;
        }
        let linked = data.associated(kind, id);
        if linked.is_empty() {
            continue;
        }
        let label = format!("{}_to_{}", kind.singular(), target.singular());
        let mut results = Vec::new();
        for (other, primary) in linked {
            if primary {
                results.push(json!({"id": other.to_string(), "type": label}));
            }
            results.push(json!({"id": other.to_string(), "type": format!("{label}_unlabeled")}));
        }
        assoc.insert(target.plural().to_owned(), json!({ "results": results }));
    }
    if !assoc.is_empty() {
        object.insert("associations".into(), Value::Object(assoc));
    }
    Value::Object(object)
}

fn split_list(values: &mut Vec<String>, raw: &str) {
    values.extend(
        raw.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
    );
}

impl Inner {
    fn authenticate(&self, request: &Incoming) -> Result<Principal, Reply> {
        let unauthorized = || {
            error_reply(
                StatusCode::UNAUTHORIZED,
                NO_CREDENTIALS,
                "INVALID_AUTHENTICATION",
            )
        };
        let header = request.header("authorization").ok_or_else(unauthorized)?;
        let (scheme, token) = header.trim().split_once(' ').ok_or_else(unauthorized)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(unauthorized());
        }
        let token = token.trim();
        if self.private_app_token.as_deref() == Some(token) {
            return Ok(Principal::PrivateApp(token.to_owned()));
        }
        let expires = lock(&self.tokens)
            .get(token)
            .copied()
            .ok_or_else(unauthorized)?;
        let now = Instant::now();
        if now < expires {
            return Ok(Principal::OAuth);
        }
        let ago = now.duration_since(expires);
        let expired_at = Utc::now() - chrono::Duration::from_std(ago).unwrap_or_default();
        let correlation = uuid();
        Err(Reply::json(
            StatusCode::UNAUTHORIZED,
            JSON,
            &json!({
                "status": "error",
                "message": format!(
                    "The OAuth token used to make this call expired {} ago.",
                    duration_ago(i64::try_from(ago.as_secs()).unwrap_or(i64::MAX))
                ),
                "correlationId": correlation,
                "category": "EXPIRED_AUTHENTICATION",
                "context": {"expire time": [iso(expired_at)]},
            }),
        )
        .header("x-hubspot-correlation-id", correlation))
    }

    /// Counts the request against the rate limits, or refuses it.
    fn admit(
        &self,
        principal: &Principal,
        search: bool,
    ) -> Result<Vec<(HeaderName, String)>, Reply> {
        let limits = *lock(&self.limits);
        let (key, private) = match principal {
            Principal::PrivateApp(token) => (format!("private-app:{token}"), true),
            Principal::OAuth => ("oauth-app".to_owned(), false),
        };
        let now = Instant::now();
        let mut usage_map = lock(&self.usage);
        let usage = usage_map.entry(key).or_default();
        while usage
            .window
            .front()
            .is_some_and(|t| now.duration_since(*t) >= WINDOW)
        {
            usage.window.pop_front();
        }
        while usage
            .search
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            usage.search.pop_front();
        }
        let daily_max = |max: u32| match max {
            0..=100 => 250_000u64,
            101..=150 => 500_000,
            _ => 1_000_000,
        };
        let headers = |usage: &Usage| {
            let mut headers = Vec::new();
            if let Some(max) = limits.per_10s {
                let used = usage.window.len() as u64;
                headers.push((
                    HeaderName::from_static("x-hubspot-ratelimit-max"),
                    max.to_string(),
                ));
                headers.push((
                    HeaderName::from_static("x-hubspot-ratelimit-remaining"),
                    u64::from(max).saturating_sub(used).to_string(),
                ));
                headers.push((
                    HeaderName::from_static("x-hubspot-ratelimit-interval-milliseconds"),
                    "10000".into(),
                ));
                if private {
                    let daily = daily_max(max);
                    let secondly = (max / 10).max(1);
                    let last_second = usage
                        .window
                        .iter()
                        .rev()
                        .take_while(|t| now.duration_since(**t) < Duration::from_secs(1))
                        .count();
                    headers.push((
                        HeaderName::from_static("x-hubspot-ratelimit-daily"),
                        daily.to_string(),
                    ));
                    headers.push((
                        HeaderName::from_static("x-hubspot-ratelimit-daily-remaining"),
                        daily.saturating_sub(usage.daily).to_string(),
                    ));
                    headers.push((
                        HeaderName::from_static("x-hubspot-ratelimit-secondly"),
                        secondly.to_string(),
                    ));
                    headers.push((
                        HeaderName::from_static("x-hubspot-ratelimit-secondly-remaining"),
                        u64::from(secondly)
                            .saturating_sub(last_second as u64)
                            .to_string(),
                    ));
                }
            }
            headers
        };
        if let Some(max) = limits.per_10s {
            if usage.window.len() >= max as usize {
                return Err(rate_limited(
                    "You have reached your ten_secondly_rolling limit.",
                    "TEN_SECONDLY_ROLLING",
                )
                .headers(headers(usage)));
            }
            if private && usage.daily >= daily_max(max) {
                return Err(rate_limited("You have reached your daily limit.", "DAILY")
                    .headers(headers(usage)));
            }
        }
        if search
            && let Some(per_second) = limits.search_per_second
            && usage.search.len() >= per_second as usize
        {
            return Err(
                rate_limited("You have reached your secondly limit.", "SECONDLY")
                    .headers(headers(usage)),
            );
        }
        usage.window.push_back(now);
        if search {
            usage.search.push_back(now);
        }
        usage.daily += 1;
        Ok(headers(usage))
    }

    fn oauth_token(&self, request: &Incoming) -> Reply {
        let form: HashMap<String, String> = parse_form(&String::from_utf8_lossy(&request.body))
            .into_iter()
            .collect();
        let bad = |status: &str, message: &str| {
            Reply::json(
                StatusCode::BAD_REQUEST,
                JSON,
                &json!({"status": status, "message": message, "correlationId": uuid(), "requestId": uuid()}),
            )
        };
        if form.get("grant_type").map(String::as_str) != Some("refresh_token") {
            return bad("BAD_GRANT_TYPE", "missing or unknown grant type");
        }
        let Some(oauth) = &self.oauth else {
            return bad("BAD_CLIENT_ID", "missing or invalid client_id");
        };
        if form.get("client_id") != Some(&oauth.client_id) {
            return bad("BAD_CLIENT_ID", "missing or invalid client_id");
        }
        if form.get("client_secret") != Some(&oauth.client_secret) {
            return bad("BAD_CLIENT_SECRET", "missing or invalid client_secret");
        }
        if form.get("refresh_token") != Some(&oauth.refresh_token) {
            return bad("BAD_REFRESH_TOKEN", "missing or invalid refresh token");
        }
        let token = format!("C{}", random_token(79));
        let now = Instant::now();
        let expires = now
            .checked_add(self.ttl)
            .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400));
        lock(&self.tokens).insert(token.clone(), expires);
        Reply::json(
            StatusCode::OK,
            JSON,
            &json!({
                "token_type": "bearer",
                "refresh_token": oauth.refresh_token,
                "access_token": token,
                "expires_in": self.ttl.as_secs(),
            }),
        )
    }

    fn list(&self, type_name: &str, request: &Incoming) -> Reply {
        let Some(kind) = ObjectType::parse(type_name) else {
            return unknown_type(type_name);
        };
        let params = request.query_pairs();
        let mut limit = 10usize;
        let mut after = None;
        let mut properties: Option<Vec<String>> = None;
        let mut associations = Vec::new();
        let mut archived = false;
        for (key, value) in &params {
            match key.as_str() {
                "limit" => match value.trim().parse::<usize>() {
                    Ok(n) if (1..=LIST_MAX).contains(&n) => limit = n,
                    _ => {
                        return validation(format!(
                            "limit must be between 1 and {LIST_MAX}, got {value}"
                        ));
                    }
                },
                "after" => match decode_after(value) {
                    Some(id) => after = Some(id),
                    None => return validation(format!("Invalid paging cursor after={value}")),
                },
                "properties" => split_list(properties.get_or_insert_with(Vec::new), value),
                "associations" => split_list(&mut associations, value),
                "archived" => match value.as_str() {
                    "true" => archived = true,
                    "false" => archived = false,
                    _ => return validation(format!("Invalid boolean for archived: {value}")),
                },
                _ => {}
            }
        }
        let associations: Vec<ObjectType> = associations
            .iter()
            .filter_map(|a| ObjectType::parse(a))
            .collect();
        let selection = properties.map_or(Selection::Default, Selection::Named);
        let names = selection.names(kind);
        let data = read(&self.data);
        let store = data.store(kind);
        let mut matching = store
            .records
            .range(after.unwrap_or(0)..)
            .filter(|(_, record)| record.archived_at.is_some() == archived);
        let page: Vec<(&u64, &HubRecord)> = matching.by_ref().take(limit).collect();
        let next = matching.next().map(|(id, _)| *id);
        let results: Vec<Value> = page
            .iter()
            .map(|(id, record)| render(&data, kind, **id, record, &names, &associations))
            .collect();
        drop(data);
        let mut body = json!({ "results": results });
        if let Some(next) = next {
            let token = encode_after(next);
            let mut link = url::form_urlencoded::Serializer::new(String::new());
            for (key, value) in params.iter().filter(|(k, _)| k != "after") {
                link.append_pair(key, value);
            }
            link.append_pair("after", &token);
            body["paging"] = json!({"next": {
                "after": token,
                "link": format!("{}/crm/v3/objects/{}?{}", self.base_url, kind.plural(), link.finish()),
            }});
        }
        Reply::json(StatusCode::OK, JSON, &body).list_page()
    }

    fn get_one(&self, type_name: &str, id_text: &str, request: &Incoming) -> Reply {
        let Some(kind) = ObjectType::parse(type_name) else {
            return unknown_type(type_name);
        };
        let mut properties: Option<Vec<String>> = None;
        let mut associations = Vec::new();
        let mut archived = false;
        let mut id_property = None;
        for (key, value) in request.query_pairs() {
            match key.as_str() {
                "properties" => split_list(properties.get_or_insert_with(Vec::new), &value),
                "associations" => split_list(&mut associations, &value),
                "archived" => archived = value == "true",
                "idProperty" => id_property = Some(value),
                _ => {}
            }
        }
        let associations: Vec<ObjectType> = associations
            .iter()
            .filter_map(|a| ObjectType::parse(a))
            .collect();
        let names = properties
            .map_or(Selection::Default, Selection::Named)
            .names(kind);
        let data = read(&self.data);
        let store = data.store(kind);
        let found = match id_property.as_deref() {
            None | Some("hs_object_id") => id_text
                .parse::<u64>()
                .ok()
                .and_then(|id| store.records.get_key_value(&id)),
            Some(prop) => store.records.iter().find(|(id, record)| {
                store
                    .value(**id, record, prop)
                    .is_some_and(|v| v.eq_ignore_ascii_case(id_text))
            }),
        };
        match found {
            Some((id, record)) if record.archived_at.is_some() == archived => Reply::json(
                StatusCode::OK,
                JSON,
                &render(&data, kind, *id, record, &names, &associations),
            ),
            _ => not_found(),
        }
    }

    fn search(&self, type_name: &str, request: &Incoming) -> Reply {
        let Some(kind) = ObjectType::parse(type_name) else {
            return unknown_type(type_name);
        };
        let body: Value = match serde_json::from_slice(&request.body) {
            Ok(value @ Value::Object(_)) => value,
            Ok(_) => return validation("Invalid input JSON: expected an object"),
            Err(err) => {
                return validation(format!(
                    "Invalid input JSON on line {}, column {}: {err}",
                    err.line(),
                    err.column()
                ));
            }
        };
        let limit = match json_u64(body.get("limit"), 10, "limit") {
            Ok(n) if (1..=SEARCH_MAX as u64).contains(&n) => n,
            Ok(n) => {
                return validation(format!("limit must be between 1 and {SEARCH_MAX}, got {n}"));
            }
            Err(reply) => return reply,
        };
        let after = match json_u64(body.get("after"), 0, "after") {
            Ok(n) => n,
            Err(reply) => return reply,
        };
        if after + limit > SEARCH_CAP {
            return validation(format!(
                "There was a problem with the request. Search results are limited to {SEARCH_CAP}: after ({after}) + limit ({limit}) goes past them."
            ));
        }
        let properties = match body.get("properties") {
            None | Some(Value::Null) => Selection::Default,
            Some(Value::Array(items)) if items.is_empty() => Selection::Default,
            Some(Value::Array(items)) => Selection::Named(
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect(),
            ),
            Some(other) => return validation(format!("properties must be an array, got {other}")),
        };
        let query = body
            .get("query")
            .and_then(Value::as_str)
            .map(|q| q.trim().to_lowercase())
            .filter(|q| !q.is_empty());
        let data = read(&self.data);
        let store = data.store(kind);

        let groups_raw = match body.get("filterGroups") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(groups)) => groups.clone(),
            Some(other) => {
                return validation(format!("filterGroups must be an array, got {other}"));
            }
        };
        if groups_raw.len() > MAX_GROUPS {
            return validation(format!(
                "Too many filter groups: {} (at most {MAX_GROUPS})",
                groups_raw.len()
            ));
        }
        let mut groups: Vec<Vec<Filter>> = Vec::new();
        let mut filter_count = 0;
        for group in &groups_raw {
            let filters = group
                .get("filters")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if filters.len() > MAX_FILTERS_PER_GROUP {
                return validation(format!(
                    "Too many filters in a group: {} (at most {MAX_FILTERS_PER_GROUP})",
                    filters.len()
                ));
            }
            filter_count += filters.len();
            let mut compiled = Vec::new();
            for filter in &filters {
                match parse_filter(kind, filter, &store.schema) {
                    Ok(filter) => compiled.push(filter),
                    Err(reply) => return reply,
                }
            }
            groups.push(compiled);
        }
        if filter_count > MAX_FILTERS {
            return validation(format!(
                "Too many filters: {filter_count} (at most {MAX_FILTERS})"
            ));
        }

        let sorts = match body.get("sorts") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(sorts)) => sorts.clone(),
            Some(other) => return validation(format!("sorts must be an array, got {other}")),
        };
        if sorts.len() > 1 {
            return validation("Only one sort is supported per search request");
        }
        let (sort_prop, descending) = match sorts.first() {
            None => ("hs_object_id".to_owned(), false),
            Some(Value::String(spec)) => match spec.strip_prefix('-') {
                Some(prop) => (prop.to_owned(), true),
                None => (spec.clone(), false),
            },
            Some(sort) => {
                let Some(prop) = sort.get("propertyName").and_then(Value::as_str) else {
                    return validation("Every sort needs a propertyName");
                };
                let descending = match sort
                    .get("direction")
                    .and_then(Value::as_str)
                    .unwrap_or("ASCENDING")
                {
                    "ASCENDING" => false,
                    "DESCENDING" => true,
                    other => return validation(format!("Invalid sort direction: {other}")),
                };
                (prop.to_owned(), descending)
            }
        };
        if !store.schema.contains(&sort_prop) {
            return validation(format!(
                "There was a problem with the request: property {sort_prop} does not exist for object type {}",
                kind.plural()
            ));
        }

        let matches = |id: u64, record: &HubRecord| {
            record.archived_at.is_none()
                && (groups.is_empty()
                    || groups
                        .iter()
                        .any(|g| g.iter().all(|f| f.matches(store, id, record))))
                && query.as_ref().is_none_or(|q| {
                    kind.query_properties().iter().any(|p| {
                        record
                            .props
                            .get(*p)
                            .is_some_and(|v| v.to_lowercase().contains(q.as_str()))
                    })
                })
        };
        let mut pager = Pager {
            after: after as usize,
            limit: limit as usize,
            total: 0,
            page: Vec::new(),
        };
        if sort_prop == "hs_object_id" {
            let mut walk = |(id, record): (&u64, &HubRecord)| {
                if matches(*id, record) {
                    pager.offer(*id);
                }
            };
            if descending {
                store.records.iter().rev().for_each(&mut walk);
            } else {
                store.records.iter().for_each(&mut walk);
            }
        } else if sort_prop == kind.modified_property() {
            let mut walk = |(_, id): &(i64, u64)| {
                if let Some(record) = store.records.get(id)
                    && matches(*id, record)
                {
                    pager.offer(*id);
                }
            };
            if descending {
                store.by_modified.iter().rev().for_each(&mut walk);
            } else {
                store.by_modified.iter().for_each(&mut walk);
            }
        } else {
            let pkind = prop_kind(kind, &sort_prop);
            let mut keyed: Vec<(Option<Operand>, u64)> = store
                .records
                .iter()
                .filter(|(id, record)| matches(**id, record))
                .map(|(id, record)| (record_operand(store, *id, record, &sort_prop, pkind), *id))
                .collect();
            keyed.sort_by(|(a, a_id), (b, b_id)| {
                let by_value = match (a, b) {
                    (Some(a), Some(b)) => {
                        let ordering = compare(a, b).unwrap_or(std::cmp::Ordering::Equal);
                        if descending {
                            ordering.reverse()
                        } else {
                            ordering
                        }
                    }
                    // Records without a value come last either way.
                    (Some(_), None) => std::cmp::Ordering::Less,
                    (None, Some(_)) => std::cmp::Ordering::Greater,
                    (None, None) => std::cmp::Ordering::Equal,
                };
                by_value.then(if descending {
                    b_id.cmp(a_id)
                } else {
                    a_id.cmp(b_id)
                })
            });
            keyed.iter().for_each(|(_, id)| pager.offer(*id));
        }

        let names = properties.names(kind);
        let results: Vec<Value> = pager
            .page
            .iter()
            .filter_map(|id| {
                store
                    .records
                    .get(id)
                    .map(|record| render(&data, kind, *id, record, &names, &[]))
            })
            .collect();
        drop(data);
        let mut body = json!({ "total": pager.total, "results": results });
        let reached = pager.after + pager.page.len();
        if reached < pager.total {
            body["paging"] = json!({"next": {"after": reached.to_string(), "link": format!("?after={reached}")}});
        }
        Reply::json(StatusCode::OK, JSON, &body).list_page()
    }

    fn batch_read_associations(&self, from_name: &str, to_name: &str, request: &Incoming) -> Reply {
        let Some(from) = ObjectType::parse(from_name) else {
            return unknown_type(from_name);
        };
        let Some(to) = ObjectType::parse(to_name) else {
            return unknown_type(to_name);
        };
        if from == to {
            return validation(format!(
                "No association types exist from {} to {}",
                from.plural(),
                to.plural()
            ));
        }
        let body: Value = match serde_json::from_slice(&request.body) {
            Ok(value) => value,
            Err(err) => {
                return validation(format!(
                    "Invalid input JSON on line {}, column {}: {err}",
                    err.line(),
                    err.column()
                ));
            }
        };
        let Some(inputs) = body.get("inputs").and_then(Value::as_array) else {
            return validation("Invalid input JSON: `inputs` must be an array");
        };
        if inputs.len() > BATCH_MAX {
            return validation(format!(
                "Batch size {} is over the limit of {BATCH_MAX}",
                inputs.len()
            ));
        }
        let started = iso(Utc::now());
        let data = read(&self.data);
        let (primary_type, unlabeled_type) = match from {
            ObjectType::Contacts => (1, 279),
            ObjectType::Companies => (2, 280),
        };
        let mut results = Vec::new();
        let mut errors = Vec::new();
        for input in inputs {
            let id_text = match input.get("id") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => return validation("Every input needs an `id`"),
            };
            let linked = id_text
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|id| data.store(from).live(*id))
                .map(|id| data.associated(from, id))
                .unwrap_or_default();
            if linked.is_empty() {
                errors.push(json!({
                    "status": "error",
                    "category": "OBJECT_NOT_FOUND",
                    "subCategory": "crm.associations.NO_ASSOCIATIONS_FOUND",
                    "message": format!("No {} is associated with {} {id_text}.", to.singular(), from.singular()),
                    "context": {"fromObjectId": [id_text]},
                }));
                continue;
            }
            let to_list: Vec<Value> = linked
                .iter()
                .map(|(other, primary)| {
                    let mut types = Vec::new();
                    if *primary {
                        types.push(json!({"category": "HUBSPOT_DEFINED", "typeId": primary_type, "label": "Primary"}));
                    }
                    types.push(json!({"category": "HUBSPOT_DEFINED", "typeId": unlabeled_type, "label": null}));
                    json!({"toObjectId": other, "associationTypes": types})
                })
                .collect();
            results.push(json!({"from": {"id": id_text}, "to": to_list}));
        }
        drop(data);
        let mut body = json!({"status": "COMPLETE", "results": results, "startedAt": started, "completedAt": iso(Utc::now())});
        let status = if errors.is_empty() {
            StatusCode::OK
        } else {
            body["numErrors"] = json!(errors.len());
            body["errors"] = Value::Array(errors);
            StatusCode::MULTI_STATUS
        };
        Reply::json(status, JSON, &body)
    }
}

impl Vendor for Inner {
    fn faults(&self) -> &FaultQueue {
        &self.faults
    }

    fn log(&self) -> &RequestLog {
        &self.log
    }

    fn fault_exempt(&self, request: &Incoming) -> bool {
        request.path == "/oauth/v1/token"
    }

    fn credential(&self, request: &Incoming) -> Option<String> {
        request.header("authorization").map(str::to_owned)
    }

    fn injected_server_error(&self, status: StatusCode) -> Reply {
        let message = match status {
            StatusCode::BAD_GATEWAY => "Bad Gateway",
            StatusCode::SERVICE_UNAVAILABLE => "Service Unavailable",
            _ => "internal error",
        };
        error_reply(status, message, "INTERNAL_ERROR")
    }

    fn injected_rate_limit(&self, retry_after: Option<f64>) -> Reply {
        let reply = rate_limited(
            "You have reached your ten_secondly_rolling limit.",
            "TEN_SECONDLY_ROLLING",
        );
        match retry_after {
            Some(seconds) => reply.header("retry-after", retry_after_text(seconds, false)),
            None => reply,
        }
    }

    fn handle(&self, request: &Incoming) -> Reply {
        if request.path == "/oauth/v1/token" {
            return if request.method == Method::POST {
                self.oauth_token(request)
            } else {
                error_reply(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "Method not allowed",
                    "VALIDATION_ERROR",
                )
            };
        }
        let principal = match self.authenticate(request) {
            Ok(principal) => principal,
            Err(reply) => return reply,
        };
        let segments: Vec<&str> = request.path.trim_matches('/').split('/').collect();
        let is_search = request.method == Method::POST
            && matches!(segments.as_slice(), ["crm", "v3", "objects", _, "search"]);
        let headers = match self.admit(&principal, is_search) {
            Ok(headers) => headers,
            Err(reply) => return reply,
        };
        let get = request.method == Method::GET;
        let post = request.method == Method::POST;
        let reply = match segments.as_slice() {
            ["crm", "v3", "objects", object] if get => self.list(object, request),
            ["crm", "v3", "objects", object, "search"] if post => self.search(object, request),
            ["crm", "v3", "objects", object, id] if get => self.get_one(object, id, request),
            ["crm", "v4", "associations", from, to, "batch", "read"] if post => {
                self.batch_read_associations(from, to, request)
            }
            _ => not_found(),
        };
        reply.headers(headers)
    }
}

// ---------------------------------------------------------------------------------------------------------
// Seeding

/// Evenly spread creation times with jitter, ascending, from three years ago to an hour ago (ms).
fn spread_created(rng: &mut StdRng, index: usize, n: usize, floor_ms: i64, now_ms: i64) -> i64 {
    let end = now_ms - 3_600_000;
    let start = (now_ms - 3 * 365 * 86_400_000).max(floor_ms).min(end);
    let step = ((end - start) / n.max(1) as i64).max(1);
    (start + step * index as i64 + rng.random_range(0..step)).min(end)
}

/// Creation times of a new batch start after the newest existing record, so ids keep creation order.
fn newest_created(store: &ObjectStore) -> i64 {
    store
        .records
        .values()
        .map(|r| r.created.timestamp_millis() + 1)
        .max()
        .unwrap_or(i64::MIN)
}

/// A modification time after `created`: half within a day, half anywhere up to a minute ago (ms).
fn spread_modified(rng: &mut StdRng, created: i64, now_ms: i64) -> i64 {
    let latest = (now_ms - 60_000).max(created);
    let room = latest - created;
    if room <= 0 {
        return created;
    }
    if rng.random_bool(0.5) {
        created + rng.random_range(0..=room.min(86_400_000))
    } else {
        created + rng.random_range(0..=room)
    }
}

fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

impl FakeHubspot {
    /// Starts the fake on `127.0.0.1` (a free port); it serves until dropped.
    pub async fn start(config: FakeHubspotConfig) -> Self {
        let (listener, addr) = crate::common::bind().await;
        let inner = Arc::new(Inner {
            base_url: format!("http://{addr}"),
            private_app_token: config.private_app_token,
            oauth: config.oauth,
            ttl: config.access_token_ttl,
            limits: Mutex::new(Limits {
                per_10s: config.rate_limit_per_10s,
                search_per_second: config.search_rate_per_second,
            }),
            data: RwLock::new(HubData {
                contacts: ObjectStore::new(ObjectType::Contacts, 1_001),
                companies: ObjectStore::new(ObjectType::Companies, 5_000_000_001),
                contact_companies: BTreeMap::new(),
                company_contacts: BTreeMap::new(),
                seq: 0,
            }),
            tokens: Mutex::new(HashMap::new()),
            usage: Mutex::new(HashMap::new()),
            faults: FaultQueue::default(),
            log: RequestLog::default(),
        });
        let server = crate::common::serve(listener, addr, Arc::clone(&inner));
        Self { inner, server }
    }

    /// `http://127.0.0.1:PORT`; API paths go right after it.
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    /// Generates `n` contacts (ids ascending, creation and modification times spread over the past three
    /// years, some properties missing, phone numbers in mixed formats); returns their ids.
    pub fn seed_contacts(&self, n: usize, seed: u64) -> Vec<String> {
        let mut rng = StdRng::seed_from_u64(seed);
        let now_ms = Utc::now().timestamp_millis();
        let mut data = write(&self.inner.data);
        let floor_ms = newest_created(&data.contacts);
        let mut ids = Vec::with_capacity(n);
        for index in 0..n {
            data.seq += 1;
            let seq = data.seq;
            let first = *pick(&mut rng, data::FIRST_NAMES);
            let last = *pick(&mut rng, data::LAST_NAMES);
            let place = pick(&mut rng, data::PLACES);
            let mut props = BTreeMap::new();
            props.insert("firstname".to_owned(), first.to_owned());
            if rng.random_bool(0.95) {
                props.insert("lastname".to_owned(), last.to_owned());
            }
            if rng.random_bool(0.95) {
                let domain = pick(&mut rng, data::EMAIL_DOMAINS);
                let email = format!(
                    "{}.{}{}@{}",
                    data::ascii_slug(first),
                    data::ascii_slug(last),
                    seq,
                    domain
                );
                props.insert("email".to_owned(), email);
            }
            if rng.random_bool(0.7) {
                props.insert("phone".to_owned(), data::phone_free(&mut rng, place));
            }
            if rng.random_bool(0.6) {
                let company = format!(
                    "{} {}",
                    pick(&mut rng, data::COMPANY_STEMS),
                    pick(&mut rng, data::COMPANY_SUFFIXES)
                );
                props.insert("company".to_owned(), company.trim().to_owned());
            }
            props.insert("city".to_owned(), place.city.to_owned());
            props.insert("country".to_owned(), place.country.to_owned());
            if rng.random_bool(0.8) {
                props.insert("zip".to_owned(), data::postal_code(&mut rng, place));
            }
            if rng.random_bool(0.5) {
                props.insert(
                    "jobtitle".to_owned(),
                    (*pick(&mut rng, data::JOB_TITLES)).to_owned(),
                );
            }
            props.insert(
                "lifecyclestage".to_owned(),
                (*pick(&mut rng, data::LIFECYCLE_STAGES)).to_owned(),
            );
            if rng.random_bool(0.4) {
                props.insert(
                    "hs_lead_status".to_owned(),
                    (*pick(&mut rng, data::LEAD_STATUSES)).to_owned(),
                );
            }
            let created = spread_created(&mut rng, index, n, floor_ms, now_ms);
            let modified = spread_modified(&mut rng, created, now_ms);
            let gap = rng.random_range(1..=3);
            let store = &mut data.contacts;
            let id = store.allocate(gap);
            store.upsert(
                id,
                HubRecord {
                    corrupted: None,
                    props,
                    created: from_ms(created),
                    modified: from_ms(modified),
                    archived_at: None,
                },
            );
            ids.push(id.to_string());
        }
        ids
    }

    /// Generates `n` companies (name, domain, website, industry, city, country, phone, size, revenue); returns
    /// their ids.
    pub fn seed_companies(&self, n: usize, seed: u64) -> Vec<String> {
        let mut rng = StdRng::seed_from_u64(seed);
        let now_ms = Utc::now().timestamp_millis();
        let mut data = write(&self.inner.data);
        let floor_ms = newest_created(&data.companies);
        let mut ids = Vec::with_capacity(n);
        const TLDS: &[&str] = &["com", "io", "de", "fr", "co.uk", "net"];
        for index in 0..n {
            data.seq += 1;
            let seq = data.seq;
            let stem = *pick(&mut rng, data::COMPANY_STEMS);
            let suffix = *pick(&mut rng, data::COMPANY_SUFFIXES);
            let place = pick(&mut rng, data::PLACES);
            let domain = format!("{}{}.{}", data::ascii_slug(stem), seq, pick(&mut rng, TLDS));
            let mut props = BTreeMap::new();
            props.insert(
                "name".to_owned(),
                format!("{stem} {suffix}").trim().to_owned(),
            );
            props.insert("domain".to_owned(), domain.clone());
            if rng.random_bool(0.8) {
                props.insert("website".to_owned(), format!("https://www.{domain}"));
            }
            props.insert(
                "industry".to_owned(),
                (*pick(&mut rng, data::INDUSTRIES)).to_owned(),
            );
            props.insert("city".to_owned(), place.city.to_owned());
            props.insert("country".to_owned(), place.country.to_owned());
            if rng.random_bool(0.7) {
                props.insert("phone".to_owned(), data::phone_free(&mut rng, place));
            }
            if rng.random_bool(0.6) {
                props.insert(
                    "numberofemployees".to_owned(),
                    rng.random_range(1..5_000u32).to_string(),
                );
            }
            if rng.random_bool(0.4) {
                props.insert(
                    "annualrevenue".to_owned(),
                    (rng.random_range(10..50_000u64) * 1_000).to_string(),
                );
            }
            props.insert(
                "lifecyclestage".to_owned(),
                (*pick(&mut rng, data::LIFECYCLE_STAGES)).to_owned(),
            );
            let created = spread_created(&mut rng, index, n, floor_ms, now_ms);
            let modified = spread_modified(&mut rng, created, now_ms);
            let gap = rng.random_range(1..=3);
            let store = &mut data.companies;
            let id = store.allocate(gap);
            store.upsert(
                id,
                HubRecord {
                    corrupted: None,
                    props,
                    created: from_ms(created),
                    modified: from_ms(modified),
                    archived_at: None,
                },
            );
            ids.push(id.to_string());
        }
        ids
    }

    /// Associates a contact with a company (both must exist). A contact's first company is its primary one.
    pub fn associate(&self, contact_id: &str, company_id: &str) {
        let contact: u64 = contact_id
            .parse()
            .unwrap_or_else(|_| panic!("testkit: bad contact id {contact_id:?}"));
        let company: u64 = company_id
            .parse()
            .unwrap_or_else(|_| panic!("testkit: bad company id {company_id:?}"));
        let mut data = write(&self.inner.data);
        assert!(
            data.contacts.records.contains_key(&contact),
            "testkit: no contact {contact_id}"
        );
        assert!(
            data.companies.records.contains_key(&company),
            "testkit: no company {company_id}"
        );
        let companies = data.contact_companies.entry(contact).or_default();
        if !companies.contains(&company) {
            companies.push(company);
        }
        let contacts = data.company_contacts.entry(company).or_default();
        if !contacts.contains(&contact) {
            contacts.push(contact);
        }
    }

    /// Creates (`id` = None or an unknown id) or replaces a contact's properties; returns its id.
    /// Values become strings as in HubSpot (`null` and `""` mean no value). `modified_at` becomes
    /// `lastmodifieddate`/`updatedAt`; `createdate` may be given in `properties`, else a new contact is created
    /// at `modified_at` and a replaced one keeps its creation time. A replaced archived contact is restored.
    pub fn put_contact(
        &self,
        id: Option<&str>,
        properties: Map<String, Value>,
        modified_at: DateTime<Utc>,
    ) -> String {
        self.put("contacts", id, properties, modified_at)
    }

    /// As [`put_contact`](Self::put_contact), for companies.
    pub fn put_company(
        &self,
        id: Option<&str>,
        properties: Map<String, Value>,
        modified_at: DateTime<Utc>,
    ) -> String {
        self.put("companies", id, properties, modified_at)
    }

    /// As [`put_contact`](Self::put_contact), for any supported object type.
    pub fn put(
        &self,
        object_type: &str,
        id: Option<&str>,
        properties: Map<String, Value>,
        modified_at: DateTime<Utc>,
    ) -> String {
        let kind = ObjectType::expect(object_type);
        let modified = truncate_ms(modified_at);
        let mut created = None;
        let mut props = BTreeMap::new();
        for (name, value) in &properties {
            if name == "hs_object_id" || name == kind.modified_property() {
                // System properties: the id and `modified_at` win.
                continue;
            }
            if name == "createdate" {
                created = property_text(value)
                    .and_then(|t| parse_date_ms(&t))
                    .map(from_ms);
            } else if let Some(text) = property_text(value) {
                props.insert(name.clone(), text);
            }
        }
        let mut data = write(&self.inner.data);
        let store = data.store_mut(kind);
        let id = match id {
            Some(text) => text
                .parse::<u64>()
                .unwrap_or_else(|_| panic!("testkit: HubSpot ids are numeric, got {text:?}")),
            None => store.allocate(1),
        };
        let created = created
            .or_else(|| store.records.get(&id).map(|r| r.created))
            .unwrap_or(modified);
        store.upsert(
            id,
            HubRecord {
                corrupted: None,
                props,
                created,
                modified,
                archived_at: None,
            },
        );
        id.to_string()
    }

    /// Sets the modified date (`lastmodifieddate`/`hs_lastmodifieddate` and `updatedAt`) of an object.
    pub fn touch(&self, object_type: &str, id: &str, modified_at: DateTime<Utc>) {
        let kind = ObjectType::expect(object_type);
        let id_num: u64 = id
            .parse()
            .unwrap_or_else(|_| panic!("testkit: bad id {id:?}"));
        let changed = write(&self.inner.data)
            .store_mut(kind)
            .modify(id_num, |r| r.modified = truncate_ms(modified_at));
        assert!(changed, "testkit: no {} with id {id}", kind.singular());
    }

    /// Fault injection: from now on the object is served with these top-level fields replaced (e.g.
    /// `{"updatedAt": "not a date"}` or `{"properties": "oops"}`), as an API bug or a broken proxy would send it.
    pub fn corrupt(&self, object_type: &str, id: &str, fields: Map<String, Value>) {
        let kind = ObjectType::expect(object_type);
        let id_num: u64 = id
            .parse()
            .unwrap_or_else(|_| panic!("testkit: bad id {id:?}"));
        let changed = write(&self.inner.data)
            .store_mut(kind)
            .modify(id_num, |r| r.corrupted = Some(fields.clone()));
        assert!(changed, "testkit: no {} with id {id}", kind.singular());
    }

    /// Archives an object: it leaves lists (except `archived=true`), searches and counts.
    pub fn archive(&self, object_type: &str, id: &str) {
        let kind = ObjectType::expect(object_type);
        let id_num: u64 = id
            .parse()
            .unwrap_or_else(|_| panic!("testkit: bad id {id:?}"));
        let now = truncate_ms(Utc::now());
        let changed = write(&self.inner.data).store_mut(kind).modify(id_num, |r| {
            if r.archived_at.is_none() {
                r.archived_at = Some(now);
            }
        });
        assert!(changed, "testkit: no {} with id {id}", kind.singular());
    }

    /// Queues a fault for the next API requests (see [`Fault`]).
    pub fn inject(&self, fault: Fault) {
        self.inner.faults.push(fault);
    }

    /// Every OAuth access token issued so far expires now (401 `EXPIRED_AUTHENTICATION`); new grants still work.
    pub fn expire_access_tokens(&self) {
        let now = Instant::now();
        for expires in lock(&self.inner.tokens).values_mut() {
            if *expires > now {
                *expires = now;
            }
        }
    }

    /// Changes the 10-second limit (`None` = off, and no rate-limit headers).
    pub fn set_rate_limit(&self, per_10s: Option<u32>) {
        lock(&self.inner.limits).per_10s = per_10s;
    }

    /// Changes the search per-second limit (`None` = off).
    pub fn set_search_rate(&self, per_second: Option<u32>) {
        lock(&self.inner.limits).search_per_second = per_second;
    }

    /// Every request received so far, in order (the OAuth token endpoint included).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner.log.all()
    }

    /// Live (non-archived) objects of a type.
    pub fn count(&self, object_type: &str) -> usize {
        read(&self.inner.data)
            .store(ObjectType::expect(object_type))
            .live
    }
}
