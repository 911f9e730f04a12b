//! Encode + decode throughput of typical frames, with and without a cluster key.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use proto::{
    ClusterKey, DEFAULT_MAX_FRAME_LEN, DispatcherStatus, Frame, FrameCodec, Message, WorkerRow,
};
use tokio_util::codec::Decoder;

fn status_frame(rows: usize) -> Frame {
    let workers = (0..rows as u64)
        .map(|id| WorkerRow {
            id,
            addr: format!("172.31.77.{}:40000", id % 250),
            weight: (id % 10) as u32 + 1,
            activations: id * 3,
            active: id % 4 == 0,
            available: id % 4 != 0,
            answers_since_activation: 2,
            last_comm_ms_ago: 1234,
            last_heard_ms_ago: 321,
            share: 12.5,
        })
        .collect();
    Frame::new(
        0,
        Message::DispatcherStatus(DispatcherStatus {
            worker_count: 7,
            workers,
            fairness_gap: 0.75,
            fairness_bound: 1.5,
            total_activations: 1000,
            active: 5,
            max_active: 5,
            uptime_ms: 60_000,
            auth_failures: 0,
            bad_frames: 0,
            replayed: 0,
        }),
    )
}

fn round_trip(c: &mut Criterion) {
    let frames = [
        (
            "report",
            Frame::new(42, Message::Report { activated: true }),
        ),
        ("status_100_rows", status_frame(100)),
    ];
    let codecs = [
        ("plain", FrameCodec::new(DEFAULT_MAX_FRAME_LEN, None)),
        (
            "hmac",
            FrameCodec::new(DEFAULT_MAX_FRAME_LEN, Some(ClusterKey::new("bench-key"))),
        ),
    ];
    let mut group = c.benchmark_group("encode_decode");
    for (frame_name, frame) in &frames {
        for (codec_name, codec) in &codecs {
            let mut buf = BytesMut::new();
            codec.encode_into(frame, &mut buf).unwrap();
            group.throughput(Throughput::Bytes(buf.len() as u64));
            let mut codec = codec.clone();
            group.bench_function(format!("{frame_name}/{codec_name}"), |b| {
                b.iter(|| {
                    let mut buf = BytesMut::new();
                    codec.encode_into(black_box(frame), &mut buf).unwrap();
                    black_box(codec.decode(&mut buf).unwrap().unwrap())
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, round_trip);
criterion_main!(benches);
