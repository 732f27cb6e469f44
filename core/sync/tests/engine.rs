//! Audience syncs against the fake Mailchimp, through the real plugin host and the real Mailchimp plugin,
//! on a real SQLite store.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use serde_json::json;
use spindle_config::secret::ProcessSecrets;
use spindle_identity::IdentityEngine;
use spindle_model::{Identifier, RawRecord};
use spindle_plugin_host::PluginHost;
use spindle_store::{ProfileStore, SourceBatch, SqlStore, SyncStore};
use spindle_sync::engine::{plan, run_sync};
use spindle_sync::membership::{Segments, evaluate_all};
use spindle_testkit::Fault;
use spindle_testkit::mailchimp::FakeMailchimp;
use spindle_testkit::plugins::built;

const KEY: &str = "fedcba9876543210fedcba9876543210-us21";

fn config(fake: &FakeMailchimp, fields: &str, mode: &str) -> spindle_config::Config {
    let text = format!(
        r#"
[identity]
link_on = ["email"]

[segments.gold]
where = 'tier = "gold"'

[destinations.newsletter]
plugin = "{plugin}"
allow_hosts = ["http://127.0.0.1:{port}"]
config = {{ base_url = "{root}", list_id = "a1b2c3" }}
secrets = {{ api_key = "{KEY}" }}

[syncs.gold-newsletter]
segment = "gold"
destination = "newsletter"
mode = "{mode}"
fields = {{ {fields} }}
"#,
        plugin = built("mailchimp").display(),
        port = fake.port(),
        root = fake.api_root(),
    );
    spindle_config::load_str(
        &text,
        Path::new("connectors.toml"),
        &ProcessSecrets::new("."),
    )
    .unwrap()
}

fn person(id: &str, email: &str, first: &str, tier: &str) -> RawRecord {
    RawRecord {
        stream: "contacts".into(),
        external_id: id.into(),
        version: chrono::Utc::now().timestamp_micros(),
        updated_at: None,
        deleted: false,
        identifiers: vec![Identifier::new("email", email)],
        traits: [
            ("first_name".to_owned(), json!(first)),
            ("tier".to_owned(), json!(tier)),
        ]
        .into_iter()
        .collect(),
        events: vec![],
    }
}

struct World {
    store: SqlStore,
    _guard: spindle_testkit::store::TestStore,
    fake: FakeMailchimp,
    host: PluginHost,
}

impl World {
    async fn new() -> Self {
        let guard = spindle_testkit::store::sqlite().await;
        let store = guard.store.clone();
        let fake = FakeMailchimp::start(KEY, &[("a1b2c3", &["FNAME", "LNAME"])]).await;
        let cache =
            spindle_testkit::plugins::repository_root().join("target/wasm-plugins/compiled");
        Self {
            store,
            _guard: guard,
            fake,
            host: PluginHost::new(Some(cache)).unwrap(),
        }
    }

    async fn put(&self, records: Vec<RawRecord>, config: &spindle_config::Config) {
        self.store
            .apply_source_batch(
                "crm",
                SourceBatch {
                    records,
                    ..SourceBatch::default()
                },
            )
            .await
            .unwrap();
        IdentityEngine::new(&self.store, &config.identity, &config.profiles)
            .unwrap()
            .resolve_pending()
            .await
            .unwrap();
        evaluate_all(
            &self.store,
            &Segments::compile(config).unwrap(),
            &spindle_sync::live::SharedProfiles::new(),
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    }

    async fn sync(&self, config: &spindle_config::Config) -> spindle_sync::engine::SyncReport {
        let sync = &config.syncs["gold-newsletter"];
        let destination = &config.destinations["newsletter"];
        let plugin = self.host.load(&built("mailchimp")).unwrap();
        run_sync(&self.store, &self.host, &plugin, sync, destination, 100)
            .await
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_sync_adds_updates_and_removes_exactly_what_changed() {
    let world = World::new().await;
    let config = config(&world.fake, r#"FNAME = "first_name""#, "mirror");
    world
        .put(
            vec![
                person("1", "ada@x.io", "Ada", "gold"),
                person("2", "bob@x.io", "Bob", "gold"),
                person("3", "cy@x.io", "Cy", "silver"),
            ],
            &config,
        )
        .await;

    let first = world.sync(&config).await;
    assert_eq!(
        (
            first.added,
            first.updated,
            first.removed,
            first.delivered,
            first.pending
        ),
        (2, 0, 0, 2, 0)
    );
    assert_eq!(world.fake.members("a1b2c3").len(), 2);
    assert_eq!(
        world
            .fake
            .member("a1b2c3", "ada@x.io")
            .unwrap()
            .merge_fields["FNAME"],
        "Ada"
    );

    let again = world.sync(&config).await;
    assert_eq!(
        (again.added, again.updated, again.removed, again.delivered),
        (0, 0, 0, 0),
        "nothing changed, nothing sent"
    );

    world
        .put(vec![person("1", "ada@x.io", "Augusta", "gold")], &config)
        .await;
    let changed = world.sync(&config).await;
    assert_eq!(
        (changed.added, changed.updated, changed.delivered),
        (0, 1, 1),
        "one trait change sends one update"
    );
    assert_eq!(
        world
            .fake
            .member("a1b2c3", "ada@x.io")
            .unwrap()
            .merge_fields["FNAME"],
        "Augusta"
    );

    world
        .put(vec![person("2", "bob@x.io", "Bob", "silver")], &config)
        .await;
    let left = world.sync(&config).await;
    assert_eq!((left.removed, left.delivered), (1, 1));
    assert_eq!(
        world.fake.member("a1b2c3", "bob@x.io").unwrap().status,
        "archived",
        "mirror removes who left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upsert_mode_keeps_members_who_left_and_dry_runs_send_nothing() {
    let world = World::new().await;
    let config = config(&world.fake, r#"FNAME = "first_name""#, "upsert");
    world
        .put(vec![person("1", "ada@x.io", "Ada", "gold")], &config)
        .await;
    let (_, planned) = plan(&world.store, &config.syncs["gold-newsletter"])
        .await
        .unwrap();
    assert_eq!(planned.len(), 1);
    assert_eq!(planned[0].action, "add");
    assert!(world.fake.requests().is_empty(), "planning sends nothing");
    world.sync(&config).await;
    world
        .put(vec![person("1", "ada@x.io", "Ada", "silver")], &config)
        .await;
    let report = world.sync(&config).await;
    assert_eq!(report.removed, 0);
    assert_eq!(
        world.fake.member("a1b2c3", "ada@x.io").unwrap().status,
        "subscribed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_and_a_5xx_burst_end_with_everyone_delivered_once() {
    let world = World::new().await;
    let config = config(&world.fake, r#"FNAME = "first_name""#, "mirror");
    world
        .put(
            (0..5)
                .map(|i| person(&i.to_string(), &format!("p{i}@x.io"), "P", "gold"))
                .collect(),
            &config,
        )
        .await;
    world.fake.inject(Fault::RateLimited {
        count: 3,
        retry_after: None,
    });
    world.fake.inject(Fault::ServerErrors { count: 3 });
    let report = world.sync(&config).await;
    assert_eq!(
        (report.delivered, report.pending, report.rejected),
        (5, 0, 0),
        "{report:?}"
    );
    assert!(report.retried >= 1);
    assert_eq!(world.fake.members("a1b2c3").len(), 5);
    let puts = world
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT" && r.status == 200)
        .count();
    assert_eq!(puts, 5, "each member accepted exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_record_goes_to_the_dead_letters_and_replays_after_a_fix() {
    let world = World::new().await;
    let broken = config(
        &world.fake,
        r#"FNAME = "first_name", NICKNAME = "first_name""#,
        "mirror",
    );
    world
        .put(vec![person("1", "ada@x.io", "Ada", "gold")], &broken)
        .await;
    let report = world.sync(&broken).await;
    assert_eq!((report.rejected, report.delivered), (1, 0));
    let letters = world.store.dead_letters("gold-newsletter").await.unwrap();
    assert_eq!(letters.len(), 1);
    assert!(
        letters[0].reason.contains("merge_fields.NICKNAME"),
        "{}",
        letters[0].reason
    );
    assert_eq!(
        world.sync(&broken).await.added + world.sync(&broken).await.updated,
        0,
        "a refused payload is not resent unchanged"
    );

    assert_eq!(
        world
            .store
            .replay_dead_letters("gold-newsletter", chrono::Utc::now())
            .await
            .unwrap(),
        1
    );
    assert!(
        world
            .store
            .dead_letters("gold-newsletter")
            .await
            .unwrap()
            .is_empty()
    );
    let fixed = config(&world.fake, r#"FNAME = "first_name""#, "mirror");
    let report = world.sync(&fixed).await;
    assert_eq!(
        (report.added, report.delivered),
        (1, 1),
        "replayed with the fixed mapping, it is delivered"
    );
    assert_eq!(
        world
            .fake
            .member("a1b2c3", "ada@x.io")
            .unwrap()
            .merge_fields["FNAME"],
        "Ada"
    );
}
