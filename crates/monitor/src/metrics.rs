//! `GET /metrics`: Prometheus' text format (version 0.0.4), written by hand — a few families,
//! no client library needed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use crate::poller::NodeHealth;

/// A counter by label values.
#[derive(Debug)]
pub struct Counts<K> {
    counts: Mutex<BTreeMap<K, u64>>,
}

impl<K> Default for Counts<K> {
    fn default() -> Counts<K> {
        Counts {
            counts: Mutex::new(BTreeMap::new()),
        }
    }
}

impl<K: Ord + Clone> Counts<K> {
    pub fn record(&self, key: K) {
        *self
            .counts
            .lock()
            .expect("not poisoned")
            .entry(key)
            .or_default() += 1;
    }

    fn snapshot(&self) -> BTreeMap<K, u64> {
        self.counts.lock().expect("not poisoned").clone()
    }
}

/// Requests served, by route (the pattern matched, not the path: keys would explode the
/// label set) and status code.
pub type RequestCounts = Counts<(String, u16)>;

/// Requests the balancer sent to a store node, by node and outcome (`ok` or `failed`).
pub type UpstreamCounts = Counts<(String, &'static str)>;

/// What the exposition is made of.
#[derive(Debug)]
pub struct Sources<'a> {
    pub nodes: &'a [NodeHealth],
    pub requests: &'a RequestCounts,
    pub upstreams: &'a UpstreamCounts,
    /// Events so far, by kind (`failover`, `leader`, `removal`…).
    pub events: &'a BTreeMap<&'static str, u64>,
}

/// The whole exposition.
pub fn render(sources: &Sources) -> String {
    let Sources {
        nodes,
        requests,
        upstreams,
        events,
    } = *sources;
    let mut out = String::new();
    family(
        &mut out,
        "halab_monitor_node_state",
        "gauge",
        "1 for the state the monitor holds a node in",
    );
    for node in nodes {
        let state = serde_json::to_value(node.state).unwrap_or_default();
        let _ = writeln!(
            out,
            "halab_monitor_node_state{{addr=\"{}\",system=\"{}\",state=\"{}\"}} 1",
            escape(&node.addr),
            system_name(node),
            state.as_str().unwrap_or("unknown")
        );
    }
    family(
        &mut out,
        "halab_monitor_checks_total",
        "counter",
        "checks made of a node",
    );
    for node in nodes {
        let _ = writeln!(
            out,
            "halab_monitor_checks_total{{addr=\"{}\"}} {}",
            escape(&node.addr),
            node.checks
        );
    }
    for (name, help, pick) in [
        (
            "halab_monitor_machine_rtt_ms",
            "the latest ICMP echo's round trip",
            (|n: &NodeHealth| n.machine_ms) as fn(&NodeHealth) -> Option<f64>,
        ),
        (
            "halab_monitor_service_rtt_ms",
            "the latest service ping's round trip",
            |n: &NodeHealth| n.service_ms,
        ),
    ] {
        family(&mut out, name, "gauge", help);
        for node in nodes {
            if let Some(ms) = pick(node) {
                let _ = writeln!(out, "{name}{{addr=\"{}\"}} {ms}", escape(&node.addr));
            }
        }
    }
    family(
        &mut out,
        "halab_monitor_requests_total",
        "counter",
        "HTTP requests served, by route and status",
    );
    for ((route, status), count) in requests.snapshot() {
        let _ = writeln!(
            out,
            "halab_monitor_requests_total{{route=\"{}\",status=\"{status}\"}} {count}",
            escape(&route)
        );
    }
    family(
        &mut out,
        "halab_monitor_upstream_requests_total",
        "counter",
        "requests the balancer sent to a store node (sums, stale reads), by node and outcome",
    );
    for ((addr, outcome), count) in upstreams.snapshot() {
        let _ = writeln!(
            out,
            "halab_monitor_upstream_requests_total{{addr=\"{}\",outcome=\"{outcome}\"}} {count}",
            escape(&addr)
        );
    }
    family(
        &mut out,
        "halab_monitor_failovers_total",
        "counter",
        "new store primaries seen since the monitor started",
    );
    let failovers = events.get("failover").copied().unwrap_or(0);
    let _ = writeln!(out, "halab_monitor_failovers_total {failovers}");
    family(
        &mut out,
        "halab_monitor_events_total",
        "counter",
        "events logged, by kind (health, failover, alert, leader, recolour, removal)",
    );
    for (kind, count) in events.iter() {
        let _ = writeln!(out, "halab_monitor_events_total{{kind=\"{kind}\"}} {count}");
    }
    out
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn system_name(node: &NodeHealth) -> String {
    serde_json::to_value(node.system)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// A label value with `\`, `"` and newlines escaped, as the format asks.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
