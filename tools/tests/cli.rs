//! Runs the `tessera-wal` binary against real WAL directories.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use tessera_wal::scan::{list_segments, SegmentReader, Step};
use tessera_wal::{Entry, EntryKind, LogBatch, LogIndex, RegionId, Term, Wal, WalOptions};

fn write_wal(dir: &Path) {
    let mut options = WalOptions::new(dir);
    options.segment_size_bytes = 64 << 10;
    tessera_wal::executor::run_local(async move {
        let (wal, _) = Wal::open(options).await.unwrap();
        for index in 1..=50u64 {
            let mut batch = LogBatch::new();
            for region in [RegionId(1), RegionId(2)] {
                let entry = Entry {
                    term: Term(1),
                    index: LogIndex(index),
                    kind: EntryKind::Normal,
                    data: format!("r{}-i{index}", region.0).into_bytes().into(),
                };
                batch.add_entries(region, &[entry]);
            }
            wal.append(batch).await.unwrap();
        }
        wal.close().await.unwrap();
    })
    .unwrap();
}

fn tool(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera-wal"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Offsets of the newest segment's records.
fn records(dir: &Path) -> (std::path::PathBuf, Vec<u64>) {
    let newest = list_segments(dir).unwrap().pop().unwrap();
    let reader = SegmentReader::open(&newest).unwrap();
    let mut offsets = Vec::new();
    let mut offset = reader.first_record_offset();
    while let Step::Record(record) = reader.step(offset) {
        offsets.push(offset);
        offset += record.len();
    }
    (newest.path, offsets)
}

/// Overwrites bytes inside the newest segment's last record (a torn tail); returns the
/// segment and the record's offset.
fn tear_last_record(dir: &Path) -> (std::path::PathBuf, u64) {
    let (segment, offsets) = records(dir);
    let last = *offsets.last().unwrap();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap();
    file.write_all_at(&[0xAB; 7], last + 14).unwrap();
    (segment, last)
}

#[test]
fn stats_and_dump_describe_the_log() {
    let dir = tempfile::tempdir().unwrap();
    write_wal(dir.path());
    let path = dir.path().to_str().unwrap();
    let output = tool(&["stats", path, "--json"], "");
    assert!(output.status.success());
    let stats: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(stats["records"], 51);
    assert_eq!(stats["regions"][1]["last_index"], 50);
    let output = tool(
        &["dump", path, "--region", "2", "--from", "10", "--to", "12"],
        "",
    );
    assert!(output.status.success());
    let text = stdout(&output);
    assert_eq!(text.matches("entry r2").count(), 3, "{text}");
    assert!(text.contains("\"r2-i11\""));
    let output = tool(
        &["dump", path, "--json", "--region", "1", "--from", "50"],
        "",
    );
    let entries: Vec<serde_json::Value> = stdout(&output)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .filter(|v: &serde_json::Value| v.get("entry").is_some())
        .collect();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["entry"]["index"], 50);
}

#[test]
fn verify_and_repair_a_torn_tail_with_confirmation_and_backup() {
    let dir = tempfile::tempdir().unwrap();
    write_wal(dir.path());
    let path = dir.path().to_str().unwrap();
    assert!(tool(&["verify", path], "").status.success());
    let (segment, last) = tear_last_record(dir.path());
    let output = tool(&["verify", path], "");
    assert!(!output.status.success());
    assert!(stdout(&output).contains(&format!("torn tail: segment s1 offset {last}")));
    // Declined: nothing changes.
    let output = tool(&["repair", path], "n\n");
    assert!(!output.status.success());
    assert!(!tool(&["verify", path], "").status.success());
    let output = tool(&["repair", path], "y\n");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout(&output).contains("backup in"));
    assert!(segment.with_extension(format!("wal.cut-{last}")).exists());
    assert!(tool(&["verify", path], "").status.success());
}

#[test]
fn verify_reports_mid_log_corruption_and_repair_refuses_it() {
    let dir = tempfile::tempdir().unwrap();
    write_wal(dir.path());
    let path = dir.path().to_str().unwrap();
    let (segment, offsets) = records(dir.path());
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap();
    file.write_all_at(&[0xFF], offsets[10] + 20).unwrap();
    let output = tool(&["verify", path], "");
    assert!(!output.status.success());
    let text = stdout(&output);
    assert!(
        text.contains(&format!("corruption: segment s1 offset {}", offsets[10])),
        "{text}"
    );
    assert!(text.contains("50 valid records"), "{text}");
    let output = tool(&["repair", path, "--yes"], "");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("corruption in segment s1"));
}

/// A newest segment prepared ahead and never started (header only) holds nothing: the tools
/// treat the segment before it as the newest, as recovery does, so its torn tail is a torn
/// tail (not corruption), `stats` names the unstarted segment, and `repair` cuts the tail.
#[test]
fn a_never_started_newest_segment_leaves_the_torn_tail_before_it_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    write_wal(dir.path());
    let path = dir.path().to_str().unwrap();
    let (_, last) = tear_last_record(dir.path());
    let mut spare = vec![0u8; 64 << 10];
    let seq = tessera_wal::SegmentSeq(2);
    spare[..32].copy_from_slice(&tessera_wal::format::encode_segment_header(seq));
    std::fs::write(dir.path().join(seq.file_name()), &spare).unwrap();
    let output = tool(&["verify", path], "");
    assert!(!output.status.success());
    let text = stdout(&output);
    assert!(
        text.contains(&format!("torn tail: segment s1 offset {last}")),
        "{text}"
    );
    assert!(!text.contains("corruption"), "{text}");
    let output = tool(&["stats", path, "--json"], "");
    assert!(output.status.success());
    let stats: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(stats["unstarted_segment"], 2);
    assert_eq!(stats["torn_tail"]["segment"], 1);
    let output = tool(&["repair", path, "--yes"], "");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(tool(&["verify", path], "").status.success());
}
