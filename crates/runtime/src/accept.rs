//! Accepting TCP connections with a cap (mini-redis's semaphore) and a backoff on errors.
//!
//! Every connection holds a permit until its task ends. Past the cap, new connections are
//! accepted and closed at once, so a flood of connections cannot use up file descriptors or
//! memory, and the ones already served carry on. An accept error (out of descriptors, say)
//! backs off briefly instead of spinning on the error.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long to wait after a failed accept before trying again.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

#[derive(Debug)]
pub struct Acceptor {
    listener: TcpListener,
    permits: Arc<Semaphore>,
    limit: usize,
    refused: AtomicU64,
}

impl Acceptor {
    pub fn new(listener: TcpListener, limit: usize) -> Self {
        Acceptor {
            listener,
            permits: Arc::new(Semaphore::new(limit)),
            limit,
            refused: AtomicU64::new(0),
        }
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Connections closed at once because the cap was reached, since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// The next connection within the cap, with the permit its task must hold.
    pub async fn accept(&self) -> (TcpStream, SocketAddr, OwnedSemaphorePermit) {
        loop {
            let (stream, peer) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; retrying shortly");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            match self.permits.clone().try_acquire_owned() {
                Ok(permit) => return (stream, peer, permit),
                Err(_) => {
                    let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
                    // The first refusal and then every thousandth: a flood stays a few lines.
                    if refused == 1 || refused % 1000 == 0 {
                        tracing::warn!(
                            %peer,
                            limit = self.limit,
                            refused,
                            "connection limit reached; closing new connections"
                        );
                    }
                    drop(stream);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    #[tokio::test]
    async fn past_the_cap_connections_are_closed_and_a_freed_permit_lets_the_next_in() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let acceptor = Arc::new(Acceptor::new(listener, 2));
        let addr = acceptor.local_addr().unwrap();
        let mut clients = Vec::new();
        let mut permits = Vec::new();
        for _ in 0..2 {
            clients.push(TcpStream::connect(addr).await.unwrap());
            permits.push(acceptor.accept().await.2);
        }
        // The third is accepted and closed: its reader sees the end of the stream.
        let mut third = TcpStream::connect(addr).await.unwrap();
        let waiting = {
            let acceptor = acceptor.clone();
            tokio::spawn(async move { acceptor.accept().await.2 })
        };
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
        assert_eq!(acceptor.refused(), 1);
        // One served connection ends: the next one is let in.
        permits.pop();
        let _fourth = TcpStream::connect(addr).await.unwrap();
        let permit = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the fourth connection is accepted once a permit is free")
            .unwrap();
        drop(permit);
    }
}
