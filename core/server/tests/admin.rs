//! The admin API driven in-process (`tower::ServiceExt::oneshot`) over a real store, on both backends:
//! roles on every route class, the audit log, config-owned segments, expression errors, profiles, syncs,
//! sources and the OpenAPI document.

#![allow(clippy::unwrap_used)] // a test file: a failed unwrap is a failed assertion

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use chrono::{TimeZone, Utc};
use serde_json::{Value, json};
use spindle_config::secret::ProcessSecrets;
use spindle_identity::IdentityEngine;
use spindle_model::{Event, Identifier, JobCounts, JobId, JobStatus, JobTrigger, RawRecord};
use spindle_scheduler::{ScheduledJob, Scheduler, SystemClock};
use spindle_server::admin::{AdminState, router};
use spindle_store::{ProfileStore, SourceBatch, SqlStore};
use tower::ServiceExt;

spindle_testkit::store_backends!(
    each_role_on_each_route_class,
    writes_are_audited_with_the_token_name,
    config_owned_segments_are_refused,
    invalid_expressions_are_422_with_the_column,
    segments_side_by_side_and_previews,
    profiles_by_id_identifier_search_timeline_and_explain,
    syncs_list_dry_run_history_dead_letters_and_replay,
    sources_list_status_and_run,
);

const ADMIN: &str = "admin-secret-0123456789";
const MARKETER: &str = "marketer-secret-0123456789";
const VIEWER: &str = "viewer-secret-0123456789";

/// A route class: its name, a request, and the status expected for each caller.
type RouteClass = (&'static str, Method, String, Option<Value>, [u16; 5]);

struct World {
    app: Router,
    store: SqlStore,
    config: Arc<spindle_config::Config>,
    _scheduler: Scheduler,
    _dir: tempfile::TempDir,
}

fn person(id: &str, email: &str, first: &str, tier: &str, orders: usize) -> RawRecord {
    RawRecord {
        stream: "contacts".into(),
        external_id: id.into(),
        version: 1,
        updated_at: None,
        deleted: false,
        identifiers: vec![Identifier::new("email", email)],
        traits: [
            ("first_name".to_owned(), json!(first)),
            ("tier".to_owned(), json!(tier)),
        ]
        .into_iter()
        .collect(),
        events: (0..orders)
            .map(|i| Event {
                name: "order_completed".into(),
                occurred_at: Utc
                    .timestamp_opt(1_700_000_000 + i as i64 * 86_400, 0)
                    .unwrap(),
                properties: BTreeMap::from([("n".to_owned(), json!(i))]),
            })
            .collect(),
    }
}

impl World {
    async fn new(store: &SqlStore) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("crm.csv"), "Email\n").unwrap();
        let text = format!(
            r#"
[server]
admin_tokens = [
  {{ name = "ops-admin", role = "admin", token = "{ADMIN}" }},
  {{ name = "mkt", role = "marketer", token = "{MARKETER}" }},
  {{ name = "look", role = "viewer", token = "{VIEWER}" }},
]

[identity]
link_on = ["email"]

[sources.crm]
kind = "csv"
path = "crm.csv"
identifiers = {{ email = "Email" }}

[segments.gold]
where = 'tier = "gold"'
description = "gold customers"

[destinations.hook]
plugin = "webhook"
allow_hosts = ["https://hooks.example.com"]
config = {{ url = "https://hooks.example.com/in" }}

[syncs.gold-hook]
segment = "gold"
destination = "hook"
mode = "mirror"
fields = {{ email = "email", first = "first_name" }}
"#
        );
        let config = Arc::new(
            spindle_config::load_str(
                &text,
                &dir.path().join("connectors.toml"),
                &ProcessSecrets::new(dir.path()),
            )
            .unwrap(),
        );
        store
            .apply_source_batch(
                "crm",
                SourceBatch {
                    records: vec![
                        person("1", "ada@x.io", "Ada", "gold", 3),
                        person("2", "bob@x.io", "Bob", "gold", 0),
                        person("3", "cy@x.io", "Cy", "silver", 1),
                    ],
                    ..SourceBatch::default()
                },
            )
            .await
            .unwrap();
        IdentityEngine::new(store, &config.identity, &config.profiles)
            .unwrap()
            .resolve_pending()
            .await
            .unwrap();
        let jobs = vec![
            ScheduledJob {
                id: JobId::source("crm"),
                schedule: None,
            },
            ScheduledJob {
                id: JobId::sync("gold-hook"),
                schedule: None,
            },
        ];
        // Not run: triggers wait in their queue, which is all "run now" needs.
        let scheduler = Scheduler::new(jobs, Arc::new(SystemClock));
        let state = AdminState::new(config.clone(), Arc::new(store.clone()), scheduler.handle());
        Self {
            app: Router::new().nest("/api", router(state)),
            store: store.clone(),
            config,
            _scheduler: scheduler,
            _dir: dir,
        }
    }

    async fn call(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, HeaderMap, Value) {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = match body {
            Some(body) => request
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string())),
            None => request.body(Body::empty()),
        }
        .unwrap();
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                panic!(
                    "{uri}: body is not JSON: {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        (status, headers, value)
    }

    async fn get(&self, uri: &str, token: &str) -> (StatusCode, Value) {
        let (status, _, body) = self.call(Method::GET, uri, Some(token), None).await;
        (status, body)
    }

    async fn profile_id(&self, email: &str) -> i64 {
        let (status, body) = self
            .get(&format!("/api/profiles/lookup?email={email}"), VIEWER)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["id"].as_i64().unwrap()
    }
}

async fn each_role_on_each_route_class(store: &SqlStore) {
    let world = World::new(store).await;
    let profile = {
        let (_, body) = world
            .get("/api/profiles/lookup?email=ada@x.io", VIEWER)
            .await;
        body["id"].as_i64().unwrap()
    };
    let callers: [(&str, Option<&str>); 5] = [
        ("no token", None),
        ("wrong token", Some("not-a-token")),
        ("viewer", Some(VIEWER)),
        ("marketer", Some(MARKETER)),
        ("admin", Some(ADMIN)),
    ];
    // Expected status per caller, in the order of `callers`.
    let classes: [RouteClass; 6] = [
        (
            "read profiles",
            Method::GET,
            format!("/api/profiles/{profile}"),
            None,
            [401, 401, 200, 200, 200],
        ),
        (
            "read segments",
            Method::GET,
            "/api/segments".into(),
            None,
            [401, 401, 200, 200, 200],
        ),
        (
            "write segments",
            Method::POST,
            "/api/segments".into(),
            Some(json!({ "where": "tier = \"silver\"" })),
            [401, 401, 403, 201, 201],
        ),
        (
            "run syncs",
            Method::POST,
            "/api/syncs/gold-hook/run".into(),
            None,
            [401, 401, 403, 202, 202],
        ),
        (
            "run sources",
            Method::POST,
            "/api/sources/crm/run".into(),
            None,
            [401, 401, 403, 403, 202],
        ),
        (
            "audit",
            Method::GET,
            "/api/audit".into(),
            None,
            [401, 401, 403, 403, 200],
        ),
    ];
    for (class, method, uri, body, expected) in &classes {
        for ((who, token), want) in callers.iter().zip(expected) {
            // Each successful segment creation needs an id of its own.
            let body = body.clone().map(|mut b| {
                b["id"] = json!(format!("s-{}", who.replace(' ', "-")));
                b
            });
            let (status, headers, answer) = world.call(method.clone(), uri, *token, body).await;
            assert_eq!(
                status.as_u16(),
                *want,
                "{who} on {class} ({method} {uri}): {answer}"
            );
            match *want {
                401 => {
                    assert_eq!(answer["error"]["code"], "unauthorized", "{who} on {class}");
                    assert!(
                        headers[header::WWW_AUTHENTICATE]
                            .to_str()
                            .unwrap()
                            .starts_with("Bearer"),
                        "{who} on {class}"
                    );
                    assert!(!answer["error"]["message"].as_str().unwrap().is_empty());
                }
                403 => {
                    assert_eq!(answer["error"]["code"], "forbidden", "{who} on {class}");
                    assert!(
                        answer["error"]["message"]
                            .as_str()
                            .unwrap()
                            .contains("may not"),
                        "{answer}"
                    );
                }
                _ => {}
            }
        }
    }
    // A malformed header is a 401 too, and so is a token of another scheme.
    for value in ["Bearer", "Basic YWRtaW46", ADMIN] {
        let request = Request::get("/api/segments")
            .header(header::AUTHORIZATION, value)
            .body(Body::empty())
            .unwrap();
        let response = world.app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{value}");
    }
}

async fn writes_are_audited_with_the_token_name(store: &SqlStore) {
    let world = World::new(store).await;
    let w = &world;
    let (status, _, body) = w
        .call(
            Method::POST,
            "/api/segments",
            Some(MARKETER),
            Some(json!({ "id": "silver", "where": "tier = \"silver\"", "description": "silver ones" })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["origin"], "api");
    assert_eq!(body["created_by"], "api:mkt");
    let (status, _, body) = w
        .call(
            Method::PUT,
            "/api/segments/silver",
            Some(ADMIN),
            Some(json!({ "where": "tier in [\"silver\", \"bronze\"]" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["updated_by"], "api:ops-admin");
    assert_eq!(body["created_by"], "api:mkt");
    // Reads, previews and dry runs are not writes.
    w.get("/api/segments", VIEWER).await;
    w.call(
        Method::POST,
        "/api/segments/preview",
        Some(MARKETER),
        Some(json!({ "where": "tier = \"gold\"" })),
    )
    .await;
    let (status, _, body) = w
        .call(
            Method::POST,
            "/api/syncs/gold-hook/dry-run",
            Some(MARKETER),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, _) = w
        .call(Method::DELETE, "/api/segments/silver", Some(MARKETER), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, _) = w
        .call(
            Method::POST,
            "/api/syncs/gold-hook/run",
            Some(MARKETER),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _, body) = w
        .call(
            Method::POST,
            "/api/syncs/gold-hook/dead-letters/replay",
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["replayed"], 0);
    let (status, _, _) = w
        .call(Method::POST, "/api/sources/crm/run", Some(ADMIN), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // Refused writes leave no entry.
    w.call(
        Method::POST,
        "/api/segments",
        Some(VIEWER),
        Some(json!({ "id": "x", "where": "true" })),
    )
    .await;
    w.call(Method::DELETE, "/api/segments/gold", Some(ADMIN), None)
        .await;

    let (status, log) = w.get("/api/audit", ADMIN).await;
    assert_eq!(status, StatusCode::OK, "{log}");
    let entries: Vec<(String, String, String)> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap().to_owned(),
                e["action"].as_str().unwrap().to_owned(),
                e["target"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String, String)> = [
        ("api:mkt", "segment.create", "silver"),
        ("api:ops-admin", "segment.update", "silver"),
        ("api:mkt", "segment.delete", "silver"),
        ("api:mkt", "sync.run", "gold-hook"),
        ("api:ops-admin", "sync.replay", "gold-hook"),
        ("api:ops-admin", "source.run", "crm"),
    ]
    .iter()
    .map(|(a, b, c)| ((*a).to_owned(), (*b).to_owned(), (*c).to_owned()))
    .collect();
    assert_eq!(entries, expected);
    assert_eq!(log[0]["details"]["where"], "tier = \"silver\"");
    let text = log.to_string();
    for secret in [ADMIN, MARKETER, VIEWER] {
        assert!(!text.contains(secret), "the audit log holds a token");
    }
    // Paging by id.
    let first = log[0]["id"].as_i64().unwrap();
    let (_, rest) = w
        .get(&format!("/api/audit?after={first}&limit=2"), ADMIN)
        .await;
    assert_eq!(rest.as_array().unwrap().len(), 2);
    assert_eq!(rest[0]["action"], "segment.update");
}

async fn config_owned_segments_are_refused(store: &SqlStore) {
    let world = World::new(store).await;
    let (status, gold) = world.get("/api/segments/gold", VIEWER).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(gold["origin"], "config");
    assert_eq!(gold["description"], "gold customers");
    let attempts = [
        (
            Method::PUT,
            "/api/segments/gold",
            Some(json!({ "where": "true" })),
        ),
        (Method::DELETE, "/api/segments/gold", None),
        (
            Method::POST,
            "/api/segments",
            Some(json!({ "id": "gold", "where": "true" })),
        ),
    ];
    for (method, uri, body) in attempts {
        let (status, _, answer) = world.call(method.clone(), uri, Some(ADMIN), body).await;
        assert_eq!(status, StatusCode::CONFLICT, "{method} {uri}: {answer}");
        assert_eq!(answer["error"]["code"], "conflict");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("connectors.toml"),
            "{answer}"
        );
    }
    let (_, gold) = world.get("/api/segments/gold", VIEWER).await;
    assert_eq!(gold["where"], "tier = \"gold\"");
    // An API segment: taken ids, unknown ids, bad ids.
    let body = json!({ "id": "vip", "where": "tier = \"gold\"" });
    let (status, _, _) = world
        .call(
            Method::POST,
            "/api/segments",
            Some(ADMIN),
            Some(body.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _, _) = world
        .call(Method::POST, "/api/segments", Some(ADMIN), Some(body))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _, _) = world
        .call(
            Method::PUT,
            "/api/segments/nope",
            Some(ADMIN),
            Some(json!({ "where": "true" })),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = world
        .call(Method::DELETE, "/api/segments/nope", Some(ADMIN), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, answer) = world
        .call(
            Method::POST,
            "/api/segments",
            Some(ADMIN),
            Some(json!({ "id": "Bad Id", "where": "true" })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let (status, _, answer) = world
        .call(
            Method::POST,
            "/api/segments",
            Some(ADMIN),
            Some(json!({ "id": "x" })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["error"]["code"], "bad_request");
    // A segment others use cannot go.
    let (status, _, _) = world
        .call(
            Method::POST,
            "/api/segments",
            Some(ADMIN),
            Some(json!({ "id": "vip-fr", "where": "in_segment(\"vip\")" })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _, answer) = world
        .call(Method::DELETE, "/api/segments/vip", Some(ADMIN), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("vip-fr")
    );
}

async fn invalid_expressions_are_422_with_the_column(store: &SqlStore) {
    let world = World::new(store).await;
    let (status, _, answer) = world
        .call(
            Method::POST,
            "/api/segments",
            Some(MARKETER),
            Some(json!({ "id": "broken", "where": "total_spent >" })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    let error = &answer["error"];
    assert_eq!(error["code"], "invalid_expression");
    assert_eq!(error["details"]["line"], 1);
    assert_eq!(error["details"]["column"], 14);
    assert!(
        error["message"].as_str().unwrap().contains("column 14"),
        "{answer}"
    );
    assert!(
        error["details"]["rendered"]
            .as_str()
            .unwrap()
            .contains("^ here")
    );
    // An unknown segment, pointed at.
    let text = "tier = \"gold\" and in_segment(\"platinum\")";
    let (status, _, answer) = world
        .call(
            Method::POST,
            "/api/segments",
            Some(MARKETER),
            Some(json!({ "id": "p", "where": text })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("platinum")
    );
    assert_eq!(answer["error"]["details"]["column"], 30, "{answer}");
    // A cycle through an update.
    for (id, text) in [("a", "tier = \"x\""), ("b", "in_segment(\"a\")")] {
        let (status, _, answer) = world
            .call(
                Method::POST,
                "/api/segments",
                Some(MARKETER),
                Some(json!({ "id": id, "where": text })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
    }
    let (status, _, answer) = world
        .call(
            Method::PUT,
            "/api/segments/a",
            Some(MARKETER),
            Some(json!({ "where": "in_segment(\"b\")" })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cycle"),
        "{answer}"
    );
    // Preview refuses a bad expression the same way; nothing was stored by the refusals.
    let (status, _, answer) = world
        .call(
            Method::POST,
            "/api/segments/preview",
            Some(VIEWER),
            Some(json!({ "where": "tier = " })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    let (_, list) = world.get("/api/segments", VIEWER).await;
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["gold", "a", "b"]);
    let (_, a) = world.get("/api/segments/a", VIEWER).await;
    assert_eq!(a["where"], "tier = \"x\"");
}

async fn segments_side_by_side_and_previews(store: &SqlStore) {
    let world = World::new(store).await;
    let (status, _, _) = world
        .call(
            Method::POST,
            "/api/segments",
            Some(MARKETER),
            Some(json!({ "id": "gold-buyers", "where": "in_segment(\"gold\") and count(order_completed) >= 1" })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, list) = world.get("/api/segments", VIEWER).await;
    assert_eq!(status, StatusCode::OK);
    let origins: Vec<(&str, &str)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["id"].as_str().unwrap(), s["origin"].as_str().unwrap()))
        .collect();
    assert_eq!(origins, [("gold", "config"), ("gold-buyers", "api")]);
    let (status, preview) = world
        .get("/api/segments/gold/preview?sample=1", VIEWER)
        .await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    assert_eq!(preview["count"], 2);
    assert_eq!(preview["sample"].as_array().unwrap().len(), 1);
    assert_eq!(preview["sample"][0]["email"], "ada@x.io");
    // An API segment that uses a configured one.
    let (_, preview) = world.get("/api/segments/gold-buyers/preview", VIEWER).await;
    assert_eq!(preview["count"], 1);
    assert_eq!(preview["sample"][0]["name"], "Ada");
    let (status, _, preview) = world
        .call(
            Method::POST,
            "/api/segments/preview",
            Some(VIEWER),
            Some(json!({ "where": "not in_segment(\"gold-buyers\")" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(preview["count"], 2);
    let (status, _) = world.get("/api/segments/nope/preview", VIEWER).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Recorded memberships: none until an evaluation, then API segments get theirs beside configured ones
    // (the stand-alone refresher, used by a dry run here, evaluates both).
    assert_eq!(list[0]["members"], 0);
    let (status, _, _) = world
        .call(
            Method::POST,
            "/api/syncs/gold-hook/dry-run",
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, list) = world.get("/api/segments", VIEWER).await;
    let sizes: Vec<(&str, u64)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["id"].as_str().unwrap(), s["members"].as_u64().unwrap()))
        .collect();
    assert_eq!(sizes, [("gold", 2), ("gold-buyers", 1)]);
    let (_, one) = world.get("/api/segments/gold-buyers", VIEWER).await;
    assert_eq!(one["members"], 1);
    // The combined list that membership evaluation must cover.
    let definitions = spindle_server::admin::segment_definitions(&world.config, &world.store)
        .await
        .unwrap();
    assert_eq!(
        definitions
            .iter()
            .map(|(id, _, origin)| (id.as_str(), *origin))
            .collect::<Vec<_>>(),
        [
            ("gold", spindle_server::admin::SegmentOrigin::Config),
            ("gold-buyers", spindle_server::admin::SegmentOrigin::Api)
        ]
    );
}

async fn profiles_by_id_identifier_search_timeline_and_explain(store: &SqlStore) {
    let world = World::new(store).await;
    let ada = world.profile_id("ada@x.io").await;
    // Identifiers are normalised before the lookup.
    assert_eq!(world.profile_id("%20ADA@X.IO").await, ada);
    let (status, body) = world
        .get("/api/profiles/lookup?kind=email&value=bob@x.io", VIEWER)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(body["id"], ada);
    let (status, body) = world
        .get("/api/profiles/lookup?email=zed@x.io", VIEWER)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
    let (status, _) = world.get("/api/profiles/lookup", VIEWER).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = world.get("/api/profiles/lookup?phone=abc", VIEWER).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, profile) = world.get(&format!("/api/profiles/{ada}"), VIEWER).await;
    assert_eq!(status, StatusCode::OK, "{profile}");
    assert_eq!(profile["id"], ada);
    assert_eq!(profile["traits"]["first_name"], "Ada");
    assert_eq!(profile["record_count"], 1);
    assert_eq!(profile["document"]["event_count"], 3);
    let (status, _) = world.get("/api/profiles/999999", VIEWER).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = world.get("/api/profiles/abc", VIEWER).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    let (status, found) = world.get("/api/profiles?q=X.IO&limit=2", VIEWER).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(found.as_array().unwrap().len(), 2);
    let (_, found) = world.get("/api/profiles?q=bob", VIEWER).await;
    assert_eq!(found[0]["email"], "bob@x.io");
    assert_eq!(found[0]["sources"], json!(["crm"]));

    let (status, page) = world
        .get(&format!("/api/profiles/{ada}/timeline?limit=2"), VIEWER)
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["total"], 3);
    let events = page["events"].as_array().unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["event"]["properties"]["n"], 2, "newest first");
    let (_, page) = world
        .get(
            &format!("/api/profiles/{ada}/timeline?offset=2&limit=2"),
            VIEWER,
        )
        .await;
    assert_eq!(page["events"].as_array().unwrap().len(), 1);
    assert_eq!(page["events"][0]["event"]["properties"]["n"], 0);

    let (status, why) = world
        .get(&format!("/api/profiles/{ada}/explain"), VIEWER)
        .await;
    assert_eq!(status, StatusCode::OK, "{why}");
    assert_eq!(why["profile_id"], ada);
    assert_eq!(why["records"][0]["external_id"], "1");
    assert!(
        why["text"]
            .as_str()
            .unwrap()
            .starts_with(&format!("profile {ada}"))
    );
}

async fn syncs_list_dry_run_history_dead_letters_and_replay(store: &SqlStore) {
    let world = World::new(store).await;
    let (status, list) = world.get("/api/syncs", VIEWER).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list[0]["id"], "gold-hook");
    assert_eq!(list[0]["mode"], "mirror");
    assert_eq!(list[0]["last_run"], Value::Null);
    assert_eq!(list[0]["pending"], 0);
    let (status, _) = world.get("/api/syncs/nope", VIEWER).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, _, dry) = world
        .call(
            Method::POST,
            "/api/syncs/gold-hook/dry-run",
            Some(MARKETER),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{dry}");
    assert_eq!(dry["count"], 2);
    let emails: Vec<&str> = dry["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            assert_eq!(c["action"], "add");
            c["payload"]["email"].as_str().unwrap()
        })
        .collect();
    assert_eq!(emails.len(), 2);
    assert!(emails.contains(&"ada@x.io") && emails.contains(&"bob@x.io"));
    // Nothing was queued by the dry run.
    let (_, sync) = world.get("/api/syncs/gold-hook", VIEWER).await;
    assert_eq!(sync["pending"], 0);
    let (status, _, _) = world
        .call(
            Method::POST,
            "/api/syncs/gold-hook/dry-run",
            Some(VIEWER),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let now = Utc::now();
    let run = world
        .store
        .start_run(&JobId::sync("gold-hook"), JobTrigger::Manual, now, now)
        .await
        .unwrap();
    world
        .store
        .finish_run(
            run,
            JobStatus::Succeeded,
            None,
            JobCounts {
                inserted: 2,
                delivered: 2,
                ..JobCounts::default()
            },
            now,
        )
        .await
        .unwrap();
    let (status, runs) = world.get("/api/syncs/gold-hook/runs?limit=5", VIEWER).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(runs[0]["status"], "succeeded");
    assert_eq!(runs[0]["job"], "sync:gold-hook");
    assert_eq!(runs[0]["counts"]["delivered"], 2);
    let (_, sync) = world.get("/api/syncs/gold-hook", VIEWER).await;
    assert_eq!(sync["last_run"]["id"], run);

    let (status, letters) = world.get("/api/syncs/gold-hook/dead-letters", VIEWER).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(letters, json!([]));
    let (status, _, queued) = world
        .call(
            Method::POST,
            "/api/syncs/gold-hook/run",
            Some(MARKETER),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        queued,
        json!({ "job": "sync:gold-hook", "status": "queued" })
    );
    let (status, _, _) = world
        .call(Method::POST, "/api/syncs/nope/run", Some(MARKETER), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn sources_list_status_and_run(store: &SqlStore) {
    let world = World::new(store).await;
    let (status, list) = world.get("/api/sources", VIEWER).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list[0]["id"], "crm");
    assert_eq!(list[0]["kind"], "csv");
    assert_eq!(list[0]["records"], 3);
    assert_eq!(list[0]["schedule"], Value::Null);
    let (status, one) = world.get("/api/sources/crm", MARKETER).await;
    assert_eq!(status, StatusCode::OK, "{one}");
    assert_eq!(one["id"], "crm");
    assert_eq!(one["recent_runs"], json!([]));
    assert_eq!(one["quarantined"], json!([]));
    let (status, _) = world.get("/api/sources/nope", VIEWER).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, queued) = world
        .call(Method::POST, "/api/sources/crm/run", Some(ADMIN), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(queued["job"], "source:crm");
}

/// The document is served to any token (and to no one without), is OpenAPI 3.1, and lists exactly the
/// router's routes: each documented operation reaches a handler, and each expected route is documented.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_every_route() {
    let guard = spindle_testkit::store::sqlite().await;
    let world = World::new(&guard.store).await;
    let (status, _, _) = world
        .call(Method::GET, "/api/openapi.json", None, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, doc) = world.get("/api/openapi.json", VIEWER).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        doc,
        serde_json::to_value(spindle_server::admin::openapi()).unwrap()
    );
    let app = Router::new().nest("/api", router(AdminState::default()));
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    assert_eq!(doc["servers"][0]["url"], "/api");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.push((method.to_uppercase(), path.clone()));
        }
    }
    documented.sort();
    let mut expected: Vec<(String, String)> = [
        ("GET", "/profiles"),
        ("GET", "/profiles/lookup"),
        ("GET", "/profiles/{id}"),
        ("GET", "/profiles/{id}/timeline"),
        ("GET", "/profiles/{id}/explain"),
        ("GET", "/segments"),
        ("POST", "/segments"),
        ("GET", "/segments/{id}"),
        ("PUT", "/segments/{id}"),
        ("DELETE", "/segments/{id}"),
        ("GET", "/segments/{id}/preview"),
        ("POST", "/segments/preview"),
        ("GET", "/syncs"),
        ("GET", "/syncs/{id}"),
        ("POST", "/syncs/{id}/run"),
        ("POST", "/syncs/{id}/dry-run"),
        ("GET", "/syncs/{id}/runs"),
        ("GET", "/syncs/{id}/dead-letters"),
        ("POST", "/syncs/{id}/dead-letters/replay"),
        ("GET", "/sources"),
        ("GET", "/sources/{id}"),
        ("POST", "/sources/{id}/run"),
        ("GET", "/audit"),
    ]
    .iter()
    .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
    .collect();
    expected.sort();
    assert_eq!(documented, expected);
    let mut operation_ids = std::collections::BTreeSet::new();
    for (method, path) in &documented {
        let operation = &doc["paths"][path][method.to_lowercase()];
        assert!(
            operation_ids.insert(operation["operationId"].as_str().unwrap().to_owned()),
            "{method} {path}: operation ids must be unique"
        );
        // Path parameters are the path's own; everything else is in the query.
        for parameter in operation["parameters"].as_array().into_iter().flatten() {
            let name = parameter["name"].as_str().unwrap();
            let place = parameter["in"].as_str().unwrap();
            assert_eq!(
                place == "path",
                path.contains(&format!("{{{name}}}")),
                "{method} {path}: parameter {name} is in {place}"
            );
        }
        assert!(
            operation["responses"]["401"].is_object(),
            "{method} {path} documents no 401"
        );
        // Every documented operation reaches a handler: an unrouted path would be a bodiless 404 or 405,
        // while the handler's authentication answers 401 with a JSON error.
        let uri = format!("/api{}", path.replace("{id}", "1"));
        let request = Request::builder()
            .method(method.as_str())
            .uri(&uri)
            .body(Body::empty())
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{method} {uri}"
        );
    }
    // Anything else under /api is a JSON 404 or 405.
    for (method, uri, status) in [
        ("GET", "/api/nope", StatusCode::NOT_FOUND),
        ("PATCH", "/api/segments", StatusCode::METHOD_NOT_ALLOWED),
    ] {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), status, "{method} {uri}");
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("openapi.json")
        );
    }
    assert_eq!(
        spindle_server::admin::openapi().paths.paths.len(),
        doc["paths"].as_object().unwrap().len()
    );
}
