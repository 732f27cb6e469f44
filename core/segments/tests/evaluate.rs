//! Evaluation of every construct against small profiles, at a fixed time.
#![allow(clippy::unwrap_used)] // a test file: a failed unwrap is a failed assertion

use std::cell::RefCell;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};
use spindle_segments::{EventView, ProfileView, evaluate, parse, render_error};

fn now() -> DateTime<Utc> {
    "2025-06-01T12:00:00Z".parse().unwrap()
}

fn days_ago(days: i64) -> DateTime<Utc> {
    now() - TimeDelta::days(days)
}

fn event(name: &str, at: DateTime<Utc>, properties: Value) -> EventView {
    let properties = match properties {
        Value::Object(map) => map.into_iter().collect(),
        _ => Default::default(),
    };
    EventView {
        name: name.into(),
        occurred_at: at,
        properties,
    }
}

fn profile() -> ProfileView {
    let mut p = ProfileView::default();
    for (k, v) in [
        ("first_name", json!("Ada")),
        ("country", json!("FR")),
        ("vip", json!(true)),
        ("newsletter", json!("true")),
        ("age", json!("42")),
        ("zip", json!("75011")),
        ("score", json!(7.5)),
        ("nothing", Value::Null),
        ("signup_at", json!("2025-05-20T08:00:00+02:00")),
        ("birthday", json!("1990-04-01")),
        ("bad_time", json!("yesterday")),
        ("tags", json!(["vip", "early", 3])),
        ("address", json!({"city": "Paris", "geo": {"lat": 48.85}})),
        ("total_spent", json!(1)),
    ] {
        p.traits.insert(k.into(), v);
    }
    p.computed.insert("total_spent".into(), json!(812.5));
    p.computed.insert("orders_90d".into(), json!(3));
    p.identifiers = vec![
        ("email".into(), "ada@x.io".into()),
        ("email".into(), "ada@lovelace.org".into()),
    ];
    p.consent.insert("email".into(), true);
    p.consent.insert("sms".into(), false);
    p.events = vec![
        event(
            "order_completed",
            days_ago(1),
            json!({"amount": 120, "currency": "EUR", "items": {"count": 3}}),
        ),
        event(
            "order_completed",
            days_ago(10),
            json!({"amount": "80.5", "currency": "USD"}),
        ),
        event(
            "order_completed",
            days_ago(40),
            json!({"amount": 300, "currency": "EUR", "status": "refunded"}),
        ),
        event("order_completed", days_ago(200), json!({"amount": "n/a"})),
        event(
            "order_completed",
            now() + TimeDelta::days(2),
            json!({"amount": 5}),
        ),
        event("cart_abandoned", days_ago(3), json!({})),
        event("Order Completed", days_ago(2), json!({})),
        event(
            "page_viewed",
            now() - TimeDelta::minutes(10),
            json!({"url": "/pricing/team"}),
        ),
    ];
    p
}

fn eval_on(text: &str, profile: &ProfileView) -> bool {
    let expr = parse(text).unwrap_or_else(|e| panic!("{}", render_error(text, &e)));
    let result = evaluate(&expr, profile, now(), &|segment| segment == "vip");
    let negated = parse(&format!("not ({text})")).unwrap();
    assert_eq!(
        evaluate(&negated, profile, now(), &|segment| segment == "vip"),
        !result,
        "`not` is not the complement for `{text}`"
    );
    result
}

#[track_caller]
fn holds(text: &str) {
    assert!(eval_on(text, &profile()), "expected `{text}` to hold");
}

#[track_caller]
fn fails(text: &str) {
    assert!(!eval_on(text, &profile()), "expected `{text}` not to hold");
}

#[test]
fn numbers_compare_by_value() {
    holds("total_spent > 500");
    holds("total_spent = 812.5");
    holds("total_spent >= 812.5");
    holds("total_spent <= 812.5");
    fails("total_spent < 812.5");
    fails("total_spent != 812.5");
    holds("score > -3");
    holds("orders_90d = 3");
}

#[test]
fn numeric_strings_count_as_numbers_next_to_a_number() {
    holds("age > 40");
    holds("age = 42");
    holds("age = 42.0");
    holds("40 < age");
    fails("age > 50");
    // Next to a string they stay strings.
    holds("age = \"42\"");
    fails("age = \"42.0\"");
    // A string that is not a number is not equal to (nor ordered against) a number.
    fails("first_name > 5");
    fails("first_name < 5");
    fails("first_name = 5");
    holds("first_name != 5");
}

#[test]
fn strings_compare_by_text() {
    holds("country = \"FR\"");
    fails("country = \"fr\"");
    holds("country != \"BE\"");
    holds("country < \"GB\"");
    holds("country > \"BE\"");
    holds("zip starts_with \"75\"");
    fails("zip starts_with \"11\"");
    holds("first_name contains \"d\"");
    fails("first_name contains \"D\"");
}

#[test]
fn a_bare_name_is_a_computed_trait_first_then_a_trait() {
    holds("total_spent = 812.5");
    holds("computed.total_spent = 812.5");
    holds("traits.total_spent = 1");
    holds("traits.country = \"FR\"");
    fails("computed.country exists");
}

#[test]
fn dotted_paths_go_into_json_objects() {
    holds("traits.address.city = \"Paris\"");
    holds("address.city = \"Paris\"");
    holds("address.geo.lat > 48");
    holds("address.zip not exists");
    holds("country.code = null");
    fails("traits.address.city.name exists");
}

#[test]
fn booleans_and_bare_names() {
    holds("vip");
    holds("vip = true");
    fails("vip = false");
    holds("vip != false");
    holds("true");
    fails("false");
    // Only the boolean `true` is true: the string "true" is not.
    fails("newsletter");
    holds("newsletter = \"true\"");
    fails("newsletter = true");
    fails("first_name");
    fails("missing_flag");
}

#[test]
fn null_handling() {
    for name in ["missing", "nothing", "traits.missing.deeper"] {
        holds(&format!("{name} = null"));
        fails(&format!("{name} != null"));
        fails(&format!("{name} = 5"));
        fails(&format!("{name} != 5"));
        fails(&format!("{name} > 5"));
        fails(&format!("{name} <= 5"));
        fails(&format!("{name} = \"x\""));
        fails(&format!("{name} contains \"a\""));
        fails(&format!("{name} starts_with \"a\""));
        fails(&format!("{name} in [1, \"a\"]"));
        holds(&format!("{name} in [1, null]"));
        fails(&format!("{name} not in [1]"));
        fails(&format!("{name} not in []"));
        fails(&format!("{name} exists"));
        fails(&format!("exists({name})"));
        holds(&format!("{name} not exists"));
        // `not` is the complement, so it differs from `!=` on a missing value.
        holds(&format!("not {name} = 5"));
        holds(&format!("not {name} > 5"));
        holds(&format!("null = {name}"));
    }
    holds("null = null");
    fails("null != null");
    holds("country != null");
    fails("country = null");
    // Two missing values are not equal: only the literal `null` matches a missing value.
    fails("missing = also_missing");
    fails("missing != also_missing");
}

#[test]
fn lists() {
    holds("country in [\"FR\", \"BE\"]");
    fails("country in [\"DE\", \"BE\"]");
    fails("country in []");
    holds("country not in [\"DE\", \"BE\"]");
    fails("country not in [\"FR\", \"BE\"]");
    holds("country not in []");
    holds("country not in [null]");
    holds("age in [41, 42]");
    holds("score in [7.5]");
    holds("tags contains \"vip\"");
    fails("tags contains \"vi\"");
    holds("tags contains 3");
    holds("tags = [\"vip\", \"early\", 3]");
    fails("tags = [\"vip\"]");
    holds("tags != [\"vip\"]");
}

#[test]
fn consent_is_false_when_absent() {
    holds("consent.email");
    fails("consent.sms");
    fails("consent.push");
    holds("not consent.push");
    holds("consent.push = false");
    fails("consent.push = null");
    holds("consent.push exists");
}

#[test]
fn identifiers_match_any_of_their_values() {
    holds("identifiers.email");
    holds("identifiers.email exists");
    holds("identifiers.email = \"ada@lovelace.org\"");
    holds("\"ada@x.io\" = identifiers.email");
    fails("identifiers.email = \"bob@x.io\"");
    holds("identifiers.email != \"bob@x.io\"");
    fails("identifiers.email != \"ada@x.io\"");
    holds("identifiers.email contains \"@lovelace\"");
    holds("identifiers.email starts_with \"ada@x\"");
    holds("identifiers.email in [\"ada@x.io\", \"z@z.z\"]");
    fails("identifiers.email not in [\"ada@x.io\"]");
    holds("identifiers.email not in [\"z@z.z\"]");
    fails("identifiers.phone");
    holds("identifiers.phone = null");
    fails("identifiers.phone != \"+33\"");
    holds("identifiers.phone not exists");
}

#[test]
fn times_compare_by_instant() {
    holds("signup_at > now() - 30d");
    fails("signup_at > now() - 7d");
    holds("signup_at < now()");
    holds("signup_at = \"2025-05-20T06:00:00Z\" or signup_at > \"2025-05-20T05:00:00Z\"");
    holds("now() - 30d < signup_at");
    holds("birthday < now() - 520w");
    holds("now() + 1d > now()");
    holds("now() - signup_at > 10d");
    holds("now() - signup_at < 2w");
    holds("signup_at + 12d = now() - 6h");
    holds("last(order_completed) > now() - 7d");
    holds("last(order_completed) = \"2025-05-31T12:00:00Z\"");
    holds("first(order_completed) < \"2025-01-01\"");
    holds("now() - last(order_completed) < 2d");
    // A string that is not a time compares with nothing.
    fails("bad_time < now()");
    fails("bad_time > now()");
    fails("bad_time = now()");
    holds("bad_time != now()");
    fails("bad_time - 1d < now()");
}

#[test]
fn counts_and_windows_are_relative_to_now() {
    holds("count(order_completed) = 4");
    // Events after the evaluation time are not seen, with or without a window.
    holds("count(order_completed where amount = 5) = 0");
    holds("count(order_completed within 30d) = 2");
    holds("count(order_completed within 1w) = 1");
    holds("count(order_completed within 10d) = 2");
    holds("count(order_completed within 9d) = 1");
    holds("count(order_completed within 1000d) = 4");
    holds("count(order_completed within 15m) = 0");
    holds("count(page_viewed within 15m) = 1");
    fails("count(page_viewed within 5m) > 0");
    holds("count(\"Order Completed\") = 1");
    holds("count(nothing_happened) = 0");
}

#[test]
fn where_clauses_filter_on_event_properties() {
    holds("count(order_completed where amount > 100) = 2");
    holds("count(order_completed where amount > 100 within 30d) = 1");
    holds("count(order_completed within 30d where amount > 100) = 1");
    holds("count(order_completed where amount > 50 within 30d) = 2");
    holds("count(order_completed where currency = \"EUR\" and amount >= 300) = 1");
    holds("count(order_completed where currency in [\"EUR\", \"USD\"]) = 3");
    holds("count(order_completed where items.count >= 2) = 1");
    holds("count(order_completed where status not exists) = 3");
    holds("count(order_completed where not status = \"refunded\") = 3");
    holds("count(order_completed where status != \"refunded\") = 0");
    holds("count(page_viewed where url starts_with \"/pricing\") = 1");
    holds("did(order_completed where currency = \"USD\" within 30d)");
    fails("did(order_completed where currency = \"USD\" within 7d)");
    // Names in `where` are properties, even when a trait has the same name.
    holds("count(order_completed where country = \"FR\") = 0");
}

#[test]
fn did_is_at_least_one() {
    holds("did(cart_abandoned)");
    holds("did(cart_abandoned within 7d)");
    fails("did(cart_abandoned within 2d)");
    holds("did(cart_abandoned within 7d) and not did(order_completed within 12h)");
    fails("did(newsletter_opened)");
}

#[test]
fn sums_minima_and_maxima_read_numeric_properties() {
    holds("sum(order_completed.amount) = 500.5");
    holds("sum(order_completed.amount within 30d) = 200.5");
    holds("sum(order_completed.amount where currency = \"EUR\") = 420");
    holds("sum(cart_abandoned.amount) = 0");
    holds("min(order_completed.amount) = 80.5");
    holds("min(order_completed.amount within 30d) = 80.5");
    holds("max(order_completed.amount within 30d) = 120");
    holds("max(order_completed.amount) = 300");
    holds("min(cart_abandoned.amount) = null");
    fails("min(cart_abandoned.amount) < 10");
    fails("max(cart_abandoned.amount) >= 0");
}

#[test]
fn first_and_last_give_times_or_properties() {
    holds("last(order_completed.amount) = 120");
    holds("last(order_completed.amount within 30d) = 120");
    holds("first(order_completed.amount) = \"n/a\"");
    holds("first(order_completed.currency within 30d) = \"USD\"");
    holds("last(cart_abandoned) < now() - 2d");
    holds("last(newsletter_opened) = null");
    fails("last(newsletter_opened) < now()");
    holds("last(newsletter_opened) not exists");
    holds("first(order_completed) exists");
}

#[test]
fn first_and_last_break_ties_by_timeline_order() {
    let mut p = ProfileView::default();
    let at = days_ago(1);
    p.events = vec![
        event("visit", at, json!({"n": 1})),
        event("visit", at, json!({"n": 2})),
        event("visit", at, json!({"n": 3})),
    ];
    assert!(eval_on("first(visit.n) = 1", &p));
    assert!(eval_on("last(visit.n) = 3", &p));
}

#[test]
fn in_segment_asks_the_callback() {
    let asked = RefCell::new(Vec::new());
    let expr = parse("in_segment(\"vip\") and not in_segment(\"churned\")").unwrap();
    let callback = |segment: &str| {
        asked.borrow_mut().push(segment.to_owned());
        segment == "vip"
    };
    assert!(evaluate(&expr, &profile(), now(), &callback));
    assert_eq!(*asked.borrow(), ["vip", "churned"]);
    assert!(!evaluate(&expr, &profile(), now(), &|_| true));
    assert!(!evaluate(&expr, &profile(), now(), &|_| false));
}

#[test]
fn keywords_are_case_insensitive() {
    holds("total_spent > 500 AND NOT consent.sms");
    holds("Consent.email And TRUE");
    holds("country IN [\"FR\"] Or False");
    holds("country Not In [\"BE\"]");
    holds("COUNT(order_completed WHERE amount > 100 WITHIN 30d) = 1");
    holds("Did(cart_abandoned) AND tags CONTAINS \"vip\" and zip STARTS_WITH \"75\"");
    holds("address.city EXISTS and missing NOT EXISTS and EXISTS(address)");
    holds("In_Segment(\"vip\")");
    holds("missing = NULL");
    holds("Last(order_completed) > NOW() - 7d");
}

#[test]
fn precedence_is_not_then_and_then_or() {
    // `or` binds loosest: true or (false and false).
    holds("vip or consent.sms and false");
    // Parentheses change it.
    fails("(vip or consent.sms) and false");
    // `not` binds tighter than `and`.
    fails("not vip and vip");
    holds("not (vip and consent.sms)");
    holds("not not vip");
}

#[test]
fn the_evaluation_time_is_the_one_given() {
    let expr = parse("did(cart_abandoned within 7d)").unwrap();
    let p = profile();
    assert!(evaluate(&expr, &p, now(), &|_| false));
    assert!(!evaluate(&expr, &p, now() + TimeDelta::days(5), &|_| false));
    // Before the event happened, it is not in the window.
    assert!(!evaluate(&expr, &p, days_ago(4), &|_| false));
}

#[test]
fn an_empty_profile_matches_only_absence() {
    let empty = ProfileView::default();
    assert!(eval_on(
        "total_spent = null and not consent.email and count(order_completed) = 0",
        &empty
    ));
    assert!(!eval_on("total_spent < 100", &empty));
    assert!(!eval_on("did(order_completed)", &empty));
    assert!(!eval_on("identifiers.email", &empty));
}

#[test]
fn profiles_deserialize_from_json() {
    let p: ProfileView = serde_json::from_value(json!({
        "traits": {"country": "FR"},
        "events": [{"name": "order_completed", "occurred_at": "2025-05-30T00:00:00Z", "properties": {"amount": 10}}]
    }))
    .unwrap();
    assert!(eval_on(
        "country = \"FR\" and sum(order_completed.amount within 7d) = 10",
        &p
    ));
}
