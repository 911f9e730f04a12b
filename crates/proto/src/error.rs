use thiserror::Error;

/// Everything that can be wrong with bytes on the wire. Decoding never panics: bad input always
/// ends up as one of these, and the caller closes the connection or drops the datagram.
#[derive(Debug, Error)]
pub enum ProtoError {
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge { len: usize, max: usize },
    #[error("frame of {len} bytes is shorter than its {min}-byte header")]
    FrameTooShort { len: usize, min: usize },
    #[error("datagram length {datagram} does not match its length prefix {prefixed}")]
    DatagramLength { datagram: usize, prefixed: usize },
    #[error("bad magic {0:#06x}: not a halab frame")]
    BadMagic(u16),
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u8),
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    #[error("unknown header flags {0:#04x}")]
    UnknownFlags(u8),
    #[error("header says kind {header} but payload holds kind {payload}")]
    KindMismatch { header: u8, payload: u8 },
    #[error("payload does not decode: {0}")]
    Payload(String),
    #[error("payload has {0} trailing bytes")]
    TrailingBytes(usize),
    #[error("frame carries no auth tag but a cluster key is configured")]
    MissingAuthTag,
    #[error("frame's auth tag does not match the cluster key")]
    BadAuthTag,
    #[error("payload does not encode: {0}")]
    Encode(String),
    #[error(
        "frame number {got} where {expected} was due on this connection: replayed or reordered"
    )]
    OutOfSequence { expected: u64, got: u64 },
    #[error("datagram {seq} from node {sender} was seen before or is older than the replay window")]
    ReplayedDatagram { sender: u64, seq: u64 },
    #[error(
        "datagram from node {sender} belongs to an earlier run of it (boot {boot} < {current})"
    )]
    StaleBoot {
        sender: u64,
        boot: u64,
        current: u64,
    },
    #[error("connection handshake failed: {0}")]
    Handshake(String),
}

impl ProtoError {
    /// Frames rejected for authentication are counted separately from plain garbage.
    pub fn is_auth_failure(&self) -> bool {
        matches!(self, ProtoError::MissingAuthTag | ProtoError::BadAuthTag)
    }

    /// Authentic frames refused because they were seen before or are out of date.
    pub fn is_replay(&self) -> bool {
        matches!(
            self,
            ProtoError::OutOfSequence { .. }
                | ProtoError::ReplayedDatagram { .. }
                | ProtoError::StaleBoot { .. }
        )
    }

    /// A short fixed name for the kind of error, for counters and log summaries.
    pub fn reason(&self) -> &'static str {
        match self {
            ProtoError::Io(_) => "io",
            ProtoError::FrameTooLarge { .. } => "too large",
            ProtoError::FrameTooShort { .. } => "too short",
            ProtoError::DatagramLength { .. } => "bad length",
            ProtoError::BadMagic(_) => "bad magic",
            ProtoError::UnsupportedVersion(_) => "bad version",
            ProtoError::UnknownKind(_) => "unknown kind",
            ProtoError::UnknownFlags(_) => "unknown flags",
            ProtoError::KindMismatch { .. } => "kind mismatch",
            ProtoError::Payload(_) => "bad payload",
            ProtoError::TrailingBytes(_) => "trailing bytes",
            ProtoError::MissingAuthTag => "no auth tag",
            ProtoError::BadAuthTag => "bad auth tag",
            ProtoError::Encode(_) => "encode",
            ProtoError::OutOfSequence { .. } => "out of sequence",
            ProtoError::ReplayedDatagram { .. } => "replayed",
            ProtoError::StaleBoot { .. } => "stale boot",
            ProtoError::Handshake(_) => "handshake",
        }
    }
}
