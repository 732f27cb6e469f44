//! The columnar table on hand-picked tricky cases: nulls and `not`, a computed trait that is `null`,
//! numeric and time strings, identifiers, consent, ties of `first`/`last`, windows, timelines outside
//! the nanosecond range, removal and re-insertion. Each case checks the table against the row-wise
//! evaluator, for the expression and its negation.
#![allow(clippy::unwrap_used)] // a test file: a failed unwrap is a failed assertion
#![allow(clippy::field_reassign_with_default)] // profiles read best built up field by field

use std::collections::BTreeSet;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};
use spindle_segments::{EventView, MemberSet, ProfileTable, ProfileView, evaluate, parse};

fn now() -> DateTime<Utc> {
    "2025-06-01T12:00:00Z".parse().unwrap()
}

fn event(name: &str, days_ago: i64, properties: Value) -> EventView {
    EventView {
        name: name.into(),
        occurred_at: now() - TimeDelta::days(days_ago),
        properties: match properties {
            Value::Object(map) => map.into_iter().collect(),
            _ => Default::default(),
        },
    }
}

fn traits(pairs: Value) -> ProfileView {
    let mut p = ProfileView::default();
    if let Value::Object(map) = pairs {
        p.traits = map.into_iter().collect();
    }
    p
}

fn profiles() -> Vec<ProfileView> {
    let mut list = vec![
        ProfileView::default(),
        traits(json!({"country": "FR", "age": "42", "total_spent": 10})),
        traits(json!({"country": null, "age": 42, "total_spent": "812.5"})),
        traits(json!({"country": "BE", "age": 17.5, "signup_at": "2025-05-20"})),
        traits(
            json!({"country": ["FR"], "signup_at": "2025-05-31T23:00:00+02:00", "tags": ["vip", 3]}),
        ),
        traits(json!({"address": {"city": "Paris"}, "country": "fr", "age": "n/a"})),
        traits(json!({"address": {"city": null}, "country": true, "vip": true})),
    ];
    // A computed trait shadows the trait of the same name, even when it is null.
    let mut shadow = traits(json!({"total_spent": 900}));
    shadow.computed.insert("total_spent".into(), Value::Null);
    list.push(shadow);
    let mut computed = traits(json!({"total_spent": 1}));
    computed.computed.insert("total_spent".into(), json!(600));
    list.push(computed);
    // Identifiers and consent.
    let mut ids = ProfileView::default();
    ids.identifiers = vec![
        ("email".into(), "ada@x.io".into()),
        ("email".into(), "ada@y.io".into()),
        ("phone".into(), "+33612".into()),
    ];
    ids.consent.insert("email".into(), true);
    ids.consent.insert("sms".into(), false);
    list.push(ids);
    let mut one_id = ProfileView::default();
    one_id.identifiers = vec![("email".into(), "bob@x.io".into())];
    one_id.consent.insert("sms".into(), true);
    list.push(one_id);
    // Timelines: ties, windows, where, sums of numeric strings.
    let mut orders = ProfileView::default();
    orders.events = vec![
        event("order_completed", 3, json!({"amount": 10})),
        event("order_completed", 3, json!({"amount": "25"})),
        event(
            "order_completed",
            30,
            json!({"amount": 200, "currency": "EUR"}),
        ),
        event("order_completed", 31, json!({"amount": "n/a"})),
        event("page_viewed", 0, json!({})),
        event("order_completed", -1, json!({"amount": 1000})),
    ];
    list.push(orders);
    let mut ties = ProfileView::default();
    ties.events = vec![
        event("order_completed", 5, json!({"amount": 1})),
        event("order_completed", 5, json!({"amount": 2})),
        event("order_completed", 5, json!({"meta": {"n": 3}})),
    ];
    list.push(ties);
    // A timeline outside the nanosecond range.
    let mut exotic = ProfileView::default();
    exotic.events = vec![
        event("order_completed", 2, json!({"amount": 5})),
        EventView {
            name: "order_completed".into(),
            occurred_at: "1500-01-01T00:00:00Z".parse().unwrap(),
            properties: Default::default(),
        },
    ];
    list.push(exotic);
    list
}

const EXPRESSIONS: &[&str] = &[
    "country = \"FR\"",
    "country != \"FR\"",
    "not country = \"FR\"",
    "country = null",
    "country != null",
    "country in [\"FR\", null]",
    "country not in [\"FR\", \"BE\"]",
    "country not in [null]",
    "country contains \"F\"",
    "country starts_with \"f\"",
    "country exists",
    "country not exists",
    "country < \"C\"",
    "country = true",
    "country",
    "age > 40",
    "age = \"42\"",
    "age >= 17.5 and age < 42",
    "age in [42, \"17.5\"]",
    "total_spent > 500",
    "total_spent = null",
    "traits.total_spent > 500",
    "computed.total_spent exists",
    "total_spent - 100 > 400",
    "signup_at > now() - 7d",
    "signup_at <= now() - 12d",
    "tags contains \"vip\"",
    "tags contains 3",
    "address.city = \"Paris\"",
    "address.city = null",
    "address = null",
    "vip",
    "consent.email",
    "not consent.sms",
    "identifiers.email",
    "identifiers.email = \"ada@x.io\"",
    "identifiers.email != \"ada@x.io\"",
    "identifiers.email contains \"@x.io\"",
    "identifiers.email not in [\"bob@x.io\"]",
    "identifiers.phone starts_with \"+33\"",
    "identifiers.email exists and consent.email",
    "count(order_completed within 30d) >= 3",
    "count(order_completed within 3d) = 2",
    "count(order_completed) > 4",
    "did(page_viewed within 0d)",
    "did(order_completed where amount > 100)",
    "did(order_completed where currency = null within 31d)",
    "count(order_completed where not amount > 100) >= 2",
    "sum(order_completed.amount within 30d) = 235",
    "sum(order_completed.amount) > 0",
    "min(order_completed.amount) < 5",
    "max(order_completed.amount) = null",
    "max(order_completed.amount) != 200",
    "first(order_completed.amount) = 1",
    "last(order_completed.amount) = null",
    "last(order_completed.meta.n) = 3",
    "last(order_completed) > now() - 4d",
    "now() - first(order_completed) > 2w",
    "first(order_completed) = null",
    "in_segment(\"vip\") or country = \"BE\"",
    "not in_segment(\"vip\") and not in_segment(\"unknown\")",
    "country = \"FR\" or age > 40 and not total_spent > 500",
    "total_spent > age",
    "count(order_completed) > age",
    "true",
    "false or now() > now() - 1d",
    "count(order_completed within 52000w) > 2",
    "did(order_completed within 365000d)",
];

fn check(table: &ProfileTable, profiles: &[(i64, ProfileView)]) {
    check_at(table, profiles, now());
}

fn check_at(table: &ProfileTable, profiles: &[(i64, ProfileView)], now: DateTime<Utc>) {
    let vip = MemberSet::from_ids(
        table,
        profiles.iter().map(|(id, _)| *id).filter(|id| id % 2 == 0),
    );
    for text in EXPRESSIONS {
        for text in [text.to_string(), format!("not ({text})")] {
            let expr = parse(&text).unwrap();
            let got: BTreeSet<i64> = table
                .evaluate(&expr, now, &|s| (s == "vip").then_some(&vip))
                .ids(table)
                .collect();
            let want: BTreeSet<i64> = profiles
                .iter()
                .filter(|(id, p)| evaluate(&expr, p, now, &|s| s == "vip" && id % 2 == 0))
                .map(|(id, _)| *id)
                .collect();
            assert_eq!(got, want, "{text}");
            for (id, _) in profiles {
                assert_eq!(
                    table.evaluate_one(*id, &expr, now, &|s| s == "vip" && id % 2 == 0),
                    want.contains(id),
                    "{text} for {id}"
                );
            }
        }
    }
}

#[test]
fn tricky_cases_match_row_wise_evaluation() {
    let mut table = ProfileTable::new();
    // Each profile several times, so the per-value outcomes are reused across rows.
    let mut all = Vec::new();
    for round in 0..3 {
        for (i, p) in profiles().into_iter().enumerate() {
            let id = (round * 100 + i) as i64;
            table.upsert(id, &p);
            all.push((id, p));
        }
    }
    check(&table, &all);

    // Rewrite, remove and re-insert: rows move on, the answers don't.
    let base = profiles();
    for (i, (id, p)) in all.iter_mut().enumerate() {
        *p = base[(i + 5) % base.len()].clone();
        table.upsert(*id, p);
    }
    let removed: Vec<(i64, ProfileView)> = all.drain(..4).collect();
    for (id, _) in &removed {
        assert!(table.remove(*id));
        assert!(!table.remove(*id));
        assert!(!table.contains(*id));
    }
    check(&table, &all);
    for (id, p) in removed {
        table.upsert(id, &p);
        all.push((id, p));
    }
    assert_eq!(table.len(), all.len());
    check(&table, &all);
    // Evaluation times outside the nanosecond range, before and after.
    for far in ["1600-01-01T00:00:00Z", "2300-01-01T00:00:00Z"] {
        check_at(&table, &all, far.parse().unwrap());
    }
}

#[test]
fn missing_profiles_are_not_members() {
    let table = ProfileTable::new();
    let expr = parse("country = null").unwrap();
    assert!(table.is_empty());
    assert!(!table.evaluate_one(7, &expr, now(), &|_| false));
    assert!(table.evaluate(&expr, now(), &|_| None).is_empty());
    assert!(table.view(7).is_none());
}

#[test]
fn many_rewrites_compact_the_timelines() {
    let mut table = ProfileTable::new();
    let base: Vec<EventView> = (0..100)
        .map(|i| {
            let properties = if i % 3 == 0 {
                json!({})
            } else {
                json!({"amount": i, "currency": if i % 2 == 0 { "EUR" } else { "USD" }})
            };
            event(
                ["order_completed", "page_viewed"][i as usize % 2],
                i % 40,
                properties,
            )
        })
        .collect();
    let mut profiles: Vec<ProfileView> = (0..50)
        .map(|id| ProfileView {
            events: base.clone(),
            traits: [("n".to_owned(), json!(id))].into_iter().collect(),
            ..ProfileView::default()
        })
        .collect();
    for (id, p) in profiles.iter().enumerate() {
        table.upsert(id as i64, p);
    }
    // 2,000 rewrites of 100 events each: far more garbage than live events, so compaction runs often.
    for round in 0..2_000i64 {
        let p = &mut profiles[(round % 50) as usize];
        p.events[(round % 100) as usize] = event(
            "order_completed",
            round % 3,
            json!({"amount": round, "currency": "EUR", "meta": {"n": round % 7}}),
        );
        table.upsert(round % 50, p);
    }
    let all: Vec<(i64, ProfileView)> = profiles
        .into_iter()
        .enumerate()
        .map(|(i, p)| (i as i64, p))
        .collect();
    for text in [
        "count(order_completed within 10d) >= 27 and sum(order_completed.amount) > 4950",
        "sum(order_completed.amount where currency = \"EUR\" within 2d) > 3000",
        "last(order_completed.amount) > 1000",
        "count(order_completed where meta.n = 3) >= 5",
        "first(page_viewed.amount) = 1",
    ] {
        let expr = parse(text).unwrap();
        let got: BTreeSet<i64> = table
            .evaluate(&expr, now(), &|_| None)
            .ids(&table)
            .collect();
        let want: BTreeSet<i64> = all
            .iter()
            .filter(|(_, p)| evaluate(&expr, p, now(), &|_| false))
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(got, want, "{text}");
    }
    for (id, p) in &all {
        let view = table.view(*id).unwrap();
        assert_eq!(view.events.len(), p.events.len());
        for (a, b) in view.events.iter().zip(&p.events) {
            assert_eq!((&a.name, a.occurred_at), (&b.name, b.occurred_at));
            // Numbers come back as the `f64` the evaluator reads.
            let same = |x: &Value, y: &Value| match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => x == y,
                _ => x == y,
            };
            assert_eq!(a.properties.len(), b.properties.len());
            assert!(
                a.properties
                    .iter()
                    .all(|(k, v)| b.properties.get(k).is_some_and(|w| same(v, w)))
            );
        }
    }
}
