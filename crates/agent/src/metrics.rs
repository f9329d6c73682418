//! The agent's Prometheus metrics (`portwarden_...`), the HTTP server's (registered by the
//! agent and the controller under their prefixes), and their text encoding. The controller's
//! own metrics are `portwarden-kube`'s.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

/// Labels of a drifting port.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PortLabels {
    /// Node name.
    pub node: String,
    /// Port number.
    pub port: String,
    /// `tcp` or `udp`.
    pub protocol: String,
}

/// Labels of a per-verdict count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabels {
    /// `in_sync`, `drift` or `indeterminate`.
    pub verdict: String,
}

/// Labels of a drift repair count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DriftLabels {
    /// What was found ([`portwarden_netfilter::DriftKind`]): `jump_missing`,
    /// `jump_displaced`, `jump_unwanted`, `chain_missing`, `rules_changed`, `chain_unwanted`.
    pub kind: String,
}

/// Labels of a connection refused or closed by the HTTP server.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    /// Refused: `per_source`, `per_network` or `total` (the cap that was reached). Closed: `evicted` (the
    /// oldest connection of the heaviest source, to admit a quieter one), `timeout` (no
    /// complete request header in time, also an idle keep-alive connection), `max_age`.
    pub reason: String,
}

/// The HTTP server's metrics (counted by `server::serve`), registered by the agent's and the
/// controller's registries under their prefixes (`portwarden_http_...`,
/// `portwarden_controller_http_...`).
#[derive(Clone, Debug, Default)]
pub struct HttpMetrics {
    /// Connections open now.
    pub connections_open: Gauge,
    /// The cap on open connections in force (lowered to fit the descriptor limit).
    pub connection_limit: Gauge,
    /// The cap on open connections from one source.
    pub connection_limit_per_source: Gauge,
    /// The cap on open connections from one IPv6 /48.
    pub connection_limit_per_network: Gauge,
    /// Connections closed at once because a cap was reached, by cap.
    pub connections_refused: Family<ConnectionLabels, Counter>,
    /// Connections the server closed before the client did, by reason.
    pub connections_closed: Family<ConnectionLabels, Counter>,
    /// Requests answered 503 because their handler took longer than the request timeout.
    pub request_timeouts: Counter,
}

impl HttpMetrics {
    /// Counts a connection refused because the `reason` cap was reached.
    pub fn refused(&self, reason: &str) {
        self.connections_refused
            .get_or_create(&ConnectionLabels {
                reason: reason.into(),
            })
            .inc();
    }

    /// Counts a connection the server closed for `reason`.
    pub fn closed(&self, reason: &str) {
        self.connections_closed
            .get_or_create(&ConnectionLabels {
                reason: reason.into(),
            })
            .inc();
    }

    /// Registers every HTTP metric in `registry` (under its prefix).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "http_connections_open",
            "HTTP connections open now",
            self.connections_open.clone(),
        );
        registry.register(
            "http_connection_limit",
            "Cap on open HTTP connections (fitted to the descriptor limit)",
            self.connection_limit.clone(),
        );
        registry.register(
            "http_connection_limit_per_source",
            "Cap on open HTTP connections from one source address (IPv6: one /64; the node itself is one source)",
            self.connection_limit_per_source.clone(),
        );
        registry.register(
            "http_connection_limit_per_network",
            "Cap on open HTTP connections from one IPv6 /48, its /64s together",
            self.connection_limit_per_network.clone(),
        );
        registry.register(
            "http_connections_refused",
            "HTTP connections closed at once because a cap was reached (per_source, per_network, total)",
            self.connections_refused.clone(),
        );
        registry.register(
            "http_connections_closed",
            "HTTP connections closed by the server (evicted, timeout, max_age)",
            self.connections_closed.clone(),
        );
        registry.register(
            "http_request_timeouts",
            "HTTP requests answered 503 because they took longer than the request timeout",
            self.request_timeouts.clone(),
        );
    }
}

/// Labels of an entry's counters in one family.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EntryFamilyLabels {
    /// Policy name.
    pub policy: String,
    /// Entry index.
    pub entry: String,
    /// `ipv4` or `ipv6`.
    pub family: String,
}

/// Labels of an entry.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EntryLabels {
    /// Policy name.
    pub policy: String,
    /// Entry index.
    pub entry: String,
}

/// One entry's counters in one family, as the last refresh read them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntrySample {
    /// Policy name.
    pub policy: String,
    /// Entry index.
    pub entry: usize,
    /// `ipv4` or `ipv6`.
    pub family: String,
    /// The kernel's packet counter of the entry's rules.
    pub packets: u64,
    /// Its byte counter.
    pub bytes: u64,
    /// Unix time the agent last saw the entry's packets grow; `None` when not since it started.
    pub last_match: Option<i64>,
}

/// The per-entry counters, exported as they were last read: the kernel's counters are the
/// values (a rewritten rule starts again from 0, which Prometheus takes for a counter reset),
/// and an entry that is gone from the intent is gone from `/metrics` at the next refresh.
/// Registered in [`Metrics`] as a collector; [`EntryMetrics::set`] replaces the snapshot.
#[derive(Clone, Debug, Default)]
pub struct EntryMetrics(Arc<Mutex<Vec<EntrySample>>>);

impl EntryMetrics {
    /// Replaces the exported samples by those of the latest refresh.
    pub fn set(&self, samples: Vec<EntrySample>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = samples;
    }
}

impl Collector for EntryMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let samples = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let labels = |s: &EntrySample| EntryFamilyLabels {
            policy: s.policy.clone(),
            entry: s.entry.to_string(),
            family: s.family.clone(),
        };
        // Help texts end with the period `Registry::register` adds to the others.
        let counter = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "entry_packets",
            "Packets the entry's rules matched (the kernel's counters, from when the rules were written).",
            None,
            counter.metric_type(),
        )?;
        for s in &samples {
            ConstCounter::new(s.packets).encode(family.encode_family(&labels(s))?)?;
        }
        let mut family = encoder.encode_descriptor(
            "entry_bytes",
            "Bytes of the packets the entry's rules matched.",
            None,
            counter.metric_type(),
        )?;
        for s in &samples {
            ConstCounter::new(s.bytes).encode(family.encode_family(&labels(s))?)?;
        }
        let gauge = ConstGauge::new(0i64);
        let mut family = encoder.encode_descriptor(
            "entry_last_match_timestamp_seconds",
            "Unix time the agent last saw the entry's packet count grow between two refreshes.",
            None,
            gauge.metric_type(),
        )?;
        // One series per entry, whatever its families.
        let mut seen: std::collections::HashSet<(&str, usize)> = std::collections::HashSet::new();
        for s in &samples {
            let Some(at) = s.last_match else { continue };
            if !seen.insert((s.policy.as_str(), s.entry)) {
                continue;
            }
            let l = EntryLabels {
                policy: s.policy.clone(),
                entry: s.entry.to_string(),
            };
            ConstGauge::new(at).encode(family.encode_family(&l)?)?;
        }
        Ok(())
    }
}

/// The agent's metrics.
pub struct Metrics {
    registry: Registry,
    /// Time to plan and apply one reconcile.
    pub reconcile_duration: Histogram,
    /// Reconciles that failed (apply or netfilter read errors).
    pub reconcile_errors: Counter,
    /// Rules and chains added or deleted by applies.
    pub rules_changed: Counter,
    /// Refreshes that found rule drift and repaired it.
    pub drift_repairs: Counter,
    /// Repaired rule drift by kind: one per kind found at each repair.
    pub drift_by_kind: Family<DriftLabels, Counter>,
    /// Policy loads that failed validation (the last good state stays applied).
    pub policy_load_errors: Counter,
    /// 1 when the current policy documents are valid, 0 when the last load failed.
    pub policy_valid: Gauge,
    /// Rules in the node's compiled intent.
    pub intent_rules: Gauge,
    /// Time of one peer scan.
    pub scan_duration: Histogram,
    /// Probes sent by peer scans, retransmissions included.
    pub scan_probes: Counter,
    /// 1 for each port of a peer that drifts, by node, port and protocol.
    pub drift_ports: Family<PortLabels, Gauge>,
    /// Ports of the last peer scan by verdict.
    pub ports_by_verdict: Family<VerdictLabels, Gauge>,
    /// Loads of changed policy documents (valid or not); several changes can share one load.
    pub policy_loads: Counter,
    /// Loads made while the files were still changing, because the oldest change had waited
    /// the debounce's upper bound.
    pub policy_loads_forced: Counter,
    /// Time from a policy file change to its rules being in the kernel (read back).
    pub policy_apply_latency: Histogram,
    /// Unix time when valid policy documents were last loaded and applied.
    pub policy_applied_time: Gauge<f64, AtomicU64>,
    /// Kubernetes mode: PortReport writes (server-side applies) that succeeded.
    pub report_writes: Counter,
    /// Kubernetes mode: PortReport writes that failed (retried with backoff).
    pub report_write_errors: Counter,
    /// The HTTP endpoint's connections.
    pub http: HttpMetrics,
    /// Per-entry packet counters (`portwarden_entry_...`).
    pub entries: EntryMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric under the `portwarden_` prefix.
    // Over 80 lines, kept whole: one registration per metric, in the order of the fields, so
    // each name sits next to its help text and a missing one shows.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("portwarden");
        let m = Metrics {
            reconcile_duration: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            reconcile_errors: Counter::default(),
            rules_changed: Counter::default(),
            drift_repairs: Counter::default(),
            drift_by_kind: Family::default(),
            policy_load_errors: Counter::default(),
            policy_valid: Gauge::default(),
            intent_rules: Gauge::default(),
            scan_duration: Histogram::new(exponential_buckets(0.01, 2.0, 12)),
            scan_probes: Counter::default(),
            drift_ports: Family::default(),
            ports_by_verdict: Family::default(),
            policy_loads: Counter::default(),
            policy_loads_forced: Counter::default(),
            policy_apply_latency: Histogram::new(exponential_buckets(0.05, 2.0, 12)),
            policy_applied_time: Gauge::default(),
            report_writes: Counter::default(),
            report_write_errors: Counter::default(),
            http: HttpMetrics::default(),
            entries: EntryMetrics::default(),
            registry: Registry::default(),
        };
        m.http.register(&mut registry);
        registry.register(
            "reconcile_duration_seconds",
            "Time to plan and apply one reconcile",
            m.reconcile_duration.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconciles that failed",
            m.reconcile_errors.clone(),
        );
        registry.register(
            "rules_changed",
            "Rules and chains added or deleted by applies",
            m.rules_changed.clone(),
        );
        registry.register(
            "rule_drift_repairs",
            "Refreshes that found rule drift and repaired it",
            m.drift_repairs.clone(),
        );
        registry.register(
            "rule_drift",
            "Repaired rule drift by kind (jump_missing, chain_missing, rules_changed, ...)",
            m.drift_by_kind.clone(),
        );
        registry.register(
            "policy_load_errors",
            "Policy loads that failed validation",
            m.policy_load_errors.clone(),
        );
        registry.register(
            "policy_valid",
            "1 when the current policy documents are valid",
            m.policy_valid.clone(),
        );
        registry.register(
            "intent_rules",
            "Rules in this node's compiled intent",
            m.intent_rules.clone(),
        );
        registry.register(
            "scan_duration_seconds",
            "Time of one peer scan",
            m.scan_duration.clone(),
        );
        registry.register(
            "scan_probes",
            "Probes sent by peer scans",
            m.scan_probes.clone(),
        );
        registry.register(
            "drift_ports",
            "1 for each peer port that drifts",
            m.drift_ports.clone(),
        );
        registry.register(
            "ports",
            "Ports of the last peer scan by verdict",
            m.ports_by_verdict.clone(),
        );
        registry.register(
            "policy_loads",
            "Loads of changed policy documents",
            m.policy_loads.clone(),
        );
        registry.register(
            "policy_loads_forced",
            "Loads made while the policy files were still changing",
            m.policy_loads_forced.clone(),
        );
        registry.register(
            "policy_apply_latency_seconds",
            "Time from a policy file change to its rules being in the kernel",
            m.policy_apply_latency.clone(),
        );
        registry.register(
            "policy_applied_timestamp_seconds",
            "Unix time when valid policy documents were last loaded and applied",
            m.policy_applied_time.clone(),
        );
        registry.register(
            "report_writes",
            "Kubernetes mode: PortReport writes that succeeded",
            m.report_writes.clone(),
        );
        registry.register(
            "report_write_errors",
            "Kubernetes mode: PortReport writes that failed",
            m.report_write_errors.clone(),
        );
        // entry_packets (_total), entry_bytes (_total), entry_last_match_timestamp_seconds:
        // the collector's descriptors, named in `EntryMetrics::encode`.
        registry.register_collector(Box::new(m.entries.clone()));
        Metrics { registry, ..m }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        encode(&self.registry)
    }
}

/// The Prometheus text exposition of every metric in `registry`.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    match prometheus_client::encoding::text::encode(&mut out, registry) {
        Ok(()) => out,
        Err(e) => format!("# encoding failed: {e}\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_format() {
        let m = Metrics::new();
        m.rules_changed.inc_by(3);
        m.drift_ports
            .get_or_create(&PortLabels {
                node: "web-1".into(),
                port: "8080".into(),
                protocol: "tcp".into(),
            })
            .set(1);
        m.drift_by_kind
            .get_or_create(&DriftLabels {
                kind: "jump_missing".into(),
            })
            .inc();
        let text = m.encode();
        assert!(text.contains("portwarden_rules_changed_total 3"), "{text}");
        assert!(
            text.contains("portwarden_rule_drift_total{kind=\"jump_missing\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "portwarden_drift_ports{node=\"web-1\",port=\"8080\",protocol=\"tcp\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("# TYPE portwarden_reconcile_duration_seconds histogram"));
        m.http.refused("per_source");
        m.http.closed("timeout");
        let text = m.encode();
        assert!(
            text.contains("portwarden_http_connections_refused_total{reason=\"per_source\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("portwarden_http_connections_closed_total{reason=\"timeout\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("portwarden_http_connections_open 0"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn entry_counters_are_exported_as_read() {
        let m = Metrics::new();
        let sample = |family: &str, packets, last_match| EntrySample {
            policy: "quarantine".into(),
            entry: 0,
            family: family.into(),
            packets,
            bytes: packets * 60,
            last_match,
        };
        m.entries.set(vec![
            sample("ipv4", 3, Some(1_798_135_200)),
            sample("ipv6", 0, Some(1_798_135_200)),
            EntrySample {
                policy: "web".into(),
                entry: 2,
                ..sample("ipv4", 0, None)
            },
        ]);
        let text = m.encode();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("portwarden_entry_"))
            .collect();
        assert_eq!(
            lines,
            vec![
                "# HELP portwarden_entry_packets Packets the entry's rules matched (the kernel's counters, from when the rules were written).",
                "# TYPE portwarden_entry_packets counter",
                "portwarden_entry_packets_total{policy=\"quarantine\",entry=\"0\",family=\"ipv4\"} 3",
                "portwarden_entry_packets_total{policy=\"quarantine\",entry=\"0\",family=\"ipv6\"} 0",
                "portwarden_entry_packets_total{policy=\"web\",entry=\"2\",family=\"ipv4\"} 0",
                "# HELP portwarden_entry_bytes Bytes of the packets the entry's rules matched.",
                "# TYPE portwarden_entry_bytes counter",
                "portwarden_entry_bytes_total{policy=\"quarantine\",entry=\"0\",family=\"ipv4\"} 180",
                "portwarden_entry_bytes_total{policy=\"quarantine\",entry=\"0\",family=\"ipv6\"} 0",
                "portwarden_entry_bytes_total{policy=\"web\",entry=\"2\",family=\"ipv4\"} 0",
                "# HELP portwarden_entry_last_match_timestamp_seconds Unix time the agent last saw the entry's packet count grow between two refreshes.",
                "# TYPE portwarden_entry_last_match_timestamp_seconds gauge",
                "portwarden_entry_last_match_timestamp_seconds{policy=\"quarantine\",entry=\"0\"} 1798135200",
            ]
        );
        // The next refresh's snapshot replaces this one: a removed entry's series go.
        m.entries.set(Vec::new());
        let text = m.encode();
        assert!(!text.contains("policy=\"quarantine\""), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
