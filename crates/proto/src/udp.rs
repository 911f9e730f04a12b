//! One frame per UDP datagram.

use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use crate::codec::FrameCodec;
use crate::error::ProtoError;
use crate::message::Frame;

/// Largest UDP payload; a datagram can never be longer.
const MAX_DATAGRAM: usize = 65_507;

/// Binds a UDP socket that may send broadcasts and share its port with other listeners
/// (several halab daemons on one host, or a restarted daemon whose old socket lingers).
pub fn bind_broadcast_socket(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_broadcast(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// A UDP socket that sends and receives [`Frame`]s.
#[derive(Debug)]
pub struct FrameSocket {
    socket: UdpSocket,
    codec: FrameCodec,
    buf: Vec<u8>,
}

impl FrameSocket {
    pub fn bind(addr: SocketAddr, codec: FrameCodec) -> std::io::Result<Self> {
        Ok(FrameSocket {
            socket: bind_broadcast_socket(addr)?,
            codec,
            buf: vec![0; MAX_DATAGRAM],
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    pub async fn send_to(&self, frame: &Frame, to: SocketAddr) -> Result<(), ProtoError> {
        let datagram = self.codec.encode_datagram(frame)?;
        self.socket.send_to(&datagram, to).await?;
        Ok(())
    }

    /// Waits for the next datagram. A datagram that does not decode is returned as an `Err`
    /// beside its source so the caller can log and count it and keep listening; only socket
    /// errors end up in the outer `Result`.
    pub async fn recv_from(&mut self) -> std::io::Result<(SocketAddr, Result<Frame, ProtoError>)> {
        let (len, from) = self.socket.recv_from(&mut self.buf).await?;
        Ok((from, self.codec.decode_datagram(&self.buf[..len])))
    }
}
