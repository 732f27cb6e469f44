//! End-to-end tests of the collector in the real daemon (`spindle run`): events acknowledged before a
//! SIGKILL are all in the store after it, the restarted daemon resolves what it collects into profiles, and
//! a taken port fails the start clearly.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use spindle_store::{IdentityStore, OpenOptions, SqlStore, StoreUrl};

const WRITE_KEY: &str = "wk-e2e-0123456789";
const TOKEN: &str = "ops-e2e-0123456789";

struct Daemon {
    dir: tempfile::TempDir,
    port: u16,
}

/// A port nobody listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Daemon {
    fn new(port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("connectors.toml"),
            format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\nwrite_keys = {{ website = \"{WRITE_KEY}\" }}\n\
                 admin_tokens = [{{ name = \"ops\", role = \"viewer\", token = \"{TOKEN}\" }}]\n\n\
                 [identity]\nlink_on = [\"email\", \"user_id\", \"anonymous_id\"]\n"
            ),
        )
        .unwrap();
        Self { dir, port }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Starts `spindle run`; its log goes to `daemon.log` (a file, so a chatty daemon never blocks on a
    /// full pipe).
    fn spawn(&self) -> Child {
        let log = std::fs::File::create(self.path().join("daemon.log")).unwrap();
        Command::new(env!("CARGO_BIN_EXE_spindle"))
            .current_dir(self.path())
            .env_remove("SPINDLE_CONFIG")
            .env("SPINDLE_LOG", "info")
            .env("NO_COLOR", "1")
            .args(["run"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap()
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path().join("daemon.log")).unwrap_or_default()
    }

    async fn store(&self) -> SqlStore {
        let url = StoreUrl::parse("sqlite://spindle.db", self.path(), None).unwrap();
        SqlStore::open(&url, &OpenOptions::default()).await.unwrap()
    }
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Waits until `/healthz` answers (the daemon is serving); panics if the process exits first.
async fn wait_until_serving(daemon: &Daemon, child: &mut Child) {
    let client = client();
    let start = Instant::now();
    loop {
        if let Ok(response) = client.get(daemon.url("/healthz")).send().await
            && response.status().is_success()
        {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the daemon exited ({status}) before serving:\n{}",
                daemon.log()
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the daemon does not serve"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn batch(client_id: usize, n: usize, size: usize) -> (Vec<String>, Value) {
    let ids: Vec<String> = (0..size)
        .map(|e| format!("c{client_id}-b{n}-e{e}"))
        .collect();
    let events: Vec<Value> = ids
        .iter()
        .map(|id| {
            json!({"type": "track", "anonymousId": format!("visitor-{client_id}"), "event": "Page Scrolled",
                   "properties": {"depth": 50}, "messageId": id, "context": {"library": {"name": "e2e"}}})
        })
        .collect();
    (
        ids,
        json!({"batch": events, "sentAt": chrono::Utc::now().to_rfc3339(), "writeKey": WRITE_KEY}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_event_survives_a_sigkill() {
    let daemon = Daemon::new(free_port());
    let mut child = daemon.spawn();
    wait_until_serving(&daemon, &mut child).await;

    // Sixteen clients send batches until the daemon dies; each remembers what was acknowledged.
    const CLIENTS: usize = 16;
    const BATCH: usize = 25;
    let acknowledged: Arc<Mutex<Vec<String>>> = Arc::default();
    let batches_acknowledged = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for client_id in 0..CLIENTS {
        let acknowledged = acknowledged.clone();
        let counter = batches_acknowledged.clone();
        let url = daemon.url("/v1/batch");
        tasks.push(tokio::spawn(async move {
            let client = client();
            for n in 0.. {
                let (ids, body) = batch(client_id, n, BATCH);
                let sent = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .json(&body)
                    .send()
                    .await;
                match sent {
                    Ok(response) if response.status().is_success() => {
                        let answer: Value = match response.json().await {
                            Ok(answer) => answer,
                            Err(_) => return,
                        };
                        assert_eq!(answer["accepted"], json!(BATCH), "{answer}");
                        acknowledged.lock().unwrap().extend(ids);
                        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    Ok(response) => panic!("refused: {}", response.status()),
                    // The daemon was killed: stop.
                    Err(_) => return,
                }
            }
        }));
    }
    // Kill it mid-stream, once a good number of batches were acknowledged.
    let start = Instant::now();
    while batches_acknowledged.load(std::sync::atomic::Ordering::SeqCst) < 200 {
        assert!(start.elapsed() < Duration::from_secs(120), "too slow");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    for task in tasks {
        task.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() >= 200 * BATCH);

    // Every acknowledged message is stored.
    let store = daemon.store().await;
    let stored: HashSet<String> = sqlx::query_scalar::<_, String>(
        "SELECT external_id FROM raw_records WHERE source = 'website' AND stream = 'track'",
    )
    .fetch_all(store.pool())
    .await
    .unwrap()
    .into_iter()
    .collect();
    let missing: Vec<&String> = acknowledged
        .iter()
        .filter(|id| !stored.contains(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events are not stored, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    store.close().await;

    // The restarted daemon serves again, keeps de-duplicating, and resolves what it collects.
    let mut child = daemon.spawn();
    wait_until_serving(&daemon, &mut child).await;
    let client = client();
    let (_, again) = batch(0, 0, BATCH);
    let answer: Value = client
        .post(daemon.url("/v1/batch"))
        .header("content-type", "application/json")
        .json(&again)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["duplicates"], json!(BATCH), "{answer}");
    let identify = json!({"userId": "user-1", "anonymousId": "visitor-0", "traits": {"email": "v0@example.com"},
                          "messageId": "after-restart"});
    let response = client
        .post(daemon.url("/v1/identify"))
        .basic_auth(WRITE_KEY, Some(""))
        .json(&identify)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    let store = daemon.store().await;
    let start = Instant::now();
    loop {
        let found = store
            .profiles_with_identifiers(&[("user_id".to_owned(), "user-1".to_owned())])
            .await
            .unwrap();
        if let Some((_, _, id)) = found.first() {
            let profile = store.profile(*id).await.unwrap().unwrap();
            if profile.document["event_count"].as_u64().unwrap_or_default() > 0 {
                break;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the daemon did not resolve the collected events into a profile"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ready = client
        .get(daemon.url("/readyz"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let metrics = client
        .get(daemon.url("/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("spindle_collector_duplicates_total{source=\"website\"}"));
    assert!(!metrics.contains(WRITE_KEY));

    // SIGTERM: a graceful stop.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let status = child.wait().unwrap();
    let log = daemon.log();
    assert!(status.success(), "{log}");
    assert!(log.contains("HTTP server stopped"), "{log}");
    assert!(!log.contains(WRITE_KEY) && !log.contains(TOKEN), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_port_fails_the_start_clearly() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let daemon = Daemon::new(taken.local_addr().unwrap().port());
    let status = daemon.spawn().wait().unwrap();
    let log = daemon.log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains(&format!(
            "cannot listen on 127.0.0.1:{} ([server] listen)",
            daemon.port
        )),
        "{log}"
    );
}
