//! The etcd anchor's client: etcd's own protocol, gRPC over HTTP/2, for the two calls the
//! benchmark makes (`KV.Put` and `Maintenance.Status`), so that etcd is measured the way its
//! clients talk to it rather than through its JSON gateway. A few lines of protobuf — the
//! fields these calls need — not a general client.

use std::net::SocketAddr;

use anyhow::Context;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::net::TcpStream;

/// One HTTP/2 connection to an etcd member.
#[derive(Clone)]
pub struct EtcdConnection {
    addr: SocketAddr,
    send: h2::client::SendRequest<Bytes>,
}

/// Who a member is and whom it follows (`Maintenance.Status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberStatus {
    pub member: u64,
    /// 0 while it knows no leader.
    pub leader: u64,
}

impl EtcdConnection {
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<EtcdConnection> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let (send, connection) = h2::client::handshake(tcp).await?;
        tokio::spawn(async move {
            // Ends when the member goes or the connection is dropped; nothing to report.
            let _ = connection.await;
        });
        Ok(EtcdConnection { addr, send })
    }

    /// `KV.Put`: Ok once etcd has committed it (a majority of members).
    pub async fn put(&mut self, key: &str, value: &str) -> anyhow::Result<()> {
        let mut request = BytesMut::new();
        put_bytes_field(&mut request, 1, key.as_bytes());
        put_bytes_field(&mut request, 2, value.as_bytes());
        self.call("etcdserverpb.KV/Put", request.freeze()).await?;
        Ok(())
    }

    pub async fn status(&mut self) -> anyhow::Result<MemberStatus> {
        let reply = self
            .call("etcdserverpb.Maintenance/Status", Bytes::new())
            .await?;
        parse_status(reply)
    }

    /// One unary gRPC call: the message framed (no compression), the reply's message back,
    /// or the error etcd gave in `grpc-status` / `grpc-message`.
    async fn call(&mut self, method: &str, message: Bytes) -> anyhow::Result<Bytes> {
        let request = http::Request::builder()
            .method("POST")
            .uri(format!("http://{}/{method}", self.addr))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())?;
        let mut framed = BytesMut::with_capacity(5 + message.len());
        framed.put_u8(0);
        framed.put_u32(message.len() as u32);
        framed.extend_from_slice(&message);
        let mut send = self.send.clone().ready().await?;
        let (response, mut body) = send.send_request(request, false)?;
        body.send_data(framed.freeze(), true)?;
        let response = response.await?;
        anyhow::ensure!(response.status() == 200, "HTTP {}", response.status());
        let (head, mut body) = response.into_parts();
        let mut reply = BytesMut::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk?;
            let _ = body.flow_control().release_capacity(chunk.len());
            reply.extend_from_slice(&chunk);
        }
        // A call that fails at once answers with headers only ("Trailers-Only").
        let trailers = body.trailers().await?.unwrap_or(head.headers);
        let code = trailers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("missing");
        if code != "0" {
            let message = trailers
                .get("grpc-message")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            anyhow::bail!("gRPC status {code}: {message}");
        }
        anyhow::ensure!(reply.len() >= 5, "a reply of {} bytes", reply.len());
        let mut reply = reply.freeze();
        let _compressed = reply.get_u8();
        let len = reply.get_u32() as usize;
        anyhow::ensure!(reply.len() == len, "a reply framed as {len} bytes");
        Ok(reply)
    }
}

fn put_varint(buf: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        buf.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    buf.put_u8(value as u8);
}

/// A length-delimited field (wire type 2).
fn put_bytes_field(buf: &mut BytesMut, field: u64, bytes: &[u8]) {
    put_varint(buf, (field << 3) | 2);
    put_varint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

fn get_varint(buf: &mut Bytes) -> anyhow::Result<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        anyhow::ensure!(buf.has_remaining(), "a varint cut short");
        let byte = buf.get_u8();
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Ok(value);
        }
    }
    anyhow::bail!("a varint longer than 64 bits")
}

/// A message's fields: (number, varint value or length-delimited bytes).
fn fields(mut buf: Bytes) -> anyhow::Result<Vec<(u64, Field)>> {
    let mut out = Vec::new();
    while buf.has_remaining() {
        let key = get_varint(&mut buf)?;
        let field = match key & 7 {
            0 => Field::Varint(get_varint(&mut buf)?),
            1 => {
                anyhow::ensure!(buf.remaining() >= 8, "a fixed64 cut short");
                buf.advance(8);
                Field::Other
            }
            2 => {
                let len = get_varint(&mut buf)? as usize;
                anyhow::ensure!(buf.remaining() >= len, "a field cut short");
                Field::Bytes(buf.split_to(len))
            }
            5 => {
                anyhow::ensure!(buf.remaining() >= 4, "a fixed32 cut short");
                buf.advance(4);
                Field::Other
            }
            wire => anyhow::bail!("wire type {wire}"),
        };
        out.push((key >> 3, field));
    }
    Ok(out)
}

#[derive(Debug)]
enum Field {
    Varint(u64),
    Bytes(Bytes),
    Other,
}

/// `StatusResponse`: header (1) → member_id (2); leader (4).
fn parse_status(reply: Bytes) -> anyhow::Result<MemberStatus> {
    let mut status = MemberStatus {
        member: 0,
        leader: 0,
    };
    for (number, field) in fields(reply)? {
        match (number, field) {
            (1, Field::Bytes(header)) => {
                for (number, field) in fields(header)? {
                    if let (2, Field::Varint(id)) = (number, field) {
                        status.member = id;
                    }
                }
            }
            (4, Field::Varint(leader)) => status.leader = leader,
            _ => {}
        }
    }
    anyhow::ensure!(status.member != 0, "a status without the member's id");
    Ok(status)
}

/// Connects and asks, within `timeout`.
pub async fn member_status(
    addr: SocketAddr,
    timeout: std::time::Duration,
) -> anyhow::Result<MemberStatus> {
    tokio::time::timeout(timeout, async {
        EtcdConnection::connect(addr).await?.status().await
    })
    .await
    .with_context(|| format!("{addr} did not answer within {timeout:?}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_put_request_is_its_two_fields() {
        let mut buf = BytesMut::new();
        put_bytes_field(&mut buf, 1, b"k");
        put_bytes_field(&mut buf, 2, b"vv");
        assert_eq!(&buf[..], b"\x0a\x01k\x12\x02vv");
    }

    #[test]
    fn a_status_reply_gives_the_member_and_its_leader() {
        // header { cluster_id: 7, member_id: 300 }, version "3.4", leader 300.
        let mut header = BytesMut::new();
        put_varint(&mut header, 1 << 3);
        put_varint(&mut header, 7);
        put_varint(&mut header, 2 << 3);
        put_varint(&mut header, 300);
        let mut reply = BytesMut::new();
        put_bytes_field(&mut reply, 1, &header);
        put_bytes_field(&mut reply, 2, b"3.4");
        put_varint(&mut reply, 4 << 3);
        put_varint(&mut reply, 300);
        let status = parse_status(reply.freeze()).unwrap();
        assert_eq!(
            status,
            MemberStatus {
                member: 300,
                leader: 300
            }
        );
        assert!(parse_status(Bytes::from_static(b"\x0a\x05")).is_err());
    }
}
