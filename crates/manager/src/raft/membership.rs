//! Raft membership: the quorum arithmetic behind promote, demote, leave and `node rm`, and
//! handing leadership over before this manager leaves (the role manager, which turns a node's
//! desired role into membership, is a leader component: `crate::roles`).

use std::time::Duration;

use tracing::info;

use super::node::{RaftHandle, RaftStatus};

pub const QUORUM_LOSS: &str =
    "can't remove member from the raft: this would result in a loss of quorum";
pub const LAST_MANAGER: &str = "attempting to demote the last manager of the swarm";

/// Whether removing `raft_id` leaves a configuration whose reachable members still form a
/// quorum of it (the leader's view of reachability).
pub fn can_remove_member(status: &RaftStatus, raft_id: u64) -> bool {
    let remaining: Vec<u64> = status
        .voters
        .iter()
        .copied()
        .filter(|id| *id != raft_id)
        .collect();
    if remaining.is_empty() {
        return false;
    }
    let reachable = remaining
        .iter()
        .filter(|id| **id == status.id || status.reachable.get(id).copied().unwrap_or(false))
        .count();
    reachable > remaining.len() / 2
}

/// A reachable voter other than this one to hand leadership to.
pub fn transfer_target(status: &RaftStatus) -> Option<u64> {
    status
        .voters
        .iter()
        .copied()
        .find(|id| *id != status.id && status.reachable.get(id).copied().unwrap_or(false))
}

/// Hands leadership to another reachable manager and waits (up to 5 s) until it has it.
pub async fn step_down(raft: &RaftHandle) -> Result<(), String> {
    let status = raft.status();
    if !status.is_leader {
        return Ok(());
    }
    let Some(target) = transfer_target(&status) else {
        return Err("no other reachable manager to take over leadership".into());
    };
    info!(to = target, "transferring raft leadership");
    let mut watch = raft.watch_status();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        raft.transfer_leadership(target);
        let waited = tokio::time::timeout_at(
            std::cmp::min(
                deadline,
                tokio::time::Instant::now() + Duration::from_secs(1),
            ),
            watch.wait_for(|s| !s.is_leader && s.leader != 0),
        )
        .await;
        if matches!(waited, Ok(Ok(_))) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err("leadership transfer did not complete".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn status(me: u64, voters: &[u64], reachable: &[u64]) -> RaftStatus {
        RaftStatus {
            id: me,
            voters: voters.to_vec(),
            reachable: voters
                .iter()
                .map(|v| (*v, reachable.contains(v) || *v == me))
                .collect::<BTreeMap<_, _>>(),
            ..Default::default()
        }
    }

    #[test]
    fn quorum_cases() {
        let cases = [
            (
                "3 healthy, remove follower",
                status(1, &[1, 2, 3], &[2, 3]),
                3,
                true,
            ),
            (
                "3 with one down, remove the down one",
                status(1, &[1, 2, 3], &[2]),
                3,
                true,
            ),
            (
                "3 with one down, remove a healthy one",
                status(1, &[1, 2, 3], &[2]),
                2,
                false,
            ),
            (
                "2 healthy, remove follower",
                status(1, &[1, 2], &[2]),
                2,
                true,
            ),
            ("single manager", status(1, &[1], &[]), 1, false),
            (
                "5 with two down, remove healthy",
                status(1, &[1, 2, 3, 4, 5], &[2, 3]),
                2,
                false,
            ),
            (
                "5 with two down, remove a down one",
                status(1, &[1, 2, 3, 4, 5], &[2, 3]),
                5,
                true,
            ),
        ];
        for (name, st, remove, expect) in cases {
            assert_eq!(can_remove_member(&st, remove), expect, "{name}");
        }
    }

    #[test]
    fn transfer_picks_a_reachable_peer() {
        assert_eq!(transfer_target(&status(1, &[1, 2, 3], &[3])), Some(3));
        assert_eq!(transfer_target(&status(1, &[1, 2, 3], &[])), None);
    }
}
