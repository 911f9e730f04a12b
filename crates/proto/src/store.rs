//! The replicated key-value store's messages (`primary-standby`): client requests and replies,
//! replication between primary and standbys, and the node's status document.

use serde::{Deserialize, Serialize};

/// A store node's id (`--id`), the same on every restart: it names the node in the witness.
pub type StoreNodeId = u64;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StoreMessage {
    /// Client → any node. `client` + `request` name a write uniquely: a retried write (same
    /// pair) is applied once. A client numbers its requests upwards, one at a time.
    Request { client: u64, request: u64, op: Op },
    /// Node → client, answering `request`.
    Reply { request: u64, reply: Reply },
    /// Standby → primary, the first frame on the replication link: who it is and where its log
    /// ends (the last entry's sequence number and the epoch it was written in).
    Join {
        epoch: u64,
        node: StoreNodeId,
        last_seq: u64,
        last_epoch: u64,
    },
    /// Primary → standby: log entries in order (none: a keep-alive) and the sequence number
    /// through which entries are committed (acknowledged to clients).
    Append {
        epoch: u64,
        entries: Vec<Entry>,
        commit: u64,
    },
    /// Primary → standby that cannot catch up from the log: one part of the primary's state
    /// at `seq`; the standby replaces its own when `done` arrives (entries after `seq` follow as
    /// `Append`s).
    Snapshot {
        epoch: u64,
        seq: u64,
        seq_epoch: u64,
        pairs: Vec<(String, String)>,
        sessions: Vec<ClientSession>,
        done: bool,
    },
    /// Standby → primary: its log is durable through `last_seq`.
    Appended { epoch: u64, last_seq: u64 },
    /// Either way: refused, the sender of the refused frame is behind this epoch.
    Fenced { epoch: u64 },
}

impl StoreMessage {
    /// The epoch a replication message carries (client traffic has none).
    pub fn epoch(&self) -> Option<u64> {
        match self {
            StoreMessage::Join { epoch, .. }
            | StoreMessage::Append { epoch, .. }
            | StoreMessage::Snapshot { epoch, .. }
            | StoreMessage::Appended { epoch, .. }
            | StoreMessage::Fenced { epoch } => Some(*epoch),
            StoreMessage::Request { .. } | StoreMessage::Reply { .. } => None,
        }
    }
}

/// What a client asks a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// One key. From the primary (under its lease), or with `stale` from any node's own copy.
    Get {
        key: String,
        stale: bool,
    },
    Write(Write),
    /// The whole map of the node asked (seed 001's get_state), with the sequence number it is at.
    State,
    /// Admin: the node exits at once, as in a crash. Needs the node's admin token.
    Kill {
        token: String,
    },
    /// Seed 004's work: the sum of two numbers and a random one, from whichever node is asked
    /// (any healthy node serves it: what the monitor load-balances).
    Sum {
        first: i64,
        second: i64,
    },
}

/// A change to the map: what log entries carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Write {
    Set {
        key: String,
        value: String,
    },
    Delete {
        key: String,
    },
    /// Several entries at once (seed 001's update), applied together or not at all.
    Update {
        pairs: Vec<(String, String)>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// `Get`: the value, if the key is set.
    Value(Option<String>),
    /// A write is durable on the primary and on every in-sync standby, as entry `seq`.
    Written { seq: u64 },
    /// `State`: every pair, in key order, as of entry `seq`.
    State {
        seq: u64,
        pairs: Vec<(String, String)>,
    },
    /// Not the primary: ask this one (seed 003's redirect). None when no primary is known.
    Redirect {
        primary: Option<StoreNodeId>,
        addr: Option<String>,
    },
    /// Cannot answer now (no lease, stepping down, shutting down); worth retrying elsewhere or
    /// later. A write answered so may or may not have been applied: retry it with the same id.
    Unavailable { reason: String },
    /// The request itself is wrong (too large, bad token): retrying will not help.
    Invalid { reason: String },
    /// `Kill`: the node exits now.
    Killed,
    /// `Sum`: the sum, a random number, and the node that computed them.
    Summed {
        sum: i64,
        random: u32,
        node: StoreNodeId,
    },
}

/// One log entry: a write, where it stands in the log, and which client request it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: u64,
    /// The epoch of the primary that wrote it: two logs that hold the same (seq, epoch) agree
    /// on every entry up to it.
    pub epoch: u64,
    pub client: u64,
    pub request: u64,
    pub write: Write,
}

/// The last write a client had applied: a retry of it is answered, not applied again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientSession {
    pub client: u64,
    pub request: u64,
    pub seq: u64,
}

/// `primary-standby status --json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoreNodeStatus {
    pub id: StoreNodeId,
    /// primary | standby | candidate | fenced | starting
    pub role: String,
    pub epoch: u64,
    pub primary: Option<StoreNodeId>,
    /// Where clients reach the primary.
    pub primary_addr: Option<String>,
    /// The standbys the primary waits for (as the witness records them).
    pub in_sync: Vec<StoreNodeId>,
    /// The last entry in this node's log.
    pub last_seq: u64,
    /// Entries known committed (acknowledged to clients).
    pub commit_seq: u64,
    /// A standby: entries the primary has committed that this node has not yet applied.
    pub lag: u64,
    /// A primary: how long its lease (the right to acknowledge and to read) still runs.
    pub lease_ms_left: u64,
    /// ok | unreachable: whether the last visit to the witness succeeded.
    pub witness: String,
    pub alerts: Vec<String>,
    /// This node's recent times as primary (wall-clock ms): from when it could acknowledge to
    /// when its lease ran out or it stepped down (None while it lasts).
    pub primaryships: Vec<Primaryship>,
    pub keys: u64,
    /// Frames dropped for a missing or wrong auth tag, and because they did not decode.
    pub auth_failures: u64,
    pub bad_frames: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Primaryship {
    pub epoch: u64,
    pub from_ms: u64,
    pub until_ms: Option<u64>,
}
