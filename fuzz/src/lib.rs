//! What the fuzz targets check, shared between them (each target in `fuzz_targets/` is a
//! thin `fuzz_target!` around one function here).
//!
//! The contract under test: any bytes from a socket or a disk give a value or a typed error,
//! never a panic, a hang or an allocation out of proportion to the input. Where a decoder
//! accepts its input, two more properties are checked:
//!
//! 1. decoding is independent of how the stream was cut into chunks;
//! 2. what was decoded encodes to bytes that decode to the same value (the codec loses or
//!    invents nothing the receiver acted on); snapshot chunks are only decoded.
//!
//! The WAL input format (seeds are written by `wal/tests/fuzz_seeds.rs`):
//!
//! ```text
//! [first segment number - 1: u8 (mod 4)][segment bytes][SEGMENT_SEPARATOR][segment bytes]...
//! ```

use std::path::Path;

use tessera_transport::snapshot_chunk::decode_snapshot_chunk;
use tessera_transport::{
    decode_client_request, decode_client_response, decode_hello, decode_raft_batch,
    encode_client_request, encode_client_response, encode_hello, encode_raft_batch, DecodeLimits,
    Frame, FrameDecoder, FrameType, TransportError,
};
use tessera_wal::format::SegmentSeq;

/// Separates segment files in a WAL fuzz input.
pub const SEGMENT_SEPARATOR: &[u8] = b"--tessera-segment--";

/// Segment files per WAL input, at most.
pub const SEGMENTS_MAX: usize = 4;

/// A byte stream as a peer or client sends it: the first byte picks a chunk size, the rest
/// is the stream. Every frame it yields is decoded by its type.
pub fn frame_stream(data: &[u8]) {
    let Some((&chunk_choice, stream)) = data.split_first() else {
        return;
    };
    let limits = DecodeLimits::default();
    let whole = split_frames(stream, stream.len().max(1), limits.frame_bytes_max);
    let chunk_bytes = usize::from(chunk_choice % 32) + 1;
    let chunked = split_frames(stream, chunk_bytes, limits.frame_bytes_max);
    assert_eq!(
        whole, chunked,
        "frames depend on the chunking ({chunk_bytes} bytes)"
    );
    for frame in &whole.0 {
        decode_payload(frame, &limits);
    }
}

/// The frames of `stream` fed in `chunk_bytes` pieces, then the first error (as text).
fn split_frames(
    stream: &[u8],
    chunk_bytes: usize,
    frame_bytes_max: u32,
) -> (Vec<Frame>, Option<String>) {
    let mut decoder = FrameDecoder::new(frame_bytes_max);
    let mut frames = Vec::new();
    for chunk in stream.chunks(chunk_bytes) {
        if let Err(error) = decoder.push(chunk) {
            return (frames, Some(error.to_string()));
        }
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    assert!(frame.payload.len() <= frame_bytes_max as usize);
                    frames.push(frame);
                }
                Ok(None) => break,
                Err(error) => return (frames, Some(error.to_string())),
            }
        }
    }
    (frames, decoder.finish().err().map(|e| e.to_string()))
}

/// Decodes a frame's payload by its type; a payload that decodes must round-trip.
pub fn decode_payload(frame: &Frame, limits: &DecodeLimits) {
    let payload = frame.payload.as_slice();
    match frame.frame_type {
        FrameType::Hello => {
            if let Ok(hello) = decode_hello(payload, limits) {
                let again = decode_hello(&encode_hello(&hello), limits);
                assert_eq!(again.ok(), Some(hello), "Hello does not round-trip");
            }
        }
        FrameType::RaftBatch => {
            if let Ok((header, messages)) = decode_raft_batch(payload, limits) {
                let again = decode_raft_batch(&encode_raft_batch(&header, &messages), limits);
                assert_ok_eq(again, (header, messages), "RaftBatch");
            }
        }
        FrameType::ClientRequest => client_request(payload, limits),
        // No round trip: re-encoding needs the whole snapshot, of `total_bytes` (any u64).
        FrameType::SnapshotChunk => drop(decode_snapshot_chunk(payload, limits)),
        FrameType::ClientResponse => {
            if let Ok(response) = decode_client_response(payload, limits) {
                let again = decode_client_response(&encode_client_response(&response), limits);
                assert_ok_eq(again, response, "ClientResponse");
            }
        }
    }
}

/// A client request payload: decoded, and if accepted, round-tripped.
pub fn client_request(payload: &[u8], limits: &DecodeLimits) {
    if let Ok(request) = decode_client_request(payload, limits) {
        let again = decode_client_request(&encode_client_request(&request), limits);
        assert_ok_eq(again, request, "ClientRequest");
    }
}

fn assert_ok_eq<T: PartialEq + std::fmt::Debug>(
    again: Result<T, TransportError>,
    first: T,
    what: &str,
) {
    match again {
        Ok(value) => assert_eq!(value, first, "{what} does not round-trip"),
        Err(error) => panic!("{what} re-encoded from {first:?} is refused: {error}"),
    }
}

/// Splits a WAL fuzz input (see the module docs) into the first segment number and the
/// segment files' bytes.
pub fn wal_segments(data: &[u8]) -> (SegmentSeq, Vec<&[u8]>) {
    let Some((&first, rest)) = data.split_first() else {
        return (SegmentSeq(1), Vec::new());
    };
    let mut segments = Vec::new();
    let mut remaining = rest;
    while segments.len() + 1 < SEGMENTS_MAX {
        match find(remaining, SEGMENT_SEPARATOR) {
            Some(at) => {
                segments.push(&remaining[..at]);
                remaining = &remaining[at + SEGMENT_SEPARATOR.len()..];
            }
            None => break,
        }
    }
    segments.push(remaining);
    (SegmentSeq(1 + u64::from(first % 4)), segments)
}

/// Joins segment files into one WAL fuzz input (the inverse of [`wal_segments`]).
pub fn wal_input(first: SegmentSeq, segments: &[Vec<u8>]) -> Vec<u8> {
    assert!((1..=4).contains(&first.0) && segments.len() <= SEGMENTS_MAX);
    let mut out = vec![(first.0 - 1) as u8];
    for (i, segment) in segments.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(SEGMENT_SEPARATOR);
        }
        out.extend_from_slice(segment);
    }
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Writes the input's segments as files into `dir` and runs the recovery replay
/// `Wal::open` runs. It must return `Ok` or a typed error; an `Ok` index must hold its
/// invariants and end within the newest segment.
pub fn wal_recovery(data: &[u8], dir: &Path) {
    let (first, segments) = wal_segments(data);
    let mut seq = first;
    for bytes in &segments {
        std::fs::write(dir.join(seq.file_name()), bytes).expect("write a scratch segment");
        seq = seq.next();
    }
    if let Ok(replayed) = tessera_wal::recovery::replay(dir) {
        replayed.index.invariants();
        let scan = &replayed.scan;
        assert!(scan.end_offset <= scan.newest_len);
        if let Some(torn) = &scan.torn_tail {
            assert!(torn.offset + torn.bytes <= scan.newest_len);
        }
    }
}
