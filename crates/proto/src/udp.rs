//! One frame per UDP datagram, stamped against replay.
//!
//! Each socket stamps its datagrams with a boot id (the time it was bound, so a restarted
//! sender's is higher) and a sequence number. With a cluster key, a receiver keeps a window of
//! the sequence numbers it accepted from each sender id and drops a datagram seen before, one
//! older than the window, or one from an earlier boot of that sender. Sender id 0 is anonymous
//! (a worker's discovery request, the dispatcher's answer): those carry their own nonce, which
//! binds an answer to one request, so they are not windowed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use crate::codec::FrameCodec;
use crate::error::ProtoError;
use crate::frame::Stamp;
use crate::message::Frame;

/// Largest UDP payload; a datagram can never be longer.
const MAX_DATAGRAM: usize = 65_507;
/// How far below the highest sequence number seen a late datagram is still accepted.
pub const REPLAY_WINDOW: u64 = 1024;
const WINDOW_WORDS: usize = (REPLAY_WINDOW / 64) as usize;

/// Binds a UDP socket that may send broadcasts. On a fixed port it may share the port with
/// other listeners (several halab daemons on one host, or a restarted daemon whose old socket
/// lingers); on port 0 it must not: with the reuse flag the kernel may hand two sockets the
/// same ephemeral port, and one of them would receive the other's answers.
pub fn bind_broadcast_socket(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(addr.port() != 0)?;
    socket.set_broadcast(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// A boot id: microseconds since the Unix epoch, strictly increasing within this process.
fn next_boot_id() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_micros() as u64);
    let previous = LAST.fetch_max(now, Ordering::Relaxed);
    if previous >= now {
        LAST.fetch_add(1, Ordering::Relaxed) + 1
    } else {
        now
    }
}

/// The sequence numbers accepted from one sender: the highest, and a bitmap below it.
#[derive(Debug, Clone)]
struct Window {
    boot: u64,
    top: u64,
    /// Bit i: `top - i` was accepted.
    seen: [u64; WINDOW_WORDS],
}

impl Window {
    fn new(boot: u64, seq: u64) -> Self {
        let mut seen = [0; WINDOW_WORDS];
        seen[0] = 1;
        Window {
            boot,
            top: seq,
            seen,
        }
    }

    /// Accepts `seq` once; false for a repeat or one below the window.
    fn accept(&mut self, seq: u64) -> bool {
        if seq > self.top {
            self.slide(seq - self.top);
            self.top = seq;
            self.seen[0] |= 1;
            return true;
        }
        let offset = self.top - seq;
        if offset >= REPLAY_WINDOW || self.is_set(offset) {
            return false;
        }
        self.seen[(offset / 64) as usize] |= 1 << (offset % 64);
        true
    }

    /// Moves every bit `shift` places up (offset i becomes i + shift); bits leaving drop off.
    fn slide(&mut self, shift: u64) {
        if shift >= REPLAY_WINDOW {
            self.seen = [0; WINDOW_WORDS];
            return;
        }
        let words = (shift / 64) as usize;
        let bits = (shift % 64) as u32;
        let old = self.seen;
        for (k, word) in self.seen.iter_mut().enumerate() {
            let low = k.checked_sub(words).map_or(0, |i| old[i]);
            let carry = match k.checked_sub(words + 1) {
                Some(i) if bits > 0 => old[i] >> (64 - bits),
                _ => 0,
            };
            *word = if bits == 0 {
                low
            } else {
                (low << bits) | carry
            };
        }
    }

    fn is_set(&self, offset: u64) -> bool {
        self.seen[(offset / 64) as usize] & (1 << (offset % 64)) != 0
    }
}

/// Per sender id, what has been accepted (the pure part of the replay check).
#[derive(Debug, Default)]
pub struct ReplayGuard {
    windows: HashMap<u64, Window>,
}

impl ReplayGuard {
    /// Accepts a stamped datagram from `sender` at most once.
    pub fn check(&mut self, sender: u64, stamp: Stamp) -> Result<(), ProtoError> {
        if sender == 0 {
            return Ok(());
        }
        let Some(window) = self.windows.get_mut(&sender) else {
            self.windows
                .insert(sender, Window::new(stamp.boot, stamp.seq));
            return Ok(());
        };
        if stamp.boot < window.boot {
            return Err(ProtoError::StaleBoot {
                sender,
                boot: stamp.boot,
                current: window.boot,
            });
        }
        if stamp.boot > window.boot {
            // The sender restarted: a new stream of numbers.
            *window = Window::new(stamp.boot, stamp.seq);
            return Ok(());
        }
        if window.accept(stamp.seq) {
            Ok(())
        } else {
            Err(ProtoError::ReplayedDatagram {
                sender,
                seq: stamp.seq,
            })
        }
    }
}

/// A UDP socket that sends and receives [`Frame`]s.
#[derive(Debug)]
pub struct FrameSocket {
    socket: UdpSocket,
    codec: FrameCodec,
    buf: Vec<u8>,
    boot: u64,
    sent: AtomicU64,
    replays: ReplayGuard,
}

impl FrameSocket {
    pub fn bind(addr: SocketAddr, codec: FrameCodec) -> std::io::Result<Self> {
        Ok(FrameSocket {
            socket: bind_broadcast_socket(addr)?,
            codec,
            buf: vec![0; MAX_DATAGRAM],
            boot: next_boot_id(),
            sent: AtomicU64::new(0),
            replays: ReplayGuard::default(),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Sends `frame` to `to` under the next sequence number.
    pub async fn send_to(&self, frame: &Frame, to: SocketAddr) -> Result<(), ProtoError> {
        let datagram = self.stamp(frame)?;
        self.socket.send_to(&datagram, to).await?;
        Ok(())
    }

    /// Sends one stamped datagram to every target: the same bytes everywhere, so that a copy
    /// captured on its way to one receiver is a repeat at every other. A target that cannot be
    /// reached (a disconnected network) does not stop the others; the last error is returned.
    pub async fn send_to_all(
        &self,
        frame: &Frame,
        targets: &[SocketAddr],
    ) -> Result<(), ProtoError> {
        let datagram = self.stamp(frame)?;
        let mut result = Ok(());
        for target in targets {
            if let Err(e) = self.socket.send_to(&datagram, target).await {
                result = Err(e.into());
            }
        }
        result
    }

    fn stamp(&self, frame: &Frame) -> Result<Bytes, ProtoError> {
        let stamp = Stamp {
            boot: self.boot,
            seq: self.sent.fetch_add(1, Ordering::Relaxed) + 1,
        };
        self.codec.encode_datagram_stamped(frame, stamp)
    }

    /// Waits for the next datagram. A datagram that does not decode, or (with a cluster key)
    /// repeats one accepted before, is returned as an `Err` beside its source so the caller can
    /// log and count it and keep listening; only socket errors end up in the outer `Result`.
    pub async fn recv_from(&mut self) -> std::io::Result<(SocketAddr, Result<Frame, ProtoError>)> {
        let (len, from) = self.socket.recv_from(&mut self.buf).await?;
        Ok((from, self.decode(len)))
    }

    /// A datagram already queued, without waiting: `None` when there is none. Lets a driver
    /// read what queued up while it was stopped before it judges anyone silent.
    pub fn try_recv_from(
        &mut self,
    ) -> Option<std::io::Result<(SocketAddr, Result<Frame, ProtoError>)>> {
        match self.socket.try_recv_from(&mut self.buf) {
            Ok((len, from)) => Some(Ok((from, self.decode(len)))),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
            Err(e) => Some(Err(e)),
        }
    }

    fn decode(&mut self, len: usize) -> Result<Frame, ProtoError> {
        self.codec
            .decode_datagram_stamped(&self.buf[..len])
            .and_then(|(frame, stamp)| {
                // Without a key anyone can forge a stamp, so only keyed clusters check them.
                if self.codec.is_keyed() {
                    self.replays.check(frame.sender, stamp)?;
                }
                Ok(frame)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(boot: u64, seq: u64) -> Stamp {
        Stamp { boot, seq }
    }

    #[test]
    fn each_datagram_is_accepted_once_and_late_ones_within_the_window() {
        let mut guard = ReplayGuard::default();
        for seq in [5, 7, 6, 1000, 6 + REPLAY_WINDOW - 1] {
            guard.check(9, stamp(1, seq)).unwrap();
        }
        for seq in [5, 7, 6, 1000] {
            assert!(matches!(
                guard.check(9, stamp(1, seq)),
                Err(ProtoError::ReplayedDatagram { .. })
            ));
        }
        // Below the window: refused even though never seen.
        assert!(guard.check(9, stamp(1, 4)).is_err());
        // Unseen and inside the window: fine.
        guard.check(9, stamp(1, 999)).unwrap();
        // Anonymous senders are not windowed.
        guard.check(0, stamp(1, 5)).unwrap();
        guard.check(0, stamp(1, 5)).unwrap();
    }

    #[test]
    fn a_restarted_sender_starts_a_new_window_and_its_old_run_is_stale() {
        let mut guard = ReplayGuard::default();
        guard.check(3, stamp(100, 50)).unwrap();
        guard.check(3, stamp(200, 1)).unwrap();
        assert!(matches!(
            guard.check(3, stamp(100, 51)),
            Err(ProtoError::StaleBoot { .. })
        ));
        guard.check(3, stamp(200, 2)).unwrap();
        // Other senders are independent.
        guard.check(4, stamp(100, 50)).unwrap();
    }

    #[test]
    fn the_window_agrees_with_a_model_that_remembers_everything() {
        let mut guard = ReplayGuard::default();
        let mut seen = std::collections::BTreeSet::new();
        let mut top = 0u64;
        let mut state = 12345u64;
        for step in 0..20_000u64 {
            // Mostly forward with jumps, repeats and late arrivals of every size.
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let jitter = (state >> 33) % 3000;
            let seq = (step / 2 + jitter).max(1);
            let expected = !seen.contains(&seq) && (seq > top || top - seq < REPLAY_WINDOW);
            let accepted = guard.check(1, stamp(1, seq)).is_ok();
            assert_eq!(accepted, expected, "step {step}: seq {seq}, top {top}");
            if accepted {
                seen.insert(seq);
                top = top.max(seq);
            }
        }
    }

    #[test]
    fn boot_ids_increase() {
        let a = next_boot_id();
        let b = next_boot_id();
        assert!(b > a);
    }
}
