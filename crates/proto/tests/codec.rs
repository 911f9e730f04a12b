//! The codec's promises: every frame round-trips, no input makes it panic, oversized frames are
//! refused from their length prefix alone, and a wrong or missing key is rejected.

use bytes::{BufMut, BytesMut};
use proptest::prelude::*;
use proto::{ClientSession, Entry, Op, Primaryship, Reply, StoreMessage, StoreNodeStatus, Write};
use proto::{
    ClusterKey, Colour, DispatcherStatus, ElectionMessage, ElectionNodeStatus, Frame, FrameCodec,
    HEADER_LEN, LeaderView, Leadership, MemberStatus, Message, MessageKind, PROTOCOL_VERSION,
    ProtoError, WorkerProcessStatus, WorkerRow, WorkerTaskStatus,
};
use tokio_util::codec::{Decoder, Encoder};

fn arb_row() -> impl Strategy<Value = WorkerRow> {
    (
        any::<u64>(),
        ".{0,30}",
        any::<u32>(),
        any::<u64>(),
        any::<bool>(),
        any::<bool>(),
        any::<u32>(),
        any::<i64>(),
        any::<u64>(),
        -1e9f64..1e9,
    )
        .prop_map(
            |(id, addr, weight, activations, active, available, answers, lc, lh, share)| {
                WorkerRow {
                    id,
                    addr,
                    weight,
                    activations,
                    active,
                    available,
                    answers_since_activation: answers,
                    last_comm_ms_ago: lc,
                    last_heard_ms_ago: lh,
                    share,
                }
            },
        )
}

fn arb_task() -> impl Strategy<Value = WorkerTaskStatus> {
    (
        any::<u32>(),
        any::<Option<u64>>(),
        any::<u32>(),
        "[a-z]{0,12}",
        any::<Option<String>>(),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(
            |(index, id, weight, state, dispatcher, activations, registrations)| WorkerTaskStatus {
                index,
                id,
                weight,
                state,
                dispatcher,
                activations,
                registrations,
            },
        )
}

fn arb_view() -> impl Strategy<Value = LeaderView> {
    (
        any::<u16>(),
        prop::collection::vec(any::<u64>(), 0..8),
        any::<u64>(),
        prop::collection::vec((any::<u64>(), any::<bool>()), 0..8),
    )
        .prop_map(|(tcp_port, membership, version, colours)| LeaderView {
            tcp_port,
            membership,
            version,
            colours: colours
                .into_iter()
                .map(|(id, g)| (id, if g { Colour::Green } else { Colour::Red }))
                .collect(),
        })
}

fn arb_election() -> impl Strategy<Value = ElectionMessage> {
    prop_oneof![
        any::<u64>().prop_map(|term| ElectionMessage::Hello { term }),
        (any::<u64>(), any::<u64>())
            .prop_map(|(term, version)| ElectionMessage::Election { term, version }),
        (any::<u64>(), any::<u64>())
            .prop_map(|(term, candidate)| ElectionMessage::Answer { term, candidate }),
        (any::<u64>(), any::<u64>())
            .prop_map(|(term, candidate)| ElectionMessage::Vote { term, candidate }),
        (any::<u64>(), any::<u64>(), arb_view())
            .prop_map(|(term, seq, view)| ElectionMessage::Coordinator { term, seq, view }),
        (any::<u64>(), any::<u64>(), arb_view())
            .prop_map(|(term, seq, view)| ElectionMessage::Heartbeat { term, seq, view }),
        (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
            |(term, seq, leader, version)| ElectionMessage::Ack {
                term,
                seq,
                leader,
                version
            }
        ),
        (any::<u64>(), any::<u64>()).prop_map(|(term, seq)| ElectionMessage::Join { term, seq }),
        (any::<u64>(), any::<bool>(), arb_view()).prop_map(|(term, g, view)| {
            ElectionMessage::Joined {
                term,
                colour: if g { Colour::Green } else { Colour::Red },
                view,
            }
        }),
        (any::<u64>(), any::<u64>())
            .prop_map(|(term, version)| ElectionMessage::PreVote { term, version }),
        (any::<u64>(), any::<u64>())
            .prop_map(|(term, candidate)| ElectionMessage::PreVoteGranted { term, candidate }),
    ]
}

fn arb_write() -> impl Strategy<Value = Write> {
    prop_oneof![
        (".{0,20}", ".{0,40}").prop_map(|(key, value)| Write::Set { key, value }),
        ".{0,20}".prop_map(|key| Write::Delete { key }),
        prop::collection::vec((".{0,10}", ".{0,10}"), 0..5)
            .prop_map(|pairs| Write::Update { pairs }),
    ]
}

fn arb_reply() -> impl Strategy<Value = Reply> {
    prop_oneof![
        prop::option::of(".{0,20}").prop_map(Reply::Value),
        any::<u64>().prop_map(|seq| Reply::Written { seq }),
        (
            any::<u64>(),
            prop::collection::vec((".{0,10}", ".{0,10}"), 0..5)
        )
            .prop_map(|(seq, pairs)| Reply::State { seq, pairs }),
        (prop::option::of(any::<u64>()), prop::option::of(".{0,20}"))
            .prop_map(|(primary, addr)| Reply::Redirect { primary, addr }),
        ".{0,30}".prop_map(|reason| Reply::Unavailable { reason }),
        ".{0,30}".prop_map(|reason| Reply::Invalid { reason }),
        Just(Reply::Killed),
    ]
}

fn arb_store() -> impl Strategy<Value = StoreMessage> {
    let op = prop_oneof![
        (".{0,20}", any::<bool>()).prop_map(|(key, stale)| Op::Get { key, stale }),
        arb_write().prop_map(Op::Write),
        Just(Op::State),
        ".{0,20}".prop_map(|token| Op::Kill { token }),
    ];
    let entry = (
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        arb_write(),
    )
        .prop_map(|(seq, epoch, client, request, write)| Entry {
            seq,
            epoch,
            client,
            request,
            write,
        });
    prop_oneof![
        (any::<u64>(), any::<u64>(), op).prop_map(|(client, request, op)| StoreMessage::Request {
            client,
            request,
            op
        }),
        (any::<u64>(), arb_reply())
            .prop_map(|(request, reply)| StoreMessage::Reply { request, reply }),
        (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
            |(epoch, node, last_seq, last_epoch)| StoreMessage::Join {
                epoch,
                node,
                last_seq,
                last_epoch
            }
        ),
        (
            any::<u64>(),
            prop::collection::vec(entry, 0..4),
            any::<u64>()
        )
            .prop_map(|(epoch, entries, commit)| StoreMessage::Append {
                epoch,
                entries,
                commit
            }),
        (
            any::<u64>(),
            any::<u64>(),
            prop::collection::vec((".{0,10}", ".{0,10}"), 0..5),
            any::<bool>()
        )
            .prop_map(|(epoch, seq, pairs, done)| StoreMessage::Snapshot {
                epoch,
                seq,
                seq_epoch: epoch,
                pairs,
                sessions: vec![ClientSession {
                    client: seq,
                    request: epoch,
                    seq
                }],
                done
            }),
        (any::<u64>(), any::<u64>())
            .prop_map(|(epoch, last_seq)| StoreMessage::Appended { epoch, last_seq }),
        any::<u64>().prop_map(|epoch| StoreMessage::Fenced { epoch }),
    ]
}

fn arb_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        any::<u64>().prop_map(|nonce| Message::Discover { nonce }),
        (
            any::<u64>(),
            any::<u64>(),
            any::<std::net::SocketAddrV4>().prop_map(std::net::SocketAddr::V4)
        )
            .prop_map(|(nonce, worker_id, dispatcher)| Message::Welcome {
                nonce,
                worker_id,
                dispatcher
            }),
        (any::<u32>(), any::<u32>()).prop_map(|(weight, heartbeat_ms)| Message::Register {
            weight,
            heartbeat_ms
        }),
        any::<u64>().prop_map(|worker_id| Message::Registered { worker_id }),
        (any::<u64>(), any::<u64>())
            .prop_map(|(worker_id, request)| Message::StatusCheck { worker_id, request }),
        (any::<bool>(), any::<u64>())
            .prop_map(|(activated, request)| Message::Status { activated, request }),
        (any::<u64>(), any::<u64>())
            .prop_map(|(worker_id, request)| Message::Activate { worker_id, request }),
        any::<u64>().prop_map(|request| Message::WorkerActivated { request }),
        any::<bool>().prop_map(|activated| Message::Report { activated }),
        Just(Message::Heartbeat),
        Just(Message::Leaving),
        Just(Message::StatusRequest),
        (any::<u64>(), any::<u32>())
            .prop_map(|(offset, limit)| Message::StatusPage { offset, limit }),
        any::<u64>().prop_map(|id| Message::RemoveMember { id }),
        any::<[u8; 16]>().prop_map(|nonce| Message::Handshake { nonce }),
        (
            prop::collection::vec(arb_row(), 0..8),
            -1e6f64..1e6,
            any::<u64>(),
            any::<u32>()
        )
            .prop_map(|(workers, gap, total, active)| Message::DispatcherStatus(
                DispatcherStatus {
                    worker_count: 7,
                    workers,
                    fairness_gap: gap,
                    fairness_bound: gap.abs() + 1.0,
                    total_activations: total,
                    active,
                    max_active: 5,
                    uptime_ms: total,
                    auth_failures: 3,
                    bad_frames: 4,
                    replayed: 5,
                }
            )),
        prop::collection::vec(arb_task(), 0..8)
            .prop_map(|workers| Message::WorkerStatus(WorkerProcessStatus { workers })),
        ".{0,100}".prop_map(|reason| Message::Rejected { reason }),
        arb_election().prop_map(Message::Election),
        arb_store().prop_map(Message::Store),
        (
            any::<u64>(),
            "[a-z]{0,9}",
            any::<u64>(),
            prop::option::of(any::<u64>())
        )
            .prop_map(|(id, role, epoch, until_ms)| Message::StoreStatus(Box::new(
                StoreNodeStatus {
                    id,
                    role,
                    epoch,
                    primary: Some(id),
                    primary_addr: Some("store1:7300".into()),
                    in_sync: vec![epoch],
                    last_seq: epoch,
                    commit_seq: id,
                    lag: 0,
                    lease_ms_left: 150,
                    witness: "ok".into(),
                    alerts: vec!["replication link to 2 down".into()],
                    primaryships: vec![Primaryship {
                        epoch,
                        from_ms: id,
                        until_ms
                    }],
                    keys: 3,
                    auth_failures: 0,
                    bad_frames: 1,
                }
            ))),
        (
            any::<u64>(),
            "[a-z]{0,9}",
            any::<u64>(),
            prop::collection::vec(
                (any::<u64>(), any::<u64>(), prop::option::of(any::<u64>())),
                0..4
            )
        )
            .prop_map(|(id, state, term, tenures)| Message::ElectionStatus(
                ElectionNodeStatus {
                    id,
                    state,
                    leader: Some(id),
                    term,
                    colour: Some(Colour::Green),
                    members: vec![MemberStatus { id, colour: None }],
                    membership: vec![id, term],
                    quorum: 2,
                    leaderships: tenures
                        .into_iter()
                        .map(|(term, from_ms, until_ms)| Leadership {
                            term,
                            from_ms,
                            until_ms
                        })
                        .collect(),
                    auth_failures: term,
                    bad_frames: id,
                    replayed: term,
                }
            )),
    ]
}

fn codecs() -> [FrameCodec; 2] {
    [
        FrameCodec::default(),
        FrameCodec::new(1 << 20, Some(ClusterKey::new("s3cret"))),
    ]
}

proptest! {
    #[test]
    fn every_frame_round_trips_through_tcp_framing(sender in any::<u64>(), message in arb_message()) {
        for mut codec in codecs() {
            let frame = Frame::new(sender, message.clone());
            let mut buf = BytesMut::new();
            codec.encode(&frame, &mut buf).unwrap();
            prop_assert_eq!(codec.decode(&mut buf).unwrap(), Some(frame));
            prop_assert!(buf.is_empty());
        }
    }

    #[test]
    fn every_frame_round_trips_as_a_datagram(sender in any::<u64>(), message in arb_message()) {
        for codec in codecs() {
            let frame = Frame::new(sender, message.clone());
            let datagram = codec.encode_datagram(&frame).unwrap();
            prop_assert_eq!(codec.decode_datagram(&datagram).unwrap(), frame);
        }
    }

    #[test]
    fn frames_split_anywhere_reassemble(message in arb_message(), split in 0usize..200) {
        let mut codec = FrameCodec::default();
        let frame = Frame::new(7, message);
        let mut whole = BytesMut::new();
        codec.encode(&frame, &mut whole).unwrap();
        let split = split.min(whole.len());
        let mut buf = BytesMut::from(&whole[..split]);
        let first = codec.decode(&mut buf).unwrap();
        if split < whole.len() {
            prop_assert_eq!(first, None);
            buf.extend_from_slice(&whole[split..]);
            prop_assert_eq!(codec.decode(&mut buf).unwrap(), Some(frame));
        } else {
            prop_assert_eq!(first, Some(frame));
        }
    }

    #[test]
    fn any_bytes_into_the_decoders_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        for mut codec in codecs() {
            let _ = codec.decode_datagram(&bytes);
            let mut buf = BytesMut::from(&bytes[..]);
            // Keep decoding until the decoder wants more input or errors: neither may panic.
            while let Ok(Some(_)) = codec.decode(&mut buf) {}
        }
    }

    #[test]
    fn any_payload_behind_a_valid_header_never_panics(kind in any::<u8>(), payload in prop::collection::vec(any::<u8>(), 0..256)) {
        let mut buf = BytesMut::new();
        buf.put_u32((HEADER_LEN + payload.len()) as u32);
        buf.put_slice(b"HL");
        buf.put_u8(PROTOCOL_VERSION);
        buf.put_u8(kind);
        buf.put_u8(0);
        buf.put_u64(9);
        buf.put_u64(1);
        buf.put_u64(2);
        buf.put_slice(&payload);
        let _ = FrameCodec::default().decode(&mut buf);
    }

    #[test]
    fn flipping_any_bit_of_a_keyed_frame_is_detected(message in arb_message(), bit in any::<prop::sample::Index>()) {
        let codec = FrameCodec::new(1 << 20, Some(ClusterKey::new("k")));
        let mut datagram = codec.encode_datagram(&Frame::new(1, message)).unwrap().to_vec();
        // Flip a bit after the length prefix: header, tag or payload.
        let index = 4 * 8 + bit.index((datagram.len() - 4) * 8);
        datagram[index / 8] ^= 1 << (index % 8);
        prop_assert!(codec.decode_datagram(&datagram).is_err());
    }
}

#[test]
fn an_oversized_length_prefix_is_refused_before_any_body_arrives() {
    let mut codec = FrameCodec::new(1024, None);
    let mut buf = BytesMut::new();
    buf.put_u32(u32::MAX);
    let capacity_before = buf.capacity();
    match codec.decode(&mut buf) {
        Err(ProtoError::FrameTooLarge { len, max }) => {
            assert_eq!(len, u32::MAX as usize);
            assert_eq!(max, 1024);
        }
        other => panic!("expected FrameTooLarge, got {other:?}"),
    }
    assert_eq!(
        buf.capacity(),
        capacity_before,
        "decoder reserved memory for a refused frame"
    );
}

#[test]
fn encoding_a_frame_above_the_limit_fails_cleanly() {
    let codec = FrameCodec::new(64, None);
    let frame = Frame::new(
        0,
        Message::Rejected {
            reason: "x".repeat(100),
        },
    );
    assert!(matches!(
        codec.encode_datagram(&frame),
        Err(ProtoError::FrameTooLarge { .. })
    ));
}

#[test]
fn wrong_key_and_missing_tag_are_rejected_as_auth_failures() {
    let frame = Frame::new(
        3,
        Message::Register {
            weight: 5,
            heartbeat_ms: 1000,
        },
    );
    let alice = FrameCodec::new(1 << 20, Some(ClusterKey::new("alice")));
    let mallory = FrameCodec::new(1 << 20, Some(ClusterKey::new("mallory")));
    let plain = FrameCodec::default();

    let signed_by_mallory = mallory.encode_datagram(&frame).unwrap();
    let err = alice.decode_datagram(&signed_by_mallory).unwrap_err();
    assert!(matches!(err, ProtoError::BadAuthTag) && err.is_auth_failure());

    let unsigned = plain.encode_datagram(&frame).unwrap();
    let err = alice.decode_datagram(&unsigned).unwrap_err();
    assert!(matches!(err, ProtoError::MissingAuthTag) && err.is_auth_failure());

    // A daemon without a key still understands keyed peers (it just cannot check them).
    assert_eq!(plain.decode_datagram(&signed_by_mallory).unwrap(), frame);
}

#[test]
fn bad_magic_version_and_kind_give_typed_errors() {
    let codec = FrameCodec::default();
    let good = codec
        .encode_datagram(&Frame::new(1, Message::Heartbeat))
        .unwrap()
        .to_vec();

    let mut bad_magic = good.clone();
    bad_magic[4] = b'X';
    assert!(matches!(
        codec.decode_datagram(&bad_magic),
        Err(ProtoError::BadMagic(_))
    ));

    let mut bad_version = good.clone();
    bad_version[6] = 99;
    assert!(matches!(
        codec.decode_datagram(&bad_version),
        Err(ProtoError::UnsupportedVersion(99))
    ));

    let mut unknown_kind = good.clone();
    unknown_kind[7] = 200;
    assert!(matches!(
        codec.decode_datagram(&unknown_kind),
        Err(ProtoError::UnknownKind(200))
    ));

    let mut wrong_kind = good.clone();
    wrong_kind[7] = MessageKind::Leaving as u8;
    assert!(matches!(
        codec.decode_datagram(&wrong_kind),
        Err(ProtoError::KindMismatch { .. })
    ));

    let truncated = &good[..good.len() - 1];
    assert!(codec.decode_datagram(truncated).is_err());
}

#[test]
fn every_kind_byte_maps_back_to_its_kind() {
    for kind in MessageKind::ALL {
        assert_eq!(MessageKind::from_u8(kind as u8), Some(kind));
    }
    assert_eq!(MessageKind::from_u8(0), None);
}
