//! The `mailchimp` plugin through the real host against the fake Mailchimp API.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use secrecy::SecretString;
use spindle_config::{AllowedHost, PluginLimits};
use spindle_plugin_host::{
    Batch, BatchError, CallLimits, Identifier, Outcome, PluginHost, Removal, SyncMode, Upsert,
};
use spindle_testkit::Fault;
use spindle_testkit::mailchimp::{FakeMailchimp, subscriber_hash};
use spindle_testkit::plugins::built;

const KEY: &str = "0123456789abcdef0123456789abcdef-us21";

fn setup(fake: &FakeMailchimp, key: &str) -> CallLimits {
    CallLimits {
        limits: PluginLimits {
            memory_bytes: 64 << 20,
            timeout: Duration::from_secs(20),
            fuel: None,
        },
        allow_hosts: vec![AllowedHost {
            scheme: Some("http".into()),
            host: "127.0.0.1".into(),
            port: Some(fake.port()),
        }],
        secrets: BTreeMap::from([("api_key".to_owned(), SecretString::from(key))]),
    }
}

fn person(i: usize, fields: serde_json::Value) -> Upsert {
    Upsert {
        id: format!("p{i}"),
        identifiers: vec![Identifier {
            kind: "email".into(),
            value: format!("person{i}@example.com"),
        }],
        fields: fields.to_string(),
    }
}

fn batch(
    fake: &FakeMailchimp,
    upserts: Vec<Upsert>,
    removals: Vec<Removal>,
    extra: serde_json::Value,
) -> Batch {
    let mut config =
        serde_json::json!({"base_url": fake.api_root(), "list_id": "a1b2c3", "tags": ["spindle"]});
    if let (Some(map), Some(more)) = (config.as_object_mut(), extra.as_object()) {
        map.extend(more.clone());
    }
    Batch {
        mode: SyncMode::Mirror,
        config: config.to_string(),
        upserts,
        removals,
    }
}

async fn host_and_plugin() -> (PluginHost, spindle_plugin_host::LoadedPlugin) {
    let cache = spindle_testkit::plugins::repository_root().join("target/wasm-plugins/compiled");
    let host = PluginHost::new(Some(cache)).unwrap();
    let plugin = host.load(&built("mailchimp")).unwrap();
    (host, plugin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_upserted_tagged_and_archived() {
    let fake = FakeMailchimp::start(KEY, &[("a1b2c3", &["FNAME", "LNAME"])]).await;
    let (host, plugin) = host_and_plugin().await;
    let limits = setup(&fake, KEY);
    let upserts = vec![
        person(1, serde_json::json!({"FNAME": "Ada", "LNAME": "Lovelace"})),
        person(
            2,
            serde_json::json!({"FNAME": "Grace", "NICKNAME": "Amazing"}),
        ),
        Upsert {
            id: "p3".into(),
            identifiers: vec![],
            fields: "{}".into(),
        },
    ];
    let outcomes = host
        .sync_batch(
            &plugin,
            &limits,
            &batch(&fake, upserts, vec![], serde_json::json!({})),
        )
        .await
        .unwrap()
        .unwrap();
    let by_id: BTreeMap<String, Outcome> =
        outcomes.into_iter().map(|o| (o.id, o.outcome)).collect();
    assert!(matches!(by_id["p1"], Outcome::Delivered));
    let Outcome::Rejected(reason) = &by_id["p2"] else {
        panic!("{by_id:?}")
    };
    assert!(
        reason.contains("400") && reason.contains("merge_fields.NICKNAME"),
        "{reason}"
    );
    assert!(matches!(&by_id["p3"], Outcome::Rejected(r) if r.contains("no e-mail")));

    let ada = fake.member("a1b2c3", "person1@example.com").unwrap();
    assert_eq!(ada.status, "subscribed");
    assert_eq!(ada.merge_fields["FNAME"], "Ada");
    assert!(ada.tags.contains("spindle"));
    let put = fake
        .requests()
        .into_iter()
        .find(|r| r.method == "PUT")
        .unwrap();
    assert_eq!(
        put.path,
        format!(
            "/3.0/lists/a1b2c3/members/{}",
            subscriber_hash("person1@example.com")
        )
    );
    assert_eq!(
        put.authorization.as_deref(),
        Some("Basic YW55c3RyaW5nOjAxMjM0NTY3ODlhYmNkZWYwMTIzNDU2Nzg5YWJjZGVmLXVzMjE=")
    );

    let removal = Removal {
        id: "p1".into(),
        identifiers: vec![Identifier {
            kind: "email".into(),
            value: "person1@example.com".into(),
        }],
    };
    let gone = Removal {
        id: "p9".into(),
        identifiers: vec![Identifier {
            kind: "email".into(),
            value: "never@example.com".into(),
        }],
    };
    let outcomes = host
        .sync_batch(
            &plugin,
            &limits,
            &batch(&fake, vec![], vec![removal, gone], serde_json::json!({})),
        )
        .await
        .unwrap()
        .unwrap();
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o.outcome, Outcome::Delivered)),
        "{outcomes:?}"
    );
    assert_eq!(
        fake.member("a1b2c3", "person1@example.com").unwrap().status,
        "archived"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_batches_use_batch_subscribe_in_chunks_of_500() {
    let fake = FakeMailchimp::start(KEY, &[("a1b2c3", &["FNAME"])]).await;
    let (host, plugin) = host_and_plugin().await;
    let mut upserts: Vec<Upsert> = (0..700)
        .map(|i| person(i, serde_json::json!({"FNAME": format!("P{i}")})))
        .collect();
    upserts[10].identifiers[0].value = "not-an-address".into();
    let outcomes = host
        .sync_batch(
            &plugin,
            &setup(&fake, KEY),
            &batch(&fake, upserts, vec![], serde_json::json!({})),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcomes.len(), 700);
    let rejected: Vec<&str> = outcomes
        .iter()
        .filter(|o| matches!(o.outcome, Outcome::Rejected(_)))
        .map(|o| o.id.as_str())
        .collect();
    assert_eq!(rejected, vec!["p10"]);
    assert_eq!(fake.members("a1b2c3").len(), 699);
    let batches: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path == "/3.0/lists/a1b2c3")
        .collect();
    assert_eq!(
        batches.len(),
        2,
        "700 members take two calls of at most 500"
    );
    let first: serde_json::Value =
        serde_json::from_str(batches[0].body.as_deref().unwrap()).unwrap();
    assert_eq!(first["members"].as_array().unwrap().len(), 500);
    assert_eq!(first["update_existing"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_server_errors_become_retries_and_bad_keys_fail_the_batch() {
    let fake = FakeMailchimp::start(KEY, &[("a1b2c3", &["FNAME"])]).await;
    let (host, plugin) = host_and_plugin().await;
    fake.inject(Fault::RateLimited {
        count: 1,
        retry_after: None,
    });
    fake.inject(Fault::ServerErrors { count: 1 });
    let upserts = vec![
        person(1, serde_json::json!({})),
        person(2, serde_json::json!({})),
        person(3, serde_json::json!({})),
    ];
    let outcomes = host
        .sync_batch(
            &plugin,
            &setup(&fake, KEY),
            &batch(&fake, upserts, vec![], serde_json::json!({"tags": []})),
        )
        .await
        .unwrap()
        .unwrap();
    let kinds: Vec<&str> = outcomes
        .iter()
        .map(|o| match o.outcome {
            Outcome::Delivered => "delivered",
            Outcome::Retry(_) => "retry",
            Outcome::Rejected(_) => "rejected",
        })
        .collect();
    assert_eq!(kinds, ["retry", "retry", "delivered"]);

    let wrong = setup(&fake, "wrong-key-us21");
    let result = host
        .sync_batch(
            &plugin,
            &wrong,
            &batch(
                &fake,
                vec![person(4, serde_json::json!({}))],
                vec![],
                serde_json::json!({}),
            ),
        )
        .await
        .unwrap();
    let Err(BatchError::Unauthorized(message)) = result else {
        panic!("{result:?}")
    };
    assert!(message.contains("API key may be invalid"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_deletes_members_permanently() {
    let fake = FakeMailchimp::start(KEY, &[("a1b2c3", &["FNAME"])]).await;
    let (host, plugin) = host_and_plugin().await;
    let limits = setup(&fake, KEY);
    host.sync_batch(
        &plugin,
        &limits,
        &batch(
            &fake,
            vec![person(1, serde_json::json!({}))],
            vec![],
            serde_json::json!({}),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    let config = serde_json::json!({"base_url": fake.api_root(), "list_id": "a1b2c3"}).to_string();
    let subjects = vec![
        vec![Identifier {
            kind: "email".into(),
            value: "person1@example.com".into(),
        }],
        vec![],
    ];
    let outcomes = host
        .delete_subjects(&plugin, &limits, &config, &subjects)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(outcomes[0], Outcome::Delivered));
    assert!(matches!(&outcomes[1], Outcome::Rejected(r) if r.contains("no e-mail")));
    assert!(fake.forgotten("a1b2c3", "person1@example.com"));
    assert!(
        host.validate_config(&plugin, &limits, r#"{"list_id": "x"}"#)
            .await
            .unwrap()
            .unwrap_err()
            .contains("`dc` is required")
    );
}
