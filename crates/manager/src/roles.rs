//! Leader-only: the role manager turns each node's desired role into its role and raft
//! membership — promotion is recorded here and the node joins raft itself; demotion removes
//! the manager from raft first (handing leadership over if it is this one).

use std::sync::Arc;
use std::time::Duration;

use orch_api::pb::store_action::Action;
use orch_api::pb::NodeRole;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::handles::Proposer;
use crate::raft::membership::{can_remove_member, step_down};
use crate::raft::node::RaftHandle;
use crate::state::store::{member_of, Object, Store};

/// Leader-only: promotes nodes whose desired role is manager (the node then renews its
/// certificate and joins raft itself) and demotes nodes whose desired role is worker (out of
/// raft first, leadership handed over first if it is this manager).
pub async fn role_manager<P: Proposer + ?Sized>(
    store: Arc<Store>,
    proposer: Arc<P>,
    raft: RaftHandle,
    token: CancellationToken,
) {
    let (_, mut rx) = store.view_and_watch();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        reconcile(&store, proposer.as_ref(), &raft).await;
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

async fn reconcile<P: Proposer + ?Sized>(store: &Store, proposer: &P, raft: &RaftHandle) {
    let view = store.view();
    for node in view.nodes() {
        let desired = node.spec.as_ref().map_or(0, |s| s.desired_role);
        let member = member_of(node);
        if desired == NodeRole::Manager as i32 && node.role() != NodeRole::Manager {
            let mut n = (**node).clone();
            n.role = NodeRole::Manager as i32;
            match proposer.propose(vec![Action::UpdateNode(n)]).await {
                Ok(_) => info!(node = %node.id, "node promoted to manager"),
                Err(e) => warn!(node = %node.id, error = %e, "promotion not recorded"),
            }
        } else if desired == NodeRole::Worker as i32 {
            if let Some(member) = member {
                if member.raft_id == raft.status().id {
                    if let Err(e) = step_down(raft).await {
                        warn!(error = %e, "cannot demote this manager yet");
                    }
                    return;
                }
                if !can_remove_member(&raft.status(), member.raft_id) {
                    warn!(node = %node.id, "demotion waits: removing this manager now would lose quorum");
                    continue;
                }
                if let Err(e) = raft.change_membership(&member, false).await {
                    warn!(node = %node.id, error = %e, "could not remove manager from raft");
                    continue;
                }
            }
            let current = store.view().node(&node.id).cloned();
            if let Some(current) =
                current.filter(|n| n.role() != NodeRole::Worker && n.manager_status.is_none())
            {
                let mut n = (*current).clone();
                n.role = NodeRole::Worker as i32;
                match proposer.propose(vec![Action::UpdateNode(n)]).await {
                    Ok(_) => info!(node = %node.id, "node demoted to worker"),
                    Err(e) => warn!(node = %node.id, error = %e, "demotion not recorded"),
                }
            }
        }
    }
}
