//! Evaluation against one profile. Every condition gives `true` or `false`: there is no "unknown", so
//! `not e` is always the complement of `e`.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ast::{
    Agg, AggFunc, ArithOp, CmpOp, Cond, EventQuery, Literal, Name, NameKind, Operand,
};

/// What an expression can see of one profile.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProfileView {
    /// Survivorship traits, e.g. `first_name`, `country`, `email_consent`.
    #[serde(default)]
    pub traits: BTreeMap<String, Value>,
    /// Computed traits, e.g. `total_spent`, `orders_90d`.
    #[serde(default)]
    pub computed: BTreeMap<String, Value>,
    /// `(type, normalised value)`, e.g. `("email", "ada@x.io")`.
    #[serde(default)]
    pub identifiers: Vec<(String, String)>,
    /// Purpose to granted; an absent purpose is not granted.
    #[serde(default)]
    pub consent: BTreeMap<String, bool>,
    /// The profile's timeline, in any order.
    #[serde(default)]
    pub events: Vec<EventView>,
}

/// One event of a profile's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventView {
    /// The event name, e.g. `order_completed`; matched exactly (case-sensitive).
    pub name: String,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// Its properties, e.g. `amount`.
    #[serde(default)]
    pub properties: BTreeMap<String, Value>,
}

/// A value during evaluation.
#[derive(Debug, Clone)]
enum Val<'a> {
    Null,
    Bool(bool),
    Num(f64),
    Str(Cow<'a, str>),
    Time(DateTime<Utc>),
    Dur(TimeDelta),
    List(Vec<Val<'a>>),
    Obj(&'a serde_json::Map<String, Value>),
    /// All the profile's identifiers of one type (never empty: none is `Null`). A test holds when it holds
    /// for any of them.
    Many(Vec<Val<'a>>),
}

pub(crate) struct Evaluator<'a> {
    pub profile: &'a ProfileView,
    pub now: DateTime<Utc>,
    pub in_segment: &'a dyn Fn(&str) -> bool,
}

/// Names resolve against the profile, or (inside `where`) against one event's properties.
#[derive(Clone, Copy)]
enum Scope<'a> {
    Profile,
    Event(&'a EventView),
}

impl<'a> Evaluator<'a> {
    pub fn eval(&self, cond: &'a Cond) -> bool {
        self.cond(cond, Scope::Profile)
    }

    fn cond(&self, cond: &'a Cond, scope: Scope<'a>) -> bool {
        match cond {
            Cond::Or(items) => items.iter().any(|c| self.cond(c, scope)),
            Cond::And(items) => items.iter().all(|c| self.cond(c, scope)),
            Cond::Not(inner) => !self.cond(inner, scope),
            Cond::Compare { left, op, right } => self.compare(left, *op, right, scope),
            Cond::In {
                value,
                list,
                negated,
            } => {
                let value = self.value(value, scope);
                if *negated {
                    !matches!(value, Val::Null)
                        && list.iter().all(|item| match item {
                            Literal::Null => true,
                            item => compare(CmpOp::Ne, &value, &literal(item)),
                        })
                } else {
                    list.iter().any(|item| match item {
                        Literal::Null => matches!(value, Val::Null),
                        item => compare(CmpOp::Eq, &value, &literal(item)),
                    })
                }
            }
            Cond::Contains { value, needle } => contains(
                &self.value(value, scope),
                &self.value(needle, scope),
                |hay, needle| hay.contains(needle),
            ),
            Cond::StartsWith { value, prefix } => text_test(
                &self.value(value, scope),
                &self.value(prefix, scope),
                |hay, prefix| hay.starts_with(prefix),
            ),
            Cond::Exists { value, negated } => {
                matches!(self.value(value, scope), Val::Null) == *negated
            }
            Cond::Did(query) => self.events(query).next().is_some(),
            Cond::InSegment { id, .. } => (self.in_segment)(id),
            Cond::Truthy(value) => match self.value(value, scope) {
                Val::Bool(b) => b,
                Val::Many(values) => !values.is_empty(),
                _ => false,
            },
        }
    }

    /// `left op right`, with the rule for the literal `null`: `x = null` is true when x is missing.
    fn compare(&self, left: &'a Operand, op: CmpOp, right: &'a Operand, scope: Scope<'a>) -> bool {
        let is_null = |o: &Operand| matches!(o, Operand::Lit(Literal::Null));
        let missing = match (is_null(left), is_null(right)) {
            (true, true) => true,
            (true, false) => matches!(self.value(right, scope), Val::Null),
            (false, true) => matches!(self.value(left, scope), Val::Null),
            (false, false) => {
                return compare(op, &self.value(left, scope), &self.value(right, scope));
            }
        };
        match op {
            CmpOp::Eq => missing,
            CmpOp::Ne => !missing,
            _ => false,
        }
    }

    fn value(&self, operand: &'a Operand, scope: Scope<'a>) -> Val<'a> {
        match operand {
            Operand::Lit(l) => literal(l),
            Operand::Dur(d) => d.to_delta().map_or(Val::Null, Val::Dur),
            Operand::List(items) => Val::List(items.iter().map(literal).collect()),
            Operand::Name(name) => self.name(name, scope),
            Operand::Now => Val::Time(self.now),
            Operand::Agg(agg) => self.agg(agg),
            Operand::Arith { op, left, right } => {
                arith(*op, self.value(left, scope), self.value(right, scope))
            }
        }
    }

    fn name(&self, name: &'a Name, scope: Scope<'a>) -> Val<'a> {
        let profile = self.profile;
        let (root, rest) = match name.kind {
            NameKind::Consent => {
                return Val::Bool(profile.consent.get(&name.path[0]).copied().unwrap_or(false));
            }
            NameKind::Identifier => {
                let values: Vec<Val<'a>> = profile
                    .identifiers
                    .iter()
                    .filter(|(kind, _)| *kind == name.path[0])
                    .map(|(_, value)| Val::Str(Cow::Borrowed(value.as_str())))
                    .collect();
                return if values.is_empty() {
                    Val::Null
                } else {
                    Val::Many(values)
                };
            }
            NameKind::Auto => {
                let key = &name.path[0];
                (
                    profile
                        .computed
                        .get(key)
                        .or_else(|| profile.traits.get(key)),
                    &name.path[1..],
                )
            }
            NameKind::Trait => (profile.traits.get(&name.path[0]), &name.path[1..]),
            NameKind::Computed => (profile.computed.get(&name.path[0]), &name.path[1..]),
            NameKind::Property => match scope {
                Scope::Event(event) => (event.properties.get(&name.path[0]), &name.path[1..]),
                Scope::Profile => (None, &name.path[1..]),
            },
        };
        root.and_then(|value| descend(value, rest))
            .map_or(Val::Null, json)
    }

    /// The events `query` selects: by name, up to the evaluation time (events after it are not seen),
    /// within the window, and satisfying `where`.
    fn events(&self, query: &'a EventQuery) -> impl Iterator<Item = &'a EventView> + '_ {
        let from = query
            .within
            .and_then(|d| d.to_delta())
            .and_then(|d| self.now.checked_sub_signed(d));
        self.profile.events.iter().filter(move |event| {
            event.name == query.event
                && event.occurred_at <= self.now
                && from.is_none_or(|from| event.occurred_at >= from)
                && query
                    .filter
                    .as_ref()
                    .is_none_or(|filter| self.cond(filter, Scope::Event(event)))
        })
    }

    fn agg(&self, agg: &'a Agg) -> Val<'a> {
        let property = |event: &'a EventView| -> Val<'a> {
            let path = agg.property.as_deref().unwrap_or_default();
            path.first()
                .and_then(|head| event.properties.get(head))
                .and_then(|value| descend(value, &path[1..]))
                .map_or(Val::Null, json)
        };
        let numbers = || self.events(&agg.query).filter_map(|e| number(&property(e)));
        match agg.func {
            AggFunc::Count => Val::Num(self.events(&agg.query).count() as f64),
            AggFunc::Sum => Val::Num(numbers().sum()),
            AggFunc::Min => numbers().min_by(f64::total_cmp).map_or(Val::Null, Val::Num),
            AggFunc::Max => numbers().max_by(f64::total_cmp).map_or(Val::Null, Val::Num),
            AggFunc::First | AggFunc::Last => {
                // Ties on time: the earliest in the timeline for `first`, the latest for `last`.
                let mut chosen: Option<&EventView> = None;
                for event in self.events(&agg.query) {
                    let better = chosen.is_none_or(|c| {
                        if agg.func == AggFunc::First {
                            event.occurred_at < c.occurred_at
                        } else {
                            event.occurred_at >= c.occurred_at
                        }
                    });
                    if better {
                        chosen = Some(event);
                    }
                }
                match (chosen, &agg.property) {
                    (None, _) => Val::Null,
                    (Some(event), None) => Val::Time(event.occurred_at),
                    (Some(event), Some(_)) => property(event),
                }
            }
        }
    }
}

pub(crate) fn descend<'a>(mut value: &'a Value, path: &[String]) -> Option<&'a Value> {
    for segment in path {
        value = value.as_object()?.get(segment)?;
    }
    Some(value)
}

fn json(value: &Value) -> Val<'_> {
    match value {
        Value::Null => Val::Null,
        Value::Bool(b) => Val::Bool(*b),
        Value::Number(n) => n.as_f64().map_or(Val::Null, Val::Num),
        Value::String(s) => Val::Str(Cow::Borrowed(s)),
        Value::Array(items) => Val::List(items.iter().map(json).collect()),
        Value::Object(map) => Val::Obj(map),
    }
}

fn literal(literal: &Literal) -> Val<'_> {
    match literal {
        Literal::Null => Val::Null,
        Literal::Bool(b) => Val::Bool(*b),
        Literal::Num(n) => Val::Num(*n),
        Literal::Str(s) => Val::Str(Cow::Borrowed(s)),
    }
}

/// A number, or a string that reads as one.
fn number(value: &Val<'_>) -> Option<f64> {
    match value {
        Val::Num(n) => Some(*n),
        Val::Str(s) => parse_number(s),
        _ => None,
    }
}

pub(crate) fn parse_number(text: &str) -> Option<f64> {
    text.trim().parse::<f64>().ok().filter(|n| n.is_finite())
}

/// An RFC 3339 time (`2024-05-01T09:00:00Z`, any offset) or a date (`2024-05-01`, midnight UTC).
pub(crate) fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Some(time.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

fn time(value: &Val<'_>) -> Option<DateTime<Utc>> {
    match value {
        Val::Time(t) => Some(*t),
        Val::Str(s) => parse_time(s),
        _ => None,
    }
}

fn arith<'a>(op: ArithOp, left: Val<'a>, right: Val<'a>) -> Val<'a> {
    let result = match (&left, &right) {
        (Val::Null, _) | (_, Val::Null) | (Val::Many(_), _) | (_, Val::Many(_)) => None,
        (_, Val::Dur(d)) if !matches!(left, Val::Dur(_)) => time(&left).and_then(|t| match op {
            ArithOp::Add => t.checked_add_signed(*d).map(Val::Time),
            ArithOp::Sub => t.checked_sub_signed(*d).map(Val::Time),
        }),
        (Val::Dur(d), _) if !matches!(right, Val::Dur(_)) => match op {
            ArithOp::Add => time(&right)
                .and_then(|t| t.checked_add_signed(*d))
                .map(Val::Time),
            ArithOp::Sub => None,
        },
        (Val::Dur(a), Val::Dur(b)) => match op {
            ArithOp::Add => a.checked_add(b).map(Val::Dur),
            ArithOp::Sub => a.checked_sub(b).map(Val::Dur),
        },
        (Val::Time(_), _) | (_, Val::Time(_)) => match (op, time(&left), time(&right)) {
            (ArithOp::Sub, Some(a), Some(b)) => Some(Val::Dur(a.signed_duration_since(b))),
            _ => None,
        },
        _ => match (number(&left), number(&right)) {
            (Some(a), Some(b)) => Some(Val::Num(match op {
                ArithOp::Add => a + b,
                ArithOp::Sub => a - b,
            })),
            _ => None,
        },
    };
    result.unwrap_or(Val::Null)
}

/// `left op right` with neither side the literal `null`.
fn compare(op: CmpOp, left: &Val<'_>, right: &Val<'_>) -> bool {
    match (left, right) {
        (Val::Null, _) | (_, Val::Null) => false,
        (Val::Many(values), _) => {
            if op == CmpOp::Ne {
                !values.iter().any(|v| compare(CmpOp::Eq, v, right))
            } else {
                values.iter().any(|v| compare(op, v, right))
            }
        }
        (_, Val::Many(_)) => compare(op.flipped(), right, left),
        _ => match op {
            CmpOp::Eq => equal(left, right),
            CmpOp::Ne => !equal(left, right),
            _ => order(left, right).is_some_and(|o| match op {
                CmpOp::Lt => o == Ordering::Less,
                CmpOp::Le => o != Ordering::Greater,
                CmpOp::Gt => o == Ordering::Greater,
                _ => o != Ordering::Less,
            }),
        },
    }
}

fn equal(left: &Val<'_>, right: &Val<'_>) -> bool {
    match (left, right) {
        (Val::Null, Val::Null) => true,
        (Val::Bool(a), Val::Bool(b)) => a == b,
        (Val::List(a), Val::List(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| equal(x, y))
        }
        (Val::Obj(a), Val::Obj(b)) => a == b,
        (Val::Many(values), other) | (other, Val::Many(values)) => {
            values.iter().any(|v| equal(v, other))
        }
        _ => order(left, right) == Some(Ordering::Equal),
    }
}

/// The order of two values of comparable kinds: numbers (numeric strings count as numbers next to a
/// number), times (RFC 3339 strings count as times next to a time), strings, durations.
fn order(left: &Val<'_>, right: &Val<'_>) -> Option<Ordering> {
    match (left, right) {
        (Val::Num(a), Val::Num(b)) => a.partial_cmp(b),
        (Val::Num(a), Val::Str(s)) => parse_number(s).and_then(|b| a.partial_cmp(&b)),
        (Val::Str(s), Val::Num(b)) => parse_number(s).and_then(|a| a.partial_cmp(b)),
        (Val::Time(a), Val::Time(b)) => Some(a.cmp(b)),
        (Val::Time(a), Val::Str(s)) => parse_time(s).map(|b| a.cmp(&b)),
        (Val::Str(s), Val::Time(b)) => parse_time(s).map(|a| a.cmp(b)),
        (Val::Str(a), Val::Str(b)) => Some(a.cmp(b)),
        (Val::Dur(a), Val::Dur(b)) => Some(a.cmp(b)),
        _ => None,
    }
}

/// `contains`: a substring of a string, or an element of a list.
fn contains(haystack: &Val<'_>, needle: &Val<'_>, test: fn(&str, &str) -> bool) -> bool {
    match (haystack, needle) {
        (Val::Null, _) | (_, Val::Null) => false,
        (_, Val::Many(needles)) => needles.iter().any(|n| contains(haystack, n, test)),
        (Val::Many(values), _) => values.iter().any(|v| contains(v, needle, test)),
        (Val::List(items), _) => items
            .iter()
            .any(|item| !matches!(item, Val::Null) && compare(CmpOp::Eq, item, needle)),
        _ => text_test(haystack, needle, test),
    }
}

/// A test between two strings (any of several identifiers).
fn text_test(value: &Val<'_>, other: &Val<'_>, test: fn(&str, &str) -> bool) -> bool {
    match (value, other) {
        (Val::Many(values), _) => values.iter().any(|v| text_test(v, other, test)),
        (_, Val::Many(others)) => others.iter().any(|o| text_test(value, o, test)),
        (Val::Str(a), Val::Str(b)) => test(a, b),
        _ => false,
    }
}
