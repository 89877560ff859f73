//! Timestamped trace points along a write's path, for breaking its latency down.
//!
//! Off unless the node's log filter enables `tessera::latency=debug` (for example
//! `RUST_LOG=warn,tessera::latency=debug`; `tessera-bench --node-log-filter` passes one to the
//! nodes it spawns). Every event carries the Region and the log index it concerns, so
//! `bench/scripts/write_breakdown.py` can line up one entry's events across the three nodes'
//! logs (the log timestamps are wall-clock microseconds, shared by processes on one machine).
//! When the target is disabled each point costs one cached check.
//!
//! The points, in a write's order (the transport logs `frame_out` and `frame_in` itself):
//! `client_in`, `proposed`, `raft_out` (AppendEntries), `wal_issue`, `wal_done`, `frame_out`,
//! `frame_in`, `raft_in`, ..., `applied`, `answer_queued`, `client_out`. Off the write's path:
//! `snapshot_taken` (a periodic snapshot encoded on the core's thread, with its time) and
//! `snapshot_written` (its file durable).

use tessera_core::multi::Batches;
use tessera_core::{Message, MessageBody, RegionId};

/// The tracing target of every trace point.
pub const TARGET: &str = "tessera::latency";

/// True when the trace points are on.
pub fn enabled() -> bool {
    tracing::enabled!(target: TARGET, tracing::Level::DEBUG)
}

/// The log index a message is about: the last entry of an append, the acknowledged index
/// of an answer, the commit of a heartbeat.
pub fn message_index(message: &Message) -> u64 {
    match &message.body {
        MessageBody::AppendEntries {
            prev_log_index,
            entries,
            ..
        } => entries.last().map_or(prev_log_index.0, |e| e.index.0),
        MessageBody::AppendEntriesResponse { index, .. } => index.0,
        MessageBody::Heartbeat { commit, .. } => commit.0,
        MessageBody::RequestVote { last_log_index, .. } => last_log_index.0,
        MessageBody::ReadIndexResponse { index, .. } => index.0,
        _ => 0,
    }
}

/// The commit index a leader's message carries, if any.
fn message_commit(message: &Message) -> u64 {
    match &message.body {
        MessageBody::AppendEntries { leader_commit, .. } => leader_commit.0,
        MessageBody::Heartbeat { commit, .. } => commit.0,
        _ => 0,
    }
}

/// Messages leaving this core: `when` is "now" (sent while persisting) or "persisted".
pub fn raft_out(batches: &Batches, when: &'static str) {
    if !enabled() {
        return;
    }
    for (node, messages) in batches {
        for (region, message) in messages {
            tracing::debug!(
                target: TARGET,
                to = node.0,
                region = region.0,
                kind = message.body.name(),
                index = message_index(message),
                commit = message_commit(message),
                when,
                "raft_out"
            );
        }
    }
}

/// Messages stepped into the Store.
pub fn raft_in(batch: &[(RegionId, Message)]) {
    if !enabled() {
        return;
    }
    for (region, message) in batch {
        tracing::debug!(
            target: TARGET,
            from = message.from.0,
            region = region.0,
            kind = message.body.name(),
            index = message_index(message),
            commit = message_commit(message),
            "raft_in"
        );
    }
}
