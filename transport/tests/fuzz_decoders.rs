//! Fuzz-style properties: arbitrary bytes fed to every decoder and to the frame decoder in
//! arbitrary chunks produce frames or typed errors, never a panic, and never a buffer beyond
//! the frame bound.

use proptest::prelude::*;
use tessera_transport::{
    decode_client_request, decode_client_response, decode_hello, decode_raft_batch, DecodeLimits,
    FrameDecoder, FRAME_HEADER_BYTES,
};

fn decode_everything(bytes: &[u8], limits: &DecodeLimits) {
    let _ = decode_raft_batch(bytes, limits);
    let _ = decode_client_request(bytes, limits);
    let _ = decode_client_response(bytes, limits);
    let _ = decode_hello(bytes, limits);
}

/// Random bytes with a schema's file identifier in place, so the verifier itself is exercised.
fn identified(identifier: &'static [u8; 4]) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 8..512).prop_map(move |mut bytes| {
        bytes[4..8].copy_from_slice(identifier);
        bytes
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic_a_decoder(bytes in prop::collection::vec(any::<u8>(), 0..1024)) {
        decode_everything(&bytes, &DecodeLimits::default());
    }

    #[test]
    fn random_bytes_with_identifiers_never_panic_a_decoder(
        bytes in prop_oneof![identified(b"TRFT"), identified(b"TCLI"), identified(b"TSHK")],
    ) {
        decode_everything(&bytes, &DecodeLimits::default());
        let tight = DecodeLimits {
            verifier_depth_max: 2,
            verifier_tables_max: 2,
            verifier_apparent_bytes_max: 16,
            ..DecodeLimits::default()
        };
        decode_everything(&bytes, &tight);
    }

    #[test]
    fn frame_decoder_survives_any_stream(
        bytes in prop::collection::vec(any::<u8>(), 0..2048),
        chunk_bytes in 1..64usize,
        frame_bytes_max in 0..256u32,
    ) {
        let mut decoder = FrameDecoder::new(frame_bytes_max);
        'stream: for chunk in bytes.chunks(chunk_bytes) {
            if decoder.push(chunk).is_err() {
                break;
            }
            loop {
                match decoder.next_frame() {
                    Ok(Some(frame)) => {
                        prop_assert!(frame.payload.len() <= frame_bytes_max as usize);
                    }
                    Ok(None) => break,
                    Err(_) => break 'stream,
                }
            }
            prop_assert!(
                decoder.buffered_bytes() <= FRAME_HEADER_BYTES + frame_bytes_max as usize
            );
        }
        let _ = decoder.finish();
    }
}
