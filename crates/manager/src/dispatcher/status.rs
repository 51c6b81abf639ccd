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
        // Status actions never conflict (forward-only, no version check), and writing one
        // twice is harmless: a proposal that failed (a timeout, say) is tried again while
        // this manager leads. An agent sends each report once per session, so one given up
        // here would be lost until the agent's next session (when it sends every status).
        let mut backoff = Duration::from_millis(100);
        while let Err(e) = ctx.propose(actions.clone()).await {
            warn!(error = %e, "task status reports not written yet; trying again");
            tokio::select! {
                _ = token.cancelled() => {
                    // No longer the leader: its sessions end, and agents send every status
                    // again to the next one.
                    ctx.dispatcher.set_status_sink(None);
                    return;
                }
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }
    ctx.dispatcher.set_status_sink(None);
}
