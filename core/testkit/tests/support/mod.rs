//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::time::Duration;

/// A reqwest client (reqwest is built without a TLS provider, so one is installed first).
pub fn client() -> reqwest::Client {
    client_with_timeout(Duration::from_secs(30))
}

pub fn client_with_timeout(timeout: Duration) -> reqwest::Client {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .expect("reqwest client")
}

pub fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().expect("ascii header").to_owned())
}
