//! Fuzz target: segment files made of arbitrary bytes, replayed as `Wal::open` replays them
//! (`tessera_wal::recovery::replay`). See `tessera_fuzz::wal_recovery` for the input format.
#![no_main]

use std::path::PathBuf;

/// Scratch space in memory when the machine has it: one directory, emptied per input.
fn scratch_root() -> PathBuf {
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() {
        shm
    } else {
        std::env::temp_dir()
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let dir = tempfile::Builder::new()
        .prefix("tessera-fuzz-wal-")
        .tempdir_in(scratch_root())
        .expect("scratch directory");
    tessera_fuzz::wal_recovery(data, dir.path());
});
