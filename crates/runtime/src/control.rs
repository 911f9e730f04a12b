//! The status endpoint: a daemon answers `StatusRequest` with its status document, and the
//! `status` / `healthcheck` subcommands ask for it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use proto::{Connection, FrameCodec, Message};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::Rejections;
use crate::accept::Acceptor;

/// Asks the daemon at `addr` for its status.
pub async fn query_status(
    addr: SocketAddr,
    codec: FrameCodec,
    timeout: Duration,
) -> anyhow::Result<Message> {
    query(addr, codec, Message::StatusRequest, timeout).await
}

/// Sends `request` to the daemon at `addr` and returns its one answer.
pub async fn query(
    addr: SocketAddr,
    codec: FrameCodec,
    request: Message,
    timeout: Duration,
) -> anyhow::Result<Message> {
    let exchange = async {
        let mut conn = Connection::connect(addr, codec)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        conn.send(0, request).await?;
        match conn.read_frame().await? {
            Some(frame) => match frame.message {
                Message::Rejected { reason } => {
                    bail!("{addr} refused: {reason}")
                }
                message => Ok(message),
            },
            None => bail!("{addr} closed the connection without answering"),
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .with_context(|| format!("{addr} did not answer within {timeout:?}"))?
}

/// Prints a status document: pretty JSON with `--json`, else the daemon's own table.
pub fn print_status<T: serde::Serialize>(
    status: &T,
    json: bool,
    table: impl FnOnce(&T) -> String,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(status)?);
    } else {
        print!("{}", table(status));
    }
    Ok(())
}

/// Status requests served at once; more are closed at once.
const STATUS_CONNECTIONS: usize = 64;
/// How long a status client may take to send its request.
const STATUS_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves status requests on `listener` until shutdown; `status` builds the answer. For daemons
/// (like the worker) that have no listening port of their own.
pub async fn serve_status(
    listener: TcpListener,
    codec: FrameCodec,
    shutdown: CancellationToken,
    status: impl Fn() -> Message + Clone + Send + 'static,
) {
    let rejections = Arc::new(Rejections::default());
    let reporter = rejections.clone();
    let reporter_shutdown = shutdown.clone();
    tokio::spawn(async move { reporter.report(reporter_shutdown).await });
    let acceptor = Acceptor::new(listener, STATUS_CONNECTIONS);
    loop {
        let (stream, peer, permit) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = acceptor.accept() => accepted,
        };
        let codec = codec.clone();
        let status = status.clone();
        let rejections = rejections.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut conn = match Connection::new(stream, codec).await {
                Ok(conn) => conn,
                Err(e) => return rejections.reject(peer, "handshake on the status port", &e),
            };
            // A client that connects and says nothing is not waited for indefinitely.
            let Ok(request) = tokio::time::timeout(STATUS_READ_TIMEOUT, conn.read_frame()).await
            else {
                return;
            };
            match request {
                Ok(Some(frame)) if frame.message == Message::StatusRequest => {
                    let _ = conn.send(0, status()).await;
                }
                Ok(Some(frame)) => {
                    tracing::debug!(%peer, kind = ?frame.message.kind(), "unexpected frame on the status port");
                    let reason = "this port only answers status requests".to_string();
                    let _ = conn.send(0, Message::Rejected { reason }).await;
                }
                Ok(None) => {}
                Err(e) => rejections.reject(peer, "frame on the status port", &e),
            }
        });
    }
}
