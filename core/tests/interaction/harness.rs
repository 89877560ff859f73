//! The cluster a scenario drives: `RaftCore`s over `MemStorage`, a network queue the scenario
//! delivers by hand, links it can cut, and crashes that lose what was not persisted.
//!
//! Each node's Ready is handled exactly in the calling order of `ready.rs`:
//! 1. take the `Ready`;
//! 2. put `messages` on the network;
//! 3. persist into `MemStorage`: snapshot, then entries, then hard state;
//! 4. only then put `persisted_messages` on the network;
//! 5. apply the snapshot and committed entries;
//! 6. `advance`.
//!
//! `take-ready` stops after step 2 and `persist` does steps 3 to 6, so a scenario can show
//! what is (and is not) on the network while a write is in flight, and crash in between.
//!
//! After every command the harness checks each live node's `invariants()`, Election Safety
//! (one leader per term) and State Machine Safety (one entry per applied index).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use tessera_core::{
    ConfChange, ConfState, Config, LogIndex, MemStorage, Message, NodeId, RaftCore, Ready, Role,
    Storage, Term,
};

use super::render;

/// A parsed command line: a name, positional arguments and `key=value` arguments.
pub struct Command {
    pub name: String,
    positional: Vec<String>,
    named: BTreeMap<String, String>,
}

impl Command {
    pub fn parse(line: &str) -> Command {
        let mut words = line.split_whitespace();
        let name = words.next().unwrap_or_default().to_string();
        let mut positional = Vec::new();
        let mut named = BTreeMap::new();
        for word in words {
            match word.split_once('=') {
                Some((key, value)) => {
                    named.insert(key.to_string(), value.to_string());
                }
                None => positional.push(word.to_string()),
            }
        }
        Command {
            name,
            positional,
            named,
        }
    }

    fn arg(&self, position: usize) -> &str {
        self.positional
            .get(position)
            .unwrap_or_else(|| panic!("{}: missing argument {position}", self.name))
    }

    fn id(&self, position: usize) -> NodeId {
        NodeId(parse_number(self.arg(position)))
    }

    /// Every positional argument from `from` on, as node ids.
    fn ids_from(&self, from: usize) -> Vec<NodeId> {
        self.positional[from.min(self.positional.len())..]
            .iter()
            .map(|word| NodeId(parse_number(word)))
            .collect()
    }

    fn named_ids(&self, key: &str) -> Option<Vec<NodeId>> {
        self.named.get(key).map(|value| parse_ids(value))
    }

    fn named_number(&self, key: &str) -> Option<u64> {
        self.named.get(key).map(|value| parse_number(value))
    }

    fn named_bool(&self, key: &str) -> Option<bool> {
        self.named.get(key).map(|value| match value.as_str() {
            "true" => true,
            "false" => false,
            other => panic!("{key}={other}: expected true or false"),
        })
    }
}

fn parse_number(word: &str) -> u64 {
    word.parse()
        .unwrap_or_else(|_| panic!("expected a number, got {word:?}"))
}

/// `(1,2,3)` or `1`.
fn parse_ids(value: &str) -> Vec<NodeId> {
    value
        .trim_start_matches('(')
        .trim_end_matches(')')
        .split(',')
        .filter(|word| !word.is_empty())
        .map(|word| NodeId(parse_number(word)))
        .collect()
}

/// One node: running (`core`) or crashed (`down`, holding only what it persisted).
struct Node {
    core: Option<RaftCore<MemStorage>>,
    down: Option<MemStorage>,
    config: Config,
    /// A `Ready` taken by `take-ready` whose persistence has not happened yet.
    pending: Option<Ready>,
}

/// The whole scenario state.
#[derive(Default)]
pub struct Cluster {
    nodes: BTreeMap<NodeId, Node>,
    /// Messages on the network, in the order they were sent.
    network: Vec<Message>,
    /// Directed links that lose everything: (from, to).
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Election Safety: the leader seen in each term.
    leaders: BTreeMap<Term, NodeId>,
    /// State Machine Safety: the term of the entry applied at each index, by any node.
    applied_terms: BTreeMap<LogIndex, Term>,
}

impl Cluster {
    /// Runs one command and returns its output (never empty, never with blank lines).
    pub fn run(&mut self, line: &str) -> String {
        let command = Command::parse(line);
        let mut out = match command.name.as_str() {
            "add-nodes" => self.add_nodes(&command),
            "campaign" => self.campaign(command.id(0)),
            "tick" => {
                let count = command.positional.get(1).map_or(1, |w| parse_number(w));
                self.tick(command.id(0), count)
            }
            "tick-election" => {
                self.tick_timeouts(&command.ids_from(0), |c| c.election_timeout_ticks)
            }
            "tick-heartbeat" => {
                self.tick_timeouts(&command.ids_from(0), |c| c.heartbeat_interval_ticks)
            }
            "propose" => self.propose(command.id(0), command.arg(1)),
            "propose-conf-change" => self.propose_conf_change(&command),
            "read-index" => self.read_index(&command),
            "transfer-leader" => self.transfer_leader(command.id(0), command.id(1)),
            "take-ready" => self.take_ready(command.id(0)),
            "persist" => self.persist_command(command.id(0)),
            "process-ready" => self.process_ready_command(&command.ids_from(0)),
            "deliver-msgs" => self.deliver_command(&command),
            "stabilize" => self.stabilize(&command.ids_from(0)),
            "raft-state" => self.raft_state(),
            "log" => self.log(command.id(0)),
            "progress" => self.progress(command.id(0)),
            "compact" => self.compact(command.id(0)),
            "crash" => self.crash(command.id(0)),
            "restart" => self.restart(command.id(0)),
            "partition" => self.partition(&command),
            "isolate" => self.isolate(&command),
            "heal" => {
                self.cut.clear();
                String::new()
            }
            other => panic!("unknown command {other:?}"),
        };
        self.check_safety(line);
        if out.is_empty() {
            out.push_str("ok\n");
        }
        out
    }

    fn node(&self, id: NodeId) -> &Node {
        self.nodes
            .get(&id)
            .unwrap_or_else(|| panic!("no node {id:?}"))
    }

    fn node_mut(&mut self, id: NodeId) -> &mut Node {
        self.nodes
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no node {id:?}"))
    }

    fn core(&mut self, id: NodeId) -> &mut RaftCore<MemStorage> {
        self.node_mut(id)
            .core
            .as_mut()
            .unwrap_or_else(|| panic!("node {id:?} is down"))
    }

    /// `add-nodes N [voters=(..)] [learners=(..)] [pre-vote=B] [check-quorum=B]
    /// [inflight=N] [max-msg-bytes=N]`. Without `voters` the nodes start empty, waiting to be
    /// seeded by a leader's snapshot once they are added to the group.
    fn add_nodes(&mut self, command: &Command) -> String {
        let count = parse_number(command.arg(0));
        let voters = command.named_ids("voters");
        let learners = command.named_ids("learners").unwrap_or_default();
        let first = self.nodes.keys().last().map_or(1, |id| id.0 + 1);
        let mut out = String::new();
        for id in (first..first + count).map(NodeId) {
            let mut config = Config::new(id);
            if let Some(pre_vote) = command.named_bool("pre-vote") {
                config.pre_vote = pre_vote;
            }
            if let Some(check_quorum) = command.named_bool("check-quorum") {
                config.check_quorum = check_quorum;
            }
            if let Some(inflight) = command.named_number("inflight") {
                config.inflight_msgs_max = inflight as usize;
            }
            if let Some(bytes) = command.named_number("max-msg-bytes") {
                config.msg_bytes_max = bytes as usize;
            }
            let storage = match &voters {
                Some(voters) => MemStorage::new_with_conf(ConfState {
                    voters: voters.clone(),
                    learners: learners.clone(),
                }),
                None => MemStorage::default(),
            };
            let core = RaftCore::new(config.clone(), storage).expect("valid config");
            let _ = writeln!(
                out,
                "{}: term={} last={} {}",
                id.0,
                core.term().0,
                core.last_index().0,
                render::conf(core.conf_state())
            );
            self.nodes.insert(
                id,
                Node {
                    core: Some(core),
                    down: None,
                    config,
                    pending: None,
                },
            );
        }
        out
    }

    /// Starts an election now, as if the election timeout fired; reports it if the node
    /// refuses to campaign.
    fn campaign(&mut self, id: NodeId) -> String {
        let core = self.core(id);
        core.campaign();
        if core.role() == Role::Follower {
            return format!("{} did not campaign\n", id.0);
        }
        String::new()
    }

    fn tick(&mut self, id: NodeId, count: u64) -> String {
        let core = self.core(id);
        for _ in 0..count {
            core.tick();
        }
        String::new()
    }

    /// Ticks each node, in turn, for the number of ticks `ticks_of` its config gives.
    fn tick_timeouts(&mut self, ids: &[NodeId], ticks_of: impl Fn(&Config) -> u32) -> String {
        for id in ids {
            let count = ticks_of(&self.node(*id).config);
            self.tick(*id, u64::from(count));
        }
        String::new()
    }

    fn propose(&mut self, id: NodeId, data: &str) -> String {
        match self.core(id).propose(data.as_bytes().to_vec().into()) {
            Ok(index) => format!("index={}\n", index.0),
            Err(error) => format!("error: {error}\n"),
        }
    }

    /// `propose-conf-change ID add-learner|add-voter|remove NODE`
    fn propose_conf_change(&mut self, command: &Command) -> String {
        let node = command.id(2);
        let change = match command.arg(1) {
            "add-learner" => ConfChange::AddLearner(node),
            "add-voter" => ConfChange::AddVoter(node),
            "remove" => ConfChange::Remove(node),
            other => panic!("unknown conf change {other:?}"),
        };
        match self.core(command.id(0)).propose_conf_change(change) {
            Ok(index) => format!("index={}\n", index.0),
            Err(error) => format!("error: {error}\n"),
        }
    }

    /// `read-index ID id=N`
    fn read_index(&mut self, command: &Command) -> String {
        let request_id = command.named_number("id").expect("read-index needs id=N");
        match self.core(command.id(0)).read_index(request_id) {
            Ok(()) => String::new(),
            Err(error) => format!("error: {error}\n"),
        }
    }

    fn transfer_leader(&mut self, from: NodeId, to: NodeId) -> String {
        match self.core(from).transfer_leader(to) {
            Ok(()) => String::new(),
            Err(error) => format!("error: {error}\n"),
        }
    }

    /// Steps 1 and 2: takes the Ready, sends what may leave now, holds the rest.
    fn take_ready(&mut self, id: NodeId) -> String {
        assert!(
            self.node(id).pending.is_none(),
            "node {id:?} already holds an unpersisted Ready"
        );
        let ready = self.core(id).ready();
        let out = render::ready(&ready);
        self.network.extend(ready.messages.iter().cloned());
        self.node_mut(id).pending = Some(ready);
        out
    }

    fn persist_command(&mut self, id: NodeId) -> String {
        assert!(
            self.node(id).pending.is_some(),
            "node {id:?} holds no Ready to persist"
        );
        self.persist(id);
        String::new()
    }

    /// Steps 3 to 6 for the held Ready.
    fn persist(&mut self, id: NodeId) {
        let Some(ready) = self.node_mut(id).pending.take() else {
            return;
        };
        let core = self.core(id);
        core.storage_mut().persist_ready(&ready);
        // Step 4: the write is durable, acknowledgements may leave. Step 5 is the harness's
        // safety bookkeeping below; step 6 reports it all.
        self.network
            .extend(ready.persisted_messages.iter().cloned());
        self.core(id).advance(ready.advance());
        let applied = ready
            .committed_entries
            .iter()
            .map(|e| (e.index, e.term))
            .chain(
                ready
                    .snapshot
                    .iter()
                    .map(|s| (s.metadata.index, s.metadata.term)),
            );
        for (index, term) in applied {
            let seen = *self.applied_terms.entry(index).or_insert(term);
            assert_eq!(
                seen, term,
                "State Machine Safety: node {id:?} applied {index:?} of {term:?}, another {seen:?}"
            );
        }
    }

    /// All six steps for each node that has work; a held Ready is persisted first.
    fn process_ready(&mut self, id: NodeId) -> String {
        let mut out = String::new();
        if self.node(id).pending.is_some() {
            self.persist(id);
            out.push_str("  (persisted the held Ready)\n");
        }
        if self.node(id).core.as_ref().is_some_and(|c| c.has_ready()) {
            out.push_str(&self.take_ready(id));
            self.persist(id);
        }
        out
    }

    fn process_ready_command(&mut self, ids: &[NodeId]) -> String {
        let ids = if ids.is_empty() {
            self.live_ids()
        } else {
            ids.to_vec()
        };
        let mut out = String::new();
        for id in ids {
            let text = self.process_ready(id);
            if !text.is_empty() {
                let _ = writeln!(out, "> {} handling Ready", id.0);
                out.push_str(&text);
            }
        }
        out
    }

    fn live_ids(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.core.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    /// `deliver-msgs [ID...] [drop=(ID,..)]`: delivers every queued message addressed to the
    /// listed nodes (all nodes when none is listed); messages to `drop` nodes are lost.
    fn deliver_command(&mut self, command: &Command) -> String {
        let to = command.ids_from(0);
        let drop = command.named_ids("drop").unwrap_or_default();
        let selected = |m: &Message| to.is_empty() || to.contains(&m.to) || drop.contains(&m.to);
        self.deliver(selected, &drop)
    }

    fn deliver(&mut self, selected: impl Fn(&Message) -> bool, drop: &[NodeId]) -> String {
        let (now, later): (Vec<Message>, Vec<Message>) = std::mem::take(&mut self.network)
            .into_iter()
            .partition(|m| selected(m));
        self.network = later;
        let mut out = String::new();
        for message in now {
            let line = render::message(&message);
            if drop.contains(&message.to) {
                let _ = writeln!(out, "dropped: {line}");
            } else if self.cut.contains(&(message.from, message.to)) {
                let _ = writeln!(out, "dropped (partition): {line}");
            } else if let Some(core) = self
                .nodes
                .get_mut(&message.to)
                .and_then(|n| n.core.as_mut())
            {
                let _ = writeln!(out, "{line}");
                core.step(message);
            } else {
                let _ = writeln!(out, "dropped (node down): {line}");
            }
        }
        out
    }

    /// Handles Readies and delivers messages until nothing moves, among the listed nodes
    /// (all when none is listed); messages to other nodes stay queued.
    fn stabilize(&mut self, only: &[NodeId]) -> String {
        let mut out = String::new();
        let listed = |id: &NodeId| only.is_empty() || only.contains(id);
        for _round in 0..1000 {
            let mut moved = false;
            for id in self.live_ids().into_iter().filter(listed) {
                let text = self.process_ready(id);
                if !text.is_empty() {
                    moved = true;
                    let _ = writeln!(out, "> {} handling Ready", id.0);
                    out.push_str(&text);
                }
            }
            let ids: Vec<NodeId> = self.nodes.keys().copied().filter(listed).collect();
            for id in ids {
                if !self.network.iter().any(|m| m.to == id) {
                    continue;
                }
                moved = true;
                let _ = writeln!(out, "> {} receiving messages", id.0);
                for line in self.deliver(|m| m.to == id, &[]).lines() {
                    let _ = writeln!(out, "  {line}");
                }
            }
            if !moved {
                return out;
            }
        }
        panic!("stabilize did not settle within 1000 rounds:\n{out}");
    }

    fn raft_state(&self) -> String {
        let mut out = String::new();
        for (id, node) in &self.nodes {
            let Some(core) = &node.core else {
                let storage = node.down.as_ref().expect("a down node keeps its storage");
                let _ = writeln!(
                    out,
                    "{}: down (persisted term={} last={})",
                    id.0,
                    storage.hard_state().term.0,
                    storage.last_index().0
                );
                continue;
            };
            let vote = core.vote().map_or("none".to_string(), |v| v.0.to_string());
            let leader = core
                .leader()
                .map_or("none".to_string(), |l| l.0.to_string());
            let _ = writeln!(
                out,
                "{}: {:?} term={} vote={vote} leader={leader} commit={} applied={} last={} {}",
                id.0,
                core.role(),
                core.term().0,
                core.committed().0,
                core.applied().0,
                core.last_index().0,
                render::conf(core.conf_state())
            );
        }
        out
    }

    /// The node's log: the snapshot it starts from, every entry, and which are not yet
    /// persisted.
    fn log(&self, id: NodeId) -> String {
        let node = self.node(id);
        let mut out = String::new();
        let Some(core) = &node.core else {
            let storage = node.down.as_ref().expect("a down node keeps its storage");
            let meta = storage.snapshot_metadata();
            let _ = writeln!(
                out,
                "down; persisted: snapshot ({},{}) {}",
                meta.index.0,
                meta.term.0,
                render::conf(&meta.conf_state)
            );
            for entry in storage.all_entries() {
                let _ = writeln!(out, "{}", render::entry(entry));
            }
            return out;
        };
        let log = core.log();
        let first = log.first_index();
        let snapshot_term = log.term_or_zero(first.prev());
        let _ = writeln!(out, "snapshot ({},{})", first.prev().0, snapshot_term.0);
        let entries = log
            .entries(first, log.last_index().next(), usize::MAX)
            .expect("the whole log is readable");
        for entry in entries {
            let mark = if entry.index > log.persisted() {
                " (unpersisted)"
            } else {
                ""
            };
            let _ = writeln!(out, "{}{mark}", render::entry(&entry));
        }
        let _ = writeln!(
            out,
            "committed={} applied={}",
            log.committed().0,
            log.applied().0
        );
        out
    }

    /// The leader's replication progress for each member.
    fn progress(&mut self, id: NodeId) -> String {
        let core = self.core(id);
        let mut out = String::new();
        let members: Vec<NodeId> = core.conf_state().members().collect();
        for member in members {
            match core.progress(member) {
                Some(p) => {
                    let _ = writeln!(
                        out,
                        "{}: match={} next={} {:?} inflight={}",
                        member.0,
                        p.match_index.0,
                        p.next_index.0,
                        p.state,
                        p.inflight_count()
                    );
                }
                None => {
                    let _ = writeln!(out, "{}: no progress (not leader)", member.0);
                }
            }
        }
        out
    }

    /// Snapshots the node's state machine at its applied index and compacts its log there.
    fn compact(&mut self, id: NodeId) -> String {
        let core = self.core(id);
        let applied = core.applied();
        let conf = core.conf_state().clone();
        core.storage_mut()
            .create_snapshot(applied, conf, b"state".to_vec());
        let first = core.storage().first_index();
        format!("snapshot at {}; log now starts at {}\n", applied.0, first.0)
    }

    /// Loses everything the node did not persist: its unstable log, its held Ready (and the
    /// acknowledgements waiting on it), its in-memory state.
    fn crash(&mut self, id: NodeId) -> String {
        let node = self.node_mut(id);
        let core = node.core.take().expect("node is up");
        node.pending = None;
        node.down = Some(core.storage().clone());
        String::new()
    }

    fn restart(&mut self, id: NodeId) -> String {
        let node = self.node_mut(id);
        let storage = node.down.take().expect("node is down");
        let core = RaftCore::new(node.config.clone(), storage).expect("restart");
        let out = format!(
            "{}: term={} vote={} commit={} last={}\n",
            id.0,
            core.term().0,
            core.vote().map_or("none".to_string(), |v| v.0.to_string()),
            core.committed().0,
            core.last_index().0
        );
        node.core = Some(core);
        out
    }

    /// `partition (1) (2,3)`: cuts every link between the groups, both ways.
    fn partition(&mut self, command: &Command) -> String {
        let groups: Vec<Vec<NodeId>> = command.positional.iter().map(|g| parse_ids(g)).collect();
        for (i, a) in groups.iter().enumerate() {
            for b in groups.iter().skip(i + 1) {
                for x in a {
                    for y in b {
                        self.cut.insert((*x, *y));
                        self.cut.insert((*y, *x));
                    }
                }
            }
        }
        String::new()
    }

    /// `isolate ID [in|out]`: cuts the node's inbound links, outbound links, or both.
    fn isolate(&mut self, command: &Command) -> String {
        let id = command.id(0);
        let direction = command.positional.get(1).map_or("both", String::as_str);
        let others: Vec<NodeId> = self.nodes.keys().copied().filter(|o| *o != id).collect();
        for other in others {
            if direction != "out" {
                self.cut.insert((other, id));
            }
            if direction != "in" {
                self.cut.insert((id, other));
            }
        }
        String::new()
    }

    fn check_safety(&mut self, line: &str) {
        for (id, node) in &self.nodes {
            let Some(core) = &node.core else { continue };
            if let Err(broken) = core.invariants() {
                panic!("after {line:?}: node {id:?} breaks an invariant: {broken}");
            }
            if core.role() == Role::Leader {
                let seen = *self.leaders.entry(core.term()).or_insert(*id);
                assert_eq!(
                    seen,
                    *id,
                    "Election Safety: {seen:?} and {id:?} both led {:?}",
                    core.term()
                );
            }
        }
    }
}
