//! Raft membership: the quorum arithmetic behind promote, demote, leave and `node rm`, and the
//! leader's role manager, which turns a node's desired role into raft membership.

use std::sync::Arc;
use std::time::Duration;

use orch_api::pb::store_action::Action;
use orch_api::pb::{Node, NodeRole, RaftMember};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::node::RaftStatus;
use crate::manager::ManagerCtx;
use crate::state::store::Object;

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

fn member_of(node: &Node) -> Option<RaftMember> {
    node.manager_status
        .as_ref()
        .filter(|m| m.raft_id != 0)
        .map(|m| RaftMember {
            raft_id: m.raft_id,
            node_id: node.id.clone(),
            addr: m.addr.clone(),
        })
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
pub async fn step_down(ctx: &ManagerCtx) -> Result<(), String> {
    let status = ctx.raft.status();
    if !status.is_leader {
        return Ok(());
    }
    let Some(target) = transfer_target(&status) else {
        return Err("no other reachable manager to take over leadership".into());
    };
    info!(to = target, "transferring raft leadership");
    let mut watch = ctx.raft.watch_status();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        ctx.raft.transfer_leadership(target);
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

/// Leader-only: promotes nodes whose desired role is manager (the node then renews its
/// certificate and joins raft itself) and demotes nodes whose desired role is worker (out of
/// raft first, leadership handed over first if it is this manager).
pub async fn role_manager(ctx: Arc<ManagerCtx>, token: CancellationToken) {
    let (_, mut rx) = ctx.store.view_and_watch();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        reconcile(&ctx).await;
        // Only node changes (or a snapshot, or missed changes) can change a role; task
        // traffic does not make it walk every node again.
        loop {
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tick.tick() => break,
                change = rx.recv() => match change {
                    Ok(change)
                        if !change.events.is_empty()
                            && !change
                                .events
                                .iter()
                                .any(|e| matches!(e.object(), Object::Node(_))) => {}
                    Err(RecvError::Closed) => return,
                    _ => break,
                },
            }
        }
    }
}

async fn reconcile(ctx: &ManagerCtx) {
    let view = ctx.store.view();
    for node in view.nodes() {
        let desired = node.spec.as_ref().map_or(0, |s| s.desired_role);
        let member = member_of(node);
        if desired == NodeRole::Manager as i32 && node.role != NodeRole::Manager as i32 {
            let mut n = (**node).clone();
            n.role = NodeRole::Manager as i32;
            match ctx.propose(vec![Action::UpdateNode(n)]).await {
                Ok(_) => info!(node = %node.id, "node promoted to manager"),
                Err(e) => warn!(node = %node.id, error = %e, "promotion not recorded"),
            }
        } else if desired == NodeRole::Worker as i32 {
            if let Some(member) = member {
                if member.raft_id == ctx.raft_id {
                    if let Err(e) = step_down(ctx).await {
                        warn!(error = %e, "cannot demote this manager yet");
                    }
                    return;
                }
                if !can_remove_member(&ctx.raft.status(), member.raft_id) {
                    warn!(node = %node.id, "demotion waits: removing this manager now would lose quorum");
                    continue;
                }
                if let Err(e) = ctx.raft.change_membership(&member, false).await {
                    warn!(node = %node.id, error = %e, "could not remove manager from raft");
                    continue;
                }
            }
            let current = ctx.store.view().node(&node.id).cloned();
            if let Some(current) =
                current.filter(|n| n.role != NodeRole::Worker as i32 && n.manager_status.is_none())
            {
                let mut n = (*current).clone();
                n.role = NodeRole::Worker as i32;
                match ctx.propose(vec![Action::UpdateNode(n)]).await {
                    Ok(_) => info!(node = %node.id, "node demoted to worker"),
                    Err(e) => warn!(node = %node.id, error = %e, "demotion not recorded"),
                }
            }
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
