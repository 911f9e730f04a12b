//! The membership, on the leader and as followers see it: registrations, removals (silent
//! members, the operator's), one change at a time, views ordered by (term, version), colours.

use std::collections::BTreeSet;

use proto::{Colour, LeaderView, NodeId};
use tokio::time::Instant;

use super::Node;
use crate::colouring::recolour;

impl Node {
    /// On the leader: the link to `follower` is about to be closed from our end (or broke).
    /// Its acks stop counting towards the lease first, so that the follower may act on the
    /// closed link at once (see [`Input::LeaderLinkClosed`]).
    pub fn link_lost(&mut self, follower: NodeId) {
        if self.acks.remove(&follower).is_some() {
            tracing::info!(
                follower,
                "link to node {follower} lost; its acks no longer count"
            );
        }
    }

    /// A follower's registration, on the leader: add it to the membership and colour it.
    /// `seq` is our latest heartbeat it heard; the contact is dated by when we sent that.
    pub fn join(
        &mut self,
        now: Instant,
        sender: NodeId,
        seq: u64,
    ) -> Result<(u64, Colour, LeaderView), String> {
        if !self.is_leader(now) {
            return Err(self.not_the_leader(now));
        }
        if !self.membership.contains(&sender) {
            if !self.membership_committed() {
                return Err("a membership change is in progress; retry".to_string());
            }
            self.membership.insert(sender);
            self.version += 1;
            tracing::info!(
                member = sender,
                members = self.membership.len(),
                version = self.version,
                "node {sender} joined"
            );
        }
        if let Some(sent_at) = self.sent.iter().find(|(s, _)| *s == seq).map(|(_, at)| *at) {
            let latest = self.acks.entry(sender).or_insert(sent_at);
            *latest = (*latest).max(sent_at);
        }
        self.recolour(now);
        let colour = self.colours.get(&sender).copied().unwrap_or(Colour::Red);
        Ok((self.term, colour, self.view()))
    }

    /// The operator's `remove-member`, on the leader: `member` leaves the membership as a
    /// change of its own (one at a time, like every change), even below the minimum cluster
    /// size: for a node that is gone for good. A live node removed so registers again.
    pub fn remove_member(&mut self, now: Instant, member: NodeId) -> Result<u64, String> {
        if !self.is_leader(now) {
            return Err(self.not_the_leader(now));
        }
        if member == self.id() {
            return Err(format!(
                "node {member} is the leader: stop it, and remove it from its successor"
            ));
        }
        if !self.membership.contains(&member) {
            return Err(format!("node {member} is not a member"));
        }
        if !self.membership_committed() {
            return Err("a membership change is in progress; retry".to_string());
        }
        self.membership.remove(&member);
        self.acks.remove(&member);
        self.acked_versions.remove(&member);
        self.version += 1;
        self.recolour(now);
        tracing::warn!(
            member,
            members = self.membership.len(),
            version = self.version,
            "node {member} removed by the operator"
        );
        Ok(self.version)
    }

    pub(super) fn not_the_leader(&self, now: Instant) -> String {
        match self.leader(now) {
            Some(leader) => format!("not the leader; {leader} is"),
            None => "not the leader; there is none right now".to_string(),
        }
    }

    pub(super) fn adopt_view(&mut self, term: u64, view: &LeaderView) {
        if (term, view.version) < (self.view_term, self.version) {
            tracing::debug!(
                term,
                version = view.version,
                "ignoring an older view of the membership"
            );
            return;
        }
        self.view_term = term;
        self.agreed = true;
        self.version = view.version;
        self.membership = view.membership.iter().copied().collect();
        self.colours = view.colours.iter().copied().collect();
    }

    /// Peers outside the membership that have been silent for ten member timeouts are
    /// forgotten, so that nodes that came and went do not accumulate.
    pub(super) fn forget_silent_peers(&mut self, now: Instant) {
        let memory = self.config.timing.member_timeout * 10;
        let membership = &self.membership;
        self.peers
            .retain(|id, (_, seen)| membership.contains(id) || now.duration_since(*seen) <= memory);
    }

    /// Members silent for the member timeout leave the membership, but only while a majority
    /// of the current membership is reachable and never below the minimum cluster size: a
    /// leader cut off from the majority must not shrink the membership to one it can reach.
    pub(super) fn remove_silent_members(&mut self, now: Instant) {
        let timeout = self.config.timing.member_timeout;
        let tenure_start = self.elected_at.unwrap_or(now);
        let mut silent: Vec<(Instant, NodeId)> = self
            .membership
            .iter()
            .filter(|id| **id != self.id())
            .filter_map(|id| {
                let last = self.acks.get(id).copied().unwrap_or(tenure_start);
                (now.duration_since(last) > timeout).then_some((last, *id))
            })
            .collect();
        let reachable = self.membership.len() - silent.len();
        let above_floor = self.membership.len() > self.config.min_cluster_size;
        if silent.is_empty()
            || reachable < self.quorum()
            || !above_floor
            || !self.membership_committed()
        {
            return;
        }
        // One at a time, the longest silent first; the next waits for this one to be acked.
        silent.sort();
        let (last, id) = silent[0];
        self.membership.remove(&id);
        self.acks.remove(&id);
        self.acked_versions.remove(&id);
        self.version += 1;
        tracing::info!(
            member = id,
            silent_ms = now.duration_since(last).as_millis() as u64,
            members = self.membership.len(),
            version = self.version,
            "removed silent node {id}"
        );
    }

    /// Whether a majority of the membership (us included) acked its current version.
    pub(super) fn membership_committed(&self) -> bool {
        let acked = self
            .membership
            .iter()
            .filter(|id| {
                **id == self.id()
                    || self
                        .acked_versions
                        .get(id)
                        .is_some_and(|v| *v >= self.version)
            })
            .count();
        acked >= self.quorum()
    }

    /// Recolours the live members (us and those acked within the member timeout).
    pub(super) fn recolour(&mut self, now: Instant) {
        let timeout = self.config.timing.member_timeout;
        let live: BTreeSet<NodeId> = self
            .membership
            .iter()
            .filter(|id| {
                **id == self.id()
                    || self
                        .acks
                        .get(id)
                        .is_some_and(|at| now.duration_since(*at) <= timeout)
            })
            .copied()
            .collect();
        let next = recolour(&self.colours, &live, self.id());
        if next != self.colours {
            let changed: Vec<NodeId> = next
                .iter()
                .filter(|(id, c)| self.colours.get(id) != Some(c))
                .map(|(id, _)| *id)
                .collect();
            tracing::info!(live = live.len(), ?changed, "recoloured");
            self.colours = next;
        }
    }
}
