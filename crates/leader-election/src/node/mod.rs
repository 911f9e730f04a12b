//! The election as a sans-IO state machine: [`Node::handle`] takes an input (a tick, a datagram,
//! a registration) at a given instant and returns what to send. No sockets, no clocks, no
//! randomness inside, so a simulation can drive many nodes through partitions deterministically.
//!
//! The protocol, in short:
//! - **init**: broadcast `Hello` and collect peers until none is new for the settle timeout
//!   (the seed's NEW_CLIENT_TIMEOUT). A leader's heartbeat heard meanwhile makes us its follower.
//! - **pre-vote** (Raft's): before raising its term a candidate asks `PreVote`; only nodes that
//!   hear no leader say yes, and nobody's term moves. A node that alone stopped hearing a live
//!   leader (a one-way partition, a resumed process) is refused and disturbs nobody.
//! - **bully election**: with a majority's pre-votes, a candidate bumps its term and broadcasts
//!   `Election`. A higher node that hears it replies `Answer` and runs itself; a lower one votes
//!   (one vote per term). A candidate with votes from a majority of the *last agreed
//!   membership* (never of whoever it can currently hear) wins and broadcasts `Coordinator`. A
//!   node only runs when it has heard from a majority of that membership lately.
//! - **terms** (as in Raft): nobody follows a lower term; a leader that sees a higher one steps
//!   down; each node votes once per term.
//! - **durable state** (as in Raft): term, vote and the agreed membership survive a restart
//!   ([`Durable`], saved by the driver before anything is sent), so a restarted node neither
//!   votes twice in a term nor counts majorities over a membership it has forgotten.
//! - **membership changes** (as in Raft's single-server changes): the leader adds or removes one
//!   node at a time, and only once a majority of the current membership acked its version; a
//!   voter refuses candidates with an older membership version or outside its membership. So
//!   nodes left behind by a change can never form a majority of the membership they remember.
//!   Before any membership is agreed, majorities count at least the minimum cluster size.
//! - **leader**: broadcasts `Heartbeat` with the membership and colours; followers `Ack` each
//!   one. The leader leads only while acks from a majority arrived within the lease; the lease is
//!   shorter than the followers' leader timeout, so an old leader has stepped down before anyone
//!   can elect a new one. With a majority reachable it removes members silent for the member
//!   timeout (never below the minimum cluster size) and recolours.
//! - **follower**: registers over TCP (`Join`) to get its colour and keeps that connection
//!   open as its *link* to the leader; when heartbeats stop for the leader timeout, or the
//!   leader's end closes the link (a killed process's kernel does that at once; a live leader
//!   only after it stopped counting our acks, [`Node::link_lost`]), it starts an election.
//!   While it hears a leader it refuses pre-votes and ignores elections, so a node that cannot
//!   hear the leader cannot depose it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use proto::{Colour, ElectionMessage, LeaderView, NodeId};
use tokio::time::Instant;

mod durable;
mod membership;
pub use durable::{AgreedView, Durable};

/// How many leaderships a node remembers for its status.
const LEADERSHIPS_KEPT: usize = 16;
/// How many sent heartbeats a leader remembers, to date the acks that echo them.
const HEARTBEATS_KEPT: usize = 64;

/// The protocol's clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Leader heartbeat (and init Hello) interval.
    pub heartbeat: Duration,
    /// A leader leads only while a majority acked within this; must be < `leader_timeout`.
    pub lease: Duration,
    /// A follower that hears no heartbeat for this long starts an election.
    pub leader_timeout: Duration,
    /// A member silent for this long is removed by the leader (when a majority is reachable).
    pub member_timeout: Duration,
    /// Init ends when no new peer appeared for this long (NEW_CLIENT_TIMEOUT).
    pub settle: Duration,
    /// How long a candidate waits for votes before trying again.
    pub election: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            heartbeat: Duration::from_millis(100),
            lease: Duration::from_millis(450),
            leader_timeout: Duration::from_millis(600),
            member_timeout: Duration::from_millis(1500),
            settle: Duration::from_millis(2000),
            election: Duration::from_millis(500),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    pub id: NodeId,
    /// Our TCP port, announced in heartbeats for followers to register on.
    pub tcp_port: u16,
    /// Majorities are never counted over fewer members than this (the seed's minimum is 3).
    pub min_cluster_size: usize,
    pub timing: Timing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Init,
    Candidate,
    Leader,
    Follower,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Init => "init",
            Role::Candidate => "candidate",
            Role::Leader => "leader",
            Role::Follower => "follower",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Tick,
    Datagram {
        from: SocketAddr,
        sender: NodeId,
        message: ElectionMessage,
    },
    /// Our registration with `leader` was answered.
    Joined {
        leader: NodeId,
        term: u64,
        view: LeaderView,
    },
    /// Our registration with `leader` failed; try again later.
    JoinFailed {
        leader: NodeId,
    },
    /// The registration connection (the *link*) to `leader` was closed by its end. A leader
    /// closes a link only after dropping our acks from its lease, and a dead process's links
    /// are closed by its kernel: either way it holds no lease that counts us, so we need not
    /// wait out the leader timeout. (Silence, by contrast, proves nothing.)
    LeaderLinkClosed {
        leader: NodeId,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Broadcast(ElectionMessage),
    SendTo(SocketAddr, ElectionMessage),
    /// Register with the leader over TCP (`Join`), then feed the answer back as an input and
    /// keep the connection open as the link to the leader.
    Join {
        leader: NodeId,
        addr: SocketAddr,
        term: u64,
        seq: u64,
    },
}

#[derive(Debug, Clone, PartialEq)]
struct LeaderInfo {
    id: NodeId,
    udp: SocketAddr,
    tcp: SocketAddr,
    heard: Instant,
}

/// A candidate's `Election` or `PreVote`, as received at `at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Campaign {
    /// A pre-vote rather than an election.
    pre: bool,
    at: Instant,
    from: SocketAddr,
    candidate: NodeId,
    term: u64,
    version: u64,
}

/// One term as leader: from when it won to when its lease ran out or it stepped down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tenure {
    pub term: u64,
    pub from: Instant,
    pub until: Option<Instant>,
}

#[derive(Debug)]
pub struct Node {
    config: NodeConfig,
    role: Role,
    term: u64,
    voted: Option<(u64, NodeId)>,
    /// Everyone heard from, and where.
    peers: BTreeMap<NodeId, (SocketAddr, Instant)>,
    /// The last agreed membership: majorities are counted over it.
    membership: BTreeSet<NodeId>,
    /// False until a leader's membership was adopted (or we won): until then every node heard
    /// joins the bootstrap membership, so sides discovered apart merge once they meet.
    agreed: bool,
    /// The membership's version: bumped by the leader on every change.
    version: u64,
    /// The term of the leader whose view we hold: views are ordered by (term, version), so a
    /// delayed or reordered datagram can never roll the membership back.
    view_term: u64,
    /// Leader: the membership version each member last acked.
    acked_versions: BTreeMap<NodeId, u64>,
    colours: BTreeMap<NodeId, Colour>,
    leader: Option<LeaderInfo>,
    last_new_peer: Instant,
    last_broadcast: Option<Instant>,
    /// Candidate: votes in the current term; `None` when not campaigning.
    votes: Option<BTreeSet<NodeId>>,
    /// Candidate before raising its term: the term it asks about and who would vote for it.
    prevotes: Option<(u64, BTreeSet<NodeId>)>,
    next_election: Option<Instant>,
    /// Leader: for each member, when we sent the latest heartbeat (or election) it answered.
    acks: BTreeMap<NodeId, Instant>,
    /// Leader: the heartbeats sent lately, by number.
    sent: VecDeque<(u64, Instant)>,
    next_seq: u64,
    tenures: Vec<Tenure>,
    /// Leader: when it won; it leads (holds a lease) only once a majority acked.
    elected_at: Option<Instant>,
    join_sent: Option<Instant>,
    /// Follower: the leader our registration connection is open to.
    linked: Option<NodeId>,
    /// Follower: the number of the latest heartbeat heard from the leader.
    heard_seq: u64,
    /// Follower: the latest campaign ignored because we still heard the leader. If our link
    /// to it closes moments later, we answer it then instead of making the candidate wait out
    /// its election timeout.
    ignored_campaign: Option<Campaign>,
    started: Instant,
}

impl Node {
    pub fn new(config: NodeConfig, now: Instant) -> Self {
        Node {
            config,
            role: Role::Init,
            term: 0,
            voted: None,
            peers: BTreeMap::new(),
            membership: BTreeSet::new(),
            agreed: false,
            version: 0,
            view_term: 0,
            acked_versions: BTreeMap::new(),
            colours: BTreeMap::new(),
            leader: None,
            last_new_peer: now,
            last_broadcast: None,
            votes: None,
            prevotes: None,
            next_election: None,
            acks: BTreeMap::new(),
            sent: VecDeque::new(),
            next_seq: 0,
            tenures: Vec::new(),
            elected_at: None,
            join_sent: None,
            linked: None,
            heard_seq: 0,
            ignored_campaign: None,
            started: now,
        }
    }

    pub fn id(&self) -> NodeId {
        self.config.id
    }

    pub fn term(&self) -> u64 {
        self.term
    }

    /// The role as of `now`: a leader whose lease ran out is not a leader, even before its next
    /// tick notices.
    pub fn role(&self, now: Instant) -> Role {
        if self.role == Role::Leader && !self.lease_valid(now) {
            Role::Candidate
        } else {
            self.role
        }
    }

    pub fn is_leader(&self, now: Instant) -> bool {
        self.role(now) == Role::Leader
    }

    /// The leader this node follows (itself when leading), if it is current.
    pub fn leader(&self, now: Instant) -> Option<NodeId> {
        match self.role(now) {
            Role::Leader => Some(self.id()),
            Role::Follower => self.leader.as_ref().map(|l| l.id),
            _ => None,
        }
    }

    pub fn colour(&self) -> Option<Colour> {
        self.colours.get(&self.id()).copied()
    }

    pub fn colours(&self) -> &BTreeMap<NodeId, Colour> {
        &self.colours
    }

    pub fn membership(&self) -> &BTreeSet<NodeId> {
        &self.membership
    }

    pub fn tenures(&self) -> &[Tenure] {
        &self.tenures
    }

    /// The tenures as an observer must see them `now`: one whose lease has run out ended
    /// then, even if this node has not noticed yet (a leader resumed after a pause may answer
    /// a status request before its first tick; its lapsed leadership must not look open).
    pub fn tenures_as_of(&self, now: Instant) -> Vec<Tenure> {
        let mut tenures = self.tenures.clone();
        if self.role == Role::Leader && !self.lease_valid(now) {
            if let Some(open) = tenures.last_mut().filter(|t| t.until.is_none()) {
                open.until = Some(self.lease_deadline(now).min(now).max(open.from));
            }
        }
        tenures
    }

    /// Votes needed: a majority of the agreed membership (which changes one member at a time,
    /// each change acked by a majority, and is saved across restarts). Before any membership
    /// was agreed, a majority of at least the minimum cluster size: a partition at first start
    /// cannot be told from a small cluster otherwise.
    pub fn quorum(&self) -> usize {
        if self.agreed {
            self.membership.len() / 2 + 1
        } else {
            self.membership.len().max(self.config.min_cluster_size) / 2 + 1
        }
    }

    pub fn handle(&mut self, now: Instant, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        if self.step_down_if_lease_ran_out(now) {
            // A leader's tick ends there; any other input is handled as the candidate it is.
            if input == Input::Tick {
                return out;
            }
        }
        match input {
            Input::Tick => self.tick(now, &mut out),
            Input::Datagram {
                from,
                sender,
                message,
            } if sender != self.id() => self.receive(now, from, sender, message, &mut out),
            Input::Datagram { .. } => {} // our own broadcast coming back
            Input::Joined { leader, term, view } => {
                if self.leader.as_ref().is_some_and(|l| l.id == leader) {
                    self.term = self.term.max(term);
                    self.adopt_view(term, &view);
                    self.join_sent = None;
                    self.linked = Some(leader);
                    tracing::info!(leader, colour = ?self.colour(), "registered with leader {leader}");
                }
            }
            Input::JoinFailed { leader } => {
                tracing::debug!(leader, "registration failed; will retry");
                self.join_sent = None;
            }
            Input::LeaderLinkClosed { leader } => {
                if self.linked == Some(leader) {
                    self.linked = None;
                }
                let following = self.role == Role::Follower
                    && self.leader.as_ref().is_some_and(|l| l.id == leader);
                if following {
                    self.leader_lost(now, "it closed our link", &mut out);
                    let recent = self
                        .ignored_campaign
                        .take()
                        .filter(|c| now.duration_since(c.at) <= self.config.timing.election);
                    if let Some(campaign) = recent {
                        self.on_campaign(
                            now,
                            Campaign {
                                at: now,
                                ..campaign
                            },
                            &mut out,
                        );
                    }
                }
            }
        }
        out
    }

    fn tick(&mut self, now: Instant, out: &mut Vec<Output>) {
        self.forget_silent_peers(now);
        match self.role {
            Role::Init => {
                if self.due_broadcast(now) {
                    out.push(Output::Broadcast(ElectionMessage::Hello {
                        term: self.term,
                    }));
                }
                if now.duration_since(self.last_new_peer) >= self.config.timing.settle {
                    self.end_discovery(now, out);
                }
            }
            Role::Follower => {
                let silent = self.leader.as_ref().map(|l| now.duration_since(l.heard));
                if silent.is_none_or(|s| s > self.config.timing.leader_timeout + self.jitter()) {
                    let why = match silent {
                        Some(s) => format!("silent for {} ms", s.as_millis()),
                        None => "none known".to_string(),
                    };
                    self.leader_lost(now, &why, out);
                } else {
                    self.join_if_needed(now, out);
                }
            }
            Role::Candidate => {
                // Keep saying we are here, so that peers can count us as reachable.
                if self.due_broadcast(now) {
                    out.push(Output::Broadcast(ElectionMessage::Hello {
                        term: self.term,
                    }));
                }
                if self.next_election.is_none_or(|at| now >= at) {
                    self.start_election(now, out);
                }
            }
            Role::Leader => {
                self.note_lease(now);
                self.remove_silent_members(now);
                self.recolour(now);
                if self.due_broadcast(now) {
                    let seq = self.record_heartbeat(now);
                    out.push(Output::Broadcast(ElectionMessage::Heartbeat {
                        term: self.term,
                        seq,
                        view: self.view(),
                    }));
                }
            }
        }
    }

    fn receive(
        &mut self,
        now: Instant,
        from: SocketAddr,
        sender: NodeId,
        message: ElectionMessage,
        out: &mut Vec<Output>,
    ) {
        if self.peers.insert(sender, (from, now)).is_none() {
            if self.role == Role::Init {
                tracing::info!(peer = sender, %from, "discovered node {sender}");
                self.last_new_peer = now;
            }
            if !self.agreed && !self.membership.is_empty() {
                self.membership.insert(sender);
            }
        }
        let term = message.term();
        let election = matches!(message, ElectionMessage::Election { .. });
        // Pre-votes ask about a term nobody is in yet: they move no one's term.
        let pre_vote = matches!(
            message,
            ElectionMessage::PreVote { .. } | ElectionMessage::PreVoteGranted { .. }
        );
        // A higher term wins, except an election while we follow a live leader: ignoring those
        // keeps a node that cannot hear the leader from deposing it.
        if term > self.term && !pre_vote && !(election && self.hears_leader(now)) {
            if self.role == Role::Leader {
                let ended = self.lease_end(now);
                self.step_down(
                    now,
                    ended,
                    &format!("node {sender} is in the higher term {term}"),
                );
            }
            self.term = term;
            self.votes = None;
            self.prevotes = None;
        }
        match message {
            ElectionMessage::Hello { .. }
            | ElectionMessage::Join { .. }
            | ElectionMessage::Joined { .. } => {}
            ElectionMessage::Election { term, version }
            | ElectionMessage::PreVote { term, version } => {
                let campaign = Campaign {
                    pre: matches!(message, ElectionMessage::PreVote { .. }),
                    at: now,
                    from,
                    candidate: sender,
                    term,
                    version,
                };
                self.on_campaign(now, campaign, out);
            }
            ElectionMessage::PreVoteGranted { term, candidate } => {
                let member = self.membership.contains(&sender);
                if candidate != self.id() || self.role != Role::Candidate || !member {
                    return;
                }
                let asked = self.term + 1;
                if let Some((t, grants)) = self.prevotes.as_mut() {
                    if *t == term && term == asked {
                        grants.insert(sender);
                        if grants.len() >= self.quorum() {
                            self.campaign(now, out);
                        }
                    }
                }
            }
            ElectionMessage::Answer { term, candidate } => {
                // A higher node outside our agreed membership cannot win our voters: its
                // answer would only stop the one who can.
                let contender = !self.agreed || self.membership.contains(&sender);
                if candidate == self.id()
                    && term == self.term
                    && self.role == Role::Candidate
                    && self.votes.is_some()
                    && contender
                {
                    tracing::info!(
                        higher = sender,
                        term,
                        "node {sender} is higher and alive; waiting for its coordinator message"
                    );
                    self.votes = None;
                    self.next_election = Some(
                        now + self.config.timing.leader_timeout
                            + self.rank_delay(now)
                            + self.jitter(),
                    );
                }
            }
            ElectionMessage::Vote { term, candidate } => {
                // Only members' votes count: a node that restarted with a partial view must not
                // win with votes from outside the membership it counts its majority over.
                let member = self.membership.contains(&sender);
                if candidate == self.id()
                    && term == self.term
                    && self.role == Role::Candidate
                    && member
                {
                    if let Some(votes) = self.votes.as_mut() {
                        // A vote is no lease: the voter may vote again in a higher term at once.
                        // The lease starts with acks to our heartbeats, sent only by followers.
                        votes.insert(sender);
                        if votes.len() >= self.quorum() {
                            self.become_leader(now, out);
                        }
                    }
                }
            }
            ElectionMessage::Coordinator { term, seq, view }
            | ElectionMessage::Heartbeat { term, seq, view } => {
                self.on_heartbeat(now, from, sender, term, seq, view, out)
            }
            ElectionMessage::Ack {
                term,
                seq,
                leader,
                version,
            } => {
                if self.role == Role::Leader && leader == self.id() && term == self.term {
                    let acked = self.acked_versions.entry(sender).or_insert(version);
                    *acked = (*acked).max(version);
                    let sent_at = self.sent.iter().find(|(s, _)| *s == seq).map(|(_, at)| *at);
                    if let (true, Some(sent_at)) = (self.membership.contains(&sender), sent_at) {
                        let latest = self.acks.entry(sender).or_insert(sent_at);
                        *latest = (*latest).max(sent_at);
                        self.note_lease(now);
                    }
                }
            }
        }
    }

    /// An election or pre-vote: settled by a live leadership if there is one (see
    /// [`Node::deflect`]), otherwise voted on.
    fn on_campaign(&mut self, now: Instant, campaign: Campaign, out: &mut Vec<Output>) {
        if self.deflect(now, campaign, out) {
            return;
        }
        let Campaign {
            from,
            candidate,
            term,
            version,
            ..
        } = campaign;
        if campaign.pre {
            self.on_pre_vote(from, candidate, term, version, out);
        } else {
            self.on_election(now, from, candidate, term, version, out);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_election(
        &mut self,
        now: Instant,
        from: SocketAddr,
        candidate: NodeId,
        term: u64,
        version: u64,
        out: &mut Vec<Output>,
    ) {
        if term < self.term {
            return;
        }
        // A restarted node has forgotten whom it acked: until any lease it fed has run out
        // (the leader timeout is longer), it neither votes nor runs (Raft persists its vote for
        // this; we wait instead).
        if now.duration_since(self.started) < self.config.timing.leader_timeout {
            tracing::debug!(candidate, term, "not voting yet: just started");
            return;
        }
        // The bully: a higher node takes over, but only if its membership is as new as the
        // candidate's; an out-of-date node could not win and votes instead.
        if self.id() > candidate && self.version >= version && self.could_win() {
            out.push(Output::SendTo(
                from,
                ElectionMessage::Answer { term, candidate },
            ));
            if !self.campaigning() {
                tracing::info!(
                    candidate,
                    term,
                    "lower node {candidate} runs; answering and running myself"
                );
                self.start_election(now, out);
            }
            return;
        }
        let stale =
            version < self.version || (self.agreed && !self.membership.contains(&candidate));
        if stale {
            tracing::debug!(
                candidate,
                version,
                "refusing a vote: the candidate's membership is out of date"
            );
            return;
        }
        if self.voted.is_none_or(|(t, c)| t < term || c == candidate) {
            self.voted = Some((term, candidate));
            if self.campaigning() {
                // A higher node runs in our term: stand down for it.
                self.votes = None;
                self.prevotes = None;
                self.next_election = Some(
                    now + self.config.timing.leader_timeout + self.rank_delay(now) + self.jitter(),
                );
            }
            if self.role == Role::Init || self.role == Role::Follower {
                self.role = Role::Candidate;
                self.next_election = Some(
                    now + self.config.timing.leader_timeout + self.rank_delay(now) + self.jitter(),
                );
            }
            tracing::info!(candidate, term, "voting for node {candidate}");
            out.push(Output::SendTo(
                from,
                ElectionMessage::Vote { term, candidate },
            ));
        }
    }

    /// A campaign (an election or a pre-vote) that a live leadership settles: a leader answers
    /// with a heartbeat (same or lower term: a higher one made it step down), so the candidate
    /// follows it; a follower that hears its leader ignores it, remembering it in case its link
    /// to the leader closes moments later. Whether it was settled so.
    fn deflect(&mut self, now: Instant, campaign: Campaign, out: &mut Vec<Output>) -> bool {
        if self.is_leader(now) {
            let seq = self.record_heartbeat(now);
            out.push(Output::SendTo(
                campaign.from,
                ElectionMessage::Heartbeat {
                    term: self.term,
                    seq,
                    view: self.view(),
                },
            ));
            return true;
        }
        if self.hears_leader(now) {
            tracing::debug!(
                candidate = campaign.candidate,
                term = campaign.term,
                pre_vote = campaign.pre,
                "ignoring a campaign while the leader is alive"
            );
            self.ignored_campaign = Some(campaign);
            return true;
        }
        false
    }

    /// Would we vote for `candidate` in `term`? (No leader is heard: see [`Node::on_campaign`].)
    /// Yes unless we know a newer membership or count the candidate out of ours. Nothing
    /// changes here: the candidate raises its term only once a majority said yes.
    fn on_pre_vote(
        &self,
        from: SocketAddr,
        candidate: NodeId,
        term: u64,
        version: u64,
        out: &mut Vec<Output>,
    ) {
        let member = !self.agreed || self.membership.contains(&candidate);
        if term > self.term && version >= self.version && member {
            out.push(Output::SendTo(
                from,
                ElectionMessage::PreVoteGranted { term, candidate },
            ));
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_heartbeat(
        &mut self,
        now: Instant,
        from: SocketAddr,
        leader: NodeId,
        term: u64,
        seq: u64,
        view: LeaderView,
        out: &mut Vec<Output>,
    ) {
        if term < self.term {
            return; // a stale leader
        }
        if self.role == Role::Leader {
            // Same term, two winners cannot happen (one vote per node per term); be safe anyway.
            if leader < self.id() {
                return;
            }
            let ended = self.lease_end(now);
            self.step_down(now, ended, &format!("node {leader} leads in term {term}"));
        }
        let new_leader =
            self.leader.as_ref().is_none_or(|l| l.id != leader) || self.role != Role::Follower;
        self.role = Role::Follower;
        self.votes = None;
        self.prevotes = None;
        self.next_election = None;
        self.leader = Some(LeaderInfo {
            id: leader,
            udp: from,
            tcp: SocketAddr::new(from.ip(), view.tcp_port),
            heard: now,
        });
        self.heard_seq = seq;
        self.adopt_view(term, &view);
        if new_leader {
            tracing::info!(leader, term, colour = ?self.colour(), "following leader {leader}");
            self.join_sent = None;
        }
        out.push(Output::Broadcast(ElectionMessage::Ack {
            term: self.term,
            seq,
            leader,
            version: self.version,
        }));
        self.join_if_needed(now, out);
    }

    /// The leader is gone: the highest remaining member runs at once; lower ones give it an
    /// election timeout first, so the highest live node wins.
    fn leader_lost(&mut self, now: Instant, why: &str, out: &mut Vec<Output>) {
        let leader = self.leader.take().map(|l| l.id);
        let highest = self
            .membership
            .iter()
            .filter(|id| Some(**id) != leader)
            .max()
            == Some(&self.id());
        tracing::warn!(?leader, highest, "leader lost ({why}); election");
        if highest {
            self.start_election(now, out);
        } else {
            self.role = Role::Candidate;
            self.next_election =
                Some(now + self.config.timing.election + self.rank_delay(now) + self.jitter());
        }
    }

    /// Registers with the leader while it does not count us as a member or we hold no link to
    /// it (again after a second without answer).
    fn join_if_needed(&mut self, now: Instant, out: &mut Vec<Output>) {
        let Some(leader) = self.leader.as_ref() else {
            return;
        };
        let member =
            self.membership.contains(&self.config.id) && self.colours.contains_key(&self.config.id);
        let waiting = self
            .join_sent
            .is_some_and(|at| now.duration_since(at) < Duration::from_secs(1));
        // Registered or not, a follower keeps a link open to its leader.
        let linked = self.linked == Some(leader.id);
        if (!member || !linked) && !waiting {
            out.push(Output::Join {
                leader: leader.id,
                addr: leader.tcp,
                term: self.term,
                seq: self.heard_seq,
            });
            self.join_sent = Some(now);
        }
    }

    fn end_discovery(&mut self, now: Instant, out: &mut Vec<Output>) {
        if self.membership.is_empty() {
            self.membership = self.peers.keys().copied().chain([self.id()]).collect();
        }
        let highest = self.membership.iter().max() == Some(&self.id());
        tracing::info!(members = ?self.membership, highest, "discovery settled");
        if highest {
            self.start_election(now, out);
        } else {
            // The bully: the highest node runs first; we run only if it stays silent.
            self.role = Role::Candidate;
            self.next_election = Some(
                now + self.config.timing.leader_timeout + self.rank_delay(now) + self.jitter(),
            );
        }
    }

    fn start_election(&mut self, now: Instant, out: &mut Vec<Output>) {
        if self.membership.is_empty() {
            self.membership = self.peers.keys().copied().chain([self.id()]).collect();
        }
        self.role = Role::Candidate;
        self.next_election =
            Some(now + self.config.timing.election + self.rank_delay(now) + self.jitter());
        // Run only if a majority could answer: a cut-off node that kept bumping its term would
        // force a needless election when it comes back.
        let window = self.config.timing.leader_timeout * 2;
        let reachable = 1 + self
            .membership
            .iter()
            .filter(|id| **id != self.id())
            .filter(|id| {
                self.peers
                    .get(id)
                    .is_some_and(|(_, seen)| now.duration_since(*seen) <= window)
            })
            .count();
        if reachable < self.quorum() {
            tracing::debug!(
                reachable,
                quorum = self.quorum(),
                "not running: a majority of the membership is not reachable"
            );
            self.votes = None;
            self.prevotes = None;
            return;
        }
        self.votes = None;
        if self.quorum() <= 1 {
            return self.campaign(now, out);
        }
        // Pre-vote first: a node that cannot win (one that alone stopped hearing a live
        // leader) asks, is refused, and never raises the term that would depose the leader.
        let term = self.term + 1;
        self.prevotes = Some((term, [self.id()].into()));
        tracing::info!(term, "asking for pre-votes: would a majority vote for me?");
        out.push(Output::Broadcast(ElectionMessage::PreVote {
            term,
            version: self.version,
        }));
    }

    /// A majority would vote for us: raise the term and run.
    fn campaign(&mut self, now: Instant, out: &mut Vec<Output>) {
        self.prevotes = None;
        self.term += 1;
        self.role = Role::Candidate;
        self.voted = Some((self.term, self.id()));
        self.votes = Some([self.id()].into());
        self.acks.clear();
        self.next_election =
            Some(now + self.config.timing.election + self.rank_delay(now) + self.jitter());
        tracing::info!(
            term = self.term,
            quorum = self.quorum(),
            members = self.membership.len(),
            "running for leader"
        );
        out.push(Output::Broadcast(ElectionMessage::Election {
            term: self.term,
            version: self.version,
        }));
        if self.quorum() <= 1 {
            self.become_leader(now, out);
        }
    }

    /// Whether we could ever collect a majority: not if the membership we agreed on leaves us
    /// out (voters refuse non-members). Such a node must not answer lower candidates in the
    /// bully's name, or it would stop the one who can win, again and again.
    fn could_win(&self) -> bool {
        !self.agreed || self.membership.contains(&self.id())
    }

    /// Asking for pre-votes or votes.
    fn campaigning(&self) -> bool {
        self.votes.is_some() || self.prevotes.is_some()
    }

    fn become_leader(&mut self, now: Instant, out: &mut Vec<Output>) {
        self.role = Role::Leader;
        self.votes = None;
        self.prevotes = None;
        self.next_election = None;
        self.leader = None;
        self.agreed = true;
        self.membership.insert(self.id());
        self.acked_versions.clear();
        self.acks.clear();
        self.sent.clear();
        self.elected_at = Some(now);
        self.view_term = self.term;
        self.note_lease(now);
        self.recolour(now);
        tracing::info!(term = self.term, members = ?self.membership, "elected leader");
        let seq = self.record_heartbeat(now);
        out.push(Output::Broadcast(ElectionMessage::Coordinator {
            term: self.term,
            seq,
            view: self.view(),
        }));
        self.last_broadcast = Some(now);
    }

    fn step_down(&mut self, now: Instant, until: Instant, why: &str) {
        tracing::warn!(term = self.term, "stepping down as leader: {why}");
        if let Some(tenure) = self.tenures.last_mut() {
            tenure.until.get_or_insert(until.max(tenure.from));
        }
        self.elected_at = None;
        self.role = Role::Candidate;
        self.votes = None;
        self.prevotes = None;
        self.acks.clear();
        self.next_election =
            Some(now + self.config.timing.leader_timeout + self.rank_delay(now) + self.jitter());
    }

    fn view(&self) -> LeaderView {
        LeaderView {
            tcp_port: self.config.tcp_port,
            membership: self.membership.iter().copied().collect(),
            version: self.version,
            colours: self.colours.iter().map(|(id, c)| (*id, *c)).collect(),
        }
    }

    /// When the lease runs out: the (quorum − 1)-th most recent member ack plus the lease;
    /// `None` when not even that many members ever acked (no lease at all).
    fn lease_expiry(&self) -> Option<Instant> {
        let needed = self.quorum() - 1;
        let mut acks: Vec<Instant> = self
            .membership
            .iter()
            .filter(|id| **id != self.id())
            .filter_map(|id| self.acks.get(id).copied())
            .collect();
        acks.sort_unstable_by(|a, b| b.cmp(a));
        acks.get(needed.checked_sub(1)?)
            .map(|from| *from + self.config.timing.lease)
    }

    /// A leader whose lease ran out (or that, just elected, got no majority's acks within one
    /// lease) steps down, dated when the lease ended, before it handles anything: no other
    /// path may change its role with its leadership still on record as open (a leader paused
    /// past its lease hears the elections queued for it before its first tick).
    fn step_down_if_lease_ran_out(&mut self, now: Instant) -> bool {
        if self.role != Role::Leader || self.lease_valid(now) {
            return false;
        }
        let deadline = self.lease_deadline(now);
        if now <= deadline {
            return false;
        }
        self.step_down(
            now,
            deadline,
            "no acks from a majority of the membership within the lease",
        );
        true
    }

    /// When a leader's lease runs (or ran) out: a lease after the majority's latest acks, or
    /// one after its election if it never had them.
    fn lease_deadline(&self, now: Instant) -> Instant {
        let elected_at = self.elected_at.unwrap_or(now);
        self.lease_expiry()
            .unwrap_or(elected_at + self.config.timing.lease)
    }

    /// When our leadership ended if we step down `now`: now, or earlier if the lease ran out
    /// before we noticed (a paused leader learns of its successor only after resuming).
    fn lease_end(&self, now: Instant) -> Instant {
        if self.quorum() <= 1 {
            return now;
        }
        self.lease_expiry().map_or(now, |expiry| expiry.min(now))
    }

    fn lease_valid(&self, now: Instant) -> bool {
        // A quorum of one (a configured single-node cluster) needs nobody's acks.
        self.quorum() <= 1 || self.lease_expiry().is_some_and(|expiry| now <= expiry)
    }

    fn hears_leader(&self, now: Instant) -> bool {
        self.role == Role::Follower
            && self
                .leader
                .as_ref()
                .is_some_and(|l| now.duration_since(l.heard) <= self.config.timing.leader_timeout)
    }

    /// Opens a tenure the first time the lease holds in this term.
    fn note_lease(&mut self, now: Instant) {
        let open = self
            .tenures
            .last()
            .is_some_and(|t| t.term == self.term && t.until.is_none());
        if self.role == Role::Leader && !open && self.lease_valid(now) {
            tracing::info!(term = self.term, "a majority acked: leading");
            self.tenures.push(Tenure {
                term: self.term,
                from: now,
                until: None,
            });
            if self.tenures.len() > LEADERSHIPS_KEPT {
                self.tenures.remove(0);
            }
        }
    }

    /// Numbers a heartbeat about to be sent and remembers when.
    fn record_heartbeat(&mut self, now: Instant) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.sent.push_back((seq, now));
        if self.sent.len() > HEARTBEATS_KEPT {
            self.sent.pop_front();
        }
        seq
    }

    fn due_broadcast(&mut self, now: Instant) -> bool {
        let due = self
            .last_broadcast
            .is_none_or(|at| now.duration_since(at) >= self.config.timing.heartbeat);
        if due {
            self.last_broadcast = Some(now);
        }
        due
    }

    /// The bully's order in retries: one election timeout more per reachable higher member, so
    /// the highest runs first and the lower ones are free to vote for it.
    fn rank_delay(&self, now: Instant) -> Duration {
        let window = self.config.timing.leader_timeout * 2;
        let higher = self
            .membership
            .iter()
            .filter(|id| **id > self.id())
            .filter(|id| {
                self.peers
                    .get(id)
                    .is_some_and(|(_, seen)| now.duration_since(*seen) <= window)
            })
            .count();
        self.config.timing.election * higher as u32
    }

    /// A per-node, per-term spread of up to half an election timeout, so candidates do not
    /// retry in lockstep.
    fn jitter(&self) -> Duration {
        let mixed = self.id().wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ self.term.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        let spread = (self.config.timing.election.as_millis() as u64 / 2).max(1);
        Duration::from_millis((mixed >> 33) % spread)
    }
}

#[cfg(test)]
mod tests;
