//! Text for terminals. Strings that come from policies (a `reason`, a name), inventories or
//! the network (an agent's answer, a foreign iptables rule) may hold control characters; printed
//! as they are, an ANSI escape repaints the terminal and a line break forges an output line.
//! [`printable`] is the one place where such text is made safe for table output; JSON output
//! escapes on its own and needs nothing.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Characters a terminal would act on rather than show: C0 and C1 controls, DEL, the Unicode
/// line and paragraph separators (U+2028, U+2029: a line break to many terminals and log
/// viewers) and the Unicode bidirectional controls (which reorder what is displayed around
/// them).
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// `s` with every control character shown as an escape: `\n`, `\r`, `\t`, `\x1b` (other
/// ASCII controls and DEL), `\u{202e}` (the rest).
///
/// # Guarantees
///
/// The result holds no control character, so it prints on one line and cannot change the
/// terminal's state; text without control characters is returned unchanged (borrowed).
///
/// # Caveats
///
/// A backslash is not escaped, so the text `\n` and an escaped line break look alike; the
/// point is what the terminal does, not a reversible encoding.
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) && c.is_ascii() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_shown_not_acted_on() {
        assert!(matches!(
            printable("INC-1234: attack source"),
            Cow::Borrowed(_)
        ));
        assert_eq!(
            printable("INC-1 \x1b[31mred\nforged\r\t\x7f\u{9b}"),
            "INC-1 \\x1b[31mred\\nforged\\r\\t\\x7f\\u{9b}"
        );
        assert_eq!(printable("a\u{202e}b"), "a\\u{202e}b");
        assert_eq!(printable("café ✓"), "café ✓");
    }

    #[test]
    fn unicode_line_and_paragraph_separators_are_escaped() {
        // Terminals and log viewers break lines at U+2028/U+2029: a forged line, like `\n`.
        assert_eq!(printable("a\u{2028}b\u{2029}c"), "a\\u{2028}b\\u{2029}c");
    }
}
