//! The JSON Schema of `connectors.toml`, generated from the same serde types the loader uses.
//!
//! Editors such as Even Better TOML (taplo) use it for completion and checks:
//! `spindle config schema > connectors.schema.json`, then `#:schema ./connectors.schema.json` as the file's
//! first line.

use std::collections::BTreeMap;

use schemars::JsonSchema;

use crate::raw::{
    RawDestination, RawFileSource, RawHubspotSource, RawIdentity, RawSegment, RawServer,
    RawShopifySource, RawStore, RawSync,
};

/// The whole file.
#[allow(dead_code)]
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields, title = "Spindle connectors.toml")]
struct ConfigFile {
    /// Where Spindle keeps its data.
    store: Option<RawStore>,
    /// The HTTP collector and admin API.
    server: Option<RawServer>,
    /// How records are linked into profiles.
    identity: Option<RawIdentity>,
    /// How profile traits are chosen and computed.
    profiles: Option<crate::raw::RawProfiles>,
    /// Source connectors by id.
    #[schemars(default)]
    sources: BTreeMap<String, SourceSchema>,
    /// Destinations by id.
    #[schemars(default)]
    destinations: BTreeMap<String, RawDestination>,
    /// Segments by id.
    #[schemars(default)]
    segments: BTreeMap<String, RawSegment>,
    /// Audience syncs by id.
    #[schemars(default)]
    syncs: BTreeMap<String, RawSync>,
}

/// Keys every source has besides `kind`.
#[allow(dead_code)]
#[derive(JsonSchema)]
struct Scheduling {
    /// When to pull: cron with seconds (`0 */15 * * * *`) or classic 5-field crontab.
    schedule: Option<String>,
    /// IANA time zone of the schedule, e.g. `Europe/Paris`. Default UTC.
    timezone: Option<String>,
}

/// A file source.
#[allow(dead_code)]
#[derive(JsonSchema)]
struct FileSourceSchema {
    #[schemars(flatten)]
    scheduling: Scheduling,
    #[schemars(flatten)]
    file: RawFileSource,
}

/// A HubSpot source.
#[allow(dead_code)]
#[derive(JsonSchema)]
struct HubspotSchema {
    #[schemars(flatten)]
    scheduling: Scheduling,
    #[schemars(flatten)]
    hubspot: RawHubspotSource,
}

/// A Shopify source.
#[allow(dead_code)]
#[derive(JsonSchema)]
struct ShopifySchema {
    #[schemars(flatten)]
    scheduling: Scheduling,
    #[schemars(flatten)]
    shopify: RawShopifySource,
}

/// A source connector, by `kind`.
#[allow(dead_code)]
#[derive(JsonSchema)]
#[schemars(tag = "kind")]
enum SourceSchema {
    /// A CSV file with a header row.
    #[schemars(rename = "csv")]
    Csv(FileSourceSchema),
    /// A file of JSON objects, one per line.
    #[schemars(rename = "jsonl")]
    Jsonl(FileSourceSchema),
    /// HubSpot CRM: contacts and companies.
    #[schemars(rename = "hubspot")]
    Hubspot(HubspotSchema),
    /// Shopify: customers and orders.
    #[schemars(rename = "shopify")]
    Shopify(ShopifySchema),
}

/// The JSON Schema (draft 2020-12) of `connectors.toml`.
pub fn json_schema() -> serde_json::Value {
    schemars::schema_for!(ConfigFile).to_value()
}

#[cfg(test)]
mod tests {
    #[test]
    fn schema_describes_every_section_and_kind() {
        let schema = super::json_schema();
        let text = schema.to_string();
        for needle in [
            "\"store\"",
            "\"sources\"",
            "\"syncs\"",
            "\"csv\"",
            "\"jsonl\"",
            "\"identifiers\"",
            "\"add_only\"",
        ] {
            assert!(text.contains(needle), "schema lacks {needle}");
        }
        assert_eq!(schema["additionalProperties"], serde_json::json!(false));
    }
}
