//! `check` (names against what exists), `segment_refs` and `uses_time`.
#![allow(clippy::unwrap_used)] // a test file: a failed unwrap is a failed assertion

use std::collections::BTreeSet;

use spindle_segments::{Known, check, parse, render_error, segment_refs, uses_time};

fn known() -> Known {
    let set = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    Known {
        traits: set(&["first_name", "country", "email_consent", "address"]),
        computed: set(&["total_spent", "orders_90d"]),
        segments: set(&["vip", "churn_risk"]),
        consent: set(&["email", "sms"]),
    }
}

fn errors(text: &str) -> Vec<(String, String, Option<String>)> {
    let expr = parse(text).unwrap();
    check(&expr, &known())
        .into_iter()
        .map(|e| {
            (
                text[e.offset..e.offset + e.len].to_owned(),
                e.message,
                e.hint,
            )
        })
        .collect()
}

#[test]
fn suggests_the_closest_computed_trait() {
    let text = "total_spnt > 5";
    let expr = parse(text).unwrap();
    let found = check(&expr, &known());
    assert_eq!(found.len(), 1);
    let e = &found[0];
    assert_eq!((e.offset, e.len), (0, 10));
    assert_eq!(e.message, "unknown trait `total_spnt`");
    assert_eq!(e.hint.as_deref(), Some("did you mean `total_spent`?"));
    assert_eq!(
        render_error(text, e),
        "error: unknown trait `total_spnt`\n  |\n1 | total_spnt > 5\n  | ^^^^^^^^^^ here\n  = help: did you mean `total_spent`?"
    );
}

#[test]
fn every_kind_of_unknown_name() {
    assert_eq!(
        errors(
            "contry = \"FR\" and traits.frist_name = \"A\" and computed.orders_09d > 1 and consent.emial and in_segment(\"vipp\")"
        ),
        vec![
            (
                "contry".into(),
                "unknown trait `contry`".into(),
                Some("did you mean `country`?".into())
            ),
            (
                "traits.frist_name".into(),
                "unknown trait `frist_name`".into(),
                Some("did you mean `first_name`?".into())
            ),
            (
                "computed.orders_09d".into(),
                "unknown computed trait `orders_09d`".into(),
                Some("did you mean `orders_90d`?".into())
            ),
            (
                "consent.emial".into(),
                "unknown consent purpose `emial`".into(),
                Some("did you mean `email`?".into())
            ),
            (
                "\"vipp\"".into(),
                "unknown segment `vipp`".into(),
                Some("did you mean `vip`?".into())
            ),
        ]
    );
}

#[test]
fn without_a_close_name_the_known_names_are_listed() {
    assert_eq!(
        errors("consent.push"),
        vec![(
            "consent.push".into(),
            "unknown consent purpose `push`".into(),
            Some("known consent purposes: `email`, `sms`".into())
        )]
    );
    let expr = parse("in_segment(\"x\")").unwrap();
    assert_eq!(
        check(&expr, &Known::default())[0].hint.as_deref(),
        Some("no segment is known")
    );
}

#[test]
fn a_name_in_the_wrong_namespace_says_where_it_is() {
    assert_eq!(
        errors("traits.total_spent > 1 and computed.country = 1"),
        vec![
            (
                "traits.total_spent".into(),
                "unknown trait `total_spent`".into(),
                Some("`total_spent` is a computed trait: write `computed.total_spent`".into())
            ),
            (
                "computed.country".into(),
                "unknown computed trait `country`".into(),
                Some("`country` is a trait, not a computed trait: write `traits.country`".into())
            ),
        ]
    );
}

#[test]
fn known_names_sub_paths_events_properties_and_identifiers_pass() {
    for text in [
        "total_spent > 5 and traits.country = \"FR\" and computed.orders_90d > 1",
        "address.city = \"Paris\" and traits.address.zip exists",
        "consent.email and not consent.sms and in_segment(\"churn_risk\")",
        "identifiers.anything exists",
        "count(unknown_event where unknown_property > 1 within 3d) > 0",
        "sum(order_completed.whatever) > 1",
    ] {
        assert_eq!(errors(text), vec![], "{text}");
    }
}

#[test]
fn one_error_per_unknown_name() {
    let found = errors(
        "nope > 1 or nope < 0 or nope.deeper = 2 or in_segment(\"x\") or in_segment(\"x\") or traits.nope",
    );
    let messages: Vec<&str> = found.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(
        messages,
        [
            "unknown trait `nope`",
            "unknown segment `x`",
            "unknown trait `nope`"
        ]
    );
    assert_eq!(found[2].0, "traits.nope");
}

#[test]
fn segment_references() {
    let expr = parse("in_segment(\"vip\") and (in_segment(churn_risk) or not in_segment(\"vip\"))")
        .unwrap();
    assert_eq!(
        segment_refs(&expr),
        BTreeSet::from(["churn_risk".to_owned(), "vip".to_owned()])
    );
    assert!(segment_refs(&parse("total_spent > 5").unwrap()).is_empty());
}

#[test]
fn uses_time_when_reading_events_or_now() {
    for text in [
        "count(order_completed) > 0",
        "did(x)",
        "a = 1 or did(x within 1d)",
        "sum(x.amount) > 1",
        "min(x.amount) > 1",
        "max(x.amount) > 1",
        "first(x) exists",
        "last(x.amount) = 1",
        "signup_at < now() - 30d",
        "not (a = 1 and exists(now()))",
    ] {
        assert!(uses_time(&parse(text).unwrap()), "{text}");
    }
    for text in [
        "total_spent > 5",
        "consent.email and in_segment(\"vip\")",
        "x in [1, 2] or y exists",
    ] {
        assert!(!uses_time(&parse(text).unwrap()), "{text}");
    }
}
