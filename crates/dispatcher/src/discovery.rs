//! Answers workers' "is someone there" broadcasts with an id and where to register.

use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::Arc;

use proto::udp::FrameSocket;
use proto::{Frame, Message};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::shared::Shared;

pub async fn answer_discovery(
    mut socket: FrameSocket,
    shared: Arc<Shared>,
    tcp_port: u16,
    shutdown: CancellationToken,
) {
    loop {
        let received = tokio::select! {
            _ = shutdown.cancelled() => return,
            received = socket.recv_from() => received,
        };
        let (from, frame) = match received {
            Ok(received) => received,
            Err(e) => {
                tracing::warn!(error = %e, "discovery socket receive failed");
                continue;
            }
        };
        let nonce = match frame {
            Ok(Frame {
                message: Message::Discover { nonce },
                ..
            }) => nonce,
            Ok(frame) => {
                tracing::debug!(%from, kind = ?frame.message.kind(), "ignoring non-discovery datagram");
                continue;
            }
            Err(e) => {
                shared.rejections.reject(from, "discovery datagram", &e);
                continue;
            }
        };
        let Some(dispatcher) = advertised_addr(shared.config.advertise, from, tcp_port) else {
            tracing::warn!(%from, "no route back to the worker; not answering");
            continue;
        };
        let worker_id = shared
            .state()
            .registry
            .assign_id(from, nonce, Instant::now());
        tracing::debug!(%from, worker_id, %dispatcher, "answering discovery");
        let welcome = Frame::new(
            0,
            Message::Welcome {
                nonce,
                worker_id,
                dispatcher,
            },
        );
        if let Err(e) = socket.send_to(&welcome, from).await {
            tracing::warn!(%from, error = %e, "cannot answer discovery");
        }
    }
}

/// The address to tell a worker at `worker`: the configured one, else the local address the
/// kernel routes to that worker from (right even when the dispatcher sits on several networks).
fn advertised_addr(
    configured: Option<SocketAddr>,
    worker: SocketAddr,
    tcp_port: u16,
) -> Option<SocketAddr> {
    if configured.is_some() {
        return configured;
    }
    let probe = StdUdpSocket::bind(("0.0.0.0", 0)).ok()?;
    probe.connect(worker).ok()?;
    Some(SocketAddr::new(probe.local_addr().ok()?.ip(), tcp_port))
}
