//! End-to-end pull benchmark: 100,000 Shopify customers and 300,000 orders from the local fake Shopify (its
//! rate limit off) through the real connector into a SQLite store on disk.
//!
//! Prints records per second and memory: the process's resident set after seeding the fake (the fake's own
//! data) and the peak resident set while pulling, sampled every 20 ms; their difference is what the pull
//! itself holds. `SPINDLE_BENCH_SCALE` (default 1.0) scales the record counts, so running at two scales
//! shows whether the pull's memory depends on the number of records.

#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use spindle_config::ShopifySettings;
use spindle_config::secret::SecretString;
use spindle_sources::shopify::ShopifySource;
use spindle_sources::{NoProgress, run_source};
use spindle_store::{OpenOptions, ProfileStore, SqlStore, StoreUrl};
use spindle_testkit::shopify::{FakeShopify, FakeShopifyConfig};
use tokio_util::sync::CancellationToken;

fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let scale: f64 = std::env::var("SPINDLE_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let customers = (100_000.0 * scale) as usize;
    let orders = (300_000.0 * scale) as usize;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let fake = FakeShopify::start(FakeShopifyConfig { leak_per_second: None, ..FakeShopifyConfig::default() }).await;
        let seeding = Instant::now();
        fake.seed_customers(customers, 42);
        fake.seed_orders(orders, 43);
        println!("seeded {customers} customers and {orders} orders in {:.1}s", seeding.elapsed().as_secs_f64());

        let dir = tempfile::tempdir().unwrap();
        let url = StoreUrl::parse("sqlite://bench.db", dir.path(), None).unwrap();
        let store = SqlStore::open(&url, &OpenOptions::default()).await.unwrap();
        let settings = ShopifySettings {
            base_url: fake.base_url(),
            access_token: SecretString::from("shpat_test"),
            api_version: "2024-01".into(),
            streams: vec!["customers".into(), "orders".into()],
            requests_per_second: 10_000.0,
            bucket_size: 10_000,
        };
        let mut source = ShopifySource::new("shop", settings);

        let baseline = resident_kib();
        let peak = Arc::new(AtomicU64::new(baseline));
        let done = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (peak, done) = (peak.clone(), done.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    peak.fetch_max(resident_kib(), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        let started = Instant::now();
        let (counts, _) = run_source("shop", &mut source, &store, &CancellationToken::new(), &NoProgress).await.unwrap();
        let seconds = started.elapsed().as_secs_f64();
        done.store(true, Ordering::Relaxed);
        sampler.join().unwrap();

        let stored = store.count_records(Some("shop")).await.unwrap();
        assert_eq!(stored as usize, customers + orders, "every record arrived once");
        let peak = peak.load(Ordering::Relaxed);
        println!("pulled {} records ({} stored) in {seconds:.2}s: {:.0} records/s", counts.read, stored, counts.read as f64 / seconds);
        println!(
            "resident memory: {} MiB after seeding the fake, {} MiB peak while pulling (+{} MiB for the pull)",
            baseline / 1024,
            peak / 1024,
            peak.saturating_sub(baseline) / 1024
        );
    });
}
