//! The normalised text of an expression: lowercase keywords, single spaces, `x exists` for
//! `exists(x)`, parentheses only where precedence needs them. Parsing it gives the same expression.

use std::fmt::{self, Display, Formatter, Write};

use crate::ast::{
    Agg, Cond, Duration, EventQuery, Literal, Name, NameKind, Operand, is_namespace, is_plain_word,
    is_reserved,
};

impl Display for Cond {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Cond::Or(items) => join(f, items, " or ", |c| matches!(c, Cond::Or(_))),
            Cond::And(items) => join(f, items, " and ", |c| {
                matches!(c, Cond::Or(_) | Cond::And(_))
            }),
            Cond::Not(inner) => {
                f.write_str("not ")?;
                if matches!(**inner, Cond::Or(_) | Cond::And(_)) {
                    write!(f, "({inner})")
                } else {
                    write!(f, "{inner}")
                }
            }
            Cond::Compare { left, op, right } => write!(f, "{left} {} {right}", op.symbol()),
            Cond::In {
                value,
                list,
                negated,
            } => {
                write!(f, "{value} {}in ", if *negated { "not " } else { "" })?;
                write_list(f, list)
            }
            Cond::Contains { value, needle } => write!(f, "{value} contains {needle}"),
            Cond::StartsWith { value, prefix } => write!(f, "{value} starts_with {prefix}"),
            Cond::Exists { value, negated } => {
                write!(f, "{value} {}exists", if *negated { "not " } else { "" })
            }
            Cond::Did(query) => {
                f.write_str("did(")?;
                write_query(f, query, None)?;
                f.write_char(')')
            }
            Cond::InSegment { id, .. } => {
                f.write_str("in_segment(")?;
                write_string(f, id)?;
                f.write_char(')')
            }
            Cond::Truthy(value) => write!(f, "{value}"),
        }
    }
}

fn join(
    f: &mut Formatter<'_>,
    items: &[Cond],
    separator: &str,
    needs_parens: impl Fn(&Cond) -> bool,
) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(separator)?;
        }
        if needs_parens(item) {
            write!(f, "({item})")?;
        } else {
            write!(f, "{item}")?;
        }
    }
    Ok(())
}

impl Display for Operand {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Operand::Lit(literal) => write!(f, "{literal}"),
            Operand::Dur(duration) => write!(f, "{duration}"),
            Operand::List(items) => write_list(f, items),
            Operand::Name(name) => f.write_str(&name_text(name)),
            Operand::Now => f.write_str("now()"),
            Operand::Agg(agg) => write_agg(f, agg),
            Operand::Arith { op, left, right } => {
                let symbol = match op {
                    crate::ast::ArithOp::Add => "+",
                    crate::ast::ArithOp::Sub => "-",
                };
                write!(f, "{left} {symbol} {right}")
            }
        }
    }
}

impl Display for Literal {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Null => f.write_str("null"),
            Literal::Bool(b) => write!(f, "{b}"),
            Literal::Num(n) => write!(f, "{n}"),
            Literal::Str(s) => write_string(f, s),
        }
    }
}

impl Display for Duration {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.amount, self.unit.letter())
    }
}

fn write_list(f: &mut Formatter<'_>, items: &[Literal]) -> fmt::Result {
    f.write_char('[')?;
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{item}")?;
    }
    f.write_char(']')
}

fn write_string(f: &mut Formatter<'_>, s: &str) -> fmt::Result {
    f.write_char('"')?;
    for c in s.chars() {
        if c == '"' || c == '\\' {
            f.write_char('\\')?;
        }
        f.write_char(c)?;
    }
    f.write_char('"')
}

fn write_agg(f: &mut Formatter<'_>, agg: &Agg) -> fmt::Result {
    write!(f, "{}(", agg.func.name())?;
    write_query(f, &agg.query, agg.property.as_deref())?;
    f.write_char(')')
}

fn write_query(
    f: &mut Formatter<'_>,
    query: &EventQuery,
    property: Option<&[String]>,
) -> fmt::Result {
    if is_plain_word(&query.event) && !is_reserved(&query.event) {
        f.write_str(&query.event)?;
    } else {
        write_string(f, &query.event)?;
    }
    if let Some(path) = property {
        for segment in path {
            f.write_char('.')?;
            f.write_str(&segment_text(segment, false))?;
        }
    }
    if let Some(filter) = &query.filter {
        write!(f, " where {filter}")?;
    }
    if let Some(window) = &query.within {
        write!(f, " within {window}")?;
    }
    Ok(())
}

/// One segment of a name: bare when it lexes as a plain name there, else in backticks.
fn segment_text(segment: &str, first: bool) -> String {
    if is_plain_word(segment) && !(first && (is_reserved(segment) || is_namespace(segment))) {
        segment.to_owned()
    } else {
        format!("`{segment}`")
    }
}

/// The normalised text of a name, e.g. `traits.address.city`.
pub(crate) fn name_text(name: &Name) -> String {
    let prefix = match name.kind {
        NameKind::Auto | NameKind::Property => None,
        NameKind::Trait => Some("traits"),
        NameKind::Computed => Some("computed"),
        NameKind::Consent => Some("consent"),
        NameKind::Identifier => Some("identifiers"),
    };
    let mut out = String::new();
    if let Some(prefix) = prefix {
        out.push_str(prefix);
    }
    for (i, segment) in name.path.iter().enumerate() {
        if i > 0 || prefix.is_some() {
            out.push('.');
        }
        out.push_str(&segment_text(segment, i == 0 && prefix.is_none()));
    }
    out
}
