//! The log writer: a thread of its own (file I/O blocks), so that the node never waits on the
//! disk under its lock. It takes everything queued, writes it, syncs once (group commit) and
//! reports how far the log is durable. A write that fails stops the process: a node that
//! cannot make writes durable must not acknowledge any.

use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};

use proto::StoreNodeId;

use crate::config::Fsync;
use crate::store::Store;
use crate::wal::{self, Wal};

/// A log fsync slower than this is logged: it delays every acknowledgement waiting on it.
const SLOW_FSYNC: Duration = Duration::from_millis(30);

/// What the node asks of its data dir, in order.
pub enum DiskCommand {
    Append(Vec<proto::Entry>),
    /// Replace the data dir's contents (a snapshot from the primary).
    Snapshot(Store),
    /// Write this state as the snapshot, then cut the log before it.
    Compact(Store),
    /// The data dir, new, is this node's now.
    Mark,
    /// A compaction's snapshot of entry `seq` is on disk.
    SnapshotWritten {
        seq: u64,
        installs: u64,
        began: Instant,
    },
}

/// Starts the writer on `queue`'s receiving end; `durable(seq)` is called (on the writer's
/// thread) each time the log is durable through entry `seq` (0: nothing new).
pub fn spawn(
    id: StoreNodeId,
    wal: Wal,
    fsync: Fsync,
    rx: Receiver<DiskCommand>,
    queue: Sender<DiskCommand>,
    durable: impl Fn(u64) + Send + 'static,
) -> std::io::Result<()> {
    let writer = LogWriter {
        id,
        wal,
        queue,
        fsync,
        snapshotting: None,
        installs: 0,
    };
    std::thread::Builder::new()
        .name("store-log".into())
        .spawn(move || writer.run(rx, durable))?;
    Ok(())
}

struct LogWriter {
    id: StoreNodeId,
    wal: Wal,
    /// Its own queue: a compaction's snapshot thread reports back through it.
    queue: Sender<DiskCommand>,
    fsync: Fsync,
    /// The compaction whose snapshot is being written, on a thread of its own (a large state
    /// takes a while, and appends must not wait for it).
    snapshotting: Option<std::thread::JoinHandle<()>>,
    /// Snapshots installed from the primary so far: a compaction begun before the latest one
    /// must not cut the log, whose snapshot file it no longer is.
    installs: u64,
}

impl LogWriter {
    fn run(mut self, rx: Receiver<DiskCommand>, durable: impl Fn(u64)) {
        while let Ok(first) = rx.recv() {
            let mut through = 0;
            for command in std::iter::once(first).chain(rx.try_iter()) {
                match command {
                    DiskCommand::Append(entries) => {
                        through = entries.last().map_or(through, |e| e.seq);
                        self.wal.append(&entries).unwrap_or_else(|e| stop(&e));
                    }
                    DiskCommand::Snapshot(store) => {
                        self.wait_for_snapshot();
                        self.installs += 1;
                        through = store.applied();
                        self.wal
                            .install_snapshot(&store)
                            .unwrap_or_else(|e| stop(&e));
                    }
                    DiskCommand::Compact(store) => self.start_compaction(store),
                    DiskCommand::Mark => self.wal.mark(self.id).unwrap_or_else(|e| stop(&e)),
                    DiskCommand::SnapshotWritten {
                        seq,
                        installs,
                        began,
                    } => self.finish_compaction(seq, installs, began),
                }
            }
            if self.fsync == Fsync::Always {
                let began = Instant::now();
                self.wal.sync().unwrap_or_else(|e| stop(&e));
                if began.elapsed() > SLOW_FSYNC {
                    tracing::warn!(
                        ms = began.elapsed().as_millis() as u64,
                        "slow fsync of the log"
                    );
                }
            }
            durable(through);
        }
    }

    fn wait_for_snapshot(&mut self) {
        if let Some(thread) = self.snapshotting.take() {
            thread.join().expect("the snapshot thread does not panic");
        }
    }

    /// Writes the state as the snapshot on another thread; it reports back through the
    /// queue, and the log is cut in order with the appends.
    fn start_compaction(&mut self, store: Store) {
        self.wait_for_snapshot();
        let dir = self.wal.dir().to_path_buf();
        let done = self.queue.clone();
        let installs = self.installs;
        let began = Instant::now();
        let thread = std::thread::Builder::new()
            .name("store-snapshot".into())
            .spawn(move || {
                let bytes = wal::write_snapshot(&dir, &store).unwrap_or_else(|e| stop(&e));
                tracing::info!(
                    seq = store.applied(),
                    keys = store.len(),
                    bytes,
                    ms = began.elapsed().as_millis() as u64,
                    "snapshot written"
                );
                let _ = done.send(DiskCommand::SnapshotWritten {
                    seq: store.applied(),
                    installs,
                    began,
                });
            })
            .unwrap_or_else(|e| stop(&e));
        self.snapshotting = Some(thread);
    }

    fn finish_compaction(&mut self, seq: u64, installs: u64, began: Instant) {
        if installs != self.installs {
            return; // the primary's snapshot replaced it, and the log with it
        }
        let compacted = self.wal.cut_log(seq).unwrap_or_else(|e| stop(&e));
        tracing::info!(
            seq,
            log_records_dropped = compacted.records_dropped,
            log_bytes_dropped = compacted.bytes_dropped,
            ms = began.elapsed().as_millis() as u64,
            "log compacted"
        );
    }
}

/// The data dir cannot be written: stop before anything more is acknowledged.
fn stop(e: &dyn std::fmt::Display) -> ! {
    tracing::error!(error = %e, "cannot write the data dir: stopping, nothing more is acknowledged");
    eprintln!("error: cannot write the data dir: {e}");
    std::process::exit(1);
}
