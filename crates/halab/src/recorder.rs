//! The workload whose history is checked: clients reading and writing a few keys at random
//! through the store's own `Client` (so through failovers, as any client would), each
//! operation recorded with its invocation and completion; at the end one read of every key,
//! once everything else has completed, to show what survived.

use std::sync::Arc;
use std::time::{Duration, Instant};

use primary_standby::client::{Client, ClientError};
use proto::FrameCodec;
use rand::Rng;

use crate::history::{Call, Operation, Outcome};

#[derive(Debug, Clone)]
pub struct Workload {
    pub nodes: Vec<String>,
    pub clients: u32,
    /// Few keys, so that operations on one key overlap and the check has something to prove.
    pub keys: u32,
    /// Operations per second over all clients.
    pub rate: u32,
    pub duration: Duration,
    /// How long one operation keeps trying before its outcome is unknown.
    pub deadline: Duration,
    /// A prefix for this run's keys: a new run starts from keys nobody wrote.
    pub prefix: String,
}

/// The workload, then the final reads: a run with no faults of its own (the faults, if any,
/// come from elsewhere meanwhile).
pub async fn record(workload: Workload, codec: FrameCodec) -> anyhow::Result<Vec<Operation>> {
    let began = Instant::now();
    let mut history = clients(&workload, &codec, began).await?;
    history.extend(final_reads(&workload, &codec, began).await);
    history.sort_by_key(|op| op.invoked_ns);
    Ok(history)
}

/// The clients' operations for the workload's duration (times since `began`).
pub async fn clients(
    workload: &Workload,
    codec: &FrameCodec,
    began: Instant,
) -> anyhow::Result<Vec<Operation>> {
    anyhow::ensure!(
        workload.clients > 0 && workload.keys > 0 && workload.rate > 0,
        "--clients, --keys and --rate must be above 0"
    );
    let workload = Arc::new(workload.clone());
    let tasks: Vec<_> = (0..workload.clients)
        .map(|process| {
            let workload = workload.clone();
            let codec = codec.clone();
            tokio::spawn(async move { run_client(&workload, process, codec, began).await })
        })
        .collect();
    let mut history = Vec::new();
    for task in tasks {
        history.extend(task.await?);
    }
    Ok(history)
}

/// One read of every key, once every other operation has completed or been given up on: what
/// survived.
pub async fn final_reads(
    workload: &Workload,
    codec: &FrameCodec,
    began: Instant,
) -> Vec<Operation> {
    let mut client = client(workload, codec.clone());
    let mut reads = Vec::new();
    for key in 0..workload.keys {
        let call = Call::Read {
            key: key_name(workload, key),
        };
        reads.push(perform(&mut client, workload.clients, call, began).await);
    }
    reads
}

fn client(workload: &Workload, codec: FrameCodec) -> Client {
    let mut client = Client::new(workload.nodes.clone(), codec);
    client.deadline = workload.deadline;
    client
}

fn key_name(workload: &Workload, key: u32) -> String {
    format!("{}-{key}", workload.prefix)
}

async fn run_client(
    workload: &Workload,
    process: u32,
    codec: FrameCodec,
    began: Instant,
) -> Vec<Operation> {
    let mut client = client(workload, codec);
    let interval = Duration::from_secs_f64(workload.clients as f64 / workload.rate as f64);
    let mut history = Vec::new();
    let mut next = Instant::now();
    for n in 0u64.. {
        if began.elapsed() >= workload.duration {
            break;
        }
        let call = {
            let mut rng = rand::rng();
            let key = key_name(workload, rng.random_range(0..workload.keys));
            if rng.random_bool(0.5) {
                // Unique values: a read then names the one write it saw.
                let value = format!("{process}.{n}");
                Call::Write { key, value }
            } else {
                Call::Read { key }
            }
        };
        history.push(perform(&mut client, process, call, began).await);
        next += interval;
        tokio::time::sleep_until(next.into()).await;
    }
    history
}

async fn perform(client: &mut Client, process: u32, call: Call, began: Instant) -> Operation {
    let invoked_ns = began.elapsed().as_nanos() as u64;
    let result = match &call {
        Call::Read { key } => client.get(key).await,
        Call::Write { key, value } => client.set(key, value).await.map(|_| None),
    };
    let completed_ns = began.elapsed().as_nanos() as u64;
    let (outcome, completed_ns) = match result {
        Ok(value) => (Outcome::Ok { value }, Some(completed_ns)),
        Err(ClientError::Refused(_)) => (Outcome::Failed, Some(completed_ns)),
        Err(ClientError::Unknown { .. }) => (Outcome::Unknown, None),
    };
    Operation {
        process,
        call,
        invoked_ns,
        completed_ns,
        outcome,
    }
}
