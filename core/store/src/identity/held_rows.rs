//! The rows each profile holds, listed beside its document (`profiles.held_rows`).
//!
//! Contract:
//! - Every write of a profile's document writes, in the same statement, the list of the member records
//!   and `(type, value)` identifier rows the write leaves under that profile; the resolution write keeps
//!   `profile_members` and `profile_identifiers` in step with the lists (see the parent module). So a
//!   profile's list names exactly its rows, and resolution finds a profile's rows from it (what a step
//!   reaches, the stale rows of a profile rewritten or removed) instead of through an index by profile,
//!   which every write would otherwise update at one scattered page per profile.
//! - Stored as JSON, `{"members": [[source, stream, external_id], ...], "identifiers": [[type, value],
//!   ...]}`, each list in the order given; a part that is missing reads as empty.

use serde::{Deserialize, Serialize};
use spindle_model::RecordKey;
use sqlx::Row;

use super::{Columns, select_in};
use crate::{Backend, StoreResult};

/// The member and identifier rows a profile holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct HeldRows {
    /// Its records.
    #[serde(default)]
    pub members: Vec<RecordKey>,
    /// Its identifier rows, `(type, value)`.
    #[serde(default)]
    pub identifiers: Vec<(String, String)>,
}

/// The stored form of a list, borrowed from what a write holds.
#[derive(Serialize)]
struct Encoded<'a> {
    members: Vec<(&'a str, &'a str, &'a str)>,
    identifiers: &'a [(String, String)],
}

/// The stored list of a profile holding `members` and `identifiers`.
pub(crate) fn encode(members: &[RecordKey], identifiers: &[(String, String)]) -> String {
    let encoded = Encoded {
        members: members
            .iter()
            .map(|k| (k.source.as_str(), k.stream.as_str(), k.external_id.as_str()))
            .collect(),
        identifiers,
    };
    // Strings and sequences of strings always encode.
    serde_json::to_string(&encoded).expect("a list of rows encodes as JSON")
}

impl HeldRows {
    fn decode(text: &str) -> StoreResult<Self> {
        Ok(serde_json::from_str(text)?)
    }
}

/// One `held_rows` column.
impl Columns for HeldRows {
    const WIDTH: usize = 1;
    fn from_any(row: &sqlx::any::AnyRow, offset: usize) -> StoreResult<Self> {
        Self::decode(row.try_get::<&str, _>(offset)?)
    }
    fn from_sqlite(row: &rusqlite::Row<'_>, offset: usize) -> StoreResult<Self> {
        Self::decode(
            row.get_ref(offset)?
                .as_str()
                .map_err(rusqlite::Error::from)?,
        )
    }
}

/// Each member row `(record, profile)` that `lists` name.
pub(crate) fn member_rows(lists: &[(i64, HeldRows)]) -> impl Iterator<Item = (&RecordKey, i64)> {
    lists
        .iter()
        .flat_map(|(id, held)| held.members.iter().map(move |key| (key, *id)))
}

/// Each identifier row `(profile, type, value)` that `lists` name.
pub(crate) fn identifier_rows(
    lists: &[(i64, HeldRows)],
) -> impl Iterator<Item = (i64, &str, &str)> {
    lists.iter().flat_map(|(id, held)| {
        held.identifiers
            .iter()
            .map(move |(kind, value)| (*id, kind.as_str(), value.as_str()))
    })
}

/// The statement reading the lists of the profiles in `list`.
pub(crate) fn select_sql(list: &str) -> String {
    format!("SELECT id, held_rows FROM profiles WHERE id IN ({list})")
}

/// The lists of those of `profiles` that exist, `(profile, rows)`, read on `conn` (inside a write's
/// transaction, so what it reads is what the write changes).
pub(crate) async fn read_on(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    profiles: &[i64],
) -> StoreResult<Vec<(i64, HeldRows)>> {
    select_in(conn, backend, profiles, select_sql, |row| {
        <(i64, HeldRows)>::from_any(row, 0)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> RecordKey {
        RecordKey {
            source: "crm".into(),
            stream: "contacts".into(),
            external_id: id.into(),
        }
    }

    #[test]
    fn a_list_reads_back_as_written() {
        let members = vec![key("2"), key("1")];
        let identifiers = vec![("email".to_owned(), "a@x.io".to_owned())];
        let text = encode(&members, &identifiers);
        assert_eq!(
            text,
            r#"{"members":[["crm","contacts","2"],["crm","contacts","1"]],"identifiers":[["email","a@x.io"]]}"#
        );
        assert_eq!(
            HeldRows::decode(&text).unwrap(),
            HeldRows {
                members,
                identifiers
            }
        );
    }

    #[test]
    fn missing_parts_read_as_empty_and_garbage_is_refused() {
        assert_eq!(HeldRows::decode("{}").unwrap(), HeldRows::default());
        assert!(HeldRows::decode(r#"{"members":[["crm"]]}"#).is_err());
        assert!(HeldRows::decode("not json").is_err());
    }
}
