//! The sans-I/O half of an outbound peer connection: the bounded queue of messages waiting
//! for one destination (node, core) and the reconnect backoff.
//!
//! Invariants of [`OutboundQueue`]:
//! 1. it never holds more than `queue_messages_max` messages nor more than `queue_bytes_max`
//!    estimated bytes: a push past either bound is refused with `QueueFull` (Raft resends);
//! 2. a batch taken from it holds at least one message when the queue is not empty, at most
//!    `batch_messages_max` messages, and at most `batch_bytes_max` estimated bytes unless its
//!    single message is larger (which `push` refuses past `batch_bytes_max`);
//! 3. messages leave in the order they were pushed.

use std::collections::VecDeque;
use std::time::Duration;

use tessera_core::{Message, NodeId, RegionId};

use crate::raft_codec::MESSAGE_OVERHEAD_BYTES;
use crate::snapshot_chunk::is_streamed;
use crate::{CoreId, TransportError};

/// Bounds of one destination's queue and of the frames built from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboundLimits {
    /// Most messages waiting for one destination.
    pub queue_messages_max: usize,
    /// Most estimated bytes waiting for one destination.
    pub queue_bytes_max: usize,
    /// Most messages in one frame.
    pub batch_messages_max: usize,
    /// Most estimated bytes in one frame; keep it well below the receivers' `frame_bytes_max`.
    pub batch_bytes_max: usize,
    /// Snapshots with more data than this are streamed as `SnapshotChunk` frames of at most
    /// this many data bytes, instead of travelling inside a batch. At most `batch_bytes_max`.
    pub snapshot_chunk_bytes: usize,
}

impl Default for OutboundLimits {
    fn default() -> OutboundLimits {
        OutboundLimits {
            queue_messages_max: 4096,
            queue_bytes_max: 64 << 20,
            batch_messages_max: 1024,
            batch_bytes_max: 8 << 20,
            snapshot_chunk_bytes: 1 << 20,
        }
    }
}

/// Messages waiting for one destination (node, core).
#[derive(Debug)]
pub struct OutboundQueue {
    to_node: NodeId,
    to_core: CoreId,
    limits: OutboundLimits,
    items: VecDeque<(RegionId, Message, usize)>,
    queued_bytes: usize,
}

impl OutboundQueue {
    /// An empty queue towards `to_node`'s core `to_core`.
    pub fn new(to_node: NodeId, to_core: CoreId, limits: OutboundLimits) -> OutboundQueue {
        OutboundQueue {
            to_node,
            to_core,
            limits,
            items: VecDeque::new(),
            queued_bytes: 0,
        }
    }

    /// Queues one message.
    ///
    /// # Errors
    /// [`TransportError::MessageTooLarge`] when the message alone exceeds `batch_bytes_max`;
    /// [`TransportError::QueueFull`] when a bound would be passed.
    ///
    /// A streamed snapshot (see [`is_streamed`]) counts as one chunk: its data is shared, not
    /// copied, and leaves a chunk at a time.
    pub fn push(&mut self, region_id: RegionId, message: Message) -> Result<(), TransportError> {
        let chunk_bytes = self.limits.snapshot_chunk_bytes;
        let size_bytes = if is_streamed(&message, chunk_bytes) {
            chunk_bytes + MESSAGE_OVERHEAD_BYTES
        } else {
            message.body.size_bytes() + MESSAGE_OVERHEAD_BYTES
        };
        if size_bytes > self.limits.batch_bytes_max {
            return Err(TransportError::MessageTooLarge {
                region_id,
                size_bytes,
                max_bytes: self.limits.batch_bytes_max,
            });
        }
        if self.items.len() >= self.limits.queue_messages_max
            || self.queued_bytes + size_bytes > self.limits.queue_bytes_max
        {
            return Err(TransportError::QueueFull {
                to_node: self.to_node,
                to_core: self.to_core,
                queued_messages: self.items.len(),
                queued_bytes: self.queued_bytes,
            });
        }
        self.queued_bytes += size_bytes;
        self.items.push_back((region_id, message, size_bytes));
        Ok(())
    }

    /// Takes the next batch (empty when the queue is).
    pub fn take_batch(&mut self) -> Vec<(RegionId, Message)> {
        let mut batch = Vec::new();
        let mut batch_bytes = 0;
        while let Some((_, _, size_bytes)) = self.items.front() {
            let full = batch.len() >= self.limits.batch_messages_max
                || (!batch.is_empty() && batch_bytes + size_bytes > self.limits.batch_bytes_max);
            if full {
                break;
            }
            let (region_id, message, size_bytes) = self.items.pop_front().expect("front exists");
            batch_bytes += size_bytes;
            self.queued_bytes -= size_bytes;
            batch.push((region_id, message));
        }
        batch
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Estimated bytes waiting.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }
}

/// Exponential reconnect backoff: `initial`, doubling per failure, capped at `max`, back to
/// `initial` after a success. No jitter: one core has one connection per destination, so there
/// is no herd to spread.
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// # Panics
    /// If `initial` is zero or larger than `max` (a configuration bug).
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        assert!(
            !initial.is_zero() && initial <= max,
            "backoff initial {initial:?} must be positive and at most max {max:?}"
        );
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    /// The delay before the next attempt; doubles the one after.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// Call after a successful connection.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_core::{MessageBody, Payload, Term};

    fn heartbeat() -> Message {
        Message {
            from: NodeId(1),
            to: NodeId(2),
            term: Term(1),
            body: MessageBody::HeartbeatResponse { read_context: 0 },
        }
    }

    fn snapshot_of(bytes: usize) -> Message {
        let mut message = heartbeat();
        message.body = MessageBody::InstallSnapshot {
            snapshot: tessera_core::Snapshot {
                data: Payload::from(vec![0; bytes]),
                ..Default::default()
            },
        };
        message
    }

    fn limits() -> OutboundLimits {
        OutboundLimits {
            queue_messages_max: 10,
            queue_bytes_max: 10_000,
            batch_messages_max: 4,
            batch_bytes_max: 1_000,
            snapshot_chunk_bytes: 900,
        }
    }

    #[test]
    fn queue_refuses_past_its_bounds_and_batches_within_them() {
        let mut queue = OutboundQueue::new(NodeId(2), CoreId(0), limits());
        for region in 1..=10 {
            queue.push(RegionId(region), heartbeat()).unwrap();
        }
        assert!(matches!(
            queue.push(RegionId(11), heartbeat()),
            Err(TransportError::QueueFull {
                queued_messages: 10,
                ..
            })
        ));
        let sizes: Vec<usize> = std::iter::from_fn(|| {
            let batch = queue.take_batch();
            (!batch.is_empty()).then_some(batch.len())
        })
        .collect();
        assert_eq!(sizes, vec![4, 4, 2]);
        assert_eq!(queue.queued_bytes(), 0);
    }

    #[test]
    fn large_messages_get_their_own_batch_and_oversized_ones_are_refused() {
        let mut queue = OutboundQueue::new(NodeId(2), CoreId(0), limits());
        queue.push(RegionId(1), heartbeat()).unwrap();
        queue.push(RegionId(2), snapshot_of(850)).unwrap();
        queue.push(RegionId(3), heartbeat()).unwrap();
        let mut append = heartbeat();
        append.body = MessageBody::AppendEntries {
            prev_log_index: tessera_core::LogIndex(1),
            prev_log_term: Term(1),
            entries: vec![tessera_core::Entry {
                term: Term(1),
                index: tessera_core::LogIndex(2),
                kind: tessera_core::EntryKind::Normal,
                data: Payload::from(vec![0; 1_000]),
            }],
            leader_commit: tessera_core::LogIndex(1),
        };
        assert!(matches!(
            queue.push(RegionId(4), append),
            Err(TransportError::MessageTooLarge { .. })
        ));
        let regions = |batch: Vec<(RegionId, Message)>| -> Vec<u64> {
            batch.iter().map(|(r, _)| r.get()).collect()
        };
        assert_eq!(regions(queue.take_batch()), vec![1]);
        assert_eq!(regions(queue.take_batch()), vec![2]);
        assert_eq!(regions(queue.take_batch()), vec![3]);
        assert!(queue.is_empty());
    }

    #[test]
    fn a_streamed_snapshot_counts_as_one_chunk_whatever_its_size() {
        let mut queue = OutboundQueue::new(NodeId(2), CoreId(0), limits());
        queue.push(RegionId(1), snapshot_of(50_000)).unwrap();
        assert_eq!(queue.queued_bytes(), 900 + MESSAGE_OVERHEAD_BYTES);
        queue.push(RegionId(2), heartbeat()).unwrap();
        assert_eq!(
            queue.take_batch().len(),
            1,
            "a chunk-sized item fills a batch"
        );
        assert_eq!(queue.take_batch().len(), 1);
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(35));
        let delays: Vec<u128> = (0..4).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, vec![10, 20, 35, 35]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(10));
    }
}
