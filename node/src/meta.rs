//! The data directory's metadata: which cluster and node it belongs to, how many cores wrote
//! it, the stores it knows and its Regions. Written durably (temporary file, fsync, rename,
//! fsync of the directory) so a crash leaves either the old or the new version.
//!
//! Layout of a data directory:
//! ```text
//! tessera-data/
//!   meta.toml          this file
//!   LOCK               held (flock) while a node runs on the directory
//!   core-0/wal/        core 0's write-ahead log segments
//!   core-0/snapshots/  core 0's Region snapshots
//!   core-1/...
//! ```

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tessera_core::{NodeId, RegionId};

use crate::region::{Region, RegionEpoch};

/// A Region as stored in `meta.toml`. Keys are hex so any bytes survive TOML.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionMeta {
    pub id: u64,
    pub start_key_hex: String,
    pub end_key_hex: String,
    pub version: u64,
    pub conf_version: u64,
    pub peers: Vec<u64>,
}

/// A store (node) as the cluster knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreMeta {
    pub node_id: u64,
    /// Host of both port ranges.
    pub host: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub cores: usize,
}

/// The whole metadata file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataMeta {
    pub cluster_id: u64,
    pub node_id: u64,
    pub cores: usize,
    pub stores: Vec<StoreMeta>,
    /// The first Region layout (later splits are recorded in each Region's snapshots, not
    /// here; see `server::bootstrap::recover_store`).
    pub regions: Vec<RegionMeta>,
    /// The node that hosts the placement driver; 0 (files written before it existed): the
    /// store with the lowest id.
    #[serde(default)]
    pub pd_node: u64,
}

/// Why the data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("data directory {path}: {op} failed: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("data directory {path} is in use by another tessera process (its LOCK is held)")]
    Locked { path: PathBuf },
    #[error("{path} is damaged: {message}")]
    Damaged { path: PathBuf, message: String },
    #[error("data directory {path} belongs to {what}; use another --data-dir or start with the settings it was written with")]
    Mismatch { path: PathBuf, what: String },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> MetaError + 'a {
    move |source| MetaError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

impl RegionMeta {
    pub fn from_region(region: &Region) -> RegionMeta {
        RegionMeta {
            id: region.id.0,
            start_key_hex: hex(&region.start_key),
            end_key_hex: hex(&region.end_key),
            version: region.epoch.version,
            conf_version: region.epoch.conf_version,
            peers: region.peers.iter().map(|p| p.0).collect(),
        }
    }

    /// # Errors
    /// A sentence when a key is not valid hex.
    pub fn to_region(&self) -> Result<Region, String> {
        let key = |text: &str| {
            unhex(text).ok_or_else(|| format!("region {}: bad hex key {text:?}", self.id))
        };
        Ok(Region {
            id: RegionId(self.id),
            start_key: key(&self.start_key_hex)?,
            end_key: key(&self.end_key_hex)?,
            epoch: RegionEpoch {
                version: self.version,
                conf_version: self.conf_version,
            },
            peers: self.peers.iter().copied().map(NodeId).collect(),
        })
    }
}

impl DataMeta {
    /// The node hosting the placement driver.
    pub fn pd_node(&self) -> u64 {
        if self.pd_node != 0 {
            return self.pd_node;
        }
        self.stores
            .iter()
            .map(|s| s.node_id)
            .min()
            .unwrap_or(self.node_id)
    }

    /// The placement driver's client address (core 0 of its node), if the node is known.
    pub fn pd_addr(&self) -> Option<String> {
        let pd = self.pd_node();
        let store = self.stores.iter().find(|s| s.node_id == pd)?;
        Some(format!("{}:{}", store.host, store.client_port))
    }

    /// The Regions, validated.
    ///
    /// # Errors
    /// `Damaged` when a Region is malformed or the layout overlaps.
    pub fn regions(&self, dir: &Path) -> Result<Vec<Region>, MetaError> {
        let damaged = |message| MetaError::Damaged {
            path: dir.join("meta.toml"),
            message,
        };
        let regions = self
            .regions
            .iter()
            .map(RegionMeta::to_region)
            .collect::<Result<Vec<_>, _>>()
            .map_err(damaged)?;
        crate::region::validate_layout(&regions).map_err(|m| MetaError::Damaged {
            path: dir.join("meta.toml"),
            message: m,
        })?;
        Ok(regions)
    }

    /// Reads `dir/meta.toml`; `None` for a fresh directory.
    ///
    /// # Errors
    /// `Io` or `Damaged`.
    pub fn load(dir: &Path) -> Result<Option<DataMeta>, MetaError> {
        let path = dir.join("meta.toml");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("read", &path)(e)),
        };
        toml::from_str(&text)
            .map(Some)
            .map_err(|e| MetaError::Damaged {
                path,
                message: e.to_string(),
            })
    }

    /// Writes `dir/meta.toml` durably.
    ///
    /// # Errors
    /// `Io` naming the step that failed.
    pub fn store(&self, dir: &Path) -> Result<(), MetaError> {
        let text = toml::to_string(self).expect("metadata serializes");
        write_durably(dir, "meta.toml", text.as_bytes())
    }
}

/// Writes `dir/name` so that a crash leaves the old or the new content, never a mix.
///
/// # Errors
/// `Io` naming the step.
pub fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), MetaError> {
    let temporary = dir.join(format!("{name}.tmp"));
    let target = dir.join(name);
    let mut file = File::create(&temporary).map_err(io("create", &temporary))?;
    file.write_all(bytes).map_err(io("write", &temporary))?;
    file.sync_all().map_err(io("fsync", &temporary))?;
    std::fs::rename(&temporary, &target).map_err(io("rename", &target))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync directory", dir))?;
    Ok(())
}

/// An exclusive lock on a data directory, released when dropped (or when the process dies).
pub struct DirLock {
    _file: File,
}

/// Creates `dir` if needed, checks it is writable, and takes its lock.
///
/// # Errors
/// `Io` when the directory cannot be created or written; `Locked` when another process holds
/// it.
pub fn lock_data_dir(dir: &Path) -> Result<DirLock, MetaError> {
    std::fs::create_dir_all(dir).map_err(io("create directory", dir))?;
    let path = dir.join("LOCK");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io("open for writing", &path))?;
    // SAFETY: flock on a file descriptor we own.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(MetaError::Locked {
            path: dir.to_path_buf(),
        });
    }
    Ok(DirLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(DataMeta::load(dir.path()).unwrap().is_none());
        let region = Region {
            id: RegionId(7),
            start_key: vec![0, 0xff, b'm'],
            end_key: vec![],
            epoch: RegionEpoch {
                version: 2,
                conf_version: 3,
            },
            peers: vec![NodeId(1), NodeId(2)],
        };
        let meta = DataMeta {
            cluster_id: 42,
            node_id: 1,
            cores: 2,
            stores: vec![],
            regions: vec![RegionMeta::from_region(&region)],
            pd_node: 0,
        };
        meta.store(dir.path()).unwrap();
        let loaded = DataMeta::load(dir.path()).unwrap().unwrap();
        assert_eq!(loaded, meta);
        assert_eq!(loaded.regions(dir.path()).unwrap(), vec![region]);
    }

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _held = lock_data_dir(dir.path()).unwrap();
        assert!(matches!(
            lock_data_dir(dir.path()),
            Err(MetaError::Locked { .. })
        ));
    }

    #[test]
    fn hex_round_trips_and_rejects_garbage() {
        assert_eq!(unhex(&hex(&[0, 1, 0xfe])), Some(vec![0, 1, 0xfe]));
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
    }
}
