//! The dispatcher's table (seed 000): every registered worker with its weight, activations,
//! last communication, answers since activation, availability — plus id assignment. Plain data
//! and pure transitions: the caller passes `now`, nothing here touches a socket or a clock.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use proto::{DispatcherStatus, WorkerId, WorkerRow};
use tokio::time::Instant;

use crate::pending::PendingIds;
use crate::scheduler::{Scheduler, fairness_bound};

#[derive(Debug, Clone, PartialEq)]
pub struct WorkerRecord {
    pub addr: SocketAddr,
    pub weight: u32,
    pub activations: u64,
    /// The seed's "time of last communication": the last report since activation, `None`
    /// (printed as -1) after a deactivation.
    pub last_comm: Option<Instant>,
    /// Any frame at all, heartbeats included: what removal after silence is judged by.
    pub last_heard: Instant,
    /// The worker's heartbeat interval: its next frame is due this long after the last one.
    pub heartbeat: Duration,
    pub answers_since_activation: u32,
    pub active: bool,
    pub activated_at: Option<Instant>,
    /// An "activate" sent (this request) and not confirmed yet: the worker holds one of the
    /// `max_active` places until it confirms or is removed, so a late confirmation never
    /// takes the number active past the limit.
    pub activating: Option<u64>,
}

impl WorkerRecord {
    pub fn available(&self) -> bool {
        !self.active && self.activating.is_none()
    }
}

/// What a report did to the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportOutcome {
    /// The worker stays active; answers since activation so far.
    StillActive {
        answers: u32,
    },
    /// That was the last report: the worker is available again.
    Deactivated {
        answers: u32,
        active_for: Duration,
    },
    /// A report from a worker we do not consider active: ignored.
    NotActive,
    UnknownWorker,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterError {
    /// The id was never handed out, expired, or is already registered.
    UnknownId(WorkerId),
}

impl std::fmt::Display for RegisterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegisterError::UnknownId(id) => write!(
                f,
                "id {id} was not handed out by this dispatcher (or is taken): discover again"
            ),
        }
    }
}

#[derive(Debug, Default)]
pub struct Registry {
    workers: BTreeMap<WorkerId, WorkerRecord>,
    scheduler: Scheduler,
    next_id: WorkerId,
    /// Ids handed out in discovery answers, so a retried broadcast gets the same id.
    pending: PendingIds,
    longest_activation: Duration,
}

impl Registry {
    pub fn new() -> Self {
        Registry::default()
    }

    /// A table whose ids start above `floor`. The dispatcher passes its start time (wall-clock
    /// milliseconds, shifted left 23 bits): a restarted dispatcher's ids are then above every id
    /// its predecessor handed out (unless that one minted 8 million ids a millisecond), so an
    /// id never names two workers, not even across restarts.
    pub fn with_ids_above(floor: WorkerId) -> Self {
        Registry {
            next_id: floor,
            ..Registry::default()
        }
    }

    pub fn len(&self) -> usize {
        self.workers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    pub fn get(&self, id: WorkerId) -> Option<&WorkerRecord> {
        self.workers.get(&id)
    }

    pub fn active_count(&self) -> usize {
        self.workers.values().filter(|w| w.active).count()
    }

    /// Places taken towards `max_active`: the active workers and those asked to activate that
    /// have not confirmed yet.
    pub fn places_taken(&self) -> usize {
        self.workers
            .values()
            .filter(|w| w.active || w.activating.is_some())
            .count()
    }

    /// About to send "activate" (`request`) to an available worker: it takes a place now.
    pub fn reserve(&mut self, id: WorkerId, request: u64) -> bool {
        match self.workers.get_mut(&id) {
            Some(w) if w.available() => {
                w.activating = Some(request);
                true
            }
            _ => false,
        }
    }

    /// Answers a discovery broadcast with an id; the same (source, nonce) gets the same id.
    pub fn assign_id(&mut self, from: SocketAddr, nonce: u64, now: Instant) -> WorkerId {
        if let Some(id) = self.pending.find((from, nonce), now) {
            return id;
        }
        self.next_id += 1;
        let id = self.next_id;
        self.pending.insert((from, nonce), id, now);
        id
    }

    pub fn register(
        &mut self,
        id: WorkerId,
        addr: SocketAddr,
        weight: u32,
        heartbeat: Duration,
        now: Instant,
    ) -> Result<(), RegisterError> {
        if !self.pending.take(id, now) {
            return Err(RegisterError::UnknownId(id));
        }
        let weight = weight.max(1);
        self.workers.insert(
            id,
            WorkerRecord {
                addr,
                weight,
                activations: 0,
                last_comm: None,
                last_heard: now,
                heartbeat,
                answers_since_activation: 0,
                active: false,
                activated_at: None,
                activating: None,
            },
        );
        self.scheduler.join(id, weight);
        Ok(())
    }

    pub fn heard(&mut self, id: WorkerId, now: Instant) {
        if let Some(w) = self.workers.get_mut(&id) {
            w.last_heard = now;
        }
    }

    /// After the dispatcher itself stalled (paused, starved): counts every worker as heard
    /// `now`, so silence is judged afresh, a whole timeout after the stall, by what the workers
    /// say once their queued frames are read, not by the gap the stall made.
    pub fn forgive_silence(&mut self, now: Instant) {
        for w in self.workers.values_mut() {
            w.last_heard = w.last_heard.max(now);
        }
    }

    /// The due, available workers for the next activation, best first.
    pub fn candidates(&self) -> Vec<WorkerId> {
        self.scheduler
            .candidates(|id| self.workers.get(&id).is_some_and(WorkerRecord::available))
    }

    /// "worker activated" for `request`: the worker is active and unavailable until its last
    /// report. Only the confirmation of the activation it was reserved for counts (however
    /// late): it already holds its place.
    pub fn mark_active(&mut self, id: WorkerId, request: u64, now: Instant) -> bool {
        let Some(w) = self.workers.get_mut(&id) else {
            return false;
        };
        if w.active || w.activating != Some(request) {
            return false;
        }
        w.activating = None;
        w.active = true;
        w.activations += 1;
        w.answers_since_activation = 0;
        w.last_comm = Some(now);
        w.last_heard = now;
        w.activated_at = Some(now);
        self.scheduler.record_activation(id);
        true
    }

    pub fn report(&mut self, id: WorkerId, activated: bool, now: Instant) -> ReportOutcome {
        let Some(w) = self.workers.get_mut(&id) else {
            return ReportOutcome::UnknownWorker;
        };
        w.last_heard = now;
        if !w.active {
            return ReportOutcome::NotActive;
        }
        w.answers_since_activation += 1;
        w.last_comm = Some(now);
        let answers = w.answers_since_activation;
        if activated {
            return ReportOutcome::StillActive { answers };
        }
        let active_for = w
            .activated_at
            .map_or(Duration::ZERO, |at| now.duration_since(at));
        w.active = false;
        w.answers_since_activation = 0;
        w.last_comm = None;
        w.activated_at = None;
        self.longest_activation = self.longest_activation.max(active_for);
        ReportOutcome::Deactivated {
            answers,
            active_for,
        }
    }

    pub fn remove(&mut self, id: WorkerId) -> Option<WorkerRecord> {
        let record = self.workers.remove(&id)?;
        self.scheduler.leave(id);
        Some(record)
    }

    /// Workers that let `timeout` pass after their next frame was due (last frame + their
    /// heartbeat interval, at most `timeout` itself), with how long each has been silent.
    ///
    /// Counting from when a frame was due, not from the last one, means a worker is never
    /// dropped after less than `timeout` of real unresponsiveness: a container paused right
    /// after a heartbeat and one paused right before the next are both removed `timeout` after
    /// they stopped answering, give or take a heartbeat.
    pub fn silent(&self, now: Instant, timeout: Duration) -> Vec<(WorkerId, Duration)> {
        self.workers
            .iter()
            .filter(|(_, w)| now.duration_since(w.last_heard) > w.heartbeat.min(timeout) + timeout)
            .map(|(id, w)| (*id, now.duration_since(w.last_heard)))
            .collect()
    }

    pub fn fairness_gap(&self) -> f64 {
        self.scheduler.gap()
    }

    /// The gap the scheduler guarantees for this fleet: the longest activation seen so far
    /// (at least `expected_activation`) tells how many picks a busy worker can miss.
    pub fn fairness_bound(
        &self,
        activation_interval: Duration,
        expected_activation: Duration,
        max_active: u32,
    ) -> f64 {
        let longest = self.longest_activation.max(expected_activation);
        let busy_picks = longest
            .as_millis()
            .div_ceil(activation_interval.as_millis().max(1));
        fairness_bound(
            self.workers.len(),
            self.scheduler.max_share(),
            busy_picks as u64,
            max_active as u64,
        )
    }

    /// The table's totals and the rows `rows` (positions in id order).
    pub fn status(
        &self,
        now: Instant,
        bound: f64,
        max_active: u32,
        rows: std::ops::Range<usize>,
    ) -> DispatcherStatus {
        let workers: Vec<WorkerRow> = self
            .workers
            .iter()
            .skip(rows.start)
            .take(rows.len())
            .map(|(id, w)| WorkerRow {
                id: *id,
                addr: w.addr.to_string(),
                weight: w.weight,
                activations: w.activations,
                active: w.active,
                available: w.available(),
                answers_since_activation: w.answers_since_activation,
                last_comm_ms_ago: w
                    .last_comm
                    .map_or(-1, |at| now.duration_since(at).as_millis() as i64),
                last_heard_ms_ago: now.duration_since(w.last_heard).as_millis() as u64,
                share: self.scheduler.share(*id).unwrap_or(0.0),
            })
            .collect();
        DispatcherStatus {
            worker_count: self.workers.len() as u64,
            total_activations: self.workers.values().map(|w| w.activations).sum(),
            active: self.active_count() as u32,
            workers,
            fairness_gap: self.fairness_gap(),
            fairness_bound: bound,
            max_active,
            uptime_ms: 0,
            auth_failures: 0,
            bad_frames: 0,
            replayed: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEARTBEAT: Duration = Duration::from_secs(1);

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    fn registered(weights: &[u32], now: Instant) -> Registry {
        let mut r = Registry::new();
        for (i, w) in weights.iter().enumerate() {
            let id = r.assign_id(addr(i as u16), 1, now);
            r.register(id, addr(i as u16), *w, HEARTBEAT, now).unwrap();
        }
        r
    }

    #[test]
    fn a_retried_broadcast_gets_the_same_id_and_a_new_one_gets_a_new_id() {
        let now = Instant::now();
        let mut r = Registry::new();
        let a = r.assign_id(addr(1), 42, now);
        assert_eq!(r.assign_id(addr(1), 42, now), a);
        assert_ne!(r.assign_id(addr(1), 43, now), a);
        assert_ne!(r.assign_id(addr(2), 42, now), a);
    }

    #[test]
    fn only_handed_out_ids_register_and_only_once() {
        let now = Instant::now();
        let mut r = Registry::new();
        assert_eq!(
            r.register(7, addr(1), 1, HEARTBEAT, now),
            Err(RegisterError::UnknownId(7))
        );
        let id = r.assign_id(addr(1), 1, now);
        assert!(r.register(id, addr(1), 3, HEARTBEAT, now).is_ok());
        assert_eq!(
            r.register(id, addr(1), 3, HEARTBEAT, now),
            Err(RegisterError::UnknownId(id))
        );
        assert_eq!(r.get(id).unwrap().weight, 3);
    }

    #[test]
    fn handed_out_ids_expire() {
        let now = Instant::now();
        let mut r = Registry::new();
        let id = r.assign_id(addr(1), 1, now);
        // Another discovery 31 s later sweeps the stale id away.
        r.assign_id(addr(2), 1, now + Duration::from_secs(31));
        assert!(
            r.register(id, addr(1), 1, HEARTBEAT, now + Duration::from_secs(31))
                .is_err()
        );
    }

    #[test]
    fn activation_reports_and_deactivation_follow_the_seed() {
        let t0 = Instant::now();
        let mut r = registered(&[1], t0);
        let id = 1;
        assert_eq!(r.candidates(), vec![id]);
        assert!(!r.mark_active(id, 7, t0), "no activation was asked for");
        assert!(r.reserve(id, 7));
        assert!(r.candidates().is_empty(), "asked to activate: unavailable");
        assert_eq!((r.active_count(), r.places_taken()), (0, 1));
        assert!(!r.mark_active(id, 6, t0), "the answer to another request");
        assert!(r.mark_active(id, 7, t0));
        assert_eq!((r.active_count(), r.places_taken()), (1, 1));
        assert!(
            !r.mark_active(id, 7, t0),
            "an active worker cannot be activated twice"
        );
        assert!(!r.reserve(id, 8), "nor reserved while active");
        assert!(r.candidates().is_empty(), "an active worker is unavailable");
        for n in 1..=4 {
            let t = t0 + Duration::from_secs(n);
            assert_eq!(
                r.report(id, true, t),
                ReportOutcome::StillActive { answers: n as u32 }
            );
            assert_eq!(r.get(id).unwrap().last_comm, Some(t));
        }
        let t5 = t0 + Duration::from_secs(5);
        assert_eq!(
            r.report(id, false, t5),
            ReportOutcome::Deactivated {
                answers: 5,
                active_for: Duration::from_secs(5)
            }
        );
        let w = r.get(id).unwrap();
        assert!(w.available() && !w.active);
        assert_eq!(
            (w.answers_since_activation, w.last_comm, w.activations),
            (0, None, 1)
        );
        let status = r.status(t5, 1.0, 5, 0..usize::MAX);
        assert_eq!(status.workers[0].last_comm_ms_ago, -1);
        assert_eq!(r.report(id, true, t5), ReportOutcome::NotActive);
        assert_eq!(r.report(99, true, t5), ReportOutcome::UnknownWorker);
    }

    /// The late confirmation of issue 7: an activation the activator gave up waiting for keeps
    /// its place, so however many confirmations arrive late, places never exceed those handed
    /// out while fewer than the limit were taken.
    #[test]
    fn late_confirmations_never_take_more_places_than_the_limit() {
        let t0 = Instant::now();
        let mut r = registered(&[1, 2, 3, 4], t0);
        let max_active = 2;
        let mut request = 0;
        let mut reserved = Vec::new();
        // Rounds that each time out waiting: the next candidate is asked only while a place is
        // free.
        for _ in 0..4 {
            if r.places_taken() >= max_active {
                break;
            }
            let id = r.candidates()[0];
            request += 1;
            assert!(r.reserve(id, request));
            reserved.push((id, request));
        }
        assert_eq!(reserved.len(), max_active);
        for &(id, request) in &reserved {
            assert!(r.mark_active(id, request, t0), "late, still counted");
        }
        assert_eq!(r.active_count(), max_active);
        // A removed worker's place is free again.
        r.remove(reserved[0].0);
        assert_eq!(r.places_taken(), max_active - 1);
    }

    #[test]
    fn silence_is_judged_by_any_frame_from_when_the_next_was_due() {
        let t0 = Instant::now();
        let mut r = registered(&[1, 1], t0);
        r.heard(2, t0 + Duration::from_secs(4));
        let timeout = Duration::from_secs(5);
        // Heartbeat due at 1 s, so worker 1 may stay silent until 6 s.
        assert!(
            r.silent(t0 + Duration::from_millis(5_900), timeout)
                .is_empty()
        );
        let silent = r.silent(t0 + Duration::from_millis(6_100), timeout);
        assert_eq!(silent, vec![(1, Duration::from_millis(6_100))]);
        // A worker declaring a huge heartbeat interval still gets at most twice the timeout.
        let id = r.assign_id(addr(9), 1, t0);
        r.register(id, addr(9), 1, Duration::from_secs(3600), t0)
            .unwrap();
        let later = r.silent(t0 + Duration::from_millis(10_100), timeout);
        assert!(later.iter().any(|(silent_id, _)| *silent_id == id));
        assert!(r.remove(1).is_some());
        assert!(r.remove(1).is_none());
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn the_bound_grows_with_busy_picks_and_the_heaviest_share() {
        let t0 = Instant::now();
        let r = registered(&[1, 1, 2], t0);
        let second = Duration::from_secs(1);
        let idle = r.fairness_bound(2 * second, Duration::ZERO, 5);
        let busy = r.fairness_bound(2 * second, 25 * second, 5);
        assert!(
            (idle - 0.75).abs() < 1e-9,
            "1 − 1/(2·2) for three workers, got {idle}"
        );
        // 13 picks during a 25 s activation at one per 2 s, plus 2·5 slots, times λ_max = ½.
        assert!((busy - (0.75 + 0.5 * 23.0)).abs() < 1e-9, "got {busy}");
    }

    #[test]
    fn after_a_stall_silence_is_judged_afresh() {
        let t0 = Instant::now();
        let mut r = registered(&[1, 2], t0);
        let timeout = Duration::from_secs(5);
        let resumed = t0 + Duration::from_secs(7);
        assert_eq!(
            r.silent(resumed, timeout).len(),
            2,
            "the stall looks like silence"
        );
        r.forgive_silence(resumed);
        assert!(r.silent(resumed + timeout, timeout).is_empty());
        assert_eq!(
            r.silent(
                resumed + timeout + HEARTBEAT + Duration::from_millis(1),
                timeout
            )
            .len(),
            2,
            "a worker that stays silent is still removed, a timeout later"
        );
    }
}
