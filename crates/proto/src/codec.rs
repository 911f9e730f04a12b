//! Length-prefixed framing for TCP streams ([`FrameCodec`] as a tokio-util codec) and the same
//! bytes as single UDP datagrams ([`FrameCodec::encode_datagram`], [`FrameCodec::decode_datagram`]).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::error::ProtoError;
use crate::frame::{ClusterKey, HEADER_LEN, Outgoing, Stamp, read_body, write_body};
use crate::message::{Frame, Message, MessageKind, Nonce};

/// Default largest frame body accepted or sent: 1 MiB.
pub const DEFAULT_MAX_FRAME_LEN: usize = 1 << 20;

/// Bincode checks every length a payload claims (a string's, a list's) against a limit before
/// it allocates. A fixed limit of 64 MiB let a 25-byte frame claiming a long string allocate
/// 64 MiB before failing; so the limit follows the payload's own size. Decoded values take more
/// memory than their encoding (a 1-byte varint becomes a `u64`; a row of ~30 bytes a ~100-byte
/// struct), so each payload gets the smallest tier at least `CLAIM_FACTOR` times its length.
const CLAIM_FACTOR: usize = 64;
const LARGEST_CLAIM: usize = 64 << 20;

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<LARGEST_CLAIM>()
}

fn decode_payload<T: serde::de::DeserializeOwned>(
    payload: &[u8],
) -> Result<(T, usize), bincode::error::DecodeError> {
    use bincode::config::standard;
    use bincode::serde::decode_from_slice;
    match payload.len().saturating_mul(CLAIM_FACTOR) {
        0..=0x1_0000 => decode_from_slice(payload, standard().with_limit::<0x1_0000>()),
        0x1_0001..=0x10_0000 => decode_from_slice(payload, standard().with_limit::<0x10_0000>()),
        0x10_0001..=0x100_0000 => decode_from_slice(payload, standard().with_limit::<0x100_0000>()),
        _ => decode_from_slice(payload, bincode_config()),
    }
}

/// Encodes any protocol value (a log entry, a snapshot part) as the payload of a frame would
/// be, for daemons that store them: the encoding stays behind proto, like the frames'.
pub fn encode_value<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, ProtoError> {
    bincode::serde::encode_to_vec(value, bincode_config())
        .map_err(|e| ProtoError::Encode(e.to_string()))
}

/// Decodes what [`encode_value`] made; the whole input must be one value.
pub fn decode_value<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ProtoError> {
    let (value, used) = decode_payload(bytes).map_err(|e| ProtoError::Payload(e.to_string()))?;
    if used != bytes.len() {
        return Err(ProtoError::TrailingBytes(bytes.len() - used));
    }
    Ok(value)
}

/// Encodes and decodes [`Frame`]s. Clone one per connection: once [`crate::Connection`]'s
/// handshake binds it to a session, it numbers and checks that connection's frames.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    max_frame_len: usize,
    key: Option<ClusterKey>,
    session: Option<Session>,
}

/// One TCP connection's freshness state.
#[derive(Debug, Clone, Copy)]
struct Session {
    /// Our nonce: frames we receive are tagged over it.
    local: Nonce,
    /// The peer's nonce: frames we send are tagged over it.
    peer: Nonce,
    sent: u64,
    received: u64,
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec::new(DEFAULT_MAX_FRAME_LEN, None)
    }
}

impl FrameCodec {
    pub fn new(max_frame_len: usize, key: Option<ClusterKey>) -> Self {
        FrameCodec {
            max_frame_len,
            key,
            session: None,
        }
    }

    /// From now on, frames are numbered from 1 in each direction and tagged over the
    /// receiver's nonce.
    pub(crate) fn bind_session(&mut self, local: Nonce, peer: Nonce) {
        self.session = Some(Session {
            local,
            peer,
            sent: 0,
            received: 0,
        });
    }

    pub fn is_keyed(&self) -> bool {
        self.key.is_some()
    }

    /// Encodes one frame, length prefix included, into `dst`, with an empty stamp (a frame
    /// outside any stream: tests, tools).
    pub fn encode_into(&self, frame: &Frame, dst: &mut BytesMut) -> Result<(), ProtoError> {
        self.encode_stamped(frame, Stamp::default(), &[], dst)
    }

    pub(crate) fn encode_stamped(
        &self,
        frame: &Frame,
        stamp: Stamp,
        binding: &[u8],
        dst: &mut BytesMut,
    ) -> Result<(), ProtoError> {
        let payload = bincode::serde::encode_to_vec(&frame.message, bincode_config())
            .map_err(|e| ProtoError::Encode(e.to_string()))?;
        let body_len = HEADER_LEN + payload.len() + self.key.as_ref().map_or(0, |_| crate::TAG_LEN);
        if body_len > self.max_frame_len {
            return Err(ProtoError::FrameTooLarge {
                len: body_len,
                max: self.max_frame_len,
            });
        }
        dst.reserve(4 + body_len);
        dst.put_u32(body_len as u32);
        let outgoing = Outgoing {
            kind: frame.message.kind() as u8,
            sender: frame.sender,
            stamp,
            payload: &payload,
        };
        write_body(dst, outgoing, self.key.as_ref(), binding);
        Ok(())
    }

    /// One whole frame as one UDP datagram, with an empty stamp.
    pub fn encode_datagram(&self, frame: &Frame) -> Result<Bytes, ProtoError> {
        self.encode_datagram_stamped(frame, Stamp::default())
    }

    pub(crate) fn encode_datagram_stamped(
        &self,
        frame: &Frame,
        stamp: Stamp,
    ) -> Result<Bytes, ProtoError> {
        let mut buf = BytesMut::new();
        self.encode_stamped(frame, stamp, &[], &mut buf)?;
        Ok(buf.freeze())
    }

    /// Decodes a datagram that must hold exactly one frame.
    pub fn decode_datagram(&self, datagram: &[u8]) -> Result<Frame, ProtoError> {
        self.decode_datagram_stamped(datagram)
            .map(|(frame, _)| frame)
    }

    /// A datagram's frame and its stamp (for the receiver's replay window).
    pub(crate) fn decode_datagram_stamped(
        &self,
        datagram: &[u8],
    ) -> Result<(Frame, Stamp), ProtoError> {
        if datagram.len() < 4 {
            return Err(ProtoError::FrameTooShort {
                len: datagram.len(),
                min: 4 + HEADER_LEN,
            });
        }
        let prefixed = u32::from_be_bytes([datagram[0], datagram[1], datagram[2], datagram[3]]);
        let prefixed = prefixed as usize;
        if prefixed > self.max_frame_len {
            return Err(ProtoError::FrameTooLarge {
                len: prefixed,
                max: self.max_frame_len,
            });
        }
        if prefixed != datagram.len() - 4 {
            return Err(ProtoError::DatagramLength {
                datagram: datagram.len() - 4,
                prefixed,
            });
        }
        self.decode_body(&datagram[4..], &[])
    }

    fn decode_body(&self, body: &[u8], binding: &[u8]) -> Result<(Frame, Stamp), ProtoError> {
        let (header, payload) = read_body(body, self.key.as_ref(), binding)?;
        // Refuse unknown kinds before looking at the payload at all.
        let kind = MessageKind::from_u8(header.kind).ok_or(ProtoError::UnknownKind(header.kind))?;
        let (message, used): (Message, usize) =
            decode_payload(payload).map_err(|e| ProtoError::Payload(e.to_string()))?;
        if used != payload.len() {
            return Err(ProtoError::TrailingBytes(payload.len() - used));
        }
        if message.kind() != kind {
            return Err(ProtoError::KindMismatch {
                header: header.kind,
                payload: message.kind() as u8,
            });
        }
        let frame = Frame {
            sender: header.sender,
            message,
        };
        Ok((frame, header.stamp))
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = ProtoError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, ProtoError> {
        if src.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
        // Judge the length prefix before buffering (or reserving) a single byte of the body.
        if len > self.max_frame_len {
            return Err(ProtoError::FrameTooLarge {
                len,
                max: self.max_frame_len,
            });
        }
        if len < HEADER_LEN {
            return Err(ProtoError::FrameTooShort {
                len,
                min: HEADER_LEN,
            });
        }
        if src.len() < 4 + len {
            src.reserve(4 + len - src.len());
            return Ok(None);
        }
        src.advance(4);
        let body = src.split_to(len);
        let Some(session) = self.session.as_mut() else {
            return self.decode_body(&body, &[]).map(|(frame, _)| Some(frame));
        };
        let local = session.local;
        let expected = session.received + 1;
        let (frame, stamp) = self.decode_body(&body, &local)?;
        if stamp.seq != expected {
            return Err(ProtoError::OutOfSequence {
                expected,
                got: stamp.seq,
            });
        }
        if let Some(session) = self.session.as_mut() {
            session.received = expected;
        }
        Ok(Some(frame))
    }
}

impl Encoder<&Frame> for FrameCodec {
    type Error = ProtoError;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), ProtoError> {
        let Some(session) = self.session.as_mut() else {
            return self.encode_into(frame, dst);
        };
        let stamp = Stamp {
            boot: 0,
            seq: session.sent + 1,
        };
        let peer = session.peer;
        self.encode_stamped(frame, stamp, &peer, dst)?;
        // Only a frame actually encoded uses up a number: the peer expects no gaps.
        if let Some(session) = self.session.as_mut() {
            session.sent = stamp.seq;
        }
        Ok(())
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = ProtoError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), ProtoError> {
        <Self as Encoder<&Frame>>::encode(self, &frame, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two ends of one connection after its handshake, and an end of another connection.
    fn ends(key: Option<ClusterKey>) -> (FrameCodec, FrameCodec, FrameCodec) {
        let mut client = FrameCodec::new(1 << 20, key.clone());
        let mut server = FrameCodec::new(1 << 20, key.clone());
        let mut elsewhere = FrameCodec::new(1 << 20, key);
        client.bind_session([1; 16], [2; 16]);
        server.bind_session([2; 16], [1; 16]);
        elsewhere.bind_session([3; 16], [4; 16]);
        (client, server, elsewhere)
    }

    fn encode(codec: &mut FrameCodec, message: Message) -> BytesMut {
        let mut buf = BytesMut::new();
        codec.encode(Frame::new(5, message), &mut buf).unwrap();
        buf
    }

    #[test]
    fn a_frame_repeated_within_a_connection_is_out_of_sequence() {
        for key in [None, Some(ClusterKey::new("k"))] {
            let (mut client, mut server, _) = ends(key);
            let first = encode(&mut client, Message::Heartbeat);
            let second = encode(&mut client, Message::Leaving);
            let mut stream = first.clone();
            assert!(server.decode(&mut stream).unwrap().is_some());
            let mut repeated = first.clone();
            assert!(matches!(
                server.decode(&mut repeated),
                Err(ProtoError::OutOfSequence {
                    expected: 2,
                    got: 1
                })
            ));
            let mut next = second.clone();
            assert_eq!(
                server.decode(&mut next).unwrap().unwrap().message,
                Message::Leaving
            );
        }
    }

    #[test]
    fn a_keyed_frame_from_another_connection_fails_its_tag() {
        let (mut client, _, mut elsewhere) = ends(Some(ClusterKey::new("k")));
        let mut captured = encode(&mut client, Message::StatusRequest);
        assert!(matches!(
            elsewhere.decode(&mut captured),
            Err(ProtoError::BadAuthTag)
        ));
    }

    #[test]
    fn a_small_frame_claiming_a_huge_string_fails_on_the_claim_not_on_missing_bytes() {
        // Rejected { reason } whose length claims 32 MiB (varint 252 + u32): below the largest
        // limit, far above what a 6-byte payload may claim.
        let payload = [14u8, 252, 0, 0, 0, 2];
        let err = decode_payload::<Message>(&payload).unwrap_err();
        assert!(
            matches!(err, bincode::error::DecodeError::LimitExceeded),
            "the claim must hit the limit before anything is read or allocated: {err:?}"
        );
        // A claim a 64 KiB limit allows but the bytes do not hold fails as missing bytes.
        let payload = [14u8, 251, 0, 4];
        assert!(!matches!(
            decode_payload::<Message>(&payload).unwrap_err(),
            bincode::error::DecodeError::LimitExceeded
        ));
    }
}
