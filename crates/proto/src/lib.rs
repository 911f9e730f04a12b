//! halab's wire protocol.
//!
//! Every message between halab daemons is one [`Frame`]: a `u32` big-endian length followed by a
//! body of header (magic, version, kind, flags, sender id, optional HMAC-SHA256 tag) and a
//! bincode payload. The same bytes travel in a TCP stream ([`FrameCodec`], [`Connection`]) and as
//! exactly one frame per UDP datagram ([`udp`]). Broadcast discovery lives in [`discovery`].

mod codec;
mod connection;
pub mod discovery;
mod error;
mod frame;
mod message;
mod store;
pub mod udp;

pub use codec::{DEFAULT_MAX_FRAME_LEN, FrameCodec, decode_value, encode_value};
pub use connection::{Connection, HANDSHAKE_TIMEOUT};
pub use error::ProtoError;
pub use frame::{ClusterKey, HEADER_LEN, MAGIC, PROTOCOL_VERSION, Stamp, TAG_LEN};
pub use message::{
    Colour, DispatcherStatus, ElectionMessage, ElectionNodeStatus, Frame, LeaderView, Leadership,
    MemberStatus, Message, MessageKind, NodeId, Nonce, WorkerId, WorkerProcessStatus, WorkerRow,
    WorkerTaskStatus,
};
pub use store::{
    ClientSession, Entry, Op, Primaryship, Reply, StoreMessage, StoreNodeId, StoreNodeStatus, Write,
};
