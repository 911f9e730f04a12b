//! One activation round as plain data (sans-IO): which due candidate is asked what, until
//! when, and what its answers lead to. The activator task carries out its actions over the
//! workers' sessions; the simulation in `tests/activation_simulation.rs` drives it against
//! simulated workers through delays and pauses.
//!
//! A round walks the due candidates best first: "status check" each and activate the first
//! that says "not activated"; one that says "activated" or does not answer in time is passed
//! over. A worker asked to activate takes a place towards `max_active` at once (the registry
//! keeps it until the worker confirms, however late, or is removed), and the round moves on
//! only while a place is free. The round ends by the next one's start.

use std::collections::VecDeque;
use std::time::Duration;

use proto::WorkerId;
use tokio::time::Instant;

use crate::registry::Registry;

/// What the round wants done next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send "status check" `request` to `worker`; answer by `until` or it is passed over.
    StatusCheck {
        worker: WorkerId,
        request: u64,
        until: Instant,
    },
    /// Send "activate" `request` to `worker` (its place is taken); confirm by `until`.
    Activate {
        worker: WorkerId,
        request: u64,
        until: Instant,
    },
    /// Nothing to send; wake up by then (or when an answer comes).
    Wait(Instant),
    /// The round is over.
    Done(Outcome),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Activated(WorkerId),
    /// Every place is taken (by this round's unconfirmed activation, or others).
    Full,
    /// Every due candidate was busy or silent.
    NoneActivated,
    /// The next round is due.
    OutOfTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Next,
    Checking {
        worker: WorkerId,
        request: u64,
        until: Instant,
        sent: bool,
    },
    Activating {
        worker: WorkerId,
        request: u64,
        until: Instant,
        sent: bool,
    },
    Over(Outcome),
}

#[derive(Debug, Clone)]
pub struct Round {
    candidates: VecDeque<WorkerId>,
    ends: Instant,
    reply_timeout: Duration,
    max_active: usize,
    step: Step,
}

impl Round {
    /// A round starting `now`, or `None` when no place is free or no worker is due.
    pub fn start(
        registry: &Registry,
        max_active: usize,
        now: Instant,
        interval: Duration,
        reply_timeout: Duration,
    ) -> Option<Round> {
        if registry.places_taken() >= max_active {
            return None;
        }
        let candidates: VecDeque<WorkerId> = registry.candidates().into();
        if candidates.is_empty() {
            return None;
        }
        Some(Round {
            candidates,
            ends: now + interval,
            reply_timeout,
            max_active,
            step: Step::Next,
        })
    }

    /// The next action as of `now`; `next_request` numbers what is sent.
    pub fn poll(
        &mut self,
        registry: &mut Registry,
        now: Instant,
        next_request: &mut u64,
    ) -> Action {
        loop {
            match self.step {
                Step::Over(outcome) => return Action::Done(outcome),
                // Only what was sent times out: an unsent order goes out first, however late,
                // since its worker's place is already reserved for it.
                Step::Checking {
                    until, sent: true, ..
                }
                | Step::Activating {
                    until, sent: true, ..
                } if now >= until => {
                    if let Step::Activating {
                        worker, request, ..
                    } = self.step
                    {
                        tracing::warn!(
                            worker,
                            request,
                            "worker {worker} did not confirm activation in time; it keeps its place until it confirms or is removed"
                        );
                    } else if let Step::Checking { worker, .. } = self.step {
                        tracing::warn!(
                            worker,
                            "worker {worker} did not answer the status check in time; trying the next best candidate"
                        );
                    }
                    self.step = Step::Next;
                }
                Step::Checking {
                    worker,
                    request,
                    until,
                    sent: false,
                } => {
                    self.step = Step::Checking {
                        worker,
                        request,
                        until,
                        sent: true,
                    };
                    return Action::StatusCheck {
                        worker,
                        request,
                        until,
                    };
                }
                Step::Activating {
                    worker,
                    request,
                    until,
                    sent: false,
                } => {
                    self.step = Step::Activating {
                        worker,
                        request,
                        until,
                        sent: true,
                    };
                    return Action::Activate {
                        worker,
                        request,
                        until,
                    };
                }
                Step::Checking { until, .. } | Step::Activating { until, .. } => {
                    return Action::Wait(until);
                }
                Step::Next => {
                    if now >= self.ends {
                        self.step = Step::Over(Outcome::OutOfTime);
                    } else if registry.places_taken() >= self.max_active {
                        self.step = Step::Over(Outcome::Full);
                    } else if let Some(worker) = self.candidates.pop_front() {
                        if registry.get(worker).is_some_and(|w| w.available()) {
                            *next_request += 1;
                            self.step = Step::Checking {
                                worker,
                                request: *next_request,
                                until: self.deadline(now),
                                sent: false,
                            };
                        }
                    } else {
                        self.step = Step::Over(Outcome::NoneActivated);
                    }
                }
            }
        }
    }

    /// The worker's answer to status check `request`; answers to anything else are ignored.
    pub fn on_status(
        &mut self,
        registry: &mut Registry,
        now: Instant,
        worker: WorkerId,
        request: u64,
        activated: bool,
        next_request: &mut u64,
    ) {
        let Step::Checking {
            worker: asked,
            request: r,
            ..
        } = self.step
        else {
            return;
        };
        if (asked, r) != (worker, request) {
            return;
        }
        if activated {
            tracing::info!(
                worker,
                "worker {worker} says it is already activated; trying the next best candidate"
            );
            self.step = Step::Next;
            return;
        }
        *next_request += 1;
        let request = *next_request;
        self.step = if registry.reserve(worker, request) {
            Step::Activating {
                worker,
                request,
                until: self.deadline(now),
                sent: false,
            }
        } else {
            Step::Next // removed meanwhile, or no longer available
        };
    }

    /// The registry took the worker's "worker activated" for `request` (see
    /// [`Registry::mark_active`]): if it is this round's, the round is over.
    pub fn on_activated(&mut self, worker: WorkerId, request: u64) {
        if let Step::Activating {
            worker: asked,
            request: r,
            ..
        } = self.step
        {
            if (asked, r) == (worker, request) {
                self.step = Step::Over(Outcome::Activated(worker));
            }
        }
    }

    /// The session to `worker` is gone: stop waiting for it.
    pub fn on_lost(&mut self, worker: WorkerId) {
        match self.step {
            Step::Checking { worker: w, .. } | Step::Activating { worker: w, .. }
                if w == worker =>
            {
                self.step = Step::Next
            }
            _ => {}
        }
    }

    fn deadline(&self, now: Instant) -> Instant {
        (now + self.reply_timeout).min(self.ends)
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    const INTERVAL: Duration = Duration::from_secs(2);
    const REPLY: Duration = Duration::from_secs(1);

    /// Workers with these weights; ids 1, 2, … in order.
    fn registry(weights: &[u32], now: Instant) -> Registry {
        let mut r = Registry::new();
        for (i, w) in weights.iter().enumerate() {
            let addr = SocketAddr::from(([10, 0, 0, 1], 5000 + i as u16));
            let id = r.assign_id(addr, 1, now);
            r.register(id, addr, *w, Duration::from_secs(1), now)
                .unwrap();
        }
        r
    }

    fn check(action: Action) -> (WorkerId, u64) {
        match action {
            Action::StatusCheck {
                worker, request, ..
            } => (worker, request),
            other => panic!("expected a status check, got {other:?}"),
        }
    }

    #[test]
    fn the_first_idle_candidate_is_activated() {
        let t0 = Instant::now();
        let mut r = registry(&[1, 5], t0);
        let mut requests = 0;
        let mut round = Round::start(&r, 1, t0, INTERVAL, REPLY).unwrap();
        let (first, request) = check(round.poll(&mut r, t0, &mut requests));
        assert_eq!(first, 2, "the heavier worker is due first");
        round.on_status(&mut r, t0, first, request, false, &mut requests);
        let Action::Activate {
            worker, request, ..
        } = round.poll(&mut r, t0, &mut requests)
        else {
            panic!("expected an activation")
        };
        assert_eq!(worker, first);
        assert_eq!(
            r.places_taken(),
            1,
            "the place is taken as the order goes out"
        );
        assert!(r.mark_active(worker, request, t0));
        round.on_activated(worker, request);
        assert_eq!(
            round.poll(&mut r, t0, &mut requests),
            Action::Done(Outcome::Activated(worker))
        );
    }

    #[test]
    fn busy_silent_and_stale_answers_pass_to_the_next_candidate() {
        let t0 = Instant::now();
        let mut r = registry(&[1, 1, 1], t0);
        let mut requests = 0;
        let mut round = Round::start(&r, 3, t0, INTERVAL * 10, REPLY).unwrap();
        let (a, request_a) = check(round.poll(&mut r, t0, &mut requests));
        assert!(matches!(
            round.poll(&mut r, t0, &mut requests),
            Action::Wait(_)
        ));
        // An answer to some other request changes nothing; "activated" passes over.
        round.on_status(&mut r, t0, a, request_a + 100, false, &mut requests);
        assert!(matches!(
            round.poll(&mut r, t0, &mut requests),
            Action::Wait(_)
        ));
        round.on_status(&mut r, t0, a, request_a, true, &mut requests);
        let (b, _) = check(round.poll(&mut r, t0, &mut requests));
        assert_ne!(a, b);
        // Silence passes over at the deadline.
        let late = t0 + REPLY;
        let (c, _) = check(round.poll(&mut r, late, &mut requests));
        assert!(c != a && c != b);
        assert_eq!(r.places_taken(), 0);
    }

    /// An activation not confirmed in time keeps its place: with one place, the round ends
    /// instead of asking the next candidate.
    #[test]
    fn an_unconfirmed_activation_keeps_its_place() {
        let t0 = Instant::now();
        let mut r = registry(&[8, 5], t0);
        let mut requests = 0;
        let mut round = Round::start(&r, 1, t0, INTERVAL, REPLY).unwrap();
        let (a, request) = check(round.poll(&mut r, t0, &mut requests));
        round.on_status(&mut r, t0, a, request, false, &mut requests);
        let Action::Activate { request, .. } = round.poll(&mut r, t0, &mut requests) else {
            panic!("expected an activation")
        };
        let late = t0 + REPLY;
        assert_eq!(
            round.poll(&mut r, late, &mut requests),
            Action::Done(Outcome::Full)
        );
        assert!(Round::start(&r, 1, late, INTERVAL, REPLY).is_none());
        assert!(r.mark_active(a, request, late + REPLY), "it still counts");
        assert_eq!(r.active_count(), 1);
    }

    /// A status answer just before the round's end reserves the place; the order must still go
    /// out, however late the next poll: a place reserved for an order never sent is held
    /// forever (a worker stuck unavailable, found by a CI run of the replay test).
    #[test]
    fn a_reserved_place_is_always_followed_by_its_order() {
        let t0 = Instant::now();
        let mut r = registry(&[1], t0);
        let mut requests = 0;
        let mut round = Round::start(&r, 1, t0, INTERVAL, REPLY).unwrap();
        let (a, request) = check(round.poll(&mut r, t0, &mut requests));
        let answered = t0 + INTERVAL - Duration::from_millis(1);
        round.on_status(&mut r, answered, a, request, false, &mut requests);
        assert_eq!(r.places_taken(), 1);
        let Action::Activate { worker, .. } = round.poll(&mut r, t0 + INTERVAL, &mut requests)
        else {
            panic!("the reserved worker was never sent its order")
        };
        assert_eq!(worker, a);
    }

    #[test]
    fn a_round_ends_when_the_next_is_due() {
        let t0 = Instant::now();
        let mut r = registry(&[1, 1, 1, 1], t0);
        let mut requests = 0;
        let mut round = Round::start(&r, 4, t0, INTERVAL, REPLY).unwrap();
        check(round.poll(&mut r, t0, &mut requests));
        check(round.poll(&mut r, t0 + REPLY, &mut requests));
        // Its deadline is the round's end, not a full reply timeout later.
        let Action::Wait(until) = round.poll(&mut r, t0 + REPLY, &mut requests) else {
            panic!("expected a wait")
        };
        assert_eq!(until, t0 + INTERVAL);
        assert_eq!(
            round.poll(&mut r, t0 + INTERVAL, &mut requests),
            Action::Done(Outcome::OutOfTime)
        );
    }
}
