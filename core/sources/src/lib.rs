//! Source connectors: the pull framework, the registry of connector kinds, and the connectors themselves.
//!
//! Contract:
//! - A connector implements [`Source`]: given a stream and its cursor it returns one [`Pull`] (records,
//!   quarantined records, the cursor after them, and when to be called next). It never writes to the store.
//! - The framework ([`run_source`]) owns the loop: it commits each pull's records together with its cursor in
//!   one transaction, so a crash or a shutdown at any point resumes from the last commit, without loss or
//!   duplicates. Shutdown is honoured between pulls, never in the middle of a commit.
//! - [`build_source`] is the one registry: one match arm per kind. Unknown kinds are rejected earlier, when the
//!   configuration loads, with the list of known kinds.
#![deny(missing_docs)]

mod error;
pub mod file;
mod framework;
pub mod http;
pub mod hubspot;
pub mod shopify;
#[cfg(test)]
mod test_support;

pub use error::SourceError;
pub use framework::{Next, NoProgress, Progress, Pull, Source, run_source};

use spindle_config::{SourceConfig, SourceSettings};

/// Builds the connector for a configured source.
pub fn build_source(config: &SourceConfig) -> Box<dyn Source> {
    match &config.settings {
        SourceSettings::Csv(settings) => Box::new(file::FileSource::csv(settings.clone())),
        SourceSettings::Jsonl(settings) => Box::new(file::FileSource::jsonl(settings.clone())),
        SourceSettings::Hubspot(settings) => {
            Box::new(hubspot::HubspotSource::new(&config.id, settings.clone()))
        }
        SourceSettings::Shopify(settings) => {
            Box::new(shopify::ShopifySource::new(&config.id, settings.clone()))
        }
    }
}
