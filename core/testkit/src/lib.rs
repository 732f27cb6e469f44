//! Faithful fake vendor APIs for tests and benchmarks of Spindle's HTTP source connectors.
//!
//! Each fake is a real HTTP server on `127.0.0.1` (a free port) holding its data in memory:
//! - [`hubspot::FakeHubspot`]: HubSpot CRM v3 contacts and companies (list, search, v4 associations,
//!   OAuth refresh), with HubSpot's auth errors, rolling rate limit and headers, and the search paging cap.
//! - [`shopify::FakeShopify`]: Shopify REST Admin customers and orders, with cursor pagination through the
//!   `Link` header, its `page_info` rules, and the leaky-bucket rate limit.
//!
//! Both take seeded, realistic data (`seed_*`, deterministic for a seed apart from times, which are relative to
//! now), let a test edit records with explicit timestamps (to create ties), inject [`Fault`]s (5xx, 429, slow
//! answers, truncated pages), and record every request ([`RecordedRequest`]). Each module's documentation
//! states what is faithful to the vendor and what is simplified.
//!
//! The fakes must be started inside a Tokio runtime (they spawn their server task) and stop when dropped.
//! Their rate-limit windows, leaky buckets, OAuth token lifetimes and `Slow` faults follow Tokio's clock
//! (`tokio::time::Instant`), so a test can age them with `tokio::time::pause`/`advance`/`resume`; timestamps
//! in records are wall-clock (`chrono::Utc`).
//!
//! ```no_run
//! # async fn demo() {
//! use spindle_testkit::Fault;
//! use spindle_testkit::shopify::{FakeShopify, FakeShopifyConfig};
//!
//! let shop = FakeShopify::start(FakeShopifyConfig { leak_per_second: None, ..Default::default() }).await;
//! shop.seed_customers(1_000, 42);
//! shop.inject(Fault::TruncatedPage { count: 1 });
//! let first_page = format!("{}/admin/api/2024-01/customers.json?limit=250", shop.base_url());
//! // … point the connector at shop.base_url(), then inspect shop.requests().
//! # let _ = first_page;
//! # }
//! ```

mod common;
mod data;
pub mod hubspot;
pub mod mailchimp;
pub mod plugins;
pub mod proc_status;
pub mod shopify;
pub mod store;

pub use common::{Fault, RecordedRequest};
