//! Diagnostics: one problem at a place in a file, rendered the way compilers do it.
//!
//! ```text
//! examples/bad.yaml:7:14: error: unknown state "blocked" (expected open, closed or filtered)
//!   |
//! 7 |       state: blocked
//!   |              ^^^^^^^ did you mean "closed"?
//! ```

use std::fmt;

use crate::yaml::Loc;

/// One problem in one file, with the source line it points at.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    /// The file, as the user named it (or found under a directory they named).
    pub file: String,
    /// Where in the file, when known.
    pub loc: Option<Loc>,
    /// What is wrong.
    pub message: String,
    /// A suggested fix.
    pub help: Option<String>,
    /// The text of the line `loc` points at, for the snippet.
    pub line_text: Option<String>,
}

impl Diagnostic {
    /// A diagnostic at `loc` in `file`, taking the snippet line from `source`.
    pub fn at(file: &str, source: &str, loc: Loc, message: String, help: Option<String>) -> Self {
        let line_text = source
            .lines()
            .nth(loc.line.saturating_sub(1) as usize)
            .map(str::to_string);
        Diagnostic {
            file: file.to_string(),
            loc: Some(loc),
            message,
            help,
            line_text,
        }
    }

    /// A diagnostic about a whole file (it cannot be read, is too large, ...).
    pub fn file(file: &str, message: String, help: Option<String>) -> Self {
        Diagnostic {
            file: file.to_string(),
            loc: None,
            message,
            help,
            line_text: None,
        }
    }

    /// The first line alone: `FILE:LINE:COL: error: MESSAGE`.
    pub fn headline(&self) -> String {
        match self.loc {
            Some(l) => format!(
                "{}:{}:{}: error: {}",
                self.file, l.line, l.column, self.message
            ),
            None => format!("{}: error: {}", self.file, self.message),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.headline())?;
        match (self.loc, &self.line_text) {
            (Some(loc), Some(text)) => {
                let number = loc.line.to_string();
                let pad = " ".repeat(number.len());
                // Tabs would misalign the caret; show them as one space each.
                let text = text.replace('\t', " ");
                let col = loc.column.saturating_sub(1) as usize;
                let remaining = text.chars().count().saturating_sub(col).max(1);
                let width = (loc.len as usize).clamp(1, remaining);
                writeln!(f, "{pad} |")?;
                writeln!(f, "{number} | {text}")?;
                write!(f, "{pad} | {}{}", " ".repeat(col), "^".repeat(width))?;
                match &self.help {
                    Some(h) => writeln!(f, " {h}"),
                    None => writeln!(f),
                }
            }
            _ => match &self.help {
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
