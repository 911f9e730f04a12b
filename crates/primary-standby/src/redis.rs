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
    /// Of the scalars above (the commands here get no nested arrays).
    Array(Option<Vec<Resp>>),
}

/// What one line of a reply starts: a whole value, or an array of so many (None: null).
enum Scalar {
    Value(Resp),
    ArrayOf(Option<usize>),
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
        match self.ask(&["GET", key]).await? {
            Resp::Bulk(value) => Ok(value),
            other => Err(format!("GET answered {other:?}")),
        }
    }

    /// A plain `SET`: Ok once the primary has it (a replica refuses it: READONLY).
    pub async fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        match self.ask(&["SET", key, value]).await? {
            Resp::Simple(ok) if ok == "OK" => Ok(()),
            other => Err(format!("SET answered {other:?}")),
        }
    }

    /// Of a Sentinel: the address of the primary it monitors as `name` ("host:port").
    pub async fn primary_by_name(&mut self, name: &str) -> Result<Option<String>, String> {
        match self
            .ask(&["SENTINEL", "get-master-addr-by-name", name])
            .await?
        {
            Resp::Array(Some(parts)) => match &parts[..] {
                [Resp::Bulk(Some(host)), Resp::Bulk(Some(port))] => {
                    Ok(Some(format!("{host}:{port}")))
                }
                _ => Err(format!("SENTINEL answered {parts:?}")),
            },
            Resp::Array(None) | Resp::Bulk(None) => Ok(None),
            other => Err(format!("SENTINEL answered {other:?}")),
        }
    }

    /// Of a Sentinel: what it knows of the primary it monitors as `name` (`SENTINEL master`:
    /// field, value pairs such as `num-slaves`).
    pub async fn sentinel_view(&mut self, name: &str) -> Result<Vec<(String, String)>, String> {
        match self.ask(&["SENTINEL", "master", name]).await? {
            Resp::Array(Some(items)) => {
                let texts: Vec<String> = items
                    .into_iter()
                    .map(|item| match item {
                        Resp::Bulk(Some(text)) => Ok(text),
                        other => Err(format!("SENTINEL master answered {other:?}")),
                    })
                    .collect::<Result<_, _>>()?;
                Ok(texts
                    .chunks_exact(2)
                    .map(|pair| (pair[0].clone(), pair[1].clone()))
                    .collect())
            }
            other => Err(format!("SENTINEL master answered {other:?}")),
        }
    }

    /// `INFO section`'s fields.
    pub async fn info(&mut self, section: &str) -> Result<Vec<(String, String)>, String> {
        match self.ask(&["INFO", section]).await? {
            Resp::Bulk(Some(text)) => Ok(text
                .lines()
                .filter_map(|line| line.split_once(':'))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()),
            other => Err(format!("INFO answered {other:?}")),
        }
    }

    async fn ask(&mut self, args: &[&str]) -> Result<Resp, String> {
        self.stream
            .get_mut()
            .write_all(&command(args))
            .await
            .map_err(|e| e.to_string())?;
        self.reply().await
    }

    async fn reply(&mut self) -> Result<Resp, String> {
        match self.scalar().await? {
            Scalar::Value(value) => Ok(value),
            Scalar::ArrayOf(None) => Ok(Resp::Array(None)),
            Scalar::ArrayOf(Some(len)) => {
                let mut items = Vec::new();
                for _ in 0..len {
                    match self.scalar().await? {
                        Scalar::Value(value) => items.push(value),
                        Scalar::ArrayOf(_) => return Err("a nested array".to_string()),
                    }
                }
                Ok(Resp::Array(Some(items)))
            }
        }
    }

    /// One reply that is not an array, or an array's header.
    async fn scalar(&mut self) -> Result<Scalar, String> {
        let mut line = String::new();
        self.stream
            .read_line(&mut line)
            .await
            .map_err(|e| e.to_string())?;
        let line = line.trim_end();
        let (kind, rest) = line.split_at_checked(1).ok_or("connection closed")?;
        match kind {
            "+" => Ok(Scalar::Value(Resp::Simple(rest.to_string()))),
            "-" => Err(rest.to_string()),
            ":" => rest
                .parse()
                .map(|n| Scalar::Value(Resp::Integer(n)))
                .map_err(|e| format!("bad integer {rest:?}: {e}")),
            "$" => {
                let len: i64 = rest
                    .parse()
                    .map_err(|e| format!("bad length {rest:?}: {e}"))?;
                let Ok(len) = usize::try_from(len) else {
                    return Ok(Scalar::Value(Resp::Bulk(None)));
                };
                let mut bytes = vec![0; len + 2];
                self.stream
                    .read_exact(&mut bytes)
                    .await
                    .map_err(|e| e.to_string())?;
                bytes.truncate(len);
                String::from_utf8(bytes)
                    .map(|s| Scalar::Value(Resp::Bulk(Some(s))))
                    .map_err(|e| e.to_string())
            }
            "*" => {
                let len: i64 = rest
                    .parse()
                    .map_err(|e| format!("bad length {rest:?}: {e}"))?;
                Ok(Scalar::ArrayOf(usize::try_from(len).ok()))
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

    /// A server that answers each connection's first command with `reply`.
    async fn answering(reply: &'static [u8]) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut buf = [0u8; 256];
                let _ = conn.read(&mut buf).await;
                let _ = conn.write_all(reply).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_sentinel_names_the_primary_or_none() {
        let named = answering(b"*2\r\n$9\r\n127.0.0.1\r\n$5\r\n17801\r\n").await;
        let mut sentinel = RedisConnection::connect(&named).await.unwrap();
        let primary = sentinel.primary_by_name("bench").await.unwrap();
        assert_eq!(primary.as_deref(), Some("127.0.0.1:17801"));
        let unknown = answering(b"*-1\r\n").await;
        let mut sentinel = RedisConnection::connect(&unknown).await.unwrap();
        assert_eq!(sentinel.primary_by_name("bench").await.unwrap(), None);
        let nested = answering(b"*1\r\n*0\r\n").await;
        let mut sentinel = RedisConnection::connect(&nested).await.unwrap();
        assert!(sentinel.primary_by_name("bench").await.is_err());
    }

    #[tokio::test]
    async fn a_sentinels_view_is_read_as_pairs() {
        let addr =
            answering(b"*4\r\n$4\r\nname\r\n$5\r\nbench\r\n$10\r\nnum-slaves\r\n$1\r\n1\r\n").await;
        let mut sentinel = RedisConnection::connect(&addr).await.unwrap();
        let view = sentinel.sentinel_view("bench").await.unwrap();
        assert_eq!(view[1], ("num-slaves".to_string(), "1".to_string()));
    }

    #[tokio::test]
    async fn info_is_read_as_fields() {
        let addr =
            answering(b"$46\r\n# Replication\r\nrole:master\r\nconnected_slaves:1\r\n").await;
        let mut server = RedisConnection::connect(&addr).await.unwrap();
        let info = server.info("replication").await.unwrap();
        assert_eq!(
            info,
            [
                ("role".to_string(), "master".to_string()),
                ("connected_slaves".to_string(), "1".to_string())
            ]
        );
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        assert_eq!(
            command(&["SET", "k", "vv"]),
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nvv\r\n"
        );
    }
}
