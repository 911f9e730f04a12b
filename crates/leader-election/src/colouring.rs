//! Who is green: a pure function of the previous colours, the live nodes and the leader.
//!
//! Invariant after every call: every live node is coloured, exactly ⌈n/3⌉ of the n live nodes
//! are green, the leader is green — and as few previously coloured nodes as possible change
//! colour (newcomers take whatever colour is short first).

use std::collections::{BTreeMap, BTreeSet};

use proto::{Colour, NodeId};

/// ⌈n/3⌉: how many of `n` live nodes are green.
pub fn greens_needed(n: usize) -> usize {
    n.div_ceil(3)
}

/// The new colouring of `live` (which includes `leader`), changing `previous` minimally.
pub fn recolour(
    previous: &BTreeMap<NodeId, Colour>,
    live: &BTreeSet<NodeId>,
    leader: NodeId,
) -> BTreeMap<NodeId, Colour> {
    let target = greens_needed(live.len());
    let mut colours: BTreeMap<NodeId, Colour> = live
        .iter()
        .filter_map(|id| previous.get(id).map(|c| (*id, *c)))
        .collect();
    if live.contains(&leader) {
        colours.insert(leader, Colour::Green);
    }
    let count_green =
        |c: &BTreeMap<NodeId, Colour>| c.values().filter(|c| **c == Colour::Green).count();

    // Too many greens: turn the surplus red, never the leader; the newest ids first, so the
    // longest-serving greens keep their colour.
    let surplus = count_green(&colours).saturating_sub(target);
    let demoted: Vec<NodeId> = colours
        .iter()
        .rev()
        .filter(|(id, c)| **c == Colour::Green && **id != leader)
        .map(|(id, _)| *id)
        .take(surplus)
        .collect();
    for id in demoted {
        colours.insert(id, Colour::Red);
    }

    // Too few: newcomers first (colouring them changes nobody), then reds, oldest ids first
    // (the seed colours in order of registration).
    let mut missing = target.saturating_sub(count_green(&colours));
    let newcomers: Vec<NodeId> = live
        .iter()
        .filter(|id| !colours.contains_key(id))
        .copied()
        .collect();
    for id in newcomers {
        let colour = if missing > 0 {
            missing -= 1;
            Colour::Green
        } else {
            Colour::Red
        };
        colours.insert(id, colour);
    }
    let promoted: Vec<NodeId> = colours
        .iter()
        .filter(|(_, c)| **c == Colour::Red)
        .map(|(id, _)| *id)
        .take(missing)
        .collect();
    for id in promoted {
        colours.insert(id, Colour::Green);
    }
    colours
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn check_invariant(
        colours: &BTreeMap<NodeId, Colour>,
        live: &BTreeSet<NodeId>,
        leader: NodeId,
    ) {
        assert_eq!(
            colours.keys().copied().collect::<BTreeSet<_>>(),
            *live,
            "every live node coloured, nobody else"
        );
        let greens = colours.values().filter(|c| **c == Colour::Green).count();
        assert_eq!(
            greens,
            greens_needed(live.len()),
            "exactly ⌈n/3⌉ green of {}",
            live.len()
        );
        assert_eq!(
            colours.get(&leader),
            Some(&Colour::Green),
            "the leader is green"
        );
    }

    /// The fewest changes any valid colouring needs, computed independently of `recolour`.
    fn fewest_changes(
        previous: &BTreeMap<NodeId, Colour>,
        live: &BTreeSet<NodeId>,
        leader: NodeId,
    ) -> usize {
        let kept: Vec<(NodeId, Colour)> = live
            .iter()
            .filter_map(|id| previous.get(id).map(|c| (*id, *c)))
            .collect();
        let newcomers = live.len() - kept.len();
        let leader_flip = usize::from(
            kept.iter()
                .any(|(id, c)| *id == leader && *c == Colour::Red),
        );
        let greens = kept.iter().filter(|(_, c)| *c == Colour::Green).count() + leader_flip;
        let target = greens_needed(live.len());
        leader_flip + greens.saturating_sub(target) + target.saturating_sub(greens + newcomers)
    }

    fn changes(previous: &BTreeMap<NodeId, Colour>, next: &BTreeMap<NodeId, Colour>) -> usize {
        next.iter()
            .filter(|(id, c)| previous.get(id).is_some_and(|p| p != *c))
            .count()
    }

    #[test]
    fn every_n_from_1_to_50_gets_exactly_a_third_green() {
        for n in 1..=50u64 {
            let live: BTreeSet<NodeId> = (1..=n).collect();
            let colours = recolour(&BTreeMap::new(), &live, n);
            check_invariant(&colours, &live, n);
        }
    }

    #[test]
    fn growing_one_by_one_to_50_recolours_nobody() {
        let mut colours = BTreeMap::new();
        let mut live = BTreeSet::new();
        for id in 1..=50u64 {
            live.insert(id);
            let next = recolour(&colours, &live, 1);
            check_invariant(&next, &live, 1);
            assert_eq!(
                changes(&colours, &next),
                0,
                "a join never recolours an existing node"
            );
            colours = next;
        }
    }

    #[test]
    fn from_scratch_the_leader_and_the_lowest_ids_are_green() {
        let live: BTreeSet<NodeId> = [10, 20, 30, 40, 50, 60].into();
        let colours = recolour(&BTreeMap::new(), &live, 60);
        let greens: Vec<NodeId> = colours
            .iter()
            .filter(|(_, c)| **c == Colour::Green)
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(greens, vec![10, 60], "the leader and the lowest id");
    }

    #[test]
    fn a_new_leader_that_was_red_turns_green_and_one_green_turns_red() {
        let previous: BTreeMap<NodeId, Colour> =
            [(1, Colour::Green), (2, Colour::Red), (3, Colour::Red)].into();
        let live: BTreeSet<NodeId> = [1, 2, 3].into();
        let next = recolour(&previous, &live, 3);
        check_invariant(&next, &live, 3);
        assert_eq!(changes(&previous, &next), 2);
    }

    proptest! {
        /// Random joins, leaves and leader changes: the invariant always holds and no colouring
        /// changes more nodes than the fewest any valid colouring would.
        #[test]
        fn joins_leaves_and_new_leaders_recolour_minimally(steps in prop::collection::vec((0u8..4, 1u64..60), 1..120)) {
            let mut colours: BTreeMap<NodeId, Colour> = BTreeMap::new();
            let mut live: BTreeSet<NodeId> = [1].into();
            let mut leader = 1;
            for (op, id) in steps {
                match op {
                    0 | 1 => { live.insert(id); }
                    2 if live.len() > 1 && id != leader => { live.remove(&id); }
                    3 if live.contains(&id) => leader = id,
                    _ => {}
                }
                let next = recolour(&colours, &live, leader);
                check_invariant(&next, &live, leader);
                prop_assert_eq!(changes(&colours, &next), fewest_changes(&colours, &live, leader));
                colours = next;
            }
        }
    }
}
