//! One worker's life: discover the dispatcher, register, answer status checks and activations,
//! report while active, heartbeat while idle; after each deactivation maybe terminate. Losing
//! the dispatcher sends the worker back to discovery, where it gets a new id.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use proto::udp::FrameSocket;
use proto::{Connection, Frame, FrameCodec, Message, WorkerId, discovery};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::activation::{Activation, Answer, terminates};
use crate::board::Board;
use crate::config::WorkerConfig;

/// How long to wait for the dispatcher to confirm a registration.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a session with the dispatcher ended.
enum SessionEnd {
    /// Deactivated and rolled termination: this worker is done.
    Terminated,
    Shutdown,
    /// The dispatcher went away or misbehaved: discover again.
    Lost(String),
}

#[derive(Debug)]
pub struct Worker {
    index: u32,
    weight: u32,
    config: Arc<WorkerConfig>,
    codec: FrameCodec,
    board: Board,
}

impl Worker {
    pub fn new(index: u32, config: Arc<WorkerConfig>, codec: FrameCodec, board: Board) -> Self {
        let weight = config.weight.unwrap_or_else(|| rand::random_range(1..=10));
        board.update(index, |s| s.weight = weight);
        Worker {
            index,
            weight,
            config,
            codec,
            board,
        }
    }

    /// Runs until the worker terminates itself or shutdown.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            self.board.update(self.index, |s| {
                s.state = "discovering".into();
                s.id = None;
                s.dispatcher = None;
            });
            let found = tokio::select! {
                _ = shutdown.cancelled() => return,
                found = self.discover() => found,
            };
            let (id, dispatcher) = match found {
                Ok(found) => found,
                Err(e) => {
                    tracing::warn!(worker = self.index, error = %e, "discovery failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(self.config.backoff().max) => continue,
                    }
                }
            };
            match self.session(id, dispatcher, &shutdown).await {
                SessionEnd::Terminated => {
                    self.board
                        .update(self.index, |s| s.state = "terminated".into());
                    return;
                }
                SessionEnd::Shutdown => return,
                SessionEnd::Lost(reason) => {
                    tracing::warn!(worker = id, %dispatcher, "lost the dispatcher: {reason}; discovering it again");
                    // Do not hammer a dispatcher that refuses us: wait one backoff step.
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(self.config.backoff().initial) => {}
                    }
                }
            }
        }
    }

    /// "is someone there": broadcast until the dispatcher answers with our id and its address.
    async fn discover(&self) -> anyhow::Result<(WorkerId, SocketAddr)> {
        let mut socket =
            FrameSocket::bind(SocketAddr::from(([0, 0, 0, 0], 0)), self.codec.clone())?;
        let nonce: u64 = rand::random();
        let request = Frame::new(0, Message::Discover { nonce });
        let (id, dispatcher) = discovery::discover(
            &mut socket,
            &request,
            &self.config.targets(),
            self.config.backoff(),
            |frame, _from| match frame.message {
                Message::Welcome {
                    nonce: n,
                    worker_id,
                    dispatcher,
                } if n == nonce => Some((worker_id, dispatcher)),
                _ => None,
            },
        )
        .await?;
        tracing::info!(worker = id, %dispatcher, "found the dispatcher; assigned id {id}");
        Ok((id, dispatcher))
    }

    async fn session(
        &self,
        id: WorkerId,
        dispatcher: SocketAddr,
        shutdown: &CancellationToken,
    ) -> SessionEnd {
        let mut conn = match self.register(id, dispatcher).await {
            Ok(conn) => conn,
            Err(e) => return SessionEnd::Lost(format!("registration failed: {e:#}")),
        };
        self.board.update(self.index, |s| {
            s.id = Some(id);
            s.state = "registered".into();
            s.dispatcher = Some(dispatcher.to_string());
            s.registrations += 1;
        });
        tracing::info!(
            worker = id,
            weight = self.weight,
            "registered with weight {}",
            self.weight
        );

        let mut activation = Activation::Idle;
        let mut next_report: Option<Instant> = None;
        let mut heartbeat = tokio::time::interval(self.config.heartbeat_interval());
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let timeout = self.config.dispatcher_timeout();
        let mut heard = Instant::now();
        loop {
            let result = tokio::select! {
                // Frames first: after this process was stopped, what the dispatcher sent
                // meanwhile is read before its silence is judged.
                biased;
                _ = shutdown.cancelled() => {
                    // Tell the dispatcher now rather than make it wait for our silence.
                    let _ = conn.send(id, Message::Leaving).await;
                    return SessionEnd::Shutdown;
                }
                frame = conn.read_frame() => match frame {
                    Ok(Some(frame)) => {
                        heard = Instant::now();
                        self.answer(id, frame, &mut conn, &mut activation, &mut next_report).await
                    }
                    Ok(None) => return SessionEnd::Lost("the dispatcher closed the connection".into()),
                    Err(e) => return SessionEnd::Lost(format!("bad frame from the dispatcher ({e})")),
                },
                _ = tokio::time::sleep_until(heard + timeout) => {
                    return SessionEnd::Lost(format!("nothing from the dispatcher for {} ms", timeout.as_millis()));
                }
                _ = heartbeat.tick() => conn.send(id, Message::Heartbeat).await,
                _ = sleep_until(next_report), if next_report.is_some() => {
                    let Some(activated) = activation.next_report(self.config.reports) else { continue };
                    if let Err(e) = conn.send(id, Message::Report { activated }).await {
                        return SessionEnd::Lost(e.to_string());
                    }
                    if activated {
                        tracing::info!(worker = id, "report: activated");
                        next_report = Some(Instant::now() + self.config.random_report_interval());
                        continue;
                    }
                    next_report = None;
                    tracing::info!(worker = id, "report: not activated; deactivated");
                    self.board.update(self.index, |s| s.state = "registered".into());
                    if terminates(self.config.terminate_probability, rand::random()) {
                        tracing::info!(worker = id, probability = self.config.terminate_probability, "terminating after deactivation");
                        return SessionEnd::Terminated;
                    }
                    Ok(())
                }
            };
            if let Err(e) = result {
                return SessionEnd::Lost(e.to_string());
            }
        }
    }

    async fn register(&self, id: WorkerId, dispatcher: SocketAddr) -> anyhow::Result<Connection> {
        let mut conn = Connection::connect(dispatcher, self.codec.clone()).await?;
        conn.send(
            id,
            Message::Register {
                weight: self.weight,
                heartbeat_ms: u32::try_from(self.config.heartbeat_interval_ms).unwrap_or(u32::MAX),
            },
        )
        .await?;
        let reply = tokio::time::timeout(REGISTER_TIMEOUT, conn.read_frame()).await;
        match reply {
            Ok(Ok(Some(Frame {
                message: Message::Registered { worker_id },
                ..
            }))) if worker_id == id => Ok(conn),
            Ok(Ok(Some(Frame {
                message: Message::Rejected { reason },
                ..
            }))) => anyhow::bail!("refused: {reason}"),
            Ok(Ok(Some(frame))) => anyhow::bail!("unexpected answer {:?}", frame.message.kind()),
            Ok(Ok(None)) => anyhow::bail!("connection closed"),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => anyhow::bail!("no answer within {REGISTER_TIMEOUT:?}"),
        }
    }

    /// Answers one frame from the dispatcher. Orders addressed to another id are ignored.
    async fn answer(
        &self,
        id: WorkerId,
        frame: Frame,
        conn: &mut Connection,
        activation: &mut Activation,
        next_report: &mut Option<Instant>,
    ) -> Result<(), proto::ProtoError> {
        match activation.answer(id, &frame.message) {
            Answer::Reply { reply, started } => {
                if started {
                    tracing::info!(worker = id, "activated");
                    *next_report = Some(Instant::now() + self.config.random_report_interval());
                    self.board.update(self.index, |s| {
                        s.state = "active".into();
                        s.activations += 1;
                    });
                }
                conn.send(id, reply).await
            }
            Answer::NotForMe(addressed_to) => {
                tracing::warn!(
                    worker = id,
                    addressed_to,
                    "ignoring an order addressed to another worker"
                );
                Ok(())
            }
            // The dispatcher's heartbeat: hearing it is all it is for.
            Answer::NotAnOrder if frame.message == Message::Heartbeat => Ok(()),
            Answer::NotAnOrder => {
                tracing::warn!(worker = id, kind = ?frame.message.kind(), "ignoring unexpected frame from the dispatcher");
                Ok(())
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
