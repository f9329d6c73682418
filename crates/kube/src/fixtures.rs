//! Test helpers: example objects, and a scripted API server behind kube's real `Client`
//! (the `tower-test` pattern of kube-rs/controller-rs): each `expect_*` takes the client's next
//! request, asserts its exact method, path, query, content type and body, and answers as the
//! API server would.
#![allow(clippy::unwrap_used, missing_docs)]

use std::future::Future;

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeCondition, NodeStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::client::Body;
use kube::core::PartialObjectMeta;
use portwarden_policy::document::{LabelSelector, PortEntry, PortPolicySpec, Ports};
use portwarden_policy::{Protocol, State, Unlisted};
use serde_json::Value;
use tower_test::mock::{self, Handle};

use crate::crd::{
    AppliedPolicy, Counts, Finding, PolicyCounts, PolicySpec, PortPolicy, PortReport,
    PortReportSpec,
};

/// The seed story's quarantine policy, selecting `role=<role>`, at `generation`.
pub fn policy(name: &str, generation: i64, role: &str) -> PortPolicy {
    let entry = |ports: &str, from: Vec<String>| PortEntry {
        ports: Ports::Text(ports.into()),
        protocol: Protocol::Tcp,
        state: State::Closed,
        from,
        reason: Some("INC-1234".into()),
        expires: None,
    };
    let mut p = PortPolicy::new(
        name,
        PolicySpec(PortPolicySpec {
            node_selector: LabelSelector {
                match_labels: [("role".to_string(), role.to_string())].into(),
                match_expressions: vec![],
            },
            priority: 100,
            unlisted: Unlisted::Ignore,
            ports: vec![
                entry("8080", vec![]),
                entry("80", vec!["172.16.7.80/32".into()]),
            ],
        }),
    );
    p.metadata.generation = Some(generation);
    p.metadata.uid = Some(format!("uid-{name}"));
    p.metadata.resource_version = Some("1".into());
    p
}

/// A node with one InternalIP and a `role` label.
pub fn node(name: &str, role: &str, address: &str, ready: bool) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            labels: Some([("role".to_string(), role.to_string())].into()),
            ..ObjectMeta::default()
        },
        spec: None,
        status: Some(NodeStatus {
            addresses: Some(vec![
                NodeAddress {
                    type_: "Hostname".into(),
                    address: name.into(),
                },
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: address.into(),
                },
            ]),
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..NodeCondition::default()
            }]),
            ..NodeStatus::default()
        }),
    }
}

/// A node's metadata, as the controller's metadata watch sees it.
pub fn node_meta(name: &str, role: &str) -> PartialObjectMeta<Node> {
    let n = node(name, role, "10.0.0.1", true);
    PartialObjectMeta {
        types: None,
        metadata: n.metadata,
        _phantom: Default::default(),
    }
}

/// A report by `node`: applied `(policy, generation)`s, and per-policy counts
/// `(policy, in_sync, drift, drifting node)` with one finding per drifting policy.
pub fn report(
    node: &str,
    applied: &[(&str, i64)],
    counts: &[(&str, u64, u64, &str)],
) -> PortReport {
    let mut spec = PortReportSpec {
        node: node.into(),
        applied: applied
            .iter()
            .map(|(n, g)| AppliedPolicy {
                name: n.to_string(),
                generation: *g,
            })
            .collect(),
        rules: 2,
        ..PortReportSpec::default()
    };
    for (policy, in_sync, drift, on) in counts {
        let c = Counts {
            in_sync: *in_sync,
            drift: *drift,
            indeterminate: 0,
        };
        spec.summary.add(&c);
        spec.policies.push(PolicyCounts {
            policy: policy.to_string(),
            counts: c,
            drift_nodes: if *drift > 0 {
                vec![on.to_string()]
            } else {
                vec![]
            },
        });
        if *drift > 0 {
            spec.findings.push(Finding {
                node: on.to_string(),
                address: "10.0.0.12".into(),
                port: 8080,
                protocol: "tcp".into(),
                from: "10.0.0.2".into(),
                expected: "closed".into(),
                observed: "filtered".into(),
                verdict: "drift".into(),
                cause: None,
                policy: Some(policy.to_string()),
                entry: Some(0),
                confirmed_at: None,
            });
        }
    }
    let mut r = PortReport::new(node, spec);
    r.metadata.resource_version = Some("1".into());
    r
}

type Responder = mock::SendResponse<Response<Body>>;

/// The scripted API server.
pub struct ApiServer(Handle<Request<Body>, Response<Body>>);

impl ApiServer {
    /// A client whose every request lands in the returned server.
    pub fn new() -> (Client, ApiServer) {
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        (Client::new(service, "default"), ApiServer(handle))
    }

    /// Runs a script against the client's requests in a task; the script returns the server so
    /// the test can check that nothing else was asked ([`ApiServer::done`]).
    pub fn run<F, Fut>(self, script: F) -> tokio::task::JoinHandle<ApiServer>
    where
        F: FnOnce(ApiServer) -> Fut,
        Fut: Future<Output = ApiServer> + Send + 'static,
    {
        tokio::spawn(script(self))
    }

    async fn next(&mut self) -> (Request<Body>, Responder) {
        self.0
            .next_request()
            .await
            .expect("the client made no further request")
    }

    async fn body(request: Request<Body>) -> Value {
        let bytes = request.into_body().collect_bytes().await.unwrap();
        serde_json::from_slice(&bytes).expect("a JSON body")
    }

    fn reply(send: Responder, code: StatusCode, body: &Value) {
        send.send_response(
            Response::builder()
                .status(code)
                .body(Body::from(serde_json::to_vec(body).unwrap()))
                .unwrap(),
        );
    }

    /// Expects an Event (events.k8s.io/v1) about the PortPolicy `regarding`; returns its body.
    pub async fn expect_event_post(&mut self, reason: &str, type_: &str, regarding: &str) -> Value {
        let (request, send) = self.next().await;
        assert_eq!(request.method(), Method::POST);
        assert_eq!(
            request.uri().to_string(),
            "/apis/events.k8s.io/v1/namespaces/default/events?"
        );
        let body = Self::body(request).await;
        assert_eq!(body["reason"], reason, "{body}");
        assert_eq!(body["type"], type_, "{body}");
        assert_eq!(body["regarding"]["kind"], "PortPolicy", "{body}");
        assert_eq!(body["regarding"]["name"], regarding, "{body}");
        assert_eq!(
            body["reportingController"], "portwarden-controller",
            "{body}"
        );
        assert_eq!(body["reportingInstance"], "controller-0", "{body}");
        Self::reply(send, StatusCode::CREATED, &body);
        body
    }

    fn assert_apply(request: &Request<Body>, path: &str, manager: &str) {
        assert_eq!(request.method(), Method::PATCH);
        assert_eq!(
            request.uri().to_string(),
            format!("{path}?&force=true&fieldManager={manager}")
        );
        assert_eq!(
            request.headers()["content-type"],
            "application/apply-patch+yaml"
        );
    }

    /// Expects a server-side apply of a PortPolicy's status by the controller; returns the
    /// status it applied.
    pub async fn expect_status_apply(&mut self, name: &str) -> Value {
        let (request, send) = self.next().await;
        Self::assert_apply(
            &request,
            &format!("/apis/portwarden.io/v1alpha1/portpolicies/{name}/status"),
            "portwarden-controller",
        );
        let body = Self::body(request).await;
        assert_eq!(body["apiVersion"], "portwarden.io/v1alpha1");
        assert_eq!(body["kind"], "PortPolicy");
        assert!(
            body.get("spec").is_none(),
            "a status apply carries no spec: {body}"
        );
        let mut object = serde_json::to_value(crate::fixtures::policy(name, 1, "web")).unwrap();
        object["status"] = body["status"].clone();
        Self::reply(send, StatusCode::OK, &object);
        body["status"].clone()
    }

    /// Answers the next status apply with an API error.
    pub async fn refuse_status_apply(&mut self, name: &str, code: u16) {
        let (request, send) = self.next().await;
        Self::assert_apply(
            &request,
            &format!("/apis/portwarden.io/v1alpha1/portpolicies/{name}/status"),
            "portwarden-controller",
        );
        let status = serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": "etcdserver: request timed out", "reason": "InternalError", "code": code
        });
        Self::reply(send, StatusCode::from_u16(code).unwrap(), &status);
    }

    /// Expects a server-side apply of a node's PortReport by the agent; returns the object.
    pub async fn expect_report_apply(&mut self, node: &str) -> Value {
        let (request, send) = self.next().await;
        Self::assert_apply(
            &request,
            &format!("/apis/portwarden.io/v1alpha1/portreports/{node}"),
            "portwarden-agent",
        );
        let body = Self::body(request).await;
        Self::reply(send, StatusCode::OK, &body);
        body
    }

    /// Answers the next PortReport apply with an API error.
    pub async fn refuse_report_apply(&mut self, node: &str, code: u16) {
        let (request, send) = self.next().await;
        Self::assert_apply(
            &request,
            &format!("/apis/portwarden.io/v1alpha1/portreports/{node}"),
            "portwarden-agent",
        );
        let status = serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": "the server is currently unable to handle the request",
            "reason": "ServiceUnavailable", "code": code
        });
        Self::reply(send, StatusCode::from_u16(code).unwrap(), &status);
    }

    /// Expects a GET of exactly `uri`; answers with `body` (a JSON value, or for a watch the
    /// newline-separated events, then the end of the stream).
    pub async fn expect_get(&mut self, uri: &str, body: Vec<u8>) {
        let (request, send) = self.next().await;
        assert_eq!(request.method(), Method::GET);
        assert_eq!(request.uri().to_string(), uri);
        send.send_response(Response::builder().body(Body::from(body)).unwrap());
    }

    /// Plays a whole API server for a controller or agent run: answers every list from the
    /// given objects (PortPolicies, PortReports, Nodes — as metadata when asked so), holds every
    /// watch open, accepts Events, and returns at the first server-side apply (a policy's
    /// status or a report) with its body and every request seen (`METHOD URI`), in order.
    pub async fn serve_until_apply(
        mut self,
        policies: Vec<crate::crd::PortPolicy>,
        reports: Vec<PortReport>,
        nodes: Vec<Node>,
    ) -> (Value, Vec<String>) {
        let list = |kind: &str, items: Value| {
            serde_json::to_vec(&serde_json::json!({
                "apiVersion": "v1", "kind": kind, "metadata": {"resourceVersion": "1"}, "items": items,
            }))
            .unwrap()
        };
        let meta_items: Vec<Value> = nodes
            .iter()
            .map(|n| serde_json::json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": n.metadata}))
            .collect();
        let node_items = serde_json::to_value(&nodes).unwrap();
        let mut seen = Vec::new();
        let mut open_watches = Vec::new();
        loop {
            let (request, send) = self.next().await;
            let line = format!("{} {}", request.method(), request.uri());
            seen.push(line.clone());
            let path = request.uri().path().to_string();
            let query = request.uri().query().unwrap_or_default().to_string();
            if query.contains("watch=true") {
                open_watches.push(send);
                continue;
            }
            let answer = |body: Vec<u8>| Response::builder().body(Body::from(body)).unwrap();
            match (request.method().clone(), path.as_str()) {
                (Method::GET, "/apis/portwarden.io/v1alpha1/portpolicies") => {
                    send.send_response(answer(list(
                        "PortPolicyList",
                        serde_json::to_value(&policies).unwrap(),
                    )))
                }
                (Method::GET, "/apis/portwarden.io/v1alpha1/portreports") => {
                    send.send_response(answer(list(
                        "PortReportList",
                        serde_json::to_value(&reports).unwrap(),
                    )))
                }
                (Method::GET, "/api/v1/nodes") => {
                    let metadata = request
                        .headers()
                        .get("accept")
                        .is_some_and(|a| a.to_str().unwrap().contains("PartialObjectMetadata"));
                    send.send_response(answer(if metadata {
                        list(
                            "PartialObjectMetadataList",
                            Value::Array(meta_items.clone()),
                        )
                    } else {
                        list("NodeList", node_items.clone())
                    }))
                }
                (Method::POST, "/apis/events.k8s.io/v1/namespaces/default/events") => {
                    let body = Self::body(request).await;
                    Self::reply(send, StatusCode::CREATED, &body);
                }
                (Method::PATCH, p) => {
                    let manager = if p.ends_with("/status") {
                        "portwarden-controller"
                    } else {
                        "portwarden-agent"
                    };
                    Self::assert_apply(&request, p, manager);
                    let body = Self::body(request).await;
                    Self::reply(send, StatusCode::OK, &body);
                    return (body, seen);
                }
                _ => panic!("unexpected request {line}"),
            }
        }
    }

    /// Asserts that the client asked nothing more.
    pub async fn done(mut self) {
        use futures::FutureExt;
        if let Some(Some((request, _))) = self.0.next_request().now_or_never() {
            panic!("unexpected request: {} {}", request.method(), request.uri());
        }
    }
}
