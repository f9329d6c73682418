//! The HTML page's look: the stylesheet, the colour and symbol of each verdict, the legend.
//!
//! The palette is Okabe and Ito's (bluish green, vermillion, yellow), chosen to stay apart
//! under every common colour-vision deficiency, and each verdict has a symbol of its own shape
//! (a tick, a cross, a question mark) and a word, so colour is never the only signal. Text is
//! black on every verdict colour (contrast at least 5.5:1).
//!
//! The symbols are characters (U+2713, U+2717, `?`) that DejaVu Sans and the system fonts of
//! Windows and macOS all have, not SVG: ten thousand cells of `<svg><use>` cost Chromium a
//! third of a second more to lay out than ten thousand characters.

use std::fmt::Write as _;

use crate::verdict::Verdict;

/// How a verdict is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Look {
    /// The CSS class of its cells (`v-drift`).
    pub class: &'static str,
    /// Its background colour, `#rrggbb`.
    pub colour: &'static str,
    /// Its symbol (`✗`).
    pub symbol: &'static str,
    /// Its name for people (`drift`).
    pub word: &'static str,
}

/// Okabe–Ito bluish green.
const IN_SYNC: &str = "#009e73";
/// Okabe–Ito vermillion.
const DRIFT: &str = "#d55e00";
/// Okabe–Ito yellow.
const INDETERMINATE: &str = "#f0e442";

/// The look of a verdict.
pub fn look(v: Verdict) -> Look {
    match v {
        Verdict::InSync => Look {
            class: "v-in_sync",
            colour: IN_SYNC,
            symbol: "\u{2713}",
            word: "in sync",
        },
        Verdict::Drift => Look {
            class: "v-drift",
            colour: DRIFT,
            symbol: "\u{2717}",
            word: "drift",
        },
        Verdict::Indeterminate => Look {
            class: "v-indeterminate",
            colour: INDETERMINATE,
            symbol: "?",
            word: "indeterminate",
        },
    }
}

/// The symbol of `v`, named for screen readers.
pub fn symbol(out: &mut String, v: Verdict) {
    let l = look(v);
    let _ = write!(
        out,
        "<span class=\"sym\" role=\"img\" aria-label=\"{}\">{}</span>",
        l.word, l.symbol
    );
}

/// The stylesheet: system fonts only, nothing fetched. Node sections are laid out only when
/// scrolled to (`content-visibility: auto`; each section says how tall it is likely to be,
/// see `matrix::section`), which makes a page of a hundred nodes open in about the time of
/// an empty one.
pub const CSS: &str = "
:root { color-scheme: light; }
body { font: 14px/1.4 system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', sans-serif;
  margin: 0; color: #111; background: #fff; }
main { max-width: 1200px; margin: 0 auto; padding: 16px 24px 48px; }
h1 { font-size: 22px; margin: 8px 0 12px; }
h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid #ccc; padding-bottom: 4px; }
h3 { font-size: 15px; margin: 16px 0 6px; }
code, .port { font-family: ui-monospace, 'DejaVu Sans Mono', monospace; }
.verdict { display: inline-block; font-size: 18px; font-weight: 700; padding: 4px 12px;
  border-radius: 4px; margin: 0 0 12px; }
.counts { display: flex; flex-wrap: wrap; gap: 8px 28px; margin: 0 0 12px; }
.counts div { min-width: 80px; }
.counts dt { font-size: 12px; color: #555; }
.counts dd { margin: 0; font-weight: 600; }
svg.bar { display: block; width: 100%; height: 16px; margin: 8px 0; border: 1px solid #888; }
.legend { display: flex; flex-wrap: wrap; gap: 12px; padding: 0; list-style: none; }
.legend li { padding: 2px 8px; border-radius: 3px; }
.v-in_sync { background: #009e73; }
.v-drift { background: #d55e00; }
.v-indeterminate { background: #f0e442; }
.sym { display: inline-block; width: 1.1em; font-weight: 700; color: #000; }
nav ul { columns: 4 200px; column-gap: 24px; padding: 0; list-style: none; }
nav li { break-inside: avoid; margin-bottom: 2px; }
section.node { content-visibility: auto; }
table { border-collapse: collapse; margin: 4px 0 12px; }
th, td { border: 1px solid #fff; padding: 3px 8px; text-align: left; vertical-align: top; }
thead th { background: #eee; font-weight: 600; }
tbody th { background: #f5f5f5; font-weight: normal; white-space: nowrap; }
table.matrix td { white-space: nowrap; min-width: 110px; }
td small { display: block; font-size: 11px; }
table.details td, table.details th { border: 1px solid #ddd; }
td.none { background: #fafafa; color: #777; }
.reason { font-style: italic; }
";

/// The legend: each verdict's symbol, word and colour.
pub fn legend(out: &mut String) {
    out.push_str("<ul class=\"legend\">");
    for v in [Verdict::Drift, Verdict::Indeterminate, Verdict::InSync] {
        let _ = write!(out, "<li class=\"{}\">", look(v).class);
        symbol(out, v);
        let _ = write!(out, "{}</li>", look(v).word);
    }
    out.push_str("<li class=\"none\">— not scanned from this vantage</li></ul>\n");
}
