//! Links: the registration connection a follower keeps open to its leader.
//!
//! A killed process's kernel closes its sockets at once, so a follower learns of its leader's
//! death from the link in milliseconds instead of waiting out the leader timeout (silence,
//! by contrast, proves nothing: the leader may be paused or cut off, and still leading). The
//! rule that makes acting on a closed link safe is on the leader's side: it never closes a
//! link while it lives without first dropping that follower's acks from its lease (see
//! [`crate::node::Node::link_lost`]). Trust assumption: a TCP reset forged by someone on the
//! network path is not distinguished from a real close.

use std::net::SocketAddr;

use proto::{Connection, ElectionMessage, Frame, FrameCodec, Message, NodeId, ProtoError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::daemon::{JOIN_TIMEOUT, SharedNode};
use crate::node::Input;

/// What a follower's registration says.
#[derive(Debug, Clone, Copy)]
pub struct Join {
    pub id: NodeId,
    pub leader: NodeId,
    pub addr: SocketAddr,
    pub term: u64,
    pub seq: u64,
}

/// Follower: registers with the leader, hands the answer to the driver, then holds the link
/// open and reports when the leader's end closes it.
pub async fn follow(
    join: Join,
    codec: FrameCodec,
    inputs: mpsc::Sender<Input>,
    shutdown: CancellationToken,
) {
    let leader = join.leader;
    let (input, conn) = match tokio::time::timeout(JOIN_TIMEOUT, register(join, codec)).await {
        Ok(Ok((input, conn))) => (input, Some(conn)),
        Ok(Err(e)) => {
            tracing::info!(leader, addr = %join.addr, "registration failed: {e:#}");
            (Input::JoinFailed { leader }, None)
        }
        Err(_) => {
            tracing::info!(leader, addr = %join.addr, "registration timed out");
            (Input::JoinFailed { leader }, None)
        }
    };
    if inputs.send(input).await.is_err() {
        return;
    }
    let Some(mut conn) = conn else { return };
    let closed = loop {
        let frame = tokio::select! {
            _ = shutdown.cancelled() => return,
            frame = conn.read_frame() => frame,
        };
        match frame {
            // The leader sends nothing on the link; ignore anything it may send in future.
            Ok(Some(_)) => continue,
            Ok(None) => break "closed",
            Err(ProtoError::Io(e)) => {
                tracing::debug!(leader, error = %e, "link error");
                break "reset";
            }
            // Garbage is no proof of anything: drop the link quietly and register again.
            Err(e) => {
                tracing::warn!(leader, error = %e, "bad frame on the link to the leader");
                return;
            }
        }
    };
    tracing::info!(leader, "the leader's end {closed} our link");
    let _ = inputs.send(Input::LeaderLinkClosed { leader }).await;
}

async fn register(join: Join, codec: FrameCodec) -> anyhow::Result<(Input, Connection)> {
    let mut conn = Connection::connect(join.addr, codec).await?;
    let message = ElectionMessage::Join {
        term: join.term,
        seq: join.seq,
    };
    conn.send(join.id, Message::Election(message)).await?;
    match conn.read_frame().await? {
        Some(Frame {
            message: Message::Election(ElectionMessage::Joined { term, view, .. }),
            ..
        }) => Ok((
            Input::Joined {
                leader: join.leader,
                term,
                view,
            },
            conn,
        )),
        Some(Frame {
            message: Message::Rejected { reason },
            ..
        }) => anyhow::bail!("refused: {reason}"),
        other => anyhow::bail!("unexpected answer {other:?}"),
    }
}

/// Leader: holds a follower's link until the follower closes it or the process stops. If it
/// breaks from our side, the follower's acks stop counting before the connection closes.
pub async fn lead(
    mut conn: Connection,
    follower: NodeId,
    node: SharedNode,
    shutdown: CancellationToken,
) {
    loop {
        let frame = tokio::select! {
            // The whole process is stopping: the node stops leading with it.
            _ = shutdown.cancelled() => return,
            frame = conn.read_frame() => frame,
        };
        match frame {
            Ok(Some(_)) => continue,
            Ok(None) => return,
            Err(e) => {
                node.lock().link_lost(follower);
                if !matches!(e, ProtoError::Io(_)) {
                    node.rejections.reject(conn.peer(), "frame on a link", &e);
                }
                return;
            }
        }
    }
}
