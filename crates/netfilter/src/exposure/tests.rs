//! Tests of the exposure reading and diff: every rule form `render` produces, the parser tied
//! to the renderer by a property test, and the diff on the seed story's changes.

use std::net::IpAddr;

use ipnet::IpNet;
use portwarden_policy::{NodeIntent, PortRange, Protocol, Rule, State, Timestamp};

use super::diff::representative;
use super::*;
use crate::failsafe::Failsafe;
use crate::plan::Plan;
use crate::render::render;

const NOW: i64 = 1_800_000_000;

/// A rule of policy `p` ([`crate::render`]'s test rule).
fn rule(
    entry: usize,
    proto: Protocol,
    ports: (u16, u16),
    source: Option<&str>,
    state: State,
) -> Rule {
    crate::render::tests::rule("p", entry, proto, ports, source, state)
}

fn intent(mut rules: Vec<Rule>) -> NodeIntent {
    rules.sort_by(|a, b| a.precedence().cmp(&b.precedence()));
    NodeIntent {
        policies: vec!["p".into()],
        rules,
        report_unlisted: false,
    }
}

fn decisions(i: &NodeIntent, failsafe: &Failsafe, family: Family, now: i64) -> Decisions {
    let r = render(i, failsafe, &[]);
    read(
        family,
        &desired_ruleset(r.family(family)),
        Timestamp::from_unix(now),
    )
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ranges(v: &[(u16, u16)]) -> Vec<PortRange> {
    v.iter()
        .map(|&(start, end)| PortRange { start, end })
        .collect()
}

#[test]
fn multiport_single_port_source_and_targets_are_read() {
    let i = intent(vec![
        rule(0, Protocol::Tcp, (80, 80), None, State::Open),
        rule(0, Protocol::Tcp, (81, 81), None, State::Open),
        rule(
            1,
            Protocol::Tcp,
            (8080, 8080),
            Some("172.16.7.80/32"),
            State::Closed,
        ),
        rule(2, Protocol::Udp, (161, 161), None, State::Closed),
        rule(3, Protocol::Udp, (162, 170), None, State::Filtered),
    ]);
    let d = decisions(&i, &Failsafe::none(), Family::Ipv4, NOW);
    assert!(d.unread.is_empty(), "{:?}", d.unread);
    let find = |p: Protocol, port: u16| {
        d.rules
            .iter()
            .find(|r| r.protocol == p && r.ports.iter().any(|x| x.contains(port)))
            .unwrap()
    };
    // the multiport rule is one decision with both ports
    assert_eq!(find(Protocol::Tcp, 80).ports, ranges(&[(80, 81)]));
    assert_eq!(find(Protocol::Tcp, 80).exposure, Exposure::Open);
    let src = find(Protocol::Tcp, 8080);
    assert_eq!(src.source, Some("172.16.7.80/32".parse().unwrap()));
    assert_eq!(src.exposure, Exposure::Closed);
    assert_eq!(find(Protocol::Udp, 161).exposure, Exposure::Closed);
    assert_eq!(find(Protocol::Udp, 165).ports, ranges(&[(162, 170)]));
    assert_eq!(
        d.decide(Protocol::Udp, 165, ip("192.0.2.1")),
        Exposure::Filtered
    );
    assert_eq!(
        d.decide(Protocol::Tcp, 8080, ip("172.16.7.80")),
        Exposure::Closed
    );
    assert_eq!(
        d.decide(Protocol::Tcp, 8080, ip("172.16.7.81")),
        Exposure::Unmanaged
    );
    assert_eq!(
        d.decide(Protocol::Tcp, 82, ip("172.16.7.81")),
        Exposure::Unmanaged
    );
    // IPv6: the IPv4 source stays out, UDP closed is icmp6-port-unreachable
    let d6 = decisions(&i, &Failsafe::none(), Family::Ipv6, NOW);
    assert!(d6.unread.is_empty(), "{:?}", d6.unread);
    assert!(d6.rules.iter().all(|r| r.source.is_none()));
    assert_eq!(
        d6.decide(Protocol::Udp, 161, ip("2001:db8::1")),
        Exposure::Closed
    );
    assert_eq!(
        d6.decide(Protocol::Tcp, 81, ip("2001:db8::1")),
        Exposure::Open
    );
}

#[test]
fn failsafe_return_leaves_its_ports_to_the_host() {
    let i = intent(vec![rule(
        0,
        Protocol::Tcp,
        (1, 100),
        None,
        State::Filtered,
    )]);
    let d = decisions(&i, &Failsafe::default(), Family::Ipv4, NOW);
    assert!(d.unread.is_empty(), "{:?}", d.unread);
    // the head's failsafe RETURN comes first
    assert_eq!(d.rules[0].exposure, Exposure::Unmanaged);
    assert_eq!(
        d.decide(Protocol::Tcp, 22, ip("10.0.0.1")),
        Exposure::Unmanaged
    );
    assert_eq!(
        d.decide(Protocol::Udp, 68, ip("10.0.0.1")),
        Exposure::Unmanaged
    );
    assert_eq!(
        d.decide(Protocol::Tcp, 23, ip("10.0.0.1")),
        Exposure::Filtered
    );
}

#[test]
fn a_passed_datestop_no_longer_matches() {
    let mut expiring = rule(0, Protocol::Tcp, (8080, 8080), None, State::Filtered);
    expiring.expires = Some(Timestamp::from_unix(NOW + 60));
    let i = intent(vec![
        expiring,
        rule(1, Protocol::Tcp, (8080, 8080), None, State::Closed),
    ]);
    let at = |now| {
        decisions(&i, &Failsafe::none(), Family::Ipv6, now).decide(
            Protocol::Tcp,
            8080,
            ip("2001:db8::1"),
        )
    };
    assert_eq!(at(NOW), Exposure::Filtered);
    // the last second it matches, then the next entry decides
    assert_eq!(at(NOW + 59), Exposure::Filtered);
    assert_eq!(at(NOW + 60), Exposure::Closed);
}

#[test]
fn saved_rules_are_read_as_iptables_save_prints_them() {
    let jump = "-m comment --comment \"portwarden: port exposure policies, managed (do not edit)\" -j PORTWARDEN-INPUT";
    let text = format!(
        "*filter\n:INPUT ACCEPT [0:0]\n:PORTWARDEN-INPUT - [0:0]\n:PORTWARDEN-TCP-0 - [0:0]\n:PORTWARDEN-TCP-0-255 - [0:0]\n\
         [3:180] -A INPUT -s 192.0.2.0/24 -j DROP\n[9:540] -A INPUT {jump}\n\
         -A PORTWARDEN-INPUT -i lo -m comment --comment \"portwarden: loopback is not governed\" -j RETURN\n\
         -A PORTWARDEN-INPUT -m conntrack --ctdir REPLY -j RETURN\n\
         -A PORTWARDEN-INPUT -p tcp -m tcp --dport 0:4095 -j PORTWARDEN-TCP-0\n\
         -A PORTWARDEN-TCP-0 -p tcp -m tcp --dport 0:255 -j PORTWARDEN-TCP-0-255\n\
         -A PORTWARDEN-TCP-0-255 -p tcp -m tcp --dport 25 -m state --state NEW -j DROP\n\
         -A PORTWARDEN-TCP-0-255 -s 10.0.0.0/8 -p tcp -m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable\n\
         -A PORTWARDEN-TCP-0-255 -p tcp -m multiport --dports 80,143 -m time --datestop 2020-01-01T00:00:00 -j DROP\n\
         -A PORTWARDEN-TCP-0-255 -p tcp -m multiport --dports 80,143,443 -j REJECT --reject-with tcp-reset\n\
         COMMIT\n"
    );
    let rs = Ruleset::parse(&text).unwrap();
    let d = read(Family::Ipv4, &rs, Timestamp::from_unix(NOW));
    // the rule with a module the reader does not know is named and left out
    assert_eq!(d.unread.len(), 1, "{:?}", d.unread);
    assert!(
        d.unread[0].starts_with("PORTWARDEN-TCP-0-255#1 ") && d.unread[0].contains("`state`"),
        "{}",
        d.unread[0]
    );
    assert_eq!(
        d.decide(Protocol::Tcp, 25, ip("10.1.1.1")),
        Exposure::Unmanaged
    );
    // a TCP probe answered with an ICMP error: nmap says filtered
    assert_eq!(
        d.decide(Protocol::Tcp, 80, ip("10.1.1.1")),
        Exposure::Filtered
    );
    // the expired DROP matches nothing; the reset decides
    assert_eq!(
        d.decide(Protocol::Tcp, 80, ip("192.0.2.9")),
        Exposure::Closed
    );
    assert_eq!(
        d.decide(Protocol::Tcp, 143, ip("192.0.2.9")),
        Exposure::Closed
    );
    assert_eq!(
        d.decide(Protocol::Udp, 143, ip("192.0.2.9")),
        Exposure::Unmanaged
    );
    // a port outside the leaf's bucket never reaches the leaf
    assert_eq!(
        d.decide(Protocol::Tcp, 443, ip("192.0.2.9")),
        Exposure::Unmanaged
    );
    // without portwarden's jump, its chains decide nothing
    let unhooked =
        Ruleset::parse(&text.replace(&format!("[9:540] -A INPUT {jump}\n"), "")).unwrap();
    assert_eq!(
        read(Family::Ipv4, &unhooked, Timestamp::from_unix(NOW)),
        Decisions::default()
    );
}

const SOURCES: [&str; 7] = [
    "10.0.0.0/8",
    "10.1.2.3/32",
    "10.1.0.0/16",
    "192.168.0.0/16",
    "fd00::/8",
    "fd00::1/128",
    "0.0.0.0/0",
];
const PACKETS: [&str; 6] = [
    "10.1.2.3",
    "10.1.9.9",
    "10.9.9.9",
    "192.168.1.1",
    "fd00::1",
    "2001::1",
];

type RawRule = (u8, u16, u16, u8, Option<usize>, Option<i64>);

fn raw_rules() -> impl proptest::strategy::Strategy<Value = Vec<RawRule>> {
    proptest::collection::vec(
        (
            0u8..2,
            1u16..1200,
            0u16..700,
            0u8..3,
            proptest::option::of(0usize..SOURCES.len()),
            proptest::option::of(NOW - 2..NOW + 2),
        ),
        0..30,
    )
}

fn compile(raw: &[RawRule], policy: &str) -> NodeIntent {
    let rules = raw
        .iter()
        .enumerate()
        .map(|(i, &(p, start, width, st, src, expires))| {
            let protocol = if p == 0 { Protocol::Tcp } else { Protocol::Udp };
            let state = [State::Open, State::Closed, State::Filtered][st as usize];
            let mut r = rule(
                i,
                protocol,
                (start, start.saturating_add(width)),
                src.map(|s| SOURCES[s]),
                state,
            );
            r.policy = policy.into();
            r.expires = expires.map(Timestamp::from_unix);
            r
        })
        .collect();
    intent(rules)
}

/// What the model says a probe meets at `now`: the failsafe head first, then the first rule not
/// yet expired.
fn model(
    i: &NodeIntent,
    failsafe: &Failsafe,
    protocol: Protocol,
    port: u16,
    source: IpAddr,
    now: i64,
) -> Exposure {
    if failsafe.ranges(protocol).any(|f| f.contains(port)) {
        return Exposure::Unmanaged;
    }
    let live = i.at(Timestamp::from_unix(now));
    match live.first_match(protocol, port, source).map(|r| r.state) {
        None => Exposure::Unmanaged,
        Some(State::Open) => Exposure::Open,
        Some(State::Closed) => Exposure::Closed,
        Some(State::Filtered) => Exposure::Filtered,
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]
    /// The decisions read back from `render`'s own output decide every probe as the intent's
    /// first match does (the failsafe head aside, which returns its ports to the host).
    #[test]
    fn decisions_read_from_rendered_rules_match_the_model(
        raw in raw_rules(),
        now in NOW - 3..NOW + 3,
        probes in proptest::collection::vec((0u8..2, 0u16..2000, 0usize..PACKETS.len()), 60),
    ) {
        let i = compile(&raw, "p");
        let failsafe: Failsafe = "tcp:22,tcp:1000-1010,udp:68".parse().unwrap();
        let r = render(&i, &failsafe, &[]);
        let v4 = read(Family::Ipv4, &desired_ruleset(&r.v4), Timestamp::from_unix(now));
        let v6 = read(Family::Ipv6, &desired_ruleset(&r.v6), Timestamp::from_unix(now));
        proptest::prop_assert!(v4.unread.is_empty() && v6.unread.is_empty(), "{:?} {:?}", v4.unread, v6.unread);
        for (p, port, src) in probes {
            let protocol = if p == 0 { Protocol::Tcp } else { Protocol::Udp };
            let source = ip(PACKETS[src]);
            let d = if source.is_ipv4() { &v4 } else { &v6 };
            proptest::prop_assert_eq!(d.decide(protocol, port, source), model(&i, &failsafe, protocol, port, source, now), "{}/{} from {}", port, protocol, source);
        }
    }

    /// The diff names exactly the probes whose decision changes: a probe's decision differs
    /// before and after iff a change covers its port and its source class (the narrowest
    /// source holding it that a rule for its port names), with those two decisions.
    #[test]
    fn the_diff_names_exactly_the_probes_that_change(
        before in raw_rules(),
        after in raw_rules(),
        probes in proptest::collection::vec((0u8..2, 0u16..2000, 0usize..PACKETS.len()), 60),
    ) {
        let failsafe: Failsafe = "tcp:22".parse().unwrap();
        let (b, a) = (compile(&before, "b"), compile(&after, "a"));
        let (rb, ra) = (render(&b, &failsafe, &[]), render(&a, &failsafe, &[]));
        let current = [(Family::Ipv4, desired_ruleset(&rb.v4)), (Family::Ipv6, desired_ruleset(&rb.v6))];
        let refs: Vec<(Family, &Ruleset)> = current.iter().map(|(f, r)| (*f, r)).collect();
        let now = Timestamp::from_unix(NOW);
        let diff = compute(&ra, &refs, now);
        let sides = |family: Family| {
            let side = |r: &crate::render::Rendered| read(family, &desired_ruleset(r.family(family)), now);
            [side(&rb), side(&ra)]
        };
        let (v4, v6) = (sides(Family::Ipv4), sides(Family::Ipv6));
        for (p, port, src) in probes {
            let protocol = if p == 0 { Protocol::Tcp } else { Protocol::Udp };
            let source = ip(PACKETS[src]);
            let was = model(&b, &failsafe, protocol, port, source, NOW);
            let will = model(&a, &failsafe, protocol, port, source, NOW);
            // the probe's class: the narrowest source of either side's rules for its port (as
            // read: an expired rule and one the failsafe cut away name none)
            let [db, da] = if source.is_ipv4() { &v4 } else { &v6 };
            let class = db.rules.iter().chain(&da.rules)
                .filter(|r| r.protocol == protocol && r.ports.iter().any(|x| x.contains(port)))
                .filter_map(|r| r.source)
                .filter(|n| n.contains(&source))
                .max_by_key(IpNet::prefix_len)
                .unwrap_or_else(|| if source.is_ipv4() { "0.0.0.0/0".parse().unwrap() } else { "::/0".parse().unwrap() });
            let rows: Vec<&ExposureChange> = diff.changes.iter()
                .filter(|c| c.protocol == protocol && c.source == class && c.ports.iter().any(|r| r.contains(port)))
                .collect();
            if was == will {
                proptest::prop_assert!(rows.is_empty(), "{}/{} from {}: {:?}", port, protocol, source, rows);
            } else {
                proptest::prop_assert_eq!(rows.len(), 1, "{}/{} from {}", port, protocol, source);
                proptest::prop_assert_eq!((rows[0].before, rows[0].after), (was, will));
            }
        }
    }
}

/// The plan from `before` (as the kernel holds it) to `after`, with its exposure diff.
fn plan(before: &NodeIntent, after: &NodeIntent, failsafe: &Failsafe) -> Plan {
    let rb = render(before, failsafe, &[]);
    let current = [
        (Family::Ipv4, desired_ruleset(&rb.v4)),
        (Family::Ipv6, desired_ruleset(&rb.v6)),
    ];
    let refs: Vec<(Family, &Ruleset)> = current.iter().map(|(f, r)| (*f, r)).collect();
    let ra = render(after, failsafe, &[]);
    Plan::from_rendered(&ra, after, &refs).with_exposure(compute(
        &ra,
        &refs,
        Timestamp::from_unix(NOW),
    ))
}

fn lines(p: &Plan) -> Vec<String> {
    p.exposure
        .iter()
        .flatten()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn tightening_443_from_open_to_filtered() {
    let before = intent(vec![rule(0, Protocol::Tcp, (443, 443), None, State::Open)]);
    let after = intent(vec![rule(
        0,
        Protocol::Tcp,
        (443, 443),
        None,
        State::Filtered,
    )]);
    let p = plan(&before, &after, &Failsafe::default());
    assert!(p.changes > 0);
    assert_eq!(
        lines(&p),
        [
            "443/tcp from 0.0.0.0/0: open -> filtered",
            "443/tcp from ::/0: open -> filtered"
        ]
    );
    let v = serde_json::to_value(&p).unwrap();
    assert_eq!(
        v["exposure"][0],
        serde_json::json!({"ports": "443", "protocol": "tcp", "source": "0.0.0.0/0", "before": "open", "after": "filtered"})
    );
}

#[test]
fn a_source_specific_closed_changes_that_source_only() {
    let open = rule(0, Protocol::Tcp, (8080, 8080), None, State::Open);
    let before = intent(vec![open.clone()]);
    let after = intent(vec![
        open,
        rule(
            1,
            Protocol::Tcp,
            (8080, 8080),
            Some("172.16.7.80/32"),
            State::Closed,
        ),
    ]);
    let p = plan(&before, &after, &Failsafe::default());
    assert_eq!(lines(&p), ["8080/tcp from 172.16.7.80/32: open -> closed"]);
}

#[test]
fn a_new_lockdown_merges_its_segments_around_the_failsafe_port() {
    let after = intent(vec![rule(
        0,
        Protocol::Tcp,
        (1, 100),
        None,
        State::Filtered,
    )]);
    let p = plan(&intent(vec![]), &after, &Failsafe::default());
    assert_eq!(
        lines(&p)[0],
        "1-21,23-100/tcp from 0.0.0.0/0: unmanaged -> filtered"
    );
    assert_eq!(
        serde_json::to_value(&p).unwrap()["exposure"][0]["ports"],
        "1-21,23-100"
    );
}

#[test]
fn reordering_rules_that_decide_alike_changes_no_exposure() {
    // the same ports and states, as other entries of another priority: every rule changes
    let before = intent(vec![
        rule(0, Protocol::Tcp, (80, 80), None, State::Open),
        rule(
            1,
            Protocol::Tcp,
            (81, 90),
            Some("10.0.0.0/8"),
            State::Closed,
        ),
        rule(2, Protocol::Udp, (53, 53), None, State::Filtered),
    ]);
    let mut rules = vec![
        rule(5, Protocol::Udp, (53, 53), None, State::Filtered),
        rule(
            3,
            Protocol::Tcp,
            (81, 90),
            Some("10.0.0.0/8"),
            State::Closed,
        ),
        rule(4, Protocol::Tcp, (80, 80), None, State::Open),
    ];
    for r in &mut rules {
        r.priority = 7;
    }
    let p = plan(&before, &intent(rules), &Failsafe::default());
    assert!(p.changes >= 6, "{p:?}");
    assert_eq!(p.exposure, Some(vec![]));
}

#[test]
fn a_class_its_narrower_sources_cover_has_no_representative() {
    let n = |s: &str| s.parse::<IpNet>().unwrap();
    let listed = [
        n("10.0.0.0/31"),
        n("10.0.0.0/32"),
        n("10.0.0.1/32"),
        n("0.0.0.0/0"),
        n("0.0.0.0/1"),
    ];
    assert_eq!(representative(n("10.0.0.0/31"), &listed), None);
    assert_eq!(
        representative(n("0.0.0.0/0"), &listed),
        Some(ip("128.0.0.0"))
    );
    assert_eq!(representative(n("0.0.0.0/1"), &listed), Some(ip("0.0.0.0")));
    assert_eq!(
        representative(n("10.0.0.1/32"), &listed),
        Some(ip("10.0.0.1"))
    );
}
