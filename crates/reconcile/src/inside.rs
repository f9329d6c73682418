//! The inside view: what a node's agent can see that a scanner cannot — whether portwarden's
//! rules are in place, foreign rules that shadow them, and which sockets listen on the ports
//! its policies manage. The agent serves it as JSON (`GET /v1/inside`) to any host; `verify`
//! fetches it to explain drift precisely.
//!
//! A key design decision is that the view carries only what `verify` uses, because anyone who
//! can reach the agent's port can read it: listeners on ports the node's entries cover (a
//! loopback-only one too: "the service listens on 127.0.0.1 only"), and — when a policy of the
//! node says `unlisted: report`, which puts every TCP port under review — TCP listeners
//! reachable from outside (verify names the socket behind an unlisted open port). A service
//! bound to loopback on a port no entry covers is never shown: that is exactly what a scanner
//! cannot learn, and what an attacker would like to.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use portwarden_netfilter::Plan;
use portwarden_policy::{NodeIntent, Protocol};
use serde::{Deserialize, Serialize};

use crate::listeners::Listener;

/// The path the agent serves the inside view at.
pub const INSIDE_PATH: &str = "/v1/inside";

/// A foreign rule above portwarden's jump and the entries whose packets it decides first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowView {
    /// `ipv4` or `ipv6`.
    pub family: String,
    /// The chain (`INPUT`).
    pub chain: String,
    /// 1-based position in the chain.
    pub position: usize,
    /// The rule as `iptables-save` prints it.
    pub rule: String,
    /// `(policy, entry)` pairs it shadows.
    pub entries: Vec<(String, usize)>,
}

impl ShadowView {
    /// `INPUT#1 (-j DROP)`: the chain, position and the rule's matches and target.
    pub fn describe(&self) -> String {
        let prefix = format!("-A {} ", self.chain);
        let body = self.rule.strip_prefix(&prefix).unwrap_or(&self.rule);
        format!("{}#{} ({body})", self.chain, self.position)
    }
}

/// What the agent on a node reports about it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InsideView {
    /// The node's name.
    pub node: String,
    /// Whether the node's netfilter matches its intent (no change pending).
    pub converged: bool,
    /// Number of rule changes a reconcile would make now.
    pub pending_changes: usize,
    /// Foreign rules that shadow entries.
    pub shadowing: Vec<ShadowView>,
    /// Listening sockets of the ports the node's policies manage (see [`exposed_listeners`]).
    pub listeners: Vec<Listener>,
    /// The last policy load error, when the current documents are invalid (the last good
    /// state stays applied).
    pub policy_error: Option<String>,
    /// The last apply error, if the last attempt failed.
    pub apply_error: Option<String>,
}

/// The listeners the inside view may show for a node with `intent` (none without one): those
/// on a port some entry covers, for its protocol, whatever their address; and, when the intent
/// reports unlisted ports, TCP listeners reachable from outside.
pub fn exposed_listeners(intent: Option<&NodeIntent>, listeners: Vec<Listener>) -> Vec<Listener> {
    let Some(intent) = intent else {
        return Vec::new();
    };
    listeners
        .into_iter()
        .filter(|l| {
            let managed = intent
                .rules
                .iter()
                .any(|r| r.protocol == l.protocol && r.ports.contains(l.port));
            let under_review =
                intent.report_unlisted && l.protocol == Protocol::Tcp && l.reachable_from_outside();
            managed || under_review
        })
        .collect()
}

impl InsideView {
    /// Builds the view from a fresh plan for `intent` and the node's listening sockets, of
    /// which it keeps the [`exposed_listeners`].
    pub fn new(
        node: &str,
        plan: &Plan,
        intent: &NodeIntent,
        listeners: Vec<Listener>,
    ) -> InsideView {
        InsideView {
            node: node.to_string(),
            converged: plan.is_converged(),
            pending_changes: plan.changes,
            shadowing: plan
                .shadowing
                .iter()
                .map(|s| ShadowView {
                    family: s.family.to_string(),
                    chain: s.chain.clone(),
                    position: s.position,
                    rule: s.rule.clone(),
                    entries: s
                        .entries
                        .iter()
                        .map(|e| (e.policy.to_string(), e.entry))
                        .collect(),
                })
                .collect(),
            listeners: exposed_listeners(Some(intent), listeners),
            policy_error: None,
            apply_error: None,
        }
    }

    /// Whether some socket reachable from outside listens on this port.
    pub fn listening(&self, protocol: Protocol, port: u16) -> Option<&Listener> {
        self.listeners
            .iter()
            .filter(|l| l.protocol == protocol && l.port == port)
            .max_by_key(|l| l.reachable_from_outside())
    }

    /// The foreign rule that shadows an entry, if any.
    pub fn shadowing_entry(&self, policy: &str, entry: usize) -> Option<&ShadowView> {
        self.shadowing
            .iter()
            .find(|s| s.entries.iter().any(|(p, e)| p == policy && *e == entry))
    }
}

/// A plain HTTP/1.0 GET of `path` on an agent; returns the body of a 200 response.
///
/// # Errors
///
/// A message naming the address and what failed (connect, timeout, HTTP status).
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<String, String> {
    let fail = |what: &str, e: &dyn std::fmt::Display| format!("agent at {addr}: {what}: {e}");
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| fail("cannot connect", &e))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|_| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| fail("socket", &e))?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| fail("cannot send request", &e))?;
    let mut response = Vec::new();
    stream
        .take(16 * 1024 * 1024)
        .read_to_end(&mut response)
        .map_err(|e| fail("cannot read response", &e))?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| fail("malformed HTTP response", &"no header end"))?;
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 200 ") {
        return Err(fail(
            "unexpected status",
            &format!("{status}: {}", body.trim()),
        ));
    }
    Ok(body.to_string())
}

/// Fetches a node's inside view from its agent.
///
/// # Errors
///
/// As [`http_get`], or when the body is not an inside view.
pub fn fetch(addr: SocketAddr, timeout: Duration) -> Result<InsideView, String> {
    let body = http_get(addr, INSIDE_PATH, timeout)?;
    serde_json::from_str(&body).map_err(|e| format!("agent at {addr}: invalid inside view: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_foreign_rule_like_the_cli_contract() {
        let s = ShadowView {
            family: "ipv4".into(),
            chain: "INPUT".into(),
            position: 1,
            rule: "-A INPUT -j DROP".into(),
            entries: vec![("web".into(), 0)],
        };
        assert_eq!(s.describe(), "INPUT#1 (-j DROP)");
    }

    fn listener(address: &str, port: u16) -> Listener {
        Listener {
            protocol: Protocol::Tcp,
            address: address.parse().unwrap(),
            port,
        }
    }

    /// An intent with one entry per `(protocol, first port, last port)`.
    fn intent(entries: &[(Protocol, u16, u16)], report_unlisted: bool) -> NodeIntent {
        NodeIntent {
            policies: vec!["web".into()],
            rules: entries
                .iter()
                .enumerate()
                .map(|(entry, &(protocol, start, end))| portwarden_policy::Rule {
                    priority: 100,
                    policy: "web".into(),
                    entry,
                    protocol,
                    ports: portwarden_policy::PortRange { start, end },
                    source: None,
                    state: portwarden_policy::State::Closed,
                })
                .collect(),
            report_unlisted,
        }
    }

    #[test]
    fn the_view_shows_listeners_of_managed_ports_only() {
        let listeners = vec![
            listener("0.0.0.0", 80),     // managed, reachable
            listener("127.0.0.1", 8080), // managed, loopback only
            listener("127.0.0.1", 6000), // unmanaged, loopback only: secret
            listener("0.0.0.0", 7000),   // unmanaged, reachable
            listener("::", 8081),        // inside a managed range
        ];
        let ignore = intent(
            &[(Protocol::Tcp, 80, 80), (Protocol::Tcp, 8080, 8081)],
            false,
        );
        let plan = Plan::compute(&ignore, &portwarden_netfilter::Failsafe::none(), &[]);
        let view = InsideView::new("n", &plan, &ignore, listeners.clone());
        let ports: Vec<u16> = view.listeners.iter().map(|l| l.port).collect();
        assert_eq!(ports, [80, 8080, 8081], "{view:?}");
        // The causes still have what they need: the loopback-only service of a managed port.
        assert!(
            !view
                .listening(Protocol::Tcp, 8080)
                .unwrap()
                .reachable_from_outside()
        );
        // A UDP entry on 6000 does not reveal the TCP socket on it.
        let udp = intent(&[(Protocol::Udp, 6000, 6000)], false);
        assert!(
            InsideView::new("n", &plan, &udp, listeners.clone())
                .listeners
                .is_empty()
        );
        // `unlisted: report` puts every TCP port under review: reachable listeners are shown
        // (verify names the socket behind an unlisted open port), loopback-only ones are not.
        let report = intent(&[(Protocol::Tcp, 80, 80)], true);
        let view = InsideView::new("n", &plan, &report, listeners.clone());
        let ports: Vec<u16> = view.listeners.iter().map(|l| l.port).collect();
        assert_eq!(ports, [80, 7000, 8081], "{view:?}");
        // Without an intent, nothing is managed: nothing is shown.
        assert!(exposed_listeners(None, listeners).is_empty());
    }

    #[test]
    fn listening_prefers_outside_reachable_sockets() {
        let v = InsideView {
            listeners: vec![
                Listener {
                    protocol: Protocol::Tcp,
                    address: "127.0.0.1".parse().unwrap(),
                    port: 80,
                },
                Listener {
                    protocol: Protocol::Tcp,
                    address: "0.0.0.0".parse().unwrap(),
                    port: 80,
                },
            ],
            ..InsideView::default()
        };
        assert!(
            v.listening(Protocol::Tcp, 80)
                .unwrap()
                .reachable_from_outside()
        );
        assert!(v.listening(Protocol::Udp, 80).is_none());
    }
}
