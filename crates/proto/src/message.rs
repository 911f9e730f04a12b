//! Every message halab daemons exchange, and the status documents they report.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::store::{StoreMessage, StoreNodeStatus};

/// A worker's id, assigned by the dispatcher when it answers the worker's discovery broadcast.
pub type WorkerId = u64;

/// One decoded frame: who sent it and what it says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Frame {
    /// The sender's id: a worker's assigned id, or 0 for daemons and clients without one.
    pub sender: u64,
    pub message: Message,
}

impl Frame {
    pub fn new(sender: u64, message: Message) -> Self {
        Frame { sender, message }
    }
}

/// The message types. New variants go at the end: bincode encodes the variant index, and the
/// header's kind byte must keep meaning the same thing across versions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// Worker → broadcast: "is someone there". The nonce lets the dispatcher answer a retried
    /// broadcast with the id it already assigned instead of minting a new one.
    Discover {
        nonce: u64,
    },
    /// Dispatcher → worker (unicast reply to the discovery datagram): the worker's id and where
    /// to register.
    Welcome {
        nonce: u64,
        worker_id: WorkerId,
        dispatcher: SocketAddr,
    },
    /// Worker → dispatcher, first frame on the TCP connection; the sender field is the worker id.
    /// The heartbeat interval tells the dispatcher when the worker's next frame is due.
    Register {
        weight: u32,
        heartbeat_ms: u32,
    },
    /// Dispatcher → worker: registration accepted.
    Registered {
        worker_id: WorkerId,
    },
    /// Dispatcher → worker: "status check". `request` numbers it; the answer echoes it, so an
    /// answer that comes after the dispatcher gave up is never taken for a later one's.
    StatusCheck {
        worker_id: WorkerId,
        request: u64,
    },
    /// Worker → dispatcher: answer to status check `request`, "activated" or "not activated".
    Status {
        activated: bool,
        request: u64,
    },
    /// Dispatcher → worker: "activate".
    Activate {
        worker_id: WorkerId,
        request: u64,
    },
    /// Worker → dispatcher: "worker activated", in answer to activation `request`.
    WorkerActivated {
        request: u64,
    },
    /// Worker → dispatcher: one of the reports an active worker sends; `activated: false` means
    /// this report is the last and the worker has deactivated.
    Report {
        activated: bool,
    },
    /// Worker → dispatcher while idle: still alive.
    Heartbeat,
    /// Worker → dispatcher: shutting down on purpose, forget me now.
    Leaving,
    /// Anyone → daemon: report your state (the `status` and `healthcheck` subcommands).
    StatusRequest,
    DispatcherStatus(DispatcherStatus),
    WorkerStatus(WorkerProcessStatus),
    /// Daemon → peer: your request was refused, and why (the connection is closed after it).
    Rejected {
        reason: String,
    },
    /// The leader election's protocol (seed 002): discovery, bully election, heartbeats,
    /// registration. Every one carries the sender's term.
    Election(ElectionMessage),
    ElectionStatus(ElectionNodeStatus),
    /// First frame each way on every TCP connection: a fresh random nonce. Every later frame's
    /// tag covers the receiver's nonce and a sequence number, so a frame recorded on one
    /// connection is refused on any other, and one replayed within it is out of sequence.
    Handshake {
        nonce: Nonce,
    },
    /// Anyone → dispatcher: its status with the table rows from `offset` (in id order), at
    /// most `limit` of them. A plain `StatusRequest` gets the first rows only, so that a table
    /// of any size is read page by page without a frame above the size limit.
    StatusPage {
        offset: u64,
        limit: u32,
    },
    /// Operator → election leader (`leader-election remove-member`): take the member `id` out
    /// of the membership, as a change of its own. Answered with the leader's status, or
    /// `Rejected` (not the leader, not a member, another change in progress).
    RemoveMember {
        id: NodeId,
    },
    /// The replicated store (`primary-standby`): client requests and replies, replication.
    Store(StoreMessage),
    /// Boxed: the largest status would otherwise make every `Message` that large.
    StoreStatus(Box<StoreNodeStatus>),
}

/// A TCP connection's random nonce (see [`Message::Handshake`]).
pub type Nonce = [u8; 16];

/// A node id of the leader election: by default the node's IPv4 address as a number.
pub type NodeId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Colour {
    Green,
    Red,
}

/// What a leader announces: its membership (for quorums) and the colour of every live member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaderView {
    /// Where the leader takes registrations (TCP), on the datagram's source address.
    pub tcp_port: u16,
    /// The agreed membership: majorities are counted over it.
    pub membership: Vec<NodeId>,
    /// Bumped on every membership change (one node at a time).
    pub version: u64,
    /// Live members and their colours.
    pub colours: Vec<(NodeId, Colour)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ElectionMessage {
    /// Broadcast in state init: "I am here" (the seed's discovery).
    Hello { term: u64 },
    /// Bully: the sender runs for leader in `term` and asks for votes; `version` is the
    /// membership version it counts its majority over (voters that know a newer one refuse).
    Election { term: u64, version: u64 },
    /// Bully: to `candidate`, from a higher node that is alive and will run itself.
    Answer { term: u64, candidate: NodeId },
    /// To `candidate`: the sender's one vote in `term`.
    Vote { term: u64, candidate: NodeId },
    /// Bully: the winner announces itself (its heartbeat number 0).
    Coordinator {
        term: u64,
        seq: u64,
        view: LeaderView,
    },
    /// The leader, every heartbeat interval; `seq` numbers the heartbeats of one leader.
    Heartbeat {
        term: u64,
        seq: u64,
        view: LeaderView,
    },
    /// Follower → everyone (broadcast, so peers know who is alive), for `leader`, echoing the
    /// heartbeat it answers: the leader counts the contact from when it *sent* that heartbeat,
    /// so acks delayed in a paused container extend nothing.
    Ack {
        term: u64,
        seq: u64,
        leader: NodeId,
        version: u64,
    },
    /// Follower → leader over TCP: register me. `seq` is the leader's latest heartbeat the
    /// follower heard: the leader dates this contact by when it sent that one, as it dates an
    /// ack. The connection stays open afterwards as the follower's link (see the election).
    Join { term: u64, seq: u64 },
    /// Leader → follower over TCP: you are a member, with this colour.
    Joined {
        term: u64,
        colour: Colour,
        view: LeaderView,
    },
    /// Pre-vote (Raft's): "would you vote for me in `term`?", asked before a candidate raises
    /// its term. Nobody changes its term or vote for it, so a node that cannot win (one that
    /// alone stopped hearing a live leader) disturbs nobody.
    PreVote { term: u64, version: u64 },
    /// To `candidate`: the sender would vote for it in `term` (it hears no leader).
    PreVoteGranted { term: u64, candidate: NodeId },
}

impl ElectionMessage {
    pub fn term(&self) -> u64 {
        match self {
            ElectionMessage::Hello { term }
            | ElectionMessage::Election { term, .. }
            | ElectionMessage::Answer { term, .. }
            | ElectionMessage::Vote { term, .. }
            | ElectionMessage::Coordinator { term, .. }
            | ElectionMessage::Heartbeat { term, .. }
            | ElectionMessage::Ack { term, .. }
            | ElectionMessage::Join { term, .. }
            | ElectionMessage::Joined { term, .. }
            | ElectionMessage::PreVote { term, .. }
            | ElectionMessage::PreVoteGranted { term, .. } => *term,
        }
    }
}

/// `leader-election status --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ElectionNodeStatus {
    pub id: NodeId,
    /// init | candidate | leader | follower
    pub state: String,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub colour: Option<Colour>,
    /// Members as this node knows them, with colours (the leader's view is authoritative).
    pub members: Vec<MemberStatus>,
    /// The agreed membership that majorities are counted over.
    pub membership: Vec<NodeId>,
    /// Votes (acks, for a leader) needed for a majority of that membership.
    pub quorum: u32,
    /// This node's recent terms as leader, wall-clock milliseconds since the Unix epoch: lets
    /// an observer tell exactly whether two leaderships ever overlapped.
    pub leaderships: Vec<Leadership>,
    /// Frames dropped for a missing or wrong auth tag, since start.
    pub auth_failures: u64,
    /// Frames dropped because they did not decode, since start.
    pub bad_frames: u64,
    /// Authentic frames dropped as replays (seen before, or out of date), since start.
    pub replayed: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberStatus {
    pub id: NodeId,
    pub colour: Option<Colour>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Leadership {
    pub term: u64,
    pub from_ms: u64,
    /// None while it lasts.
    pub until_ms: Option<u64>,
}

/// The header's kind byte for each [`Message`] variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageKind {
    Discover = 1,
    Welcome = 2,
    Register = 3,
    Registered = 4,
    StatusCheck = 5,
    Status = 6,
    Activate = 7,
    WorkerActivated = 8,
    Report = 9,
    Heartbeat = 10,
    Leaving = 11,
    StatusRequest = 12,
    DispatcherStatus = 13,
    WorkerStatus = 14,
    Rejected = 15,
    Election = 16,
    ElectionStatus = 17,
    Handshake = 18,
    StatusPage = 19,
    RemoveMember = 20,
    Store = 21,
    StoreStatus = 22,
}

impl MessageKind {
    pub const ALL: [MessageKind; 22] = [
        MessageKind::Discover,
        MessageKind::Welcome,
        MessageKind::Register,
        MessageKind::Registered,
        MessageKind::StatusCheck,
        MessageKind::Status,
        MessageKind::Activate,
        MessageKind::WorkerActivated,
        MessageKind::Report,
        MessageKind::Heartbeat,
        MessageKind::Leaving,
        MessageKind::StatusRequest,
        MessageKind::DispatcherStatus,
        MessageKind::WorkerStatus,
        MessageKind::Rejected,
        MessageKind::Election,
        MessageKind::ElectionStatus,
        MessageKind::Handshake,
        MessageKind::StatusPage,
        MessageKind::RemoveMember,
        MessageKind::Store,
        MessageKind::StoreStatus,
    ];

    pub fn from_u8(byte: u8) -> Option<MessageKind> {
        MessageKind::ALL.into_iter().find(|k| *k as u8 == byte)
    }
}

impl Message {
    pub fn kind(&self) -> MessageKind {
        match self {
            Message::Discover { .. } => MessageKind::Discover,
            Message::Welcome { .. } => MessageKind::Welcome,
            Message::Register { .. } => MessageKind::Register,
            Message::Registered { .. } => MessageKind::Registered,
            Message::StatusCheck { .. } => MessageKind::StatusCheck,
            Message::Status { .. } => MessageKind::Status,
            Message::Activate { .. } => MessageKind::Activate,
            Message::WorkerActivated { .. } => MessageKind::WorkerActivated,
            Message::Report { .. } => MessageKind::Report,
            Message::Heartbeat => MessageKind::Heartbeat,
            Message::Leaving => MessageKind::Leaving,
            Message::StatusRequest => MessageKind::StatusRequest,
            Message::DispatcherStatus(_) => MessageKind::DispatcherStatus,
            Message::WorkerStatus(_) => MessageKind::WorkerStatus,
            Message::Rejected { .. } => MessageKind::Rejected,
            Message::Election(_) => MessageKind::Election,
            Message::ElectionStatus(_) => MessageKind::ElectionStatus,
            Message::Handshake { .. } => MessageKind::Handshake,
            Message::StatusPage { .. } => MessageKind::StatusPage,
            Message::RemoveMember { .. } => MessageKind::RemoveMember,
            Message::Store(_) => MessageKind::Store,
            Message::StoreStatus(_) => MessageKind::StoreStatus,
        }
    }
}

/// `dispatcher status --json`: the dispatcher's table and how fair its activations have been.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DispatcherStatus {
    /// Registered workers, all of them.
    pub worker_count: u64,
    /// The rows asked for (in id order): the first ones, or one page.
    pub workers: Vec<WorkerRow>,
    /// Largest |activations − weighted share| over live workers.
    pub fairness_gap: f64,
    /// The gap the scheduler guarantees for the current fleet and settings.
    pub fairness_bound: f64,
    pub total_activations: u64,
    pub active: u32,
    pub max_active: u32,
    pub uptime_ms: u64,
    /// Frames dropped because their auth tag was missing or wrong.
    pub auth_failures: u64,
    /// Frames and datagrams dropped because they did not decode.
    pub bad_frames: u64,
    /// Authentic frames dropped because they were seen before or are out of date (replays).
    pub replayed: u64,
}

/// One row of the dispatcher's table (seed 000's columns).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerRow {
    pub id: WorkerId,
    pub addr: String,
    pub weight: u32,
    pub activations: u64,
    pub active: bool,
    pub available: bool,
    pub answers_since_activation: u32,
    /// Milliseconds since the last report, or -1 when there has been none since deactivation.
    pub last_comm_ms_ago: i64,
    /// Milliseconds since any frame at all (heartbeats included): what removal is judged by.
    pub last_heard_ms_ago: u64,
    /// The worker's weighted share of the activations made while it was registered.
    pub share: f64,
}

/// `worker status --json`: the workers one worker process runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerProcessStatus {
    pub workers: Vec<WorkerTaskStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerTaskStatus {
    /// Position of this worker within its process (0..count).
    pub index: u32,
    /// The id the dispatcher assigned, once registered.
    pub id: Option<WorkerId>,
    pub weight: u32,
    /// discovering | registered | active | terminated
    pub state: String,
    pub dispatcher: Option<String>,
    pub activations: u64,
    pub registrations: u64,
}
