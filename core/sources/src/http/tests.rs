use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

use super::{error::vendor_message, retry_after};

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
