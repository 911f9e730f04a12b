//! The runtime every halab daemon shares, written once: common flags (each also read from a
//! `HALAB_*` environment variable), logging, graceful shutdown, and the `status` /
//! `healthcheck` subcommands that talk to a running daemon over proto.

pub mod accept;
pub mod cli;
pub mod control;
pub mod intervals;
pub mod logging;
pub mod rejects;
pub mod shutdown;

pub use cli::{CommonArgs, ControlCommand, StatusArgs, assert_cli_conventions};
pub use rejects::Rejections;
pub use shutdown::shutdown_on_signal;

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

/// Runs a binary's async main on a tokio runtime; an error becomes one line on stderr and exit
/// status 2 (the convention for fatal configuration errors).
pub fn run_main(main: impl Future<Output = anyhow::Result<()>>) -> ExitCode {
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(main));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// What every daemon does before it serves: install logging, say whether frames are
/// authenticated, and return the shutdown token that SIGTERM / SIGINT cancel.
pub fn start_daemon(common: &CommonArgs) -> anyhow::Result<CancellationToken> {
    logging::init(common)?;
    common.warn_if_unauthenticated();
    shutdown_on_signal()
}
