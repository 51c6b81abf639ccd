//! Read-modify-write against the store: a proposal carries the versions it read, and the
//! store refuses it when another write got there first. Callers that can decide again from a
//! fresh read do so a few times before giving up.

use std::future::Future;

use crate::error::{ManagerError, Result};
use crate::raft::node::ProposeError;
use crate::state::store::ApplyError;

/// How many times a read-modify-write is retried when another write got there first.
pub const CONFLICT_RETRIES: usize = 5;

pub fn is_conflict(e: &ManagerError) -> bool {
    matches!(
        e,
        ManagerError::Propose(ProposeError::Rejected(ApplyError::VersionConflict { .. }))
    )
}

/// An address handed out between a read and its commit (two allocators raced): the caller
/// allocates again from a fresh read.
pub fn is_address_race(e: &ManagerError) -> bool {
    matches!(
        e,
        ManagerError::Propose(ProposeError::Rejected(
            ApplyError::AddressInUse { .. } | ApplyError::PortInUse(_)
        ))
    )
}

/// Runs `attempt` (which must read afresh each time) until it succeeds, fails with anything
/// but a version conflict, or has conflicted `CONFLICT_RETRIES` times after the first try.
pub async fn retry_conflicts<T, F, Fut>(mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut retries = 0;
    loop {
        match attempt().await {
            Err(e) if is_conflict(&e) && retries < CONFLICT_RETRIES => retries += 1,
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn conflict() -> ManagerError {
        ManagerError::Propose(ProposeError::Rejected(ApplyError::VersionConflict {
            kind: "task",
            id: "t1".into(),
            read: 1,
            current: 2,
        }))
    }

    /// Agents report task states all the time, so `service rm` (one transaction over the
    /// service and all its tasks) often loses the race to a status update; it must decide
    /// again from a fresh read rather than fail with "update out of sequence".
    #[tokio::test]
    async fn conflicts_are_retried_from_a_fresh_attempt() {
        let calls = Cell::new(0);
        let result = retry_conflicts(|| {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move {
                if n <= 3 {
                    Err(conflict())
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(result.ok(), Some(4));
    }

    #[tokio::test]
    async fn endless_conflicts_give_up_with_the_conflict() {
        let calls = Cell::new(0);
        let result: Result<()> = retry_conflicts(|| {
            calls.set(calls.get() + 1);
            async { Err(conflict()) }
        })
        .await;
        assert!(result.as_ref().is_err_and(is_conflict), "{result:?}");
        assert_eq!(calls.get(), CONFLICT_RETRIES + 1);
    }

    #[tokio::test]
    async fn other_errors_are_not_retried() {
        let calls = Cell::new(0);
        let result: Result<()> = retry_conflicts(|| {
            calls.set(calls.get() + 1);
            async { Err(ManagerError::NotFound("service web not found".into())) }
        })
        .await;
        assert!(matches!(result, Err(ManagerError::NotFound(_))));
        assert_eq!(calls.get(), 1);
    }
}
