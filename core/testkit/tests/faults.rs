//! Injected faults on both fakes.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use spindle_testkit::Fault;
use spindle_testkit::hubspot::{FakeHubspot, FakeHubspotConfig, OAuthClient};
use spindle_testkit::shopify::{FakeShopify, FakeShopifyConfig};
use support::{client, client_with_timeout, header};

const HS_TOKEN: &str = "hubspot-test-token";

async fn hubspot() -> FakeHubspot {
    let fake = FakeHubspot::start(FakeHubspotConfig {
        rate_limit_per_10s: None,
        search_rate_per_second: None,
        oauth: Some(OAuthClient {
            client_id: "id".into(),
            client_secret: "secret".into(),
            refresh_token: "rt".into(),
        }),
        ..FakeHubspotConfig::default()
    })
    .await;
    fake.seed_contacts(30, 1);
    fake
}

async fn shopify() -> FakeShopify {
    let fake = FakeShopify::start(FakeShopifyConfig {
        leak_per_second: None,
        ..FakeShopifyConfig::default()
    })
    .await;
    fake.seed_customers(30, 1);
    fake
}

async fn hs_list(fake: &FakeHubspot) -> reqwest::Response {
    client()
        .get(format!(
            "{}/crm/v3/objects/contacts?limit=20",
            fake.base_url()
        ))
        .bearer_auth(HS_TOKEN)
        .send()
        .await
        .expect("test helper")
}

async fn shop_list(fake: &FakeShopify) -> reqwest::Response {
    client()
        .get(format!(
            "{}/admin/api/2024-01/customers.json?limit=20",
            fake.base_url()
        ))
        .header("X-Shopify-Access-Token", "shpat_test")
        .send()
        .await
        .expect("test helper")
}

#[tokio::test]
async fn server_errors_cycle_then_recover() {
    let fake = hubspot().await;
    fake.inject(Fault::ServerErrors { count: 4 });
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let response = hs_list(&fake).await;
        statuses.push(response.status().as_u16());
        let body: Value = response.json().await.unwrap();
        if statuses.last() != Some(&200) {
            assert_eq!(body["status"], "error", "HubSpot's error body");
            assert!(body["correlationId"].is_string());
        }
    }
    assert_eq!(statuses, vec![500, 502, 503, 500, 200]);
    let logged: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(logged, statuses);

    let shop = shopify().await;
    shop.inject(Fault::ServerErrors { count: 1 });
    let response = shop_list(&shop).await;
    assert_eq!(response.status(), 500);
    let body: Value = response.json().await.unwrap();
    assert!(body["errors"].is_string(), "Shopify's error body: {body}");
    assert_eq!(shop_list(&shop).await.status(), 200);
}

#[tokio::test]
async fn rate_limited_fault_with_and_without_retry_after() {
    let fake = hubspot().await;
    fake.inject(Fault::RateLimited {
        count: 1,
        retry_after: None,
    });
    fake.inject(Fault::RateLimited {
        count: 1,
        retry_after: Some(1.5),
    });
    let first = hs_list(&fake).await;
    assert_eq!(first.status(), 429);
    assert_eq!(header(&first, "retry-after"), None);
    let body: Value = first.json().await.unwrap();
    assert_eq!(body["policyName"], "TEN_SECONDLY_ROLLING");
    let second = hs_list(&fake).await;
    assert_eq!(second.status(), 429);
    assert_eq!(header(&second, "retry-after").as_deref(), Some("1.5"));
    assert_eq!(hs_list(&fake).await.status(), 200);

    let shop = shopify().await;
    shop.inject(Fault::RateLimited {
        count: 2,
        retry_after: Some(2.0),
    });
    for _ in 0..2 {
        let response = shop_list(&shop).await;
        assert_eq!(response.status(), 429);
        assert_eq!(header(&response, "retry-after").as_deref(), Some("2.0"));
        let body: Value = response.json().await.unwrap();
        assert!(
            body["errors"]
                .as_str()
                .unwrap()
                .starts_with("Exceeded 2 calls per second")
        );
    }
    assert_eq!(shop_list(&shop).await.status(), 200);
}

#[tokio::test]
async fn slow_answers_trip_client_timeouts() {
    let fake = shopify().await;
    fake.inject(Fault::Slow {
        count: 1,
        delay: Duration::from_millis(800),
    });
    let impatient = client_with_timeout(Duration::from_millis(200));
    let url = format!("{}/admin/api/2024-01/customers.json", fake.base_url());
    let started = Instant::now();
    let err = impatient
        .get(&url)
        .header("X-Shopify-Access-Token", "shpat_test")
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(started.elapsed() < Duration::from_millis(700));
    let started = Instant::now();
    let response = impatient
        .get(&url)
        .header("X-Shopify-Access-Token", "shpat_test")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(started.elapsed() < Duration::from_millis(200));
    assert_eq!(
        fake.requests().len(),
        2,
        "the slow request was received and logged"
    );

    // A patient client gets the normal answer after the delay.
    let hs = hubspot().await;
    hs.inject(Fault::Slow {
        count: 1,
        delay: Duration::from_millis(300),
    });
    let started = Instant::now();
    let response = hs_list(&hs).await;
    assert_eq!(response.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["results"].as_array().unwrap().len(), 20);
}

#[tokio::test]
async fn truncated_pages_fail_mid_body_then_recover() {
    let fake = shopify().await;
    fake.inject(Fault::TruncatedPage { count: 1 });
    // A request that is not a successful list page does not use the fault up.
    let unauthorized = client()
        .get(format!(
            "{}/admin/api/2024-01/customers.json",
            fake.base_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), 401);
    assert!(unauthorized.json::<Value>().await.is_ok());

    let response = shop_list(&fake).await;
    assert_eq!(response.status(), 200, "the status line arrives whole");
    let announced: usize = header(&response, "content-length")
        .unwrap()
        .parse()
        .unwrap();
    assert!(announced > 1_000);
    let mut response = response;
    let mut received = 0;
    let err = loop {
        match response.chunk().await {
            Ok(Some(chunk)) => received += chunk.len(),
            Ok(None) => panic!("the body ended cleanly after {received} bytes"),
            Err(err) => break err,
        }
    };
    assert!(
        err.is_body() || err.is_decode() || err.is_request(),
        "{err:?}"
    );
    assert!(
        received > 0 && received < announced,
        "part of the JSON arrived: {received} of {announced}"
    );

    let full = shop_list(&fake).await;
    assert_eq!(full.status(), 200);
    let body: Value = full.json().await.unwrap();
    assert_eq!(body["customers"].as_array().unwrap().len(), 20);

    let hs = hubspot().await;
    hs.inject(Fault::TruncatedPage { count: 2 });
    for _ in 0..2 {
        let response = hs_list(&hs).await;
        assert_eq!(response.status(), 200);
        assert!(response.json::<Value>().await.is_err());
    }
    assert!(hs_list(&hs).await.json::<Value>().await.is_ok());
}

#[tokio::test]
async fn faults_apply_in_order_and_spare_the_token_endpoint() {
    let fake = hubspot().await;
    fake.inject(Fault::ServerErrors { count: 1 });
    fake.inject(Fault::RateLimited {
        count: 1,
        retry_after: None,
    });
    let token = client()
        .post(format!("{}/oauth/v1/token", fake.base_url()))
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", "id"),
            ("client_secret", "secret"),
            ("refresh_token", "rt"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(token.status(), 200, "the OAuth endpoint is exempt");
    assert_eq!(hs_list(&fake).await.status(), 500);
    assert_eq!(hs_list(&fake).await.status(), 429);
    assert_eq!(hs_list(&fake).await.status(), 200);
    let paths: Vec<(String, u16)> = fake
        .requests()
        .iter()
        .map(|r| (r.path.clone(), r.status))
        .collect();
    assert_eq!(paths[0], ("/oauth/v1/token".to_owned(), 200));
    assert!(
        fake.requests()[0]
            .body
            .as_deref()
            .unwrap()
            .contains("grant_type=refresh_token")
    );
}
