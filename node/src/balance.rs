//! The placement driver's balancer, as pure functions of its metadata: which move to order
//! next so that every store holds about as many Regions as the others.
//!
//! Rules (one move at a time, so the cluster never copies more than one Region at once):
//! 1. nothing is planned while a move is in progress, or while a store has not sent a
//!    heartbeat within `Placement::store_alive_ms` (a Region is never moved onto or off a
//!    store the driver cannot see, and counts from a silent store are not trusted);
//! 2. a fullest store (most Region replicas) gives one Region to the emptiest, if their
//!    counts differ by more than one;
//! 3. the Region is one that the emptiest store does not hold (not even a removed replica
//!    it has not destroyed yet, see `Placement::holds_replica`), whose replicas are all on
//!    live stores and whose leader is known; one the giving store does not lead is
//!    preferred (no leadership transfer is needed), then the lowest ids (determinism).
//!
//! 4. with leader balancing on, and no Region move due: the store leading the most Regions
//!    hands one to the store leading the fewest, if their counts differ by more than one (a
//!    Region where that store is a voter). A leadership transfer is ordered as a move whose
//!    source and target are the same store.
//!
//! Balancing Regions across the cores of one node is not done yet (see docs/architecture.md).

use std::collections::BTreeMap;

use crate::placement::{MoveRecord, Placement};

/// Region replicas per store, for every store (0 for a store that holds none).
pub fn region_counts(placement: &Placement) -> BTreeMap<u64, usize> {
    let mut counts: BTreeMap<u64, usize> = placement.stores().keys().map(|id| (*id, 0)).collect();
    for record in placement.regions().values() {
        for peer in &record.meta.peers {
            *counts.entry(*peer).or_default() += 1;
        }
    }
    counts
}

/// The next move or leadership transfer, if one is due (rules 1-4).
pub fn plan(placement: &Placement, now_ms: u64, leaders: bool) -> Option<MoveRecord> {
    let region_move = plan_move(placement, now_ms);
    if region_move.is_some() || !leaders || !placement.moves().is_empty() {
        return region_move;
    }
    plan_leader_transfer(placement, now_ms)
}

/// True if every store sent a heartbeat within `store_alive_ms` of `now_ms`.
fn all_alive(placement: &Placement, now_ms: u64) -> bool {
    placement.stores().keys().all(|id| {
        placement
            .last_heartbeat_ms(*id)
            .is_some_and(|at| now_ms.saturating_sub(at) <= placement.store_alive_ms)
    })
}

/// Rule 4.
fn plan_leader_transfer(placement: &Placement, now_ms: u64) -> Option<MoveRecord> {
    if !all_alive(placement, now_ms) {
        return None;
    }
    let mut leading: BTreeMap<u64, usize> = placement.stores().keys().map(|id| (*id, 0)).collect();
    for record in placement.regions().values() {
        if let Some(count) = leading.get_mut(&record.leader) {
            *count += 1;
        }
    }
    let (&most_id, &most) = leading
        .iter()
        .max_by_key(|(id, n)| (**n, std::cmp::Reverse(**id)))?;
    let (&fewest_id, &fewest) = leading.iter().min_by_key(|(id, n)| (**n, **id))?;
    if most <= fewest + 1 {
        return None;
    }
    let region = placement
        .regions()
        .values()
        .find(|record| record.leader == most_id && record.meta.peers.contains(&fewest_id))?;
    Some(MoveRecord {
        region: region.meta.id,
        from: fewest_id,
        to: fewest_id,
        rollback: false,
    })
}

/// The next Region move, if one is due (rules 1-3).
pub fn plan_move(placement: &Placement, now_ms: u64) -> Option<MoveRecord> {
    if !placement.moves().is_empty() || !all_alive(placement, now_ms) {
        return None;
    }
    let counts = region_counts(placement);
    let most = *counts.values().max()?;
    let (&emptiest, &fewest) = counts.iter().min_by_key(|(id, n)| (**n, **id))?;
    if most <= fewest + 1 {
        return None;
    }
    let fullest = counts
        .iter()
        .filter(|(_, n)| **n == most)
        .map(|(id, _)| *id);
    let candidates = fullest.flat_map(|from| {
        placement.regions().values().filter_map(move |record| {
            let peers = &record.meta.peers;
            let movable = peers.contains(&from)
                && !peers.contains(&emptiest)
                && !placement.holds_replica(emptiest, record.meta.id)
                && record.leader != 0;
            movable.then_some((record.leader == from, record.meta.id, from))
        })
    });
    let (_, region, from) = candidates.min()?;
    Some(MoveRecord {
        region,
        from,
        to: emptiest,
        rollback: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{DataMeta, RegionMeta, StoreMeta};
    use crate::server::bootstrap::initial_layout;
    use tessera_core::{NodeId, RegionId};
    use tessera_transport::client::{RegionDescriptor, RegionEpoch, RegionReport};

    /// Four Regions on stores 1-3, a fourth store with none; every store heard at `now`.
    fn placement(now: u64) -> Placement {
        let stores: Vec<NodeId> = (1..=3).map(NodeId).collect();
        let regions = initial_layout(&["f".into(), "m".into(), "t".into()], &stores, 3);
        let meta = DataMeta {
            cluster_id: 7,
            node_id: 1,
            cores: 1,
            stores: (1..=4)
                .map(|id| StoreMeta {
                    node_id: id,
                    host: "127.0.0.1".into(),
                    client_port: 7000 + id as u16,
                    peer_port: 8000 + id as u16,
                    cores: 1,
                })
                .collect(),
            regions: regions.iter().map(RegionMeta::from_region).collect(),
            pd_node: 1,
        };
        let mut placement = Placement::from_meta(&meta);
        placement.store_alive_ms = 100;
        let reports: Vec<RegionReport> = regions
            .iter()
            .map(|r| RegionReport {
                region: RegionDescriptor {
                    region_id: r.id,
                    start_key: r.start_key.clone(),
                    end_key: r.end_key.clone(),
                    epoch: RegionEpoch {
                        version: 1,
                        conf_version: 1,
                    },
                    peers: r.peers.clone(),
                    leader: Some(NodeId(1)),
                },
                approximate_bytes: 10,
                keys: 1,
            })
            .collect();
        placement.on_heartbeat(NodeId(1), &reports, now).unwrap();
        for id in 2..=4 {
            placement.on_heartbeat(NodeId(id), &[], now).unwrap();
        }
        placement
    }

    #[test]
    fn the_fullest_store_gives_a_region_it_does_not_lead_to_the_emptiest_one_move_at_a_time() {
        let mut pd = placement(1000);
        let order = plan(&pd, 1000, true).expect("4,4,4,0 is not balanced");
        assert_eq!(order.to, 4);
        assert_ne!(
            order.from, 1,
            "store 1 leads every Region: another store gives one"
        );
        assert_ne!(order.from, order.to);
        pd.order_move(RegionId(order.region), NodeId(order.from), NodeId(order.to))
            .unwrap();
        assert_eq!(plan(&pd, 1000, true), None, "one move at a time");
    }

    #[test]
    fn no_move_targets_a_store_that_still_reports_a_replica_of_the_region() {
        let mut pd = placement(1000);
        // Store 4 still reports a (removed, not yet destroyed) replica of every Region.
        let stale: Vec<RegionReport> = pd
            .status(1000)
            .regions
            .into_iter()
            .map(|mut r| {
                r.region.epoch.conf_version = 0;
                r
            })
            .collect();
        pd.on_heartbeat(NodeId(4), &stale, 1000).unwrap();
        assert_eq!(plan(&pd, 1000, false), None);
        let refused = pd.order_move(RegionId(1), NodeId(0), NodeId(4));
        assert!(refused.is_err_and(|e| e.contains("still holds")));
        pd.on_heartbeat(NodeId(4), &[], 1000).unwrap();
        assert!(
            plan(&pd, 1000, false).is_some(),
            "destroyed: a target again"
        );
    }

    #[test]
    fn nothing_is_planned_while_a_store_is_silent() {
        let pd = placement(1000);
        assert_eq!(plan(&pd, 1000 + 101, true), None);
        assert!(plan(&pd, 1000 + 100, true).is_some());
    }

    #[test]
    fn leaders_are_spread_once_region_counts_are_balanced() {
        let mut pd = placement(1000);
        // Store 4 is a member that holds nothing: remove it so that counts are balanced.
        pd.remove_store_for_test(4);
        assert_eq!(
            plan_move(&pd, 1000),
            None,
            "3 stores x 4 Regions is balanced"
        );
        assert_eq!(plan(&pd, 1000, false), None, "leader balancing is off");
        let order = plan(&pd, 1000, true).expect("store 1 leads all 4 Regions");
        assert_eq!(order.from, order.to, "a leadership transfer");
        assert_ne!(order.to, 1);
        assert_eq!(region_counts(&pd)[&order.to], 4);
    }

    /// Region 1 as its leader (store 1) reports it, with `peers`, at `conf_version`.
    fn region_1(pd: &Placement, peers: &[u64], conf_version: u64) -> RegionReport {
        let mut report = pd
            .status(0)
            .regions
            .into_iter()
            .find(|r| r.region.region_id == RegionId(1))
            .expect("region 1");
        report.region.peers = peers.iter().copied().map(NodeId).collect();
        report.region.epoch.conf_version = conf_version;
        report
    }

    #[test]
    fn a_move_cancelled_before_its_target_joined_is_dropped_and_a_later_one_rolled_back() {
        let mut pd = placement(1000);
        pd.order_move(RegionId(1), NodeId(2), NodeId(4)).unwrap();
        let before = pd.version();
        let what = pd.cancel_move(RegionId(1)).unwrap();
        assert!(what.contains("before it began"), "{what}");
        assert!(pd.moves().is_empty());
        assert!(pd.version() > before, "a cancel must be made durable");
        assert!(pd
            .cancel_move(RegionId(1))
            .is_err_and(|e| e.contains("no move")));

        // Store 4 became a member (a learner) before the cancel: the move is reversed.
        pd.order_move(RegionId(1), NodeId(2), NodeId(4)).unwrap();
        let joined = region_1(&pd, &[1, 2, 3, 4], 2);
        pd.on_heartbeat(NodeId(1), &[joined], 1000).unwrap();
        let what = pd.cancel_move(RegionId(1)).unwrap();
        assert!(what.contains("rolling back"), "{what}");
        let reverse = pd.moves()[&1];
        assert_eq!((reverse.from, reverse.to, reverse.rollback), (4, 2, true));
        assert!(
            pd.cancel_move(RegionId(1))
                .is_err_and(|e| e.contains("rolled back already")),
            "a rollback is not cancelled"
        );
        let answer = pd.on_heartbeat(NodeId(2), &[], 1000).unwrap();
        assert_eq!(answer.moves.len(), 1, "the leader is told the reverse move");
        assert_eq!(
            (answer.moves[0].from, answer.moves[0].to),
            (NodeId(4), NodeId(2))
        );
        // Once store 4 is gone from the Region the rollback is over.
        let rolled_back = region_1(&pd, &[1, 2, 3], 3);
        pd.on_heartbeat(NodeId(1), &[rolled_back], 1000).unwrap();
        assert!(pd.moves().is_empty());
    }

    #[test]
    fn with_balancing_on_a_move_to_a_store_that_went_silent_is_cancelled() {
        let mut pd = placement(1000);
        pd.balance = true;
        pd.order_move(RegionId(1), NodeId(2), NodeId(4)).unwrap();
        let joined = region_1(&pd, &[1, 2, 3, 4], 2);
        // Store 4 stays silent after 1000; the others report.
        for now in [1050, 1100] {
            for id in 1..=3 {
                let reports = if id == 1 {
                    vec![joined.clone()]
                } else {
                    Vec::new()
                };
                pd.on_heartbeat(NodeId(id), &reports, now).unwrap();
            }
            assert_eq!(pd.moves()[&1].to, 4, "store 4 is not silent for long yet");
        }
        pd.on_heartbeat(NodeId(1), &[joined], 1101).unwrap();
        let reverse = pd.moves()[&1];
        assert_eq!((reverse.from, reverse.to), (4, 2), "rolled back");
        assert_eq!(
            plan(&pd, 1101, true),
            None,
            "nothing else while store 4 is silent"
        );
    }
}
