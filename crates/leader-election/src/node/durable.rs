//! What a node must not forget across a restart (Raft's persistent state): its term, its vote
//! and the agreed membership. The driver saves [`Node::durable`] after every input, before
//! sending what the node answered, and a restarted node starts from it ([`Node::restore`]).

use std::collections::BTreeSet;

use proto::NodeId;
use tokio::time::Instant;

use super::{Node, NodeConfig};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Durable {
    pub term: u64,
    /// The one vote cast in a term: (term, candidate).
    pub voted: Option<(u64, NodeId)>,
    /// The last agreed membership; `None` until one was agreed.
    pub view: Option<AgreedView>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgreedView {
    /// The term of the leader that published it; views are ordered by (term, version).
    pub term: u64,
    pub version: u64,
    pub membership: BTreeSet<NodeId>,
}

impl Node {
    /// A node restarted with what it saved: it remembers its term, its vote and the
    /// membership, and starts discovering (in state init) from there.
    pub fn restore(config: NodeConfig, durable: Durable, now: Instant) -> Node {
        let mut node = Node::new(config, now);
        node.term = durable.term;
        node.voted = durable.voted;
        if let Some(view) = durable.view {
            node.agreed = true;
            node.view_term = view.term;
            node.version = view.version;
            node.membership = view.membership;
        }
        node
    }

    pub fn durable(&self) -> Durable {
        Durable {
            term: self.term,
            voted: self.voted,
            view: self.agreed.then(|| AgreedView {
                term: self.view_term,
                version: self.version,
                membership: self.membership.clone(),
            }),
        }
    }
}
