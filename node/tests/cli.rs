//! What the `tessera` client commands print and how they exit for answers a real node gives
//! only in rare races, shown against a scripted fake node (`tessera_node::fake_node`).

mod common;

use std::process::Command;

use tessera_node::fake_node::{Answer, FakeNode};
use tessera_transport::client::{ClientError, ClientReply};

/// Runs `tessera ARGS --addr ADDR` and returns its exit code, stdout and stderr.
fn tessera(args: &[&str], addr: &str) -> (Option<i32>, String, String) {
    let output = Command::new(common::binary())
        .args(args)
        .args(["--addr", addr])
        .output()
        .expect("run tessera");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_write_of_unknown_outcome_is_reported_as_such_with_exit_code_3() {
    let node = FakeNode::spawn(|_| {
        Answer::Reply(Err(ClientError::OutcomeUnknown {
            message: "the entry was compacted into a snapshot".into(),
        }))
    });
    for args in [
        &["put", "k", "v"][..],
        &["cas", "k", "1", "v"],
        &["cas-delete", "k", "1"],
        &["delete", "k", "--json"],
    ] {
        let (code, stdout, stderr) = tessera(args, &node.addr);
        assert_eq!(
            code,
            Some(3),
            "{args:?}: stdout {stdout:?}, stderr {stderr:?}"
        );
        assert!(stdout.is_empty(), "{args:?} printed {stdout:?}");
        assert!(
            stderr.starts_with("error: outcome unknown: ")
                && stderr.contains("may or may not have taken effect")
                && stderr.contains("the entry was compacted into a snapshot"),
            "{args:?}: {stderr}"
        );
    }
    assert_eq!(node.requests(), 4, "each write was sent exactly once");
}

#[test]
fn an_internal_error_still_exits_1_with_its_message() {
    let node = FakeNode::spawn(|_| {
        Answer::Reply(Err(ClientError::Internal {
            message: "something broke".into(),
        }))
    });
    let (code, _, stderr) = tessera(&["put", "k", "v"], &node.addr);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("internal error: something broke"),
        "{stderr}"
    );
    let node = FakeNode::spawn(|_| Answer::Reply(Ok(ClientReply::Written { version: 7 })));
    let (code, stdout, _) = tessera(&["put", "k", "v"], &node.addr);
    assert_eq!((code, stdout.trim()), (Some(0), "OK (version 7)"));
}
