//! The election's side of a nemesis run: every node's status polled throughout (each address
//! the service's name resolves to), the leaderships the nodes report kept, so that overlapping
//! ones show; and after healing, a leader every node agrees on, colouring ⌈n/3⌉ green.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use halab_runtime::control;
use halab_runtime::intervals::max_overlap;
use primary_standby::witness::wall_ms;
use proto::{Colour, ElectionNodeStatus, FrameCodec, Message, NodeId};
use serde::Serialize;

/// What polling the nodes saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// (node, term, from_ms) → until_ms (None while it lasts, as last reported).
    leaderships: BTreeMap<(NodeId, u64, u64), Option<u64>>,
    /// Which node answers where, once it has.
    ids: BTreeMap<SocketAddr, NodeId>,
    /// Since when a node has not answered.
    silent_since: BTreeMap<NodeId, u64>,
}

impl Seen {
    fn record(&mut self, addr: SocketAddr, status: &ElectionNodeStatus) {
        self.ids.insert(addr, status.id);
        self.silent_since.remove(&status.id);
        for l in &status.leaderships {
            self.leaderships
                .insert((status.id, l.term, l.from_ms), l.until_ms);
        }
    }

    /// A node that stopped answering led no longer than until then (killed; or paused, and
    /// then it reports its true end when it resumes, replacing this one).
    fn silent(&mut self, node: NodeId, now_ms: u64) {
        let since = *self.silent_since.entry(node).or_insert(now_ms);
        for ((n, _, _), until) in self.leaderships.iter_mut() {
            if *n == node && until.is_none() {
                *until = Some(since);
            }
        }
    }

    /// Two leaderships that overlapped, if any: ((node, term, from, until), the other).
    pub fn overlapping(&self, now_ms: u64) -> Option<[(NodeId, u64, u64, u64); 2]> {
        let all: Vec<(NodeId, u64, u64, u64)> = self
            .leaderships
            .iter()
            .map(|((node, term, from), until)| (*node, *term, *from, until.unwrap_or(now_ms)))
            .collect();
        all.iter().enumerate().find_map(|(i, a)| {
            all[i + 1..]
                .iter()
                .find(|b| a.2 < b.3 && b.2 < a.3)
                .map(|b| [*a, *b])
        })
    }

    pub fn max_leaders_at_once(&self, now_ms: u64) -> u64 {
        max_overlap(
            self.leaderships
                .iter()
                .map(|((_, _, from), until)| (*from, until.unwrap_or(now_ms))),
        )
    }
}

async fn status(addr: SocketAddr, codec: &FrameCodec) -> Option<ElectionNodeStatus> {
    match control::query_status(addr, codec.clone(), Duration::from_millis(300)).await {
        Ok(Message::ElectionStatus(status)) => Some(status),
        _ => None,
    }
}

/// Every node's answer at once (in `addrs`' order): a paused one must not hold up the others.
async fn statuses(addrs: &[SocketAddr], codec: &FrameCodec) -> Vec<Option<ElectionNodeStatus>> {
    let mut asking = tokio::task::JoinSet::new();
    for (index, addr) in addrs.iter().copied().enumerate() {
        let codec = codec.clone();
        asking.spawn(async move { (index, status(addr, &codec).await) });
    }
    let mut answers = vec![None; addrs.len()];
    while let Some(Ok((index, answer))) = asking.join_next().await {
        answers[index] = answer;
    }
    answers
}

async fn resolve(name: &str) -> Vec<SocketAddr> {
    tokio::net::lookup_host(name)
        .await
        .map(|found| found.collect())
        .unwrap_or_default()
}

/// Polls every node under `name` every `every` until `until`. A node gone from the name (a
/// stopped container) counts as silent.
pub async fn watch(name: String, codec: FrameCodec, every: Duration, until: Instant) -> Seen {
    let mut seen = Seen::default();
    while Instant::now() < until {
        let addrs = resolve(&name).await;
        let asked = wall_ms();
        let answers = statuses(&addrs, &codec).await;
        let mut answered = Vec::new();
        for (addr, answer) in addrs.iter().zip(answers) {
            if let Some(status) = answer {
                answered.push(status.id);
                seen.record(*addr, &status);
            }
        }
        let silent: Vec<NodeId> = seen
            .ids
            .values()
            .copied()
            .filter(|id| !answered.contains(id))
            .collect();
        for id in silent {
            seen.silent(id, asked);
        }
        tokio::time::sleep(every).await;
    }
    seen
}

/// The election at rest.
#[derive(Debug, Clone, Serialize)]
pub struct Settled {
    pub leader: NodeId,
    pub term: u64,
    pub members: usize,
    pub green: usize,
}

/// Waits until every node under `name` answers, exactly one leads, all agree on it and its
/// term, and it has coloured ⌈n/3⌉ of the n members green.
pub async fn settled(name: &str, codec: &FrameCodec, limit: Duration) -> anyhow::Result<Settled> {
    let give_up = Instant::now() + limit;
    let mut last = String::from("no answer yet");
    while Instant::now() < give_up {
        let addrs = resolve(name).await;
        let answers = statuses(&addrs, codec).await;
        match at_rest(&answers) {
            Ok(settled) => return Ok(settled),
            Err(why) => last = why,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("the election did not settle within {limit:?}: {last}")
}

/// Pure: whether these answers (one per node) show the election at rest, or why not.
fn at_rest(answers: &[Option<ElectionNodeStatus>]) -> Result<Settled, String> {
    let statuses: Vec<&ElectionNodeStatus> = answers.iter().flatten().collect();
    if statuses.is_empty() || statuses.len() < answers.len() {
        return Err(format!(
            "{} of {} nodes answer",
            statuses.len(),
            answers.len()
        ));
    }
    let leaders: Vec<&&ElectionNodeStatus> =
        statuses.iter().filter(|s| s.state == "leader").collect();
    let [leader] = leaders[..] else {
        return Err(format!("{} leaders", leaders.len()));
    };
    if let Some(other) = statuses
        .iter()
        .find(|s| s.leader != Some(leader.id) || s.term != leader.term)
    {
        return Err(format!(
            "node {} follows {:?} in term {}, not {} in {}",
            other.id, other.leader, other.term, leader.id, leader.term
        ));
    }
    let members = leader.members.len();
    let green = leader
        .members
        .iter()
        .filter(|m| m.colour == Some(Colour::Green))
        .count();
    if members != statuses.len() || green != members.div_ceil(3) {
        return Err(format!("{green} green of {members} members"));
    }
    Ok(Settled {
        leader: leader.id,
        term: leader.term,
        members,
        green,
    })
}

#[cfg(test)]
mod tests {
    use proto::{Leadership, MemberStatus};

    use super::*;

    fn node(id: NodeId, state: &str, leader: NodeId, greens: &[NodeId]) -> ElectionNodeStatus {
        ElectionNodeStatus {
            id,
            state: state.into(),
            leader: Some(leader),
            term: 3,
            colour: None,
            members: (1..=5)
                .map(|id| MemberStatus {
                    id,
                    colour: Some(if greens.contains(&id) {
                        Colour::Green
                    } else {
                        Colour::Red
                    }),
                })
                .collect(),
            membership: (1..=5).collect(),
            quorum: 3,
            leaderships: vec![],
            auth_failures: 0,
            bad_frames: 0,
            replayed: 0,
        }
    }

    #[test]
    fn at_rest_means_one_leader_all_agree_and_a_third_green() {
        let all = |greens: &[NodeId]| -> Vec<Option<ElectionNodeStatus>> {
            (1..=5)
                .map(|id| {
                    Some(node(
                        id,
                        if id == 5 { "leader" } else { "follower" },
                        5,
                        greens,
                    ))
                })
                .collect()
        };
        let settled = at_rest(&all(&[1, 2])).unwrap();
        assert_eq!((settled.leader, settled.members, settled.green), (5, 5, 2));
        assert!(at_rest(&all(&[1])).unwrap_err().contains("1 green"));

        let mut silent = all(&[1, 2]);
        silent[0] = None;
        assert!(at_rest(&silent).unwrap_err().contains("4 of 5"));

        let mut two = all(&[1, 2]);
        two[0] = Some(node(1, "leader", 1, &[1, 2]));
        assert!(at_rest(&two).unwrap_err().contains("2 leaders"));

        let mut astray = all(&[1, 2]);
        astray[1] = Some(node(2, "follower", 4, &[1, 2]));
        assert!(at_rest(&astray).unwrap_err().contains("follows"));
    }

    #[test]
    fn leaderships_that_overlap_are_counted_and_silence_ends_one() {
        let addr = |port| SocketAddr::from(([10, 0, 0, 1], port));
        let mut seen = Seen::default();
        let mut old = node(1, "leader", 1, &[]);
        old.leaderships = vec![Leadership {
            term: 1,
            from_ms: 100,
            until_ms: None,
        }];
        seen.record(addr(1), &old);
        // The old leader goes silent at 500; a new one leads from 600: one at a time.
        seen.silent(1, 500);
        let mut new = node(2, "leader", 2, &[]);
        new.leaderships = vec![Leadership {
            term: 2,
            from_ms: 600,
            until_ms: None,
        }];
        seen.record(addr(2), &new);
        assert_eq!(seen.max_leaders_at_once(1_000), 1);
        // It resumes and reports it led until 700: two at once.
        old.leaderships[0].until_ms = Some(700);
        seen.record(addr(1), &old);
        assert_eq!(seen.max_leaders_at_once(1_000), 2);
    }
}
