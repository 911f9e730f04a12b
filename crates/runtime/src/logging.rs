use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::cli::{CommonArgs, LogFormat};

/// Installs the global tracing subscriber. Logs go to stderr so that `status --json` output on
/// stdout stays machine-readable.
pub fn init(args: &CommonArgs) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&args.log_level)
        .map_err(|e| anyhow::anyhow!("bad --log-level {:?}: {e}", args.log_level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        // Colour codes only help a person at a terminal; `docker logs` shows them raw.
        .with_ansi(std::io::stderr().is_terminal());
    let result = match args.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))
}
