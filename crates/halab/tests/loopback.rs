//! The checker on a real history: store daemons in this process, the workload's clients
//! reading and writing three keys while the primary is stopped. The history must check as
//! linearizable, and the check must have had something to prove (reads that saw writes).

use std::time::Duration;

use halab::history::Outcome;
use halab::recorder::{self, Workload};
use halab::verdict;
use primary_standby::testing::Cluster;
use proto::FrameCodec;

#[tokio::test]
async fn a_history_recorded_through_a_failover_is_linearizable() {
    let mut cluster = Cluster::start(3, FrameCodec::default()).await;
    let primary = cluster.primary_with(2).await;
    let workload = Workload {
        nodes: cluster.addrs(),
        clients: 4,
        keys: 3,
        rate: 400,
        duration: Duration::from_secs(3),
        deadline: Duration::from_secs(3),
        prefix: "failover".into(),
    };
    let run = tokio::spawn(recorder::record(workload, cluster.codec.clone()));
    // The fault, a second into the run, at a moment both standbys are in sync: one the primary
    // dropped meanwhile (a slow ack on a loaded machine) cannot be promoted, and a test of the
    // history through a failover needs the failover (a CI run stopped it with both dropped).
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(cluster.primary_with(2).await, primary);
    cluster.stop(primary).await;
    let history = run.await.unwrap().unwrap();

    let report = verdict::check(&history);
    assert!(report.valid(), "{:#?}", report.anomalies);
    let reads_that_saw_a_write = history
        .iter()
        .filter(|op| op.is_read() && matches!(&op.outcome, Outcome::Ok { value: Some(_) }))
        .count();
    assert!(
        report.ok > 100 && reads_that_saw_a_write > 20,
        "too little to prove anything: {report:?}"
    );
    assert_ne!(cluster.primary_with(1).await, primary);
}
