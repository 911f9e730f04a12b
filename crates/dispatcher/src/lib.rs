//! halab's dispatcher (seed 000). It answers workers' discovery broadcasts with ids, keeps the
//! table of registered workers, activates the best due worker every interval while fewer than
//! `max_active` are active, and removes workers that go silent.
//!
//! Tasks: [`discovery`] (UDP answers), [`server`] (TCP accept; one [`session`] per worker),
//! [`activator`] (activation and silence clocks). Decisions live in pure modules:
//! [`scheduler`] (who is due) and [`registry`] (the table).

pub mod activator;
pub mod config;
pub mod discovery;
pub mod pending;
pub mod registry;
pub mod round;
pub mod scheduler;
pub mod server;
pub mod session;
pub mod shared;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use halab_runtime::accept::Acceptor;
use proto::FrameCodec;
use proto::udp::FrameSocket;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use config::DispatcherConfig;
use shared::Shared;

/// A started dispatcher: its bound addresses, and its tasks to await.
#[derive(Debug)]
pub struct Running {
    pub tcp_addr: SocketAddr,
    pub discovery_addr: SocketAddr,
    tasks: JoinSet<()>,
}

impl Running {
    /// Waits until every task has returned (they do on shutdown).
    pub async fn join(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Binds the ports and starts every task; returns once the dispatcher is serving.
pub async fn start(
    config: DispatcherConfig,
    codec: FrameCodec,
    shutdown: CancellationToken,
) -> anyhow::Result<Running> {
    config.validate()?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let tcp_addr = listener.local_addr()?;
    let discovery = FrameSocket::bind(config.discovery_listen, codec.clone())
        .with_context(|| format!("cannot bind discovery socket {}", config.discovery_listen))?;
    let discovery_addr = discovery.local_addr()?;
    let shared = Arc::new(Shared::new(config, codec));

    let mut tasks = JoinSet::new();
    tasks.spawn(discovery::answer_discovery(
        discovery,
        shared.clone(),
        tcp_addr.port(),
        shutdown.clone(),
    ));
    let reporter = shared.clone();
    let reporter_shutdown = shutdown.clone();
    tasks.spawn(async move { reporter.rejections.report(reporter_shutdown).await });
    let acceptor = Acceptor::new(listener, shared.config.max_connections);
    tasks.spawn(server::serve(acceptor, shared.clone(), shutdown.clone()));
    tasks.spawn(activator::activate_periodically(
        shared.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(activator::remove_silent_workers(
        shared.clone(),
        shutdown.clone(),
    ));
    tracing::info!(
        %tcp_addr,
        %discovery_addr,
        max_active = shared.config.max_active,
        activation_interval_ms = shared.config.activation_interval_ms,
        silence_timeout_ms = shared.config.silence_timeout_ms,
        "dispatcher serving"
    );
    Ok(Running {
        tcp_addr,
        discovery_addr,
        tasks,
    })
}
