//! halab's worker (seed 000): one process runs `--count` workers, each of which finds the
//! dispatcher by broadcast, registers with its weight, and reports while activated.

pub mod activation;
pub mod board;
pub mod config;
pub mod lifecycle;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use proto::{FrameCodec, Message};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use board::Board;
pub use config::WorkerConfig;
use lifecycle::Worker;

#[derive(Debug)]
pub struct Running {
    pub status_addr: SocketAddr,
    pub board: Board,
    workers: JoinSet<()>,
    status_server: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Waits until every worker has terminated itself or shut down.
    pub async fn join(mut self) {
        while self.workers.join_next().await.is_some() {}
        self.status_server.abort();
    }
}

pub async fn start(
    config: WorkerConfig,
    codec: FrameCodec,
    shutdown: CancellationToken,
) -> anyhow::Result<Running> {
    config.validate()?;
    let listener = TcpListener::bind(config.status_addr)
        .await
        .with_context(|| format!("cannot listen for status on {}", config.status_addr))?;
    let status_addr = listener.local_addr()?;
    let board = Board::new(config.count);
    let snapshot = board.clone();
    let status_server = tokio::spawn(halab_runtime::control::serve_status(
        listener,
        codec.clone(),
        shutdown.clone(),
        move || Message::WorkerStatus(snapshot.snapshot()),
    ));

    let config = Arc::new(config);
    let mut workers = JoinSet::new();
    for index in 0..config.count {
        let worker = Worker::new(index, config.clone(), codec.clone(), board.clone());
        workers.spawn(worker.run(shutdown.clone()));
    }
    tracing::info!(count = config.count, %status_addr, "workers started");
    Ok(Running {
        status_addr,
        board,
        workers,
        status_server,
    })
}
