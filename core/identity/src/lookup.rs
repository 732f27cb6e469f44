//! Finding the one profile an identifier names, the way people type it (the CLI and the admin API).
//!
//! Contract: the identifier is normalised exactly as resolution normalises it (so `ADA@X.io ` finds the
//! profile holding `ada@x.io`), and the answer is one profile id or a typed reason: the value cannot be
//! normalised, no profile holds it, or several do (a blocked or over-limit value links nobody).

use spindle_store::{IdentityStore, StoreError};

use crate::normalize::Normalizer;

/// Why an identifier does not lead to exactly one profile.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// The value is not a usable identifier of that type.
    #[error("`{raw}` is not a usable {kind}: {reason}")]
    Unusable {
        /// Identifier type.
        kind: String,
        /// The value as given.
        raw: String,
        /// Why it cannot be normalised.
        reason: String,
    },
    /// No profile holds it.
    #[error("no profile holds {kind} `{value}`")]
    NotFound {
        /// Identifier type.
        kind: String,
        /// The normalised value.
        value: String,
    },
    /// Several profiles hold it.
    #[error("{} profiles hold {kind} `{value}` (it links nobody, or limits kept them apart): {}", .ids.len(), list(.ids))]
    Ambiguous {
        /// Identifier type.
        kind: String,
        /// The normalised value.
        value: String,
        /// The profiles holding it, in increasing order.
        ids: Vec<i64>,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn list(ids: &[i64]) -> String {
    ids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The one profile holding identifier `kind` = `raw` (normalised with `default_region` for phones).
pub async fn profile_holding<S: IdentityStore + ?Sized>(
    store: &S,
    default_region: Option<&str>,
    kind: &str,
    raw: &str,
) -> Result<i64, LookupError> {
    let value = Normalizer::new(default_region)
        .normalize(kind, raw)
        .map_err(|reason| LookupError::Unusable {
            kind: kind.to_owned(),
            raw: raw.to_owned(),
            reason,
        })?;
    let found = store
        .profiles_with_identifiers(&[(kind.to_owned(), value.clone())])
        .await?;
    let mut ids: Vec<i64> = found.into_iter().map(|(_, _, id)| id).collect();
    ids.sort_unstable();
    ids.dedup();
    match ids.as_slice() {
        [] => Err(LookupError::NotFound {
            kind: kind.to_owned(),
            value,
        }),
        [one] => Ok(*one),
        _ => Err(LookupError::Ambiguous {
            kind: kind.to_owned(),
            value,
            ids,
        }),
    }
}
