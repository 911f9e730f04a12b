//! Bounded logging of rejected input. A flood of bad frames must not become a flood of log
//! lines (20 000 bad datagrams once left 10 270 WARN lines): per interval, the first few
//! rejections of each source are logged in full, the rest only counted, and at the end of the
//! interval one summary line per source says how many were dropped and why. The counters
//! themselves stay exact.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use proto::ProtoError;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Rejections logged in full per source and interval.
pub const LINES_PER_SOURCE: u32 = 3;
/// Sources followed one by one per interval; the rest are summed up in one line.
pub const SOURCES_TRACKED: usize = 32;
/// How often suppressed rejections are summarised.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(10);

/// Exact totals since start, by class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropCounts {
    /// Frames without a valid tag for the cluster key.
    pub auth_failures: u64,
    /// Authentic frames seen before or out of date: replays.
    pub replayed: u64,
    /// Everything else that did not decode.
    pub bad_frames: u64,
}

#[derive(Debug, Default)]
struct Window {
    dropped: u64,
    logged: u32,
    reasons: BTreeMap<&'static str, u64>,
}

impl Window {
    fn add(&mut self, reason: &'static str) {
        self.dropped += 1;
        *self.reasons.entry(reason).or_default() += 1;
    }
}

/// One "dropped N bad frames from X" line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// `None`: the sources beyond [`SOURCES_TRACKED`], together.
    pub source: Option<IpAddr>,
    pub dropped: u64,
    pub interval: Duration,
    pub reasons: Vec<(&'static str, u64)>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.source {
            Some(source) => write!(f, "dropped {} bad frames from {source}", self.dropped)?,
            None => write!(f, "dropped {} bad frames from other sources", self.dropped)?,
        }
        write!(f, " in the last {} s:", self.interval.as_secs())?;
        for (i, (reason, count)) in self.reasons.iter().enumerate() {
            let sep = if i == 0 { " " } else { ", " };
            write!(f, "{sep}{reason} ×{count}")?;
        }
        Ok(())
    }
}

/// The decision core, without clocks or logging of its own.
#[derive(Debug)]
pub struct RejectLog {
    interval: Duration,
    window_start: Instant,
    sources: HashMap<IpAddr, Window>,
    others: Window,
    totals: DropCounts,
}

impl RejectLog {
    pub fn new(now: Instant, interval: Duration) -> Self {
        RejectLog {
            interval,
            window_start: now,
            sources: HashMap::new(),
            others: Window::default(),
            totals: DropCounts::default(),
        }
    }

    /// Counts one rejection; true when it should be logged in full.
    pub fn record(&mut self, source: IpAddr, error: &ProtoError) -> bool {
        if error.is_auth_failure() {
            self.totals.auth_failures += 1;
        } else if error.is_replay() {
            self.totals.replayed += 1;
        } else {
            self.totals.bad_frames += 1;
        }
        let tracked = self.sources.len() < SOURCES_TRACKED || self.sources.contains_key(&source);
        let window = if tracked {
            self.sources.entry(source).or_default()
        } else {
            &mut self.others
        };
        window.add(error.reason());
        if tracked && window.logged < LINES_PER_SOURCE {
            window.logged += 1;
            true
        } else {
            false
        }
    }

    pub fn totals(&self) -> DropCounts {
        self.totals
    }

    /// Once the interval has passed: a summary for every source with rejections that were not
    /// logged in full, and a fresh interval.
    pub fn summaries(&mut self, now: Instant) -> Vec<Summary> {
        if now.duration_since(self.window_start) < self.interval {
            return Vec::new();
        }
        let interval = now.duration_since(self.window_start);
        self.window_start = now;
        let summary = |source, window: Window| Summary {
            source,
            dropped: window.dropped,
            interval,
            reasons: window.reasons.into_iter().collect(),
        };
        let mut summaries: Vec<Summary> = self
            .sources
            .drain()
            .filter(|(_, w)| w.dropped > u64::from(w.logged))
            .map(|(source, window)| summary(Some(source), window))
            .collect();
        summaries.sort_by_key(|s| s.source);
        let others = std::mem::take(&mut self.others);
        if others.dropped > 0 {
            summaries.push(summary(None, others));
        }
        summaries
    }
}

/// [`RejectLog`] shared by a daemon's tasks, logging through `tracing`.
#[derive(Debug)]
pub struct Rejections {
    log: Mutex<RejectLog>,
}

impl Default for Rejections {
    fn default() -> Self {
        Rejections::new(SUMMARY_INTERVAL)
    }
}

impl Rejections {
    pub fn new(interval: Duration) -> Self {
        Rejections {
            log: Mutex::new(RejectLog::new(Instant::now(), interval)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RejectLog> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a dropped frame from `from` (`what` says where it arrived) and logs it if this
    /// source has not used up its lines for the interval.
    pub fn reject(&self, from: SocketAddr, what: &str, error: &ProtoError) {
        let (log_it, summaries) = {
            let mut log = self.lock();
            let log_it = log.record(from.ip(), error);
            (log_it, log.summaries(Instant::now()))
        };
        if log_it {
            tracing::warn!(%from, error = %error, "dropping bad {what}");
        }
        emit(summaries);
    }

    pub fn totals(&self) -> DropCounts {
        self.lock().totals()
    }

    /// Prints the summaries of each interval, also when no further rejection comes to do it.
    pub async fn report(&self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.lock().interval);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let summaries = self.lock().summaries(Instant::now());
            emit(summaries);
        }
    }
}

fn emit(summaries: Vec<Summary>) {
    for summary in summaries {
        tracing::warn!("{summary}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(i: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i))
    }

    #[test]
    fn a_flood_from_one_source_logs_a_few_lines_and_one_summary() {
        let start = Instant::now();
        let mut log = RejectLog::new(start, SUMMARY_INTERVAL);
        let logged = (0..20_000)
            .filter(|i| {
                let error = if i % 2 == 0 {
                    ProtoError::BadAuthTag
                } else {
                    ProtoError::BadMagic(0)
                };
                log.record(source(1), &error)
            })
            .count();
        assert_eq!(logged, LINES_PER_SOURCE as usize);
        assert!(log.summaries(start + Duration::from_secs(1)).is_empty());
        let summaries = log.summaries(start + SUMMARY_INTERVAL);
        assert_eq!(summaries.len(), 1);
        assert_eq!(summaries[0].dropped, 20_000);
        assert_eq!(
            summaries[0].reasons,
            vec![("bad auth tag", 10_000), ("bad magic", 10_000)]
        );
        assert_eq!(
            log.totals(),
            DropCounts {
                auth_failures: 10_000,
                replayed: 0,
                bad_frames: 10_000
            }
        );
        // A new interval: the source may be logged again, and a quiet one summarises nothing.
        assert!(log.record(source(1), &ProtoError::BadMagic(0)));
        assert!(log.summaries(start + SUMMARY_INTERVAL * 2).is_empty());
    }

    #[test]
    fn many_sources_are_bounded_too() {
        let start = Instant::now();
        let mut log = RejectLog::new(start, SUMMARY_INTERVAL);
        let mut lines = 0;
        for i in 0..20_000u32 {
            lines += usize::from(log.record(source(i % 5_000), &ProtoError::BadMagic(0)));
        }
        let summaries = log.summaries(start + SUMMARY_INTERVAL);
        lines += summaries.len();
        let bound = SOURCES_TRACKED * (LINES_PER_SOURCE as usize + 1) + 1;
        assert!(lines <= bound, "{lines} lines > {bound}");
        let total: u64 = summaries.iter().map(|s| s.dropped).sum();
        assert_eq!(total, 20_000);
        assert_eq!(log.totals().bad_frames, 20_000);
        assert!(
            summaries
                .last()
                .unwrap()
                .to_string()
                .contains("other sources")
        );
    }
}
