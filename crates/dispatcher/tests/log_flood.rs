//! A flood of bad datagrams must leave a bounded number of log lines and exact counters. Its
//! own test binary, because it installs the process-wide log subscriber to read the lines.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use halab_runtime::rejects::LINES_PER_SOURCE;
use proto::FrameCodec;
use tokio::time::Instant;

const FLOOD: usize = 20_000;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn lines(&self) -> Vec<String> {
        let bytes = self.0.lock().unwrap();
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The N of every "dropped N bad frames from 127.0.0.1" summary line.
fn summarised(lines: &[String]) -> u64 {
    lines
        .iter()
        .filter_map(|l| l.split("dropped ").nth(1))
        .filter(|rest| rest.contains("bad frames from 127.0.0.1"))
        .filter_map(|rest| rest.split(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn a_flood_of_bad_datagrams_leaves_a_bounded_log_and_exact_counts() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_env_filter("warn")
        .init();
    let codec = FrameCodec::default();
    let (d, _stop) = start_dispatcher(dispatcher_config(&[]), codec.clone()).await;

    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for batch in 0..FLOOD / 100 {
        for i in 0..100 {
            let garbage = [(batch + i) as u8; 64];
            udp.send_to(&garbage, d.discovery_addr).await.unwrap();
        }
        // Paced so that the socket's receive buffer holds each batch: counts stay comparable.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Loopback may still drop a datagram under load; the counter must match the log exactly.
    let status = wait_for(d.tcp_addr, &codec, "most of the flood counted", |s| {
        s.bad_frames >= FLOOD as u64 * 9 / 10
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(40);
    let counted = loop {
        let counted = status_of(d.tcp_addr, &codec).await.bad_frames;
        if summarised(&captured.lines()) == counted {
            break counted;
        }
        assert!(
            Instant::now() < deadline,
            "summaries {} never matched the counter {counted} (first look: {})",
            summarised(&captured.lines()),
            status.bad_frames
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let lines = captured.lines();
    let warnings = lines.iter().filter(|l| l.contains("WARN")).count();
    // The flood may straddle two summary intervals: a few full lines and a summary for each.
    let bound = 2 * (LINES_PER_SOURCE as usize + 1);
    assert!(
        warnings <= bound,
        "{warnings} log lines for {counted} bad datagrams (bound {bound}):\n{}",
        lines.join("\n")
    );
    assert!(counted >= FLOOD as u64 * 9 / 10);
    assert_eq!(status_of(d.tcp_addr, &codec).await.auth_failures, 0);
}
