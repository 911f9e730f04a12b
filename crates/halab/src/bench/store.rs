//! halab's store in the benchmark: three `primary-standby` processes on loopback, fsync on
//! every write, each write acknowledged once both standbys in sync hold it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use primary_standby::client::Client;
use proto::FrameCodec;

use super::measure::{System, Writer};
use super::process::{Daemon, await_ready};

/// The store's name in the report: the rows the anchors are compared with.
pub const STORE: &str = "halab store";
const NODES: usize = 3;
/// Client port of node i (1-based): 17510, 17520, 17530; its link port one above.
fn client_port(i: usize) -> u16 {
    17500 + 10 * i as u16
}

pub struct StoreCluster {
    daemons: Vec<Daemon>,
    nodes: Vec<String>,
    codec: FrameCodec,
}

impl StoreCluster {
    pub fn start(bin_dir: &Path, work: &Path) -> anyhow::Result<StoreCluster> {
        let program: PathBuf = bin_dir.join("primary-standby");
        let dir = work.join("store");
        std::fs::create_dir_all(dir.join("witness"))?;
        let nodes: Vec<String> = (1..=NODES)
            .map(|i| format!("127.0.0.1:{}", client_port(i)))
            .collect();
        let mut daemons = Vec::new();
        for i in 1..=NODES {
            let (port, link) = (client_port(i), client_port(i) + 1);
            let args = vec![
                format!("--id={i}"),
                "--fsync=always".to_string(),
                format!("--data-dir={}", dir.join(format!("data{i}")).display()),
                format!("--witness-dir={}", dir.join("witness").display()),
                format!("--listen=127.0.0.1:{port}"),
                format!("--link-listen=127.0.0.1:{link}"),
                format!("--advertise=127.0.0.1:{port}"),
                format!("--advertise-link=127.0.0.1:{link}"),
                format!("--peers={}", nodes.join(",")),
            ];
            daemons.push(Daemon::start(&format!("store{i}"), &program, args, work)?);
        }
        Ok(StoreCluster {
            daemons,
            nodes,
            codec: FrameCodec::default(),
        })
    }

    fn client(&self) -> Client {
        let mut client = Client::new(self.nodes.clone(), self.codec.clone());
        client.deadline = Duration::from_secs(2);
        client
    }
}

pub struct StoreWriter(Client);

impl Writer for StoreWriter {
    async fn put(&mut self, key: &str, value: &str) -> anyhow::Result<()> {
        self.0.set(key, value).await?;
        Ok(())
    }
}

impl System for StoreCluster {
    type Writer = StoreWriter;

    fn name(&self) -> String {
        STORE.to_string()
    }

    async fn writer(&self) -> anyhow::Result<StoreWriter> {
        Ok(StoreWriter(self.client()))
    }

    fn probe(&self, attempt: u64) -> impl Future<Output = anyhow::Result<()>> + Send + 'static {
        // A new client tries the nodes and follows their redirects to the primary; each probe
        // starts at another node, as the etcd probes rotate over the members.
        let mut nodes = self.nodes.clone();
        let first = attempt as usize % nodes.len();
        nodes.rotate_left(first);
        let mut client = Client::new(nodes, self.codec.clone());
        client.deadline = Duration::from_secs(2);
        async move {
            client.set("probe", "p").await?;
            Ok(())
        }
    }

    async fn ready(&mut self) -> anyhow::Result<()> {
        let client = self.client();
        let nodes = self.nodes.clone();
        await_ready(
            "the store: a primary with both standbys in sync",
            Duration::from_secs(30),
            &self.daemons,
            || async {
                for node in &nodes {
                    if let Ok(status) = client.status(node).await {
                        if status.role == "primary" && status.in_sync.len() == NODES - 1 {
                            return Ok(true);
                        }
                    }
                }
                Ok(false)
            },
        )
        .await
    }

    async fn leader(&mut self) -> anyhow::Result<usize> {
        let client = self.client();
        for (member, node) in self.nodes.iter().enumerate() {
            if client.status(node).await?.role == "primary" {
                return Ok(member);
            }
        }
        anyhow::bail!("the store has no primary")
    }

    fn daemon(&mut self, member: usize) -> &mut Daemon {
        &mut self.daemons[member]
    }
}
