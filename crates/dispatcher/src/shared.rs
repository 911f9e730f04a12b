//! State shared by the dispatcher's tasks: the table behind a mutex (never held across an
//! `.await`), each worker session's command channel, and counters of rejected input.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use halab_runtime::Rejections;
use proto::{DispatcherStatus, FrameCodec, WorkerId};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::config::DispatcherConfig;
use crate::registry::Registry;

/// What the activator asks a worker's session to do, numbered so that only the worker's
/// answer to this very request is taken; the answer comes back on the oneshot.
#[derive(Debug)]
pub enum Command {
    /// "status check": answers whether the worker says it is activated.
    StatusCheck {
        request: u64,
        reply: oneshot::Sender<bool>,
    },
    /// "activate" (the worker was reserved a place for `request`): answered once the worker
    /// said "worker activated".
    Activate {
        request: u64,
        reply: oneshot::Sender<()>,
    },
}

#[derive(Debug, Default)]
pub struct State {
    pub registry: Registry,
    pub sessions: HashMap<WorkerId, mpsc::Sender<Command>>,
}

#[derive(Debug)]
pub struct Shared {
    state: Mutex<State>,
    pub config: DispatcherConfig,
    pub codec: FrameCodec,
    started: Instant,
    /// Every frame or datagram dropped as bad, counted exactly and logged within bounds.
    pub rejections: Rejections,
}

/// Where this process's worker ids start: its start time in ms, shifted left 23 bits (see
/// [`Registry::with_ids_above`]).
fn id_floor() -> WorkerId {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    ms << 23
}

impl Shared {
    pub fn new(config: DispatcherConfig, codec: FrameCodec) -> Self {
        Shared {
            state: Mutex::new(State {
                registry: Registry::with_ids_above(id_floor()),
                sessions: HashMap::new(),
            }),
            config,
            codec,
            started: Instant::now(),
            rejections: Rejections::default(),
        }
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug elsewhere; the table itself is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Removes a worker (if still there) and closes its session; logs why, once.
    pub fn remove_worker(&self, id: WorkerId, reason: &str) {
        let mut state = self.state();
        if let Some(record) = state.registry.remove(id) {
            state.sessions.remove(&id);
            let remaining = state.registry.len();
            drop(state);
            tracing::info!(
                worker = id,
                addr = %record.addr,
                activations = record.activations,
                remaining,
                "worker {id} considered terminated: {reason}; removed from the list"
            );
        }
    }

    /// The totals and the table rows at positions `rows` (in id order).
    pub fn status(&self, rows: std::ops::Range<usize>) -> DispatcherStatus {
        let now = Instant::now();
        let config = &self.config;
        let state = self.state();
        let bound = state.registry.fairness_bound(
            config.activation_interval(),
            config.expected_activation(),
            config.max_active,
        );
        let mut status = state.registry.status(now, bound, config.max_active, rows);
        status.uptime_ms = now.duration_since(self.started).as_millis() as u64;
        let dropped = self.rejections.totals();
        status.auth_failures = dropped.auth_failures;
        status.bad_frames = dropped.bad_frames;
        status.replayed = dropped.replayed;
        status
    }
}
