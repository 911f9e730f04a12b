//! The benchmark's anchor: a Redis primary with a replica, written with `SET` + `WAIT 1 0`
//! (acknowledged once a replica holds it: Redis's nearest to synchronous replication), so that
//! `load --redis` puts the very same workload on Redis as on the store. A few lines of RESP —
//! the commands this needs and the replies they get — not a general client.

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// One connection to a Redis server.
#[derive(Debug)]
pub struct RedisConnection {
    stream: BufReader<TcpStream>,
}

/// The replies the commands above can get.
#[derive(Debug, PartialEq, Eq)]
enum Resp {
    Simple(String),
    Integer(i64),
    Bulk(Option<String>),
}

impl RedisConnection {
    pub async fn connect(addr: &str) -> std::io::Result<RedisConnection> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(RedisConnection {
            stream: BufReader::new(stream),
        })
    }

    /// `SET key value` and `WAIT 1 0` in one round trip: Ok once one replica has the write.
    pub async fn set_replicated(&mut self, key: &str, value: &str) -> Result<(), String> {
        let mut buf = command(&["SET", key, value]);
        buf.extend(command(&["WAIT", "1", "0"]));
        self.stream
            .get_mut()
            .write_all(&buf)
            .await
            .map_err(|e| e.to_string())?;
        match self.reply().await? {
            Resp::Simple(ok) if ok == "OK" => {}
            other => return Err(format!("SET answered {other:?}")),
        }
        match self.reply().await? {
            Resp::Integer(n) if n >= 1 => Ok(()),
            other => Err(format!("WAIT answered {other:?}: no replica acknowledged")),
        }
    }

    pub async fn get(&mut self, key: &str) -> Result<Option<String>, String> {
        self.stream
            .get_mut()
            .write_all(&command(&["GET", key]))
            .await
            .map_err(|e| e.to_string())?;
        match self.reply().await? {
            Resp::Bulk(value) => Ok(value),
            other => Err(format!("GET answered {other:?}")),
        }
    }

    async fn reply(&mut self) -> Result<Resp, String> {
        let mut line = String::new();
        self.stream
            .read_line(&mut line)
            .await
            .map_err(|e| e.to_string())?;
        let line = line.trim_end();
        let (kind, rest) = line.split_at_checked(1).ok_or("connection closed")?;
        match kind {
            "+" => Ok(Resp::Simple(rest.to_string())),
            "-" => Err(rest.to_string()),
            ":" => rest
                .parse()
                .map(Resp::Integer)
                .map_err(|e| format!("bad integer {rest:?}: {e}")),
            "$" => {
                let len: i64 = rest
                    .parse()
                    .map_err(|e| format!("bad length {rest:?}: {e}"))?;
                let Ok(len) = usize::try_from(len) else {
                    return Ok(Resp::Bulk(None));
                };
                let mut bytes = vec![0; len + 2];
                self.stream
                    .read_exact(&mut bytes)
                    .await
                    .map_err(|e| e.to_string())?;
                bytes.truncate(len);
                String::from_utf8(bytes)
                    .map(|s| Resp::Bulk(Some(s)))
                    .map_err(|e| e.to_string())
            }
            _ => Err(format!("unexpected reply {line:?}")),
        }
    }
}

/// A command as a RESP array of bulk strings.
fn command(args: &[&str]) -> Vec<u8> {
    let mut buf = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        buf.extend(format!("${}\r\n", arg.len()).bytes());
        buf.extend(arg.bytes());
        buf.extend(b"\r\n");
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        assert_eq!(
            command(&["SET", "k", "vv"]),
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nvv\r\n"
        );
    }
}
