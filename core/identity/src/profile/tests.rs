use chrono::{Duration, TimeZone, Utc};
use serde_json::json;
use spindle_config::{Aggregate, ComputedTrait, ProfilesConfig, Survivorship};
use spindle_model::{Event, RawRecord, StoredRecord};

use super::*;

fn stored(
    source: &str,
    id: &str,
    first_seen_days: i64,
    traits: serde_json::Value,
    events: Vec<Event>,
) -> StoredRecord {
    let base = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    StoredRecord {
        seq: 1,
        source: source.into(),
        first_seen_at: base + Duration::days(first_seen_days),
        observed_at: base + Duration::days(first_seen_days),
        record: RawRecord {
            stream: "s".into(),
            external_id: id.into(),
            version: 1,
            updated_at: Some(base + Duration::days(first_seen_days)),
            deleted: false,
            identifiers: vec![],
            traits: traits
                .as_object()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .collect(),
            events,
        },
    }
}

fn event(name: &str, day: i64, properties: serde_json::Value) -> Event {
    Event {
        name: name.into(),
        occurred_at: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + Duration::days(day),
        properties: properties
            .as_object()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .collect(),
    }
}

fn spec(
    name: &str,
    aggregate: Aggregate,
    property: Option<&str>,
    within_days: Option<i64>,
) -> ComputedTrait {
    ComputedTrait {
        name: name.into(),
        aggregate,
        event: "order_completed".into(),
        property: property.map(str::to_owned),
        within: within_days.map(Duration::days),
        expression: String::new(),
    }
}

#[test]
fn survivorship_rules_pick_their_value() {
    let a = stored(
        "crm",
        "1",
        0,
        json!({"score": 7, "name": "Old", "plan": "pro"}),
        vec![],
    );
    let b = stored(
        "shop",
        "2",
        5,
        json!({"score": 12, "name": "New", "plan": "free"}),
        vec![],
    );
    let records = [&a, &b];
    let mut config = ProfilesConfig::default();
    config
        .survivorship
        .insert("score".into(), Survivorship::Max);
    config.survivorship.insert(
        "plan".into(),
        Survivorship::SourcePriority(vec!["crm".into()]),
    );
    let doc = build(&config, &records, vec![], vec![], vec![], Utc::now());
    assert_eq!(doc.traits["name"].value, "New", "latest");
    assert_eq!(doc.traits["score"].value, 12);
    assert_eq!(doc.traits["plan"].value, "pro");
    assert_eq!(doc.traits["plan"].from.source, "crm");
    config.default_survivorship = Survivorship::FirstSeen;
    config
        .survivorship
        .insert("score".into(), Survivorship::Min);
    let doc = build(&config, &records, vec![], vec![], vec![], Utc::now());
    assert_eq!(
        (
            doc.traits["name"].value.clone(),
            doc.traits["score"].value.clone()
        ),
        (json!("Old"), json!(7))
    );
}

#[test]
fn consent_is_read_from_consent_traits() {
    let a = stored(
        "shop",
        "1",
        0,
        json!({"email_consent": "unsubscribed", "sms_consent": "SUBSCRIBED", "push_consent": "pending"}),
        vec![],
    );
    let doc = build(
        &ProfilesConfig::default(),
        &[&a],
        vec![],
        vec![],
        vec![],
        Utc::now(),
    );
    assert_eq!(
        doc.consent,
        [("email".to_owned(), false), ("sms".to_owned(), true)]
            .into_iter()
            .collect()
    );
    let b = stored("crm", "2", 0, json!({"email_opt_out": true}), vec![]);
    let doc = build(
        &ProfilesConfig::default(),
        &[&b],
        vec![],
        vec![],
        vec![],
        Utc::now(),
    );
    assert_eq!(doc.consent.get("email"), Some(&false));
}

#[test]
fn computed_traits_aggregate_the_timeline() {
    let a = stored(
        "shop",
        "1",
        0,
        json!({}),
        vec![
            event(
                "order_completed",
                1,
                json!({"amount": 10.0, "currency": "EUR"}),
            ),
            event(
                "order_completed",
                50,
                json!({"amount": "30.5", "currency": "USD"}),
            ),
            event("page_viewed", 55, json!({})),
            event(
                "order_completed",
                58,
                json!({"amount": 5, "currency": "EUR"}),
            ),
        ],
    );
    let events = timeline(&[&a]);
    let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + Duration::days(60);
    let traits = [
        spec("count_all", Aggregate::Count, None, None),
        spec("count_30d", Aggregate::Count, None, Some(30)),
        spec("sum", Aggregate::Sum, Some("amount"), None),
        spec("min", Aggregate::Min, Some("amount"), None),
        spec("max_30d", Aggregate::Max, Some("amount"), Some(30)),
        spec("first_currency", Aggregate::First, Some("currency"), None),
        spec("last_at", Aggregate::Last, None, None),
        spec("currencies", Aggregate::Distinct, Some("currency"), None),
    ];
    let computed = compute(&traits, &events, now);
    assert_eq!(computed["count_all"], 3);
    assert_eq!(computed["count_30d"], 2);
    assert_eq!(computed["sum"], 45.5);
    assert_eq!(computed["min"], 5.0);
    assert_eq!(computed["max_30d"], 30.5);
    assert_eq!(computed["first_currency"], "EUR");
    assert_eq!(computed["last_at"], "2026-02-28T00:00:00+00:00");
    assert_eq!(computed["currencies"], 2);
    let empty = compute(&traits, &[], now);
    assert_eq!(
        (empty["count_all"].clone(), empty["max_30d"].clone()),
        (json!(0), serde_json::Value::Null)
    );
    // A customer without orders has spent 0, not -0 (which JSON would carry to destinations).
    assert_eq!(empty["sum"].to_string(), "0.0");
    let refund = event("order_completed", 50, json!({"amount": "-0.001"}));
    let refunded = stored("shop", "r", 0, json!({}), vec![refund]);
    let rounded = compute(&traits, &timeline(&[&refunded]), now);
    assert_eq!(rounded["sum"].to_string(), "0.0");
}
