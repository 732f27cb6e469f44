//! Behaviour of the fake HubSpot against a real HTTP client.

mod support;

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Map, Value, json};
use spindle_testkit::hubspot::{FakeHubspot, FakeHubspotConfig, OAuthClient};
use support::{client, header};

const TOKEN: &str = "hubspot-test-token";

fn unlimited() -> FakeHubspotConfig {
    FakeHubspotConfig {
        rate_limit_per_10s: None,
        search_rate_per_second: None,
        ..FakeHubspotConfig::default()
    }
}

async fn get(fake: &FakeHubspot, path_and_query: &str) -> reqwest::Response {
    client()
        .get(format!("{}{path_and_query}", fake.base_url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("test helper")
}

async fn search(fake: &FakeHubspot, object: &str, body: Value) -> reqwest::Response {
    client()
        .post(format!(
            "{}/crm/v3/objects/{object}/search",
            fake.base_url()
        ))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .expect("test helper")
}

fn props(pairs: &[(&str, &str)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
        .collect()
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("test helper")
        .with_timezone(&Utc)
}

#[tokio::test]
async fn unauthenticated_requests_get_hubspots_401_body() {
    let fake = FakeHubspot::start(FakeHubspotConfig::default()).await;
    fake.seed_contacts(3, 1);
    let url = format!("{}/crm/v3/objects/contacts", fake.base_url());
    for request in [
        client().get(&url),
        client().get(&url).bearer_auth("wrong-token"),
        client()
            .get(&url)
            .header("Authorization", format!("Basic {TOKEN}")),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], "error");
        assert_eq!(body["category"], "INVALID_AUTHENTICATION");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .starts_with("Authentication credentials not found"),
            "{body}"
        );
        assert!(
            body["correlationId"]
                .as_str()
                .is_some_and(|c| c.len() == 36),
            "{body}"
        );
    }
    let ok = client().get(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![401, 401, 401, 200]);
    assert_eq!(
        fake.requests()[3].authorization.as_deref(),
        Some(format!("Bearer {TOKEN}").as_str())
    );
}

#[tokio::test]
async fn list_pagination_walks_every_record_once() {
    let fake = FakeHubspot::start(unlimited()).await;
    let seeded = fake.seed_contacts(253, 7);
    assert_eq!(seeded.len(), 253);
    assert!(
        seeded
            .windows(2)
            .all(|w| w[0].parse::<u64>().unwrap() < w[1].parse::<u64>().unwrap())
    );
    fake.archive("contacts", &seeded[10]);

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut path = "/crm/v3/objects/contacts?limit=100&properties=email,phone".to_owned();
        if let Some(after) = &after {
            path.push_str(&format!("&after={after}"));
        }
        let response = get(&fake, &path).await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        pages += 1;
        for record in body["results"].as_array().unwrap() {
            assert_eq!(record["archived"], false);
            let properties = record["properties"].as_object().unwrap();
            let keys: BTreeSet<&str> = properties.keys().map(String::as_str).collect();
            assert_eq!(
                keys,
                BTreeSet::from([
                    "createdate",
                    "email",
                    "hs_object_id",
                    "lastmodifieddate",
                    "phone"
                ])
            );
            assert!(properties.values().all(|v| v.is_string() || v.is_null()));
            assert_eq!(properties["hs_object_id"], record["id"]);
            assert_eq!(properties["lastmodifieddate"], record["updatedAt"]);
            assert!(record["createdAt"].as_str().unwrap().ends_with('Z'));
            assert_eq!(
                record["createdAt"].as_str().unwrap().len(),
                "2024-01-01T00:00:00.000Z".len()
            );
            seen.push(record["id"].as_str().unwrap().to_owned());
        }
        match body.pointer("/paging/next/after").and_then(Value::as_str) {
            Some(next) => {
                // The cursor is opaque, not the id of a record.
                assert!(
                    next.parse::<u64>().is_err(),
                    "cursor {next} looks like an id"
                );
                assert!(
                    body.pointer("/paging/next/link")
                        .and_then(Value::as_str)
                        .unwrap()
                        .contains(next)
                );
                after = Some(next.to_owned());
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a record came twice");
    let expected: Vec<String> = seeded
        .iter()
        .filter(|id| **id != seeded[10])
        .cloned()
        .collect();
    assert_eq!(seen, expected);
    assert_eq!(fake.count("contacts"), 252);

    // Archived objects only with archived=true.
    let body: Value = get(&fake, "/crm/v3/objects/contacts?archived=true")
        .await
        .json()
        .await
        .unwrap();
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0]["id"], seeded[10].as_str());
    assert_eq!(results[0]["archived"], true);
    assert!(results[0]["archivedAt"].is_string());

    // Default page size and default properties.
    let body: Value = get(&fake, "/crm/v3/objects/contacts")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["results"].as_array().unwrap().len(), 10);
    let keys: BTreeSet<&str> = body["results"][0]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "createdate",
            "email",
            "firstname",
            "hs_object_id",
            "lastmodifieddate",
            "lastname"
        ])
    );

    // Limits and cursors are validated.
    assert_eq!(
        get(&fake, "/crm/v3/objects/contacts?limit=101")
            .await
            .status(),
        400
    );
    assert_eq!(
        get(&fake, "/crm/v3/objects/contacts?after=%%%")
            .await
            .status(),
        400
    );
    let unknown = get(&fake, "/crm/v3/objects/widgets").await;
    assert_eq!(unknown.status(), 400);
    let body: Value = unknown.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("Unable to infer object type from: widgets")
    );
}

#[tokio::test]
async fn associations_inline_and_v4_batch() {
    let fake = FakeHubspot::start(unlimited()).await;
    let contacts = fake.seed_contacts(2, 1);
    let companies = fake.seed_companies(2, 2);
    fake.associate(&contacts[0], &companies[0]);
    fake.associate(&contacts[0], &companies[1]);

    let body: Value = get(&fake, "/crm/v3/objects/contacts?associations=companies")
        .await
        .json()
        .await
        .unwrap();
    let first = &body["results"][0];
    let links = first
        .pointer("/associations/companies/results")
        .unwrap()
        .as_array()
        .unwrap();
    assert_eq!(
        links,
        &vec![
            json!({"id": companies[0], "type": "contact_to_company"}),
            json!({"id": companies[0], "type": "contact_to_company_unlabeled"}),
            json!({"id": companies[1], "type": "contact_to_company_unlabeled"}),
        ]
    );
    assert!(body["results"][1].get("associations").is_none());

    let company: Value = get(
        &fake,
        &format!(
            "/crm/v3/objects/companies/{}?associations=contacts",
            companies[1]
        ),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        company.pointer("/associations/contacts/results").unwrap(),
        &json!([{"id": contacts[0], "type": "company_to_contact_unlabeled"}])
    );
    assert!(company["properties"]["hs_lastmodifieddate"].is_string());
    assert!(company["properties"].get("lastmodifieddate").is_none());

    let response = client()
        .post(format!(
            "{}/crm/v4/associations/contacts/companies/batch/read",
            fake.base_url()
        ))
        .bearer_auth(TOKEN)
        .json(&json!({"inputs": [{"id": contacts[0]}, {"id": contacts[1]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        207,
        "an input without associations makes it a multi-status"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "COMPLETE");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0]["from"]["id"], contacts[0].as_str());
    let to = results[0]["to"].as_array().unwrap();
    assert_eq!(to.len(), 2);
    assert_eq!(
        to[0]["toObjectId"],
        json!(companies[0].parse::<u64>().unwrap())
    );
    let type_ids: Vec<i64> = to[0]["associationTypes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["typeId"].as_i64().unwrap())
        .collect();
    assert_eq!(type_ids, vec![1, 279]);
    assert_eq!(body["numErrors"], 1);
    assert_eq!(
        body["errors"][0]["context"]["fromObjectId"][0],
        contacts[1].as_str()
    );

    // Search results never carry associations.
    let body: Value = search(&fake, "contacts", json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["total"], 2);
    assert!(
        body["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r.get("associations").is_none())
    );
}

#[tokio::test]
async fn search_filters_sorts_and_pages_by_offset() {
    let fake = FakeHubspot::start(unlimited()).await;
    fake.seed_contacts(40, 3);
    let tie = at("2030-01-01T00:00:00Z");
    let later = at("2030-01-01T00:00:01Z");
    let mut tied = Vec::new();
    for n in 0..3 {
        let email = format!("tie{n}@example.com");
        tied.push(fake.put_contact(None, props(&[("email", &email), ("firstname", "Tie")]), tie));
    }
    let late_a = fake.put_contact(None, props(&[("email", "late-a@example.com")]), later);
    let late_b = fake.put_contact(None, props(&[("email", "late-b@example.com")]), later);

    let query = |value: Value, after: &str, direction: &str| {
        json!({
            "filterGroups": [{"filters": [{"propertyName": "lastmodifieddate", "operator": "GTE", "value": value}]}],
            "sorts": [{"propertyName": "lastmodifieddate", "direction": direction}],
            "properties": ["email"],
            "limit": 2,
            "after": after,
        })
    };
    let mut seen = Vec::new();
    let mut after = "0".to_owned();
    let mut last_modified = String::new();
    loop {
        let response = search(
            &fake,
            "contacts",
            query(json!("2030-01-01T00:00:00Z"), &after, "ASCENDING"),
        )
        .await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["total"], 5);
        for record in body["results"].as_array().unwrap() {
            let modified = record["properties"]["lastmodifieddate"]
                .as_str()
                .unwrap()
                .to_owned();
            assert!(modified >= last_modified, "not ascending");
            last_modified = modified;
            assert!(record["properties"]["email"].is_string());
            seen.push(record["id"].as_str().unwrap().to_owned());
        }
        match body.pointer("/paging/next/after").and_then(Value::as_str) {
            Some(next) => {
                assert_eq!(
                    next.parse::<usize>().unwrap(),
                    seen.len(),
                    "after is a numeric offset"
                );
                after = next.to_owned();
            }
            None => break,
        }
    }
    let mut expected = tied.clone();
    expected.extend([late_a.clone(), late_b.clone()]);
    assert_eq!(seen, expected);

    // Epoch milliseconds work like ISO-8601; descending puts the latest first.
    let body: Value = search(
        &fake,
        "contacts",
        query(json!(tie.timestamp_millis().to_string()), "0", "DESCENDING"),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(body["total"], 5);
    assert_eq!(
        body["results"][0]["properties"]["lastmodifieddate"],
        "2030-01-01T00:00:01.000Z"
    );

    // GT excludes the tie; BETWEEN is inclusive; groups are ORed; filters ANDed.
    let body: Value = search(
        &fake,
        "contacts",
        json!({"filterGroups": [{"filters": [{"propertyName": "lastmodifieddate", "operator": "GT", "value": "2030-01-01T00:00:00Z"}]}]}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(body["total"], 2);
    let body: Value = search(
        &fake,
        "contacts",
        json!({"filterGroups": [
            {"filters": [{"propertyName": "hs_object_id", "operator": "EQ", "value": tied[0]}]},
            {"filters": [
                {"propertyName": "lastmodifieddate", "operator": "BETWEEN", "value": "2030-01-01T00:00:01Z", "highValue": "2031-01-01T00:00:00Z"},
                {"propertyName": "email", "operator": "EQ", "value": "LATE-A@example.com"}
            ]}
        ]}),
    )
    .await
    .json()
    .await
    .unwrap();
    let ids: Vec<&str> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![tied[0].as_str(), late_a.as_str()]);

    // hs_object_id restart, as connectors do near the cap.
    let body: Value = search(
        &fake,
        "contacts",
        json!({"filterGroups": [{"filters": [
            {"propertyName": "lastmodifieddate", "operator": "GTE", "value": tie.timestamp_millis().to_string()},
            {"propertyName": "hs_object_id", "operator": "GT", "value": tied[2]}
        ]}], "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}]}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(body["total"], 2);

    // Archived objects never appear in search.
    fake.archive("contacts", &late_b);
    let body: Value = search(
        &fake,
        "contacts",
        query(json!("2030-01-01T00:00:00Z"), "0", "ASCENDING"),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(body["total"], 4);

    // Companies are searched on hs_lastmodifieddate; contacts' property name does not exist there.
    fake.seed_companies(3, 4);
    let bad = search(
        &fake,
        "companies",
        json!({"filterGroups": [{"filters": [{"propertyName": "lastmodifieddate", "operator": "GTE", "value": "0"}]}]}),
    )
    .await;
    assert_eq!(bad.status(), 400);
    let good: Value = search(
        &fake,
        "companies",
        json!({"filterGroups": [{"filters": [{"propertyName": "hs_lastmodifieddate", "operator": "GTE", "value": "0"}]}]}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(good["total"], 3);

    // Malformed requests.
    let two_sorts =
        json!({"sorts": [{"propertyName": "createdate"}, {"propertyName": "hs_object_id"}]});
    assert_eq!(search(&fake, "contacts", two_sorts).await.status(), 400);
    let bad_op = json!({"filterGroups": [{"filters": [{"propertyName": "email", "operator": "LIKE", "value": "x"}]}]});
    assert_eq!(search(&fake, "contacts", bad_op).await.status(), 400);
    let bad_date = json!({"filterGroups": [{"filters": [{"propertyName": "lastmodifieddate", "operator": "GTE", "value": "yesterday"}]}]});
    assert_eq!(search(&fake, "contacts", bad_date).await.status(), 400);
}

#[tokio::test]
async fn search_refuses_to_page_past_10000_results() {
    let fake = FakeHubspot::start(unlimited()).await;
    fake.seed_contacts(10_050, 11);
    let page = |after: u64, limit: u64| {
        json!({
            "filterGroups": [{"filters": [{"propertyName": "lastmodifieddate", "operator": "GTE", "value": "0"}]}],
            "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
            "limit": limit,
            "after": after.to_string(),
        })
    };
    let response = search(&fake, "contacts", page(9_800, 200)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["total"], 10_050, "total is the true count");
    assert_eq!(body["results"].as_array().unwrap().len(), 200);
    assert_eq!(
        body["paging"]["next"]["after"], "10000",
        "HubSpot still offers the next offset"
    );

    for (after, limit) in [(10_000, 200), (9_900, 200), (9_999, 2)] {
        let response = search(&fake, "contacts", page(after, limit)).await;
        assert_eq!(response.status(), 400, "after {after} limit {limit}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], "error");
        assert_eq!(body["category"], "VALIDATION_ERROR");
        assert!(body["correlationId"].is_string());
    }
    assert_eq!(
        search(&fake, "contacts", page(0, 201)).await.status(),
        400,
        "limit is at most 200"
    );
}

#[tokio::test]
async fn rate_limit_headers_and_429_after_the_limit() {
    let fake = FakeHubspot::start(FakeHubspotConfig {
        rate_limit_per_10s: Some(5),
        ..FakeHubspotConfig::default()
    })
    .await;
    fake.seed_contacts(1, 1);
    for expected_remaining in (0..5).rev() {
        let response = get(&fake, "/crm/v3/objects/contacts").await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            header(&response, "x-hubspot-ratelimit-max").as_deref(),
            Some("5")
        );
        assert_eq!(
            header(&response, "x-hubspot-ratelimit-remaining"),
            Some(expected_remaining.to_string())
        );
        assert_eq!(
            header(&response, "x-hubspot-ratelimit-interval-milliseconds").as_deref(),
            Some("10000")
        );
        assert_eq!(
            header(&response, "x-hubspot-ratelimit-daily").as_deref(),
            Some("250000")
        );
        assert!(header(&response, "x-hubspot-ratelimit-daily-remaining").is_some());
    }
    let response = get(&fake, "/crm/v3/objects/contacts").await;
    assert_eq!(response.status(), 429);
    assert_eq!(
        header(&response, "retry-after"),
        None,
        "HubSpot does not promise Retry-After"
    );
    assert_eq!(
        header(&response, "x-hubspot-ratelimit-remaining").as_deref(),
        Some("0")
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "error");
    assert_eq!(body["errorType"], "RATE_LIMIT");
    assert_eq!(body["policyName"], "TEN_SECONDLY_ROLLING");
    assert_eq!(
        body["message"],
        "You have reached your ten_secondly_rolling limit."
    );

    fake.set_rate_limit(None);
    let response = get(&fake, "/crm/v3/objects/contacts").await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-hubspot-ratelimit-max"), None);

    // The search endpoint has its own per-second limit.
    fake.set_search_rate(Some(2));
    let statuses = [
        search(&fake, "contacts", json!({})).await.status().as_u16(),
        search(&fake, "contacts", json!({})).await.status().as_u16(),
        search(&fake, "contacts", json!({})).await.status().as_u16(),
    ];
    assert_eq!(statuses, [200, 200, 429]);
    let last = fake.requests().last().cloned().unwrap();
    assert_eq!((last.method.as_str(), last.status), ("POST", 429));
    assert_eq!(last.body.as_deref(), Some("{}"));
}

#[tokio::test]
async fn rejected_requests_do_not_use_the_window() {
    let fake = FakeHubspot::start(FakeHubspotConfig {
        rate_limit_per_10s: Some(2),
        ..FakeHubspotConfig::default()
    })
    .await;
    assert_eq!(get(&fake, "/crm/v3/objects/contacts").await.status(), 200);
    assert_eq!(get(&fake, "/crm/v3/objects/contacts").await.status(), 200);
    for _ in 0..3 {
        assert_eq!(get(&fake, "/crm/v3/objects/contacts").await.status(), 429);
    }
    fake.set_rate_limit(Some(3));
    let response = get(&fake, "/crm/v3/objects/contacts").await;
    assert_eq!(response.status(), 200, "429s did not use up the window");
    assert_eq!(
        header(&response, "x-hubspot-ratelimit-remaining").as_deref(),
        Some("0")
    );
}

/// Moves Tokio's clock (which the fakes' windows and token lifetimes follow) forward.
async fn age(by: Duration) {
    tokio::time::pause();
    tokio::time::advance(by).await;
    tokio::time::resume();
}

#[tokio::test]
async fn rolling_window_frees_up_after_ten_seconds() {
    let fake = FakeHubspot::start(FakeHubspotConfig {
        rate_limit_per_10s: Some(2),
        ..FakeHubspotConfig::default()
    })
    .await;
    assert_eq!(get(&fake, "/crm/v3/objects/contacts").await.status(), 200);
    age(Duration::from_secs(6)).await;
    assert_eq!(get(&fake, "/crm/v3/objects/contacts").await.status(), 200);
    assert_eq!(get(&fake, "/crm/v3/objects/contacts").await.status(), 429);
    age(Duration::from_secs(5)).await;
    // The first request left the window; the second is still in it.
    let response = get(&fake, "/crm/v3/objects/contacts").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, "x-hubspot-ratelimit-remaining").as_deref(),
        Some("0")
    );
    assert_eq!(get(&fake, "/crm/v3/objects/contacts").await.status(), 429);
}

#[tokio::test]
async fn oauth_tokens_expire_on_tokios_clock() {
    let fake = FakeHubspot::start(oauth_config(Duration::from_secs(1800))).await;
    let body: Value = refresh(&fake, "refresh-token").await.json().await.unwrap();
    let access = body["access_token"].as_str().unwrap().to_owned();
    let url = format!("{}/crm/v3/objects/contacts", fake.base_url());
    age(Duration::from_secs(1799)).await;
    assert_eq!(
        client()
            .get(&url)
            .bearer_auth(&access)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    age(Duration::from_secs(121)).await;
    let response = client()
        .get(&url)
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["message"],
        "The OAuth token used to make this call expired 2 minute(s) ago."
    );
}

fn oauth_config(ttl: Duration) -> FakeHubspotConfig {
    FakeHubspotConfig {
        private_app_token: None,
        oauth: Some(OAuthClient {
            client_id: "client-id".into(),
            client_secret: "client-secret".into(),
            refresh_token: "refresh-token".into(),
        }),
        access_token_ttl: ttl,
        ..FakeHubspotConfig::default()
    }
}

async fn refresh(fake: &FakeHubspot, refresh_token: &str) -> reqwest::Response {
    client()
        .post(format!("{}/oauth/v1/token", fake.base_url()))
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", "client-id"),
            ("client_secret", "client-secret"),
            ("refresh_token", refresh_token),
        ])
        .send()
        .await
        .expect("test helper")
}

#[tokio::test]
async fn oauth_refresh_then_expired_tokens_get_401() {
    let fake = FakeHubspot::start(oauth_config(Duration::from_secs(1800))).await;
    fake.seed_contacts(2, 1);

    let bad = refresh(&fake, "not-the-refresh-token").await;
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.unwrap();
    assert_eq!(body["status"], "BAD_REFRESH_TOKEN");
    assert!(body["message"].is_string());

    let good = refresh(&fake, "refresh-token").await;
    assert_eq!(good.status(), 200);
    let body: Value = good.json().await.unwrap();
    assert_eq!(body["expires_in"], 1800);
    assert_eq!(body["refresh_token"], "refresh-token");
    let access = body["access_token"].as_str().unwrap().to_owned();

    let url = format!("{}/crm/v3/objects/contacts", fake.base_url());
    let response = client()
        .get(&url)
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, "x-hubspot-ratelimit-max").as_deref(),
        Some("100")
    );
    assert_eq!(
        header(&response, "x-hubspot-ratelimit-daily"),
        None,
        "no daily headers for OAuth"
    );

    fake.expire_access_tokens();
    let response = client()
        .get(&url)
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["category"], "EXPIRED_AUTHENTICATION");
    assert!(
        body["message"].as_str().unwrap().contains("expired"),
        "{body}"
    );

    let fresh: Value = refresh(&fake, "refresh-token").await.json().await.unwrap();
    let fresh = fresh["access_token"].as_str().unwrap();
    assert_ne!(fresh, access);
    assert_eq!(
        client()
            .get(&url)
            .bearer_auth(fresh)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // A wrong client secret and an unsupported grant are refused too.
    let response = client()
        .post(format!("{}/oauth/v1/token", fake.base_url()))
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", "client-id"),
            ("client_secret", "nope"),
            ("refresh_token", "refresh-token"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let response = client()
        .post(format!("{}/oauth/v1/token", fake.base_url()))
        .form(&[("grant_type", "password")])
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "BAD_GRANT_TYPE");
}

#[tokio::test]
async fn oauth_tokens_expire_after_their_ttl() {
    let fake = FakeHubspot::start(oauth_config(Duration::from_secs(1))).await;
    let body: Value = refresh(&fake, "refresh-token").await.json().await.unwrap();
    assert_eq!(body["expires_in"], 1);
    let access = body["access_token"].as_str().unwrap().to_owned();
    let url = format!("{}/crm/v3/objects/contacts", fake.base_url());
    assert_eq!(
        client()
            .get(&url)
            .bearer_auth(&access)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let response = client()
        .get(&url)
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["category"], "EXPIRED_AUTHENTICATION");
}

#[tokio::test]
async fn put_touch_and_ties() {
    let fake = FakeHubspot::start(unlimited()).await;
    let when = Utc.with_ymd_and_hms(2024, 5, 6, 7, 8, 9).unwrap();
    let id = fake.put_contact(
        None,
        props(&[
            ("email", "a@example.com"),
            ("firstname", "Ann"),
            ("createdate", "2020-01-01T00:00:00Z"),
        ]),
        when,
    );
    let other = fake.put_contact(None, props(&[("email", "b@example.com")]), when);
    fake.touch("contacts", &other, when);
    let record: Value = get(
        &fake,
        &format!("/crm/v3/objects/contacts/{id}?properties=email,numberofwidgets"),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        record["properties"]["lastmodifieddate"],
        "2024-05-06T07:08:09.000Z"
    );
    assert_eq!(record["updatedAt"], "2024-05-06T07:08:09.000Z");
    assert_eq!(record["createdAt"], "2020-01-01T00:00:00.000Z");
    assert!(
        record["properties"].get("numberofwidgets").is_none(),
        "unknown properties are left out"
    );

    // Replace: properties not given are gone; a known property without value comes back as null.
    fake.put_contact(Some(&id), props(&[("email", "a2@example.com")]), when);
    let record: Value = get(&fake, &format!("/crm/v3/objects/contacts/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(record["properties"]["email"], "a2@example.com");
    assert_eq!(record["properties"]["firstname"], Value::Null);
    assert_eq!(record["createdAt"], "2020-01-01T00:00:00.000Z");

    let tie = json!({"filterGroups": [{"filters": [{"propertyName": "lastmodifieddate", "operator": "EQ", "value": when.timestamp_millis().to_string()}]}]});
    let body: Value = search(&fake, "contacts", tie).await.json().await.unwrap();
    assert_eq!(body["total"], 2);
    assert_eq!(
        get(&fake, "/crm/v3/objects/contacts/999999999")
            .await
            .status(),
        404
    );
    let by_email = get(
        &fake,
        "/crm/v3/objects/contacts/a2@example.com?idProperty=email",
    )
    .await;
    assert_eq!(by_email.status(), 200);
}
