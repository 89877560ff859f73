//! Data-driven interaction tests: each `core/testdata/*.txt` file is a scenario of commands
//! with golden output, read like a protocol trace and reviewed like code.
//!
//! Run one scenario: `cargo test -p tessera-core --test interaction -- <name>`.
//! Regenerate the golden output after an intended change, then review the diff:
//! `TESSERA_REWRITE=1 cargo test -p tessera-core --test interaction`.
//!
//! Commands (node ids are numbers; `(1,2)` is a list):
//! - `add-nodes N [voters=(..)] [learners=(..)] [pre-vote=B] [check-quorum=B] [inflight=N]
//!   [max-msg-bytes=N]`: new nodes with the next ids; without `voters` they start empty.
//! - `campaign ID`: start an election now, as if the election timeout fired.
//! - `tick ID [N]`, `tick-election ID...`, `tick-heartbeat ID...`: logical time (an election
//!   timeout's or a heartbeat interval's worth of ticks for each listed node).
//! - `propose ID DATA`, `propose-conf-change ID add-learner|add-voter|remove NODE`,
//!   `read-index ID id=N`, `transfer-leader FROM TO`: client calls.
//! - `take-ready ID`: take the Ready and send its `messages`, hold the rest unpersisted;
//!   `persist ID`: persist the held Ready, then send its `persisted_messages`, apply, advance;
//!   `process-ready [ID...]`: both at once.
//! - `deliver-msgs [ID...] [drop=(..)]`: step queued messages into their receivers.
//! - `stabilize [ID...]`: process Readies and deliver messages until nothing moves (among
//!   the listed nodes; messages to others stay queued).
//! - `partition (..) (..)`, `isolate ID [in|out]`, `heal`: cut links (messages are lost).
//! - `crash ID` (lose everything not persisted), `restart ID`, `compact ID`.
//! - `raft-state`, `log ID`, `progress ID`: inspection.
//!
//! See `interaction/render.rs` for the notation of entries and messages.

#[path = "interaction/harness.rs"]
mod harness;
#[path = "interaction/render.rs"]
mod render;
#[path = "interaction/script.rs"]
mod script;

use std::path::{Path, PathBuf};

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata")
}

/// Runs one scenario file; rewrites it under `TESSERA_REWRITE=1`, else compares.
fn run_scenario(name: &str) {
    let path = testdata().join(format!("{name}.txt"));
    let display = path.display().to_string();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{display}: {e}"));
    let parts = script::parse(&display, &text);
    let mut cluster = harness::Cluster::default();
    let mut actual = Vec::new();
    let mut mismatches = String::new();
    for part in &parts {
        let script::Part::Case {
            line_number,
            command,
            expected,
        } = part
        else {
            continue;
        };
        let output = cluster.run(command);
        if &output != expected {
            mismatches.push_str(&format!(
                "{display}:{line_number}: {command}\n{}\n",
                script::diff(expected, &output)
            ));
        }
        actual.push(output);
    }
    if std::env::var("TESSERA_REWRITE").is_ok_and(|v| v == "1") {
        std::fs::write(&path, script::render(&parts, &actual))
            .unwrap_or_else(|e| panic!("{display}: {e}"));
        return;
    }
    assert!(
        mismatches.is_empty(),
        "golden output differs (- expected, + actual); \
         rerun with TESSERA_REWRITE=1 and review the diff if the change is intended:\n{mismatches}"
    );
}

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        $( #[test] fn $name() { run_scenario(stringify!($name)); } )*

        /// Every file in testdata has a test above, so none is silently skipped.
        #[test]
        fn every_scenario_file_runs() {
            let listed = [$(stringify!($name)),*];
            for entry in std::fs::read_dir(testdata()).expect("core/testdata exists") {
                let path = entry.expect("readable dir entry").path();
                if path.extension().is_some_and(|e| e == "txt") {
                    let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
                    assert!(listed.contains(&stem.as_str()), "{stem}.txt is not in scenarios!");
                }
            }
        }
    };
}

scenarios!(
    ack_after_persist,
    basic_election,
    check_quorum_step_down,
    conf_change_needs_commit_in_term,
    leadership_transfer,
    learner_add_and_promote,
    log_conflict_fast_backtracking,
    no_campaign_with_unapplied_conf_change,
    prevote_check_quorum_asymmetric,
    read_index,
    remove_leader,
    snapshot_after_compaction,
    vote_after_persist,
);
