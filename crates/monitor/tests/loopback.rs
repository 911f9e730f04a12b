//! The checks against stand-in nodes on loopback: a node that answers its status request is
//! up; one whose port still accepts connections but never answers (a paused container) becomes
//! service-down after `fall` checks in a row, and up again when it answers again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use monitor::health::{Health, Thresholds};
use monitor::icmp::Pinger;
use monitor::poller::{self, Change, Settings, System, Target};
use proto::{Connection, FrameCodec, Message};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A node that answers status requests while `answering` is set, and otherwise holds the
/// connection without a word (the kernel of a paused container accepts it all the same).
async fn stand_in(answering: Arc<AtomicBool>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let answering = answering.clone();
            tokio::spawn(async move {
                if !answering.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    return None;
                }
                let mut conn = Connection::new(stream, FrameCodec::default()).await.ok()?;
                while let Ok(Some(_)) = conn.read_frame().await {
                    let status = Message::StoreStatus(Box::default());
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

#[tokio::test]
async fn a_node_that_stops_answering_is_service_down_and_up_again_when_it_answers() {
    let answering = Arc::new(AtomicBool::new(true));
    let addr = stand_in(answering.clone()).await;
    let settings = Settings {
        poll: Duration::from_millis(50),
        retry: Duration::from_millis(20),
        icmp_timeout: Duration::from_millis(200),
        service_timeout: Duration::from_millis(100),
        thresholds: Thresholds { rise: 1, fall: 2 },
    };
    let shutdown = CancellationToken::new();
    let pinger = Pinger::detect().ok().map(Arc::new);
    let target = Target {
        system: System::Store,
        addr: addr.clone(),
    };
    let board = poller::spawn(
        vec![target],
        settings,
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
