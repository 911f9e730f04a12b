//! The election in virtual time (harness in `sim/`): named fault scenarios, and random
//! schedules of every fault kind, checking after every step that no two nodes lead, and at the
//! end that the healed cluster has exactly one leader and a valid colouring.

mod sim;

use std::time::Duration;

use leader_election::node::{Role, Timing};
use proto::{Colour, NodeId};
use sim::{Health, Sim};

const PATIENCE: Duration = Duration::from_secs(20);

#[test]
fn five_nodes_elect_the_highest_and_colour_a_third_green() {
    let mut sim = Sim::new(1..=5, 1);
    sim.run_until(PATIENCE, "convergence", Sim::converged);
    assert_eq!(sim.leaders(), vec![5], "the bully: the highest id wins");
    let greens = sim.nodes[&5]
        .node
        .colours()
        .values()
        .filter(|c| **c == Colour::Green)
        .count();
    assert_eq!(greens, 2);
}

#[test]
fn leader_death_elects_the_next_highest_and_recolours() {
    let mut sim = Sim::new(1..=5, 2);
    sim.run_until(PATIENCE, "convergence", Sim::converged);
    sim.kill(5);
    let took = sim.run_until(PATIENCE, "a new leader", Sim::converged);
    assert_eq!(sim.leaders(), vec![4]);
    sim.run_until(PATIENCE, "the dead leader's removal", |s| {
        s.nodes[&4].node.membership().len() == 4
    });
    // The followers' links closed with the dead process: no leader timeout to wait out, just
    // the election and the first acks. Virtual time, so the bound can be tight.
    assert!(
        took < Timing::default().leader_timeout,
        "took {took:?}: the closed links were not acted on"
    );
}

/// A leader that is cut off or paused closes no link: silence is waited out, and its lease
/// ends before anyone elects (checked at every step).
#[test]
fn a_silent_leader_is_replaced_only_after_the_leader_timeout() {
    let mut sim = Sim::new(1..=5, 12);
    sim.run_until(PATIENCE, "convergence", Sim::converged);
    sim.partition(&[5]);
    let took = sim.run_until(PATIENCE, "a new leader", |s| s.leaders() == vec![4]);
    assert!(took > Timing::default().leader_timeout, "took {took:?}");
}

/// A live leader that closes all its followers' links at once (errors on them) never leads
/// beside the leader they elect at once: it stops counting each before closing it.
#[test]
fn a_live_leader_closing_its_links_never_leads_beside_its_successor() {
    for seed in 1..=50 {
        let mut sim = Sim::new(1..=5, seed);
        sim.run_until(PATIENCE, "convergence", Sim::converged);
        let offset = Duration::from_millis(sim.rng.below(100));
        sim.run(offset);
        sim.drop_links_of(5);
        sim.run_until(
            PATIENCE,
            "convergence after the links closed",
            Sim::converged,
        );
        sim.assert_leaderships_disjoint();
    }
}

#[test]
fn a_follower_leaving_is_removed_and_recoloured() {
    let mut sim = Sim::new(1..=5, 3);
    sim.run_until(PATIENCE, "convergence", Sim::converged);
    sim.kill(1);
    sim.run_until(PATIENCE, "recolouring without node 1", |s| {
        s.converged() && s.nodes[&5].node.membership().len() == 4
    });
    assert_eq!(
        sim.leaders(),
        vec![5],
        "losing a follower does not change the leader"
    );
}

#[test]
fn a_node_joining_later_is_coloured_at_once() {
    let mut sim = Sim::new(1..=5, 4);
    sim.run_until(PATIENCE, "convergence", Sim::converged);
    sim.add(9); // higher than the leader: still joins as a follower, no takeover
    sim.run_until(PATIENCE, "the sixth node coloured", |s| {
        s.converged() && s.up().len() == 6
    });
    assert_eq!(sim.leaders(), vec![5]);
}

#[test]
fn a_cut_off_leader_stops_leading_the_majority_elects_and_healing_leaves_one() {
    let mut sim = Sim::new(1..=5, 5);
    sim.run_until(PATIENCE, "convergence", Sim::converged);
    sim.partition(&[5]);
    sim.run_until(PATIENCE, "a leader on the majority side", |s| {
        s.leaders() == vec![4]
    });
    sim.run(Duration::from_secs(3));
    assert_eq!(
        sim.nodes[&5].node.role(sim.now),
        Role::Candidate,
        "the minority has no leader"
    );
    assert_eq!(sim.nodes[&5].node.leader(sim.now), None);
    assert_eq!(
        sim.nodes[&5].node.membership().len(),
        5,
        "the minority does not shrink its membership"
    );
    sim.heal();
    sim.run_until(PATIENCE, "convergence after healing", Sim::converged);
    sim.assert_leaderships_disjoint();
}

#[test]
fn a_minority_of_two_never_elects() {
    let mut sim = Sim::new(1..=5, 6);
    sim.run_until(PATIENCE, "convergence", Sim::converged);
    sim.partition(&[4, 5]);
    sim.run(Duration::from_secs(10));
    assert!(
        sim.leaders().iter().all(|l| *l <= 3),
        "leaders: {:?}",
        sim.leaders()
    );
    assert_eq!(sim.leaders().len(), 1);
    sim.heal();
    sim.run_until(PATIENCE, "convergence after healing", Sim::converged);
}

/// A paused leader's lease runs out while it sleeps; it never leads alongside the new leader.
/// Resumed, it replays the stale elections queued for it and may force one re-election (the
/// Raft rule: a higher term makes a leader step down), after which one leader remains.
#[test]
fn a_paused_leader_never_leads_beside_its_successor() {
    let mut sim = Sim::new(1..=5, 7);
    sim.run_until(PATIENCE, "convergence", Sim::converged);
    sim.set_health(5, Health::Paused);
    sim.run_until(PATIENCE, "a new leader while 5 is paused", |s| {
        s.leaders() == vec![4]
    });
    sim.run(Duration::from_secs(2));
    sim.set_health(5, Health::Up);
    sim.run_until(PATIENCE, "convergence after resuming", Sim::converged);
    sim.assert_leaderships_disjoint();
}

/// Random fault schedules after the cluster formed, with the shipped settings (default timers,
/// the cluster's size as the minimum, as --min-cluster-size must be set; the seed's 3 in every
/// other schedule, so members are also removed and added again): never two leaders at once;
/// once everything is back and healed, one leader and a valid colouring. Restarted nodes come
/// back with what they saved.
#[test]
fn random_fault_schedules_never_have_two_leaders() {
    // HALAB_SIM_SEEDS=N runs more schedules (default 300).
    // HALAB_SIM_FIRST=K starts at schedule K (to replay a failure); HALAB_SIM_TRACE=1 prints
    // every node's log lines.
    let env = |name: &str| std::env::var(name).ok().and_then(|s| s.parse::<u64>().ok());
    let seeds = env("HALAB_SIM_SEEDS").unwrap_or(300);
    let first = env("HALAB_SIM_FIRST").unwrap_or(1);
    if env("HALAB_SIM_TRACE") == Some(1) {
        tracing_subscriber::fmt().with_test_writer().init();
    }
    for seed in first..first + seeds {
        let n = 3 + seed % 5;
        let mut sim = Sim::new(std::iter::empty(), seed * 7919);
        sim.min_cluster_size = if seed % 2 == 0 { n as usize } else { 3 };
        sim.tick_first_on_resume = true;
        for id in 1..=n {
            sim.add(id);
        }
        sim.run_until(PATIENCE, "convergence", Sim::converged);
        for _ in 0..12 {
            let victim = 1 + sim.rng.below(n);
            let fault = sim.rng.below(10);
            tracing::info!(
                fault,
                victim,
                at_ms = sim.now.duration_since(sim.start).as_millis() as u64,
                "sim: fault"
            );
            match fault {
                0 => sim.kill(victim),
                1 => sim.restart(victim),
                2 if sim.nodes[&victim].health == Health::Up => {
                    sim.set_health(victim, Health::Paused)
                }
                2 => {}
                // Resume a paused node; a killed one only comes back by a restart (its links
                // closed when it died: bringing its memory back would be a process no real
                // system can have).
                3 if sim.nodes[&victim].health == Health::Paused => {
                    sim.set_health(victim, Health::Up)
                }
                3 => {}
                4 => {
                    let size = 1 + sim.rng.below(n / 2);
                    let minority: Vec<NodeId> = (0..size).map(|_| 1 + sim.rng.below(n)).collect();
                    sim.partition(&minority);
                }
                5 => sim.drop_a_link(),
                // One way: the victim stops hearing the leader (or someone), not vice versa.
                6 => {
                    let from = match sim.leaders()[..] {
                        [leader] if leader != victim => leader,
                        _ => 1 + sim.rng.below(n),
                    };
                    sim.deafen(from, victim);
                }
                7 => sim.loss = sim.rng.below(30),
                8 => sim.duplication = sim.rng.below(30),
                _ => sim.heal(),
            }
            let pause = Duration::from_millis(200 + sim.rng.below(3000));
            sim.run(pause);
        }
        for id in 1..=n {
            match sim.nodes[&id].health {
                Health::Down => sim.restart(id),
                Health::Paused => sim.set_health(id, Health::Up),
                Health::Up => {}
            }
        }
        sim.heal();
        sim.run_until(
            Duration::from_secs(30),
            &format!("convergence (seed {seed})"),
            Sim::converged,
        );
        sim.assert_leaderships_disjoint();
    }
}

/// Pre-vote: a follower that stops hearing the leader (which still hears it) asks, is refused
/// by everyone who still hears the leader, and never raises the term; the leader stays.
#[test]
fn a_follower_that_cannot_hear_the_leader_deposes_nobody() {
    for seed in 1..=20 {
        let mut sim = Sim::new(1..=5, seed);
        sim.min_cluster_size = 5;
        sim.run_until(PATIENCE, "convergence", Sim::converged);
        let term = sim.nodes[&5].node.term();
        let deaf = 1 + sim.rng.below(4);
        sim.deafen(5, deaf);
        sim.run(Duration::from_secs(10));
        assert_eq!(sim.leaders(), vec![5], "seed {seed}");
        for (id, n) in &sim.nodes {
            assert_eq!(n.node.term(), term, "node {id}'s term moved (seed {seed})");
        }
        assert_eq!(sim.nodes[&deaf].node.role(sim.now), Role::Candidate);
        sim.heal();
        sim.run_until(PATIENCE, "convergence after healing", Sim::converged);
        assert_eq!(sim.nodes[&5].node.term(), term, "seed {seed}");
    }
}

/// Two followers restarted together come back into the membership they saved: one leader
/// throughout, the same one.
#[test]
fn followers_restarted_together_rejoin_under_the_same_leader() {
    for seed in 1..=20 {
        let mut sim = Sim::new(1..=5, seed);
        sim.min_cluster_size = 3;
        sim.run_until(PATIENCE, "convergence", Sim::converged);
        let a = 1 + sim.rng.below(4);
        let b = 1 + (a + sim.rng.below(3)) % 4;
        sim.restart(a);
        sim.restart(b);
        assert_eq!(sim.nodes[&a].node.membership().len(), 5, "restored");
        sim.run_until(PATIENCE, "convergence after the restarts", |s| {
            assert_eq!(s.leaders(), vec![5], "seed {seed}");
            s.converged()
        });
    }
}

/// Before any membership is agreed, a partition during discovery is indistinguishable from a
/// smaller cluster — unless the expected size is configured as the minimum: then no side
/// smaller than a majority of it elects, whatever the schedule.
#[test]
fn with_the_full_size_as_minimum_a_partitioned_bootstrap_never_elects_twice() {
    for seed in 1..=100u64 {
        let n = 3 + seed % 5;
        let mut sim = Sim::new(std::iter::empty(), seed * 104_729);
        sim.min_cluster_size = n as usize;
        for id in 1..=n {
            sim.add(id);
        }
        let size = 1 + sim.rng.below(n / 2 + 1);
        let minority: Vec<NodeId> = (0..size).map(|_| 1 + sim.rng.below(n)).collect();
        sim.partition(&minority);
        sim.run(Duration::from_secs(8));
        sim.heal();
        sim.run_until(
            Duration::from_secs(30),
            &format!("convergence (seed {seed})"),
            Sim::converged,
        );
    }
}
