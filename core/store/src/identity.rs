//! Storage of resolved profiles, behind [`IdentityStore`].
//!
//! Contract:
//! - `profiles` holds one JSON document per customer; `profile_members` maps every resolved record to its
//!   profile; `profile_identifiers` maps every normalised identifier a profile holds to it; `profile_aliases`
//!   remembers ids that were merged into another so old ids keep answering. Each profile also lists the
//!   member and identifier rows it holds (`held_rows`, see [`held_rows`]), which is how a profile's rows
//!   are found: the two row tables are indexed by their keys only.
//! - [`IdentityStore::write_resolution`] replaces the given profiles (members, identifiers, document),
//!   deletes the removed ones, records aliases and advances the identity high-water mark, all in one
//!   transaction: readers see the state before or after a resolution step, never half of it. It writes only
//!   the member and identifier rows that differ from what the given profiles hold (read from their lists
//!   in the same transaction): a record that left them without joining another loses its membership, one
//!   that joins moves to its new profile (and leaves the list of the profile it left). Documents are
//!   written from their JSON text when the caller gives it ([`ResolutionWrite::encoded_documents`]),
//!   except where the stored profile already has the same content ([`ProfileWrite::fingerprint`]) and
//!   rows. Profiles it gives out for the first time (the `new_ids` of [`ResolutionRows`]) are not
//!   searched for stale rows.
//! - Every resolution write holds one lock until it ends (SQLite's write lock; on PostgreSQL the row of
//!   the high-water mark), which [`IdentityStore::settle_resolution_writes`] waits on: a resolution starts
//!   after any write of a cancelled one, which may still be committing, has ended.
//! - Resolution's output is derived from the stored records, so on SQLite its commits do not wait for the
//!   disk, do not themselves checkpoint the write-ahead log before it holds 256 MiB, and checkpoint it
//!   after the last write of a pass or step, beside whatever comes next: see
//!   `SqlStore::derived_write_connection` for why that loses nothing.
//! - Statements built at run time use `sql::placeholders` (positional `?` on SQLite) and stay under both
//!   backends' parameter limits.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use chrono::Utc;
use spindle_model::{RecordKey, StoredRecord};
use sqlx::{AssertSqlSafe, Row};
use tracing::Instrument;

use crate::sql::{
    DerivedWriteConnection, EncodedRecord, PayloadParts, RECORD_COLUMNS, SqlStore,
    any_record_columns, count, decode_record, from_millis, placeholders, records_after_seq_sql,
    to_millis,
};
use crate::sqlite_reader::record_columns;
use crate::{Backend, ProfileStore, StoreError, StoreResult};

mod held_rows;

pub use held_rows::HeldRows;

/// A profile as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileRow {
    /// Profile id.
    pub id: i64,
    /// The profile document (JSON).
    pub document: serde_json::Value,
    /// Member records.
    pub record_count: u64,
    /// When the id was first given.
    pub created_at: chrono::DateTime<Utc>,
    /// When the profile last changed. Every write that changes it advances it (by a millisecond at
    /// least), so its milliseconds also serve as the profile's version.
    pub updated_at: chrono::DateTime<Utc>,
}

/// A profile to write in full.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileWrite {
    /// Its id.
    pub id: i64,
    /// The document.
    pub document: serde_json::Value,
    /// Lower-case text that `search_profiles` matches (names, e-mails, phones, ids).
    pub search_text: String,
    /// Its records.
    pub members: Vec<RecordKey>,
    /// Its normalised identifiers, `(type, value)`.
    pub identifiers: Vec<(String, String)>,
    /// A hash of the profile's content (its document, search text and rows) that leaves out what
    /// changes with every build of it (when its computed traits were evaluated). When the stored profile
    /// has the same fingerprint and holds the same rows, its row is left as it is: neither its document
    /// nor its `updated_at` changes (it is still logged in the profile change log: readers there also
    /// read what a document does not hold, such as member records' events). `None`: the profile is
    /// always written. A full pass, whose last write logs everything, may also leave out a profile whose
    /// stored fingerprint ([`IdentityStore::profile_fingerprints`]) equals its own when its fingerprints
    /// cover the rows: the store clears a profile's fingerprint whenever it changes the profile's rows
    /// without writing the profile.
    pub fingerprint: Option<i64>,
}

/// One resolution step, written atomically.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResolutionWrite {
    /// Profiles that no longer exist (members and identifiers go with them).
    pub removed: Vec<i64>,
    /// Profiles written in full.
    pub profiles: Vec<ProfileWrite>,
    /// Ids merged into another: `(old, new)`.
    pub aliases: Vec<(i64, i64)>,
    /// The record change sequence resolved up to, when it advances.
    pub high_water: Option<i64>,
    /// How member and identifier rows are written.
    pub rows: ResolutionRows,
    /// The documents of `profiles`, already encoded as JSON, in the same order: when given (one per
    /// profile), the store writes these and ignores each [`ProfileWrite::document`] (which may then be
    /// `Null`), sparing a caller that holds typed documents a round trip through `serde_json::Value`.
    /// Empty: every document is encoded from its `ProfileWrite::document`.
    pub encoded_documents: Vec<String>,
}

/// How a [`ResolutionWrite`] writes member and identifier rows.
#[derive(Debug, Clone, PartialEq)]
pub enum ResolutionRows {
    /// Each written profile's rows become those its [`ProfileWrite`] lists: rows already as wanted are
    /// left alone, stale ones deleted (a resolution step).
    PerProfile {
        /// Ids of the written profiles given out by this resolution, never written before: the store
        /// holds no rows under them, so it does not look for stale ones there. Listing an id that has
        /// rows would leave its stale rows in place.
        new_ids: Vec<i64>,
    },
    /// Only the rows that differ from those the resolution read are written (a resolution step): those
    /// [`RowChanges`] lists. They were computed against the store as of one generation of the profile
    /// change log; when another write of profiles has committed since (the generation moved on), they
    /// are not trusted, and each written profile's rows are brought to what its [`ProfileWrite`] lists
    /// instead, as [`PerProfile`](Self::PerProfile) does.
    Changes(RowChanges),
    /// Rows of a full pass, written with each of its chunks into tables of their own (see
    /// [`StagedRows`]); the pass's last write puts them in place of every live row.
    Staged(StagedRows),
}

/// A full pass's rows, staged ([`ResolutionRows::Staged`]): each write of the pass adds its share to
/// staging tables that [`IdentityStore::begin_staged_rows`] created empty, and the last one puts them in
/// place of the live tables. Rows go in sorted, so that every insert appends. The pass writes every
/// profile it keeps but those whose stored fingerprint shows them as they were, each listing the rows
/// staged for it (profiles not written keep their old lists, which those rows equal).
/// Written with the chunks' documents, they cost the pass's end a fraction of replacing a million rows
/// at once (the pass's serial tail). Readers see the old rows until the last write commits, then the new
/// ones, whose change is logged as "everything". A write whose `token` is no longer the newest staging's
/// (another full pass began since) fails with [`StoreError::StagingTaken`], writing nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct StagedRows {
    /// What [`IdentityStore::begin_staged_rows`] returned for this pass.
    pub token: i64,
    /// Rows to add: members after those of the pass's earlier writes in key order, identifiers sorted
    /// among themselves (rows out of order are taken, only slower).
    pub rows: AllRows,
    /// Whether this is the pass's last write: the staged rows replace the live ones.
    pub last: bool,
}

impl ResolutionRows {
    /// The written profiles' ids given out by this resolution, which hold no rows yet (none for a full
    /// pass, whose rows replace every row).
    fn new_ids(&self) -> &[i64] {
        match self {
            ResolutionRows::PerProfile { new_ids } => new_ids,
            ResolutionRows::Changes(changes) => &changes.new_ids,
            ResolutionRows::Staged(_) => &[],
        }
    }
}

impl Default for ResolutionRows {
    fn default() -> Self {
        ResolutionRows::PerProfile {
            new_ids: Vec::new(),
        }
    }
}

/// How a resolution changes the member and identifier rows it read ([`ResolutionRows::Changes`]). Every
/// profile whose rows change is among the write's profiles or removed ones, so that the write logs a
/// generation (a write that logs none must change no row).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RowChanges {
    /// The newest generation of the profile change log
    /// ([`ProfileChangeStore::profile_generation`](crate::ProfileChangeStore::profile_generation)) when
    /// the resolution began reading: the changes hold as long as no write of profiles came after it.
    pub generation: i64,
    /// `(record, profile)` for each record that joins a profile, or moves to another.
    pub members: Vec<(RecordKey, i64)>,
    /// Records that leave their profile and join none (deleted, or gone from the store).
    pub members_gone: Vec<RecordKey>,
    /// `(type, value, profile)` rows to add.
    pub identifiers: Vec<(String, String, i64)>,
    /// `(type, value, profile)` rows to delete.
    pub identifiers_gone: Vec<(String, String, i64)>,
    /// The written profiles' ids given out by this resolution, as [`ResolutionRows::PerProfile`] takes
    /// them: used when the changes are not trusted.
    pub new_ids: Vec<i64>,
}

/// Every member and identifier row of a resolution.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AllRows {
    /// `(record, profile)`, each record once, in key order.
    pub members: Vec<(RecordKey, i64)>,
    /// `(type, value, profile)`, each once, in that order.
    pub identifiers: Vec<(String, String, i64)>,
}

/// The counter holding the identity high-water mark: the record change sequence resolution has reached.
const HIGH_WATER: &str = "identity_seq";
/// The counter holding the version of identifier normalisation the profiles were built with.
const NORMALIZER: &str = "identity_normalizer";
/// The counter holding the fingerprint of the rules the profiles were built with.
const RULES: &str = "identity_rules";

/// What the stored profiles were last built with in full ([`IdentityStore::built_with`]). A resolution
/// that would build them otherwise resolves every record again: steps only build the profiles their
/// records reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BuiltWith {
    /// The version of identifier normalisation (0: unknown).
    pub normalizer_version: i64,
    /// A fingerprint of the `[identity]` and `[profiles]` rules, which the engine gives (0: unknown).
    pub rules: i64,
}
/// The counter numbering full passes' stagings of rows ([`IdentityStore::begin_staged_rows`]).
const STAGING: &str = "identity_staging";

/// Each table of rows a full pass stages: the staging table and the live table it replaces.
const STAGED_TABLES: [(&str, &str); 2] = [
    ("profile_members_staged", "profile_members"),
    ("profile_identifiers_staged", "profile_identifiers"),
];

/// Keys per `IN` list; every backend accepts this many parameters.
pub(crate) const CHUNK: usize = 300;
/// Parameters per multi-row `INSERT` or row-value `IN` list of a write: well under both backends' limits
/// (SQLite 32,766, PostgreSQL 65,535), and large enough that statement overhead stays small.
const WRITE_PARAMS: usize = 2_000;

pub(crate) type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

/// A parameter of a statement run by the SQLite reader.
pub(crate) type SqliteParam<'a> = rusqlite::types::ToSqlOutput<'a>;

/// A value bound as a tuple of parameters (an `IN` list entry or a `VALUES` row): how many columns it spans
/// and how it binds.
pub(crate) trait Params: Sync {
    /// Columns per value.
    const WIDTH: usize;
    /// Binds the value's columns, in order.
    fn bind_to<'q>(&'q self, query: AnyQuery<'q>) -> AnyQuery<'q>;
    /// Adds the value's columns, in order, to the parameters of a statement run by the SQLite reader.
    fn push_sqlite<'a>(&'a self, params: &mut Vec<SqliteParam<'a>>);
}

impl<T: Params + ?Sized> Params for &T {
    const WIDTH: usize = T::WIDTH;
    fn bind_to<'q>(&'q self, query: AnyQuery<'q>) -> AnyQuery<'q> {
        (**self).bind_to(query)
    }
    fn push_sqlite<'a>(&'a self, params: &mut Vec<SqliteParam<'a>>) {
        (**self).push_sqlite(params)
    }
}

impl Params for i64 {
    const WIDTH: usize = 1;
    fn bind_to<'q>(&'q self, query: AnyQuery<'q>) -> AnyQuery<'q> {
        query.bind(*self)
    }
    fn push_sqlite<'a>(&'a self, params: &mut Vec<SqliteParam<'a>>) {
        params.push(SqliteParam::Owned(rusqlite::types::Value::Integer(*self)))
    }
}

impl Params for str {
    const WIDTH: usize = 1;
    fn bind_to<'q>(&'q self, query: AnyQuery<'q>) -> AnyQuery<'q> {
        query.bind(self)
    }
    fn push_sqlite<'a>(&'a self, params: &mut Vec<SqliteParam<'a>>) {
        params.push(SqliteParam::Borrowed(rusqlite::types::ValueRef::Text(
            self.as_bytes(),
        )))
    }
}

impl Params for String {
    const WIDTH: usize = 1;
    fn bind_to<'q>(&'q self, query: AnyQuery<'q>) -> AnyQuery<'q> {
        query.bind(self.as_str())
    }
    fn push_sqlite<'a>(&'a self, params: &mut Vec<SqliteParam<'a>>) {
        self.as_str().push_sqlite(params)
    }
}

impl Params for RecordKey {
    const WIDTH: usize = 3;
    fn bind_to<'q>(&'q self, query: AnyQuery<'q>) -> AnyQuery<'q> {
        query
            .bind(&self.source)
            .bind(&self.stream)
            .bind(&self.external_id)
    }
    fn push_sqlite<'a>(&'a self, params: &mut Vec<SqliteParam<'a>>) {
        self.source.push_sqlite(params);
        self.stream.push_sqlite(params);
        self.external_id.push_sqlite(params);
    }
}

/// No parameters.
impl Params for () {
    const WIDTH: usize = 0;
    fn bind_to<'q>(&'q self, query: AnyQuery<'q>) -> AnyQuery<'q> {
        query
    }
    fn push_sqlite<'a>(&'a self, _params: &mut Vec<SqliteParam<'a>>) {}
}

impl<A: Params, B: Params> Params for (A, B) {
    const WIDTH: usize = A::WIDTH + B::WIDTH;
    fn bind_to<'q>(&'q self, query: AnyQuery<'q>) -> AnyQuery<'q> {
        self.1.bind_to(self.0.bind_to(query))
    }
    fn push_sqlite<'a>(&'a self, params: &mut Vec<SqliteParam<'a>>) {
        self.0.push_sqlite(params);
        self.1.push_sqlite(params);
    }
}

impl<A: Params, B: Params, C: Params> Params for (A, B, C) {
    const WIDTH: usize = A::WIDTH + B::WIDTH + C::WIDTH;
    fn bind_to<'q>(&'q self, query: AnyQuery<'q>) -> AnyQuery<'q> {
        self.2.bind_to(self.1.bind_to(self.0.bind_to(query)))
    }
    fn push_sqlite<'a>(&'a self, params: &mut Vec<SqliteParam<'a>>) {
        self.0.push_sqlite(params);
        self.1.push_sqlite(params);
        self.2.push_sqlite(params);
    }
}

/// A value read from the leading columns of a row, from either driver: what a lookup through
/// [`SqlStore::select_in`] returns. Tuples read their parts from consecutive columns.
pub(crate) trait Columns: Sized + Send + 'static {
    /// Columns it spans.
    const WIDTH: usize;
    /// Reads it from the columns from `offset` of a row of the pool.
    fn from_any(row: &sqlx::any::AnyRow, offset: usize) -> StoreResult<Self>;
    /// Reads it from the columns from `offset` of a row of the SQLite reader.
    fn from_sqlite(row: &rusqlite::Row<'_>, offset: usize) -> StoreResult<Self>;
}

/// A value of one column, read as each driver decodes it.
macro_rules! one_column {
    ($($scalar:ty),*) => {$(
        impl Columns for $scalar {
            const WIDTH: usize = 1;
            fn from_any(row: &sqlx::any::AnyRow, offset: usize) -> StoreResult<Self> {
                Ok(row.try_get(offset)?)
            }
            fn from_sqlite(row: &rusqlite::Row<'_>, offset: usize) -> StoreResult<Self> {
                Ok(row.get(offset)?)
            }
        }
    )*};
}
one_column!(i64, String);

/// `source, stream, external_id`.
impl Columns for RecordKey {
    const WIDTH: usize = 3;
    fn from_any(row: &sqlx::any::AnyRow, offset: usize) -> StoreResult<Self> {
        decode_key(row, offset)
    }
    fn from_sqlite(row: &rusqlite::Row<'_>, offset: usize) -> StoreResult<Self> {
        Ok(RecordKey {
            source: row.get(offset)?,
            stream: row.get(offset + 1)?,
            external_id: row.get(offset + 2)?,
        })
    }
}

/// A whole row of [`RECORD_COLUMNS`] (only at offset 0).
impl Columns for StoredRecord {
    const WIDTH: usize = 10;
    fn from_any(row: &sqlx::any::AnyRow, _offset: usize) -> StoreResult<Self> {
        decode_record(row)
    }
    fn from_sqlite(row: &rusqlite::Row<'_>, _offset: usize) -> StoreResult<Self> {
        record_columns(row)?.decode(PayloadParts::Whole)
    }
}

/// A whole row of [`RECORD_COLUMNS`], its payload left as JSON text (only at offset 0).
impl Columns for EncodedRecord {
    const WIDTH: usize = 10;
    fn from_any(row: &sqlx::any::AnyRow, _offset: usize) -> StoreResult<Self> {
        Ok(any_record_columns(row)?.encoded())
    }
    fn from_sqlite(row: &rusqlite::Row<'_>, _offset: usize) -> StoreResult<Self> {
        Ok(record_columns(row)?.encoded())
    }
}

/// A whole row of [`PROFILE_COLUMNS`] (only at offset 0).
impl Columns for ProfileRow {
    const WIDTH: usize = 5;
    fn from_any(row: &sqlx::any::AnyRow, _offset: usize) -> StoreResult<Self> {
        decode_profile(row)
    }
    fn from_sqlite(row: &rusqlite::Row<'_>, _offset: usize) -> StoreResult<Self> {
        Ok(ProfileRow {
            id: row.get(0)?,
            document: serde_json::from_str(
                row.get_ref(1)?.as_str().map_err(rusqlite::Error::from)?,
            )?,
            record_count: u64::try_from(row.get::<_, i64>(2)?).unwrap_or_default(),
            created_at: from_millis(row.get(3)?)?,
            updated_at: from_millis(row.get(4)?)?,
        })
    }
}

impl<A: Columns, B: Columns> Columns for (A, B) {
    const WIDTH: usize = A::WIDTH + B::WIDTH;
    fn from_any(row: &sqlx::any::AnyRow, offset: usize) -> StoreResult<Self> {
        Ok((
            A::from_any(row, offset)?,
            B::from_any(row, offset + A::WIDTH)?,
        ))
    }
    fn from_sqlite(row: &rusqlite::Row<'_>, offset: usize) -> StoreResult<Self> {
        Ok((
            A::from_sqlite(row, offset)?,
            B::from_sqlite(row, offset + A::WIDTH)?,
        ))
    }
}

impl<A: Columns, B: Columns, C: Columns> Columns for (A, B, C) {
    const WIDTH: usize = A::WIDTH + B::WIDTH + C::WIDTH;
    fn from_any(row: &sqlx::any::AnyRow, offset: usize) -> StoreResult<Self> {
        Ok((
            A::from_any(row, offset)?,
            B::from_any(row, offset + A::WIDTH)?,
            C::from_any(row, offset + A::WIDTH + B::WIDTH)?,
        ))
    }
    fn from_sqlite(row: &rusqlite::Row<'_>, offset: usize) -> StoreResult<Self> {
        Ok((
            A::from_sqlite(row, offset)?,
            B::from_sqlite(row, offset + A::WIDTH)?,
            C::from_sqlite(row, offset + A::WIDTH + B::WIDTH)?,
        ))
    }
}

/// Runs `sql(list)` for each chunk of `keys`, where `list` is the chunk's `IN` list of placeholders, and
/// decodes every row.
async fn select_in<K: Params, T>(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    keys: &[K],
    sql: impl Fn(&str) -> String,
    decode: impl Fn(&sqlx::any::AnyRow) -> StoreResult<T>,
) -> StoreResult<Vec<T>> {
    let mut out = Vec::with_capacity(keys.len());
    for query in chunked_queries(backend, keys, CHUNK, sql) {
        for row in query.fetch_all(&mut *conn).await? {
            out.push(decode(&row)?);
        }
    }
    Ok(out)
}

/// Runs `sql(list)` for each chunk of `rows` (as many as fit in [`WRITE_PARAMS`]), where `list` is the
/// chunk's placeholders: an `IN` list or the tuples of a multi-row `VALUES`.
async fn execute_rows<K: Params>(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    rows: &[K],
    sql: impl Fn(&str) -> String,
) -> StoreResult<()> {
    let per_statement = (WRITE_PARAMS / K::WIDTH).max(1);
    for query in chunked_queries(backend, rows, per_statement, sql) {
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// One query per chunk of `per_statement` rows: `sql(list)`, where `list` holds the chunk's placeholders,
/// with the chunk's values bound (see [`chunk_statements`]).
fn chunked_queries<'q, K: Params>(
    backend: Backend,
    rows: &'q [K],
    per_statement: usize,
    sql: impl Fn(&str) -> String,
) -> impl Iterator<Item = AnyQuery<'q>> {
    chunk_statements(backend, rows.len(), per_statement, K::WIDTH, sql)
        .zip(rows.chunks(per_statement))
        .map(|(text, chunk)| {
            chunk
                .iter()
                .fold(sqlx::query(AssertSqlSafe(text)), |query, row| {
                    row.bind_to(query)
                })
        })
}

/// The statement of each chunk of `per_statement` of `rows` rows of `width` values: `sql(list)`, where
/// `list` holds the chunk's placeholders. Every chunk but the last has the same statement, built once.
fn chunk_statements(
    backend: Backend,
    rows: usize,
    per_statement: usize,
    width: usize,
    sql: impl Fn(&str) -> String,
) -> impl Iterator<Item = String> {
    let full =
        (rows >= per_statement).then(|| sql(&placeholders(backend, 1, per_statement, width)));
    (0..rows).step_by(per_statement).map(move |first| {
        let count = per_statement.min(rows - first);
        match &full {
            Some(full) if count == per_statement => full.clone(),
            _ => sql(&placeholders(backend, 1, count, width)),
        }
    })
}

/// Takes the lock every resolution write holds until it ends, in `conn`'s write transaction: on SQLite the
/// transaction's own write lock (taken by `BEGIN IMMEDIATE`), on PostgreSQL the row of the identity
/// high-water mark. [`IdentityStore::settle_resolution_writes`] waits on it.
async fn lock_resolution_writes(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
) -> StoreResult<()> {
    if backend == Backend::Postgres {
        sqlx::query("SELECT value FROM counters WHERE name = $1 FOR UPDATE")
            .bind(HIGH_WATER)
            .execute(conn)
            .await?;
    }
    Ok(())
}

/// What a resolution write did to member and identifier rows, for its log line.
#[derive(Debug, Default)]
struct RowsWritten {
    members: usize,
    members_left: usize,
    identifiers: usize,
    identifiers_dropped: usize,
    members_ms: u64,
    identifiers_ms: u64,
    stale_ms: u64,
    /// Putting a full pass's staged rows in place.
    swap_ms: u64,
}

/// Puts each record in `rows` in its profile, in key order (which keeps the index pages they touch
/// together); a row already as wanted is left alone. Returns how many rows were given.
async fn upsert_members(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    mut rows: Vec<(&RecordKey, i64)>,
) -> StoreResult<usize> {
    rows.sort_unstable();
    execute_rows(conn, backend, &rows, |list| {
        format!(
            "INSERT INTO profile_members (source, stream, external_id, profile_id) VALUES {list} \
             ON CONFLICT (source, stream, external_id) DO UPDATE SET profile_id = excluded.profile_id \
             WHERE profile_members.profile_id <> excluded.profile_id"
        )
    })
    .await?;
    Ok(rows.len())
}

/// Adds the identifier rows `(type, value, profile)`, in that order; a row already held is left alone.
/// Returns how many rows were given.
async fn insert_identifiers(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    mut rows: Vec<(&str, &str, i64)>,
) -> StoreResult<usize> {
    rows.sort_unstable();
    execute_rows(conn, backend, &rows, |list| {
        format!(
            "INSERT INTO profile_identifiers (id_type, id_value, profile_id) VALUES {list} \
             ON CONFLICT DO NOTHING"
        )
    })
    .await?;
    Ok(rows.len())
}

/// Takes the records `keys` out of their profiles.
async fn delete_members(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    keys: &[RecordKey],
) -> StoreResult<()> {
    execute_rows(conn, backend, keys, |list| {
        format!("DELETE FROM profile_members WHERE (source, stream, external_id) IN ({list})")
    })
    .await
}

/// The statement reading `(record, profile)` for the records whose keys are in `list`.
fn memberships_of_sql(list: &str) -> String {
    format!(
        "SELECT source, stream, external_id, profile_id FROM profile_members \
         WHERE (source, stream, external_id) IN ({list})"
    )
}

/// Deletes the member rows `(record, profile)`: each record leaves that profile (and stays where it is
/// if it has moved to another).
async fn delete_members_of(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    rows: &[(&RecordKey, i64)],
) -> StoreResult<()> {
    execute_rows(conn, backend, rows, |list| {
        format!(
            "DELETE FROM profile_members WHERE (source, stream, external_id, profile_id) IN ({list})"
        )
    })
    .await
}

/// Deletes the identifier rows `(profile, type, value)`.
async fn delete_identifiers<K: Params>(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    rows: &[K],
) -> StoreResult<()> {
    execute_rows(conn, backend, rows, |list| {
        format!("DELETE FROM profile_identifiers WHERE (profile_id, id_type, id_value) IN ({list})")
    })
    .await
}

/// Brings the member and identifier rows of each of `profiles` to what it lists, given what the
/// existing ones among them held before (`held_before`, read in the same transaction): how
/// [`ResolutionRows::PerProfile`] writes, and [`ResolutionRows::Changes`] when its changes are not trusted.
/// `removed` are the write's removed profiles.
async fn write_profile_rows(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    profiles: &[ProfileWrite],
    held_before: &[(i64, HeldRows)],
    removed: &[i64],
) -> StoreResult<RowsWritten> {
    // Every wanted row is written, but a row already as wanted is left alone (the upsert's `WHERE`,
    // `DO NOTHING`): only the difference reaches the tables' pages. Rows the profiles held and no longer
    // hold are deleted.
    let started = std::time::Instant::now();
    let wanted: HashMap<&RecordKey, i64> = profiles
        .iter()
        .flat_map(|p| p.members.iter().map(move |k| (k, p.id)))
        .collect();
    let keys: Vec<&RecordKey> = wanted.keys().copied().collect();
    release_taken_members(conn, backend, &keys, profiles, removed).await?;
    let members = upsert_members(
        conn,
        backend,
        wanted.iter().map(|(k, id)| (*k, *id)).collect(),
    )
    .await?;
    let members_written = started.elapsed();
    let wanted_identifiers: HashSet<(i64, &str, &str)> = profiles
        .iter()
        .flat_map(|p| {
            p.identifiers
                .iter()
                .map(move |(kind, value)| (p.id, kind.as_str(), value.as_str()))
        })
        .collect();
    let identifiers = insert_identifiers(
        conn,
        backend,
        wanted_identifiers
            .iter()
            .map(|(id, kind, value)| (*kind, *value, *id))
            .collect(),
    )
    .await?;
    let identifiers_written = started.elapsed();
    let left: Vec<(&RecordKey, i64)> = held_rows::member_rows(held_before)
        .filter(|(k, _)| !wanted.contains_key(k))
        .collect();
    delete_members_of(conn, backend, &left).await?;
    let dropped: Vec<(i64, &str, &str)> = held_rows::identifier_rows(held_before)
        .filter(|row| !wanted_identifiers.contains(row))
        .collect();
    delete_identifiers(conn, backend, &dropped).await?;
    let rows_written = started.elapsed();
    Ok(RowsWritten {
        members,
        members_left: left.len(),
        identifiers,
        identifiers_dropped: dropped.len(),
        members_ms: members_written.as_millis() as u64,
        identifiers_ms: (identifiers_written - members_written).as_millis() as u64,
        stale_ms: (rows_written - identifiers_written).as_millis() as u64,
        ..RowsWritten::default()
    })
}

/// Takes the records among `keys` that a profile outside the write holds (neither among `profiles` nor
/// `removed`) off that profile's list of held rows: the write moves them to one of its profiles. Only a
/// write compared in full can meet such a record (another write of profiles came between the
/// resolution's read and its write); a trusted step's records move only between its own profiles.
async fn release_taken_members(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    keys: &[&RecordKey],
    profiles: &[ProfileWrite],
    removed: &[i64],
) -> StoreResult<()> {
    let written: HashSet<i64> = profiles
        .iter()
        .map(|p| p.id)
        .chain(removed.iter().copied())
        .collect();
    let mut taken: HashMap<i64, HashSet<RecordKey>> = HashMap::new();
    for (key, id) in select_in(conn, backend, keys, memberships_of_sql, |row| {
        <(RecordKey, i64)>::from_any(row, 0)
    })
    .await?
    {
        if !written.contains(&id) {
            taken.entry(id).or_default().insert(key);
        }
    }
    if taken.is_empty() {
        return Ok(());
    }
    let holders: Vec<i64> = taken.keys().copied().collect();
    for (id, mut held) in held_rows::read_on(conn, backend, &holders).await? {
        held.members.retain(|k| !taken[&id].contains(k));
        tracing::debug!(
            profile = id,
            "records moved away from a profile written since this resolution read it"
        );
        // Its fingerprint no longer describes its rows.
        sqlx::query("UPDATE profiles SET held_rows = $1, fingerprint = NULL WHERE id = $2")
            .bind(held_rows::encode(&held.members, &held.identifiers))
            .bind(id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Writes `changes` ([`ResolutionRows::Changes`]), which the caller checked no write of profiles came
/// after.
async fn write_row_changes(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    profiles: &[ProfileWrite],
    changes: &RowChanges,
) -> StoreResult<RowsWritten> {
    debug_assert!(
        {
            let ids: HashSet<i64> = profiles.iter().map(|p| p.id).collect();
            changes.members.iter().all(|(_, id)| ids.contains(id))
                && changes
                    .identifiers
                    .iter()
                    .all(|(_, _, id)| ids.contains(id))
                && changes
                    .identifiers_gone
                    .iter()
                    .all(|(_, _, id)| ids.contains(id))
        },
        "row changes outside the written profiles"
    );
    let started = std::time::Instant::now();
    let members = upsert_members(
        conn,
        backend,
        changes.members.iter().map(|(k, id)| (k, *id)).collect(),
    )
    .await?;
    delete_members(conn, backend, &changes.members_gone).await?;
    let members_written = started.elapsed();
    let identifiers = insert_identifiers(
        conn,
        backend,
        changes
            .identifiers
            .iter()
            .map(|(kind, value, id)| (kind.as_str(), value.as_str(), *id))
            .collect(),
    )
    .await?;
    let gone: Vec<(i64, &str, &str)> = changes
        .identifiers_gone
        .iter()
        .map(|(kind, value, id)| (*id, kind.as_str(), value.as_str()))
        .collect();
    delete_identifiers(conn, backend, &gone).await?;
    Ok(RowsWritten {
        members,
        members_left: changes.members_gone.len(),
        identifiers,
        identifiers_dropped: gone.len(),
        members_ms: members_written.as_millis() as u64,
        identifiers_ms: (started.elapsed() - members_written).as_millis() as u64,
        ..RowsWritten::default()
    })
}

/// Creates a full pass's staging tables, empty, in place of any left by an earlier pass: on SQLite with the
/// live table's own definition (its key and `WITHOUT ROWID`, as the migrations left it); on PostgreSQL
/// with the live table's columns and no key or index (the rows come distinct).
async fn create_staging_tables(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
) -> StoreResult<()> {
    for (staged, live) in STAGED_TABLES {
        sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS {staged}")))
            .execute(&mut *conn)
            .await?;
        let create = match backend {
            Backend::Sqlite => {
                let definition: String = sqlx::query_scalar(
                    "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = $1",
                )
                .bind(live)
                .fetch_one(&mut *conn)
                .await?;
                let columns = definition
                    .find('(')
                    .map(|at| &definition[at..])
                    .ok_or_else(|| {
                        StoreError::Corrupt(format!(
                            "unexpected definition of table {live}: {definition}"
                        ))
                    })?;
                format!("CREATE TABLE {staged} {columns}")
            }
            Backend::Postgres => {
                format!("CREATE TABLE {staged} (LIKE {live} INCLUDING DEFAULTS)")
            }
        };
        sqlx::query(AssertSqlSafe(create))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Whether a full pass's staging tables exist (see [`IdentityStore::full_pass_unfinished`]).
async fn staging_exists(conn: &mut sqlx::AnyConnection, backend: Backend) -> StoreResult<bool> {
    let [(members_table, _), _] = STAGED_TABLES;
    let found: i64 = match backend {
        Backend::Sqlite => sqlx::query_scalar(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = $1",
        ),
        Backend::Postgres => sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_tables WHERE schemaname = current_schema() AND tablename = $1",
        ),
    }
    .bind(members_table)
    .fetch_one(&mut *conn)
    .await?;
    Ok(found > 0)
}

/// Adds `staged`'s rows to the staging tables ([`ResolutionRows::Staged`]) and, on the pass's last write,
/// puts them in place of the live tables. Fails, writing nothing, when another pass began staging since.
async fn write_staged_rows(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    staged: &StagedRows,
) -> StoreResult<RowsWritten> {
    let started = std::time::Instant::now();
    let newest: Option<i64> = sqlx::query_scalar("SELECT value FROM counters WHERE name = $1")
        .bind(STAGING)
        .fetch_optional(&mut *conn)
        .await?;
    if newest != Some(staged.token) {
        return Err(StoreError::StagingTaken);
    }
    let [(members_table, _), (identifiers_table, _)] = STAGED_TABLES;
    let members: Vec<(&RecordKey, i64)> =
        staged.rows.members.iter().map(|(k, id)| (k, *id)).collect();
    execute_rows(conn, backend, &members, |list| {
        format!(
            "INSERT INTO {members_table} (source, stream, external_id, profile_id) VALUES {list}"
        )
    })
    .await?;
    let members_written = started.elapsed();
    let identifiers: Vec<(&str, &str, i64)> = staged
        .rows
        .identifiers
        .iter()
        .map(|(kind, value, id)| (kind.as_str(), value.as_str(), *id))
        .collect();
    execute_rows(conn, backend, &identifiers, |list| {
        format!("INSERT INTO {identifiers_table} (id_type, id_value, profile_id) VALUES {list}")
    })
    .await?;
    let identifiers_written = started.elapsed();
    if staged.last {
        for (staged, live) in STAGED_TABLES {
            let statements = match backend {
                // The live table goes with its indexes; the staged one takes its name and gets the same
                // indexes (as the migrations left them), built by sorting.
                Backend::Sqlite => {
                    let indexes: Vec<String> = sqlx::query_scalar(
                        "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = $1 \
                         AND sql IS NOT NULL ORDER BY name",
                    )
                    .bind(live)
                    .fetch_all(&mut *conn)
                    .await?;
                    let mut statements = vec![
                        format!("DROP TABLE {live}"),
                        format!("ALTER TABLE {staged} RENAME TO {live}"),
                    ];
                    statements.extend(indexes);
                    statements
                }
                // The live table keeps its key and indexes (and any reader's lock on it stays short).
                Backend::Postgres => vec![
                    format!("DELETE FROM {live}"),
                    format!("INSERT INTO {live} SELECT * FROM {staged}"),
                    format!("DROP TABLE {staged}"),
                ],
            };
            for statement in statements {
                sqlx::query(AssertSqlSafe(statement))
                    .execute(&mut *conn)
                    .await?;
            }
        }
    }
    Ok(RowsWritten {
        members: members.len(),
        identifiers: identifiers.len(),
        members_ms: members_written.as_millis() as u64,
        identifiers_ms: (identifiers_written - members_written).as_millis() as u64,
        swap_ms: (started.elapsed() - identifiers_written).as_millis() as u64,
        ..RowsWritten::default()
    })
}

/// Runs `sql` with `params` on a connection of the SQLite reader, adding each row, decoded, to `out`.
fn sqlite_rows<T>(
    conn: &rusqlite::Connection,
    sql: &str,
    params: &[SqliteParam<'_>],
    decode: impl Fn(&rusqlite::Row<'_>) -> StoreResult<T>,
    out: &mut Vec<T>,
) -> StoreResult<()> {
    let mut statement = conn.prepare_cached(sql)?;
    let mut rows = statement.query(rusqlite::params_from_iter(params))?;
    while let Some(row) = rows.next()? {
        out.push(decode(row)?);
    }
    Ok(())
}

/// The columns of a [`ProfileRow`], in the order [`Columns`] reads them.
const PROFILE_COLUMNS: &str = "id, document, record_count, created_at, updated_at";

impl SqlStore {
    /// The rows `sql` selects with `params` bound: through the SQLite reader on SQLite, on a connection
    /// of the pool on PostgreSQL.
    pub(crate) async fn select<P, T>(&self, sql: String, params: P) -> StoreResult<Vec<T>>
    where
        P: Params + Send + 'static,
        T: Columns,
    {
        self.select_decoded(
            sql,
            params,
            |row| T::from_any(row, 0),
            |row| T::from_sqlite(row, 0),
        )
        .await
    }

    /// [`select`](Self::select), each row decoded by `from_any` (a row of the pool) or `from_sqlite` (a
    /// row of the SQLite reader).
    pub(crate) async fn select_decoded<P, T>(
        &self,
        sql: String,
        params: P,
        from_any: impl Fn(&sqlx::any::AnyRow) -> StoreResult<T>,
        from_sqlite: impl Fn(&rusqlite::Row<'_>) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<Vec<T>>
    where
        P: Params + Send + 'static,
        T: Send + 'static,
    {
        let Some(reader) = self.sqlite_reader() else {
            let rows = params
                .bind_to(sqlx::query(AssertSqlSafe(sql)))
                .fetch_all(self.pool())
                .await?;
            return rows.iter().map(from_any).collect();
        };
        reader
            .read(move |conn| {
                let mut bound = Vec::with_capacity(P::WIDTH);
                params.push_sqlite(&mut bound);
                let mut out = Vec::new();
                sqlite_rows(conn, &sql, &bound, &from_sqlite, &mut out)?;
                Ok(out)
            })
            .await
    }

    /// The rows `sql(list)` selects for `keys`, run for each chunk of them, where `list` is the chunk's
    /// `IN` list: through the SQLite reader on SQLite (every chunk in one read transaction), on a
    /// connection of the pool on PostgreSQL.
    async fn select_in<K, T>(&self, keys: &[K], sql: impl Fn(&str) -> String) -> StoreResult<Vec<T>>
    where
        K: Params + Clone + Send + 'static,
        T: Columns,
    {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let Some(reader) = self.sqlite_reader() else {
            let mut conn = self.pool().acquire().await?;
            return select_in(&mut conn, self.backend(), keys, sql, |row| {
                T::from_any(row, 0)
            })
            .await;
        };
        let backend = self.backend();
        let full_sql = sql(&placeholders(backend, 1, CHUNK, K::WIDTH));
        let tail = keys.len() % CHUNK;
        let tail_sql = (tail > 0).then(|| sql(&placeholders(backend, 1, tail, K::WIDTH)));
        let keys = keys.to_vec();
        reader
            .read(move |conn| {
                let mut out = Vec::with_capacity(keys.len());
                let mut params: Vec<SqliteParam<'_>> = Vec::with_capacity(CHUNK * K::WIDTH);
                for chunk in keys.chunks(CHUNK) {
                    let sql = match &tail_sql {
                        Some(tail_sql) if chunk.len() < CHUNK => tail_sql,
                        _ => &full_sql,
                    };
                    params.clear();
                    for key in chunk {
                        key.push_sqlite(&mut params);
                    }
                    sqlite_rows(conn, sql, &params, |row| T::from_sqlite(row, 0), &mut out)?;
                }
                Ok(out)
            })
            .await
    }
}

/// Profile storage.
#[async_trait]
pub trait IdentityStore: Send + Sync {
    /// The record change sequence that resolution has reached.
    async fn identity_high_water(&self) -> StoreResult<i64>;
    /// Reserves `count` new profile ids; returns the first.
    async fn reserve_profile_ids(&self, count: u64) -> StoreResult<i64>;
    /// Stored records by key (missing keys are skipped).
    async fn records_by_keys(&self, keys: &[RecordKey]) -> StoreResult<Vec<StoredRecord>>;
    /// The profile of each given record that has one.
    async fn profiles_of_records(&self, keys: &[RecordKey]) -> StoreResult<Vec<(RecordKey, i64)>>;
    /// Profiles holding any of the given `(type, value)` identifiers.
    async fn profiles_with_identifiers(
        &self,
        identifiers: &[(String, String)],
    ) -> StoreResult<Vec<(String, String, i64)>>;
    /// The member and identifier rows each of the given profiles holds, `(profile, rows)` (missing
    /// profiles are skipped).
    async fn profile_rows(&self, profiles: &[i64]) -> StoreResult<Vec<(i64, HeldRows)>>;
    /// The fingerprints ([`ProfileWrite::fingerprint`]) of those of the given profiles that have one,
    /// `(profile, fingerprint)`.
    async fn profile_fingerprints(&self, profiles: &[i64]) -> StoreResult<Vec<(i64, i64)>>;
    /// Members of the given profiles, by profile then key.
    async fn profile_members(&self, profiles: &[i64]) -> StoreResult<Vec<(i64, RecordKey)>> {
        let mut members: Vec<(i64, RecordKey)> = self
            .profile_rows(profiles)
            .await?
            .into_iter()
            .flat_map(|(id, held)| held.members.into_iter().map(move |k| (id, k)))
            .collect();
        members.sort_unstable();
        Ok(members)
    }
    /// Identifiers of the given profiles, `(profile, type, value)`.
    async fn profile_identifiers(
        &self,
        profiles: &[i64],
    ) -> StoreResult<Vec<(i64, String, String)>> {
        Ok(self
            .profile_rows(profiles)
            .await?
            .into_iter()
            .flat_map(|(id, held)| {
                held.identifiers
                    .into_iter()
                    .map(move |(kind, value)| (id, kind, value))
            })
            .collect())
    }
    /// Writes a resolution step atomically.
    async fn write_resolution(&self, write: ResolutionWrite) -> StoreResult<()>;
    /// Waits until no resolution write is in progress. A resolution that was cancelled cannot take back
    /// a commit it already handed to the database: a new resolution calls this first, so that it reads
    /// after that commit, not before it lands.
    async fn settle_resolution_writes(&self) -> StoreResult<()>;
    /// Begins staging a full pass's rows ([`StagedRows`]): creates the staging tables empty (dropping any
    /// an interrupted pass left) and returns the token of this staging, which every later one supersedes.
    async fn begin_staged_rows(&self) -> StoreResult<i64>;
    /// Whether a full pass began staging rows and has not put them in place (its staging tables
    /// remain): it was interrupted, or it is running in another process. Profiles it wrote list rows
    /// that are not in place, so only a full pass brings lists and rows back in step; until one ends,
    /// every other resolution write fails with [`StoreError::FullPassUnfinished`].
    async fn full_pass_unfinished(&self) -> StoreResult<bool>;
    /// What the profiles were last built with in full (each part 0 before any).
    async fn built_with(&self) -> StoreResult<BuiltWith>;
    /// Records that every profile was just built with `built`.
    async fn set_built_with(&self, built: BuiltWith) -> StoreResult<()>;
    /// A profile by id, following merges (`None` when neither it nor an alias exists).
    async fn profile(&self, id: i64) -> StoreResult<Option<ProfileRow>>;
    /// Profiles whose search text contains `text` (lower-cased), by id, at most `limit`.
    async fn search_profiles(&self, text: &str, limit: u32) -> StoreResult<Vec<ProfileRow>>;
    /// [`ProfileStore::records_since`] as a full pass of resolution reads records: each payload left as
    /// JSON text, for the caller to decode as far as it needs when it needs.
    async fn records_to_resolve(
        &self,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<EncodedRecord>>;
    /// At most `limit` memberships `(profile, record)` ordered by the key columns, after the record
    /// `after` (from the first when `None`): a full pass reads them page by page. The order is the
    /// database's (on PostgreSQL it follows the collation, which may differ from [`RecordKey`]'s byte
    /// order); paging from the last key returned is consistent either way.
    async fn memberships_after(
        &self,
        after: Option<&RecordKey>,
        limit: u32,
    ) -> StoreResult<Vec<(i64, RecordKey)>>;
    /// Every membership, in [`memberships_after`](Self::memberships_after)'s order.
    async fn all_memberships(&self) -> StoreResult<Vec<(i64, RecordKey)>> {
        let mut all = Vec::new();
        loop {
            let page = self
                .memberships_after(all.last().map(|(_, key)| key), 10_000)
                .await?;
            if page.is_empty() {
                return Ok(all);
            }
            all.extend(page);
        }
    }
    /// Every profile id, ascending (a profile without members included).
    async fn profile_ids(&self) -> StoreResult<Vec<i64>>;
    /// How many records have a change sequence greater than `after_seq`: what is pending resolution.
    async fn count_records_since(&self, after_seq: i64) -> StoreResult<u64>;
    /// How many profiles exist.
    async fn count_profiles(&self) -> StoreResult<u64>;
    /// Profiles with id greater than `after_id`, by id, at most `limit` (for walking every profile).
    async fn profiles_page(&self, after_id: i64, limit: u32) -> StoreResult<Vec<ProfileRow>>;
    /// Profiles by id (missing ids are skipped; merged ids are not followed).
    async fn profiles_by_ids(&self, ids: &[i64]) -> StoreResult<Vec<ProfileRow>>;
}

/// The count a `SELECT COUNT(*)` returned.
pub(crate) fn count_of(rows: &[i64]) -> u64 {
    rows.first().map_or(0, |n| count(*n))
}

fn decode_profile(row: &sqlx::any::AnyRow) -> StoreResult<ProfileRow> {
    Ok(ProfileRow {
        id: row.try_get("id")?,
        document: serde_json::from_str(row.try_get::<&str, _>("document")?)?,
        record_count: u64::try_from(row.try_get::<i64, _>("record_count")?).unwrap_or_default(),
        created_at: from_millis(row.try_get("created_at")?)?,
        updated_at: from_millis(row.try_get("updated_at")?)?,
    })
}

fn decode_key(row: &sqlx::any::AnyRow, offset: usize) -> StoreResult<RecordKey> {
    Ok(RecordKey {
        source: row.try_get(offset)?,
        stream: row.try_get(offset + 1)?,
        external_id: row.try_get(offset + 2)?,
    })
}

impl SqlStore {
    async fn counter(&self, name: &str) -> StoreResult<i64> {
        Ok(
            sqlx::query_scalar("SELECT value FROM counters WHERE name = $1")
                .bind(name)
                .fetch_one(self.pool())
                .await?,
        )
    }
}

impl SqlStore {
    /// [`IdentityStore::write_resolution`] on `connection`.
    async fn write_resolution_on(
        &self,
        connection: &mut DerivedWriteConnection,
        mut write: ResolutionWrite,
    ) -> StoreResult<()> {
        let started = std::time::Instant::now();
        let now = to_millis(Utc::now());
        let backend = self.backend();
        let mut tx = connection.begin().await?;
        let conn: &mut sqlx::AnyConnection = &mut tx;
        lock_resolution_writes(conn, backend).await?;
        let staged = matches!(write.rows, ResolutionRows::Staged(_));
        // A full pass that has begun has written profiles whose lists are ahead of the rows in place:
        // a step's write would build on them.
        if !staged && staging_exists(conn, backend).await? {
            return Err(StoreError::FullPassUnfinished);
        }
        let removed = &write.removed;
        // Decided under the lock, so no write comes between the check and the rows.
        let compare_in_full = match &write.rows {
            ResolutionRows::PerProfile { .. } => true,
            ResolutionRows::Changes(changes) => {
                let generation = crate::profile_changes::newest_generation(conn).await?;
                if generation != changes.generation {
                    tracing::debug!(
                        read_at = changes.generation,
                        now = generation,
                        "profiles were written since this resolution read them: its rows are compared in full"
                    );
                }
                generation != changes.generation
            }
            ResolutionRows::Staged(_) => false,
        };
        // What the profiles removed and, compared in full, the profiles rewritten held before this write
        // (a full pass's rows replace every row instead).
        let held_by_removed = if staged {
            Vec::new()
        } else {
            held_rows::read_on(conn, backend, removed).await?
        };
        let held_by_rewritten = if compare_in_full {
            let new_ids: HashSet<i64> = write.rows.new_ids().iter().copied().collect();
            let existing: Vec<i64> = write
                .profiles
                .iter()
                .map(|p| p.id)
                .filter(|id| !new_ids.contains(id))
                .collect();
            held_rows::read_on(conn, backend, &existing).await?
        } else {
            Vec::new()
        };
        // Removed profiles take their rows with them, but for records a written profile takes: their
        // rows move in place below.
        if !held_by_removed.is_empty() {
            let taken: HashSet<&RecordKey> =
                write.profiles.iter().flat_map(|p| &p.members).collect();
            let members: Vec<(&RecordKey, i64)> = held_rows::member_rows(&held_by_removed)
                .filter(|(k, _)| !taken.contains(k))
                .collect();
            delete_members_of(conn, backend, &members).await?;
            let identifiers: Vec<(i64, &str, &str)> =
                held_rows::identifier_rows(&held_by_removed).collect();
            delete_identifiers(conn, backend, &identifiers).await?;
        }
        execute_rows(conn, backend, removed, |list| {
            format!("DELETE FROM profiles WHERE id IN ({list})")
        })
        .await?;

        // Each encoded document moves into its statement's arguments
        // (binding a `&str` would copy it, and a full pass writes hundreds of megabytes of them).
        let mut encoded = if write.encoded_documents.len() == write.profiles.len() {
            std::mem::take(&mut write.encoded_documents)
        } else {
            Vec::new()
        }
        .into_iter();
        // A profile whose fingerprint and rows are as stored is left alone (see `ProfileWrite::fingerprint`);
        // the rows are compared here whatever the fingerprint covers, so that every list stays right.
        let per_statement = WRITE_PARAMS / 8;
        let statements = chunk_statements(
            backend,
            write.profiles.len(),
            per_statement,
            8,
            |list| {
                format!(
                    "INSERT INTO profiles (id, document, search_text, record_count, created_at, updated_at, held_rows, fingerprint) VALUES {list} \
                 ON CONFLICT (id) DO UPDATE SET document = excluded.document, search_text = excluded.search_text, \
                 record_count = excluded.record_count, held_rows = excluded.held_rows, fingerprint = excluded.fingerprint, \
                 updated_at = CASE WHEN excluded.updated_at > profiles.updated_at THEN excluded.updated_at ELSE profiles.updated_at + 1 END \
                 WHERE excluded.fingerprint IS NULL OR profiles.fingerprint IS DISTINCT FROM excluded.fingerprint \
                 OR profiles.held_rows <> excluded.held_rows"
                )
            },
        );
        let mut documents_changed = 0;
        for (sql, chunk) in statements.zip(write.profiles.chunks(per_statement)) {
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for profile in chunk {
                let document = match encoded.next() {
                    Some(text) => text,
                    None => serde_json::to_string(&profile.document)?,
                };
                query = query
                    .bind(profile.id)
                    .bind(document)
                    .bind(profile.search_text.as_str())
                    .bind(i64::try_from(profile.members.len()).unwrap_or(i64::MAX))
                    .bind(now)
                    .bind(now)
                    .bind(held_rows::encode(&profile.members, &profile.identifiers))
                    .bind(profile.fingerprint);
            }
            documents_changed += query.execute(&mut *conn).await?.rows_affected();
        }

        let documents_written = started.elapsed();
        let everything = matches!(&write.rows, ResolutionRows::Staged(staged) if staged.last);
        let rows = match &write.rows {
            ResolutionRows::Staged(staged) => write_staged_rows(conn, backend, staged).await?,
            ResolutionRows::Changes(changes) if !compare_in_full => {
                write_row_changes(conn, backend, &write.profiles, changes).await?
            }
            _ => {
                write_profile_rows(conn, backend, &write.profiles, &held_by_rewritten, removed)
                    .await?
            }
        };
        let rows_written = started.elapsed();
        for (old, new) in &write.aliases {
            sqlx::query(
                "INSERT INTO profile_aliases (old_id, new_id, merged_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (old_id) DO UPDATE SET new_id = excluded.new_id, merged_at = excluded.merged_at",
            )
            .bind(*old)
            .bind(*new)
            .bind(now)
            .execute(&mut *conn)
            .await?;
            // Ids that pointed at `old` now point at `new`, so one lookup always lands.
            sqlx::query("UPDATE profile_aliases SET new_id = $2 WHERE new_id = $1")
                .bind(*old)
                .bind(*new)
                .execute(&mut *conn)
                .await?;
        }
        crate::profile_changes::record(
            conn,
            removed
                .iter()
                .copied()
                .chain(write.profiles.iter().map(|p| p.id)),
            everything,
        )
        .await?;
        if let Some(high_water) = write.high_water {
            sqlx::query("UPDATE counters SET value = $1 WHERE name = $2")
                .bind(high_water)
                .bind(HIGH_WATER)
                .execute(&mut *conn)
                .await?;
        }
        let before_commit = started.elapsed();
        tx.commit().await?;
        tracing::debug!(
            profiles = write.profiles.len(),
            removed = removed.len(),
            documents_changed,
            members = rows.members,
            members_left = rows.members_left,
            identifiers = rows.identifiers,
            identifiers_dropped = rows.identifiers_dropped,
            documents_ms = documents_written.as_millis() as u64,
            members_ms = rows.members_ms,
            identifiers_ms = rows.identifiers_ms,
            stale_ms = rows.stale_ms,
            swap_ms = rows.swap_ms,
            aliases_ms = (before_commit - rows_written).as_millis() as u64,
            commit_ms = (started.elapsed() - before_commit).as_millis() as u64,
            "resolution written"
        );
        Ok(())
    }
}

#[async_trait]
impl IdentityStore for SqlStore {
    async fn identity_high_water(&self) -> StoreResult<i64> {
        self.counter(HIGH_WATER).await
    }

    async fn reserve_profile_ids(&self, count: u64) -> StoreResult<i64> {
        let count = i64::try_from(count).unwrap_or(i64::MAX);
        let top: i64 = sqlx::query_scalar(
            "UPDATE counters SET value = value + $1 WHERE name = 'profile_id' RETURNING value",
        )
        .bind(count)
        .fetch_one(self.pool())
        .await?;
        Ok(top - count + 1)
    }

    async fn records_by_keys(&self, keys: &[RecordKey]) -> StoreResult<Vec<StoredRecord>> {
        self.select_in(keys, |list| {
            format!(
                "SELECT {RECORD_COLUMNS} FROM raw_records WHERE (source, stream, external_id) IN ({list})"
            )
        })
        .await
    }

    async fn profiles_of_records(&self, keys: &[RecordKey]) -> StoreResult<Vec<(RecordKey, i64)>> {
        self.select_in(keys, memberships_of_sql).await
    }

    async fn profiles_with_identifiers(
        &self,
        identifiers: &[(String, String)],
    ) -> StoreResult<Vec<(String, String, i64)>> {
        self.select_in(identifiers, |list| {
            format!(
                "SELECT id_type, id_value, profile_id FROM profile_identifiers \
                 WHERE (id_type, id_value) IN ({list})"
            )
        })
        .await
    }

    async fn profile_fingerprints(&self, profiles: &[i64]) -> StoreResult<Vec<(i64, i64)>> {
        self.select_in(profiles, |list| {
            format!(
                "SELECT id, fingerprint FROM profiles WHERE id IN ({list}) AND fingerprint IS NOT NULL"
            )
        })
        .await
    }

    async fn profile_rows(&self, profiles: &[i64]) -> StoreResult<Vec<(i64, HeldRows)>> {
        self.select_in(profiles, held_rows::select_sql).await
    }

    async fn write_resolution(&self, write: ResolutionWrite) -> StoreResult<()> {
        // Profiles, members and identifiers are derived from the records the store holds.
        let mut connection = self.derived_write_connection().await?;
        let last = write.high_water.is_some();
        if last || matches!(write.rows, ResolutionRows::Staged(_)) {
            connection.defer_checkpoints().await?;
        }
        if !matches!(write.rows, ResolutionRows::Staged(_)) {
            connection.journal_statements_in_memory().await?;
        }
        let written = self.write_resolution_on(&mut connection, write).await;
        if written.is_ok() && last {
            // The write has committed and is seen by every reader: copying the log into the database
            // file (a fifth of an incremental step's time) runs beside whatever comes next. A checkpoint
            // that fails or is cut short (the process ends) only leaves the log for the next one.
            let running = self.checkpoint_running();
            tokio::spawn(
                async move {
                    let _running = running;
                    let started = std::time::Instant::now();
                    match connection.checkpoint().await {
                        Ok(complete) => tracing::debug!(
                            complete,
                            elapsed_ms = started.elapsed().as_millis() as u64,
                            "resolution checkpointed"
                        ),
                        Err(err) => {
                            tracing::warn!(error = %err, "checkpoint after a resolution failed")
                        }
                    }
                    connection.release().await;
                }
                .in_current_span(),
            );
        } else {
            connection.release().await;
        }
        written
    }

    async fn begin_staged_rows(&self) -> StoreResult<i64> {
        let mut connection = self.derived_write_connection().await?;
        let backend = self.backend();
        let token = async {
            let mut tx = connection.begin().await?;
            lock_resolution_writes(&mut tx, backend).await?;
            let token: i64 = sqlx::query_scalar(
                "INSERT INTO counters (name, value) VALUES ($1, 1) \
                 ON CONFLICT (name) DO UPDATE SET value = counters.value + 1 RETURNING value",
            )
            .bind(STAGING)
            .fetch_one(&mut *tx)
            .await?;
            create_staging_tables(&mut tx, backend).await?;
            tx.commit().await?;
            Ok::<_, StoreError>(token)
        }
        .await;
        connection.release().await;
        token
    }

    async fn full_pass_unfinished(&self) -> StoreResult<bool> {
        let mut conn = self.pool().acquire().await?;
        staging_exists(&mut conn, self.backend()).await
    }

    async fn settle_resolution_writes(&self) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        lock_resolution_writes(&mut tx, self.backend()).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn built_with(&self) -> StoreResult<BuiltWith> {
        Ok(BuiltWith {
            normalizer_version: self.counter(NORMALIZER).await?,
            rules: self.counter(RULES).await?,
        })
    }

    async fn set_built_with(&self, built: BuiltWith) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        for (name, value) in [(NORMALIZER, built.normalizer_version), (RULES, built.rules)] {
            sqlx::query("UPDATE counters SET value = $1 WHERE name = $2")
                .bind(value)
                .bind(name)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn profile(&self, id: i64) -> StoreResult<Option<ProfileRow>> {
        let target: Option<i64> =
            sqlx::query_scalar("SELECT new_id FROM profile_aliases WHERE old_id = $1")
                .bind(id)
                .fetch_optional(self.pool())
                .await?;
        let row = sqlx::query(
            "SELECT id, document, record_count, created_at, updated_at FROM profiles WHERE id = $1",
        )
        .bind(target.unwrap_or(id))
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(decode_profile).transpose()
    }

    async fn search_profiles(&self, text: &str, limit: u32) -> StoreResult<Vec<ProfileRow>> {
        let pattern = format!(
            "%{}%",
            text.to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        let rows = sqlx::query(
            "SELECT id, document, record_count, created_at, updated_at FROM profiles \
             WHERE search_text LIKE $1 ESCAPE '\\' ORDER BY id LIMIT $2",
        )
        .bind(pattern)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(decode_profile).collect()
    }

    async fn records_to_resolve(
        &self,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<EncodedRecord>> {
        self.select(records_after_seq_sql(), (after_seq, i64::from(limit)))
            .await
    }

    async fn memberships_after(
        &self,
        after: Option<&RecordKey>,
        limit: u32,
    ) -> StoreResult<Vec<(i64, RecordKey)>> {
        const COLUMNS: &str = "SELECT profile_id, source, stream, external_id FROM profile_members";
        const ORDER: &str = "ORDER BY source, stream, external_id";
        let limit = i64::from(limit);
        match after {
            None => {
                self.select(format!("{COLUMNS} {ORDER} LIMIT $1"), limit)
                    .await
            }
            Some(key) => {
                let sql = format!(
                    "{COLUMNS} WHERE (source, stream, external_id) > ($1, $2, $3) {ORDER} LIMIT $4"
                );
                self.select(sql, (key.clone(), limit)).await
            }
        }
    }

    async fn profile_ids(&self) -> StoreResult<Vec<i64>> {
        self.select("SELECT id FROM profiles ORDER BY id".to_owned(), ())
            .await
    }

    async fn count_records_since(&self, after_seq: i64) -> StoreResult<u64> {
        let n = self
            .select::<_, i64>(
                "SELECT COUNT(*) FROM raw_records WHERE seq > $1".to_owned(),
                after_seq,
            )
            .await?;
        Ok(count_of(&n))
    }

    async fn count_profiles(&self) -> StoreResult<u64> {
        let n = self
            .select::<_, i64>("SELECT COUNT(*) FROM profiles".to_owned(), ())
            .await?;
        Ok(count_of(&n))
    }

    async fn profiles_page(&self, after_id: i64, limit: u32) -> StoreResult<Vec<ProfileRow>> {
        let rows = sqlx::query(
            "SELECT id, document, record_count, created_at, updated_at FROM profiles WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after_id)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(decode_profile).collect()
    }

    async fn profiles_by_ids(&self, ids: &[i64]) -> StoreResult<Vec<ProfileRow>> {
        self.select_in(ids, |list| {
            format!("SELECT {PROFILE_COLUMNS} FROM profiles WHERE id IN ({list})")
        })
        .await
    }
}
