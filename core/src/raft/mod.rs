//! `RaftCore`: one member of one Raft group, as a deterministic state machine.
//!
//! Inputs: `tick` (logical time), `step` (a message from a peer), `propose`,
//! `propose_conf_change`, `read_index`, `transfer_leader`. Output: a `Ready` taken with
//! `ready()`, acknowledged with `advance()`. No I/O, no clock, no threads: the same inputs
//! always give the same outputs, which is what lets the simulator replay any run from a seed.
//!
//! Roles:
//! ```text
//!             timeout (pre-vote on)         majority of pre-votes
//!  Follower ───────────────────► PreCandidate ──────────────► Candidate ──► Leader
//!     ▲   timeout (pre-vote off) ───────────────────────────────▲   majority   │
//!     └──────────── higher term, or a leader of the current term ◄───────────────┘
//! ```
//!
//! The work is split by concern: `election.rs` (timeouts, votes, pre-votes, leases),
//! `replication.rs` (AppendEntries, commit, snapshots), `read_index.rs` (linearizable reads),
//! `membership.rs` (conf changes, leadership transfer).
//!
//! Invariants (checked by `invariants`, after every step in tests and the simulator):
//! 1. A leader knows itself as leader and has a progress entry for every member.
//! 2. The log's invariants hold (see `raft_log.rs`).
//! 3. The vote, when set, is for the current term (it is cleared whenever the term rises).

mod election;
mod membership;
mod read_index;
mod replication;

use std::collections::{BTreeMap, VecDeque};

use crate::config::Config;
use crate::error::RaftError;
use crate::progress::Progress;
use crate::raft_log::RaftLog;
use crate::ready::{Advance, ReadState, Ready, Role, SoftState};
use crate::rng::SplitMix64;
use crate::storage::Storage;
use crate::types::{
    ConfChange, ConfState, Entry, EntryKind, HardState, LogIndex, Message, MessageBody, NodeId,
    Payload, Term,
};

use read_index::ReadOnly;

/// One member of one Raft group. See the module docs.
pub struct RaftCore<S: Storage> {
    config: Config,
    term: Term,
    vote: Option<NodeId>,
    leader: Option<NodeId>,
    role: Role,
    log: RaftLog<S>,
    conf: ConfState,
    /// Leader only: every member's replication progress, the leader's own included.
    progress: BTreeMap<NodeId, Progress>,
    /// (Pre-)candidate only: the votes received in this campaign.
    votes: BTreeMap<NodeId, bool>,
    election_elapsed_ticks: u32,
    heartbeat_elapsed_ticks: u32,
    randomized_election_timeout_ticks: u32,
    rng: SplitMix64,
    /// Leader only: the member leadership is being transferred to.
    lead_transferee: Option<NodeId>,
    /// Leader only: the index of the newest conf change it appended (or of its first entry).
    pending_conf_index: LogIndex,
    /// Conf changes handed out for applying; they take effect when `advance` reports them
    /// applied.
    conf_changes_applying: VecDeque<(LogIndex, ConfChange)>,
    read_only: ReadOnly,
    /// Leader only: entries were appended or commit advanced; broadcast at the next `ready`.
    broadcast_pending: bool,
    messages: Vec<Message>,
    persisted_messages: Vec<Message>,
    read_states: Vec<ReadState>,
    last_soft_state: SoftState,
    last_hard_state: HardState,
}

impl<S: Storage> RaftCore<S> {
    /// A member starting from what `storage` holds, as a follower.
    ///
    /// # Errors
    /// `InvalidConfig` for a bad config, `Storage` if the storage cannot be read.
    pub fn new(config: Config, storage: S) -> Result<RaftCore<S>, RaftError> {
        config.validate()?;
        let (hard_state, mut conf) = storage.initial_state()?;
        conf.normalize();
        let log = RaftLog::new(storage)?;
        let soft = SoftState {
            leader: None,
            role: Role::Follower,
        };
        let mut core = RaftCore {
            rng: SplitMix64::new(config.seed),
            read_only: ReadOnly::new(config.pending_reads_max),
            config,
            term: hard_state.term,
            vote: hard_state.vote,
            leader: None,
            role: Role::Follower,
            conf,
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            election_elapsed_ticks: 0,
            heartbeat_elapsed_ticks: 0,
            randomized_election_timeout_ticks: 0,
            lead_transferee: None,
            pending_conf_index: LogIndex(0),
            conf_changes_applying: VecDeque::new(),
            broadcast_pending: false,
            messages: Vec::new(),
            persisted_messages: Vec::new(),
            read_states: Vec::new(),
            last_soft_state: soft,
            last_hard_state: HardState {
                commit: log.committed(),
                ..hard_state
            },
            log,
        };
        core.reset_election_timer();
        Ok(core)
    }

    pub fn id(&self) -> NodeId {
        self.config.id
    }

    pub fn term(&self) -> Term {
        self.term
    }

    pub fn vote(&self) -> Option<NodeId> {
        self.vote
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// Who this member believes leads its group.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    pub fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }

    /// The membership in force (changes take effect when applied).
    pub fn conf_state(&self) -> &ConfState {
        &self.conf
    }

    pub fn committed(&self) -> LogIndex {
        self.log.committed()
    }

    pub fn applied(&self) -> LogIndex {
        self.log.applied()
    }

    pub fn last_index(&self) -> LogIndex {
        self.log.last_index()
    }

    /// The log (stable and unstable parts), for inspection.
    pub fn log(&self) -> &RaftLog<S> {
        &self.log
    }

    /// The caller's storage, to persist what a `Ready` hands out.
    pub fn storage_mut(&mut self) -> &mut S {
        self.log.storage_mut()
    }

    pub fn storage(&self) -> &S {
        self.log.storage()
    }

    /// Leader only: the replication progress of a member.
    pub fn progress(&self, id: NodeId) -> Option<&Progress> {
        self.progress.get(&id)
    }

    /// The config this member runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Advances logical time by one tick: elections on followers, heartbeats and the
    /// check-quorum round on leaders.
    pub fn tick(&mut self) {
        match self.role {
            Role::Leader => self.tick_leader(),
            Role::Follower | Role::PreCandidate | Role::Candidate => self.tick_election(),
        }
    }

    /// Starts an election now instead of waiting for the timeout (with pre-vote if
    /// configured). A node uses it at startup so that a lone voter leads at once. Ignored on a
    /// leader or a member that may not campaign.
    pub fn campaign(&mut self) {
        self.hup(false);
    }

    /// On a leader: sends every follower its missing entries or, if it has them all, an
    /// empty AppendEntries carrying the commit index, with the next `ready`. For a caller
    /// that runs without `Config::broadcast_commit` and needs followers to apply something
    /// committed now rather than at the next append or heartbeat. Ignored elsewhere.
    pub fn broadcast_commit(&mut self) {
        if self.role == Role::Leader {
            self.broadcast_pending = true;
        }
    }

    /// Appends a client command. Returns the index it will have if it commits.
    ///
    /// # Errors
    /// `NotLeader` on a follower or candidate; `ProposalDropped` during a leadership transfer
    /// or when `uncommitted_entries_max` entries already wait to commit.
    pub fn propose(&mut self, data: Payload) -> Result<LogIndex, RaftError> {
        self.check_can_propose()?;
        Ok(self.append_entry(EntryKind::Normal, data))
    }

    fn check_can_propose(&self) -> Result<(), RaftError> {
        if self.role != Role::Leader {
            return Err(RaftError::NotLeader {
                leader: self.leader,
            });
        }
        if self.lead_transferee.is_some() {
            return Err(RaftError::ProposalDropped {
                reason: "leadership transfer in progress",
            });
        }
        let uncommitted = self.log.last_index().0 - self.log.committed().0;
        if uncommitted >= self.config.uncommitted_entries_max {
            return Err(RaftError::ProposalDropped {
                reason: "too many uncommitted entries",
            });
        }
        Ok(())
    }

    /// Leader only: appends one entry of the current term and schedules replication.
    fn append_entry(&mut self, kind: EntryKind, data: Payload) -> LogIndex {
        let index = self.log.last_index().next();
        let entry = Entry {
            term: self.term,
            index,
            kind,
            data,
        };
        self.log.append(std::slice::from_ref(&entry));
        self.broadcast_pending = true;
        index
    }

    /// Handles a message from a peer. Stale, misaddressed or malformed messages are ignored
    /// (or rejected back to their sender); nothing a peer sends can make this fail or panic.
    pub fn step(&mut self, message: Message) {
        if message.to != self.config.id || message.from == self.config.id || message.from.0 == 0 {
            tracing::debug!(?message, "dropping misaddressed message");
            return;
        }
        if message.term > Term::MAX_ACCEPTED {
            // Adopting such a term would overflow `term + 1` at the next campaign.
            tracing::warn!(from = ?message.from, term = ?message.term, "dropping a message with an absurd term");
            return;
        }
        if !self.step_term(&message) {
            return;
        }
        if let MessageBody::RequestVote { .. } = message.body {
            self.on_vote_request(message);
            return;
        }
        match self.role {
            Role::Leader => self.step_leader(message),
            Role::PreCandidate | Role::Candidate => self.step_candidate(message),
            Role::Follower => self.step_follower(message),
        }
    }

    fn step_leader(&mut self, message: Message) {
        let from = message.from;
        match message.body {
            MessageBody::AppendEntriesResponse {
                reject,
                index,
                hint_index,
                hint_term,
            } => self.on_append_response(from, reject, index, hint_index, hint_term),
            MessageBody::HeartbeatResponse { read_context } => {
                self.on_heartbeat_response(from, read_context)
            }
            MessageBody::ReadIndexRequest { request_id } => self.on_read_request(from, request_id),
            _ => {}
        }
    }

    fn step_candidate(&mut self, message: Message) {
        match message.body {
            MessageBody::RequestVoteResponse { pre_vote, granted } => {
                self.on_vote_response(message.from, pre_vote, granted)
            }
            MessageBody::AppendEntries { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. } => {
                // A leader of our term exists: it won, we lost.
                self.become_follower(message.term, Some(message.from));
                self.step_follower(message);
            }
            _ => {}
        }
    }

    fn step_follower(&mut self, message: Message) {
        let from = message.from;
        match message.body {
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
            } => {
                self.heard_from_leader(from);
                self.on_append(from, prev_log_index, prev_log_term, entries, leader_commit);
            }
            MessageBody::Heartbeat {
                commit,
                read_context,
            } => {
                self.heard_from_leader(from);
                self.on_heartbeat(from, commit, read_context);
            }
            MessageBody::InstallSnapshot { snapshot } => {
                self.heard_from_leader(from);
                self.on_snapshot(from, snapshot);
            }
            MessageBody::TimeoutNow => self.on_timeout_now(from),
            MessageBody::ReadIndexResponse { request_id, index } if index.0 > 0 => {
                self.read_states.push(ReadState { request_id, index });
            }
            _ => {}
        }
    }

    fn heard_from_leader(&mut self, leader: NodeId) {
        self.election_elapsed_ticks = 0;
        self.leader = Some(leader);
    }

    /// Queues a message to send right away.
    fn send(&mut self, to: NodeId, body: MessageBody) {
        self.send_with_term(to, self.term, body);
    }

    fn send_with_term(&mut self, to: NodeId, term: Term, body: MessageBody) {
        self.messages.push(Message {
            from: self.config.id,
            to,
            term,
            body,
        });
    }

    /// Queues a message that promises durability: it leaves after the next `Ready` is
    /// persisted.
    fn send_after_persist(&mut self, to: NodeId, term: Term, body: MessageBody) {
        self.persisted_messages.push(Message {
            from: self.config.id,
            to,
            term,
            body,
        });
    }

    /// True if a `Ready` would not be empty.
    pub fn has_ready(&self) -> bool {
        self.broadcast_pending
            || self.read_only.round_pending()
            || !self.messages.is_empty()
            || !self.persisted_messages.is_empty()
            || !self.read_states.is_empty()
            || self.soft_state() != self.last_soft_state
            || self.hard_state() != self.last_hard_state
            || self.log.has_unstable_to_hand_out()
            || self.log.has_committed_to_hand_out()
    }

    fn soft_state(&self) -> SoftState {
        SoftState {
            leader: self.leader,
            role: self.role,
        }
    }

    fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed(),
        }
    }

    /// Takes everything the caller must do now. See `ready.rs` for the calling order.
    pub fn ready(&mut self) -> Ready {
        self.flush_leader_work();
        let mut ready = Ready::default();
        let soft = self.soft_state();
        if soft != self.last_soft_state {
            self.last_soft_state = soft;
            ready.soft_state = Some(soft);
        }
        let hard = self.hard_state();
        if hard != self.last_hard_state {
            self.last_hard_state = hard;
            ready.hard_state = Some(hard);
        }
        ready.snapshot = self.log.take_unstable_snapshot();
        ready.entries = self.log.take_unstable_entries();
        ready.committed_entries = self
            .log
            .take_committed_entries(self.config.committed_bytes_max);
        for entry in &ready.committed_entries {
            if entry.kind == EntryKind::ConfChange {
                if let Some(change) = ConfChange::decode(&entry.data) {
                    self.conf_changes_applying.push_back((entry.index, change));
                }
            }
        }
        ready.messages = std::mem::take(&mut self.messages);
        ready.persisted_messages = std::mem::take(&mut self.persisted_messages);
        ready.read_states = std::mem::take(&mut self.read_states);
        ready
    }

    /// Leader work deferred to the end of a batch of steps: one broadcast of new entries and
    /// commit, and one heartbeat round for all the reads queued since the last `ready`.
    fn flush_leader_work(&mut self) {
        if self.role != Role::Leader {
            self.broadcast_pending = false;
            return;
        }
        if std::mem::take(&mut self.broadcast_pending) {
            self.broadcast_append();
        }
        if self.read_only.round_pending() {
            self.start_read_round();
        }
    }

    /// Records what the caller persisted and applied. Conf changes take effect here, when
    /// they are reported applied.
    pub fn advance(&mut self, advance: Advance) {
        if let Some(index) = advance.snapshot_persisted {
            self.log.on_snapshot_persisted(index);
        }
        if let Some((index, term)) = advance.persisted {
            self.log.on_persisted(index, term);
        }
        if self.role == Role::Leader {
            let persisted = self.log.persisted();
            let id = self.config.id;
            if let Some(progress) = self.progress.get_mut(&id) {
                progress.maybe_update(persisted);
            }
            self.maybe_commit();
        }
        if let Some(applied) = advance.applied {
            self.log.on_applied(applied);
            while let Some((index, change)) = self.conf_changes_applying.front().copied() {
                if index > self.log.applied() {
                    break;
                }
                self.conf_changes_applying.pop_front();
                self.apply_conf_change(change);
            }
        }
    }

    /// Becomes a follower in `term` (clearing the vote if the term rose).
    fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        if term > self.term {
            self.term = term;
            self.vote = None;
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.reset_role_state();
        tracing::debug!(id = ?self.config.id, ?term, ?leader, "became follower");
    }

    fn reset_role_state(&mut self) {
        self.election_elapsed_ticks = 0;
        self.heartbeat_elapsed_ticks = 0;
        self.reset_election_timer();
        self.progress.clear();
        self.votes.clear();
        self.lead_transferee = None;
        self.broadcast_pending = false;
        self.read_only.clear();
    }

    fn reset_election_timer(&mut self) {
        let base = u64::from(self.config.election_timeout_ticks);
        self.randomized_election_timeout_ticks = self.rng.range(base, 2 * base) as u32;
    }

    /// Checks the invariants in the module docs.
    ///
    /// # Errors
    /// A description of the first invariant that does not hold.
    pub fn invariants(&self) -> Result<(), String> {
        self.log.invariants()?;
        if self.role == Role::Leader {
            if self.leader != Some(self.config.id) {
                return Err(format!(
                    "{:?} leads but names {:?}",
                    self.config.id, self.leader
                ));
            }
            if let Some(missing) = self
                .conf
                .members()
                .find(|id| !self.progress.contains_key(id))
            {
                return Err(format!("leader has no progress for member {missing:?}"));
            }
        }
        Ok(())
    }
}
