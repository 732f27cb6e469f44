//! A fake Shopify REST Admin API (customers and orders) for connector tests and benchmarks.
//!
//! # Contract
//!
//! Faithful to Shopify's public REST Admin API:
//! - **Paths**: `GET {base}/admin/api/{version}/customers.json`, `/orders.json`, `/customers/count.json`,
//!   `/orders/count.json`, `/customers/{id}.json`, `/orders/{id}.json`. Any version other than the configured
//!   one, and any other path or method, answers 404 `{"errors":"Not Found"}`.
//! - **Auth**: header `X-Shopify-Access-Token` must equal the configured token, else 401
//!   `{"errors":"[API] Invalid API key or access token (unrecognized login or wrong password)"}`.
//! - **Lists**: `limit` (default 50, 1–250; anything else → 400 `{"errors":{"limit":"Invalid value."}}`),
//!   `since_id`, `ids` (comma list), `created_at_min/max`, `updated_at_min/max` (inclusive; ISO-8601 with an
//!   offset, or without one meaning shop time), `fields` (comma list of top-level keys), and for orders
//!   `status` = `open` (**the default**: neither closed nor cancelled), `closed` (has `closed_at`; cancelled
//!   orders are closed too), `cancelled`, `any`, plus `financial_status`. Results in id order (ascending).
//!   Unknown parameters are ignored; malformed values answer 400 `{"errors":{"<param>":"Invalid value."}}`.
//! - **Pagination**: `Link: <{base}/admin/api/{v}/customers.json?limit=N&page_info=TOKEN>; rel="next"`, and
//!   `rel="previous"` on pages reached through a `page_info`; no `Link` when there is nothing more (a single
//!   page). The token is opaque: URL-safe base64 of JSON holding the first request's filters, `last_id`,
//!   `last_value` and `direction`, like Shopify's. The link carries `fields` when the request had it. A request
//!   with `page_info` may add only `limit` and `fields`; any other parameter (filters, `status`, even
//!   unknown ones) answers 400 `{"errors":{"page_info":"Invalid value."}}`, as does an undecodable token.
//!   `page=` answers 400 `{"errors":{"page":"page cannot be passed."}}`.
//! - **Rate limit**: a leaky bucket per access token, `bucket_size` calls, leaking `leak_per_second`. Every
//!   authenticated answer carries `X-Shopify-Shop-Api-Call-Limit: used/size`; a call that does not fit in the
//!   bucket answers 429 with `Retry-After: 2.0` and `{"errors":"Exceeded 2 calls per second for api client.
//!   Reduce request rates to resume uninterrupted service."}` and is not counted.
//! - **Records**: timestamps in shop time with offset and second precision (`2024-01-02T10:00:00-05:00`);
//!   ids are 13-digit integers; money is a decimal string (`"123.45"`); customers have `email`/`phone` that may
//!   be `null` (phone in E.164), `tags` as one comma-separated string, `default_address` only when they have
//!   an address (address phones in free formats), `email_marketing_consent` (`null` without an e-mail) and
//!   `sms_marketing_consent` (`null` without a phone). Orders embed the current `customer` and `line_items`.
//!   Every answer has `X-Shopify-API-Version` and `X-Request-Id`.
//!
//! Simplified:
//! - The shop's time zone is a fixed UTC−05:00 (no daylight saving time).
//! - Only the listed read endpoints; no writes through the API, no GraphQL, no `order`/`presentment_currency`
//!   parameters, no `fulfillment_status` filter. Orders have no shipping/billing address, transactions,
//!   refunds, fulfillments or discount codes; totals are consistent (`total_price` = `subtotal_price` +
//!   `total_tax`) but amounts are not converted between currencies.
//! - A page reached through `page_info` always offers `rel="previous"` (and one reached backwards always
//!   offers `rel="next"`), without checking that records still exist there.
//! - `Retry-After` is always `2.0` whatever the leak rate. With no leak rate (`None`) nothing is limited and
//!   the header reads `1/size`.
//! - Seeding bumps a customer's `updated_at` when one of its orders is created (as Shopify does when
//!   `orders_count` changes) but later edits through `touch_order` do not.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};
use tokio::time::Instant;

use axum::http::{HeaderName, Method, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, SecondsFormat, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

pub use crate::common::{Fault, RecordedRequest};
use crate::common::{
    FaultQueue, Incoming, Reply, RequestLog, Server, Vendor, lock, money, read, retry_after_text,
    uuid, write,
};
use crate::data;

const JSON: &str = "application/json; charset=utf-8";
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 250;
const SHOP_OFFSET_SECONDS: i32 = -5 * 3600;
const INVALID_TOKEN: &str =
    "[API] Invalid API key or access token (unrecognized login or wrong password)";
const THROTTLED: &str = "Exceeded 2 calls per second for api client. Reduce request rates to resume uninterrupted service.";

/// How a [`FakeShopify`] behaves.
#[derive(Debug, Clone)]
pub struct FakeShopifyConfig {
    /// The accepted `X-Shopify-Access-Token`.
    pub access_token: String,
    /// The one API version served (`/admin/api/{version}/…`); others answer 404.
    pub api_version: String,
    /// Calls the leaky bucket holds.
    pub bucket_size: u32,
    /// Calls leaking out per second; `None` = no limit.
    pub leak_per_second: Option<f64>,
}

impl Default for FakeShopifyConfig {
    fn default() -> Self {
        Self {
            access_token: "shpat_test".to_owned(),
            api_version: "2024-01".to_owned(),
            bucket_size: 40,
            leak_per_second: Some(2.0),
        }
    }
}

/// A running fake Shopify shop on `127.0.0.1`; it stops when dropped.
pub struct FakeShopify {
    inner: Arc<Inner>,
    server: Server,
}

impl fmt::Debug for FakeShopify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeShopify")
            .field("base_url", &self.server.base_url())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resource {
    Customers,
    Orders,
}

impl Resource {
    fn plural(self) -> &'static str {
        match self {
            Self::Customers => "customers",
            Self::Orders => "orders",
        }
    }

    fn singular(self) -> &'static str {
        match self {
            Self::Customers => "customer",
            Self::Orders => "order",
        }
    }
}

#[derive(Debug, Clone)]
struct Consent {
    state: &'static str,
    opt_in_level: &'static str,
    updated: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
struct GenAddress {
    id: i64,
    place: usize,
    street_no: u16,
    street: usize,
    address2: Option<String>,
    zip: String,
    phone: Option<String>,
    company: Option<&'static str>,
}

#[derive(Debug, Clone)]
struct GenCustomer {
    first: &'static str,
    last: &'static str,
    email: Option<String>,
    phone: Option<String>,
    address: Option<GenAddress>,
    tags: &'static str,
    state: &'static str,
    verified_email: bool,
    tax_exempt: bool,
    note: Option<&'static str>,
    currency: &'static str,
    email_consent: Option<Consent>,
    sms_consent: Option<Consent>,
    orders_count: u32,
    total_spent_cents: i64,
    last_order: Option<(i64, u64)>,
}

#[derive(Debug, Clone)]
enum Body {
    Generated(Box<GenCustomer>),
    Json(Map<String, Value>),
}

#[derive(Debug, Clone)]
struct Customer {
    created: DateTime<Utc>,
    updated: DateTime<Utc>,
    body: Body,
}

#[derive(Debug, Clone)]
struct GenLine {
    id: i64,
    product: usize,
    quantity: u32,
}

#[derive(Debug, Clone)]
struct GenOrder {
    customer_id: Option<i64>,
    /// The buyer's e-mail of a guest checkout (no customer).
    guest_email: Option<String>,
    number: u64,
    currency: &'static str,
    fulfillment: Option<&'static str>,
    cancel_reason: Option<&'static str>,
    lines: Vec<GenLine>,
    discount_cents: i64,
    tax_rate_percent: i64,
    buyer_accepts_marketing: bool,
    tags: &'static str,
}

#[derive(Debug, Clone)]
enum OrderBody {
    Generated(Box<GenOrder>),
    Json(Map<String, Value>),
}

#[derive(Debug, Clone)]
struct Order {
    created: DateTime<Utc>,
    updated: DateTime<Utc>,
    processed: DateTime<Utc>,
    closed: Option<DateTime<Utc>>,
    cancelled: Option<DateTime<Utc>>,
    financial: Option<String>,
    body: OrderBody,
}

#[derive(Debug)]
struct ShopData {
    customers: BTreeMap<i64, Customer>,
    orders: BTreeMap<i64, Order>,
    next_customer_id: i64,
    next_order_id: i64,
    next_address_id: i64,
    next_line_id: i64,
    next_order_number: u64,
    /// Makes generated e-mails unique.
    seq: u64,
}

#[derive(Debug)]
struct Bucket {
    level: f64,
    at: Instant,
}

#[derive(Debug)]
struct Inner {
    base_url: String,
    access_token: String,
    api_version: String,
    bucket_size: u32,
    leak: Mutex<Option<f64>>,
    buckets: Mutex<HashMap<String, Bucket>>,
    data: RwLock<ShopData>,
    faults: FaultQueue,
    log: RequestLog,
}

fn shop_offset() -> FixedOffset {
    FixedOffset::east_opt(SHOP_OFFSET_SECONDS)
        .unwrap_or_else(|| FixedOffset::east_opt(0).expect("UTC is a valid offset"))
}

/// Shopify's timestamp format: shop time, offset, seconds.
fn shop_time(at: DateTime<Utc>) -> String {
    at.with_timezone(&shop_offset())
        .to_rfc3339_opts(SecondsFormat::Secs, false)
}

fn truncate_secs(at: DateTime<Utc>) -> DateTime<Utc> {
    Utc.timestamp_opt(at.timestamp(), 0).single().unwrap_or(at)
}

fn from_secs(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(secs, 0).single().unwrap_or_default()
}

/// A time as Shopify accepts it in filters; no offset means shop time.
fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Some(at.with_timezone(&Utc));
    }
    if let Ok(at) = DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z") {
        return Some(at.with_timezone(&Utc));
    }
    let naive = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f"))
        .ok()
        .or_else(|| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        })?;
    shop_offset()
        .from_local_datetime(&naive)
        .single()
        .map(|at| at.with_timezone(&Utc))
}

fn errors(status: StatusCode, errors: Value) -> Reply {
    Reply::json(status, JSON, &json!({ "errors": errors }))
}

fn invalid(param: &str) -> Reply {
    errors(StatusCode::BAD_REQUEST, json!({ param: "Invalid value." }))
}

fn not_found() -> Reply {
    errors(StatusCode::NOT_FOUND, json!("Not Found"))
}

/// The filters of a list, as the first request gave them (also what a `page_info` token carries).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct Filters {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    since_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ids: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created_at_min: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created_at_max: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    updated_at_min: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    updated_at_max: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    financial_status: Option<String>,
}

impl Filters {
    fn set(&mut self, key: &str, value: String) -> bool {
        let slot = match key {
            "since_id" => &mut self.since_id,
            "ids" => &mut self.ids,
            "created_at_min" => &mut self.created_at_min,
            "created_at_max" => &mut self.created_at_max,
            "updated_at_min" => &mut self.updated_at_min,
            "updated_at_max" => &mut self.updated_at_max,
            "status" => &mut self.status,
            "financial_status" => &mut self.financial_status,
            _ => return false,
        };
        *slot = Some(value);
        true
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Open,
    Closed,
    Cancelled,
    Any,
}

/// Filters parsed and checked.
#[derive(Debug)]
struct Compiled {
    since_id: Option<i64>,
    ids: Option<HashSet<i64>>,
    created_min: Option<DateTime<Utc>>,
    created_max: Option<DateTime<Utc>>,
    updated_min: Option<DateTime<Utc>>,
    updated_max: Option<DateTime<Utc>>,
    status: Status,
    financial: Option<String>,
}

impl Compiled {
    fn new(filters: &Filters, resource: Resource) -> Result<Self, Reply> {
        let time = |value: &Option<String>, name: &str| match value {
            None => Ok(None),
            Some(text) => parse_time(text).map(Some).ok_or_else(|| invalid(name)),
        };
        let since_id = match &filters.since_id {
            None => None,
            Some(text) => Some(
                text.trim()
                    .parse::<i64>()
                    .map_err(|_| invalid("since_id"))?,
            ),
        };
        let ids = match &filters.ids {
            None => None,
            Some(text) => Some(
                text.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| s.parse::<i64>())
                    .collect::<Result<HashSet<_>, _>>()
                    .map_err(|_| invalid("ids"))?,
            ),
        };
        let status = match (resource, filters.status.as_deref()) {
            (Resource::Customers, _) => Status::Any,
            (Resource::Orders, None | Some("open")) => Status::Open,
            (Resource::Orders, Some("closed")) => Status::Closed,
            (Resource::Orders, Some("cancelled")) => Status::Cancelled,
            (Resource::Orders, Some("any")) => Status::Any,
            (Resource::Orders, Some(_)) => return Err(invalid("status")),
        };
        let financial = match (resource, filters.financial_status.as_deref()) {
            (Resource::Orders, Some(value)) if value != "any" => Some(value.to_owned()),
            _ => None,
        };
        Ok(Self {
            since_id,
            ids,
            created_min: time(&filters.created_at_min, "created_at_min")?,
            created_max: time(&filters.created_at_max, "created_at_max")?,
            updated_min: time(&filters.updated_at_min, "updated_at_min")?,
            updated_max: time(&filters.updated_at_max, "updated_at_max")?,
            status,
            financial,
        })
    }

    fn times(&self, id: i64, created: DateTime<Utc>, updated: DateTime<Utc>) -> bool {
        self.since_id.is_none_or(|since| id > since)
            && self.ids.as_ref().is_none_or(|ids| ids.contains(&id))
            && self.created_min.is_none_or(|t| created >= t)
            && self.created_max.is_none_or(|t| created <= t)
            && self.updated_min.is_none_or(|t| updated >= t)
            && self.updated_max.is_none_or(|t| updated <= t)
    }

    fn customer(&self, id: i64, customer: &Customer) -> bool {
        self.times(id, customer.created, customer.updated)
    }

    fn order(&self, id: i64, order: &Order) -> bool {
        let status = match self.status {
            Status::Open => order.closed.is_none() && order.cancelled.is_none(),
            Status::Closed => order.closed.is_some(),
            Status::Cancelled => order.cancelled.is_some(),
            Status::Any => true,
        };
        status
            && self
                .financial
                .as_ref()
                .is_none_or(|f| order.financial.as_deref() == Some(f.as_str()))
            && self.times(id, order.created, order.updated)
    }
}

/// What a `page_info` token holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PageToken {
    #[serde(flatten)]
    filters: Filters,
    last_id: i64,
    last_value: String,
    direction: String,
}

impl PageToken {
    fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    fn decode(text: &str) -> Option<Self> {
        let text = text.trim();
        let bytes = URL_SAFE_NO_PAD
            .decode(text.trim_end_matches('='))
            .or_else(|_| STANDARD.decode(text))
            .ok()?;
        let token: Self = serde_json::from_slice(&bytes).ok()?;
        matches!(token.direction.as_str(), "next" | "prev").then_some(token)
    }
}

// ---------------------------------------------------------------------------------------------------------
// Rendering
//
// Generated records are serialised straight from borrowed views (no intermediate `Value` tree: pages of the
// benchmark are large); records put as JSON are served from their map.

#[derive(Serialize)]
struct ConsentView<'a> {
    state: &'a str,
    opt_in_level: &'a str,
    consent_updated_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    consent_collected_from: Option<&'a str>,
}

#[derive(Serialize)]
struct AddressView<'a> {
    id: i64,
    customer_id: i64,
    first_name: &'a str,
    last_name: &'a str,
    company: Option<&'a str>,
    address1: String,
    address2: Option<&'a str>,
    city: &'a str,
    province: Option<&'a str>,
    country: &'a str,
    zip: &'a str,
    phone: Option<&'a str>,
    name: String,
    province_code: Option<&'a str>,
    country_code: &'a str,
    country_name: &'a str,
    default: bool,
}

#[derive(Serialize)]
struct CustomerView<'a> {
    id: i64,
    email: Option<&'a str>,
    created_at: String,
    updated_at: String,
    first_name: &'a str,
    last_name: &'a str,
    /// `None` leaves the key out (the customer embedded in an order has no order statistics).
    #[serde(skip_serializing_if = "Option::is_none")]
    orders_count: Option<u32>,
    state: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    total_spent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_order_id: Option<Option<i64>>,
    note: Option<&'a str>,
    verified_email: bool,
    multipass_identifier: Option<&'a str>,
    tax_exempt: bool,
    tags: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_order_name: Option<Option<String>>,
    currency: &'a str,
    phone: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    addresses: Option<Vec<AddressView<'a>>>,
    tax_exemptions: [&'a str; 0],
    email_marketing_consent: Option<ConsentView<'a>>,
    sms_marketing_consent: Option<ConsentView<'a>>,
    admin_graphql_api_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    default_address: Option<AddressView<'a>>,
}

#[derive(Serialize)]
struct LineView<'a> {
    id: i64,
    admin_graphql_api_id: String,
    product_id: i64,
    variant_id: i64,
    title: &'a str,
    variant_title: Option<&'a str>,
    name: String,
    sku: &'a str,
    vendor: &'a str,
    quantity: u32,
    current_quantity: u32,
    fulfillable_quantity: u32,
    fulfillment_status: Option<&'a str>,
    price: String,
    total_discount: &'a str,
    grams: u32,
    taxable: bool,
    requires_shipping: bool,
    gift_card: bool,
}

#[derive(Serialize)]
struct OrderView<'a> {
    id: i64,
    admin_graphql_api_id: String,
    email: &'a str,
    contact_email: Option<&'a str>,
    created_at: String,
    updated_at: String,
    processed_at: String,
    closed_at: Option<String>,
    cancelled_at: Option<String>,
    cancel_reason: Option<&'a str>,
    name: String,
    number: u64,
    order_number: u64,
    confirmed: bool,
    test: bool,
    source_name: &'a str,
    currency: &'a str,
    presentment_currency: &'a str,
    total_line_items_price: String,
    total_discounts: String,
    subtotal_price: String,
    total_tax: String,
    total_price: String,
    current_total_price: String,
    total_weight: u32,
    financial_status: Option<&'a str>,
    fulfillment_status: Option<&'a str>,
    buyer_accepts_marketing: bool,
    tags: &'a str,
    note: Option<&'a str>,
    line_items: Vec<LineView<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    customer: Option<Item<'a>>,
}

/// One rendered record.
#[derive(Serialize)]
#[serde(untagged)]
enum Item<'a> {
    Customer(Box<CustomerView<'a>>),
    Order(Box<OrderView<'a>>),
    Json(Map<String, Value>),
}

impl Item<'_> {
    /// The record as a JSON map (for `fields` and embedding).
    fn into_map(self) -> Map<String, Value> {
        match self {
            Item::Json(map) => map,
            other => match serde_json::to_value(&other) {
                Ok(Value::Object(map)) => map,
                _ => Map::new(),
            },
        }
    }

    /// The record with only `fields` (all when `None`).
    fn select(self, fields: &Option<Vec<String>>) -> Self {
        match fields {
            None => self,
            Some(fields) => {
                let mut map = self.into_map();
                map.retain(|key, _| fields.iter().any(|f| f == key));
                Item::Json(map)
            }
        }
    }
}

fn consent_view(consent: &Option<Consent>, sms: bool) -> Option<ConsentView<'_>> {
    consent.as_ref().map(|c| ConsentView {
        state: c.state,
        opt_in_level: c.opt_in_level,
        consent_updated_at: c.updated.map(shop_time),
        consent_collected_from: sms.then_some("OTHER"),
    })
}

fn address_view<'a>(customer_id: i64, g: &'a GenCustomer, a: &'a GenAddress) -> AddressView<'a> {
    let place = &data::PLACES[a.place];
    AddressView {
        id: a.id,
        customer_id,
        first_name: g.first,
        last_name: g.last,
        company: a.company,
        address1: format!("{} {}", a.street_no, data::STREETS[a.street]),
        address2: a.address2.as_deref(),
        city: place.city,
        province: place.province,
        country: place.country,
        zip: &a.zip,
        phone: a.phone.as_deref(),
        name: format!("{} {}", g.first, g.last),
        province_code: place.province_code,
        country_code: place.country_code,
        country_name: place.country,
        default: true,
    }
}

/// A customer; `embedded` drops what the customer inside an order does not carry.
fn customer_item(id: i64, customer: &Customer, embedded: bool) -> Item<'_> {
    match &customer.body {
        Body::Json(map) => {
            let mut out = map.clone();
            out.insert("id".into(), json!(id));
            out.insert("created_at".into(), json!(shop_time(customer.created)));
            out.insert("updated_at".into(), json!(shop_time(customer.updated)));
            out.insert(
                "admin_graphql_api_id".into(),
                json!(format!("gid://shopify/Customer/{id}")),
            );
            if embedded {
                for key in [
                    "addresses",
                    "orders_count",
                    "total_spent",
                    "last_order_id",
                    "last_order_name",
                ] {
                    out.remove(key);
                }
            }
            Item::Json(out)
        }
        Body::Generated(g) => {
            let stats = !embedded;
            Item::Customer(Box::new(CustomerView {
                id,
                email: g.email.as_deref(),
                created_at: shop_time(customer.created),
                updated_at: shop_time(customer.updated),
                first_name: g.first,
                last_name: g.last,
                orders_count: stats.then_some(g.orders_count),
                state: g.state,
                total_spent: stats.then(|| money(g.total_spent_cents)),
                last_order_id: stats.then_some(g.last_order.map(|(id, _)| id)),
                note: g.note,
                verified_email: g.verified_email,
                multipass_identifier: None,
                tax_exempt: g.tax_exempt,
                tags: g.tags,
                last_order_name: stats.then(|| g.last_order.map(|(_, n)| format!("#{n}"))),
                currency: g.currency,
                phone: g.phone.as_deref(),
                addresses: stats
                    .then(|| g.address.iter().map(|a| address_view(id, g, a)).collect()),
                tax_exemptions: [],
                email_marketing_consent: consent_view(&g.email_consent, false),
                sms_marketing_consent: consent_view(&g.sms_consent, true),
                admin_graphql_api_id: format!("gid://shopify/Customer/{id}"),
                default_address: g.address.as_ref().map(|a| address_view(id, g, a)),
            }))
        }
    }
}

fn order_item<'a>(id: i64, order: &'a Order, customers: &'a BTreeMap<i64, Customer>) -> Item<'a> {
    let times = |map: &mut Map<String, Value>| {
        map.insert("id".into(), json!(id));
        map.insert(
            "admin_graphql_api_id".into(),
            json!(format!("gid://shopify/Order/{id}")),
        );
        map.insert("created_at".into(), json!(shop_time(order.created)));
        map.insert("updated_at".into(), json!(shop_time(order.updated)));
        map.insert("processed_at".into(), json!(shop_time(order.processed)));
        map.insert("closed_at".into(), json!(order.closed.map(shop_time)));
        map.insert("cancelled_at".into(), json!(order.cancelled.map(shop_time)));
    };
    let g = match &order.body {
        OrderBody::Json(map) => {
            let mut out = map.clone();
            times(&mut out);
            return Item::Json(out);
        }
        OrderBody::Generated(g) => g,
    };
    let customer = g
        .customer_id
        .and_then(|cid| customers.get(&cid).map(|c| (cid, c)));
    let email = customer
        .and_then(|(_, c)| match &c.body {
            Body::Generated(gc) => gc.email.as_deref(),
            Body::Json(map) => map.get("email").and_then(Value::as_str),
        })
        .or(g.guest_email.as_deref())
        .unwrap_or_default();
    let fulfilled = g.fulfillment == Some("fulfilled");
    let mut line_total = 0;
    let mut grams = 0;
    let line_items: Vec<LineView<'_>> = g
        .lines
        .iter()
        .map(|line| {
            let product = &data::PRODUCTS[line.product];
            line_total += product.price_cents * i64::from(line.quantity);
            grams += product.grams * line.quantity;
            LineView {
                id: line.id,
                admin_graphql_api_id: format!("gid://shopify/LineItem/{}", line.id),
                product_id: 7_000_000_000_000 + line.product as i64 * 1_000,
                variant_id: 41_000_000_000_000 + line.product as i64,
                title: product.title,
                variant_title: product.variant,
                name: match product.variant {
                    Some(variant) => format!("{} - {variant}", product.title),
                    None => product.title.to_owned(),
                },
                sku: product.sku,
                vendor: product.vendor,
                quantity: line.quantity,
                current_quantity: line.quantity,
                fulfillable_quantity: if fulfilled || order.cancelled.is_some() {
                    0
                } else {
                    line.quantity
                },
                fulfillment_status: fulfilled.then_some("fulfilled"),
                price: money(product.price_cents),
                total_discount: "0.00",
                grams: product.grams,
                taxable: true,
                requires_shipping: product.grams > 0,
                gift_card: product.sku.starts_with("GC-"),
            }
        })
        .collect();
    let subtotal = line_total - g.discount_cents;
    let tax = subtotal * g.tax_rate_percent / 100;
    let total = subtotal + tax;
    Item::Order(Box::new(OrderView {
        id,
        admin_graphql_api_id: format!("gid://shopify/Order/{id}"),
        email,
        contact_email: (!email.is_empty()).then_some(email),
        created_at: shop_time(order.created),
        updated_at: shop_time(order.updated),
        processed_at: shop_time(order.processed),
        closed_at: order.closed.map(shop_time),
        cancelled_at: order.cancelled.map(shop_time),
        cancel_reason: g.cancel_reason,
        name: format!("#{}", g.number),
        number: g.number - 1000,
        order_number: g.number,
        confirmed: true,
        test: false,
        source_name: "web",
        currency: g.currency,
        presentment_currency: g.currency,
        total_line_items_price: money(line_total),
        total_discounts: money(g.discount_cents),
        subtotal_price: money(subtotal),
        total_tax: money(tax),
        total_price: money(total),
        current_total_price: money(if order.cancelled.is_some() { 0 } else { total }),
        total_weight: grams,
        financial_status: order.financial.as_deref(),
        fulfillment_status: g.fulfillment,
        buyer_accepts_marketing: g.buyer_accepts_marketing,
        tags: g.tags,
        note: None,
        line_items,
        customer: customer.map(|(cid, c)| customer_item(cid, c, true)),
    }))
}

/// `{"<key>":[items…]}` serialised directly.
fn envelope(key: &str, items: &[Item<'_>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(items.len() * 2_048 + 32);
    out.extend_from_slice(b"{\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":[");
    for (index, item) in items.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        // Writing into a Vec cannot fail, and the views hold only strings, numbers and maps of them.
        let _ = serde_json::to_writer(&mut out, item);
    }
    out.extend_from_slice(b"]}");
    out
}

// ---------------------------------------------------------------------------------------------------------
// Serving

impl Inner {
    fn admit(&self, token: &str) -> Result<String, Reply> {
        let size = f64::from(self.bucket_size);
        let Some(rate) = *lock(&self.leak) else {
            return Ok(format!("1/{}", self.bucket_size));
        };
        let now = Instant::now();
        let mut buckets = lock(&self.buckets);
        let bucket = buckets.entry(token.to_owned()).or_insert(Bucket {
            level: 0.0,
            at: now,
        });
        bucket.level = (bucket.level - now.duration_since(bucket.at).as_secs_f64() * rate).max(0.0);
        bucket.at = now;
        if bucket.level + 1.0 > size + 1e-9 {
            let limit = format!("{}/{}", self.bucket_size, self.bucket_size);
            return Err(errors(StatusCode::TOO_MANY_REQUESTS, json!(THROTTLED))
                .header("retry-after", retry_after_text(2.0, true))
                .header("x-shopify-shop-api-call-limit", limit));
        }
        bucket.level += 1.0;
        let used = (bucket.level.ceil() as u32).min(self.bucket_size);
        Ok(format!("{used}/{}", self.bucket_size))
    }

    fn list(&self, resource: Resource, request: &Incoming) -> Reply {
        let params = request.query_pairs();
        if params.iter().any(|(k, _)| k == "page") {
            return errors(
                StatusCode::BAD_REQUEST,
                json!({"page": "page cannot be passed."}),
            );
        }
        let mut limit = DEFAULT_LIMIT;
        let mut fields_raw = None;
        let mut page_info = None;
        let mut filters = Filters::default();
        let mut others = false;
        for (key, value) in &params {
            match key.as_str() {
                "limit" => match value.trim().parse::<usize>() {
                    Ok(n) if (1..=MAX_LIMIT).contains(&n) => limit = n,
                    _ => return invalid("limit"),
                },
                "fields" => fields_raw = Some(value.clone()),
                "page_info" => page_info = Some(value.clone()),
                key => {
                    filters.set(key, value.clone());
                    others = true;
                }
            }
        }
        let fields: Option<Vec<String>> = fields_raw.as_ref().map(|f| {
            f.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        });
        let (filters, cursor) = match page_info {
            Some(token) => {
                if others {
                    return invalid("page_info");
                }
                match PageToken::decode(&token) {
                    Some(token) => (
                        token.filters,
                        Some((token.last_id, token.direction == "prev")),
                    ),
                    None => return invalid("page_info"),
                }
            }
            None => (filters, None),
        };
        let compiled = match Compiled::new(&filters, resource) {
            Ok(compiled) => compiled,
            Err(reply) => return reply,
        };
        let lower = compiled
            .since_id
            .map_or(i64::MIN, |since| since.saturating_add(1));
        let data = read(&self.data);
        let mut more_before = cursor.is_some_and(|(_, prev)| !prev);
        let mut more_after = cursor.is_some_and(|(_, prev)| prev);
        macro_rules! walk {
            ($map:expr, $matches:expr) => {{
                let map = $map;
                match cursor {
                    Some((last, true)) => {
                        let upper = last.max(lower);
                        let mut found: Vec<i64> = map
                            .range(lower..upper)
                            .rev()
                            .filter(|(id, r)| $matches(**id, *r))
                            .map(|(id, _)| *id)
                            .take(limit + 1)
                            .collect();
                        if found.len() > limit {
                            found.truncate(limit);
                            more_before = true;
                        } else {
                            more_before = false;
                        }
                        found.reverse();
                        found
                    }
                    other => {
                        let start = match other {
                            Some((last, _)) => lower.max(last.saturating_add(1)),
                            None => lower,
                        };
                        let mut found: Vec<i64> = map
                            .range(start..)
                            .filter(|(id, r)| $matches(**id, *r))
                            .map(|(id, _)| *id)
                            .take(limit + 1)
                            .collect();
                        if found.len() > limit {
                            found.truncate(limit);
                            more_after = true;
                        } else {
                            more_after = false;
                        }
                        found
                    }
                }
            }};
        }
        let (ids, body) = match resource {
            Resource::Customers => {
                let ids: Vec<i64> =
                    walk!(&data.customers, |id, c: &Customer| compiled.customer(id, c));
                let items: Vec<Item<'_>> = ids
                    .iter()
                    .filter_map(|id| {
                        data.customers
                            .get(id)
                            .map(|c| customer_item(*id, c, false).select(&fields))
                    })
                    .collect();
                let body = envelope("customers", &items);
                (ids, body)
            }
            Resource::Orders => {
                let ids: Vec<i64> = walk!(&data.orders, |id, o: &Order| compiled.order(id, o));
                let items: Vec<Item<'_>> = ids
                    .iter()
                    .filter_map(|id| {
                        data.orders
                            .get(id)
                            .map(|o| order_item(*id, o, &data.customers).select(&fields))
                    })
                    .collect();
                let body = envelope("orders", &items);
                (ids, body)
            }
        };
        drop(data);
        let mut links = Vec::new();
        if let (Some(first), Some(last)) = (ids.first(), ids.last()) {
            let link = |last_id: i64, direction: &str| {
                let token = PageToken {
                    filters: filters.clone(),
                    last_id,
                    last_value: last_id.to_string(),
                    direction: direction.to_owned(),
                };
                let mut query = url::form_urlencoded::Serializer::new(String::new());
                query.append_pair("limit", &limit.to_string());
                if let Some(fields) = &fields_raw {
                    query.append_pair("fields", fields);
                }
                query.append_pair("page_info", &token.encode());
                format!(
                    "<{}/admin/api/{}/{}.json?{}>",
                    self.base_url,
                    self.api_version,
                    resource.plural(),
                    query.finish()
                )
            };
            if more_before {
                links.push(format!("{}; rel=\"previous\"", link(*first, "prev")));
            }
            if more_after {
                links.push(format!("{}; rel=\"next\"", link(*last, "next")));
            }
        }
        let reply = Reply::raw(StatusCode::OK, JSON, body).list_page();
        if links.is_empty() {
            reply
        } else {
            reply.header("link", links.join(", "))
        }
    }

    fn count(&self, resource: Resource, request: &Incoming) -> Reply {
        let mut filters = Filters::default();
        for (key, value) in request.query_pairs() {
            filters.set(&key, value);
        }
        let compiled = match Compiled::new(&filters, resource) {
            Ok(compiled) => compiled,
            Err(reply) => return reply,
        };
        let data = read(&self.data);
        let count = match resource {
            Resource::Customers => data
                .customers
                .iter()
                .filter(|(id, c)| compiled.customer(**id, c))
                .count(),
            Resource::Orders => data
                .orders
                .iter()
                .filter(|(id, o)| compiled.order(**id, o))
                .count(),
        };
        Reply::json(StatusCode::OK, JSON, &json!({ "count": count }))
    }

    fn single(&self, resource: Resource, id_text: &str, request: &Incoming) -> Reply {
        let Ok(id) = id_text.parse::<i64>() else {
            return not_found();
        };
        let fields: Option<Vec<String>> = request
            .query_pairs()
            .into_iter()
            .find(|(k, _)| k == "fields")
            .map(|(_, f)| {
                f.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            });
        let data = read(&self.data);
        let object = match resource {
            Resource::Customers => data.customers.get(&id).map(|c| customer_item(id, c, false)),
            Resource::Orders => data
                .orders
                .get(&id)
                .map(|o| order_item(id, o, &data.customers)),
        };
        match object {
            Some(object) => Reply::json(
                StatusCode::OK,
                JSON,
                &json!({ resource.singular(): Value::Object(object.select(&fields).into_map()) }),
            ),
            None => not_found(),
        }
    }
}

impl Vendor for Inner {
    fn faults(&self) -> &FaultQueue {
        &self.faults
    }

    fn log(&self) -> &RequestLog {
        &self.log
    }

    fn fault_exempt(&self, _request: &Incoming) -> bool {
        false
    }

    fn credential(&self, request: &Incoming) -> Option<String> {
        request.header("x-shopify-access-token").map(str::to_owned)
    }

    fn injected_server_error(&self, status: StatusCode) -> Reply {
        let message = match status {
            StatusCode::BAD_GATEWAY => "Bad Gateway",
            StatusCode::SERVICE_UNAVAILABLE => "Service Unavailable",
            _ => "Internal Server Error",
        };
        errors(status, json!(message)).header("x-request-id", uuid())
    }

    fn injected_rate_limit(&self, retry_after: Option<f64>) -> Reply {
        let limit = format!("{}/{}", self.bucket_size, self.bucket_size);
        let reply = errors(StatusCode::TOO_MANY_REQUESTS, json!(THROTTLED))
            .header("x-shopify-shop-api-call-limit", limit)
            .header("x-request-id", uuid());
        match retry_after {
            Some(seconds) => reply.header("retry-after", retry_after_text(seconds, true)),
            None => reply,
        }
    }

    fn handle(&self, request: &Incoming) -> Reply {
        let common = |reply: Reply| {
            reply
                .header("x-shopify-api-version", self.api_version.clone())
                .header("x-request-id", uuid())
        };
        let Some(rest) = request.path.strip_prefix("/admin/api/") else {
            return common(not_found());
        };
        let segments: Vec<&str> = rest.split('/').collect();
        let Some((version, route)) = segments.split_first() else {
            return common(not_found());
        };
        if *version != self.api_version {
            return common(not_found());
        }
        let token = request.header("x-shopify-access-token").unwrap_or_default();
        if token != self.access_token {
            return common(errors(StatusCode::UNAUTHORIZED, json!(INVALID_TOKEN)));
        }
        let call_limit = match self.admit(token) {
            Ok(limit) => limit,
            Err(reply) => return common(reply),
        };
        let reply = if request.method == Method::GET {
            match route {
                ["customers.json"] => self.list(Resource::Customers, request),
                ["orders.json"] => self.list(Resource::Orders, request),
                ["customers", "count.json"] => self.count(Resource::Customers, request),
                ["orders", "count.json"] => self.count(Resource::Orders, request),
                ["customers", file] => match file.strip_suffix(".json") {
                    Some(id) => self.single(Resource::Customers, id, request),
                    None => not_found(),
                },
                ["orders", file] => match file.strip_suffix(".json") {
                    Some(id) => self.single(Resource::Orders, id, request),
                    None => not_found(),
                },
                _ => not_found(),
            }
        } else {
            not_found()
        };
        common(reply.headers([(
            HeaderName::from_static("x-shopify-shop-api-call-limit"),
            call_limit,
        )]))
    }
}

// ---------------------------------------------------------------------------------------------------------
// Seeding and editing

fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

fn json_id(value: Option<&Value>) -> Option<i64> {
    match value? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn json_time(map: &Map<String, Value>, key: &str) -> Option<DateTime<Utc>> {
    map.get(key)
        .and_then(Value::as_str)
        .and_then(parse_time)
        .map(truncate_secs)
}

const ORDER_TAGS: &[&str] = &[
    "",
    "",
    "",
    "",
    "gift",
    "wholesale",
    "priority",
    "pos",
    "subscription",
];
const NOTES: &[&str] = &[
    "Prefers e-mail",
    "Met at the Berlin pop-up",
    "VIP — handle with care",
    "Asked for invoices in EUR",
];

impl FakeShopify {
    /// Starts the fake on `127.0.0.1` (a free port); it serves until dropped.
    pub async fn start(config: FakeShopifyConfig) -> Self {
        let (listener, addr) = crate::common::bind().await;
        let inner = Arc::new(Inner {
            base_url: format!("http://{addr}"),
            access_token: config.access_token,
            api_version: config.api_version,
            bucket_size: config.bucket_size.max(1),
            leak: Mutex::new(config.leak_per_second),
            buckets: Mutex::new(HashMap::new()),
            data: RwLock::new(ShopData {
                customers: BTreeMap::new(),
                orders: BTreeMap::new(),
                next_customer_id: 6_100_000_000_000,
                next_order_id: 5_500_000_000_000,
                next_address_id: 8_200_000_000_000,
                next_line_id: 14_000_000_000_000,
                next_order_number: 1001,
                seq: 0,
            }),
            faults: FaultQueue::default(),
            log: RequestLog::default(),
        });
        let server = crate::common::serve(listener, addr, Arc::clone(&inner));
        Self { inner, server }
    }

    /// The shop origin, `http://127.0.0.1:PORT`; API paths are `/admin/api/{version}/…` under it.
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    /// Generates `n` customers (ids ascending with creation time over the past three years; some without
    /// e-mail, phone or address; mixed tags and marketing consents); returns their ids.
    pub fn seed_customers(&self, n: usize, seed: u64) -> Vec<i64> {
        let mut rng = StdRng::seed_from_u64(seed);
        let now = Utc::now().timestamp();
        let mut data = write(&self.inner.data);
        let start = data
            .customers
            .values()
            .map(|c| c.created.timestamp())
            .max()
            .unwrap_or(0)
            .max(now - 3 * 365 * 86_400);
        let end = now - 3_600;
        let step = ((end - start) / n.max(1) as i64).max(1);
        let mut ids = Vec::with_capacity(n);
        for index in 0..n {
            data.seq += 1;
            let seq = data.seq;
            let first = *pick(&mut rng, data::FIRST_NAMES);
            let last = *pick(&mut rng, data::LAST_NAMES);
            let place_index = rng.random_range(0..data::PLACES.len());
            let place = &data::PLACES[place_index];
            let created = (start + step * index as i64 + rng.random_range(0..step)).min(end);
            let latest = (now - 60).max(created);
            let updated = if rng.random_bool(0.5) {
                created + rng.random_range(0..=(latest - created).min(86_400))
            } else {
                created + rng.random_range(0..=latest - created)
            };
            let email = rng.random_bool(0.92).then(|| {
                format!(
                    "{}.{}{}@{}",
                    data::ascii_slug(first),
                    data::ascii_slug(last),
                    seq,
                    pick(&mut rng, data::EMAIL_DOMAINS)
                )
            });
            let phone = rng
                .random_bool(0.6)
                .then(|| data::phone_e164(&mut rng, place));
            let consent_time = |rng: &mut StdRng| {
                Some(from_secs(created + rng.random_range(0..=updated - created)))
            };
            let email_consent = email.as_ref().map(|_| match rng.random_range(0..10u8) {
                0..=3 => Consent {
                    state: "subscribed",
                    opt_in_level: "single_opt_in",
                    updated: consent_time(&mut rng),
                },
                4 => Consent {
                    state: "subscribed",
                    opt_in_level: "confirmed_opt_in",
                    updated: consent_time(&mut rng),
                },
                5 => Consent {
                    state: "unsubscribed",
                    opt_in_level: "single_opt_in",
                    updated: consent_time(&mut rng),
                },
                6 => Consent {
                    state: "pending",
                    opt_in_level: "confirmed_opt_in",
                    updated: consent_time(&mut rng),
                },
                _ => Consent {
                    state: "not_subscribed",
                    opt_in_level: "single_opt_in",
                    updated: None,
                },
            });
            let sms_consent = phone.as_ref().map(|_| match rng.random_range(0..4u8) {
                0 => Consent {
                    state: "subscribed",
                    opt_in_level: "single_opt_in",
                    updated: consent_time(&mut rng),
                },
                _ => Consent {
                    state: "not_subscribed",
                    opt_in_level: "unknown",
                    updated: None,
                },
            });
            let address = if rng.random_bool(0.85) {
                let id = data.next_address_id;
                data.next_address_id += rng.random_range(1..=20);
                Some(GenAddress {
                    id,
                    place: place_index,
                    street_no: rng.random_range(1..400),
                    street: rng.random_range(0..data::STREETS.len()),
                    address2: rng
                        .random_bool(0.2)
                        .then(|| format!("Apt {}", rng.random_range(1..120))),
                    zip: data::postal_code(&mut rng, place),
                    phone: rng
                        .random_bool(0.5)
                        .then(|| data::phone_free(&mut rng, place)),
                    company: rng
                        .random_bool(0.15)
                        .then(|| *pick(&mut rng, data::COMPANY_STEMS)),
                })
            } else {
                None
            };
            let state = match rng.random_range(0..20u8) {
                0 => "disabled",
                1 => "invited",
                _ => "enabled",
            };
            let generated = GenCustomer {
                first,
                last,
                verified_email: email.is_some() && rng.random_bool(0.9),
                email,
                phone,
                address,
                tags: data::TAG_SETS[rng.random_range(0..data::TAG_SETS.len())],
                state,
                tax_exempt: rng.random_bool(0.03),
                note: rng.random_bool(0.05).then(|| *pick(&mut rng, NOTES)),
                currency: place.currency,
                email_consent,
                sms_consent,
                orders_count: 0,
                total_spent_cents: 0,
                last_order: None,
            };
            let id = data.next_customer_id;
            data.next_customer_id += rng.random_range(1..=40);
            data.customers.insert(
                id,
                Customer {
                    created: from_secs(created),
                    updated: from_secs(updated),
                    body: Body::Generated(Box::new(generated)),
                },
            );
            ids.push(id);
        }
        ids
    }

    /// Generates `n` orders, each for a random existing customer created before it (ids ascending with
    /// creation time); roughly 45% open, 45% closed, 10% cancelled (cancelled ones are closed too). With no
    /// customers seeded, the orders are guest checkouts: an `email` but no `customer`. Returns their ids.
    pub fn seed_orders(&self, n: usize, seed: u64) -> Vec<i64> {
        let mut rng = StdRng::seed_from_u64(seed);
        let now = Utc::now().timestamp();
        let mut data = write(&self.inner.data);
        let mut by_created: Vec<(i64, i64)> = data
            .customers
            .iter()
            .map(|(id, c)| (c.created.timestamp(), *id))
            .collect();
        by_created.sort_unstable();
        let earliest = by_created
            .first()
            .map_or(now - 2 * 365 * 86_400, |(t, _)| *t);
        let start = data
            .orders
            .values()
            .map(|o| o.created.timestamp())
            .max()
            .unwrap_or(0)
            .max(earliest);
        let end = now - 3_600;
        let step = ((end - start) / n.max(1) as i64).max(1);
        let latest = now - 60;
        let mut ids = Vec::with_capacity(n);
        for index in 0..n {
            let created = (start + step * index as i64 + rng.random_range(0..step)).min(end);
            let eligible = by_created.partition_point(|(t, _)| *t <= created);
            let customer_id = match (eligible, by_created.len()) {
                (_, 0) => None,
                (0, len) => Some(by_created[rng.random_range(0..len)].1),
                (k, _) => Some(by_created[rng.random_range(0..k)].1),
            };
            let kind = rng.random_range(0..20u8);
            let (closed, cancelled, financial, fulfillment, cancel_reason) = match kind {
                0..=8 => {
                    let financial = match rng.random_range(0..20u8) {
                        0..=13 => "paid",
                        14..=15 => "pending",
                        16..=17 => "authorized",
                        18 => "partially_paid",
                        _ => "partially_refunded",
                    };
                    let fulfillment = match rng.random_range(0..10u8) {
                        0..=5 => None,
                        6 => Some("partial"),
                        _ => Some("fulfilled"),
                    };
                    (None, None, financial, fulfillment, None)
                }
                9..=17 => {
                    let closed = (created + rng.random_range(3_600..14 * 86_400))
                        .min(latest)
                        .max(created);
                    let financial = match rng.random_range(0..20u8) {
                        0..=16 => "paid",
                        17..=18 => "refunded",
                        _ => "partially_refunded",
                    };
                    (Some(closed), None, financial, Some("fulfilled"), None)
                }
                _ => {
                    let cancelled = (created + rng.random_range(600..3 * 86_400))
                        .min(latest)
                        .max(created);
                    let financial = if rng.random_bool(0.5) {
                        "voided"
                    } else {
                        "refunded"
                    };
                    let reason = *pick(
                        &mut rng,
                        &["customer", "fraud", "inventory", "declined", "other"],
                    );
                    (
                        Some(cancelled),
                        Some(cancelled),
                        financial,
                        None,
                        Some(reason),
                    )
                }
            };
            let base = closed.unwrap_or(created);
            let updated = if rng.random_bool(0.3) && latest > base {
                base + rng.random_range(0..=(latest - base).min(30 * 86_400))
            } else {
                (base + rng.random_range(0..120)).min(latest.max(base))
            };
            let line_count = rng.random_range(1..=4usize);
            let mut lines = Vec::with_capacity(line_count);
            for _ in 0..line_count {
                let id = data.next_line_id;
                data.next_line_id += rng.random_range(1..=5);
                lines.push(GenLine {
                    id,
                    product: rng.random_range(0..data::PRODUCTS.len()),
                    quantity: if rng.random_bool(0.8) {
                        1
                    } else {
                        rng.random_range(2..=5)
                    },
                });
            }
            let line_total: i64 = lines
                .iter()
                .map(|l| data::PRODUCTS[l.product].price_cents * i64::from(l.quantity))
                .sum();
            let discount_cents = if rng.random_bool(0.2) {
                line_total / 10
            } else {
                0
            };
            let tax_rate_percent = *pick(&mut rng, &[0i64, 7, 8, 13, 19, 20]);
            let subtotal = line_total - discount_cents;
            let total = subtotal + subtotal * tax_rate_percent / 100;
            let number = data.next_order_number;
            data.next_order_number += 1;
            let id = data.next_order_id;
            data.next_order_id += rng.random_range(1..=40);
            let currency = customer_id
                .and_then(|cid| match &data.customers.get(&cid)?.body {
                    Body::Generated(g) => Some(g.currency),
                    Body::Json(_) => None,
                })
                .unwrap_or("USD");
            if let Some(customer) = customer_id.and_then(|cid| data.customers.get_mut(&cid)) {
                if let Body::Generated(g) = &mut customer.body {
                    g.orders_count += 1;
                    if cancelled.is_none() {
                        g.total_spent_cents += total;
                    }
                    g.last_order = Some((id, number));
                }
                let placed = from_secs(created);
                if customer.updated < placed {
                    customer.updated = placed;
                }
            }
            let guest_email = customer_id.is_none().then(|| {
                data.seq += 1;
                let first = data::ascii_slug(pick::<&str>(&mut rng, data::FIRST_NAMES));
                format!(
                    "{first}.guest{}@{}",
                    data.seq,
                    pick(&mut rng, data::EMAIL_DOMAINS)
                )
            });
            let order = GenOrder {
                customer_id,
                guest_email,
                number,
                currency,
                fulfillment,
                cancel_reason,
                lines,
                discount_cents,
                tax_rate_percent,
                buyer_accepts_marketing: rng.random_bool(0.4),
                tags: ORDER_TAGS[rng.random_range(0..ORDER_TAGS.len())],
            };
            data.orders.insert(
                id,
                Order {
                    created: from_secs(created),
                    updated: from_secs(updated.max(created)),
                    processed: from_secs(created),
                    closed: closed.map(from_secs),
                    cancelled: cancelled.map(from_secs),
                    financial: Some(financial.to_owned()),
                    body: OrderBody::Generated(Box::new(order)),
                },
            );
            ids.push(id);
        }
        ids
    }

    /// Creates or replaces a customer from Shopify-shaped JSON (an object); returns its id. `id` is taken from
    /// the object or allocated; `created_at`/`updated_at` are read from it (else kept, else now). The object is
    /// served as given, with `id`, `created_at`, `updated_at` and `admin_graphql_api_id` set by the fake.
    pub fn put_customer(&self, customer: Value) -> i64 {
        let Value::Object(map) = customer else {
            panic!("testkit: put_customer needs a JSON object")
        };
        let now = truncate_secs(Utc::now());
        let mut data = write(&self.inner.data);
        let id = json_id(map.get("id")).unwrap_or_else(|| {
            let id = data.next_customer_id;
            data.next_customer_id += 1;
            id
        });
        data.next_customer_id = data.next_customer_id.max(id + 1);
        let existing = data.customers.get(&id).map(|c| c.created);
        let created = json_time(&map, "created_at").or(existing).unwrap_or(now);
        let updated = json_time(&map, "updated_at").unwrap_or(now);
        data.customers.insert(
            id,
            Customer {
                created,
                updated,
                body: Body::Json(map),
            },
        );
        id
    }

    /// Creates or replaces an order from Shopify-shaped JSON (an object); returns its id. `created_at`,
    /// `updated_at`, `processed_at`, `closed_at`, `cancelled_at` and `financial_status` are read from it (they
    /// drive filters); the rest is served as given.
    pub fn put_order(&self, order: Value) -> i64 {
        let Value::Object(map) = order else {
            panic!("testkit: put_order needs a JSON object")
        };
        let now = truncate_secs(Utc::now());
        let mut data = write(&self.inner.data);
        let id = json_id(map.get("id")).unwrap_or_else(|| {
            let id = data.next_order_id;
            data.next_order_id += 1;
            id
        });
        data.next_order_id = data.next_order_id.max(id + 1);
        let existing = data.orders.get(&id).map(|o| o.created);
        let created = json_time(&map, "created_at").or(existing).unwrap_or(now);
        let order = Order {
            created,
            updated: json_time(&map, "updated_at").unwrap_or(now),
            processed: json_time(&map, "processed_at").unwrap_or(created),
            closed: json_time(&map, "closed_at"),
            cancelled: json_time(&map, "cancelled_at"),
            financial: map
                .get("financial_status")
                .and_then(Value::as_str)
                .map(str::to_owned),
            body: OrderBody::Json(map),
        };
        data.orders.insert(id, order);
        id
    }

    /// Sets a customer's `updated_at` (to the second, as Shopify keeps it).
    pub fn touch_customer(&self, id: i64, updated_at: DateTime<Utc>) {
        let mut data = write(&self.inner.data);
        let customer = data
            .customers
            .get_mut(&id)
            .unwrap_or_else(|| panic!("testkit: no customer {id}"));
        customer.updated = truncate_secs(updated_at);
    }

    /// Sets an order's `updated_at` (to the second).
    pub fn touch_order(&self, id: i64, updated_at: DateTime<Utc>) {
        let mut data = write(&self.inner.data);
        let order = data
            .orders
            .get_mut(&id)
            .unwrap_or_else(|| panic!("testkit: no order {id}"));
        order.updated = truncate_secs(updated_at);
    }

    /// Queues a fault for the next API requests (see [`Fault`]).
    pub fn inject(&self, fault: Fault) {
        self.inner.faults.push(fault);
    }

    /// Changes the leak rate (`None` = no limit). The bucket keeps its level.
    pub fn set_leak_rate(&self, per_second: Option<f64>) {
        // Settle the buckets at the old rate first, so the change applies from now on.
        let old = *lock(&self.inner.leak);
        if let Some(rate) = old {
            let now = Instant::now();
            for bucket in lock(&self.inner.buckets).values_mut() {
                bucket.level =
                    (bucket.level - now.duration_since(bucket.at).as_secs_f64() * rate).max(0.0);
                bucket.at = now;
            }
        } else {
            let now = Instant::now();
            for bucket in lock(&self.inner.buckets).values_mut() {
                bucket.at = now;
            }
        }
        *lock(&self.inner.leak) = per_second;
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner.log.all()
    }

    /// How many records of `resource` (`"customers"` or `"orders"`, any status) the shop holds.
    pub fn count(&self, resource: &str) -> usize {
        let data = read(&self.inner.data);
        match resource {
            "customers" => data.customers.len(),
            "orders" => data.orders.len(),
            other => panic!("testkit: unknown Shopify resource {other:?}"),
        }
    }
}
