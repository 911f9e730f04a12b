//! `front-door-failover`: clients that know only the monitor's front door write through it
//! while the store's primary exits on an admin kill. They must get no error, lose nothing
//! they were told was written, and wait no longer than the store's own client waited (its
//! outage, measured in the same run beside them) plus one poll interval of the monitor: the
//! front door finds the new primary within a poll.

use std::time::{Duration, Instant};

use primary_standby::load::{self, LoadPlan, LoadReport};
use primary_standby::witness::wall_ms;
use proto::FrameCodec;
use serde_json::{Map, Value, json};

use super::store::admin_kill;
use super::{millis, wait_until};
use crate::chaos::steady;
use crate::monitor::{http_get, http_put, node_states};

#[derive(Debug, Clone)]
pub struct FrontDoorRun {
    /// The monitor's HTTP address on the lab network.
    pub monitor: String,
    /// The store's client addresses (store1:7300, …).
    pub nodes: Vec<String>,
    /// The store's admin token (seed 001's kill).
    pub admin_token: String,
}

/// The monitor's poll interval in the lab (its default).
const POLL_MS: u64 = 500;
const CLIENTS: usize = 4;
/// Writes per second through the front door, all clients together.
const RATE: u64 = 200;
const WRITE_FOR: Duration = Duration::from_secs(12);
/// The store's own client starts with the HTTP clients; the kill comes this long after.
const LEAD: Duration = Duration::from_secs(3);

/// One write through the front door.
#[derive(Debug, Clone, PartialEq)]
struct Put {
    key: String,
    value: String,
    /// Whether the front door said 200.
    acked: bool,
    /// Milliseconds from the start of the run to the answer.
    done_ms: u64,
}

pub async fn run(run: FrontDoorRun, codec: FrameCodec) -> anyhow::Result<Map<String, Value>> {
    let primary = steady(&run.nodes, &codec).await?;
    wait_until(
        "the monitor's front door",
        Duration::from_secs(60),
        async || node_states(&run.monitor).await.ok(),
    )
    .await?;
    let prefix = format!("fd{}", wall_ms());
    let began = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|index| {
            let monitor = run.monitor.clone();
            let prefix = format!("{prefix}-{index}");
            tokio::spawn(write_through(monitor, prefix, began))
        })
        .collect();
    // The store's own client writes alongside, straight to the nodes: the outage to compare.
    let plan = LoadPlan {
        nodes: run.nodes.clone(),
        clients: 4,
        rate: 300,
        duration: Duration::from_secs(10),
        prefix: format!("{prefix}-store"),
        verify: true,
        watch: Some(Duration::from_millis(20)),
        redis: None,
    };
    let load = tokio::spawn(load::run(plan, codec.clone()));
    tokio::time::sleep(LEAD).await;
    let kill_from = millis(began.elapsed());
    admin_kill(&run.nodes, &run.admin_token, &primary, &codec).await?;
    let kill_until = millis(began.elapsed());
    let store = load.await??;
    let mut puts = Vec::new();
    for client in clients {
        puts.extend(client.await?);
    }
    let final_primary = steady(&run.nodes, &codec).await?;
    let mut lost = 0;
    for put in puts.iter().filter(|put| put.acked) {
        if read_back(&run.monitor, &put.key).await.as_deref() != Some(put.value.as_str()) {
            lost += 1;
        }
    }
    let mut report = judge(&puts, lost, &store, (kill_from, kill_until));
    let moved = final_primary != primary;
    let service = |node: &str| {
        node.rsplit_once(':')
            .map_or(node, |(host, _)| host)
            .to_string()
    };
    report.insert("primary".into(), service(&primary).into());
    report.insert("final_primary".into(), service(&final_primary).into());
    let ok = report["ok"] == true && moved;
    report.insert("ok".into(), ok.into());
    Ok(report)
}

/// One client: `RATE / CLIENTS` writes a second of unique keys for `WRITE_FOR`, each waiting
/// for its answer (a client that is kept waiting writes less, as a real one would).
async fn write_through(monitor: String, prefix: String, began: Instant) -> Vec<Put> {
    let every = Duration::from_secs_f64(CLIENTS as f64 / RATE as f64);
    let mut puts = Vec::new();
    let mut n = 0u32;
    while began.elapsed() < WRITE_FOR {
        n += 1;
        let key = format!("{prefix}-{n}");
        let value = format!("v{n}");
        let acked = http_put(&monitor, &format!("/kv/{key}"), &value)
            .await
            .is_ok();
        puts.push(Put {
            key,
            value,
            acked,
            done_ms: millis(began.elapsed()),
        });
        tokio::time::sleep_until((began + every * n).into()).await;
    }
    puts
}

/// The value the front door reads for `key`, if it answers 200.
async fn read_back(monitor: &str, key: &str) -> Option<String> {
    let body = http_get(monitor, &format!("/kv/{key}")).await.ok()?;
    let body: Value = serde_json::from_str(&body).ok()?;
    body["value"].as_str().map(str::to_string)
}

/// The figures and the verdict (pure): `lost` of the acknowledged writes did not read back;
/// `kill` is when the kill request left and returned, in ms from the start.
fn judge(puts: &[Put], lost: usize, store: &LoadReport, kill: (u64, u64)) -> Map<String, Value> {
    let mut acked: Vec<u64> = puts.iter().filter(|p| p.acked).map(|p| p.done_ms).collect();
    acked.sort_unstable();
    let (outage, outage_from) = acked
        .windows(2)
        .map(|pair| (pair[1] - pair[0], pair[0]))
        .max()
        .unwrap_or((0, 0));
    let errors = puts.len() - acked.len();
    let allowed = store.max_gap_ms + POLL_MS;
    let store_held = store.lost == 0
        && store.refused == 0
        && store.acked > 0
        && store.max_primaries_at_once == Some(1)
        && store.promoted == Some(true);
    let ok = errors == 0 && lost == 0 && !acked.is_empty() && outage <= allowed && store_held;
    let figures = json!({
        "requests": puts.len(),
        "acked": acked.len(),
        "errors": errors,
        "lost": lost,
        "outage_ms": outage,
        "store_outage_ms": store.max_gap_ms,
        "allowed_ms": allowed,
        "outage_covers_kill": outage_from <= kill.1 && outage_from + outage >= kill.0,
        "store_lost": store.lost,
        "ok": ok,
    });
    match figures {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(max_gap_ms: u64) -> LoadReport {
        LoadReport {
            max_gap_ms,
            ..crate::scenario::promoted_load()
        }
    }

    /// Writes answered every 20 ms, but none between `gap.0` and `gap.1`.
    fn puts(gap: (u64, u64)) -> Vec<Put> {
        (0..300)
            .map(|i| i * 20)
            .filter(|done| *done <= gap.0 || *done >= gap.1)
            .map(|done_ms| Put {
                key: format!("k{done_ms}"),
                value: "v".into(),
                acked: true,
                done_ms,
            })
            .collect()
    }

    #[test]
    fn the_front_door_may_wait_one_poll_longer_than_the_store() {
        let report = judge(&puts((3_000, 3_600)), 0, &store(200), (3_010, 3_020));
        assert_eq!(report["outage_ms"], 600);
        assert_eq!(report["allowed_ms"], 700);
        assert_eq!(report["outage_covers_kill"], true);
        assert_eq!(report["ok"], true);
        let slow = judge(&puts((3_000, 3_800)), 0, &store(200), (3_010, 3_020));
        assert_eq!(slow["ok"], false, "800 ms > 200 + 500");
    }

    #[test]
    fn an_error_a_lost_write_or_a_store_that_lost_one_fails_it() {
        let mut with_error = puts((3_000, 3_100));
        with_error[10].acked = false;
        let report = judge(&with_error, 0, &store(200), (3_010, 3_020));
        assert_eq!(
            (report["errors"].clone(), report["ok"].clone()),
            (json!(1), json!(false))
        );
        assert_eq!(
            judge(&puts((3_000, 3_100)), 1, &store(200), (0, 0))["ok"],
            false
        );
        let mut lossy = store(200);
        lossy.lost = 1;
        assert_eq!(judge(&puts((3_000, 3_100)), 0, &lossy, (0, 0))["ok"], false);
        assert_eq!(judge(&[], 0, &store(200), (0, 0))["ok"], false);
    }
}
