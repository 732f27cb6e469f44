//! The computed-trait expressions of `[profiles.computed]`:
//! `function(event[.property] [within N(d|h|m|w)])`, e.g. `count(order_completed within 90d)` or
//! `sum(order_completed.amount)`. Errors carry the byte offset of the problem inside the expression.

use crate::model::{Aggregate, ComputedTrait};

/// Why an expression was refused, and where (byte offset into it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpressionError {
    /// Byte offset of the problem.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
}

const FUNCTIONS: &[(&str, Aggregate)] = &[
    ("count", Aggregate::Count),
    ("sum", Aggregate::Sum),
    ("min", Aggregate::Min),
    ("max", Aggregate::Max),
    ("first", Aggregate::First),
    ("last", Aggregate::Last),
    ("distinct", Aggregate::Distinct),
];

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// Parses one expression for the trait `name`.
pub fn parse_computed(name: &str, text: &str) -> Result<ComputedTrait, ExpressionError> {
    let fail = |offset: usize, message: String| ExpressionError { offset, message };
    let open = text.find('(').ok_or_else(|| {
        fail(
            0,
            "expected `function(event...)`, e.g. `count(order_completed)`".into(),
        )
    })?;
    let function = text[..open].trim();
    let aggregate = FUNCTIONS
        .iter()
        .find(|(n, _)| *n == function)
        .map(|(_, a)| *a)
        .ok_or_else(|| {
            let known: Vec<&str> = FUNCTIONS.iter().map(|(n, _)| *n).collect();
            let start = text.len() - text.trim_start().len();
            fail(
                start,
                format!(
                    "unknown function `{function}`; use one of {}",
                    known.join(", ")
                ),
            )
        })?;
    let close = text
        .rfind(')')
        .filter(|c| *c > open)
        .ok_or_else(|| fail(text.len(), "missing `)`".into()))?;
    if !text[close + 1..].trim().is_empty() {
        return Err(fail(close + 1, "unexpected text after `)`".into()));
    }
    let inner = &text[open + 1..close];
    let inner_start = open + 1;
    let mut words = inner.split_whitespace();
    let target = words
        .next()
        .ok_or_else(|| fail(inner_start, "expected an event name".into()))?;
    let target_offset = inner_start + inner.find(target).unwrap_or(0);
    let (event, property) = match target.split_once('.') {
        Some((event, property)) => (event, Some(property)),
        None => (target, None),
    };
    if event.is_empty() || !event.chars().all(is_name_char) {
        return Err(fail(
            target_offset,
            format!("`{event}` is not an event name"),
        ));
    }
    if let Some(property) = property
        && (property.is_empty() || !property.chars().all(is_name_char))
    {
        return Err(fail(
            target_offset + event.len() + 1,
            format!("`{property}` is not a property name"),
        ));
    }
    let needs_property = matches!(
        aggregate,
        Aggregate::Sum | Aggregate::Min | Aggregate::Max | Aggregate::Distinct
    );
    if needs_property && property.is_none() {
        return Err(fail(
            target_offset,
            format!("`{function}` needs a property, e.g. `{function}({event}.amount)`"),
        ));
    }
    if aggregate == Aggregate::Count && property.is_some() {
        return Err(fail(
            target_offset,
            format!("`count` counts events; write `count({event})`"),
        ));
    }
    let rest: Vec<&str> = words.collect();
    let offset_of = |word: &str| inner_start + inner.rfind(word).unwrap_or(0);
    let within = match rest.as_slice() {
        [] => None,
        ["within", span] => Some(parse_window(span).ok_or_else(|| {
            fail(
                offset_of(span),
                format!("`{span}` is not a window; write e.g. `90d`, `12h`, `30m` or `4w`"),
            )
        })?),
        ["within"] => {
            return Err(fail(
                offset_of("within") + 6,
                "`within` needs a window, e.g. `within 90d`".into(),
            ));
        }
        ["within", _, extra, ..] => {
            return Err(fail(
                offset_of(extra),
                format!("unexpected `{extra}`; write the window as one word, e.g. `90d`"),
            ));
        }
        [word, ..] => {
            return Err(fail(
                offset_of(word),
                format!("expected `within <window>`, found `{word}`"),
            ));
        }
    };
    Ok(ComputedTrait {
        name: name.to_owned(),
        aggregate,
        event: event.to_owned(),
        property: property.map(str::to_owned),
        within,
        expression: text.trim().to_owned(),
    })
}

/// `N` followed by `d`, `h`, `m` or `w` (N > 0).
pub(crate) fn parse_window(text: &str) -> Option<chrono::Duration> {
    let (number, unit) = text.split_at(text.len().checked_sub(1)?);
    let n: i64 = number.parse().ok().filter(|n| *n > 0)?;
    match unit {
        "d" => chrono::Duration::try_days(n),
        "h" => chrono::Duration::try_hours(n),
        "m" => chrono::Duration::try_minutes(n),
        "w" => chrono::Duration::try_weeks(n),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_parse() {
        let t = parse_computed("orders_90d", "count(order_completed within 90d)").unwrap();
        assert_eq!(
            (t.aggregate, t.event.as_str(), t.property, t.within),
            (
                Aggregate::Count,
                "order_completed",
                None,
                chrono::Duration::try_days(90)
            )
        );
        let t = parse_computed("total_spent", "sum(order_completed.amount)").unwrap();
        assert_eq!(
            (t.aggregate, t.property.as_deref(), t.within),
            (Aggregate::Sum, Some("amount"), None)
        );
        assert!(parse_computed("x", "last(page_viewed)").is_ok());
    }

    #[test]
    fn errors_point_at_the_problem() {
        let err = parse_computed("x", "avg(order_completed.amount)").unwrap_err();
        assert_eq!(err.offset, 0);
        assert!(err.message.starts_with("unknown function `avg`"));
        let err = parse_computed("x", "sum(order_completed)").unwrap_err();
        assert_eq!(
            (err.offset, err.message.as_str()),
            (
                4,
                "`sum` needs a property, e.g. `sum(order_completed.amount)`"
            )
        );
        let err = parse_computed("x", "count(order_completed within 90 days)").unwrap_err();
        assert_eq!(
            (err.offset, err.message.as_str()),
            (
                32,
                "unexpected `days`; write the window as one word, e.g. `90d`"
            )
        );
        let err = parse_computed("x", "count(order_completed within 9y)").unwrap_err();
        assert!(err.message.contains("`9y` is not a window"), "{err:?}");
    }
}
