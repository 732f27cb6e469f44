//! Helpers shared by the connectors' tests: a real SQLite store in a temporary folder and a full run.

use spindle_model::JobCounts;
use spindle_store::{OpenOptions, SqlStore, StoreUrl};
use tokio_util::sync::CancellationToken;

use crate::{NoProgress, Source, SourceError, run_source};

/// A SQLite store in a temporary folder (kept alive by the returned guard).
pub(crate) async fn temp_store() -> (SqlStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temporary folder");
    let url = StoreUrl::parse("sqlite://spindle.db", dir.path(), None).expect("store url");
    let store = SqlStore::open(&url, &OpenOptions::default())
        .await
        .expect("open store");
    (store, dir)
}

/// Runs `source` to the end of every stream.
pub(crate) async fn run_all(
    id: &str,
    source: &mut dyn Source,
    store: &SqlStore,
) -> Result<JobCounts, SourceError> {
    let (counts, cancelled) =
        run_source(id, source, store, &CancellationToken::new(), &NoProgress).await?;
    assert!(!cancelled, "nothing cancelled this run");
    Ok(counts)
}
