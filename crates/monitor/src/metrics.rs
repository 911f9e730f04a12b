//! `GET /metrics`: Prometheus' text format (version 0.0.4), written by hand — a few families,
//! no client library needed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use crate::poller::NodeHealth;

/// Requests served, by route (the pattern matched, not the path: keys would explode the
/// label set) and status code.
#[derive(Debug, Default)]
pub struct RequestCounts {
    counts: Mutex<BTreeMap<(String, u16), u64>>,
}

impl RequestCounts {
    pub fn record(&self, route: &str, status: u16) {
        *self
            .counts
            .lock()
            .expect("not poisoned")
            .entry((route.to_string(), status))
            .or_default() += 1;
    }

    fn snapshot(&self) -> BTreeMap<(String, u16), u64> {
        self.counts.lock().expect("not poisoned").clone()
    }
}

/// The whole exposition.
pub fn render(nodes: &[NodeHealth], requests: &RequestCounts) -> String {
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
