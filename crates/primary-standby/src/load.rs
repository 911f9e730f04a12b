//! `primary-standby load`: clients writing unique keys at a steady rate through a fault, then
//! reading every key back. What the chaos scenarios and `scripts/bench-store` measure with;
//! `--redis` puts the same workload on a Redis primary + replica, the benchmark's anchor.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use proto::{FrameCodec, StoreNodeStatus};
use serde::Serialize;
use tokio::time::Instant;

use crate::client::{Client, ClientError};
use crate::redis::RedisConnection;
use crate::witness::wall_ms;

#[derive(Debug, Clone)]
pub struct LoadPlan {
    pub nodes: Vec<String>,
    pub clients: usize,
    /// Writes per second over all clients (0: as fast as they go).
    pub rate: u64,
    pub duration: Duration,
    /// Prefix of every key, unique per run.
    pub prefix: String,
    /// Read every key back at the end (lost / unknown_applied); off for throughput runs.
    pub verify: bool,
    /// Poll every node's status this often while writing (primaryships, epochs, alerts).
    pub watch: Option<Duration>,
    /// Write to this Redis primary (SET + WAIT 1 0) instead of the store.
    pub redis: Option<String>,
}

/// Where a load client writes: the store, or the Redis anchor.
enum Writer {
    Store(Box<Client>),
    Redis(RedisConnection),
}

impl Writer {
    async fn connect(plan: &LoadPlan, codec: FrameCodec) -> anyhow::Result<Writer> {
        Ok(match &plan.redis {
            Some(addr) => Writer::Redis(RedisConnection::connect(addr).await?),
            None => Writer::Store(Box::new(Client::new(plan.nodes.clone(), codec))),
        })
    }

    async fn set(&mut self, key: &str, value: &str) -> Result<(), ClientError> {
        match self {
            Writer::Store(client) => client.set(key, value).await.map(drop),
            Writer::Redis(redis) => redis
                .set_replicated(key, value)
                .await
                .map_err(ClientError::Refused),
        }
    }

    async fn get(&mut self, key: &str) -> anyhow::Result<Option<String>> {
        match self {
            Writer::Store(client) => Ok(client.get(key).await?),
            Writer::Redis(redis) => redis.get(key).await.map_err(anyhow::Error::msg),
        }
    }
}

/// What one run saw.
#[derive(Debug, Serialize)]
pub struct LoadReport {
    pub acked: u64,
    /// Acknowledged writes whose value was not read back: must be 0.
    pub lost: u64,
    pub lost_keys: Vec<String>,
    /// Writes with no answer before the client's deadline: maybe applied, maybe not.
    pub unknown: u64,
    /// Of those, how many were found applied when read back.
    pub unknown_applied: u64,
    pub refused: u64,
    /// The longest time without an acknowledgement (wall-clock ms), and when it was.
    pub max_gap_ms: u64,
    pub gap_from_ms: u64,
    pub gap_until_ms: u64,
    pub ops_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub clients: usize,
    pub duration_ms: u64,
    /// With a watch: the most nodes whose primaryships overlap at one instant (must be 1).
    pub max_primaries_at_once: Option<u64>,
    /// With a watch: whether the epoch moved (someone was promoted).
    pub promoted: Option<bool>,
    pub epochs: Option<(u64, u64)>,
    /// With a watch: every alert any node raised.
    pub alerts: Vec<String>,
}

struct Outcome {
    key: String,
    value: String,
    done_ms: u64,
    latency: Duration,
    result: Result<(), ClientError>,
}

pub async fn run(plan: LoadPlan, codec: FrameCodec) -> anyhow::Result<LoadReport> {
    let started = Instant::now();
    let until = started + plan.duration;
    let watcher = plan.watch.map(|every| {
        let nodes = plan.nodes.clone();
        let codec = codec.clone();
        tokio::spawn(watch(nodes, codec, every, until))
    });
    let mut tasks = Vec::new();
    for index in 0..plan.clients {
        let plan = plan.clone();
        let codec = codec.clone();
        tasks.push(tokio::spawn(async move {
            let mut writer = Writer::connect(&plan, codec).await?;
            let interval = (plan.rate > 0)
                .then(|| Duration::from_secs_f64(plan.clients as f64 / plan.rate as f64));
            // Spread the clients' first writes over one interval.
            let mut next = started
                + interval.map_or(Duration::ZERO, |i| i * index as u32 / plan.clients as u32);
            let mut outcomes = Vec::new();
            let mut n = 0u64;
            while Instant::now() < until {
                if let Some(interval) = interval {
                    tokio::time::sleep_until(next).await;
                    next += interval;
                }
                n += 1;
                let key = format!("{}-{index}-{n}", plan.prefix);
                let value = format!("v{n}-{index}");
                let begin = Instant::now();
                let result = writer.set(&key, &value).await;
                outcomes.push(Outcome {
                    key,
                    value,
                    done_ms: wall_ms(),
                    latency: begin.elapsed(),
                    result,
                });
            }
            anyhow::Ok(outcomes)
        }));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.extend(task.await??);
    }
    let elapsed = started.elapsed();
    let mut reader = match plan.redis {
        Some(_) => Writer::connect(&plan, codec.clone()).await?,
        None => {
            let mut client = Client::new(plan.nodes.clone(), codec.clone());
            client.deadline = Duration::from_secs(30);
            Writer::Store(Box::new(client))
        }
    };
    let mut report = LoadReport {
        acked: 0,
        lost: 0,
        lost_keys: Vec::new(),
        unknown: 0,
        unknown_applied: 0,
        refused: 0,
        max_gap_ms: 0,
        gap_from_ms: 0,
        gap_until_ms: 0,
        ops_per_s: 0.0,
        p50_ms: 0.0,
        p99_ms: 0.0,
        max_ms: 0.0,
        clients: plan.clients,
        duration_ms: elapsed.as_millis() as u64,
        max_primaries_at_once: None,
        promoted: None,
        epochs: None,
        alerts: Vec::new(),
    };
    if let Some(watcher) = watcher {
        let seen = watcher.await?;
        report.max_primaries_at_once = Some(seen.max_overlap(wall_ms()));
        report.promoted = Some(seen.epochs.1 > seen.epochs.0);
        report.epochs = Some(seen.epochs);
        report.alerts = seen.alerts.into_iter().collect();
    }
    let mut acks = Vec::new();
    let mut latencies = Vec::new();
    for outcome in &outcomes {
        let present = if plan.verify {
            reader.get(&outcome.key).await?.as_deref() == Some(outcome.value.as_str())
        } else {
            true
        };
        match &outcome.result {
            Ok(_) => {
                report.acked += 1;
                acks.push(outcome.done_ms);
                latencies.push(outcome.latency.as_secs_f64() * 1000.0);
                if !present {
                    report.lost += 1;
                    if report.lost_keys.len() < 10 {
                        report.lost_keys.push(outcome.key.clone());
                    }
                }
            }
            Err(ClientError::Unknown { .. }) => {
                report.unknown += 1;
                report.unknown_applied += u64::from(present);
            }
            Err(ClientError::Refused(reason)) => {
                report.refused += 1;
                tracing::warn!(key = %outcome.key, %reason, "write refused");
            }
        }
    }
    acks.sort_unstable();
    for pair in acks.windows(2) {
        if pair[1] - pair[0] > report.max_gap_ms {
            report.max_gap_ms = pair[1] - pair[0];
            report.gap_from_ms = pair[0];
            report.gap_until_ms = pair[1];
        }
    }
    latencies.sort_by(f64::total_cmp);
    let pick = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    report.p50_ms = pick(0.50);
    report.p99_ms = pick(0.99);
    report.max_ms = latencies.last().copied().unwrap_or(0.0);
    report.ops_per_s = report.acked as f64 / elapsed.as_secs_f64();
    Ok(report)
}

/// What polling the nodes' status saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// (node, epoch, from_ms) → until_ms (None while it lasts, as last reported).
    primaryships: BTreeMap<(String, u64, u64), Option<u64>>,
    /// The first epoch seen and the highest.
    epochs: (u64, u64),
    alerts: BTreeSet<String>,
}

impl Seen {
    fn record(&mut self, node: &str, status: StoreNodeStatus) {
        if self.epochs == (0, 0) {
            self.epochs = (status.epoch, status.epoch);
        }
        self.epochs.1 = self.epochs.1.max(status.epoch);
        for p in status.primaryships {
            self.primaryships
                .insert((node.to_string(), p.epoch, p.from_ms), p.until_ms);
        }
        self.alerts.extend(status.alerts);
    }

    /// A node that stopped answering served no longer than until then (it is dead, or paused
    /// — and a paused node reports the true end when it resumes, replacing this one).
    fn silent(&mut self, node: &str, since_ms: u64) {
        for ((n, _, _), until) in self.primaryships.iter_mut() {
            if n == node && until.is_none() {
                *until = Some(since_ms);
            }
        }
    }

    /// The most primaryships that overlap at one instant (one still in force ends now).
    pub fn max_overlap(&self, now_ms: u64) -> u64 {
        halab_runtime::intervals::max_overlap(
            self.primaryships
                .iter()
                .map(|((_, _, from), until)| (*from, until.unwrap_or(now_ms))),
        )
    }
}

/// Polls every node's status every `every` until `until`: the primaryships they report (a
/// node that stops answering served no longer than its silence began).
pub async fn watch(nodes: Vec<String>, codec: FrameCodec, every: Duration, until: Instant) -> Seen {
    let client = Client::new(nodes.clone(), codec);
    let mut seen = Seen::default();
    let mut silent_since: BTreeMap<String, u64> = BTreeMap::new();
    while Instant::now() < until {
        for node in &nodes {
            let asked = wall_ms();
            match tokio::time::timeout(every * 4, client.status(node)).await {
                Ok(Ok(status)) => {
                    silent_since.remove(node);
                    seen.record(node, status);
                }
                _ => {
                    let since = *silent_since.entry(node.clone()).or_insert(asked);
                    seen.silent(node, since);
                }
            }
        }
        tokio::time::sleep(every).await;
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_primaryships_are_counted_and_touching_ones_are_not() {
        let mut seen = Seen::default();
        seen.primaryships.insert(("a".into(), 1, 100), Some(200));
        seen.primaryships.insert(("b".into(), 2, 200), Some(300));
        assert_eq!(seen.max_overlap(1_000), 1);
        seen.primaryships.insert(("c".into(), 3, 250), None);
        assert_eq!(seen.max_overlap(1_000), 2);
        // A silent node's open primaryship ends when it fell silent.
        seen.silent("c", 260);
        assert_eq!(seen.max_overlap(1_000), 2);
        seen.silent("c", 320);
        assert_eq!(seen.primaryships[&("c".into(), 3, 250)], Some(260));
    }
}
