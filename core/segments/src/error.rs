//! Errors with a position, and their rendering with a caret under the problem.

/// A problem in an expression: where it is, what it is, and how to fix it.
///
/// Returned by [`crate::parse`] (syntax) and [`crate::check`] (unknown names). Show it to a person with
/// [`render_error`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ParseError {
    /// Byte offset of the problem in the expression text (the text's length when something is missing at
    /// the end).
    pub offset: usize,
    /// How many bytes to underline; at least 1.
    pub len: usize,
    /// What is wrong: lowercase, no trailing period.
    pub message: String,
    /// How to fix it, when there is something useful to say.
    pub hint: Option<String>,
}

impl ParseError {
    pub(crate) fn new(offset: usize, len: usize, message: impl Into<String>) -> Self {
        ParseError {
            offset,
            len: len.max(1),
            message: message.into(),
            hint: None,
        }
    }

    pub(crate) fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub(crate) fn maybe_hint(mut self, hint: Option<String>) -> Self {
        self.hint = hint;
        self
    }
}

/// Renders `error` for a person: the message, the line of `text` it is on with a caret line under the
/// problem, and the hint.
///
/// ```
/// let text = "total_spent >";
/// let error = spindle_segments::parse(text).unwrap_err();
/// assert_eq!(
///     spindle_segments::render_error(text, &error),
///     "error: expected a value after `>`\n  |\n1 | total_spent >\n  |              ^ here\n  \
///      = help: compare with a number, a string, a list, a name or a time, e.g. `total_spent > 500`"
/// );
/// ```
pub fn render_error(text: &str, error: &ParseError) -> String {
    let offset = floor_char_boundary(text, error.offset.min(text.len()));
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let line_no = text[..line_start].matches('\n').count() + 1;
    let line = text[line_start..line_end].replace(['\t', '\r'], " ");
    let column = text[line_start..offset].chars().count();
    let underline_end = floor_char_boundary(text, (offset + error.len.max(1)).min(line_end));
    let carets = text[offset..underline_end].chars().count().max(1);

    let number = line_no.to_string();
    let pad = " ".repeat(number.len());
    let mut out = format!("error: {}\n", error.message);
    out.push_str(&format!("{pad} |\n"));
    out.push_str(format!("{number} | {line}").trim_end());
    out.push('\n');
    out.push_str(&format!(
        "{pad} | {}{} here",
        " ".repeat(column),
        "^".repeat(carets)
    ));
    if let Some(hint) = &error.hint {
        out.push_str(&format!("\n{pad} = help: {hint}"));
    }
    out
}

fn floor_char_boundary(text: &str, mut index: usize) -> usize {
    while index > 0 && !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

/// Line (1-based) and column (1-based, in characters) of a byte offset, for messages.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = floor_char_boundary(text, offset.min(text.len()));
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = text[..line_start].matches('\n').count() + 1;
    (line, text[line_start..offset].chars().count() + 1)
}

/// "column 3", or "line 2, column 3" when the text has more than one line.
pub(crate) fn position(text: &str, offset: usize) -> String {
    let (line, column) = line_col(text, offset);
    if text.contains('\n') {
        format!("line {line}, column {column}")
    } else {
        format!("column {column}")
    }
}

/// The known name closest to `input`, if it is close enough to be a likely typo.
pub(crate) fn closest<'a>(
    input: &str,
    known: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    known
        .into_iter()
        .map(|name| (strsim::jaro_winkler(input, name), name))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, name)| name)
}

/// "did you mean `x`?" when a close name exists, else the names that exist (at most ten).
pub(crate) fn suggest<'a>(
    input: &str,
    known: impl IntoIterator<Item = &'a str> + Clone,
    what: &str,
) -> String {
    if let Some(name) = closest(input, known.clone()) {
        return format!("did you mean `{name}`?");
    }
    let names: Vec<&str> = known.into_iter().collect();
    if names.is_empty() {
        return format!("no {what} is known");
    }
    let mut listed: Vec<String> = names.iter().take(10).map(|n| format!("`{n}`")).collect();
    if names.len() > 10 {
        listed.push(format!("and {} more", names.len() - 10));
    }
    format!("known {what}s: {}", listed.join(", "))
}

/// A token's text for a message: `` `text` ``, shortened when long.
pub(crate) fn quote(text: &str) -> String {
    let text = text.trim();
    if text.chars().count() > 24 {
        let short: String = text.chars().take(20).collect();
        format!("`{short}…`")
    } else {
        format!("`{text}`")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_caret_under_the_problem() {
        let error = ParseError::new(4, 3, "bad").hint("fix it");
        assert_eq!(
            render_error("a = bcd", &error),
            "error: bad\n  |\n1 | a = bcd\n  |     ^^^ here\n  = help: fix it"
        );
    }

    #[test]
    fn renders_the_right_line_of_a_multi_line_text() {
        let text = "a = 1\nand b =";
        let error = ParseError::new(text.len(), 1, "expected a value after `=`");
        assert_eq!(
            render_error(text, &error),
            "error: expected a value after `=`\n  |\n2 | and b =\n  |        ^ here"
        );
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let text = "prénom = ";
        let error = ParseError::new(text.len(), 1, "x");
        assert!(render_error(text, &error).ends_with("  |          ^ here"));
        assert_eq!(line_col(text, text.len()), (1, 10));
    }

    #[test]
    fn wide_gutters_for_long_texts() {
        let text = "a\n".repeat(11) + "b >";
        let error = ParseError::new(text.len(), 1, "x");
        assert_eq!(
            render_error(&text, &error),
            "error: x\n   |\n12 | b >\n   |    ^ here"
        );
    }

    #[test]
    fn suggestions() {
        assert_eq!(
            suggest("total_spnt", ["total_spent", "country"], "trait"),
            "did you mean `total_spent`?"
        );
        assert_eq!(
            suggest("zzz", ["a", "b"], "trait"),
            "known traits: `a`, `b`"
        );
        assert_eq!(suggest("zzz", [], "segment"), "no segment is known");
    }
}
