//! The dispatcher's table at 10 000 and 100 000 workers, without sockets: what each worker
//! costs in memory and what each periodic job costs in time. (One process cannot hold 100 000
//! sockets on this machine: its hard limit is 20 000 descriptors; `scripts/bench-scale`
//! measures the real daemon up to that.) Prints one JSON line per size.
//!
//!   cargo bench -p dispatcher --bench table_scale

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant as StdInstant};

use dispatcher::registry::Registry;
use tokio::time::Instant;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Mean time of `f` over `runs` calls, in microseconds.
fn mean_us(runs: u32, mut f: impl FnMut()) -> f64 {
    let start = StdInstant::now();
    for _ in 0..runs {
        f();
    }
    start.elapsed().as_secs_f64() * 1e6 / f64::from(runs)
}

fn main() {
    for count in [10_000u64, 100_000] {
        let now = Instant::now();
        let before = rss_bytes();
        let mut registry = Registry::new();
        let start = StdInstant::now();
        for i in 0..count {
            let from = SocketAddr::from(([127, 0, (i >> 16) as u8, 1], (i & 0xffff) as u16));
            let id = registry.assign_id(from, i, now);
            let weight = 1 + (i % 10) as u32;
            registry
                .register(id, from, weight, Duration::from_secs(1), now)
                .expect("a fresh id registers");
        }
        let register_us = start.elapsed().as_secs_f64() * 1e6 / count as f64;
        let table_bytes = rss_bytes().saturating_sub(before);
        let ids: Vec<u64> = (1..=count).collect();
        let heard_ns = mean_us(1, || {
            for id in &ids {
                registry.heard(*id, now);
            }
        }) * 1000.0
            / count as f64;
        let silence_scan_us = mean_us(20, || {
            black_box(registry.silent(now, Duration::from_secs(5)));
        });
        let activation_round_us = mean_us(20, || {
            black_box(registry.candidates());
        });
        let summary_us = mean_us(20, || {
            black_box(registry.status(now, 1.0, 5, 0..100));
        });
        println!(
            "{{\"workers\": {count}, \"table_bytes_per_worker\": {}, \"register_us\": {register_us:.2}, \"heartbeat_ns\": {heard_ns:.0}, \"silence_scan_ms\": {:.2}, \"activation_round_ms\": {:.2}, \"status_summary_ms\": {:.2}}}",
            table_bytes / count,
            silence_scan_us / 1000.0,
            activation_round_us / 1000.0,
            summary_us / 1000.0,
        );
    }
}
