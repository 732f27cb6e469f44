//! Real stores for tests: SQLite in a temporary folder, and PostgreSQL in a schema of its own.
//!
//! PostgreSQL comes from `SPINDLE_TEST_POSTGRES_URL` (`.ci/postgres.sh` prints it); every store gets a fresh
//! schema that [`TestStore::finish`] drops. Without the variable the PostgreSQL half of a test fails with
//! instructions, unless `SPINDLE_TEST_SKIP_POSTGRES=1` says to leave it out.
//!
//! [`store_backends!`](crate::store_backends) turns a list of `async fn(&SqlStore)` cases into one test per
//! case and backend.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use spindle_model::RawRecord;
use spindle_store::{OpenOptions, ProfileStore, SourceBatch, SqlStore, StoreUrl};

/// A store made for one test.
#[derive(Debug)]
pub struct TestStore {
    /// The store.
    pub store: SqlStore,
    _dir: Option<tempfile::TempDir>,
    schema: Option<String>,
}

impl TestStore {
    /// Drops the test's PostgreSQL schema and closes the pool.
    pub async fn finish(self) {
        if let Some(schema) = &self.schema {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                .execute(self.store.pool())
                .await;
        }
        self.store.close().await;
    }
}

/// A SQLite store in a temporary folder.
pub async fn sqlite() -> TestStore {
    let dir = tempfile::tempdir().expect("temporary folder");
    let url = StoreUrl::parse("sqlite://store.db", dir.path(), None).expect("sqlite url");
    let store = SqlStore::open(&url, &OpenOptions::default())
        .await
        .expect("open sqlite store");
    TestStore {
        store,
        _dir: Some(dir),
        schema: None,
    }
}

static SCHEMAS: AtomicU32 = AtomicU32::new(0);

/// The test PostgreSQL server's URL, or `None` when PostgreSQL is explicitly left out (fails with
/// instructions when neither is set).
pub fn postgres_url() -> Option<String> {
    let Ok(url) = std::env::var("SPINDLE_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var("SPINDLE_TEST_SKIP_POSTGRES").as_deref() == Ok("1"),
            "SPINDLE_TEST_POSTGRES_URL is not set: run `export SPINDLE_TEST_POSTGRES_URL=$(.ci/postgres.sh)` \
             (or set SPINDLE_TEST_SKIP_POSTGRES=1 to leave PostgreSQL out)"
        );
        return None;
    };
    Some(url)
}

/// A schema name no other test store uses.
pub fn fresh_schema_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "test_{}_{}_{}",
        std::process::id(),
        nanos,
        SCHEMAS.fetch_add(1, Ordering::Relaxed)
    )
}

/// A PostgreSQL store in a new schema, or `None` when PostgreSQL is explicitly left out.
pub async fn postgres() -> Option<TestStore> {
    let url = postgres_url()?;
    let schema = fresh_schema_name();
    let url = StoreUrl::parse(&url, Path::new("."), Some(&schema)).expect("postgres url");
    let store = SqlStore::open(&url, &OpenOptions::default())
        .await
        .expect("open postgres store");
    Some(TestStore {
        store,
        _dir: None,
        schema: Some(schema),
    })
}

/// One test per case and backend: `store_backends!(case_a, case_b);` where each case is an
/// `async fn(&SqlStore)` in scope.
#[macro_export]
macro_rules! store_backends {
    ($($case:ident),* $(,)?) => {
        mod sqlite_backend {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let store = $crate::store::sqlite().await;
                super::$case(&store.store).await;
                store.finish().await;
            })*
        }
        mod postgres_backend {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                if let Some(store) = $crate::store::postgres().await {
                    super::$case(&store.store).await;
                    store.finish().await;
                }
            })*
        }
    };
}

/// Stores `records` from `source` in one batch, as a connector run would (nothing for an empty list);
/// panics when the store refuses it.
pub async fn apply_records(store: &SqlStore, source: &str, records: Vec<RawRecord>) {
    if records.is_empty() {
        return;
    }
    store
        .apply_source_batch(
            source,
            SourceBatch {
                records,
                ..SourceBatch::default()
            },
        )
        .await
        .expect("the store takes the batch");
}
