//! Is one key's history linearizable as a register? Wing & Gong's search with Lowe's memo
//! (the WGL algorithm, as Knossos and Porcupine use it): walk the history's calls and returns
//! in time order, linearize a call whose effect the register allows, backtrack at a return
//! whose call could not be placed, and never explore a (set linearized, register value) pair
//! twice. Keys are independent registers, so each is checked alone (P-compositionality): the
//! search stays small however long the run.
//!
//! An operation whose outcome is unknown returns "at infinity": it may take effect at any point
//! after its call, or — placed last, after everything that observed the register — never.

use std::collections::HashSet;

/// One operation on the register: a read that must see `value`, or a write of it. Values are
/// interned (0: the key does not exist).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub read: bool,
    pub value: u32,
    pub invoked: u64,
    /// u64::MAX: unknown.
    pub completed: u64,
}

const NIL: usize = usize::MAX;
const HEAD: usize = 0;

/// A call or a return in the time-ordered list (index 0 is the head).
#[derive(Debug, Clone, Copy)]
struct Entry {
    op: usize,
    /// A call's return entry; a return's own index.
    partner: usize,
    call: bool,
}

/// The doubly linked list of entries not yet linearized: lifting a call takes it and its
/// return out, and unlifting (in the reverse order) puts them back where they were.
struct Entries {
    entries: Vec<Entry>,
    next: Vec<usize>,
    prev: Vec<usize>,
}

impl Entries {
    fn new(steps: &[Step]) -> Entries {
        let mut order: Vec<(u64, bool, usize)> = steps
            .iter()
            .enumerate()
            .flat_map(|(i, s)| [(s.invoked, false, i), (s.completed, true, i)])
            .collect();
        // At equal times calls come first: the two operations then count as concurrent.
        order.sort_unstable();
        let mut entries = vec![Entry {
            op: NIL,
            partner: NIL,
            call: false,
        }];
        let mut return_of = vec![0; steps.len()];
        for &(_, is_return, op) in &order {
            if is_return {
                return_of[op] = entries.len();
            }
            entries.push(Entry {
                op,
                partner: NIL,
                call: !is_return,
            });
        }
        for entry in entries.iter_mut().skip(1) {
            entry.partner = if entry.call { return_of[entry.op] } else { NIL };
        }
        let n = entries.len();
        let next = (0..n)
            .map(|i| if i + 1 < n { i + 1 } else { NIL })
            .collect();
        let prev = (0..n).map(|i| i.wrapping_sub(1)).collect();
        Entries {
            entries,
            next,
            prev,
        }
    }

    fn unlink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    fn relink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = e;
        if n != NIL {
            self.prev[n] = e;
        }
    }

    fn lift(&mut self, call: usize) {
        self.unlink(call);
        self.unlink(self.entries[call].partner);
    }

    fn unlift(&mut self, call: usize) {
        self.relink(self.entries[call].partner);
        self.relink(call);
    }
}

/// A set of operations, as bits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }

    fn set(&mut self, i: usize, on: bool) {
        let (word, bit) = (i / 64, 1u64 << (i % 64));
        if on {
            self.0[word] |= bit;
        } else {
            self.0[word] &= !bit;
        }
    }
}

/// Whether some order of the operations, each placed between its call and its return, makes
/// every read see the latest write before it (or 0 before any).
pub fn linearizable(steps: &[Step]) -> bool {
    let mut list = Entries::new(steps);
    let mut linearized = Bits::new(steps.len());
    let mut seen: HashSet<(Bits, u32)> = HashSet::new();
    let mut stack: Vec<(usize, u32)> = Vec::new();
    let mut register = 0u32;
    let mut e = list.next[HEAD];
    while list.next[HEAD] != NIL {
        let entry = list.entries.get(e).copied();
        match entry {
            Some(entry) if entry.call => {
                let step = steps[entry.op];
                let allowed = !step.read || step.value == register;
                let after = if step.read { register } else { step.value };
                if allowed {
                    linearized.set(entry.op, true);
                    if seen.insert((linearized.clone(), after)) {
                        stack.push((e, register));
                        register = after;
                        list.lift(e);
                        e = list.next[HEAD];
                        continue;
                    }
                    linearized.set(entry.op, false);
                }
                e = list.next[e];
            }
            // A return whose call is not placed yet (or the end): undo the last placement.
            _ => {
                let Some((call, before)) = stack.pop() else {
                    return false;
                };
                register = before;
                linearized.set(list.entries[call].op, false);
                list.unlift(call);
                e = list.next[call];
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(value: u32, invoked: u64, completed: u64) -> Step {
        Step {
            read: false,
            value,
            invoked,
            completed,
        }
    }

    fn read(value: u32, invoked: u64, completed: u64) -> Step {
        Step {
            read: true,
            ..write(value, invoked, completed)
        }
    }

    #[test]
    fn sequential_histories() {
        assert!(linearizable(&[]));
        assert!(linearizable(&[
            read(0, 1, 2),
            write(1, 3, 4),
            read(1, 5, 6)
        ]));
        // A read of the old value after the write completed: stale.
        assert!(!linearizable(&[
            write(1, 1, 2),
            write(2, 3, 4),
            read(1, 5, 6)
        ]));
        // A read of a value before its write began.
        assert!(!linearizable(&[read(1, 1, 2), write(1, 3, 4)]));
    }

    #[test]
    fn concurrent_operations_may_take_effect_in_either_order() {
        // Two overlapping writes; reads after both see either, but then both reads agree.
        let w = [write(1, 0, 10), write(2, 5, 15)];
        assert!(linearizable(&[w[0], w[1], read(1, 20, 21)]));
        assert!(linearizable(&[w[0], w[1], read(2, 20, 21)]));
        assert!(!linearizable(&[
            w[0],
            w[1],
            read(2, 20, 21),
            read(1, 22, 23)
        ]));
        // A read overlapping a write may see the old or the new value.
        assert!(linearizable(&[
            write(1, 0, 1),
            write(2, 5, 10),
            read(1, 6, 7)
        ]));
        assert!(linearizable(&[
            write(1, 0, 1),
            write(2, 5, 10),
            read(2, 6, 7)
        ]));
        // But once a read saw the new value, a later read cannot see the old one.
        assert!(!linearizable(&[
            write(1, 0, 1),
            write(2, 5, 20),
            read(2, 6, 7),
            read(1, 8, 9)
        ]));
    }

    #[test]
    fn an_unknown_write_may_have_happened_or_not() {
        let lost = write(2, 5, u64::MAX);
        assert!(linearizable(&[write(1, 0, 1), lost, read(1, 10, 11)]));
        assert!(linearizable(&[write(1, 0, 1), lost, read(2, 10, 11)]));
        // Not before it was invoked, though.
        assert!(!linearizable(&[write(1, 0, 1), lost, read(2, 2, 3)]));
        // And once seen, it stays.
        assert!(!linearizable(&[
            write(1, 0, 1),
            lost,
            read(2, 10, 11),
            read(1, 12, 13)
        ]));
    }

    #[test]
    fn many_clients_thousands_of_operations_check_quickly() {
        // Four clients writing increasing values and reading; each operation overlaps its
        // neighbours. Valid by construction: every read returns the value of the latest write
        // that completed before it was invoked, or of the one it overlaps.
        let mut steps = Vec::new();
        let mut value = 0;
        for t in 0..5000u64 {
            let at = t * 10;
            if t % 2 == 0 {
                value += 1;
                steps.push(write(value, at, at + 15));
            } else {
                steps.push(read(value, at, at + 3));
            }
        }
        let began = std::time::Instant::now();
        assert!(linearizable(&steps));
        assert!(began.elapsed() < std::time::Duration::from_secs(5));
    }
}
