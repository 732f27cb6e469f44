//! What an expression refers to: names checked against what exists, segment references, use of time.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::Expr;
use crate::ast::{Cond, Name, NameKind, Operand, Span};
use crate::error::{ParseError, suggest};

/// The names that exist, for [`check`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Known {
    /// Trait names (`traits.x`, or bare `x` when no computed trait has that name).
    #[serde(default)]
    pub traits: BTreeSet<String>,
    /// Computed trait names (`computed.x`, or bare `x`).
    #[serde(default)]
    pub computed: BTreeSet<String>,
    /// Segment ids (`in_segment("x")`).
    #[serde(default)]
    pub segments: BTreeSet<String>,
    /// Consent purposes (`consent.x`).
    #[serde(default)]
    pub consent: BTreeSet<String>,
}

/// Something an expression refers to.
enum Ref<'a> {
    Name(&'a Name),
    Segment(&'a str, Span),
}

fn walk_cond<'a>(cond: &'a Cond, visit: &mut dyn FnMut(Ref<'a>)) -> bool {
    match cond {
        Cond::Or(items) | Cond::And(items) => {
            items.iter().fold(false, |acc, c| walk_cond(c, visit) | acc)
        }
        Cond::Not(inner) => walk_cond(inner, visit),
        Cond::Compare { left, right, .. }
        | Cond::Contains {
            value: left,
            needle: right,
        }
        | Cond::StartsWith {
            value: left,
            prefix: right,
        } => walk_operand(left, visit) | walk_operand(right, visit),
        Cond::In { value, .. } | Cond::Exists { value, .. } | Cond::Truthy(value) => {
            walk_operand(value, visit)
        }
        Cond::Did(query) => {
            if let Some(filter) = &query.filter {
                walk_cond(filter, visit);
            }
            true
        }
        Cond::InSegment { id, span } => {
            visit(Ref::Segment(id, *span));
            false
        }
    }
}

/// Visits the names and segments under `operand`; returns true when it depends on time (reads events or
/// `now()`).
fn walk_operand<'a>(operand: &'a Operand, visit: &mut dyn FnMut(Ref<'a>)) -> bool {
    match operand {
        Operand::Lit(_) | Operand::Dur(_) | Operand::List(_) => false,
        Operand::Name(name) => {
            visit(Ref::Name(name));
            false
        }
        Operand::Now => true,
        Operand::Agg(agg) => {
            if let Some(filter) = &agg.query.filter {
                walk_cond(filter, visit);
            }
            true
        }
        Operand::Arith { left, right, .. } => {
            walk_operand(left, visit) | walk_operand(right, visit)
        }
    }
}

/// Checks the names in `expr` against what exists: one error per unknown trait, computed trait, consent
/// purpose or segment (the first place it is used), with "did you mean `x`?" when a known name is close.
///
/// Identifier types, event names and event properties are not checked: they are open-ended.
pub fn check(expr: &Expr, known: &Known) -> Vec<ParseError> {
    let mut errors = Vec::new();
    let mut seen_segments = BTreeSet::new();
    let mut seen_names = BTreeSet::new();
    walk_cond(&expr.root, &mut |reference| {
        let (span, error) = match reference {
            Ref::Segment(id, span) => {
                if known.segments.contains(id) || !seen_segments.insert(id) {
                    return;
                }
                (
                    span,
                    (
                        format!("unknown segment `{id}`"),
                        suggest(id, strs(&known.segments), "segment"),
                    ),
                )
            }
            Ref::Name(name) => {
                let head = name.path[0].as_str();
                let error = match name.kind {
                    NameKind::Property | NameKind::Identifier => return,
                    NameKind::Auto
                        if known.computed.contains(head) || known.traits.contains(head) =>
                    {
                        return;
                    }
                    NameKind::Trait if known.traits.contains(head) => return,
                    NameKind::Computed if known.computed.contains(head) => return,
                    NameKind::Consent if known.consent.contains(head) => return,
                    NameKind::Auto => {
                        let all: BTreeSet<&str> = known
                            .traits
                            .iter()
                            .chain(&known.computed)
                            .map(String::as_str)
                            .collect();
                        (
                            format!("unknown trait `{head}`"),
                            suggest(head, all, "trait"),
                        )
                    }
                    NameKind::Trait if known.computed.contains(head) => (
                        format!("unknown trait `{head}`"),
                        format!("`{head}` is a computed trait: write `computed.{head}`"),
                    ),
                    NameKind::Trait => (
                        format!("unknown trait `{head}`"),
                        suggest(head, strs(&known.traits), "trait"),
                    ),
                    NameKind::Computed if known.traits.contains(head) => (
                        format!("unknown computed trait `{head}`"),
                        format!("`{head}` is a trait, not a computed trait: write `traits.{head}`"),
                    ),
                    NameKind::Computed => (
                        format!("unknown computed trait `{head}`"),
                        suggest(head, strs(&known.computed), "computed trait"),
                    ),
                    NameKind::Consent => (
                        format!("unknown consent purpose `{head}`"),
                        suggest(head, strs(&known.consent), "consent purpose"),
                    ),
                };
                if !seen_names.insert((name.kind, head)) {
                    return;
                }
                (name.span, error)
            }
        };
        errors.push(ParseError::new(span.start, span.len(), error.0).hint(error.1));
    });
    errors
}

fn strs(set: &BTreeSet<String>) -> Vec<&str> {
    set.iter().map(String::as_str).collect()
}

/// The segments `expr` refers to with `in_segment(...)`: evaluate those first, and refuse cycles.
pub fn segment_refs(expr: &Expr) -> BTreeSet<String> {
    let mut refs = BTreeSet::new();
    walk_cond(&expr.root, &mut |reference| {
        if let Ref::Segment(id, _) = reference {
            refs.insert(id.to_owned());
        }
    });
    refs
}

/// True when the result can change as time passes with no change to the profile: the expression reads
/// events (`count`, `did`, `sum`, `min`, `max`, `first`, `last`) or uses `now()`. Such segments must be
/// re-evaluated on a schedule. Segments referred to with `in_segment(...)` are not looked into: combine
/// with [`segment_refs`].
pub fn uses_time(expr: &Expr) -> bool {
    walk_cond(&expr.root, &mut |_| {})
}
