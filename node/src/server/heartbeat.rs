//! The store's side of the placement driver: one thread per node that, on intervals,
//! 1. asks each of its own cores for their Regions' status (size, leader, epoch, peers) over
//!    the client port, and sends them to the driver as one `StoreHeartbeat`
//!    (`pd_heartbeat_interval_ms`);
//! 2. for each Region this node leads whose data passed `split_size_bytes`, asks the driver
//!    for the new Region's id (`AskSplit`) and tells the owning core to split it
//!    (`Split` with an empty key: the leader picks the middle of its data), at most once per
//!    Region epoch every `SPLIT_RETRY` (`split_check_interval_ms`);
//! 3. acts on the driver's answer to the heartbeat: for each move in progress of a Region
//!    this node leads, asks the owning core for the move's next step (`MoveStep`, one Raft
//!    conf change at a time, see `store::membership`); removes the learners of the Regions it
//!    leads that no move in progress concerns (left by a move cancelled while its leader was
//!    adding the learner: the step `MoveStep { from: learner, to: this node }` removes it);
//!    destroys the replicas the driver
//!    reports removed (`DestroyReplica`); and tells every core, and `meta.toml`, of stores
//!    that joined the cluster (`LearnStores`).
//!
//! It uses the same client protocol as any tool, so the cores need no extra channel, and it
//! never blocks a core: it is an ordinary thread doing blocking round trips.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_core::{NodeId, RegionId};
use tessera_transport::client::{
    ClientOp, ClientReply, ClientRequest, Mode, MoveOrder, RegionDescriptor, RegionReport,
    RegionStatus, StoreDescriptor,
};

use crate::client::request_once;

/// How long one round trip may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The worker checks for shutdown this often.
const POLL: Duration = Duration::from_millis(20);
/// While this node leads a Region with a move in progress, or holds a replica the driver
/// reports removed, the next heartbeat comes after at most this long, so a move's steps do
/// not wait a whole `pd_heartbeat_interval_ms` each (30 s by default).
const FOLLOW_UP: Duration = Duration::from_millis(500);
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
    /// The stores this node knows at startup (others are learned from the driver).
    pub known_stores: Vec<u64>,
    /// Where `meta.toml` is, to record the stores learned.
    pub data_dir: PathBuf,
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
    let mut known_stores: BTreeSet<u64> = config.known_stores.iter().copied().collect();
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
            if let Some(answer) = send_heartbeat(config, &statuses, &mut request_id) {
                let pending = on_answer(
                    config,
                    &statuses,
                    answer,
                    &mut known_stores,
                    &mut request_id,
                );
                if pending {
                    next_heartbeat = next_heartbeat.min(now + FOLLOW_UP);
                }
            }
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

/// The driver's answer to a heartbeat.
struct Answer {
    moves: Vec<MoveOrder>,
    stale: Vec<RegionDescriptor>,
    stores: Vec<StoreDescriptor>,
}

fn send_heartbeat(
    config: &HeartbeatConfig,
    statuses: &[RegionStatus],
    request_id: &mut u64,
) -> Option<Answer> {
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
        Ok(Ok(ClientReply::Heartbeat {
            moves,
            stale,
            stores,
        })) => Some(Answer {
            moves,
            stale,
            stores,
        }),
        other => {
            tracing::debug!(pd = %config.pd_addr, ?other, "heartbeat not recorded");
            None
        }
    }
}

/// Step 3 of the module docs. True when work is left for the next heartbeat: a move of a
/// Region led here, or a removed replica still here.
fn on_answer(
    config: &HeartbeatConfig,
    statuses: &[RegionStatus],
    answer: Answer,
    known_stores: &mut BTreeSet<u64>,
    request_id: &mut u64,
) -> bool {
    let mut pending = false;
    if answer
        .stores
        .iter()
        .any(|s| !known_stores.contains(&s.node_id.get()))
    {
        learn_stores(config, &answer.stores, known_stores, request_id);
    }
    for order in &answer.moves {
        let led_here = statuses
            .iter()
            .find(|s| s.region_id == order.region_id && s.leader == Some(config.node));
        if let Some(status) = led_here {
            move_step(config, status, order, request_id);
            pending = true;
        }
    }
    for (status, order) in stray_learner_removals(config.node, statuses, &answer.moves) {
        tracing::info!(
            region = order.region_id.0,
            learner = order.from.0,
            "removing a learner no move concerns"
        );
        move_step(config, status, &order, request_id);
        pending = true;
    }
    for region in &answer.stale {
        let Some(status) = statuses.iter().find(|s| s.region_id == region.region_id) else {
            continue;
        };
        pending = true;
        let Some(addr) = config.own_addrs.get(status.core.0 as usize) else {
            continue;
        };
        let mut destroy = request(request_id, region.region_id, None, ClientOp::DestroyReplica);
        destroy.epoch = region.epoch;
        let outcome = request_once(addr, &destroy, REQUEST_TIMEOUT);
        tracing::info!(
            region = region.region_id.0,
            ?outcome,
            "destroying a removed replica"
        );
    }
    pending
}

/// The steps that remove the learners of the Regions `node` leads (per `statuses`) that no
/// move in `moves` concerns: `MoveStep { from: learner, to: node }` (the target a voter
/// already, the source a member, so the step is `Remove(learner)`).
fn stray_learner_removals<'a>(
    node: NodeId,
    statuses: &'a [RegionStatus],
    moves: &[MoveOrder],
) -> Vec<(&'a RegionStatus, MoveOrder)> {
    statuses
        .iter()
        .filter(|s| s.leader == Some(node))
        .filter(|s| !moves.iter().any(|order| order.region_id == s.region_id))
        .flat_map(|status| {
            status.learners.iter().map(move |learner| {
                let order = MoveOrder {
                    region_id: status.region_id,
                    from: *learner,
                    to: node,
                    rollback: false,
                };
                (status, order)
            })
        })
        .collect()
}

/// Tells every core of the stores, and records them in `meta.toml` (so a restart knows
/// them before the first heartbeat). A core that did not answer is told again next time.
fn learn_stores(
    config: &HeartbeatConfig,
    stores: &[StoreDescriptor],
    known_stores: &mut BTreeSet<u64>,
    request_id: &mut u64,
) {
    let op = ClientOp::LearnStores {
        stores: stores.to_vec(),
    };
    let told = config.own_addrs.iter().all(|addr| {
        let learn = request(request_id, RegionId(0), None, op.clone());
        matches!(
            request_once(addr, &learn, REQUEST_TIMEOUT),
            Ok(Ok(ClientReply::Ack))
        )
    });
    if let Err(error) = record_stores(&config.data_dir, stores) {
        tracing::warn!(%error, "cannot record the cluster's stores in meta.toml");
        return;
    }
    if told {
        known_stores.extend(stores.iter().map(|s| s.node_id.get()));
    }
}

fn record_stores(data_dir: &std::path::Path, stores: &[StoreDescriptor]) -> Result<(), String> {
    let Some(mut meta) = crate::meta::DataMeta::load(data_dir).map_err(|e| e.to_string())? else {
        return Ok(());
    };
    let mut changed = false;
    for descriptor in stores {
        let store = super::pd::store_meta(descriptor)?;
        if !meta.stores.iter().any(|s| s.node_id == store.node_id) {
            meta.stores.push(store);
            changed = true;
        }
    }
    if changed {
        meta.store(data_dir).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Asks the core that leads a Region for the next step of a move.
fn move_step(
    config: &HeartbeatConfig,
    status: &RegionStatus,
    order: &MoveOrder,
    request_id: &mut u64,
) {
    let Some(addr) = config.own_addrs.get(status.core.0 as usize) else {
        return;
    };
    let op = ClientOp::MoveStep {
        from: order.from,
        to: order.to,
    };
    let step = request(request_id, order.region_id, Some(status), op);
    let outcome = request_once(addr, &step, REQUEST_TIMEOUT);
    tracing::info!(
        region = order.region_id.0,
        from = order.from.0,
        to = order.to.0,
        ?outcome,
        "move step"
    );
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
            learners: Vec::new(),
        }
    }

    #[test]
    fn only_learners_of_regions_led_here_that_no_move_concerns_are_removed() {
        let with_learner = |id, leader, learner| RegionStatus {
            learners: vec![NodeId(learner)],
            ..status(id, leader, 10, 1)
        };
        let statuses = [
            with_learner(1, 1, 4), // stray: removed
            with_learner(2, 1, 4), // the target of a move in progress
            with_learner(3, 2, 4), // led elsewhere
            with_learner(5, 1, 3), // a move being rolled back (the reverse move removes it)
            status(6, 1, 10, 1),   // no learner
        ];
        let order = |region, from, to| MoveOrder {
            region_id: RegionId(region),
            from: NodeId(from),
            to: NodeId(to),
            rollback: false,
        };
        let moves = [order(2, 3, 4), order(5, 3, 1)];
        let removals: Vec<MoveOrder> = stray_learner_removals(NodeId(1), &statuses, &moves)
            .into_iter()
            .map(|(status, order)| {
                assert_eq!(status.region_id, order.region_id);
                order
            })
            .collect();
        assert_eq!(removals, vec![order(1, 4, 1)]);
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
