//! Identity resolution and the unified profile.
#![deny(missing_docs)]

pub mod normalize;
pub mod resolve;
