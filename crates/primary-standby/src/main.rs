use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use halab_runtime::{ControlCommand, StatusArgs};
use primary_standby::client::{Client, ClientArgs};
use primary_standby::config::StoreConfig;
use primary_standby::limits::{Limits, parse_update};
use primary_standby::load::{self, LoadPlan};
use proto::{Op, Reply, StoreNodeStatus};

/// halab's replicated key-value store node (seeds 001, 003): synchronous primary/standby
/// replication, a shared-disk witness that tells a dead primary from a cut link, epochs that
/// fence an old primary. Without a subcommand it runs the node; the other subcommands are its
/// client. Every flag --some-name can also be set as HALAB_SOME_NAME.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    common: halab_runtime::CommonArgs,
    #[command(flatten)]
    config: StoreConfig,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Control(ControlCommand),
    /// Print a key's value (from the primary, under its lease).
    Get {
        key: String,
        #[command(flatten)]
        target: ClientArgs,
    },
    /// Set a key.
    Set {
        key: String,
        value: String,
        #[command(flatten)]
        target: ClientArgs,
    },
    /// Set every key=value line of a file at once (seed 001's update); a bad line is reported
    /// by number and nothing is written.
    Update {
        #[arg(short = 'f', long = "file", env = "HALAB_FILE")]
        file: PathBuf,
        #[command(flatten)]
        target: ClientArgs,
    },
    /// Delete a key.
    Delete {
        key: String,
        #[command(flatten)]
        target: ClientArgs,
    },
    /// Print the whole map of one node (seed 001's get_state).
    State {
        /// primary, standby, a node id, or a node's host:port.
        #[arg(long, env = "HALAB_NODE", default_value = "primary")]
        node: String,
        #[command(flatten)]
        target: ClientArgs,
    },
    /// Make a node exit at once, as in a crash (needs the nodes' admin token).
    Kill {
        /// primary, standby, a node id, or a node's host:port.
        node: String,
        /// The token the node was started with (--admin-token).
        #[arg(long, env = "HALAB_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: String,
        #[command(flatten)]
        target: ClientArgs,
    },
    /// Clients writing unique keys at a steady rate, then every key read back; prints one JSON
    /// line (acked, lost, unknown, the longest gap between acknowledgements, latencies).
    Load(LoadArgs),
}

#[derive(Debug, Args)]
struct LoadArgs {
    /// Concurrent clients.
    #[arg(long, env = "HALAB_CLIENTS", default_value_t = 4)]
    clients: usize,
    /// Writes per second over all clients (0: as fast as they go).
    #[arg(long, env = "HALAB_RATE", default_value_t = 300)]
    rate: u64,
    /// Seconds of writing.
    #[arg(long, env = "HALAB_DURATION", default_value_t = 10.0)]
    duration: f64,
    /// Skip reading every key back (throughput runs).
    #[arg(long, env = "HALAB_NO_VERIFY")]
    no_verify: bool,
    /// Poll every node's status this often while writing (0: not at all) and report
    /// max_primaries_at_once, promoted and alerts.
    #[arg(long, env = "HALAB_WATCH_MS", default_value_t = 0)]
    watch_ms: u64,
    /// Put the same workload on a Redis primary (host:port) instead, each write a SET + WAIT 1 0
    /// (acknowledged once a replica has it): the benchmark's anchor.
    #[arg(long, env = "HALAB_REDIS", conflicts_with = "watch_ms")]
    redis: Option<String>,
    #[command(flatten)]
    target: ClientArgs,
}

fn main() -> ExitCode {
    halab_runtime::run_main(run(Cli::parse()))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let codec = cli.common.codec();
    let client = |target: &ClientArgs| target.client(codec.clone());
    match cli.command {
        None => {
            let shutdown = halab_runtime::start_daemon(&cli.common)?;
            primary_standby::daemon::start(cli.config, codec, shutdown)
                .await?
                .join()
                .await;
            tracing::info!("store node stopped");
            Ok(())
        }
        Some(Command::Control(ControlCommand::Status(args))) => {
            let status = status_at(&cli.config, &args, codec).await?;
            halab_runtime::control::print_status(&status, args.json, table)
        }
        Some(Command::Control(ControlCommand::Healthcheck(args))) => {
            status_at(&cli.config, &args, codec).await.map(drop)
        }
        Some(Command::Get { key, target }) => {
            match client(&target).get(&key).await? {
                Some(value) => println!("{value}"),
                None => anyhow::bail!("{key:?} is not set"),
            }
            Ok(())
        }
        Some(Command::Set { key, value, target }) => {
            let seq = client(&target).set(&key, &value).await?;
            println!("written as entry {seq}");
            Ok(())
        }
        Some(Command::Update { file, target }) => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
            let pairs = parse_update(&text, &Limits::default())
                .map_err(|e| anyhow::anyhow!("{}: {e}; nothing was written", file.display()))?;
            let count = pairs.len();
            let seq = client(&target).update(pairs).await?;
            println!("{count} entries written as entry {seq}");
            Ok(())
        }
        Some(Command::Delete { key, target }) => {
            let seq = client(&target).delete(&key).await?;
            println!("deleted as entry {seq}");
            Ok(())
        }
        Some(Command::State { node, target }) => {
            let client = client(&target);
            let addr = client.find_node(&node).await?;
            match client.ask(&addr, Op::State).await? {
                Reply::State { seq, pairs } => {
                    let map: serde_json::Map<String, serde_json::Value> = pairs
                        .into_iter()
                        .map(|(k, v)| (k, serde_json::Value::String(v)))
                        .collect();
                    eprintln!("{addr}: {} keys as of entry {seq}", map.len());
                    println!("{}", serde_json::Value::Object(map));
                    Ok(())
                }
                other => anyhow::bail!("{addr} answered {other:?}"),
            }
        }
        Some(Command::Kill {
            node,
            admin_token,
            target,
        }) => {
            let client = client(&target);
            let addr = client.find_node(&node).await?;
            match client.ask(&addr, Op::Kill { token: admin_token }).await? {
                Reply::Killed => {
                    println!("{addr} killed");
                    Ok(())
                }
                Reply::Invalid { reason } => anyhow::bail!("{addr} refused: {reason}"),
                other => anyhow::bail!("{addr} answered {other:?}"),
            }
        }
        Some(Command::Load(args)) => {
            let plan = LoadPlan {
                nodes: args.target.nodes,
                clients: args.clients.max(1),
                rate: args.rate,
                duration: Duration::from_secs_f64(args.duration),
                prefix: format!("load{:x}", rand::random::<u32>()),
                verify: !args.no_verify,
                watch: (args.watch_ms > 0).then(|| Duration::from_millis(args.watch_ms)),
                redis: args.redis,
            };
            let report = load::run(plan, codec).await?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
    }
}

/// `status`/`healthcheck`: this host's node unless --status-addr names another.
async fn status_at(
    config: &StoreConfig,
    args: &StatusArgs,
    codec: proto::FrameCodec,
) -> anyhow::Result<StoreNodeStatus> {
    let addr = args.status_addr.map_or_else(
        || format!("127.0.0.1:{}", config.listen.port()),
        |a| a.to_string(),
    );
    let client = Client::new(vec![addr.clone()], codec);
    tokio::time::timeout(Duration::from_millis(args.timeout_ms), client.status(&addr))
        .await
        .map_err(|_| anyhow::anyhow!("{addr} did not answer within {} ms", args.timeout_ms))?
}

/// `primary`, `standby`, a node id, or an address: the address of that node.
fn table(status: &StoreNodeStatus) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "node {}: {} in epoch {}, primary {}, in sync {:?}",
        status.id,
        status.role,
        status.epoch,
        status.primary.map_or("none".to_string(), |p| p.to_string()),
        status.in_sync
    );
    let _ = writeln!(
        out,
        "  log through {}, committed {}, lag {}, {} keys, lease {} ms left, witness {}",
        status.last_seq,
        status.commit_seq,
        status.lag,
        status.keys,
        status.lease_ms_left,
        status.witness
    );
    for alert in &status.alerts {
        let _ = writeln!(out, "  alert: {alert}");
    }
    out
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_follows_the_conventions() {
        halab_runtime::assert_cli_conventions(super::Cli::command());
    }
}
