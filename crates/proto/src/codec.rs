//! Length-prefixed framing for TCP streams ([`FrameCodec`] as a tokio-util codec) and the same
//! bytes as single UDP datagrams ([`FrameCodec::encode_datagram`], [`FrameCodec::decode_datagram`]).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::error::ProtoError;
use crate::frame::{ClusterKey, HEADER_LEN, read_body, write_body};
use crate::message::{Frame, Message, MessageKind};

/// Default largest frame body accepted or sent: 1 MiB.
pub const DEFAULT_MAX_FRAME_LEN: usize = 1 << 20;

/// Bincode's own guard on lengths claimed inside a payload. A payload is never longer than its
/// frame, so any claim above this is garbage and fails without allocating.
const BINCODE_LIMIT: usize = 64 << 20;

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<BINCODE_LIMIT>()
}

/// Encodes and decodes [`Frame`]s. Clone one per connection; it holds no stream state.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    max_frame_len: usize,
    key: Option<ClusterKey>,
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec::new(DEFAULT_MAX_FRAME_LEN, None)
    }
}

impl FrameCodec {
    pub fn new(max_frame_len: usize, key: Option<ClusterKey>) -> Self {
        FrameCodec { max_frame_len, key }
    }

    pub fn is_keyed(&self) -> bool {
        self.key.is_some()
    }

    /// Encodes one frame, length prefix included, into `dst`.
    pub fn encode_into(&self, frame: &Frame, dst: &mut BytesMut) -> Result<(), ProtoError> {
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
        write_body(
            dst,
            frame.message.kind() as u8,
            frame.sender,
            &payload,
            self.key.as_ref(),
        );
        Ok(())
    }

    /// One whole frame as one UDP datagram.
    pub fn encode_datagram(&self, frame: &Frame) -> Result<Bytes, ProtoError> {
        let mut buf = BytesMut::new();
        self.encode_into(frame, &mut buf)?;
        Ok(buf.freeze())
    }

    /// Decodes a datagram that must hold exactly one frame.
    pub fn decode_datagram(&self, datagram: &[u8]) -> Result<Frame, ProtoError> {
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
        self.decode_body(&datagram[4..])
    }

    fn decode_body(&self, body: &[u8]) -> Result<Frame, ProtoError> {
        let (header, payload) = read_body(body, self.key.as_ref())?;
        // Refuse unknown kinds before looking at the payload at all.
        let kind = MessageKind::from_u8(header.kind).ok_or(ProtoError::UnknownKind(header.kind))?;
        let (message, used): (Message, usize) =
            bincode::serde::decode_from_slice(payload, bincode_config())
                .map_err(|e| ProtoError::Payload(e.to_string()))?;
        if used != payload.len() {
            return Err(ProtoError::TrailingBytes(payload.len() - used));
        }
        if message.kind() != kind {
            return Err(ProtoError::KindMismatch {
                header: header.kind,
                payload: message.kind() as u8,
            });
        }
        Ok(Frame {
            sender: header.sender,
            message,
        })
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
        self.decode_body(&body).map(Some)
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = ProtoError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), ProtoError> {
        self.encode_into(&frame, dst)
    }
}

impl Encoder<&Frame> for FrameCodec {
    type Error = ProtoError;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), ProtoError> {
        self.encode_into(frame, dst)
    }
}
