//! The TCP port: a worker's registration starts a session; a status request is answered and
//! the connection closed; anything else is refused.

use std::sync::Arc;
use std::time::Duration;

use halab_runtime::accept::Acceptor;
use proto::{Connection, Frame, Message};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::session::Session;
use crate::shared::Shared;

/// How many commands may queue for one worker; the activator sends at most one at a time.
const COMMAND_QUEUE: usize = 4;
/// Rows in the answer to a plain status request.
pub const SUMMARY_ROWS: usize = 100;
/// Most rows in one page: ≈ 100 bytes each, well below the 1 MiB frame limit.
pub const MAX_PAGE_ROWS: usize = 5000;

pub async fn serve(acceptor: Acceptor, shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        let (stream, peer, permit) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = acceptor.accept() => accepted,
        };
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let conn = match Connection::new(stream, shared.codec.clone()).await {
                Ok(conn) => conn,
                Err(e) => return shared.rejections.reject(peer, "handshake", &e),
            };
            handle_connection(conn, permit, shared, shutdown).await;
        });
    }
}

/// Serves one connection; `permit` counts it against --max-connections for as long as it lives.
async fn handle_connection(
    mut conn: Connection,
    permit: OwnedSemaphorePermit,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let peer = conn.peer();
    let first = tokio::select! {
        _ = shutdown.cancelled() => return,
        // A peer that connects and says nothing is given the silence timeout, no more.
        first = tokio::time::timeout(shared.config.silence_timeout(), conn.read_frame()) => first,
    };
    let frame = match first {
        Ok(Ok(Some(frame))) => frame,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            shared
                .rejections
                .reject(peer, "first frame; connection dropped", &e);
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "dropping connection: nothing said");
            return;
        }
    };
    match frame {
        Frame {
            message: Message::StatusRequest,
            ..
        } => {
            let status = shared.status(0..SUMMARY_ROWS);
            let _ = conn.send(0, Message::DispatcherStatus(status)).await;
        }
        Frame {
            message: Message::StatusPage { offset, limit },
            ..
        } => {
            let start = usize::try_from(offset).unwrap_or(usize::MAX);
            let len = (limit as usize).min(MAX_PAGE_ROWS);
            let status = shared.status(start..start.saturating_add(len));
            let _ = conn.send(0, Message::DispatcherStatus(status)).await;
        }
        Frame {
            sender: id,
            message:
                Message::Register {
                    weight,
                    heartbeat_ms,
                },
        } => {
            let heartbeat = Duration::from_millis(heartbeat_ms.into());
            let registered =
                shared
                    .state()
                    .registry
                    .register(id, peer, weight, heartbeat, Instant::now());
            if let Err(e) = registered {
                tracing::warn!(%peer, worker = id, "refusing registration: {e}");
                let _ = conn
                    .send(
                        0,
                        Message::Rejected {
                            reason: e.to_string(),
                        },
                    )
                    .await;
                return;
            }
            let (commands_tx, commands) = mpsc::channel(COMMAND_QUEUE);
            let workers = {
                let mut state = shared.state();
                state.sessions.insert(id, commands_tx);
                state.registry.len()
            };
            tracing::info!(worker = id, %peer, weight, workers, "worker {id} registered with weight {weight}");
            if let Err(e) = conn.send(0, Message::Registered { worker_id: id }).await {
                shared.remove_worker(id, &format!("registration could not be confirmed ({e})"));
                return;
            }
            // A task of its own: this one's memory (the handshake, the first read and its
            // timer) is freed now instead of living as long as the worker does.
            let session = Session::new(id, conn, commands, shared);
            tokio::spawn(async move {
                let _permit = permit;
                session.run(shutdown).await;
            });
        }
        Frame { message, .. } => {
            tracing::warn!(%peer, kind = ?message.kind(), "dropping connection: expected Register or a status request first");
            let reason =
                "the first frame must be Register, StatusRequest or StatusPage".to_string();
            let _ = conn.send(0, Message::Rejected { reason }).await;
        }
    }
}
