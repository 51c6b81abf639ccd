//! The cluster object: settings and join tokens (the CA key never leaves the managers).

use std::time::Duration;

use orch_api::pb::store_action::Action;
use orch_api::pb::{Cluster, UpdateClusterRequest};

use crate::ca::MIN_CERT_EXPIRY;
use crate::ctx::ManagerCtx;
use crate::error::{ManagerError, Result};
use crate::handles::conflict::retry_conflicts;

/// The shortest heartbeat period accepted.
pub const MIN_HEARTBEAT: Duration = Duration::from_millis(100);

/// A copy safe to hand to clients.
pub fn sanitize(cluster: &Cluster) -> Cluster {
    let mut c = cluster.clone();
    if let Some(root) = c.root_ca.as_mut() {
        root.ca_key_pem.clear();
    }
    c
}

pub async fn get(ctx: &ManagerCtx) -> Result<Cluster> {
    let view = ctx.read_view().await?;
    let cluster = view
        .cluster()
        .ok_or_else(|| ManagerError::Unavailable("the cluster is not initialized yet".into()))?;
    Ok(sanitize(cluster))
}

fn validate(req: &UpdateClusterRequest) -> Result<()> {
    let invalid = |m: String| Err(ManagerError::InvalidArgument(m));
    if let Some(limit) = req.task_history_retention_limit {
        if limit < 0 {
            return invalid(format!(
                "task history retention limit must be 0 or more, not {limit}"
            ));
        }
    }
    if req.snapshot_interval == Some(0) {
        return invalid("snapshot interval must be at least 1".into());
    }
    if let Some(hb) = req.heartbeat_period {
        if hb < MIN_HEARTBEAT.as_nanos() as i64 {
            return invalid(format!(
                "dispatcher heartbeat period must be at least {MIN_HEARTBEAT:?}"
            ));
        }
    }
    if let Some(expiry) = req.node_cert_expiry {
        if expiry < MIN_CERT_EXPIRY.as_nanos() as i64 {
            return invalid(format!(
                "minimum certificate expiry time is {}",
                humanize(MIN_CERT_EXPIRY)
            ));
        }
    }
    Ok(())
}

fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}h{}m{}s", s / 3600, (s % 3600) / 60, s % 60)
}

pub async fn update(ctx: &ManagerCtx, req: UpdateClusterRequest) -> Result<Cluster> {
    validate(&req)?;
    let req = &req;
    retry_conflicts(|| async move {
        let view = ctx.read_view().await?;
        let current = view.cluster().ok_or_else(|| {
            ManagerError::Unavailable("the cluster is not initialized yet".into())
        })?;
        super::check_read_version("cluster", &current.id, req.version, current.meta.as_ref())?;
        let mut c = (**current).clone();
        let spec = c.spec.get_or_insert_with(Default::default);
        if let Some(v) = req.task_history_retention_limit {
            spec.task_history_retention_limit = v;
        }
        if let Some(v) = req.snapshot_interval {
            spec.snapshot_interval = v;
        }
        if let Some(v) = req.heartbeat_period {
            spec.heartbeat_period = v;
        }
        if let Some(v) = req.node_cert_expiry {
            spec.node_cert_expiry = v;
        }
        if let Some(root) = c.root_ca.as_mut() {
            let tokens = root.join_tokens.get_or_insert_with(Default::default);
            if req.rotate_worker_token {
                tokens.worker = orch_api::token::generate(&root.ca_cert_pem);
            }
            if req.rotate_manager_token {
                tokens.manager = orch_api::token::generate(&root.ca_cert_pem);
            }
        }
        ctx.propose(vec![Action::UpdateCluster(c)]).await?;
        let view = ctx.store.view();
        let cluster = view
            .cluster()
            .ok_or_else(|| ManagerError::Internal("cluster vanished".into()))?;
        Ok(sanitize(cluster))
    })
    .await
}
