//! The monitor's way into the store: the store's own `Client` (finds the primary, follows
//! redirects, retries a write through a failover with the same request id), one per request in
//! flight, kept in a pool so that each keeps its session (a retry is answered, not re-applied).

use std::sync::Mutex;
use std::time::Duration;

use primary_standby::client::{Client, ClientError};
use proto::FrameCodec;

#[derive(Debug)]
pub struct Gateway {
    nodes: Vec<String>,
    codec: FrameCodec,
    deadline: Duration,
    idle: Mutex<Vec<Client>>,
    /// For requests to one given node (its map, a kill, a sum): no session involved.
    asker: Client,
}

impl Gateway {
    pub fn new(nodes: Vec<String>, codec: FrameCodec, deadline: Duration) -> Gateway {
        Gateway {
            asker: Client::new(nodes.clone(), codec.clone()),
            nodes,
            codec,
            deadline,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// A client for asking one node directly (`Client::ask`, `find_node`), shared.
    pub fn asker(&self) -> &Client {
        &self.asker
    }

    /// A client of its own for one request; give it back with [`Gateway::put_back`].
    pub fn client(&self) -> Client {
        self.idle
            .lock()
            .expect("not poisoned")
            .pop()
            .unwrap_or_else(|| {
                let mut client = Client::new(self.nodes.clone(), self.codec.clone());
                client.deadline = self.deadline;
                client
            })
    }

    /// Returns a client to the pool, unless its last call ended without an answer (its session
    /// may still have a write in doubt: a fresh client is cleaner).
    pub fn put_back<T>(&self, client: Client, result: &Result<T, ClientError>) {
        if !matches!(result, Err(ClientError::Unknown { .. })) {
            self.idle.lock().expect("not poisoned").push(client);
        }
    }

    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }
}
