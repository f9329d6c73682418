//! Causes: why a port drifted, as precisely as the evidence allows.
//!
//! Outside evidence (the scan) gives the symptom; the agent's [`InsideView`] turns it into a
//! cause: a foreign rule that matches first (named by chain and position), a base chain of
//! another nftables table that decides the port, portwarden's rules missing or stale, the DNAT
//! that forwards the port, nothing listening, or — when the node's own rules would let the
//! probe in — filtering upstream of the node. Without an inside view the symptom is reported with the
//! reason the inside is unknown.

use portwarden_policy::{Protocol, State};
use portwarden_scan::PortState;

use crate::inside::InsideView;

/// What is known about the inside of a node when judging its ports.
#[derive(Clone, Debug)]
pub enum Inside<'a> {
    /// The agent answered.
    Known(&'a InsideView),
    /// The agent could not be asked; the string says why.
    Unknown(&'a str),
}

/// One drifted or indeterminate port to explain.
#[derive(Clone, Copy, Debug)]
pub struct Symptom<'a> {
    /// Protocol.
    pub protocol: Protocol,
    /// Port.
    pub port: u16,
    /// Intended state.
    pub expected: State,
    /// What the scan saw.
    pub observed: PortState,
    /// The entry that decides the port.
    pub policy: &'a str,
    /// Its index.
    pub entry: usize,
    /// The outside-only reading from `verdict::judge`.
    pub outside: &'a str,
}

/// The cause of a drift, best evidence first.
pub fn cause(s: &Symptom<'_>, inside: &Inside<'_>) -> String {
    let view = match inside {
        Inside::Known(v) => v,
        Inside::Unknown(why) => return format!("{} (inside view unavailable: {why})", s.outside),
    };
    if let Some(shadow) = view.shadowing_entry(s.policy, s.entry) {
        return format!("foreign rule {} matches first", shadow.describe());
    }
    if let Some(f) = view.foreign_table(s.protocol, s.port, s.policy, s.entry) {
        return f.message.clone();
    }
    if !view.converged {
        return format!(
            "portwarden's rules are missing or stale on the node ({} change{} pending)",
            view.pending_changes,
            if view.pending_changes == 1 { "" } else { "s" }
        );
    }
    let answered = matches!(s.observed, PortState::Open | PortState::Closed);
    if let Some(f) = view.forwarding(s.protocol, s.port) {
        // No socket of the node's serves a forwarded port: listeners say nothing about it.
        return match (s.expected, s.observed) {
            (State::Open, PortState::Closed) => format!(
                "{}; the container or pod behind it does not answer on its port",
                f.description
            ),
            (State::Closed | State::Filtered, PortState::Open) => format!(
                "{}, yet the container behind it answers: something forwards the probe \
                 outside netfilter's FORWARD chain (an eBPF dataplane?) — {}",
                f.description, s.outside
            ),
            _ => format!("{} — {}", f.description, s.outside),
        };
    }
    match (s.expected, s.observed) {
        (State::Open, PortState::Closed) | (State::Open, PortState::OpenFiltered) => {
            match view.listening(s.protocol, s.port) {
                None => format!("nothing is listening on {}/{}", s.port, s.protocol),
                Some(l) if !l.reachable_from_outside() => {
                    format!("the service listens on {} only", l.address)
                }
                Some(_) => s.outside.to_string(),
            }
        }
        (State::Open | State::Closed, _) if !answered => format!(
            "filtered upstream of the node: its own rules would let the probe in ({})",
            s.outside
        ),
        (State::Closed | State::Filtered, PortState::Open) => format!(
            "portwarden's rules are in place, yet a service answers: something accepts the probe before them (check the raw and mangle tables) — {}",
            s.outside
        ),
        _ => s.outside.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inside::ShadowView;
    use crate::listeners::Listener;

    fn symptom(expected: State, observed: PortState) -> Symptom<'static> {
        Symptom {
            protocol: Protocol::Tcp,
            port: 80,
            expected,
            observed,
            policy: "web",
            entry: 0,
            outside: "outside reading",
        }
    }

    fn view() -> InsideView {
        InsideView {
            node: "web-1".into(),
            converged: true,
            ..InsideView::default()
        }
    }

    #[test]
    fn a_forwarded_port_is_named_instead_of_its_missing_listener() {
        let mut v = view();
        v.forwarded.push(crate::inside::ForwardView {
            family: "ipv4".into(),
            protocol: Protocol::Tcp,
            start: 80,
            end: 80,
            description: "80/tcp is DNAT'ed by nat DOCKER#1 to 172.17.0.2:8080 \
                          (Docker-published); the policy is enforced on the forward path"
                .into(),
        });
        let c = cause(&symptom(State::Open, PortState::Closed), &Inside::Known(&v));
        assert!(c.starts_with("80/tcp is DNAT'ed by nat DOCKER#1"), "{c}");
        assert!(!c.contains("nothing is listening"), "{c}");
        let c = cause(
            &symptom(State::Filtered, PortState::Open),
            &Inside::Known(&v),
        );
        assert!(c.contains("outside netfilter's FORWARD chain"), "{c}");
        // another port of the node is judged as before
        let mut other = symptom(State::Open, PortState::Closed);
        other.port = 81;
        assert_eq!(
            cause(&other, &Inside::Known(&v)),
            "nothing is listening on 81/tcp"
        );
    }

    #[test]
    fn another_nftables_table_that_decides_the_port_is_the_cause() {
        let mut v = view();
        let message = "table inet firewalld, chain filter_INPUT (input hook, priority filter \
                       + 10) rule 3 drops tcp dport 80: a drop in another table is final: it \
                       wins over portwarden's accept";
        v.foreign_tables.push(crate::inside::ForeignTableView {
            family: "ipv4".into(),
            protocol: Protocol::Tcp,
            start: 80,
            end: 80,
            policy: "web".into(),
            entry: 0,
            message: message.into(),
        });
        let c = cause(
            &symptom(State::Open, PortState::Filtered),
            &Inside::Known(&v),
        );
        assert_eq!(c, message);
        assert!(!c.contains("upstream"));
        let mut other = symptom(State::Open, PortState::Filtered);
        other.entry = 1;
        assert!(cause(&other, &Inside::Known(&v)).contains("filtered upstream"));
    }

    #[test]
    fn foreign_rule_first() {
        let mut v = view();
        v.shadowing.push(ShadowView {
            family: "ipv4".into(),
            chain: "INPUT".into(),
            position: 1,
            rule: "-A INPUT -j DROP".into(),
            entries: vec![("web".into(), 0)],
        });
        let c = cause(
            &symptom(State::Open, PortState::Filtered),
            &Inside::Known(&v),
        );
        assert_eq!(c, "foreign rule INPUT#1 (-j DROP) matches first");
    }

    #[test]
    fn stale_rules_then_listeners_then_upstream() {
        let mut v = view();
        v.converged = false;
        v.pending_changes = 1;
        let c = cause(&symptom(State::Closed, PortState::Open), &Inside::Known(&v));
        assert!(
            c.contains("missing or stale") && c.contains("1 change pending"),
            "{c}"
        );

        let v = view();
        let c = cause(&symptom(State::Open, PortState::Closed), &Inside::Known(&v));
        assert_eq!(c, "nothing is listening on 80/tcp");

        let mut v = view();
        v.listeners.push(Listener {
            protocol: Protocol::Tcp,
            address: "127.0.0.1".parse().unwrap(),
            port: 80,
        });
        let c = cause(&symptom(State::Open, PortState::Closed), &Inside::Known(&v));
        assert_eq!(c, "the service listens on 127.0.0.1 only");

        let v = view();
        let c = cause(
            &symptom(State::Open, PortState::Filtered),
            &Inside::Known(&v),
        );
        assert!(c.starts_with("filtered upstream of the node"), "{c}");
    }

    #[test]
    fn unknown_inside_says_why() {
        let c = cause(
            &symptom(State::Open, PortState::Filtered),
            &Inside::Unknown("connection refused"),
        );
        assert_eq!(
            c,
            "outside reading (inside view unavailable: connection refused)"
        );
    }
}
