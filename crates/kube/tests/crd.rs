//! The generated CustomResourceDefinitions: the chart's copy is current, the schemas are
//! structural (what the API server demands of a CRD), the `examples/` policies pass the schema
//! and its CEL rules exactly as `kubectl apply` would check them, and the CEL rules refuse what
//! they should, with the same meaning as the semantic validator.
//!
//! CEL runs locally with `kube-cel` (Kubernetes' CEL libraries, including `isIP`/`isCIDR`); the
//! OpenAPI part is checked by a small structural-schema validator below that follows the API
//! server's rules (types, required, enums, bounds, unknown fields refused as
//! `kubectl --validate=strict` does).
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::{Path, PathBuf};

use kube_cel::Validator;
use portwarden_kube::crds;
use serde_json::{Value, json};

const CHART_CRDS: &str = "charts/portwarden/crds/portwarden.io.yaml";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn schema_of(kind: &str) -> Value {
    let crd = crds()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .unwrap();
    let v = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
    v["openAPIV3Schema"].clone()
}

#[test]
fn chart_copy_is_current() {
    let generated = portwarden_kube::crds_yaml().unwrap();
    let path = repo().join(CHART_CRDS);
    if std::env::var_os("PORTWARDEN_UPDATE_CRDS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let shipped = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        shipped == generated,
        "{CHART_CRDS} is stale; regenerate it with\n  cargo run -p portwarden -- crd > {CHART_CRDS}\n(or PORTWARDEN_UPDATE_CRDS=1 cargo test -p portwarden-kube --test crd)"
    );
    // And the YAML reads back as the same objects.
    let docs: Vec<Value> = serde_saphyr::from_multiple(&generated).unwrap();
    let expected: Vec<Value> = crds()
        .iter()
        .map(|c| serde_json::to_value(c).unwrap())
        .collect();
    assert_eq!(docs, expected);
}

#[test]
fn crds_have_the_expected_shape() {
    for crd in crds() {
        let s = &crd.spec;
        assert_eq!(s.group, "portwarden.io");
        assert_eq!(s.scope, "Cluster");
        assert_eq!(s.versions.len(), 1);
        assert_eq!(s.versions[0].name, "v1alpha1");
        assert!(s.names.short_names.as_ref().is_some_and(|n| !n.is_empty()));
        let columns: Vec<&str> = s.versions[0]
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert!(
            columns.contains(&"Drift") && columns.contains(&"Age"),
            "{columns:?}"
        );
    }
    let policy = &crds()[0];
    assert_eq!(policy.spec.names.plural, "portpolicies");
    assert!(
        policy.spec.versions[0]
            .subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some(),
        "PortPolicy has a status subresource"
    );
}

/// The API server's structural-schema rules: every node typed (except preserve-unknown-fields
/// and int-or-string nodes), no type/description/default inside anyOf/oneOf/allOf/not, no
/// `$ref`, and `additionalProperties` never beside `properties`.
fn assert_structural(s: &Value, path: &str) {
    let o = s
        .as_object()
        .unwrap_or_else(|| panic!("{path}: not an object"));
    assert!(
        !o.contains_key("$ref") && !o.contains_key("definitions"),
        "{path}: $ref"
    );
    for junctor in ["anyOf", "oneOf", "allOf", "not"] {
        if let Some(j) = o.get(junctor) {
            let branches = j.as_array().cloned().unwrap_or_else(|| vec![j.clone()]);
            for b in branches {
                for forbidden in [
                    "type",
                    "description",
                    "default",
                    "additionalProperties",
                    "nullable",
                ] {
                    let int_or_string = o.get("x-kubernetes-int-or-string") == Some(&json!(true));
                    assert!(
                        int_or_string || b.get(forbidden).is_none(),
                        "{path}: {forbidden} inside {junctor}"
                    );
                }
            }
        }
    }
    let untyped_ok = o.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true))
        || o.get("x-kubernetes-int-or-string") == Some(&json!(true));
    assert!(o.contains_key("type") || untyped_ok, "{path}: no type");
    assert!(
        !(o.contains_key("properties") && o.contains_key("additionalProperties")),
        "{path}: properties and additionalProperties"
    );
    if let Some(props) = o.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            assert_structural(v, &format!("{path}.{k}"));
        }
    }
    if let Some(items) = o.get("items") {
        assert_structural(items, &format!("{path}[]"));
    }
    if let Some(ap) = o.get("additionalProperties").filter(|v| v.is_object()) {
        assert_structural(ap, &format!("{path}{{}}"));
    }
}

#[test]
fn schemas_are_structural() {
    for kind in ["PortPolicy", "PortReport"] {
        assert_structural(&schema_of(kind), kind);
    }
}

/// Checks a value against an OpenAPI v3 structural schema as the API server does (with strict
/// field validation: an unknown field is an error, not silently pruned).
fn check(schema: &Value, v: &Value, path: &str, root: bool, errors: &mut Vec<String>) {
    let flag = |k: &str| schema.get(k) == Some(&json!(true));
    if v.is_null() {
        if !flag("nullable") {
            errors.push(format!("{path}: null is not allowed"));
        }
        return;
    }
    if flag("x-kubernetes-int-or-string") {
        if !(v.is_i64() || v.is_u64() || v.is_string()) {
            errors.push(format!("{path}: must be an integer or a string"));
        }
        return;
    }
    if schema.get("type").is_none() && flag("x-kubernetes-preserve-unknown-fields") {
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(v)
    {
        errors.push(format!("{path}: {v} is not one of {allowed:?}"));
    }
    match schema["type"].as_str() {
        Some("object") => {
            let Some(obj) = v.as_object() else {
                errors.push(format!("{path}: must be an object"));
                return;
            };
            for r in schema["required"].as_array().into_iter().flatten() {
                if !obj.contains_key(r.as_str().unwrap()) {
                    errors.push(format!("{path}.{}: required", r.as_str().unwrap()));
                }
            }
            if let Some(props) = schema["properties"].as_object() {
                for (k, val) in obj {
                    let implicit = root && ["apiVersion", "kind", "metadata"].contains(&k.as_str());
                    match props.get(k) {
                        Some(s) => check(s, val, &format!("{path}.{k}"), false, errors),
                        None if implicit || flag("x-kubernetes-preserve-unknown-fields") => {}
                        None => errors.push(format!("{path}.{k}: unknown field")),
                    }
                }
            } else if let Some(ap) = schema.get("additionalProperties") {
                for (k, val) in obj {
                    check(ap, val, &format!("{path}.{k}"), false, errors);
                }
            }
        }
        Some("array") => {
            let Some(items) = v.as_array() else {
                errors.push(format!("{path}: must be a list"));
                return;
            };
            if let Some(max) = schema["maxItems"].as_u64()
                && items.len() as u64 > max
            {
                errors.push(format!("{path}: more than {max} items"));
            }
            if let Some(min) = schema["minItems"].as_u64()
                && (items.len() as u64) < min
            {
                errors.push(format!("{path}: fewer than {min} items"));
            }
            for (i, item) in items.iter().enumerate() {
                check(
                    &schema["items"],
                    item,
                    &format!("{path}[{i}]"),
                    false,
                    errors,
                );
            }
        }
        Some("string") => match v.as_str() {
            None => errors.push(format!("{path}: must be a string")),
            Some(s) => {
                if let Some(max) = schema["maxLength"].as_u64()
                    && s.chars().count() as u64 > max
                {
                    errors.push(format!("{path}: longer than {max}"));
                }
            }
        },
        Some("integer") => {
            let ok = v
                .as_i64()
                .map(|i| i as f64)
                .or(v.as_u64().map(|u| u as f64));
            match ok {
                None => errors.push(format!("{path}: must be an integer")),
                Some(n) => {
                    if let Some(min) = schema["minimum"].as_f64()
                        && n < min
                    {
                        errors.push(format!("{path}: below {min}"));
                    }
                    if schema["format"] == "uint32" && n > f64::from(u32::MAX) {
                        errors.push(format!("{path}: above {}", u32::MAX));
                    }
                }
            }
        }
        Some("boolean") if !v.is_boolean() => errors.push(format!("{path}: must be a boolean")),
        _ => {}
    }
}

fn openapi_errors(kind: &str, object: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    check(&schema_of(kind), object, "", true, &mut errors);
    errors
}

fn cel_errors(kind: &str, object: &Value) -> Vec<String> {
    match Validator::new().validate(&schema_of(kind), object, None) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

fn example_policies() -> Vec<(PathBuf, Value)> {
    let (files, diags) = portwarden_policy::load::policy_files(&[repo().join("examples")]);
    assert!(diags.is_empty(), "{diags:?}");
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
        for d in docs.into_iter().filter(|d| d["kind"] == "PortPolicy") {
            out.push((f.clone(), d));
        }
    }
    out
}

#[test]
fn examples_pass_the_generated_schema_and_its_cel_rules() {
    let examples = example_policies();
    assert!(
        examples.len() >= 3,
        "expected the example policies, got {}",
        examples.len()
    );
    for (file, doc) in &examples {
        assert_eq!(
            openapi_errors("PortPolicy", doc),
            Vec::<String>::new(),
            "{}",
            file.display()
        );
        assert_eq!(
            cel_errors("PortPolicy", doc),
            Vec::<String>::new(),
            "{}",
            file.display()
        );
        // And the kube type reads it, and the semantic validator accepts it.
        let obj: portwarden_kube::PortPolicy = serde_json::from_value(doc.clone()).unwrap();
        portwarden_kube::policy::validate(&obj).unwrap();
    }
}

#[test]
fn every_cel_rule_compiles() {
    for kind in ["PortPolicy", "PortReport"] {
        let compiled = kube_cel::compile_schema(&schema_of(kind));
        let errors: Vec<String> = compiled
            .compilation_errors()
            .iter()
            .map(|e| format!("{e:?}"))
            .collect();
        assert!(errors.is_empty(), "{kind}: {errors:?}");
    }
}

fn policy_with(entry: Value, selector: Value) -> Value {
    json!({
        "apiVersion": "portwarden.io/v1alpha1",
        "kind": "PortPolicy",
        "metadata": {"name": "t"},
        "spec": {"nodeSelector": selector, "ports": [entry]},
    })
}

#[test]
fn openapi_refuses_wrong_shapes() {
    let bad = [
        (
            json!({"ports": "80", "state": "blocked"}),
            "spec.ports[0].state",
        ),
        (
            json!({"ports": "80", "state": "open", "protocol": "SCTP"}),
            "spec.ports[0].protocol",
        ),
        (json!({"ports": "80"}), "spec.ports[0].state: required"),
        (
            json!({"ports": "80", "state": "open", "color": "red"}),
            "spec.ports[0].color: unknown field",
        ),
        (
            json!({"ports": "80", "state": "open", "from": "10.0.0.0/8"}),
            "spec.ports[0].from: must be a list",
        ),
    ];
    for (entry, want) in bad {
        let errors = openapi_errors("PortPolicy", &policy_with(entry.clone(), json!({})));
        assert!(
            errors.iter().any(|e| e.contains(want)),
            "{entry}: {errors:?}"
        );
    }
    let mut empty = policy_with(json!({"ports": "80", "state": "open"}), json!({}));
    empty["spec"]["ports"] = json!([]);
    assert!(
        openapi_errors("PortPolicy", &empty)
            .iter()
            .any(|e| e.contains("fewer than 1"))
    );
    // The ports union is admitted in every written form; the validator judges its content.
    for ports in [json!(80), json!("8000-8100"), json!(["80", 443])] {
        let p = policy_with(json!({"ports": ports, "state": "open"}), json!({}));
        assert!(openapi_errors("PortPolicy", &p).is_empty(), "{ports}");
    }
}

#[test]
fn cel_refuses_bad_sources_and_selectors() {
    for (source, ok) in [
        ("172.16.7.80", true),
        ("172.16.7.80/32", true),
        ("10.213.0.0/24", true),
        ("2001:db8::/32", true),
        ("fd00::1", true),
        ("10.0.0.5/24", false),
        ("2001:db8::1/32", false),
        ("not-an-address", false),
        ("10.0.0.0/33", false),
        // IPv4-mapped IPv6: IPv4 packets never match it; the API server's isIP/isCIDR refuse
        // it, and so must the validator (it used to accept it and compile it into ip6tables).
        ("::ffff:10.240.1.2", false),
        ("::ffff:10.0.0.0/104", false),
        ("::ffff:0:0/96", false),
    ] {
        let p = policy_with(
            json!({"ports": "80", "state": "closed", "from": [source]}),
            json!({}),
        );
        let errors = cel_errors("PortPolicy", &p);
        assert_eq!(errors.is_empty(), ok, "{source}: {errors:?}");
        if !ok {
            assert!(errors[0].contains("spec.ports[0].from[0]"), "{errors:?}");
            assert!(errors[0].contains("without host bits"), "{errors:?}");
            if source.starts_with("::ffff:") {
                assert!(errors[0].contains("IPv4-mapped ::ffff:"), "{errors:?}");
            }
        }
        // Same meaning as the semantic validator.
        let obj: portwarden_kube::PortPolicy = serde_json::from_value(p).unwrap();
        assert_eq!(
            portwarden_kube::policy::validate(&obj).is_ok(),
            ok,
            "{source}"
        );
    }
    for (expr, ok) in [
        (
            json!({"key": "role", "operator": "In", "values": ["web"]}),
            true,
        ),
        (json!({"key": "role", "operator": "Exists"}), true),
        (json!({"key": "role", "operator": "In"}), false),
        (
            json!({"key": "role", "operator": "NotIn", "values": []}),
            false,
        ),
        (
            json!({"key": "role", "operator": "DoesNotExist", "values": ["x"]}),
            false,
        ),
    ] {
        let p = policy_with(
            json!({"ports": "80", "state": "closed"}),
            json!({"matchExpressions": [expr]}),
        );
        let errors = cel_errors("PortPolicy", &p);
        assert_eq!(errors.is_empty(), ok, "{expr}: {errors:?}");
        let obj: portwarden_kube::PortPolicy = serde_json::from_value(p).unwrap();
        assert_eq!(
            portwarden_kube::policy::validate(&obj).is_ok(),
            ok,
            "{expr}"
        );
    }
}

#[test]
fn what_the_schema_cannot_see_the_validator_catches() {
    // Port syntax and range order live in the untyped `ports` union: admitted by the schema,
    // refused by the validator (reported in status and an Event by the controller).
    // Even values the wire type cannot hold decode (so one bad object cannot stall a watch),
    // and are refused by the validator with a message.
    for ports in [
        json!("9000-8000"),
        json!("70000"),
        json!(["80", "http"]),
        json!(true),
        json!({"from": 80}),
        json!([80, [443]]),
        json!(-1),
        json!(99999999999u64),
    ] {
        let p = policy_with(json!({"ports": ports, "state": "open"}), json!({}));
        assert!(openapi_errors("PortPolicy", &p).is_empty(), "{ports}");
        assert!(cel_errors("PortPolicy", &p).is_empty(), "{ports}");
        let obj: portwarden_kube::PortPolicy = serde_json::from_value(p).unwrap();
        let issues = portwarden_kube::policy::validate(&obj).unwrap_err();
        assert!(
            portwarden_kube::policy::issues_text(&issues).contains("spec.ports[0].ports"),
            "{ports}: {issues:?}"
        );
    }
}

#[test]
fn expires_is_a_date_time_and_the_validator_wants_an_offset() {
    let schema = schema_of("PortPolicy");
    let expires =
        &schema["properties"]["spec"]["properties"]["ports"]["items"]["properties"]["expires"];
    assert_eq!(expires["type"], "string", "{expires}");
    assert_eq!(expires["format"], "date-time", "{expires}");
    let entry = |expires: Value| json!({"ports": "8080", "state": "filtered", "expires": expires});
    // Admitted, and valid: RFC 3339 with an offset.
    for t in ["2026-12-24T18:00:00Z", "2026-12-24T19:00:00+01:00"] {
        let p = policy_with(entry(json!(t)), json!({}));
        assert!(openapi_errors("PortPolicy", &p).is_empty(), "{t}");
        let obj: portwarden_kube::PortPolicy = serde_json::from_value(p).unwrap();
        let policy = portwarden_kube::policy::validate(&obj).unwrap();
        assert!(policy.entries[0].expires.is_some(), "{t}");
    }
    // Not a string: refused by the schema.
    let p = policy_with(entry(json!(1798135200)), json!({}));
    assert!(
        openapi_errors("PortPolicy", &p)
            .iter()
            .any(|e| e.contains("spec.ports[0].expires: must be a string")),
        "{p}"
    );
    // Whatever the API server's date-time format admits, a time without an offset (a local
    // time: another instant on every node) is refused by the validator, at the field.
    let p = policy_with(entry(json!("2026-12-24T18:00:00")), json!({}));
    let obj: portwarden_kube::PortPolicy = serde_json::from_value(p).unwrap();
    let issues = portwarden_kube::policy::validate(&obj).unwrap_err();
    let text = portwarden_kube::policy::issues_text(&issues);
    assert!(
        text.contains("spec.ports[0].expires") && text.contains("has no UTC offset"),
        "{text}"
    );
}
