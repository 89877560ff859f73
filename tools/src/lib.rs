//! `tessera-tools`: operator tools. The `tessera-wal` binary inspects a WAL directory with
//! the WAL crate's own memory-mapped reader ([`tessera_wal::scan`]); it never opens the
//! write path, so it is safe to run beside a stopped node and cannot change a log except
//! through `repair`, which asks first and keeps a backup.

pub mod inspect;
