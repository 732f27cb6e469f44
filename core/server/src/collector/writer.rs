//! Group commit: one writer task stores what many requests collected, in one transaction per round.
//!
//! Contract:
//! - a request hands its records to [`WriterHandle::store`] and gets an answer only after the transaction
//!   holding them committed (or failed: then nothing of it was stored);
//! - the writer takes every request waiting when it starts a round (up to [`MAX_GROUP_RECORDS`] records),
//!   so concurrent requests share one commit, and the next round's requests queue while one commits;
//! - after each commit that stored something, the count of stored records is added to a
//!   [`tokio::sync::watch`] channel, which the daemon follows to resolve identities;
//! - the rounds run one after another on one connection of the store's pool, which the writer keeps while
//!   it has work (a warm SQLite page cache from one commit to the next);
//! - on SQLite, a checkpointer task follows the same channel and copies the write-ahead log into the
//!   database file ([`SqlStore::checkpoint_wal`]) after commits, at most every [`CHECKPOINT_INTERVAL`], on
//!   another connection and concurrently with the writer's rounds: SQLite's own checkpoint runs inside a
//!   commit (every 1,000 pages of log, several times a second at full load) and made the requests of that
//!   commit wait for the copy and an extra `fsync`. Acknowledgements do not depend on it: durability comes
//!   from the commit's `fsync` of the log;
//! - when every [`WriterHandle`] is dropped, the writer finishes what is queued and stops, and so does the
//!   checkpointer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use spindle_store::{Backend, CollectedOutcome, CollectedRecord, SqlStore};
use tokio::sync::{mpsc, oneshot, watch};

/// Records in one transaction, beyond which the writer takes no further request into the round (the
/// request that crosses it is the last). A commit costs roughly 5–10 µs a record on 2 cores, so this keeps a
/// round that follows a stall to some 25–50 ms, instead of making every waiting request wait for one very
/// large commit; 64 clients with batches of 100 fill about 3,200 a round.
pub const MAX_GROUP_RECORDS: usize = 5_000;
/// Requests that may wait for the writer before senders wait too (back-pressure).
const QUEUE: usize = 4_096;
/// Least time between two checkpoints. A checkpoint ends with an `fsync` of the database file, which the
/// commits' own `fsync`s of the log may queue behind, so the checkpointer does not follow every commit (some
/// 200 a second at 50,000 events/s); once every 100 ms aims to keep the log under the 1,000 pages at which
/// SQLite checkpoints inside a commit.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);
/// How long the writer keeps its connection without work before giving it back to the pool.
const KEEP_CONNECTION_IDLE: Duration = Duration::from_millis(100);

/// The commit holding a request's records failed (nothing of it was stored), or the writer stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the records were not stored")]
pub struct NotStored;

type Reply = oneshot::Sender<Result<Vec<CollectedOutcome>, NotStored>>;

struct Job {
    records: Vec<CollectedRecord>,
    reply: Reply,
}

/// Sends records to the writer.
#[derive(Debug, Clone)]
pub struct WriterHandle {
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("records", &self.records.len())
            .finish_non_exhaustive()
    }
}

impl WriterHandle {
    /// Stores `records` in the next group commit; `Err` when the commit failed or the writer stopped.
    pub async fn store(
        &self,
        records: Vec<CollectedRecord>,
    ) -> Result<Vec<CollectedOutcome>, NotStored> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { records, reply })
            .await
            .map_err(|_| NotStored)?;
        answer.await.map_err(|_| NotStored)?
    }
}

/// The running writer task.
#[derive(Debug)]
pub struct Writer {
    task: tokio::task::JoinHandle<()>,
    checkpointer: Option<tokio::task::JoinHandle<()>>,
    commits: watch::Receiver<u64>,
    rounds: Arc<AtomicU64>,
}

impl Writer {
    /// A receiver of the number of records stored so far; it changes after every commit that stored some.
    pub fn commits(&self) -> watch::Receiver<u64> {
        self.commits.clone()
    }

    /// How many transactions the writer has run (successful or not).
    pub fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::Relaxed)
    }

    /// Waits until the writer has stored everything queued and stopped (after every handle was dropped).
    pub async fn finished(self) {
        if let Err(err) = self.task.await {
            tracing::error!(error = %err, "the collector's writer task failed");
        }
        if let Some(checkpointer) = self.checkpointer
            && let Err(err) = checkpointer.await
        {
            tracing::error!(error = %err, "the collector's checkpointer task failed");
        }
    }
}

/// Starts the writer on `store`, de-duplicating within `window`.
pub fn start(store: Arc<SqlStore>, window: Duration) -> (WriterHandle, Writer) {
    let (jobs, queue) = mpsc::channel(QUEUE);
    let (stored, commits) = watch::channel(0_u64);
    let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
    let rounds = Arc::new(AtomicU64::new(0));
    // With a single-connection pool the checkpointer would hold the writer's connection.
    let checkpointer = (store.url().backend() == Backend::Sqlite && store.can_keep_a_connection())
        .then(|| tokio::spawn(checkpoint(store.clone(), commits.clone())));
    let task = tokio::spawn(run(store, queue, window_ms, stored, rounds.clone()));
    (
        WriterHandle { jobs },
        Writer {
            task,
            checkpointer,
            commits,
            rounds,
        },
    )
}

/// Checkpoints SQLite's write-ahead log after commits, at most once per [`CHECKPOINT_INTERVAL`], until the
/// writer stops. Commits made meanwhile are taken together by the next checkpoint.
async fn checkpoint(store: Arc<SqlStore>, mut commits: watch::Receiver<u64>) {
    while commits.changed().await.is_ok() {
        let started = Instant::now();
        let next = tokio::time::Instant::from_std(started) + CHECKPOINT_INTERVAL;
        if let Err(err) = store.checkpoint_wal().await {
            // SQLite's automatic checkpoint still keeps the log bounded.
            tracing::warn!(error = %err, "WAL checkpoint failed");
        }
        metrics::histogram!("spindle_collector_checkpoint_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        tokio::time::sleep_until(next).await;
    }
}

async fn run(
    store: Arc<SqlStore>,
    mut queue: mpsc::Receiver<Job>,
    window_ms: i64,
    stored: watch::Sender<u64>,
    rounds: Arc<AtomicU64>,
) {
    // The connection the rounds run on (see `SqlStore::apply_collected_on`: a connection of its own keeps
    // SQLite's page cache warm from one commit to the next). It is given back to the pool after
    // [`KEEP_CONNECTION_IDLE`] without work, or after a failed round (the next round takes a fresh one);
    // with a single-connection pool, which the rest of the daemon needs too, after every round.
    let keep = store.can_keep_a_connection();
    let mut connection = None;
    loop {
        let first = match tokio::time::timeout(KEEP_CONNECTION_IDLE, queue.recv()).await {
            Ok(Some(job)) => job,
            Ok(None) => break,
            Err(_) => {
                connection = None;
                match queue.recv().await {
                    Some(job) => job,
                    None => break,
                }
            }
        };
        let mut size = first.records.len();
        let mut jobs = vec![first];
        while size < MAX_GROUP_RECORDS {
            match queue.try_recv() {
                Ok(job) => {
                    size += job.records.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let mut records = Vec::with_capacity(size);
        let mut replies = Vec::with_capacity(jobs.len());
        for job in jobs {
            replies.push((job.records.len(), job.reply));
            records.extend(job.records);
        }
        let started = Instant::now();
        let acquired = match connection.take() {
            Some(conn) => Ok(conn),
            None => store.collector_connection().await,
        };
        let result = match acquired {
            Ok(mut conn) => {
                let result = store
                    .apply_collected_on(&mut conn, records, window_ms)
                    .await;
                if result.is_ok() && keep {
                    connection = Some(conn);
                }
                result
            }
            Err(err) => Err(err),
        };
        rounds.fetch_add(1, Ordering::Relaxed);
        metrics::histogram!("spindle_collector_commit_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        metrics::histogram!("spindle_collector_commit_records").record(size as f64);
        match result {
            Ok(outcomes) => {
                let written = outcomes
                    .iter()
                    .filter(|o| **o == CollectedOutcome::Stored)
                    .count() as u64;
                tracing::debug!(
                    records = size,
                    stored = written,
                    requests = replies.len(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "collector commit"
                );
                let mut rest = outcomes.into_iter();
                for (count, reply) in replies {
                    let _ = reply.send(Ok(rest.by_ref().take(count).collect()));
                }
                if written > 0 {
                    stored.send_modify(|total| *total += written);
                }
            }
            Err(err) => {
                tracing::error!(error = %err, records = size, "collector commit failed; the requests are answered 503");
                for (_, reply) in replies {
                    let _ = reply.send(Err(NotStored));
                }
            }
        }
    }
    tracing::debug!("collector writer stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use spindle_model::{Event, Identifier, RawRecord};

    fn records(client: usize, n: usize) -> Vec<CollectedRecord> {
        (0..n)
            .map(|i| {
                let record = RawRecord {
                    stream: "track".into(),
                    external_id: format!("c{client}-{i}"),
                    version: 1_000,
                    updated_at: None,
                    deleted: false,
                    identifiers: vec![Identifier::new("anonymous_id", format!("a{client}"))],
                    traits: Default::default(),
                    events: vec![Event {
                        name: "tick".into(),
                        occurred_at: chrono::Utc::now(),
                        properties: Default::default(),
                    }],
                };
                CollectedRecord::new("website", record).unwrap()
            })
            .collect()
    }

    /// Requests waiting together share one transaction (a single-threaded runtime makes "together"
    /// deterministic: all 64 are queued before the writer first runs).
    #[tokio::test(flavor = "current_thread")]
    async fn waiting_requests_share_one_commit() {
        let test_store = spindle_testkit::store::sqlite().await;
        let (handle, writer) = start(
            Arc::new(test_store.store.clone()),
            Duration::from_secs(3600),
        );
        let mut commits = writer.commits();
        let requests = (0..64).map(|client| {
            let handle = handle.clone();
            async move { handle.store(records(client, 10)).await.unwrap() }
        });
        let answers = futures::future::join_all(requests).await;
        assert!(
            answers
                .iter()
                .flatten()
                .all(|o| *o == CollectedOutcome::Stored)
        );
        assert_eq!(writer.rounds(), 1, "one transaction for the 64 requests");
        commits.changed().await.unwrap();
        assert_eq!(*commits.borrow(), 640);
        // The same records again: one more round, all duplicates, nothing new stored.
        let again = handle.store(records(0, 10)).await.unwrap();
        assert!(again.iter().all(|o| *o == CollectedOutcome::Duplicate));
        assert_eq!(writer.rounds(), 2);
        drop(handle);
        writer.finished().await;
        test_store.finish().await;
    }
}
