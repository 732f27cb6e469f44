//! The segment language: a small, safe expression language that decides whether one customer profile
//! belongs to a segment. It is evaluated in memory against a [`ProfileView`], never compiled to SQL.
//!
//! ```
//! use spindle_segments::{ProfileView, evaluate, parse};
//!
//! let expr = parse("total_spent > 500 and consent.email").unwrap();
//! let mut profile = ProfileView::default();
//! profile.computed.insert("total_spent".into(), serde_json::json!(812.5));
//! profile.consent.insert("email".into(), true);
//! assert!(evaluate(&expr, &profile, chrono::Utc::now(), &|_| false));
//! assert_eq!(expr.to_string(), "total_spent > 500 and consent.email");
//! ```
//!
//! # The language
//!
//! An expression is one **condition**. Conditions are built from **values**.
//!
//! ## Values
//!
//! | written | meaning |
//! | --- | --- |
//! | `500`, `12.5`, `-3` | numbers |
//! | `"gold"`, `"say \"hi\""`, `"C:\\dir"` | strings, in double quotes; `\"` and `\\` are the only escapes |
//! | `true`, `false`, `null` | booleans and the missing value |
//! | `30d`, `12h`, `15m`, `2w`, `45s` | durations: a whole number and one unit letter (`s` `m` `h` `d` `w`) |
//! | `["FR", "BE"]`, `[1, 2, null]` | lists of numbers, strings, booleans and `null` |
//! | `total_spent` | a computed trait if one has that name, else a trait |
//! | `traits.country`, `traits.address.city` | a trait; dotted parts go into JSON objects |
//! | `computed.total_spent` | a computed trait |
//! | `consent.email` | `true` when the purpose is granted; an absent purpose is `false` (never `null`) |
//! | `identifiers.email` | the profile's identifiers of that type (see below) |
//! | `` `first name` ``, `` traits.`zip-code` `` | a name that is not a plain word, or that is a keyword, in backticks |
//! | `now()` | the evaluation time |
//! | `now() - 30d`, `now() + 1d` | a time plus or minus a duration |
//! | `now() - last(order_completed)` | the duration between two times |
//! | `total_spent - 100` | numbers can be added and subtracted too |
//! | `count(...)`, `sum(...)`, `min(...)`, `max(...)`, `first(...)`, `last(...)` | event functions, below |
//!
//! Plain names are letters, digits and `_`, not starting with a digit. Keywords, function names and the
//! prefixes `traits.`, `computed.`, `consent.`, `identifiers.` are case-insensitive (`AND`, `Count(`);
//! names (traits, events, properties, purposes) are case-sensitive. A trait that is called like a
//! keyword or a prefix is written in backticks: `` `exists` ``, `` `consent`.given ``.
//!
//! ## Conditions
//!
//! | written | true when |
//! | --- | --- |
//! | `a = b`, `a != b`, `a < b`, `a <= b`, `a > b`, `a >= b` | the comparison holds (see *Comparing*) |
//! | `x in ["FR", "BE"]` | `x` equals one of the items (`null` in the list matches a missing `x`) |
//! | `x not in ["FR", "BE"]` | `x` is present and equals none of the items |
//! | `x contains "sub"` | `x` is a string containing `"sub"`, or a list with an element equal to it |
//! | `x starts_with "pre"` | `x` is a string starting with `"pre"` |
//! | `x exists`, `exists(x)` | `x` is present and not `null` |
//! | `x not exists` | `x` is missing or `null` |
//! | `did(event ...)` | at least one such event, e.g. `did(cart_abandoned within 7d)` |
//! | `in_segment("vip")` | the profile is a member of segment `vip` (asked to the caller) |
//! | `consent.email`, `vip`, `true` | a name alone: its value is the boolean `true` (`identifiers.x` alone: the profile has one) |
//! | `not c` | `c` is false |
//! | `c and d`, `c or d` | both, either |
//! | `( c )` | grouping |
//!
//! Precedence, from tightest: comparisons, `not`, `and`, `or`. So
//! `not a = 1 or b and c` reads `(not (a = 1)) or (b and c)`.
//!
//! A value that is not a name or `true`/`false` cannot stand alone as a condition: `count(x)` alone is
//! refused with a hint (`count(x) > 0`, or `did(x)`).
//!
//! ## Comparing
//!
//! - Numbers compare by value. A string that reads as a number (`"500"`, `" 12.5 "`) counts as a number
//!   when the other side is a number: `total_spent > 500` holds for `"812.5"`.
//! - Times compare by instant. A string in RFC 3339 (`"2024-05-01T09:00:00+02:00"`) or a date
//!   (`"2024-05-01"`, midnight UTC) counts as a time when the other side is a time (`now()`, `now() - 7d`,
//!   `first(...)`, `last(...)`).
//! - Strings compare by text (byte order, case-sensitive). Durations compare by length.
//! - Booleans, lists and JSON objects compare with `=` and `!=` only.
//! - Values of different kinds are never equal: `=` is false, `!=` is true, `<` and the like are false.
//! - Obvious mistakes are refused when parsing: a duration compared with a number or a name
//!   (`total_spent > 30d`), a time compared with a number, a string that is not a time compared with a time,
//!   `<` on `null`, booleans or lists.
//!
//! ## Missing values and `null`
//!
//! A missing trait, property or sub-path is `null`, and so is a JSON `null`.
//!
//! - `x = null` is true when `x` is missing or null; `x != null` is true when it is present.
//! - Every other comparison involving a `null` is **false**: when `x` is missing, `x = 5`, `x != 5`,
//!   `x > 5`, `x contains "a"`, `x not in [1]` are all false.
//! - A condition is never "unknown": every condition is `true` or `false`, so `not c` is always exactly
//!   the opposite of `c`. When `x` is missing, `x != 5` is false but `not x = 5` is true.
//!
//! ## Identifiers
//!
//! `identifiers.email` stands for all the profile's identifiers of type `email`. A test on it holds when
//! it holds for any of them: `identifiers.email = "ada@x.io"`, `identifiers.email contains "@x.io"`,
//! `identifiers.email in [...]`. `identifiers.email != "ada@x.io"` and `not in` hold when none matches.
//! Alone, or with `exists`, it is true when the profile has at least one. With none it is `null`.
//!
//! ## Events
//!
//! ```text
//! count(EVENT [where CONDITION] [within DURATION])
//! did(EVENT [where CONDITION] [within DURATION])          count >= 1
//! sum(EVENT.PROPERTY ...), min(...), max(...)             over numeric property values
//! first(EVENT ...), last(EVENT ...)                       the time of the earliest / latest
//! first(EVENT.PROPERTY ...), last(EVENT.PROPERTY ...)     that property of the earliest / latest
//! ```
//!
//! - `EVENT` is a plain name (`order_completed`) or a string (`"Order Completed"`), matched exactly.
//! - Only events up to the evaluation time are seen: evaluating at a past time sees the timeline as it
//!   was then (events stamped later, e.g. by a skewed clock, are left out).
//! - `within 90d` keeps the events from 90 days before the evaluation time up to it, both ends
//!   included. Without `within`, all events up to the evaluation time count.
//! - `where` keeps the events whose properties satisfy the condition. Names inside `where` are **event
//!   properties** (`where amount > 100 and currency = "EUR"`, `where items.count >= 2`); profile names and
//!   event functions can't be used there. `where` and `within` may come in either order, once each.
//! - `count` gives a number (0 when none). `sum` adds the numeric values of the property (numbers and
//!   numeric strings; other values are skipped; 0 when none). `min`/`max` give `null` when there is no
//!   numeric value. `first`/`last` give `null` when there is no event.
//!
//! ```text
//! count(order_completed within 90d) >= 3
//! count(order_completed where amount > 100 within 30d) > 0
//! did(cart_abandoned within 7d) and not did(order_completed within 7d)
//! sum(order_completed.amount within 90d) > 1000
//! last(order_completed) < now() - 60d
//! now() - first(signed_up) > 2w
//! ```
//!
//! ## Segments
//!
//! `in_segment("vip")` asks the caller whether the profile is in segment `vip`. [`segment_refs`] lists
//! the segments an expression refers to, so the caller can evaluate them first and refuse cycles.
//!
//! ## Grammar
//!
//! ```text
//! expression := or
//! or         := and ("or" and)*
//! and        := not ("and" not)*
//! not        := "not" not | predicate
//! predicate  := "(" or ")"
//!             | "did" "(" query ")" | "in_segment" "(" (STRING | WORD) ")" | "exists" "(" value ")"
//!             | value [ ("=" | "!=" | "<" | "<=" | ">" | ">=") value
//!                     | ["not"] "in" list | "contains" value | "starts_with" value
//!                     | ["not"] "exists" ]
//! value      := term (("+" | "-") term)*                      at most 16 terms
//! term       := NUMBER | "-" NUMBER | STRING | DURATION | "true" | "false" | "null" | list
//!             | "now" "(" ")" | AGG "(" query ")" | name
//! AGG        := "count" | "sum" | "min" | "max" | "first" | "last"
//! query      := (WORD | STRING) ["." path] { "where" or | "within" DURATION }
//! list       := "[" [item ("," item)* [","]] "]"
//! item       := NUMBER | "-" NUMBER | STRING | "true" | "false" | "null"
//! name       := path | ("traits" | "computed") "." path | ("consent" | "identifiers") "." segment
//! path       := segment ("." segment)*
//! segment    := WORD | "`" any text but a backtick "`"
//! DURATION   := DIGITS ("s" | "m" | "h" | "d" | "w")           no space: `30d`
//! NUMBER     := DIGITS ["." DIGITS]
//! ```
//!
//! `not`, parentheses and `where` nest at most 64 deep.
//!
//! # Errors
//!
//! [`parse`] returns a [`ParseError`] with the byte offset and length of the problem, a message and
//! usually a hint; [`render_error`] shows it with a caret line:
//!
//! ```text
//! error: expected a value after `>`
//!   |
//! 1 | total_spent >
//!   |              ^ here
//!   = help: compare with a number, a string, a list, a name or a time, e.g. `total_spent > 500`
//! ```
//!
//! [`check`] then checks the names against the traits, computed traits, consent purposes and segments
//! that exist, suggesting the closest one.
//!
//! # Normal form
//!
//! `Display` on an [`Expr`] prints it normalised: lowercase keywords, single spaces, `x exists` for
//! `exists(x)`, `where` before `within`, only the parentheses precedence needs, and redundant ones
//! (`(a and b) and c`) dropped. Parsing the normal form gives an equal expression.
#![deny(missing_docs)]

mod analysis;
mod ast;
mod display;
mod error;
mod eval;
mod lexer;
mod parser;
mod table;

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};

pub use analysis::{Known, check, segment_refs, uses_time};
pub use error::{ParseError, render_error};
pub use eval::{EventView, ProfileView};
pub use table::{MemberSet, ProfileTable};

/// A parsed segment expression. Build one with [`parse`]; print its normal form with `Display`.
///
/// Two expressions are equal when they mean the same after normalisation: the source text, spacing,
/// keyword case and redundant parentheses do not count.
#[derive(Debug, Clone)]
pub struct Expr {
    source: String,
    root: ast::Cond,
}

impl Expr {
    /// The text this expression was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }
}

impl PartialEq for Expr {
    fn eq(&self, other: &Self) -> bool {
        self.root == other.root
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.root, f)
    }
}

impl FromStr for Expr {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse(text)
    }
}

/// Parses a segment expression. The error points at the first problem; see [`render_error`].
pub fn parse(text: &str) -> Result<Expr, ParseError> {
    let root = parser::parse(text)?;
    Ok(Expr {
        source: text.to_owned(),
        root,
    })
}

/// Whether `profile` satisfies `expr` at time `now` (the reference for `now()` and `within` windows).
///
/// `in_segment` answers `in_segment("id")`: whether the profile is a member of that segment.
pub fn evaluate(
    expr: &Expr,
    profile: &ProfileView,
    now: DateTime<Utc>,
    in_segment: &dyn Fn(&str) -> bool,
) -> bool {
    eval::Evaluator {
        profile,
        now,
        in_segment,
    }
    .eval(&expr.root)
}
