//! `tessera serve` refuses to start, with a clear message and a non-zero exit, when it cannot
//! or must not serve: a port in use, an unusable data directory, a data directory written by
//! another node or core count, a directory another process holds, a bad config file. A
//! refused start must also leave the data directory usable by the right node.

mod common;

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use common::{serve_expecting_exit_with, Node};
use tessera_transport::client::Mode;

/// A refused start must exit well within this.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `serve` with `args`, expects a non-zero exit, and returns the `error:` message.
fn refused(args: &[String]) -> String {
    refused_with(args, |_| {})
}

/// As [`refused`], with `prepare` changing the command first.
fn refused_with(args: &[String], prepare: impl FnOnce(&mut Command)) -> String {
    let (status, stderr) = serve_expecting_exit_with(args, EXIT_TIMEOUT, prepare);
    assert!(
        !stderr.contains("panicked"),
        "tessera {args:?} panicked; stderr:\n{stderr}"
    );
    assert!(
        !status.success(),
        "tessera {args:?} exited 0; stderr:\n{stderr}"
    );
    // The message runs from its `error:` line to the end (a TOML error spans several lines).
    let at = stderr
        .find("error:")
        .unwrap_or_else(|| panic!("no `error:` line for {args:?}; stderr:\n{stderr}"));
    let message = stderr[at..].to_string();
    let first_line = message.lines().next().unwrap_or_default();
    if let Some(os) = first_line.find("(os error") {
        let os_error = &first_line[os..first_line[os..]
            .find(')')
            .map_or(first_line.len(), |e| os + e + 1)];
        assert_eq!(
            first_line.matches(os_error).count(),
            1,
            "the cause is printed twice: {first_line}"
        );
    }
    eprintln!("{message}");
    message
}

fn assert_mentions(message: &str, words: &[&str]) {
    for word in words {
        assert!(
            message.to_lowercase().contains(&word.to_lowercase()),
            "{message:?} does not mention {word:?}"
        );
    }
}

#[test]
fn a_port_in_use_is_refused_naming_the_port() {
    let node = Node::new();
    let ports = node.spec.ports;
    // Core 1's client port, then core 0's peer port: every listener is checked.
    for port in [ports.client + 1, ports.peer] {
        let holder = TcpListener::bind(("127.0.0.1", port)).expect("bind the port first");
        let message = refused(&node.serve_args());
        assert_mentions(&message, &[&port.to_string(), "in use"]);
        drop(holder);
        node.wait_ports_free();
    }
    // Once the ports are free, the same data directory serves.
    let mut node = node;
    node.start();
    node.stop_cleanly();
}

#[test]
fn an_unusable_data_dir_is_refused_naming_the_path() {
    let node = Node::new();
    let file = node.dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let mut args = node.serve_args();
    let data_dir = file.join("data");
    let at = args.iter().position(|a| a == "--data-dir").unwrap() + 1;
    args[at] = data_dir.display().to_string();
    let message = refused(&args);
    assert_mentions(
        &message,
        &[&data_dir.display().to_string(), "not a directory"],
    );
}

#[test]
fn a_data_dir_of_another_node_or_core_count_is_refused() {
    let mut node = Node::started();
    node.client()
        .put(b"kept", b"value", Mode::Strong)
        .expect("write");
    node.stop_cleanly();

    node.spec.node_id = 2;
    let message = refused(&node.serve_args());
    assert_mentions(&message, &["node 1", "node 2", "data directory"]);

    node.spec.node_id = 1;
    node.spec.cores = 1;
    let message = refused(&node.serve_args());
    assert_mentions(&message, &["2 cores", "--cores 2"]);
    node.spec.cores = 3;
    refused(&node.serve_args());

    // The refused starts changed nothing: the right node still finds its data.
    node.spec.cores = common::CORES;
    node.start();
    let found = node.client().get(b"kept", Mode::Strong).unwrap();
    assert_eq!(found.map(|v| v.value), Some(b"value".to_vec()));
    node.stop_cleanly();
}

#[test]
fn a_data_dir_in_use_by_a_running_node_is_refused() {
    let node = Node::started();
    let mut second = Node::new();
    second.spec.data_dir = node.spec.data_dir.clone();
    let message = refused(&second.serve_args());
    assert_mentions(&message, &["in use", "LOCK"]);
    // The first node was not disturbed.
    node.client().put(b"still", b"here", Mode::Strong).unwrap();
}

/// The locked-memory limit `serve` runs under in `a_locked_memory_limit_too_low_...`.
const LOW_MEMLOCK_BYTES: u64 = 64 << 10;

/// Lowers the soft RLIMIT_MEMLOCK of the child to `LOW_MEMLOCK_BYTES` (lowering needs no
/// privilege; the hard limit stays).
fn low_memlock(command: &mut Command) {
    // SAFETY: runs in the forked child before exec; getrlimit/setrlimit are async-signal-safe
    // system calls on a stack variable, and nothing else is touched.
    unsafe {
        command.pre_exec(|| {
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            limit.rlim_cur = LOW_MEMLOCK_BYTES.min(limit.rlim_max);
            if libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[test]
fn a_locked_memory_limit_too_low_for_io_uring_is_refused_naming_the_limit() {
    let mut node = Node::new();
    let message = refused_with(&node.serve_args(), low_memlock);
    let cores = common::CORES;
    let needed = cores << 20; // the default io_memory_bytes is 1 MiB per core
    assert_mentions(
        &message,
        &[
            "locked-memory limit",
            "ulimit -l",
            &format!("is {LOW_MEMLOCK_BYTES} bytes"),
            &format!("{cores} cores need {needed} bytes"),
            "io_memory_bytes",
        ],
    );
    // Under the normal limit the same data directory serves.
    node.start();
    node.stop_cleanly();
}

#[test]
fn a_bad_config_file_is_refused_naming_the_file_and_key() {
    let node = Node::new().with_config("snapshot_interval_entriez = 5\n");
    let message = refused(&node.serve_args());
    let config = node.spec.config.clone().unwrap();
    assert_mentions(
        &message,
        &[&config.display().to_string(), "snapshot_interval_entriez"],
    );

    let node = Node::new().with_config("node_id = 0\n");
    let mut args = node.serve_args();
    let at = args.iter().position(|a| a == "--node-id").unwrap();
    args.drain(at..at + 2); // the file's node_id applies
    assert_mentions(&refused(&args), &["node_id"]);

    let mut node = Node::new();
    node.spec.config = Some(node.dir.path().join("missing.toml"));
    assert_mentions(&refused(&node.serve_args()), &["missing.toml"]);
}

/// `Cpus_allowed_list` of each `tessera-core-*` thread of process `pid`, by thread name.
fn core_thread_cpus(pid: i32) -> Vec<(String, String)> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("task dir")
        .flatten()
    {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        let name = field("Name:");
        if name.starts_with("tessera-core-") {
            threads.push((name, field("Cpus_allowed_list:")));
        }
    }
    threads.sort();
    threads
}

/// By default (`--cpus auto`) core `i` runs pinned to the `i`-th CPU the process may use;
/// `--cpus` with a CPU that is not available, or fewer CPUs than cores, is refused.
#[test]
fn executors_are_pinned_by_default_and_a_bad_cpu_list_is_refused() {
    let allowed = tessera_node::config::allowed_cpus();
    let mut node = Node::new();
    node.spec.cores = 1;
    node.spec.cpus = "auto".into();
    node.start();
    let threads = common::wait_for("the core thread to be named", EXIT_TIMEOUT, || {
        let threads = core_thread_cpus(node.pid());
        (!threads.is_empty()).then_some(threads)
    });
    // glommio may run helper threads under the executor's name; all of them are pinned.
    for (name, cpus) in &threads {
        assert_eq!(
            (name.as_str(), cpus.as_str()),
            ("tessera-core-0", allowed[0].to_string().as_str()),
            "core 0 is pinned to the first allowed CPU: {threads:?}"
        );
    }
    node.stop_cleanly();

    let mut bad = Node::new();
    bad.spec.cores = 2;
    bad.spec.cpus = format!("{}", allowed[0]);
    let message = refused(&bad.serve_args());
    assert_mentions(&message, &["cpus", "1 CPUs for 2 cores"]);
    bad.spec.cpus = "100000,100001".into();
    let message = refused(&bad.serve_args());
    assert_mentions(
        &message,
        &["cpus", "CPU 100000 is not one this process may run on"],
    );
}
