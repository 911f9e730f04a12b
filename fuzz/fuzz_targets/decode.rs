//! Feeds arbitrary bytes to every decoding path: the stream decoder (repeatedly, as a
//! connection would) and the datagram decoder, keyed and unkeyed. None may panic.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use proto::{ClusterKey, FrameCodec};
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    for mut codec in [
        FrameCodec::new(1 << 16, None),
        FrameCodec::new(1 << 16, Some(ClusterKey::new("fuzz"))),
    ] {
        let _ = codec.decode_datagram(data);
        let mut buf = BytesMut::from(data);
        while let Ok(Some(frame)) = codec.decode(&mut buf) {
            // Whatever decodes must encode again.
            codec.encode_datagram(&frame).expect("a decoded frame re-encodes");
        }
    }
});
