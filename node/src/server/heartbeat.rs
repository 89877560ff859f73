//! The store's side of the placement driver: one thread per node that, on intervals,
//! 1. asks each of its own cores for their Regions' status (size, leader, epoch, peers) over
//!    the client port, and sends them to the driver as one `StoreHeartbeat`
//!    (`pd_heartbeat_interval_ms`);
//! 2. for each Region this node leads whose data passed `split_size_bytes`, asks the driver
//!    for the new Region's id (`AskSplit`) and tells the owning core to split it
//!    (`Split` with an empty key: the leader picks the middle of its data), at most once per
//!    Region epoch every `SPLIT_RETRY` (`split_check_interval_ms`).
//!
//! It uses the same client protocol as any tool, so the cores need no extra channel, and it
//! never blocks a core: it is an ordinary thread doing blocking round trips.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_core::{NodeId, RegionId};
use tessera_transport::client::{
    ClientOp, ClientReply, ClientRequest, Mode, RegionReport, RegionStatus,
};

use crate::client::request_once;

/// How long one round trip may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The worker checks for shutdown this often.
const POLL: Duration = Duration::from_millis(20);
/// A split asked for and not seen applied is asked again after this long.
pub const SPLIT_RETRY: Duration = Duration::from_secs(5);

/// What the worker needs to know.
#[derive(Clone, Debug)]
pub struct HeartbeatConfig {
    pub node: NodeId,
    /// This node's client address per core.
    pub own_addrs: Vec<String>,
    /// The placement driver's client address.
    pub pd_addr: String,
    pub heartbeat_interval: Duration,
    pub split_check_interval: Duration,
    /// 0: no automatic splits.
    pub split_size_bytes: u64,
}

/// Remembers the splits asked for, so one Region epoch is split once (a repeat would be a
/// no-op anyway, by the epoch check at apply, but would burn a Region id).
#[derive(Debug, Default)]
pub struct SplitTracker {
    asked: HashMap<RegionId, (u64, Instant)>,
}

impl SplitTracker {
    /// The Regions to split now: led by `node`, at least `threshold` bytes, and not asked for
    /// at this epoch within `SPLIT_RETRY`. Marks them asked.
    pub fn due<'a>(
        &mut self,
        statuses: &'a [RegionStatus],
        node: NodeId,
        threshold: u64,
        now: Instant,
    ) -> Vec<&'a RegionStatus> {
        if threshold == 0 {
            return Vec::new();
        }
        let mut due = Vec::new();
        for status in statuses {
            let Some(region) = &status.region else {
                continue;
            };
            if status.leader != Some(node) || status.approximate_bytes < threshold {
                continue;
            }
            let version = region.epoch.version;
            let recent = self.asked.get(&status.region_id).is_some_and(|(v, at)| {
                *v == version && now.saturating_duration_since(*at) < SPLIT_RETRY
            });
            if !recent {
                self.asked.insert(status.region_id, (version, now));
                due.push(status);
            }
        }
        due
    }
}

/// Starts the worker; it stops when `shutdown` is set.
pub fn spawn(config: HeartbeatConfig, shutdown: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("tessera-pd-heartbeat".into())
        .spawn(move || run(&config, &shutdown))
        .expect("spawn the heartbeat thread")
}

fn run(config: &HeartbeatConfig, shutdown: &AtomicBool) {
    let mut tracker = SplitTracker::default();
    let mut next_heartbeat = Instant::now();
    let mut next_split_check = Instant::now() + config.split_check_interval;
    let mut request_id = 0u64;
    while !shutdown.load(Ordering::Relaxed) {
        let now = Instant::now();
        let heartbeat_due = now >= next_heartbeat;
        let split_due = now >= next_split_check && config.split_size_bytes > 0;
        if !heartbeat_due && !split_due {
            std::thread::sleep(POLL);
            continue;
        }
        let statuses = own_statuses(config, &mut request_id);
        if heartbeat_due {
            next_heartbeat = now + config.heartbeat_interval;
            send_heartbeat(config, &statuses, &mut request_id);
        }
        if split_due {
            next_split_check = now + config.split_check_interval;
            for status in tracker.due(&statuses, config.node, config.split_size_bytes, now) {
                split(config, status, &mut request_id);
            }
        }
    }
}

fn request(
    request_id: &mut u64,
    region: RegionId,
    status: Option<&RegionStatus>,
    op: ClientOp,
) -> ClientRequest {
    *request_id += 1;
    let epoch = status
        .and_then(|s| s.region.as_ref())
        .map(|r| r.epoch)
        .unwrap_or_default();
    ClientRequest {
        request_id: *request_id,
        namespace: String::new(),
        mode: Mode::Raw,
        region_id: region,
        epoch,
        op,
    }
}

/// Every Region replica on this node, as its core sees it (cores that do not answer are
/// left out of this round).
fn own_statuses(config: &HeartbeatConfig, request_id: &mut u64) -> Vec<RegionStatus> {
    let mut statuses = Vec::new();
    for addr in &config.own_addrs {
        let status = request(request_id, RegionId(0), None, ClientOp::Status);
        match request_once(addr, &status, REQUEST_TIMEOUT) {
            Ok(Ok(ClientReply::Status(node))) => statuses.extend(node.regions),
            other => tracing::debug!(%addr, ?other, "a core did not report its status"),
        }
    }
    statuses
}

fn send_heartbeat(config: &HeartbeatConfig, statuses: &[RegionStatus], request_id: &mut u64) {
    let regions: Vec<RegionReport> = statuses
        .iter()
        .filter_map(|s| {
            Some(RegionReport {
                region: s.region.clone()?,
                approximate_bytes: s.approximate_bytes,
                keys: s.keys,
            })
        })
        .collect();
    let op = ClientOp::StoreHeartbeat {
        node_id: config.node,
        regions,
    };
    let heartbeat = request(request_id, RegionId(0), None, op);
    match request_once(&config.pd_addr, &heartbeat, REQUEST_TIMEOUT) {
        Ok(Ok(ClientReply::Ack)) => {}
        other => tracing::debug!(pd = %config.pd_addr, ?other, "heartbeat not recorded"),
    }
}

/// Asks the driver for the new Region's id, then the owning core to split.
fn split(config: &HeartbeatConfig, status: &RegionStatus, request_id: &mut u64) {
    let region = status.region_id;
    let ask = request(request_id, region, Some(status), ClientOp::AskSplit);
    let new_region_id = match request_once(&config.pd_addr, &ask, REQUEST_TIMEOUT) {
        Ok(Ok(ClientReply::SplitIds { new_region_id })) => new_region_id,
        other => {
            tracing::info!(
                region = region.0,
                ?other,
                "the placement driver gave no id for a split"
            );
            return;
        }
    };
    let Some(addr) = config.own_addrs.get(status.core.0 as usize) else {
        return;
    };
    let op = ClientOp::Split {
        key: Vec::new(),
        new_region_id,
    };
    let order = request(request_id, region, Some(status), op);
    match request_once(addr, &order, REQUEST_TIMEOUT) {
        Ok(Ok(_)) => tracing::info!(
            region = region.0,
            new_region = new_region_id.0,
            bytes = status.approximate_bytes,
            "split the region"
        ),
        other => tracing::info!(region = region.0, ?other, "split not done (it is retried)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_core::{LogIndex, Term};
    use tessera_transport::client::{RegionDescriptor, RegionEpoch};
    use tessera_transport::CoreId;

    fn status(id: u64, leader: u64, bytes: u64, version: u64) -> RegionStatus {
        RegionStatus {
            region_id: RegionId(id),
            core: CoreId(0),
            leader: Some(NodeId(leader)),
            term: Term(2),
            commit_index: LogIndex(9),
            applied_index: LogIndex(9),
            region: Some(RegionDescriptor {
                region_id: RegionId(id),
                start_key: Vec::new(),
                end_key: Vec::new(),
                epoch: RegionEpoch {
                    version,
                    conf_version: 1,
                },
                peers: vec![NodeId(1)],
                leader: Some(NodeId(leader)),
            }),
            approximate_bytes: bytes,
            keys: 1,
        }
    }

    #[test]
    fn only_big_regions_this_node_leads_are_split_once_per_epoch() {
        let mut tracker = SplitTracker::default();
        let now = Instant::now();
        let statuses = [
            status(1, 1, 2000, 1),
            status(2, 1, 10, 1),
            status(3, 2, 5000, 1),
        ];
        let due: Vec<u64> = tracker
            .due(&statuses, NodeId(1), 1000, now)
            .iter()
            .map(|s| s.region_id.0)
            .collect();
        assert_eq!(due, vec![1]);
        assert!(
            tracker.due(&statuses, NodeId(1), 1000, now).is_empty(),
            "asked already"
        );
        let later = now + SPLIT_RETRY;
        assert_eq!(
            tracker.due(&statuses, NodeId(1), 1000, later).len(),
            1,
            "retried"
        );
        let split = [status(1, 1, 2000, 2)];
        assert_eq!(
            tracker.due(&split, NodeId(1), 1000, later).len(),
            1,
            "a new epoch"
        );
        assert!(
            tracker.due(&statuses, NodeId(1), 0, later).is_empty(),
            "disabled"
        );
    }
}
