//! Leader-only: the role manager turns each node's desired role into its role and raft
//! membership — promotion is recorded here and the node joins raft itself; demotion removes
//! the manager from raft first (handing leadership over if it is this one).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use orch_api::pb::store_action::Action;
use orch_api::pb::{NodeRole, RaftMember};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::handles::Proposer;
use crate::raft::membership::{can_remove_member, step_down};
use crate::raft::node::{RaftHandle, RaftStatus};
use crate::state::store::{member_of, Object, Store};

/// What the role manager needs of raft: its view of the members, handing leadership over,
/// and removing a member (resolving once the removal is applied here).
pub trait Membership: Send + Sync + 'static {
    fn status(&self) -> RaftStatus;
    fn step_down(&self) -> BoxFuture<'_, Result<(), String>>;
    fn remove(&self, member: RaftMember) -> BoxFuture<'_, Result<(), String>>;
}

impl Membership for RaftHandle {
    fn status(&self) -> RaftStatus {
        RaftHandle::status(self)
    }

    fn step_down(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(step_down(self))
    }

    fn remove(&self, member: RaftMember) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            self.change_membership(&member, false)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }
}

/// Leader-only: promotes nodes whose desired role is manager (the node then renews its
/// certificate and joins raft itself) and demotes nodes whose desired role is worker (out of
/// raft first, leadership handed over first if it is this manager).
pub async fn role_manager<P: Proposer + ?Sized, M: Membership>(
    store: Arc<Store>,
    proposer: Arc<P>,
    raft: M,
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

async fn reconcile<P: Proposer + ?Sized, M: Membership>(store: &Store, proposer: &P, raft: &M) {
    let view = store.view();
    for node in view.nodes() {
        let desired = node.desired_role();
        let member = member_of(node);
        if desired == NodeRole::Manager && node.role() != NodeRole::Manager {
            let mut n = (**node).clone();
            n.role = NodeRole::Manager as i32;
            match proposer.propose(vec![Action::UpdateNode(n)]).await {
                Ok(_) => info!(node = %node.id, "node promoted to manager"),
                Err(e) => warn!(node = %node.id, error = %e, "promotion not recorded"),
            }
        } else if desired == NodeRole::Worker {
            if let Some(member) = member {
                if member.raft_id == raft.status().id {
                    if let Err(e) = raft.step_down().await {
                        warn!(error = %e, "cannot demote this manager yet");
                    }
                    return;
                }
                if !can_remove_member(&raft.status(), member.raft_id) {
                    warn!(node = %node.id, "demotion waits: removing this manager now would lose quorum");
                    continue;
                }
                if let Err(e) = raft.remove(member).await {
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use orch_api::pb::{ManagerStatus, Node};
    use parking_lot::Mutex;

    use super::*;
    use crate::handles::testing::Applier;
    use crate::testkit;

    /// Raft as the role manager sees it: this manager is raft id 1 and leads; a removal is
    /// applied to the store at once, as a committed conf change is.
    struct FakeRaft {
        store: Arc<Store>,
        status: Mutex<RaftStatus>,
        removed: Mutex<Vec<u64>>,
        step_downs: Mutex<u32>,
    }

    impl Membership for Arc<FakeRaft> {
        fn status(&self) -> RaftStatus {
            self.status.lock().clone()
        }

        fn step_down(&self) -> BoxFuture<'_, Result<(), String>> {
            *self.step_downs.lock() += 1;
            self.status.lock().is_leader = false;
            Box::pin(async { Ok(()) })
        }

        fn remove(&self, member: RaftMember) -> BoxFuture<'_, Result<(), String>> {
            self.removed.lock().push(member.raft_id);
            self.status.lock().voters.retain(|v| *v != member.raft_id);
            let index = self.store.view().index + 1;
            self.store
                .apply_member_change(index, &member, false, orch_api::now_nanos());
            Box::pin(async { Ok(()) })
        }
    }

    fn manager(id: &str, raft_id: u64) -> Node {
        let mut n = testkit::node(id);
        n.role = NodeRole::Manager as i32;
        n.spec.get_or_insert_with(Default::default).desired_role = NodeRole::Manager as i32;
        n.manager_status = Some(ManagerStatus {
            raft_id,
            addr: format!("10.0.0.{raft_id}:4242"),
            ..Default::default()
        });
        n
    }

    fn wants(mut n: Node, role: NodeRole) -> Node {
        n.spec.get_or_insert_with(Default::default).desired_role = role as i32;
        n
    }

    /// Managers m1 (this one, raft 1), m2, m3 and the nodes `more`; `down` are raft ids the
    /// leader does not hear from. The role manager runs until the returned token is cancelled.
    async fn cluster(
        more: Vec<Node>,
        down: &[u64],
    ) -> (Arc<Store>, Arc<FakeRaft>, CancellationToken) {
        let store = Arc::new(Store::new());
        let applier = Applier::new(store.clone());
        let mut nodes = vec![manager("m1", 1), manager("m2", 2), manager("m3", 3)];
        for n in more {
            nodes.retain(|m| m.id != n.id);
            nodes.push(n);
        }
        applier
            .propose(nodes.into_iter().map(Action::CreateNode).collect())
            .await
            .expect("set up the store");
        let raft = Arc::new(FakeRaft {
            store: store.clone(),
            status: Mutex::new(RaftStatus {
                id: 1,
                leader: 1,
                is_leader: true,
                voters: vec![1, 2, 3],
                reachable: (1..=3)
                    .map(|id| (id, !down.contains(&id)))
                    .collect::<BTreeMap<_, _>>(),
                ..Default::default()
            }),
            removed: Mutex::new(Vec::new()),
            step_downs: Mutex::new(0),
        });
        let token = CancellationToken::new();
        tokio::spawn(role_manager(
            store.clone(),
            applier,
            raft.clone(),
            token.clone(),
        ));
        (store, raft, token)
    }

    fn role(store: &Store, id: &str) -> NodeRole {
        store.view().node(id).expect("node").role()
    }

    /// Waits (in paused time) until `done` holds on the store; fails after a minute.
    async fn until(store: &Store, what: &str, done: impl Fn(&Store) -> bool) {
        let (_, mut changes) = store.view_and_watch();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !done(store) {
            assert!(
                tokio::time::timeout_at(deadline, changes.recv())
                    .await
                    .is_ok(),
                "{what} did not happen"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_that_should_be_a_manager_is_recorded_as_one_and_raft_is_left_alone() {
        let w1 = wants(testkit::node("w1"), NodeRole::Manager);
        let (store, raft, token) = cluster(vec![w1], &[]).await;
        until(&store, "the promotion", |s| {
            role(s, "w1") == NodeRole::Manager
        })
        .await;
        assert!(raft.removed.lock().is_empty());
        token.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_demoted_follower_leaves_raft_before_it_is_recorded_as_a_worker() {
        let m3 = wants(manager("m3", 3), NodeRole::Worker);
        let (store, raft, token) = cluster(vec![m3], &[]).await;
        until(&store, "the demotion", |s| {
            role(s, "m3") == NodeRole::Worker
        })
        .await;
        assert_eq!(*raft.removed.lock(), vec![3]);
        assert!(store
            .view()
            .node("m3")
            .expect("m3")
            .manager_status
            .is_none());
        assert_eq!(*raft.step_downs.lock(), 0);
        token.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_demoted_leader_hands_leadership_over_and_removes_nobody() {
        let m1 = wants(manager("m1", 1), NodeRole::Worker);
        let (store, raft, token) = cluster(vec![m1], &[]).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(*raft.step_downs.lock() >= 1, "the leader did not step down");
        assert!(raft.removed.lock().is_empty());
        // The next leader removes it; until then it is still a manager.
        assert_eq!(role(&store, "m1"), NodeRole::Manager);
        token.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_demotion_that_would_lose_quorum_waits_and_changes_nothing() {
        // m2 is down: removing m3 would leave m1 alone out of {m1, m2}.
        let m3 = wants(manager("m3", 3), NodeRole::Worker);
        let (store, raft, token) = cluster(vec![m3], &[2]).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(raft.removed.lock().is_empty());
        assert_eq!(role(&store, "m3"), NodeRole::Manager);

        // m2 comes back: the demotion goes through on the next pass.
        raft.status.lock().reachable.insert(2, true);
        until(&store, "the demotion", |s| {
            role(s, "m3") == NodeRole::Worker
        })
        .await;
        assert_eq!(*raft.removed.lock(), vec![3]);
        token.cancel();
    }
}
