//! Identity resolution at scale: a full build of a million records, an incremental batch, a rebuild.
//!
//! `cargo bench -p spindle-identity --bench resolve`. The records come from the test generator
//! (`tests/support/generator.rs`): about 400,000 true customers over three sources (`crm`, `shop`, `file`)
//! with realistic noise, loaded into a SQLite store in a temporary folder with `apply_source_batch` in
//! batches of 2,000, as connectors deliver them: each source read in full, one after the other (set
//! `SPINDLE_BENCH_ORDER=interleaved` to interleave the sources instead). Loading is timed but is not a
//! measured figure. Then:
//!
//! - full build: `resolve_pending()` from an empty profile state;
//! - incremental: a new batch of 10,000 records (half new customers, half new records of existing
//!   customers), then `resolve_pending()`;
//! - rebuild: `rebuild()` once.
//!
//! `SPINDLE_BENCH_STEPS=N` (default 1) applies N incremental batches one after the other, each measured
//! on its own, before the rebuild.
//!
//! The full build and the rebuild are full passes (most records are pending); the incremental batch is one
//! step, which resolves its changed records together with every record of the profiles they reach; each
//! line gives the records resolved and profiles written beside the records loaded.
//!
//! Each figure is the wall time (with the CPU time the process used meanwhile, and the bytes it read from
//! storage: a figure bound by the disk rather than the cores shows there) and the peak resident set size,
//! sampled from `/proc/self/status` every 20 ms, with the peak of its anonymous part (the process's own
//! memory; the rest is the SQLite file, which the store reads through a memory map).
//! `SPINDLE_BENCH_SCALE` (default 1.0) scales the record counts; `RUST_LOG` (for example `spindle_identity=debug,spindle_store=debug`) prints the engine's timings
//! of each phase on stderr. Targets on a 2-core machine: full build under 10 s, incremental batch under
//! 500 ms, peak memory under 1.5 GB.

#[path = "../tests/support/generator.rs"]
mod generator;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use generator::{Generated, Generator, Rng};

/// The allocator the `spindle` binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use spindle_config::{IdentityConfig, ProfilesConfig};
use spindle_identity::IdentityEngine;
use spindle_model::RawRecord;
use spindle_store::{IdentityStore, OpenOptions, SqlStore, StoreUrl};
use spindle_testkit::proc_status::storage_read_bytes;
use spindle_testkit::store::apply_records;

const SEED: u64 = 0xBE7C_2024;
const RECORDS: f64 = 1_000_000.0;
const INCREMENTAL: f64 = 10_000.0;
const BATCH: usize = 2_000;
const SOURCES: [&str; 3] = ["crm", "shop", "file"];
const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

fn identity() -> IdentityConfig {
    IdentityConfig {
        link_on: vec!["email".into(), "phone".into(), "user_id".into()],
        limits: [("user_id".to_owned(), 1), ("email".to_owned(), 3)]
            .into_iter()
            .collect(),
        blocked: vec![generator::BLOCKED_EMAIL.into()],
        priority: vec!["user_id".into(), "email".into(), "phone".into()],
        default_region: Some("FR".into()),
        blocked_patterns: vec![],
        compound: vec![],
    }
}

/// Resident set size in bytes.
fn rss() -> u64 {
    spindle_testkit::proc_status::bytes("VmRSS:")
}

/// The anonymous part of the resident set (the process's own memory), in bytes: the rest is files mapped
/// in, here the SQLite store, which the store reads through a memory map.
fn rss_anon() -> u64 {
    spindle_testkit::proc_status::bytes("RssAnon:")
}

/// Samples the RSS every 20 ms in a background thread and keeps the peaks (total and anonymous).
struct Sampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    peak_anon: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
    baseline: u64,
}

impl Sampler {
    fn start() -> Self {
        let baseline = rss();
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(baseline));
        let peak_anon = Arc::new(AtomicU64::new(rss_anon()));
        let thread = {
            let (stop, peak, peak_anon) =
                (Arc::clone(&stop), Arc::clone(&peak), Arc::clone(&peak_anon));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(rss(), Ordering::Relaxed);
                    peak_anon.fetch_max(rss_anon(), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        Self {
            stop,
            peak,
            peak_anon,
            thread: Some(thread),
            baseline,
        }
    }

    /// `(baseline, peak, peak anonymous)` in bytes.
    fn finish(mut self) -> (u64, u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let peak = self.peak.load(Ordering::Relaxed).max(rss());
        let peak_anon = self.peak_anon.load(Ordering::Relaxed).max(rss_anon());
        (self.baseline, peak, peak_anon)
    }
}

/// CPU time (user and system) this process has used so far, from `/proc/self/stat` (zero where it cannot
/// be read): beside the wall time, it shows how much of a figure is work rather than waiting for a busy
/// machine.
fn cpu_time() -> Duration {
    let ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            // Fields after the command name (which may hold spaces) start at `state`; utime and stime are
            // the 14th and 15th fields of the whole line.
            let rest = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let user: u64 = fields.get(11)?.parse().ok()?;
            let system: u64 = fields.get(12)?.parse().ok()?;
            Some(user + system)
        })
        .unwrap_or(0);
    // The kernel reports clock ticks of 1/100 s on every common configuration.
    Duration::from_millis(ticks * 10)
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / GIB
}

/// Runs `work`, printing `label: <what> in <time>, peak RSS <peak> (+<growth>)` and the target verdict.
async fn measure<T, F>(label: &str, target: Duration, work: F) -> T
where
    F: AsyncFnOnce() -> (T, String),
{
    let sampler = Sampler::start();
    let (started, cpu, read) = (Instant::now(), cpu_time(), storage_read_bytes());
    let (out, what) = work().await;
    let (elapsed, cpu) = (started.elapsed(), cpu_time().saturating_sub(cpu));
    let read = storage_read_bytes().saturating_sub(read);
    let (baseline, peak, peak_anon) = sampler.finish();
    let verdict = if elapsed <= target { "ok" } else { "OVER" };
    eprintln!(
        "{label}: {what} in {:.3} s (CPU {:.1} s, {:.0} MiB read from storage), peak RSS {:.2} GiB (+{:.2} GiB over {:.2} GiB \
         before; peak anonymous {:.2} GiB, the rest is the store file mapped in) [target {:.1} s: {verdict}]",
        elapsed.as_secs_f64(),
        cpu.as_secs_f64(),
        read as f64 / (1024.0 * 1024.0),
        gib(peak),
        gib(peak.saturating_sub(baseline)),
        gib(baseline),
        gib(peak_anon),
        target.as_secs_f64(),
    );
    out
}

/// Loads `generated` per source in batches of [`BATCH`].
/// Waits for the checkpoint that follows a resolution (copying the write-ahead log into the database
/// file, beside whatever comes next), so that each figure is measured on a store at rest.
async fn settle(store: &SqlStore, after: &str) {
    let started = Instant::now();
    store.settle_checkpoints().await;
    eprintln!(
        "{after}: its checkpoint finished {:.2} s after it",
        started.elapsed().as_secs_f64()
    );
}

async fn load(store: &SqlStore, generated: impl IntoIterator<Item = Generated>) -> usize {
    let mut pending: BTreeMap<&'static str, Vec<RawRecord>> = BTreeMap::new();
    let mut count = 0;
    for record in generated {
        count += 1;
        let batch = pending.entry(record.source).or_default();
        batch.push(record.record);
        if batch.len() == BATCH {
            let records = std::mem::take(batch);
            apply_records(store, record.source, records).await;
        }
    }
    for (source, records) in pending {
        apply_records(store, source, records).await;
    }
    count
}

/// The records of customers made until `target` records exist (every customer whole).
fn population(target: usize) -> impl Iterator<Item = Generated> {
    let mut generator = Generator::new(SEED);
    let mut made = 0;
    std::iter::from_fn(move || {
        if made >= target {
            return None;
        }
        let records = generator.next_customer();
        made += records.len();
        Some(records)
    })
    .flatten()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let scale: f64 = std::env::var("SPINDLE_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let interleaved = std::env::var("SPINDLE_BENCH_ORDER").as_deref() == Ok("interleaved");
    let target = (RECORDS * scale).round() as usize;
    let dir = tempfile::tempdir().expect("temporary folder");
    let url = StoreUrl::parse("sqlite://store.db", dir.path(), None).expect("sqlite url");
    let store = SqlStore::open(&url, &OpenOptions::default())
        .await
        .expect("open the store");
    let (identity, profiles) = (identity(), ProfilesConfig::default());
    let engine = IdentityEngine::new(&store, &identity, &profiles).expect("engine");

    // Loading: not a measured figure.
    let started = Instant::now();
    let loaded = if interleaved {
        load(&store, population(target)).await
    } else {
        let mut loaded = 0;
        for source in SOURCES {
            loaded += load(
                &store,
                population(target).filter(move |g| g.source == source),
            )
            .await;
        }
        loaded
    };
    // Replay the generator to know how many customers the records came from.
    let mut generator = Generator::new(SEED);
    let mut made = 0;
    while made < target {
        made += generator.next_customer().len();
    }
    let customers = generator.customers();
    eprintln!(
        "loading: {loaded} records of {customers} customers ({}) in {:.1} s, RSS {:.2} GiB",
        if interleaved {
            "sources interleaved"
        } else {
            "one source after the other"
        },
        started.elapsed().as_secs_f64(),
        gib(rss())
    );

    // Profiles are counted after the measure: counting reads every document (through the pool's memory
    // map, which would add its pages to the peak).
    measure("full build", Duration::from_secs(10), async || {
        let report = engine.resolve_pending().await.expect("full build");
        let what = format!(
            "{loaded} records ({} record resolutions, {} profile writes)",
            report.records, report.profiles_written
        );
        ((), what)
    })
    .await;
    settle(&store, "full build").await;
    eprintln!(
        "full build: {} profiles",
        store.count_profiles().await.expect("count profiles")
    );

    // New batches: half new customers, half new records of customers already resolved.
    let incremental = (INCREMENTAL * scale).round() as usize;
    let steps: usize = std::env::var("SPINDLE_BENCH_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let mut rng = Rng::new(SEED ^ 0x1C2E);
    for _ in 0..steps {
        let mut batch = Vec::with_capacity(incremental + 8);
        while batch.len() < incremental / 2 {
            batch.extend(generator.next_customer());
        }
        while batch.len() < incremental {
            batch.push(generator.revisit(rng.below(customers)));
        }
        let started = Instant::now();
        let mut by_source: BTreeMap<&'static str, Vec<RawRecord>> = BTreeMap::new();
        for record in batch {
            by_source
                .entry(record.source)
                .or_default()
                .push(record.record);
        }
        for (source, records) in by_source {
            apply_records(&store, source, records).await;
        }
        eprintln!(
            "loading: {incremental} new records in {:.2} s",
            started.elapsed().as_secs_f64()
        );
        measure("incremental", Duration::from_millis(500), async || {
            let report = engine.resolve_pending().await.expect("incremental step");
            (
                (),
                format!(
                    "{incremental} records -> {} profiles written ({} record resolutions, {} new, {} merged)",
                    report.profiles_written, report.records, report.created, report.merged
                ),
            )
        })
        .await;
        settle(&store, "incremental").await;
    }
    measure("rebuild", Duration::from_secs(10), async || {
        let report = engine.rebuild().await.expect("rebuild");
        (
            (),
            format!(
                "{} records -> {} profiles written ({} with the same records as before, {} changed, {} split, {} merged, {} new)",
                report.records,
                report.profiles_written,
                report.unchanged,
                report.changed,
                report.split,
                report.merged,
                report.created
            ),
        )
    })
    .await;
    let size = std::fs::metadata(dir.path().join("store.db")).map_or(0, |m| m.len());
    eprintln!(
        "store: {:.2} GiB on disk, {} profiles",
        gib(size),
        store.count_profiles().await.expect("count profiles")
    );
    store.close().await;
}
