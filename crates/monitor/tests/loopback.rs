//! The checks against stand-in nodes on loopback: a node that answers its status request is
//! up; one whose port still accepts connections but never answers (a paused container) becomes
//! service-down after `fall` checks in a row, and up again when it answers again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use monitor::events::Change;
use monitor::health::{Health, Thresholds};
use monitor::icmp::Pinger;
use monitor::poller::{self, Settings, System, Target};
use proto::{
    Colour, Connection, DispatcherStatus, ElectionNodeStatus, FrameCodec, MemberStatus, Message,
    WorkerRow,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A node that answers status requests while `answering` is set, and otherwise holds the
/// connection without a word (the kernel of a paused container accepts it all the same).
async fn stand_in(answering: Arc<AtomicBool>) -> String {
    scripted(
        answering,
        Arc::new(Mutex::new(Message::StoreStatus(Box::default()))),
    )
    .await
}

/// A stand-in that answers with whatever `answer` holds at the time.
async fn scripted(answering: Arc<AtomicBool>, answer: Arc<Mutex<Message>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let answering = answering.clone();
            let answer = answer.clone();
            tokio::spawn(async move {
                if !answering.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    return None;
                }
                let mut conn = Connection::new(stream, FrameCodec::default()).await.ok()?;
                while let Ok(Some(_)) = conn.read_frame().await {
                    let status = answer.lock().unwrap().clone();
                    conn.send(0, status).await.ok()?;
                }
                Some(())
            });
        }
    });
    addr
}

/// The next change of health: (from, to).
async fn next_change(changes: &mut tokio::sync::broadcast::Receiver<Change>) -> (Health, Health) {
    loop {
        let change = tokio::time::timeout(Duration::from_secs(10), changes.recv())
            .await
            .expect("a change within 10 s")
            .expect("the board lives");
        if let Change::Health { from, to, .. } = change {
            return (from, to);
        }
    }
}

/// Quick polls, so that the tests take a fraction of a second.
fn settings() -> Settings {
    Settings {
        poll: Duration::from_millis(50),
        retry: Duration::from_millis(20),
        icmp_timeout: Duration::from_millis(200),
        service_timeout: Duration::from_millis(100),
        thresholds: Thresholds { rise: 1, fall: 2 },
    }
}

#[tokio::test]
async fn a_node_that_stops_answering_is_service_down_and_up_again_when_it_answers() {
    let answering = Arc::new(AtomicBool::new(true));
    let addr = stand_in(answering.clone()).await;
    let shutdown = CancellationToken::new();
    let pinger = Pinger::detect().ok().map(Arc::new);
    let target = Target {
        system: System::Store,
        addr: addr.clone(),
    };
    let board = poller::spawn(
        vec![target],
        settings(),
        pinger,
        FrameCodec::default(),
        shutdown.clone(),
    );
    let mut changes = board.subscribe();

    assert_eq!(
        next_change(&mut changes).await,
        (Health::Unknown, Health::Up)
    );

    answering.store(false, Ordering::SeqCst);
    assert_eq!(
        next_change(&mut changes).await,
        (Health::Up, Health::ServiceDown)
    );
    let node = board.nodes().pop().unwrap();
    assert_eq!(node.state, Health::ServiceDown);
    assert!(node.checks >= 3, "one failure never flips it: {node:?}");

    answering.store(true, Ordering::SeqCst);
    assert_eq!(
        next_change(&mut changes).await,
        (Health::ServiceDown, Health::Up)
    );
    assert!(board.nodes()[0].last_seen_ms.is_some());
    shutdown.cancel();
}

fn election_status(term: u64, members: &[(u64, Colour)]) -> Message {
    Message::ElectionStatus(ElectionNodeStatus {
        id: 7,
        state: "leader".into(),
        leader: Some(7),
        term,
        colour: Some(Colour::Green),
        members: members
            .iter()
            .map(|&(id, colour)| MemberStatus {
                id,
                colour: Some(colour),
            })
            .collect(),
        membership: members.iter().map(|m| m.0).collect(),
        quorum: 2,
        leaderships: vec![],
        auth_failures: 0,
        bad_frames: 0,
        replayed: 0,
    })
}

fn dispatcher_status(workers: &[u64]) -> Message {
    Message::DispatcherStatus(DispatcherStatus {
        worker_count: workers.len() as u64,
        workers: workers
            .iter()
            .map(|&id| WorkerRow {
                id,
                addr: format!("10.0.0.{id}:9000"),
                weight: 1,
                activations: 3,
                active: false,
                available: true,
                answers_since_activation: 0,
                last_comm_ms_ago: -1,
                last_heard_ms_ago: 10,
                share: 3.0,
            })
            .collect(),
        fairness_gap: 0.5,
        fairness_bound: 2.0,
        total_activations: 3 * workers.len() as u64,
        active: 1,
        max_active: 5,
        uptime_ms: 1000,
        auth_failures: 0,
        bad_frames: 0,
        replayed: 0,
    })
}

#[tokio::test]
async fn a_new_leader_recolourings_and_removals_reach_the_event_log() {
    use Colour::{Green, Red};
    let answering = Arc::new(AtomicBool::new(true));
    let election = Arc::new(Mutex::new(election_status(
        1,
        &[(1, Green), (2, Red), (3, Red)],
    )));
    let dispatcher = Arc::new(Mutex::new(dispatcher_status(&[1, 2])));
    let targets = vec![
        Target {
            system: System::Election,
            addr: scripted(answering.clone(), election.clone()).await,
        },
        Target {
            system: System::Dispatcher,
            addr: scripted(answering.clone(), dispatcher.clone()).await,
        },
    ];
    let shutdown = CancellationToken::new();
    let board = poller::spawn(
        targets,
        settings(),
        None,
        FrameCodec::default(),
        shutdown.clone(),
    );
    let mut changes = board.subscribe();
    // Both up (the election's row appears once its name is resolved): the baseline is set.
    let mut up = 0;
    while up < 2 {
        if let (_, Health::Up) = next_change(&mut changes).await {
            up += 1;
        }
    }
    let overview = monitor::overview::of(&board.nodes());
    let seen = overview.election.expect("the election is watched");
    assert_eq!((seen.term, seen.green, seen.green_expected), (1, 1, 1));
    assert_eq!(overview.dispatcher.expect("watched").workers, 2);

    *election.lock().unwrap() = election_status(2, &[(1, Red), (2, Green)]);
    *dispatcher.lock().unwrap() = dispatcher_status(&[1]);
    let mut expected = vec![
        "leader 2",
        "removal 3",
        "recolour 1",
        "recolour 2",
        "removal 2",
    ];
    while !expected.is_empty() {
        let change = tokio::time::timeout(Duration::from_secs(10), changes.recv())
            .await
            .unwrap_or_else(|_| panic!("still waiting for {expected:?}"))
            .expect("the board lives");
        let line = match change {
            Change::Leader { term, .. } => format!("leader {term}"),
            Change::Removal { id, .. } | Change::Recolour { id, .. } => {
                format!("{} {id}", change.kind())
            }
            other => panic!("unexpected {other:?}"),
        };
        let position = expected.iter().position(|e| *e == line);
        expected.remove(position.unwrap_or_else(|| panic!("{line} twice, or unexpected")));
    }
    let counts = board.change_counts();
    assert_eq!(
        (counts["leader"], counts["recolour"], counts["removal"]),
        (1, 2, 2)
    );
    shutdown.cancel();
}
