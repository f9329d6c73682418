//! The located YAML tree: every node and key carries its line and column.
//!
//! Documents are first parsed into this tree, not straight into typed structs, for two reasons:
//! a decoder walking a tree can report *every* problem in a document (serde stops at the first),
//! and semantic checks that run later on typed values can still point at the exact token by
//! looking their path up here.
//!
//! The tree is built straight from the events of `granit-parser` (the YAML parser under
//! `serde-saphyr`), without a serde round trip: that halves the cost of loading large policy
//! sets. Scalars resolve by the YAML 1.2 core schema (so `no` stays a string). Tags are the
//! core schema's only (`!!str`, `!!int`, `!!float`, `!!bool`, `!!null`, `!!seq`, `!!map`), on
//! values they fit; any other tag, or one that contradicts its value (`!!null open`), is
//! refused rather than ignored, so a value is never read as something its author did not write.
//! Hostile input is refused quickly and in bounded memory: nesting deeper than [`MAX_DEPTH`],
//! alias expansion beyond [`MAX_ALIAS_NODES`] nodes (a "billion laughs" document), more than
//! [`MAX_NODES`] nodes.

use std::fmt;

use std::collections::HashMap;

use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle, Span, Tag};

/// Where a token starts in its file: 1-based line and column (in characters), and its length in
/// characters (0 when unknown), so a caret can underline it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Loc {
    /// 1-based line.
    pub line: u32,
    /// 1-based column, counted in characters.
    pub column: u32,
    /// Length of the token in characters; 0 when unknown.
    pub len: u32,
}

fn clamp(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// A YAML node with its location.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Where the node starts.
    pub loc: Loc,
    /// What the node holds.
    pub value: Value,
}

/// A mapping key with its location.
#[derive(Clone, Debug, PartialEq)]
pub struct Key {
    /// Where the key starts.
    pub loc: Loc,
    /// The key's text.
    pub name: String,
}

/// The value of a YAML node, with YAML 1.2 core-schema scalars already resolved.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `~`, `null` or nothing.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// Any other scalar.
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in document order.
    Map(Vec<(Key, Node)>),
}

impl Value {
    /// The word a message uses for this kind of value ("a string", "a list", ...).
    pub fn kind_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "a number",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

impl Node {
    /// The value under `key` when this node is a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.name == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The node at `path` below this one (mapping keys and sequence indices), or the deepest
    /// node on the way when the path leaves the tree, so a message still points somewhere close.
    pub fn locate(&self, path: &[PathSegment]) -> Loc {
        let mut node = self;
        for segment in path {
            let next = match (segment, &node.value) {
                (PathSegment::Key(k), Value::Map(_)) => node.get(k),
                (PathSegment::Index(i), Value::Seq(items)) => items.get(*i),
                (PathSegment::KeyName(k), Value::Map(entries)) => {
                    return entries
                        .iter()
                        .find(|(key, _)| key.name == *k)
                        .map_or(node.loc, |(key, _)| key.loc);
                }
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        node.loc
    }
}

/// One step of a path into a document: a mapping key or a sequence index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathSegment {
    /// A mapping key.
    Key(String),
    /// A sequence index (0-based).
    Index(usize),
    /// A mapping key itself rather than its value (for problems with the key's text).
    KeyName(String),
}

impl fmt::Display for PathSegment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathSegment::Key(k) | PathSegment::KeyName(k) => write!(f, ".{k}"),
            PathSegment::Index(i) => write!(f, "[{i}]"),
        }
    }
}

/// A YAML syntax error or a refused input, with its location when the parser knows it.
#[derive(Clone, Debug, PartialEq)]
pub struct SyntaxError {
    /// Where the parser stopped, if known.
    pub loc: Option<Loc>,
    /// What went wrong, without location prefix.
    pub message: String,
}

/// Deepest nesting of collections accepted.
pub const MAX_DEPTH: usize = 32;
/// Most nodes one file may hold.
pub const MAX_NODES: usize = 1_000_000;
/// Most nodes that aliases may copy in one file.
pub const MAX_ALIAS_NODES: usize = 10_000;
/// Most nodes kept as copies of anchored nodes (for later aliases) in one file. An anchored
/// node larger than [`MAX_ALIAS_NODES`] is never copied (an alias to it would be refused
/// anyway); this bounds the copies of many or nested anchors (`&a [&b [&c [...]]]`).
const MAX_ANCHOR_COPIES: usize = 10 * MAX_ALIAS_NODES;

fn loc_of(span: &Span) -> Loc {
    let (start, end) = (&span.start, &span.end);
    let len = if end.line() == start.line() {
        end.index().saturating_sub(start.index())
    } else {
        0
    };
    Loc {
        line: clamp(start.line() as u64),
        column: clamp(start.col() as u64 + 1),
        len: u32::try_from(len).unwrap_or(0),
    }
}

/// Resolves a plain scalar by the YAML 1.2 core schema.
fn resolve_plain(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Value::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    let digits = |s: &str, radix: u32| !s.is_empty() && s.chars().all(|c| c.is_digit(radix));
    let int = if let Some(hex) = text.strip_prefix("0x") {
        digits(hex, 16).then(|| i64::from_str_radix(hex, 16))
    } else if let Some(oct) = text.strip_prefix("0o") {
        digits(oct, 8).then(|| i64::from_str_radix(oct, 8))
    } else {
        let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
        digits(unsigned, 10).then(|| text.parse::<i64>())
    };
    match int {
        Some(Ok(i)) => return Value::Int(i),
        // Out of i64 range: keep the text; the decoder reports it as an invalid value.
        Some(Err(_)) => return Value::Str(text.to_string()),
        None => {}
    }
    let float_shaped = text
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+'))
        && text.chars().any(|c| c.is_ascii_digit());
    match text.parse::<f64>() {
        Ok(f) if float_shaped => Value::Float(f),
        _ => Value::Str(text.to_string()),
    }
}

/// The tags portwarden accepts, for messages.
const CORE_TAGS: &str = "!!str, !!int, !!float, !!bool, !!null, !!seq and !!map";

fn unsupported_tag(loc: Loc, tag: &Tag) -> SyntaxError {
    refuse(
        loc,
        format!(
            "unsupported tag {} (portwarden reads plain YAML: only the core schema's {CORE_TAGS} are accepted, on values they fit); remove it",
            tag.original()
        ),
    )
}

/// A scalar's value under its tag: the core schema's resolution of its text when the tag agrees
/// with it (`!!int "80"` is 80, `!!float 1` is 1.0, `!!str 80` is "80").
///
/// # Errors
///
/// A tag outside the core schema, or one the text does not fit (`!!null open`, `!!int http`).
fn tagged_scalar(text: &str, tag: &Tag, loc: Loc) -> Result<Value, SyntaxError> {
    let Some(core) = tag.core_suffix() else {
        return Err(unsupported_tag(loc, tag));
    };
    let value = match (core, resolve_plain(text)) {
        ("str", _) => Value::Str(text.to_string()),
        ("null", v @ Value::Null)
        | ("bool", v @ Value::Bool(_))
        | ("int", v @ Value::Int(_))
        | ("float", v @ Value::Float(_)) => v,
        ("float", Value::Int(i)) => Value::Float(i as f64),
        _ => {
            return Err(refuse(
                loc,
                format!(
                    "the tag {} does not fit the value \"{text}\"; remove the tag (a value is read as written, by YAML's core schema)",
                    tag.original()
                ),
            ));
        }
    };
    Ok(value)
}

/// Checks the tag of a collection: `!!seq` on a list, `!!map` on a mapping, nothing else.
fn check_collection_tag(tag: Option<&Tag>, seq: bool, loc: Loc) -> Result<(), SyntaxError> {
    let Some(tag) = tag else { return Ok(()) };
    match tag.core_suffix() {
        Some("seq") if seq => Ok(()),
        Some("map") if !seq => Ok(()),
        Some(_) => Err(refuse(
            loc,
            format!(
                "the tag {} does not fit the value {}; remove the tag (a value is read as written, by YAML's core schema)",
                tag.original(),
                if seq { "a list" } else { "a mapping" }
            ),
        )),
        None => Err(unsupported_tag(loc, tag)),
    }
}

/// A collection being built. A mapping keeps the index of its keys' names, so a duplicate is
/// found in constant time (a linear search made a mapping of many keys quadratic).
enum Open {
    Seq(Loc, usize, Vec<Node>),
    Map(
        Loc,
        usize,
        Vec<(Key, Node)>,
        Option<Key>,
        HashMap<String, u32>,
    ),
}

/// Builds located trees from parser events, enforcing the limits.
struct Builder {
    stack: Vec<Open>,
    /// Each anchor's node size, and a copy of the node unless it was too large to copy (an
    /// alias to it is refused).
    anchors: HashMap<usize, (usize, Option<Node>)>,
    docs: Vec<Node>,
    nodes: usize,
    alias_nodes: usize,
    anchor_copies: usize,
}

fn refuse(loc: Loc, message: String) -> SyntaxError {
    SyntaxError {
        loc: Some(loc),
        message,
    }
}

fn count(node: &Node) -> usize {
    match &node.value {
        Value::Seq(items) => 1 + items.iter().map(count).sum::<usize>(),
        Value::Map(entries) => 1 + entries.iter().map(|(_, v)| count(v)).sum::<usize>(),
        _ => 1,
    }
}

impl Builder {
    fn count_nodes(&mut self, n: usize, loc: Loc) -> Result<(), SyntaxError> {
        self.nodes += n;
        if self.nodes > MAX_NODES {
            return Err(refuse(
                loc,
                format!("more than {MAX_NODES} nodes in one file; split it"),
            ));
        }
        Ok(())
    }

    /// Places a finished node in its parent (or as a document), remembering its anchor.
    fn push(&mut self, node: Node, anchor: usize) -> Result<(), SyntaxError> {
        if anchor != 0 {
            let size = count(&node);
            let copy = (size <= MAX_ALIAS_NODES && self.anchor_copies + size <= MAX_ANCHOR_COPIES)
                .then(|| {
                    self.anchor_copies += size;
                    node.clone()
                });
            self.anchors.insert(anchor, (size, copy));
        }
        match self.stack.last_mut() {
            None => self.docs.push(node),
            Some(Open::Seq(_, _, items)) => items.push(node),
            Some(Open::Map(_, _, entries, pending, names)) => match pending.take() {
                None => {
                    let name = match &node.value {
                        Value::Str(s) => s.clone(),
                        Value::Int(i) => i.to_string(),
                        Value::Bool(b) => b.to_string(),
                        Value::Null => String::new(),
                        Value::Float(f) => f.to_string(),
                        Value::Seq(_) | Value::Map(_) => {
                            return Err(refuse(node.loc, "a mapping key must be a scalar".into()));
                        }
                    };
                    if let Some(first_line) = names.get(&name) {
                        return Err(refuse(
                            node.loc,
                            format!("duplicate key \"{name}\" (first at line {first_line})"),
                        ));
                    }
                    names.insert(name.clone(), node.loc.line);
                    *pending = Some(Key {
                        loc: node.loc,
                        name,
                    });
                }
                Some(key) => entries.push((key, node)),
            },
        }
        Ok(())
    }

    fn open(&mut self, collection: Open, loc: Loc) -> Result<(), SyntaxError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(refuse(
                loc,
                format!("nesting deeper than {MAX_DEPTH} levels"),
            ));
        }
        self.count_nodes(1, loc)?;
        self.stack.push(collection);
        Ok(())
    }

    fn event(&mut self, event: Event<'_>, span: &Span) -> Result<(), SyntaxError> {
        let loc = loc_of(span);
        // A problem with a tag points at the tag (which may be on an earlier line than a
        // block collection it tags), not at the value.
        let tag_loc = || span.tag_span().map_or(loc, |t| loc_of(&t));
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                self.count_nodes(1, loc)?;
                let value = match tag {
                    Some(tag) => tagged_scalar(&text, &tag, tag_loc())?,
                    None if style == ScalarStyle::Plain => resolve_plain(&text),
                    None => Value::Str(text.into_owned()),
                };
                self.push(Node { loc, value }, anchor)
            }
            Event::SequenceStart(_, anchor, tag) => {
                check_collection_tag(tag.as_deref(), true, tag_loc())?;
                self.open(Open::Seq(loc, anchor, Vec::new()), loc)
            }
            Event::MappingStart(_, anchor, tag) => {
                check_collection_tag(tag.as_deref(), false, tag_loc())?;
                self.open(
                    Open::Map(loc, anchor, Vec::new(), None, HashMap::new()),
                    loc,
                )
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let node = match self.stack.pop() {
                    Some(Open::Seq(loc, anchor, items)) => (
                        Node {
                            loc,
                            value: Value::Seq(items),
                        },
                        anchor,
                    ),
                    Some(Open::Map(loc, anchor, entries, _, _)) => (
                        Node {
                            loc,
                            value: Value::Map(entries),
                        },
                        anchor,
                    ),
                    None => return Err(refuse(loc, "unbalanced collection end".into())),
                };
                self.push(node.0, node.1)
            }
            Event::Alias(id) => {
                let Some((size, target)) = self.anchors.get(&id) else {
                    return Err(refuse(loc, "alias to an unknown anchor".into()));
                };
                let size = *size;
                self.alias_nodes += size;
                if self.alias_nodes > MAX_ALIAS_NODES {
                    return Err(refuse(
                        loc,
                        format!(
                            "aliases expand to more than {MAX_ALIAS_NODES} nodes (the document expands too much, like a \"billion laughs\" attack)"
                        ),
                    ));
                }
                let Some(mut node) = target.clone() else {
                    return Err(refuse(
                        loc,
                        format!(
                            "alias to a node of {size} nodes (at most {MAX_ALIAS_NODES} may be copied)"
                        ),
                    ));
                };
                node.loc = loc;
                self.count_nodes(size, loc)?;
                self.push(node, 0)
            }
            Event::DocumentStart(..) => {
                self.anchors.clear();
                self.anchor_copies = 0;
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// Parses every document of a YAML stream into located trees. Empty documents (only comments)
/// are dropped.
///
/// # Errors
///
/// The first syntax error, or a refusal when the input exceeds the limits (nesting deeper than
/// [`MAX_DEPTH`], aliases expanding beyond [`MAX_ALIAS_NODES`] nodes, more than [`MAX_NODES`]
/// nodes, duplicate keys, tags outside the core schema or that do not fit their value).
pub fn parse_stream(text: &str) -> Result<Vec<Node>, SyntaxError> {
    let mut b = Builder {
        stack: Vec::new(),
        anchors: HashMap::new(),
        docs: Vec::new(),
        nodes: 0,
        alias_nodes: 0,
        anchor_copies: 0,
    };
    for item in Parser::new_from_str(text) {
        match item {
            Ok((event, span)) => b.event(event, &span)?,
            Err(e) => {
                let m = e.marker();
                return Err(SyntaxError {
                    loc: Some(Loc {
                        line: clamp(m.line() as u64),
                        column: clamp(m.col() as u64 + 1),
                        len: 0,
                    }),
                    message: clean_message(&e.info()),
                });
            }
        }
    }
    Ok(b.docs
        .into_iter()
        .filter(|n| n.value != Value::Null)
        .collect())
}

/// The parser's messages may carry several lines ("while parsing ..."); keep the sentence that
/// says what is wrong, and the context on the same line.
fn clean_message(raw: &str) -> String {
    let mut lines = raw.lines();
    let first = lines.next().unwrap_or(raw).trim();
    match lines.next() {
        Some(context) => format!("{}, {first}", context.trim()),
        None => first.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_point_at_tokens() {
        let docs = parse_stream("a: 1\nb:\n  - state: blocked\n").unwrap();
        let doc = &docs[0];
        let path = [
            PathSegment::Key("b".into()),
            PathSegment::Index(0),
            PathSegment::Key("state".into()),
        ];
        let loc = doc.locate(&path);
        assert_eq!((loc.line, loc.column, loc.len), (3, 12, 7));
    }

    #[test]
    fn several_documents_and_empty_ones() {
        let docs = parse_stream("a: 1\n---\n# only a comment\n---\nb: 2\n").unwrap();
        assert_eq!(docs.len(), 2);
    }

    #[test]
    fn yaml_11_booleans_stay_strings() {
        let docs = parse_stream("state: no\n").unwrap();
        assert_eq!(docs[0].get("state").unwrap().value, Value::Str("no".into()));
    }

    #[test]
    fn tags_that_change_the_meaning_are_refused() {
        // `!!null open` read as the string "open": a tag that says "no value" was ignored.
        let err = parse_stream("a: 1\nstate: !!null open\n").unwrap_err();
        let loc = err.loc.unwrap();
        // The caret goes under the tag, not the value.
        assert_eq!((loc.line, loc.column, loc.len), (2, 8, 6), "{err:?}");
        assert!(
            err.message.contains("!!null") && err.message.contains("\"open\""),
            "{}",
            err.message
        );
        for refused in [
            "a: !!int open\n",
            "a: !!bool 1\n",
            "a: !!int 1.5\n",
            "a: !!map [1]\n",
            "a: !!seq {b: 1}\n",
            "a: !!str [1]\n",
            "a: !foo x\n",
            "a: !!binary aGk=\n",
            "a: !!timestamp 2001-12-14\n",
            "a: !<tag:example.com,2000:x> y\n",
            "a: ! 80\n",
            "!!int k: v\n",
        ] {
            let err = parse_stream(refused).unwrap_err();
            assert!(err.message.contains("tag"), "{refused:?}: {}", err.message);
            let loc = err.loc.unwrap();
            let at = refused.find('!').unwrap();
            assert_eq!((loc.line, loc.column), (1, at as u32 + 1), "{refused:?}");
        }
        // A tagged block collection starts on a later line than its tag.
        let err = parse_stream("a: !!seq\n  b: 1\n").unwrap_err();
        let loc = err.loc.unwrap();
        assert_eq!((loc.line, loc.column, loc.len), (1, 4, 5), "{err:?}");
    }

    #[test]
    fn core_tags_that_fit_their_value_are_read_as_the_tag_says() {
        let value = |text: &str| {
            parse_stream(text).unwrap()[0]
                .get("a")
                .unwrap()
                .value
                .clone()
        };
        assert_eq!(value("a: !!str 80\n"), Value::Str("80".into()));
        assert_eq!(value("a: !!str open\n"), Value::Str("open".into()));
        assert_eq!(value("a: !!int 80\n"), Value::Int(80));
        assert_eq!(value("a: !!int \"80\"\n"), Value::Int(80));
        assert_eq!(value("a: !!float 1\n"), Value::Float(1.0));
        assert_eq!(value("a: !!bool true\n"), Value::Bool(true));
        assert_eq!(value("a: !!null ~\n"), Value::Null);
        assert_eq!(value("a: !!null\n"), Value::Null);
        assert!(matches!(value("a: !!seq [1]\n"), Value::Seq(_)));
        assert!(matches!(value("a: !!map {b: 1}\n"), Value::Map(_)));
    }

    #[test]
    fn syntax_error_is_located() {
        let err = parse_stream("a: 1\n  b: [\n").unwrap_err();
        let loc = err.loc.unwrap();
        assert_eq!((loc.line, loc.column), (2, 4));
        assert!(!err.message.starts_with("line"), "{}", err.message);
    }

    #[test]
    fn alias_bomb_is_refused() {
        let mut text = String::from("a: &a [1,1,1,1,1,1,1,1,1]\n");
        let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
        for w in names.windows(2) {
            let refs = vec![format!("*{}", w[0]); 9].join(",");
            text.push_str(&format!("{}: &{} [{}]\n", w[1], w[1], refs));
        }
        let err = parse_stream(&text).unwrap_err();
        assert!(err.message.contains("expands too much") || err.message.contains("alias"));
    }

    #[test]
    fn deep_nesting_is_refused() {
        let text = "[".repeat(100_000);
        assert!(parse_stream(&text).is_err());
        let text = (0..200)
            .map(|i| format!("{}k:\n", "  ".repeat(i)))
            .collect::<String>();
        assert!(parse_stream(&text).is_err());
    }

    #[test]
    fn a_mapping_of_many_keys_is_linear() {
        // 100,000 keys: the duplicate check compared each key with every earlier one.
        let text: String = (0..100_000).map(|i| format!("k{i}: {i}\n")).collect();
        let docs = parse_stream(&text).unwrap();
        let Value::Map(entries) = &docs[0].value else {
            panic!("not a map")
        };
        assert_eq!(entries.len(), 100_000);
        let err = parse_stream(&format!("{text}k7: again\n")).unwrap_err();
        assert_eq!(err.message, "duplicate key \"k7\" (first at line 8)");
        assert_eq!(err.loc.unwrap().line, 100_001);
    }

    #[test]
    fn nested_anchors_are_not_copied_beyond_the_limits() {
        // 30 nested anchored lists around 30,000 scalars: copying each anchored node took 30
        // copies of the whole tree. Now only nodes an alias could use are copied.
        let inner = vec!["1"; 30_000].join(",");
        let mut text = inner.clone();
        for i in 0..30 {
            text = format!("&a{i} [{text}]");
        }
        let docs = parse_stream(&format!("x: {text}\n")).unwrap();
        assert_eq!(count(&docs[0]), 1 + 30 + 30_000);
        let err = parse_stream(&format!("x: {text}\ny: *a0\n")).unwrap_err();
        assert!(err.message.contains("billion laughs"), "{}", err.message);
        // Small anchors still work, also inside large ones.
        let docs = parse_stream(&format!("x: [&s {{a: 1}}, {inner}]\ny: *s\n")).unwrap();
        assert_eq!(
            docs[0].get("y").unwrap().get("a").unwrap().value,
            Value::Int(1)
        );
    }

    #[test]
    fn anchor_copies_are_bounded() {
        // Many anchors of 5,000 nodes each: copies stop at MAX_ANCHOR_COPIES, and an alias to
        // an anchor that was not copied is refused rather than wrong.
        let item = format!("[{}]", vec!["1"; 4_999].join(","));
        let n = MAX_ANCHOR_COPIES / 5_000 + 1;
        let mut text = String::from("x:\n");
        for i in 0..n {
            text.push_str(&format!("  - &a{i} {item}\n"));
        }
        assert!(parse_stream(&text).is_ok());
        let err = parse_stream(&format!("{text}y: *a{}\n", n - 1)).unwrap_err();
        assert!(err.message.contains("at most"), "{}", err.message);
        let ok = parse_stream(&format!("{text}y: *a0\n")).unwrap();
        assert_eq!(count(ok[0].get("y").unwrap()), 5_000);
    }
}
