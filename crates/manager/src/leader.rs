//! The leader-only components, started together when this manager becomes leader and
//! cancelled together (one token) when it stops being leader. A component that panics takes
//! the manager down loudly.

use std::future::Future;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::ctx::ManagerCtx;
use crate::dispatcher::{assignments, heartbeat, status};

fn spawn_component<F>(ctx: &Arc<ManagerCtx>, name: &'static str, fut: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let handle = tokio::spawn(fut.instrument(tracing::info_span!("leader", component = name)));
    let ctx = ctx.clone();
    tokio::spawn(async move {
        if let Err(e) = handle.await {
            if e.is_panic() {
                ctx.fatal(format!("leader component {name} panicked"));
            }
        }
    });
}

pub fn start(ctx: Arc<ManagerCtx>, token: CancellationToken) {
    spawn_component(
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
        &ctx,
        "session_notifier",
        heartbeat::notifier(ctx.clone(), token.clone()),
    );
    spawn_component(
        &ctx,
        "assignments",
        assignments::streamer(ctx.store.clone(), ctx.dispatcher.clone(), token.clone()),
    );
    spawn_component(
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
        &ctx,
        "status_writer",
        status::writer(ctx.dispatcher.clone(), ctx.clone(), token.clone()),
    );
    spawn_component(
        &ctx,
        "orchestrator",
        crate::orchestrator::run(ctx.store.clone(), ctx.clone(), token.clone()),
    );
    spawn_component(
        &ctx,
        "scheduler",
        crate::scheduler::run(ctx.store.clone(), ctx.clone(), token.clone()),
    );
}
