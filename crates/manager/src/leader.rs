//! The leader-only components, started together when this manager becomes leader and
//! cancelled together (one token) when it stops being leader. A component that panics takes
//! the manager down loudly.

use std::future::Future;
use std::sync::Arc;

use orch_api::tasks::TaskGroup;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::ctx::ManagerCtx;
use crate::dispatcher::{assignments, heartbeat, status};
use crate::handles::WallClock;

fn spawn_component<F>(group: &mut TaskGroup, ctx: &Arc<ManagerCtx>, name: &'static str, fut: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let handle = tokio::spawn(fut.instrument(tracing::info_span!("leader", component = name)));
    let ctx = ctx.clone();
    group.spawn(name, async move {
        if let Err(e) = handle.await {
            if e.is_panic() {
                ctx.fatal(format!("leader component {name} panicked"));
            }
        }
    });
}

/// Starts every leader component; the group ends once `token` is cancelled and each has
/// returned.
pub fn start(ctx: Arc<ManagerCtx>, token: CancellationToken) -> TaskGroup {
    let mut group = TaskGroup::new();
    spawn_component(
        &mut group,
        &ctx,
        "heartbeat_monitor",
        heartbeat::monitor(
            ctx.store.clone(),
            ctx.dispatcher.clone(),
            ctx.clone(),
            token.clone(),
        ),
    );
    spawn_component(
        &mut group,
        &ctx,
        "session_notifier",
        heartbeat::notifier(ctx.clone(), token.clone()),
    );
    spawn_component(
        &mut group,
        &ctx,
        "assignments",
        assignments::streamer(
            ctx.store.clone(),
            ctx.dispatcher.clone(),
            ctx.data_key.clone(),
            token.clone(),
        ),
    );
    spawn_component(
        &mut group,
        &ctx,
        "role_manager",
        crate::roles::role_manager(
            ctx.store.clone(),
            ctx.clone(),
            ctx.raft.clone(),
            token.clone(),
        ),
    );
    spawn_component(
        &mut group,
        &ctx,
        "status_writer",
        status::writer(ctx.dispatcher.clone(), ctx.clone(), token.clone()),
    );
    spawn_component(
        &mut group,
        &ctx,
        "orchestrator",
        crate::orchestrator::run(ctx.store.clone(), ctx.clone(), WallClock, token.clone()),
    );
    spawn_component(
        &mut group,
        &ctx,
        "scheduler",
        crate::scheduler::run(ctx.store.clone(), ctx.clone(), WallClock, token.clone()),
    );
    group
}
