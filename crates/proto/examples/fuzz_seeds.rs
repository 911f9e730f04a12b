//! Writes one valid frame of every message kind, plain and keyed with the fuzz target's key,
//! into the directory given (the fuzzer's seed corpus), so fuzzing starts past the header checks.
//!   cargo run -p proto --example fuzz_seeds -- fuzz/corpus/decode

use std::net::SocketAddr;

use proto::{
    ClusterKey, Colour, DispatcherStatus, ElectionMessage, ElectionNodeStatus, Frame, FrameCodec,
    LeaderView, MAGIC, Message, MessageKind, PROTOCOL_VERSION, WorkerProcessStatus,
};

fn samples() -> Vec<Message> {
    let addr: SocketAddr = "172.30.77.2:7101".parse().expect("valid address");
    let view = LeaderView {
        tcp_port: 7201,
        membership: vec![1, 2, 3],
        version: 2,
        colours: vec![(1, Colour::Green), (2, Colour::Red)],
    };
    vec![
        Message::Discover { nonce: 7 },
        Message::Welcome {
            nonce: 7,
            worker_id: 3,
            dispatcher: addr,
        },
        Message::Register {
            weight: 5,
            heartbeat_ms: 1000,
        },
        Message::Registered { worker_id: 3 },
        Message::StatusCheck {
            worker_id: 3,
            request: 8,
        },
        Message::Status {
            activated: false,
            request: 8,
        },
        Message::Activate {
            worker_id: 3,
            request: 9,
        },
        Message::WorkerActivated { request: 9 },
        Message::Report { activated: true },
        Message::Heartbeat,
        Message::Leaving,
        Message::StatusRequest,
        Message::StatusPage {
            offset: 100,
            limit: 50,
        },
        Message::Handshake { nonce: [7; 16] },
        Message::RemoveMember { id: 4 },
        Message::DispatcherStatus(DispatcherStatus {
            worker_count: 7,
            workers: vec![],
            fairness_gap: 0.5,
            fairness_bound: 1.0,
            total_activations: 9,
            active: 1,
            max_active: 5,
            uptime_ms: 1,
            auth_failures: 0,
            bad_frames: 0,
            replayed: 0,
        }),
        Message::WorkerStatus(WorkerProcessStatus { workers: vec![] }),
        Message::Rejected {
            reason: "no".into(),
        },
        Message::Election(ElectionMessage::Hello { term: 1 }),
        Message::Election(ElectionMessage::Election {
            term: 2,
            version: 1,
        }),
        Message::Election(ElectionMessage::Answer {
            term: 2,
            candidate: 1,
        }),
        Message::Election(ElectionMessage::Vote {
            term: 2,
            candidate: 3,
        }),
        Message::Election(ElectionMessage::Coordinator {
            term: 2,
            seq: 0,
            view: view.clone(),
        }),
        Message::Election(ElectionMessage::Heartbeat {
            term: 2,
            seq: 4,
            view: view.clone(),
        }),
        Message::Election(ElectionMessage::Ack {
            term: 2,
            seq: 4,
            leader: 3,
            version: 2,
        }),
        Message::Election(ElectionMessage::Join { term: 2, seq: 3 }),
        Message::Election(ElectionMessage::Joined {
            term: 2,
            colour: Colour::Red,
            view,
        }),
        Message::Election(ElectionMessage::PreVote {
            term: 3,
            version: 2,
        }),
        Message::Election(ElectionMessage::PreVoteGranted {
            term: 3,
            candidate: 1,
        }),
        Message::ElectionStatus(ElectionNodeStatus {
            id: 3,
            state: "leader".into(),
            leader: Some(3),
            term: 2,
            colour: Some(Colour::Green),
            members: vec![],
            membership: vec![1, 2, 3],
            quorum: 2,
            leaderships: vec![],
            auth_failures: 0,
            bad_frames: 0,
            replayed: 0,
        }),
    ]
}

fn main() -> std::io::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/corpus/decode".into());
    std::fs::create_dir_all(&dir)?;
    let codecs = [
        ("plain", FrameCodec::default()),
        (
            "keyed",
            FrameCodec::new(1 << 20, Some(ClusterKey::new("fuzz"))),
        ),
    ];
    for (i, message) in samples().into_iter().enumerate() {
        for (name, codec) in &codecs {
            let datagram = codec
                .encode_datagram(&Frame::new(i as u64, message.clone()))
                .expect("samples encode");
            std::fs::write(format!("{dir}/{i:02}-{name}"), datagram)?;
        }
    }
    // A small frame whose payload claims a 32 MiB string: a starting point for claims that
    // must fail on the limit, before any allocation.
    let mut claim = datagram_with_payload(MessageKind::Rejected as u8, &[14, 252, 0, 0, 0, 2]);
    std::fs::write(format!("{dir}/claim-32mib"), &claim)?;
    claim.truncate(claim.len() - 1);
    std::fs::write(format!("{dir}/claim-truncated"), &claim)
}

/// An unkeyed frame with any payload, header and length prefix around it.
fn datagram_with_payload(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&MAGIC);
    body.push(PROTOCOL_VERSION);
    body.push(kind);
    body.push(0); // flags: no tag
    body.extend_from_slice(&[0; 24]); // sender and stamp
    body.extend_from_slice(payload);
    let mut datagram = (body.len() as u32).to_be_bytes().to_vec();
    datagram.extend_from_slice(&body);
    datagram
}
