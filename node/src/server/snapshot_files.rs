//! Region snapshots on disk, through the WAL crate's snapshot files (written durably, read
//! through `memmap2`). The node adds the Region's membership in front of the state-machine
//! data, since a snapshot must say who the Region's members were at its index:
//! `[voters count u32][voter u64...][learners count u32][learner u64...][key-value data]`.

use std::path::Path;

use tessera_core::{ConfState, LogIndex, NodeId, RegionId, Term};
use tessera_wal::snapshot::{newest_snapshots, read_snapshot, write_snapshot, SnapshotId};

/// A snapshot read back from its file.
#[derive(Debug)]
pub struct SnapshotFile {
    pub path: std::path::PathBuf,
    pub index: LogIndex,
    pub term: Term,
    pub conf_state: ConfState,
    pub data: Vec<u8>,
}

/// Members per list, at most (a bound on what a damaged file can make us allocate).
const MEMBERS_MAX: usize = 1024;

/// The bytes a snapshot file holds after its header: membership, then the state-machine data.
pub fn encode(conf: &ConfState, data: &[u8]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(16 + 8 * (conf.voters.len() + conf.learners.len()) + data.len());
    for ids in [&conf.voters, &conf.learners] {
        out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
        for id in ids {
            out.extend_from_slice(&id.0.to_le_bytes());
        }
    }
    out.extend_from_slice(data);
    out
}

fn decode(bytes: &[u8]) -> Result<(ConfState, &[u8]), String> {
    let mut at = 0;
    let mut lists = [Vec::new(), Vec::new()];
    for list in lists.iter_mut() {
        let count = bytes.get(at..at + 4).ok_or("truncated membership")?;
        let count = u32::from_le_bytes(count.try_into().expect("4 bytes")) as usize;
        at += 4;
        if count > MEMBERS_MAX {
            return Err(format!("implausible member count {count}"));
        }
        for _ in 0..count {
            let id = bytes.get(at..at + 8).ok_or("truncated membership")?;
            list.push(NodeId(u64::from_le_bytes(id.try_into().expect("8 bytes"))));
            at += 8;
        }
    }
    let [voters, learners] = lists;
    let mut conf = ConfState { voters, learners };
    conf.normalize();
    Ok((conf, &bytes[at..]))
}

/// A 64-bit checksum of `bytes` (two CRC32C lanes), for ids derived from text.
pub fn checksum(bytes: &[u8]) -> u64 {
    let low = crc32c::crc32c(bytes);
    let high = crc32c::crc32c_append(low ^ 0x9E37_79B9, bytes);
    (u64::from(high) << 32) | u64::from(low)
}

/// Writes a snapshot durably, then removes the Region's older snapshot files (lower index;
/// a newer file, e.g. a leader's snapshot installed while this one was written in the
/// background, stays and wins at recovery).
///
/// # Errors
/// A message naming the failed step.
pub fn write(
    dir: &Path,
    region: RegionId,
    index: LogIndex,
    term: Term,
    conf: &ConfState,
    data: &[u8],
) -> Result<(), String> {
    let id = SnapshotId {
        region,
        index,
        term,
    };
    let path = write_snapshot(dir, &id, &encode(conf, data)).map_err(|e| e.to_string())?;
    // The new file is durable: older ones of this Region are no longer needed.
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let older = older_file_of(&entry.file_name().to_string_lossy(), region, index);
            if older && entry.path() != path {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    Ok(())
}

/// True if `name` is a snapshot file of `region` at an index below `index`
/// (`<region:020>-<index:020>-<term:020>.snap`, see `tessera_wal::snapshot`).
fn older_file_of(name: &str, region: RegionId, index: LogIndex) -> bool {
    let Some(stem) = name.strip_suffix(".snap") else {
        return false;
    };
    let mut fields = stem.split('-').map(str::parse::<u64>);
    match (fields.next(), fields.next()) {
        (Some(Ok(r)), Some(Ok(i))) => r == region.0 && i < index.0,
        _ => false,
    }
}

/// Writes a snapshot the Store took (or received) durably; see [`write`].
///
/// # Errors
/// A message naming the failed step.
pub fn write_taken(dir: &Path, taken: &crate::store::SnapshotTaken) -> Result<(), String> {
    write(
        dir,
        taken.region,
        taken.index,
        taken.term,
        &taken.conf_state,
        &taken.data,
    )
}

/// The file, in a core's snapshot directory, that lists the tombstones of the replicas
/// destroyed on that core (`region conf_version` per line).
pub const TOMBSTONES_FILE: &str = "tombstones";

/// Writes every tombstone of the core durably (temporary file, fsync, rename).
///
/// # Errors
/// A message naming the failed step.
pub fn write_tombstones(
    dir: &Path,
    tombstones: &std::collections::BTreeMap<RegionId, u64>,
) -> Result<(), String> {
    write_region_numbers(dir, TOMBSTONES_FILE, tombstones)
}

/// Writes `dir/name` durably (temporary file, fsync, rename): one `region number` line per
/// entry of `numbers`.
///
/// # Errors
/// A message naming the failed step.
pub fn write_region_numbers(
    dir: &Path,
    name: &str,
    numbers: &std::collections::BTreeMap<RegionId, u64>,
) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let text: String = numbers
        .iter()
        .map(|(region, number)| format!("{} {number}\n", region.0))
        .collect();
    crate::meta::write_durably(dir, name, text.as_bytes()).map_err(|e| e.to_string())
}

/// The tombstones written by `write_tombstones` (none when there is no file).
///
/// # Errors
/// When the file cannot be read or a line is damaged.
pub fn read_tombstones(dir: &Path) -> Result<Vec<crate::store::Tombstone>, String> {
    let tombstones = read_region_numbers(dir, TOMBSTONES_FILE)?;
    Ok(tombstones
        .into_iter()
        .map(|(region, conf_version)| crate::store::Tombstone {
            region,
            conf_version,
        })
        .collect())
}

/// The lines written by `write_region_numbers` (none when there is no file).
///
/// # Errors
/// When the file cannot be read or a line is damaged.
pub fn read_region_numbers(dir: &Path, name: &str) -> Result<Vec<(RegionId, u64)>, String> {
    let path = dir.join(name);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("read {}: {e}", path.display())),
    };
    text.lines()
        .map(|line| {
            let mut fields = line.split(' ').map(str::parse::<u64>);
            match (fields.next(), fields.next(), fields.next()) {
                (Some(Ok(region)), Some(Ok(number)), None) => Ok((RegionId(region), number)),
                _ => Err(format!("{} is damaged: line {line:?}", path.display())),
            }
        })
        .collect()
}

/// Deletes every snapshot file of `region` (a destroyed replica; its tombstone is durable).
///
/// # Errors
/// When a file cannot be deleted.
pub fn remove_region(dir: &Path, region: RegionId) -> Result<(), String> {
    let prefix = format!("{:020}-", region.0);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with(&prefix) {
            std::fs::remove_file(entry.path())
                .map_err(|e| format!("remove {}: {e}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// The Regions that have a snapshot file in `dir`.
///
/// # Errors
/// When the directory cannot be read.
pub fn regions(dir: &Path) -> Result<Vec<RegionId>, String> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let newest = newest_snapshots(dir).map_err(|e| e.to_string())?;
    Ok(newest.into_iter().map(|(id, _)| id.region).collect())
}

/// The newest snapshot of `region`, if any.
///
/// # Errors
/// When the directory cannot be read or the newest file is damaged.
pub fn newest(dir: &Path, region: RegionId) -> Result<Option<SnapshotFile>, String> {
    if !dir.exists() {
        return Ok(None);
    }
    let newest = newest_snapshots(dir).map_err(|e| e.to_string())?;
    let Some((_, path)) = newest.into_iter().find(|(id, _)| id.region == region) else {
        return Ok(None);
    };
    let file = read_snapshot(&path).map_err(|e| e.to_string())?;
    from_bytes(path, file.id.index, file.id.term, file.data()).map(Some)
}

/// A snapshot from the bytes [`encode`] made (read from a file, or kept by a simulated disk).
///
/// # Errors
/// When the membership does not decode.
pub fn from_bytes(
    path: std::path::PathBuf,
    index: LogIndex,
    term: Term,
    bytes: &[u8],
) -> Result<SnapshotFile, String> {
    let (conf_state, data) =
        decode(bytes).map_err(|e| format!("snapshot {}: {e}", path.display()))?;
    Ok(SnapshotFile {
        index,
        term,
        conf_state,
        data: data.to_vec(),
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_snapshot_is_read_back_with_its_membership_and_old_ones_removed() {
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
        let files = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(files, 2, "one file per Region remains");
        assert!(super::newest(dir.path(), RegionId(6)).unwrap().is_none());
    }

    #[test]
    fn an_older_snapshot_written_last_leaves_the_newer_file_in_place() {
        // A periodic snapshot written in the background finishes after a newer snapshot of
        // its Region (received from the leader) was written: the newer file stays.
        let dir = tempfile::tempdir().unwrap();
        let conf = ConfState::with_voters([NodeId(1)]);
        write(
            dir.path(),
            RegionId(4),
            LogIndex(500),
            Term(3),
            &conf,
            b"new",
        )
        .unwrap();
        write(
            dir.path(),
            RegionId(4),
            LogIndex(100),
            Term(2),
            &conf,
            b"old",
        )
        .unwrap();
        let newest = newest(dir.path(), RegionId(4)).unwrap().unwrap();
        assert_eq!(
            (newest.index, newest.data.as_slice()),
            (LogIndex(500), &b"new"[..])
        );
        // The next newer write removes both older files.
        write(
            dir.path(),
            RegionId(4),
            LogIndex(600),
            Term(3),
            &conf,
            b"newer",
        )
        .unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(!older_file_of(
            "00000000000000000004-00000000000000000100-00000000000000000002.snap.tmp",
            RegionId(4),
            LogIndex(600)
        ));
    }

    #[test]
    fn a_damaged_snapshot_is_an_error() {
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
        let path = std::fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        assert!(newest(dir.path(), RegionId(1)).is_err());
    }
}
