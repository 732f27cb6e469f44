//! The parsed form of an expression. Private: callers see [`crate::Expr`] only.

/// Where a piece of the source text is, in bytes.
///
/// Spans are for messages only and take no part in equality: two expressions are equal when they
/// mean the same thing, whatever their spacing (this is what makes `parse(display(e)) == e` hold).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Span {
    pub start: usize,
    pub end: usize,
}

impl PartialEq for Span {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Span {
    pub fn new(start: usize, end: usize) -> Self {
        Span { start, end }
    }

    pub fn to(self, other: Span) -> Span {
        Span::new(self.start, other.end)
    }

    pub fn len(self) -> usize {
        self.end.saturating_sub(self.start).max(1)
    }
}

/// A condition: always evaluates to `true` or `false`, never to "unknown".
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cond {
    /// Two or more conditions joined by `or` (flattened: no direct `Or` child).
    Or(Vec<Cond>),
    /// Two or more conditions joined by `and` (flattened: no direct `And` child).
    And(Vec<Cond>),
    Not(Box<Cond>),
    Compare {
        left: Operand,
        op: CmpOp,
        right: Operand,
    },
    In {
        value: Operand,
        list: Vec<Literal>,
        negated: bool,
    },
    Contains {
        value: Operand,
        needle: Operand,
    },
    StartsWith {
        value: Operand,
        prefix: Operand,
    },
    Exists {
        value: Operand,
        negated: bool,
    },
    Did(EventQuery),
    InSegment {
        id: String,
        span: Span,
    },
    /// A name (or `true` / `false`) standing alone as a condition.
    Truthy(Operand),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    pub fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }

    /// The same test with its operands swapped (`a < b` is `b > a`).
    pub fn flipped(self) -> CmpOp {
        match self {
            CmpOp::Lt => CmpOp::Gt,
            CmpOp::Le => CmpOp::Ge,
            CmpOp::Gt => CmpOp::Lt,
            CmpOp::Ge => CmpOp::Le,
            other => other,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Operand {
    Lit(Literal),
    Dur(Duration),
    List(Vec<Literal>),
    Name(Name),
    Now,
    Agg(Box<Agg>),
    Arith {
        op: ArithOp,
        left: Box<Operand>,
        right: Box<Operand>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArithOp {
    Add,
    Sub,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Literal {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Duration {
    pub amount: u64,
    pub unit: Unit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    Seconds,
    Minutes,
    Hours,
    Days,
    Weeks,
}

impl Unit {
    pub fn letter(self) -> char {
        match self {
            Unit::Seconds => 's',
            Unit::Minutes => 'm',
            Unit::Hours => 'h',
            Unit::Days => 'd',
            Unit::Weeks => 'w',
        }
    }

    pub fn seconds(self) -> u64 {
        match self {
            Unit::Seconds => 1,
            Unit::Minutes => 60,
            Unit::Hours => 3_600,
            Unit::Days => 86_400,
            Unit::Weeks => 604_800,
        }
    }
}

impl Duration {
    pub fn to_delta(self) -> Option<chrono::TimeDelta> {
        let seconds = i64::try_from(self.amount.checked_mul(self.unit.seconds())?).ok()?;
        chrono::TimeDelta::try_seconds(seconds)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum NameKind {
    /// `total_spent`: a computed trait if one has that name, else a trait.
    Auto,
    /// `traits.country`
    Trait,
    /// `computed.total_spent`
    Computed,
    /// `consent.email`
    Consent,
    /// `identifiers.email`
    Identifier,
    /// A name inside `where`: a property of the event.
    Property,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Name {
    pub kind: NameKind,
    /// Never empty. For `consent` and `identifiers`, exactly one segment.
    pub path: Vec<String>,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AggFunc {
    Count,
    Sum,
    Min,
    Max,
    First,
    Last,
}

impl AggFunc {
    pub fn name(self) -> &'static str {
        match self {
            AggFunc::Count => "count",
            AggFunc::Sum => "sum",
            AggFunc::Min => "min",
            AggFunc::Max => "max",
            AggFunc::First => "first",
            AggFunc::Last => "last",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Agg {
    pub func: AggFunc,
    pub query: EventQuery,
    /// `sum(order_completed.amount)`: the property path after the event name.
    pub property: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EventQuery {
    pub event: String,
    pub filter: Option<Box<Cond>>,
    pub within: Option<Duration>,
}

/// Words with a meaning of their own: a bare name can't be one of them (write it in backticks).
pub(crate) const RESERVED: &[&str] = &[
    "and",
    "or",
    "not",
    "in",
    "contains",
    "starts_with",
    "exists",
    "within",
    "where",
    "true",
    "false",
    "null",
];

/// Words that start a qualified name (`traits.country`).
pub(crate) const NAMESPACES: &[&str] = &["traits", "computed", "consent", "identifiers"];

pub(crate) fn is_reserved(word: &str) -> bool {
    RESERVED.iter().any(|r| r.eq_ignore_ascii_case(word))
}

pub(crate) fn is_namespace(word: &str) -> bool {
    NAMESPACES.iter().any(|r| r.eq_ignore_ascii_case(word))
}

pub(crate) fn is_word_start(c: char) -> bool {
    c.is_alphabetic() || c == '_'
}

pub(crate) fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// True when `text` lexes as one word (it may still be a reserved word).
pub(crate) fn is_plain_word(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(is_word_start) && chars.all(is_word_char)
}
