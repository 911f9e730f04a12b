//! The store's client library: finds the primary from any node, follows redirects, and retries
//! a write through a failover with the same request id, so that it is applied once.
//!
//! A `Client` is one session: its writes are numbered upwards and sent one at a time (the
//! store remembers each client's last write to answer a retry of it). Run several clients for
//! concurrency.

use std::collections::HashMap;
use std::time::Duration;

use proto::{Connection, FrameCodec, Message, Op, Reply, StoreMessage, StoreNodeStatus, Write};
use tokio::time::Instant;

/// How long a call keeps trying (through a failover) before it gives up.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(5);
/// How long one try waits for its answer. Short, because a paused primary accepts connections
/// (its kernel does) and never answers: the write is retried (same request id) elsewhere.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(200);
/// A node that failed a try is not followed by a redirect for this long: standbys keep
/// redirecting to a dead or paused primary until one of them has taken its place.
const SUSPECT_FOR: Duration = Duration::from_secs(1);
/// A primary that let a try time out is asked for its status this patiently: a live one
/// answers at once (it is only waiting for a standby, or for the witness to drop one), a
/// paused one does not.
const ALIVE_PROBE: Duration = Duration::from_millis(50);
/// The pause before trying again after "unavailable" or a failed connection.
const RETRY_PAUSE: Duration = Duration::from_millis(5);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The store refused the request; retrying will not help.
    #[error("refused: {0}")]
    Refused(String),
    /// No answer before the deadline. A write may or may not have been applied (retrying it
    /// with the same client and request id would apply it at most once).
    #[error("no answer within {deadline:?} (last: {last})")]
    Unknown { deadline: Duration, last: String },
}

#[derive(Debug)]
pub struct Client {
    nodes: Vec<String>,
    codec: FrameCodec,
    id: u64,
    next_request: u64,
    conn: Option<(String, Connection)>,
    primary: Option<String>,
    next_node: usize,
    /// Nodes that just failed a try, until when.
    suspects: HashMap<String, Instant>,
    pub deadline: Duration,
}

/// How a command-line client reaches the store: flattened into every subcommand that talks
/// to it (here and in `halab`).
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// The store's nodes (host:port of their client ports, comma-separated): any of them
    /// leads to the primary.
    #[arg(
        long,
        env = "HALAB_NODES",
        value_delimiter = ',',
        default_value = "127.0.0.1:7300"
    )]
    pub nodes: Vec<String>,
    /// How long to keep trying (through a failover) before giving up.
    #[arg(long, env = "HALAB_DEADLINE_MS", default_value_t = 5000)]
    pub deadline_ms: u64,
}

impl ClientArgs {
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }

    pub fn client(&self, codec: FrameCodec) -> Client {
        let mut client = Client::new(self.nodes.clone(), codec);
        client.deadline = self.deadline();
        client
    }
}

impl Client {
    /// A client of the store whose nodes answer at `nodes` (host:port, any of them).
    pub fn new(nodes: Vec<String>, codec: FrameCodec) -> Client {
        Client {
            nodes,
            codec,
            id: rand::random::<u64>() >> 1,
            next_request: 1,
            conn: None,
            primary: None,
            next_node: 0,
            suspects: HashMap::new(),
            deadline: DEFAULT_DEADLINE,
        }
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// The next request id this client will use.
    pub fn next_request(&self) -> u64 {
        self.next_request
    }

    pub async fn get(&mut self, key: &str) -> Result<Option<String>, ClientError> {
        let op = Op::Get {
            key: key.to_string(),
            stale: false,
        };
        match self.call(op, 0).await? {
            Reply::Value(value) => Ok(value),
            other => Err(unexpected(other)),
        }
    }

    pub async fn set(&mut self, key: &str, value: &str) -> Result<u64, ClientError> {
        self.write(Write::Set {
            key: key.into(),
            value: value.into(),
        })
        .await
    }

    pub async fn delete(&mut self, key: &str) -> Result<u64, ClientError> {
        self.write(Write::Delete { key: key.into() }).await
    }

    pub async fn update(&mut self, pairs: Vec<(String, String)>) -> Result<u64, ClientError> {
        self.write(Write::Update { pairs }).await
    }

    /// A write, numbered and retried until it is acknowledged (its sequence number) or the
    /// deadline passes.
    pub async fn write(&mut self, write: Write) -> Result<u64, ClientError> {
        let request = self.next_request;
        self.next_request += 1;
        match self.call(Op::Write(write), request).await? {
            Reply::Written { seq } => Ok(seq),
            other => Err(unexpected(other)),
        }
    }

    /// Sends `op` to the primary, following redirects and retrying until the deadline.
    async fn call(&mut self, op: Op, request: u64) -> Result<Reply, ClientError> {
        let give_up = Instant::now() + self.deadline;
        let mut last = String::from("no try yet");
        while Instant::now() < give_up {
            let target = self.target();
            let (result, alive) = self.try_watching(&target, &op, request).await;
            if result.is_ok() {
                self.suspects.remove(&target);
            }
            match result {
                Ok(Reply::Redirect {
                    addr: Some(addr), ..
                }) => {
                    if self.is_suspect(&addr) {
                        // It just failed us: ask around until someone names a new primary.
                        last = format!("{target} redirects to {addr}, which does not answer");
                        self.primary = None;
                    } else {
                        if addr == target {
                            last = format!("{target} redirects to itself");
                            tokio::time::sleep(RETRY_PAUSE).await;
                        }
                        self.primary = Some(addr);
                        continue;
                    }
                }
                Ok(Reply::Redirect { addr: None, .. }) => {
                    last = format!("{target} knows no primary");
                    self.primary = None;
                }
                Ok(Reply::Unavailable { reason }) => last = format!("{target}: {reason}"),
                Ok(Reply::Invalid { reason }) => return Err(ClientError::Refused(reason)),
                Ok(reply) => return Ok(reply),
                Err(e) if e.is::<NoAnswer>() && alive => {
                    // Slow, not gone: the same request again (it is not applied twice).
                    last = format!("{target}: {e} (alive: trying again)");
                    self.conn = None;
                    self.primary = Some(target);
                    continue;
                }
                Err(e) => {
                    last = format!("{target}: {e}");
                    self.conn = None;
                    self.primary = None;
                    self.suspects.insert(target, Instant::now() + SUSPECT_FOR);
                }
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        Err(ClientError::Unknown {
            deadline: self.deadline,
            last,
        })
    }

    /// The primary if known, else the next node in turn (passing over suspects while others
    /// remain).
    fn target(&mut self) -> String {
        if let Some(primary) = &self.primary {
            return primary.clone();
        }
        for _ in 0..self.nodes.len() {
            let node = self.nodes[self.next_node % self.nodes.len()].clone();
            self.next_node += 1;
            if !self.is_suspect(&node) {
                return node;
            }
        }
        self.nodes[self.next_node % self.nodes.len()].clone()
    }

    /// One try; if it has no answer shortly before it times out, the node is asked meanwhile
    /// whether it is alive and primary (the second value), so that a slow primary is told from
    /// a paused one without adding to the wait.
    async fn try_watching(
        &mut self,
        target: &str,
        op: &Op,
        request: u64,
    ) -> (anyhow::Result<Reply>, bool) {
        let probe = answers_as_primary(self.codec.clone(), target.to_string());
        let attempt = self.try_once(target, op, request);
        tokio::pin!(attempt);
        match tokio::time::timeout(ATTEMPT_TIMEOUT - ALIVE_PROBE, &mut attempt).await {
            Ok(result) => (result, false),
            Err(_) => tokio::join!(attempt, probe),
        }
    }

    fn is_suspect(&self, node: &str) -> bool {
        self.suspects
            .get(node)
            .is_some_and(|until| Instant::now() < *until)
    }

    async fn try_once(&mut self, target: &str, op: &Op, request: u64) -> anyhow::Result<Reply> {
        if self.conn.as_ref().is_none_or(|(addr, _)| addr != target) {
            self.conn = None;
            let conn = connect(target, self.codec.clone()).await?;
            self.conn = Some((target.to_string(), conn));
        }
        let (_, conn) = self.conn.as_mut().expect("connected above");
        let message = Message::Store(StoreMessage::Request {
            client: self.id,
            request,
            op: op.clone(),
        });
        exchange(conn, message, request).await
    }

    /// Asks one node, without redirects: its own state (`Op::State`), a stale read, `kill`.
    pub async fn ask(&self, node: &str, op: Op) -> anyhow::Result<Reply> {
        let mut conn = connect(node, self.codec.clone()).await?;
        let message = Message::Store(StoreMessage::Request {
            client: self.id,
            request: 0,
            op,
        });
        exchange(&mut conn, message, 0).await
    }

    /// The status of the node at `node`.
    pub async fn status(&self, node: &str) -> anyhow::Result<StoreNodeStatus> {
        let mut conn = connect(node, self.codec.clone()).await?;
        conn.send(0, Message::StatusRequest).await?;
        match tokio::time::timeout(ATTEMPT_TIMEOUT, conn.read_frame()).await {
            Ok(Ok(Some(frame))) => match frame.message {
                Message::StoreStatus(status) => Ok(*status),
                other => anyhow::bail!("{node} answered {:?}: not a store node", other.kind()),
            },
            Ok(Ok(None)) => anyhow::bail!("{node} closed the connection"),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => anyhow::bail!("{node} did not answer within {ATTEMPT_TIMEOUT:?}"),
        }
    }

    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// The address of the node `which` names: `primary` (the highest epoch's), `standby` (any),
    /// a node id, or host:port as it is.
    pub async fn find_node(&self, which: &str) -> anyhow::Result<String> {
        if which.contains(':') {
            return Ok(which.to_string());
        }
        let mut found = Vec::new();
        for addr in self.nodes() {
            if let Ok(status) = self.status(addr).await {
                found.push((addr.clone(), status));
            }
        }
        let pick = match which {
            "primary" => found
                .iter()
                .filter(|(_, s)| s.role == "primary")
                .max_by_key(|(_, s)| s.epoch),
            "standby" => found.iter().find(|(_, s)| s.role == "standby"),
            id => {
                let id: u64 = id.parse().map_err(|_| {
                    anyhow::anyhow!(
                        "a node is primary, standby, a node id or host:port, not {id:?}"
                    )
                })?;
                found.iter().find(|(_, s)| s.id == id)
            }
        };
        pick.map(|(addr, _)| addr.clone()).ok_or_else(|| {
            anyhow::anyhow!(
                "no {which} among {} ({} answered)",
                self.nodes().join(", "),
                found.len()
            )
        })
    }
}

/// Whether `node` answers a status request within [`ALIVE_PROBE`] as the primary.
async fn answers_as_primary(codec: FrameCodec, node: String) -> bool {
    let client = Client::new(vec![node.clone()], codec);
    tokio::time::timeout(ALIVE_PROBE, client.status(&node))
        .await
        .is_ok_and(|status| status.is_ok_and(|s| s.role == "primary"))
}

/// A try that got no answer within [`ATTEMPT_TIMEOUT`].
#[derive(Debug, thiserror::Error)]
#[error("no answer within {ATTEMPT_TIMEOUT:?}")]
struct NoAnswer;

async fn exchange(conn: &mut Connection, message: Message, request: u64) -> anyhow::Result<Reply> {
    conn.send(0, message).await?;
    loop {
        let frame = tokio::time::timeout(ATTEMPT_TIMEOUT, conn.read_frame())
            .await
            .map_err(|_| NoAnswer)??;
        match frame.map(|f| f.message) {
            Some(Message::Store(StoreMessage::Reply { request: r, reply })) if r == request => {
                return Ok(reply);
            }
            // An answer to an earlier try on this connection: not this one's.
            Some(Message::Store(StoreMessage::Reply { .. })) => continue,
            Some(Message::Rejected { reason }) => anyhow::bail!("rejected: {reason}"),
            Some(other) => anyhow::bail!("unexpected answer {:?}", other.kind()),
            None => anyhow::bail!("the node closed the connection"),
        }
    }
}

/// Resolves `addr` (host:port) and connects, handshake included, within [`ATTEMPT_TIMEOUT`].
pub(crate) async fn connect(addr: &str, codec: FrameCodec) -> anyhow::Result<Connection> {
    let target = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot resolve {addr}: {e}"))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{addr} resolves to no address"))?;
    let conn = tokio::time::timeout(ATTEMPT_TIMEOUT, Connection::connect(target, codec))
        .await
        .map_err(|_| anyhow::anyhow!("no connection to {addr} within {ATTEMPT_TIMEOUT:?}"))??;
    Ok(conn)
}

fn unexpected(reply: Reply) -> ClientError {
    ClientError::Refused(format!("unexpected answer: {reply:?}"))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use tokio::net::TcpListener;

    use super::*;

    /// A stand-in node on loopback: answers status as `role`, and every store request with
    /// `answer(n)` for the connection's n-th request (None: no answer at all).
    async fn fake_node(
        role: &'static str,
        answer: impl Fn(u64) -> Option<Reply> + Send + Sync + 'static,
    ) -> (String, Arc<AtomicU64>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let requests = Arc::new(AtomicU64::new(0));
        let (answer, counted) = (Arc::new(answer), requests.clone());
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (answer, counted) = (answer.clone(), counted.clone());
                tokio::spawn(async move {
                    let mut conn = Connection::new(stream, FrameCodec::default()).await?;
                    while let Some(frame) = conn.read_frame().await? {
                        let reply = match frame.message {
                            Message::StatusRequest => {
                                Message::StoreStatus(Box::new(StoreNodeStatus {
                                    role: role.into(),
                                    ..StoreNodeStatus::default()
                                }))
                            }
                            Message::Store(StoreMessage::Request { request, .. }) => {
                                let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
                                match answer(n) {
                                    Some(reply) => {
                                        Message::Store(StoreMessage::Reply { request, reply })
                                    }
                                    None => continue,
                                }
                            }
                            _ => continue,
                        };
                        conn.send(0, reply).await?;
                    }
                    anyhow::Ok(())
                });
            }
        });
        (addr, requests)
    }

    #[tokio::test]
    async fn a_primary_slow_to_answer_but_alive_is_tried_again_not_passed_over() {
        // The primary holds the first try (waiting to drop a cut-off standby, say) and
        // answers the retry; a standby would only redirect to it.
        let (primary, tries) =
            fake_node("primary", |n| (n >= 2).then_some(Reply::Written { seq: 7 })).await;
        let target = primary.clone();
        let (standby, redirected) = fake_node("standby", move |_| {
            Some(Reply::Redirect {
                primary: Some(1),
                addr: Some(target.clone()),
            })
        })
        .await;
        let mut client = Client::new(vec![primary, standby], FrameCodec::default());
        assert_eq!(client.set("k", "v").await.unwrap(), 7);
        assert_eq!(tries.load(Ordering::SeqCst), 2);
        assert_eq!(redirected.load(Ordering::SeqCst), 0, "asked the standby");
    }

    #[tokio::test]
    async fn a_primary_that_does_not_answer_at_all_is_passed_over() {
        // Paused: its kernel accepts connections, nothing answers, not even a status request.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let paused = listener.local_addr().unwrap().to_string();
        let (new_primary, _) = fake_node("primary", |_| Some(Reply::Written { seq: 9 })).await;
        let mut client = Client::new(vec![paused, new_primary], FrameCodec::default());
        assert_eq!(client.set("k", "v").await.unwrap(), 9);
        drop(listener);
    }
}
