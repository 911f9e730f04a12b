//! The two clocks of the dispatcher: every activation interval, activate the best due worker
//! while fewer than `max_active` are active; and remove workers that have gone silent.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::shared::{Command, Shared};

pub async fn activate_periodically(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(shared.config.activation_interval());
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => activate_one(&shared).await,
        }
    }
}

/// One round: walk the due candidates best first; "status check" each, and activate the first
/// that says "not activated". A worker that says "activated" or does not answer in time is
/// passed over for the next best one. A worker asked to activate holds its place towards
/// `max_active` from then on: one that does not confirm in time keeps it (its confirmation may
/// still come) until it confirms or is removed, and the round moves on only while a place is
/// free. The round ends by the next one's start, so the cadence holds whatever workers do.
async fn activate_one(shared: &Shared) {
    let max_active = shared.config.max_active as usize;
    let candidates: Vec<(u64, mpsc::Sender<Command>)> = {
        let state = shared.state();
        let taken = state.registry.places_taken();
        if taken >= max_active {
            tracing::debug!(taken, "activation round skipped: enough workers active");
            return;
        }
        state
            .registry
            .candidates()
            .into_iter()
            .filter_map(|id| state.sessions.get(&id).map(|tx| (id, tx.clone())))
            .collect()
    };
    if candidates.is_empty() {
        tracing::debug!("activation round skipped: no available worker is due its share yet");
        return;
    }
    let round_ends = Instant::now() + shared.config.activation_interval();
    let reply_timeout = shared.config.reply_timeout();
    let wait = || reply_timeout.min(round_ends.saturating_duration_since(Instant::now()));
    for (id, session) in candidates {
        if Instant::now() >= round_ends {
            tracing::info!("activation round out of time; the next one goes on");
            return;
        }
        if shared.state().registry.places_taken() >= max_active {
            return;
        }
        let (reply, answer) = oneshot::channel();
        let request = shared.next_request();
        let check = Command::StatusCheck { request, reply };
        if session.send(check).await.is_err() {
            continue;
        }
        match ask(answer, wait()).await {
            Some(false) => {}
            Some(true) => {
                tracing::info!(
                    worker = id,
                    "worker {id} says it is already activated; trying the next best candidate"
                );
                continue;
            }
            None => {
                tracing::warn!(
                    worker = id,
                    "worker {id} did not answer the status check in time; trying the next best candidate"
                );
                continue;
            }
        }
        let request = shared.next_request();
        if !shared.state().registry.reserve(id, request) {
            continue; // removed meanwhile
        }
        let (reply, answer) = oneshot::channel();
        if session
            .send(Command::Activate { request, reply })
            .await
            .is_err()
        {
            continue;
        }
        if ask(answer, wait()).await.is_some() {
            // The session marked it active when "worker activated" arrived.
            return;
        }
        tracing::warn!(
            worker = id,
            request,
            "worker {id} did not confirm activation in time; it keeps its place until it confirms or is removed"
        );
    }
    tracing::info!(
        "activation round ended with no worker activated: every due candidate was busy or silent"
    );
}

async fn ask<T>(answer: oneshot::Receiver<T>, timeout: Duration) -> Option<T> {
    tokio::time::timeout(timeout, answer).await.ok()?.ok()
}

/// How late a silence check may run before the dispatcher counts itself as stalled: far above
/// any scheduling delay of a healthy process (a check is due every 1/20 of the timeout).
pub const STALL: Duration = Duration::from_secs(1);

/// Whether the gap between two checks that should be `period` apart shows that this process
/// stalled (Redis Sentinel's TILT): then the silence it would judge is its own, not the workers'.
pub fn stalled(previous: Instant, now: Instant, period: Duration) -> bool {
    now.saturating_duration_since(previous) > period + STALL
}

/// Removes workers silent for longer than the silence timeout. Checks several times per
/// timeout so removal happens within a small fraction of it after the deadline. After a stall
/// of the dispatcher itself, every worker gets a fresh timeout instead.
pub async fn remove_silent_workers(shared: Arc<Shared>, shutdown: CancellationToken) {
    let timeout = shared.config.silence_timeout();
    let period = (timeout / 20).max(Duration::from_millis(10));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut previous = Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = Instant::now();
        if stalled(previous, now, period) {
            let stalled_ms = now.duration_since(previous).as_millis() as u64;
            shared.state().registry.forgive_silence(now);
            tracing::warn!(
                stalled_ms,
                "this dispatcher stalled (paused or starved): judging no worker's silence until a full timeout from now"
            );
        }
        previous = now;
        let silent = shared.state().registry.silent(now, timeout);
        for (id, silent_for) in silent {
            shared.remove_worker(
                id,
                &format!("no communication for {} ms", silent_for.as_millis()),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_check_is_a_stall_only_past_the_margin() {
        let t0 = Instant::now();
        let period = Duration::from_millis(250);
        assert!(!stalled(t0, t0 + period, period));
        assert!(!stalled(t0, t0 + period + STALL, period));
        assert!(stalled(
            t0,
            t0 + period + STALL + Duration::from_millis(1),
            period
        ));
        // A clock that went back (it cannot, with Instant) counts as no stall.
        assert!(!stalled(t0 + period, t0, period));
    }
}
