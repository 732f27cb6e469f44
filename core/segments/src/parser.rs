//! A recursive-descent parser: `or` < `and` < `not` < predicate < operand (`+`/`-`) < term.

use crate::ast::{
    Agg, AggFunc, ArithOp, CmpOp, Cond, Duration, EventQuery, Literal, Name, NameKind, Operand,
    Span, is_namespace, is_reserved,
};
use crate::error::{ParseError, closest, position, quote};
use crate::eval::parse_time;
use crate::lexer::{Tok, Token, UNITS_HINT, UnitWord, lex, not_fixed, unit_word};

/// How deep `not`, parentheses and `where` clauses may nest.
const MAX_DEPTH: usize = 64;
/// How many values one `+`/`-` chain may hold.
const MAX_TERMS: usize = 16;

const FUNCTIONS: &[&str] = &[
    "count",
    "did",
    "sum",
    "min",
    "max",
    "first",
    "last",
    "in_segment",
    "now",
    "exists",
];

type Result<T> = std::result::Result<T, ParseError>;

pub(crate) fn parse(text: &str) -> Result<Cond> {
    let mut parser = Parser {
        text,
        tokens: lex(text),
        pos: 0,
        depth: 0,
        in_where: false,
    };
    if parser.tokens[0].tok == Tok::Eof {
        return Err(ParseError::new(0, 1, "empty expression")
            .hint("e.g. `total_spent > 500 and consent.email`"));
    }
    let cond = parser.or()?;
    let token = parser.current()?;
    if token.tok == Tok::Eof {
        Ok(cond)
    } else {
        Err(parser.trailing(&token))
    }
}

/// What a value is known to be before evaluation, to refuse comparisons that can never hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Num,
    Str,
    Bool,
    Null,
    List,
    Dur,
    Time,
    /// A name or an event property: any JSON value, never a duration.
    Stored,
    /// A calculation on stored values: could be anything.
    Mixed,
}

struct Parser<'a> {
    text: &'a str,
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
    in_where: bool,
}

impl Parser<'_> {
    // ----- tokens -------------------------------------------------------------------------------------

    /// The current token; a lexing problem surfaces here.
    fn current(&self) -> Result<Token> {
        let token = &self.tokens[self.pos.min(self.tokens.len() - 1)];
        match &token.tok {
            Tok::Error(error) => Err((**error).clone()),
            _ => Ok(token.clone()),
        }
    }

    fn peek_tok(&self, ahead: usize) -> &Tok {
        &self.tokens[(self.pos + ahead).min(self.tokens.len() - 1)].tok
    }

    fn bump(&mut self) -> Token {
        let token = self.tokens[self.pos.min(self.tokens.len() - 1)].clone();
        if self.pos < self.tokens.len() - 1 {
            self.pos += 1;
        }
        token
    }

    fn previous(&self) -> Option<&Token> {
        self.pos.checked_sub(1).map(|i| &self.tokens[i])
    }

    fn is_keyword(&self, keyword: &str) -> bool {
        matches!(self.peek_tok(0), Tok::Word(w) if w.eq_ignore_ascii_case(keyword))
    }

    fn is_keyword_at(&self, ahead: usize, keyword: &str) -> bool {
        matches!(self.peek_tok(ahead), Tok::Word(w) if w.eq_ignore_ascii_case(keyword))
    }

    fn text_of(&self, token: &Token) -> &str {
        &self.text[token.start..token.end.min(self.text.len())]
    }

    fn span_of(token: &Token) -> Span {
        Span::new(token.start, token.end)
    }

    /// "expected X after `prev`, found `cur`", pointing at `cur` (or just after `prev` at the end).
    fn expected(&self, what: &str) -> ParseError {
        let token = &self.tokens[self.pos.min(self.tokens.len() - 1)];
        if let Tok::Error(error) = &token.tok {
            return (**error).clone();
        }
        let after = self
            .previous()
            .map(|p| format!(" after {}", quote(self.text_of(p))))
            .unwrap_or_default();
        if token.tok == Tok::Eof {
            let offset = self.previous().map_or(self.text.len(), |p| p.end);
            ParseError::new(offset, 1, format!("expected {what}{after}"))
        } else {
            ParseError::new(
                token.start,
                token.end - token.start,
                format!(
                    "expected {what}{after}, found {}",
                    quote(self.text_of(token))
                ),
            )
        }
    }

    /// Something left over after a complete condition.
    fn trailing(&self, token: &Token) -> ParseError {
        let error = ParseError::new(
            token.start,
            token.end - token.start,
            format!("unexpected {}", quote(self.text_of(token))),
        );
        match &token.tok {
            Tok::RParen => error.hint("there is no `(` for this `)` to close"),
            Tok::Eq | Tok::Ne | Tok::Lt | Tok::Le | Tok::Gt | Tok::Ge => error.hint(
                "only values can be compared, one comparison at a time: join comparisons with `and` \
                 (`a > 1 and a < 5`); `did(...)`, `in_segment(...)` and `(...)` are already conditions",
            ),
            Tok::Word(w) if w.eq_ignore_ascii_case("within") || w.eq_ignore_ascii_case("where") => {
                error.hint("`where` and `within` go inside an event function, e.g. `count(order_completed within 30d)`")
            }
            _ => error.hint("join conditions with `and` or `or`"),
        }
    }

    fn deeper(&mut self) -> Result<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            let token = &self.tokens[self.pos.min(self.tokens.len() - 1)];
            return Err(
                ParseError::new(token.start, 1, "expression is nested too deeply").hint(format!(
                    "at most {MAX_DEPTH} levels of `not`, parentheses and `where`"
                )),
            );
        }
        Ok(())
    }

    // ----- conditions ---------------------------------------------------------------------------------

    fn or(&mut self) -> Result<Cond> {
        let mut items = Vec::new();
        push_flat(&mut items, self.and()?, true);
        while self.is_keyword("or") {
            self.bump();
            push_flat(&mut items, self.and()?, true);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Cond::Or(items)
        })
    }

    fn and(&mut self) -> Result<Cond> {
        let mut items = Vec::new();
        push_flat(&mut items, self.not()?, false);
        while self.is_keyword("and") {
            self.bump();
            push_flat(&mut items, self.not()?, false);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Cond::And(items)
        })
    }

    fn not(&mut self) -> Result<Cond> {
        if self.is_keyword("not") {
            self.bump();
            self.deeper()?;
            let inner = self.not()?;
            self.depth -= 1;
            return Ok(Cond::Not(Box::new(inner)));
        }
        self.predicate()
    }

    fn expected_condition(&self) -> ParseError {
        let error = self.expected("a condition");
        match self.peek_tok(0) {
            Tok::Word(w) if w.eq_ignore_ascii_case("and") || w.eq_ignore_ascii_case("or") => {
                let w = w.to_ascii_lowercase();
                error.hint(format!(
                    "`{w}` joins two conditions, e.g. `total_spent > 500 {w} consent.email`"
                ))
            }
            Tok::Eof if self.previous().is_none() => error,
            Tok::RParen if self.previous().is_some_and(|p| p.tok == Tok::LParen) => {
                error.hint("put a condition inside the parentheses")
            }
            _ => error.hint(
                "e.g. `total_spent > 500`, `consent.email` or `did(order_completed within 30d)`",
            ),
        }
    }

    fn predicate(&mut self) -> Result<Cond> {
        let token = self.current()?;
        match &token.tok {
            Tok::LParen => return self.group(&token),
            Tok::Word(w) if *self.peek_tok(1) == Tok::LParen => {
                let name = w.to_ascii_lowercase();
                match name.as_str() {
                    "did" => {
                        self.not_in_where(&token, "did")?;
                        let (agg, _) = self.agg(AggFunc::Count, "did")?;
                        return Ok(Cond::Did(agg.query));
                    }
                    "in_segment" => return self.in_segment(&token),
                    "exists" => {
                        self.bump();
                        self.bump();
                        let (value, _) = self.operand()?;
                        self.close_call(&token, "exists")?;
                        return Ok(Cond::Exists {
                            value,
                            negated: false,
                        });
                    }
                    _ => {}
                }
            }
            _ => {}
        }
        if !self.starts_term() {
            return Err(self.expected_condition());
        }
        let (left, left_span) = self.operand()?;
        let token = self.current()?;
        let op = match &token.tok {
            Tok::Eq => Some(CmpOp::Eq),
            Tok::Ne => Some(CmpOp::Ne),
            Tok::Lt => Some(CmpOp::Lt),
            Tok::Le => Some(CmpOp::Le),
            Tok::Gt => Some(CmpOp::Gt),
            Tok::Ge => Some(CmpOp::Ge),
            _ => None,
        };
        if let Some(op) = op {
            self.bump();
            if !self.starts_term() {
                return Err(self
                    .expected("a value")
                    .hint(self.value_hint(&left, left_span, op)));
            }
            let (right, right_span) = self.operand()?;
            self.check_compare((&left, left_span), op, (&right, right_span))?;
            return Ok(Cond::Compare { left, op, right });
        }
        if self.is_keyword("in") {
            self.bump();
            self.no_duration(&left, left_span, "`in`")?;
            let list = self.list()?;
            return Ok(Cond::In {
                value: left,
                list,
                negated: false,
            });
        }
        if self.is_keyword("not") {
            if self.is_keyword_at(1, "in") {
                self.bump();
                self.bump();
                self.no_duration(&left, left_span, "`not in`")?;
                let list = self.list()?;
                return Ok(Cond::In {
                    value: left,
                    list,
                    negated: true,
                });
            }
            if self.is_keyword_at(1, "exists") {
                self.bump();
                self.bump();
                return Ok(Cond::Exists {
                    value: left,
                    negated: true,
                });
            }
            self.bump();
            return Err(self.expected("`in` or `exists`").hint(
                "`not` goes before `in` and `exists` only; to negate another test put it in front: \
                 `not (email contains \"@x.io\")`",
            ));
        }
        for (keyword, starts) in [("contains", false), ("starts_with", true)] {
            if self.is_keyword(keyword) {
                self.bump();
                if !self.starts_term() {
                    return Err(self.expected("a value").hint(if starts {
                        "e.g. `phone starts_with \"+33\"`"
                    } else {
                        "e.g. `email contains \"@x.io\"` or `tags contains \"vip\"`"
                    }));
                }
                let (right, right_span) = self.operand()?;
                self.no_duration(&left, left_span, &format!("`{keyword}`"))?;
                self.no_duration(&right, right_span, &format!("`{keyword}`"))?;
                return Ok(if starts {
                    Cond::StartsWith {
                        value: left,
                        prefix: right,
                    }
                } else {
                    Cond::Contains {
                        value: left,
                        needle: right,
                    }
                });
            }
        }
        if self.is_keyword("exists") {
            self.bump();
            return Ok(Cond::Exists {
                value: left,
                negated: false,
            });
        }
        self.truthy(left, left_span)
    }

    /// A value standing alone as a condition: names and `true`/`false` only.
    fn truthy(&self, value: Operand, span: Span) -> Result<Cond> {
        let source = &self.text[span.start..span.end];
        let shown = quote(source);
        let (message, hint) = match &value {
            Operand::Name(_) | Operand::Lit(Literal::Bool(_)) => return Ok(Cond::Truthy(value)),
            Operand::Agg(agg) if matches!(agg.func, AggFunc::First | AggFunc::Last) && agg.property.is_none() => (
                format!("{shown} is a time, not a condition"),
                format!("compare it, e.g. `{source} > now() - 7d`, or test `{source} exists`"),
            ),
            Operand::Agg(agg) if matches!(agg.func, AggFunc::First | AggFunc::Last) => (
                format!("{shown} is a value, not a condition"),
                format!("compare it, e.g. `{source} = \"gold\"`, or test `{source} exists`"),
            ),
            Operand::Agg(agg) if agg.func == AggFunc::Count => (
                format!("{shown} is a number, not a condition"),
                format!(
                    "compare it, e.g. `{source} >= 2`, or write `did{}`",
                    source.find('(').map_or("(...)", |i| &source[i..])
                ),
            ),
            Operand::Agg(_) => (
                format!("{shown} is a number, not a condition"),
                format!("compare it, e.g. `{source} > 100`"),
            ),
            Operand::Now => ("`now()` is a time, not a condition".to_owned(), "compare it with a time".to_owned()),
            Operand::Dur(_) => (
                format!("{shown} is a duration, not a condition"),
                "use it in a window, `count(order_completed within 30d)`, or with a time, `now() - 30d`".to_owned(),
            ),
            Operand::Arith { .. } => (
                "a calculation is not a condition".to_owned(),
                "compare it, e.g. `last(order_completed) > now() - 30d`".to_owned(),
            ),
            Operand::Lit(Literal::Null) => (
                "`null` is not a condition".to_owned(),
                "to test for a missing value write `x = null` or `x not exists`".to_owned(),
            ),
            Operand::Lit(_) | Operand::List(_) => (
                format!("{shown} is a value, not a condition"),
                "compare it with something, e.g. `total_spent > 500`".to_owned(),
            ),
        };
        Err(ParseError::new(span.start, span.len(), message).hint(hint))
    }

    fn group(&mut self, open: &Token) -> Result<Cond> {
        self.bump();
        self.deeper()?;
        let inner = self.or()?;
        self.depth -= 1;
        let token = self.current()?;
        match token.tok {
            Tok::RParen => {
                self.bump();
                Ok(inner)
            }
            Tok::Eof => {
                let offset = self.previous().map_or(self.text.len(), |p| p.end);
                Err(ParseError::new(offset, 1, "expected `)`").hint(format!(
                    "to close the `(` at {}",
                    position(self.text, open.start)
                )))
            }
            _ => Err(self.trailing(&token)),
        }
    }

    fn not_in_where(&self, token: &Token, function: &str) -> Result<()> {
        if self.in_where {
            return Err(ParseError::new(
                token.start,
                token.end - token.start,
                format!("`{function}(...)` can't be used inside `where`"),
            )
            .hint("`where` tests the properties of one event; write profile conditions outside, joined with `and`"));
        }
        Ok(())
    }

    fn in_segment(&mut self, name: &Token) -> Result<Cond> {
        self.not_in_where(name, "in_segment")?;
        self.bump();
        self.bump();
        let token = self.current()?;
        let id = match &token.tok {
            Tok::Str(s) if !s.is_empty() => s.clone(),
            Tok::Word(w) if !is_reserved(w) => w.clone(),
            Tok::Str(_) => {
                return Err(ParseError::new(
                    token.start,
                    token.end - token.start,
                    "empty segment id",
                ));
            }
            _ => {
                return Err(self
                    .expected("a segment id")
                    .hint("e.g. `in_segment(\"vip\")`"));
            }
        };
        self.bump();
        self.close_call(name, "in_segment")?;
        Ok(Cond::InSegment {
            id,
            span: Self::span_of(&token),
        })
    }

    /// Expects the `)` of `function(`.
    fn close_call(&mut self, name: &Token, function: &str) -> Result<Token> {
        let token = self.current()?;
        if token.tok == Tok::RParen {
            return Ok(self.bump());
        }
        let error = self.expected("`)`");
        if token.tok == Tok::Eof {
            Err(error.hint(format!(
                "to close the `{function}(` at {}",
                position(self.text, name.start)
            )))
        } else {
            Err(error)
        }
    }

    // ----- values -------------------------------------------------------------------------------------

    fn starts_term(&self) -> bool {
        match self.peek_tok(0) {
            Tok::Minus
            | Tok::Num(_)
            | Tok::Str(_)
            | Tok::Dur(_)
            | Tok::LBracket
            | Tok::Quoted(_) => true,
            Tok::Word(w) => {
                !is_reserved(w)
                    || ["true", "false", "null"]
                        .iter()
                        .any(|k| k.eq_ignore_ascii_case(w))
            }
            // Let the term report the lexing problem.
            Tok::Error(_) => true,
            _ => false,
        }
    }

    /// A value, with `+` and `-` chains (`now() - 30d`).
    fn operand(&mut self) -> Result<(Operand, Span)> {
        let (mut left, mut span) = self.term()?;
        let mut terms = 1;
        loop {
            let op = match self.peek_tok(0) {
                Tok::Plus => ArithOp::Add,
                Tok::Minus => ArithOp::Sub,
                _ => break,
            };
            let op_token = self.bump();
            terms += 1;
            if terms > MAX_TERMS {
                return Err(
                    ParseError::new(op_token.start, 1, "too many `+` and `-` in a row").hint(
                        format!("at most {MAX_TERMS} values can be added or subtracted"),
                    ),
                );
            }
            if !self.starts_term() {
                return Err(self.expected("a value").hint("e.g. `now() - 30d`"));
            }
            let (right, right_span) = self.term()?;
            if let Err(message) = arith_kind(op, kind(&left), kind(&right)) {
                return Err(ParseError::new(op_token.start, 1, message.0).hint(message.1));
            }
            left = Operand::Arith {
                op,
                left: Box::new(left),
                right: Box::new(right),
            };
            span = span.to(right_span);
        }
        Ok((left, span))
    }

    fn term(&mut self) -> Result<(Operand, Span)> {
        let token = self.current()?;
        let span = Self::span_of(&token);
        let value = match &token.tok {
            Tok::Minus => {
                self.bump();
                let next = self.current()?;
                return match next.tok {
                    Tok::Num(n) => {
                        self.bump();
                        Ok((
                            Operand::Lit(Literal::Num(-n)),
                            span.to(Self::span_of(&next)),
                        ))
                    }
                    Tok::Dur(_) => Err(ParseError::new(
                        token.start,
                        next.end - token.start,
                        "a duration can't be negative",
                    )
                    .hint("subtract it from a time instead, e.g. `now() - 30d`")),
                    _ => Err(self.expected("a number")),
                };
            }
            Tok::Num(n) => Operand::Lit(Literal::Num(*n)),
            Tok::Str(s) => Operand::Lit(Literal::Str(s.clone())),
            Tok::Dur(d) => Operand::Dur(*d),
            Tok::LBracket => {
                let start = token.start;
                let list = self.list()?;
                let end = self.previous().map_or(start, |p| p.end);
                return Ok((Operand::List(list), Span::new(start, end)));
            }
            Tok::Word(w) if *self.peek_tok(1) == Tok::LParen => return self.call(&token, w),
            Tok::Word(w) if w.eq_ignore_ascii_case("true") => Operand::Lit(Literal::Bool(true)),
            Tok::Word(w) if w.eq_ignore_ascii_case("false") => Operand::Lit(Literal::Bool(false)),
            Tok::Word(w) if w.eq_ignore_ascii_case("null") => Operand::Lit(Literal::Null),
            Tok::Word(w) if !is_reserved(w) => return self.name(),
            Tok::Quoted(_) => return self.name(),
            _ => return Err(self.expected("a value")),
        };
        self.bump();
        Ok((value, span))
    }

    fn value_hint(&self, left: &Operand, left_span: Span, op: CmpOp) -> String {
        let example = match kind(left) {
            Kind::Time => "now() - 7d",
            Kind::Dur => "30d",
            Kind::Str => "\"gold\"",
            _ if op == CmpOp::Eq || op == CmpOp::Ne => "\"gold\"",
            _ => "500",
        };
        let left = &self.text[left_span.start..left_span.end];
        let left = if left.chars().count() > 40 || left.contains('\n') {
            "x"
        } else {
            left
        };
        format!(
            "compare with a number, a string, a list, a name or a time, e.g. `{left} {} {example}`",
            op.symbol()
        )
    }

    fn call(&mut self, token: &Token, word: &str) -> Result<(Operand, Span)> {
        let lower = word.to_ascii_lowercase();
        let func = match lower.as_str() {
            "count" => AggFunc::Count,
            "sum" => AggFunc::Sum,
            "min" => AggFunc::Min,
            "max" => AggFunc::Max,
            "first" => AggFunc::First,
            "last" => AggFunc::Last,
            "now" => {
                self.bump();
                self.bump();
                if self.current()?.tok != Tok::RParen {
                    let error = self.expected("`)`");
                    return Err(if self.peek_tok(0) == &Tok::Eof {
                        error.hint(format!(
                            "to close the `now(` at {}",
                            position(self.text, token.start)
                        ))
                    } else {
                        ParseError {
                            message: "`now()` takes no arguments".to_owned(),
                            ..error
                        }
                        .hint("write `now()`, and add or subtract a duration: `now() - 30d`")
                    });
                }
                let close = self.bump();
                return Ok((Operand::Now, Self::span_of(token).to(Self::span_of(&close))));
            }
            "did" | "in_segment" | "exists" => {
                return Err(ParseError::new(
                    token.start,
                    token.end - token.start,
                    format!("`{lower}(...)` is a condition, not a value"),
                )
                .hint(if lower == "did" {
                    "use it alone (`did(cart_abandoned within 7d)`); to compare a number of events use `count(...)`"
                } else {
                    "use it alone, e.g. `in_segment(\"vip\") and consent.email`"
                }));
            }
            _ => {
                let error = ParseError::new(
                    token.start,
                    token.end - token.start,
                    format!("unknown function `{word}`; use {}", FUNCTIONS.join(", ")),
                );
                let hint = closest(&lower, FUNCTIONS.iter().copied())
                    .or_else(|| {
                        FUNCTIONS
                            .iter()
                            .copied()
                            .map(|f| (strsim::levenshtein(&lower, f), f))
                            .filter(|(distance, _)| *distance <= 2)
                            .min_by_key(|(distance, _)| *distance)
                            .map(|(_, f)| f)
                    })
                    .map(|f| format!("did you mean `{f}`?"));
                return Err(error.maybe_hint(hint));
            }
        };
        self.not_in_where(token, &lower)?;
        let (agg, span) = self.agg(func, &lower)?;
        Ok((Operand::Agg(Box::new(agg)), span))
    }

    /// `count(event[.property] [where cond] [within 30d])`, from the function name on.
    fn agg(&mut self, func: AggFunc, written: &str) -> Result<(Agg, Span)> {
        let name = self.bump();
        self.bump();
        let token = self.current()?;
        let event = match &token.tok {
            Tok::Word(w) if !is_reserved(w) => w.clone(),
            Tok::Str(s) if !s.is_empty() => s.clone(),
            Tok::RParen => {
                return Err(ParseError::new(
                    token.start,
                    1,
                    format!("`{written}` needs an event name"),
                )
                .hint(format!("e.g. `{written}(order_completed)`")));
            }
            _ => {
                return Err(self
                    .expected("an event name")
                    .hint("write the event name bare, `order_completed`, or in quotes, `\"Order Completed\"`"));
            }
        };
        self.bump();
        let mut property: Option<(Vec<String>, Span)> = None;
        if self.peek_tok(0) == &Tok::Dot {
            let dot = self.bump();
            let path = self.path_rest(Vec::new())?;
            let end = self.previous().map_or(dot.end, |p| p.end);
            property = Some((path, Span::new(dot.start, end)));
        }
        let mut filter = None;
        let mut within = None;
        loop {
            let token = self.current()?;
            if self.is_keyword("where") {
                if filter.is_some() {
                    return Err(ParseError::new(token.start, token.end - token.start, "`where` is given twice")
                        .hint("join the conditions with `and`: `where amount > 100 and currency = \"EUR\"`"));
                }
                self.bump();
                self.deeper()?;
                let outer = std::mem::replace(&mut self.in_where, true);
                let cond = self.or();
                self.in_where = outer;
                self.depth -= 1;
                filter = Some(Box::new(cond?));
            } else if self.is_keyword("within") {
                if within.is_some() {
                    return Err(ParseError::new(
                        token.start,
                        token.end - token.start,
                        "`within` is given twice",
                    )
                    .hint("give one window"));
                }
                self.bump();
                within = Some(self.window()?);
            } else if token.tok == Tok::RParen {
                break;
            } else {
                return Err(if token.tok == Tok::Eof {
                    self.expected("`)`").hint(format!(
                        "to close the `{written}(` at {}",
                        position(self.text, name.start)
                    ))
                } else {
                    self.expected("`where`, `within` or `)`").hint(format!(
                        "e.g. `{written}(order_completed where amount > 100 within 30d)`"
                    ))
                });
            }
        }
        let close = self.bump();
        let span = Self::span_of(&name).to(Self::span_of(&close));
        let needs_property = matches!(func, AggFunc::Sum | AggFunc::Min | AggFunc::Max);
        let takes_property = needs_property || matches!(func, AggFunc::First | AggFunc::Last);
        match &property {
            None if needs_property => {
                return Err(ParseError::new(
                    span.start,
                    span.len(),
                    format!("`{written}` needs an event property"),
                )
                .hint(format!("e.g. `{written}({event}.amount)`")));
            }
            Some((_, prop_span)) if !takes_property => {
                return Err(ParseError::new(
                    prop_span.start,
                    prop_span.len(),
                    format!("`{written}` counts events; it takes no property"),
                )
                .hint(format!(
                    "to count the events that have it, write `count({event} where {} exists)`",
                    property
                        .as_ref()
                        .map(|(p, _)| p.join("."))
                        .unwrap_or_default()
                )));
            }
            _ => {}
        }
        let query = EventQuery {
            event,
            filter,
            within,
        };
        Ok((
            Agg {
                func,
                query,
                property: property.map(|(p, _)| p),
            },
            span,
        ))
    }

    /// The duration after `within`.
    fn window(&mut self) -> Result<Duration> {
        let token = self.current()?;
        match token.tok {
            Tok::Dur(d) => {
                self.bump();
                Ok(d)
            }
            Tok::Num(n) => {
                let digits = self.text_of(&token).to_owned();
                if let Tok::Word(word) = self.peek_tok(1).clone() {
                    let word_token = &self.tokens[self.pos + 1];
                    let len = word_token.end - token.start;
                    match unit_word(&word) {
                        Some(UnitWord::Exact(unit) | UnitWord::Long(unit)) => {
                            let example = if n.fract() == 0.0 {
                                format!("{digits}{}", unit.letter())
                            } else {
                                "36h".into()
                            };
                            return Err(ParseError::new(
                                token.start,
                                len,
                                format!("write the window as one word, e.g. `{example}`"),
                            )
                            .hint("units are one letter: s, m, h, d or w"));
                        }
                        Some(UnitWord::NotFixed(days)) => {
                            return Err(not_fixed(token.start, len, &digits, days));
                        }
                        None => {}
                    }
                }
                Err(ParseError::new(
                    token.start,
                    token.end - token.start,
                    format!("expected a duration after `within`, e.g. `{digits}d`"),
                )
                .hint(format!("give the number a unit: {UNITS_HINT}")))
            }
            _ => Err(self
                .expected("a duration")
                .hint(format!("e.g. `within 30d`; {UNITS_HINT}"))),
        }
    }

    fn list(&mut self) -> Result<Vec<Literal>> {
        let open = self.current()?;
        if open.tok != Tok::LBracket {
            let error = self.expected("a list");
            return Err(match open.tok {
                Tok::Str(_) | Tok::Num(_) => error.hint(format!("write one value as a list: `[{}]`", self.text_of(&open))),
                Tok::Word(_) | Tok::Quoted(_) => error.hint(
                    "`in` takes a list written out, e.g. `[\"FR\", \"BE\"]`; to test whether a list trait holds \
                     a value write `tags contains \"vip\"`",
                ),
                _ => error.hint("e.g. `country in [\"FR\", \"BE\"]`"),
            });
        }
        self.bump();
        let unclosed = |parser: &Self| {
            parser.expected("`]`").hint(format!(
                "to close the list opened at {}",
                position(parser.text, open.start)
            ))
        };
        let mut items = Vec::new();
        loop {
            let token = self.current()?;
            let negative = token.tok == Tok::Minus && matches!(self.peek_tok(1), Tok::Num(_));
            if negative {
                self.bump();
            }
            let token = self.current()?;
            let item = match &token.tok {
                Tok::RBracket if !negative => {
                    self.bump();
                    return Ok(items);
                }
                Tok::RParen | Tok::Eof => return Err(unclosed(self)),
                Tok::Num(n) => Literal::Num(if negative { -n } else { *n }),
                Tok::Str(s) => Literal::Str(s.clone()),
                Tok::Word(w) if w.eq_ignore_ascii_case("true") => Literal::Bool(true),
                Tok::Word(w) if w.eq_ignore_ascii_case("false") => Literal::Bool(false),
                Tok::Word(w) if w.eq_ignore_ascii_case("null") => Literal::Null,
                _ => {
                    return Err(ParseError::new(
                        token.start,
                        token.end - token.start,
                        format!(
                            "lists hold numbers, strings, `true`, `false` and `null`, not {}",
                            quote(self.text_of(&token))
                        ),
                    )
                    .hint("e.g. `[\"FR\", \"BE\"]` or `[1, 2, 3]`"));
                }
            };
            self.bump();
            items.push(item);
            match self.current()?.tok {
                Tok::Comma => {
                    self.bump();
                }
                Tok::RBracket => {}
                Tok::Eof => return Err(unclosed(self)),
                _ => {
                    return Err(self
                        .expected("`,` or `]`")
                        .hint("separate list items with commas"));
                }
            }
        }
    }

    /// A name: `total_spent`, `traits.address.city`, `consent.email`, `` `first name` ``, or an event
    /// property inside `where`.
    fn name(&mut self) -> Result<(Operand, Span)> {
        let first = self.bump();
        let (head, quoted) = match &first.tok {
            Tok::Word(w) => (w.clone(), false),
            Tok::Quoted(q) => (q.clone(), true),
            _ => unreachable!("name() is called on a word or a quoted name"),
        };
        let path = self.path_rest(vec![head.clone()])?;
        let end = self.previous().map_or(first.end, |p| p.end);
        let span = Span::new(first.start, end);
        let namespace = !quoted && is_namespace(&head);
        if self.in_where {
            if namespace {
                return Err(ParseError::new(span.start, span.len(), "profile names can't be used inside `where`")
                    .hint(format!(
                        "names inside `where` are properties of the event; write profile conditions outside, \
                         joined with `and` (a property really called `{head}` is written `` `{head}` ``)"
                    )));
            }
            return Ok((
                Operand::Name(Name {
                    kind: NameKind::Property,
                    path,
                    span,
                }),
                span,
            ));
        }
        if !namespace {
            return Ok((
                Operand::Name(Name {
                    kind: NameKind::Auto,
                    path,
                    span,
                }),
                span,
            ));
        }
        let lower = head.to_ascii_lowercase();
        let (kind, example, single) = match lower.as_str() {
            "traits" => (NameKind::Trait, "traits.country", false),
            "computed" => (NameKind::Computed, "computed.total_spent", false),
            "consent" => (NameKind::Consent, "consent.email", true),
            _ => (NameKind::Identifier, "identifiers.email", true),
        };
        if path.len() < 2 {
            return Err(ParseError::new(
                span.start,
                span.len(),
                format!("`{lower}` needs a name after it"),
            )
            .hint(format!(
                "e.g. `{example}` (a trait really called `{head}` is written `` `{head}` ``)"
            )));
        }
        if single && path.len() > 2 {
            let extra_start = self.text[span.start..span.end]
                .match_indices('.')
                .nth(1)
                .map_or(span.start, |(i, _)| span.start + i);
            return Err(ParseError::new(
                extra_start,
                span.end - extra_start,
                format!("`{lower}.{}` has no fields", path[1]),
            )
            .hint(format!("write `{lower}.{}`", path[1])));
        }
        Ok((
            Operand::Name(Name {
                kind,
                path: path[1..].to_vec(),
                span,
            }),
            span,
        ))
    }

    /// The `.a.b` after a name.
    fn path_rest(&mut self, mut path: Vec<String>) -> Result<Vec<String>> {
        if path.is_empty() {
            // Called right after a `.`.
            path.push(self.segment()?);
        }
        while self.peek_tok(0) == &Tok::Dot {
            self.bump();
            path.push(self.segment()?);
        }
        Ok(path)
    }

    fn segment(&mut self) -> Result<String> {
        let token = self.current()?;
        match token.tok {
            Tok::Word(w) | Tok::Quoted(w) => {
                self.bump();
                Ok(w)
            }
            _ => Err(self.expected("a name").hint("e.g. `traits.address.city`")),
        }
    }

    // ----- static checks ------------------------------------------------------------------------------

    fn no_duration(&self, value: &Operand, span: Span, what: &str) -> Result<()> {
        if kind(value) == Kind::Dur {
            return Err(ParseError::new(
                span.start,
                span.len(),
                format!("a duration can't be used with {what}"),
            )
            .hint("durations go in windows (`within 30d`) or with times (`now() - 30d`)"));
        }
        Ok(())
    }

    fn check_compare(
        &self,
        left: (&Operand, Span),
        op: CmpOp,
        right: (&Operand, Span),
    ) -> Result<()> {
        let error = |span: Span, message: String| ParseError::new(span.start, span.len(), message);
        let sides = [
            (left.0, left.1, kind(left.0)),
            (right.0, right.1, kind(right.0)),
        ];
        for (this, other) in [(0, 1), (1, 0)] {
            let (value, span, this_kind) = sides[this];
            let (_, other_span, other_kind) = sides[other];
            if this_kind == Kind::Dur && !matches!(other_kind, Kind::Dur | Kind::Mixed) {
                return Err(error(span, "a duration can only be compared with another duration".to_owned())
                    .hint("to test a time, subtract the duration from now: `last(order_completed) > now() - 30d`"));
            }
            if this_kind == Kind::Time {
                let what = match other_kind {
                    Kind::Num => "a number",
                    Kind::Bool => "a boolean",
                    Kind::List => "a list",
                    _ => "",
                };
                if !what.is_empty() {
                    return Err(error(other_span, format!("a time can't be compared with {what}"))
                        .hint("compare it with another time: `now() - 7d`, a time trait, or an RFC 3339 string"));
                }
            }
            if other_kind == Kind::Time
                && let Operand::Lit(Literal::Str(s)) = value
                && parse_time(s).is_none()
            {
                return Err(error(span, format!("{} is not a time", quote(&format!("\"{s}\""))))
                    .hint("write an RFC 3339 time, `\"2024-05-01T09:00:00Z\"`, or a date, `\"2024-05-01\"`"));
            }
        }
        if !matches!(op, CmpOp::Eq | CmpOp::Ne) {
            for (_, span, this_kind) in sides {
                let what = match this_kind {
                    Kind::Null => "`null`",
                    Kind::Bool => "booleans",
                    Kind::List => "lists",
                    _ => continue,
                };
                let message = format!("{what} can only be compared with `=` and `!=`");
                return Err(if this_kind == Kind::Null {
                    error(span, message).hint(
                        "`x = null` is true when x is missing; `x != null` when it is present",
                    )
                } else {
                    error(span, message)
                });
            }
        }
        Ok(())
    }
}

/// Adds `cond` to an `or` (or `and`) list, splicing in a parenthesised list of the same kind.
fn push_flat(items: &mut Vec<Cond>, cond: Cond, or: bool) {
    match cond {
        Cond::Or(inner) if or => items.extend(inner),
        Cond::And(inner) if !or => items.extend(inner),
        other => items.push(other),
    }
}

fn kind(value: &Operand) -> Kind {
    match value {
        Operand::Lit(Literal::Num(_)) => Kind::Num,
        Operand::Lit(Literal::Str(_)) => Kind::Str,
        Operand::Lit(Literal::Bool(_)) => Kind::Bool,
        Operand::Lit(Literal::Null) => Kind::Null,
        Operand::List(_) => Kind::List,
        Operand::Dur(_) => Kind::Dur,
        Operand::Now => Kind::Time,
        Operand::Name(_) => Kind::Stored,
        Operand::Agg(agg) => match (agg.func, &agg.property) {
            (AggFunc::First | AggFunc::Last, None) => Kind::Time,
            (AggFunc::First | AggFunc::Last, Some(_)) => Kind::Stored,
            _ => Kind::Num,
        },
        Operand::Arith { op, left, right } => {
            arith_kind(*op, kind(left), kind(right)).unwrap_or(Kind::Mixed)
        }
    }
}

/// The kind of `left op right`, or why it can't be computed.
fn arith_kind(
    op: ArithOp,
    left: Kind,
    right: Kind,
) -> std::result::Result<Kind, (&'static str, &'static str)> {
    use Kind::*;
    const TIMES: (&str, &str) = (
        "two times can't be added",
        "subtract them to get a duration: `now() - last(order_completed) > 30d`",
    );
    match (left, right) {
        (Str | Bool | Null | List, _) | (_, Str | Bool | Null | List) => Err((
            "only numbers, times and durations can be added or subtracted",
            "e.g. `now() - 30d` or `total_spent - 100`",
        )),
        (Mixed, _) | (_, Mixed) => Ok(Mixed),
        (Time | Stored, Time) | (Time, Stored) if op == ArithOp::Add => Err(TIMES),
        (Time, Time) | (Time, Stored) | (Stored, Time) => Ok(Dur),
        (Time | Stored, Dur) => Ok(Time),
        (Dur, Time | Stored) if op == ArithOp::Add => Ok(Time),
        (Dur, Time | Stored) => Err((
            "a time can't be subtracted from a duration",
            "write the time first: `now() - 30d`",
        )),
        (Dur, Dur) => Ok(Dur),
        (Time, Num) | (Num, Time) => Err((
            "a number can't be added to a time",
            "add a duration: `now() - 30d`",
        )),
        (Dur, Num) | (Num, Dur) => Err((
            "a number and a duration can't be added",
            "give the number a unit, e.g. `30d`",
        )),
        (Num | Stored, Num | Stored) => Ok(if left == Num && right == Num {
            Num
        } else {
            Mixed
        }),
    }
}
