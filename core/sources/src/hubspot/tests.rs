//! The HubSpot connector against the fake HubSpot API (`spindle-testkit`), into a real SQLite store.

use chrono::{Duration as ChronoDuration, Utc};
use serde_json::{Map, Value, json};
use spindle_config::secret::SecretString;
use spindle_config::{HubspotAuth, HubspotSettings};
use spindle_model::{Cursor, RecordKey};
use spindle_store::{ProfileStore, SourceBatch, SqlStore};
use spindle_testkit::Fault;
use spindle_testkit::hubspot::{FakeHubspot, FakeHubspotConfig, OAuthClient};

use super::HubspotSource;
use crate::SourceError;
use crate::test_support::{run_all, temp_store};

fn settings(fake: &FakeHubspot, auth: HubspotAuth) -> HubspotSettings {
    HubspotSettings {
        base_url: fake.base_url(),
        auth,
        objects: vec!["contacts".into(), "companies".into()],
        requests_per_10s: 10_000,
    }
}

fn token() -> HubspotAuth {
    HubspotAuth::PrivateApp(SecretString::from("hubspot-test-token"))
}

async fn fast_fake() -> FakeHubspot {
    FakeHubspot::start(FakeHubspotConfig {
        rate_limit_per_10s: None,
        search_rate_per_second: None,
        ..FakeHubspotConfig::default()
    })
    .await
}

fn props(pairs: &[(&str, &str)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect()
}

fn contact_key(id: &str) -> RecordKey {
    RecordKey {
        source: "crm".into(),
        stream: "contacts".into(),
        external_id: id.into(),
    }
}

async fn sync(
    fake: &FakeHubspot,
    store: &SqlStore,
) -> Result<spindle_model::JobCounts, SourceError> {
    run_all(
        "crm",
        &mut HubspotSource::new("crm", settings(fake, token())),
        store,
    )
    .await
}

#[tokio::test]
async fn a_full_sync_reads_every_page_with_associations_then_nothing_twice() {
    let fake = fast_fake().await;
    let contacts = fake.seed_contacts(250, 7);
    let companies = fake.seed_companies(60, 8);
    fake.associate(&contacts[0], &companies[3]);
    let (store, _dir) = temp_store().await;

    let first = sync(&fake, &store).await.unwrap();
    assert_eq!((first.inserted, first.quarantined), (310, 0));
    let lists = fake
        .requests()
        .iter()
        .filter(|r| r.path == "/crm/v3/objects/contacts" && r.method == "GET")
        .count();
    assert!(
        lists >= 3,
        "250 contacts take three list pages, saw {lists}"
    );
    let ada = store
        .record(&contact_key(&contacts[0]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        ada.record.traits["hubspot_company_ids"],
        json!([companies[3]])
    );
    assert!(
        ada.record
            .identifiers
            .iter()
            .any(|i| i.kind == "crm_id" && i.value == contacts[0])
    );

    let second = sync(&fake, &store).await.unwrap();
    assert_eq!(
        (second.inserted, second.updated),
        (0, 0),
        "an unchanged CRM stores nothing new"
    );
    assert_eq!(store.count_records(Some("crm")).await.unwrap(), 310);
}

#[tokio::test]
async fn incremental_syncs_read_changes_and_ties_on_the_same_millisecond() {
    let fake = fast_fake().await;
    let contacts = fake.seed_contacts(30, 1);
    let (store, _dir) = temp_store().await;
    sync(&fake, &store).await.unwrap();

    let tie = Utc::now() - ChronoDuration::seconds(30);
    fake.put_contact(
        Some(&contacts[4]),
        props(&[("email", "changed@example.com"), ("firstname", "Changed")]),
        tie,
    );
    let twin = fake.put_contact(None, props(&[("email", "twin@example.com")]), tie);
    let counts = sync(&fake, &store).await.unwrap();
    assert_eq!((counts.inserted, counts.updated), (1, 1));
    let changed = store
        .record(&contact_key(&contacts[4]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(changed.record.traits["first_name"], "Changed");

    // A record that becomes searchable late, with the same modified time as records already read.
    let late = fake.put_contact(None, props(&[("email", "late@example.com")]), tie);
    let counts = sync(&fake, &store).await.unwrap();
    assert_eq!(counts.inserted, 1, "the late record is read");
    assert_eq!(
        counts.updated, 0,
        "records read before are not stored again"
    );
    assert!(store.record(&contact_key(&late)).await.unwrap().is_some());
    assert!(store.record(&contact_key(&twin)).await.unwrap().is_some());
}

#[tokio::test]
async fn searches_past_ten_thousand_results_restart_by_id() {
    let fake = fast_fake().await;
    fake.seed_contacts(10_050, 3);
    let (store, _dir) = temp_store().await;
    // Start as if the first sync were done long ago: everything is in the search window.
    let cursor = Cursor {
        stream: "contacts".into(),
        position: json!({"phase": "search", "since_ms": 0, "window": null}),
    };
    store
        .apply_source_batch(
            "crm",
            SourceBatch {
                cursors: vec![cursor],
                ..SourceBatch::default()
            },
        )
        .await
        .unwrap();
    let mut settings = settings(&fake, token());
    settings.objects = vec!["contacts".into()];
    let counts = run_all("crm", &mut HubspotSource::new("crm", settings), &store)
        .await
        .unwrap();
    assert_eq!(counts.inserted, 10_050);
    let restarted = fake.requests().iter().any(|r| {
        r.path.ends_with("/search")
            && r.body
                .as_deref()
                .is_some_and(|b| b.contains("\"hs_object_id\"") && b.contains("\"GT\""))
    });
    assert!(
        restarted,
        "the walk restarted after the last id instead of paging past the cap"
    );
    assert!(
        fake.requests().iter().all(|r| r.status != 400),
        "no request went past the cap"
    );
}

#[tokio::test]
async fn rate_limits_server_errors_and_truncated_pages_are_retried() {
    let fake = fast_fake().await;
    fake.seed_contacts(120, 2);
    fake.inject(Fault::RateLimited {
        count: 2,
        retry_after: Some(0.2),
    });
    fake.inject(Fault::RateLimited {
        count: 1,
        retry_after: None,
    });
    fake.inject(Fault::ServerErrors { count: 3 });
    fake.inject(Fault::TruncatedPage { count: 1 });
    let (store, _dir) = temp_store().await;
    let counts = sync(&fake, &store).await.unwrap();
    assert_eq!(counts.inserted, 120);
    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s >= 500).count(),
        3,
        "{statuses:?}"
    );
}

#[tokio::test]
async fn the_vendor_rate_limit_is_respected() {
    let fake = FakeHubspot::start(FakeHubspotConfig {
        rate_limit_per_10s: Some(15),
        ..FakeHubspotConfig::default()
    })
    .await;
    fake.seed_contacts(400, 4);
    let (store, _dir) = temp_store().await;
    let mut settings = settings(&fake, token());
    settings.requests_per_10s = 15;
    settings.objects = vec!["contacts".into()];
    let counts = run_all("crm", &mut HubspotSource::new("crm", settings), &store)
        .await
        .unwrap();
    assert_eq!(counts.inserted, 400);
    assert!(
        fake.requests().iter().all(|r| r.status != 429),
        "pacing kept every request under the limit"
    );
}

#[tokio::test]
async fn an_expired_oauth_token_is_refreshed() {
    let oauth = OAuthClient {
        client_id: "app".into(),
        client_secret: "s3cret".into(),
        refresh_token: "rt-1".into(),
    };
    let fake = FakeHubspot::start(FakeHubspotConfig {
        private_app_token: None,
        oauth: Some(oauth),
        rate_limit_per_10s: None,
        search_rate_per_second: None,
        ..FakeHubspotConfig::default()
    })
    .await;
    fake.seed_contacts(50, 5);
    let auth = || HubspotAuth::OAuth {
        client_id: "app".into(),
        client_secret: SecretString::from("s3cret"),
        refresh_token: SecretString::from("rt-1"),
    };
    let (store, _dir) = temp_store().await;
    let mut source = HubspotSource::new("crm", settings(&fake, auth()));
    run_all("crm", &mut source, &store).await.unwrap();
    fake.expire_access_tokens();
    fake.put_contact(
        None,
        props(&[("email", "after-expiry@example.com")]),
        Utc::now() - ChronoDuration::seconds(20),
    );
    let counts = run_all("crm", &mut source, &store).await.unwrap();
    assert_eq!(counts.inserted, 1);
    let grants = fake
        .requests()
        .iter()
        .filter(|r| r.path == "/oauth/v1/token")
        .count();
    assert_eq!(grants, 2, "one token at the start, one after the expiry");
    let rejected = fake.requests().iter().filter(|r| r.status == 401).count();
    assert_eq!(
        rejected, 1,
        "the expired token was used once, then refreshed"
    );

    let wrong = HubspotAuth::OAuth {
        client_id: "app".into(),
        client_secret: SecretString::from("wrong"),
        refresh_token: SecretString::from("rt-1"),
    };
    let err = run_all(
        "crm",
        &mut HubspotSource::new("crm", settings(&fake, wrong)),
        &store,
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("authentication failed: token endpoint answered 400"),
        "{err}"
    );
    assert!(
        !err.to_string().contains("wrong"),
        "the secret is not echoed: {err}"
    );
}

#[tokio::test]
async fn a_wrong_token_fails_with_the_vendor_message() {
    let fake = fast_fake().await;
    let (store, _dir) = temp_store().await;
    let bad = HubspotAuth::PrivateApp(SecretString::from("not-the-token"));
    let err = run_all(
        "crm",
        &mut HubspotSource::new("crm", settings(&fake, bad)),
        &store,
    )
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("answered 401: Authentication credentials not found"),
        "{text}"
    );
    assert!(!text.contains("not-the-token"), "{text}");
}

#[tokio::test]
async fn archived_objects_are_marked_deleted() {
    let fake = fast_fake().await;
    let contacts = fake.seed_contacts(10, 6);
    fake.archive("contacts", &contacts[2]);
    let (store, _dir) = temp_store().await;
    sync(&fake, &store).await.unwrap();
    assert!(
        store
            .record(&contact_key(&contacts[2]))
            .await
            .unwrap()
            .unwrap()
            .record
            .deleted
    );
    assert!(
        !store
            .record(&contact_key(&contacts[3]))
            .await
            .unwrap()
            .unwrap()
            .record
            .deleted
    );
}

#[tokio::test]
async fn a_malformed_object_is_quarantined_and_the_rest_imported() {
    let fake = fast_fake().await;
    let contacts = fake.seed_contacts(40, 9);
    fake.corrupt(
        "contacts",
        &contacts[7],
        props(&[("updatedAt", "last tuesday")]),
    );
    let (store, _dir) = temp_store().await;
    let counts = sync(&fake, &store).await.unwrap();
    assert_eq!((counts.inserted, counts.quarantined), (39, 1));
    let quarantined = store.quarantined(Some("crm"), 10).await.unwrap();
    assert_eq!(
        quarantined[0].record.location,
        format!("contacts/{}", contacts[7])
    );
    assert_eq!(
        quarantined[0].record.reason,
        "unreadable `updatedAt` `last tuesday`"
    );
    assert!(
        quarantined[0].record.payload.contains("last tuesday"),
        "the raw object is kept"
    );
}
