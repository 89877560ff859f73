//! Cross-core hand-off: a client request that reached a core that does not own its Region
//! is forwarded to the owning core over glommio's lock-free shared channels, and the answer
//! comes back the same way. One bounded channel per ordered pair of cores; no locks.
//!
//! ```text
//!  client ─► core A (wrong core) ── Request{token} ──► core B (owner) ─► Store
//!  client ◄─ core A ◄── Reply{token, frame} ────────── core B ◄─ answer
//! ```

use glommio::channels::shared_channel::{
    self, ConnectedReceiver, ConnectedSender, SharedReceiver, SharedSender,
};
use tessera_core::{Message, NodeId, RegionId};
use tessera_transport::client::ClientRequest;

use crate::region::Region;
use crate::store::handoff::HandOffState;

use super::core::{Event, Inbox};

/// Messages in flight between two cores, at most this many per direction.
pub const CROSS_CORE_MESSAGES_MAX: usize = 4096;

/// What one core sends another.
pub enum CrossCore {
    /// A request for a Region the receiver owns; answer with `Reply` carrying `token`.
    /// `hops` counts the cores it passed through (a core that lost the Region to a
    /// hand-off passes it on), so that routing tables lagging behind a hand-off never bounce
    /// a request for ever.
    Request {
        from_core: usize,
        token: u64,
        hops: u8,
        request: ClientRequest,
    },
    /// The encoded response frame for the request the receiver forwarded as `token`.
    Reply { token: u64, frame: Vec<u8> },
    /// The sender's Regions that changed (split, or recovered at startup), for the
    /// receiver's routing table.
    Regions(Vec<Region>),
    /// The sender's Regions whose leader changed (`None`: none known now), so that the
    /// routing table any core answers names the leaders of every core's Regions.
    Leaders(Vec<(RegionId, Option<NodeId>)>),
    /// Raft messages that reached this node on a core that does not host their Region.
    Raft(Vec<(RegionId, Message)>),
    /// Where Regions live now: `(region, core, hand-off generation)`, `None` for a Region
    /// that left the node. Newer generations win (see `core::handoff`).
    Placement(Vec<(RegionId, Option<usize>, u64)>),
    /// The balancer (core 0) asks the receiver to hand `region` to core `to`.
    MoveToCore { region: RegionId, to: usize },
    /// A Region handed over, at hand-off generation `generation`.
    /// `taken_at`: when the sender took it out of its Store (the Region's pause began).
    HandOff {
        from_core: usize,
        generation: u64,
        state: Box<HandOffState>,
        taken_at: std::time::Instant,
    },
    /// The answer to `HandOff`: installed durably (the sender frees its copy) or refused
    /// (the sender takes the Region back).
    HandOffDone { region: RegionId, installed: bool },
    /// A hand-off the balancer asked for ended (done or given up).
    HandOffEnded { region: RegionId },
}

/// One core's ends of the mesh, before they are connected on its executor.
pub struct Ends {
    senders: Vec<Option<SharedSender<CrossCore>>>,
    receivers: Vec<SharedReceiver<CrossCore>>,
}

/// Builds the mesh for `cores` cores: `ends[i]` goes to core `i`.
pub fn mesh(cores: usize) -> Vec<Ends> {
    let mut ends: Vec<Ends> = (0..cores)
        .map(|_| Ends {
            senders: (0..cores).map(|_| None).collect(),
            receivers: Vec::new(),
        })
        .collect();
    for from in 0..cores {
        for to in (0..cores).filter(|to| *to != from) {
            let (sender, receiver) = shared_channel::new_bounded(CROSS_CORE_MESSAGES_MAX);
            ends[from].senders[to] = Some(sender);
            ends[to].receivers.push(receiver);
        }
    }
    ends
}

/// The connected sending ends of one core, indexed by destination core.
pub struct Links {
    senders: Vec<Option<ConnectedSender<CrossCore>>>,
}

impl Links {
    /// The cores this core can send to.
    pub fn cores(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.senders.len()).filter(|c| self.senders[*c].is_some())
    }

    /// Sends without waiting. False when the channel is full or closed, or `to_core` is this
    /// core or out of range.
    pub fn try_send(&self, to_core: usize, message: CrossCore) -> bool {
        match self.senders.get(to_core).and_then(Option::as_ref) {
            Some(sender) => sender.try_send(message).is_ok(),
            None => false,
        }
    }
}

/// Connects this core's ends (on its own executor) and starts one task per inbound channel
/// that moves messages into the core's inbox. Connecting waits for the other side, so the
/// receivers connect in their own tasks first: sequential connects would deadlock two cores
/// each waiting for the other.
pub async fn connect(ends: Ends, inbox: Inbox) -> Links {
    for receiver in ends.receivers {
        let inbox = inbox.clone();
        glommio::spawn_local(async move {
            let receiver: ConnectedReceiver<CrossCore> = receiver.connect().await;
            while let Some(message) = receiver.recv().await {
                if inbox.send(Event::CrossCore(message)).await.is_err() {
                    return;
                }
            }
        })
        .detach();
    }
    let mut senders = Vec::new();
    for sender in ends.senders {
        senders.push(match sender {
            Some(sender) => Some(sender.connect().await),
            None => None,
        });
    }
    Links { senders }
}
