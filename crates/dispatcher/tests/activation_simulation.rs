//! The activation protocol in virtual time: the dispatcher's table and rounds ([`Round`]) and
//! simulated workers (answering with [`Activation::answer`], as the worker does) over ordered
//! connections with random delays (some far past the reply timeout, so answers and
//! confirmations come late), paused workers (frames held, then read in a burst) and removals
//! for silence. After every step: places taken, workers marked active, and workers that believe
//! they are active (in a live session) are each at most `max_active`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use dispatcher::registry::{Registry, ReportOutcome};
use dispatcher::round::{Action, Round};
use proto::{Message, WorkerId};
use tokio::time::Instant;
use worker::activation::{Activation, Answer};

const STEP: Duration = Duration::from_millis(10);
const INTERVAL: Duration = Duration::from_secs(2);
const REPLY: Duration = Duration::from_secs(1);
const SILENCE: Duration = Duration::from_secs(5);
const HEARTBEAT: Duration = Duration::from_secs(1);
const REPORTS: u32 = 5;

/// The dispatcher's orders, as sent: `StatusCheck` and `Activate`.
type ToWorker = Message;

enum ToDispatcher {
    /// The worker's own answer to an order (`Status` or `WorkerActivated`).
    Answer(Message),
    Report {
        activated: bool,
    },
    Heartbeat,
}

/// One worker and its connection (two ordered directions); a new registration is a new id
/// and a fresh connection, as in the worker's lifecycle.
struct SimWorker {
    id: WorkerId,
    weight: u32,
    activation: Activation,
    paused_until: Option<Instant>,
    next_heartbeat: Instant,
    next_report: Option<Instant>,
    /// The dispatcher removed it; it registers again once it runs.
    lost: bool,
    to_worker: VecDeque<(Instant, ToWorker)>,
    to_dispatcher: VecDeque<(Instant, ToDispatcher)>,
}

struct Sim {
    now: Instant,
    rng: u64,
    seed: u64,
    registry: Registry,
    round: Option<Round>,
    requests: u64,
    next_round: Instant,
    max_active: usize,
    workers: Vec<SimWorker>,
    /// Percent of frames delayed far past the reply timeout.
    slow: u64,
}

impl Sim {
    fn random(&mut self, below: u64) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng % below.max(1)
    }

    /// When a frame sent now arrives: after the one before it on the same connection.
    fn arrival(&mut self, last: Option<Instant>) -> Instant {
        let delay = if self.random(100) < self.slow {
            Duration::from_millis(500 + self.random(2500))
        } else {
            Duration::from_millis(1 + self.random(30))
        };
        (self.now + delay).max(last.unwrap_or(self.now))
    }

    fn send_to_worker(&mut self, index: usize, message: ToWorker) {
        let last = self.workers[index].to_worker.back().map(|m| m.0);
        let at = self.arrival(last);
        self.workers[index].to_worker.push_back((at, message));
    }

    fn send_to_dispatcher(&mut self, index: usize, message: ToDispatcher) {
        let last = self.workers[index].to_dispatcher.back().map(|m| m.0);
        let at = self.arrival(last);
        self.workers[index].to_dispatcher.push_back((at, message));
    }

    fn register(&mut self, index: usize) {
        let addr = SocketAddr::from(([10, 0, 0, 1], 1000 + index as u16));
        let nonce = self.random(u64::MAX);
        let id = self.registry.assign_id(addr, nonce, self.now);
        let weight = self.workers[index].weight;
        self.registry
            .register(id, addr, weight, HEARTBEAT, self.now)
            .unwrap();
        let now = self.now;
        let w = &mut self.workers[index];
        w.id = id;
        w.lost = false;
        w.activation = Activation::Idle;
        w.next_report = None;
        w.next_heartbeat = now + HEARTBEAT;
        w.to_worker.clear();
        w.to_dispatcher.clear();
    }

    fn index_of(&self, id: WorkerId) -> Option<usize> {
        self.workers.iter().position(|w| w.id == id && !w.lost)
    }

    fn step(&mut self) {
        self.now += STEP;
        let now = self.now;
        for i in 0..self.workers.len() {
            self.dispatcher_reads(i);
            if self.workers[i]
                .paused_until
                .is_some_and(|until| now < until)
            {
                continue;
            }
            self.workers[i].paused_until = None;
            if self.workers[i].lost {
                self.register(i);
                continue;
            }
            self.worker_runs(i);
        }
        for (id, _) in self.registry.silent(now, SILENCE) {
            self.registry.remove(id);
            if let Some(round) = self.round.as_mut() {
                round.on_lost(id);
            }
            if let Some(i) = self.index_of(id) {
                self.workers[i].lost = true;
            }
        }
        self.run_round();
        self.check();
    }

    fn dispatcher_reads(&mut self, i: usize) {
        let now = self.now;
        while self.workers[i]
            .to_dispatcher
            .front()
            .is_some_and(|m| m.0 <= now)
        {
            let (_, message) = self.workers[i].to_dispatcher.pop_front().unwrap();
            let id = self.workers[i].id;
            if self.workers[i].lost {
                continue;
            }
            self.registry.heard(id, now);
            match message {
                ToDispatcher::Heartbeat => {}
                ToDispatcher::Answer(Message::Status { activated, request }) => {
                    if let Some(round) = self.round.as_mut() {
                        round.on_status(
                            &mut self.registry,
                            now,
                            id,
                            request,
                            activated,
                            &mut self.requests,
                        );
                    }
                }
                ToDispatcher::Answer(Message::WorkerActivated { request }) => {
                    self.registry.mark_active(id, request, now);
                    if let Some(round) = self.round.as_mut() {
                        round.on_activated(id, request);
                    }
                }
                ToDispatcher::Report { activated } => {
                    let outcome = self.registry.report(id, activated, now);
                    assert_ne!(outcome, ReportOutcome::UnknownWorker);
                }
                ToDispatcher::Answer(other) => panic!("not an answer: {other:?}"),
            }
        }
    }

    fn worker_runs(&mut self, i: usize) {
        let now = self.now;
        while self.workers[i]
            .to_worker
            .front()
            .is_some_and(|m| m.0 <= now)
        {
            let (_, order) = self.workers[i].to_worker.pop_front().unwrap();
            // The worker's own answering (as its lifecycle runs it).
            let me = self.workers[i].id;
            let Answer::Reply { reply, started } = self.workers[i].activation.answer(me, &order)
            else {
                panic!("worker {me} did not answer {order:?}");
            };
            if started {
                let first = Duration::from_millis(100 + self.random(4900));
                self.workers[i].next_report = Some(now + first);
            }
            self.send_to_dispatcher(i, ToDispatcher::Answer(reply));
        }
        if now >= self.workers[i].next_heartbeat {
            self.workers[i].next_heartbeat = now + HEARTBEAT;
            self.send_to_dispatcher(i, ToDispatcher::Heartbeat);
        }
        if self.workers[i].next_report.is_some_and(|at| now >= at) {
            let activated = self.workers[i].activation.next_report(REPORTS);
            let next = Duration::from_millis(100 + self.random(4900));
            self.workers[i].next_report = (activated == Some(true)).then_some(now + next);
            if let Some(activated) = activated {
                self.send_to_dispatcher(i, ToDispatcher::Report { activated });
            }
        }
    }

    fn run_round(&mut self) {
        let now = self.now;
        if self.round.is_none() && now >= self.next_round {
            self.next_round = now + INTERVAL;
            self.round = Round::start(&self.registry, self.max_active, now, INTERVAL, REPLY);
        }
        while let Some(round) = self.round.as_mut() {
            match round.poll(&mut self.registry, now, &mut self.requests) {
                Action::StatusCheck {
                    worker, request, ..
                } => {
                    if let Some(i) = self.index_of(worker) {
                        let check = Message::StatusCheck {
                            worker_id: worker,
                            request,
                        };
                        self.send_to_worker(i, check);
                    }
                }
                Action::Activate {
                    worker, request, ..
                } => {
                    if let Some(i) = self.index_of(worker) {
                        let activate = Message::Activate {
                            worker_id: worker,
                            request,
                        };
                        self.send_to_worker(i, activate);
                    }
                }
                Action::Wait(_) => return,
                Action::Done(_) => self.round = None,
            }
        }
    }

    fn check(&self) {
        let believe = self
            .workers
            .iter()
            .filter(|w| !w.lost && w.activation.is_activated())
            .count();
        let (taken, active) = (self.registry.places_taken(), self.registry.active_count());
        assert!(
            taken <= self.max_active && active <= self.max_active && believe <= self.max_active,
            "seed {}: places {taken}, marked active {active}, workers active {believe}, max {}",
            self.seed,
            self.max_active
        );
    }
}

#[test]
fn random_schedules_never_activate_more_than_the_limit() {
    // HALAB_SIM_SEEDS=N runs more schedules (default 300); a failure prints its seed.
    let seeds = std::env::var("HALAB_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(300);
    let mut activations = 0;
    for seed in 1..=seeds {
        let now = Instant::now();
        let mut sim = Sim {
            now,
            rng: seed * 0x9E37_79B9 + 1,
            seed,
            registry: Registry::new(),
            round: None,
            requests: 0,
            next_round: now,
            max_active: 0,
            workers: Vec::new(),
            slow: 0,
        };
        sim.max_active = 1 + sim.random(4) as usize;
        let count = 2 + sim.random(10) as usize;
        for i in 0..count {
            let weight = 1 + sim.random(8) as u32;
            sim.workers.push(SimWorker {
                id: 0,
                weight,
                activation: Activation::Idle,
                paused_until: None,
                next_heartbeat: now,
                next_report: None,
                lost: false,
                to_worker: VecDeque::new(),
                to_dispatcher: VecDeque::new(),
            });
            sim.register(i);
        }
        // Two minutes of virtual time; every few seconds a fault changes.
        for _ in 0..40 {
            match sim.random(4) {
                0 => {
                    let i = sim.random(count as u64) as usize;
                    let pause = Duration::from_millis(500 + sim.random(8000));
                    sim.workers[i].paused_until = Some(sim.now + pause);
                }
                1 => sim.slow = sim.random(40),
                _ => sim.slow = 0,
            }
            let stretch = 300 + sim.random(300);
            for _ in 0..stretch {
                sim.step();
            }
        }
        activations += sim
            .registry
            .status(sim.now, 0.0, sim.max_active as u32, 0..usize::MAX)
            .total_activations;
    }
    assert!(
        activations > seeds * 10,
        "activations happened: {activations}"
    );
}
