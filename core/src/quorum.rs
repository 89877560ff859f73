//! Majority arithmetic: the committed index of a set of voters and the outcome of a vote.

use std::collections::BTreeMap;

use crate::types::{LogIndex, NodeId};

/// The highest index that a majority of `voters` have: the median of their match indexes,
/// rounded toward the lower. `match_of` gives each voter's match index (0 if unknown).
pub fn committed_index(voters: &[NodeId], match_of: impl Fn(NodeId) -> LogIndex) -> LogIndex {
    if voters.is_empty() {
        return LogIndex(0);
    }
    // Groups are small: sort on the stack, so the leader's hot path does not allocate.
    const STACK_VOTERS_MAX: usize = 16;
    if voters.len() <= STACK_VOTERS_MAX {
        let mut buffer = [LogIndex(0); STACK_VOTERS_MAX];
        let matches = &mut buffer[..voters.len()];
        for (slot, id) in matches.iter_mut().zip(voters) {
            *slot = match_of(*id);
        }
        matches.sort_unstable_by(|a, b| b.cmp(a));
        return matches[voters.len() / 2];
    }
    let mut matches: Vec<LogIndex> = voters.iter().map(|id| match_of(*id)).collect();
    matches.sort_unstable_by(|a, b| b.cmp(a));
    matches[voters.len() / 2]
}

/// How a vote stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    Won,
    Lost,
    Pending,
}

/// The outcome of the votes cast so far among `voters`; votes from non-voters do not count.
pub fn vote_result(voters: &[NodeId], votes: &BTreeMap<NodeId, bool>) -> VoteResult {
    let quorum = voters.len() / 2 + 1;
    let (mut granted, mut rejected) = (0, 0);
    for voter in voters {
        match votes.get(voter) {
            Some(true) => granted += 1,
            Some(false) => rejected += 1,
            None => {}
        }
    }
    if granted >= quorum {
        VoteResult::Won
    } else if rejected + quorum > voters.len() {
        VoteResult::Lost
    } else {
        VoteResult::Pending
    }
}

/// True if a majority of `voters` satisfy `yes`.
pub fn has_quorum(voters: &[NodeId], yes: impl Fn(NodeId) -> bool) -> bool {
    voters.iter().filter(|id| yes(**id)).count() > voters.len() / 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ids(n: u64) -> Vec<NodeId> {
        (1..=n).map(NodeId).collect()
    }

    #[test]
    fn committed_is_what_a_majority_has() {
        let matches = [5, 3, 9];
        let voters = ids(3);
        let at = |id: NodeId| LogIndex(matches[(id.0 - 1) as usize]);
        assert_eq!(committed_index(&voters, at), LogIndex(5));
        let four = [5, 3, 9, 1];
        let voters = ids(4);
        let at = |id: NodeId| LogIndex(four[(id.0 - 1) as usize]);
        assert_eq!(committed_index(&voters, at), LogIndex(3));
    }

    #[test]
    fn a_vote_is_lost_once_a_majority_cannot_be_reached() {
        let voters = ids(5);
        let mut votes = BTreeMap::new();
        votes.insert(NodeId(1), true);
        votes.insert(NodeId(2), false);
        votes.insert(NodeId(3), false);
        assert_eq!(vote_result(&voters, &votes), VoteResult::Pending);
        votes.insert(NodeId(4), false);
        assert_eq!(vote_result(&voters, &votes), VoteResult::Lost);
        votes.insert(NodeId(9), true); // not a voter
        assert_eq!(vote_result(&voters, &votes), VoteResult::Lost);
    }

    proptest! {
        /// The committed index is held by a majority, and no higher index is.
        #[test]
        fn committed_index_is_the_highest_majority_index(matches in proptest::collection::vec(0u64..20, 1..24)) {
            let voters = ids(matches.len() as u64);
            let at = |id: NodeId| LogIndex(matches[(id.0 - 1) as usize]);
            let committed = committed_index(&voters, at);
            prop_assert!(has_quorum(&voters, |id| at(id) >= committed));
            prop_assert!(!has_quorum(&voters, |id| at(id) > committed));
        }

        /// Won and Lost are final: no further votes can flip them.
        #[test]
        fn vote_outcomes_are_consistent(cast in proptest::collection::vec(proptest::option::of(any::<bool>()), 1..8)) {
            let voters = ids(cast.len() as u64);
            let votes: BTreeMap<NodeId, bool> = cast.iter().enumerate()
                .filter_map(|(i, v)| v.map(|v| (NodeId(i as u64 + 1), v))).collect();
            let granted = votes.values().filter(|v| **v).count();
            let undecided = cast.len() - votes.len();
            let quorum = cast.len() / 2 + 1;
            let expected = if granted >= quorum { VoteResult::Won }
                else if granted + undecided < quorum { VoteResult::Lost }
                else { VoteResult::Pending };
            prop_assert_eq!(vote_result(&voters, &votes), expected);
        }
    }
}
