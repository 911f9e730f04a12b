//! Finding peers by UDP broadcast: every IPv4 interface's broadcast address, retried with
//! exponential backoff until an acceptable answer arrives.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::ProtoError;
use crate::message::Frame;
use crate::udp::FrameSocket;

/// The subnet broadcast address of every IPv4 interface that has one (loopback has none).
///
/// Docker drops the limited broadcast 255.255.255.255 on internal networks, and a container on
/// two networks must be found on both, so we send to each subnet's own broadcast address.
pub fn interface_broadcast_addresses() -> Vec<Ipv4Addr> {
    let Ok(interfaces) = if_addrs::get_if_addrs() else {
        return Vec::new();
    };
    let mut addrs: Vec<Ipv4Addr> = interfaces
        .into_iter()
        .filter_map(|iface| match iface.addr {
            if_addrs::IfAddr::V4(v4) if !v4.ip.is_loopback() => v4.broadcast,
            _ => None,
        })
        .collect();
    addrs.sort();
    addrs.dedup();
    addrs
}

/// Where discovery datagrams go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Targets {
    /// Every interface's broadcast address, on this port (re-read before each attempt, so a
    /// container connected to a new network is reached there too).
    Broadcast { port: u16 },
    /// Fixed addresses: tests on loopback, or networks without broadcast.
    Fixed(Vec<SocketAddr>),
}

impl Targets {
    pub fn resolve(&self) -> Vec<SocketAddr> {
        match self {
            Targets::Broadcast { port } => {
                let mut addrs = interface_broadcast_addresses();
                if addrs.is_empty() {
                    addrs.push(Ipv4Addr::BROADCAST);
                }
                addrs
                    .into_iter()
                    .map(|ip| SocketAddr::from((ip, *port)))
                    .collect()
            }
            Targets::Fixed(addrs) => addrs.clone(),
        }
    }
}

/// Exponential backoff with ±25 % jitter, so a fleet that lost its dispatcher at the same
/// instant does not come back in lockstep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The delays to wait after each attempt: initial, 2×, 4×… capped at `max`, jittered.
    pub fn delays(self) -> impl Iterator<Item = Duration> {
        let mut base = self.initial;
        std::iter::from_fn(move || {
            let jitter = 0.75 + rand::random::<f64>() * 0.5;
            let delay = base.mul_f64(jitter).min(self.max);
            base = (base * 2).min(self.max);
            Some(delay)
        })
    }
}

/// Broadcasts `request` to `targets` until `accept` returns `Some` for a reply, resending after
/// each backoff delay. Replies that do not decode or are not accepted are skipped.
/// Cancel it by dropping the future (e.g. in a `select!` against shutdown).
pub async fn discover<T>(
    socket: &mut FrameSocket,
    request: &Frame,
    targets: &Targets,
    backoff: Backoff,
    mut accept: impl FnMut(&Frame, SocketAddr) -> Option<T>,
) -> Result<T, ProtoError> {
    for (attempt, delay) in (1u64..).zip(backoff.delays()) {
        // One unreachable network (e.g. just disconnected) does not stop the others.
        if let Err(e) = socket.send_to_all(request, &targets.resolve()).await {
            tracing::debug!(error = %e, "discovery send failed on some network");
        }
        tracing::debug!(attempt, ?delay, "discovery broadcast sent");
        let deadline = Instant::now() + delay;
        loop {
            let received = tokio::time::timeout_at(deadline, socket.recv_from()).await;
            let Ok(received) = received else { break };
            match received? {
                (from, Ok(frame)) => {
                    if let Some(answer) = accept(&frame, from) {
                        return Ok(answer);
                    }
                }
                (from, Err(e)) => {
                    tracing::debug!(%from, error = %e, "ignoring bad discovery reply")
                }
            }
        }
    }
    unreachable!("the backoff iterator never ends")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_with_bounded_jitter() {
        let backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        let delays: Vec<Duration> = backoff.delays().take(10).collect();
        assert!(delays[0] >= Duration::from_millis(75) && delays[0] <= Duration::from_millis(125));
        assert!(
            delays[3] >= Duration::from_millis(600) && delays[3] <= Duration::from_millis(1000)
        );
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(2)));
        assert!(delays[9] >= Duration::from_millis(1500));
    }

    #[test]
    fn fixed_targets_resolve_to_themselves() {
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert_eq!(Targets::Fixed(vec![addr]).resolve(), vec![addr]);
    }

    #[test]
    fn broadcast_targets_never_resolve_to_nothing() {
        assert!(!Targets::Broadcast { port: 7100 }.resolve().is_empty());
    }
}
