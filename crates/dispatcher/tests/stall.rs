//! The dispatcher itself stalls, as under `docker pause`: the real binary is stopped with
//! SIGSTOP for three silence timeouts while the workers (in this process) keep sending
//! heartbeats into its sockets. Resumed, it must not take its own stall for their silence.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command};
use std::time::Duration;

use common::*;
use proto::{DispatcherStatus, FrameCodec};

struct Stopped(Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name} failed");
}

#[tokio::test]
async fn a_stalled_dispatcher_removes_no_live_worker() {
    let codec = FrameCodec::default();
    let tcp = SocketAddr::from(([127, 0, 0, 1], testkit::free_port()));
    let udp = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_dispatcher"))
        .args([
            format!("--listen={tcp}"),
            format!("--discovery-listen={udp}"),
            "--silence-timeout-ms=1000".to_string(),
            "--activation-interval-ms=100".to_string(),
            "--log-level=warn".to_string(),
        ])
        .env_remove("HALAB_CLUSTER_KEY")
        .spawn()
        .expect("the dispatcher binary starts");
    let dispatcher = Stopped(child);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while halab_runtime::control::query_status(tcp, codec.clone(), Duration::from_secs(1))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dispatcher never answered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (w, _w_stop) = start_workers(worker_config(udp, &["--count=5"]), codec.clone()).await;
    let before = wait_for(tcp, &codec, "five workers", |s| s.worker_count == 5).await;

    signal(&dispatcher.0, "STOP");
    tokio::time::sleep(Duration::from_millis(3000)).await;
    signal(&dispatcher.0, "CONT");
    // Well past a timeout after the stall: time to judge, and to be wrong.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let after = status_of(tcp, &codec).await;
    let ids = |s: &DispatcherStatus| s.workers.iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(ids(&after), ids(&before), "a live worker was removed");
    let board = w.board.snapshot();
    assert!(
        board.workers.iter().all(|t| t.registrations == 1),
        "a worker had to register again: {board:?}"
    );
}
