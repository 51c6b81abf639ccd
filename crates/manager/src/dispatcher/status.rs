//! Leader-only: task status reports from every agent, written to the store in batches (one
//! raft entry for many reports), never one proposal per report.

use std::sync::Arc;
use std::time::Duration;

use orch_api::pb::store_action::Action;
use orch_api::pb::TaskStatusUpdate;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::manager::ManagerCtx;

/// Reports per raft entry, at most.
const MAX_BATCH: usize = 4000;
/// How long a report may wait for others to share its entry.
const LINGER: Duration = Duration::from_millis(5);

pub async fn writer(ctx: Arc<ManagerCtx>, token: CancellationToken) {
    let (tx, mut rx) = mpsc::channel::<Vec<TaskStatusUpdate>>(4096);
    ctx.dispatcher.set_status_sink(Some(tx));
    loop {
        let first = tokio::select! {
            _ = token.cancelled() => break,
            batch = rx.recv() => match batch {
                Some(b) => b,
                None => break,
            },
        };
        let mut updates = first;
        let deadline = tokio::time::Instant::now() + LINGER;
        while updates.len() < MAX_BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(more)) => updates.extend(more),
                _ => break,
            }
        }
        let actions: Vec<Action> = updates.into_iter().map(Action::TaskStatus).collect();
        // Status actions never conflict (forward-only, no version check).
        if let Err(e) = ctx.propose(actions).await {
            warn!(error = %e, "task status reports not written; agents resend on their next session");
        }
    }
    ctx.dispatcher.set_status_sink(None);
}
