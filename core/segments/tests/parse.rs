//! Parsing: where errors point, normalisation, equality, and the API around `Expr`.
#![allow(clippy::unwrap_used)] // a test file: a failed unwrap is a failed assertion

use spindle_segments::{Expr, ParseError, parse, render_error};

#[track_caller]
fn error(text: &str) -> ParseError {
    match parse(text) {
        Ok(expr) => panic!("`{text}` should not parse, but gave `{expr}`"),
        Err(error) => error,
    }
}

#[track_caller]
fn normal(text: &str) -> String {
    parse(text)
        .unwrap_or_else(|e| panic!("{}", render_error(text, &e)))
        .to_string()
}

#[test]
fn a_missing_value_points_at_the_end() {
    let e = error("total_spent >");
    assert_eq!((e.offset, e.len), (13, 1));
    assert_eq!(e.message, "expected a value after `>`");
    // Trailing spaces: still right after the operator.
    let e = error("total_spent >   ");
    assert_eq!(
        (e.offset, e.message.as_str()),
        (13, "expected a value after `>`")
    );
    let e = error("total_spent > and x");
    assert_eq!((e.offset, e.len), (14, 3));
    assert_eq!(e.message, "expected a value after `>`, found `and`");
}

#[test]
fn a_doubled_equals_points_at_the_extra_one() {
    let e = error("total_spent === 5");
    assert_eq!((e.offset, e.len), (13, 2));
    assert_eq!(e.message, "unknown operator `===`");
    let e = error("a != = 5");
    assert_eq!(e.message, "expected a value after `!=`, found `=`");
    let e = error("a !== 5");
    assert_eq!((e.offset, e.len), (4, 1));
}

#[test]
fn an_unterminated_string_points_at_its_quote() {
    let e = error("name = \"ada");
    assert_eq!(
        (e.offset, e.len, e.message.as_str()),
        (7, 4, "unterminated string")
    );
    assert_eq!(e.hint.as_deref(), Some("close it with `\"`"));
    let e = error("name = \"ada\\");
    assert_eq!(e.message, "unterminated string");
}

#[test]
fn an_unknown_function_lists_the_functions() {
    let e = error("avg(order_completed.amount) > 5");
    assert_eq!((e.offset, e.len), (0, 3));
    assert_eq!(
        e.message,
        "unknown function `avg`; use count, did, sum, min, max, first, last, in_segment, now, exists"
    );
    assert_eq!(
        error("cuont(x) > 1").hint.as_deref(),
        Some("did you mean `count`?")
    );
}

#[test]
fn a_window_in_two_words_is_explained() {
    let text = "count(order_completed within 90 days) > 1";
    let e = error(text);
    assert_eq!(e.message, "write the window as one word, e.g. `90d`");
    assert_eq!(&text[e.offset..e.offset + e.len], "90 days");
    assert_eq!(
        error("did(x within 2 weeks)").message,
        "write the window as one word, e.g. `2w`"
    );
    assert_eq!(
        error("did(x within 12 HOURS)").message,
        "write the window as one word, e.g. `12h`"
    );
    assert_eq!(
        error("did(x within 90days)").message,
        "write the duration as `90d`"
    );
    assert_eq!(
        error("did(x within 7)").message,
        "expected a duration after `within`, e.g. `7d`"
    );
}

#[test]
fn a_missing_parenthesis_points_at_the_end_and_names_the_opening() {
    let e = error("(total_spent > 5 and consent.email");
    assert_eq!((e.offset, e.message.as_str()), (34, "expected `)`"));
    assert_eq!(e.hint.as_deref(), Some("to close the `(` at column 1"));
    let e = error("a = 1 and (b = 2 or (c = 3)");
    assert_eq!(e.hint.as_deref(), Some("to close the `(` at column 11"));
    let e = error("count(order_completed within 30d");
    assert_eq!(e.message, "expected `)` after `30d`");
    assert_eq!(e.hint.as_deref(), Some("to close the `count(` at column 1"));
    let e = error("count(order_completed within 30d foo)");
    assert_eq!(
        e.message,
        "expected `where`, `within` or `)` after `30d`, found `foo`"
    );
    let e = error("(a = 1))");
    assert_eq!((e.offset, e.message.as_str()), (7, "unexpected `)`"));
}

#[test]
fn a_bare_and_at_the_start() {
    let e = error("and total_spent > 5");
    assert_eq!((e.offset, e.len), (0, 3));
    assert_eq!(e.message, "expected a condition, found `and`");
    assert!(e.hint.unwrap().contains("joins two conditions"));
    assert_eq!(
        error("a or or b").message,
        "expected a condition after `or`, found `or`"
    );
    assert_eq!(error("not").message, "expected a condition after `not`");
    assert_eq!(
        error("()").message,
        "expected a condition after `(`, found `)`"
    );
}

#[test]
fn empty_and_blank_expressions() {
    for text in ["", "   ", "\n"] {
        let e = error(text);
        assert_eq!(
            (e.offset, e.len, e.message.as_str()),
            (0, 1, "empty expression")
        );
    }
}

#[test]
fn errors_in_later_lines_render_that_line() {
    let text = "total_spent > 500\n  and consent.email\n  and country in \"FR\"";
    let e = error(text);
    assert_eq!(
        render_error(text, &e),
        "error: expected a list after `in`, found `\"FR\"`\n  |\n3 |   and country in \"FR\"\n  |                  ^^^^ here\n  = help: write one value as a list: `[\"FR\"]`"
    );
    let e = error("(a = 1\nand b = 2");
    assert_eq!(
        e.hint.as_deref(),
        Some("to close the `(` at line 1, column 1")
    );
}

#[test]
fn errors_come_in_source_order() {
    // The stray `)` comes before the unterminated string.
    assert_eq!(error("a = 1) and b = \"x").message, "unexpected `)`");
    assert_eq!(
        error("a = ) and b = \"x").message,
        "expected a value after `=`, found `)`"
    );
}

#[test]
fn deep_nesting_is_refused_not_overflowed() {
    let deep = format!("{}vip{}", "(".repeat(10_000), ")".repeat(10_000));
    assert_eq!(error(&deep).message, "expression is nested too deeply");
    let nots = format!("{}vip", "not ".repeat(10_000));
    assert_eq!(error(&nots).message, "expression is nested too deeply");
    let ok = format!("{}vip{}", "(".repeat(60), ")".repeat(60));
    assert_eq!(normal(&ok), "vip");
    let sum = format!("x = 1{}", " + 1".repeat(40));
    assert_eq!(error(&sum).message, "too many `+` and `-` in a row");
    // Long flat chains are fine.
    let long = vec!["a = 1"; 5_000].join(" or ");
    assert_eq!(normal(&long), long);
}

#[test]
fn normalisation() {
    assert_eq!(normal("  a>1   AND(b<2)  "), "a > 1 and b < 2");
    assert_eq!(normal("exists(a)"), "a exists");
    assert_eq!(normal("a NOT EXISTS"), "a not exists");
    assert_eq!(
        normal("(a = 1 and b = 2) and c = 3"),
        "a = 1 and b = 2 and c = 3"
    );
    assert_eq!(
        normal("a = 1 and (b = 2 or c = 3)"),
        "a = 1 and (b = 2 or c = 3)"
    );
    assert_eq!(
        normal("(a = 1 and b = 2) or c = 3"),
        "a = 1 and b = 2 or c = 3"
    );
    assert_eq!(normal("not (not a)"), "not not a");
    assert_eq!(
        normal("count(x within 1d where y) > 0"),
        "count(x where y within 1d) > 0"
    );
    assert_eq!(normal("in_segment(vip)"), "in_segment(\"vip\")");
    assert_eq!(normal("count(\"and\") = 0"), "count(\"and\") = 0");
    assert_eq!(
        normal("count(\"page.viewed\") = 0"),
        "count(\"page.viewed\") = 0"
    );
    assert_eq!(normal("`a b`.c = 1"), "`a b`.c = 1");
    assert_eq!(normal("`plain` = 1"), "plain = 1");
    assert_eq!(normal("`traits` = 1"), "`traits` = 1");
    assert_eq!(normal("traits.`traits` = 1"), "traits.traits = 1");
    assert_eq!(normal("x = 1.50"), "x = 1.5");
    assert_eq!(normal("x = 007"), "x = 7");
    assert_eq!(normal("x in [ ]"), "x in []");
    assert_eq!(normal("x = \"é\\\\\""), "x = \"é\\\\\"");
}

#[test]
fn equality_ignores_spacing_case_and_redundant_parentheses() {
    assert_eq!(
        parse("a > 1 and b").unwrap(),
        parse("(A > 1) AND (b)".replace('A', "a").as_str()).unwrap()
    );
    assert_eq!(parse("exists(x)").unwrap(), parse("x exists").unwrap());
    assert_ne!(parse("a > 1").unwrap(), parse("a >= 1").unwrap());
    assert_ne!(
        parse("a = 1 or b = 2 and c = 3").unwrap(),
        parse("(a = 1 or b = 2) and c = 3").unwrap()
    );
    // Names are case-sensitive.
    assert_ne!(parse("Country = 1").unwrap(), parse("country = 1").unwrap());
    // A bare name and a qualified one differ (they resolve differently).
    assert_ne!(
        parse("country = 1").unwrap(),
        parse("traits.country = 1").unwrap()
    );
}

#[test]
fn the_source_is_kept() {
    let expr: Expr = "a>1".parse().unwrap();
    assert_eq!(expr.source(), "a>1");
    assert_eq!(expr.to_string(), "a > 1");
}

#[test]
fn static_checks_refuse_comparisons_that_can_never_hold() {
    assert_eq!(
        error("total_spent > 30d").message,
        "a duration can only be compared with another duration"
    );
    assert_eq!(
        error("30d = 30d + x").message,
        "a duration can only be compared with another duration"
    );
    assert_eq!(
        error("now() > 5").message,
        "a time can't be compared with a number"
    );
    assert_eq!(
        error("last(x) = [1]").message,
        "a time can't be compared with a list"
    );
    assert_eq!(
        error("now() = \"soon\"").message,
        "`\"soon\"` is not a time"
    );
    assert_eq!(
        error("x < true").message,
        "booleans can only be compared with `=` and `!=`"
    );
    assert_eq!(
        error("x >= [1]").message,
        "lists can only be compared with `=` and `!=`"
    );
    assert_eq!(
        error("now() + now() > x").message,
        "two times can't be added"
    );
    assert_eq!(
        error("30d - now() > x").message,
        "a time can't be subtracted from a duration"
    );
    assert_eq!(
        error("x + \"a\" = 1").message,
        "only numbers, times and durations can be added or subtracted"
    );
    assert_eq!(
        error("x in [1] contains 2").message,
        "unexpected `contains`"
    );
    assert_eq!(
        error("30d contains \"d\"").message,
        "a duration can't be used with `contains`"
    );
    assert_eq!(error("x = -30d").message, "a duration can't be negative");
    // These are fine.
    for text in [
        "now() - last(x) > 30d",
        "signup_at + 30d < now()",
        "now() - signup_at >= 2w",
        "a - b > 30d",
        "total_spent - 100 > refunds",
        "last(x) = null",
        "last(x) = \"2024-05-01\"",
        "now() = signup_at",
    ] {
        normal(text);
    }
}

#[test]
fn names_and_namespaces() {
    assert_eq!(error("consent").message, "`consent` needs a name after it");
    assert_eq!(
        error("identifiers = 1").message,
        "`identifiers` needs a name after it"
    );
    assert_eq!(
        error("identifiers.email.domain = 1").message,
        "`identifiers.email` has no fields"
    );
    assert_eq!(error("traits.").message, "expected a name after `.`");
    assert_eq!(normal("TRAITS.country = 1"), "traits.country = 1");
    assert_eq!(normal("traits.and.or = 1"), "traits.and.or = 1");
    assert_eq!(
        error("and = 1").message,
        "expected a condition, found `and`"
    );
    assert_eq!(normal("`and` = 1"), "`and` = 1");
    assert_eq!(normal("count = 1"), "count = 1");
}

#[test]
fn where_clauses_see_only_event_properties() {
    assert_eq!(
        error("count(x where consent.email) > 0").message,
        "profile names can't be used inside `where`"
    );
    assert_eq!(
        error("count(x where did(y)) > 0").message,
        "`did(...)` can't be used inside `where`"
    );
    assert_eq!(
        error("count(x where count(y) > 1) > 0").message,
        "`count(...)` can't be used inside `where`"
    );
    assert_eq!(
        error("count(x where a = 1 where b = 2) > 0").message,
        "`where` is given twice"
    );
    assert_eq!(
        normal("count(x where `consent` = 1) > 0"),
        "count(x where `consent` = 1) > 0"
    );
    assert_eq!(
        normal("count(x where at > now() - 1d) > 0"),
        "count(x where at > now() - 1d) > 0"
    );
}

#[test]
fn event_functions_check_their_property() {
    assert_eq!(error("sum(x) > 1").message, "`sum` needs an event property");
    assert_eq!(
        error("max(x within 1d) > 1").message,
        "`max` needs an event property"
    );
    assert_eq!(
        error("did(x.amount)").message,
        "`did` counts events; it takes no property"
    );
    assert_eq!(
        error("count(within 1d) > 1").message,
        "expected an event name after `(`, found `within`"
    );
    assert_eq!(
        error("count(x) ").message,
        "`count(x)` is a number, not a condition"
    );
    assert_eq!(
        error("x = did(y)").message,
        "`did(...)` is a condition, not a value"
    );
    assert_eq!(error("in_segment(\"\")").message, "empty segment id");
}
