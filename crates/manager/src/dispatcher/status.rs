//! Leader-only: task status reports from every agent, written to the store in batches (one
//! raft entry for many reports), never one proposal per report.

use std::sync::Arc;
use std::time::Duration;

use orch_api::pb::store_action::Action;
use orch_api::pb::TaskStatusUpdate;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::Dispatcher;
use crate::handles::Proposer;

/// Reports per raft entry, at most.
const MAX_BATCH: usize = 4000;
/// How long a report may wait for others to share its entry.
const LINGER: Duration = Duration::from_millis(5);

pub async fn writer<P: Proposer + ?Sized>(
    dispatcher: Arc<Dispatcher>,
    proposer: Arc<P>,
    token: CancellationToken,
) {
    let (tx, mut rx) = mpsc::channel::<Vec<TaskStatusUpdate>>(4096);
    dispatcher.set_status_sink(Some(tx));
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
        while let Err(e) = proposer.propose(actions.clone()).await {
            warn!(error = %e, "task status reports not written yet; trying again");
            tokio::select! {
                _ = token.cancelled() => {
                    // No longer the leader: its sessions end, and agents send every status
                    // again to the next one.
                    dispatcher.set_status_sink(None);
                    return;
                }
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }
    dispatcher.set_status_sink(None);
}

#[cfg(test)]
mod tests {
    use orch_api::pb::{TaskState, TaskStatus};

    use super::*;
    use crate::handles::testing::Applier;
    use crate::state::store::Store;

    fn report(task: &str) -> TaskStatusUpdate {
        TaskStatusUpdate {
            task_id: task.into(),
            status: Some(TaskStatus {
                state: TaskState::Running as i32,
                ..Default::default()
            }),
        }
    }

    /// Reports that arrive within the linger share one proposal; later ones get their own.
    #[tokio::test(start_paused = true)]
    async fn reports_arriving_together_share_one_proposal() {
        let applier = Applier::new(Arc::new(Store::new()));
        let dispatcher = Arc::new(Dispatcher::default());
        let token = CancellationToken::new();
        let task = tokio::spawn(writer(dispatcher.clone(), applier.clone(), token.clone()));
        // Three sessions' batches at once, then one more well after the linger.
        assert!(
            dispatcher
                .forward_statuses(vec![report("a"), report("b")])
                .await
        );
        assert!(dispatcher.forward_statuses(vec![report("c")]).await);
        assert!(dispatcher.forward_statuses(vec![report("d")]).await);
        tokio::time::sleep(LINGER * 4).await;
        assert!(dispatcher.forward_statuses(vec![report("e")]).await);
        tokio::time::sleep(LINGER * 4).await;
        let ids: Vec<Vec<String>> = applier
            .proposed()
            .iter()
            .map(|actions| {
                actions
                    .iter()
                    .map(|a| match a {
                        Action::TaskStatus(u) => u.task_id.clone(),
                        other => panic!("not a status: {other:?}"),
                    })
                    .collect()
            })
            .collect();
        assert_eq!(ids, vec![vec!["a", "b", "c", "d"], vec!["e"]]);
        // Cancelled (no longer the leader): reports are refused, so sessions end and agents
        // send them again to the next leader.
        token.cancel();
        task.await.expect("the writer ends");
        assert!(!dispatcher.forward_statuses(vec![report("f")]).await);
    }
}
