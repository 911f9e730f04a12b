//! The time a node was held up, taken out of the silences it measures.
//!
//! A saturated host's scheduler holds a container up for 100–300 ms at a time (~285 ms once
//! stalled every container at once). A node that was not running heard nothing meanwhile, and a
//! peer's silence over that time is no evidence against the peer. So every silence the node
//! judges by (a standby's link, a primary's reach, the primary's witness slot) is counted less
//! the part of it this node spent held up. Only the excess of a gap over [`STALL_MS`] is taken
//! out: recurring short stalls slow a decision down by that much and no more, where a rule that
//! restarted the count at every stall could put it off for good (60 ms in every 200 did, in the
//! simulation). Counting less silence only ever delays a decision: it cannot cost safety, which
//! rests on the lease.

use std::collections::VecDeque;

/// A gap this long between two inputs (the daemon ticks every 5 ms) means the node was held up;
/// the part of a gap beyond it is taken out of silences.
pub const STALL_MS: u64 = 50;

/// Stalls older than this are forgotten: a silence that long is decided on already.
const REMEMBER_MS: u64 = 10_000;

#[derive(Debug, Default, Clone)]
pub struct Stalls {
    /// (when the node woke, how much of the gap before it was a stall), oldest first.
    recent: VecDeque<(u64, u64)>,
}

impl Stalls {
    /// Notes the gap between an input at `before_ms` and the next one at `now_ms`.
    pub fn note(&mut self, before_ms: u64, now_ms: u64) {
        let gap = now_ms.saturating_sub(before_ms);
        if gap > STALL_MS {
            self.recent.push_back((now_ms, gap - STALL_MS));
        }
        while self
            .recent
            .front()
            .is_some_and(|(woke, _)| now_ms.saturating_sub(*woke) > REMEMBER_MS)
        {
            self.recent.pop_front();
        }
    }

    /// How long it is at `now_ms` since `since_ms`, less the time this node was held up
    /// meanwhile (a stall that began before `since_ms` counts only from it).
    pub fn silence(&self, since_ms: u64, now_ms: u64) -> u64 {
        let held_up: u64 = self
            .recent
            .iter()
            .filter(|(woke, _)| *woke > since_ms)
            .map(|(woke, stalled)| (*stalled).min(woke - since_ms))
            .sum();
        now_ms.saturating_sub(since_ms).saturating_sub(held_up)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_excess_of_a_gap_over_the_stall_threshold_is_taken_out() {
        let mut stalls = Stalls::default();
        stalls.note(1_000, 1_005);
        stalls.note(1_005, 1_005 + STALL_MS);
        assert_eq!(
            stalls.silence(1_000, 1_200),
            200,
            "no gap beyond the threshold"
        );
        stalls.note(1_200, 1_500);
        assert_eq!(stalls.silence(1_000, 1_600), 600 - (300 - STALL_MS));
        // Heard after the stall: the stall is not part of this silence.
        assert_eq!(stalls.silence(1_500, 1_600), 100);
        // A silence that began within the stall loses only its own part of it.
        assert_eq!(stalls.silence(1_450, 1_600), 150 - 50);
    }

    #[test]
    fn recurring_stalls_slow_the_count_down_but_never_stop_it() {
        let mut stalls = Stalls::default();
        let mut now = 0;
        // 60 ms held up in every 200, for 3 s.
        while now < 3_000 {
            for _ in 0..28 {
                stalls.note(now, now + 5);
                now += 5;
            }
            stalls.note(now, now + 60);
            now += 60;
        }
        let silence = stalls.silence(0, now);
        assert!(silence > now * 9 / 10, "{silence} of {now}");
    }

    #[test]
    fn old_stalls_are_forgotten() {
        let mut stalls = Stalls::default();
        stalls.note(0, 300);
        assert_eq!(stalls.silence(0, 400), 400 - (300 - STALL_MS));
        let later = 300 + REMEMBER_MS + 100;
        stalls.note(later, later + 5);
        assert!(stalls.recent.is_empty());
        assert_eq!(stalls.silence(0, later + 5), later + 5);
    }
}
