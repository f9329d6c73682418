//! Conditions as the Kubernetes API conventions describe them: `type`, `status`
//! (`True`/`False`/`Unknown`), a CamelCase `reason`, a human `message`, `observedGeneration`,
//! and `lastTransitionTime`, which moves only when `status` changes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The type of the condition that says whether the policy's rules are in place on its nodes.
pub const APPLIED: &str = "Applied";
/// The type of the condition that says whether the scans see what the policy says.
pub const IN_SYNC: &str = "InSync";

/// The CamelCase reasons of the conditions, and of the Events that share them.
pub mod reason {
    /// Applied=False, InSync=Unknown: the schema admitted the policy, the validator refused it.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// Applied=True: the node selector matches no node.
    pub const NO_MATCHING_NODES: &str = "NoMatchingNodes";
    /// Applied=False: applying failed on some node.
    pub const APPLY_FAILED: &str = "ApplyFailed";
    /// Applied=False: a matched node's agent has not reported for too long.
    pub const AGENT_SILENT: &str = "AgentSilent";
    /// Applied=True: applied on every matched node.
    pub const APPLIED: &str = "Applied";
    /// Applied=False: some matched nodes have not applied the current generation yet.
    pub const PENDING: &str = "Pending";
    /// InSync=False: a scan sees a port other than the policy says.
    pub const DRIFT_DETECTED: &str = "DriftDetected";
    /// InSync=Unknown: no scan has covered the policy's ports yet.
    pub const NOT_SCANNED: &str = "NotScanned";
    /// InSync=True: every scan sees what the policy says.
    pub const IN_SYNC: &str = "InSync";
    /// The Event of InSync turning True again after False.
    pub const DRIFT_CLEARED: &str = "DriftCleared";
}

/// A condition's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// The condition holds.
    True,
    /// It does not.
    False,
    /// Nobody can tell yet.
    Unknown,
}

impl Status {
    /// Every status, in the API's order.
    pub const ALL: [Status; 3] = [Status::True, Status::False, Status::Unknown];

    /// The API's word.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::True => "True",
            Status::False => "False",
            Status::Unknown => "Unknown",
        }
    }
}

/// A condition before it is dated: what [`crate::aggregate`] decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decided {
    /// [`APPLIED`] or [`IN_SYNC`].
    pub type_: &'static str,
    /// The status.
    pub status: Status,
    /// CamelCase, machine-readable: one of [`reason`].
    pub reason: &'static str,
    /// For people.
    pub message: String,
}

/// Builds the new condition list from the decisions, keeping each condition's
/// `lastTransitionTime` from `old` when its status did not change.
///
/// # Guarantees
///
/// The output has one condition per decision, in the decisions' order; `observedGeneration` is
/// `generation` on each.
pub fn merge(
    old: &[Condition],
    decided: &[Decided],
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    decided
        .iter()
        .map(|d| {
            let previous = old.iter().find(|c| c.type_ == d.type_);
            let last_transition_time = match previous {
                Some(p) if p.status == d.status.as_str() => p.last_transition_time.clone(),
                _ => now.clone(),
            };
            Condition {
                type_: d.type_.to_string(),
                status: d.status.as_str().to_string(),
                reason: d.reason.to_string(),
                message: d.message.clone(),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// The condition of a type in a list.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn transition_time_moves_only_with_status() {
        let d = |status, reason: &'static str| Decided {
            type_: IN_SYNC,
            status,
            reason,
            message: reason.into(),
        };
        let first = merge(&[], &[d(Status::True, "InSync")], Some(1), &at(100));
        assert_eq!(first[0].last_transition_time, at(100));
        // Same status, new message and generation: the transition time stays.
        let second = merge(&first, &[d(Status::True, "InSync")], Some(2), &at(200));
        assert_eq!(second[0].last_transition_time, at(100));
        assert_eq!(second[0].observed_generation, Some(2));
        // Status flips: the transition time moves.
        let third = merge(
            &second,
            &[d(Status::False, "DriftDetected")],
            Some(2),
            &at(300),
        );
        assert_eq!(third[0].last_transition_time, at(300));
        assert_eq!(third[0].status, "False");
    }
}
