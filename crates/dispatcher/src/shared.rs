//! State shared by the dispatcher's tasks: the table behind a mutex (never held across an
//! `.await`), each worker session's command channel, and counters of rejected input.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use proto::{DispatcherStatus, FrameCodec, ProtoError, WorkerId};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::config::DispatcherConfig;
use crate::registry::Registry;

/// What the activator asks a worker's session to do; the answer comes back on the oneshot.
#[derive(Debug)]
pub enum Command {
    /// "status check": answers whether the worker says it is activated.
    StatusCheck(oneshot::Sender<bool>),
    /// "activate": answered once the worker said "worker activated".
    Activate(oneshot::Sender<()>),
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
    auth_failures: AtomicU64,
    bad_frames: AtomicU64,
}

impl Shared {
    pub fn new(config: DispatcherConfig, codec: FrameCodec) -> Self {
        Shared {
            state: Mutex::new(State::default()),
            config,
            codec,
            started: Instant::now(),
            auth_failures: AtomicU64::new(0),
            bad_frames: AtomicU64::new(0),
        }
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug elsewhere; the table itself is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts a frame or datagram that was dropped.
    pub fn count_rejected(&self, error: &ProtoError) {
        let counter = if error.is_auth_failure() {
            &self.auth_failures
        } else {
            &self.bad_frames
        };
        counter.fetch_add(1, Ordering::Relaxed);
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

    pub fn status(&self) -> DispatcherStatus {
        let now = Instant::now();
        let config = &self.config;
        let state = self.state();
        let bound = state.registry.fairness_bound(
            config.activation_interval(),
            config.expected_activation(),
            config.max_active,
        );
        let mut status = state.registry.status(now, bound, config.max_active);
        status.uptime_ms = now.duration_since(self.started).as_millis() as u64;
        status.auth_failures = self.auth_failures.load(Ordering::Relaxed);
        status.bad_frames = self.bad_frames.load(Ordering::Relaxed);
        status
    }
}
