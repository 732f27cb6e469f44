//! Configuration errors with their place in the file, rendered like the Rust compiler's.
//!
//! Every check in this crate produces [`Diagnostic`]s instead of returning at the first problem, so a user
//! fixes the whole file in one pass. Spans are byte ranges into the file; rendering turns them into
//! `path:line:column` with the offending text underlined.

use std::ops::Range;

use annotate_snippets::{AnnotationKind, Group, Level, Renderer, Snippet};

/// One problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// What is wrong, lowercase, without a trailing period.
    pub message: String,
    /// Where it is, as a byte range into the file; `None` for problems that have no single place.
    pub span: Option<Range<usize>>,
    /// A short label under the caret.
    pub label: String,
    /// How to fix it.
    pub hint: Option<String>,
}

impl Diagnostic {
    /// A problem at `span` with a message and a caret label.
    pub fn new(
        span: Option<Range<usize>>,
        message: impl Into<String>,
        label: impl Into<String>,
    ) -> Self {
        Self {
            message: message.into(),
            span,
            label: label.into(),
            hint: None,
        }
    }

    /// Adds a hint that says how to fix the problem.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Adds a hint only when there is one.
    pub fn with_optional_hint(mut self, hint: Option<String>) -> Self {
        self.hint = hint;
        self
    }
}

/// 1-based line and column of a byte offset (columns count characters, not bytes).
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = &source[..floor_char_boundary(source, offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

fn floor_char_boundary(source: &str, mut offset: usize) -> usize {
    while offset > 0 && !source.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

/// Renders diagnostics for a file at `path` with content `source`, one block per problem, in file order.
/// `styled` adds terminal colours.
pub fn render(diagnostics: &[Diagnostic], path: &str, source: &str, styled: bool) -> String {
    let renderer = if styled {
        Renderer::styled()
    } else {
        Renderer::plain()
    };
    let mut sorted: Vec<&Diagnostic> = diagnostics.iter().collect();
    sorted.sort_by_key(|d| d.span.as_ref().map_or(usize::MAX, |s| s.start));
    let mut out = String::new();
    for diagnostic in sorted {
        let title = Level::ERROR.primary_title(diagnostic.message.as_str());
        let located = match &diagnostic.span {
            Some(span) => {
                let start = floor_char_boundary(source, span.start.min(source.len()));
                let end = floor_char_boundary(source, span.end.min(source.len())).max(start);
                title.element(
                    Snippet::source(source).path(path).fold(true).annotation(
                        AnnotationKind::Primary
                            .span(start..end)
                            .label(diagnostic.label.as_str()),
                    ),
                )
            }
            None => Group::with_title(title),
        };
        let group = match &diagnostic.hint {
            Some(hint) => located.element(Level::HELP.message(hint.as_str())),
            None => located,
        };
        let report = [group];
        out.push_str(&renderer.render(&report));
        out.push('\n');
    }
    out
}

/// The known name closest to `input`, if it is close enough to be a likely typo.
pub fn closest<'a>(input: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    known
        .into_iter()
        .map(|name| (strsim::jaro_winkler(input, name), name))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, name)| name)
}

/// "did you mean `x`?" when a close name exists, else the list of names that exist.
pub fn suggest<'a>(
    input: &str,
    known: impl IntoIterator<Item = &'a str> + Clone,
    what: &str,
) -> String {
    match closest(input, known.clone()) {
        Some(name) => format!("did you mean `{name}`?"),
        None => {
            let names: Vec<String> = known.into_iter().map(|n| format!("`{n}`")).collect();
            if names.is_empty() {
                format!("no {what} is defined")
            } else {
                format!("{what}: {}", names.join(", "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        assert_eq!(line_col(text, 10), (2, 4));
    }

    #[test]
    fn rendering_names_file_line_and_column() {
        let text = "[store]\nurl = \"mysql://x\"\n";
        let d = Diagnostic::new(Some(14..25), "unknown store scheme", "here")
            .with_hint("use sqlite://");
        let out = render(&[d], "connectors.toml", text, false);
        assert!(out.contains("connectors.toml:2:7"), "{out}");
        assert!(out.contains("^^^^^^^^^^^ here"), "{out}");
        assert!(out.contains("help: use sqlite://"), "{out}");
    }

    #[test]
    fn suggestions_prefer_close_names() {
        assert_eq!(
            suggest("emial", ["email", "phone"], "known"),
            "did you mean `email`?"
        );
        assert_eq!(
            suggest("zzz", ["email", "phone"], "known types"),
            "known types: `email`, `phone`"
        );
    }
}
