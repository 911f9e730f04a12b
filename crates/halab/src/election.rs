//! The election's side of a nemesis run: every node's status polled throughout (each address
//! the service's name resolves to), the leaderships the nodes report kept, so that overlapping
//! ones show; and after healing, a leader every node agrees on, colouring ⌈n/3⌉ green.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use halab_runtime::control;
use halab_runtime::intervals::max_overlap;
use primary_standby::witness::wall_ms;
use proto::{Colour, ElectionNodeStatus, FrameCodec, Message, NodeId};
use serde::Serialize;
use tokio::sync::mpsc;

/// What polling the nodes saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// (node, term) → (from_ms, until_ms: None while it lasts, as last reported). A node leads
    /// at most once a term; its answers may date the start a millisecond apart (each converts
    /// its clock to wall time anew), so the first date is kept.
    leaderships: BTreeMap<(NodeId, u64), (u64, Option<u64>)>,
    /// Which node answers where, once it has.
    ids: BTreeMap<SocketAddr, NodeId>,
    /// Since when a node has not answered.
    silent_since: BTreeMap<NodeId, u64>,
    /// When the nemesis sent a node SIGKILL: a dead process leads no more. Polling alone
    /// would date the end at the first unanswered poll, up to a poll interval late, while the
    /// followers, told by their closed links, elect a successor within milliseconds.
    kills: Vec<(NodeId, u64)>,
}

impl Seen {
    fn record(&mut self, addr: SocketAddr, status: &ElectionNodeStatus) {
        self.ids.insert(addr, status.id);
        self.silent_since.remove(&status.id);
        for l in &status.leaderships {
            let (_, until) = self
                .leaderships
                .entry((status.id, l.term))
                .or_insert((l.from_ms, None));
            *until = l.until_ms;
        }
    }

    /// A node that stopped answering led no longer than until then (killed; or paused, and
    /// then it reports its true end when it resumes, replacing this one).
    fn silent(&mut self, node: NodeId, now_ms: u64) {
        let since = *self.silent_since.entry(node).or_insert(now_ms);
        for ((n, _), (_, until)) in self.leaderships.iter_mut() {
            if *n == node && until.is_none() {
                *until = Some(since);
            }
        }
    }

    /// The request sent to `addr` at `asked_ms` got no answer: the node known there has been
    /// silent since then at the latest.
    fn unanswered(&mut self, addr: SocketAddr, asked_ms: u64) {
        if let Some(&node) = self.ids.get(&addr) {
            self.silent(node, asked_ms);
        }
    }

    /// The name resolved to `addrs` at `now_ms`: a node known at none of them is gone.
    fn gone_unless_under(&mut self, addrs: &[SocketAddr], now_ms: u64) {
        let present: BTreeSet<NodeId> = addrs
            .iter()
            .filter_map(|addr| self.ids.get(addr))
            .copied()
            .collect();
        let gone: BTreeSet<NodeId> = self
            .ids
            .values()
            .copied()
            .filter(|node| !present.contains(node))
            .collect();
        for node in gone {
            self.silent(node, now_ms);
        }
    }

    /// `node` was sent SIGKILL at `at_ms` (before the signal left, so the process died
    /// after: a successor seen leading before then overlapped it for certain).
    pub fn killed(&mut self, node: NodeId, at_ms: u64) {
        self.kills.push((node, at_ms));
    }

    /// Every leadership as (node, term, from, until): one still open ends `now_ms`, and one
    /// its node was killed during ends at the kill.
    fn leaderships(&self, now_ms: u64) -> Vec<(NodeId, u64, u64, u64)> {
        self.leaderships
            .iter()
            .map(|((node, term), (from, until))| {
                let killed = self
                    .kills
                    .iter()
                    .filter(|(n, at)| n == node && at > from)
                    .map(|(_, at)| *at)
                    .min();
                let until = until.unwrap_or(now_ms).min(killed.unwrap_or(u64::MAX));
                (*node, *term, *from, until)
            })
            .collect()
    }

    /// Two leaderships that overlapped, if any: ((node, term, from, until), the other).
    pub fn overlapping(&self, now_ms: u64) -> Option<[(NodeId, u64, u64, u64); 2]> {
        let all = self.leaderships(now_ms);
        all.iter().enumerate().find_map(|(i, a)| {
            all[i + 1..]
                .iter()
                .find(|b| a.2 < b.3 && b.2 < a.3)
                .map(|b| [*a, *b])
        })
    }

    /// How many leaderships began after `ms`.
    pub fn leaderships_since(&self, ms: u64) -> usize {
        self.leaderships
            .values()
            .filter(|(from, _)| *from > ms)
            .count()
    }

    pub fn max_leaders_at_once(&self, now_ms: u64) -> u64 {
        max_overlap(
            self.leaderships(now_ms)
                .into_iter()
                .map(|(_, _, from, until)| (from, until)),
        )
    }
}

async fn status(addr: SocketAddr, codec: &FrameCodec) -> Option<ElectionNodeStatus> {
    match control::query_status(addr, codec.clone(), Duration::from_millis(300)).await {
        Ok(Message::ElectionStatus(status)) => Some(status),
        _ => None,
    }
}

/// Every node under `name` now, each with its answer (None: no answer within 300 ms).
pub(crate) async fn sweep(
    name: &str,
    codec: &FrameCodec,
) -> Vec<(SocketAddr, Option<ElectionNodeStatus>)> {
    let addrs = resolve(name).await;
    let answers = statuses(&addrs, codec).await;
    addrs.into_iter().zip(answers).collect()
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

/// Polls every node under `name` every `every` until `stop` completes, each on its own: a
/// node whose answer is still awaited (a paused one, for up to the 300 ms a request is given)
/// is not asked again meanwhile, and holds nobody else up. A node gone from the name (a
/// stopped container) counts as silent. `kills` names the addresses SIGKILL is sent to, and
/// when.
pub async fn watch(
    name: String,
    codec: FrameCodec,
    every: Duration,
    stop: impl Future<Output = ()>,
    mut kills: mpsc::UnboundedReceiver<(IpAddr, u64)>,
) -> Seen {
    let mut seen = Seen::default();
    let mut note_kills = |seen: &mut Seen| {
        while let Ok((ip, at_ms)) = kills.try_recv() {
            let node = seen
                .ids
                .iter()
                .find(|(a, _)| a.ip() == ip)
                .map(|(_, id)| *id);
            match node {
                Some(node) => seen.killed(node, at_ms),
                None => tracing::warn!(%ip, "a killed node never answered; its end is not known"),
            }
        }
    };
    let mut asking = tokio::task::JoinSet::new();
    let mut awaited = BTreeSet::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stop = std::pin::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {
                note_kills(&mut seen);
                let addrs = resolve(&name).await;
                let asked = wall_ms();
                seen.gone_unless_under(&addrs, asked);
                for addr in addrs {
                    if awaited.insert(addr) {
                        let codec = codec.clone();
                        asking.spawn(async move { (addr, asked, status(addr, &codec).await) });
                    }
                }
            }
            Some(Ok((addr, asked, answer))) = asking.join_next() => {
                awaited.remove(&addr);
                match answer {
                    Some(status) => seen.record(addr, &status),
                    None => seen.unanswered(addr, asked),
                }
            }
        }
    }
    note_kills(&mut seen);
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
        let answers: Vec<_> = sweep(name, codec)
            .await
            .into_iter()
            .map(|(_, a)| a)
            .collect();
        match at_rest(&answers) {
            Ok(settled) => return Ok(settled),
            Err(why) => last = why,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("the election did not settle within {limit:?}: {last}")
}

/// Pure: whether these answers (one per node) show the election at rest — one leader, every
/// node following it in its term with the colour it gave it, its members exactly the nodes,
/// ⌈n/3⌉ of them green, itself among them — or why not.
pub(crate) fn at_rest(answers: &[Option<ElectionNodeStatus>]) -> Result<Settled, String> {
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
    let colours: BTreeMap<NodeId, Option<Colour>> =
        leader.members.iter().map(|m| (m.id, m.colour)).collect();
    let nodes: BTreeSet<NodeId> = statuses.iter().map(|s| s.id).collect();
    if !colours.keys().copied().eq(nodes.iter().copied()) {
        return Err(format!(
            "the leader's members {:?} are not the nodes {nodes:?}",
            colours.keys()
        ));
    }
    if let Some(other) = statuses
        .iter()
        .find(|s| Some(&s.colour) != colours.get(&s.id))
    {
        return Err(format!(
            "node {} is {:?}, the leader says {:?}",
            other.id,
            other.colour,
            colours.get(&other.id)
        ));
    }
    let members = colours.len();
    let green = colours
        .values()
        .filter(|c| **c == Some(Colour::Green))
        .count();
    if green != members.div_ceil(3) || colours[&leader.id] != Some(Colour::Green) {
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
            colour: Some(if greens.contains(&id) {
                Colour::Green
            } else {
                Colour::Red
            }),
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
        let settled = at_rest(&all(&[5, 2])).unwrap();
        assert_eq!((settled.leader, settled.members, settled.green), (5, 5, 2));
        assert!(at_rest(&all(&[5])).unwrap_err().contains("1 green"));
        assert!(at_rest(&all(&[1, 2])).unwrap_err().contains("2 green"));

        let mut wrong_colour = all(&[5, 2]);
        wrong_colour[0].as_mut().unwrap().colour = Some(Colour::Green);
        assert!(at_rest(&wrong_colour).unwrap_err().contains("node 1 is"));

        let mut stranger = all(&[5, 2]);
        stranger[0].as_mut().unwrap().id = 9;
        assert!(at_rest(&stranger).unwrap_err().contains("not the nodes"));

        let mut silent = all(&[5, 2]);
        silent[0] = None;
        assert!(at_rest(&silent).unwrap_err().contains("4 of 5"));

        let mut two = all(&[5, 2]);
        two[0] = Some(node(1, "leader", 1, &[5, 2]));
        assert!(at_rest(&two).unwrap_err().contains("2 leaders"));

        let mut astray = all(&[5, 2]);
        astray[1] = Some(node(2, "follower", 4, &[5, 2]));
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

    #[test]
    fn a_killed_leader_led_until_the_kill_not_until_the_first_unanswered_poll() {
        let addr = |port| SocketAddr::from(([10, 0, 0, 1], port));
        let leading = |id, term, from_ms| {
            let mut status = node(id, "leader", id, &[]);
            status.leaderships = vec![Leadership {
                term,
                from_ms,
                until_ms: None,
            }];
            status
        };
        let mut seen = Seen::default();
        seen.record(addr(1), &leading(1, 1, 100));
        // Killed at 500; its links close, node 2 leads from 530; the poll at 560 finds 1 gone.
        seen.record(addr(2), &leading(2, 2, 530));
        seen.silent(1, 560);
        assert_eq!(seen.max_leaders_at_once(1_000), 2, "polling alone");
        seen.killed(1, 500);
        assert_eq!(seen.max_leaders_at_once(1_000), 1);
        assert_eq!(seen.overlapping(1_000), None);
        // Restarted, it leads again from 2 000: the kill before does not end that.
        seen.record(addr(1), &leading(1, 3, 2_000));
        assert_eq!(seen.leaderships(3_000)[1], (1, 3, 2_000, 3_000));
        // A successor seen leading before the kill was sent overlapped it for certain.
        seen.record(addr(2), &leading(2, 4, 450));
        assert_eq!(seen.max_leaders_at_once(1_000), 2);
    }

    #[test]
    fn an_unanswered_request_or_a_node_gone_from_the_name_ends_its_leadership() {
        let addr = |port| SocketAddr::from(([10, 0, 0, 1], port));
        let leading = |id, term, from_ms| {
            let mut status = node(id, "leader", id, &[]);
            status.leaderships = vec![Leadership {
                term,
                from_ms,
                until_ms: None,
            }];
            status
        };
        let mut seen = Seen::default();
        seen.record(addr(1), &leading(1, 1, 100));
        seen.record(addr(2), &node(2, "follower", 1, &[]));
        // Asked at 300, no answer (paused): it led until 300 at the latest.
        seen.unanswered(addr(1), 300);
        assert_eq!(seen.leaderships(1_000), [(1, 1, 100, 300)]);
        // An address nobody answered from yet says nothing.
        seen.unanswered(addr(9), 400);
        // Resumed, it says it still leads: open again.
        seen.record(addr(1), &leading(1, 1, 100));
        assert_eq!(seen.leaderships(1_000), [(1, 1, 100, 1_000)]);
        // Its container stopped: the name no longer resolves to it.
        seen.gone_unless_under(&[addr(2)], 800);
        assert_eq!(seen.leaderships(1_000), [(1, 1, 100, 800)]);
        // A node back under a new address is not gone.
        seen.record(addr(3), &leading(1, 1, 100));
        seen.gone_unless_under(&[addr(2), addr(3)], 900);
        assert_eq!(seen.leaderships(1_000), [(1, 1, 100, 1_000)]);
    }

    #[test]
    fn one_leadership_dated_a_millisecond_apart_by_two_answers_is_one() {
        let addr = SocketAddr::from(([10, 0, 0, 1], 1));
        let mut seen = Seen::default();
        let mut status = node(1, "leader", 1, &[]);
        for from_ms in [100, 101, 100] {
            status.leaderships = vec![Leadership {
                term: 3,
                from_ms,
                until_ms: None,
            }];
            seen.record(addr, &status);
        }
        assert_eq!(seen.max_leaders_at_once(1_000), 1);
        assert_eq!(seen.leaderships(1_000), [(1, 3, 100, 1_000)]);
        assert_eq!(
            (seen.leaderships_since(99), seen.leaderships_since(100)),
            (1, 0)
        );
    }
}
