//! The guest SDK for Spindle destination plugins (`spindle:destination@0.1.0`).
//!
//! A plugin is one short file: a typed config, a [`Destination`] implementation, and [`export!`]:
//!
//! ```text
//! use spindle_plugin_sdk::prelude::*;
//!
//! #[derive(serde::Deserialize)]
//! struct Config { url: String }
//!
//! struct MyPlugin;
//!
//! impl Destination for MyPlugin {
//!     type Config = Config;
//!     fn info() -> Info { Info::new("my-plugin", env!("CARGO_PKG_VERSION")).max_batch_size(500) }
//!     fn sync_batch(config: &Config, batch: Batch) -> Result<Vec<RecordOutcome>, BatchError> {
//!         let response = http::Request::post(&config.url).json(&batch_json(&batch)).send()?;
//!         Ok(all(&batch, outcome_for_status(&response)))
//!     }
//! }
//!
//! spindle_plugin_sdk::export!(MyPlugin);
//! ```
//!
//! Credentials are never in the config: write `secret("api_key")` (that is `{{secret:api_key}}`) in a header
//! or URL and the host fills in the destination's secret when it sends the request.

// Lets the generated code name this crate the same way from inside and from plugins.
extern crate self as spindle_plugin_sdk;

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

/// The generated bindings of the `destination` world.
#[allow(missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "destination",
        path: "../wit/destination-0.1.0",
        pub_export_macro: true,
        export_macro_name: "export_destination",
        default_bindings_module: "spindle_plugin_sdk::bindings",
        runtime_path: "spindle_plugin_sdk::__wit_bindgen::rt",
    });
}

pub mod hash;
pub mod http;
pub mod log;

pub use bindings::spindle::destination::types::{
    Batch, BatchError, Identifier, Outcome, PluginInfo, RecordOutcome, Removal, SyncMode, Upsert,
};

/// What `describe` returns, built step by step.
#[derive(Debug, Clone)]
pub struct Info(pub PluginInfo);

impl Info {
    /// A plugin called `name` at `version` that supports every mode, 1,000 records per batch, any config.
    pub fn new(name: &str, version: &str) -> Self {
        Info(PluginInfo {
            name: name.to_owned(),
            version: version.to_owned(),
            sync_modes: vec![SyncMode::Upsert, SyncMode::Mirror, SyncMode::AddOnly],
            max_batch_size: 1000,
            config_schema: "{}".to_owned(),
        })
    }

    /// Most records per `sync-batch` call.
    pub fn max_batch_size(mut self, size: u32) -> Self {
        self.0.max_batch_size = size;
        self
    }

    /// The modes the plugin supports.
    pub fn modes(mut self, modes: &[SyncMode]) -> Self {
        self.0.sync_modes = modes.to_vec();
        self
    }

    /// The JSON Schema of the destination's `config`.
    pub fn config_schema(mut self, schema: serde_json::Value) -> Self {
        self.0.config_schema = schema.to_string();
        self
    }
}

/// A destination plugin.
pub trait Destination {
    /// The destination's `config` table.
    type Config: serde::de::DeserializeOwned;

    /// Name, version, modes, batch size and config schema.
    fn info() -> Info;

    /// Extra checks of a parsed config, beyond its type. Default: none.
    fn validate(_config: &Self::Config) -> Result<(), String> {
        Ok(())
    }

    /// Delivers a batch: one outcome per record.
    fn sync_batch(config: &Self::Config, batch: Batch) -> Result<Vec<RecordOutcome>, BatchError>;

    /// Erases people (privacy requests): one outcome per subject, in order. Default: refuses, saying the
    /// plugin cannot erase.
    fn delete_subjects(
        _config: &Self::Config,
        subjects: Vec<Vec<Identifier>>,
    ) -> Result<Vec<Outcome>, BatchError> {
        Ok(subjects
            .iter()
            .map(|_| Outcome::Rejected("this destination does not support erasure".into()))
            .collect())
    }
}

/// Parses a destination's `config` JSON into the plugin's type.
pub fn parse_config<C: serde::de::DeserializeOwned>(config: &str) -> Result<C, String> {
    serde_json::from_str(config).map_err(|err| format!("invalid config: {err}"))
}

/// The reference the host replaces with the destination's secret `name`.
pub fn secret(name: &str) -> String {
    format!("{{{{secret:{name}}}}}")
}

/// The value of identifier `kind` of a person, if it has one.
pub fn identifier<'a>(identifiers: &'a [Identifier], kind: &str) -> Option<&'a str> {
    identifiers
        .iter()
        .find(|i| i.kind == kind)
        .map(|i| i.value.as_str())
}

/// The same outcome for every record of a batch.
pub fn all(batch: &Batch, outcome: Outcome) -> Vec<RecordOutcome> {
    batch
        .upserts
        .iter()
        .map(|u| u.id.clone())
        .chain(batch.removals.iter().map(|r| r.id.clone()))
        .map(|id| RecordOutcome {
            id,
            outcome: outcome.clone(),
        })
        .collect()
}

/// The outcome a vendor's status code means for the records of a request: 2xx delivered, 429 and 5xx retry
/// (with `Retry-After` when given), other 4xx rejected with the body's first 300 characters.
pub fn outcome_for_status(response: &http::Response) -> Outcome {
    match response.status {
        200..=299 => Outcome::Delivered,
        429 | 500..=599 => Outcome::Retry(response.retry_after()),
        status => Outcome::Rejected(format!(
            "{status}: {}",
            response.text().chars().take(300).collect::<String>()
        )),
    }
}

/// Things a plugin usually needs.
pub mod prelude {
    pub use crate::{
        Batch, BatchError, Destination, Identifier, Info, Outcome, RecordOutcome, Removal,
        SyncMode, Upsert, all, hash, http, identifier, log, outcome_for_status, secret,
    };
}

/// Exports a [`Destination`] as the plugin's component.
#[macro_export]
macro_rules! export {
    ($plugin:ty) => {
        struct __SpindlePlugin;

        impl $crate::bindings::Guest for __SpindlePlugin {
            fn describe() -> $crate::PluginInfo {
                <$plugin as $crate::Destination>::info().0
            }

            fn validate_config(config: String) -> Result<(), String> {
                let parsed = $crate::parse_config::<<$plugin as $crate::Destination>::Config>(&config)?;
                <$plugin as $crate::Destination>::validate(&parsed)
            }

            fn sync_batch(batch: $crate::Batch) -> Result<Vec<$crate::RecordOutcome>, $crate::BatchError> {
                let config = $crate::parse_config::<<$plugin as $crate::Destination>::Config>(&batch.config)
                    .map_err($crate::BatchError::InvalidConfig)?;
                <$plugin as $crate::Destination>::sync_batch(&config, batch)
            }

            fn delete_subjects(
                config: String,
                subjects: Vec<Vec<$crate::Identifier>>,
            ) -> Result<Vec<$crate::Outcome>, $crate::BatchError> {
                let config = $crate::parse_config::<<$plugin as $crate::Destination>::Config>(&config)
                    .map_err($crate::BatchError::InvalidConfig)?;
                <$plugin as $crate::Destination>::delete_subjects(&config, subjects)
            }
        }

        $crate::bindings::export_destination!(__SpindlePlugin with_types_in $crate::bindings);
    };
}
