//! Test support, for this crate's tests and for those of the crates built on the store (the
//! monitor, the lab instrument): a cluster of store daemons in one process, on loopback.
//! Compiled only with the `testing` feature.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use proto::FrameCodec;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::client::Client;
use crate::config::StoreConfig;
use crate::daemon::{self, Daemon};

#[derive(Debug, clap::Parser)]
struct Opts {
    #[command(flatten)]
    config: StoreConfig,
}

/// One node: where it answers, where its data lives, and its task while it runs.
#[derive(Debug)]
pub struct Node {
    pub id: u64,
    pub addr: String,
    pub link_port: u16,
    pub data: PathBuf,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

/// Store daemons in this process, on loopback ports, with data dirs and one witness dir in a
/// temporary directory (removed a little after the cluster is dropped).
#[derive(Debug)]
pub struct Cluster {
    /// An Option only so that `drop` can hand it on.
    dir: Option<tempfile::TempDir>,
    witness: PathBuf,
    pub nodes: Vec<Node>,
    pub codec: FrameCodec,
}

impl Cluster {
    pub async fn start(n: u64, codec: FrameCodec) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let witness = dir.path().join("witness");
        let mut nodes = Vec::new();
        for id in 1..=n {
            let port = testkit::free_port();
            nodes.push(Node {
                id,
                addr: format!("127.0.0.1:{port}"),
                link_port: testkit::free_port(),
                data: dir.path().join(format!("data{id}")),
                stop: CancellationToken::new(),
                task: None,
            });
        }
        let mut cluster = Cluster {
            dir: Some(dir),
            witness,
            nodes,
            codec,
        };
        for index in 0..cluster.nodes.len() {
            cluster.run(index).await;
        }
        cluster
    }

    pub async fn run(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        let config = config(node, &self.witness);
        node.stop = CancellationToken::new();
        let daemon: Daemon = daemon::start(config, self.codec.clone(), node.stop.clone())
            .await
            .expect("the node starts");
        node.task = Some(tokio::spawn(daemon.join()));
    }

    /// Stops a node the way a crash looks from outside: its sockets close.
    pub async fn stop(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        node.stop.cancel();
        if let Some(task) = node.task.take() {
            task.await.unwrap();
        }
    }

    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.clone()).collect()
    }

    pub fn client(&self) -> Client {
        Client::new(self.addrs(), self.codec.clone())
    }

    /// Waits until one node is primary with at least `in_sync` standbys in sync; returns its
    /// index. Generous: on a loaded machine a standby may be dropped and added back a few times.
    pub async fn primary_with(&self, in_sync: usize) -> usize {
        let client = self.client();
        for _ in 0..1500 {
            for (index, node) in self.nodes.iter().enumerate() {
                if node.task.is_none() {
                    continue;
                }
                if let Ok(status) = client.status(&node.addr).await {
                    if status.role == "primary" && status.in_sync.len() >= in_sync {
                        return index;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut seen = Vec::new();
        for node in self.nodes.iter().filter(|n| n.task.is_some()) {
            seen.push(client.status(&node.addr).await.map_err(|e| e.to_string()));
        }
        panic!("no primary with {in_sync} standbys in sync within 30 s: {seen:#?}");
    }
}

/// A dropped cluster's nodes are told to stop, and their data dirs outlive them a while: a
/// node's log writer is a thread of its own that finishes what was queued (an append, a
/// snapshot), and a daemon that cannot write its data dir exits the process — which, in a
/// test binary, ends every other test with it (CI saw one do so).
impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &self.nodes {
            node.stop.cancel();
        }
        if let Some(dir) = self.dir.take() {
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs(5));
                drop(dir);
            });
        }
    }
}

/// Every node's admin token (for `kill`).
pub const ADMIN_TOKEN: &str = "secret";

/// Snapshots this often (entries), so that restarts read a snapshot and a compacted log.
pub const SNAPSHOT_EVERY: u64 = 30;

fn config(node: &Node, witness: &Path) -> StoreConfig {
    let port = node.addr.rsplit(':').next().unwrap();
    Opts::parse_from([
        "test".to_string(),
        format!("--id={}", node.id),
        format!("--data-dir={}", node.data.display()),
        format!("--witness-dir={}", witness.display()),
        format!("--listen=127.0.0.1:{port}"),
        format!("--link-listen=127.0.0.1:{}", node.link_port),
        format!("--advertise={}", node.addr),
        format!("--advertise-link=127.0.0.1:{}", node.link_port),
        format!("--admin-token={ADMIN_TOKEN}"),
        format!("--snapshot-every={SNAPSHOT_EVERY}"),
    ])
    .config
}
