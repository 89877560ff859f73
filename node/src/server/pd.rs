//! The embedded placement driver (PD), as far as it goes today: it records the stores that
//! join and hands out the first layout.
//!
//! Bootstrapping a cluster of several nodes by address:
//! 1. The PD node starts with `replicas = N` and no `join`. Before serving, it listens on its
//!    first client port with a small blocking server that answers only `Join`.
//! 2. Every other node starts with `join = "PD_HOST:PD_CLIENT_PORT"` and sends `Join` with its
//!    addresses until the answer says `ready`.
//! 3. When N stores (the PD's own included) have joined, the PD creates the layout (Regions
//!    replicated on those stores) and a cluster id, writes its metadata durably, answers
//!    `ready` with the layout, and starts serving. Late `Join`s from those stores are answered
//!    by the running node from its metadata, so a joiner that crashed before saving its
//!    metadata can ask again.
//!
//! A store that joins after the bootstrap is added by the running driver (`pd_host.rs`) and
//! starts with no Regions; moves and balancing put Regions on it (`store/membership.rs`,
//! `balance.rs`).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_core::NodeId;
use tessera_transport::client::{
    ClientError, ClientOp, ClientReply, ClientRequest, Mode, RegionEpoch, StoreDescriptor,
};
use tessera_transport::{decode_client_request, ClusterId, DecodeLimits, FrameDecoder, FrameType};

use crate::config::NodeConfig;
use crate::meta::{DataMeta, RegionMeta, StoreMeta};
use crate::region::Region;

use super::bootstrap::{initial_layout, new_cluster_id};
use super::clients::{encode_response, to_wire_epoch};

/// How often a joiner asks again, and how often it says it is still waiting.
const JOIN_RETRY: Duration = Duration::from_millis(200);
const JOIN_PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// The descriptor of a store, with one client and one peer address per core.
pub fn store_descriptor(store: &StoreMeta) -> StoreDescriptor {
    let addrs = |port: u16| {
        (0..store.cores)
            .map(|c| format!("{}:{}", store.host, port as usize + c))
            .collect()
    };
    StoreDescriptor {
        node_id: NodeId(store.node_id),
        client_addrs: addrs(store.client_port),
        cores: store.cores as u32,
        peer_addrs: addrs(store.peer_port),
    }
}

/// The `StoreMeta` a descriptor describes.
///
/// # Errors
/// A sentence when the addresses are not `host:port` with consecutive ports per core.
pub fn store_meta(store: &StoreDescriptor) -> Result<StoreMeta, String> {
    let split = |addr: &str| -> Result<(String, u16), String> {
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| format!("bad address {addr:?}"))?;
        Ok((
            host.to_string(),
            port.parse().map_err(|_| format!("bad port in {addr:?}"))?,
        ))
    };
    let first = |list: &[String], what: &str| {
        list.first()
            .ok_or_else(|| format!("store {} has no {what} address", store.node_id.get()))
            .and_then(|a| split(a))
    };
    let (host, client_port) = first(&store.client_addrs, "client")?;
    let (_, peer_port) = first(&store.peer_addrs, "peer")?;
    if store.cores == 0 || store.node_id.get() == 0 {
        return Err("store with node id 0 or no cores".into());
    }
    Ok(StoreMeta {
        node_id: store.node_id.get(),
        host,
        client_port,
        peer_port,
        cores: store.cores as usize,
    })
}

/// The `Joined` answer for a bootstrapped cluster.
pub fn joined_reply(meta: &DataMeta, regions: &[Region]) -> ClientReply {
    ClientReply::Joined {
        ready: true,
        cluster_id: ClusterId(meta.cluster_id),
        regions: regions
            .iter()
            .map(|r| tessera_transport::client::RegionDescriptor {
                region_id: r.id,
                start_key: r.start_key.clone(),
                end_key: r.end_key.clone(),
                epoch: to_wire_epoch(r.epoch),
                peers: r.peers.clone(),
                leader: None,
            })
            .collect(),
        stores: meta.stores.iter().map(store_descriptor).collect(),
    }
}

/// This node as a store.
fn own_store(config: &NodeConfig) -> StoreMeta {
    StoreMeta {
        node_id: config.node_id,
        host: config.listen_host.to_string(),
        client_port: config.client_port,
        peer_port: config.peer_port,
        cores: config.core_count(),
    }
}

/// Step 1 and 3 of the module docs: waits for `config.replicas` stores, then creates and
/// stores the cluster's metadata. Returns `None` if shutdown was requested first.
///
/// # Errors
/// When the port cannot be bound or the metadata cannot be written.
pub fn bootstrap(
    config: &NodeConfig,
    shutdown: &Arc<AtomicBool>,
) -> Result<Option<DataMeta>, String> {
    let addr = config.client_addr(0);
    let listener = TcpListener::bind(addr)
        .map_err(|e| format!("placement driver: bind {addr}: {e} (is another node running?)"))?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let mut stores = vec![own_store(config)];
    tracing::info!(%addr, expected = config.replicas, "placement driver waiting for stores to join");
    while !shutdown.load(Ordering::Relaxed) {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            Err(e) => return Err(format!("placement driver: accept: {e}")),
        };
        if let Some(meta) = serve_join(stream, config, &mut stores)? {
            return Ok(Some(meta));
        }
    }
    Ok(None)
}

/// Answers the requests on one connection; returns the metadata once the layout is made.
fn serve_join(
    mut stream: std::net::TcpStream,
    config: &NodeConfig,
    stores: &mut Vec<StoreMeta>,
) -> Result<Option<DataMeta>, String> {
    stream.set_nonblocking(false).ok();
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok();
    let limits = DecodeLimits::default();
    let mut decoder = FrameDecoder::new(limits.frame_bytes_max);
    let mut buffer = [0u8; 16 * 1024];
    loop {
        let frame = match decoder.next_frame() {
            Ok(Some(frame)) => frame,
            Ok(None) => match stream.read(&mut buffer) {
                Ok(0) | Err(_) => return Ok(None),
                Ok(read) => {
                    if decoder.push(&buffer[..read]).is_err() {
                        return Ok(None);
                    }
                    continue;
                }
            },
            Err(_) => return Ok(None),
        };
        let request = match (
            frame.frame_type,
            decode_client_request(&frame.payload, &limits),
        ) {
            (FrameType::ClientRequest, Ok(request)) => request,
            _ => return Ok(None), // not a client: close
        };
        let (answer, meta) = answer_join(&request, config, stores)?;
        let _ = stream.write_all(&encode_response(request.request_id, answer));
        if meta.is_some() {
            return Ok(meta);
        }
    }
}

fn answer_join(
    request: &ClientRequest,
    config: &NodeConfig,
    stores: &mut Vec<StoreMeta>,
) -> Result<(Result<ClientReply, ClientError>, Option<DataMeta>), String> {
    let ClientOp::Join { store } = &request.op else {
        return Ok((Err(ClientError::ServerBusy), None)); // still bootstrapping
    };
    let joiner = match store_meta(store) {
        Ok(joiner) => joiner,
        Err(message) => return Ok((Err(ClientError::InvalidRequest { message }), None)),
    };
    match stores.iter().find(|s| s.node_id == joiner.node_id) {
        Some(known) if *known != joiner => {
            let message = format!(
                "node id {} already joined with other addresses",
                joiner.node_id
            );
            return Ok((Err(ClientError::InvalidRequest { message }), None));
        }
        Some(_) => {}
        None => {
            tracing::info!(
                node = joiner.node_id,
                joined = stores.len() + 1,
                expected = config.replicas,
                "store joined"
            );
            stores.push(joiner);
        }
    }
    if stores.len() < config.replicas {
        let waiting = ClientReply::Joined {
            ready: false,
            cluster_id: ClusterId(0),
            regions: Vec::new(),
            stores: stores.iter().map(store_descriptor).collect(),
        };
        return Ok((Ok(waiting), None));
    }
    let node_ids: Vec<NodeId> = stores.iter().map(|s| NodeId(s.node_id)).collect();
    let regions = initial_layout(&config.initial_split_keys, &node_ids, config.replicas);
    let meta = DataMeta {
        cluster_id: new_cluster_id(),
        node_id: config.node_id,
        cores: config.core_count(),
        stores: stores.clone(),
        regions: regions.iter().map(RegionMeta::from_region).collect(),
        pd_node: config.node_id,
    };
    meta.store(&config.data_dir).map_err(|e| e.to_string())?;
    tracing::info!(
        cluster_id = meta.cluster_id,
        stores = stores.len(),
        "placement driver bootstrapped the cluster"
    );
    Ok((Ok(joined_reply(&meta, &regions)), Some(meta)))
}

/// Step 2 of the module docs: asks the PD at `config.join` until it answers with the layout,
/// then stores this node's metadata. Returns `None` if shutdown was requested first.
///
/// # Errors
/// When the PD refuses this node, or the metadata cannot be written.
pub fn join(config: &NodeConfig, shutdown: &Arc<AtomicBool>) -> Result<Option<DataMeta>, String> {
    let me = own_store(config);
    let mut last_progress = Instant::now();
    let mut request_id = 1;
    while !shutdown.load(Ordering::Relaxed) {
        request_id += 1;
        let request = ClientRequest {
            request_id,
            namespace: String::new(),
            mode: Mode::Raw,
            region_id: tessera_core::RegionId(0),
            epoch: RegionEpoch::default(),
            op: ClientOp::Join {
                store: store_descriptor(&me),
            },
        };
        let outcome = crate::client::request_once(&config.join, &request, Duration::from_secs(2));
        match outcome {
            Ok(Ok(ClientReply::Joined {
                ready: true,
                cluster_id,
                regions,
                stores,
            })) => return save_joined(config, cluster_id, &regions, &stores).map(Some),
            Ok(Err(ClientError::InvalidRequest { message })) => {
                return Err(format!(
                    "the placement driver at {} refused this node: {message}",
                    config.join
                ))
            }
            Ok(Ok(ClientReply::Joined { stores, .. }))
                if last_progress.elapsed() > JOIN_PROGRESS_EVERY =>
            {
                tracing::info!(joined = stores.len(), pd = %config.join, "waiting for the placement driver to bootstrap the cluster");
                last_progress = Instant::now();
            }
            Err(error) if last_progress.elapsed() > JOIN_PROGRESS_EVERY => {
                tracing::info!(%error, pd = %config.join, "waiting for the placement driver");
                last_progress = Instant::now();
            }
            _ => {}
        }
        std::thread::sleep(JOIN_RETRY);
    }
    Ok(None)
}

fn save_joined(
    config: &NodeConfig,
    cluster_id: ClusterId,
    regions: &[tessera_transport::client::RegionDescriptor],
    stores: &[StoreDescriptor],
) -> Result<DataMeta, String> {
    let stores = stores
        .iter()
        .map(store_meta)
        .collect::<Result<Vec<_>, _>>()?;
    if stores.iter().any(|s| s.cores != config.core_count()) {
        return Err(format!(
            "every node of a cluster must run the same number of cores (this node: {})",
            config.core_count()
        ));
    }
    let regions: Vec<RegionMeta> = regions
        .iter()
        .map(|r| {
            RegionMeta::from_region(&Region {
                id: r.region_id,
                start_key: r.start_key.clone(),
                end_key: r.end_key.clone(),
                epoch: crate::server::clients::from_wire_epoch(r.epoch),
                peers: r.peers.clone(),
            })
        })
        .collect();
    // The placement driver is the store whose first client address we joined through.
    let pd_node = stores
        .iter()
        .find(|s| format!("{}:{}", s.host, s.client_port) == config.join)
        .map_or(0, |s| s.node_id);
    let meta = DataMeta {
        cluster_id: cluster_id.0,
        node_id: config.node_id,
        cores: config.core_count(),
        stores,
        regions,
        pd_node,
    };
    meta.regions(&config.data_dir).map_err(|e| e.to_string())?;
    meta.store(&config.data_dir).map_err(|e| e.to_string())?;
    tracing::info!(cluster_id = meta.cluster_id, "joined the cluster");
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_descriptors_round_trip_through_metadata() {
        let store = StoreMeta {
            node_id: 3,
            host: "127.0.0.1".into(),
            client_port: 7420,
            peer_port: 7520,
            cores: 2,
        };
        let descriptor = store_descriptor(&store);
        assert_eq!(
            descriptor.client_addrs,
            vec!["127.0.0.1:7420", "127.0.0.1:7421"]
        );
        assert_eq!(
            descriptor.peer_addrs,
            vec!["127.0.0.1:7520", "127.0.0.1:7521"]
        );
        assert_eq!(store_meta(&descriptor).unwrap(), store);
        let mut broken = descriptor;
        broken.peer_addrs.clear();
        assert!(store_meta(&broken).is_err());
    }

    #[test]
    fn the_driver_waits_for_enough_stores_and_refuses_a_conflicting_id() {
        let dir = tempfile::tempdir().unwrap();
        let config = NodeConfig {
            data_dir: dir.path().to_path_buf(),
            replicas: 3,
            cores: 1,
            ..NodeConfig::default()
        };
        let mut stores = vec![own_store(&config)];
        let join = |id: u64, port: u16| ClientRequest {
            request_id: id,
            namespace: String::new(),
            mode: Mode::Raw,
            region_id: tessera_core::RegionId(0),
            epoch: RegionEpoch::default(),
            op: ClientOp::Join {
                store: store_descriptor(&StoreMeta {
                    node_id: id,
                    host: "127.0.0.1".into(),
                    client_port: port,
                    peer_port: port + 100,
                    cores: 1,
                }),
            },
        };
        let (answer, meta) = answer_join(&join(2, 7410), &config, &mut stores).unwrap();
        assert!(matches!(answer, Ok(ClientReply::Joined { ready: false, .. })) && meta.is_none());
        let (answer, _) = answer_join(&join(2, 7999), &config, &mut stores).unwrap();
        assert!(matches!(answer, Err(ClientError::InvalidRequest { .. })));
        let (answer, meta) = answer_join(&join(3, 7420), &config, &mut stores).unwrap();
        assert!(matches!(
            answer,
            Ok(ClientReply::Joined { ready: true, .. })
        ));
        let meta = meta.expect("layout made");
        assert_eq!(meta.stores.len(), 3);
        assert!(meta.regions.iter().all(|r| r.peers == vec![1, 2, 3]));
        assert_eq!(DataMeta::load(dir.path()).unwrap(), Some(meta));
    }
}
