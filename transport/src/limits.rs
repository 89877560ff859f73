//! Bounds on everything a peer or a client controls.
//!
//! Every decoder takes a [`DecodeLimits`]: the frame size, the FlatBuffers verifier's depth,
//! table count and apparent size, and the length of every list and byte string. Input past a
//! bound is a typed error before anything proportional to it is allocated.

/// The limits a receiver enforces. Both ends of a cluster should use the same values: a sender
/// never builds a frame larger than `frame_bytes_max`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest frame payload accepted (the length prefix), in bytes.
    pub frame_bytes_max: u32,
    /// Verifier: deepest nesting of tables.
    pub verifier_depth_max: usize,
    /// Verifier: most tables in one payload.
    pub verifier_tables_max: usize,
    /// Verifier: most bytes visited, counting shared objects each time they are reached.
    pub verifier_apparent_bytes_max: usize,
    /// Most Region messages in one Raft batch.
    pub batch_messages_max: usize,
    /// Most entries in one AppendEntries message.
    pub message_entries_max: usize,
    /// Most voters plus learners in a configuration, and peers in a Region descriptor.
    pub conf_members_max: usize,
    /// Longest key, in bytes.
    pub key_bytes_max: usize,
    /// Longest value, in bytes.
    pub value_bytes_max: usize,
    /// Longest namespace, in bytes.
    pub namespace_bytes_max: usize,
    /// Largest scan limit a client may ask for.
    pub scan_limit_max: u32,
    /// Most items in a scan result.
    pub scan_items_max: usize,
    /// Most Region descriptors in a response, and Region statuses in a status.
    pub regions_max: usize,
    /// Most stores in a routing table, and addresses per store.
    pub stores_max: usize,
    /// Longest free text (error messages, addresses), in bytes.
    pub text_bytes_max: usize,
    /// Largest term a Raft message may carry. Real terms never come near it; it keeps a node
    /// that adopts a peer's term able to campaign (term + 1) without overflowing.
    pub term_max: u64,
    /// Largest snapshot reassembled from `SnapshotChunk` frames, in bytes. A receiver holds
    /// at most one partial snapshot per connection, growing with the chunks that arrived.
    pub snapshot_bytes_max: u64,
}

impl DecodeLimits {
    /// The default frame limit: 16 MiB. Larger snapshots travel as `SnapshotChunk` frames.
    pub const FRAME_BYTES_MAX_DEFAULT: u32 = 16 << 20;

    /// The FlatBuffers verifier options these limits imply.
    pub fn verifier_options(&self) -> flatbuffers::VerifierOptions {
        flatbuffers::VerifierOptions {
            max_depth: self.verifier_depth_max,
            max_tables: self.verifier_tables_max,
            max_apparent_size: self.verifier_apparent_bytes_max,
            ignore_missing_null_terminator: false,
        }
    }
}

impl Default for DecodeLimits {
    fn default() -> DecodeLimits {
        let frame_bytes_max = DecodeLimits::FRAME_BYTES_MAX_DEFAULT;
        DecodeLimits {
            frame_bytes_max,
            // The deepest legitimate path is batch → message → snapshot → metadata → conf.
            verifier_depth_max: 16,
            verifier_tables_max: 1 << 20,
            // Shared vtables are counted once per table that uses them, so a legitimate
            // payload's apparent size is a little above its length; twice is ample.
            verifier_apparent_bytes_max: 2 * frame_bytes_max as usize,
            batch_messages_max: 8192,
            message_entries_max: 8192,
            conf_members_max: 64,
            key_bytes_max: 64 << 10,
            value_bytes_max: 8 << 20,
            namespace_bytes_max: 256,
            scan_limit_max: 10_000,
            scan_items_max: 10_000,
            regions_max: 100_000,
            stores_max: 1024,
            text_bytes_max: 4096,
            term_max: tessera_core::Term::MAX_ACCEPTED.get(),
            snapshot_bytes_max: 4 << 30,
        }
    }
}
