//! Plugin host benchmark: the Mailchimp plugin's cold compile and cached load, per-call instantiation, and
//! records per second through `sync-batch` for batches of 1, 100 and 10,000 records, with a local HTTP
//! server that answers every request at once.

#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::routing::{post, put};
use secrecy::SecretString;
use spindle_config::{AllowedHost, PluginLimits};
use spindle_plugin_host::{Batch, CallLimits, Identifier, PluginHost, SyncMode, Upsert};

fn batch(port: u16, size: usize) -> Batch {
    let config =
        serde_json::json!({"base_url": format!("http://127.0.0.1:{port}/3.0"), "list_id": "l1"});
    Batch {
        mode: SyncMode::Upsert,
        config: config.to_string(),
        upserts: (0..size)
            .map(|i| Upsert {
                id: format!("p{i}"),
                identifiers: vec![Identifier {
                    kind: "email".into(),
                    value: format!("person{i}@example.com"),
                }],
                fields: format!(r#"{{"FNAME":"Person {i}","LNAME":"Example"}}"#),
            })
            .collect(),
        removals: vec![],
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let app = axum::Router::new()
            .route("/3.0/lists/{list}/members/{hash}", put(|| async { "{}" }))
            .route(
                "/3.0/lists/{list}",
                post(|| async { r#"{"new_members":[],"updated_members":[],"errors":[]}"# }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });

        let wasm = spindle_testkit::plugins::built("mailchimp");
        let cache = tempfile::tempdir().unwrap();
        let host = PluginHost::new(Some(cache.path().to_owned())).unwrap();
        let started = Instant::now();
        let plugin = host.load(&wasm).unwrap();
        println!(
            "cold compile of mailchimp.wasm ({} KiB): {:.0} ms",
            std::fs::metadata(&wasm).unwrap().len() / 1024,
            started.elapsed().as_secs_f64() * 1e3
        );
        let loads = 20;
        let started = Instant::now();
        for _ in 0..loads {
            let again = host.load(&wasm).unwrap();
            assert!(again.from_cache);
        }
        println!(
            "cached load: {:.2} ms",
            started.elapsed().as_secs_f64() * 1e3 / f64::from(loads)
        );

        let limits = CallLimits {
            limits: PluginLimits {
                memory_bytes: 256 << 20,
                timeout: Duration::from_secs(60),
                fuel: None,
            },
            allow_hosts: vec![AllowedHost {
                scheme: Some("http".into()),
                host: "127.0.0.1".into(),
                port: Some(port),
            }],
            secrets: BTreeMap::from([("api_key".to_owned(), SecretString::from("k-us1"))]),
        };
        host.warm_up(&plugin, &limits).await.unwrap();
        let calls = 5_000;
        let started = Instant::now();
        for _ in 0..calls {
            host.warm_up(&plugin, &limits).await.unwrap();
        }
        println!(
            "instantiation (fresh store, limits and instance, dropped): {:.1} µs",
            started.elapsed().as_secs_f64() * 1e6 / f64::from(calls)
        );
        // `describe` is a fresh instance plus one tiny call.
        let calls = 2_000;
        let started = Instant::now();
        for _ in 0..calls {
            host.describe(&plugin, &limits).await.unwrap();
        }
        println!(
            "instantiate + describe: {:.1} µs per call",
            started.elapsed().as_secs_f64() * 1e6 / f64::from(calls)
        );

        for (size, rounds) in [(1usize, 300u32), (100, 30), (10_000, 3)] {
            let batch = batch(port, size);
            host.sync_batch(&plugin, &limits, &batch)
                .await
                .unwrap()
                .unwrap();
            let started = Instant::now();
            for _ in 0..rounds {
                let outcomes = host
                    .sync_batch(&plugin, &limits, &batch)
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(outcomes.len(), size);
            }
            let seconds = started.elapsed().as_secs_f64();
            println!(
                "sync-batch of {size:>6}: {:>8.0} records/s ({:.2} ms per call)",
                (size as f64 * f64::from(rounds)) / seconds,
                seconds * 1e3 / f64::from(rounds)
            );
        }
    });
}
