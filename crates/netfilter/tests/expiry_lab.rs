//! Lab tests of expiring entries: the real kernel's time match, both iptables backends, IPv4
//! and IPv6, judged by the real nmap.
//!
//! 1. `expiring_rules_read_back_equal_on_both_backends` — rules with `-m time --datestop`
//!    (single port, multiport, the forward path) are printed back by `iptables-save` exactly
//!    as rendered: the next plan has no change.

mod support;

use std::time::{SystemTime, UNIX_EPOCH};

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
