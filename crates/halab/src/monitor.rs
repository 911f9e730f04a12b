//! The monitor seen from outside: its failover counter (the soak), and whether it is at rest
//! after a nemesis run — every node it watches up, and its front door serving what the store
//! holds.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::history::{Operation, Outcome};

/// `halab_monitor_failovers_total` from the monitor's /metrics.
pub async fn failovers(monitor: &str) -> anyhow::Result<u64> {
    let body = http_get(monitor, "/metrics").await?;
    parse_counter(&body, "halab_monitor_failovers_total")
        .ok_or_else(|| anyhow::anyhow!("{monitor}/metrics has no halab_monitor_failovers_total"))
}

fn parse_counter(metrics: &str, name: &str) -> Option<u64> {
    metrics.lines().find_map(|line| {
        let (metric, value) = line.split_once(' ')?;
        (metric == name).then(|| value.trim().parse().ok())?
    })
}

/// A plain HTTP/1.0 GET: the body, if the answer is 200.
pub async fn http_get(addr: &str, path: &str) -> anyhow::Result<String> {
    http(addr, "GET", path, "").await
}

/// A plain HTTP/1.0 PUT of `body`: the answer's body, if it is 200.
pub async fn http_put(addr: &str, path: &str, body: &str) -> anyhow::Result<String> {
    http(addr, "PUT", path, body).await
}

async fn http(addr: &str, method: &str, path: &str, body: &str) -> anyhow::Result<String> {
    let mut conn =
        tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
            .await??;
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: {host}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(request.as_bytes()).await?;
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), conn.read_to_string(&mut answer)).await??;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("{method} {addr}{path}: no HTTP answer"))?;
    anyhow::ensure!(
        head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
        "{method} {addr}{path}: {}",
        head.lines().next().unwrap_or("")
    );
    Ok(body.to_string())
}

/// Every node the monitor watches, and the state it gives it (up, service-down, …).
pub async fn node_states(addr: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let status: serde_json::Value = serde_json::from_str(&http_get(addr, "/api/status").await?)?;
    let nodes = status["nodes"].as_array().cloned().unwrap_or_default();
    Ok(nodes
        .iter()
        .filter_map(|node| {
            let addr = node["addr"].as_str()?;
            let state = node["state"].as_str()?;
            Some((addr.to_string(), state.to_string()))
        })
        .collect())
}

/// The monitor at rest after a run.
#[derive(Debug, Serialize)]
pub struct Settled {
    /// From the call until every watched node was up in its /api/status.
    pub all_up_after_ms: u64,
    /// Keys the front door was asked for (those the store's final reads answered), and those
    /// whose value differed from the store's (or could not be read).
    pub keys_read: usize,
    pub keys_differing: Vec<String>,
}

impl Settled {
    pub fn ok(&self) -> bool {
        self.keys_differing.is_empty()
    }
}

/// Waits (up to `limit`) until the monitor at `addr` sees every store, election and dispatcher
/// node up, then reads each key of `final_reads` through its front door.
pub async fn settled(
    addr: &str,
    final_reads: &[Operation],
    limit: Duration,
) -> anyhow::Result<Settled> {
    let began = Instant::now();
    loop {
        match http_get(addr, "/api/status").await {
            Ok(body) if all_up(&serde_json::from_str(&body)?) => break,
            _ => {}
        }
        anyhow::ensure!(
            began.elapsed() < limit,
            "the monitor did not see every node up within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all_up_after_ms = began.elapsed().as_millis() as u64;
    let mut keys_differing = Vec::new();
    // Only reads the store answered say what the front door should serve.
    let answered: Vec<&Operation> = final_reads
        .iter()
        .filter(|op| op.is_read() && matches!(op.outcome, Outcome::Ok { .. }))
        .collect();
    for read in &answered {
        let key = read.call.key();
        let served = http_get(addr, &format!("/kv/{key}"))
            .await
            .ok()
            .and_then(|body| serde_json::from_str::<serde_json::Value>(&body).ok())
            .and_then(|body| body["value"].as_str().map(str::to_string));
        if served.as_deref() != read.value() {
            keys_differing.push(key.to_string());
        }
    }
    Ok(Settled {
        all_up_after_ms,
        keys_read: answered.len(),
        keys_differing,
    })
}

/// Whether an /api/status says every node of every system it watches is up.
fn all_up(status: &serde_json::Value) -> bool {
    let system_up = |name: &str| {
        let system = &status[name];
        system.is_null() || (system["up"].as_u64().is_some() && system["up"] == system["nodes"])
    };
    let dispatcher = &status["dispatcher"];
    system_up("store")
        && system_up("election")
        && (dispatcher.is_null() || dispatcher["up"] == true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_is_read_by_its_exact_name() {
        let metrics = "# TYPE halab_monitor_failovers_total counter\n\
                       halab_monitor_failovers_total_extra 9\n\
                       halab_monitor_failovers_total 3\n";
        assert_eq!(
            parse_counter(metrics, "halab_monitor_failovers_total"),
            Some(3)
        );
        assert_eq!(parse_counter(metrics, "missing"), None);
    }

    #[test]
    fn every_watched_node_must_be_up() {
        let status = |store_up: u64, dispatcher_up: bool| {
            serde_json::json!({
                "store": { "nodes": 3, "up": store_up },
                "election": { "nodes": 5, "up": 5 },
                "dispatcher": { "up": dispatcher_up },
            })
        };
        assert!(all_up(&status(3, true)));
        assert!(!all_up(&status(2, true)));
        assert!(!all_up(&status(3, false)));
        assert!(all_up(
            &serde_json::json!({ "store": null, "election": null, "dispatcher": null })
        ));
    }
}
