//! Properties over random profiles and random expressions generated as text from the grammar:
//! `not e` is always the complement of `e`, and the normal form parses back to the same expression.
#![allow(clippy::unwrap_used)] // a test file: a failed unwrap is a failed assertion

mod support;

use proptest::prelude::*;
use spindle_segments::{evaluate, parse, render_error};
use support::{Width, expression, now, profile};

fn in_segment(segment: &str) -> bool {
    segment == "vip"
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 768, ..ProptestConfig::default() })]

    #[test]
    fn not_is_the_complement(text in expression(Width::Base), profile in profile(Width::Base)) {
        let expr = parse(&text).map_err(|e| TestCaseError::fail(render_error(&text, &e)))?;
        let negated_text = format!("not ({text})");
        let negated = parse(&negated_text).map_err(|e| TestCaseError::fail(render_error(&negated_text, &e)))?;
        let result = evaluate(&expr, &profile, now(), &in_segment);
        prop_assert_eq!(evaluate(&negated, &profile, now(), &in_segment), !result, "{}", text);
    }

    #[test]
    fn the_normal_form_parses_back_to_the_same_expression(text in expression(Width::Base), profile in profile(Width::Base)) {
        let expr = parse(&text).map_err(|e| TestCaseError::fail(render_error(&text, &e)))?;
        let normal = expr.to_string();
        let again = parse(&normal).map_err(|e| TestCaseError::fail(format!("{text}\n{}", render_error(&normal, &e))))?;
        prop_assert_eq!(&again, &expr, "{} => {}", text, normal);
        prop_assert_eq!(again.to_string(), normal.clone());
        prop_assert_eq!(
            evaluate(&again, &profile, now(), &in_segment),
            evaluate(&expr, &profile, now(), &in_segment),
            "{} => {}", text, normal
        );
    }

    #[test]
    fn parsing_any_text_never_panics(text in "[a-z0-9_ ()\\[\\],.=<>!\"`+\\-]{0,40}") {
        if let Err(error) = parse(&text) {
            prop_assert!(error.len >= 1);
            prop_assert!(error.offset <= text.len());
            let _ = render_error(&text, &error);
        }
    }
}
