//! Diagnostics: one problem at a place in a file, rendered the way compilers do it.
//!
//! ```text
//! examples/bad.yaml:7:14: error: unknown state "blocked" (expected open, closed or filtered)
//!   |
//! 7 |       state: blocked
//!   |              ^^^^^^^ did you mean "closed"?
//! ```
//!
//! A diagnostic is an error (the documents are not used) or a [`Severity::Warning`]: something
//! worth saying that does not make the documents wrong (`validate` still exits 0, the agent
//! applies them and logs the warning).

use std::fmt;

use crate::text::printable;
use crate::yaml::Loc;

/// How bad a [`Diagnostic`] is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Severity {
    /// The documents are invalid: nothing of them is used.
    #[default]
    Error,
    /// Worth saying, but the documents are valid and used.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One problem in one file, with the source line it points at.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    /// Whether the problem makes the documents invalid.
    pub severity: Severity,
    /// The file, as the user named it (or found under a directory they named).
    pub file: String,
    /// Where in the file, when known.
    pub loc: Option<Loc>,
    /// What is wrong.
    pub message: String,
    /// A suggested fix.
    pub help: Option<String>,
    /// The text of the line `loc` points at, for the snippet; a line longer than
    /// [`MAX_SNIPPET_CHARS`] is cut to a window around the column, marked with `...`.
    pub line_text: Option<String>,
    /// How many characters of the line were cut before `line_text`'s window (0 when the line is
    /// shown from its start).
    pub line_skip: u32,
}

/// Longest snippet line shown. A hostile file can be one line of megabytes, and every problem
/// on it would otherwise copy that line.
pub const MAX_SNIPPET_CHARS: usize = 120;

/// The lines of `text` as YAML counts them: a line ends at `\r\n`, `\n` or a lone `\r` (which
/// `str::lines` does not split at, so a file with old Mac line ends got no snippet, or the
/// wrong line).
pub fn yaml_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text).filter(|t| !t.is_empty());
    std::iter::from_fn(move || {
        let t = rest?;
        match t.find(['\n', '\r']) {
            Some(i) => {
                let skip = if t[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&t[i + skip..]).filter(|r| !r.is_empty());
                Some(&t[..i])
            }
            None => {
                rest = None;
                Some(t)
            }
        }
    })
}

/// The help of every "not shown" note that ends a capped list of problems.
pub(crate) const NOT_SHOWN_HELP: &str = "fix the problems shown and validate again";

/// The message of the note that ends a document's capped list of problems (the decoder's and
/// the validator's alike).
pub(crate) fn more_in_document(more: usize) -> String {
    format!(
        "{more} more problem{} in this document not shown",
        if more == 1 { "" } else { "s" }
    )
}

/// `...` marking a cut in a snippet line.
const CUT: &str = "...";

/// The snippet of `line` around 1-based `column`: the line itself when short, else a window of
/// [`MAX_SNIPPET_CHARS`] characters; and how many characters were cut before the window.
fn window(line: &str, column: u32) -> (String, usize) {
    if line.len() <= MAX_SNIPPET_CHARS {
        return (line.to_string(), 0);
    }
    let total = line.chars().count();
    if total <= MAX_SNIPPET_CHARS {
        return (line.to_string(), 0);
    }
    let col = column.saturating_sub(1) as usize;
    let skip = col
        .saturating_sub(MAX_SNIPPET_CHARS / 2)
        .min(total - MAX_SNIPPET_CHARS);
    let mut text = String::with_capacity(MAX_SNIPPET_CHARS + 2 * CUT.len());
    if skip > 0 {
        text.push_str(CUT);
    }
    text.extend(line.chars().skip(skip).take(MAX_SNIPPET_CHARS));
    if skip + MAX_SNIPPET_CHARS < total {
        text.push_str(CUT);
    }
    (text, skip)
}

impl Diagnostic {
    /// A diagnostic at `loc` in `file`, taking the snippet line from `source`.
    pub fn at(file: &str, source: &str, loc: Loc, message: String, help: Option<String>) -> Self {
        let line = yaml_lines(source).nth(loc.line.saturating_sub(1) as usize);
        let (line_text, line_skip) = match line {
            Some(l) => {
                let (text, skip) = window(l, loc.column);
                (Some(text), u32::try_from(skip).unwrap_or(u32::MAX))
            }
            None => (None, 0),
        };
        Diagnostic {
            severity: Severity::Error,
            file: file.to_string(),
            loc: Some(loc),
            message,
            help,
            line_text,
            line_skip,
        }
    }

    /// A diagnostic about a whole file (it cannot be read, is too large, ...).
    pub fn file(file: &str, message: String, help: Option<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            file: file.to_string(),
            loc: None,
            message,
            help,
            line_text: None,
            line_skip: 0,
        }
    }

    /// The same diagnostic as a warning.
    pub fn warning(self) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..self
        }
    }

    /// Whether it makes the documents invalid (not a warning).
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// The first line alone: `FILE:LINE:COL: error: MESSAGE` (or `warning:`).
    ///
    /// # Guarantees
    ///
    /// Control characters of the file name and the message (text from the file's author: a
    /// decoded value, a name from a directory listing) are escaped ([`printable`]), so the
    /// line is one line and cannot change a terminal's state.
    pub fn headline(&self) -> String {
        let (file, message) = (printable(&self.file), printable(&self.message));
        match self.loc {
            Some(l) => format!(
                "{file}:{}:{}: {}: {message}",
                l.line, l.column, self.severity
            ),
            None => format!("{file}: {}: {message}", self.severity),
        }
    }
}

/// The byte offset of the `n`th character of `s` (its length when `s` is shorter).
fn byte_of_char(s: &str, n: usize) -> usize {
    s.char_indices().nth(n).map_or(s.len(), |(i, _)| i)
}

/// Rendered as a compiler does (see the module's example).
///
/// # Guarantees
///
/// Every text that comes from the file or its author (file name, message, help, the snippet
/// line) is shown with its control characters escaped ([`printable`]); the caret stays under
/// the token, counted on the escaped line.
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.headline())?;
        let help = self.help.as_deref().map(printable);
        match (self.loc, &self.line_text) {
            (Some(loc), Some(text)) => {
                let number = loc.line.to_string();
                let pad = " ".repeat(number.len());
                // Tabs would misalign the caret; show them as one space each.
                let text = text.replace('\t', " ");
                let col = loc.column.saturating_sub(1) as usize;
                let col = if self.line_skip > 0 {
                    col.saturating_sub(self.line_skip as usize) + CUT.len()
                } else {
                    col
                };
                // The token and what precedes it, in characters of the line as written; their
                // widths once escaped place the caret.
                let start = byte_of_char(&text, col);
                let remaining = text[start..].chars().count().max(1);
                let width = (loc.len as usize).clamp(1, remaining);
                let end = start + byte_of_char(&text[start..], width);
                let col = printable(&text[..start]).chars().count();
                let width = printable(&text[start..end]).chars().count().max(1);
                writeln!(f, "{pad} |")?;
                writeln!(f, "{number} | {}", printable(&text))?;
                write!(f, "{pad} | {}{}", " ".repeat(col), "^".repeat(width))?;
                match help {
                    Some(h) => writeln!(f, " {h}"),
                    None => writeln!(f),
                }
            }
            _ => match help {
                Some(h) => writeln!(f, "  = help: {h}"),
                None => Ok(()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_snippet_with_caret_under_token() {
        let source = "a: 1\nstate: blocked\n";
        let d = Diagnostic::at(
            "bad.yaml",
            source,
            Loc {
                line: 2,
                column: 8,
                len: 7,
            },
            "unknown state \"blocked\"".into(),
            Some("did you mean \"closed\"?".into()),
        );
        let text = d.to_string();
        assert_eq!(
            text,
            "bad.yaml:2:8: error: unknown state \"blocked\"\n  |\n2 | state: blocked\n  |        ^^^^^^^ did you mean \"closed\"?\n"
        );
    }

    #[test]
    fn long_lines_are_cut_to_a_window_with_the_caret_on_the_token() {
        let line = format!("{}TOKEN{}", "x".repeat(5000), "y".repeat(5000));
        let source = format!("first\n{line}\n");
        let d = Diagnostic::at(
            "long.yaml",
            &source,
            Loc {
                line: 2,
                column: 5001,
                len: 5,
            },
            "bad".into(),
            None,
        );
        let text = d.line_text.clone().unwrap();
        assert_eq!(text.chars().count(), MAX_SNIPPET_CHARS + 2 * CUT.len());
        assert!(text.starts_with("...x") && text.ends_with("y..."), "{text}");
        let shown = d.to_string();
        let lines: Vec<&str> = shown.lines().collect();
        let snippet = lines[2].split_once(" | ").unwrap().1;
        let caret = lines[3].split_once(" | ").unwrap().1;
        let at = caret.find('^').unwrap();
        assert_eq!(&snippet[at..at + 5], "TOKEN", "{shown}");
        assert_eq!(caret.trim_start(), "^^^^^");
        // A short line is shown whole; the start of a long line has no leading cut.
        let d = Diagnostic::at(
            "s.yaml",
            &line,
            Loc {
                line: 1,
                column: 2,
                len: 1,
            },
            "m".into(),
            None,
        );
        assert!(d.line_text.unwrap().starts_with("xx"));
    }

    #[test]
    fn lines_end_as_in_yaml() {
        let lines: Vec<&str> = yaml_lines("a\r\nb\rc\n\nd").collect();
        assert_eq!(lines, ["a", "b", "c", "", "d"]);
        assert_eq!(yaml_lines("a\n").count(), 1);
        assert_eq!(yaml_lines("").count(), 0);
        // A syntax error after lone carriage returns shows the line YAML counted.
        let source = "a: 1\rb: [\rc: 3\n";
        let d = Diagnostic::at(
            "cr.yaml",
            source,
            Loc {
                line: 3,
                column: 1,
                len: 1,
            },
            "m".into(),
            None,
        );
        assert_eq!(d.line_text.as_deref(), Some("c: 3"));
    }

    #[test]
    fn warnings_render_as_warnings() {
        let d = Diagnostic::at(
            "inv.yaml",
            "nodes:\n  - name: a\n",
            Loc {
                line: 2,
                column: 11,
                len: 1,
            },
            "node \"a\" has no addresses".into(),
            None,
        )
        .warning();
        assert!(!d.is_error());
        assert_eq!(
            d.to_string(),
            "inv.yaml:2:11: warning: node \"a\" has no addresses\n  |\n2 |   - name: a\n  |           ^\n"
        );
        let f = Diagnostic::file("x.yaml", "m".into(), None).warning();
        assert_eq!(f.headline(), "x.yaml: warning: m");
    }

    #[test]
    fn control_characters_are_escaped_and_the_caret_stays_on_the_token() {
        // A snippet line, a decoded value in the message and a file name from a directory
        // listing are the file author's text: printed raw, an ESC repaints the terminal and
        // U+202E reverses what follows.
        let source = "a: 1\nstate: \"\x1b[2J\u{202e}\" blocked\n";
        let d = Diagnostic::at(
            "evil\u{202e}lmay.yaml",
            source,
            Loc {
                line: 2,
                column: 16,
                len: 7,
            },
            "unknown state \"\x1b[2J\"".into(),
            Some("did you mean\n\"closed\"?".into()),
        );
        let shown = d.to_string();
        for line in shown.lines() {
            assert_eq!(printable(line), line, "raw control characters: {shown:?}");
        }
        assert_eq!(
            shown,
            "evil\\u{202e}lmay.yaml:2:16: error: unknown state \"\\x1b[2J\"\n  |\n2 | state: \"\\x1b[2J\\u{202e}\" blocked\n  |                          ^^^^^^^ did you mean\\n\"closed\"?\n"
        );
        let lines: Vec<&str> = shown.lines().collect();
        let snippet = lines[2].split_once(" | ").unwrap().1;
        let caret = lines[3].split_once(" | ").unwrap().1;
        let at = caret.find('^').unwrap();
        assert_eq!(&snippet[at..at + 7], "blocked", "{shown}");
        let f = Diagnostic::file("x\x1b.yaml", "m\r".into(), Some("h\x07".into()));
        assert_eq!(
            f.to_string(),
            "x\\x1b.yaml: error: m\\r\n  = help: h\\x07\n"
        );
    }

    #[test]
    fn file_level_diagnostic() {
        let d = Diagnostic::file(
            "x.yaml",
            "cannot read".into(),
            Some("check permissions".into()),
        );
        assert_eq!(
            d.to_string(),
            "x.yaml: error: cannot read\n  = help: check permissions\n"
        );
    }
}
