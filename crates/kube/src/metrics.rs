//! The controller's Prometheus metrics (`portwarden_controller_...`), its HTTP server's among
//! them.

use portwarden_agent::metrics::{HttpMetrics, encode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of a per-policy gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    /// The PortPolicy's name.
    pub policy: String,
}

/// Labels of a condition gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConditionLabels {
    /// The PortPolicy's name.
    pub policy: String,
    /// `Applied` or `InSync`.
    pub condition: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
}

/// Labels of an Event counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    /// The Event's reason (`DriftDetected`, `DriftCleared`, `InvalidSpec`, ...).
    pub reason: String,
}

/// The Kubernetes controller's metrics (`portwarden controller`).
pub struct ControllerMetrics {
    registry: Registry,
    /// Time of one PortPolicy reconcile.
    pub reconcile_duration: Histogram,
    /// PortPolicy reconciles.
    pub reconciles: Counter,
    /// PortPolicy reconciles that failed (retried with backoff).
    pub reconcile_errors: Counter,
    /// Status writes (only when the status changed).
    pub status_patches: Counter,
    /// Events published, by reason.
    pub events: Family<EventLabels, Counter>,
    /// Events that could not be published.
    pub event_errors: Counter,
    /// 1 while this replica holds the leader Lease.
    pub leader: Gauge,
    /// Drifting port observations per policy.
    pub policy_drift: Family<PolicyLabels, Gauge>,
    /// Nodes each policy matches.
    pub policy_nodes: Family<PolicyLabels, Gauge>,
    /// 1 for the current status of each condition of each policy.
    pub policy_condition: Family<ConditionLabels, Gauge>,
    /// The HTTP endpoint's connections.
    pub http: HttpMetrics,
}

impl Default for ControllerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ControllerMetrics {
    /// Creates and registers every metric under the `portwarden_controller_` prefix.
    pub fn new() -> ControllerMetrics {
        let mut registry = Registry::with_prefix("portwarden_controller");
        let m = ControllerMetrics {
            registry: Registry::default(),
            reconcile_duration: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            reconciles: Counter::default(),
            reconcile_errors: Counter::default(),
            status_patches: Counter::default(),
            events: Family::default(),
            event_errors: Counter::default(),
            leader: Gauge::default(),
            policy_drift: Family::default(),
            policy_nodes: Family::default(),
            policy_condition: Family::default(),
            http: HttpMetrics::default(),
        };
        m.http.register(&mut registry);
        registry.register(
            "reconcile_duration_seconds",
            "Time of one PortPolicy reconcile",
            m.reconcile_duration.clone(),
        );
        registry.register("reconciles", "PortPolicy reconciles", m.reconciles.clone());
        registry.register(
            "reconcile_errors",
            "PortPolicy reconciles that failed",
            m.reconcile_errors.clone(),
        );
        registry.register(
            "status_patches",
            "PortPolicy status writes",
            m.status_patches.clone(),
        );
        registry.register("events", "Events published, by reason", m.events.clone());
        registry.register(
            "event_errors",
            "Events that could not be published",
            m.event_errors.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease",
            m.leader.clone(),
        );
        registry.register(
            "policy_drift_ports",
            "Drifting port observations per policy",
            m.policy_drift.clone(),
        );
        registry.register(
            "policy_matched_nodes",
            "Nodes each policy matches",
            m.policy_nodes.clone(),
        );
        registry.register(
            "policy_condition",
            "1 for the current status of each condition of each policy",
            m.policy_condition.clone(),
        );
        ControllerMetrics { registry, ..m }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        encode(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_names() {
        let m = ControllerMetrics::new();
        m.leader.set(1);
        m.policy_drift
            .get_or_create(&PolicyLabels {
                policy: "quarantine".into(),
            })
            .set(2);
        let text = m.encode();
        assert!(text.contains("portwarden_controller_leader 1"), "{text}");
        assert!(
            text.contains("portwarden_controller_http_connection_limit 0"),
            "{text}"
        );
        assert!(
            text.contains("portwarden_controller_policy_drift_ports{policy=\"quarantine\"} 2"),
            "{text}"
        );
    }
}
