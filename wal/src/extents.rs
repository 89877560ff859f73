//! Which byte ranges of a file are preallocated but never written ("unwritten" extents),
//! asked of the file system with the `FS_IOC_FIEMAP` ioctl.
//!
//! The WAL needs this when it reopens a segment: a group commit that writes into an unwritten
//! extent converts it, and its fdatasync then waits for a journal commit (see
//! `crate::zero_fill`). A file system without FIEMAP support answers `None`, and the caller
//! assumes the worst.

use std::fs::File;
use std::ops::Range;
use std::os::fd::AsRawFd;

const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B;
const FIEMAP_FLAG_SYNC: u32 = 0x1;
const FIEMAP_EXTENT_LAST: u32 = 0x1;
const FIEMAP_EXTENT_UNWRITTEN: u32 = 0x800;
const EXTENTS_PER_CALL: usize = 32;

/// `struct fiemap_extent` of `<linux/fiemap.h>` (56 bytes).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct FiemapExtent {
    logical: u64,
    physical: u64,
    length: u64,
    reserved64: [u64; 2],
    flags: u32,
    reserved: [u32; 3],
}

/// `struct fiemap` followed by room for `EXTENTS_PER_CALL` extents.
#[repr(C)]
#[derive(Default)]
struct Fiemap {
    start: u64,
    length: u64,
    flags: u32,
    mapped_extents: u32,
    extent_count: u32,
    reserved: u32,
    extents: [FiemapExtent; EXTENTS_PER_CALL],
}

/// The unwritten extents of `file` as byte ranges, in file order; `None` if the file system
/// does not report extents. Syncs the file's dirty data first (`FIEMAP_FLAG_SYNC`), so
/// delayed allocations show as what they will be.
pub fn unwritten_ranges(file: &File) -> Option<Vec<Range<u64>>> {
    let mut ranges = Vec::new();
    let mut start = 0u64;
    loop {
        let mut map = Fiemap {
            start,
            length: u64::MAX - start,
            flags: FIEMAP_FLAG_SYNC,
            extent_count: EXTENTS_PER_CALL as u32,
            ..Fiemap::default()
        };
        // SAFETY: `map` is a `struct fiemap` with room for `extent_count` extents, as the
        // ioctl expects; the kernel writes only within it.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_FIEMAP, &mut map as *mut Fiemap) };
        if rc != 0 {
            return None;
        }
        let mapped = (map.mapped_extents as usize).min(EXTENTS_PER_CALL);
        for extent in &map.extents[..mapped] {
            if extent.flags & FIEMAP_EXTENT_UNWRITTEN != 0 {
                ranges.push(extent.logical..extent.logical + extent.length);
            }
        }
        let Some(last) = map.extents[..mapped].last() else {
            return Some(ranges);
        };
        if last.flags & FIEMAP_EXTENT_LAST != 0 {
            return Some(ranges);
        }
        start = last.logical + last.length;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn a_preallocated_range_is_unwritten_until_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        // SAFETY: plain fallocate on an open descriptor.
        let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, 1 << 20) };
        assert_eq!(rc, 0);
        let Some(before) = unwritten_ranges(&file) else {
            return; // no FIEMAP here: nothing to check
        };
        if before.is_empty() {
            return; // a file system without unwritten extents
        }
        assert_eq!(before.first().unwrap().start, 0);
        assert_eq!(before.last().unwrap().end, 1 << 20);
        file.write_all_at(&vec![0u8; 64 << 10], 0).unwrap();
        let after = unwritten_ranges(&file).unwrap();
        assert_eq!(after.first().unwrap().start, 64 << 10, "{after:?}");
        file.write_all_at(&vec![0u8; (1 << 20) - (64 << 10)], 64 << 10)
            .unwrap();
        assert_eq!(unwritten_ranges(&file).unwrap(), vec![]);
    }
}
