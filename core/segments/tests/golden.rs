//! Golden tests: every line of `cases/valid.txt` with its normal form, and every line of
//! `cases/invalid.txt` with its rendered error.
#![allow(clippy::unwrap_used)] // a test file: a failed unwrap is a failed assertion

use std::path::Path;

use spindle_segments::{parse, render_error};

fn cases(file: &str) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/cases")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    text.lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn valid_expressions_and_their_normal_form() {
    let cases = cases("valid.txt");
    assert!(cases.len() >= 25, "only {} valid cases", cases.len());
    let mut out = String::new();
    for case in &cases {
        let expr = parse(case)
            .unwrap_or_else(|e| panic!("`{case}` should parse:\n{}", render_error(case, &e)));
        let normal = expr.to_string();
        let again = parse(&normal).unwrap_or_else(|e| {
            panic!(
                "normal form `{normal}` should parse:\n{}",
                render_error(&normal, &e)
            )
        });
        assert_eq!(
            again, expr,
            "`{case}` → `{normal}` does not parse back to the same expression"
        );
        assert_eq!(
            again.to_string(),
            normal,
            "the normal form of `{case}` is not stable"
        );
        out.push_str(&format!("{case}\n  => {normal}\n"));
    }
    insta::assert_snapshot!("valid", out);
}

#[test]
fn invalid_expressions_and_their_errors() {
    let cases = cases("invalid.txt");
    assert!(cases.len() >= 15, "only {} invalid cases", cases.len());
    let mut out = String::new();
    for case in &cases {
        let error = match parse(case) {
            Ok(expr) => panic!("`{case}` should not parse, but gave `{expr}`"),
            Err(error) => error,
        };
        assert!(error.len >= 1);
        assert!(
            error.offset <= case.len(),
            "offset past the end for `{case}`"
        );
        assert!(
            !error.message.ends_with('.'),
            "message ends with a period: {}",
            error.message
        );
        assert_eq!(
            error.message.chars().next().map(|c| c.is_uppercase()),
            Some(false),
            "{}",
            error.message
        );
        out.push_str(&format!("{case}\n{}\n\n", render_error(case, &error)));
    }
    insta::assert_snapshot!("invalid", out);
}
