//! One task per registered worker: it owns the worker's connection, relays the activator's
//! commands, and applies the worker's frames (reports, heartbeats) to the table in the order
//! they arrive.

use std::sync::Arc;

use proto::{Connection, Message, WorkerId};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::registry::ReportOutcome;
use crate::shared::{Command, Shared};

/// How often the dispatcher heartbeats each worker (workers heartbeat every second too).
pub const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(1);

pub struct Session {
    id: WorkerId,
    conn: Connection,
    commands: mpsc::Receiver<Command>,
    shared: Arc<Shared>,
    awaiting_status: Option<(u64, oneshot::Sender<bool>)>,
    awaiting_activation: Option<(u64, oneshot::Sender<()>)>,
}

impl Session {
    pub fn new(
        id: WorkerId,
        conn: Connection,
        commands: mpsc::Receiver<Command>,
        shared: Arc<Shared>,
    ) -> Self {
        Session {
            id,
            conn,
            commands,
            shared,
            awaiting_status: None,
            awaiting_activation: None,
        }
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        let id = self.id;
        // Heartbeats to the worker: whatever else is said, it hears from us this often, so a
        // worker notices a dead, paused or cut-off dispatcher by its silence.
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let reason = loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = heartbeat.tick() => {
                    if let Err(e) = self.conn.send(0, Message::Heartbeat).await {
                        break format!("cannot write to it ({e})");
                    }
                }
                command = self.commands.recv() => match command {
                    Some(command) => {
                        if let Err(e) = self.send_command(command).await {
                            break format!("cannot write to it ({e})");
                        }
                    }
                    // The table dropped us (silence timeout): just close the connection.
                    None => return,
                },
                frame = self.conn.read_frame() => match frame {
                    Ok(Some(frame)) => {
                        if frame.sender != id {
                            break format!("it sent a frame as worker {}", frame.sender);
                        }
                        if let Some(reason) = self.apply(frame.message) {
                            break reason;
                        }
                    }
                    Ok(None) => break "connection closed".to_string(),
                    Err(e) => {
                        self.shared.rejections.reject(self.conn.peer(), "frame from a worker", &e);
                        break format!("bad frame ({e})");
                    }
                },
            }
        };
        self.shared.remove_worker(id, &reason);
    }

    async fn send_command(&mut self, command: Command) -> Result<(), proto::ProtoError> {
        let worker_id = self.id;
        match command {
            Command::StatusCheck { request, reply } => {
                self.awaiting_status = Some((request, reply));
                let check = Message::StatusCheck { worker_id, request };
                self.conn.send(0, check).await
            }
            Command::Activate { request, reply } => {
                self.awaiting_activation = Some((request, reply));
                let activate = Message::Activate { worker_id, request };
                self.conn.send(0, activate).await
            }
        }
    }

    /// Applies one frame from the worker; `Some(reason)` ends the session.
    fn apply(&mut self, message: Message) -> Option<String> {
        let id = self.id;
        let now = Instant::now();
        match message {
            Message::Heartbeat => self.shared.state().registry.heard(id, now),
            Message::Status { activated, request } => {
                self.shared.state().registry.heard(id, now);
                match self.awaiting_status.take() {
                    Some((asked, reply)) if asked == request => {
                        let _ = reply.send(activated);
                    }
                    awaiting => {
                        // The answer to a check the activator gave up on: not this one's.
                        tracing::debug!(worker = id, request, "late answer to a status check");
                        self.awaiting_status = awaiting;
                    }
                }
            }
            Message::WorkerActivated { request } => {
                // Marked here, before any report that follows it on this connection is read;
                // however late, it counts: the worker kept its place while we waited.
                let marked = self.shared.state().registry.mark_active(id, request, now);
                if marked {
                    tracing::info!(worker = id, request, "worker {id} activated");
                } else {
                    self.shared.state().registry.heard(id, now);
                }
                if let Some((asked, reply)) = self.awaiting_activation.take() {
                    if asked == request {
                        let _ = reply.send(());
                    } else {
                        self.awaiting_activation = Some((asked, reply));
                    }
                }
            }
            Message::Report { activated } => {
                let outcome = self.shared.state().registry.report(id, activated, now);
                match outcome {
                    ReportOutcome::StillActive { answers } => tracing::info!(
                        worker = id,
                        answers,
                        "received a response from worker {id}: {answers} answers since its last activation"
                    ),
                    ReportOutcome::Deactivated {
                        answers,
                        active_for,
                    } => {
                        tracing::info!(
                            worker = id,
                            answers,
                            "received a response from worker {id}: {answers} answers since its last activation"
                        );
                        tracing::info!(
                            worker = id,
                            active_ms = active_for.as_millis() as u64,
                            "worker {id} deactivated; available again"
                        );
                    }
                    ReportOutcome::NotActive => tracing::warn!(
                        worker = id,
                        "ignoring a report from worker {id}, which is not active"
                    ),
                    ReportOutcome::UnknownWorker => {
                        return Some("it is no longer in the list".to_string());
                    }
                }
            }
            Message::Leaving => return Some("it said it is leaving".to_string()),
            other => {
                tracing::warn!(worker = id, kind = ?other.kind(), "ignoring unexpected frame from worker {id}");
                self.shared.state().registry.heard(id, now);
            }
        }
        None
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("peer", &self.conn.peer())
            .finish()
    }
}
