//! Node operations: list, inspect, update (availability, labels, role), remove.

use orch_api::pb::store_action::Action;
use orch_api::pb::{
    ListNodesResponse, Node, NodeAvailability, NodeRole, NodeState, RemoveNodeRequest,
    UpdateNodeRequest,
};

use crate::ctx::ManagerCtx;
use crate::error::{ManagerError, Result};
use crate::handles::conflict::retry_conflicts;
use crate::raft::membership::{can_remove_member, LAST_MANAGER, QUORUM_LOSS};
use crate::state::store::Tables;

pub async fn list(ctx: &ManagerCtx) -> Result<ListNodesResponse> {
    let view = ctx.read_view().await?;
    Ok(ListNodesResponse {
        nodes: view.nodes().map(|n| ctx.decorate_node(n)).collect(),
    })
}

pub async fn get(ctx: &ManagerCtx, reference: &str) -> Result<Node> {
    let view = ctx.read_view().await?;
    let node = view.find_node(reference)?;
    Ok(ctx.decorate_node(&node))
}

fn is_manager(node: &Node) -> bool {
    node.spec
        .as_ref()
        .is_some_and(|s| s.desired_role() == NodeRole::Manager)
        || node.manager_status.is_some()
}

/// Refuses a demotion that would leave no manager or lose quorum.
fn check_demote(ctx: &ManagerCtx, view: &Tables, node: &Node) -> Result<()> {
    let managers = view
        .nodes()
        .filter(|n| {
            n.spec
                .as_ref()
                .is_some_and(|s| s.desired_role() == NodeRole::Manager)
        })
        .count();
    if managers <= 1 {
        return Err(ManagerError::FailedPrecondition(LAST_MANAGER.into()));
    }
    if let Some(ms) = node.manager_status.as_ref() {
        if !can_remove_member(&ctx.raft.status(), ms.raft_id) {
            return Err(ManagerError::FailedPrecondition(QUORUM_LOSS.into()));
        }
    }
    Ok(())
}

pub async fn update(ctx: &ManagerCtx, req: UpdateNodeRequest) -> Result<Node> {
    let availability = req
        .availability
        .map(|a| {
            NodeAvailability::try_from(a)
                .map_err(|_| ManagerError::InvalidArgument(format!("invalid availability {a}")))
        })
        .transpose()?;
    let role = req
        .role
        .map(|r| {
            NodeRole::try_from(r)
                .map_err(|_| ManagerError::InvalidArgument(format!("invalid role {r}")))
        })
        .transpose()?;
    if let Some(key) = req.label_add.keys().find(|k| k.trim().is_empty()) {
        return Err(ManagerError::InvalidArgument(format!(
            "invalid label key {key:?}: must not be empty"
        )));
    }
    let req = &req;
    retry_conflicts(|| async move {
        let view = ctx.read_view().await?;
        let node = view.find_node(&req.node)?;
        // Checked against the read the update is made from: a retry after a conflicting
        // write fails here rather than apply an old read over the new state.
        super::check_read_version("node", &node.id, req.version, node.meta.as_ref())?;
        let mut n = (*node).clone();
        let spec = n.spec.get_or_insert_with(Default::default);
        if let Some(a) = availability {
            spec.availability = a as i32;
        }
        for (k, v) in &req.label_add {
            spec.labels.insert(k.clone(), v.clone());
        }
        for k in &req.label_rm {
            spec.labels.remove(k);
        }
        if let Some(role) = role {
            if role == NodeRole::Worker && spec.desired_role() == NodeRole::Manager {
                check_demote(ctx, &view, &node)?;
            }
            spec.desired_role = role as i32;
        }
        ctx.propose(vec![Action::UpdateNode(n)]).await?;
        let view = ctx.store.view();
        let updated = view
            .node(&node.id)
            .ok_or_else(|| ManagerError::NotFound(format!("node {} not found", node.id)))?;
        Ok(ctx.decorate_node(updated))
    })
    .await
}

pub async fn remove(ctx: &ManagerCtx, req: RemoveNodeRequest) -> Result<()> {
    let view = ctx.read_view().await?;
    let node = view.find_node(&req.node)?;
    if node.id == ctx.node_id {
        return Err(ManagerError::FailedPrecondition(format!(
            "node {} is the manager serving this request; demote it or run `orch leave --force` on it instead",
            node.id
        )));
    }
    if is_manager(&node) && !req.force {
        return Err(ManagerError::FailedPrecondition(format!(
            "node {} is a cluster manager and is a member of the raft cluster. It must be demoted to worker before removal",
            node.id
        )));
    }
    if !req.force && node.node_state() != NodeState::Down {
        return Err(ManagerError::FailedPrecondition(format!(
            "node {} is not down and can't be removed",
            node.id
        )));
    }
    if let Some(ms) = node.manager_status.as_ref() {
        if !can_remove_member(&ctx.raft.status(), ms.raft_id) {
            return Err(ManagerError::FailedPrecondition(QUORUM_LOSS.into()));
        }
        let member = orch_api::pb::RaftMember {
            raft_id: ms.raft_id,
            node_id: node.id.clone(),
            addr: ms.addr.clone(),
        };
        ctx.raft.change_membership(&member, false).await?;
    }
    let node = &node;
    retry_conflicts(|| async move {
        let view = ctx.store.view();
        let mut cluster = (**view
            .cluster()
            .ok_or_else(|| ManagerError::Internal("no cluster object".into()))?)
        .clone();
        if !cluster.removed_nodes.contains(&node.id) {
            cluster.removed_nodes.push(node.id.clone());
        }
        let mut actions = vec![Action::UpdateCluster(cluster)];
        if view.node(&node.id).is_some() {
            actions.push(Action::DeleteNode(node.id.clone()));
        }
        ctx.propose(actions).await.map(drop)
    })
    .await?;
    ctx.dispatcher.close(&node.id);
    Ok(())
}
