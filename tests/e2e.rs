//! End-to-end tests of the `spindle` binary on the real embedded store: nothing of Spindle's own is faked.
//!
//! Each test copies the example `connectors.toml` and its data into a temporary folder and runs the built
//! binary there, then reads the resulting SQLite store through `spindle-store`.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use spindle_model::{JobId, JobStatus};
use spindle_store::{IdentityStore, OpenOptions, ProfileStore, SqlStore, StoreUrl};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A folder with a configuration, its data, and the store the binary creates there.
struct Workspace {
    dir: tempfile::TempDir,
    /// Where `spindle demo` should put its inbox (the example's destination points there).
    inbox: String,
}

impl Workspace {
    /// The example configuration and data, as shipped, with the webhook plugin beside them, the demo inbox
    /// and the daemon's HTTP server moved to free ports (so tests run side by side).
    fn example() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("tests/data")).unwrap();
        for file in [
            "tests/data/crm-export.csv",
            "tests/data/shop-customers.jsonl",
        ] {
            std::fs::copy(repo_root().join(file), dir.path().join(file)).unwrap();
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let inbox = format!("127.0.0.1:{port}");
        let config = std::fs::read_to_string(repo_root().join("connectors.toml")).unwrap();
        assert!(
            config.contains("127.0.0.1:8787"),
            "the example posts to the demo inbox"
        );
        assert!(config.contains("listen = \"127.0.0.1:8080\""));
        std::fs::write(
            dir.path().join("connectors.toml"),
            config
                .replace("127.0.0.1:8787", &inbox)
                .replace("listen = \"127.0.0.1:8080\"", "listen = \"127.0.0.1:0\""),
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("plugins")).unwrap();
        std::fs::copy(
            spindle_testkit::plugins::built("webhook"),
            dir.path().join("plugins/webhook.wasm"),
        )
        .unwrap();
        Self { dir, inbox }
    }

    /// `spindle demo` on this workspace: every source and sync once, the audience landing in the inbox.
    fn demo(&self) -> String {
        self.run_ok(&["demo", "--inbox", &self.inbox])
    }

    /// A configuration written by the test (with the daemon's HTTP server on a free port unless it says
    /// otherwise).
    fn with_config(config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = if config.contains("[server]") {
            config.to_owned()
        } else {
            format!("[server]\nlisten = \"127.0.0.1:0\"\n\n{config}")
        };
        std::fs::write(dir.path().join("connectors.toml"), config).unwrap();
        Self {
            dir,
            inbox: String::new(),
        }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_spindle"));
        command
            .current_dir(self.dir.path())
            .env_remove("SPINDLE_CONFIG")
            .env("SPINDLE_LOG", "info")
            .env("NO_COLOR", "1")
            .args(args)
            .stdin(Stdio::null());
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn run_ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "spindle {args:?} failed:\n{}",
            text(&output)
        );
        text(&output)
    }

    fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    async fn store(&self) -> SqlStore {
        let url = StoreUrl::parse("sqlite://spindle.db", self.dir.path(), None).unwrap();
        SqlStore::open(&url, &OpenOptions::default()).await.unwrap()
    }
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits until `condition` holds, polling; panics after `limit`.
async fn wait_for<F, Fut>(limit: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !condition().await {
        assert!(
            start.elapsed() < limit,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_the_example_from_files_to_an_audience_in_the_inbox() {
    let ws = Workspace::example();
    let output = ws.demo();
    assert!(output.contains("run finished"), "{output}");
    assert!(
        output.contains("records   12 (crm_export 8, shop_customers 4)"),
        "{output}"
    );
    assert!(output.contains("profiles  10"), "{output}");
    assert!(
        output.contains("segment   newsletter: 2 member(s)"),
        "{output}"
    );
    assert!(
        output.contains(
            "sync      newsletter-inbox (newsletter -> inbox): succeeded: added 2, updated 0, removed 0, delivered 2"
        ),
        "{output}"
    );
    assert!(
        output.contains("received 1 batch(es): 2 upsert(s), 0 removal(s)"),
        "{output}"
    );
    assert!(
        output.contains(r#""first_name":"Ada""#) && output.contains(r#""first_name":"Edsger""#),
        "{output}"
    );

    let store = ws.store().await;
    assert_eq!(store.count_records(Some("crm_export")).await.unwrap(), 8);
    assert_eq!(
        store.count_records(Some("shop_customers")).await.unwrap(),
        4
    );
    let quarantined = store.quarantined(Some("shop_customers"), 10).await.unwrap();
    assert_eq!(quarantined.len(), 1);
    assert!(
        quarantined[0]
            .record
            .location
            .ends_with("shop-customers.jsonl:4"),
        "{:?}",
        quarantined[0]
    );
    assert_eq!(
        quarantined[0].record.reason,
        "`email` (identifiers.email) is an array, expected a string"
    );
    let run = store
        .last_run(&JobId::source("crm_export"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (run.status, run.counts.read, run.counts.inserted),
        (JobStatus::Succeeded, 8, 8)
    );

    // Nothing changed: a second run reads nothing, stores nothing twice and sends nothing.
    let again = ws.demo();
    assert!(
        again.contains("received 0 batch(es): 0 upsert(s), 0 removal(s)"),
        "{again}"
    );
    let again = store
        .last_run(&JobId::source("crm_export"))
        .await
        .unwrap()
        .unwrap();
    assert_ne!(again.id, run.id);
    assert_eq!((again.status, again.counts.read), (JobStatus::Succeeded, 0));
    assert_eq!(store.count_records(None).await.unwrap(), 12);

    let listing = ws.run_ok(&["sources", "list"]);
    assert!(
        listing.contains("crm_export  kind=csv  schedule=0 */15 * * * * (Europe/Paris)"),
        "{listing}"
    );
    assert!(listing.contains("records:  8"), "{listing}");
}

fn big_csv_config(rows: usize, batch_size: usize) -> Workspace {
    let ws = Workspace::with_config(&format!(
        "[sources.big]\nkind = \"csv\"\npath = \"big.csv\"\nid = \"id\"\nbatch_size = {batch_size}\n\
         identifiers = {{ email = \"email\" }}\ntraits = {{ n = \"n\" }}\n"
    ));
    let mut data = String::from("id,email,n\n");
    for i in 0..rows {
        data.push_str(&format!("{i},person{i}@example.com,{i}\n"));
    }
    std::fs::write(ws.path("big.csv"), data).unwrap();
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_killed_mid_way_resumes_without_loss_or_duplicates() {
    const ROWS: usize = 6000;
    let ws = big_csv_config(ROWS, 5);
    // Create the store first so the test can watch it while the import runs.
    ws.run_ok(&["validate"]);
    let store = ws.store().await;
    let mut child = ws.spawn(&["run", "--once"]);
    wait_for(Duration::from_secs(60), || async {
        store.count_records(Some("big")).await.unwrap() > 0
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    let committed = store.count_records(Some("big")).await.unwrap();
    assert!(
        committed < ROWS as u64,
        "the import finished before the kill; the test needs more rows"
    );
    let cursor = store
        .cursor("big", "rows")
        .await
        .unwrap()
        .expect("a cursor was committed with the rows");
    let line = cursor.position["line"].as_u64().unwrap();
    assert_eq!(
        line - 1,
        committed,
        "the cursor covers exactly the committed rows (line count includes the header)"
    );

    let log = ws.run_ok(&["run", "--once"]);
    assert!(log.contains("marked interrupted"), "{log}");
    assert_eq!(store.count_records(Some("big")).await.unwrap(), ROWS as u64);
    let runs = store.runs(Some(&JobId::source("big")), 10).await.unwrap();
    assert_eq!(runs[1].status, JobStatus::Interrupted);
    let resumed = &runs[0];
    assert_eq!(resumed.status, JobStatus::Succeeded);
    assert_eq!(
        resumed.counts.read,
        ROWS as u64 - committed,
        "only rows after the last commit were read"
    );
    assert_eq!(resumed.counts.unchanged, 0, "no row was read twice");
    for id in [0, committed as usize, ROWS - 1] {
        let key = spindle_model::RecordKey {
            source: "big".into(),
            stream: "rows".into(),
            external_id: id.to_string(),
        };
        let record = store.record(&key).await.unwrap().unwrap();
        assert_eq!(
            record.record.identifiers[0].value,
            format!("person{id}@example.com")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_after_the_current_transaction_and_the_next_run_resumes() {
    const ROWS: usize = 6000;
    let ws = big_csv_config(ROWS, 5);
    let config = std::fs::read_to_string(ws.path("connectors.toml")).unwrap();
    std::fs::write(
        ws.path("connectors.toml"),
        format!("{config}schedule = \"* * * * * *\"\n"),
    )
    .unwrap();
    ws.run_ok(&["validate"]);
    let store = ws.store().await;
    let child = ws.spawn(&["run"]);
    wait_for(Duration::from_secs(60), || async {
        store.count_records(Some("big")).await.unwrap() > 0
    })
    .await;
    signal(&child, "TERM");
    let output = child.wait_with_output().unwrap();
    let log = text(&output);
    assert!(output.status.success(), "{log}");
    assert!(log.contains("shutting down"), "{log}");

    let run = store
        .last_run(&JobId::source("big"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.status, JobStatus::Cancelled, "{log}");
    let committed = store.count_records(Some("big")).await.unwrap();
    assert!(
        committed < ROWS as u64,
        "the import finished before the signal; the test needs more rows"
    );
    assert_eq!(
        run.counts.inserted, committed,
        "the run's counts match what it committed"
    );

    ws.run_ok(&["run", "--once"]);
    let resumed = store
        .last_run(&JobId::source("big"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (resumed.counts.read, resumed.counts.unchanged),
        (ROWS as u64 - committed, 0)
    );
    assert_eq!(store.count_records(Some("big")).await.unwrap(), ROWS as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_the_same_store_is_refused() {
    let ws = Workspace::example();
    ws.run_ok(&["validate"]);
    let store = ws.store().await;
    let first = ws.spawn(&["run"]);
    wait_for(Duration::from_secs(30), || async {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM job_runs")
            .fetch_one(store.pool())
            .await
            .is_ok()
            && ws.path("spindle.db.lock").exists()
    })
    .await;
    // The lock is taken before the store opens; give the daemon a moment to hold it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = ws.run(&["run", "--once"]);
    assert_eq!(second.status.code(), Some(1));
    assert!(
        text(&second).contains("another spindle process is using the store"),
        "{}",
        text(&second)
    );
    let backup = ws.run_ok(&["store", "backup", "while-running.db"]);
    assert!(
        backup.contains("backed up"),
        "a backup is safe while the daemon runs: {backup}"
    );
    let restore = ws.run(&["store", "restore", "while-running.db", "--force"]);
    assert!(!restore.status.success());
    assert!(
        text(&restore).contains("in use by a running spindle daemon"),
        "{}",
        text(&restore)
    );
    signal(&first, "TERM");
    let output = first.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", text(&output));
}

const SECRET_WRITE_KEY: &str = "wk_live_4b1d9f0e7c2a";
const SECRET_TOKEN: &str = "adm_tok_93e8a1c55d70";

fn assert_no_secret(output: &Output, what: &str) {
    let all = text(output);
    assert!(
        !all.contains(SECRET_WRITE_KEY),
        "{what} printed the write key:\n{all}"
    );
    assert!(
        !all.contains(SECRET_TOKEN),
        "{what} printed the admin token:\n{all}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_logs_or_errors() {
    let ws = Workspace::example();
    std::fs::write(ws.path("admin-token.txt"), format!("{SECRET_TOKEN}\n")).unwrap();
    let config = std::fs::read_to_string(ws.path("connectors.toml")).unwrap().replace(
        "# write_keys = { website = \"${env:SPINDLE_WRITE_KEY}\" }",
        "write_keys = { website = \"${env:SPINDLE_WRITE_KEY}\" }\nadmin_tokens = [{ name = \"ops\", role = \"admin\", token = \"${file:admin-token.txt}\" }]",
    );
    assert!(config.contains("admin_tokens"));
    std::fs::write(ws.path("connectors.toml"), &config).unwrap();

    for format in ["text", "json"] {
        for args in [
            &["demo", "--inbox", &ws.inbox][..],
            &["validate", "--check-connections"],
            &["sources", "list"],
        ] {
            let output = ws
                .command(args)
                .env("SPINDLE_WRITE_KEY", SECRET_WRITE_KEY)
                .env("SPINDLE_LOG", "trace")
                .env("SPINDLE_LOG_FORMAT", format)
                .output()
                .unwrap();
            assert!(output.status.success(), "{args:?}: {}", text(&output));
            assert_no_secret(&output, &format!("{args:?} with {format} logs"));
        }
    }

    // A broken file next to resolved secrets: the errors name places and variables, never values.
    std::fs::write(
        ws.path("connectors.toml"),
        format!("{config}\n[sources.crm_export2]\nkind = \"csv\"\n"),
    )
    .unwrap();
    let output = ws
        .command(&["validate"])
        .env("SPINDLE_WRITE_KEY", SECRET_WRITE_KEY)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert_no_secret(&output, "validate with errors");

    // A secret in a store URL: the password is never shown, even when the connection fails.
    let ws = Workspace::with_config(
        "[store]\nurl = \"postgres://spindle:${env:SPINDLE_PG_PASSWORD}@127.0.0.1:1/nothing\"\n",
    );
    let output = ws
        .command(&["validate", "--check-connections"])
        .env("SPINDLE_PG_PASSWORD", SECRET_TOKEN)
        .env("SPINDLE_LOG", "trace")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains("FAIL  store postgres://spindle@127.0.0.1:1/nothing"),
        "{}",
        text(&output)
    );
    assert_no_secret(&output, "a failed store probe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_and_restore_round_trip() {
    let ws = Workspace::example();
    ws.demo();
    let out = ws.run_ok(&["store", "backup", "backup-1.db"]);
    assert!(out.contains("backed up"), "{out}");
    let refused = ws.run(&["store", "backup", "backup-1.db"]);
    assert!(
        text(&refused).contains("already exists"),
        "{}",
        text(&refused)
    );
    let actions: Vec<String> = ws
        .store()
        .await
        .audit_log(0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.entry.action)
        .collect();
    assert_eq!(
        actions,
        ["store.backup", "store.backup", "store.backup_failed"]
    );

    // Change the store after the backup.
    let mut csv = std::fs::read_to_string(ws.path("tests/data/crm-export.csv")).unwrap();
    csv.push_str("1009,new@example.com,,New,Person,,FR\n");
    std::fs::write(ws.path("tests/data/crm-export.csv"), csv).unwrap();
    ws.run_ok(&["run", "--once"]);
    assert_eq!(ws.store().await.count_records(None).await.unwrap(), 13);

    let refused = ws.run(&["store", "restore", "backup-1.db"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused).contains("pass --force to replace it"),
        "{}",
        text(&refused)
    );
    let garbage = ws.path("garbage.db");
    std::fs::write(&garbage, b"not a database").unwrap();
    assert!(
        !ws.run(&["store", "restore", "garbage.db", "--force"])
            .status
            .success()
    );

    ws.run_ok(&["store", "restore", "backup-1.db", "--force"]);
    let store = ws.store().await;
    assert_eq!(
        store.count_records(None).await.unwrap(),
        12,
        "the store is as it was at the backup"
    );
    let actions: Vec<String> = store
        .audit_log(0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.entry.action)
        .collect();
    assert_eq!(
        actions,
        ["store.backup", "store.restore"],
        "the backup holds its own entry; the restore follows"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_resync_reads_everything_again_and_stores_nothing_twice() {
    let ws = Workspace::example();
    ws.demo();
    let out = ws.run_ok(&["sources", "sync", "crm_export", "--full"]);
    assert!(
        out.contains(
            "crm_export: succeeded — read 8, inserted 0, updated 0, unchanged 8, quarantined 0"
        ),
        "{out}"
    );
    let store = ws.store().await;
    assert_eq!(store.count_records(Some("crm_export")).await.unwrap(), 8);
    let audit = store.audit_log(0, 10).await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(
        (
            audit[0].entry.action.as_str(),
            audit[0].entry.target.as_str()
        ),
        ("source.full_resync", "crm_export")
    );

    let unknown = ws.run(&["sources", "sync", "crm"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        text(&unknown).contains("there is no source `crm`"),
        "{}",
        text(&unknown)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_probes_connections_read_only() {
    let ws = Workspace::example();
    let out = ws.run_ok(&["validate", "--check-connections"]);
    assert!(out.contains("ok    source crm_export (csv)"), "{out}");
    assert!(out.contains("does not exist yet"), "{out}");
    assert!(!ws.path("spindle.db").exists(), "a probe creates nothing");

    std::fs::remove_file(ws.path("tests/data/shop-customers.jsonl")).unwrap();
    let output = ws.run(&["validate", "--check-connections"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output).contains("FAIL  source shop_customers (jsonl): cannot read"),
        "{}",
        text(&output)
    );
}

#[test]
fn config_schema_is_a_json_schema_of_every_section() {
    let ws = Workspace::with_config("");
    let out = ws.run(&["config", "schema"]);
    assert!(out.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        schema["$schema"]
            .as_str()
            .unwrap()
            .contains("json-schema.org")
    );
    for section in [
        "store",
        "server",
        "identity",
        "sources",
        "destinations",
        "segments",
        "syncs",
    ] {
        assert!(
            schema["properties"].get(section).is_some(),
            "schema lacks {section}"
        );
    }
}

#[test]
fn version_and_help_answer() {
    let ws = Workspace::with_config("");
    let out = ws.run_ok(&["--version"]);
    assert!(
        out.starts_with(&format!("spindle {}", env!("CARGO_PKG_VERSION"))),
        "{out}"
    );
}

/// Kills a real `spindle run --once` while it pulls `source`, restarts it, and checks that every record
/// arrives once and that the restart reads only what the killed run had not committed.
async fn kill_mid_sync_and_resume(
    ws: &Workspace,
    source: &str,
    total: u64,
    envs: &[(&str, String)],
) {
    let store = ws.store().await;
    let run_once = || {
        let mut command = ws.command(&["run", "--once"]);
        command.envs(envs.iter().map(|(name, value)| (*name, value.as_str())));
        command
    };
    let mut child = run_once()
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(60), || async {
        store.count_records(Some(source)).await.unwrap() > 0
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    let committed = store.count_records(Some(source)).await.unwrap();
    assert!(
        committed < total,
        "the sync finished before the kill; the test needs more records"
    );

    let output = run_once().output().unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(
        store.count_records(Some(source)).await.unwrap(),
        total,
        "nothing lost"
    );
    let resumed = store
        .last_run(&JobId::source(source))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resumed.status, JobStatus::Succeeded);
    assert_eq!(
        resumed.counts.inserted,
        total - committed,
        "the restart stored exactly what was missing"
    );
    assert_eq!(resumed.counts.updated, 0);
    assert!(
        resumed.counts.unchanged <= 250,
        "at most the page in flight was read again, not the whole source: {:?}",
        resumed.counts
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hubspot_sync_killed_mid_way_resumes_without_loss_or_duplicates() {
    use spindle_testkit::hubspot::{FakeHubspot, FakeHubspotConfig};
    let fake = FakeHubspot::start(FakeHubspotConfig {
        rate_limit_per_10s: None,
        search_rate_per_second: None,
        ..FakeHubspotConfig::default()
    })
    .await;
    fake.seed_contacts(8_000, 11);
    let ws = Workspace::with_config(&format!(
        "[sources.crm]\nkind = \"hubspot\"\nbase_url = \"{}\"\ntoken = \"${{env:HUBSPOT_TOKEN}}\"\n\
         objects = [\"contacts\"]\nrequests_per_10s = 100000\n",
        fake.base_url()
    ));
    kill_mid_sync_and_resume(
        &ws,
        "crm",
        8_000,
        &[("HUBSPOT_TOKEN", "hubspot-test-token".to_owned())],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shopify_sync_killed_mid_way_resumes_without_loss_or_duplicates() {
    use spindle_testkit::shopify::{FakeShopify, FakeShopifyConfig};
    let fake = FakeShopify::start(FakeShopifyConfig {
        leak_per_second: None,
        ..FakeShopifyConfig::default()
    })
    .await;
    fake.seed_customers(6_000, 12);
    fake.seed_orders(6_000, 13);
    let ws = Workspace::with_config(&format!(
        "[sources.shop]\nkind = \"shopify\"\nbase_url = \"{}\"\naccess_token = \"${{file:shopify-token.txt}}\"\n\
         requests_per_second = 10000\nbucket_size = 10000\n",
        fake.base_url()
    ));
    std::fs::write(ws.path("shopify-token.txt"), "shpat_test\n").unwrap();
    kill_mid_sync_and_resume(&ws, "shop", 12_000, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_are_resolved_after_each_run_and_explained() {
    let ws = Workspace::example();
    ws.demo();
    let store = ws.store().await;
    let run = store
        .last_run(&JobId::identity())
        .await
        .unwrap()
        .expect("an identity run follows the sources");
    assert_eq!(run.status, JobStatus::Succeeded);

    let show = ws.run_ok(&["profiles", "show", "  Ada.Lovelace@Example.com "]);
    assert!(
        show.contains("2 records from crm_export, shop_customers"),
        "{show}"
    );
    assert!(
        show.contains("email                      granted"),
        "{show}"
    );
    let by_phone = ws.run_ok(&["profiles", "show", "+44 20 7946 0958"]);
    assert_eq!(by_phone, show, "the same customer by e-mail or by phone");
    // The E.164 form `show` prints names the customer too: digits after a `+` are not an id.
    assert!(show.contains("+442079460958"), "{show}");
    let by_e164 = ws.run_ok(&["profiles", "show", "+442079460958"]);
    assert_eq!(by_e164, show, "the same customer by the phone as printed");
    let by_vendor_id = ws.run_ok(&["profiles", "explain", "crm_export_id:1002"]);
    assert!(
        by_vendor_id.contains(
            "crm_export/rows/1002 ── email grace.hopper@example.com ── shop_customers/rows/c_2"
        ),
        "{by_vendor_id}"
    );
    let search = ws.run_ok(&["profiles", "search", "lovelace"]);
    assert_eq!(search.lines().count(), 1, "{search}");
    let cut = ws.run_ok(&["profiles", "search", "example", "--limit", "2"]);
    assert_eq!(cut.lines().count(), 3, "{cut}");
    assert!(
        cut.contains("more profiles match: the first 2 are shown"),
        "{cut}"
    );
    let missing = ws.run(&["profiles", "show", "nobody@example.com"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        text(&missing).contains("no profile holds email `nobody@example.com`"),
        "{}",
        text(&missing)
    );

    let profiles_before = store.count_profiles().await.unwrap();
    let rebuilt = ws.run_ok(&["identity", "rebuild"]);
    assert!(rebuilt.contains(&format!("rebuilt {profiles_before} profile(s) from 12 record(s): {profiles_before} unchanged, 0 changed, 0 split, 0 merged, 0 new")), "{rebuilt}");

    // Linking by e-mail only: Ada's CRM and shop records still share an address, so nothing splits;
    // dropping e-mail as well splits every cross-source customer.
    let config = std::fs::read_to_string(ws.path("connectors.toml")).unwrap();
    let narrowed = config
        .replace(
            "link_on = [\"email\", \"phone\", \"user_id\", \"anonymous_id\", \"crm_export_id\"]",
            "link_on = [\"crm_export_id\"]",
        )
        .replace("limits = { user_id = 1, email = 5 }\n", "")
        .replace("priority = [\"user_id\", \"email\", \"phone\"]\n", "");
    assert_ne!(narrowed, config);
    std::fs::write(ws.path("connectors.toml"), narrowed).unwrap();
    let split = ws.run_ok(&["identity", "rebuild"]);
    assert!(split.contains("split"), "{split}");
    assert!(
        !split.contains(" 0 split"),
        "cross-source customers split without e-mail links: {split}"
    );
    let audit: Vec<String> = store
        .audit_log(0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.entry.action)
        .collect();
    assert_eq!(audit, ["identity.rebuild", "identity.rebuild"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_are_inspected_tested_against_recordings_and_checked_by_validate() {
    let mailchimp = spindle_testkit::plugins::built("mailchimp");
    let webhook = spindle_testkit::plugins::built("webhook");
    let ws = Workspace::with_config("");

    let inspected = ws.run_ok(&["plugin", "inspect", webhook.to_str().unwrap()]);
    assert!(
        inspected.contains("world: spindle:destination@0.1.0"),
        "{inspected}"
    );
    assert!(
        inspected.contains("sync modes: upsert, mirror, add_only"),
        "{inspected}"
    );
    assert!(
        inspected.contains("exports: describe, validate-config, sync-batch, delete-subjects"),
        "{inspected}"
    );

    let fixture = repo_root().join("plugins/mailchimp/fixtures/upsert-two");
    let tested = ws.run_ok(&[
        "plugin",
        "test",
        mailchimp.to_str().unwrap(),
        "--fixture",
        fixture.to_str().unwrap(),
    ]);
    assert!(
        tested.contains("> PUT /3.0/lists/a1b2c3/members/3e3417d7ef77d5932a6734b916515ed5"),
        "{tested}"
    );
    assert!(tested.contains("p1: Outcome::Delivered"), "{tested}");
    assert!(
        tested.contains("p2: Outcome::Rejected(\"400 grace@example.com looks fake"),
        "{tested}"
    );
    assert!(
        !tested.contains("DIFFERS") && !tested.contains("not used"),
        "{tested}"
    );

    let config = |url: &str| {
        format!(
            "[destinations.hook]\nplugin = \"{}\"\nallow_hosts = [\"https://hooks.example.com\"]\nconfig = {{ url = \"{url}\" }}\n\
             secrets = {{ signing_key = \"${{env:SPINDLE_TEST_SIGNING_KEY}}\" }}\n",
            webhook.display()
        )
    };
    std::fs::write(
        ws.path("connectors.toml"),
        config("https://hooks.example.com/in"),
    )
    .unwrap();
    let ok = ws
        .command(&["validate"])
        .env("SPINDLE_TEST_SIGNING_KEY", "k")
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(
        text(&ok).contains("ok    destination hook"),
        "{}",
        text(&ok)
    );
    std::fs::write(
        ws.path("connectors.toml"),
        config("ftp://hooks.example.com/in"),
    )
    .unwrap();
    let refused = ws
        .command(&["validate"])
        .env("SPINDLE_TEST_SIGNING_KEY", "k")
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(text(&refused).contains("plugin"), "{}", text(&refused));
    assert!(
        text(&refused).contains("refuses its config: `url` must be an http(s) URL"),
        "{}",
        text(&refused)
    );
}

#[test]
fn plugin_new_adds_a_plugin_from_the_template() {
    let ws = Workspace::with_config("");
    std::fs::create_dir_all(ws.path("plugins")).unwrap();
    std::fs::write(
        ws.path("plugins/Cargo.toml"),
        "[workspace]\nmembers = [\"sdk\"]\n",
    )
    .unwrap();
    let out = ws.run_ok(&["plugin", "new", "acme-mail"]);
    assert!(out.contains("created plugins/acme-mail"), "{out}");
    let manifest = std::fs::read_to_string(ws.path("plugins/Cargo.toml")).unwrap();
    assert!(
        manifest.contains("members = [\"acme-mail\", \"sdk\"]"),
        "{manifest}"
    );
    let lib = std::fs::read_to_string(ws.path("plugins/acme-mail/src/lib.rs")).unwrap();
    assert!(lib.contains("Info::new(\"acme-mail\""), "{lib}");
    assert!(lib.contains("spindle_plugin_sdk::export!(Plugin);"));
    let again = ws.run(&["plugin", "new", "acme-mail"]);
    assert!(text(&again).contains("already exists"), "{}", text(&again));
    let bad = ws.run(&["plugin", "new", "Acme"]);
    assert!(
        text(&bad).contains("is not a plugin name"),
        "{}",
        text(&bad)
    );
}

/// A local webhook receiver: records each delivery's arrival time and body.
async fn webhook_receiver() -> (u16, Deliveries) {
    slow_webhook_receiver(Duration::ZERO).await
}

/// What a receiver got: arrival time and body of each delivery.
type Deliveries = std::sync::Arc<std::sync::Mutex<Vec<(Instant, serde_json::Value)>>>;

/// A webhook receiver that takes `delay` to answer each delivery (recorded when it arrives).
async fn slow_webhook_receiver(delay: Duration) -> (u16, Deliveries) {
    let received: Deliveries = Default::default();
    let log = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let log = log.clone();
            async move {
                log.lock().unwrap().push((
                    Instant::now(),
                    serde_json::from_slice(&body).unwrap_or_default(),
                ));
                tokio::time::sleep(delay).await;
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, received)
}

fn sync_config(webhook: &Path, good_port: u16, hanging_port: u16) -> String {
    format!(
        r#"
[sources.people]
kind = "csv"
path = "people.csv"
id = "id"
identifiers = {{ email = "email" }}
traits = {{ first_name = "first_name", tier = "tier" }}

[segments.gold]
where = 'tier = "gold"'

[destinations.hook]
plugin = "{plugin}"
allow_hosts = ["http://127.0.0.1:{good_port}"]
config = {{ url = "http://127.0.0.1:{good_port}/hook", signing_secret = "" }}

[destinations.stuck]
plugin = "{plugin}"
allow_hosts = ["http://127.0.0.1:{hanging_port}"]
config = {{ url = "http://127.0.0.1:{hanging_port}/hook" }}
secrets = {{ signing_key = "k" }}
limits = {{ timeout_secs = 4 }}

[syncs.gold-hook]
segment = "gold"
destination = "hook"
mode = "mirror"
fields = {{ name = "first_name", email = "email" }}

[syncs.gold-stuck]
segment = "gold"
destination = "stuck"
mode = "upsert"
fields = {{ name = "first_name" }}
"#,
        plugin = webhook.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audiences_flow_from_a_file_to_a_plugin_and_a_stuck_destination_delays_no_other() {
    let webhook = spindle_testkit::plugins::built("webhook");
    let (good_port, received) = webhook_receiver().await;
    // A destination that accepts connections and never answers.
    let hanging = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hanging_port = hanging.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = hanging.accept().await {
            held.push(socket);
        }
    });
    let ws = Workspace::with_config(&sync_config(&webhook, good_port, hanging_port));
    std::fs::write(
        ws.path("people.csv"),
        "id,email,first_name,tier\n1,ada@x.io,Ada,gold\n2,bob@x.io,Bob,silver\n3,cy@x.io,Cy,gold\n",
    )
    .unwrap();

    let dry = ws.run_ok(&["syncs", "run", "gold-hook", "--dry-run"]);
    assert!(dry.contains("nothing was sent (dry run)"), "{dry}");
    assert!(
        received.lock().unwrap().is_empty(),
        "a dry run sends nothing"
    );

    // Compiles the plugin into the cache beside the configuration, so the run below measures syncing.
    ws.run_ok(&["validate"]);
    let started = Instant::now();
    let output = ws.run(&["run", "--once"]);
    let log = text(&output);
    assert_eq!(
        output.status.code(),
        Some(1),
        "the stuck destination fails its run: {log}"
    );
    let deliveries = received.lock().unwrap().clone();
    assert_eq!(deliveries.len(), 1, "{log}");
    let (arrived, body) = &deliveries[0];
    assert!(
        arrived.duration_since(started) < Duration::from_secs(3),
        "the healthy destination was not held up by the stuck one"
    );
    let mut names: Vec<&str> = body["upserts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["fields"]["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["Ada", "Cy"]);
    assert!(
        log.contains("ran past its wall-time limit")
            || log.contains("did not finish `sync-batch` within 4s"),
        "{log}"
    );

    let listed = ws.run_ok(&["syncs", "list"]);
    assert!(
        listed.contains("gold-hook  segment=gold  destination=hook"),
        "{listed}"
    );
    let history = ws.run_ok(&["syncs", "history", "gold-hook"]);
    assert!(
        history
            .lines()
            .nth(1)
            .is_some_and(|l| l.contains("succeeded") && l.contains(" 2 ")),
        "{history}"
    );

    // Bob joins the segment, Ada leaves: the next run sends exactly that.
    std::fs::write(
        ws.path("people.csv"),
        "id,email,first_name,tier\n1,ada@x.io,Ada,silver\n2,bob@x.io,Bob,gold\n3,cy@x.io,Cy,gold\n",
    )
    .unwrap();
    let again = ws.run_ok(&["syncs", "run", "gold-hook"]);
    assert!(
        again.contains("added 0") || again.contains("added 1"),
        "{again}"
    );
    ws.run_ok(&["sources", "sync", "people"]);
    let again = ws.run_ok(&["syncs", "run", "gold-hook"]);
    assert!(again.contains("added 1, updated 0, removed 1"), "{again}");
    let last = received.lock().unwrap().last().cloned().unwrap().1;
    assert_eq!(last["upserts"][0]["fields"]["name"], "Bob");
    assert_eq!(last["removals"].as_array().unwrap().len(), 1);
    let preview = ws.run_ok(&["segments", "preview", "gold"]);
    assert!(preview.starts_with("2 profile(s) match"), "{preview}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_killed_at_twenty_points_ends_with_the_destination_equal_to_the_segment() {
    const PEOPLE: usize = 120;
    const BATCH: usize = 4;
    let webhook = spindle_testkit::plugins::built("webhook");
    let (port, received) = slow_webhook_receiver(Duration::from_millis(25)).await;
    let config = format!(
        "[sources.people]\nkind = \"csv\"\npath = \"people.csv\"\nid = \"id\"\nidentifiers = {{ email = \"email\" }}\n\
         traits = {{ tier = \"tier\" }}\n\n[segments.gold]\nwhere = 'tier = \"gold\"'\n\n[destinations.hook]\nplugin = \"{}\"\n\
         allow_hosts = [\"http://127.0.0.1:{port}\"]\nbatch_size = {BATCH}\nconfig = {{ url = \"http://127.0.0.1:{port}/hook\", signing_secret = \"\" }}\n\n\
         [syncs.gold-hook]\nsegment = \"gold\"\ndestination = \"hook\"\nmode = \"mirror\"\nfields = {{ email = \"email\" }}\n",
        webhook.display()
    );
    let ws = Workspace::with_config(&config);
    let mut csv = String::from("id,email,tier\n");
    for i in 0..PEOPLE {
        csv.push_str(&format!(
            "{i},p{i}@x.io,{}\n",
            if i % 6 == 0 { "silver" } else { "gold" }
        ));
    }
    std::fs::write(ws.path("people.csv"), csv).unwrap();
    ws.run_ok(&["sources", "sync", "people"]);
    ws.run_ok(&["validate"]); // compiles the plugin into the cache once

    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    for _ in 0..20 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let kill_after = Duration::from_millis(100 + state % 900);
        let mut child = ws
            .command(&["syncs", "run", "gold-hook"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        tokio::time::sleep(kill_after).await;
        let _ = child.kill();
        child.wait().unwrap();
    }
    let finish = ws.run(&["syncs", "run", "gold-hook"]);
    assert!(finish.status.success(), "{}", text(&finish));

    let deliveries = received.lock().unwrap().clone();
    let mut sent: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for (_, body) in &deliveries {
        for upsert in body["upserts"].as_array().unwrap() {
            *sent
                .entry(upsert["fields"]["email"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
    }
    let gold: std::collections::BTreeSet<String> = (0..PEOPLE)
        .filter(|i| i % 6 != 0)
        .map(|i| format!("p{i}@x.io"))
        .collect();
    let reached: std::collections::BTreeSet<String> = sent.keys().cloned().collect();
    assert_eq!(reached, gold, "the destination holds exactly the segment");
    let resent: usize = sent.values().map(|n| n - 1).sum();
    assert!(
        resent <= 21 * BATCH,
        "only batches in flight at a kill were sent again: {resent} re-sends"
    );
    let store = ws.store().await;
    let delivered = spindle_store::SyncStore::delivered(&store, "gold-hook")
        .await
        .unwrap();
    assert_eq!(delivered.len(), gold.len());
    assert_eq!(
        spindle_store::SyncStore::pending(&store, "gold-hook")
            .await
            .unwrap(),
        0
    );
}
