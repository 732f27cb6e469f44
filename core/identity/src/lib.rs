//! Identity resolution and the unified profile: one customer, one profile, explainable and reversible.
//!
//! Contract:
//! - [`normalize`] gives identifiers their comparable form; the raw value is kept beside it.
//! - [`resolve`] is the pure, deterministic linking algorithm (priority, limits, canonical order).
//! - [`profile`] builds a customer's document: survivorship traits, consent, identifiers, computed traits,
//!   timeline.
//! - [`IdentityEngine`] applies them to the store, incrementally (`resolve_pending`) or from scratch
//!   (`rebuild`), with stable profile ids and the evidence of every link; [`explain`] renders that evidence.
//! - [`links`] says which normalised identifiers link records (`link_on`, `blocked`, patterns).
//! - [`lookup`] finds the one profile an identifier, as a person types it, names.
#![deny(missing_docs)]

mod engine;
pub mod explain;
pub mod links;
pub mod lookup;
pub mod normalize;
pub mod profile;
pub mod resolve;

pub use engine::{IdentityEngine, IdentityError, ResolveReport};
