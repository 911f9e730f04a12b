//! The Redis anchor: Debian's `redis-server`, a primary and one replica on loopback (AOF with
//! `appendfsync always`), watched by three `redis-sentinel`s (quorum 2, down-after 1 s).
//! Throughput writes are `SET` + `WAIT 1 0` (acknowledged once the replica has them, Redis's
//! nearest to synchronous replication); a failover probe asks a sentinel for the primary and
//! `SET`s there (after a failover the new primary has no replica to WAIT for).

use std::path::{Path, PathBuf};
use std::time::Duration;

use primary_standby::redis::RedisConnection;

use super::measure::{System, Writer};
use super::process::{Daemon, await_ready};

/// The name the sentinels know the primary by.
const NAME: &str = "bench";
const SERVERS: [u16; 2] = [17801, 17802];
const SENTINELS: [u16; 3] = [17811, 17812, 17813];
const ASK_TIMEOUT: Duration = Duration::from_millis(500);

pub struct SentinelGroup {
    /// The two servers, then the three sentinels.
    daemons: Vec<Daemon>,
}

fn addr(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

impl SentinelGroup {
    pub fn start(server: &Path, sentinel: &Path, work: &Path) -> anyhow::Result<SentinelGroup> {
        let dir = work.join("redis");
        let mut daemons = Vec::new();
        for (i, port) in SERVERS.into_iter().enumerate() {
            let data = dir.join(format!("server{port}"));
            std::fs::create_dir_all(&data)?;
            let mut args = vec![
                "--port".to_string(),
                port.to_string(),
                "--bind".to_string(),
                "127.0.0.1".to_string(),
                "--dir".to_string(),
                data.display().to_string(),
                "--save".to_string(),
                String::new(),
                "--appendonly".to_string(),
                "yes".to_string(),
                "--appendfsync".to_string(),
                "always".to_string(),
            ];
            if i == 1 {
                args.extend(["--replicaof".to_string(), "127.0.0.1".to_string()]);
                args.push(SERVERS[0].to_string());
            }
            daemons.push(Daemon::start(&format!("redis{port}"), server, args, work)?);
        }
        for port in SENTINELS {
            // A sentinel rewrites its configuration file: each its own.
            let config: PathBuf = dir.join(format!("sentinel{port}.conf"));
            std::fs::write(
                &config,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {}\n\
                     sentinel monitor {NAME} 127.0.0.1 {} 2\n\
                     sentinel down-after-milliseconds {NAME} 1000\n\
                     sentinel failover-timeout {NAME} 10000\n",
                    dir.display(),
                    SERVERS[0]
                ),
            )?;
            let args = vec![config.display().to_string()];
            daemons.push(Daemon::start(
                &format!("sentinel{port}"),
                sentinel,
                args,
                work,
            )?);
        }
        Ok(SentinelGroup { daemons })
    }

    /// The primary every sentinel names, if they agree.
    async fn agreed_primary() -> anyhow::Result<Option<String>> {
        let mut named = Vec::new();
        for port in SENTINELS {
            named.push(ask_sentinel(port).await?);
        }
        Ok(named
            .iter()
            .all(|n| *n == named[0])
            .then(|| named[0].clone())
            .flatten())
    }
}

/// A connection to the server or sentinel on `port` and one question to it, within
/// ASK_TIMEOUT.
async fn ask<T>(
    port: u16,
    question: impl AsyncFnOnce(&mut RedisConnection) -> Result<T, String>,
) -> anyhow::Result<T> {
    tokio::time::timeout(ASK_TIMEOUT, async {
        let mut conn = RedisConnection::connect(&addr(port)).await?;
        question(&mut conn).await.map_err(anyhow::Error::msg)
    })
    .await?
}

async fn ask_sentinel(port: u16) -> anyhow::Result<Option<String>> {
    ask(port, async |sentinel| sentinel.primary_by_name(NAME).await).await
}

async fn sentinel_view(port: u16) -> anyhow::Result<Vec<(String, String)>> {
    ask(port, async |sentinel| sentinel.sentinel_view(NAME).await).await
}

async fn replication(port: u16) -> anyhow::Result<Vec<(String, String)>> {
    ask(port, async |server| server.info("replication").await).await
}

fn field<'a>(info: &'a [(String, String)], name: &str) -> Option<&'a str> {
    info.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

pub struct RedisWriter(RedisConnection);

impl Writer for RedisWriter {
    async fn put(&mut self, key: &str, value: &str) -> anyhow::Result<()> {
        self.0
            .set_replicated(key, value)
            .await
            .map_err(anyhow::Error::msg)
    }
}

impl System for SentinelGroup {
    type Writer = RedisWriter;

    fn name(&self) -> String {
        "Redis + Sentinel (down-after 1 s)".to_string()
    }

    async fn writer(&self) -> anyhow::Result<RedisWriter> {
        let primary = ask_sentinel(SENTINELS[0])
            .await?
            .ok_or_else(|| anyhow::anyhow!("the sentinels know no primary"))?;
        Ok(RedisWriter(RedisConnection::connect(&primary).await?))
    }

    fn probe(&self, attempt: u64) -> impl Future<Output = anyhow::Result<()>> + Send + 'static {
        let sentinel = SENTINELS[attempt as usize % SENTINELS.len()];
        async move {
            let primary = ask_sentinel(sentinel)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no primary"))?;
            let mut server = RedisConnection::connect(&primary).await?;
            server.set("probe", "p").await.map_err(anyhow::Error::msg)
        }
    }

    /// The sentinels agree on a primary that has its replica connected and in sync, and each
    /// knows that replica and the other two sentinels (a sentinel learns of a replica from the
    /// primary's INFO, every 10 s: one that does not know it cannot promote it).
    async fn ready(&mut self) -> anyhow::Result<()> {
        let what = "Redis: the sentinels agree on a primary with its replica in sync";
        await_ready(what, Duration::from_secs(60), &self.daemons, || async {
            let Some(primary) = Self::agreed_primary().await? else {
                return Ok(false);
            };
            for port in SENTINELS {
                let view = sentinel_view(port).await?;
                if field(&view, "num-slaves") != Some("1")
                    || field(&view, "num-other-sentinels") != Some("2")
                {
                    return Ok(false);
                }
            }
            let Some(port) = SERVERS.into_iter().find(|p| addr(*p) == primary) else {
                return Ok(false);
            };
            let replica = SERVERS.into_iter().find(|p| *p != port).expect("two");
            let (up, down) = (replication(port).await?, replication(replica).await?);
            Ok(field(&up, "role") == Some("master")
                && field(&up, "connected_slaves") == Some("1")
                && field(&down, "role") == Some("slave")
                && field(&down, "master_port") == Some(&port.to_string())
                && field(&down, "master_link_status") == Some("up"))
        })
        .await
    }

    async fn leader(&mut self) -> anyhow::Result<usize> {
        let primary = Self::agreed_primary()
            .await?
            .ok_or_else(|| anyhow::anyhow!("the sentinels disagree on the primary"))?;
        SERVERS
            .into_iter()
            .position(|p| addr(p) == primary)
            .ok_or_else(|| anyhow::anyhow!("the sentinels name {primary}, not a server of ours"))
    }

    fn daemon(&mut self, member: usize) -> &mut Daemon {
        &mut self.daemons[member]
    }
}
