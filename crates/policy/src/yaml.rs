//! The located YAML tree: every node and key carries its line and column.
//!
//! Documents are first parsed into this tree, not straight into typed structs, for two reasons:
//! a decoder walking a tree can report *every* problem in a document (serde stops at the first),
//! and semantic checks that run later on typed values can still point at the exact token by
//! looking their path up here.
//!
//! Parsing goes through `serde-saphyr` with a tight [`serde_saphyr::Budget`]: alias bombs, deep
//! nesting and oversized inputs are refused quickly and in bounded memory.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

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

impl Loc {
    fn from_spanned<T>(s: &Spanned<T>) -> Loc {
        Loc {
            line: clamp(s.referenced.line()),
            column: clamp(s.referenced.column()),
            len: u32::try_from(s.referenced.span().len()).unwrap_or(0),
        }
    }
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

/// Limits that keep hostile documents cheap: no policy file legitimately comes near them.
const MAX_DEPTH: usize = 32;
const MAX_NODES: usize = 2_000_000;
const MAX_ALIASES: usize = 1_000;
const MAX_REPLAYED_EVENTS: usize = 10_000;

/// Parses every document of a YAML stream into located trees. Empty documents (only comments)
/// are dropped.
///
/// # Errors
///
/// The first syntax error, or a refusal when the input exceeds the parser budget (nesting deeper
/// than 32 levels, too many aliases or alias expansions — a "billion laughs" document — or too
/// many nodes).
pub fn parse_stream(text: &str) -> Result<Vec<Node>, SyntaxError> {
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_depth: MAX_DEPTH,
            max_nodes: MAX_NODES,
            max_aliases: MAX_ALIASES,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: MAX_REPLAYED_EVENTS,
        },
        strict_booleans: true,
        with_snippet: false,
    };
    let docs: Vec<Option<Spanned<Tree>>> = serde_saphyr::from_multiple_with_options(text, options)
        .map_err(|e| {
            let loc = e.location().map(|l| Loc {
                line: clamp(l.line()),
                column: clamp(l.column()),
                len: 0,
            });
            SyntaxError {
                loc,
                message: clean_message(&e.without_snippet().to_string()),
            }
        })?;
    Ok(docs
        .into_iter()
        .flatten()
        .map(Tree::into_node)
        .filter(|n| n.value != Value::Null)
        .collect())
}

/// serde-saphyr prefixes messages with "line N column M: " and may append notes; we print the
/// location ourselves, so keep only the sentence that says what is wrong.
fn clean_message(raw: &str) -> String {
    let first = raw.lines().next().unwrap_or(raw);
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let without_loc = match first.find(": ") {
        Some(i) if first.starts_with("line ") => &first[i + 2..],
        _ => first,
    };
    // Positions repeated inside the sentence (" at line 5, column 5", "(used at line ...)").
    let msg = without_loc
        .split(" at line ")
        .next()
        .unwrap_or(without_loc)
        .trim()
        .trim_end_matches(['(', ' ']);
    if msg.contains("budget breached") || msg.contains("alias replay") {
        format!(
            "{msg} (the document expands too much: aliases, nesting or size exceed what a policy file needs)"
        )
    } else {
        msg.to_string()
    }
}

/// The serde-facing shape of the tree: what serde-saphyr fills in, turned into [`Node`]s after.
enum Tree {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Tree>>),
    Map(Vec<(Spanned<String>, Spanned<Tree>)>),
}

impl Tree {
    fn into_node(s: Spanned<Tree>) -> Node {
        let loc = Loc::from_spanned(&s);
        let value = match s.value {
            Tree::Null => Value::Null,
            Tree::Bool(b) => Value::Bool(b),
            Tree::Int(i) => Value::Int(i),
            Tree::Float(f) => Value::Float(f),
            Tree::Str(t) => Value::Str(t),
            Tree::Seq(items) => Value::Seq(items.into_iter().map(Tree::into_node).collect()),
            Tree::Map(entries) => Value::Map(
                entries
                    .into_iter()
                    .map(|(k, v)| {
                        let key = Key {
                            loc: Loc::from_spanned(&k),
                            name: k.value,
                        };
                        (key, Tree::into_node(v))
                    })
                    .collect(),
            ),
        };
        Node { loc, value }
    }
}

struct TreeVisitor;

impl<'de> Visitor<'de> for TreeVisitor {
    type Value = Tree;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<Tree, E> {
        Ok(Tree::Null)
    }
    fn visit_none<E>(self) -> Result<Tree, E> {
        Ok(Tree::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Tree, D::Error> {
        Tree::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Tree, E> {
        Ok(Tree::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Tree, E> {
        Ok(Tree::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Tree, E> {
        // Numbers beyond i64 are out of range for every field we have; keep them as text so
        // the decoder reports them as invalid values instead of silently wrapping.
        Ok(i64::try_from(v).map_or_else(|_| Tree::Str(v.to_string()), Tree::Int))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Tree, E> {
        Ok(Tree::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Tree, E> {
        Ok(Tree::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Tree, E> {
        Ok(Tree::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Tree, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Tree>>()? {
            items.push(item);
        }
        Ok(Tree::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Tree, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<String>>()? {
            let value = map.next_value::<Spanned<Tree>>()?;
            entries.push((key, value));
        }
        Ok(Tree::Map(entries))
    }
}

impl<'de> Deserialize<'de> for Tree {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Tree, D::Error> {
        d.deserialize_any(TreeVisitor)
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
}
