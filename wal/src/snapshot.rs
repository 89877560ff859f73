//! Snapshot files: one file per Region snapshot, written durably, read through `memmap2`.
//!
//! File name `<region:020>-<index:020>-<term:020>.snap` in the snapshot directory. Layout
//! (little-endian): magic `TESSSNP\0` (8), version u32, reserved u32, region u64, index u64,
//! term u64, data length u64, CRC32C of the data u32, CRC32C of bytes 0..52 u32, then data.
//!
//! Writing (numbered order, safe to crash anywhere):
//! 1. write header and data to `<name>.tmp`, fsync it;
//! 2. rename to `<name>`;
//! 3. fsync the directory.
//!
//! A file with its final name is therefore complete; `.tmp` files are garbage. These calls
//! use blocking std I/O: run them off the executor (glommio's `spawn_blocking`) for large
//! snapshots.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use tessera_core::{LogIndex, RegionId, Term};

use crate::error::{Result, WalError};
use crate::format::{read_u32, read_u64};

const MAGIC: [u8; 8] = *b"TESSSNP\0";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 56;

/// Which snapshot a file holds.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SnapshotId {
    pub region: RegionId,
    pub index: LogIndex,
    pub term: Term,
}

impl SnapshotId {
    fn file_name(&self) -> String {
        format!(
            "{:020}-{:020}-{:020}.snap",
            self.region.0, self.index.0, self.term.0
        )
    }

    fn from_file_name(name: &str) -> Option<SnapshotId> {
        let mut parts = name.strip_suffix(".snap")?.split('-');
        let mut next = || parts.next()?.parse::<u64>().ok();
        Some(SnapshotId {
            region: RegionId(next()?),
            index: LogIndex(next()?),
            term: Term(next()?),
        })
    }
}

/// Writes a snapshot of `region` at `index`/`term` into `dir` durably; returns its path.
///
/// # Errors
/// `Io` naming the failed step.
pub fn write_snapshot(dir: &Path, id: &SnapshotId, data: &[u8]) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| WalError::io("create directory", dir, e))?;
    let path = dir.join(id.file_name());
    let tmp = dir.join(format!("{}.tmp", id.file_name()));
    let mut header = [0u8; HEADER_LEN];
    header[0..8].copy_from_slice(&MAGIC);
    header[8..12].copy_from_slice(&VERSION.to_le_bytes());
    header[16..24].copy_from_slice(&id.region.0.to_le_bytes());
    header[24..32].copy_from_slice(&id.index.0.to_le_bytes());
    header[32..40].copy_from_slice(&id.term.0.to_le_bytes());
    header[40..48].copy_from_slice(&(data.len() as u64).to_le_bytes());
    header[48..52].copy_from_slice(&crc32c::crc32c(data).to_le_bytes());
    let header_crc = crc32c::crc32c(&header[0..52]);
    header[52..56].copy_from_slice(&header_crc.to_le_bytes());
    let written = write_file(&tmp, &header, data);
    if written.is_err() {
        // A full disk must not stay fuller by a partial snapshot; the error says why.
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    std::fs::rename(&tmp, &path).map_err(|e| WalError::io("rename snapshot", &tmp, e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| WalError::io("fsync directory", dir, e))?;
    Ok(path)
}

/// Creates `tmp` holding `header` then `data`, and fsyncs it.
fn write_file(tmp: &Path, header: &[u8], data: &[u8]) -> Result<()> {
    let mut file = File::create(tmp).map_err(|e| WalError::io("create snapshot", tmp, e))?;
    file.write_all(header)
        .and_then(|()| file.write_all(data))
        .map_err(|e| WalError::io("write snapshot", tmp, e))?;
    file.sync_all()
        .map_err(|e| WalError::io("fsync snapshot", tmp, e))
}

/// A mapped, verified snapshot file.
pub struct SnapshotFile {
    pub id: SnapshotId,
    map: Mmap,
}

impl SnapshotFile {
    /// The snapshot's data, borrowed from the mapping.
    pub fn data(&self) -> &[u8] {
        &self.map[HEADER_LEN..]
    }
}

/// Maps and verifies the snapshot at `path`.
///
/// # Errors
/// `Io`, or `InvalidSnapshot` for a bad header, length or checksum.
pub fn read_snapshot(path: &Path) -> Result<SnapshotFile> {
    let file = File::open(path).map_err(|e| WalError::io("open snapshot", path, e))?;
    // SAFETY: snapshot files are never modified after the rename that publishes them.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| WalError::io("map snapshot", path, e))?;
    let bad = |reason: &str| WalError::InvalidSnapshot {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    if map.len() < HEADER_LEN || map[0..8] != MAGIC {
        return Err(bad("not a snapshot file"));
    }
    if crc32c::crc32c(&map[0..52]) != read_u32(&map, 52) || read_u32(&map, 8) != VERSION {
        return Err(bad("header checksum or version mismatch"));
    }
    if read_u64(&map, 40) != (map.len() - HEADER_LEN) as u64 {
        return Err(bad("data length mismatch"));
    }
    if crc32c::crc32c(&map[HEADER_LEN..]) != read_u32(&map, 48) {
        return Err(bad("data checksum mismatch"));
    }
    let id = SnapshotId {
        region: RegionId(read_u64(&map, 16)),
        index: LogIndex(read_u64(&map, 24)),
        term: Term(read_u64(&map, 32)),
    };
    Ok(SnapshotFile { id, map })
}

/// The newest snapshot (highest index) of every Region in `dir`, sorted by Region.
///
/// # Errors
/// `Io` if the directory cannot be read.
pub fn newest_snapshots(dir: &Path) -> Result<Vec<(SnapshotId, PathBuf)>> {
    let mut newest: std::collections::BTreeMap<RegionId, (SnapshotId, PathBuf)> =
        std::collections::BTreeMap::new();
    let read_dir = std::fs::read_dir(dir).map_err(|e| WalError::io("read directory", dir, e))?;
    for dir_entry in read_dir {
        let dir_entry = dir_entry.map_err(|e| WalError::io("read directory", dir, e))?;
        let Some(id) = dir_entry
            .file_name()
            .to_str()
            .and_then(SnapshotId::from_file_name)
        else {
            continue;
        };
        let newer = newest
            .get(&id.region)
            .is_none_or(|(old, _)| old.index < id.index);
        if newer {
            newest.insert(id.region, (id, dir_entry.path()));
        }
    }
    Ok(newest.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_round_trip_and_the_newest_per_region_is_listed() {
        let dir = tempfile::tempdir().unwrap();
        let id = |region, index| SnapshotId {
            region: RegionId(region),
            index: LogIndex(index),
            term: Term(2),
        };
        write_snapshot(dir.path(), &id(1, 10), b"old").unwrap();
        let path = write_snapshot(dir.path(), &id(1, 20), b"new state").unwrap();
        write_snapshot(dir.path(), &id(2, 5), b"").unwrap();
        let snapshot = read_snapshot(&path).unwrap();
        assert_eq!(
            (snapshot.id.clone(), snapshot.data()),
            (id(1, 20), &b"new state"[..])
        );
        let newest: Vec<SnapshotId> = newest_snapshots(dir.path())
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(newest, vec![id(1, 20), id(2, 5)]);
        let mut bytes = std::fs::read(&path).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert!(matches!(
            read_snapshot(&path),
            Err(WalError::InvalidSnapshot { .. })
        ));
    }
}
