//! The core must stay pure: no crate that does I/O, reads a clock, spawns threads or runs an
//! executor may enter its dependency tree. This test reads `cargo tree` and fails on any
//! crate outside the allow-list.

use std::collections::BTreeSet;
use std::process::Command;

/// Crates the core may pull in (logging facade and error derive, and their own deps).
const ALLOWED: &[&str] = &[
    "tessera-core",
    "tracing",
    "tracing-core",
    "tracing-attributes",
    "pin-project-lite",
    "once_cell",
    "log",
    "thiserror",
    "thiserror-impl",
    "proc-macro2",
    "quote",
    "syn",
    "unicode-ident",
];

#[test]
fn core_depends_on_nothing_that_does_io() {
    let output = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "-p",
            "tessera-core",
            "-e",
            "normal,build",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let crates: BTreeSet<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_string)
        .collect();
    assert!(
        crates.contains("tessera-core"),
        "unexpected cargo tree output: {crates:?}"
    );
    let extra: Vec<&String> = crates
        .iter()
        .filter(|name| !ALLOWED.contains(&name.as_str()))
        .collect();
    assert!(
        extra.is_empty(),
        "tessera-core must stay pure, but depends on {extra:?}"
    );
}
