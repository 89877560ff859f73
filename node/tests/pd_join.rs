//! One node hosts the placement driver and the others join it by address: the driver waits
//! for the expected number of stores, hands every store the same layout, and the cluster then
//! serves reads and writes through any node.

mod common;

use std::time::Duration;

use common::{wait_for, Node};
use tessera_node::client::{Client, ClientOptions};
use tessera_transport::client::Mode;

/// A client of `node`, if it serves yet.
fn try_client(node: &Node) -> Option<Client> {
    let options = ClientOptions {
        request_timeout: Duration::from_secs(2),
        ..ClientOptions::default()
    };
    Client::connect(&node.client_addr(0), options).ok()
}

fn node(id: u64, extra_config: &str) -> Node {
    Node::one_core(id, extra_config)
}

#[test]
fn stores_join_the_placement_driver_by_address_and_serve_together() {
    let mut pd = node(1, "replicas = 3\n");
    pd.spawn();
    let pd_addr = pd.client_addr(0);
    let join = format!("join = \"{pd_addr}\"\n");
    let mut second = node(2, &join);
    second.spawn();
    // With two of three stores, nothing is served yet: the driver is still waiting.
    assert!(
        std::net::TcpStream::connect(second.client_addr(0)).is_err(),
        "a joiner must not serve before the layout exists"
    );
    let mut third = node(3, &join);
    third.spawn();
    // Every store learns the same layout and the cluster serves through any node.
    let client = wait_for("the cluster to serve", Duration::from_secs(30), || {
        let mut client = try_client(&third)?;
        client.put(b"apple", b"red", Mode::Raw).ok()?;
        Some(client)
    });
    let (regions, stores) = client.routing();
    assert_eq!(regions.len(), 2);
    assert!(regions
        .iter()
        .all(|r| r.peers.iter().map(|p| p.get()).eq([1, 2, 3])));
    assert_eq!(stores.len(), 3);
    for reader in [&pd, &second] {
        // The other joiner learns the layout on its next ask; wait for it to serve.
        let mut client = wait_for("every store to serve", Duration::from_secs(30), || {
            try_client(reader)
        });
        let value = client
            .get(b"apple", Mode::Strong)
            .unwrap()
            .expect("written");
        assert_eq!(value.value, b"red");
    }
    // A restarted joiner starts from its saved metadata: no driver round trip needed.
    second.kill();
    second.spawn();
    let mut client = wait_for("the joiner to serve again", Duration::from_secs(30), || {
        try_client(&second)
    });
    assert_eq!(
        client.get(b"apple", Mode::Strong).unwrap().unwrap().value,
        b"red"
    );
}
