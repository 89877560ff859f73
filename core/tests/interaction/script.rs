//! The scenario file format: commands with golden output, in the manner of etcd raft's
//! data-driven tests.
//!
//! ```text
//! # Comments and blank lines between cases are kept when the file is rewritten.
//! campaign 1
//! ----
//! ok
//! ```
//!
//! A case is one command line, a `----` line, and the expected output up to the next blank
//! line. Output never contains blank lines (the renderer guarantees it), so the format needs no
//! escaping. With `TESSERA_REWRITE=1` the expected output is replaced by what the run produced;
//! otherwise any difference fails the test with a line diff.

use std::fmt::Write as _;

/// One part of a scenario file, in file order.
#[derive(Debug)]
pub enum Part {
    /// Comment or blank lines, kept verbatim.
    Verbatim(String),
    /// A command with its expected output.
    Case {
        line_number: usize,
        command: String,
        expected: String,
    },
}

/// Splits a scenario file into its parts.
///
/// # Panics
/// On a command without its `----` line, naming the line.
pub fn parse(path: &str, text: &str) -> Vec<Part> {
    let lines: Vec<&str> = text.lines().collect();
    let mut parts = Vec::new();
    let mut at = 0;
    while at < lines.len() {
        let line = lines[at];
        if line.trim().is_empty() || line.starts_with('#') {
            parts.push(Part::Verbatim(line.to_string()));
            at += 1;
            continue;
        }
        let line_number = at + 1;
        assert!(
            lines.get(at + 1) == Some(&"----"),
            "{path}:{line_number}: command {line:?} must be followed by a `----` line"
        );
        at += 2;
        let mut expected = String::new();
        while at < lines.len() && !lines[at].is_empty() {
            expected.push_str(lines[at]);
            expected.push('\n');
            at += 1;
        }
        parts.push(Part::Case {
            line_number,
            command: line.to_string(),
            expected,
        });
    }
    parts
}

/// The file text for `parts` with each case's output replaced by `actual[i]`.
pub fn render(parts: &[Part], actual: &[String]) -> String {
    let mut out = String::new();
    let mut outputs = actual.iter();
    for part in parts {
        match part {
            Part::Verbatim(line) => {
                out.push_str(line);
                out.push('\n');
            }
            Part::Case { command, .. } => {
                let output = outputs.next().expect("one output per case");
                let _ = writeln!(out, "{command}\n----");
                out.push_str(output);
            }
        }
    }
    out
}

/// A unified-style line diff of `expected` against `actual` (longest common subsequence;
/// scenario outputs are small).
pub fn diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = String::new();
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            let _ = writeln!(out, "  {}", a[i]);
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            let _ = writeln!(out, "- {}", a[i]);
            i += 1;
        } else {
            let _ = writeln!(out, "+ {}", b[j]);
            j += 1;
        }
    }
    out
}
