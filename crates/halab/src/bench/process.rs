//! The benchmark's daemons as child processes on loopback: started with their command line,
//! killed with SIGKILL (what a crash is) or stopped with SIGSTOP (what a pause is), started
//! again with the same line (so the same data) or continued.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::Context;
use tokio::process::{Child, Command};

#[derive(Debug)]
pub struct Daemon {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Daemon {
    /// Started at once; its output goes to `<work>/<name>.log`.
    pub fn start(
        name: &str,
        program: impl Into<PathBuf>,
        args: Vec<String>,
        work: &Path,
    ) -> anyhow::Result<Daemon> {
        let mut daemon = Daemon {
            name: name.to_string(),
            program: program.into(),
            args,
            log: work.join(format!("{name}.log")),
            child: None,
        };
        daemon.restart()?;
        Ok(daemon)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts it (again) with the same command line, appending to the same log.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "{} is running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // A benchmark stopped half-way must not leave daemons behind.
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {} ({})", self.name, self.program.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL, and waits until the process is gone.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.start_kill()?;
            child.wait().await?;
        }
        Ok(())
    }

    /// SIGSTOP: the process stays, silent, as a paused container's does.
    pub async fn pause(&self) -> anyhow::Result<()> {
        self.signal("STOP").await
    }

    /// SIGCONT after [`Daemon::pause`].
    pub async fn resume(&self) -> anyhow::Result<()> {
        self.signal("CONT").await
    }

    async fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let pid = self
            .child
            .as_ref()
            .and_then(Child::id)
            .with_context(|| format!("{} is not running", self.name))?;
        let status = Command::new("kill")
            .args(["-s", signal, &pid.to_string()])
            .status()
            .await?;
        anyhow::ensure!(status.success(), "kill -s {signal} {pid} failed");
        Ok(())
    }

    /// The last lines of its log, for an error message.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(8)..].join("\n")
    }
}

/// Polls `ready` every 20 ms until it holds, or fails with `what` and the daemons' last lines.
pub async fn await_ready<F, Fut>(
    what: &str,
    limit: std::time::Duration,
    daemons: &[Daemon],
    mut ready: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let give_up = tokio::time::Instant::now() + limit;
    let mut last;
    loop {
        match ready().await {
            Ok(true) => return Ok(()),
            Ok(false) => last = "not yet".to_string(),
            Err(e) => last = format!("{e:#}"),
        }
        if tokio::time::Instant::now() >= give_up {
            let logs: String = daemons
                .iter()
                .map(|d| format!("\n--- {} ---\n{}", d.name(), d.log_tail()))
                .collect();
            anyhow::bail!("{what} not within {limit:?} ({last}){logs}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
