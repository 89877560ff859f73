//! A Region's key-value state: an ordered in-memory map from (namespace, key) to a versioned
//! value, the result of applying the Region's committed commands in order.
//!
//! Versions: every write takes the next number of a per-Region counter that starts at 1 and
//! only grows (and that a split hands on to the new Region), so a key's version never goes
//! backwards, not even after a delete and a re-create. Version 0 means "absent".
//!
//! The whole dataset lives in RAM; docs/operations.md says how to size a node.
//!
//! Snapshot layout (little-endian): `"TKVS" [format u8=1] [next_version u64] [count u64]`,
//! then per item `[namespace len u16][namespace][key len u32][key][value len u32][value]
//! [version u64]`, then `[crc32c u32]` of everything before it.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::command::{CommandError, KvCommand, Reader, KEY_BYTES_MAX, VALUE_BYTES_MAX};

/// A stored value and its version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    pub value: Vec<u8>,
    pub version: u64,
}

/// The result of applying one command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvOutcome {
    /// The write took effect; the key's version is now `version` (0 after a delete).
    Written { version: u64 },
    /// A compare failed; nothing changed. `current_version` is 0 for an absent key.
    VersionMismatch { current_version: u64 },
}

/// One item of a scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanItem {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub version: u64,
}

/// The state of one Region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvState {
    items: BTreeMap<Vec<u8>, Versioned>,
    next_version: u64,
    bytes: usize,
}

impl Default for KvState {
    fn default() -> Self {
        KvState {
            items: BTreeMap::new(),
            next_version: 1,
            bytes: 0,
        }
    }
}

/// The map key: `[namespace len u8][namespace][key]`, so each namespace is one contiguous,
/// key-ordered run.
fn map_key(namespace: &str, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + namespace.len() + key.len());
    out.push(namespace.len() as u8);
    out.extend_from_slice(namespace.as_bytes());
    out.extend_from_slice(key);
    out
}

fn namespace_prefix_len(namespace: &str) -> usize {
    1 + namespace.len()
}

/// The smallest byte string greater than every string starting with `prefix`, or `None` if
/// there is none (the prefix is all 0xff).
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

impl KvState {
    /// Applies one committed command.
    pub fn apply(&mut self, command: &KvCommand) -> KvOutcome {
        let (namespace, key) = command.target();
        let map_key = map_key(namespace, key);
        let current = self.items.get(&map_key).map_or(0, |v| v.version);
        match command {
            KvCommand::Put { value, .. } => self.write(map_key, value),
            KvCommand::Delete { .. } => self.remove(&map_key),
            KvCommand::Cas {
                expected_version,
                value,
                ..
            } => {
                if *expected_version != current {
                    return KvOutcome::VersionMismatch {
                        current_version: current,
                    };
                }
                self.write(map_key, value)
            }
            KvCommand::CasDelete {
                expected_version, ..
            } => {
                if *expected_version != current || current == 0 {
                    return KvOutcome::VersionMismatch {
                        current_version: current,
                    };
                }
                self.remove(&map_key)
            }
        }
    }

    fn write(&mut self, map_key: Vec<u8>, value: &[u8]) -> KvOutcome {
        let version = self.next_version;
        self.next_version += 1;
        self.bytes += map_key.len() + value.len();
        let previous = self.items.insert(
            map_key.clone(),
            Versioned {
                value: value.to_vec(),
                version,
            },
        );
        if let Some(previous) = previous {
            self.bytes -= map_key.len() + previous.value.len();
        }
        KvOutcome::Written { version }
    }

    fn remove(&mut self, map_key: &[u8]) -> KvOutcome {
        if let Some(previous) = self.items.remove(map_key) {
            self.bytes -= map_key.len() + previous.value.len();
        }
        // A delete consumes a version too, so that a later re-create is visibly newer.
        self.next_version += 1;
        KvOutcome::Written { version: 0 }
    }

    /// The value and version of a key.
    pub fn get(&self, namespace: &str, key: &[u8]) -> Option<&Versioned> {
        self.items.get(&map_key(namespace, key))
    }

    /// Up to `limit` items with keys in `[start, end)` (empty `end`: unbounded), in key
    /// order, and whether more remain.
    pub fn scan(
        &self,
        namespace: &str,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> (Vec<ScanItem>, bool) {
        let low = map_key(namespace, start);
        let high = if end.is_empty() {
            prefix_successor(&map_key(namespace, b"")).map_or(Bound::Unbounded, Bound::Excluded)
        } else {
            Bound::Excluded(map_key(namespace, end))
        };
        let skip = namespace_prefix_len(namespace);
        let mut items = Vec::new();
        let mut range = self.items.range((Bound::Included(low), high));
        for (map_key, versioned) in range.by_ref() {
            if items.len() == limit {
                return (items, true);
            }
            items.push(ScanItem {
                key: map_key[skip..].to_vec(),
                value: versioned.value.clone(),
                version: versioned.version,
            });
        }
        (items, false)
    }

    /// Number of keys, all namespaces.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Approximate size of keys and values, for split decisions and status.
    pub fn approximate_bytes(&self) -> usize {
        self.bytes
    }

    /// The user key of a map key (without its namespace framing).
    fn user_key(map_key: &[u8]) -> &[u8] {
        &map_key[1 + map_key[0] as usize..]
    }

    /// Moves every item whose key (in any namespace) is at or above `key` into a new state,
    /// which continues the same version counter (so versions never go backwards in either).
    pub fn split_off(&mut self, key: &[u8]) -> KvState {
        let moving: Vec<Vec<u8>> = self
            .items
            .keys()
            .filter(|map_key| Self::user_key(map_key) >= key)
            .cloned()
            .collect();
        let mut upper = KvState {
            next_version: self.next_version,
            ..KvState::default()
        };
        for map_key in moving {
            let value = self.items.remove(&map_key).expect("listed above");
            let bytes = map_key.len() + value.value.len();
            self.bytes -= bytes;
            upper.bytes += bytes;
            upper.items.insert(map_key, value);
        }
        upper
    }

    /// The key to split at so that about half the bytes fall on each side: the smallest key
    /// (over all namespaces) at which the bytes below reach half, and above `floor` (a split
    /// key must leave the lower Region non-empty in range). `None` when every key is at
    /// `floor` or there are fewer than two distinct keys.
    pub fn middle_key(&self, floor: &[u8]) -> Option<Vec<u8>> {
        let mut sizes: Vec<(&[u8], usize)> = self
            .items
            .iter()
            .map(|(k, v)| (Self::user_key(k), k.len() + v.value.len()))
            .collect();
        sizes.sort_unstable();
        let half = self.bytes / 2;
        let mut below = 0;
        let mut candidate = None;
        for (key, bytes) in &sizes {
            if below >= half && *key > floor && Some(*key) != sizes.first().map(|s| s.0) {
                candidate = Some(key.to_vec());
                break;
            }
            below += bytes;
        }
        candidate.or_else(|| {
            // Everything sits in the first half (one huge value): split above the first key.
            let first = sizes.first()?.0;
            sizes
                .iter()
                .map(|s| s.0)
                .find(|k| *k > first && *k > floor)
                .map(<[u8]>::to_vec)
        })
    }

    /// Encodes the whole state as a snapshot (layout in the module docs).
    pub fn encode_snapshot(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len_bound());
        self.encode_snapshot_into(&mut out);
        out
    }

    /// An upper bound of `encode_snapshot`'s length, to size a buffer once.
    pub fn encoded_len_bound(&self) -> usize {
        32 + self.bytes + self.items.len() * 20
    }

    /// Appends the snapshot `encode_snapshot` returns to `out`: a Region's snapshot is
    /// megabytes, encoded on the core's thread, so it is written once, into a buffer sized
    /// once (benchmarks.md, Node, pass P: copies and page faults of fresh buffers were most
    /// of its samples under the profiler).
    pub fn encode_snapshot_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(b"TKVS");
        out.push(1);
        out.extend_from_slice(&self.next_version.to_le_bytes());
        out.extend_from_slice(&(self.items.len() as u64).to_le_bytes());
        for (map_key, versioned) in &self.items {
            let namespace_len = map_key[0] as usize;
            out.extend_from_slice(&(namespace_len as u16).to_le_bytes());
            out.extend_from_slice(&map_key[1..1 + namespace_len]);
            let key = &map_key[1 + namespace_len..];
            out.extend_from_slice(&(key.len() as u32).to_le_bytes());
            out.extend_from_slice(key);
            out.extend_from_slice(&(versioned.value.len() as u32).to_le_bytes());
            out.extend_from_slice(&versioned.value);
            out.extend_from_slice(&versioned.version.to_le_bytes());
        }
        let crc = crc32c::crc32c(&out[start..]);
        out.extend_from_slice(&crc.to_le_bytes());
    }

    /// Decodes a snapshot written by `encode_snapshot`. An empty snapshot (the bootstrap
    /// snapshot of a new Region) is the empty state.
    ///
    /// # Errors
    /// `SnapshotError` when the bytes are not a valid snapshot.
    pub fn decode_snapshot(bytes: &[u8]) -> Result<KvState, SnapshotError> {
        if bytes.is_empty() {
            return Ok(KvState::default());
        }
        if bytes.len() < 25 || &bytes[..4] != b"TKVS" || bytes[4] != 1 {
            return Err(SnapshotError::BadHeader);
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
            return Err(SnapshotError::Checksum);
        }
        let mut reader = Reader { bytes: body, at: 5 };
        let mut state = KvState {
            next_version: reader.u64()?,
            ..KvState::default()
        };
        let count = reader.u64()?;
        for _ in 0..count {
            let namespace_len = reader.u16()? as usize;
            if namespace_len > 255 {
                return Err(SnapshotError::Command(CommandError::TooLong {
                    what: "namespace",
                    len: namespace_len,
                    max: 255,
                }));
            }
            let namespace = reader.take(namespace_len)?.to_vec();
            let key = reader.bytes("key", KEY_BYTES_MAX)?;
            let value = reader.bytes("value", VALUE_BYTES_MAX)?;
            let version = reader.u64()?;
            let mut map_key = vec![namespace_len as u8];
            map_key.extend_from_slice(&namespace);
            map_key.extend_from_slice(&key);
            state.bytes += map_key.len() + value.len();
            state.items.insert(map_key, Versioned { value, version });
        }
        if reader.at != body.len() {
            return Err(SnapshotError::Command(CommandError::TrailingBytes(
                body.len() - reader.at,
            )));
        }
        Ok(state)
    }
}

/// Why a snapshot could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("not a Tessera KV snapshot (bad magic or format)")]
    BadHeader,
    #[error("snapshot checksum mismatch")]
    Checksum,
    #[error("snapshot body: {0}")]
    Command(#[from] CommandError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn put(ns: &str, key: &str, value: &str) -> KvCommand {
        KvCommand::Put {
            namespace: ns.into(),
            key: key.into(),
            value: value.into(),
        }
    }

    #[test]
    fn cas_succeeds_only_on_the_current_version() {
        let mut state = KvState::default();
        let create = KvCommand::Cas {
            namespace: "app".into(),
            key: b"k".to_vec(),
            expected_version: 0,
            value: b"v1".to_vec(),
        };
        let KvOutcome::Written { version } = state.apply(&create) else {
            panic!("create must succeed");
        };
        assert_eq!(
            state.apply(&create),
            KvOutcome::VersionMismatch {
                current_version: version
            }
        );
        let update = KvCommand::Cas {
            namespace: "app".into(),
            key: b"k".to_vec(),
            expected_version: version,
            value: b"v2".to_vec(),
        };
        assert!(matches!(state.apply(&update), KvOutcome::Written { version: v } if v > version));
        assert_eq!(state.get("app", b"k").unwrap().value, b"v2");
    }

    #[test]
    fn versions_never_go_backwards_across_delete_and_recreate() {
        let mut state = KvState::default();
        let KvOutcome::Written { version: first } = state.apply(&put("", "k", "a")) else {
            panic!()
        };
        state.apply(&KvCommand::Delete {
            namespace: String::new(),
            key: b"k".to_vec(),
        });
        assert!(state.get("", b"k").is_none());
        let KvOutcome::Written { version: again } = state.apply(&put("", "k", "b")) else {
            panic!()
        };
        assert!(again > first);
        let missing = KvCommand::CasDelete {
            namespace: String::new(),
            key: b"gone".to_vec(),
            expected_version: 0,
        };
        assert_eq!(
            state.apply(&missing),
            KvOutcome::VersionMismatch { current_version: 0 }
        );
    }

    #[test]
    fn namespaces_are_separate_and_scans_stay_inside_one() {
        let mut state = KvState::default();
        for (ns, key) in [("a", "1"), ("a", "2"), ("a", "3"), ("b", "1"), ("", "9")] {
            state.apply(&put(ns, key, "v"));
        }
        let (items, more) = state.scan("a", b"", b"", 10);
        assert_eq!(
            items.iter().map(|i| i.key.clone()).collect::<Vec<_>>(),
            vec![b"1".to_vec(), b"2".to_vec(), b"3".to_vec()]
        );
        assert!(!more);
        let (items, more) = state.scan("a", b"2", b"", 1);
        assert_eq!(items[0].key, b"2");
        assert!(more);
        let (items, _) = state.scan("", b"", b"", 10);
        assert_eq!(items.len(), 1);
        assert!(state.get("b", b"2").is_none());
    }

    #[test]
    fn prefix_successor_handles_trailing_ff() {
        assert_eq!(prefix_successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_successor(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_successor(b"\xff\xff"), None);
    }

    #[test]
    fn corrupted_snapshots_are_refused() {
        let mut state = KvState::default();
        state.apply(&put("ns", "k", "v"));
        let mut bytes = state.encode_snapshot();
        let last = bytes.len() - 6;
        bytes[last] ^= 1;
        assert_eq!(
            KvState::decode_snapshot(&bytes),
            Err(SnapshotError::Checksum)
        );
        assert_eq!(
            KvState::decode_snapshot(b"nope"),
            Err(SnapshotError::BadHeader)
        );
    }

    #[test]
    fn split_off_moves_the_upper_keys_of_every_namespace_and_keeps_versions_growing() {
        let mut state = KvState::default();
        for (ns, key) in [("", "a"), ("", "m"), ("x", "b"), ("x", "z"), ("", "q")] {
            state.apply(&put(ns, key, "value"));
        }
        let total = state.approximate_bytes();
        let middle = state.middle_key(b"").unwrap();
        assert_eq!(
            middle, b"q",
            "the first key with at least half the bytes below it"
        );
        let upper = state.split_off(&middle);
        let keys = |s: &KvState, ns: &str| -> Vec<Vec<u8>> {
            s.scan(ns, b"", b"", 10)
                .0
                .into_iter()
                .map(|i| i.key)
                .collect()
        };
        assert_eq!(keys(&state, ""), vec![b"a".to_vec(), b"m".to_vec()]);
        assert_eq!(keys(&state, "x"), vec![b"b".to_vec()]);
        assert_eq!(keys(&upper, ""), vec![b"q".to_vec()]);
        assert_eq!(keys(&upper, "x"), vec![b"z".to_vec()]);
        assert_eq!(state.approximate_bytes() + upper.approximate_bytes(), total);
        let mut upper = upper;
        let KvOutcome::Written { version } = upper.apply(&put("", "r", "v")) else {
            panic!()
        };
        assert!(version > 5, "the new Region continues the version counter");
        assert_eq!(
            KvState::decode_snapshot(&upper.encode_snapshot()).unwrap(),
            upper
        );
    }

    #[test]
    fn the_middle_key_is_above_the_floor_and_needs_two_keys() {
        let mut state = KvState::default();
        assert_eq!(state.middle_key(b""), None);
        state.apply(&put("", "k", "a big value"));
        assert_eq!(state.middle_key(b""), None, "one key cannot be split");
        state.apply(&put("", "l", "v"));
        assert_eq!(state.middle_key(b""), Some(b"l".to_vec()));
        assert_eq!(state.middle_key(b"l"), None, "never at the Region's start");
    }

    proptest! {
        #[test]
        fn snapshots_round_trip(ops in proptest::collection::vec(("[ab]{0,2}", "[a-d]{1,3}", proptest::option::of("[a-z]{0,5}")), 0..40)) {
            let mut state = KvState::default();
            for (ns, key, value) in ops {
                let command = match value {
                    Some(value) => put(&ns, &key, &value),
                    None => KvCommand::Delete { namespace: ns, key: key.into_bytes() },
                };
                state.apply(&command);
            }
            let decoded = KvState::decode_snapshot(&state.encode_snapshot()).unwrap();
            prop_assert_eq!(decoded, state);
        }
    }
}
