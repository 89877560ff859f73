//! Reading segment files through `memmap2`: the code recovery and the `tessera-wal` tool share.
//!
//! Nothing here writes. [`SegmentReader`] maps one segment (or holds its bytes in memory, for
//! a simulated disk) and steps through its records; [`scan_dir`] (and [`scan_segments`], its
//! form over segments already at hand) walks every segment in order and applies the recovery
//! rules:
//!
//! 1. Segment files form one run of consecutive sequence numbers (a purged prefix is fine; a
//!    hole is [`WalError::MissingSegment`]), and each header names its own sequence number.
//! 2. In every segment but the newest, the records are followed only by zeros. Any damaged
//!    record there is [`WalError::Corruption`] naming segment and offset.
//! 3. In the newest segment, a damaged record with nothing valid after it is a torn tail: the
//!    last write did not finish before a crash. It is reported and the caller cuts it. If a
//!    valid record follows the damage, an earlier record was damaged: corruption.
//! 4. A record whose checksum matches but whose body does not decode is corruption wherever
//!    it is: a complete write cannot be torn.
//! 5. A newest segment holding no valid record (nothing after its header, or a torn first
//!    record with nothing valid after it) was prepared ahead of need and never started, or
//!    its checkpoint write was torn: it held nothing acknowledged, since a segment's batches
//!    are written only after its checkpoint. It is set aside ([`DirScan::unstarted`]) and the
//!    segment before it is the newest for rules 2 and 3.

use std::borrow::Borrow;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::{Result, WalError};
use crate::format::{
    self, decode_body, record_crc, Item, RecordHeader, RecordType, SegmentSeq, RECORD_HEADER_LEN,
    SEGMENT_HEADER_LEN,
};

/// A segment file found in a WAL directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentFile {
    pub seq: SegmentSeq,
    pub path: PathBuf,
}

/// Lists the segment files of `dir` in sequence order and checks that they are consecutive.
/// Other files (snapshots, temporary files) are ignored.
///
/// # Errors
/// `Io` if the directory cannot be read, `MissingSegment` on a hole in the sequence.
pub fn list_segments(dir: &Path) -> Result<Vec<SegmentFile>> {
    let read_dir = std::fs::read_dir(dir).map_err(|e| WalError::io("read directory", dir, e))?;
    let mut segments = Vec::new();
    for dir_entry in read_dir {
        let dir_entry = dir_entry.map_err(|e| WalError::io("read directory", dir, e))?;
        let name = dir_entry.file_name();
        if let Some(seq) = name.to_str().and_then(SegmentSeq::from_file_name) {
            segments.push(SegmentFile {
                seq,
                path: dir_entry.path(),
            });
        }
    }
    segments.sort_by_key(|segment| segment.seq);
    let seqs: Vec<SegmentSeq> = segments.iter().map(|segment| segment.seq).collect();
    check_consecutive(dir, &seqs)?;
    Ok(segments)
}

/// Checks that sorted segment numbers form one consecutive run.
///
/// # Errors
/// `MissingSegment` on the first hole.
pub fn check_consecutive(dir: &Path, seqs: &[SegmentSeq]) -> Result<()> {
    for pair in seqs.windows(2) {
        if pair[1] != pair[0].next() {
            return Err(WalError::MissingSegment {
                dir: dir.to_path_buf(),
                previous: pair[0],
                expected: pair[0].next(),
                found: pair[1],
            });
        }
    }
    Ok(())
}

/// One record read from a segment, checksum verified and body decoded.
#[derive(Debug)]
pub struct RecordView<'a> {
    /// Byte offset of the record header in the segment file.
    pub offset: u64,
    pub record_type: RecordType,
    pub body: &'a [u8],
    pub items: Vec<Item<'a>>,
}

impl RecordView<'_> {
    /// Byte offset of the body in the segment file.
    pub fn body_offset(&self) -> u64 {
        self.offset + RECORD_HEADER_LEN as u64
    }

    /// Bytes the record takes (header and body).
    pub fn len(&self) -> u64 {
        (RECORD_HEADER_LEN + self.body.len()) as u64
    }

    /// True for a record with an empty body (never written, but part of the API contract).
    pub fn is_empty(&self) -> bool {
        self.body.is_empty()
    }
}

/// What is at one position of a segment.
#[derive(Debug)]
pub enum Step<'a> {
    /// A valid record.
    Record(RecordView<'a>),
    /// The end of the log in this segment: only zeros follow.
    End,
    /// Damaged bytes. `complete` is true when the record's checksum matched (so it is not a
    /// torn write) but its body did not decode.
    Damaged { reason: String, complete: bool },
}

/// The bytes of a segment: a mapped file, or bytes held in memory (simulations, tests).
enum Backing {
    Mapped(Option<Mmap>),
    Owned(Vec<u8>),
}

/// A segment's bytes with its header checked: a mapped file, or bytes in memory.
pub struct SegmentReader {
    seq: SegmentSeq,
    path: PathBuf,
    backing: Backing,
}

impl SegmentReader {
    /// Maps `segment` and checks its header.
    ///
    /// # Errors
    /// `Io` on open or map failure, `Corruption` at offset 0 for a bad header,
    /// `MisnamedSegment` if the header names another sequence number.
    pub fn open(segment: &SegmentFile) -> Result<SegmentReader> {
        let file = File::open(&segment.path)
            .map_err(|e| WalError::io("open segment", &segment.path, e))?;
        let len = file
            .metadata()
            .map_err(|e| WalError::io("stat segment", &segment.path, e))?
            .len();
        // SAFETY: the WAL never truncates or shrinks a segment file while it may be mapped;
        // only the tool's `repair` writes into one, and only while no WAL has it open.
        let map = if len == 0 {
            None
        } else {
            Some(
                unsafe { Mmap::map(&file) }
                    .map_err(|e| WalError::io("map segment", &segment.path, e))?,
            )
        };
        SegmentReader {
            seq: segment.seq,
            path: segment.path.clone(),
            backing: Backing::Mapped(map),
        }
        .checked()
    }

    /// A segment held in memory as `bytes` (a simulated disk), checked like a file. Its path
    /// is the file name it would have.
    ///
    /// # Errors
    /// As [`SegmentReader::open`], without the I/O errors.
    pub fn from_bytes(seq: SegmentSeq, bytes: Vec<u8>) -> Result<SegmentReader> {
        SegmentReader {
            seq,
            path: PathBuf::from(seq.file_name()),
            backing: Backing::Owned(bytes),
        }
        .checked()
    }

    fn checked(self) -> Result<SegmentReader> {
        let in_header = format::decode_segment_header(self.bytes())
            .map_err(|reason| WalError::corruption(self.seq, 0, reason))?;
        if in_header != self.seq {
            return Err(WalError::MisnamedSegment {
                path: self.path.clone(),
                in_name: self.seq,
                in_header,
            });
        }
        Ok(self)
    }

    /// Takes the bytes of an in-memory segment (`None` for a mapped file).
    pub fn into_owned_bytes(self) -> Option<Vec<u8>> {
        match self.backing {
            Backing::Owned(bytes) => Some(bytes),
            Backing::Mapped(_) => None,
        }
    }

    /// The segment's sequence number.
    pub fn seq(&self) -> SegmentSeq {
        self.seq
    }

    /// The segment's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All bytes of the file.
    pub fn bytes(&self) -> &[u8] {
        match &self.backing {
            Backing::Mapped(map) => map.as_deref().unwrap_or(&[]),
            Backing::Owned(bytes) => bytes,
        }
    }

    /// File length in bytes.
    pub fn len(&self) -> u64 {
        self.bytes().len() as u64
    }

    /// True for an empty file (which `open` rejects, so never for an open reader).
    pub fn is_empty(&self) -> bool {
        self.bytes().is_empty()
    }

    /// Offset of the first record.
    pub fn first_record_offset(&self) -> u64 {
        SEGMENT_HEADER_LEN as u64
    }

    /// Reads what is at `offset`, which must be a record boundary.
    pub fn step(&self, offset: u64) -> Step<'_> {
        let bytes = self.bytes();
        let pos = offset as usize;
        if pos + RECORD_HEADER_LEN > bytes.len() || bytes[pos..pos + RECORD_HEADER_LEN] == [0; 12] {
            return match self.first_nonzero(offset) {
                None => Step::End,
                Some(at) => Step::Damaged {
                    reason: format!("non-zero bytes at offset {at} after the last record"),
                    complete: false,
                },
            };
        }
        match self.record_at(pos) {
            Ok(record) => Step::Record(record),
            Err((reason, complete)) => Step::Damaged { reason, complete },
        }
    }

    fn record_at(&self, pos: usize) -> Result<RecordView<'_>, (String, bool)> {
        let bytes = self.bytes();
        let header_bytes = &bytes[pos..pos + RECORD_HEADER_LEN];
        if !RecordHeader::plausible(header_bytes) {
            return Err(("malformed record header".to_string(), false));
        }
        let header = RecordHeader::read(header_bytes);
        let body_start = pos + RECORD_HEADER_LEN;
        let body_end = body_start + header.body_len as usize;
        if body_end > bytes.len() {
            return Err((
                format!("record length {} runs past the end", header.body_len),
                false,
            ));
        }
        let body = &bytes[body_start..body_end];
        if record_crc(self.seq, pos as u64, header_bytes, body) != header.crc {
            return Err(("record checksum mismatch".to_string(), false));
        }
        let record_type = RecordType::from_code(header.type_code).expect("checked plausible");
        let items = decode_body(body).map_err(|(at, reason)| {
            (
                format!("undecodable body at body offset {at}: {reason}"),
                true,
            )
        })?;
        Ok(RecordView {
            offset: pos as u64,
            record_type,
            body,
            items,
        })
    }

    /// The offset of the first valid record after `offset`, searching byte by byte. Used to
    /// tell a torn tail (nothing valid follows) from damage in the middle of the log.
    pub fn find_valid_record_after(&self, offset: u64) -> Option<u64> {
        let bytes = self.bytes();
        let last = bytes.len().checked_sub(RECORD_HEADER_LEN)?;
        ((offset as usize + 1)..=last)
            .filter(|&pos| RecordHeader::plausible(&bytes[pos..]))
            .find(|&pos| self.record_at(pos).is_ok())
            .map(|pos| pos as u64)
    }

    /// The first non-zero byte at or after `offset`.
    pub fn first_nonzero(&self, offset: u64) -> Option<u64> {
        let bytes = self.bytes();
        let start = (offset as usize).min(bytes.len());
        bytes[start..]
            .iter()
            .position(|&b| b != 0)
            .map(|at| (start + at) as u64)
    }

    /// One past the last non-zero byte at or after `offset` (or `offset` if all are zero).
    pub fn end_of_nonzero(&self, offset: u64) -> u64 {
        let bytes = self.bytes();
        let start = (offset as usize).min(bytes.len());
        bytes[start..]
            .iter()
            .rposition(|&b| b != 0)
            .map_or(offset, |at| (start + at + 1) as u64)
    }
}

/// A torn tail found (and, by `Wal::open`, cut) in the newest segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    pub segment: SegmentSeq,
    /// Where the valid log ends and the cut starts.
    pub offset: u64,
    /// How many bytes from `offset` to the last non-zero byte were cut.
    pub bytes: u64,
    /// What was wrong with the bytes at `offset`.
    pub reason: String,
}

/// What [`scan_dir`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirScan {
    /// The segments, oldest first.
    pub segments: Vec<SegmentFile>,
    /// Valid records read, over all segments.
    pub records: u64,
    /// End of the valid log in the newest segment (where the next record goes).
    pub end_offset: u64,
    /// The newest segment's file length.
    pub newest_len: u64,
    pub torn_tail: Option<TornTail>,
    /// A newest segment file that was never started (rule 5 of the module docs): not in
    /// `segments`, not replayed; `Wal::open` deletes it.
    pub unstarted: Option<SegmentFile>,
}

/// Rule 5 of the module docs: the segment holds no valid record, and no damage that a valid
/// record follows.
pub fn is_unstarted(reader: &SegmentReader) -> bool {
    let first = reader.first_record_offset();
    match reader.step(first) {
        Step::End => true,
        Step::Damaged {
            complete: false, ..
        } => reader.find_valid_record_after(first).is_none(),
        Step::Damaged { .. } | Step::Record(_) => false,
    }
}

/// How the records of one segment ended.
enum Ending {
    /// Only zeros follow, from this offset.
    End(u64),
    Damaged {
        offset: u64,
        reason: String,
        complete: bool,
    },
}

/// Reads every record of every segment of `dir` in order, calling `visit` for each, and
/// applies the recovery rules of this module.
///
/// # Errors
/// `Io`, `MissingSegment`, `MisnamedSegment`, `Corruption` as described in the module docs,
/// and whatever `visit` returns.
pub fn scan_dir(
    dir: &Path,
    visit: impl FnMut(&SegmentReader, &RecordView<'_>) -> Result<()>,
) -> Result<DirScan> {
    let segments = list_segments(dir)?;
    scan_segments(segments.iter().map(SegmentReader::open), visit)
}

/// [`scan_dir`] over segments opened one by one as the scan reaches them (mapped files, or
/// bytes in memory for a simulated disk), oldest first; the caller checks that they are
/// consecutive.
///
/// # Errors
/// As [`scan_dir`], and whatever opening a segment returns.
pub fn scan_segments<R: Borrow<SegmentReader>>(
    readers: impl ExactSizeIterator<Item = Result<R>>,
    mut visit: impl FnMut(&SegmentReader, &RecordView<'_>) -> Result<()>,
) -> Result<DirScan> {
    let mut scan = DirScan::default();
    let count = readers.len();
    // The previous segment and how it ended: whether it is the newest (for rules 2 and 3)
    // is known once the next one is open (rule 5).
    let mut previous: Option<(R, Ending)> = None;
    for (i, reader) in readers.enumerate() {
        let reader = reader?;
        let segment = SegmentFile {
            seq: reader.borrow().seq(),
            path: reader.borrow().path().to_path_buf(),
        };
        if i + 1 == count && is_unstarted(reader.borrow()) {
            scan.unstarted = Some(segment);
            break;
        }
        if let Some((previous, ending)) = previous.take() {
            finish_segment(&mut scan, previous.borrow(), ending, false)?;
        }
        scan.segments.push(segment);
        let ending = visit_records(reader.borrow(), &mut scan.records, &mut visit)?;
        previous = Some((reader, ending));
    }
    if let Some((newest, ending)) = previous {
        finish_segment(&mut scan, newest.borrow(), ending, true)?;
    }
    Ok(scan)
}

/// Visits the valid records of one segment, counting them in `records`, up to its end or
/// the first damage.
fn visit_records(
    reader: &SegmentReader,
    records: &mut u64,
    visit: &mut impl FnMut(&SegmentReader, &RecordView<'_>) -> Result<()>,
) -> Result<Ending> {
    let mut offset = reader.first_record_offset();
    loop {
        match reader.step(offset) {
            Step::Record(record) => {
                visit(reader, &record)?;
                *records += 1;
                offset += record.len();
            }
            Step::End => return Ok(Ending::End(offset)),
            Step::Damaged { reason, complete } => {
                return Ok(Ending::Damaged {
                    offset,
                    reason,
                    complete,
                })
            }
        }
    }
}

/// Applies rules 2 and 3 to how a segment ended, and records where the newest one ends.
fn finish_segment(
    scan: &mut DirScan,
    reader: &SegmentReader,
    ending: Ending,
    newest: bool,
) -> Result<()> {
    let end = match ending {
        Ending::End(offset) => offset,
        Ending::Damaged {
            offset,
            reason,
            complete,
        } => {
            scan.torn_tail = Some(classify_damage(reader, offset, reason, complete, newest)?);
            offset
        }
    };
    if newest {
        scan.end_offset = end;
        scan.newest_len = reader.len();
    }
    Ok(())
}

/// Decides whether damage at `offset` is a torn tail (returned) or corruption (an error).
fn classify_damage(
    reader: &SegmentReader,
    offset: u64,
    reason: String,
    complete: bool,
    newest: bool,
) -> Result<TornTail> {
    let seq = reader.seq();
    if complete {
        return Err(WalError::corruption(seq, offset, reason));
    }
    if !newest {
        return Err(WalError::corruption(
            seq,
            offset,
            format!("{reason} (not the newest segment, so not a torn tail)"),
        ));
    }
    if let Some(next) = reader.find_valid_record_after(offset) {
        return Err(WalError::corruption(
            seq,
            offset,
            format!(
                "{reason}; a valid record follows at offset {next}, so this is not a torn tail"
            ),
        ));
    }
    Ok(TornTail {
        segment: seq,
        offset,
        bytes: reader.end_of_nonzero(offset) - offset,
        reason,
    })
}
