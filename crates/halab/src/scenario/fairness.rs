//! `fairness`: the worker fleet recreated with self-termination off (so that the set of
//! workers holds still), the dispatcher restarted (its accounting begins anew), and then, for
//! the measured window, the largest fairness gap the dispatcher reports must stay within the
//! bound it guarantees — and, independently of what it says about itself, the gap computed
//! from the workers' own activation counts over the window within twice that bound (a
//! window's gap is the difference of two cumulative ones). The fleet is put back as it was.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::{StreamExt, TryStreamExt};
use proto::FrameCodec;
use serde_json::{Map, Value, json};

use super::{millis, wait_until};
use crate::dispatch;
use crate::lab::Lab;

#[derive(Debug, Clone)]
pub struct FairnessRun {
    /// The dispatcher's status address.
    pub dispatcher: String,
    pub project: String,
    /// The measured window.
    pub duration: Duration,
}

/// The workers' setting that makes them leave after a deactivation, by chance.
const TERMINATE: &str = "HALAB_TERMINATE_PROBABILITY";
/// Containers recreated at once.
const AT_ONCE: usize = 8;

pub async fn run(run: FairnessRun, codec: FrameCodec) -> anyhow::Result<Map<String, Value>> {
    let lab = Lab::open(&run.project)?;
    let workers = lab.workers().await?;
    let original = lab.env_of(&workers[0].0, TERMINATE).await?;
    tracing::info!(
        workers = workers.len(),
        "recreating the workers with self-termination off"
    );
    recreate_fleet(&lab, Some("0")).await?;
    let outcome = measure(&lab, &run, &codec, workers.len()).await;
    tracing::info!(?original, "restoring the fleet's self-termination");
    recreate_fleet(&lab, original.as_deref()).await?;
    outcome
}

async fn recreate_fleet(lab: &Lab, terminate: Option<&str>) -> anyhow::Result<()> {
    let workers = lab.workers().await?;
    futures_util::stream::iter(workers)
        .map(|(id, _)| async move { lab.recreate(&id, TERMINATE, terminate).await })
        .buffer_unordered(AT_ONCE)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

async fn measure(
    lab: &Lab,
    run: &FairnessRun,
    codec: &FrameCodec,
    expected: usize,
) -> anyhow::Result<Map<String, Value>> {
    let (dispatcher, _) = lab.containers("dispatcher").await?.swap_remove(0);
    lab.restart(&dispatcher).await?;
    let (_, registered) = wait_until(
        &format!("{expected} registered workers"),
        Duration::from_secs(60),
        async || {
            let status = dispatch::status(&run.dispatcher, codec).await?;
            (status.worker_count as usize >= expected).then_some(())
        },
    )
    .await?;
    let at_start = counts(lab).await?;
    tracing::info!(duration = ?run.duration, "measuring");
    let mut reported = Reported::default();
    let until = Instant::now() + run.duration;
    while Instant::now() < until {
        if let Some(status) = dispatch::status(&run.dispatcher, codec).await {
            reported.saw(status.fairness_gap, status.fairness_bound);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let at_end = counts(lab).await?;
    anyhow::ensure!(
        reported.samples > 0,
        "the dispatcher never answered during the measurement"
    );
    let shares = Shares::of(&at_start, &at_end);
    let ok = reported.worst_margin >= -1e-9
        && shares.activations > 0
        && shares.gap <= 2.0 * reported.bound
        && shares.workers == expected;
    let round = |x: f64, places: i32| (x * 10f64.powi(places)).round() / 10f64.powi(places);
    let by_weight: BTreeMap<String, Value> = shares
        .by_weight
        .iter()
        .map(|(weight, (counted, share))| {
            let figures = json!({ "counted": counted, "share": round(*share, 1) });
            (weight.to_string(), figures)
        })
        .collect();
    let report = json!({
        "duration_s": run.duration.as_secs(),
        "workers": shares.workers,
        "registered_after_ms": millis(registered),
        "activations": shares.activations,
        "activations_by_weight": by_weight,
        "gap_from_workers": round(shares.gap, 3),
        "max_gap_reported": round(reported.worst_gap, 3),
        "bound": round(reported.bound, 3),
        "samples": reported.samples,
        "ok": ok,
    });
    match report {
        Value::Object(map) => Ok(map),
        _ => anyhow::bail!("a report is an object"),
    }
}

/// Each worker container's name → (weight, activations), as its worker process reports
/// itself (its status port listens on the container's loopback: read through the engine).
async fn counts(lab: &Lab) -> anyhow::Result<BTreeMap<String, (u32, u64)>> {
    let workers = lab.workers().await?;
    let answers: Vec<_> = futures_util::stream::iter(workers)
        .map(|(id, name)| async move {
            let command = ["worker", "status", "--json", "--timeout-ms=2000"];
            (name, lab.exec(&id, &command).await)
        })
        .buffer_unordered(AT_ONCE)
        .collect()
        .await;
    Ok(answers
        .into_iter()
        .filter_map(|(name, answer)| Some((name, own_count(&answer.ok()?)?)))
        .collect())
}

/// (weight, activations summed over its tasks) from `worker status --json`.
fn own_count(status: &str) -> Option<(u32, u64)> {
    let status: Value = serde_json::from_str(status).ok()?;
    let tasks = status["workers"].as_array()?;
    let weight = tasks.first()?["weight"].as_u64()? as u32;
    let activations = tasks.iter().filter_map(|t| t["activations"].as_u64()).sum();
    Some((weight, activations))
}

/// What the dispatcher said of itself over the window.
#[derive(Debug, Default)]
struct Reported {
    samples: u64,
    worst_gap: f64,
    /// The least of bound − gap over the samples: must not be negative.
    worst_margin: f64,
    /// The last bound reported.
    bound: f64,
}

impl Reported {
    fn saw(&mut self, gap: f64, bound: f64) {
        let margin = bound - gap;
        self.worst_margin = if self.samples == 0 {
            margin
        } else {
            self.worst_margin.min(margin)
        };
        self.samples += 1;
        self.worst_gap = self.worst_gap.max(gap);
        self.bound = bound;
    }
}

/// The window's activations against each worker's weighted share of them.
#[derive(Debug, PartialEq)]
struct Shares {
    /// Workers counted at both ends.
    workers: usize,
    activations: u64,
    /// weight → (activations counted, their weighted share), over the workers of that weight.
    by_weight: BTreeMap<u32, (u64, f64)>,
    /// The largest |counted − share| of one worker.
    gap: f64,
}

impl Shares {
    /// Pure: from each worker's (weight, activations) at the start and at the end.
    fn of(start: &BTreeMap<String, (u32, u64)>, end: &BTreeMap<String, (u32, u64)>) -> Shares {
        let deltas: Vec<(u32, u64)> = end
            .iter()
            .filter_map(|(name, (weight, count))| {
                let (_, before) = start.get(name)?;
                Some((*weight, count.saturating_sub(*before)))
            })
            .collect();
        let activations: u64 = deltas.iter().map(|(_, d)| d).sum();
        let weights: u64 = deltas.iter().map(|(w, _)| u64::from(*w)).sum();
        let share = |weight: u32| {
            if weights == 0 {
                0.0
            } else {
                activations as f64 * f64::from(weight) / weights as f64
            }
        };
        let mut by_weight = BTreeMap::new();
        let mut gap = 0f64;
        for (weight, counted) in &deltas {
            let entry = by_weight.entry(*weight).or_insert((0, 0.0));
            entry.0 += counted;
            entry.1 += share(*weight);
            gap = gap.max((*counted as f64 - share(*weight)).abs());
        }
        Shares {
            workers: deltas.len(),
            activations,
            by_weight,
            gap,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet(counts: &[(&str, u32, u64)]) -> BTreeMap<String, (u32, u64)> {
        counts
            .iter()
            .map(|(name, weight, count)| (name.to_string(), (*weight, *count)))
            .collect()
    }

    #[test]
    fn each_worker_is_measured_against_its_weighted_share_of_the_window() {
        let start = fleet(&[("a", 1, 10), ("b", 3, 100), ("gone", 2, 5)]);
        let end = fleet(&[("a", 1, 15), ("b", 3, 115), ("new", 5, 9)]);
        let shares = Shares::of(&start, &end);
        // 20 activations over weights 1 + 3: shares 5 and 15, counted 5 and 15.
        assert_eq!(shares.workers, 2, "only workers counted at both ends");
        assert_eq!(shares.activations, 20);
        assert_eq!(shares.by_weight[&1], (5, 5.0));
        assert_eq!(shares.by_weight[&3], (15, 15.0));
        assert_eq!(shares.gap, 0.0);
        let skewed = Shares::of(&start, &fleet(&[("a", 1, 20), ("b", 3, 110)]));
        assert_eq!(skewed.gap, 5.0, "a: 10 counted against a share of 5");
    }

    #[test]
    fn the_worst_margin_is_the_least_of_bound_minus_gap() {
        let mut reported = Reported::default();
        reported.saw(1.0, 3.0);
        reported.saw(2.5, 3.0);
        reported.saw(0.5, 2.8);
        assert_eq!(reported.samples, 3);
        assert_eq!(reported.worst_gap, 2.5);
        assert_eq!(reported.worst_margin, 0.5);
        assert_eq!(reported.bound, 2.8);
        reported.saw(3.0, 2.8);
        assert!(reported.worst_margin < 0.0);
    }

    #[test]
    fn a_workers_own_count_sums_its_tasks() {
        let status = r#"{"workers":[{"weight":3,"activations":4},{"weight":3,"activations":2}]}"#;
        assert_eq!(own_count(status), Some((3, 6)));
        assert_eq!(own_count("not json"), None);
        assert_eq!(own_count(r#"{"workers":[]}"#), None);
    }
}
