//! What makes a hand-off of a Region between two cores of a node durable, and how recovery
//! resolves one that a crash interrupted (the protocol is in `core::handoff`).
//!
//! Each core directory may hold:
//! - `handoffs`: the Regions this core received by hand-off, one `region generation` per
//!   line. The generation of a Region grows by one at every hand-off, so across the cores of
//!   a node the line with the highest generation names the core that owns the Region. A
//!   line is written by the receiving core (its commit point), and removed by a core that
//!   gave the Region away or destroyed its replica, or at recovery when another core's line
//!   is newer.
//! - `incoming/REGION-GENERATION.handoff`: a received Region's full state (snapshot, hard
//!   state, log entries after the snapshot), written durably *before* the `handoffs` line,
//!   so that recovery can finish installing a committed hand-off. It is deleted (and the
//!   deletion synced) once the snapshot file and WAL records of the Region are durable, before
//!   the Region serves; recovery deletes one that no `handoffs` line commits.
//!
//! Incoming file layout (little endian), with a CRC32C of everything before it at the end:
//! `"TSHO" | version u8 | generation u64 | was_leader u8 | index u64 | term u64 |
//!  hard term u64 | vote u64 (0: none) | commit u64 | entry count u32 |
//!  per entry: index u64, term u64, kind u8, length u32, bytes | snapshot (as in a snapshot
//!  file: membership then the envelope) | crc u32`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use tessera_core::{Entry, EntryKind, HardState, LogIndex, NodeId, RegionId, Term};
use tessera_wal::{LogBatch, Wal};

use super::snapshot_files;
use crate::store::handoff::HandOffState;

/// The file listing the Regions a core received by hand-off.
pub const HANDOFFS_FILE: &str = "handoffs";
/// The directory of a core's received, not yet installed, Regions.
pub const INCOMING_DIR: &str = "incoming";
const MAGIC: &[u8; 4] = b"TSHO";
const VERSION: u8 = 1;
/// Entries in one incoming file, at most (a bound on what a damaged file makes us allocate).
const ENTRIES_MAX: usize = 1 << 20;

/// Region → (core that owns it, generation), from the `handoffs` files of every core: only
/// Regions that were handed off at least once are listed.
pub type Owners = BTreeMap<RegionId, (usize, u64)>;

/// Reads a core's `handoffs` file (empty when there is none).
///
/// # Errors
/// When it cannot be read or a line is damaged.
pub fn read_markers(core_dir: &Path) -> Result<BTreeMap<RegionId, u64>, String> {
    Ok(
        snapshot_files::read_region_numbers(core_dir, HANDOFFS_FILE)?
            .into_iter()
            .collect(),
    )
}

/// Writes a core's `handoffs` file durably (temporary file, fsync, rename, directory fsync).
///
/// # Errors
/// A message naming the failed step.
pub fn write_markers(core_dir: &Path, markers: &BTreeMap<RegionId, u64>) -> Result<(), String> {
    snapshot_files::write_region_numbers(core_dir, HANDOFFS_FILE, markers)
}

/// The owners of every handed-off Region of the node (see `Owners`), from the `handoffs`
/// files of its `cores` cores.
///
/// # Errors
/// When a file cannot be read, or two cores claim one Region at one generation (impossible
/// unless a file was edited or damaged).
pub fn owners(data_dir: &Path, cores: usize) -> Result<Owners, String> {
    let mut owners = Owners::new();
    for core in 0..cores {
        let core_dir = super::bootstrap::core_dir(data_dir, core);
        for (region, generation) in read_markers(&core_dir)? {
            match owners.get(&region) {
                Some((other, known)) if *known == generation => {
                    return Err(format!(
                        "cores {other} and {core} both own region {} at hand-off generation \
                         {generation}; the handoffs files under {} are damaged",
                        region.0,
                        data_dir.display()
                    ))
                }
                Some((_, known)) if *known > generation => {}
                _ => {
                    owners.insert(region, (core, generation));
                }
            }
        }
    }
    Ok(owners)
}

/// Where each Region with durable state on this node lives, for the first routing tables:
/// the Regions with snapshot files on each core (not tombstoned there), then the owners of
/// handed-off Regions over them. Regions of the first layout without a snapshot file live
/// on their default core (`owning_core`) and are not listed.
///
/// # Errors
/// When a snapshot directory cannot be listed.
pub fn placement(data_dir: &Path, cores: usize, owners: &Owners) -> Result<Owners, String> {
    let mut placement = Owners::new();
    for core in 0..cores {
        let dir = super::bootstrap::core_dir(data_dir, core).join("snapshots");
        let dead: BTreeSet<RegionId> = snapshot_files::read_tombstones(&dir)?
            .into_iter()
            .map(|t| t.region)
            .collect();
        for region in snapshot_files::regions(&dir)? {
            if !dead.contains(&region) {
                placement.insert(region, (core, 0));
            }
        }
    }
    placement.extend(owners.iter().map(|(r, owner)| (*r, *owner)));
    Ok(placement)
}

fn incoming_name(region: RegionId, generation: u64) -> String {
    format!("{:020}-{generation:020}.handoff", region.0)
}

/// Writes a received Region's state durably into `core_dir/incoming`.
///
/// # Errors
/// A message naming the failed step.
pub fn write_incoming(
    core_dir: &Path,
    generation: u64,
    state: &HandOffState,
) -> Result<(), String> {
    let dir = core_dir.join(INCOMING_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let bytes = encode(generation, state);
    crate::meta::write_durably(&dir, &incoming_name(state.region.id, generation), &bytes)
        .map_err(|e| e.to_string())
}

/// Deletes a received Region's incoming file and syncs the directory, so that a crash never
/// brings it back (it would reinstall an older state over the Region's later writes).
///
/// # Errors
/// When the file cannot be deleted or the directory synced.
pub fn remove_incoming(core_dir: &Path, region: RegionId, generation: u64) -> Result<(), String> {
    let dir = core_dir.join(INCOMING_DIR);
    let path = dir.join(incoming_name(region, generation));
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("remove {}: {e}", path.display())),
    }
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("fsync {}: {e}", dir.display()))
}

/// The incoming files of a core: `(region, generation, path)`.
///
/// # Errors
/// When the directory cannot be listed.
pub fn list_incoming(core_dir: &Path) -> Result<Vec<(RegionId, u64, PathBuf)>, String> {
    let dir = core_dir.join(INCOMING_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("list {}: {e}", dir.display())),
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".handoff") else {
            // A temporary file of a write a crash interrupted: never committed.
            let _ = std::fs::remove_file(entry.path());
            continue;
        };
        let mut fields = stem.split('-').map(str::parse::<u64>);
        if let (Some(Ok(region)), Some(Ok(generation)), None) =
            (fields.next(), fields.next(), fields.next())
        {
            found.push((RegionId(region), generation, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// Reads an incoming file.
///
/// # Errors
/// When it cannot be read or is damaged.
pub fn read_incoming(path: &Path) -> Result<(u64, HandOffState), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    decode(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// Makes a received Region durable in this core's files: its snapshot file, then one WAL
/// batch that drops anything older the WAL holds for it and records the snapshot mark, the
/// entries after it and the hard state.
///
/// # Errors
/// When the snapshot cannot be written or the WAL append fails.
pub async fn install(wal: &Wal, snapshot_dir: &Path, state: &HandOffState) -> Result<(), String> {
    let region = state.region.id;
    snapshot_files::write(
        snapshot_dir,
        region,
        state.index,
        state.term,
        &state.conf_state,
        &state.data,
    )?;
    wal.append(install_batch(state))
        .await
        .map_err(|e| format!("WAL append of handed-off region {}: {e}", region.0))
}

/// The WAL records of a received Region (see `install`).
pub fn install_batch(state: &HandOffState) -> LogBatch {
    let region = state.region.id;
    let mut batch = LogBatch::new();
    batch.remove_region(region);
    batch.install_snapshot(region, state.index, state.term);
    batch.add_entries(region, &state.entries);
    batch.set_hard_state(region, state.hard_state);
    batch
}

/// Recovery of core `core`'s hand-offs, before its Regions are recovered:
/// 1. an incoming file that the owners' line commits (same core and generation) is
///    installed (a crash came before it was); any other incoming file is deleted (its
///    hand-off never committed, or a newer one superseded it);
/// 2. the core's `handoffs` lines that another core's newer line supersedes are dropped.
///
/// Returns the `handoffs` lines kept.
///
/// # Errors
/// When a file cannot be read, written or deleted, or the WAL append fails.
pub async fn recover(
    core: usize,
    core_dir: &Path,
    owners: &Owners,
    wal: &Wal,
    snapshot_dir: &Path,
) -> Result<BTreeMap<RegionId, u64>, String> {
    for (region, generation, path) in list_incoming(core_dir)? {
        if owners.get(&region) == Some(&(core, generation)) {
            let (_, state) = read_incoming(&path)?;
            install(wal, snapshot_dir, &state).await?;
            tracing::info!(
                region = region.0,
                generation,
                "finished installing a handed-off region"
            );
        }
        remove_incoming(core_dir, region, generation)?;
    }
    let mut markers = read_markers(core_dir)?;
    let before = markers.len();
    markers.retain(|region, generation| owners.get(region) == Some(&(core, *generation)));
    if markers.len() != before {
        write_markers(core_dir, &markers)?;
    }
    Ok(markers)
}

/// Frees what this core still holds of Regions another core owns (`elsewhere`): a crash
/// came before the hand-off that moved them finished freeing them.
///
/// # Errors
/// When a snapshot file cannot be deleted or the WAL append fails.
pub async fn discard(
    wal: &Wal,
    snapshot_dir: &Path,
    elsewhere: &BTreeSet<RegionId>,
) -> Result<(), String> {
    let mut batch = LogBatch::new();
    for region in elsewhere {
        snapshot_files::remove_region(snapshot_dir, *region)?;
        if wal.last_index(*region).is_ok() {
            tracing::info!(
                region = region.0,
                "freeing the copy of a region handed to another core"
            );
            batch.remove_region(*region);
        }
    }
    if batch.is_empty() {
        return Ok(());
    }
    wal.append(batch)
        .await
        .map_err(|e| format!("recording freed regions in the WAL: {e}"))
}

fn encode(generation: u64, state: &HandOffState) -> Vec<u8> {
    let snapshot = snapshot_files::encode(&state.conf_state, &state.data);
    let mut out = Vec::with_capacity(128 + snapshot.len());
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&generation.to_le_bytes());
    out.push(u8::from(state.was_leader));
    let hard = state.hard_state;
    for value in [
        state.index.0,
        state.term.0,
        hard.term.0,
        hard.vote.map_or(0, |v| v.0),
        hard.commit.0,
    ] {
        out.extend_from_slice(&value.to_le_bytes());
    }
    out.extend_from_slice(&(state.entries.len() as u32).to_le_bytes());
    for entry in &state.entries {
        out.extend_from_slice(&entry.index.0.to_le_bytes());
        out.extend_from_slice(&entry.term.0.to_le_bytes());
        out.push(entry.kind.code());
        out.extend_from_slice(&(entry.data.len() as u32).to_le_bytes());
        out.extend_from_slice(&entry.data);
    }
    out.extend_from_slice(&snapshot);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// A cursor over a byte slice that fails with "truncated" instead of panicking.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(len).ok_or("truncated")?;
        let slice = self.bytes.get(self.at..end).ok_or("truncated")?;
        self.at = end;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
}

fn decode(bytes: &[u8]) -> Result<(u64, HandOffState), String> {
    let (body, crc) = bytes.split_at(bytes.len().checked_sub(4).ok_or("truncated")?);
    if crc32c::crc32c(body).to_le_bytes() != crc {
        return Err("checksum mismatch".into());
    }
    let mut reader = Reader { bytes: body, at: 0 };
    if reader.take(4)? != MAGIC || reader.u8()? != VERSION {
        return Err("not a hand-off file of this version".into());
    }
    let generation = reader.u64()?;
    let was_leader = reader.u8()? != 0;
    let (index, term) = (LogIndex(reader.u64()?), Term(reader.u64()?));
    let hard_state = HardState {
        term: Term(reader.u64()?),
        vote: Some(reader.u64()?).filter(|v| *v != 0).map(NodeId),
        commit: LogIndex(reader.u64()?),
    };
    let count = reader.u32()? as usize;
    if count > ENTRIES_MAX {
        return Err(format!("implausible entry count {count}"));
    }
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        let (index, term) = (LogIndex(reader.u64()?), Term(reader.u64()?));
        let kind = EntryKind::from_code(reader.u8()?).ok_or("unknown entry kind")?;
        let len = reader.u32()? as usize;
        let data = reader.take(len)?.to_vec().into();
        entries.push(Entry {
            term,
            index,
            kind,
            data,
        });
    }
    let snapshot = snapshot_files::from_bytes(PathBuf::new(), index, term, &body[reader.at..])?;
    let region = crate::split::decode_envelope_region(&snapshot.data)?
        .ok_or("the snapshot carries no region")?;
    Ok((
        generation,
        HandOffState {
            region,
            index,
            term,
            conf_state: snapshot.conf_state,
            data: snapshot.data,
            hard_state,
            entries,
            was_leader,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region::{Region, RegionEpoch};
    use tessera_core::ConfState;

    fn state() -> HandOffState {
        let region = Region {
            id: RegionId(7),
            start_key: b"c".to_vec(),
            end_key: b"f".to_vec(),
            epoch: RegionEpoch {
                version: 3,
                conf_version: 2,
            },
            peers: vec![NodeId(1), NodeId(2)],
        };
        let data = crate::split::encode_envelope(&region, &Default::default());
        HandOffState {
            region,
            index: LogIndex(40),
            term: Term(6),
            conf_state: ConfState::with_voters([NodeId(1), NodeId(2)]),
            data,
            hard_state: HardState {
                term: Term(7),
                vote: Some(NodeId(2)),
                commit: LogIndex(41),
            },
            entries: (41..=42)
                .map(|i| Entry {
                    term: Term(7),
                    index: LogIndex(i),
                    kind: EntryKind::Normal,
                    data: vec![i as u8; 3].into(),
                })
                .collect(),
            was_leader: true,
        }
    }

    #[test]
    fn an_incoming_file_reads_back_whole_and_a_damaged_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        write_incoming(dir.path(), 4, &state()).unwrap();
        let listed = list_incoming(dir.path()).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].0, listed[0].1), (RegionId(7), 4));
        assert_eq!(read_incoming(&listed[0].2).unwrap(), (4, state()));
        let mut bytes = std::fs::read(&listed[0].2).unwrap();
        bytes[30] ^= 1;
        std::fs::write(&listed[0].2, &bytes).unwrap();
        assert!(read_incoming(&listed[0].2)
            .unwrap_err()
            .contains("checksum"));
        remove_incoming(dir.path(), RegionId(7), 4).unwrap();
        assert!(list_incoming(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn the_highest_generation_names_the_owner_and_a_tie_is_refused() {
        let data = tempfile::tempdir().unwrap();
        let core = |c| super::super::bootstrap::core_dir(data.path(), c);
        write_markers(
            &core(0),
            &BTreeMap::from([(RegionId(3), 1), (RegionId(5), 2)]),
        )
        .unwrap();
        write_markers(&core(1), &BTreeMap::from([(RegionId(3), 2)])).unwrap();
        let owners = owners(data.path(), 2).unwrap();
        assert_eq!(owners[&RegionId(3)], (1, 2));
        assert_eq!(owners[&RegionId(5)], (0, 2));
        write_markers(&core(1), &BTreeMap::from([(RegionId(5), 2)])).unwrap();
        assert!(super::owners(data.path(), 2)
            .unwrap_err()
            .contains("both own region 5"));
    }
}
