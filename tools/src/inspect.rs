//! The `tessera-wal` subcommands as functions over a WAL directory.
//!
//! Every subcommand walks the segments with [`SegmentReader`] and reports problems with
//! their segment and offset. `verify` keeps going after damage (it searches for the next
//! valid record) so one run lists every problem; `stats` and `dump` stop at the first.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde_json::json;
use tessera_wal::format::Item;
use tessera_wal::scan::{is_unstarted, list_segments, scan_dir, RecordView, SegmentReader, Step};
use tessera_wal::{LogIndex, RegionId, SegmentSeq};

/// Progress on stderr, when it is a terminal or `--progress` asked for it.
pub struct Progress {
    enabled: bool,
}

impl Progress {
    pub fn new(forced: bool) -> Progress {
        Progress {
            enabled: forced || std::io::stderr().is_terminal(),
        }
    }

    fn segment(&self, done: usize, total: usize, seq: SegmentSeq) {
        if self.enabled {
            eprint!("\rreading segment {seq} ({}/{total})   ", done + 1);
            if done + 1 == total {
                eprintln!();
            }
        }
    }
}

/// Per-Region figures for `stats`.
#[derive(Default)]
struct RegionStats {
    first: Option<LogIndex>,
    last: Option<LogIndex>,
    entries: u64,
    bytes: u64,
    mark: Option<LogIndex>,
}

/// `stats`: segments, records, per-Region index ranges and bytes.
///
/// # Errors
/// Any recovery error (corruption that is not a torn tail, missing segments, I/O).
pub fn stats(dir: &Path, json_out: bool, progress: &Progress) -> anyhow::Result<String> {
    let total = list_segments(dir)?.len();
    let mut regions: BTreeMap<RegionId, RegionStats> = BTreeMap::new();
    let mut seen = Vec::new();
    let scan = scan_dir(dir, |reader, record| {
        if seen.last() != Some(&reader.seq()) {
            progress.segment(seen.len(), total, reader.seq());
            seen.push(reader.seq());
        }
        for item in &record.items {
            let stats = regions.entry(item.region()).or_default();
            match item {
                Item::Entries { entries, .. } => {
                    stats.first = stats
                        .first
                        .min(Some(entries[0].index))
                        .or(Some(entries[0].index));
                    stats.last = stats.last.max(entries.last().map(|e| e.index));
                    stats.entries += entries.len() as u64;
                    stats.bytes += entries.iter().map(|e| e.encoded_len() as u64).sum::<u64>();
                }
                Item::Compact { index, .. } | Item::InstallSnapshot { index, .. } => {
                    stats.mark = stats.mark.max(Some(*index));
                }
                _ => {}
            }
        }
        Ok(())
    })?;
    let region_rows: Vec<serde_json::Value> = regions
        .iter()
        .map(|(region, s)| {
            json!({"region": region.0, "first_index": s.first.map(|i| i.0),
                   "last_index": s.last.map(|i| i.0), "entries_written": s.entries,
                   "entry_bytes": s.bytes, "compaction_mark": s.mark.map(|i| i.0)})
        })
        .collect();
    let summary = json!({
        "segments": scan.segments.len(),
        "first_segment": scan.segments.first().map(|s| s.seq.0),
        "last_segment": scan.segments.last().map(|s| s.seq.0),
        "records": scan.records,
        "torn_tail": scan.torn_tail.as_ref().map(|t| json!({"segment": t.segment.0, "offset": t.offset, "bytes": t.bytes})),
        "unstarted_segment": scan.unstarted.as_ref().map(|s| s.seq.0),
        "regions": region_rows,
    });
    if json_out {
        return Ok(serde_json::to_string_pretty(&summary)?);
    }
    let mut out = format!(
        "segments {} ({:?}..={:?}), records {}\n",
        scan.segments.len(),
        scan.segments.first().map(|s| s.seq),
        scan.segments.last().map(|s| s.seq),
        scan.records
    );
    if let Some(torn) = &scan.torn_tail {
        out += &format!(
            "torn tail: segment {} offset {} ({} bytes): {}\n",
            torn.segment, torn.offset, torn.bytes, torn.reason
        );
    }
    if let Some(unstarted) = &scan.unstarted {
        out += &format!(
            "segment {} was prepared but never started (no record; opening the WAL deletes it)\n",
            unstarted.seq
        );
    }
    for (region, s) in &regions {
        out += &format!(
            "{region}: written indexes {:?}..={:?}, {} entries, {} bytes, compaction mark {:?}\n",
            s.first, s.last, s.entries, s.bytes, s.mark
        );
    }
    Ok(out)
}

/// Filter of `dump`.
pub struct DumpFilter {
    pub region: Option<RegionId>,
    pub from: Option<LogIndex>,
    pub to: Option<LogIndex>,
}

impl DumpFilter {
    fn keeps_region(&self, region: RegionId) -> bool {
        self.region.is_none_or(|r| r == region)
    }

    fn keeps_index(&self, index: LogIndex) -> bool {
        self.from.is_none_or(|from| index >= from) && self.to.is_none_or(|to| index <= to)
    }
}

/// `dump`: every record and item (entries filtered by Region and index range), as text
/// lines or JSON lines, written to `out`.
///
/// # Errors
/// Recovery errors, or a failed write to `out`.
pub fn dump(
    dir: &Path,
    filter: &DumpFilter,
    json_out: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut write_error = None;
    scan_dir(dir, |reader, record| {
        if let Err(e) = dump_record(reader.seq(), record, filter, json_out, out) {
            write_error.get_or_insert(e);
        }
        Ok(())
    })?;
    match write_error {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

fn dump_record(
    seq: SegmentSeq,
    record: &RecordView<'_>,
    filter: &DumpFilter,
    json_out: bool,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let kind = format!("{:?}", record.record_type);
    if json_out {
        writeln!(
            out,
            "{}",
            json!({"record": kind, "segment": seq.0, "offset": record.offset, "bytes": record.len()})
        )?;
    } else {
        writeln!(
            out,
            "{seq} @{} {kind} ({} bytes)",
            record.offset,
            record.len()
        )?;
    }
    for item in record
        .items
        .iter()
        .filter(|item| filter.keeps_region(item.region()))
    {
        match item {
            Item::Entries { region, entries } => {
                for entry in entries.iter().filter(|e| filter.keeps_index(e.index)) {
                    let preview = String::from_utf8_lossy(&entry.data[..entry.data.len().min(32)])
                        .into_owned();
                    if json_out {
                        writeln!(
                            out,
                            "{}",
                            json!({"entry": {"region": region.0, "index": entry.index.0, "term": entry.term.0, "kind": format!("{:?}", entry.kind), "bytes": entry.data.len(), "preview": preview}})
                        )?;
                    } else {
                        writeln!(
                            out,
                            "  entry {region} {} {} {:?} {} bytes {preview:?}",
                            entry.index,
                            entry.term,
                            entry.kind,
                            entry.data.len()
                        )?;
                    }
                }
            }
            other if json_out => writeln!(out, "{}", json!({"item": format!("{other:?}")}))?,
            other => writeln!(out, "  {other:?}")?,
        }
    }
    Ok(())
}

/// One problem `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub segment: SegmentSeq,
    pub offset: u64,
    pub reason: String,
    /// True when this is a torn tail (damage at the end of the newest segment only).
    pub torn_tail: bool,
}

/// `verify`: checks every record's checksum in every segment and lists every problem; after
/// damage it resumes at the next valid record.
///
/// # Errors
/// A directory that cannot be listed (missing segments are reported as errors too).
pub fn verify(dir: &Path, progress: &Progress) -> anyhow::Result<(u64, Vec<Problem>)> {
    let mut segments = list_segments(dir)?;
    // A newest segment prepared ahead and never started holds nothing; the one before it is
    // then the newest, where a torn tail may be (the recovery rules, `tessera_wal::scan`).
    let unstarted = segments
        .last()
        .and_then(|last| SegmentReader::open(last).ok())
        .is_some_and(|reader| is_unstarted(&reader));
    if unstarted {
        segments.pop();
    }
    let mut problems = Vec::new();
    let mut records = 0;
    for (i, segment) in segments.iter().enumerate() {
        progress.segment(i, segments.len(), segment.seq);
        let reader = match SegmentReader::open(segment) {
            Ok(reader) => reader,
            Err(e) => {
                problems.push(Problem {
                    segment: segment.seq,
                    offset: 0,
                    reason: e.to_string(),
                    torn_tail: false,
                });
                continue;
            }
        };
        let newest = i + 1 == segments.len();
        let mut offset = reader.first_record_offset();
        loop {
            match reader.step(offset) {
                Step::Record(record) => {
                    records += 1;
                    offset += record.len();
                }
                Step::End => break,
                Step::Damaged { reason, complete } => {
                    let next = reader.find_valid_record_after(offset);
                    let torn_tail = newest && !complete && next.is_none();
                    problems.push(Problem {
                        segment: segment.seq,
                        offset,
                        reason,
                        torn_tail,
                    });
                    match next {
                        Some(next) => offset = next,
                        None => break,
                    }
                }
            }
        }
    }
    Ok((records, problems))
}

/// `repair`: finds a torn tail, saves the bytes it would cut to `<segment>.cut-<offset>`,
/// then (if `confirm` agrees) overwrites them with zeros and fsyncs. Returns what it did.
///
/// # Errors
/// Corruption that is not a torn tail (repair refuses: that needs a human), I/O errors.
pub fn repair(dir: &Path, confirm: &mut dyn FnMut(&str) -> bool) -> anyhow::Result<String> {
    let scan = scan_dir(dir, |_, _| Ok(())).context("repair only cuts a torn tail")?;
    let Some(torn) = scan.torn_tail else {
        return Ok("no torn tail: nothing to repair".to_string());
    };
    let segment = scan.segments.last().expect("a torn tail has a segment");
    let question = format!(
        "cut {} bytes at offset {} of {} ({})?",
        torn.bytes,
        torn.offset,
        segment.path.display(),
        torn.reason
    );
    if !confirm(&question) {
        bail!("not confirmed; nothing changed");
    }
    let backup = cut_with_backup(&segment.path, torn.offset, torn.bytes)?;
    Ok(format!(
        "cut {} bytes at offset {}; backup in {}",
        torn.bytes,
        torn.offset,
        backup.display()
    ))
}

fn cut_with_backup(path: &Path, offset: u64, bytes: u64) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    let mut cut = vec![0u8; bytes as usize];
    file.read_exact_at(&mut cut, offset)?;
    let backup = path.with_extension(format!("wal.cut-{offset}"));
    std::fs::write(&backup, &cut)
        .with_context(|| format!("writing backup {}", backup.display()))?;
    std::fs::File::open(&backup)?.sync_all()?;
    file.write_all_at(&vec![0u8; bytes as usize], offset)?;
    file.sync_all()?;
    Ok(backup)
}
