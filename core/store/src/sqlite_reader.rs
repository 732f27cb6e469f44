//! Reads that move many rows, on SQLite, through SQLite's own interface beside the sqlx pool.
//!
//! sqlx runs each SQLite connection on a worker thread and hands every row over to the caller, converted
//! for its `Any` driver: about 6 µs per row of a record. SQLite itself reads such a row in well under
//! 1 µs. Identity resolution reads every record in a full pass and tens of thousands of rows in a step,
//! so those reads come here. Measured on a million stored records (236 MB of payloads): read and decoded
//! in 0.8 s here, 7 s through the pool.
//!
//! Contract:
//! - Only reads, on connections opened read-only on the store's file. The store runs in WAL mode, so a
//!   read sees every transaction committed before it started and never waits for a writer.
//! - A read runs on a blocking thread with a connection taken from the idle ones (a new one when none is
//!   idle); the connection goes back afterwards, and at most [`IDLE`] are kept. A read that spans
//!   several statements runs them in one read transaction, so they see one state of the store.
//! - The statements are written in the SQL both drivers share and return the same columns as the pool's;
//!   records decode through the same [`RecordColumns`].
//! - No memory map: pages are read into the connection's own page cache (8 MiB), so a full scan does not
//!   grow the process's resident memory by the size of the file.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, Row};

use crate::StoreResult;
use crate::sql::RecordColumns;

/// Idle connections kept for the next reads.
const IDLE: usize = 4;

/// Read-only connections to one SQLite store file.
#[derive(Debug, Clone)]
pub(crate) struct SqliteReader {
    path: PathBuf,
    busy_timeout: Duration,
    idle: Arc<Mutex<Vec<Connection>>>,
}

impl SqliteReader {
    /// Reads of the store at `path` (opened lazily, by the first read).
    pub(crate) fn new(path: &Path, busy_timeout: Duration) -> Self {
        Self {
            path: path.to_owned(),
            busy_timeout,
            idle: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn connect(&self) -> rusqlite::Result<Connection> {
        let connection = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        connection.busy_timeout(self.busy_timeout)?;
        connection.execute_batch("PRAGMA cache_size = -8192; PRAGMA mmap_size = 0")?;
        Ok(connection)
    }

    /// Runs `read` on a connection, on a blocking thread, inside one read transaction.
    pub(crate) async fn read<T, F>(&self, read: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let reader = self.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let idle = reader.idle.lock().ok().and_then(|mut idle| idle.pop());
            let connection = match idle {
                Some(connection) => connection,
                None => reader.connect()?,
            };
            let result = {
                let transaction = connection.unchecked_transaction()?;
                let result = read(&transaction);
                transaction.finish()?;
                result
            };
            if let Ok(mut idle) = reader.idle.lock()
                && idle.len() < IDLE
            {
                idle.push(connection);
            }
            result
        })
        .await;
        match joined {
            Ok(result) => result,
            Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
            Err(_) => Err(crate::StoreError::Cancelled),
        }
    }
}

/// The columns of a record selected as [`crate::sql::RECORD_COLUMNS`], borrowed from `row`.
pub(crate) fn record_columns<'r>(row: &'r Row<'_>) -> rusqlite::Result<RecordColumns<'r>> {
    Ok(RecordColumns {
        seq: row.get(0)?,
        source: row.get(1)?,
        stream: row.get(2)?,
        external_id: row.get(3)?,
        version: row.get(4)?,
        updated_at: row.get(5)?,
        deleted: row.get::<_, i64>(6)? != 0,
        payload: row.get_ref(7)?.as_str()?,
        first_seen_at: row.get(8)?,
        observed_at: row.get(9)?,
    })
}

#[cfg(test)]
mod tests {
    use crate::{OpenOptions, SqlStore, StoreUrl};

    async fn store(dir: &std::path::Path) -> SqlStore {
        let url = StoreUrl::parse("sqlite://store.db", dir, None).expect("url");
        SqlStore::open(&url, &OpenOptions::default())
            .await
            .expect("open")
    }

    #[tokio::test]
    async fn a_read_sees_the_last_commit_and_cannot_write() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let store = store(dir.path()).await;
        let reader = store
            .sqlite_reader()
            .expect("a SQLite store has a reader")
            .clone();
        let count = async |reader: &super::SqliteReader| {
            reader
                .read(|conn| {
                    Ok(conn.query_row(
                        "SELECT value FROM counters WHERE name = 'record_seq'",
                        [],
                        |row| row.get::<_, i64>(0),
                    )?)
                })
                .await
        };
        assert_eq!(count(&reader).await.expect("read"), 0);
        sqlx::query("UPDATE counters SET value = 41 WHERE name = 'record_seq'")
            .execute(store.pool())
            .await
            .expect("write through the pool");
        // The idle connection kept from the first read sees the commit made since.
        assert_eq!(count(&reader).await.expect("read"), 41);
        let refused = reader
            .read(|conn| Ok(conn.execute("UPDATE counters SET value = 0", [])?))
            .await;
        assert!(
            matches!(refused, Err(crate::StoreError::SqliteRead(_))),
            "{refused:?}"
        );
        store.close().await;
    }

    #[tokio::test]
    async fn a_store_whose_other_connections_are_closed_is_still_read() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let store = store(dir.path()).await;
        let reader = store.sqlite_reader().expect("reader").clone();
        // With every pooled connection closed, SQLite removes the write-ahead log and its index.
        store.close().await;
        let tables: i64 = reader
            .read(|conn| {
                Ok(conn.query_row(
                    "SELECT COUNT(*) FROM sqlite_master WHERE name = 'raw_records'",
                    [],
                    |row| row.get(0),
                )?)
            })
            .await
            .expect("read");
        assert_eq!(tables, 1);
    }
}
