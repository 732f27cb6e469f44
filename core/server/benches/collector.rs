//! Collector throughput: 64 concurrent connections send `/v1/batch` requests of 100 events over loopback to
//! the collector on the embedded SQLite store (synchronous = FULL: an acknowledged event is on disk).
//!
//! `cargo bench -p spindle-server --bench collector` runs two phases: a closed loop (each connection sends
//! its next batch once the last is acknowledged: the most the collector takes) and an open loop at a fixed
//! offered rate (latency counted from each batch's scheduled time, so a stall is not hidden). For each phase
//! it prints events acknowledged per second, request latency percentiles, the group commits of the measured
//! window (records and time each, share over 25 and 50 ms) and the CPU time spent per 1,000 events by the
//! server's threads and by the load generator's (a figure that other load on the machine disturbs much less
//! than latency); at the end, the process's peak RSS (the server and the load generator share the process,
//! so the RSS covers both). Settings: `BENCH_SECS` (default 20), `BENCH_CONNECTIONS` (64), `BENCH_BATCH` (100),
//! `BENCH_WARMUP_SECS` (3), `BENCH_RATE` (events/s offered in the open-loop phase, 50000; 0 skips it).

#![allow(clippy::unwrap_used, clippy::print_stdout)] // a benchmark binary: it prints, and fails loudly

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use spindle_server::collector::{self, CollectorState, WriteKeys};
use spindle_server::ops::{self, OpsState};
use spindle_store::{OpenOptions, ProfileStore, SqlStore, StoreUrl};

const KEY: &str = "wk-bench-0123456789";

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A batch like analytics-python's: track events with context, properties and a unique messageId. Built once
/// per connection; each request patches its number into the message ids (so the load generator spends its
/// CPU on HTTP, not on formatting).
struct Template {
    bytes: Vec<u8>,
    /// Where each message id's 8-digit request number starts.
    slots: Vec<usize>,
}

impl Template {
    fn new(connection: u64, size: u64) -> Self {
        let mut out = String::with_capacity(size as usize * 420 + 100);
        let mut slots = Vec::new();
        out.push_str("{\"batch\":[");
        for event in 0..size {
            if event > 0 {
                out.push(',');
            }
            out.push_str(&format!(
                "{{\"type\":\"track\",\"userId\":\"user-{connection}-{u}\",\"anonymousId\":null,\
                 \"event\":\"Product Viewed\",\"properties\":{{\"sku\":\"SKU-{event}\",\"price\":19.99,\"currency\":\"EUR\",\"category\":\"shoes\"}},\
                 \"context\":{{\"library\":{{\"name\":\"analytics-python\",\"version\":\"2.4.0\"}},\"ip\":\"203.0.113.7\"}},\
                 \"timestamp\":\"2025-01-02T03:04:05.734614+00:00\",\"integrations\":{{}},\"messageId\":\"{connection:05}-",
                u = event % 50,
            ));
            slots.push(out.len());
            out.push_str(&format!("00000000-{event:04}-7f9c2d5e-1b3a-4c8e-9f0d\"}}"));
        }
        out.push_str("],\"sentAt\":\"2025-01-02T03:04:06.000+00:00\",\"writeKey\":\"");
        out.push_str(KEY);
        out.push_str("\"}");
        Self {
            bytes: out.into_bytes(),
            slots,
        }
    }

    fn body(&self, request: u64) -> Vec<u8> {
        let mut bytes = self.bytes.clone();
        let digits = format!("{request:08}");
        for &slot in &self.slots {
            bytes[slot..slot + 8].copy_from_slice(digits.as_bytes());
        }
        bytes
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn main() {
    // The server and the load generator run on runtimes of their own (threads named `server` and `load`),
    // as two processes would; both have as many workers as there are cores.
    let server = tokio::runtime::Builder::new_multi_thread()
        .thread_name("server")
        .enable_all()
        .build()
        .unwrap();
    let load = tokio::runtime::Builder::new_multi_thread()
        .thread_name("load")
        .enable_all()
        .build()
        .unwrap();
    load.block_on(run(server.handle().clone()));
}

async fn run(server: tokio::runtime::Handle) {
    let secs = setting("BENCH_SECS", 20);
    let warmup = setting("BENCH_WARMUP_SECS", 3);
    let connections = setting("BENCH_CONNECTIONS", 64);
    let batch = setting("BENCH_BATCH", 100);
    let dir = tempfile::tempdir().unwrap();
    let url = StoreUrl::parse("sqlite://bench.db", dir.path(), None).unwrap();
    let metrics = ops::install_metrics();
    let (store, writer, addr) = server
        .spawn(async move {
            let store = Arc::new(SqlStore::open(&url, &OpenOptions::default()).await.unwrap());
            let (state, writer) = CollectorState::with_keys(
                store.clone(),
                WriteKeys::from_pairs([("website", KEY)]),
                Vec::new(),
                Duration::from_secs(24 * 3600),
            );
            let app =
                ops::instrument(collector::router(state).merge(ops::router(OpsState::default())));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(listener, app).await });
            (store, writer, addr)
        })
        .await
        .unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    println!(
        "collector: {connections} connections x /v1/batch of {batch} events, SQLite (synchronous=FULL), {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // Closed loop: each connection sends its next batch as soon as the last is acknowledged (the most the
    // collector takes; latency is then queueing: 64 batches in flight / throughput).
    let mut run = Load {
        addr,
        metrics: metrics.clone(),
        connections,
        batch,
        rate: None,
        phase: 0,
    };
    let closed = run.measure(warmup, secs).await;
    closed.print("closed loop (as fast as acknowledged)");
    // Open loop at a fixed offered rate: latency of each batch from its scheduled send time.
    let target = setting("BENCH_RATE", 50_000);
    if target > 0 {
        run.rate = Some(target as f64);
        run.phase = 1;
        let open = run.measure(warmup, secs).await;
        open.print(&format!("open loop at {target} events/s offered"));
    }
    let stored = store.count_records(None).await.unwrap();
    drop(writer);
    println!("  {stored} records stored");
    println!(
        "  peak RSS {} MiB (server and load generator in one process)",
        spindle_testkit::proc_status::peak_rss() / (1024 * 1024)
    );
}

/// The collector's commit histograms (`spindle_collector_commit_*`) as rendered by the metrics exporter.
#[derive(Debug, Clone, Default)]
struct Commits {
    count: f64,
    records: f64,
    seconds: f64,
    /// Commits that took at most 25 ms and at most 50 ms (two of the histogram's buckets).
    within_25ms: f64,
    within_50ms: f64,
}

impl Commits {
    fn now(metrics: &metrics_exporter_prometheus::PrometheusHandle) -> Self {
        let rendered = metrics.render();
        let value = |name: &str| -> f64 {
            rendered
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0)
        };
        Self {
            count: value("spindle_collector_commit_duration_seconds_count"),
            records: value("spindle_collector_commit_records_sum"),
            seconds: value("spindle_collector_commit_duration_seconds_sum"),
            within_25ms: value("spindle_collector_commit_duration_seconds_bucket{le=\"0.025\"}"),
            within_50ms: value("spindle_collector_commit_duration_seconds_bucket{le=\"0.05\"}"),
        }
    }

    /// What happened between `earlier` and `self`.
    fn since(&self, earlier: &Self) -> Self {
        Self {
            count: self.count - earlier.count,
            records: self.records - earlier.records,
            seconds: self.seconds - earlier.seconds,
            within_25ms: self.within_25ms - earlier.within_25ms,
            within_50ms: self.within_50ms - earlier.within_50ms,
        }
    }
}

/// CPU time (user + system) of this process's threads, by thread name: the server's runtime (`server`),
/// SQLite's worker threads (`sqlx-sqlite-worker-N`) and the load generator (`load`).
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    server: Duration,
    sqlite: Duration,
    load: Duration,
}

impl Cpu {
    fn now() -> Self {
        let mut cpu = Self::default();
        let ticks = 100.0; // USER_HZ: the unit of /proc's CPU times on Linux.
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return cpu;
        };
        for task in tasks.flatten() {
            let (Ok(comm), Ok(stat)) = (
                std::fs::read_to_string(task.path().join("comm")),
                std::fs::read_to_string(task.path().join("stat")),
            ) else {
                continue;
            };
            // Fields after the `(comm)`: state is the 3rd field, utime the 14th and stime the 15th.
            let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
                continue;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let time = |i: usize| {
                fields
                    .get(i)
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            let used = Duration::from_secs_f64((time(11) + time(12)) / ticks);
            match comm.trim() {
                name if name.starts_with("server") => cpu.server += used,
                name if name.starts_with("sqlx-sqlite") => cpu.sqlite += used,
                name if name.starts_with("load") => cpu.load += used,
                _ => {}
            }
        }
        cpu
    }

    fn since(&self, earlier: &Self) -> Self {
        Self {
            server: self.server.saturating_sub(earlier.server),
            sqlite: self.sqlite.saturating_sub(earlier.sqlite),
            load: self.load.saturating_sub(earlier.load),
        }
    }
}

/// One measured load.
struct Load {
    addr: std::net::SocketAddr,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
    connections: u64,
    batch: u64,
    /// Offered events per second; `None` for a closed loop.
    rate: Option<f64>,
    /// Distinguishes the message ids of successive loads.
    phase: u64,
}

struct Measured {
    acknowledged: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
    commits: Commits,
    cpu: Cpu,
}

impl Measured {
    fn print(&self, what: &str) {
        let seconds = self.elapsed.as_secs_f64();
        println!(
            "  {what}: {:.0} events/s acknowledged ({:.0} requests/s over {seconds:.1} s), latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            self.acknowledged as f64 / seconds,
            self.latencies.len() as f64 / seconds,
            percentile(&self.latencies, 0.50).as_secs_f64() * 1e3,
            percentile(&self.latencies, 0.99).as_secs_f64() * 1e3,
            self.latencies
                .last()
                .copied()
                .unwrap_or_default()
                .as_secs_f64()
                * 1e3
        );
        let commits = &self.commits;
        println!(
            "    {:.0} group commits: {:.0} records and {:.1} ms each on average; {:.1}% took over 25 ms, {:.1}% over 50 ms",
            commits.count,
            commits.records / commits.count.max(1.0),
            commits.seconds / commits.count.max(1.0) * 1e3,
            (commits.count - commits.within_25ms) / commits.count.max(1.0) * 100.0,
            (commits.count - commits.within_50ms) / commits.count.max(1.0) * 100.0,
        );
        let per_thousand = |cpu: Duration| {
            cpu.as_secs_f64() * 1e3 / (self.acknowledged as f64 / 1e3).max(f64::MIN_POSITIVE)
        };
        println!(
            "    CPU per 1,000 events: server {:.1} ms (runtime {:.1} + SQLite {:.1}), load generator {:.1} ms",
            per_thousand(self.cpu.server + self.cpu.sqlite),
            per_thousand(self.cpu.server),
            per_thousand(self.cpu.sqlite),
            per_thousand(self.cpu.load),
        );
    }
}

impl Load {
    async fn measure(&self, warmup: u64, secs: u64) -> Measured {
        let stop = Arc::new(AtomicBool::new(false));
        let measuring = Arc::new(AtomicBool::new(false));
        let events = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for connection in 0..self.connections {
            let (stop, measuring, events) = (stop.clone(), measuring.clone(), events.clone());
            let url = format!("http://{}/v1/batch", self.addr);
            let batch = self.batch;
            let id = self.phase * 10_000 + connection;
            // Each connection's share of the offered rate, started at staggered times.
            let period = self
                .rate
                .map(|rate| Duration::from_secs_f64(self.connections as f64 * batch as f64 / rate));
            let offset = period.map(|p| p.mul_f64(connection as f64 / self.connections as f64));
            tasks.push(tokio::spawn(async move {
                // One client per task: one keep-alive connection each.
                let client = reqwest::Client::builder()
                    .pool_max_idle_per_host(1)
                    .build()
                    .unwrap();
                let mut latencies = Vec::new();
                let mut request = 0;
                let template = Template::new(id, batch);
                let mut ticks = period.map(|p| {
                    let mut ticks = tokio::time::interval_at(
                        tokio::time::Instant::now() + offset.unwrap_or_default(),
                        p,
                    );
                    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                    ticks
                });
                while !stop.load(Ordering::Relaxed) {
                    let started = match ticks.as_mut() {
                        Some(ticks) => ticks.tick().await.into_std(),
                        None => Instant::now(),
                    };
                    let payload = template.body(request);
                    request += 1;
                    let response = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(payload)
                        .send()
                        .await
                        .unwrap();
                    let status = response.status();
                    let answer = response.bytes().await.unwrap();
                    let elapsed = started.elapsed();
                    assert!(status.is_success(), "{status}: {answer:?}");
                    if measuring.load(Ordering::Relaxed) {
                        latencies.push(elapsed);
                        events.fetch_add(batch, Ordering::Relaxed);
                    }
                }
                latencies
            }));
        }
        tokio::time::sleep(Duration::from_secs(warmup)).await;
        measuring.store(true, Ordering::SeqCst);
        let started = Instant::now();
        let (commits, cpu) = (Commits::now(&self.metrics), Cpu::now());
        tokio::time::sleep(Duration::from_secs(secs)).await;
        measuring.store(false, Ordering::SeqCst);
        let elapsed = started.elapsed();
        let (commits, cpu) = (
            Commits::now(&self.metrics).since(&commits),
            Cpu::now().since(&cpu),
        );
        stop.store(true, Ordering::SeqCst);
        let mut latencies = Vec::new();
        for task in tasks {
            latencies.extend(task.await.unwrap());
        }
        latencies.sort();
        Measured {
            acknowledged: events.load(Ordering::SeqCst),
            elapsed,
            latencies,
            commits,
            cpu,
        }
    }
}
