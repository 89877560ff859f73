//! Snapshots too large for one `RaftBatch` frame travel as a stream of `SnapshotChunk` frames
//! (table `tessera.raft.SnapshotChunk`, file identifier `TSNP`).
//!
//! The sender cuts the snapshot's data into pieces of at most `snapshot_chunk_bytes` and writes
//! them in order on its connection; ordinary batches may go between two chunks, so heartbeats
//! keep flowing while a large snapshot is on its way. The receiver keeps one
//! [`SnapshotAssembler`] per connection and hands Raft a single `InstallSnapshot` message when
//! the last byte has arrived; the core never sees a chunk.
//!
//! Decoding checks, on top of the verifier:
//! 1. the header as for a batch (cluster id and node ids not 0), a Region id not 0, and a
//!    term of at most `term_max`;
//! 2. the snapshot metadata as in a batch (index and term not 0, term no newer than the
//!    message's, a valid configuration);
//! 3. `total_bytes` is at least 1 and at most `snapshot_bytes_max`, the chunk holds data, and
//!    `offset + data` stays within `total_bytes`.
//!
//! The assembler then checks that a chunk with `offset` > 0 continues the snapshot in
//! progress exactly (same Region, term, metadata and size, `offset` = bytes received); a
//! chunk with `offset` 0 starts a new snapshot and drops an unfinished one. Any violation is
//! an error that closes the connection; Raft sends the snapshot again.

use std::ops::Range;

use flatbuffers::FlatBufferBuilder;
use tessera_core::{Message, MessageBody, Payload, RegionId, Snapshot, SnapshotMetadata, Term};

use crate::generated::raft as fb;
use crate::raft_codec::{
    decode_header, decode_snapshot_metadata, encode_snapshot_metadata, RaftBatchHeader,
};
use crate::verify::verified_root;
use crate::{DecodeLimits, TransportError};

const FRAME: &str = "SnapshotChunk";
const IDENTIFIER: &str = "TSNP";

/// One decoded chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotChunk {
    pub header: RaftBatchHeader,
    pub region_id: RegionId,
    /// The term of the `InstallSnapshot` message the chunks make up.
    pub term: Term,
    pub metadata: SnapshotMetadata,
    pub total_bytes: u64,
    pub offset: u64,
    pub data: Vec<u8>,
}

/// True when `message` is a snapshot whose data is larger than `chunk_bytes`, so that it is
/// streamed as chunks instead of travelling inside a batch.
pub fn is_streamed(message: &Message, chunk_bytes: usize) -> bool {
    matches!(&message.body, MessageBody::InstallSnapshot { snapshot } if snapshot.data.len() > chunk_bytes)
}

/// Encodes the chunk of `snapshot` (sent in a message of `term`) covering `range` of its
/// data (frame type [`crate::FrameType::SnapshotChunk`]).
///
/// # Panics
/// If `range` is empty or not within the snapshot's data (a caller bug).
pub fn encode_snapshot_chunk(
    header: &RaftBatchHeader,
    region_id: RegionId,
    term: Term,
    snapshot: &Snapshot,
    range: Range<usize>,
) -> Vec<u8> {
    assert!(
        !range.is_empty() && range.end <= snapshot.data.len(),
        "chunk {range:?} of a {}-byte snapshot",
        snapshot.data.len()
    );
    let mut fbb = FlatBufferBuilder::with_capacity(range.len() + 256);
    let metadata = encode_snapshot_metadata(&mut fbb, &snapshot.metadata);
    let data = fbb.create_vector(&snapshot.data[range.clone()]);
    let root = fb::SnapshotChunk::create(
        &mut fbb,
        &fb::SnapshotChunkArgs {
            cluster_id: header.cluster_id.0,
            from_node: header.from_node.get(),
            from_core: header.from_core.0,
            to_node: header.to_node.get(),
            to_core: header.to_core.0,
            region_id: region_id.get(),
            term: term.get(),
            metadata: Some(metadata),
            total_bytes: snapshot.data.len() as u64,
            offset: range.start as u64,
            data: Some(data),
        },
    );
    fbb.finish(root, Some(IDENTIFIER));
    fbb.finished_data().to_vec()
}

/// Verifies and decodes a chunk payload.
///
/// # Errors
/// Verification errors and [`TransportError::InvalidField`] for the checks in the module
/// documentation.
pub fn decode_snapshot_chunk(
    payload: &[u8],
    limits: &DecodeLimits,
) -> Result<SnapshotChunk, TransportError> {
    let root = verified_root::<fb::SnapshotChunk>(FRAME, IDENTIFIER, payload, limits)?;
    let header = decode_header(
        FRAME,
        root.cluster_id(),
        (root.from_node(), root.from_core()),
        (root.to_node(), root.to_core()),
    )?;
    if root.region_id() == 0 {
        return Err(TransportError::invalid(
            FRAME,
            "region_id",
            "region id 0 is reserved",
        ));
    }
    let term = Term(root.term());
    if term.get() > limits.term_max {
        let reason = format!("{term} is above term_max {}", limits.term_max);
        return Err(TransportError::invalid(FRAME, "term", reason));
    }
    let metadata = decode_snapshot_metadata(FRAME, root.metadata(), term, limits)?;
    let total_bytes = root.total_bytes();
    if total_bytes == 0 || total_bytes > limits.snapshot_bytes_max {
        let reason = format!(
            "{total_bytes} bytes (snapshot_bytes_max {})",
            limits.snapshot_bytes_max
        );
        return Err(TransportError::invalid(FRAME, "total_bytes", reason));
    }
    let data = root.data().map(|v| v.bytes()).unwrap_or_default();
    let end = root.offset().checked_add(data.len() as u64);
    if data.is_empty() || end.is_none_or(|end| end > total_bytes) {
        let reason = format!(
            "{} bytes at offset {} of a {total_bytes}-byte snapshot",
            data.len(),
            root.offset()
        );
        return Err(TransportError::invalid(FRAME, "data", reason));
    }
    Ok(SnapshotChunk {
        header,
        region_id: RegionId(root.region_id()),
        term,
        metadata,
        total_bytes,
        offset: root.offset(),
        data: data.to_vec(),
    })
}

/// The snapshot a connection is receiving.
#[derive(Debug)]
struct Partial {
    region_id: RegionId,
    term: Term,
    metadata: SnapshotMetadata,
    total_bytes: u64,
    data: Vec<u8>,
}

/// Reassembles the chunks arriving on one connection. See the module documentation.
#[derive(Debug, Default)]
pub struct SnapshotAssembler {
    partial: Option<Partial>,
}

impl SnapshotAssembler {
    /// Adds a decoded chunk; returns the whole `InstallSnapshot` message with its Region once
    /// the last chunk is in.
    ///
    /// # Errors
    /// [`TransportError::InvalidField`] when the chunk does not continue the snapshot in
    /// progress.
    pub fn push(
        &mut self,
        chunk: SnapshotChunk,
    ) -> Result<Option<(RegionId, Message)>, TransportError> {
        if chunk.offset == 0 {
            // Grows with what arrives rather than trusting `total_bytes` up front.
            let capacity = chunk.total_bytes.min(2 * chunk.data.len() as u64) as usize;
            self.partial = Some(Partial {
                region_id: chunk.region_id,
                term: chunk.term,
                metadata: chunk.metadata.clone(),
                total_bytes: chunk.total_bytes,
                data: Vec::with_capacity(capacity),
            });
        }
        let Some(partial) = self.partial.as_mut() else {
            let reason = format!("offset {} with no snapshot in progress", chunk.offset);
            return Err(TransportError::invalid(FRAME, "offset", reason));
        };
        let continues = (partial.region_id, partial.term, partial.total_bytes)
            == (chunk.region_id, chunk.term, chunk.total_bytes)
            && partial.metadata == chunk.metadata
            && partial.data.len() as u64 == chunk.offset;
        if !continues {
            let reason = format!(
                "{} at offset {} does not continue {} at offset {}",
                chunk.region_id,
                chunk.offset,
                partial.region_id,
                partial.data.len()
            );
            self.partial = None;
            return Err(TransportError::invalid(FRAME, "offset", reason));
        }
        partial.data.extend_from_slice(&chunk.data);
        if (partial.data.len() as u64) < partial.total_bytes {
            return Ok(None);
        }
        let done = self
            .partial
            .take()
            .expect("a partial snapshot is in progress");
        let message = Message {
            from: chunk.header.from_node,
            to: chunk.header.to_node,
            term: done.term,
            body: MessageBody::InstallSnapshot {
                snapshot: Snapshot {
                    metadata: done.metadata,
                    data: Payload::from(done.data),
                },
            },
        };
        Ok(Some((done.region_id, message)))
    }

    /// Bytes of the snapshot in progress received so far.
    pub fn pending_bytes(&self) -> usize {
        self.partial.as_ref().map_or(0, |p| p.data.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClusterId, CoreId};
    use tessera_core::{ConfState, LogIndex, NodeId};

    fn header() -> RaftBatchHeader {
        RaftBatchHeader {
            cluster_id: ClusterId(7),
            from_node: NodeId(1),
            from_core: CoreId(0),
            to_node: NodeId(2),
            to_core: CoreId(1),
        }
    }

    fn snapshot(bytes: usize) -> Snapshot {
        Snapshot {
            metadata: SnapshotMetadata {
                index: LogIndex(40),
                term: Term(3),
                conf_state: ConfState {
                    voters: vec![NodeId(1), NodeId(2), NodeId(3)],
                    learners: vec![NodeId(4)],
                },
            },
            data: Payload::from((0..bytes).map(|i| (i * 7 % 251) as u8).collect::<Vec<u8>>()),
        }
    }

    fn chunks(snapshot: &Snapshot, chunk_bytes: usize) -> Vec<SnapshotChunk> {
        (0..snapshot.data.len())
            .step_by(chunk_bytes)
            .map(|start| {
                let end = (start + chunk_bytes).min(snapshot.data.len());
                let payload =
                    encode_snapshot_chunk(&header(), RegionId(9), Term(5), snapshot, start..end);
                decode_snapshot_chunk(&payload, &DecodeLimits::default()).unwrap()
            })
            .collect()
    }

    #[test]
    fn chunks_round_trip_and_reassemble_into_one_install_snapshot() {
        let snapshot = snapshot(10_000);
        let chunks = chunks(&snapshot, 3_000);
        assert_eq!(chunks.len(), 4);
        assert_eq!(chunks[3].offset, 9_000);
        assert_eq!(chunks[3].data.len(), 1_000);
        let mut assembler = SnapshotAssembler::default();
        let mut delivered = Vec::new();
        for chunk in chunks {
            assert!(delivered.is_empty(), "delivered before the last chunk");
            delivered.extend(assembler.push(chunk).unwrap());
        }
        let expected = Message {
            from: NodeId(1),
            to: NodeId(2),
            term: Term(5),
            body: MessageBody::InstallSnapshot { snapshot },
        };
        assert_eq!(delivered, vec![(RegionId(9), expected)]);
        assert_eq!(assembler.pending_bytes(), 0);
    }

    #[test]
    fn a_chunk_that_skips_repeats_or_changes_snapshot_is_refused() {
        let snapshot = snapshot(9_000);
        let chunks = chunks(&snapshot, 3_000);
        let refused = |pushes: Vec<SnapshotChunk>| {
            let mut assembler = SnapshotAssembler::default();
            let mut outcome = Ok(None);
            for chunk in pushes {
                outcome = assembler.push(chunk);
                if outcome.is_err() {
                    break;
                }
            }
            matches!(
                outcome,
                Err(TransportError::InvalidField {
                    field: "offset",
                    ..
                })
            )
        };
        assert!(refused(vec![chunks[1].clone()]), "no start");
        assert!(refused(vec![chunks[0].clone(), chunks[2].clone()]), "a gap");
        assert!(
            refused(vec![
                chunks[0].clone(),
                chunks[1].clone(),
                chunks[1].clone()
            ]),
            "a repeat"
        );
        let mut other_region = chunks[1].clone();
        other_region.region_id = RegionId(10);
        assert!(
            refused(vec![chunks[0].clone(), other_region]),
            "another Region"
        );
        let mut other_index = chunks[1].clone();
        other_index.metadata.index = LogIndex(41);
        assert!(
            refused(vec![chunks[0].clone(), other_index]),
            "another snapshot"
        );
        // A new start replaces an unfinished snapshot.
        let mut assembler = SnapshotAssembler::default();
        assembler.push(chunks[0].clone()).unwrap();
        assembler.push(chunks[0].clone()).unwrap();
        assembler.push(chunks[1].clone()).unwrap();
        assert!(assembler.push(chunks[2].clone()).unwrap().is_some());
    }

    #[test]
    fn sizes_out_of_bounds_are_refused_by_the_decoder() {
        let snapshot = snapshot(5_000);
        let small = DecodeLimits {
            snapshot_bytes_max: 4_999,
            ..DecodeLimits::default()
        };
        let payload = encode_snapshot_chunk(&header(), RegionId(9), Term(5), &snapshot, 0..100);
        assert!(matches!(
            decode_snapshot_chunk(&payload, &small),
            Err(TransportError::InvalidField {
                field: "total_bytes",
                ..
            })
        ));
        let mut stale = snapshot.clone();
        stale.metadata.term = Term(6);
        let payload = encode_snapshot_chunk(&header(), RegionId(9), Term(5), &stale, 0..100);
        assert!(matches!(
            decode_snapshot_chunk(&payload, &DecodeLimits::default()),
            Err(TransportError::InvalidField {
                field: "snapshot.metadata",
                ..
            })
        ));
        let batch = crate::encode_raft_batch(&header(), &[]);
        assert!(matches!(
            decode_snapshot_chunk(&batch, &DecodeLimits::default()),
            Err(TransportError::BadIdentifier { .. })
        ));
    }

    #[test]
    fn only_snapshots_larger_than_a_chunk_are_streamed() {
        let message = |bytes| Message {
            from: NodeId(1),
            to: NodeId(2),
            term: Term(5),
            body: MessageBody::InstallSnapshot {
                snapshot: snapshot(bytes),
            },
        };
        assert!(!is_streamed(&message(1_000), 1_000));
        assert!(is_streamed(&message(1_001), 1_000));
        let heartbeat = Message {
            body: MessageBody::HeartbeatResponse { read_context: 0 },
            ..message(0)
        };
        assert!(!is_streamed(&heartbeat, 0));
    }
}
