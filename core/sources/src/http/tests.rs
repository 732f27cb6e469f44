use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

use spindle_config::secret::SecretString;
use spindle_testkit::Fault;
use spindle_testkit::shopify::{FakeShopify, FakeShopifyConfig};

use super::error::vendor_message;
use super::{Auth, HttpClient, HttpError, HttpOptions, HttpRequest, retry_after};

fn headers(name: &'static str, value: &str) -> HeaderMap {
    let mut map = HeaderMap::new();
    map.insert(name, HeaderValue::from_str(value).unwrap());
    map
}

#[test]
fn retry_after_reads_seconds_decimals_and_dates() {
    assert_eq!(
        retry_after(&headers(RETRY_AFTER.as_str(), "3")),
        Some(Duration::from_secs(3))
    );
    assert_eq!(
        retry_after(&headers(RETRY_AFTER.as_str(), "2.0")),
        Some(Duration::from_secs(2))
    );
    let future = std::time::SystemTime::now() + Duration::from_secs(120);
    let date = httpdate::fmt_http_date(future);
    let wait = retry_after(&headers(RETRY_AFTER.as_str(), &date)).unwrap();
    assert!(
        wait > Duration::from_secs(100) && wait <= Duration::from_secs(120),
        "{wait:?}"
    );
    assert_eq!(
        retry_after(&headers(
            RETRY_AFTER.as_str(),
            "Wed, 21 Oct 2015 07:28:00 GMT"
        )),
        Some(Duration::ZERO)
    );
    assert_eq!(retry_after(&headers(RETRY_AFTER.as_str(), "soon")), None);
    assert_eq!(retry_after(&HeaderMap::new()), None);
}

#[test]
fn vendor_messages_are_extracted() {
    assert_eq!(
        vendor_message(
            br#"{"status":"error","message":"You have reached your ten_secondly_rolling limit."}"#
        ),
        "You have reached your ten_secondly_rolling limit."
    );
    assert_eq!(
        vendor_message(br#"{"errors":"[API] Invalid API key or access token"}"#),
        "[API] Invalid API key or access token"
    );
    assert_eq!(
        vendor_message(br#"{"errors":{"page":"page cannot be passed."}}"#),
        r#"{"page":"page cannot be passed."}"#
    );
    assert_eq!(
        vendor_message(b"<html>Bad Gateway</html>"),
        "<html>Bad Gateway</html>"
    );
}

/// A client of the fake Shopify's customers endpoint with the given options.
fn shopify_client(options: HttpOptions) -> std::sync::Arc<HttpClient> {
    let auth = Auth::Header {
        name: reqwest::header::HeaderName::from_static("x-shopify-access-token"),
        value: SecretString::from("shpat_test"),
        prefix: "",
    };
    HttpClient::new("shop", options, auth, None).unwrap()
}

fn customers_url(fake: &FakeShopify) -> url::Url {
    url::Url::parse(&format!(
        "{}/admin/api/2024-01/customers.json",
        fake.base_url()
    ))
    .unwrap()
}

#[tokio::test]
async fn a_slow_answer_times_out_and_the_retry_succeeds() {
    let fake = FakeShopify::start(FakeShopifyConfig {
        leak_per_second: None,
        ..FakeShopifyConfig::default()
    })
    .await;
    fake.seed_customers(3, 1);
    fake.inject(Fault::Slow {
        count: 1,
        delay: Duration::from_secs(2),
    });
    let options = HttpOptions {
        timeout: Duration::from_millis(300),
        min_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        ..HttpOptions::default()
    };
    let client = shopify_client(options);
    let url = customers_url(&fake);
    let started = std::time::Instant::now();
    let response = client.send(&HttpRequest::get(url)).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the slow answer was not waited for"
    );
    let body: serde_json::Value = response.json().unwrap();
    assert_eq!(body["customers"].as_array().map(Vec::len), Some(3));
    assert_eq!(
        fake.requests().len(),
        2,
        "one timed-out attempt, one answered"
    );
}

#[tokio::test]
async fn retries_stop_after_the_attempt_budget() {
    let fake = FakeShopify::start(FakeShopifyConfig {
        leak_per_second: None,
        ..FakeShopifyConfig::default()
    })
    .await;
    fake.inject(Fault::ServerErrors { count: 10 });
    let options = HttpOptions {
        max_attempts: 3,
        min_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(20),
        ..HttpOptions::default()
    };
    let client = shopify_client(options);
    let err = client
        .send(&HttpRequest::get(customers_url(&fake)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, HttpError::RetriesExhausted { attempts: 3, .. }),
        "{err:?}"
    );
    assert_eq!(fake.requests().len(), 3);
}
