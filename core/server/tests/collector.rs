//! The collector and the operations endpoints over real HTTP (a server on a loopback port, `reqwest` as the
//! client) and a real store, on both backends: every route, every refusal with its documented status and
//! body, batches that keep their valid messages, the payloads real Segment and RudderStack libraries send
//! (reaching profiles and timelines after resolution), de-duplication, clock-skew correction, CORS, request
//! ids, `/healthz`, `/readyz` and `/metrics`.

#![allow(clippy::unwrap_used)] // a test file: a failed unwrap is a failed assertion

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};
use spindle_config::Config;
use spindle_config::secret::ProcessSecrets;
use spindle_identity::IdentityEngine;
use spindle_model::RecordKey;
use spindle_server::collector::writer::Writer;
use spindle_server::collector::{self, CollectorState, WriteKeys};
use spindle_server::ops::{self, OpsState};
use spindle_store::{IdentityStore, ProfileStore, SqlStore};

spindle_testkit::store_backends!(
    every_route_accepts_its_message,
    bad_requests_get_their_documented_status_and_body,
    a_batch_keeps_its_valid_messages,
    real_library_payloads_reach_profiles_and_timelines,
    duplicates_inside_the_window_are_stored_once,
    clock_skew_is_corrected_with_sent_at,
    concurrent_clients_are_all_stored,
    cors_request_ids_and_operations_endpoints,
);

const WEB_KEY: &str = "wk-web-0123456789";
const APP_KEY: &str = "wk-app-0123456789";
const OPS_TOKEN: &str = "ops-token-0123456789";

const CONFIG: &str = r#"
[server]
write_keys = { website = "wk-web-0123456789", app = "wk-app-0123456789" }
cors_origins = ["https://shop.example.com"]
admin_tokens = [{ name = "ops", role = "viewer", token = "ops-token-0123456789" }]

[identity]
link_on = ["email", "phone", "user_id", "anonymous_id"]
limits = { user_id = 1 }
"#;

fn config() -> Config {
    spindle_config::load_str(
        CONFIG,
        Path::new("connectors.toml"),
        &ProcessSecrets::new(Path::new(".")),
    )
    .unwrap()
}

/// A running server on a loopback port.
struct Server {
    base: String,
    client: reqwest::Client,
    store: Arc<SqlStore>,
    config: Config,
    _writer: Writer,
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().build().unwrap()
}

async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

async fn start(store: &SqlStore) -> Server {
    let config = config();
    let store = Arc::new(store.clone());
    let (collector, writer) = CollectorState::start(store.clone(), &config.server);
    let ops = OpsState::new(store.clone(), &config.server);
    let app = ops::instrument(collector::router(collector).merge(ops::router(ops)));
    Server {
        base: serve(app).await,
        client: client(),
        store,
        config,
        _writer: writer,
    }
}

fn basic(key: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
    )
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

impl Server {
    /// POSTs JSON with the web key as Basic auth.
    async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.send(
            path,
            Some(&basic(WEB_KEY)),
            "application/json",
            None,
            serde_json::to_vec(body).unwrap(),
        )
        .await
    }

    async fn send(
        &self,
        path: &str,
        authorization: Option<&str>,
        content_type: &str,
        encoding: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let mut request = self.client.post(format!("{}{path}", self.base)).body(body);
        if let Some(auth) = authorization {
            request = request.header("authorization", auth);
        }
        if !content_type.is_empty() {
            request = request.header("content-type", content_type);
        }
        if let Some(encoding) = encoding {
            request = request.header("content-encoding", encoding);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{path}: not JSON ({status}): {text}"));
        (status, body)
    }

    async fn record(
        &self,
        source: &str,
        stream: &str,
        id: &str,
    ) -> Option<spindle_model::StoredRecord> {
        self.store
            .record(&RecordKey {
                source: source.into(),
                stream: stream.into(),
                external_id: id.into(),
            })
            .await
            .unwrap()
    }

    async fn resolve(&self) {
        IdentityEngine::new(
            self.store.as_ref(),
            &self.config.identity,
            &self.config.profiles,
        )
        .unwrap()
        .resolve_pending()
        .await
        .unwrap();
    }

    /// The timeline (event names, oldest first) and traits of the profile holding `user_id`.
    async fn profile_of(&self, user_id: &str) -> (Vec<String>, Value) {
        let found = self
            .store
            .profiles_with_identifiers(&[("user_id".to_owned(), user_id.to_owned())])
            .await
            .unwrap();
        assert_eq!(
            found.len(),
            1,
            "one profile holds user_id {user_id}: {found:?}"
        );
        let id = found[0].2;
        let keys: Vec<RecordKey> = self
            .store
            .profile_members(&[id])
            .await
            .unwrap()
            .into_iter()
            .map(|(_, key)| key)
            .collect();
        let records = self.store.records_by_keys(&keys).await.unwrap();
        let refs: Vec<&spindle_model::StoredRecord> = records.iter().collect();
        let timeline = spindle_identity::profile::timeline(&refs)
            .into_iter()
            .map(|e| e.event.name)
            .collect();
        let document = self.store.profile(id).await.unwrap().unwrap().document;
        (timeline, document["traits"].clone())
    }
}

fn assert_refused(
    path: &str,
    (status, body): (StatusCode, Value),
    expected: StatusCode,
    code: &str,
) {
    assert_eq!(status, expected, "{path}: {body}");
    assert_eq!(body["code"], json!(code), "{path}: {body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{path}: a message for people: {body}"
    );
}

async fn every_route_accepts_its_message(store: &SqlStore) {
    let server = start(store).await;
    let messages = [
        (
            "identify",
            json!({"userId": "u1", "traits": {"email": "u1@example.com"}}),
        ),
        (
            "track",
            json!({"userId": "u1", "event": "Order Completed", "properties": {"revenue": 10}}),
        ),
        ("page", json!({"anonymousId": "a1", "name": "Home"})),
        ("screen", json!({"anonymousId": "a1", "name": "Settings"})),
        (
            "group",
            json!({"userId": "u1", "groupId": "acme", "traits": {"name": "Acme"}}),
        ),
        ("alias", json!({"userId": "u1", "previousId": "a1"})),
    ];
    for (type_name, message) in messages {
        let short = &type_name[..1];
        for (n, path) in [format!("/v1/{type_name}"), format!("/v1/{short}")]
            .iter()
            .enumerate()
        {
            let mut message = message.clone();
            let id = format!("{type_name}-{n}");
            message["messageId"] = json!(id);
            let (status, body) = server.post(path, &message).await;
            assert_eq!(status, StatusCode::OK, "{path}: {body}");
            assert_eq!(body["success"], json!(true), "{path}: {body}");
            let stored = server.record("website", type_name, &id).await;
            assert!(stored.is_some(), "{path}: stored in stream {type_name}");
        }
    }
    for path in ["/v1/batch", "/v1/b", "/v1/import"] {
        let id = format!("batch-{}", &path[4..]);
        let (status, body) = server
            .post(
                path,
                &json!({"batch": [{"type": "track", "userId": "u2", "event": "Signed Up", "messageId": id}]}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert_eq!(body["accepted"], json!(1), "{path}: {body}");
        let record = server.record("website", "track", &id).await.unwrap();
        assert_eq!(record.record.events[0].name, "signed_up");
    }
    // The mapping of each type.
    let track = server
        .record("website", "track", "track-0")
        .await
        .unwrap()
        .record;
    assert_eq!(track.events[0].name, "order_completed");
    assert_eq!(track.events[0].properties["revenue"], json!(10));
    let page = server
        .record("website", "page", "page-0")
        .await
        .unwrap()
        .record;
    assert_eq!(page.events[0].name, "page_viewed");
    assert_eq!(page.events[0].properties["name"], json!("Home"));
    let screen = server
        .record("website", "screen", "screen-0")
        .await
        .unwrap()
        .record;
    assert_eq!(screen.events[0].name, "screen_viewed");
    let group = server
        .record("website", "group", "group-0")
        .await
        .unwrap()
        .record;
    assert_eq!(group.traits["group_id"], json!("acme"));
    assert_eq!(group.traits["group"]["name"], json!("Acme"));
    let alias = server
        .record("website", "alias", "alias-0")
        .await
        .unwrap()
        .record;
    let kinds: Vec<(&str, &str)> = alias
        .identifiers
        .iter()
        .map(|i| (i.kind.as_str(), i.value.as_str()))
        .collect();
    assert_eq!(kinds, vec![("user_id", "u1"), ("anonymous_id", "a1")]);
}

async fn bad_requests_get_their_documented_status_and_body(store: &SqlStore) {
    let server = start(store).await;
    let track = json!({"userId": "u1", "event": "Clicked", "messageId": "never-stored"});
    let track_bytes = serde_json::to_vec(&track).unwrap();
    let auth = basic(WEB_KEY);
    let auth = Some(auth.as_str());
    let json_type = "application/json";

    // Malformed JSON, and JSON that is not an object.
    for path in ["/v1/track", "/v1/batch"] {
        let refused = server
            .send(path, auth, json_type, None, b"{\"userId\": ".to_vec())
            .await;
        assert_refused(path, refused, StatusCode::BAD_REQUEST, "invalid_json");
        let refused = server
            .send(path, auth, json_type, None, b"[1, 2]".to_vec())
            .await;
        assert_refused(path, refused, StatusCode::BAD_REQUEST, "invalid_json");
    }
    let refused = server
        .post("/v1/batch", &json!({"batch": {"type": "track"}}))
        .await;
    assert_refused(
        "batch not an array",
        refused,
        StatusCode::BAD_REQUEST,
        "invalid_batch",
    );
    let refused = server.post("/v1/batch", &json!({"messages": []})).await;
    assert_refused(
        "no batch",
        refused,
        StatusCode::BAD_REQUEST,
        "invalid_batch",
    );

    // Content types and encodings.
    let refused = server
        .send(
            "/v1/track",
            auth,
            "application/xml",
            None,
            track_bytes.clone(),
        )
        .await;
    assert_refused(
        "xml",
        refused,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_content_type",
    );
    let refused = server
        .send("/v1/track", auth, "", None, track_bytes.clone())
        .await;
    assert_refused(
        "no type",
        refused,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_content_type",
    );
    let refused = server
        .send(
            "/v1/track",
            auth,
            json_type,
            Some("br"),
            track_bytes.clone(),
        )
        .await;
    assert_refused(
        "brotli",
        refused,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_encoding",
    );
    let refused = server
        .send(
            "/v1/track",
            auth,
            json_type,
            Some("gzip"),
            track_bytes.clone(),
        )
        .await;
    assert_refused("not gzip", refused, StatusCode::BAD_REQUEST, "invalid_gzip");

    // Sizes: 32 KiB per call, 500 KiB per batch, 2,500 messages, all after decompression.
    let padding = "x".repeat(33 * 1024);
    let big = json!({"userId": "u1", "event": "Big", "properties": {"pad": padding}});
    let refused = server.post("/v1/track", &big).await;
    assert_refused("big call", refused, StatusCode::BAD_REQUEST, "too_large");
    let big_gzip = gzip(&serde_json::to_vec(&big).unwrap());
    assert!(big_gzip.len() < 2_000);
    let refused = server
        .send("/v1/track", auth, json_type, Some("gzip"), big_gzip)
        .await;
    assert_refused(
        "big gzip call",
        refused,
        StatusCode::BAD_REQUEST,
        "too_large",
    );
    let message = json!({"type": "track", "userId": "u1", "event": "E", "properties": {"pad": "y".repeat(20_000)}});
    let batch = json!({"batch": vec![message; 30]});
    let refused = server.post("/v1/batch", &batch).await;
    assert_refused("big batch", refused, StatusCode::BAD_REQUEST, "too_large");
    let refused = server
        .send(
            "/v1/batch",
            auth,
            json_type,
            Some("gzip"),
            gzip(&serde_json::to_vec(&batch).unwrap()),
        )
        .await;
    assert_refused(
        "big gzip batch",
        refused,
        StatusCode::BAD_REQUEST,
        "too_large",
    );
    let small = json!({"type": "track", "userId": "u1", "event": "E"});
    let refused = server
        .post("/v1/batch", &json!({"batch": vec![small; 2_501]}))
        .await;
    assert_refused(
        "2,501 messages",
        refused,
        StatusCode::BAD_REQUEST,
        "too_many_events",
    );

    // Write keys.
    let refused = server
        .send("/v1/track", None, json_type, None, track_bytes.clone())
        .await;
    assert_refused("no key", refused, StatusCode::UNAUTHORIZED, "unauthorized");
    let wrong = basic("wk-wrong");
    let refused = server
        .send(
            "/v1/track",
            Some(&wrong),
            json_type,
            None,
            track_bytes.clone(),
        )
        .await;
    assert_refused(
        "wrong key",
        refused,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    let refused = server
        .send(
            "/v1/track",
            Some("Bearer whatever"),
            json_type,
            None,
            track_bytes.clone(),
        )
        .await;
    assert_refused("bearer", refused, StatusCode::UNAUTHORIZED, "unauthorized");
    let refused = server
        .send(
            "/v1/track",
            Some("Basic %%%"),
            json_type,
            None,
            track_bytes.clone(),
        )
        .await;
    assert_refused(
        "malformed basic",
        refused,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    // A wrong header is refused even with a right key in the body.
    let mut with_key = track.clone();
    with_key["writeKey"] = json!(WEB_KEY);
    let refused = server
        .send(
            "/v1/t",
            Some(&wrong),
            "text/plain",
            None,
            serde_json::to_vec(&with_key).unwrap(),
        )
        .await;
    assert_refused(
        "wrong header, right body",
        refused,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    let mut wrong_body = track.clone();
    wrong_body["writeKey"] = json!("nope");
    let refused = server
        .send(
            "/v1/t",
            None,
            "text/plain",
            None,
            serde_json::to_vec(&wrong_body).unwrap(),
        )
        .await;
    assert_refused(
        "wrong body key",
        refused,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    let response = server
        .client
        .post(format!("{}/v1/track", server.base))
        .header("content-type", json_type)
        .body(track_bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["www-authenticate"],
        "Basic realm=\"spindle collector\""
    );

    // A single call whose message is refused: 400 with the message's own code.
    let cases = [
        (
            "/v1/track",
            json!({"event": "x", "userId": null, "anonymousId": null}),
            "missing_user_id",
        ),
        ("/v1/track", json!({"userId": "u1"}), "missing_event"),
        (
            "/v1/track",
            json!({"userId": "u1", "event": "x", "timestamp": "last tuesday"}),
            "invalid_timestamp",
        ),
        (
            "/v1/page",
            json!({"userId": "u1", "sentAt": "2025-13-45T99:00:00Z"}),
            "invalid_timestamp",
        ),
        ("/v1/group", json!({"userId": "u1"}), "missing_group_id"),
        ("/v1/alias", json!({"previousId": "a1"}), "missing_user_id"),
        (
            "/v1/identify",
            json!({"userId": "u1", "traits": "not an object"}),
            "invalid_field",
        ),
    ];
    for (path, message, code) in cases {
        assert_refused(
            path,
            server.post(path, &message).await,
            StatusCode::BAD_REQUEST,
            code,
        );
    }
    // Unknown type: only a batch names types.
    let (status, body) = server
        .post(
            "/v1/batch",
            &json!({"batch": [{"type": "purchase", "userId": "u1"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["rejected"][0]["code"], json!("unknown_type"), "{body}");

    assert_eq!(
        store.count_records(None).await.unwrap(),
        0,
        "nothing refused was stored"
    );
}

async fn a_batch_keeps_its_valid_messages(store: &SqlStore) {
    let server = start(store).await;
    let batch = json!({
        "batch": [
            {"type": "track", "userId": "u1", "event": "Kept One", "messageId": "ok-1"},
            {"type": "track", "event": "No Ids", "messageId": "bad-1"},
            {"type": "teleport", "userId": "u1", "messageId": "bad-2"},
            {"type": "track", "userId": "u1", "event": "Bad Time", "timestamp": "soon", "messageId": "bad-3"},
            "not an object",
            {"type": "track", "userId": "u1", "event": "Huge", "properties": {"pad": "z".repeat(33 * 1024)}, "messageId": "bad-5"},
            {"type": "identify", "anonymousId": "a9", "traits": {"email": "a9@example.com"}, "messageId": "ok-2"},
            {"type": "track", "userId": "u1", "messageId": "bad-7"},
        ],
        "sentAt": "2025-01-02T03:04:05.000Z",
    });
    let (status, body) = server.post("/v1/batch", &batch).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], json!(2), "{body}");
    let rejected: Vec<(u64, &str)> = body["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["index"].as_u64().unwrap(), r["code"].as_str().unwrap()))
        .collect();
    assert_eq!(
        rejected,
        vec![
            (1, "missing_user_id"),
            (2, "unknown_type"),
            (3, "invalid_timestamp"),
            (4, "invalid_message"),
            (5, "message_too_large"),
            (7, "missing_event"),
        ]
    );
    assert!(server.record("website", "track", "ok-1").await.is_some());
    assert!(server.record("website", "identify", "ok-2").await.is_some());
    assert_eq!(store.count_records(None).await.unwrap(), 2);
}

async fn real_library_payloads_reach_profiles_and_timelines(store: &SqlStore) {
    let server = start(store).await;
    let library = |name: &str| json!({"library": {"name": name, "version": "2.4.0"}});
    // segment-analytics-python, gzip=True: only /v1/batch, key in header and body, explicit nulls.
    let python = json!({
        "batch": [
            {"type": "identify", "userId": "user-42", "anonymousId": null, "traits": {"email": "Grace@Example.com", "firstName": "Grace"},
             "context": library("analytics-python"), "timestamp": "2025-01-02T03:04:05.734614+00:00",
             "messageId": "7f9c2d5e-1b3a-4c8e-9f0d-2a6b8c4e1f3a", "integrations": {}},
            {"type": "track", "userId": "user-42", "anonymousId": null, "event": "Order Completed",
             "properties": {"revenue": 39.95, "currency": "EUR"}, "context": library("analytics-python"),
             "timestamp": "2025-01-02T03:03:07.000+00:00", "messageId": "8a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d", "integrations": {}},
        ],
        "sentAt": "2025-01-02T03:04:07.000+00:00",
        "writeKey": WEB_KEY,
    });
    let (status, body) = server
        .send(
            "/v1/batch",
            Some(&basic(WEB_KEY)),
            "application/json",
            Some("gzip"),
            gzip(&serde_json::to_vec(&python).unwrap()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], json!(2), "{body}");

    // @segment/analytics-node: no gzip, node-next message ids, _metadata, Z timestamps.
    let node = json!({
        "batch": [
            {"type": "page", "userId": "user-42", "name": "Pricing", "category": "Docs", "properties": {"path": "/pricing"},
             "context": library("@segment/analytics-node"), "_metadata": {"jsRuntime": "node"},
             "timestamp": "2025-01-02T03:04:31.000Z", "messageId": "node-next-1735787100000-0b6a3c1e-52d4-4f1c-a3d2-7e9b1c0d5f6a"},
        ],
        "sentAt": "2025-01-02T03:05:01.000Z",
        "writeKey": WEB_KEY,
    });
    let (status, body) = server.post("/v1/batch", &node).await;
    assert_eq!(
        (status, &body["accepted"]),
        (StatusCode::OK, &json!(1)),
        "{body}"
    );

    // RudderStack Node: gzipped JSON under a form content type, originalTimestamp and a per-event sentAt,
    // traits only in context.traits; the app's key.
    let rudder = json!({
        "batch": [
            {"type": "identify", "userId": "user-77", "anonymousId": "anon-77", "channel": "server",
             "context": {"traits": {"email": "linus@example.com", "plan": "pro"}, "library": {"name": "@rudderstack/rudder-sdk-node"}},
             "originalTimestamp": "2025-01-02T03:04:05+00:00", "sentAt": "2025-01-02T03:04:06+00:00",
             "integrations": {"All": true}, "messageId": "rudder-1"},
        ],
        "timestamp": "2025-01-02T03:04:06+00:00",
    });
    let (status, body) = server
        .send(
            "/v1/batch",
            Some(&basic(APP_KEY)),
            "application/x-www-form-urlencoded",
            Some("gzip"),
            gzip(&serde_json::to_vec(&rudder).unwrap()),
        )
        .await;
    assert_eq!(
        (status, &body["accepted"]),
        (StatusCode::OK, &json!(1)),
        "{body}"
    );

    // analytics.js in a browser: text/plain on a short path, the key in the body, then the visitor logs in.
    let browser_track = json!({
        "type": "track", "anonymousId": "anon-browser-1", "event": "Product Viewed", "properties": {"sku": "A-1"},
        "context": library("analytics.js"), "writeKey": WEB_KEY, "messageId": "ajs-next-1",
        "timestamp": "2025-01-02T02:50:00.000Z", "sentAt": "2025-01-02T03:00:00.000Z",
    });
    let browser_identify = json!({
        "type": "identify", "anonymousId": "anon-browser-1", "userId": "user-42", "traits": {},
        "context": library("analytics.js"), "writeKey": WEB_KEY, "messageId": "ajs-next-2",
    });
    for (path, message) in [("/v1/t", browser_track), ("/v1/i", browser_identify)] {
        let (status, body) = server
            .send(
                path,
                None,
                "text/plain;charset=UTF-8",
                None,
                serde_json::to_vec(&message).unwrap(),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }

    // Records are stored under the key's source, then resolution builds the profiles.
    assert!(server.record("app", "identify", "rudder-1").await.is_some());
    assert_eq!(store.count_records(Some("website")).await.unwrap(), 5);
    server.resolve().await;
    // With skew correction the events happened 10 min (product viewed), 60 s (order) and 30 s (page) before
    // their requests arrived.
    let (timeline, traits) = server.profile_of("user-42").await;
    assert_eq!(
        timeline,
        vec!["product_viewed", "order_completed", "page_viewed"],
        "the anonymous browsing joined the profile through the identify call"
    );
    assert_eq!(traits["first_name"]["value"], json!("Grace"));
    assert_eq!(traits["email"]["value"], json!("Grace@Example.com"));
    let (timeline, traits) = server.profile_of("user-77").await;
    assert!(timeline.is_empty());
    assert_eq!(traits["plan"]["value"], json!("pro"));
    assert_eq!(traits["email"]["value"], json!("linus@example.com"));
}

async fn duplicates_inside_the_window_are_stored_once(store: &SqlStore) {
    let server = start(store).await;
    let message = json!({"userId": "u1", "event": "Clicked", "messageId": "dup-1"});
    let (status, body) = server.post("/v1/track", &message).await;
    assert_eq!(
        (status, &body["duplicate"]),
        (StatusCode::OK, &json!(false)),
        "{body}"
    );
    let first = server.record("website", "track", "dup-1").await.unwrap();
    // Again alone, twice in one batch, and under the short path: acknowledged, not stored again.
    let (status, body) = server.post("/v1/t", &message).await;
    assert_eq!(
        (status, &body["duplicate"]),
        (StatusCode::OK, &json!(true)),
        "{body}"
    );
    let mut in_batch = message.clone();
    in_batch["type"] = json!("track");
    let mut fresh = in_batch.clone();
    fresh["messageId"] = json!("dup-2");
    let (status, body) = server
        .post(
            "/v1/batch",
            &json!({"batch": [in_batch, fresh.clone(), fresh]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (&body["accepted"], &body["duplicates"]),
        (&json!(1), &json!(2)),
        "{body}"
    );
    assert_eq!(
        server.record("website", "track", "dup-1").await.unwrap(),
        first
    );
    assert_eq!(store.count_records(None).await.unwrap(), 2);
    // The same id from another source is another message.
    let (_, body) = server
        .send(
            "/v1/track",
            Some(&basic(APP_KEY)),
            "application/json",
            None,
            serde_json::to_vec(&message).unwrap(),
        )
        .await;
    assert_eq!(body["duplicate"], json!(false));

    // Outside the window a repeated id is stored again (it replaces the old message).
    let (collector, _writer) = CollectorState::with_keys(
        server.store.clone(),
        WriteKeys::from_pairs([("website", WEB_KEY)]),
        Vec::new(),
        Duration::ZERO,
    );
    let base = serve(collector::router(collector)).await;
    let forgetful = Server {
        base,
        ..start(store).await
    };
    tokio::time::sleep(Duration::from_millis(5)).await;
    let (_, body) = forgetful.post("/v1/track", &message).await;
    assert_eq!(body["duplicate"], json!(false), "{body}");
    let replaced = forgetful.record("website", "track", "dup-1").await.unwrap();
    assert!(replaced.seq > first.seq && replaced.record.version > first.record.version);
}

async fn clock_skew_is_corrected_with_sent_at(store: &SqlStore) {
    let server = start(store).await;
    // The client's clock is an hour fast; the event happened 5 s before the batch was sent.
    let client_now = Utc::now() + chrono::Duration::hours(1);
    let iso = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let before = Utc::now();
    let (status, body) = server
        .post(
            "/v1/batch",
            &json!({
                "batch": [
                    {"type": "track", "userId": "u1", "event": "Skewed", "messageId": "skew-1",
                     "timestamp": iso(client_now - chrono::Duration::seconds(5))},
                    {"type": "track", "userId": "u1", "event": "Historical", "messageId": "skew-2",
                     "timestamp": "2020-06-01T00:00:00.000Z", "sentAt": null},
                ],
                "sentAt": iso(client_now),
            }),
        )
        .await;
    let after = Utc::now();
    assert_eq!(status, StatusCode::OK, "{body}");
    let record = server
        .record("website", "track", "skew-1")
        .await
        .unwrap()
        .record;
    let at = record.events[0].occurred_at;
    // receivedAt − (sentAt − timestamp) = receivedAt − 5 s, with receivedAt inside the request.
    let five = chrono::Duration::seconds(5);
    let slack = chrono::Duration::milliseconds(1);
    assert!(
        at >= before - five - slack && at <= after - five + slack,
        "{at} not within [{}, {}]",
        before - five,
        after - five
    );
    assert_eq!(record.updated_at, Some(at));
    assert_eq!(
        record.events[0].properties["original_timestamp"],
        json!(iso(client_now - five))
    );
    // The batch's sentAt applies to messages that carry none of their own (an explicit null included).
    let historical = server
        .record("website", "track", "skew-2")
        .await
        .unwrap()
        .record;
    let corrected = historical.events[0].occurred_at;
    assert!(
        corrected < before,
        "2020 minus an hour of skew stays in the past"
    );
    assert!(corrected > DateTime::parse_from_rfc3339("2019-01-01T00:00:00Z").unwrap());
}

async fn concurrent_clients_are_all_stored(store: &SqlStore) {
    let server = Arc::new(start(store).await);
    const CLIENTS: usize = 32;
    const BATCHES: usize = 5;
    const EVENTS: usize = 20;
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            for batch in 0..BATCHES {
                let events: Vec<Value> = (0..EVENTS)
                    .map(|e| json!({"type": "track", "anonymousId": format!("c{client}"), "event": "Tick",
                                    "messageId": format!("c{client}-b{batch}-e{e}")}))
                    .collect();
                let (status, body) = server.post("/v1/batch", &json!({"batch": events})).await;
                assert_eq!(status, StatusCode::OK, "{body}");
                assert_eq!(body["accepted"], json!(EVENTS));
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        store.count_records(Some("website")).await.unwrap(),
        (CLIENTS * BATCHES * EVENTS) as u64
    );
}

async fn cors_request_ids_and_operations_endpoints(store: &SqlStore) {
    let server = start(store).await;
    let client = &server.client;
    let url = |path: &str| format!("{}{path}", server.base);

    // CORS preflight from the configured origin, and from another.
    let preflight = |origin: &'static str| {
        client
            .request(reqwest::Method::OPTIONS, url("/v1/t"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let allowed = preflight("https://shop.example.com").await.unwrap();
    assert!(allowed.status().is_success(), "{}", allowed.status());
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://shop.example.com"
    );
    assert!(
        allowed.headers()["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    let other = preflight("https://evil.example.net").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    // The actual browser request carries the header back too.
    let message =
        json!({"type": "page", "anonymousId": "a1", "writeKey": WEB_KEY, "messageId": "cors-1"});
    let response = client
        .post(url("/v1/p"))
        .header("origin", "https://shop.example.com")
        .header("content-type", "text/plain")
        .body(serde_json::to_vec(&message).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://shop.example.com"
    );

    // Request ids: made up when missing, echoed when sent.
    let response = client.get(url("/healthz")).send().await.unwrap();
    let made = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(made.len(), 36, "a UUID: {made}");
    let response = client
        .get(url("/healthz"))
        .header("x-request-id", "req-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "req-123");

    // /healthz needs nothing; /readyz and /metrics need an admin-API token of any role.
    let health: Value = client
        .get(url("/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health, json!({"status": "ok"}));
    for path in ["/readyz", "/metrics"] {
        let response = client.get(url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], json!("unauthorized"));
        let response = client
            .get(url(path))
            .bearer_auth(WEB_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{path}: a write key is not a token"
        );
    }
    let ready: Value = client
        .get(url("/readyz"))
        .bearer_auth(OPS_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        ready,
        json!({"status": "ready", "schema_version": spindle_store::latest_version()})
    );

    // Metrics: counters by reason, latency histograms by route, gauges from the store.
    let bad = server.post("/v1/track", &json!({"event": "x"})).await;
    assert_eq!(bad.0, StatusCode::BAD_REQUEST);
    server.resolve().await;
    let response = client
        .get(url("/metrics"))
        .bearer_auth(OPS_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    for expected in [
        "spindle_collector_received_total{source=\"website\"}",
        "spindle_collector_stored_total{source=\"website\"}",
        "spindle_collector_rejected_total{reason=\"missing_user_id\"}",
        "spindle_http_request_duration_seconds_bucket{route=\"/v1/p\",method=\"POST\",status=\"200\"",
        "spindle_collector_commit_duration_seconds_bucket",
        "spindle_records{source=\"website\"} 1",
        "spindle_profiles 1",
    ] {
        assert!(
            text.contains(expected),
            "/metrics lacks `{expected}`:\n{text}"
        );
    }
    assert!(!text.contains(WEB_KEY) && !text.contains(OPS_TOKEN));
}
