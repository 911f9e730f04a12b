//! The decisions of the store, as pure functions of what a node knows: whether a standby may
//! promote, how far the primary may acknowledge, how a standby catches up, when a primary may
//! start to serve. Everything else in `node` carries these out.

use std::collections::{BTreeMap, BTreeSet};

use proto::StoreNodeId;

use crate::witness::{NOBODY, WitnessState};

/// The timers the rules use (milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// The primary sends a keep-alive to each standby after this long without a frame.
    pub keepalive_ms: u64,
    /// A peer silent for this long is gone: a standby looks at the witness, a primary drops
    /// the standby from the in-sync set.
    pub peer_timeout_ms: u64,
    /// A primary acknowledges and serves reads only until this long after its last visit to
    /// the witness began.
    pub lease_ms: u64,
    /// Added to the lease before anyone counts it as over: room for clock-rate differences and
    /// for the time between a visit's start and its slot reaching the disk.
    pub lease_margin_ms: u64,
    /// Every node visits the witness this often.
    pub visit_ms: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            keepalive_ms: 50,
            peer_timeout_ms: 150,
            lease_ms: 120,
            lease_margin_ms: 40,
            visit_ms: 30,
        }
    }
}

/// What a standby that lost its primary does, given the witness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Promotion {
    /// The primary's slot is fresh: only the link is down. Stay, alert, keep redirecting.
    PrimaryAlive { primary: StoreNodeId, age_ms: u64 },
    /// The primary dropped this node from the in-sync set: it may lack acknowledged writes.
    NotInSync,
    /// The witness counts this node in sync, but its data dir is new (emptied, replaced) and it
    /// has not caught up with a primary since: it lacks what the witness thinks it holds.
    NewDataDir,
    /// Promote: the witness state to create (the next epoch, this node primary, nobody in sync
    /// until the others have caught up with it).
    Promote(WitnessState),
}

/// The rule of seed 003, made safe: a standby that lost its primary promotes only if the
/// witness shows the primary silent past its lease and a margin, only if the witness counts
/// this standby in sync, and only if its log is the one the witness counted (`log_trusted`:
/// not a new data dir that has not caught up since). `silent_since(slot)` is how long the
/// primary has been silent since its slot's time, as this standby counts it (less the time it
/// was held up itself: see `stalls`).
pub fn promotion(
    me: StoreNodeId,
    addrs: (&str, &str),
    state: &WitnessState,
    slots: &BTreeMap<StoreNodeId, u64>,
    silent_since: impl Fn(u64) -> u64,
    timing: &Timing,
    log_trusted: bool,
) -> Promotion {
    let age_ms = slots
        .get(&state.primary)
        .map_or(u64::MAX, |slot| silent_since(*slot));
    if age_ms <= timing.lease_ms + timing.lease_margin_ms {
        return Promotion::PrimaryAlive {
            primary: state.primary,
            age_ms,
        };
    }
    if !state.in_sync.contains(&me) {
        return Promotion::NotInSync;
    }
    if !log_trusted {
        return Promotion::NewDataDir;
    }
    Promotion::Promote(WitnessState {
        version: state.version + 1,
        epoch: state.epoch + 1,
        primary: me,
        primary_addr: addrs.0.to_string(),
        primary_link: addrs.1.to_string(),
        in_sync: Vec::new(),
    })
}

/// What a node whose data dir is new changes in the witness before anything else: the record
/// without it, since its log no longer holds what the record counts it for. Named primary →
/// the next epoch names nobody (an in-sync standby then promotes: nobody's slot is fresh);
/// counted in sync → the same epoch without it. None: the record does not count it.
pub fn leave_witness(me: StoreNodeId, state: &WitnessState) -> Option<WitnessState> {
    let in_sync: Vec<StoreNodeId> = state
        .in_sync
        .iter()
        .copied()
        .filter(|id| *id != me)
        .collect();
    if state.primary == me {
        Some(WitnessState {
            version: state.version + 1,
            epoch: state.epoch + 1,
            primary: NOBODY,
            primary_addr: String::new(),
            primary_link: String::new(),
            in_sync,
        })
    } else if in_sync.len() != state.in_sync.len() {
        Some(WitnessState {
            version: state.version + 1,
            in_sync,
            ..state.clone()
        })
    } else {
        None
    }
}

/// When a node that just became primary may serve: once any lease the previous primary could
/// still hold has run out. `previous_slot` is that primary's slot as read *after* the change
/// (a renewal it made before the change is there to see; one after it found the new epoch).
pub fn serve_from(previous_slot: Option<u64>, now_ms: u64, timing: &Timing) -> u64 {
    previous_slot.map_or(now_ms, |slot| {
        (slot + timing.lease_ms + timing.lease_margin_ms).max(now_ms)
    })
}

/// How far the primary may acknowledge: what is durable on itself and acknowledged by every
/// standby it counts (those of the witness's in-sync set, and one being added).
pub fn commit_point(
    durable: u64,
    counted: &BTreeSet<StoreNodeId>,
    acked: &BTreeMap<StoreNodeId, u64>,
) -> u64 {
    counted
        .iter()
        .map(|s| acked.get(s).copied().unwrap_or(0))
        .fold(durable, u64::min)
}

/// Whether a primary may drop a standby silent since `silent_since_ms` from the in-sync set.
/// Only on evidence that the primary itself is not the one cut off: some other node was heard
/// (a standby's frame, a probe over the client network) after that standby went silent. A
/// primary that hears nobody keeps its standbys in sync, and lets its lease lapse instead.
/// `reached_ms` is None when the daemon does not probe: then silence is all there is to go on.
pub fn may_drop(
    silent_since_ms: u64,
    reached_ms: Option<u64>,
    others_heard_ms: impl IntoIterator<Item = u64>,
) -> bool {
    let Some(reached) = reached_ms else {
        return true;
    };
    reached > silent_since_ms || others_heard_ms.into_iter().any(|at| at > silent_since_ms)
}

/// How a joining standby whose log ends at (`last_seq`, `last_epoch`) catches up from a primary
/// whose in-memory log holds entries `base+1 ..= last` (and knows the epoch of each, and of
/// `base`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatchUp {
    /// Send the entries after `from` (the standby's log is a prefix of the primary's).
    Entries { from: u64 },
    /// Send the whole state, then the entries after it: the standby is too far behind, or its
    /// log went another way (entries of an epoch whose primary lost them).
    Snapshot,
}

pub fn catch_up(last_seq: u64, last_epoch: u64, epoch_at: impl Fn(u64) -> Option<u64>) -> CatchUp {
    match epoch_at(last_seq) {
        Some(epoch) if epoch == last_epoch => CatchUp::Entries { from: last_seq },
        _ => CatchUp::Snapshot,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(primary: StoreNodeId, in_sync: &[StoreNodeId]) -> WitnessState {
        WitnessState {
            version: 5,
            epoch: 3,
            primary,
            primary_addr: "p:1".into(),
            primary_link: "p:2".into(),
            in_sync: in_sync.to_vec(),
        }
    }

    #[test]
    fn a_new_data_dir_takes_its_node_out_of_the_witness() {
        let s = state(1, &[2, 3]);
        let Some(resigned) = leave_witness(1, &s) else {
            panic!("a primary with an emptied data dir resigns");
        };
        assert_eq!(
            (resigned.version, resigned.epoch, resigned.primary),
            (6, 4, NOBODY)
        );
        assert_eq!(resigned.in_sync, [2, 3]);
        let Some(left) = leave_witness(3, &s) else {
            panic!("a standby counted in sync leaves the set");
        };
        assert_eq!((left.version, left.epoch, left.primary), (6, 3, 1));
        assert_eq!(left.in_sync, [2]);
        assert_eq!(leave_witness(4, &s), None, "not counted: nothing to change");
    }

    /// Silence by the wall clock at `now_ms` (a standby that was never held up).
    fn silent_at(now_ms: u64) -> impl Fn(u64) -> u64 {
        move |slot| now_ms.saturating_sub(slot)
    }

    #[test]
    fn a_standby_promotes_only_in_sync_and_after_the_lease_and_margin() {
        let t = Timing::default();
        let dead_after = t.lease_ms + t.lease_margin_ms;
        let slots = BTreeMap::from([(1, 1_000)]);
        let addrs = ("me:1", "me:2");
        let s = state(1, &[2, 3]);
        assert_eq!(
            promotion(
                2,
                addrs,
                &s,
                &slots,
                silent_at(1_000 + dead_after),
                &t,
                true
            ),
            Promotion::PrimaryAlive {
                primary: 1,
                age_ms: dead_after
            }
        );
        let Promotion::Promote(next) = promotion(
            2,
            addrs,
            &s,
            &slots,
            silent_at(1_001 + dead_after),
            &t,
            true,
        ) else {
            panic!("a primary silent past lease + margin is replaced");
        };
        assert_eq!((next.epoch, next.primary, next.version), (4, 2, 6));
        assert!(next.in_sync.is_empty());
        assert_eq!(next.primary_addr, "me:1");
        // Out of sync: never, however dead the primary (and while it lives, the link is down).
        assert_eq!(
            promotion(4, addrs, &s, &slots, silent_at(u64::MAX / 2), &t, true),
            Promotion::NotInSync
        );
        assert!(matches!(
            promotion(4, addrs, &s, &slots, silent_at(1_000), &t, true),
            Promotion::PrimaryAlive { .. }
        ));
        // A new data dir the witness still counts: not until it has caught up.
        assert_eq!(
            promotion(
                2,
                addrs,
                &s,
                &slots,
                silent_at(1_001 + dead_after),
                &t,
                false
            ),
            Promotion::NewDataDir
        );
        // A primary that resigned (its data dir was emptied): nobody's slot is fresh.
        let resigned = WitnessState {
            primary: NOBODY,
            ..s.clone()
        };
        assert!(matches!(
            promotion(2, addrs, &resigned, &slots, silent_at(1_000), &t, true),
            Promotion::Promote(_)
        ));
        // No slot at all: the primary never visited; it is not alive.
        assert!(matches!(
            promotion(2, addrs, &s, &BTreeMap::new(), silent_at(5), &t, true),
            Promotion::Promote(_)
        ));
    }

    #[test]
    fn a_new_primary_waits_out_the_previous_lease() {
        let t = Timing::default();
        assert_eq!(serve_from(None, 500, &t), 500);
        assert_eq!(
            serve_from(Some(1_000), 1_010, &t),
            1_000 + t.lease_ms + t.lease_margin_ms
        );
        assert_eq!(serve_from(Some(1_000), 9_999, &t), 9_999);
    }

    #[test]
    fn the_commit_point_waits_for_every_counted_standby() {
        let acked = BTreeMap::from([(2, 10), (3, 7)]);
        assert_eq!(commit_point(12, &BTreeSet::new(), &acked), 12);
        assert_eq!(commit_point(12, &BTreeSet::from([2]), &acked), 10);
        assert_eq!(commit_point(12, &BTreeSet::from([2, 3]), &acked), 7);
        assert_eq!(commit_point(5, &BTreeSet::from([2, 3]), &acked), 5);
        // A counted standby that never answered holds everything back.
        assert_eq!(commit_point(12, &BTreeSet::from([4]), &acked), 0);
    }

    #[test]
    fn a_standby_is_dropped_only_when_someone_else_was_heard_after_it() {
        // Not probing: silence decides.
        assert!(may_drop(100, None, []));
        // The other standby answered after this one went silent: this one is gone.
        assert!(may_drop(100, Some(90), [150]));
        // A probe over the client network got through after it: only the link is down.
        assert!(may_drop(100, Some(120), [90]));
        // Nobody since: this primary may be the one cut off. Keep it in sync.
        assert!(!may_drop(100, Some(100), [100, 60]));
    }

    #[test]
    fn a_standby_catches_up_from_entries_only_when_its_last_entry_matches() {
        let epochs = |seq: u64| {
            (10..=20)
                .contains(&seq)
                .then_some(if seq < 15 { 1 } else { 2 })
        };
        assert_eq!(catch_up(12, 1, epochs), CatchUp::Entries { from: 12 });
        assert_eq!(catch_up(20, 2, epochs), CatchUp::Entries { from: 20 });
        // Same position, another epoch: it holds entries the primary never had.
        assert_eq!(catch_up(16, 1, epochs), CatchUp::Snapshot);
        // Behind what the primary keeps, or ahead of its log.
        assert_eq!(catch_up(3, 1, epochs), CatchUp::Snapshot);
        assert_eq!(catch_up(25, 2, epochs), CatchUp::Snapshot);
    }
}
