//! A TCP connection that speaks frames (the mini-redis `Connection` idiom): callers read and
//! write whole [`Frame`]s and never see bytes.

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use crate::codec::FrameCodec;
use crate::error::ProtoError;
use crate::message::{Frame, Message};

#[derive(Debug)]
pub struct Connection {
    framed: Framed<TcpStream, FrameCodec>,
    peer: SocketAddr,
}

impl Connection {
    pub fn new(stream: TcpStream, codec: FrameCodec) -> std::io::Result<Self> {
        let peer = stream.peer_addr()?;
        // Frames are small and latency matters more than packing them.
        stream.set_nodelay(true)?;
        Ok(Connection {
            framed: Framed::new(stream, codec),
            peer,
        })
    }

    pub async fn connect(addr: SocketAddr, codec: FrameCodec) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        Connection::new(stream, codec)
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
}
