//! The WAL's one error type.
//!
//! Every variant carries enough context to act on without a debugger: the operation and path
//! of a failed system call, the segment and byte offset of damaged bytes, the Region and index
//! of a read outside the stored log. Programmer errors (a batch that leaves a gap in a Region's
//! log, say) are assertions instead, because no caller can handle them.

use std::path::PathBuf;

use tessera_core::{LogIndex, RegionId};

use crate::format::SegmentSeq;

/// Why a WAL call failed.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// A system call failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done ("open segment", "fdatasync", ...).
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Bytes on disk are damaged somewhere other than a torn tail. Nothing after this point
    /// was read; the operator decides (see `tessera-wal verify` and `repair`).
    #[error("corruption in segment {segment} at byte offset {offset}: {reason}")]
    Corruption {
        segment: SegmentSeq,
        offset: u64,
        reason: String,
    },
    /// The segment files do not form one consecutive run of sequence numbers.
    #[error("missing segment: expected {expected} after {previous}, found {found} in {dir}")]
    MissingSegment {
        dir: PathBuf,
        previous: SegmentSeq,
        expected: SegmentSeq,
        found: SegmentSeq,
    },
    /// A segment file's header names another sequence number than its file name.
    #[error("segment file {path} holds sequence number {in_header}, its name says {in_name}")]
    MisnamedSegment {
        path: PathBuf,
        in_name: SegmentSeq,
        in_header: SegmentSeq,
    },
    /// A read below the Region's first index: those entries are covered by a snapshot.
    #[error("region {region}: index {requested} is compacted (first index {first})")]
    Compacted {
        region: RegionId,
        requested: LogIndex,
        first: LogIndex,
    },
    /// A read past the Region's last index.
    #[error("region {region}: index {requested} is past the last index {last}")]
    Unavailable {
        region: RegionId,
        requested: LogIndex,
        last: LogIndex,
    },
    /// The WAL holds nothing for this Region.
    #[error("region {0} is unknown to the WAL")]
    UnknownRegion(RegionId),
    /// One batch encodes to more bytes than one record may hold.
    #[error("batch of {bytes} bytes exceeds the record limit of {limit} bytes")]
    BatchTooLarge { bytes: usize, limit: usize },
    /// A snapshot file is damaged or not a snapshot.
    #[error("invalid snapshot file {path}: {reason}")]
    InvalidSnapshot { path: PathBuf, reason: String },
    /// Options that cannot work.
    #[error("invalid WAL options: {0}")]
    InvalidOptions(String),
    /// An earlier write or fdatasync failed, so the WAL accepts nothing more. The node must
    /// stop and recover from disk: after a failed fdatasync the kernel may have dropped the
    /// dirty pages and cleared the error, so a retry could "succeed" without the data.
    #[error("WAL is unusable after an earlier failure: {0}")]
    Poisoned(String),
    /// The WAL was closed.
    #[error("WAL is closed")]
    Closed,
    /// The executor could not be built (usually the locked-memory limit).
    #[error("cannot start the executor: {0}")]
    Executor(String),
}

impl WalError {
    /// Wraps an `io::Error` with the operation and path it came from.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> WalError {
        WalError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// A corruption error at `segment`/`offset`.
    pub fn corruption(segment: SegmentSeq, offset: u64, reason: impl Into<String>) -> WalError {
        WalError::Corruption {
            segment,
            offset,
            reason: reason.into(),
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = WalError> = std::result::Result<T, E>;
