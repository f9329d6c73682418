//! Decoding located YAML trees into wire documents, collecting every structural problem.
//!
//! The decoder checks shape only: mappings where mappings belong, known fields (with a
//! "did you mean" for typos), required fields, value types, and the enumerated words (`state`,
//! `protocol`, `unlisted`, selector operators). Where a value is unusable it records a problem
//! and substitutes a placeholder, so that the rest of the document is still decoded and
//! semantically validated; the caller discards validation issues below a placeholder, and a
//! document with any problem is never used.

use std::collections::BTreeMap;

use crate::document::{
    DEFAULT_PRIORITY, Inventory, InventoryNode, LabelSelector, LabelSelectorRequirement, Metadata,
    PortEntry, PortItem, PortPolicy, PortPolicySpec, Ports, Protocol, SelectorOperator, State,
    Unlisted,
};
use crate::yaml::{Loc, Node, PathSegment, Value};

/// A decoded document of one of portwarden's kinds.
#[derive(Clone, Debug, PartialEq)]
pub enum Document {
    /// `kind: PortPolicy`
    Policy(PortPolicy),
    /// `kind: Inventory`
    Inventory(Inventory),
}

/// A structural problem at a token.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    /// Where the offending token is.
    pub loc: Loc,
    /// The path of the value the problem is about (validation issues below it are dropped).
    pub path: Vec<PathSegment>,
    /// What is wrong.
    pub message: String,
    /// A suggested fix.
    pub help: Option<String>,
}

/// The closest of `candidates` to `word`, if it is close enough to be a plausible typo.
pub(crate) fn suggest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    // Edit distance costs length x length in time and memory; no typo of a field name is long.
    if word.len() > 64 {
        return None;
    }
    let lower = word.to_ascii_lowercase();
    candidates
        .iter()
        .map(|c| {
            let score = if c.to_ascii_lowercase() == lower {
                1.0
            } else {
                strsim::normalized_damerau_levenshtein(&lower, &c.to_ascii_lowercase())
            };
            (score, *c)
        })
        .filter(|(score, _)| *score >= 0.5)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// Whether a document belongs to another tool: an `apiVersion` of another API group and a kind
/// that is not one of ours (a Flux `Kustomization`, an Argo CD `Application`, a ConfigMap...).
/// A policy folder in a GitOps repository sits among such documents; they are skipped. Anything
/// that claims a portwarden group or kind is decoded, so typos there are still reported.
fn is_foreign(node: &Node) -> bool {
    let text = |key: &str| match node.get(key).map(|n| &n.value) {
        Some(Value::Str(s)) => Some(s.as_str()),
        _ => None,
    };
    let theirs = matches!(text("kind"), Some(k) if k != "PortPolicy" && k != "Inventory");
    matches!(text("apiVersion"), Some(v) if !v.starts_with("portwarden.")) && theirs
}

/// Decodes one document. Returns the document (with placeholders where values were unusable)
/// and the problems found; the document is only trustworthy when there are none. Another
/// tool's document (see `is_foreign`) gives neither a document nor problems.
/// At most [`MAX_PROBLEMS`] problems are kept; then a last one at the document's root counts
/// the rest (and, its path being the root, hides every validation issue of the document).
pub fn decode(node: &Node) -> (Option<Document>, Vec<Problem>) {
    let mut d = Decoder {
        path: Vec::new(),
        problems: Vec::new(),
        more: 0,
    };
    let doc = d.document(node);
    if d.more > 0 {
        d.problems.push(Problem {
            loc: node.loc,
            path: Vec::new(),
            message: crate::diagnostic::more_in_document(d.more),
            help: Some(crate::diagnostic::NOT_SHOWN_HELP.into()),
        });
    }
    (doc, d.problems)
}

/// Most problems kept for one document (below the loader's limit per file, so the count of the
/// rest is shown). Bounds the memory of a document full of mistakes.
pub const MAX_PROBLEMS: usize = 40;

struct Decoder {
    path: Vec<PathSegment>,
    problems: Vec<Problem>,
    more: usize,
}

/// The fields of a mapping, after unknown keys have been reported.
struct Fields<'n> {
    node: &'n Node,
}

impl<'n> Fields<'n> {
    fn get(&self, name: &str) -> Option<&'n Node> {
        self.node.get(name)
    }
}

impl Decoder {
    fn problem(&mut self, loc: Loc, message: impl Into<String>, help: Option<String>) {
        self.problem_at(loc, self.path.clone(), message, help);
    }

    fn problem_at(
        &mut self,
        loc: Loc,
        path: Vec<PathSegment>,
        message: impl Into<String>,
        help: Option<String>,
    ) {
        if self.problems.len() >= MAX_PROBLEMS {
            self.more += 1;
            return;
        }
        self.problems.push(Problem {
            loc,
            path,
            message: message.into(),
            help,
        });
    }

    fn at<R>(&mut self, seg: PathSegment, f: impl FnOnce(&mut Decoder) -> R) -> R {
        self.path.push(seg);
        let r = f(self);
        self.path.pop();
        r
    }

    /// Runs `f` on field `name` if present; `None` when absent.
    fn field<R>(
        &mut self,
        fields: &Fields<'_>,
        name: &str,
        f: impl FnOnce(&mut Decoder, &Node) -> R,
    ) -> Option<R> {
        let node = fields.get(name)?;
        Some(self.at(PathSegment::Key(name.into()), |d| f(d, node)))
    }

    /// Like [`Decoder::field`], but a missing field is a problem (reported at the mapping).
    fn required<R>(
        &mut self,
        fields: &Fields<'_>,
        name: &str,
        what: &str,
        f: impl FnOnce(&mut Decoder, &Node) -> R,
    ) -> Option<R> {
        let r = self.field(fields, name, f);
        if r.is_none() {
            let mut path = self.path.clone();
            path.push(PathSegment::Key(name.into()));
            self.problem_at(
                fields.node.loc,
                path,
                format!("missing field \"{name}\" in {what}"),
                None,
            );
        }
        r
    }

    /// Checks that `node` is a mapping with only `known` keys.
    fn fields<'n>(&mut self, node: &'n Node, what: &str, known: &[&str]) -> Option<Fields<'n>> {
        let Value::Map(entries) = &node.value else {
            self.problem(
                node.loc,
                format!(
                    "expected a mapping for {what}, found {}",
                    node.value.kind_name()
                ),
                None,
            );
            return None;
        };
        for (key, _) in entries {
            if !known.contains(&key.name.as_str()) {
                let help = match suggest(&key.name, known) {
                    Some(s) => format!("did you mean \"{s}\"?"),
                    None => format!("known fields: {}", known.join(", ")),
                };
                let mut path = self.path.clone();
                path.push(PathSegment::Key(key.name.clone()));
                self.problem_at(
                    key.loc,
                    path,
                    format!("unknown field \"{}\" in {what}", key.name),
                    Some(help),
                );
            }
        }
        Some(Fields { node })
    }

    fn string(&mut self, node: &Node, what: &str) -> Option<String> {
        match &node.value {
            Value::Str(s) => Some(s.clone()),
            Value::Int(_) | Value::Float(_) | Value::Bool(_) => {
                self.problem(
                    node.loc,
                    format!("{what} must be a string, found {}", node.value.kind_name()),
                    Some("put it in quotes".into()),
                );
                None
            }
            other => {
                self.problem(
                    node.loc,
                    format!("{what} must be a string, found {}", other.kind_name()),
                    None,
                );
                None
            }
        }
    }

    fn list<'n>(&mut self, node: &'n Node, what: &str) -> Option<&'n [Node]> {
        match &node.value {
            Value::Seq(items) => Some(items),
            Value::Null => Some(&[]),
            other => {
                self.problem(
                    node.loc,
                    format!("{what} must be a list, found {}", other.kind_name()),
                    None,
                );
                None
            }
        }
    }

    fn string_list(&mut self, node: &Node, what: &str) -> Vec<String> {
        let Some(items) = self.list(node, what) else {
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .map(|(i, n)| {
                self.at(PathSegment::Index(i), |d| d.string(n, what))
                    .unwrap_or_default()
            })
            .collect()
    }

    fn string_map(&mut self, node: &Node, what: &str) -> BTreeMap<String, String> {
        let Value::Map(entries) = &node.value else {
            if node.value != Value::Null {
                self.problem(
                    node.loc,
                    format!("{what} must be a mapping, found {}", node.value.kind_name()),
                    None,
                );
            }
            return BTreeMap::new();
        };
        entries
            .iter()
            .map(|(k, v)| {
                let value = self
                    .at(PathSegment::Key(k.name.clone()), |d| {
                        d.string(v, &format!("the value of \"{}\"", k.name))
                    })
                    .unwrap_or_default();
                (k.name.clone(), value)
            })
            .collect()
    }

    /// One of a fixed set of words, with a suggestion when it is close to one of them.
    fn word<T: Copy>(&mut self, node: &Node, what: &str, choices: &[(&str, T)]) -> Option<T> {
        let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
        let expected = match names.as_slice() {
            [init @ .., last] if !init.is_empty() => format!("{} or {last}", init.join(", ")),
            _ => names.join(""),
        };
        let text = match &node.value {
            Value::Str(s) => s.clone(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            other => {
                self.problem(
                    node.loc,
                    format!(
                        "{what} must be one of {expected}, found {}",
                        other.kind_name()
                    ),
                    None,
                );
                return None;
            }
        };
        if let Some((_, v)) = choices.iter().find(|(n, _)| *n == text) {
            return Some(*v);
        }
        let help = suggest(&text, &names).map(|s| format!("did you mean \"{s}\"?"));
        self.problem(
            node.loc,
            format!("unknown {what} \"{text}\" (expected {expected})"),
            help,
        );
        None
    }

    fn document(&mut self, node: &Node) -> Option<Document> {
        let Value::Map(_) = &node.value else {
            self.problem(
                node.loc,
                format!(
                    "expected a document (a mapping with apiVersion and kind), found {}",
                    node.value.kind_name()
                ),
                None,
            );
            return None;
        };
        if is_foreign(node) {
            return None;
        }
        let kind = match node.get("kind") {
            None => {
                self.problem(
                    node.loc,
                    "missing field \"kind\" (expected PortPolicy or Inventory)",
                    None,
                );
                return None;
            }
            Some(k) => self.at(PathSegment::Key("kind".into()), |d| {
                d.word(
                    k,
                    "kind",
                    &[("PortPolicy", "PortPolicy"), ("Inventory", "Inventory")],
                )
            })?,
        };
        match kind {
            "PortPolicy" => self.policy(node).map(Document::Policy),
            _ => self.inventory(node).map(Document::Inventory),
        }
    }

    fn api_version(&mut self, f: &Fields<'_>, what: &str) -> String {
        self.required(f, "apiVersion", what, |d, n| d.string(n, "apiVersion"))
            .flatten()
            .unwrap_or_else(|| crate::document::API_VERSION.into())
    }

    fn metadata(&mut self, node: &Node) -> Metadata {
        let Some(f) = self.fields(
            node,
            "metadata",
            &["name", "labels", "annotations", "namespace"],
        ) else {
            return Metadata::default();
        };
        let name = self
            .required(&f, "name", "metadata", |d, n| d.string(n, "name"))
            .flatten()
            .unwrap_or_else(|| "placeholder".into());
        let labels = self
            .field(&f, "labels", |d, n| d.string_map(n, "labels"))
            .unwrap_or_default();
        // Annotations are accepted (tools such as Argo CD add them) and ignored.
        Metadata { name, labels }
    }

    fn policy(&mut self, node: &Node) -> Option<PortPolicy> {
        let what = "PortPolicy";
        let f = self.fields(
            node,
            what,
            &["apiVersion", "kind", "metadata", "spec", "status"],
        )?;
        let api_version = self.api_version(&f, what);
        let metadata = self
            .required(&f, "metadata", what, |d, n| d.metadata(n))
            .unwrap_or_default();
        let spec = self
            .required(&f, "spec", what, |d, n| d.spec(n))
            .flatten()?;
        Some(PortPolicy {
            api_version,
            kind: "PortPolicy".into(),
            metadata,
            spec,
        })
    }

    fn spec(&mut self, node: &Node) -> Option<PortPolicySpec> {
        let what = "spec";
        let f = self.fields(
            node,
            what,
            &["nodeSelector", "priority", "unlisted", "ports"],
        )?;
        let node_selector = self
            .field(&f, "nodeSelector", |d, n| d.selector(n))
            .unwrap_or_default();
        let priority = self
            .field(&f, "priority", |d, n| match n.value {
                Value::Int(i) if (0..=i64::from(u32::MAX)).contains(&i) => Some(i as u32),
                _ => {
                    d.problem(
                        n.loc,
                        "priority must be a whole number from 0 to 4294967295 (lower wins)",
                        None,
                    );
                    None
                }
            })
            .flatten()
            .unwrap_or(DEFAULT_PRIORITY);
        let unlisted = self
            .field(&f, "unlisted", |d, n| {
                d.word(
                    n,
                    "unlisted mode",
                    &[("ignore", Unlisted::Ignore), ("report", Unlisted::Report)],
                )
            })
            .flatten()
            .unwrap_or_default();
        let ports = self
            .required(&f, "ports", what, |d, n| {
                let items = d.list(n, "ports")?;
                Some(
                    items
                        .iter()
                        .enumerate()
                        .map(|(i, e)| d.at(PathSegment::Index(i), |d| d.entry(e)))
                        .collect::<Vec<_>>(),
                )
            })
            .flatten()
            .unwrap_or_default();
        Some(PortPolicySpec {
            node_selector,
            priority,
            unlisted,
            ports,
        })
    }

    fn entry(&mut self, node: &Node) -> PortEntry {
        let what = "port entry";
        let placeholder = PortEntry {
            ports: Ports::Number(1),
            protocol: Protocol::Tcp,
            state: State::Open,
            from: Vec::new(),
            reason: None,
            expires: None,
        };
        let Some(f) = self.fields(
            node,
            what,
            &["ports", "protocol", "state", "from", "reason", "expires"],
        ) else {
            return placeholder;
        };
        let ports = self
            .required(&f, "ports", what, |d, n| d.ports(n))
            .flatten()
            .unwrap_or(placeholder.ports);
        let protocol = self
            .field(&f, "protocol", |d, n| {
                d.word(
                    n,
                    "protocol",
                    &[
                        ("TCP", Protocol::Tcp),
                        ("UDP", Protocol::Udp),
                        ("tcp", Protocol::Tcp),
                        ("udp", Protocol::Udp),
                    ],
                )
            })
            .flatten()
            .unwrap_or_default();
        let state = self
            .required(&f, "state", what, |d, n| {
                d.word(
                    n,
                    "state",
                    &[
                        ("open", State::Open),
                        ("closed", State::Closed),
                        ("filtered", State::Filtered),
                    ],
                )
            })
            .flatten()
            .unwrap_or(placeholder.state);
        let from = self
            .field(&f, "from", |d, n| d.string_list(n, "a source"))
            .unwrap_or_default();
        let reason = self
            .field(&f, "reason", |d, n| d.string(n, "reason"))
            .flatten();
        // Checked (RFC 3339 with an offset) by validation, which the Kubernetes layer runs too.
        let expires = self
            .field(&f, "expires", |d, n| d.string(n, "expires"))
            .flatten();
        PortEntry {
            ports,
            protocol,
            state,
            from,
            reason,
            expires,
        }
    }

    fn ports(&mut self, node: &Node) -> Option<Ports> {
        let item = |d: &mut Decoder, n: &Node| -> Option<PortItem> {
            match &n.value {
                // Beyond the wire type (negative, or past 2^32): reported as written here, since
                // clamping it would make the range check report another number.
                Value::Int(i) => match u32::try_from(*i) {
                    Ok(port) => Some(PortItem::Number(port)),
                    Err(_) => {
                        d.problem(
                            n.loc,
                            format!("port {i} is out of range (ports are 1-65535)"),
                            None,
                        );
                        None
                    }
                },
                Value::Str(s) => Some(PortItem::Text(s.clone())),
                other => {
                    d.problem(
                        n.loc,
                        format!(
                            "a port must be a number or a range like \"8000-8100\", found {}",
                            other.kind_name()
                        ),
                        None,
                    );
                    None
                }
            }
        };
        match &node.value {
            Value::Seq(items) => {
                let items: Vec<Option<PortItem>> = items
                    .iter()
                    .enumerate()
                    .map(|(i, n)| self.at(PathSegment::Index(i), |d| item(d, n)))
                    .collect();
                items
                    .into_iter()
                    .collect::<Option<Vec<_>>>()
                    .map(Ports::List)
            }
            _ => item(self, node).map(|i| match i {
                PortItem::Number(n) => Ports::Number(n),
                PortItem::Text(t) => Ports::Text(t),
            }),
        }
    }

    fn selector(&mut self, node: &Node) -> LabelSelector {
        let Some(f) = self.fields(node, "nodeSelector", &["matchLabels", "matchExpressions"])
        else {
            return LabelSelector::default();
        };
        let match_labels = self
            .field(&f, "matchLabels", |d, n| d.string_map(n, "matchLabels"))
            .unwrap_or_default();
        let match_expressions = self
            .field(&f, "matchExpressions", |d, n| {
                let items = d.list(n, "matchExpressions").unwrap_or(&[]);
                items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, e)| d.at(PathSegment::Index(i), |d| d.requirement(e)))
                    .collect()
            })
            .unwrap_or_default();
        LabelSelector {
            match_labels,
            match_expressions,
        }
    }

    fn requirement(&mut self, node: &Node) -> Option<LabelSelectorRequirement> {
        let what = "a selector expression";
        let f = self.fields(node, what, &["key", "operator", "values"])?;
        let key = self
            .required(&f, "key", what, |d, n| d.string(n, "key"))
            .flatten();
        let operator = self
            .required(&f, "operator", what, |d, n| {
                d.word(
                    n,
                    "operator",
                    &[
                        ("In", SelectorOperator::In),
                        ("NotIn", SelectorOperator::NotIn),
                        ("Exists", SelectorOperator::Exists),
                        ("DoesNotExist", SelectorOperator::DoesNotExist),
                    ],
                )
            })
            .flatten();
        let values = self
            .field(&f, "values", |d, n| d.string_list(n, "a value"))
            .unwrap_or_default();
        Some(LabelSelectorRequirement {
            key: key?,
            operator: operator?,
            values,
        })
    }

    fn inventory(&mut self, node: &Node) -> Option<Inventory> {
        let what = "Inventory";
        let f = self.fields(node, what, &["apiVersion", "kind", "metadata", "nodes"])?;
        let api_version = self.api_version(&f, what);
        let metadata = self.field(&f, "metadata", |d, n| d.metadata(n));
        let nodes = self
            .required(&f, "nodes", what, |d, n| {
                let items = d.list(n, "nodes").unwrap_or(&[]);
                items
                    .iter()
                    .enumerate()
                    .map(|(i, e)| d.at(PathSegment::Index(i), |d| d.inventory_node(e)))
                    .collect()
            })
            .unwrap_or_default();
        Some(Inventory {
            api_version,
            kind: "Inventory".into(),
            metadata,
            nodes,
        })
    }

    fn inventory_node(&mut self, node: &Node) -> InventoryNode {
        let what = "an inventory node";
        let Some(f) = self.fields(node, what, &["name", "addresses", "labels"]) else {
            return InventoryNode {
                name: "placeholder".into(),
                addresses: Vec::new(),
                labels: BTreeMap::new(),
            };
        };
        let name = self
            .required(&f, "name", what, |d, n| d.string(n, "name"))
            .flatten()
            .unwrap_or_else(|| "placeholder".into());
        let addresses = self
            .field(&f, "addresses", |d, n| d.string_list(n, "an address"))
            .unwrap_or_default();
        let labels = self
            .field(&f, "labels", |d, n| d.string_map(n, "labels"))
            .unwrap_or_default();
        InventoryNode {
            name,
            addresses,
            labels,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::parse_stream;

    fn problems(text: &str) -> Vec<(u32, u32, String, Option<String>)> {
        let docs = parse_stream(text).unwrap();
        let (_, p) = decode(&docs[0]);
        p.into_iter()
            .map(|p| (p.loc.line, p.loc.column, p.message, p.help))
            .collect()
    }

    const HEADER: &str = "apiVersion: portwarden.io/v1alpha1\nkind: PortPolicy\nmetadata:\n  name: p\nspec:\n  ports:\n";

    #[test]
    fn good_policy_decodes() {
        let text = format!(
            "{HEADER}    - ports: 80\n      state: closed\n      from: [\"172.16.7.80\"]\n    - ports: [22, \"8000-8100\"]\n      protocol: UDP\n      state: filtered\n"
        );
        let docs = parse_stream(&text).unwrap();
        let (doc, p) = decode(&docs[0]);
        assert!(p.is_empty(), "{p:?}");
        let Some(Document::Policy(pp)) = doc else {
            panic!()
        };
        assert_eq!(pp.spec.ports.len(), 2);
        assert_eq!(pp.spec.ports[1].protocol, Protocol::Udp);
        assert_eq!(pp.spec.priority, DEFAULT_PRIORITY);
    }

    #[test]
    fn every_problem_with_location_and_suggestion() {
        let text = format!(
            "{HEADER}    - ports: 80\n      state: blocked\n    - ports: 81\n      sate: open\n      protocol: SCTP\n"
        );
        let p = problems(&text);
        assert_eq!(p.len(), 4, "{p:#?}");
        assert_eq!((p[0].0, p[0].1), (8, 14));
        assert!(
            p[0].2
                .contains("unknown state \"blocked\" (expected open, closed or filtered)")
        );
        assert_eq!(p[0].3.as_deref(), Some("did you mean \"closed\"?"));
        assert_eq!((p[1].0, p[1].1), (10, 7));
        assert!(p[1].2.contains("unknown field \"sate\""));
        assert_eq!(p[1].3.as_deref(), Some("did you mean \"state\"?"));
        assert!(p[2].2.contains("unknown protocol \"SCTP\""));
        assert!(p[3].2.contains("missing field \"state\""));
    }

    #[test]
    fn wrong_types() {
        let text =
            format!("{HEADER}    - ports: {{a: 1}}\n      state: [open]\n      from: 10.0.0.0/8\n");
        let p = problems(&text);
        assert_eq!(p.len(), 3, "{p:#?}");
        assert!(p[0].2.contains("a port must be a number"));
        assert!(p[1].2.contains("state must be one of"));
        assert!(p[2].2.contains("must be a list"));
    }

    #[test]
    fn ports_beyond_the_wire_type_are_reported_as_written() {
        // -1 and 2^32 + 80 were clamped to 4294967295 before the range check saw them.
        for (ports, col, written) in [
            ("-1", 14, "-1"),
            ("4294967376", 14, "4294967376"),
            ("[80, -5]", 19, "-5"),
        ] {
            let p = problems(&format!(
                "{HEADER}    - ports: {ports}\n      state: open\n"
            ));
            assert_eq!(p.len(), 1, "{ports}: {p:#?}");
            assert_eq!((p[0].0, p[0].1), (7, col), "{ports}: {p:?}");
            assert_eq!(
                p[0].2,
                format!("port {written} is out of range (ports are 1-65535)"),
                "{ports}"
            );
        }
    }

    #[test]
    fn kind_and_document_shape() {
        let p = problems("apiVersion: portwarden.io/v1alpha1\nkind: PortPolicys\n");
        assert_eq!(p[0].3.as_deref(), Some("did you mean \"PortPolicy\"?"));
        let p = problems("- a\n- b\n");
        assert!(p[0].2.contains("expected a document"));
        let p = problems("apiVersion: x\n");
        assert!(p[0].2.contains("missing field \"kind\""));
    }

    #[test]
    fn other_tools_documents_are_skipped_ours_are_not() {
        let skipped = |text: &str| {
            let docs = parse_stream(text).unwrap();
            let (doc, p) = decode(&docs[0]);
            doc.is_none() && p.is_empty()
        };
        assert!(skipped(
            "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nspec: {}\n"
        ));
        assert!(skipped(
            "apiVersion: argoproj.io/v1alpha1\nkind: Application\n"
        ));
        assert!(skipped("apiVersion: v1\nkind: ConfigMap\n"));
        // A typo in our group, or our kind under another group, is still reported.
        assert!(!skipped(
            "apiVersion: portwarden.io/v1\nkind: PortPolicy\nmetadata: {name: p}\nspec: {ports: []}\n"
        ));
        assert!(!skipped("apiVersion: example.com/v1\nkind: PortPolicy\n"));
    }

    #[test]
    fn suggestions() {
        assert_eq!(
            suggest("blocked", &["open", "closed", "filtered"]),
            Some("closed")
        );
        assert_eq!(
            suggest("Open", &["open", "closed", "filtered"]),
            Some("open")
        );
        assert_eq!(suggest("xyz", &["open", "closed", "filtered"]), None);
        assert_eq!(
            suggest("nodeselector", &["nodeSelector", "ports"]),
            Some("nodeSelector")
        );
    }
}
