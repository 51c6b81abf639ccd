//! What a leader component needs of the manager, and nothing more: a way to propose a store
//! transaction and await its commit ([`Proposer`]), and the store itself (views and the change
//! feed, `crate::state::store::Store`). Time is tokio's (`tokio::time::Instant`, timers), so a
//! test pauses and advances it. Components that take these instead of the whole manager are
//! tested alone, with [`testing::Applier`] in place of raft.

use futures::future::BoxFuture;
use orch_api::pb::store_action::Action;

use crate::error::ManagerError;

pub mod conflict;

/// Actions per proposal (one raft entry), at most: leader components split larger batches.
pub const MAX_ACTIONS: usize = 1000;

/// The wall clock a leader loop reads to stamp task states and to compare with stored stamps
/// (restart delays, update monitors). Tests use [`testing::TokioClock`], which moves with
/// tokio's paused time; timers themselves are tokio's.
pub trait Clock: Send + Sync + 'static {
    /// Nanoseconds since the Unix epoch.
    fn now_nanos(&self) -> i64;
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct WallClock;

impl Clock for WallClock {
    fn now_nanos(&self) -> i64 {
        orch_api::now_nanos()
    }
}

/// Proposes actions as one store transaction, stamped with the proposer's clock; resolves
/// with the raft index once the transaction is applied on this manager.
pub trait Proposer: Send + Sync + 'static {
    fn propose(&self, actions: Vec<Action>) -> BoxFuture<'_, Result<u64, ManagerError>>;
}

#[cfg(test)]
pub mod testing {
    use std::sync::Arc;

    use orch_api::pb::{StoreAction, StoreTransaction};
    use parking_lot::Mutex;

    use super::*;
    use crate::state::store::Store;

    /// A wall clock that starts at the real time and then moves only as tokio's clock does
    /// (so a paused test advances it exactly).
    pub struct TokioClock {
        wall: i64,
        start: tokio::time::Instant,
    }

    impl Default for TokioClock {
        fn default() -> Self {
            Self::new()
        }
    }

    impl TokioClock {
        pub fn new() -> Self {
            TokioClock {
                wall: orch_api::now_nanos(),
                start: tokio::time::Instant::now(),
            }
        }
    }

    impl Clock for TokioClock {
        fn now_nanos(&self) -> i64 {
            let elapsed = i64::try_from(self.start.elapsed().as_nanos()).unwrap_or(i64::MAX);
            self.wall.saturating_add(elapsed)
        }
    }

    /// A proposer that applies every transaction to a store at once, as a one-manager raft
    /// would, and keeps them for the test to look at.
    pub struct Applier {
        pub store: Arc<Store>,
        pub proposed: Mutex<Vec<Vec<Action>>>,
    }

    impl Applier {
        pub fn new(store: Arc<Store>) -> Arc<Self> {
            Arc::new(Applier {
                store,
                proposed: Mutex::new(Vec::new()),
            })
        }

        pub fn proposed(&self) -> Vec<Vec<Action>> {
            self.proposed.lock().clone()
        }
    }

    impl Proposer for Applier {
        fn propose(&self, actions: Vec<Action>) -> BoxFuture<'_, Result<u64, ManagerError>> {
            Box::pin(async move {
                let index = self.store.view().index + 1;
                let txn = StoreTransaction {
                    actions: actions
                        .iter()
                        .cloned()
                        .map(|a| StoreAction { action: Some(a) })
                        .collect(),
                    timestamp: orch_api::now_nanos(),
                };
                self.proposed.lock().push(actions);
                self.store
                    .apply(index, &txn)
                    .map_err(|e| ManagerError::Internal(e.to_string()))?;
                Ok(index)
            })
        }
    }
}
