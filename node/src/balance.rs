//! The placement driver's balancer, as pure functions of its metadata: which move to order
//! next so that every store holds about as many Regions as the others.
//!
//! Rules (one move at a time, so the cluster never copies more than one Region at once):
//! 1. nothing is planned while a move is in progress, or while a store has not sent a
//!    heartbeat within `Placement::store_alive_ms` (a Region is never moved onto or off a
//!    store the driver cannot see, and counts from a silent store are not trusted);
//! 2. the fullest store (most Region replicas) gives one Region to the emptiest, if their
//!    counts differ by more than one;
//! 3. the Region is one that the emptiest store does not hold, whose replicas are all on
//!    live stores and whose leader is known; one the fullest store does not lead is
//!    preferred (no leadership transfer is needed), then the lowest id (determinism).
//!
//! Balancing leaders, and Regions across the cores of one node, are not done yet (see
//! docs/architecture.md).

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

/// The next move, if one is due (rules 1-3).
pub fn plan_move(placement: &Placement, now_ms: u64) -> Option<MoveRecord> {
    if !placement.moves().is_empty() {
        return None;
    }
    let alive = |node: u64| {
        placement
            .last_heartbeat_ms(node)
            .is_some_and(|at| now_ms.saturating_sub(at) <= placement.store_alive_ms)
    };
    if !placement.stores().keys().all(|id| alive(*id)) {
        return None;
    }
    let counts = region_counts(placement);
    let (&fullest, &most) = counts
        .iter()
        .max_by_key(|(id, n)| (**n, std::cmp::Reverse(**id)))?;
    let (&emptiest, &fewest) = counts.iter().min_by_key(|(id, n)| (**n, **id))?;
    if most <= fewest + 1 {
        return None;
    }
    let candidates = placement.regions().values().filter(|record| {
        let peers = &record.meta.peers;
        peers.contains(&fullest) && !peers.contains(&emptiest) && record.leader != 0
    });
    let region = candidates.min_by_key(|record| (record.leader == fullest, record.meta.id))?;
    Some(MoveRecord {
        region: region.meta.id,
        from: fullest,
        to: emptiest,
    })
}
