//! Property tests: record bodies round-trip through encode and decode, and after any
//! sequence of appends (with conflicting suffixes), compactions, hard states, removals and
//! restarts, the WAL holds what a simple model says.

mod common;

use std::collections::BTreeMap;

use common::{assert_matches, entry, options, run, ModelLog};
use proptest::prelude::*;
use tessera_wal::format::{decode_body, Item};
use tessera_wal::{Entry, EntryKind, HardState, LogBatch, LogIndex, NodeId, RegionId, Term, Wal};

fn arb_entries() -> impl Strategy<Value = Vec<Entry>> {
    (
        1u64..1000,
        1u64..5,
        prop::collection::vec(
            (
                0u64..3,
                any::<bool>(),
                prop::collection::vec(any::<u8>(), 0..64),
            ),
            1..6,
        ),
    )
        .prop_map(|(first, term, specs)| {
            let mut term = term;
            specs
                .into_iter()
                .enumerate()
                .map(|(i, (bump, conf, data))| {
                    term += bump;
                    Entry {
                        term: Term(term),
                        index: LogIndex(first + i as u64),
                        kind: if conf {
                            EntryKind::ConfChange
                        } else {
                            EntryKind::Normal
                        },
                        data: data.into(),
                    }
                })
                .collect()
        })
}

#[derive(Clone, Debug)]
enum BatchItem {
    Entries(RegionId, Vec<Entry>),
    HardState(RegionId, HardState),
    Compact(RegionId, LogIndex, Term),
    Remove(RegionId),
}

fn arb_item() -> impl Strategy<Value = BatchItem> {
    let region = (1u64..4).prop_map(RegionId);
    prop_oneof![
        (region.clone(), arb_entries()).prop_map(|(r, e)| BatchItem::Entries(r, e)),
        (region.clone(), 0u64..9, 0u64..4, 0u64..99).prop_map(|(r, t, v, c)| BatchItem::HardState(
            r,
            HardState {
                term: Term(t),
                vote: (v > 0).then_some(NodeId(v)),
                commit: LogIndex(c)
            }
        )),
        (region.clone(), 0u64..99, 0u64..9).prop_map(|(r, i, t)| BatchItem::Compact(
            r,
            LogIndex(i),
            Term(t)
        )),
        region.prop_map(BatchItem::Remove),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn batch_bodies_round_trip(items in prop::collection::vec(arb_item(), 0..12)) {
        let mut batch = LogBatch::new();
        for item in &items {
            match item {
                BatchItem::Entries(r, e) => batch.add_entries(*r, e),
                BatchItem::HardState(r, h) => batch.set_hard_state(*r, *h),
                BatchItem::Compact(r, i, t) => batch.compact_to(*r, *i, *t),
                BatchItem::Remove(r) => batch.remove_region(*r),
            }
        }
        let body = batch_body(batch);
        let decoded = decode_body(&body).unwrap();
        prop_assert_eq!(decoded.len(), items.len());
        for (item, decoded) in items.iter().zip(&decoded) {
            match (item, decoded) {
                (BatchItem::Entries(r, e), Item::Entries { region, entries }) => {
                    prop_assert_eq!(r, region);
                    let owned: Vec<Entry> = entries.iter().map(|v| v.to_entry()).collect();
                    prop_assert_eq!(e, &owned);
                }
                (BatchItem::HardState(r, h), Item::HardState { region, hard_state }) => {
                    prop_assert_eq!((r, h), (region, hard_state));
                }
                (BatchItem::Compact(r, i, t), Item::Compact { region, index, term }) => {
                    prop_assert_eq!((r, i, t), (region, index, term));
                }
                (BatchItem::Remove(r), Item::RemoveRegion { region }) => prop_assert_eq!(r, region),
                (item, decoded) => prop_assert!(false, "{item:?} decoded as {decoded:?}"),
            }
        }
    }

    #[test]
    fn truncated_bodies_never_decode_to_something_else(items in prop::collection::vec(arb_item(), 1..6), cut in any::<prop::sample::Index>()) {
        let mut batch = LogBatch::new();
        for item in &items {
            if let BatchItem::Entries(r, e) = item { batch.add_entries(*r, e) } else { batch.remove_region(RegionId(1)) }
        }
        let body = batch_body(batch);
        let cut = cut.index(body.len());
        // A strict prefix either fails or decodes to fewer items; it never panics.
        if let Ok(decoded) = decode_body(&body[..cut]) { prop_assert!(decoded.len() < items.len()) }
    }
}

fn batch_body(batch: LogBatch) -> Vec<u8> {
    batch.encoded_items().to_vec()
}

/// One step of a random history.
#[derive(Clone, Debug)]
enum Op {
    /// Append `count` entries to `region` starting `back` entries before its last index + 1
    /// (so `back > 0` replaces a suffix), with a term bump.
    Append {
        region: u64,
        back: u64,
        count: u64,
        bump: u64,
        len: usize,
    },
    HardState {
        region: u64,
        commit: u64,
    },
    /// Compact `region` to `fraction`/4 of the way to its last index (or past it).
    Compact {
        region: u64,
        fraction: u64,
        foreign_term: bool,
    },
    Remove {
        region: u64,
    },
    Restart,
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u64..4, 0u64..4, 1u64..8, 0u64..2, 10usize..600)
            .prop_map(|(region, back, count, bump, len)| Op::Append { region, back, count, bump, len }),
        2 => (1u64..4, 0u64..50).prop_map(|(region, commit)| Op::HardState { region, commit }),
        // `foreign_term`: a snapshot install (all entries dropped, mark moved to a term the
        // log may not hold) instead of a compaction.
        2 => (1u64..4, 0u64..6, any::<bool>()).prop_map(|(region, fraction, foreign_term)| Op::Compact { region, fraction, foreign_term }),
        1 => (1u64..4).prop_map(|region| Op::Remove { region }),
        1 => Just(Op::Restart),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn recovery_after_random_histories_matches_the_model(ops in prop::collection::vec(arb_op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let mut options = options(dir.path());
        options.segment_size_bytes = 16 << 10; // rotate and purge often
        run(async move {
            let mut model: BTreeMap<RegionId, ModelLog> = BTreeMap::new();
            let (mut wal, _) = Wal::open(options.clone()).await.unwrap();
            for op in ops {
                if let Op::Restart = op {
                    wal.close().await.unwrap();
                    wal = Wal::open(options.clone()).await.unwrap().0;
                    assert_matches(&wal, &model);
                    continue;
                }
                let batch = apply_to_model(&op, &mut model);
                wal.append(batch).await.unwrap();
                assert_matches(&wal, &model);
                wal.purge().await.unwrap();
            }
            wal.close().await.unwrap();
            let (wal, _) = Wal::open(options).await.unwrap();
            assert_matches(&wal, &model);
            wal.close().await.unwrap();
        });
    }
}

fn apply_to_model(op: &Op, model: &mut BTreeMap<RegionId, ModelLog>) -> LogBatch {
    let mut batch = LogBatch::new();
    match *op {
        Op::Append {
            region,
            back,
            count,
            bump,
            len,
        } => {
            let region = RegionId(region);
            let log = model.entry(region).or_default();
            let last = log.last_index();
            let start = (last + 1).saturating_sub(back).max(log.mark.0 .0 + 1);
            let base_term = log
                .entries
                .values()
                .next_back()
                .map_or(log.mark.1 .0, |e| e.term.0)
                .max(1);
            let entries: Vec<Entry> = (start..start + count)
                .map(|i| entry(region, i, base_term + bump, len))
                .collect();
            log.append(&entries);
            batch.add_entries(region, &entries);
        }
        Op::HardState { region, commit } => {
            let region = RegionId(region);
            let hard_state = HardState {
                term: Term(commit / 10),
                vote: None,
                commit: LogIndex(commit),
            };
            model.entry(region).or_default().hard_state = Some(hard_state);
            batch.set_hard_state(region, hard_state);
        }
        Op::Compact {
            region,
            fraction,
            foreign_term,
        } => {
            let region = RegionId(region);
            let log = model.entry(region).or_default();
            let (mark, last) = (log.mark.0 .0, log.last_index());
            let index = LogIndex(mark + (last + 2 - mark) * fraction / 4);
            if foreign_term {
                let term = Term(
                    log.entries
                        .values()
                        .next_back()
                        .map_or(log.mark.1 .0, |e| e.term.0)
                        + 1,
                );
                log.install_snapshot(index, term);
                batch.install_snapshot(region, index, term);
            } else {
                let index = LogIndex(index.0.min(last));
                let term = log.entries.get(&index.0).map_or(log.mark.1, |e| e.term);
                log.compact(index, term);
                batch.compact_to(region, index, term);
            }
        }
        Op::Remove { region } => {
            model.remove(&RegionId(region));
            batch.remove_region(RegionId(region));
        }
        Op::Restart => unreachable!(),
    }
    batch
}
