//! A TCP connection that speaks frames (the mini-redis `Connection` idiom): callers read and
//! write whole [`Frame`]s and never see bytes.
//!
//! Every connection starts with a handshake: each side sends a [`Message::Handshake`] with a
//! fresh random nonce, then numbers its frames from 1 and tags them over the *peer's* nonce.
//! A frame recorded on one connection therefore fails its tag on any other, and a frame
//! repeated within a connection is out of sequence: captured traffic cannot be replayed.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use crate::codec::FrameCodec;
use crate::error::ProtoError;
use crate::message::{Frame, Message, Nonce};

/// A peer that does not complete the handshake within this is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// The read buffer a connection starts with. Most frames are tens of bytes and a dispatcher
/// holds one connection per worker: tokio-util's default of 8 KiB (for reading and again for
/// writing) was most of a worker's cost. A larger frame grows the buffer as needed.
const READ_BUFFER: usize = 256;

#[derive(Debug)]
pub struct Connection {
    framed: Framed<TcpStream, FrameCodec>,
    peer: SocketAddr,
}

impl Connection {
    /// Wraps an accepted or connected stream and performs the handshake.
    pub async fn new(stream: TcpStream, codec: FrameCodec) -> Result<Self, ProtoError> {
        let peer = stream.peer_addr()?;
        // Frames are small and latency matters more than packing them.
        stream.set_nodelay(true)?;
        let mut framed = Framed::with_capacity(stream, codec, READ_BUFFER);
        // The write buffer, too, starts empty and grows to the largest frame sent.
        *framed.write_buffer_mut() = BytesMut::new();
        let local: Nonce = rand::random();
        framed
            .send(&Frame::new(0, Message::Handshake { nonce: local }))
            .await?;
        let answer = tokio::time::timeout(HANDSHAKE_TIMEOUT, framed.next())
            .await
            .map_err(|_| ProtoError::Handshake("the peer sent no handshake in time".into()))?;
        match answer {
            Some(Ok(Frame {
                message: Message::Handshake { nonce },
                ..
            })) => framed.codec_mut().bind_session(local, nonce),
            Some(Ok(frame)) => {
                return Err(ProtoError::Handshake(format!(
                    "expected a handshake, got {:?}",
                    frame.message.kind()
                )));
            }
            Some(Err(e)) => return Err(e),
            None => {
                return Err(ProtoError::Handshake(
                    "the peer closed the connection".into(),
                ));
            }
        }
        Ok(Connection { framed, peer })
    }

    /// Connects and performs the handshake, each within [`HANDSHAKE_TIMEOUT`]: a SYN lost to
    /// a full accept queue is otherwise retried by the kernel for minutes.
    pub async fn connect(addr: SocketAddr, codec: FrameCodec) -> Result<Self, ProtoError> {
        let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| ProtoError::Handshake(format!("no connection to {addr} in time")))??;
        Connection::new(stream, codec).await
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The next frame, `Ok(None)` when the peer closed the connection cleanly. After an error
    /// the stream's framing cannot be trusted any more: the caller must drop the connection.
    pub async fn read_frame(&mut self) -> Result<Option<Frame>, ProtoError> {
        self.framed.next().await.transpose()
    }

    pub async fn write_frame(&mut self, frame: &Frame) -> Result<(), ProtoError> {
        self.framed.send(frame).await
    }

    pub async fn send(&mut self, sender: u64, message: Message) -> Result<(), ProtoError> {
        self.write_frame(&Frame::new(sender, message)).await
    }

    /// Queues a frame without flushing it: a burst of frames then goes out with one
    /// [`Connection::flush`] (one write instead of one per frame).
    pub async fn queue(&mut self, sender: u64, message: Message) -> Result<(), ProtoError> {
        self.framed.feed(&Frame::new(sender, message)).await
    }

    pub async fn flush(&mut self) -> Result<(), ProtoError> {
        SinkExt::<&Frame>::flush(&mut self.framed).await
    }
}
