//! Splitting a Region, as pure functions: the split command a leader proposes through Raft,
//! the rule every replica applies, and the Region snapshot envelope that carries a Region's
//! range and epoch with its data (so a snapshot taken after a split restores the shrunk
//! range, and a Region created by a split can be recovered from its first snapshot).
//!
//! Applying a split (`apply_split`, on every replica, in log order) is deterministic:
//! 1. the command's Region id and epoch must equal the replica's current ones, otherwise the
//!    command is a no-op: a split proposed twice, or by a deposed leader before a split that
//!    committed first, never splits again;
//! 2. the key must lie strictly inside the Region (above its start key);
//! 3. the Region keeps `[start, key)`, the new Region gets `[key, end)`, the same peers, and
//!    both take the epoch `version + 1`;
//! 4. the keys at or above `key` move to the new Region's state machine, which continues the
//!    same version counter.
//!
//! Command layout (an entry's payload; format byte 2, KV commands use 1), little-endian:
//! `[2][region u64][version u64][conf_version u64][new_region u64][key len u32][key]`.
//!
//! Envelope layout: `"TRGN" [format u8 = 1][region u64][version u64][conf_version u64]
//! [start len u32][start][end len u32][end][peer count u32][peer u64...][crc32c u32 of all
//! before]` followed by the KV snapshot. Data without the magic is a bare KV snapshot (from
//! before envelopes existed).

use tessera_core::{NodeId, RegionId};

use crate::kv::command::{CommandError, Reader, KEY_BYTES_MAX};
use crate::kv::KvState;
use crate::region::{Region, RegionEpoch};

/// The first byte of a split command's payload.
pub const SPLIT_FORMAT: u8 = 2;
const ENVELOPE_MAGIC: &[u8; 4] = b"TRGN";
/// Peers in an envelope, at most (a bound on what damaged bytes can make us allocate).
const PEERS_MAX: usize = 1024;

/// A split, as proposed through Raft.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitCommand {
    pub region: RegionId,
    /// The epoch the leader saw when it proposed; the split applies only at this epoch.
    pub epoch: RegionEpoch,
    pub new_region: RegionId,
    pub key: Vec<u8>,
}

impl SplitCommand {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(41 + self.key.len());
        out.push(SPLIT_FORMAT);
        for n in [
            self.region.0,
            self.epoch.version,
            self.epoch.conf_version,
            self.new_region.0,
        ] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        out.extend_from_slice(&(self.key.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.key);
        out
    }

    /// # Errors
    /// When the bytes are not a split command.
    pub fn decode(bytes: &[u8]) -> Result<SplitCommand, CommandError> {
        let mut reader = Reader { bytes, at: 0 };
        let format = reader.u8()?;
        if format != SPLIT_FORMAT {
            return Err(CommandError::UnknownFormat(format));
        }
        let command = SplitCommand {
            region: RegionId(reader.u64()?),
            epoch: RegionEpoch {
                version: reader.u64()?,
                conf_version: reader.u64()?,
            },
            new_region: RegionId(reader.u64()?),
            key: reader.bytes("key", KEY_BYTES_MAX)?,
        };
        if reader.at != bytes.len() {
            return Err(CommandError::TrailingBytes(bytes.len() - reader.at));
        }
        Ok(command)
    }
}

/// Rules 1 and 2 of the module docs, checked without changing anything.
///
/// # Errors
/// A sentence saying why the split does not apply.
pub fn check_split(region: &Region, command: &SplitCommand) -> Result<(), String> {
    if command.region != region.id || command.epoch != region.epoch {
        return Err(format!(
            "{region} is at epoch {:?}, the split was proposed at {:?}",
            region.epoch, command.epoch
        ));
    }
    if !region.contains(&command.key) || command.key == region.start_key {
        return Err(format!(
            "split key {:?} is not strictly inside {region}",
            String::from_utf8_lossy(&command.key)
        ));
    }
    if command.new_region.0 == 0 || command.new_region == region.id {
        return Err(format!("bad new region id {}", command.new_region.0));
    }
    Ok(())
}

/// Applies a split to a Region and its state (rules 1-4): returns the new Region and its
/// state, and leaves the shrunk Region in `region` and `kv`.
///
/// # Errors
/// As `check_split`; nothing is changed then.
pub fn apply_split(
    region: &mut Region,
    kv: &mut KvState,
    command: &SplitCommand,
) -> Result<(Region, KvState), String> {
    check_split(region, command)?;
    let epoch = RegionEpoch {
        version: region.epoch.version + 1,
        conf_version: region.epoch.conf_version,
    };
    let upper = Region {
        id: command.new_region,
        start_key: command.key.clone(),
        end_key: std::mem::replace(&mut region.end_key, command.key.clone()),
        epoch,
        peers: region.peers.clone(),
    };
    region.epoch = epoch;
    Ok((upper, kv.split_off(&command.key)))
}

/// A Region's snapshot data: its metadata, then its KV snapshot.
pub fn encode_envelope(region: &Region, kv: &KvState) -> Vec<u8> {
    let header = ENVELOPE_MAGIC.len() + 1 + 3 * 8 + 2 * 4 + 4 + 4;
    let keys = region.start_key.len() + region.end_key.len() + region.peers.len() * 8;
    let mut out = Vec::with_capacity(header + keys + kv.encoded_len_bound());
    out.extend_from_slice(ENVELOPE_MAGIC);
    out.push(1);
    for n in [region.id.0, region.epoch.version, region.epoch.conf_version] {
        out.extend_from_slice(&n.to_le_bytes());
    }
    for key in [&region.start_key, &region.end_key] {
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key);
    }
    out.extend_from_slice(&(region.peers.len() as u32).to_le_bytes());
    for peer in &region.peers {
        out.extend_from_slice(&peer.0.to_le_bytes());
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    kv.encode_snapshot_into(&mut out);
    out
}

/// Decodes snapshot data: the Region it describes (`None` for a bare KV snapshot) and the
/// state.
///
/// # Errors
/// A sentence when the envelope or the KV snapshot is damaged.
pub fn decode_envelope(bytes: &[u8]) -> Result<(Option<Region>, KvState), String> {
    if !bytes.starts_with(ENVELOPE_MAGIC) {
        return KvState::decode_snapshot(bytes)
            .map(|kv| (None, kv))
            .map_err(|e| e.to_string());
    }
    let (region, at) = decode_header(bytes)?;
    let kv = KvState::decode_snapshot(&bytes[at..]).map_err(|e| e.to_string())?;
    Ok((Some(region), kv))
}

/// The Region a snapshot's data describes (`None` for a bare KV snapshot), without
/// decoding the KV state.
///
/// # Errors
/// A sentence when the envelope is damaged.
pub fn decode_envelope_region(bytes: &[u8]) -> Result<Option<Region>, String> {
    if !bytes.starts_with(ENVELOPE_MAGIC) {
        return Ok(None);
    }
    decode_header(bytes).map(|(region, _)| Some(region))
}

/// The envelope's Region and where the KV snapshot starts.
fn decode_header(bytes: &[u8]) -> Result<(Region, usize), String> {
    let mut reader = Reader { bytes, at: 4 };
    let region = read_region(&mut reader).map_err(|e| format!("region envelope: {e}"))?;
    let header_end = reader.at;
    let crc = reader.u32().map_err(|e| format!("region envelope: {e}"))?;
    if crc32c::crc32c(&bytes[..header_end]) != crc {
        return Err("region envelope checksum mismatch".into());
    }
    region.validate()?;
    Ok((region, reader.at))
}

fn read_region(reader: &mut Reader<'_>) -> Result<Region, CommandError> {
    let format = reader.u8()?;
    if format != 1 {
        return Err(CommandError::UnknownFormat(format));
    }
    let id = RegionId(reader.u64()?);
    let epoch = RegionEpoch {
        version: reader.u64()?,
        conf_version: reader.u64()?,
    };
    let start_key = reader.bytes("start key", KEY_BYTES_MAX)?;
    let end_key = reader.bytes("end key", KEY_BYTES_MAX)?;
    let count = reader.u32()? as usize;
    if count > PEERS_MAX {
        return Err(CommandError::TooLong {
            what: "peers",
            len: count,
            max: PEERS_MAX,
        });
    }
    let peers = (0..count)
        .map(|_| reader.u64().map(NodeId))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Region {
        id,
        start_key,
        end_key,
        epoch,
        peers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::KvCommand;

    fn region() -> Region {
        Region {
            id: RegionId(2),
            start_key: b"m".to_vec(),
            end_key: Vec::new(),
            epoch: RegionEpoch {
                version: 1,
                conf_version: 1,
            },
            peers: vec![NodeId(1), NodeId(2), NodeId(3)],
        }
    }

    fn split_at(key: &str, epoch: RegionEpoch) -> SplitCommand {
        SplitCommand {
            region: RegionId(2),
            epoch,
            new_region: RegionId(4),
            key: key.as_bytes().to_vec(),
        }
    }

    #[test]
    fn a_split_shrinks_the_region_and_a_repeat_at_the_old_epoch_is_a_no_op() {
        let mut region = region();
        let mut kv = KvState::default();
        for key in ["m", "n", "t", "z"] {
            kv.apply(&KvCommand::Put {
                namespace: String::new(),
                key: key.into(),
                value: b"v".to_vec(),
            });
        }
        let command = split_at("t", region.epoch);
        assert_eq!(SplitCommand::decode(&command.encode()), Ok(command.clone()));
        let (upper, upper_kv) = apply_split(&mut region, &mut kv, &command).unwrap();
        assert_eq!(
            (region.start_key.as_slice(), region.end_key.as_slice()),
            (&b"m"[..], &b"t"[..])
        );
        assert_eq!(
            (upper.start_key.as_slice(), upper.end_key.as_slice()),
            (&b"t"[..], &b""[..])
        );
        assert_eq!((region.epoch.version, upper.epoch.version), (2, 2));
        assert_eq!(upper.peers, region.peers);
        assert_eq!((kv.len(), upper_kv.len()), (2, 2));
        // Proposed twice (or by a deposed leader): the epoch moved on, nothing changes.
        let before = (region.clone(), kv.clone());
        assert!(apply_split(&mut region, &mut kv, &command).is_err());
        assert_eq!((region.clone(), kv.clone()), before);
    }

    #[test]
    fn split_keys_outside_or_at_the_start_are_refused() {
        let region = region();
        assert!(check_split(&region, &split_at("m", region.epoch)).is_err());
        assert!(check_split(&region, &split_at("a", region.epoch)).is_err());
        let mut other = split_at("x", region.epoch);
        other.region = RegionId(9);
        assert!(check_split(&region, &other).is_err());
        assert!(check_split(&region, &split_at("x", region.epoch)).is_ok());
    }

    #[test]
    fn envelopes_round_trip_and_damage_is_detected() {
        let region = region();
        let mut kv = KvState::default();
        kv.apply(&KvCommand::Put {
            namespace: "ns".into(),
            key: b"q".to_vec(),
            value: b"v".to_vec(),
        });
        let bytes = encode_envelope(&region, &kv);
        assert_eq!(decode_envelope(&bytes), Ok((Some(region), kv.clone())));
        assert_eq!(decode_envelope(&kv.encode_snapshot()), Ok((None, kv)));
        assert_eq!(decode_envelope(&[]), Ok((None, KvState::default())));
        for at in [6, 30] {
            let mut damaged = bytes.clone();
            damaged[at] ^= 1;
            assert!(decode_envelope(&damaged).is_err(), "byte {at}");
        }
        assert!(decode_envelope(&bytes[..20]).is_err());
    }
}
