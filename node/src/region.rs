//! Regions: contiguous key ranges, each one Raft group, with an epoch that tells clients when
//! their routing is stale.
//!
//! Invariants of a `Region`:
//! 1. `start_key < end_key`, where an empty `end_key` means "to the end of the key space".
//! 2. `peers` is sorted, without duplicates, and never contains `NodeId(0)`.
//! 3. In a layout, ranges do not overlap (checked by `validate_layout`).

use std::fmt;

use tessera_core::{NodeId, RegionId};

/// Bumped by split/merge (`version`) and by membership changes (`conf_version`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RegionEpoch {
    pub version: u64,
    pub conf_version: u64,
}

impl RegionEpoch {
    /// True if a request that saw `seen` is out of date for this epoch.
    pub fn is_stale(&self, seen: RegionEpoch) -> bool {
        seen.version < self.version || seen.conf_version < self.conf_version
    }
}

/// One Region's metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    pub id: RegionId,
    pub start_key: Vec<u8>,
    /// Empty: unbounded.
    pub end_key: Vec<u8>,
    pub epoch: RegionEpoch,
    pub peers: Vec<NodeId>,
}

impl Region {
    /// True if `key` falls in `[start_key, end_key)`.
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start_key.as_slice()
            && (self.end_key.is_empty() || key < self.end_key.as_slice())
    }

    /// True if the ranges of `self` and `other` share a key.
    pub fn overlaps(&self, other: &Region) -> bool {
        let self_before_other = !self.end_key.is_empty() && self.end_key <= other.start_key;
        let other_before_self = !other.end_key.is_empty() && other.end_key <= self.start_key;
        !(self_before_other || other_before_self)
    }

    /// Clamps `[start, end)` (empty end: unbounded) to this Region's range.
    pub fn clamp<'a>(&'a self, start: &'a [u8], end: &'a [u8]) -> (&'a [u8], &'a [u8]) {
        let start = start.max(self.start_key.as_slice());
        let end = match (end.is_empty(), self.end_key.is_empty()) {
            (true, _) => self.end_key.as_slice(),
            (false, true) => end,
            (false, false) => end.min(self.end_key.as_slice()),
        };
        (start, end)
    }

    /// Checks invariants 1 and 2.
    ///
    /// # Errors
    /// A sentence naming the Region and what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.id.0 == 0 {
            return Err("region id 0 is reserved".into());
        }
        if !self.end_key.is_empty() && self.start_key >= self.end_key {
            return Err(format!("{self}: start key is not below end key"));
        }
        if self.peers.is_empty() || self.peers.contains(&NodeId(0)) {
            return Err(format!(
                "{self}: needs at least one peer, and node id 0 is reserved"
            ));
        }
        if self.peers.windows(2).any(|w| w[0] >= w[1]) {
            return Err(format!("{self}: peers must be sorted and distinct"));
        }
        Ok(())
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let end = if self.end_key.is_empty() {
            "+inf".to_string()
        } else {
            format!("{:?}", String::from_utf8_lossy(&self.end_key))
        };
        write!(
            f,
            "region {} [{:?}, {end})",
            self.id.0,
            String::from_utf8_lossy(&self.start_key)
        )
    }
}

/// Checks every Region and that no two overlap (invariant 3).
///
/// # Errors
/// A sentence naming the first offending Region(s).
pub fn validate_layout(regions: &[Region]) -> Result<(), String> {
    for region in regions {
        region.validate()?;
    }
    let mut sorted: Vec<&Region> = regions.iter().collect();
    sorted.sort_by(|a, b| a.start_key.cmp(&b.start_key));
    for pair in sorted.windows(2) {
        if pair[0].overlaps(pair[1]) {
            return Err(format!("{} overlaps {}", pair[0], pair[1]));
        }
    }
    let mut ids: Vec<RegionId> = regions.iter().map(|r| r.id).collect();
    ids.sort_unstable();
    if let Some(pair) = ids.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!("region id {} is used twice", pair[0].0));
    }
    Ok(())
}

/// Takes `regions` into `known` where they are not older than what it holds (by epoch).
pub fn keep_newest(known: &mut std::collections::BTreeMap<RegionId, Region>, regions: Vec<Region>) {
    for region in regions {
        if known
            .get(&region.id)
            .is_none_or(|k| k.epoch <= region.epoch)
        {
            known.insert(region.id, region);
        }
    }
}

/// The core of a node that owns a Region: a pure function of the Region id and the node's
/// core count, so any sender can address the owning core directly.
pub fn owning_core(region: RegionId, cores: usize) -> usize {
    assert!(cores > 0, "a node has at least one core");
    (region.0 % cores as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(id: u64, start: &str, end: &str) -> Region {
        Region {
            id: RegionId(id),
            start_key: start.as_bytes().to_vec(),
            end_key: end.as_bytes().to_vec(),
            epoch: RegionEpoch::default(),
            peers: vec![NodeId(1)],
        }
    }

    #[test]
    fn ranges_are_half_open_and_empty_end_is_unbounded() {
        let low = region(1, "", "m");
        let high = region(2, "m", "");
        assert!(low.contains(b"") && low.contains(b"lzzz") && !low.contains(b"m"));
        assert!(high.contains(b"m") && high.contains(b"\xff\xff"));
        assert!(!low.overlaps(&high));
        assert!(validate_layout(&[low, high]).is_ok());
    }

    #[test]
    fn overlapping_layouts_are_refused_with_the_culprits_named() {
        let error = validate_layout(&[region(1, "", "n"), region(2, "m", "")]).unwrap_err();
        assert!(
            error.contains("region 1") && error.contains("region 2"),
            "{error}"
        );
        let error = validate_layout(&[region(1, "a", "b"), region(1, "c", "d")]).unwrap_err();
        assert!(error.contains("used twice"), "{error}");
        assert!(validate_layout(&[region(3, "z", "a")]).is_err());
    }

    #[test]
    fn clamp_keeps_a_scan_inside_the_region() {
        let r = region(1, "c", "m");
        assert_eq!(r.clamp(b"a", b""), (&b"c"[..], &b"m"[..]));
        assert_eq!(r.clamp(b"d", b"e"), (&b"d"[..], &b"e"[..]));
        let open = region(2, "m", "");
        assert_eq!(open.clamp(b"a", b""), (&b"m"[..], &b""[..]));
    }

    #[test]
    fn stale_epochs_are_detected_on_either_counter() {
        let current = RegionEpoch {
            version: 2,
            conf_version: 3,
        };
        assert!(current.is_stale(RegionEpoch {
            version: 1,
            conf_version: 3
        }));
        assert!(current.is_stale(RegionEpoch {
            version: 2,
            conf_version: 2
        }));
        assert!(!current.is_stale(current));
    }
}
