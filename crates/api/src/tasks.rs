//! Named background tasks that a component starts and, when it stops, waits for: a stop is
//! only done when every task it started has ended, and one that does not end in time is named.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;

/// The tasks one component started, each with a name for the report of a stop that hangs.
#[derive(Default)]
pub struct TaskGroup {
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

impl TaskGroup {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn spawn<F>(&mut self, name: &'static str, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.push((name, tokio::spawn(fut)));
    }

    /// Adds a task someone else spawned.
    pub fn adopt(&mut self, name: &'static str, handle: JoinHandle<()>) {
        self.tasks.push((name, handle));
    }

    /// Takes in every task of `other` (for a stop that waits on both).
    pub fn extend(&mut self, other: TaskGroup) {
        self.tasks.extend(other.tasks);
    }

    /// Waits for every task to end (callers cancel them first). Returns the names of those
    /// still running after `deadline`; those are aborted at their next await.
    pub async fn join(self, deadline: Duration) -> Result<(), Vec<&'static str>> {
        let until = tokio::time::Instant::now() + deadline;
        let mut late = Vec::new();
        for (name, mut handle) in self.tasks {
            if tokio::time::timeout_at(until, &mut handle).await.is_err() {
                handle.abort();
                late.push(name);
            }
        }
        if late.is_empty() {
            Ok(())
        } else {
            Err(late)
        }
    }
}

/// How long a gRPC server gets, once told to stop, to finish the calls in flight before its
/// connections are dropped (streams from peers and agents never finish on their own).
pub const SERVER_DRAIN: Duration = Duration::from_secs(1);

/// Runs `serve` (a server's graceful-shutdown future, tied to `stop`); once `stop` is
/// cancelled, gives it `grace` to finish, then drops it. None when it was dropped.
pub async fn drained<F: Future>(
    serve: F,
    stop: tokio_util::sync::CancellationToken,
    grace: Duration,
) -> Option<F::Output> {
    tokio::select! {
        out = serve => Some(out),
        _ = async {
            stop.cancelled().await;
            tokio::time::sleep(grace).await;
        } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::sync::CancellationToken;

    #[tokio::test(start_paused = true)]
    async fn join_waits_for_every_task_to_end() {
        let stop = CancellationToken::new();
        let ended = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut group = TaskGroup::new();
        for name in ["a", "b"] {
            let stop = stop.clone();
            let ended = ended.clone();
            group.spawn(name, async move {
                stop.cancelled().await;
                // Tidying up takes a while after the cancel.
                tokio::time::sleep(Duration::from_millis(300)).await;
                ended.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
        stop.cancel();
        assert_eq!(group.join(Duration::from_secs(5)).await, Ok(()));
        assert_eq!(ended.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_that_does_not_drain_is_dropped_after_the_grace() {
        let stop = CancellationToken::new();
        let quick = drained(async { 7 }, stop.clone(), SERVER_DRAIN).await;
        assert_eq!(quick, Some(7));
        stop.cancel();
        let started = tokio::time::Instant::now();
        let stuck = drained(std::future::pending::<()>(), stop, SERVER_DRAIN).await;
        assert_eq!(stuck, None);
        assert_eq!(started.elapsed(), SERVER_DRAIN);
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_does_not_end_is_named() {
        let mut group = TaskGroup::new();
        group.spawn("quick", async {});
        group.spawn("wedged", std::future::pending());
        let started = tokio::time::Instant::now();
        assert_eq!(
            group.join(Duration::from_secs(2)).await,
            Err(vec!["wedged"])
        );
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }
}
