//! Configuration of one Raft group member, with every bound named.

use crate::error::RaftError;
use crate::types::NodeId;

/// How one `RaftCore` behaves. All durations are in ticks; the caller decides how long a tick
/// is (Tessera's node uses 100 ms by default).
#[derive(Clone, Debug)]
pub struct Config {
    /// This node. Must not be `NodeId(0)`.
    pub id: NodeId,
    /// A follower that hears nothing from a leader for a random time in
    /// `[election_timeout_ticks, 2 * election_timeout_ticks)` campaigns.
    pub election_timeout_ticks: u32,
    /// A leader sends heartbeats every this many ticks. Must be less than the election timeout.
    pub heartbeat_interval_ticks: u32,
    /// Ask for pre-votes before raising the term, so a node that was cut off cannot depose a
    /// healthy leader when it returns.
    pub pre_vote: bool,
    /// A leader steps down when it has not heard from a quorum within an election timeout;
    /// followers that hear from a leader ignore vote requests for that long (the leader lease).
    pub check_quorum: bool,
    /// At most this many AppendEntries in flight to one follower in the Replicate state.
    pub inflight_msgs_max: usize,
    /// At most this many bytes of entries in one AppendEntries (at least one entry is sent).
    pub msg_bytes_max: usize,
    /// At most this many bytes of committed entries handed out in one `Ready`.
    pub committed_bytes_max: usize,
    /// A leader refuses proposals while this many entries are appended but not committed.
    pub uncommitted_entries_max: u64,
    /// At most this many ReadIndex requests wait for the leader's first commit in its term.
    pub pending_reads_max: usize,
    /// Seed of the generator behind randomized election timeouts.
    pub seed: u64,
    /// When an acknowledgement advances the commit index, send every follower an
    /// AppendEntries at once carrying it (empty if it has every entry). With `false` the
    /// commit index travels with the next append or heartbeat instead, except when a
    /// configuration change commits (members learn it at once either way), and
    /// [`crate::RaftCore::broadcast_commit`] asks for one broadcast. Followers then apply up to
    /// a heartbeat interval later, which only matters for what they serve from their own
    /// state; the leader commits, applies and answers at the same moment either way, with two
    /// messages, two wake-ups of each follower and two acknowledgements fewer per commit.
    pub broadcast_commit: bool,
}

impl Config {
    /// Defaults that suit a 100 ms tick: elections after 1-2 s, heartbeats every 200 ms.
    pub fn new(id: NodeId) -> Config {
        Config {
            id,
            election_timeout_ticks: 10,
            heartbeat_interval_ticks: 2,
            pre_vote: true,
            check_quorum: true,
            inflight_msgs_max: 256,
            msg_bytes_max: 1 << 20,
            committed_bytes_max: 4 << 20,
            uncommitted_entries_max: 100_000,
            pending_reads_max: 4096,
            seed: id.0,
            broadcast_commit: true,
        }
    }

    /// Checks the values can work together.
    ///
    /// # Errors
    /// `RaftError::InvalidConfig` naming the first bad value.
    pub fn validate(&self) -> Result<(), RaftError> {
        if self.id.0 == 0 {
            return Err(RaftError::InvalidConfig("id must not be 0"));
        }
        if self.heartbeat_interval_ticks == 0 {
            return Err(RaftError::InvalidConfig(
                "heartbeat_interval_ticks must be > 0",
            ));
        }
        if self.election_timeout_ticks <= self.heartbeat_interval_ticks {
            return Err(RaftError::InvalidConfig(
                "election_timeout_ticks must exceed heartbeat_interval_ticks",
            ));
        }
        if self.inflight_msgs_max == 0 {
            return Err(RaftError::InvalidConfig("inflight_msgs_max must be > 0"));
        }
        if self.msg_bytes_max == 0 || self.committed_bytes_max == 0 {
            return Err(RaftError::InvalidConfig("byte budgets must be > 0"));
        }
        if self.uncommitted_entries_max == 0 || self.pending_reads_max == 0 {
            return Err(RaftError::InvalidConfig("queue bounds must be > 0"));
        }
        Ok(())
    }
}
