//! Lab tests of expiring entries: the real kernel's time match, both iptables backends, IPv4
//! and IPv6, judged by the real nmap.
//!
//! 1. `expiring_rules_read_back_equal_on_both_backends` — rules with `-m time --datestop`
//!    (single port, multiport, the forward path) are printed back by `iptables-save` exactly
//!    as rendered: the next plan has no change.
//! 2. `an_entry_expires_while_no_portwarden_runs` — `8080 filtered` expiring a few seconds
//!    ahead above a lower-precedence `8080 closed`; applied, then no portwarden code runs: nmap
//!    sees filtered before the instant and closed after it.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use portwarden_lab::skip_unless_lab;
use portwarden_netfilter::{Failsafe, Family};
use portwarden_policy::{NodeIntent, Timestamp};
use support::*;

/// The intent of a policy document given as text, compiled at `now` for a node without labels.
fn intent_of(text: &str, now: Timestamp) -> NodeIntent {
    let loaded = portwarden_policy::load_source("expiry.yaml", text.as_bytes())
        .unwrap_or_else(|d| panic!("the policy must load: {d:?}"));
    loaded
        .policies
        .compile_at(&std::collections::BTreeMap::new(), now)
}

fn policy(entries: &str) -> String {
    format!(
        "apiVersion: portwarden.io/v1alpha1\nkind: PortPolicy\nmetadata:\n  name: incident\nspec:\n  priority: 100\n  ports:\n{entries}"
    )
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

#[test]
fn expiring_rules_read_back_equal_on_both_backends() {
    skip_unless_lab!();
    let expires = Timestamp::from_unix(unix_now() + 86_400);
    let text = policy(&format!(
        "    - ports: 8080\n      state: filtered\n      expires: \"{expires}\"\n\
         \x20   - ports: [9000, 9001, \"9100-9110\"]\n      state: closed\n      from: [\"10.213.0.0/16\", \"fd00::/8\"]\n      expires: \"{expires}\"\n\
         \x20   - ports: 8080\n      state: closed\n"
    ));
    let intent = intent_of(&text, Timestamp::now());
    assert_eq!(intent.rules.len(), 6, "{:?}", intent.rules);
    let stop = format!("-m time --datestop {}", expires.datestop());
    for backend in BACKENDS {
        let lab = lab("nfexpsave");
        let node = lab.node(0).clone();
        // the forward path too: the node forwards both families
        node.sysctl("net.ipv4.ip_forward", "1").unwrap();
        node.sysctl("net.ipv6.conf.all.forwarding", "1").unwrap();
        let i2 = intent.clone();
        let (first, after) = inside(&node, move || {
            let nf = netfilter(backend);
            let plan = nf.plan(&i2, &Failsafe::default()).unwrap();
            nf.apply(&plan).unwrap();
            (plan, nf.plan(&i2, &Failsafe::default()).unwrap())
        });
        assert!(first.changes > 0);
        assert_eq!(
            (after.changes, after.add.len(), after.delete.len()),
            (0, 0, 0),
            "{backend}: a converged node with expiring rules must compare equal: {after:?}"
        );
        assert!(after.is_converged(), "{backend}");
        for family in Family::ALL {
            let text = save(&node, backend, family);
            let timed: Vec<&str> = text.lines().filter(|l| l.contains("-m time")).collect();
            // INPUT: 8080 alone, one multiport rule; FORWARD: 8080, 9000:9001, 9100:9110
            assert_eq!(timed.len(), 5, "{backend} {family}: {text}");
            assert!(
                timed.iter().any(|l| l.contains(&format!(
                    "-p tcp -m tcp --dport 8080 {stop} -m comment --comment \"incident entry 0: filtered\" -j DROP"
                ))),
                "{backend} {family}: {timed:#?}"
            );
            assert!(
                timed.iter().any(|l| l.contains(&format!(
                    "-p tcp -m multiport --dports 9000:9001,9100:9110 {stop} -m comment"
                ))),
                "{backend} {family}: {timed:#?}"
            );
            assert!(
                timed.iter().any(|l| l.contains(&format!(
                    "-p tcp -m conntrack --ctorigdstport 9100:9110 {stop} -m comment"
                ))),
                "{backend} {family}: {timed:#?}"
            );
            for l in &timed {
                eprintln!("{backend} {family}: {l}");
            }
        }
    }
}

#[test]
fn an_entry_expires_while_no_portwarden_runs() {
    skip_unless_lab!();
    for backend in BACKENDS {
        let lab = lab("nfexpire");
        let (node, scanner) = (lab.node(0).clone(), lab.scanner(0).clone());
        // A listener: after the expiry "closed" can only come from the fallback entry's REJECT.
        let _l = node.tcp_listener(8080).unwrap();
        let expires = Timestamp::from_unix(unix_now() + 8);
        let text = policy(&format!(
            "    - ports: 8080\n      state: filtered\n      reason: INC-1234 quarantine\n      expires: \"{expires}\"\n\
             \x20   - ports: 8080\n      state: closed\n      from: [\"0.0.0.0/0\", \"::/0\"]\n"
        ));
        let intent = intent_of(&text, Timestamp::now());
        assert_eq!(intent.rules[0].expires, Some(expires));
        let i2 = intent.clone();
        inside(&node, move || {
            let nf = netfilter(backend);
            nf.apply(&nf.plan(&i2, &Failsafe::default()).unwrap())
                .unwrap();
        });
        // From here on no portwarden code touches the node: only the kernel and nmap.
        let targets = [node.v4().into(), node.v6().into()];
        for target in targets {
            let seen = nmap(&scanner, "-sS", target, "8080", None);
            assert_eq!(
                seen[&8080], "filtered",
                "{backend}: before the expiry, {target}"
            );
        }
        assert!(
            unix_now() < expires.unix(),
            "{backend}: the scans before the expiry took too long to prove anything"
        );
        // Wait for the instant by the clock (the kernel's time match reads the same one).
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while unix_now() < expires.unix() {
            assert!(
                std::time::Instant::now() < deadline,
                "{backend}: the clock never reached {expires}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        for target in targets {
            let seen = nmap(&scanner, "-sS", target, "8080", None);
            assert_eq!(
                seen[&8080], "closed",
                "{backend}: after the expiry the next entry decides, {target}"
            );
        }
        // The model agrees: compiled now, the expired entry is gone and the closed one decides.
        let later = intent_of(&text, Timestamp::now());
        assert_eq!(later.rules.len(), 2);
        assert!(later.rules.iter().all(|r| r.entry == 1));
    }
}
