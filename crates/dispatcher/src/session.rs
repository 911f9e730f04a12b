//! One task per registered worker: it owns the worker's connection, relays the activator's
//! commands, and applies the worker's frames (reports, heartbeats) to the table in the order
//! they arrive.

use std::sync::Arc;

use proto::{Connection, Message, WorkerId};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::registry::ReportOutcome;
use crate::shared::{Command, Shared};

pub struct Session {
    id: WorkerId,
    conn: Connection,
    commands: mpsc::Receiver<Command>,
    shared: Arc<Shared>,
    awaiting_status: Option<oneshot::Sender<bool>>,
    awaiting_activation: Option<oneshot::Sender<()>>,
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
        let reason = loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
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
            Command::StatusCheck(reply) => {
                self.awaiting_status = Some(reply);
                self.conn.send(0, Message::StatusCheck { worker_id }).await
            }
            Command::Activate(reply) => {
                self.awaiting_activation = Some(reply);
                self.conn.send(0, Message::Activate { worker_id }).await
            }
        }
    }

    /// Applies one frame from the worker; `Some(reason)` ends the session.
    fn apply(&mut self, message: Message) -> Option<String> {
        let id = self.id;
        let now = Instant::now();
        match message {
            Message::Heartbeat => self.shared.state().registry.heard(id, now),
            Message::Status { activated } => {
                self.shared.state().registry.heard(id, now);
                if let Some(reply) = self.awaiting_status.take() {
                    let _ = reply.send(activated);
                }
            }
            Message::WorkerActivated => {
                // Marked here, before any report that follows it on this connection is read.
                let marked = self.shared.state().registry.mark_active(id, now);
                if marked {
                    tracing::info!(worker = id, "worker {id} activated");
                }
                if let Some(reply) = self.awaiting_activation.take() {
                    let _ = reply.send(());
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
