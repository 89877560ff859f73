//! `tessera-wal`: one segmented write-ahead log per core, shared by all that core's Regions.
//!
//! Like raft-engine for TiKV, one write and one fdatasync make a whole batch of many Regions'
//! entries and hard states durable. The pieces, one module each:
//!
//! - [`format`]: the bytes on disk (documented byte by byte in `docs/wal-format.md`);
//! - [`LogBatch`]: what one append carries, for any number of Regions;
//! - `segment`: the active segment file, written through glommio DMA files (io_uring);
//! - `group_commit`: appends that arrive while a write is in flight go out together next;
//! - [`index`]: where every stored entry lies, rebuilt on recovery;
//! - [`scan`]: memory-mapped reading and the recovery rules, shared with the `tessera-wal` tool;
//! - [`recovery`]: rebuilding the index from the segments, the read-only half of opening;
//! - [`memory`]: the same log held in memory ([`memory::MemLog`]) for deterministic
//!   simulations, and [`memory::LogRead`], what recovery reads from either;
//! - [`snapshot`]: durable snapshot files read through `memmap2`;
//! - `zero_fill`: zeros over the active segment's unwritten blocks, in the background;
//! - `spare_thread`: the next segment prepared on a thread of its own, with blocking writes;
//! - [`extents`]: which blocks of a file are unwritten (FIEMAP);
//! - [`executor`]: building a glommio executor within the locked-memory limit;
//! - [`io_poll`]: glommio's polled ring only for devices that poll.
//!
//! # Tutorial
//!
//! ```
//! use tessera_core::{Entry, EntryKind, HardState, LogIndex, RegionId, Term};
//! use tessera_wal::{LogBatch, Wal, WalOptions};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let mut options = WalOptions::new(dir.path());
//! options.segment_size_bytes = 64 << 10;
//! tessera_wal::executor::run_local(async move {
//!     // Open: replays what is on disk (nothing yet) and starts the group-commit flusher.
//!     let (wal, report) = Wal::open(options.clone()).await.unwrap();
//!     assert!(report.torn_tail.is_none());
//!
//!     // Append: one batch for any number of Regions; returns once durable.
//!     let region = RegionId(7);
//!     let entry = Entry { term: Term(1), index: LogIndex(1), kind: EntryKind::Normal, data: b"put x".to_vec().into() };
//!     let mut batch = LogBatch::new();
//!     batch.add_entries(region, &[entry.clone()]);
//!     batch.set_hard_state(region, HardState { term: Term(1), vote: None, commit: LogIndex(1) });
//!     wal.append(batch).await.unwrap();
//!
//!     // Read, synchronously.
//!     assert_eq!(wal.entries(region, LogIndex(1), LogIndex(2), usize::MAX).unwrap(), vec![entry]);
//!     wal.close().await.unwrap();
//!
//!     // Reopen: the index is rebuilt from the segments.
//!     let (wal, report) = Wal::open(options).await.unwrap();
//!     assert_eq!(report.regions, 1);
//!     assert_eq!(wal.last_index(region).unwrap(), LogIndex(1));
//!     wal.close().await.unwrap();
//! })
//! .unwrap();
//! ```

pub mod error;
pub mod executor;
pub mod extents;
pub mod faults;
pub mod format;
mod group_commit;
pub mod index;
pub mod io_poll;
pub mod log_batch;
pub mod memory;
pub mod options;
pub mod recovery;
pub mod scan;
mod segment;
pub mod snapshot;
mod spare_thread;
mod wal;
mod zero_fill;

pub use error::{Result, WalError};
pub use faults::{FaultInjection, FaultSpec};
pub use format::SegmentSeq;
pub use group_commit::{FlushTiming, WalStats};
pub use log_batch::LogBatch;
pub use memory::{LogRead, MemLog};
pub use options::WalOptions;
pub use scan::TornTail;
pub use segment::WriteTiming;
pub use tessera_core::{Entry, EntryKind, HardState, LogIndex, NodeId, Payload, RegionId, Term};
pub use wal::{RecoveryReport, Wal};
