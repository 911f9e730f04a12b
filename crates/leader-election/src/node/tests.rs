//! Unit tests of the election's transitions, one input at a time.
use super::*;

fn addr(id: NodeId) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, id as u8], 7200))
}

fn node(id: NodeId, now: Instant) -> Node {
    Node::new(
        NodeConfig {
            id,
            tcp_port: 7201,
            min_cluster_size: 3,
            timing: Timing::default(),
        },
        now,
    )
}

fn datagram(sender: NodeId, message: ElectionMessage) -> Input {
    Input::Datagram {
        from: addr(sender),
        sender,
        message,
    }
}

fn view(membership: &[NodeId], version: u64) -> LeaderView {
    LeaderView {
        tcp_port: 7201,
        membership: membership.to_vec(),
        version,
        colours: vec![],
    }
}

/// A node that has been up long enough to vote, following `leader` in `term`.
fn follower(id: NodeId, leader: NodeId, term: u64, t0: Instant) -> (Node, Instant) {
    let mut n = node(id, t0);
    let now = t0 + Duration::from_secs(3);
    n.handle(
        now,
        datagram(
            leader,
            ElectionMessage::Heartbeat {
                term,
                seq: 0,
                view: view(&[1, 2, 3], 1),
            },
        ),
    );
    assert_eq!(n.role(now), Role::Follower);
    (n, now)
}

/// Past the leader timeout and its jitter, with the peers still counted as reachable.
fn leader_silent(now: Instant) -> Instant {
    let timing = Timing::default();
    now + timing.leader_timeout + timing.election
}

/// `candidate`'s `Election` datagram.
fn election(candidate: NodeId, term: u64, version: u64) -> Input {
    datagram(candidate, ElectionMessage::Election { term, version })
}

/// Node `voter` would vote for `n` in its next term (the answer to `n`'s pre-vote).
fn pre_vote_granted(n: &mut Node, now: Instant, voter: NodeId) -> Vec<Output> {
    let term = n.term() + 1;
    let candidate = n.id();
    n.handle(
        now,
        datagram(voter, ElectionMessage::PreVoteGranted { term, candidate }),
    )
}

/// `n` at `now` runs: it asks for pre-votes on its tick and node 1 grants one.
fn runs(n: &mut Node, now: Instant) -> Vec<Output> {
    let out = n.handle(now, Input::Tick);
    let term = n.term() + 1;
    assert!(
        sent(&out)
            .iter()
            .any(|m| **m == ElectionMessage::PreVote { term, version: 1 }),
        "{out:?}"
    );
    pre_vote_granted(n, now, 1)
}

fn sent(outputs: &[Output]) -> Vec<&ElectionMessage> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Broadcast(m) | Output::SendTo(_, m) => Some(m),
            Output::Join { .. } => None,
        })
        .collect()
}

#[test]
fn init_broadcasts_hello_and_the_highest_runs_once_discovery_settles() {
    let t0 = Instant::now();
    let mut n = node(3, t0);
    let out = n.handle(t0, Input::Tick);
    assert!(matches!(sent(&out)[..], [ElectionMessage::Hello { .. }]));
    n.handle(t0, datagram(1, ElectionMessage::Hello { term: 0 }));
    n.handle(t0, datagram(2, ElectionMessage::Hello { term: 0 }));
    // Still there (they say hello every heartbeat) when discovery settles.
    let settled = t0 + Duration::from_millis(2100);
    n.handle(settled, datagram(1, ElectionMessage::Hello { term: 0 }));
    n.handle(settled, datagram(2, ElectionMessage::Hello { term: 0 }));
    let out = n.handle(settled, Input::Tick);
    assert!(
        sent(&out).contains(&&ElectionMessage::PreVote {
            term: 1,
            version: 0
        }),
        "it asks before it raises its term: {out:?}"
    );
    assert!(
        !sent(&out)
            .iter()
            .any(|m| matches!(m, ElectionMessage::Election { .. }))
    );
    assert_eq!(n.term(), 0);
    let out = pre_vote_granted(&mut n, settled, 1);
    assert!(
        sent(&out)
            .iter()
            .any(|m| matches!(m, ElectionMessage::Election { term: 1, .. })),
        "two of three would vote for it: it runs"
    );
    assert_eq!(n.role(settled), Role::Candidate);
}

#[test]
fn a_follower_ignores_elections_while_it_hears_its_leader() {
    let t0 = Instant::now();
    let (mut n, now) = follower(1, 3, 4, t0);
    let out = n.handle(now, election(2, 9, 1));
    assert!(sent(&out).is_empty(), "no vote while the leader is alive");
    assert_eq!(n.term(), 4, "nor does it adopt the candidate's term");
}

#[test]
fn a_lower_node_votes_once_per_term_and_a_higher_one_answers() {
    let t0 = Instant::now();
    let (mut low, now) = follower(1, 3, 4, t0);
    let later = leader_silent(now);
    let out = low.handle(later, election(2, 5, 1));
    assert!(matches!(
        sent(&out)[..],
        [ElectionMessage::Vote {
            term: 5,
            candidate: 2
        }]
    ));
    let out = low.handle(later, election(3, 5, 1));
    assert!(sent(&out).is_empty(), "already voted in term 5");

    let (mut high, now) = follower(3, 9, 4, t0);
    let later = leader_silent(now);
    let out = high.handle(later, election(2, 5, 1));
    assert!(sent(&out).iter().any(|m| matches!(
        m,
        ElectionMessage::Answer {
            term: 5,
            candidate: 2
        }
    )));
    assert!(
        sent(&out)
            .iter()
            .any(|m| matches!(m, ElectionMessage::PreVote { term: 6, .. })),
        "and runs itself"
    );
}

#[test]
fn voters_refuse_candidates_with_an_older_membership() {
    let t0 = Instant::now();
    let (mut n, now) = follower(1, 3, 4, t0);
    let later = leader_silent(now);
    let out = n.handle(later, election(2, 5, 0));
    assert!(sent(&out).is_empty());
}

#[test]
fn a_just_started_node_does_not_vote() {
    let t0 = Instant::now();
    let mut n = node(1, t0);
    let out = n.handle(t0 + Duration::from_millis(100), election(2, 1, 0));
    assert!(sent(&out).is_empty());
}

#[test]
fn heartbeats_of_a_lower_term_are_ignored() {
    let t0 = Instant::now();
    let (mut n, now) = follower(1, 3, 4, t0);
    n.handle(
        now,
        datagram(
            2,
            ElectionMessage::Heartbeat {
                term: 3,
                seq: 0,
                view: view(&[1, 2, 3], 1),
            },
        ),
    );
    assert_eq!(n.leader(now), Some(3));
}

/// Wins an election among {1, 2, 3} as node 3 and returns it with the instant.
fn elected(t0: Instant) -> (Node, Instant) {
    let (mut n, now) = follower(3, 2, 1, t0);
    let later = leader_silent(now);
    runs(&mut n, later); // leader 2 silent: 3 is the highest member and runs
    let term = n.term();
    let out = n.handle(
        later,
        datagram(1, ElectionMessage::Vote { term, candidate: 3 }),
    );
    assert!(
        sent(&out)
            .iter()
            .any(|m| matches!(m, ElectionMessage::Coordinator { .. }))
    );
    (n, later)
}

/// Node 1 acks the leader's (node 3's) first heartbeat, arriving at `at`.
fn ack_first_heartbeat(n: &mut Node, at: Instant) {
    let term = n.term();
    n.handle(
        at,
        datagram(
            1,
            ElectionMessage::Ack {
                term,
                seq: 0,
                leader: 3,
                version: 1,
            },
        ),
    );
}

#[test]
fn a_winner_leads_only_once_a_majority_acked_its_heartbeat() {
    let t0 = Instant::now();
    let (mut n, now) = elected(t0);
    assert_eq!(n.role(now), Role::Candidate, "votes are no lease");
    ack_first_heartbeat(&mut n, now);
    assert!(n.is_leader(now));
    assert_eq!(n.tenures().len(), 1);
}

#[test]
fn a_leader_without_fresh_acks_steps_down_when_its_lease_ends() {
    let t0 = Instant::now();
    let (mut n, now) = elected(t0);
    ack_first_heartbeat(&mut n, now);
    let after_lease = now + Duration::from_millis(900);
    assert!(
        !n.is_leader(after_lease),
        "not a leader past the lease, even before a tick"
    );
    assert_eq!(
        n.tenures_as_of(after_lease)[0].until,
        Some(now + Timing::default().lease),
        "to an observer the tenure has ended with the lease, even before a tick"
    );
    assert_eq!(n.tenures()[0].until, None, "not noticed yet");
    n.handle(after_lease, Input::Tick);
    assert_eq!(
        n.tenures()[0].until,
        Some(now + Timing::default().lease),
        "the tenure ends when the lease did"
    );
}

#[test]
fn a_late_ack_counts_from_when_its_heartbeat_was_sent() {
    let t0 = Instant::now();
    let (mut n, now) = elected(t0);
    // The ack for heartbeat 0 arrives 2 s late (a paused follower): no lease from it.
    let late = now + Duration::from_secs(2);
    ack_first_heartbeat(&mut n, late);
    assert!(!n.is_leader(late));
}

#[test]
fn a_leader_that_sees_a_higher_term_steps_down() {
    let t0 = Instant::now();
    let (mut n, now) = elected(t0);
    let term = n.term();
    ack_first_heartbeat(&mut n, now);
    n.handle(
        now,
        datagram(
            2,
            ElectionMessage::Heartbeat {
                term: term + 1,
                seq: 0,
                view: view(&[1, 2, 3], 2),
            },
        ),
    );
    assert_eq!(n.role(now), Role::Follower);
    assert_eq!(n.leader(now), Some(2));
}

#[test]
fn votes_from_outside_the_membership_do_not_count() {
    let t0 = Instant::now();
    let (mut n, now) = follower(3, 2, 1, t0);
    let later = leader_silent(now);
    n.handle(later, Input::Tick);
    let term = n.term();
    n.handle(
        later,
        datagram(7, ElectionMessage::Vote { term, candidate: 3 }),
    );
    assert_eq!(n.role(later), Role::Candidate);
    assert!(n.tenures().is_empty());
}

/// Follower 3 of leader 2, registered (so holding a link to it).
fn linked_follower(t0: Instant) -> (Node, Instant) {
    let (mut n, now) = follower(3, 2, 1, t0);
    let joined = Input::Joined {
        leader: 2,
        term: 1,
        view: view(&[1, 2, 3], 1),
    };
    n.handle(now, joined);
    (n, now)
}

#[test]
fn a_link_closed_by_the_leader_starts_an_election_at_once() {
    let t0 = Instant::now();
    let (mut n, now) = linked_follower(t0);
    let out = n.handle(now, Input::LeaderLinkClosed { leader: 2 });
    assert!(
        sent(&out)
            .iter()
            .any(|m| matches!(m, ElectionMessage::PreVote { term: 2, .. })),
        "the highest remaining member runs without waiting: {out:?}"
    );
    assert_eq!(n.leader(now), None);
}

#[test]
fn a_closed_link_to_someone_else_changes_nothing() {
    let t0 = Instant::now();
    let (mut n, now) = linked_follower(t0);
    let out = n.handle(now, Input::LeaderLinkClosed { leader: 9 });
    assert!(out.is_empty());
    assert_eq!(n.leader(now), Some(2));
}

#[test]
fn a_follower_without_a_link_registers_again() {
    let t0 = Instant::now();
    let (mut n, now) = linked_follower(t0);
    n.linked = None;
    let out = n.handle(now + Duration::from_millis(10), Input::Tick);
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Join { leader: 2, .. }))
    );
}

#[test]
fn a_leader_stops_counting_a_follower_before_closing_its_link() {
    let t0 = Instant::now();
    let (mut n, now) = elected(t0);
    ack_first_heartbeat(&mut n, now);
    assert!(n.is_leader(now));
    n.link_lost(1);
    assert!(
        !n.is_leader(now),
        "node 1's acks still hold up the lease after its link was closed"
    );
}

#[test]
fn a_join_is_dated_by_the_heartbeat_it_answers() {
    let t0 = Instant::now();
    let (mut n, now) = elected(t0);
    ack_first_heartbeat(&mut n, now);
    // Node 2 registers late, having heard only heartbeat 0 (sent at `now`): its contact
    // counts from then, not from when its registration arrived.
    let lease = Timing::default().lease;
    let late = now + lease - Duration::from_millis(50);
    assert!(n.join(late, 2, 0).is_ok());
    assert!(!n.is_leader(now + lease + Duration::from_millis(50)));
}

#[test]
fn an_election_ignored_just_before_the_link_closed_is_answered_then() {
    let t0 = Instant::now();
    let (mut n, now) = follower(1, 3, 1, t0);
    n.handle(
        now,
        Input::Joined {
            leader: 3,
            term: 1,
            view: view(&[1, 2, 3], 1),
        },
    );
    let election = ElectionMessage::Election {
        term: 2,
        version: 1,
    };
    assert!(sent(&n.handle(now, datagram(2, election))).is_empty());
    let out = n.handle(now, Input::LeaderLinkClosed { leader: 3 });
    assert!(
        sent(&out).iter().any(|m| matches!(
            m,
            ElectionMessage::Vote {
                term: 2,
                candidate: 2
            }
        )),
        "{out:?}"
    );
}

#[test]
fn a_node_left_out_of_the_membership_does_not_answer_lower_candidates() {
    let t0 = Instant::now();
    // Node 4 adopted a view without itself (the leader had removed it).
    let (mut n, now) = follower(4, 2, 1, t0);
    let later = leader_silent(now);
    let out = n.handle(later, election(3, 2, 1));
    assert!(
        !sent(&out)
            .iter()
            .any(|m| matches!(m, ElectionMessage::Answer { .. })),
        "it cannot win, so it must not stop node 3: {out:?}"
    );
}

#[test]
fn an_answer_from_outside_the_membership_does_not_stop_a_candidate() {
    let t0 = Instant::now();
    let (mut n, now) = follower(3, 2, 1, t0);
    let later = leader_silent(now);
    runs(&mut n, later); // 3 runs in term 2
    let term = n.term();
    n.handle(
        later,
        datagram(9, ElectionMessage::Answer { term, candidate: 3 }),
    );
    let out = n.handle(
        later,
        datagram(1, ElectionMessage::Vote { term, candidate: 3 }),
    );
    assert!(
        sent(&out)
            .iter()
            .any(|m| matches!(m, ElectionMessage::Coordinator { .. })),
        "node 9 is no member: its answer stopped the campaign"
    );
}

#[test]
fn a_delayed_older_view_does_not_roll_the_membership_back() {
    let t0 = Instant::now();
    let (mut n, now) = follower(1, 3, 4, t0);
    let heartbeat = |seq, membership: &[NodeId], version| {
        datagram(
            3,
            ElectionMessage::Heartbeat {
                term: 4,
                seq,
                view: view(membership, version),
            },
        )
    };
    n.handle(now, heartbeat(1, &[1, 2, 3, 5], 3));
    // Heartbeat 0's twin with version 2, overtaken on the way.
    n.handle(now, heartbeat(0, &[1, 2, 3], 2));
    assert_eq!(
        n.membership().iter().copied().collect::<Vec<_>>(),
        vec![1, 2, 3, 5]
    );
    // A newer term's view wins even with a lower version.
    n.handle(
        now,
        datagram(
            2,
            ElectionMessage::Heartbeat {
                term: 5,
                seq: 0,
                view: view(&[1, 2, 3], 1),
            },
        ),
    );
    assert_eq!(n.membership().len(), 3);
}

#[test]
fn peers_outside_the_membership_are_forgotten_after_a_long_silence() {
    let t0 = Instant::now();
    let (mut n, now) = follower(1, 3, 4, t0);
    n.handle(now, datagram(9, ElectionMessage::Hello { term: 0 }));
    assert!(n.peers.contains_key(&9));
    let much_later = now + Timing::default().member_timeout * 11;
    n.handle(much_later, Input::Tick);
    assert!(!n.peers.contains_key(&9));
    assert!(n.peers.contains_key(&3), "members are kept");
}

/// A leader paused past its lease hears what was queued for it before its first tick.
#[test]
fn a_leader_past_its_lease_records_its_end_before_handling_anything() {
    let t0 = Instant::now();
    let lease = Timing::default().lease;
    for higher_term in [false, true] {
        let (mut n, now) = elected(t0);
        ack_first_heartbeat(&mut n, now);
        let term = n.term();
        let resumed = now + Duration::from_secs(2);
        let message = if higher_term {
            ElectionMessage::Heartbeat {
                term: term + 1,
                seq: 0,
                view: view(&[1, 2, 3], 2),
            }
        } else {
            // A lower node's election in our own term: the bully answers and runs.
            ElectionMessage::Election { term, version: 1 }
        };
        n.handle(resumed, datagram(1, message));
        assert_ne!(n.role(resumed), Role::Leader);
        assert_eq!(
            n.tenures()[0].until,
            Some(now + lease),
            "the leadership ended with the lease, not when the news arrived (higher term: {higher_term})"
        );
    }
}

/// `candidate`'s `PreVote` datagram.
fn pre_vote(candidate: NodeId, term: u64, version: u64) -> Input {
    datagram(candidate, ElectionMessage::PreVote { term, version })
}

#[test]
fn a_follower_that_hears_its_leader_refuses_pre_votes_and_keeps_its_term() {
    let t0 = Instant::now();
    let (mut n, now) = follower(1, 3, 4, t0);
    let out = n.handle(now, pre_vote(2, 5, 1));
    assert!(sent(&out).is_empty(), "{out:?}");
    assert_eq!(n.term(), 4);
    // Once the leader is silent it would vote, still without moving its term.
    let out = n.handle(leader_silent(now), pre_vote(2, 5, 1));
    assert_eq!(
        sent(&out),
        [&ElectionMessage::PreVoteGranted {
            term: 5,
            candidate: 2
        }]
    );
    assert_eq!(n.term(), 4, "a pre-vote moves no one's term");
    let out = n.handle(leader_silent(now), pre_vote(2, 5, 0));
    assert!(sent(&out).is_empty(), "an older membership is refused");
}

/// The one-way partition: node 3 stops hearing the leader, everyone else still does. It asks
/// again and again, is refused, and never raises the term that would depose the leader.
#[test]
fn a_node_refused_pre_votes_never_raises_its_term() {
    let t0 = Instant::now();
    let (mut n, now) = follower(3, 2, 4, t0);
    let mut at = leader_silent(now);
    for _ in 0..50 {
        n.handle(at, datagram(1, ElectionMessage::Hello { term: 4 }));
        let out = n.handle(at, Input::Tick);
        assert!(
            !sent(&out)
                .iter()
                .any(|m| matches!(m, ElectionMessage::Election { .. })),
            "{out:?}"
        );
        at += Duration::from_millis(100);
    }
    assert_eq!(n.term(), 4);
    // A grant for a term it no longer asks about (it learnt a higher one) does not count.
    n.handle(at, datagram(1, ElectionMessage::Hello { term: 6 }));
    let out = n.handle(
        at,
        datagram(
            1,
            ElectionMessage::PreVoteGranted {
                term: 5,
                candidate: 3,
            },
        ),
    );
    assert!(sent(&out).is_empty(), "{out:?}");
}

#[test]
fn a_restored_node_keeps_its_term_vote_and_membership() {
    let t0 = Instant::now();
    let (mut n, now) = follower(1, 3, 4, t0);
    let later = leader_silent(now);
    n.handle(later, election(2, 5, 1));
    let saved = n.durable();
    assert_eq!(saved.term, 5);
    assert_eq!(saved.voted, Some((5, 2)));
    assert_eq!(
        saved
            .view
            .as_ref()
            .map(|v| (v.term, v.version, v.membership.len())),
        Some((4, 1, 3))
    );

    let config = n.config.clone();
    let restarted = later + Duration::from_millis(10);
    let mut again = Node::restore(config, saved.clone(), restarted);
    assert_eq!(again.durable(), saved);
    assert_eq!(again.quorum(), 2, "a majority of the saved membership");
    let voting = restarted + Timing::default().leader_timeout + Duration::from_millis(1);
    let out = again.handle(voting, election(3, 5, 1));
    assert!(
        sent(&out).is_empty(),
        "it voted for node 2 in term 5 before the restart: {out:?}"
    );
    let out = again.handle(voting, election(3, 6, 1));
    assert!(sent(&out).contains(&&ElectionMessage::Vote {
        term: 6,
        candidate: 3
    }));
}

#[test]
fn the_minimum_size_counts_only_until_a_membership_is_agreed() {
    let t0 = Instant::now();
    let mut n = Node::new(
        NodeConfig {
            min_cluster_size: 5,
            ..node(1, t0).config
        },
        t0,
    );
    n.handle(t0, datagram(2, ElectionMessage::Hello { term: 0 }));
    n.handle(t0 + Duration::from_secs(3), Input::Tick);
    assert_eq!(n.membership().len(), 2);
    assert_eq!(n.quorum(), 3, "bootstrap: a majority of at least five");
    n.handle(
        t0 + Duration::from_secs(3),
        datagram(
            2,
            ElectionMessage::Heartbeat {
                term: 1,
                seq: 0,
                view: view(&[1, 2, 3], 1),
            },
        ),
    );
    assert_eq!(n.quorum(), 2, "agreed: a majority of its three members");
}

#[test]
fn the_operator_removes_a_member_one_change_at_a_time() {
    let t0 = Instant::now();
    let (mut n, now) = elected(t0);
    assert_eq!(
        n.remove_member(now, 1),
        Err("not the leader; there is none right now".to_string()),
        "no lease yet"
    );
    ack_first_heartbeat(&mut n, now);
    assert!(
        n.remove_member(now, 3)
            .unwrap_err()
            .contains("is the leader")
    );
    assert_eq!(
        n.remove_member(now, 7),
        Err("node 7 is not a member".to_string())
    );
    let version = n.remove_member(now, 2).expect("node 2 removed");
    assert_eq!(version, 2);
    assert_eq!(n.membership().iter().copied().collect::<Vec<_>>(), [1, 3]);
    assert!(!n.colours().contains_key(&2));
    assert_eq!(
        n.remove_member(now, 1),
        Err("a membership change is in progress; retry".to_string()),
        "version 2 is not acked by a majority yet"
    );
}
