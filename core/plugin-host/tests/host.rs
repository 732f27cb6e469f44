//! The plugin host against real components built from `plugins/` (webhook, misbehaving fixtures, a plugin
//! for a future contract version), with a local HTTP receiver.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::post;
use hmac::{Hmac, KeyInit, Mac};
use secrecy::SecretString;
use sha2::Sha256;
use spindle_config::{AllowedHost, PluginLimits};
use spindle_plugin_host::{
    Batch, BatchError, CallLimits, Identifier, Outcome, PluginError, PluginHost, SyncMode, Upsert,
};
use spindle_testkit::plugins::built;

const API_KEY: &str = "sk_live_9f8e7d6c5b4a";
const SIGNING_KEY: &str = "whsec_0123456789";

/// A local receiver: records webhook deliveries and echoes anything posted to `/echo`.
struct Receiver {
    port: u16,
    received: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
}

async fn receiver() -> Receiver {
    let received: Arc<Mutex<Vec<(HeaderMap, Bytes)>>> = Arc::default();
    let log = received.clone();
    let app = axum::Router::new()
        .route(
            "/hook",
            post(move |headers: HeaderMap, body: Bytes| {
                let log = log.clone();
                async move {
                    log.lock().unwrap().push((headers, body));
                    "ok"
                }
            }),
        )
        .route(
            "/echo",
            post(|headers: HeaderMap, body: Bytes| async move {
                let key = headers
                    .get("x-api-key")
                    .map(|v| v.to_str().unwrap_or_default().to_owned())
                    .unwrap_or_default();
                (
                    [("x-echo", key.clone())],
                    format!("header={key} body={}", String::from_utf8_lossy(&body)),
                )
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver { port, received }
}

fn limits(port: u16, timeout: Duration) -> CallLimits {
    CallLimits {
        limits: PluginLimits {
            memory_bytes: 64 << 20,
            timeout,
            fuel: None,
        },
        allow_hosts: vec![AllowedHost {
            scheme: Some("http".into()),
            host: "127.0.0.1".into(),
            port: Some(port),
        }],
        secrets: BTreeMap::from([
            ("api_key".to_owned(), SecretString::from(API_KEY)),
            ("signing_key".to_owned(), SecretString::from(SIGNING_KEY)),
        ]),
    }
}

fn batch(config: serde_json::Value, people: usize) -> Batch {
    Batch {
        mode: SyncMode::Upsert,
        config: config.to_string(),
        upserts: (0..people)
            .map(|i| Upsert {
                id: format!("p{i}"),
                identifiers: vec![Identifier {
                    kind: "email".into(),
                    value: format!("p{i}@example.com"),
                }],
                fields: serde_json::json!({"FNAME": format!("Person {i}")}).to_string(),
            })
            .collect(),
        removals: vec![],
    }
}

/// One host per test process, with a compiled-code cache shared by the test processes.
fn host() -> PluginHost {
    static HOST: std::sync::OnceLock<PluginHost> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        let cache =
            spindle_testkit::plugins::repository_root().join("target/wasm-plugins/compiled");
        PluginHost::new(Some(cache)).unwrap()
    })
    .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_plugin_delivers_signed_batches() {
    let receiver = receiver().await;
    let host = host();
    let plugin = host.load(&built("webhook")).unwrap();
    let limits = limits(receiver.port, Duration::from_secs(10));
    let info = host.describe(&plugin, &limits).await.unwrap();
    assert_eq!((info.name.as_str(), info.max_batch_size), ("webhook", 1000));
    assert!(
        host.validate_config(&plugin, &limits, r#"{"url": "ftp://x"}"#)
            .await
            .unwrap()
            .is_err()
    );
    assert!(
        host.validate_config(
            &plugin,
            &limits,
            r#"{"url": "http://127.0.0.1/hook", "colour": 1}"#
        )
        .await
        .unwrap()
        .is_err()
    );

    let config = serde_json::json!({"url": format!("http://127.0.0.1:{}/hook", receiver.port)});
    let outcomes = host
        .sync_batch(&plugin, &limits, &batch(config, 3))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcomes.len(), 3);
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o.outcome, Outcome::Delivered))
    );
    let received = receiver.received.lock().unwrap();
    let (headers, body) = &received[0];
    let mut mac = Hmac::<Sha256>::new_from_slice(SIGNING_KEY.as_bytes()).unwrap();
    mac.update(body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(
        headers["x-spindle-signature"].to_str().unwrap(),
        expected,
        "the receiver can verify the signature"
    );
    let json: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(json["upserts"][2]["identifiers"]["email"], "p2@example.com");
    assert_eq!(json["upserts"][0]["fields"]["FNAME"], "Person 0");
}

async fn misbehave(
    host: &PluginHost,
    behaviour: &str,
    port: u16,
    timeout: Duration,
) -> Result<Result<Vec<spindle_plugin_host::RecordOutcome>, BatchError>, PluginError> {
    static PLUGIN: std::sync::OnceLock<spindle_plugin_host::LoadedPlugin> =
        std::sync::OnceLock::new();
    let plugin = PLUGIN.get_or_init(|| host.load(&built("misbehaving")).unwrap());
    let config = serde_json::json!({"behaviour": behaviour, "echo_url": format!("http://127.0.0.1:{port}/echo")});
    host.sync_batch(plugin, &limits(port, timeout), &batch(config, 2))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_plugin_fails_its_call_with_the_message() {
    let err = misbehave(&host(), "trap", 1, Duration::from_secs(10))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("plugin `misbehaving` failed in `sync-batch`"),
        "{text}"
    );
    assert!(
        text.contains("plugin bug: index 5 into an empty list of 0"),
        "the panic message is recovered: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_loop_is_stopped_at_the_time_limit_while_others_carry_on() {
    let host = host();
    let receiver = receiver().await;
    misbehave(&host, "ok", receiver.port, Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    let started = Instant::now();
    let looping = misbehave(&host, "loop", receiver.port, Duration::from_millis(800));
    let normal = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let done = misbehave(&host, "ok", receiver.port, Duration::from_secs(10)).await;
        (done, started.elapsed())
    };
    let (looped, (normal, normal_at)) = tokio::join!(looping, normal);
    let err = looped.unwrap_err();
    assert!(
        err.to_string().contains("wall-time limit") || matches!(err, PluginError::Timeout { .. }),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "stopped near its limit: {:?}",
        started.elapsed()
    );
    assert!(normal.unwrap().is_ok(), "another plugin call still works");
    assert!(
        normal_at < Duration::from_millis(700),
        "and was not held up by the loop: {normal_at:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fuel_budget_stops_a_busy_plugin() {
    let host = host();
    let plugin = host.load(&built("misbehaving")).unwrap();
    let mut limits = limits(1, Duration::from_secs(30));
    limits.limits.fuel = Some(50_000_000);
    let err = host
        .sync_batch(
            &plugin,
            &limits,
            &batch(serde_json::json!({"behaviour": "loop"}), 1),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("CPU budget"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allocation_bomb_hits_the_memory_limit() {
    let err = misbehave(&host(), "memory", 1, Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("exceeded its memory limit of 67108864 bytes"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbounded_recursion_is_contained() {
    let err = misbehave(&host(), "recursion", 1, Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(matches!(err, PluginError::Trap { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_outside_the_allowlist_is_refused() {
    let result = misbehave(&host(), "forbidden-host", 1, Duration::from_secs(10))
        .await
        .unwrap();
    let Err(BatchError::Fatal(message)) = result else {
        panic!("expected a refusal, got {result:?}")
    };
    assert!(
        message.contains("https://exfil.example.net is not in this destination's allow_hosts"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_cannot_leave_or_come_back() {
    let receiver = receiver().await;
    let outcomes = misbehave(
        &host(),
        "exfiltrate",
        receiver.port,
        Duration::from_secs(10),
    )
    .await
    .unwrap()
    .unwrap();
    let Outcome::Rejected(seen) = &outcomes[0].outcome else {
        panic!("{outcomes:?}")
    };
    assert!(
        seen.contains("is not in this destination's allow_hosts"),
        "sending it elsewhere was denied: {seen}"
    );
    assert!(
        seen.contains("header=[REDACTED]"),
        "the echoed header was redacted: {seen}"
    );
    assert!(
        seen.contains("(\"x-echo\", \"[REDACTED]\")"),
        "in headers too: {seen}"
    );
    assert!(
        seen.contains("body={{secret:api_key}}"),
        "bodies are not templated, so a body never carries a secret: {seen}"
    );
    assert!(
        seen.contains("[REDACTED]") && !seen.contains(API_KEY),
        "the plugin never saw the key: {seen}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_blocked_in_a_host_call_times_out() {
    let host = host();
    misbehave(&host, "ok", 1, Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    let started = Instant::now();
    let err = misbehave(&host, "slow", 1, Duration::from_millis(500))
        .await
        .unwrap_err();
    assert!(matches!(err, PluginError::Timeout { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_for_another_contract_version_is_refused_at_load() {
    let err = host().load(&built("wrong-version")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugin `wrong_version` targets spindle:destination@0.3.0; this build supports spindle:destination@0.1.0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiled_plugins_are_cached_on_disk() {
    let cache = tempfile::tempdir().unwrap();
    // Its own host and cache, so that the test sees the first compilation.
    let host = PluginHost::new(Some(cache.path().to_owned())).unwrap();
    let first = host.load(&built("webhook")).unwrap();
    assert!(!first.from_cache);
    let second = host.load(&built("webhook")).unwrap();
    assert!(
        second.from_cache,
        "the second load reuses the compiled code"
    );
    let entries: Vec<_> = std::fs::read_dir(cache.path()).unwrap().collect();
    assert_eq!(entries.len(), 1);
    // A damaged cache entry is ignored and replaced.
    let path = entries[0].as_ref().unwrap().path();
    std::fs::write(&path, b"garbage").unwrap();
    let third = host.load(&built("webhook")).unwrap();
    assert!(!third.from_cache);
    let info = host
        .describe(&third, &limits(1, Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(info.name, "webhook");
}
