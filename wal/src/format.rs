//! The on-disk format: segment headers, record framing and record bodies.
//!
//! `docs/wal-format.md` documents every byte; this module is the one place that reads and
//! writes them, shared by the writer, recovery and the `tessera-wal` tool. All integers are
//! little-endian.
//!
//! ```text
//! segment file:  [segment header: 32 B][record][record]...[zeros to the end of the file]
//! record:        [body_len u32][crc u32][type u8][0u8; 3][body: body_len B]
//! body:          [item][item]...           (items are applied in order)
//! ```
//!
//! The record checksum is CRC32C over the segment sequence number and the record's byte offset
//! (both u64), then the record bytes without the crc field. Seeding it with the position means
//! a valid record copied elsewhere (stale bytes, an entry payload that happens to hold a
//! record) does not verify at the wrong place.
//!
//! Decoding validates everything it reads: a record whose checksum matches but whose body does
//! not parse is reported as corruption, never half applied.

use std::fmt;

use tessera_core::{EntryKind, HardState, LogIndex, NodeId, RegionId, Term};

/// The sequence number of a segment file. Segments of one WAL are numbered consecutively from
/// 1; purging deletes a prefix, so the oldest present segment may have any number.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct SegmentSeq(pub u64);

impl SegmentSeq {
    /// The segment after this one.
    pub const fn next(self) -> SegmentSeq {
        SegmentSeq(self.0 + 1)
    }

    /// The file name of this segment: twenty decimal digits and `.wal`, so names sort in
    /// sequence order.
    pub fn file_name(self) -> String {
        format!("{:020}.wal", self.0)
    }

    /// Parses a segment file name written by [`SegmentSeq::file_name`].
    pub fn from_file_name(name: &str) -> Option<SegmentSeq> {
        let digits = name.strip_suffix(".wal")?;
        if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok().map(SegmentSeq)
    }
}

impl fmt::Debug for SegmentSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}", self.0)
    }
}

impl fmt::Display for SegmentSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// First bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"TESSWAL\0";
/// The format version this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes of the segment header; the first record starts right after it.
pub const SEGMENT_HEADER_LEN: usize = 32;
/// Bytes of a record header.
pub const RECORD_HEADER_LEN: usize = 12;
/// Bytes of an entry's header inside an `Entries` item (term, kind, data length).
pub const ENTRY_HEADER_LEN: usize = 13;

/// What a record holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordType {
    /// One group commit: the batches of every append it coalesced.
    Batch,
    /// The first record of a segment: every Region's hard state and compaction mark at the
    /// time the segment was started, so the segments before it can be purged.
    Checkpoint,
}

impl RecordType {
    /// The type byte.
    pub const fn code(self) -> u8 {
        match self {
            RecordType::Batch => 1,
            RecordType::Checkpoint => 2,
        }
    }

    /// The type for a type byte, `None` if unknown.
    pub const fn from_code(code: u8) -> Option<RecordType> {
        match code {
            1 => Some(RecordType::Batch),
            2 => Some(RecordType::Checkpoint),
            _ => None,
        }
    }
}

const TAG_ENTRIES: u8 = 1;
const TAG_HARD_STATE: u8 = 2;
const TAG_COMPACT: u8 = 3;
const TAG_REMOVE_REGION: u8 = 4;
const TAG_INSTALL_SNAPSHOT: u8 = 5;

/// Encodes the header of segment `seq`.
pub fn encode_segment_header(seq: SegmentSeq) -> [u8; SEGMENT_HEADER_LEN] {
    let mut header = [0u8; SEGMENT_HEADER_LEN];
    header[0..8].copy_from_slice(&SEGMENT_MAGIC);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header[16..24].copy_from_slice(&seq.0.to_le_bytes());
    let crc = crc32c::crc32c(&header[0..28]);
    header[28..32].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Decodes a segment header, returning its sequence number.
///
/// # Errors
/// A sentence saying what is wrong (short, bad magic, version, checksum).
pub fn decode_segment_header(bytes: &[u8]) -> Result<SegmentSeq, String> {
    if bytes.len() < SEGMENT_HEADER_LEN {
        return Err(format!(
            "file is {} bytes, shorter than a header",
            bytes.len()
        ));
    }
    if bytes[0..8] != SEGMENT_MAGIC {
        return Err("bad magic: not a Tessera WAL segment".to_string());
    }
    let stored_crc = read_u32(bytes, 28);
    if crc32c::crc32c(&bytes[0..28]) != stored_crc {
        return Err("segment header checksum mismatch".to_string());
    }
    let version = read_u32(bytes, 8);
    if version != FORMAT_VERSION {
        return Err(format!("unsupported format version {version}"));
    }
    Ok(SegmentSeq(read_u64(bytes, 16)))
}

/// The checksum of a record at `offset` in segment `seq`. `header` is the record's 12 header
/// bytes (the crc field is skipped), `body` its body.
pub fn record_crc(seq: SegmentSeq, offset: u64, header: &[u8], body: &[u8]) -> u32 {
    let mut crc = crc32c::crc32c(&seq.0.to_le_bytes());
    crc = crc32c::crc32c_append(crc, &offset.to_le_bytes());
    crc = crc32c::crc32c_append(crc, &header[0..4]);
    crc = crc32c::crc32c_append(crc, &header[8..RECORD_HEADER_LEN]);
    crc32c::crc32c_append(crc, body)
}

/// Appends a whole record (header and `body`) to `out`; the record starts at byte `offset` of
/// segment `seq`.
///
/// # Panics
/// If `body` is longer than `u32::MAX` bytes (callers bound batches far below that).
pub fn encode_record(
    out: &mut Vec<u8>,
    seq: SegmentSeq,
    offset: u64,
    record_type: RecordType,
    body: &[u8],
) {
    let body_len = u32::try_from(body.len()).expect("record body exceeds u32::MAX bytes");
    let mut header = [0u8; RECORD_HEADER_LEN];
    header[0..4].copy_from_slice(&body_len.to_le_bytes());
    header[8] = record_type.code();
    let crc = record_crc(seq, offset, &header, body);
    header[4..8].copy_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(body);
}

/// A record header as read from disk, before its checksum is verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    pub body_len: u32,
    pub crc: u32,
    pub type_code: u8,
}

impl RecordHeader {
    /// Reads the 12 header bytes at the start of `bytes`.
    ///
    /// # Panics
    /// If `bytes` is shorter than a record header.
    pub fn read(bytes: &[u8]) -> RecordHeader {
        assert!(bytes.len() >= RECORD_HEADER_LEN, "short record header");
        RecordHeader {
            body_len: read_u32(bytes, 0),
            crc: read_u32(bytes, 4),
            type_code: bytes[8],
        }
    }

    /// True if the reserved bytes are zero and the type is known: the cheap plausibility
    /// test before a checksum.
    pub fn plausible(bytes: &[u8]) -> bool {
        bytes.len() >= RECORD_HEADER_LEN
            && bytes[9..12] == [0, 0, 0]
            && RecordType::from_code(bytes[8]).is_some()
    }
}

/// Appends an `Entries` item: `entries` for `region`, which must be consecutive.
///
/// # Panics
/// If `entries` is empty, not consecutive, or an entry's data exceeds `u32::MAX` bytes.
pub fn encode_entries(out: &mut Vec<u8>, region: RegionId, entries: &[crate::Entry]) {
    assert!(!entries.is_empty(), "region {region}: empty Entries item");
    out.push(TAG_ENTRIES);
    out.extend_from_slice(&region.0.to_le_bytes());
    out.extend_from_slice(&entries[0].index.0.to_le_bytes());
    let count = u32::try_from(entries.len()).expect("more than u32::MAX entries in one item");
    out.extend_from_slice(&count.to_le_bytes());
    for (i, entry) in entries.iter().enumerate() {
        assert_eq!(
            entry.index.0,
            entries[0].index.0 + i as u64,
            "region {region}: entries not consecutive at {:?}",
            entry.index
        );
        let data_len = u32::try_from(entry.data.len()).expect("entry data exceeds u32::MAX");
        out.extend_from_slice(&entry.term.0.to_le_bytes());
        out.push(entry.kind.code());
        out.extend_from_slice(&data_len.to_le_bytes());
        out.extend_from_slice(&entry.data);
    }
}

/// Appends a `HardState` item.
pub fn encode_hard_state(out: &mut Vec<u8>, region: RegionId, hard_state: HardState) {
    out.push(TAG_HARD_STATE);
    out.extend_from_slice(&region.0.to_le_bytes());
    out.extend_from_slice(&hard_state.term.0.to_le_bytes());
    out.extend_from_slice(&hard_state.vote.map_or(0, |v| v.0).to_le_bytes());
    out.extend_from_slice(&hard_state.commit.0.to_le_bytes());
}

/// Appends a `Compact` item: entries of `region` up to `index` (whose term is `term`) are
/// covered by a snapshot.
pub fn encode_compact(out: &mut Vec<u8>, region: RegionId, index: LogIndex, term: Term) {
    out.push(TAG_COMPACT);
    out.extend_from_slice(&region.0.to_le_bytes());
    out.extend_from_slice(&index.0.to_le_bytes());
    out.extend_from_slice(&term.0.to_le_bytes());
}

/// Appends an `InstallSnapshot` item: every stored entry of `region` is dropped and its
/// compaction mark set to `index`/`term`.
pub fn encode_install_snapshot(out: &mut Vec<u8>, region: RegionId, index: LogIndex, term: Term) {
    out.push(TAG_INSTALL_SNAPSHOT);
    out.extend_from_slice(&region.0.to_le_bytes());
    out.extend_from_slice(&index.0.to_le_bytes());
    out.extend_from_slice(&term.0.to_le_bytes());
}

/// Appends a `RemoveRegion` item.
pub fn encode_remove_region(out: &mut Vec<u8>, region: RegionId) {
    out.push(TAG_REMOVE_REGION);
    out.extend_from_slice(&region.0.to_le_bytes());
}

/// One entry as it lies in a record body, borrowed from the bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryView<'a> {
    pub index: LogIndex,
    pub term: Term,
    pub kind: EntryKind,
    pub data: &'a [u8],
    /// Where the entry's header starts, counted from the start of the body.
    pub body_offset: usize,
}

impl EntryView<'_> {
    /// Bytes the entry takes in the body (header and data).
    pub fn encoded_len(&self) -> usize {
        ENTRY_HEADER_LEN + self.data.len()
    }

    /// An owned entry.
    pub fn to_entry(&self) -> crate::Entry {
        crate::Entry {
            term: self.term,
            index: self.index,
            kind: self.kind,
            data: self.data.into(),
        }
    }
}

/// One decoded item of a record body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item<'a> {
    /// Entries to append; they replace the Region's entries from the first one's index on.
    Entries {
        region: RegionId,
        entries: Vec<EntryView<'a>>,
    },
    /// The Region's new hard state.
    HardState {
        region: RegionId,
        hard_state: HardState,
    },
    /// Entries up to `index` are covered by a snapshot whose last entry has `term`; later
    /// entries stay.
    Compact {
        region: RegionId,
        index: LogIndex,
        term: Term,
    },
    /// A snapshot from the leader replaces the whole log: every entry is dropped and the mark
    /// set to `index`/`term`.
    InstallSnapshot {
        region: RegionId,
        index: LogIndex,
        term: Term,
    },
    /// Everything the WAL holds for the Region is gone.
    RemoveRegion { region: RegionId },
}

impl Item<'_> {
    /// The Region the item is about.
    pub fn region(&self) -> RegionId {
        match self {
            Item::Entries { region, .. }
            | Item::HardState { region, .. }
            | Item::Compact { region, .. }
            | Item::InstallSnapshot { region, .. }
            | Item::RemoveRegion { region } => *region,
        }
    }
}

/// Decodes every item of a record body.
///
/// # Errors
/// A sentence and the body offset where decoding failed.
pub fn decode_body(body: &[u8]) -> Result<Vec<Item<'_>>, (usize, String)> {
    let mut cursor = Cursor {
        bytes: body,
        pos: 0,
    };
    let mut items = Vec::new();
    while cursor.pos < body.len() {
        let start = cursor.pos;
        let item = decode_item(&mut cursor).map_err(|reason| (start, reason))?;
        items.push(item);
    }
    Ok(items)
}

fn decode_item<'a>(cursor: &mut Cursor<'a>) -> Result<Item<'a>, String> {
    let tag = cursor.u8()?;
    let region = RegionId(cursor.u64()?);
    match tag {
        TAG_ENTRIES => decode_entries(cursor, region),
        TAG_HARD_STATE => {
            let term = Term(cursor.u64()?);
            let vote = cursor.u64()?;
            let commit = LogIndex(cursor.u64()?);
            let vote = (vote != 0).then_some(NodeId(vote));
            Ok(Item::HardState {
                region,
                hard_state: HardState { term, vote, commit },
            })
        }
        TAG_COMPACT => {
            let index = LogIndex(cursor.u64()?);
            let term = Term(cursor.u64()?);
            Ok(Item::Compact {
                region,
                index,
                term,
            })
        }
        TAG_INSTALL_SNAPSHOT => {
            let index = LogIndex(cursor.u64()?);
            let term = Term(cursor.u64()?);
            Ok(Item::InstallSnapshot {
                region,
                index,
                term,
            })
        }
        TAG_REMOVE_REGION => Ok(Item::RemoveRegion { region }),
        other => Err(format!("unknown item tag {other}")),
    }
}

fn decode_entries<'a>(cursor: &mut Cursor<'a>, region: RegionId) -> Result<Item<'a>, String> {
    let first_index = cursor.u64()?;
    let count = cursor.u32()? as usize;
    if first_index == 0 {
        return Err(format!("region {region}: entries start at index 0"));
    }
    if count == 0 || count > cursor.remaining() / ENTRY_HEADER_LEN {
        return Err(format!("region {region}: implausible entry count {count}"));
    }
    first_index
        .checked_add(count as u64)
        .ok_or_else(|| format!("region {region}: entry index overflows"))?;
    let mut entries = Vec::with_capacity(count);
    let mut previous_term = Term(0);
    for i in 0..count {
        let body_offset = cursor.pos;
        let term = Term(cursor.u64()?);
        let code = cursor.u8()?;
        let kind =
            EntryKind::from_code(code).ok_or_else(|| format!("unknown entry kind {code}"))?;
        let data_len = cursor.u32()? as usize;
        let data = cursor.take(data_len)?;
        let index = LogIndex(first_index + i as u64);
        if term < previous_term {
            return Err(format!("region {region}: term decreases at {index}"));
        }
        previous_term = term;
        entries.push(EntryView {
            index,
            term,
            kind,
            data,
            body_offset,
        });
    }
    Ok(Item::Entries { region, entries })
}

/// Decodes the entry whose header starts `bytes` (as stored by the read path's index).
///
/// # Errors
/// A sentence when the bytes are too short or the kind unknown.
pub fn decode_entry_at(bytes: &[u8]) -> Result<(Term, EntryKind, &[u8]), String> {
    let mut cursor = Cursor { bytes, pos: 0 };
    let term = Term(cursor.u64()?);
    let code = cursor.u8()?;
    let kind = EntryKind::from_code(code).ok_or_else(|| format!("unknown entry kind {code}"))?;
    let data_len = cursor.u32()? as usize;
    let data = cursor.take(data_len)?;
    Ok((term, kind, data))
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], String> {
        if len > self.remaining() {
            return Err(format!(
                "needs {len} bytes at body offset {}, only {} left",
                self.pos,
                self.remaining()
            ));
        }
        let slice = &self.bytes[self.pos..self.pos + len];
        self.pos += len;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(read_u32(self.take(4)?, 0))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(read_u64(self.take(8)?, 0))
    }
}

/// Reads a little-endian u32 at `at`.
pub fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

/// Reads a little-endian u64 at `at`.
pub fn read_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}
