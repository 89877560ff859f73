//! Injected disk faults, for tests only: make the WAL's Nth write, fdatasync or preallocation
//! fail the way a failing or full disk does, so that the error paths are exercised through
//! the real code (the failed call is not made; the error is returned in its place).
//!
//! A fault is armed through [`crate::WalOptions::faults`], or in the `tessera` binary through
//! the environment variable `TESSERA_TEST_WAL_FAULT` (see `docs/operations.md`). It is
//! sticky: once the Nth operation of its kind failed, every later one fails too, as a full
//! disk stays full. Unarmed (the default), a check is one branch on `None`.
//!
//! The spec syntax is `<operation>:<n>:<errno>`, for example `fdatasync:12:EIO` or
//! `preallocate:2:ENOSPC`; `n` counts from 1 since the WAL was opened (creating the first
//! segment is a preallocation, a write and an fdatasync).

use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::error::{Result, WalError};

/// The I/O operations a fault can hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultOp {
    /// A write of a record, a segment's first record, or zeros over a torn tail.
    Write,
    /// An fdatasync of a segment.
    Fdatasync,
    /// Preallocating a new segment (or one found cut short at open).
    Preallocate,
}

impl FaultOp {
    fn name(self) -> &'static str {
        match self {
            FaultOp::Write => "write",
            FaultOp::Fdatasync => "fdatasync",
            FaultOp::Preallocate => "preallocate",
        }
    }
}

/// Which operation fails, from which occurrence on, with which errno.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultSpec {
    pub op: FaultOp,
    /// The first failing occurrence, counted from 1.
    pub nth: u64,
    pub errno: i32,
}

impl FromStr for FaultSpec {
    type Err = String;

    fn from_str(spec: &str) -> std::result::Result<FaultSpec, String> {
        let usage = || {
            format!(
                "bad WAL fault {spec:?}: expected <write|fdatasync|preallocate>:<n>:<EIO|ENOSPC>"
            )
        };
        let mut parts = spec.split(':');
        let op = match parts.next() {
            Some("write") => FaultOp::Write,
            Some("fdatasync") => FaultOp::Fdatasync,
            Some("preallocate") => FaultOp::Preallocate,
            _ => return Err(usage()),
        };
        let nth = parts
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .filter(|&n| n >= 1)
            .ok_or_else(usage)?;
        let errno = match parts.next() {
            Some("EIO") => libc::EIO,
            Some("ENOSPC") => libc::ENOSPC,
            _ => return Err(usage()),
        };
        if parts.next().is_some() {
            return Err(usage());
        }
        Ok(FaultSpec { op, nth, errno })
    }
}

/// An armed fault and how many operations of its kind it has seen; cloning shares the count.
#[derive(Clone, Debug, Default)]
pub struct FaultInjection {
    armed: Option<Arc<(FaultSpec, AtomicU64)>>,
}

impl FaultInjection {
    /// No fault (the default).
    pub fn none() -> FaultInjection {
        FaultInjection::default()
    }

    /// A fault with a fresh count.
    pub fn armed(spec: FaultSpec) -> FaultInjection {
        FaultInjection {
            armed: Some(Arc::new((spec, AtomicU64::new(0)))),
        }
    }

    /// The spec, if armed.
    pub fn spec(&self) -> Option<FaultSpec> {
        self.armed.as_ref().map(|armed| armed.0)
    }

    /// Called just before each `op` on `path`: the injected error, if this one must fail.
    pub(crate) fn check(&self, op: FaultOp, path: &Path) -> Result<()> {
        let Some(armed) = &self.armed else {
            return Ok(());
        };
        let (spec, seen) = (&armed.0, &armed.1);
        if spec.op != op || seen.fetch_add(1, Ordering::Relaxed) + 1 < spec.nth {
            return Ok(());
        }
        tracing::error!(op = op.name(), path = %path.display(), errno = spec.errno, "injected WAL fault (test only)");
        Err(WalError::io(
            op.name(),
            path,
            std::io::Error::from_raw_os_error(spec.errno),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_bad_ones_are_refused() {
        assert_eq!(
            "fdatasync:3:EIO".parse::<FaultSpec>(),
            Ok(FaultSpec {
                op: FaultOp::Fdatasync,
                nth: 3,
                errno: libc::EIO
            })
        );
        for bad in [
            "",
            "fsync:1:EIO",
            "write:0:EIO",
            "write:1:EPERM",
            "write:1:EIO:x",
        ] {
            assert!(bad.parse::<FaultSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_nth_operation_and_every_later_one_fail() {
        let faults = FaultInjection::armed("write:2:ENOSPC".parse().unwrap());
        let path = Path::new("x");
        assert!(faults.check(FaultOp::Fdatasync, path).is_ok());
        assert!(faults.check(FaultOp::Write, path).is_ok());
        let error = faults.check(FaultOp::Write, path).unwrap_err();
        assert!(
            error.to_string().contains("No space left on device"),
            "{error}"
        );
        assert!(faults.clone().check(FaultOp::Write, path).is_err());
        assert!(FaultInjection::none().check(FaultOp::Write, path).is_ok());
    }
}
