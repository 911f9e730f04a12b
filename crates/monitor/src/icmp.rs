//! ICMP echo — "is the machine up?" (seed 004's `ping`). A raw socket where the process may open
//! one (root, or CAP_NET_RAW: the lab's containers), else the unprivileged datagram kind Linux
//! offers (`net.ipv4.ping_group_range`). Each echo has a socket of its own, connected to the
//! target so the kernel hands it only that host's packets; blocking I/O on a blocking thread.

use std::io::{self, Read as _};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

const ECHO_REQUEST: u8 = 8;
const ECHO_REPLY: u8 = 0;
const PAYLOAD: &[u8] = b"halab monitor";

/// Which kind of ICMP socket this process can open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketKind {
    Raw,
    Datagram,
}

impl SocketKind {
    fn socket_type(self) -> Type {
        match self {
            SocketKind::Raw => Type::RAW,
            SocketKind::Datagram => Type::DGRAM,
        }
    }
}

#[derive(Debug)]
pub struct Pinger {
    kind: SocketKind,
    id: u16,
    seq: AtomicU16,
}

impl Pinger {
    /// Finds a kind of ICMP socket that opens here, raw first.
    pub fn detect() -> io::Result<Pinger> {
        let kind = [SocketKind::Raw, SocketKind::Datagram]
            .into_iter()
            .find(|kind| open(*kind).is_ok())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "neither a raw ICMP socket (needs CAP_NET_RAW) nor a datagram one \
                     (net.ipv4.ping_group_range) can be opened",
                )
            })?;
        Ok(Pinger {
            kind,
            id: std::process::id() as u16,
            seq: AtomicU16::new(0),
        })
    }

    pub fn kind(&self) -> SocketKind {
        self.kind
    }

    /// One echo to `addr`: the round trip, or an error (no reply within `timeout` included).
    pub async fn ping(&self, addr: Ipv4Addr, timeout: Duration) -> io::Result<Duration> {
        let (kind, id) = (self.kind, self.id);
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        tokio::task::spawn_blocking(move || echo(kind, addr, id, seq, timeout))
            .await
            .map_err(io::Error::other)?
    }
}

fn open(kind: SocketKind) -> io::Result<Socket> {
    Socket::new(Domain::IPV4, kind.socket_type(), Some(Protocol::ICMPV4))
}

fn echo(
    kind: SocketKind,
    addr: Ipv4Addr,
    id: u16,
    seq: u16,
    timeout: Duration,
) -> io::Result<Duration> {
    let socket = open(kind)?;
    socket.connect(&SocketAddr::from((addr, 0)).into())?;
    let began = Instant::now();
    socket.send(&echo_request(id, seq))?;
    let mut buf = [0u8; 1500];
    loop {
        let left = timeout.saturating_sub(began.elapsed());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "no echo reply"));
        }
        socket.set_read_timeout(Some(left))?;
        let n = match (&socket).read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        // A raw socket hands over the IP header too; a datagram one only the ICMP message
        // (and rewrites the id to its own, so only the sequence number can be checked).
        let message = match kind {
            SocketKind::Raw => {
                let header = usize::from(buf[0] & 0x0f) * 4;
                &buf[header.min(n)..n]
            }
            SocketKind::Datagram => &buf[..n],
        };
        if let Some((reply_id, reply_seq)) = parse_echo_reply(message) {
            if reply_seq == seq && (kind == SocketKind::Datagram || reply_id == id) {
                return Ok(began.elapsed());
            }
        }
    }
}

/// An echo request: type, code, checksum, id, sequence number, payload.
fn echo_request(id: u16, seq: u16) -> Vec<u8> {
    let mut packet = vec![ECHO_REQUEST, 0, 0, 0];
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(PAYLOAD);
    let sum = checksum(&packet);
    packet[2..4].copy_from_slice(&sum.to_be_bytes());
    packet
}

/// The (id, sequence number) of an echo reply, if `message` is one.
fn parse_echo_reply(message: &[u8]) -> Option<(u16, u16)> {
    if message.len() < 8 || message[0] != ECHO_REPLY || message[1] != 0 {
        return None;
    }
    let id = u16::from_be_bytes([message[4], message[5]]);
    let seq = u16::from_be_bytes([message[6], message[7]]);
    Some((id, seq))
}

/// The Internet checksum (RFC 1071): ones' complement of the ones' complement sum.
fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_checks_out_and_a_reply_is_recognised() {
        let request = echo_request(0x1234, 7);
        assert_eq!(
            checksum(&request),
            0,
            "a packet with its checksum sums to zero"
        );
        assert_eq!(parse_echo_reply(&request), None, "a request is not a reply");
        let mut reply = request.clone();
        reply[0] = ECHO_REPLY;
        assert_eq!(parse_echo_reply(&reply), Some((0x1234, 7)));
        assert_eq!(parse_echo_reply(&reply[..7]), None, "too short");
    }

    #[test]
    fn the_checksum_is_rfc_1071s() {
        // RFC 1071's worked example: 0001 f203 f4f5 f6f7 sums to ddf2, so the checksum is 220d.
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0x220d
        );
        assert_eq!(checksum(&[0xff]), !0xff00);
    }

    #[tokio::test]
    async fn loopback_answers_an_echo() {
        // The tests run as root (CI and the lab's machines), so at least one kind opens.
        let pinger = Pinger::detect().expect("an ICMP socket");
        let rtt = pinger
            .ping(Ipv4Addr::LOCALHOST, Duration::from_secs(1))
            .await
            .expect("127.0.0.1 answers");
        assert!(rtt < Duration::from_secs(1));
    }
}
