//! Flags every daemon takes. Convention: every flag `--some-name` also reads `HALAB_SOME_NAME`;
//! [`flags_without_env`] lets each binary's tests hold its whole command line to that.

use std::net::SocketAddr;

use clap::{Args, Subcommand, ValueEnum};
use proto::{ClusterKey, FrameCodec};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Log line format.
    #[arg(long, global = true, env = "HALAB_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter: a level (error, warn, info, debug, trace) or tracing directives such as
    /// "info,proto=debug".
    #[arg(long, global = true, env = "HALAB_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Shared secret authenticating every frame (HMAC-SHA256). When set, frames without a valid
    /// tag are dropped and counted; when unset, anyone on the network can speak to the daemon.
    #[arg(long, global = true, env = "HALAB_CLUSTER_KEY", hide_env_values = true)]
    pub cluster_key: Option<String>,

    /// Largest frame accepted or sent, in bytes; larger frames close the connection.
    #[arg(long, global = true, env = "HALAB_MAX_FRAME_SIZE", default_value_t = proto::DEFAULT_MAX_FRAME_LEN)]
    pub max_frame_size: usize,
}

impl CommonArgs {
    pub fn codec(&self) -> FrameCodec {
        FrameCodec::new(
            self.max_frame_size,
            self.cluster_key
                .as_deref()
                .filter(|k| !k.is_empty())
                .map(ClusterKey::new),
        )
    }

    /// Logs, once at start, whether frames are authenticated.
    pub fn warn_if_unauthenticated(&self) {
        if !self.codec().is_keyed() {
            tracing::warn!(
                "HALAB_CLUSTER_KEY is not set: frames are not authenticated, anyone on the network can talk to this daemon"
            );
        }
    }
}

/// The `status` and `healthcheck` subcommands: ask a running daemon for its state.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Where the daemon answers status requests.
    #[arg(long, env = "HALAB_STATUS_ADDR")]
    pub status_addr: Option<SocketAddr>,

    /// Print JSON (one document) instead of a table.
    #[arg(long, env = "HALAB_JSON")]
    pub json: bool,

    /// Give up after this many milliseconds (for each page with --all).
    #[arg(long, env = "HALAB_TIMEOUT_MS", default_value_t = 2000)]
    pub timeout_ms: u64,

    /// Every row of a long table (the dispatcher's workers), read page by page; without it
    /// the totals and the first 100 rows.
    #[arg(long, env = "HALAB_ALL")]
    pub all: bool,
}

/// The subcommands every daemon has besides serving.
#[derive(Debug, Clone, Subcommand)]
pub enum ControlCommand {
    /// Print the running daemon's state (a table, or JSON with --json).
    Status(StatusArgs),
    /// Exit 0 when the daemon answers status requests (Docker HEALTHCHECK: scratch images have
    /// no curl).
    Healthcheck(StatusArgs),
}

/// For each binary's tests: the command line is well formed and every flag `--some-name` also
/// reads `HALAB_SOME_NAME`.
pub fn assert_cli_conventions(cmd: clap::Command) {
    cmd.clone().debug_assert();
    let missing = flags_without_env(&cmd);
    assert!(
        missing.is_empty(),
        "flags without their HALAB_ variable: {missing:#?}"
    );
}

/// Flags of `cmd` (and its subcommands) that break the `--some-name` ↔ `HALAB_SOME_NAME` rule.
fn flags_without_env(cmd: &clap::Command) -> Vec<String> {
    let mut bad = Vec::new();
    for arg in cmd.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if matches!(long, "help" | "version") {
            continue;
        }
        let expected = format!("HALAB_{}", long.replace('-', "_").to_uppercase());
        let actual = arg.get_env().map(|e| e.to_string_lossy().into_owned());
        if actual.as_deref() != Some(expected.as_str()) {
            bad.push(format!(
                "{} --{long}: env {actual:?}, expected {expected}",
                cmd.get_name()
            ));
        }
    }
    for sub in cmd.get_subcommands() {
        bad.extend(flags_without_env(sub));
    }
    bad
}
