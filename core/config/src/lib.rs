//! placeholder
pub mod store_url;
