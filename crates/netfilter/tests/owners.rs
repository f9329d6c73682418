//! Lab tests of the packet path's other owners: a native nftables table (firewalld-style) that
//! decides some of the managed ports, and foreign rules in the iptables backend not in use.
//!
//! 1. `a_foreign_table_is_reported_for_managed_ports_and_left_byte_identical` — an
//!    `inet firewalld` table with `filter_INPUT` at `filter + 10` that drops 8443, accepts 443
//!    and rejects the rest: the plan reports the drop and the reject for the managed ports,
//!    nothing for the port firewalld accepts or for unmanaged ports, and the table is
//!    byte-identical after apply and reset (both backends).
//! 2. `rules_in_both_backends_are_named` — rules in legacy while nft is in use (and the other
//!    way round) are named in the plan; portwarden's own rules and empty default chains are not.

mod support;

use portwarden_lab::{Netns, skip_unless_lab};
use portwarden_netfilter::foreign_nft::Effect;
use portwarden_netfilter::{
    Backend, BackendChoice, Failsafe, Family, Netfilter, Options, Plan, Verdict,
};
use portwarden_policy::{NodeIntent, PortRange, Protocol, Rule, State};
use support::*;

/// A `Netfilter` for `backend` that also reads the other owners (as `portwarden plan` does).
fn with_owners(backend: Backend) -> Netfilter {
    assert_not_root_netns();
    Netfilter::detect(&Options {
        backend: BackendChoice::Fixed(backend),
        owners: true,
        ..Options::default()
    })
    .expect("detect netfilter")
}

fn rule(entry: usize, start: u16, end: u16, state: State) -> Rule {
    Rule {
        priority: 1,
        policy: "owners".into(),
        entry,
        protocol: Protocol::Tcp,
        ports: PortRange { start, end },
        source: None,
        state,
        expires: None,
    }
}

/// Open 8443 (firewalld drops it), 443 (firewalld accepts it) and 7000-7010 (firewalld
/// rejects them); closed 7100 (firewalld's reject comes after portwarden's: no effect).
fn owners_intent() -> NodeIntent {
    NodeIntent {
        policies: vec!["owners".into()],
        rules: vec![
            rule(0, 8443, 8443, State::Open),
            rule(1, 443, 443, State::Open),
            rule(2, 7000, 7010, State::Open),
            rule(3, 7100, 7100, State::Closed),
        ],
        report_unlisted: false,
    }
}

fn firewalld_table(node: &Netns) -> String {
    node.exec(&["nft", "list", "table", "inet", "firewalld"])
        .expect("list the firewalld-style table")
}

fn plan(node: &Netns, backend: Backend, intent: &NodeIntent) -> Plan {
    let i = intent.clone();
    inside(node, move || {
        with_owners(backend)
            .plan(&i, &Failsafe::default())
            .expect("plan")
    })
}

#[test]
fn a_foreign_table_is_reported_for_managed_ports_and_left_byte_identical() {
    skip_unless_lab!();
    let fixture = root().join("crates/netfilter/tests/fixtures/nft/firewalld-lab.nft");
    for backend in BACKENDS {
        let lab = lab("nfowners");
        let node = lab.node(0).clone();
        node.exec(&["nft", "-f", fixture.to_str().expect("utf-8 path")])
            .expect("load the firewalld-style table");
        let before = firewalld_table(&node);
        let intent = owners_intent();
        let p = plan(&node, backend, &intent);
        assert_eq!(p.foreign_tables_unread, None, "{backend}");
        let found: Vec<String> = p
            .foreign_tables
            .iter()
            .map(|f| {
                format!(
                    "{} {} {:?} {:?}",
                    f.family, f.ports, f.decision.verdict, f.effect
                )
            })
            .collect();
        let reject = Verdict::Reject {
            with: "icmpx admin-prohibited".into(),
        };
        let mut want = Vec::new();
        for family in ["IPv4", "IPv6"] {
            want.push(format!("{family} 8443 Drop Wins"));
            want.push(format!("{family} 7000-7010 {reject:?} Wins"));
        }
        let mut sorted = found.clone();
        sorted.sort();
        want.sort();
        assert_eq!(sorted, want, "{backend}: {found:#?}");
        let drop = p
            .foreign_tables
            .iter()
            .find(|f| f.ports.start == 8443)
            .expect("the drop of 8443");
        assert_eq!(drop.decision.table, "inet firewalld");
        assert_eq!(drop.decision.priority_name, "filter + 10");
        assert!(
            drop.message
                .contains("drops tcp dport 8443: a drop in another table is final"),
            "{}",
            drop.message
        );
        assert!(p.foreign_tables.iter().all(|f| f.effect == Effect::Wins));
        // the JSON of `plan -o json` carries them
        let v = serde_json::to_value(&p).expect("plan as JSON");
        assert_eq!(v["foreign_tables"].as_array().map(Vec::len), Some(4));
        assert!(v["foreign_tables_unread"].is_null());

        let i = intent.clone();
        let applied = inside(&node, move || {
            let nf = with_owners(backend);
            nf.converge(&i, &Failsafe::default()).expect("apply").1
        });
        assert!(applied.transactions > 0, "{applied:?}");
        assert_eq!(
            firewalld_table(&node),
            before,
            "{backend}: apply changed firewalld's table"
        );
        // the finding stays while firewalld's table says so
        let again = plan(&node, backend, &intent);
        assert!(again.is_converged());
        assert_eq!(again.foreign_tables, p.foreign_tables);
        inside(&node, move || with_owners(backend).reset().expect("reset"));
        assert_eq!(
            firewalld_table(&node),
            before,
            "{backend}: reset changed firewalld's table"
        );
        // without the table, nothing is reported
        node.exec(&["nft", "delete", "table", "inet", "firewalld"])
            .expect("delete the table");
        let p = plan(&node, backend, &intent);
        assert!(p.foreign_tables.is_empty(), "{:#?}", p.foreign_tables);
    }
}

#[test]
fn rules_in_both_backends_are_named() {
    skip_unless_lab!();
    for backend in BACKENDS {
        let lab = lab("nfmixed");
        let node = lab.node(0).clone();
        let intent = owners_intent();
        // portwarden's rules in the backend in use, a clean other backend: nothing to say
        let i = intent.clone();
        inside(&node, move || {
            with_owners(backend)
                .converge(&i, &Failsafe::default())
                .expect("apply")
        });
        let p = plan(&node, backend, &intent);
        assert_eq!(p.mixed_backends, None, "{backend}");
        // foreign rules in the other backend
        let other = backend.other();
        ipt(
            &node,
            other,
            Family::Ipv4,
            &["-A", "INPUT", "-p", "tcp", "--dport", "3", "-j", "DROP"],
        );
        ipt(&node, other, Family::Ipv4, &["-t", "nat", "-N", "DOCKER"]);
        ipt(
            &node,
            other,
            Family::Ipv4,
            &["-t", "nat", "-A", "DOCKER", "-i", "docker0", "-j", "RETURN"],
        );
        ipt(
            &node,
            other,
            Family::Ipv4,
            &["-t", "nat", "-A", "DOCKER", "-j", "RETURN"],
        );
        ipt(&node, other, Family::Ipv6, &["-P", "INPUT", "DROP"]);
        ipt(&node, other, Family::Ipv6, &["-P", "INPUT", "ACCEPT"]);
        ipt(
            &node,
            backend,
            Family::Ipv4,
            &["-A", "INPUT", "-i", "lo", "-j", "ACCEPT"],
        );
        let p = plan(&node, backend, &intent);
        let m = p
            .mixed_backends
            .clone()
            .unwrap_or_else(|| panic!("{backend}: no report"));
        assert_eq!((m.in_use.backend, m.other.backend), (backend, other));
        // (nft's save prints nat before filter, legacy's filter first)
        let mut held: Vec<String> = m.other.chains.iter().map(ToString::to_string).collect();
        held.sort();
        assert_eq!(
            held,
            ["IPv4 filter INPUT (1 rule)", "IPv4 nat DOCKER (2 rules)"],
            "{backend}: empty default chains (IPv6 INPUT back to ACCEPT) are not named"
        );
        let mine: Vec<String> = m.in_use.chains.iter().map(ToString::to_string).collect();
        assert_eq!(
            mine,
            ["IPv4 filter INPUT (1 rule)"],
            "{backend}: portwarden's not counted"
        );
        let text = m.to_string();
        assert!(
            text.starts_with(&format!("iptables-{other} also holds rules: IPv4 "))
                && text.contains("IPv4 filter INPUT (1 rule)")
                && text.contains("IPv4 nat DOCKER (2 rules)")
                && text.contains("; packets meet both"),
            "{text}"
        );
        let v = serde_json::to_value(&p).expect("plan as JSON");
        assert_eq!(v["mixed_backends"]["other"]["backend"], other.as_str());
        // the warning does not stop apply, and the other backend is left as it is
        let before = foreign_only(&save(&node, other, Family::Ipv4));
        let i = intent.clone();
        inside(&node, move || {
            with_owners(backend)
                .converge(&i, &Failsafe::default())
                .expect("apply beside the other backend's rules")
        });
        assert_eq!(foreign_only(&save(&node, other, Family::Ipv4)), before);
    }
}
