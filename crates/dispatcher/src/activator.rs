//! The two clocks of the dispatcher: every activation interval, run an activation round
//! ([`Round`]) while places are free; and remove workers that have gone silent.

use std::sync::Arc;
use std::time::Duration;

use proto::WorkerId;
use tokio::sync::oneshot;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::round::{Action, Outcome, Round};
use crate::shared::{Command, Shared};

pub async fn activate_periodically(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(shared.config.activation_interval());
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Numbers every status check and activation, so answers are matched to requests.
    let mut requests = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => activate_one(&shared, &mut requests).await,
        }
    }
}

/// One round (see [`Round`]), carried out over the workers' sessions: each request is sent and
/// its answer awaited until the round's deadline for it.
async fn activate_one(shared: &Shared, requests: &mut u64) {
    let config = &shared.config;
    let max_active = config.max_active as usize;
    let round = {
        let state = shared.state();
        Round::start(
            &state.registry,
            max_active,
            Instant::now(),
            config.activation_interval(),
            config.reply_timeout(),
        )
    };
    let Some(mut round) = round else {
        tracing::debug!("activation round skipped: every place is taken or no worker is due");
        return;
    };
    loop {
        let action = round.poll(&mut shared.state().registry, Instant::now(), requests);
        match action {
            Action::StatusCheck {
                worker,
                request,
                until,
            } => {
                let (reply, answer) = oneshot::channel();
                let check = Command::StatusCheck { request, reply };
                match ask(shared, worker, check, answer, until).await {
                    Answer::Given(activated) => {
                        let mut state = shared.state();
                        let now = Instant::now();
                        round.on_status(
                            &mut state.registry,
                            now,
                            worker,
                            request,
                            activated,
                            requests,
                        );
                    }
                    Answer::Lost => round.on_lost(worker),
                    Answer::Late => {}
                }
            }
            Action::Activate {
                worker,
                request,
                until,
            } => {
                let (reply, answer) = oneshot::channel();
                let activate = Command::Activate { request, reply };
                match ask(shared, worker, activate, answer, until).await {
                    // The session marked it active when "worker activated" arrived.
                    Answer::Given(()) => round.on_activated(worker, request),
                    Answer::Lost => round.on_lost(worker),
                    Answer::Late => {}
                }
            }
            // Answers are awaited in place: a wait means the deadline has just passed.
            Action::Wait(_) => {}
            Action::Done(Outcome::Activated(_) | Outcome::Full) => return,
            Action::Done(Outcome::OutOfTime) => {
                tracing::info!("activation round out of time; the next one goes on");
                return;
            }
            Action::Done(Outcome::NoneActivated) => {
                tracing::info!(
                    "activation round ended with no worker activated: every due candidate was busy or silent"
                );
                return;
            }
        }
    }
}

enum Answer<T> {
    Given(T),
    /// No answer by the deadline.
    Late,
    /// The worker's session is gone.
    Lost,
}

/// Sends `command` to `worker`'s session and awaits its answer until `until`.
async fn ask<T>(
    shared: &Shared,
    worker: WorkerId,
    command: Command,
    answer: oneshot::Receiver<T>,
    until: Instant,
) -> Answer<T> {
    let session = shared.state().sessions.get(&worker).cloned();
    let Some(session) = session else {
        return Answer::Lost;
    };
    if session.send(command).await.is_err() {
        return Answer::Lost;
    }
    match tokio::time::timeout_at(until, answer).await {
        Ok(Ok(value)) => Answer::Given(value),
        Ok(Err(_)) => Answer::Lost,
        Err(_) => Answer::Late,
    }
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
