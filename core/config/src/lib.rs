//! `connectors.toml`: the one file IT edits to run Spindle.
//!
//! Contract:
//! - [`load`] reads the file and returns a fully validated [`Config`] or a [`LoadError`] listing **every**
//!   problem, each with file, line, column, the offending text underlined and a hint.
//! - Unknown keys are errors. Ids are lowercase (`[sources.crm]`). References between sections
//!   (a sync's segment and destination) must resolve.
//! - Secrets are written `${env:NAME}` or `${file:PATH}` and resolved at load into values whose `Debug` is
//!   redacted; they are never printed.
//! - Validation is pure: no network, no database. Probing connections is the daemon's job
//!   (`spindle validate --check-connections`).
//! - [`json_schema`] describes the file for editors (taplo / Even Better TOML).
#![deny(missing_docs)]

mod computed;
pub mod diagnostic;
mod load;
pub mod model;
pub mod raw;
mod schema;
pub mod secret;
pub mod store_url;

pub use diagnostic::Diagnostic;
pub use load::{DEFAULT_CONFIG_PATH, IDENTIFIER_TYPES, LoadError, load, load_str, phone_region};
pub use model::*;
pub use schema::json_schema;
