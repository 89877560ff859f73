//! How scenario output renders the core's values: compact, one line each, like a protocol
//! trace.
//!
//! Notation:
//! - an entry is `index/term`, followed in logs by its payload: `""` for the empty entry a new
//!   leader appends, `"text"` for a proposal, `AddLearner(n4)` for a membership change;
//! - a position in a log is `(index,term)`, as in `prev=(5,5)`;
//! - a message is `from->to Kind term=T ...`, with the fields that matter for its kind.

use std::fmt::Write as _;

use tessera_core::{
    ConfChange, ConfState, Entry, EntryKind, Message, MessageBody, NodeId, Ready, Snapshot,
};

pub fn ids(ids: &[NodeId]) -> String {
    let inner: Vec<String> = ids.iter().map(|id| id.0.to_string()).collect();
    format!("({})", inner.join(","))
}

pub fn conf(conf: &ConfState) -> String {
    let mut out = format!("voters={}", ids(&conf.voters));
    if !conf.learners.is_empty() {
        let _ = write!(out, " learners={}", ids(&conf.learners));
    }
    out
}

/// `index/term` with the payload.
pub fn entry(entry: &Entry) -> String {
    let payload = match entry.kind {
        EntryKind::ConfChange => match ConfChange::decode(&entry.data) {
            Some(change) => format!("{change:?}"),
            None => "<malformed conf change>".to_string(),
        },
        EntryKind::Normal => match std::str::from_utf8(&entry.data) {
            Ok(text) if text.len() <= 40 => format!("{text:?}"),
            _ => format!("<{} bytes>", entry.data.len()),
        },
    };
    format!("{}/{} {payload}", entry.index.0, entry.term.0)
}

fn entry_positions(entries: &[Entry]) -> String {
    let inner: Vec<String> = entries
        .iter()
        .map(|e| format!("{}/{}", e.index.0, e.term.0))
        .collect();
    format!("[{}]", inner.join(","))
}

pub fn snapshot(snapshot: &Snapshot) -> String {
    format!(
        "({},{}) {}",
        snapshot.metadata.index.0,
        snapshot.metadata.term.0,
        conf(&snapshot.metadata.conf_state)
    )
}

pub fn message(message: &Message) -> String {
    let mut out = format!(
        "{}->{} {} term={}",
        message.from.0,
        message.to.0,
        message.body.name(),
        message.term.0
    );
    let _ = match &message.body {
        MessageBody::RequestVote {
            last_log_index,
            last_log_term,
            transfer,
            ..
        } => write!(
            out,
            " last=({},{}){}",
            last_log_index.0,
            last_log_term.0,
            if *transfer { " transfer" } else { "" }
        ),
        MessageBody::RequestVoteResponse { granted, .. } => {
            write!(out, " {}", if *granted { "granted" } else { "rejected" })
        }
        MessageBody::AppendEntries {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
        } => write!(
            out,
            " prev=({},{}) entries={} commit={}",
            prev_log_index.0,
            prev_log_term.0,
            entry_positions(entries),
            leader_commit.0
        ),
        MessageBody::AppendEntriesResponse {
            reject: false,
            index,
            ..
        } => write!(out, " index={}", index.0),
        MessageBody::AppendEntriesResponse {
            reject: true,
            index,
            hint_index,
            hint_term,
        } => write!(
            out,
            " reject index={} hint=({},{})",
            index.0, hint_index.0, hint_term.0
        ),
        MessageBody::Heartbeat {
            commit,
            read_context,
        } => write!(out, " commit={} ctx={read_context}", commit.0),
        MessageBody::HeartbeatResponse { read_context } => write!(out, " ctx={read_context}"),
        MessageBody::InstallSnapshot { snapshot: snap } => {
            write!(out, " snap={}", snapshot(snap))
        }
        MessageBody::TimeoutNow => Ok(()),
        MessageBody::ReadIndexRequest { request_id } => write!(out, " id={request_id}"),
        MessageBody::ReadIndexResponse { request_id, index } => {
            write!(out, " id={request_id} index={}", index.0)
        }
    };
    out
}

/// A `Ready`, section by section, each line indented by two spaces.
pub fn ready(ready: &Ready) -> String {
    let mut out = String::new();
    if let Some(soft) = ready.soft_state {
        let leader = soft.leader.map_or("none".to_string(), |l| l.0.to_string());
        let _ = writeln!(out, "  SoftState: role={:?} leader={leader}", soft.role);
    }
    if let Some(hard) = ready.hard_state {
        let vote = hard.vote.map_or("none".to_string(), |v| v.0.to_string());
        let _ = writeln!(
            out,
            "  HardState: term={} vote={vote} commit={}",
            hard.term.0, hard.commit.0
        );
    }
    if let Some(snap) = &ready.snapshot {
        let _ = writeln!(out, "  Snapshot: {}", snapshot(snap));
    }
    section(&mut out, "Entries", ready.entries.iter().map(entry));
    section(&mut out, "Messages", ready.messages.iter().map(message));
    section(
        &mut out,
        "PersistedMessages",
        ready.persisted_messages.iter().map(message),
    );
    section(
        &mut out,
        "CommittedEntries",
        ready.committed_entries.iter().map(entry),
    );
    section(
        &mut out,
        "ReadStates",
        ready
            .read_states
            .iter()
            .map(|r| format!("id={} index={}", r.request_id, r.index.0)),
    );
    out
}

fn section(out: &mut String, title: &str, lines: impl Iterator<Item = String>) {
    let mut lines = lines.peekable();
    if lines.peek().is_none() {
        return;
    }
    let _ = writeln!(out, "  {title}:");
    for line in lines {
        let _ = writeln!(out, "    {line}");
    }
}
