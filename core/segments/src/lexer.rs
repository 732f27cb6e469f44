//! Text to tokens. Lexing stops at the first problem, which becomes an [`Tok::Error`] token: the parser
//! reports it only when it gets there, so errors come in source order.

use crate::ast::{Duration, Unit, is_word_char, is_word_start};
use crate::error::ParseError;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    /// An identifier or a keyword (the parser decides, case-insensitively).
    Word(String),
    /// A name in backticks: never a keyword.
    Quoted(String),
    Str(String),
    Num(f64),
    Dur(Duration),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Dot,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Plus,
    Minus,
    Eof,
    Error(Box<ParseError>),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub tok: Tok,
    pub start: usize,
    pub end: usize,
}

/// The longest duration accepted: about 1,000 years.
const MAX_DURATION_SECONDS: u64 = 1_000 * 366 * 86_400;

pub(crate) fn lex(text: &str) -> Vec<Token> {
    let mut lexer = Lexer {
        text,
        pos: 0,
        tokens: Vec::new(),
    };
    lexer.run();
    lexer.tokens
}

struct Lexer<'a> {
    text: &'a str,
    pos: usize,
    tokens: Vec<Token>,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.text[self.pos..].chars().next()
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.text[self.pos..].chars().nth(n)
    }

    fn push(&mut self, tok: Tok, start: usize) {
        self.tokens.push(Token {
            tok,
            start,
            end: self.pos,
        });
    }

    fn run(&mut self) {
        loop {
            while self.peek().is_some_and(char::is_whitespace) {
                self.bump_char();
            }
            let start = self.pos;
            let Some(c) = self.peek() else {
                self.push(Tok::Eof, start);
                return;
            };
            match self.token(c, start) {
                Ok(tok) => self.push(tok, start),
                Err(error) => {
                    self.tokens.push(Token {
                        tok: Tok::Error(Box::new(error)),
                        start,
                        end: self.pos.max(start + 1),
                    });
                    return;
                }
            }
        }
    }

    fn bump_char(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn token(&mut self, c: char, start: usize) -> Result<Tok, ParseError> {
        self.bump_char();
        let tok = match c {
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            '[' => Tok::LBracket,
            ']' => Tok::RBracket,
            ',' => Tok::Comma,
            '.' => Tok::Dot,
            '+' => Tok::Plus,
            '-' => Tok::Minus,
            '=' => {
                match self.peek() {
                    Some('>') => return Err(self.wrong_operator(start, "=>", ">=")),
                    Some('<') => return Err(self.wrong_operator(start, "=<", "<=")),
                    _ => {}
                }
                self.no_extra_equals("=")?;
                Tok::Eq
            }
            '!' => {
                if self.peek() == Some('=') {
                    self.bump_char();
                    self.no_extra_equals("!=")?;
                    Tok::Ne
                } else {
                    return Err(ParseError::new(start, 1, "use `not` instead of `!`")
                        .hint("e.g. `not consent.email`, or `!=` for \"is not equal to\""));
                }
            }
            '<' => match self.peek() {
                Some('=') => {
                    self.bump_char();
                    self.no_extra_equals("<=")?;
                    Tok::Le
                }
                Some('>') => return Err(self.wrong_operator(start, "<>", "!=")),
                _ => Tok::Lt,
            },
            '>' => {
                if self.peek() == Some('=') {
                    self.bump_char();
                    self.no_extra_equals(">=")?;
                    Tok::Ge
                } else {
                    Tok::Gt
                }
            }
            '&' => {
                let len = if self.peek() == Some('&') { 2 } else { 1 };
                return Err(ParseError::new(start, len, "use `and` instead of `&&`")
                    .hint("e.g. `total_spent > 500 and consent.email`"));
            }
            '|' => {
                let len = if self.peek() == Some('|') { 2 } else { 1 };
                return Err(ParseError::new(start, len, "use `or` instead of `||`")
                    .hint("e.g. `country = \"FR\" or country = \"BE\"`"));
            }
            '\'' => {
                return Err(ParseError::new(start, 1, "strings use double quotes")
                    .hint("write `\"gold\"`, not `'gold'`"));
            }
            '"' => return self.string(start),
            '`' => return self.quoted(start),
            c if c.is_ascii_digit() => return self.number(start),
            c if is_word_start(c) => {
                while self.peek().is_some_and(is_word_char) {
                    self.bump_char();
                }
                Tok::Word(self.text[start..self.pos].to_owned())
            }
            other => {
                return Err(ParseError::new(start, other.len_utf8(), format!("unexpected character `{other}`"))
                    .hint(
                        "an expression is made of names, values, comparisons (`=`, `!=`, `<`, `<=`, `>`, `>=`), \
                         `and`, `or`, `not` and parentheses",
                    ));
            }
        };
        Ok(tok)
    }

    fn wrong_operator(&self, start: usize, written: &str, meant: &str) -> ParseError {
        ParseError::new(start, 2, format!("unknown operator `{written}`"))
            .hint(format!("did you mean `{meant}`?"))
    }

    /// `===`, `!==`, `<==`: point at the extra `=`.
    fn no_extra_equals(&mut self, operator: &str) -> Result<(), ParseError> {
        let extra_start = self.pos;
        let extra = self.text[extra_start..]
            .chars()
            .take_while(|c| *c == '=')
            .count();
        if extra == 0 {
            return Ok(());
        }
        let written = format!("{operator}{}", "=".repeat(extra));
        Err(
            ParseError::new(extra_start, extra, format!("unknown operator `{written}`")).hint(
                if operator == "=" {
                    "compare with a single `=`: there is no `==` or `===`".to_owned()
                } else {
                    format!("write `{operator}`")
                },
            ),
        )
    }

    fn string(&mut self, start: usize) -> Result<Tok, ParseError> {
        let mut value = String::new();
        loop {
            let at = self.pos;
            match self.bump_char() {
                None => return Err(self.unterminated(start, "string", "`\"`")),
                Some('"') => return Ok(Tok::Str(value)),
                Some('\\') => match self.bump_char() {
                    Some(c @ ('"' | '\\')) => value.push(c),
                    None => return Err(self.unterminated(start, "string", "`\"`")),
                    Some(other) => {
                        return Err(ParseError::new(at, 1 + other.len_utf8(), format!("unknown escape `\\{other}`"))
                            .hint("strings accept two escapes: `\\\"` for a quote and `\\\\` for a backslash"));
                    }
                },
                Some(c) => value.push(c),
            }
        }
    }

    fn unterminated(&self, start: usize, what: &str, close: &str) -> ParseError {
        let line_end = self.text[start..]
            .find('\n')
            .map_or(self.text.len(), |i| start + i);
        ParseError::new(start, line_end - start, format!("unterminated {what}"))
            .hint(format!("close it with {close}"))
    }

    fn quoted(&mut self, start: usize) -> Result<Tok, ParseError> {
        let rest = &self.text[self.pos..];
        match rest.find('`') {
            None => Err(self.unterminated(start, "name", "a backtick")),
            Some(0) => {
                self.pos += 1;
                Err(ParseError::new(start, 2, "empty name in backticks"))
            }
            Some(end) => {
                let name = rest[..end].to_owned();
                self.pos += end + 1;
                Ok(Tok::Quoted(name))
            }
        }
    }

    fn number(&mut self, start: usize) -> Result<Tok, ParseError> {
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.bump_char();
        }
        let mut whole = true;
        if self.peek() == Some('.') && self.peek_at(1).is_some_and(|c| c.is_ascii_digit()) {
            whole = false;
            self.bump_char();
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.bump_char();
            }
        }
        let digits = &self.text[start..self.pos];
        if !self.peek().is_some_and(is_word_start) {
            let value: f64 = digits.parse().unwrap_or(f64::INFINITY);
            if !value.is_finite() {
                return Err(ParseError::new(
                    start,
                    self.pos - start,
                    "number is too large",
                ));
            }
            return Ok(Tok::Num(value));
        }
        let unit_start = self.pos;
        while self.peek().is_some_and(is_word_char) {
            self.bump_char();
        }
        let written = &self.text[start..self.pos];
        let unit_text = &self.text[unit_start..self.pos];
        let len = self.pos - start;
        let Some(unit) = unit_word(unit_text) else {
            return Err(ParseError::new(
                unit_start,
                unit_text.len(),
                format!("unknown duration unit `{unit_text}`"),
            )
            .hint(UNITS_HINT));
        };
        let unit = match unit {
            UnitWord::Exact(unit) => unit,
            UnitWord::Long(unit) => {
                let suggestion = if whole {
                    format!("{digits}{}", unit.letter())
                } else {
                    "36h".to_owned()
                };
                return Err(ParseError::new(
                    start,
                    len,
                    format!("write the duration as `{suggestion}`"),
                )
                .hint("units are one letter: s, m, h, d or w"));
            }
            UnitWord::NotFixed(days_each) => {
                return Err(not_fixed(start, len, digits, days_each));
            }
        };
        if !whole {
            return Err(ParseError::new(
                start,
                len,
                format!("`{written}`: durations are whole numbers"),
            )
            .hint("use a smaller unit, e.g. `36h` for a day and a half"));
        }
        let amount = digits.parse::<u64>().ok().filter(|amount| {
            amount
                .checked_mul(unit.seconds())
                .is_some_and(|s| s <= MAX_DURATION_SECONDS)
        });
        match amount {
            Some(amount) => Ok(Tok::Dur(Duration { amount, unit })),
            None => Err(ParseError::new(start, len, "duration is too long")
                .hint("the longest is about 1000 years")),
        }
    }
}

pub(crate) const UNITS_HINT: &str =
    "use s (seconds), m (minutes), h (hours), d (days) or w (weeks), e.g. `30d`";

pub(crate) enum UnitWord {
    /// `d`, `h`, ...
    Exact(Unit),
    /// `days`, `hours`, ...: understood, but written as one letter.
    Long(Unit),
    /// Months and years: no fixed length; the number of days in one.
    NotFixed(u64),
}

pub(crate) fn unit_word(word: &str) -> Option<UnitWord> {
    let exact = match word {
        "s" => Some(Unit::Seconds),
        "m" => Some(Unit::Minutes),
        "h" => Some(Unit::Hours),
        "d" => Some(Unit::Days),
        "w" => Some(Unit::Weeks),
        _ => None,
    };
    if let Some(unit) = exact {
        return Some(UnitWord::Exact(unit));
    }
    if word == "M" {
        return Some(UnitWord::NotFixed(30));
    }
    let long = match word.to_ascii_lowercase().as_str() {
        "sec" | "secs" | "second" | "seconds" => Unit::Seconds,
        "min" | "mins" | "minute" | "minutes" => Unit::Minutes,
        "hr" | "hrs" | "hour" | "hours" | "h" => Unit::Hours,
        "day" | "days" | "d" => Unit::Days,
        "wk" | "wks" | "week" | "weeks" | "w" => Unit::Weeks,
        "s" => Unit::Seconds,
        "mo" | "mos" | "month" | "months" => return Some(UnitWord::NotFixed(30)),
        "y" | "yr" | "yrs" | "year" | "years" => return Some(UnitWord::NotFixed(365)),
        _ => return None,
    };
    Some(UnitWord::Long(long))
}

pub(crate) fn not_fixed(start: usize, len: usize, digits: &str, days_each: u64) -> ParseError {
    let what = if days_each == 30 { "months" } else { "years" };
    let example = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(days_each))
        .unwrap_or(days_each);
    ParseError::new(
        start,
        len,
        format!("{what} have no fixed length; count in days, e.g. `{example}d`"),
    )
    .hint(UNITS_HINT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(text: &str) -> Vec<Tok> {
        lex(text).into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn lexes_operators_numbers_durations_and_words() {
        assert_eq!(
            toks("a.b >= 12.5 and now()-30d"),
            vec![
                Tok::Word("a".into()),
                Tok::Dot,
                Tok::Word("b".into()),
                Tok::Ge,
                Tok::Num(12.5),
                Tok::Word("and".into()),
                Tok::Word("now".into()),
                Tok::LParen,
                Tok::RParen,
                Tok::Minus,
                Tok::Dur(Duration {
                    amount: 30,
                    unit: Unit::Days
                }),
                Tok::Eof,
            ]
        );
    }

    #[test]
    fn lexes_string_escapes_and_backticks() {
        assert_eq!(
            toks(r#""a\"b\\c" `first name`"#),
            vec![
                Tok::Str("a\"b\\c".into()),
                Tok::Quoted("first name".into()),
                Tok::Eof
            ]
        );
    }

    #[test]
    fn stops_at_the_first_problem() {
        let tokens = lex("a = \"open");
        let Tok::Error(error) = &tokens[2].tok else {
            panic!("{tokens:?}")
        };
        assert_eq!(
            (error.offset, error.len, error.message.as_str()),
            (4, 5, "unterminated string")
        );
        assert_eq!(tokens.len(), 3);
    }

    #[test]
    fn points_at_the_extra_equals() {
        let tokens = lex("x === 5");
        let Tok::Error(error) = &tokens[1].tok else {
            panic!("{tokens:?}")
        };
        assert_eq!((error.offset, error.len), (3, 2));
    }

    #[test]
    fn long_units_and_months_are_refused() {
        let tokens = lex("90days");
        let Tok::Error(error) = &tokens[0].tok else {
            panic!("{tokens:?}")
        };
        assert_eq!(error.message, "write the duration as `90d`");
        let tokens = lex("3mo");
        let Tok::Error(error) = &tokens[0].tok else {
            panic!("{tokens:?}")
        };
        assert_eq!(
            error.message,
            "months have no fixed length; count in days, e.g. `90d`"
        );
    }
}
