//! Behaviour of the fake Shopify against a real HTTP client.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};
use spindle_testkit::shopify::{FakeShopify, FakeShopifyConfig};
use support::{client, header};

const TOKEN: &str = "shpat_test";

fn unlimited() -> FakeShopifyConfig {
    FakeShopifyConfig {
        leak_per_second: None,
        ..FakeShopifyConfig::default()
    }
}

async fn get(url: &str) -> reqwest::Response {
    client()
        .get(url)
        .header("X-Shopify-Access-Token", TOKEN)
        .send()
        .await
        .expect("test helper")
}

fn api(fake: &FakeShopify, path_and_query: &str) -> String {
    format!("{}/admin/api/2024-01/{path_and_query}", fake.base_url())
}

/// The URLs of a `Link` header by relation.
fn links(response: &reqwest::Response) -> (Option<String>, Option<String>) {
    let Some(link) = header(response, "link") else {
        return (None, None);
    };
    let mut next = None;
    let mut previous = None;
    for part in link.split(", ") {
        let (target, rel) = part.split_once("; ").expect("test helper");
        let url = target
            .trim_start_matches('<')
            .trim_end_matches('>')
            .to_owned();
        match rel {
            "rel=\"next\"" => next = Some(url),
            "rel=\"previous\"" => previous = Some(url),
            other => panic!("unexpected rel {other}"),
        }
    }
    (next, previous)
}

fn ids(body: &Value, key: &str) -> Vec<i64> {
    body[key]
        .as_array()
        .expect("test helper")
        .iter()
        .map(|c| c["id"].as_i64().expect("test helper"))
        .collect()
}

#[tokio::test]
async fn auth_and_version_errors() {
    let fake = FakeShopify::start(unlimited()).await;
    fake.seed_customers(2, 1);
    let response = client()
        .get(api(&fake, "customers.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"})
    );
    let wrong = client()
        .get(api(&fake, "customers.json"))
        .header("X-Shopify-Access-Token", "shpat_nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    let response = get(&format!(
        "{}/admin/api/2019-13/customers.json",
        fake.base_url()
    ))
    .await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({"errors": "Not Found"}));
    assert_eq!(get(&api(&fake, "products.json")).await.status(), 404);

    let response = get(&api(&fake, "customers.json")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, "x-shopify-api-version").as_deref(),
        Some("2024-01")
    );
    assert_eq!(
        header(&response, "link"),
        None,
        "a single page has no Link header"
    );
    let recorded = fake.requests();
    assert_eq!(
        recorded.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![401, 401, 404, 404, 200]
    );
    assert_eq!(recorded[4].authorization.as_deref(), Some(TOKEN));
    assert_eq!(recorded[4].path, "/admin/api/2024-01/customers.json");
}

#[tokio::test]
async fn link_pagination_covers_every_record_once() {
    let fake = FakeShopify::start(unlimited()).await;
    let seeded = fake.seed_customers(523, 5);
    let mut url = api(&fake, "customers.json?limit=100");
    let mut seen: Vec<i64> = Vec::new();
    let mut pages: Vec<(String, Vec<i64>, Option<String>)> = Vec::new();
    loop {
        let response = get(&url).await;
        assert_eq!(response.status(), 200);
        let (next, previous) = links(&response);
        assert_eq!(
            previous.is_some(),
            !pages.is_empty(),
            "previous on every page but the first"
        );
        let body: Value = response.json().await.unwrap();
        let page = ids(&body, "customers");
        seen.extend(&page);
        pages.push((url.clone(), page, previous));
        match next {
            Some(next) => {
                assert!(next.starts_with(&format!(
                    "{}/admin/api/2024-01/customers.json?limit=100&page_info=",
                    fake.base_url()
                )));
                url = next;
            }
            None => break,
        }
    }
    assert_eq!(pages.len(), 6);
    assert_eq!(seen, seeded, "every customer once, in id order");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 523);

    // Going back from page 2 gives page 1 again.
    let previous = pages[1].2.clone().unwrap();
    let body: Value = get(&previous).await.json().await.unwrap();
    assert_eq!(ids(&body, "customers"), pages[0].1);

    // The limit may change on a page_info request.
    let next_of_first = links(&get(&api(&fake, "customers.json?limit=100")).await)
        .0
        .unwrap();
    let smaller = next_of_first.replace("limit=100", "limit=7");
    let body: Value = get(&smaller).await.json().await.unwrap();
    assert_eq!(ids(&body, "customers"), seeded[100..107].to_vec());

    // Default page size is 50.
    let body: Value = get(&api(&fake, "customers.json"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&body, "customers").len(), 50);
}

#[tokio::test]
async fn page_info_limit_and_page_rules() {
    let fake = FakeShopify::start(unlimited()).await;
    fake.seed_customers(30, 9);
    let first = get(&api(
        &fake,
        "customers.json?limit=10&updated_at_min=2000-01-01T00:00:00Z",
    ))
    .await;
    let next = links(&first).0.unwrap();
    assert!(
        !next.contains("updated_at_min"),
        "filters travel inside page_info"
    );

    let with_filter = get(&format!("{next}&updated_at_min=2000-01-01T00:00:00Z")).await;
    assert_eq!(with_filter.status(), 400);
    let body: Value = with_filter.json().await.unwrap();
    assert!(body["errors"]["page_info"].is_string(), "{body}");

    let with_status = get(&format!("{next}&status=any")).await;
    assert_eq!(with_status.status(), 400);

    let with_fields = get(&format!("{next}&fields=id,email")).await;
    assert_eq!(with_fields.status(), 200);
    let body: Value = with_fields.json().await.unwrap();
    let keys: HashSet<&str> = body["customers"][0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, HashSet::from(["id", "email"]));

    let garbage = get(&api(&fake, "customers.json?page_info=not-a-token")).await;
    assert_eq!(garbage.status(), 400);

    let page = get(&api(&fake, "customers.json?page=2")).await;
    assert_eq!(page.status(), 400);
    let body: Value = page.json().await.unwrap();
    assert_eq!(body, json!({"errors": {"page": "page cannot be passed."}}));

    assert_eq!(
        get(&api(&fake, "customers.json?limit=251")).await.status(),
        400
    );
    assert_eq!(
        get(&api(&fake, "customers.json?limit=0")).await.status(),
        400
    );
    assert_eq!(
        get(&api(&fake, "customers.json?limit=250")).await.status(),
        200
    );
    assert_eq!(
        get(&api(&fake, "customers.json?updated_at_min=last-tuesday"))
            .await
            .status(),
        400
    );
}

#[tokio::test]
async fn orders_default_to_open_and_status_travels_in_page_info() {
    let fake = FakeShopify::start(unlimited()).await;
    let customers: HashSet<i64> = fake.seed_customers(40, 1).into_iter().collect();
    let orders = fake.seed_orders(300, 2);
    assert_eq!(fake.count("orders"), 300);

    let body: Value = get(&api(&fake, "orders.json?limit=250"))
        .await
        .json()
        .await
        .unwrap();
    let open = body["orders"].as_array().unwrap();
    assert!(!open.is_empty());
    assert!(
        open.iter()
            .all(|o| o["closed_at"].is_null() && o["cancelled_at"].is_null()),
        "default is status=open"
    );

    let count = |query: &'static str| {
        let fake = &fake;
        async move {
            let body: Value = get(&api(fake, &format!("orders/count.json?{query}")))
                .await
                .json()
                .await
                .unwrap();
            body["count"].as_u64().unwrap()
        }
    };
    let (open_n, closed_n, cancelled_n, any_n) = (
        count("").await,
        count("status=closed").await,
        count("status=cancelled").await,
        count("status=any").await,
    );
    assert_eq!(any_n, 300);
    assert_eq!(open_n as usize, open.len());
    assert!(closed_n > 0 && cancelled_n > 0 && cancelled_n < closed_n);
    assert_eq!(open_n + closed_n, any_n, "cancelled orders are closed too");

    // status=any on the first request keeps applying through page_info.
    let mut url = api(&fake, "orders.json?status=any&limit=64");
    let mut seen: Vec<i64> = Vec::new();
    loop {
        let response = get(&url).await;
        assert_eq!(response.status(), 200);
        let next = links(&response).0;
        let body: Value = response.json().await.unwrap();
        for order in body["orders"].as_array().unwrap() {
            assert!(
                order["total_price"]
                    .as_str()
                    .unwrap()
                    .parse::<f64>()
                    .is_ok()
            );
            assert!(!order["line_items"].as_array().unwrap().is_empty());
            assert!(customers.contains(&order["customer"]["id"].as_i64().unwrap()));
            seen.push(order["id"].as_i64().unwrap());
        }
        match next {
            Some(next) => url = next,
            None => break,
        }
    }
    assert_eq!(seen, orders);
}

#[tokio::test]
async fn updated_at_window_and_record_shape() {
    let fake = FakeShopify::start(unlimited()).await;
    let ids = fake.seed_customers(60, 3);
    let when = Utc.with_ymd_and_hms(2031, 2, 3, 15, 0, 0).unwrap();
    for id in &ids[10..13] {
        fake.touch_customer(*id, when);
    }
    fake.touch_customer(ids[20], when + chrono::Duration::seconds(1));
    let body: Value =
        get(&api(&fake, "customers.json?updated_at_min=2031-02-03T15:00:00Z&updated_at_max=2031-02-03T10:00:00-05:00"))
            .await
            .json()
            .await
            .unwrap();
    assert_eq!(
        ids_of(&body),
        ids[10..13].to_vec(),
        "both bounds are inclusive"
    );
    let customer = &body["customers"][0];
    assert_eq!(
        customer["updated_at"], "2031-02-03T10:00:00-05:00",
        "shop time with offset"
    );
    let created = customer["created_at"].as_str().unwrap();
    assert!(
        DateTime::parse_from_rfc3339(created)
            .unwrap()
            .offset()
            .local_minus_utc()
            == -5 * 3600
    );

    // Realistic shapes over the whole seed.
    let body: Value = get(&api(&fake, "customers.json?limit=250"))
        .await
        .json()
        .await
        .unwrap();
    let all = body["customers"].as_array().unwrap();
    assert!(all.iter().any(|c| c["email"].is_null()) || all.iter().any(|c| c["phone"].is_null()));
    for c in all {
        assert!(c["id"].is_i64());
        assert!(c["tags"].is_string());
        assert_eq!(c["email"].is_null(), c["email_marketing_consent"].is_null());
        if let Some(phone) = c["phone"].as_str() {
            assert!(
                phone.starts_with('+') && phone[1..].chars().all(|ch| ch.is_ascii_digit()),
                "E.164: {phone}"
            );
        }
        if let Some(address) = c.get("default_address") {
            assert_eq!(address["customer_id"], c["id"]);
            assert_eq!(address["default"], true);
        }
    }

    // put_customer replaces by id and serves the JSON as given.
    let id = fake.put_customer(json!({"id": ids[0], "email": "new@example.com", "updated_at": "2031-02-04T00:00:00Z", "tags": "x"}));
    assert_eq!(id, ids[0]);
    let body: Value = get(&api(&fake, &format!("customers/{id}.json")))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["customer"]["email"], "new@example.com");
    assert_eq!(body["customer"]["updated_at"], "2031-02-03T19:00:00-05:00");
    let created = fake.put_customer(json!({"email": "fresh@example.com"}));
    assert!(created > *ids.last().unwrap());
}

fn ids_of(body: &Value) -> Vec<i64> {
    ids(body, "customers")
}

#[tokio::test]
async fn leaky_bucket_answers_429_with_retry_after() {
    let fake = FakeShopify::start(FakeShopifyConfig {
        bucket_size: 5,
        leak_per_second: Some(0.5),
        ..FakeShopifyConfig::default()
    })
    .await;
    for used in 1..=5 {
        let response = get(&api(&fake, "customers.json")).await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            header(&response, "x-shopify-shop-api-call-limit"),
            Some(format!("{used}/5"))
        );
    }
    let response = get(&api(&fake, "customers.json")).await;
    assert_eq!(response.status(), 429);
    assert_eq!(header(&response, "retry-after").as_deref(), Some("2.0"));
    assert_eq!(
        header(&response, "x-shopify-shop-api-call-limit").as_deref(),
        Some("5/5")
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"errors": "Exceeded 2 calls per second for api client. Reduce request rates to resume uninterrupted service."})
    );
    // After Retry-After one call has leaked out (0.5/s × 2 s).
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    assert_eq!(get(&api(&fake, "customers.json")).await.status(), 200);
    assert_eq!(get(&api(&fake, "customers.json")).await.status(), 429);

    fake.set_leak_rate(None);
    for _ in 0..10 {
        assert_eq!(get(&api(&fake, "customers.json")).await.status(), 200);
    }
}

#[tokio::test]
async fn orders_without_customers_are_guest_checkouts_with_an_email() {
    let fake = FakeShopify::start(unlimited()).await;
    let orders = fake.seed_orders(15, 6);
    let body: Value = get(&api(&fake, "orders.json?status=any&limit=250"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&body, "orders"), orders);
    for order in body["orders"].as_array().unwrap() {
        assert!(order.get("customer").is_none());
        assert!(order["email"].as_str().unwrap().contains('@'));
    }
    // put_order serves the JSON as given, with the fake's own timestamps format.
    let id = fake.put_order(json!({"id": 42, "email": "x@example.com", "total_price": "1.00", "updated_at": "2031-01-01T05:00:00Z", "closed_at": "2031-01-01T05:00:00Z"}));
    let body: Value = get(&api(
        &fake,
        "orders.json?status=closed&updated_at_min=2031-01-01T00:00:00-05:00",
    ))
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(ids(&body, "orders"), vec![id]);
    assert_eq!(body["orders"][0]["closed_at"], "2031-01-01T00:00:00-05:00");
    assert_eq!(body["orders"][0]["total_price"], "1.00");
}
