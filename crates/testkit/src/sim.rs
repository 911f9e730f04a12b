//! Pieces of a seeded simulation that every daemon's simulation needs: a reproducible random
//! source (print the seed with every failure) and a schedule of deliveries in virtual time that
//! keeps the order things were sent in among those due together.

/// A small, fast, seeded generator (xorshift64): the same seed gives the same schedule.
#[derive(Debug, Clone)]
pub struct SimRng {
    state: u64,
    seed: u64,
}

impl SimRng {
    pub fn new(seed: u64) -> SimRng {
        SimRng {
            // Zero is xorshift's one fixed point.
            state: seed.max(1),
            seed,
        }
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// A number in `0..below` (`below` > 0).
    pub fn below(&mut self, below: u64) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state % below
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// A number in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low + 1)
    }

    /// One of `items` (not empty).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// Deliveries waiting for their time (virtual milliseconds, or any ordered instant). Those due
/// at the same step come out in the order they were scheduled, so that a sender's messages on
/// one connection stay in order.
#[derive(Debug)]
pub struct Schedule<T, At = u64> {
    queue: Vec<(At, u64, T)>,
    next: u64,
}

impl<T, At> Default for Schedule<T, At> {
    fn default() -> Self {
        Schedule {
            queue: Vec::new(),
            next: 0,
        }
    }
}

impl<T, At: Ord + Copy> Schedule<T, At> {
    pub fn push(&mut self, at: At, item: T) {
        self.queue.push((at, self.next, item));
        self.next += 1;
    }

    /// Everything due at or before `now`, earliest first (ties in scheduling order).
    pub fn due(&mut self, now: At) -> Vec<T> {
        let (mut due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.queue)
            .into_iter()
            .partition(|(at, _, _)| *at <= now);
        self.queue = later;
        due.sort_by_key(|(at, order, _)| (*at, *order));
        due.into_iter().map(|(_, _, item)| item).collect()
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Removes (and returns) the items `f` picks, whenever they were due.
    pub fn take_if(&mut self, mut f: impl FnMut(&T) -> bool) -> Vec<T> {
        let (taken, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.queue)
            .into_iter()
            .partition(|(_, _, item)| f(item));
        self.queue = kept;
        taken.into_iter().map(|(_, _, item)| item).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_numbers() {
        let mut a = SimRng::new(42);
        let mut b = SimRng::new(42);
        let xs: Vec<u64> = (0..20).map(|_| a.below(1000)).collect();
        let ys: Vec<u64> = (0..20).map(|_| b.below(1000)).collect();
        assert_eq!(xs, ys);
        assert!(xs.iter().any(|x| *x != xs[0]));
        assert!((0..1000).all(|_| (3..=5).contains(&a.between(3, 5))));
    }

    #[test]
    fn due_items_come_out_in_time_then_scheduling_order() {
        let mut s = Schedule::default();
        s.push(5, "c");
        s.push(3, "a");
        s.push(5, "d");
        s.push(3, "b");
        s.push(9, "e");
        assert_eq!(s.due(2), Vec::<&str>::new());
        assert_eq!(s.due(5), ["a", "b", "c", "d"]);
        assert_eq!(s.len(), 1);
        assert_eq!(s.take_if(|x| *x == "e"), ["e"]);
        assert!(s.is_empty());
    }
}
