//! Region snapshot files of one core: `snapshots/region-<id>-<index>.snap`, written durably
//! (temporary file, fsync, rename, fsync of the directory) and read back at recovery.
//!
//! Layout: `"TSNP" [format u8 = 1] [index u64] [term u64] [voters count u32][voter u64...]
//! [learners count u32][learner u64...] [data len u64][data] [crc32c u32]` of all before it.

use std::path::{Path, PathBuf};

use tessera_core::{ConfState, LogIndex, NodeId, RegionId, Term};

use crate::meta::{write_durably, MetaError};

/// A snapshot read back from its file.
#[derive(Debug)]
pub struct SnapshotFile {
    pub path: PathBuf,
    pub index: LogIndex,
    pub term: Term,
    pub conf_state: ConfState,
    pub data: Vec<u8>,
}

/// Older snapshots kept per Region besides the newest.
const OLDER_KEPT: usize = 1;

/// A 64-bit checksum of `bytes` (two CRC32C lanes), for ids derived from text.
pub fn checksum(bytes: &[u8]) -> u64 {
    let low = crc32c::crc32c(bytes);
    let high = crc32c::crc32c_append(low ^ 0x9E37_79B9, bytes);
    (u64::from(high) << 32) | u64::from(low)
}

fn file_name(region: RegionId, index: LogIndex) -> String {
    format!("region-{}-{:020}.snap", region.0, index.0)
}

fn parse_name(name: &str) -> Option<(RegionId, LogIndex)> {
    let rest = name.strip_prefix("region-")?.strip_suffix(".snap")?;
    let (region, index) = rest.split_once('-')?;
    Some((
        RegionId(region.parse().ok()?),
        LogIndex(index.parse().ok()?),
    ))
}

fn encode(index: LogIndex, term: Term, conf: &ConfState, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + data.len());
    out.extend_from_slice(b"TSNP");
    out.push(1);
    out.extend_from_slice(&index.0.to_le_bytes());
    out.extend_from_slice(&term.0.to_le_bytes());
    for ids in [&conf.voters, &conf.learners] {
        out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
        for id in ids {
            out.extend_from_slice(&id.0.to_le_bytes());
        }
    }
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(data);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn decode(path: &Path, bytes: &[u8]) -> Result<SnapshotFile, String> {
    let bad = |what: &str| format!("snapshot file {} is damaged: {what}", path.display());
    if bytes.len() < 4 + 1 + 16 + 8 + 8 + 4 || &bytes[..4] != b"TSNP" || bytes[4] != 1 {
        return Err(bad("bad header"));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err(bad("checksum mismatch"));
    }
    let mut at = 5;
    let u64_at = |at: &mut usize| -> Result<u64, String> {
        let v = body.get(*at..*at + 8).ok_or_else(|| bad("truncated"))?;
        *at += 8;
        Ok(u64::from_le_bytes(v.try_into().expect("8 bytes")))
    };
    let index = LogIndex(u64_at(&mut at)?);
    let term = Term(u64_at(&mut at)?);
    let mut lists = [Vec::new(), Vec::new()];
    for list in lists.iter_mut() {
        let count = body.get(at..at + 4).ok_or_else(|| bad("truncated"))?;
        at += 4;
        let count = u32::from_le_bytes(count.try_into().expect("4 bytes")) as usize;
        if count > 1024 {
            return Err(bad("implausible member count"));
        }
        for _ in 0..count {
            list.push(NodeId(u64_at(&mut at)?));
        }
    }
    let len = u64_at(&mut at)? as usize;
    let data = body
        .get(at..at.checked_add(len).ok_or_else(|| bad("length overflow"))?)
        .ok_or_else(|| bad("truncated data"))?;
    let [voters, learners] = lists;
    let mut conf_state = ConfState { voters, learners };
    conf_state.normalize();
    Ok(SnapshotFile {
        path: path.to_path_buf(),
        index,
        term,
        conf_state,
        data: data.to_vec(),
    })
}

/// Writes a snapshot durably, then deletes all but the newest `OLDER_KEPT` older ones.
///
/// # Errors
/// `MetaError::Io` naming the step.
pub fn write(
    dir: &Path,
    region: RegionId,
    index: LogIndex,
    term: Term,
    conf: &ConfState,
    data: &[u8],
) -> Result<(), MetaError> {
    std::fs::create_dir_all(dir).map_err(|source| MetaError::Io {
        op: "create snapshot directory",
        path: dir.to_path_buf(),
        source,
    })?;
    write_durably(
        dir,
        &file_name(region, index),
        &encode(index, term, conf, data),
    )?;
    let mut older: Vec<(LogIndex, PathBuf)> = list(dir, region)?
        .into_iter()
        .filter(|(i, _)| *i < index)
        .collect();
    older.sort();
    let excess = older.len().saturating_sub(OLDER_KEPT);
    for (_, path) in older.into_iter().take(excess) {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

fn list(dir: &Path, region: RegionId) -> Result<Vec<(LogIndex, PathBuf)>, MetaError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(MetaError::Io {
                op: "list snapshots",
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    Ok(entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let (r, index) = parse_name(&name)?;
            (r == region).then(|| (index, e.path()))
        })
        .collect())
}

/// The newest readable snapshot of `region`, if any.
///
/// # Errors
/// When the directory cannot be listed or the newest file is damaged.
pub fn newest(dir: &Path, region: RegionId) -> Result<Option<SnapshotFile>, String> {
    let mut files = list(dir, region).map_err(|e| e.to_string())?;
    files.sort();
    let Some((_, path)) = files.pop() else {
        return Ok(None);
    };
    let bytes = std::fs::read(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
    decode(&path, &bytes).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_snapshot_is_read_back_and_old_ones_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let conf = ConfState::with_voters([NodeId(1), NodeId(2)]);
        for index in [10, 20, 30] {
            write(
                dir.path(),
                RegionId(4),
                LogIndex(index),
                Term(2),
                &conf,
                format!("d{index}").as_bytes(),
            )
            .unwrap();
        }
        write(
            dir.path(),
            RegionId(5),
            LogIndex(99),
            Term(1),
            &conf,
            b"other",
        )
        .unwrap();
        let newest = newest(dir.path(), RegionId(4)).unwrap().unwrap();
        assert_eq!(
            (newest.index, newest.term, newest.data.as_slice()),
            (LogIndex(30), Term(2), &b"d30"[..])
        );
        assert_eq!(newest.conf_state, conf);
        assert_eq!(list(dir.path(), RegionId(4)).unwrap().len(), 1 + OLDER_KEPT);
        assert!(super::newest(dir.path(), RegionId(6)).unwrap().is_none());
    }

    #[test]
    fn a_damaged_snapshot_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            RegionId(1),
            LogIndex(7),
            Term(1),
            &ConfState::default(),
            b"data",
        )
        .unwrap();
        let path = dir.path().join(file_name(RegionId(1), LogIndex(7)));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[10] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        let error = newest(dir.path(), RegionId(1)).unwrap_err();
        assert!(
            error.contains("damaged") && error.contains("region-1-"),
            "{error}"
        );
    }
}
