//! The frame body: a fixed header, an optional auth tag, and the payload.
//!
//! ```text
//! offset  size  field
//! 0       2     magic "HL"
//! 2       1     protocol version
//! 3       1     message kind
//! 4       1     flags (bit 0: an HMAC-SHA256 tag follows the header)
//! 5       8     sender id, big-endian
//! 13      8     stamp: boot id (UDP: the sending socket's; TCP: 0), big-endian
//! 21      8     stamp: sequence number (UDP: per socket; TCP: per connection and direction)
//! 29      32    tag (only with flag bit 0): HMAC-SHA256 over the binding, header and payload
//! ..            bincode payload
//! ```
//!
//! The stamp is what makes a keyed frame fresh, not just authentic: the tag covers it, so a
//! recorded frame cannot be given a new one. On TCP the tag also covers the receiver's
//! connection nonce (the *binding*, never sent), tying a frame to one connection.

use std::fmt;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::ProtoError;

pub const MAGIC: [u8; 2] = *b"HL";
pub const PROTOCOL_VERSION: u8 = 2;
pub const HEADER_LEN: usize = 29;
pub const TAG_LEN: usize = 32;
const FLAG_AUTH: u8 = 0b0000_0001;

type HmacSha256 = Hmac<Sha256>;

/// The shared secret (`HALAB_CLUSTER_KEY`) that authenticates every frame of a cluster.
#[derive(Clone)]
pub struct ClusterKey(Arc<[u8]>);

impl ClusterKey {
    pub fn new(secret: impl AsRef<[u8]>) -> Self {
        ClusterKey(Arc::from(secret.as_ref()))
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length, so this cannot fail.
        <HmacSha256 as Mac>::new_from_slice(&self.0).expect("HMAC takes keys of any length")
    }
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret, not even in a debug log.
        f.write_str("ClusterKey(<redacted>)")
    }
}

/// Where a frame stands in its sender's stream (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stamp {
    pub boot: u64,
    pub seq: u64,
}

/// The parsed fixed header of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub kind: u8,
    pub sender: u64,
    pub stamp: Stamp,
}

/// The tag's input: the binding (prefixed by its length, so that no split of the bytes is
/// ambiguous), header, payload.
fn tag_over(key: &ClusterKey, binding: &[u8], header: &[u8], payload: &[u8]) -> HmacSha256 {
    let mut mac = key.mac();
    mac.update(&[binding.len() as u8]);
    mac.update(binding);
    mac.update(header);
    mac.update(payload);
    mac
}

/// Appends header, tag (when keyed) and payload to `dst`.
pub(crate) struct Outgoing<'a> {
    pub kind: u8,
    pub sender: u64,
    pub stamp: Stamp,
    pub payload: &'a [u8],
}

pub(crate) fn write_body(
    dst: &mut BytesMut,
    frame: Outgoing<'_>,
    key: Option<&ClusterKey>,
    binding: &[u8],
) {
    let start = dst.len();
    dst.put_slice(&MAGIC);
    dst.put_u8(PROTOCOL_VERSION);
    dst.put_u8(frame.kind);
    dst.put_u8(if key.is_some() { FLAG_AUTH } else { 0 });
    dst.put_u64(frame.sender);
    dst.put_u64(frame.stamp.boot);
    dst.put_u64(frame.stamp.seq);
    if let Some(key) = key {
        let mac = tag_over(key, binding, &dst[start..start + HEADER_LEN], frame.payload);
        dst.put_slice(&mac.finalize().into_bytes());
    }
    dst.put_slice(frame.payload);
}

/// Checks the header and tag of `body` (everything after the length prefix) and returns the
/// header and the payload slice.
pub(crate) fn read_body<'a>(
    body: &'a [u8],
    key: Option<&ClusterKey>,
    binding: &[u8],
) -> Result<(Header, &'a [u8]), ProtoError> {
    if body.len() < HEADER_LEN {
        return Err(ProtoError::FrameTooShort {
            len: body.len(),
            min: HEADER_LEN,
        });
    }
    let (header_bytes, rest) = body.split_at(HEADER_LEN);
    if header_bytes[0..2] != MAGIC {
        return Err(ProtoError::BadMagic(u16::from_be_bytes([
            header_bytes[0],
            header_bytes[1],
        ])));
    }
    if header_bytes[2] != PROTOCOL_VERSION {
        return Err(ProtoError::UnsupportedVersion(header_bytes[2]));
    }
    let kind = header_bytes[3];
    let flags = header_bytes[4];
    if flags & !FLAG_AUTH != 0 {
        return Err(ProtoError::UnknownFlags(flags));
    }
    let word = |at: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&header_bytes[at..at + 8]);
        u64::from_be_bytes(bytes)
    };
    let sender = word(5);
    let stamp = Stamp {
        boot: word(13),
        seq: word(21),
    };
    let authenticated = flags & FLAG_AUTH != 0;

    let payload = if authenticated {
        if rest.len() < TAG_LEN {
            return Err(ProtoError::FrameTooShort {
                len: body.len(),
                min: HEADER_LEN + TAG_LEN,
            });
        }
        let (tag, payload) = rest.split_at(TAG_LEN);
        if let Some(key) = key {
            let mac = tag_over(key, binding, header_bytes, payload);
            // verify_slice compares in constant time.
            mac.verify_slice(tag).map_err(|_| ProtoError::BadAuthTag)?;
        }
        payload
    } else {
        if key.is_some() {
            return Err(ProtoError::MissingAuthTag);
        }
        rest
    };
    Ok((
        Header {
            kind,
            sender,
            stamp,
        },
        payload,
    ))
}
