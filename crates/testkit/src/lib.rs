//! Test harness shared by halab's crates: what an attacker on the lab network could do with
//! traffic it captured. [`TcpRecorder`] sits between a real client and a daemon and keeps the
//! bytes each connection sent; [`UdpRecorder`] keeps the datagrams sent to it; [`replay_tcp`]
//! and [`replay_udp`] send them again unchanged. [`sim`] holds what seeded simulations share.

pub mod sim;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

type Recorded = Arc<Mutex<Vec<Vec<u8>>>>;
type Datagrams = Arc<Mutex<Vec<(SocketAddr, Vec<u8>)>>>;

/// A TCP proxy on 127.0.0.1 to `upstream` that records what each client sent.
#[derive(Debug)]
pub struct TcpRecorder {
    pub addr: SocketAddr,
    recorded: Recorded,
    task: JoinHandle<()>,
}

impl TcpRecorder {
    pub async fn start(upstream: SocketAddr) -> TcpRecorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let recorded = Recorded::default();
        let sink = recorded.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let index = {
                    let mut all = sink.lock().unwrap();
                    all.push(Vec::new());
                    all.len() - 1
                };
                tokio::spawn(pipe(client, server, sink.clone(), index));
            }
        });
        TcpRecorder {
            addr,
            recorded,
            task,
        }
    }

    /// The bytes every connection so far sent towards the upstream, in connection order.
    pub fn recorded(&self) -> Vec<Vec<u8>> {
        self.recorded.lock().unwrap().clone()
    }
}

impl Drop for TcpRecorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pipe(client: TcpStream, server: TcpStream, sink: Recorded, index: usize) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = async move {
        let mut buf = vec![0; 16 * 1024];
        while let Ok(n @ 1..) = client_read.read(&mut buf).await {
            sink.lock().unwrap()[index].extend_from_slice(&buf[..n]);
            if server_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = server_write.shutdown().await;
    };
    let downstream = async move {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    tokio::join!(upstream, downstream);
}

/// Sends `bytes` to `target` on a new connection and returns whatever comes back before the
/// daemon closes the connection or `wait` passes.
pub async fn replay_tcp(target: SocketAddr, bytes: &[u8], wait: Duration) -> Vec<u8> {
    let mut stream = TcpStream::connect(target).await.expect("connect");
    // The daemon may close as soon as it sees a bad frame; a failed write is part of the answer.
    let _ = stream.write_all(bytes).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut answer)).await;
    answer
}

/// How many whole length-prefixed frames (a `u32` big-endian length, then the body) `bytes`
/// holds: what a daemon answered to a replay.
pub fn count_frames(mut bytes: &[u8]) -> usize {
    let mut count = 0;
    while let Some(prefix) = bytes.get(..4) {
        let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        let Some(rest) = bytes.get(4 + len..) else {
            break;
        };
        bytes = rest;
        count += 1;
    }
    count
}

/// A free TCP port on 127.0.0.1 (bound, then released), for a daemon that must be configured
/// with an address before it starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A UDP socket on 127.0.0.1 that keeps every datagram sent to it, with its source.
#[derive(Debug)]
pub struct UdpRecorder {
    pub addr: SocketAddr,
    recorded: Datagrams,
    task: JoinHandle<()>,
}

impl UdpRecorder {
    pub async fn start() -> UdpRecorder {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let addr = socket.local_addr().expect("local addr");
        let recorded = Datagrams::default();
        let sink = recorded.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0; 65_536];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                sink.lock().unwrap().push((from, buf[..n].to_vec()));
            }
        });
        UdpRecorder {
            addr,
            recorded,
            task,
        }
    }

    /// The datagrams received so far from `source`.
    pub fn from(&self, source: SocketAddr) -> Vec<Vec<u8>> {
        self.recorded
            .lock()
            .unwrap()
            .iter()
            .filter(|(from, _)| *from == source)
            .map(|(_, datagram)| datagram.clone())
            .collect()
    }
}

impl Drop for UdpRecorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Sends each datagram to each target again, unchanged.
pub async fn replay_udp(datagrams: &[Vec<u8>], targets: &[SocketAddr]) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    for datagram in datagrams {
        for target in targets {
            let _ = socket.send_to(datagram, target).await;
        }
    }
}
