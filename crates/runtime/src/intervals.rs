//! Counting overlaps of intervals in time: how many primaryships or leaderships were in force
//! at one instant, from the wall-clock intervals the nodes themselves report.

/// The most half-open intervals `[from, until)` that overlap at one instant. Touching ones
/// (`[a, b)` and `[b, c)`) do not.
pub fn max_overlap(intervals: impl IntoIterator<Item = (u64, u64)>) -> u64 {
    let mut edges: Vec<(u64, i64)> = Vec::new();
    for (from, until) in intervals {
        if until > from {
            edges.push((from, 1));
            edges.push((until, -1));
        }
    }
    // At the same instant an end (-1) sorts before a start (+1).
    edges.sort_unstable();
    let (mut open, mut most) = (0i64, 0i64);
    for (_, step) in edges {
        open += step;
        most = most.max(open);
    }
    most as u64
}

#[cfg(test)]
mod tests {
    use super::max_overlap;

    #[test]
    fn overlaps_are_counted_touching_and_empty_intervals_are_not() {
        assert_eq!(max_overlap([]), 0);
        assert_eq!(max_overlap([(0, 10), (10, 20), (20, 20)]), 1);
        assert_eq!(max_overlap([(0, 10), (5, 15), (9, 30), (15, 16)]), 3);
    }
}
