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
