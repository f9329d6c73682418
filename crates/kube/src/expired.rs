//! Which entries have expired: a policy's (for its status, by the controller's clock), a
//! node's (for its report, by the agent's clock), and when the next one will, so the
//! controller requeues a policy at that instant and its status changes without a spec edit.
//!
//! An entry is expired at `now` exactly when the model says so
//! ([`portwarden_policy::Timestamp::expired_at`]): the instant the kernel's time match stops
//! its rules.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use portwarden_policy::Policy;
use portwarden_policy::Timestamp;
use portwarden_policy::intent::Entry;

use crate::crd::{ExpiredEntry, NodeExpiredEntry};

/// The controller's and agent's instant in the model's whole seconds (rounded down, so an
/// entry counts as expired from the first instant the kernel stops it, never before).
pub fn model_time(now: &Time) -> Timestamp {
    Timestamp::from_unix(now.0.as_second())
}

/// The status form of an entry with an expiry; `None` for a permanent one (or an instant
/// jiff cannot hold, which validation already refuses).
fn described(e: &Entry) -> Option<ExpiredEntry> {
    let expires = e.expires?;
    let at = k8s_openapi::jiff::Timestamp::from_second(expires.unix()).ok()?;
    let ports: Vec<String> = e.ports.iter().map(ToString::to_string).collect();
    Some(ExpiredEntry {
        entry: u32::try_from(e.index).unwrap_or(u32::MAX),
        ports: ports.join(","),
        protocol: e.protocol.to_string(),
        expires: Time(at),
    })
}

/// The entries of `policy` that have expired at `now`, by entry index.
pub fn of_policy(policy: &Policy, now: Timestamp) -> Vec<ExpiredEntry> {
    policy
        .entries
        .iter()
        .filter(|e| e.expires.is_some_and(|t| t.expired_at(now)))
        .filter_map(described)
        .collect()
}

/// The earliest expiry of `policy` still to come after `now`.
pub fn next_expiry(policy: &Policy, now: Timestamp) -> Option<Timestamp> {
    policy
        .entries
        .iter()
        .filter_map(|e| e.expires)
        .filter(|t| !t.expired_at(now))
        .min()
}

/// Every entry with an expiry (passed or not) of `policies`, by policy and entry: what an
/// agent keeps with its plan and filters at each refresh ([`passed`]).
pub fn expiring<'a>(policies: impl IntoIterator<Item = &'a Policy>) -> Vec<NodeExpiredEntry> {
    let mut out: Vec<NodeExpiredEntry> = policies
        .into_iter()
        .flat_map(|p| {
            p.entries
                .iter()
                .filter_map(described)
                .map(|entry| NodeExpiredEntry {
                    policy: p.name.clone(),
                    entry,
                })
        })
        .collect();
    out.sort();
    out
}

/// Those of `entries` that have expired at `now`.
pub fn passed(entries: &[NodeExpiredEntry], now: &Time) -> Vec<NodeExpiredEntry> {
    let now = model_time(now);
    entries
        .iter()
        .filter(|e| Timestamp::from_unix(e.entry.expires.0.as_second()).expired_at(now))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::policy;

    fn at(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }

    /// The fixture's policy with entry 0 expiring at `first` and entry 1 at `second`.
    fn expiring_policy(first: Option<&str>, second: Option<&str>) -> Policy {
        let mut p = policy("quarantine", 1, "web");
        p.spec.0.ports[0].expires = first.map(Into::into);
        p.spec.0.ports[1].expires = second.map(Into::into);
        crate::policy::validate(&p).unwrap()
    }

    #[test]
    fn an_entry_is_expired_from_its_instant_on() {
        let p = expiring_policy(Some("2026-12-24T18:00:00Z"), None);
        let t = 1_798_135_200;
        assert!(of_policy(&p, Timestamp::from_unix(t - 1)).is_empty());
        let expired = of_policy(&p, Timestamp::from_unix(t));
        assert_eq!(
            expired,
            vec![ExpiredEntry {
                entry: 0,
                ports: "8080".into(),
                protocol: "tcp".into(),
                expires: at(t),
            }]
        );
        // Sub-second clocks round down: 17:59:59.9 is not yet 18:00.
        let just_before = Time(k8s_openapi::jiff::Timestamp::new(t - 1, 900_000_000).unwrap());
        assert_eq!(model_time(&just_before), Timestamp::from_unix(t - 1));
    }

    #[test]
    fn next_expiry_is_the_earliest_still_to_come() {
        let p = expiring_policy(Some("2026-12-24T18:00:00Z"), Some("2026-12-24T19:00:00Z"));
        let t = 1_798_135_200;
        assert_eq!(
            next_expiry(&p, Timestamp::from_unix(t - 10)),
            Some(Timestamp::from_unix(t))
        );
        assert_eq!(
            next_expiry(&p, Timestamp::from_unix(t)),
            Some(Timestamp::from_unix(t + 3600))
        );
        assert_eq!(next_expiry(&p, Timestamp::from_unix(t + 3600)), None);
        assert_eq!(
            next_expiry(&expiring_policy(None, None), Timestamp::from_unix(t)),
            None
        );
    }

    #[test]
    fn a_node_keeps_every_expiring_entry_and_reports_the_passed_ones() {
        let p = expiring_policy(Some("2026-12-24T19:00:00Z"), Some("2026-12-24T18:00:00Z"));
        let all = expiring([&p]);
        assert_eq!(all.len(), 2);
        assert_eq!((all[0].entry.entry, all[1].entry.entry), (0, 1));
        let t = 1_798_135_200;
        let passed_then = passed(&all, &at(t));
        assert_eq!(passed_then.len(), 1);
        assert_eq!(passed_then[0].policy, "quarantine");
        assert_eq!(passed_then[0].entry.entry, 1);
        assert_eq!(passed(&all, &at(t + 3600)).len(), 2);
        assert!(passed(&all, &at(t - 1)).is_empty());
    }
}
