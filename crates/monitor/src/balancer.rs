//! Which healthy node serves a request that any of them can (seed 004's sum, a stale read), and
//! in what order the others are tried if it fails mid-request. Pure: the caller passes the
//! healthy nodes, the requests each has outstanding, and the randomness.

use clap::ValueEnum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Balance {
    /// Power of two choices: of two nodes picked at random, the one with fewer requests
    /// outstanding (pingora's and Envoy's default: near-best spread without global state).
    P2c,
    /// Seed 004's rule: the first healthy node in the configured order, else the next.
    Priority,
    /// Each request to the next node in turn.
    RoundRobin,
}

/// The nodes to try, best first. `healthy` is in configured order with each node's outstanding
/// requests; `turn` counts requests (round-robin); `random` is two random numbers (p2c).
pub fn order(
    policy: Balance,
    healthy: &[(String, u32)],
    turn: u64,
    random: (u64, u64),
) -> Vec<String> {
    let n = healthy.len();
    if n == 0 {
        return Vec::new();
    }
    let first = match policy {
        Balance::Priority => 0,
        Balance::RoundRobin => (turn % n as u64) as usize,
        Balance::P2c => {
            let a = (random.0 % n as u64) as usize;
            // A second pick distinct from the first, whenever there are two.
            let b = if n > 1 {
                (a + 1 + (random.1 % (n as u64 - 1)) as usize) % n
            } else {
                a
            };
            if healthy[b].1 < healthy[a].1 { b } else { a }
        }
    };
    // The rest in order after the first, for retries.
    (0..n).map(|i| healthy[(first + i) % n].0.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(load: &[u32]) -> Vec<(String, u32)> {
        load.iter()
            .enumerate()
            .map(|(i, l)| (format!("s{}", i + 1), *l))
            .collect()
    }

    #[test]
    fn priority_is_seed_004s_s1_else_s2() {
        assert_eq!(
            order(Balance::Priority, &nodes(&[5, 0]), 7, (1, 2)),
            ["s1", "s2"]
        );
        assert_eq!(
            order(Balance::Priority, &nodes(&[0])[..], 0, (0, 0)),
            ["s1"]
        );
        assert!(order(Balance::Priority, &[], 0, (0, 0)).is_empty());
    }

    #[test]
    fn round_robin_takes_turns_and_keeps_the_rest_for_retries() {
        let three = nodes(&[0, 0, 0]);
        let firsts: Vec<String> = (0..4)
            .map(|turn| order(Balance::RoundRobin, &three, turn, (0, 0))[0].clone())
            .collect();
        assert_eq!(firsts, ["s1", "s2", "s3", "s1"]);
        assert_eq!(
            order(Balance::RoundRobin, &three, 1, (0, 0)),
            ["s2", "s3", "s1"]
        );
    }

    #[test]
    fn p2c_picks_the_less_loaded_of_two_distinct_nodes() {
        let load = nodes(&[9, 1, 5]);
        for a in 0..3 {
            for b in 0..2 {
                let first = order(Balance::P2c, &load, 0, (a, b))[0].clone();
                let picked_a = format!("s{}", a + 1);
                let picked_b = format!("s{}", (a + 1 + b) % 3 + 1);
                assert_ne!(picked_a, picked_b, "two distinct choices");
                let best = [&picked_a, &picked_b]
                    .into_iter()
                    .min_by_key(|n| load.iter().find(|(m, _)| m == *n).unwrap().1)
                    .unwrap();
                assert_eq!(&first, best);
            }
        }
        // Over many draws the busiest node is never first: it loses every pair it is in.
        assert!((0..100).all(|r| order(Balance::P2c, &load, 0, (r, r * 7))[0] != "s1"));
    }
}
