//! The Shopify connector against the fake Shopify Admin API (`spindle-testkit`), into a real SQLite store.

use chrono::{Duration as ChronoDuration, Utc};
use serde_json::json;
use spindle_config::ShopifySettings;
use spindle_config::secret::SecretString;
use spindle_model::RecordKey;
use spindle_store::{ProfileStore, SqlStore};
use spindle_testkit::Fault;
use spindle_testkit::shopify::{FakeShopify, FakeShopifyConfig};

use super::{ShopifySource, next_link};
use crate::SourceError;
use crate::test_support::{run_all, temp_store};

fn settings(fake: &FakeShopify, token: &str) -> ShopifySettings {
    ShopifySettings {
        base_url: fake.base_url(),
        access_token: SecretString::from(token.to_owned()),
        api_version: "2024-01".into(),
        streams: vec!["customers".into(), "orders".into()],
        requests_per_second: 1000.0,
        bucket_size: 1000,
    }
}

async fn fast_fake() -> FakeShopify {
    FakeShopify::start(FakeShopifyConfig {
        leak_per_second: None,
        ..FakeShopifyConfig::default()
    })
    .await
}

async fn sync(
    fake: &FakeShopify,
    store: &SqlStore,
) -> Result<spindle_model::JobCounts, SourceError> {
    run_all(
        "shop",
        &mut ShopifySource::new("shop", settings(fake, "shpat_test")),
        store,
    )
    .await
}

fn key(stream: &str, id: i64) -> RecordKey {
    RecordKey {
        source: "shop".into(),
        stream: stream.into(),
        external_id: id.to_string(),
    }
}

#[tokio::test]
async fn a_full_sync_follows_link_pages_and_reads_orders_of_every_status() {
    let fake = fast_fake().await;
    let customers = fake.seed_customers(600, 1);
    let orders = fake.seed_orders(900, 2);
    let (store, _dir) = temp_store().await;
    let first = sync(&fake, &store).await.unwrap();
    assert_eq!(
        first.inserted, 1500,
        "every customer and every order, open or not"
    );
    let paged = fake
        .requests()
        .iter()
        .filter(|r| r.query.as_deref().is_some_and(|q| q.contains("page_info=")))
        .count();
    assert!(
        paged >= 5,
        "600 customers and 900 orders take several Link pages, saw {paged}"
    );
    assert!(
        fake.requests()
            .iter()
            .filter(|r| r.path.ends_with("/orders.json")
                && !r.query.as_deref().unwrap_or("").contains("page_info"))
            .all(|r| r.query.as_deref().unwrap_or("").contains("status=any")),
        "the first orders request asks for every status"
    );
    let customer = store
        .record(&key("customers", customers[0]))
        .await
        .unwrap()
        .unwrap();
    assert!(
        customer
            .record
            .identifiers
            .iter()
            .any(|i| i.kind == "shop_id")
    );
    let order = store
        .record(&key("orders", orders[0]))
        .await
        .unwrap()
        .unwrap();
    let event = &order.record.events[0];
    assert!(["order_completed", "order_cancelled"].contains(&event.name.as_str()));
    assert!(event.properties["amount"].as_f64().is_some());
    assert!(event.properties["line_item_count"].as_u64().is_some());

    let second = sync(&fake, &store).await.unwrap();
    assert_eq!(
        (second.inserted, second.updated),
        (0, 0),
        "an unchanged shop stores nothing new"
    );
}

#[tokio::test]
async fn incremental_syncs_read_changes_including_late_ties() {
    let fake = fast_fake().await;
    let customers = fake.seed_customers(40, 3);
    let (store, _dir) = temp_store().await;
    sync(&fake, &store).await.unwrap();

    let tie = (Utc::now() - ChronoDuration::seconds(20))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    fake.put_customer(json!({"id": customers[5], "email": "changed@example.com", "first_name": "Changed", "updated_at": tie, "created_at": tie}));
    let twin = fake.put_customer(
        json!({"id": 990_001, "email": "twin@example.com", "updated_at": tie, "created_at": tie}),
    );
    let counts = sync(&fake, &store).await.unwrap();
    assert_eq!((counts.inserted, counts.updated), (1, 1));
    assert_eq!(
        store
            .record(&key("customers", customers[5]))
            .await
            .unwrap()
            .unwrap()
            .record
            .traits["first_name"],
        "Changed"
    );

    let late = fake.put_customer(
        json!({"id": 990_002, "email": "late@example.com", "updated_at": tie, "created_at": tie}),
    );
    let counts = sync(&fake, &store).await.unwrap();
    assert_eq!(
        (counts.inserted, counts.updated),
        (1, 0),
        "the late record is read, the others are not stored again"
    );
    assert!(
        store
            .record(&key("customers", late))
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .record(&key("customers", twin))
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn throttling_server_errors_and_truncated_pages_are_retried() {
    let fake = fast_fake().await;
    fake.seed_customers(600, 4);
    fake.inject(Fault::RateLimited {
        count: 2,
        retry_after: Some(0.3),
    });
    fake.inject(Fault::ServerErrors { count: 2 });
    fake.inject(Fault::TruncatedPage { count: 1 });
    let (store, _dir) = temp_store().await;
    let counts = sync(&fake, &store).await.unwrap();
    assert_eq!(counts.inserted, 600);
    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        2,
        "{statuses:?}"
    );
}

#[tokio::test]
async fn the_leaky_bucket_is_respected() {
    let fake = FakeShopify::start(FakeShopifyConfig {
        bucket_size: 4,
        leak_per_second: Some(20.0),
        ..FakeShopifyConfig::default()
    })
    .await;
    fake.seed_customers(2_000, 5);
    let (store, _dir) = temp_store().await;
    let mut settings = settings(&fake, "shpat_test");
    settings.requests_per_second = 20.0;
    settings.bucket_size = 4;
    settings.streams = vec!["customers".into()];
    let counts = run_all("shop", &mut ShopifySource::new("shop", settings), &store)
        .await
        .unwrap();
    assert_eq!(counts.inserted, 2_000);
    assert!(
        fake.requests().iter().all(|r| r.status != 429),
        "pacing kept the bucket from overflowing"
    );
}

#[tokio::test]
async fn a_wrong_token_fails_with_the_vendor_message() {
    let fake = fast_fake().await;
    let (store, _dir) = temp_store().await;
    let err = run_all(
        "shop",
        &mut ShopifySource::new("shop", settings(&fake, "wrong-token")),
        &store,
    )
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("answered 401: [API] Invalid API key or access token"),
        "{text}"
    );
    assert!(!text.contains("wrong-token"), "{text}");
}

#[test]
fn next_links_are_found_among_several() {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::LINK,
        "<https://s.myshopify.com/admin/api/2024-01/customers.json?limit=250&page_info=prev>; rel=\"previous\", <https://s.myshopify.com/admin/api/2024-01/customers.json?limit=250&page_info=nxt>; rel=\"next\""
            .parse()
            .unwrap(),
    );
    assert_eq!(
        next_link(&headers).as_deref(),
        Some("https://s.myshopify.com/admin/api/2024-01/customers.json?limit=250&page_info=nxt")
    );
    headers.insert(
        reqwest::header::LINK,
        "<https://s.myshopify.com/x?page_info=prev>; rel=\"previous\""
            .parse()
            .unwrap(),
    );
    assert_eq!(next_link(&headers), None);
}

#[tokio::test]
async fn a_malformed_order_is_quarantined_and_the_rest_imported() {
    let fake = fast_fake().await;
    fake.seed_customers(5, 6);
    fake.seed_orders(20, 7);
    let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let broken = fake.put_order(json!({
        "id": 880_001, "email": "bad@example.com", "total_price": "twelve", "currency": "EUR",
        "line_items": [], "created_at": now, "updated_at": now, "financial_status": "paid"
    }));
    let (store, _dir) = temp_store().await;
    let mut settings = settings(&fake, "shpat_test");
    settings.streams = vec!["orders".into()];
    let counts = run_all("shop", &mut ShopifySource::new("shop", settings), &store)
        .await
        .unwrap();
    assert_eq!((counts.inserted, counts.quarantined), (20, 1));
    let quarantined = store.quarantined(Some("shop"), 10).await.unwrap();
    assert_eq!(quarantined[0].record.location, format!("orders/{broken}"));
    assert_eq!(
        quarantined[0].record.reason,
        "unreadable `total_price` \"twelve\""
    );
    assert!(
        quarantined[0].record.payload.contains("\"twelve\""),
        "the raw payload is kept"
    );
}
