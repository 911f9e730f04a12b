//! The runtime every halab daemon shares, written once: common flags (each also read from a
//! `HALAB_*` environment variable), logging, graceful shutdown, and the `status` /
//! `healthcheck` subcommands that talk to a running daemon over proto.

pub mod cli;
pub mod control;
pub mod logging;
pub mod shutdown;

pub use cli::{CommonArgs, StatusArgs, flags_without_env};
pub use shutdown::shutdown_on_signal;

/// Runs a daemon's fallible main and turns an error into a one-line reason and exit code 2,
/// the convention for fatal configuration errors.
pub fn exit_on_error(result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
