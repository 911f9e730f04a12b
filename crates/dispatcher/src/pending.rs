//! Ids handed out in discovery answers and not yet registered. Every operation is O(1)
//! (amortised): with a hundred thousand workers discovering at once, a scan per datagram or per
//! registration would make start-up quadratic. Bounded: past [`MAX_PENDING`] the oldest go.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use proto::WorkerId;
use tokio::time::Instant;

/// How long a handed-out id waits for its registration.
pub const PENDING_ID_TTL: Duration = Duration::from_secs(30);
/// Most ids waiting at once; a flood of discovery datagrams cannot grow the table past this.
pub const MAX_PENDING: usize = 1 << 17;

/// A discovery request: where it came from and the nonce it carried.
type Request = (SocketAddr, u64);

#[derive(Debug, Default)]
pub struct PendingIds {
    by_request: HashMap<Request, WorkerId>,
    by_id: HashMap<WorkerId, Request>,
    /// Ids in the order they were handed out, to expire the oldest first.
    issued: VecDeque<(Instant, WorkerId)>,
}

impl PendingIds {
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The id already handed out for this request, if it is still waiting.
    pub fn find(&mut self, request: Request, now: Instant) -> Option<WorkerId> {
        self.expire(now);
        self.by_request.get(&request).copied()
    }

    pub fn insert(&mut self, request: Request, id: WorkerId, now: Instant) {
        self.expire(now);
        while self.by_id.len() >= MAX_PENDING {
            let Some((_, oldest)) = self.issued.pop_front() else {
                break;
            };
            self.forget(oldest);
        }
        self.by_request.insert(request, id);
        self.by_id.insert(id, request);
        self.issued.push_back((now, id));
    }

    /// Takes `id` out of the table: true if it was waiting (registration may proceed).
    pub fn take(&mut self, id: WorkerId, now: Instant) -> bool {
        self.expire(now);
        self.forget(id)
    }

    fn forget(&mut self, id: WorkerId) -> bool {
        match self.by_id.remove(&id) {
            Some(request) => {
                self.by_request.remove(&request);
                true
            }
            None => false,
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(at, id)) = self.issued.front() {
            // Entries of ids already registered are skipped here, not searched for at take.
            if now.duration_since(at) < PENDING_ID_TTL && self.by_id.contains_key(&id) {
                break;
            }
            self.issued.pop_front();
            if now.duration_since(at) >= PENDING_ID_TTL {
                self.forget(id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(port: u16) -> Request {
        (SocketAddr::from(([10, 0, 0, 1], port)), 7)
    }

    #[test]
    fn an_id_is_found_again_taken_once_and_expires() {
        let t0 = Instant::now();
        let mut pending = PendingIds::default();
        pending.insert(request(1), 10, t0);
        assert_eq!(pending.find(request(1), t0), Some(10));
        assert!(pending.take(10, t0));
        assert!(!pending.take(10, t0), "taken twice");
        pending.insert(request(2), 11, t0);
        assert_eq!(pending.find(request(2), t0 + PENDING_ID_TTL), None);
        assert!(!pending.take(11, t0 + PENDING_ID_TTL));
        assert!(pending.is_empty());
    }

    #[test]
    fn the_table_is_bounded_and_drops_the_oldest() {
        let t0 = Instant::now();
        let mut pending = PendingIds::default();
        for id in 0..(MAX_PENDING as u64 + 10) {
            let (from, _) = request(1);
            pending.insert((from, id), id, t0);
        }
        assert_eq!(pending.len(), MAX_PENDING);
        assert!(!pending.take(0, t0), "the oldest was dropped");
        assert!(pending.take(MAX_PENDING as u64 + 9, t0));
    }
}
