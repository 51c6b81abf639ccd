//! A running manager: the raft node and store, the mTLS gRPC server (raft, CA, control,
//! dispatcher), and the leader-only components, which start together when this manager
//! becomes leader and stop together when it loses leadership.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use orch_api::pb::ca_server::CaServer;
use orch_api::pb::control_server::ControlServer;
use orch_api::pb::dispatcher_server::DispatcherServer;
use orch_api::pb::raft_server::RaftServer;
use orch_api::tasks::TaskGroup;
use orch_api::tls::TlsContext;
use orch_api::transport::tls_incoming;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tracing::{debug, info, warn, Instrument};

use crate::ca::service::CaService;
use crate::controlapi::ControlApi;
use crate::ctx::{ManagerCtx, ManagerSlot};
use crate::dispatcher::{Dispatcher, DispatcherService};
use crate::error::ManagerError;
use crate::raft::node::{RaftError, RaftOptions};
use crate::raft::service::RaftService;
use crate::raft::storage::LogStore;
use crate::raft::transport::{GrpcTransport, MAX_RAFT_MESSAGE};
use crate::state::store::Store;

pub struct ManagerParams {
    pub node_id: String,
    pub raft_id: u64,
    pub advertise_addr: String,
    pub raft: RaftOptions,
    pub tls: TlsContext,
    /// Members to reach before the store knows any (a manager that just joined).
    pub initial_peers: Vec<orch_api::pb::RaftMember>,
    /// The cluster's data key (see `crate::data::seal`).
    pub data_key: crate::data::seal::DataKey,
}

/// Why a manager stopped.
#[derive(Debug)]
pub enum ManagerExit {
    /// Asked to stop.
    Shutdown,
    /// This node was removed from the raft cluster (demoted or left).
    Removed,
    Failed(String),
}

pub struct Manager {
    pub ctx: Arc<ManagerCtx>,
    pub local_addr: SocketAddr,
    /// Taken once it has ended (a JoinHandle cannot be awaited twice).
    raft_task: Option<JoinHandle<Result<(), RaftError>>>,
    /// The gRPC server, the disk watch and the leader supervisor.
    tasks: TaskGroup,
    shutdown: CancellationToken,
    fatal_rx: mpsc::UnboundedReceiver<String>,
}

impl Manager {
    pub async fn start(
        params: ManagerParams,
        log: LogStore,
        listener: TcpListener,
        parent: &CancellationToken,
    ) -> Result<Manager, ManagerError> {
        let shutdown = parent.child_token();
        let store = Arc::new(Store::new());
        let client_tls = params
            .tls
            .client_config()
            .map_err(|e| ManagerError::Internal(e.to_string()))?;
        let server_tls = params
            .tls
            .server_config()
            .map_err(|e| ManagerError::Internal(e.to_string()))?;
        let transport = Arc::new(GrpcTransport::new(
            params.raft_id,
            client_tls.clone(),
            shutdown.clone(),
        ));
        let log_dir = log
            .path()
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default();
        for peer in &params.initial_peers {
            crate::raft::node::Transport::set_peer(transport.as_ref(), peer);
        }
        let (raft, raft_task) = crate::raft::node::start(
            params.raft.clone(),
            log,
            store.clone(),
            transport.clone(),
            shutdown.clone(),
        )
        .map_err(|e| ManagerError::Internal(e.to_string()))?;
        transport.attach(raft.clone());
        let (fatal, fatal_rx) = mpsc::unbounded_channel();
        let ctx = Arc::new(ManagerCtx {
            node_id: params.node_id,
            raft_id: params.raft_id,
            raft,
            store,
            tls: params.tls,
            client_tls,
            advertise_addr: params.advertise_addr,
            raft_options: params.raft,
            dispatcher: Arc::new(Dispatcher::default()),
            data_key: Arc::new(params.data_key),
            leader_conn: Mutex::new(None),
            fatal,
        });
        let local_addr = listener
            .local_addr()
            .map_err(|e| ManagerError::Internal(e.to_string()))?;
        let incoming = tls_incoming(listener, server_tls, shutdown.clone());
        let slot: ManagerSlot = Arc::new(ArcSwapOption::from(Some(ctx.clone())));
        let router = Server::builder()
            .tcp_nodelay(true)
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(5)))
            .add_service(
                RaftServer::new(RaftService::new(ctx.clone()))
                    .max_decoding_message_size(MAX_RAFT_MESSAGE)
                    .max_encoding_message_size(MAX_RAFT_MESSAGE),
            )
            .add_service(CaServer::new(CaService::new(ctx.clone())))
            .add_service(
                ControlServer::new(ControlApi::new(slot))
                    .max_decoding_message_size(64 << 20)
                    .max_encoding_message_size(256 << 20),
            )
            .add_service(
                DispatcherServer::new(DispatcherService::new(ctx.clone()))
                    .max_decoding_message_size(64 << 20)
                    .max_encoding_message_size(256 << 20),
            );
        let mut tasks = TaskGroup::new();
        let server_shutdown = shutdown.clone();
        let server_ctx = ctx.clone();
        tasks.spawn(
            "manager_server",
            async move {
                let serve = router.serve_with_incoming_shutdown(
                    incoming,
                    server_shutdown.clone().cancelled_owned(),
                );
                if let Some(Err(e)) =
                    orch_api::tasks::drained(serve, server_shutdown, orch_api::tasks::SERVER_DRAIN)
                        .await
                {
                    server_ctx.fatal(format!("manager gRPC server failed: {e}"));
                }
            }
            .instrument(tracing::info_span!("manager_server", %local_addr)),
        );
        let disk_ctx = ctx.clone();
        tasks.spawn(
            "disk_watch",
            crate::raft::disk::watch(
                log_dir,
                crate::raft::disk::DISK_CHECK_PERIOD,
                shutdown.clone(),
                move |why| disk_ctx.fatal(why),
            ),
        );
        tasks.spawn(
            "leader_supervisor",
            leader_supervisor(ctx.clone(), shutdown.clone())
                .instrument(tracing::info_span!("leader_supervisor")),
        );
        info!(%local_addr, raft_id = ctx.raft_id, "manager started");
        Ok(Manager {
            ctx,
            local_addr,
            raft_task: Some(raft_task),
            tasks,
            shutdown,
            fatal_rx,
        })
    }

    /// Runs until the manager stops: asked to, removed from raft, or failed.
    pub async fn wait(&mut self) -> ManagerExit {
        let mut status = self.ctx.raft.watch_status();
        loop {
            if status.borrow_and_update().removed {
                self.shutdown.cancel();
                return ManagerExit::Removed;
            }
            // Biased: a stop that was asked for wins over the raft node ending because of it
            // (a race the in-process node test hit: "manager failed: raft node stopped").
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return ManagerExit::Shutdown,
                result = raft_ended(&mut self.raft_task) => {
                    self.raft_task = None;
                    self.shutdown.cancel();
                    return match result {
                        Ok(Ok(())) => ManagerExit::Shutdown,
                        Ok(Err(e)) => ManagerExit::Failed(e.to_string()),
                        Err(e) => ManagerExit::Failed(format!("raft task panicked: {e}")),
                    };
                }
                what = self.fatal_rx.recv() => {
                    self.shutdown.cancel();
                    return ManagerExit::Failed(what.unwrap_or_else(|| "manager failed".into()));
                }
                changed = status.changed() => {
                    if changed.is_err() && self.shutdown.is_cancelled() {
                        return ManagerExit::Shutdown;
                    }
                    if changed.is_err() {
                        // The raft node stopped: say why (a full disk, say), not just that.
                        self.shutdown.cancel();
                        let why = tokio::time::timeout(Duration::from_secs(5), raft_ended(&mut self.raft_task)).await;
                        if why.is_ok() {
                            self.raft_task = None;
                        }
                        return ManagerExit::Failed(match why {
                            Ok(Ok(Err(e))) => e.to_string(),
                            Ok(Err(e)) => format!("raft task panicked: {e}"),
                            _ => "raft node stopped".into(),
                        });
                    }
                }
            }
        }
    }

    /// Stops the manager and waits until every part of it has ended: the raft node (its last
    /// write synced), the gRPC server, the leader components. Names the parts still running
    /// after `deadline` (a write wedged on a full disk, say).
    pub async fn stop(self, deadline: Duration) -> Result<(), Vec<&'static str>> {
        self.shutdown.cancel();
        let mut tasks = self.tasks;
        if let Some(raft) = self.raft_task {
            tasks.adopt(
                "raft_node",
                tokio::spawn(async move {
                    let _ = raft.await;
                }),
            );
        }
        tasks.join(deadline).await
    }
}

/// The raft task's result; pending forever once it has been taken.
async fn raft_ended(
    task: &mut Option<JoinHandle<Result<(), RaftError>>>,
) -> Result<Result<(), RaftError>, tokio::task::JoinError> {
    match task {
        Some(task) => task.await,
        None => std::future::pending().await,
    }
}

/// Starts the leader-only components when this manager becomes leader and cancels them
/// together when it stops being leader.
async fn leader_supervisor(ctx: Arc<ManagerCtx>, shutdown: CancellationToken) {
    let mut status = ctx.raft.watch_status();
    let mut running: Option<(CancellationToken, TaskGroup)> = None;
    loop {
        let is_leader = status.borrow_and_update().is_leader;
        match (is_leader, running.as_ref()) {
            (true, None) => {
                // A new leader holds every committed entry, but may not have applied the last
                // ones of the previous term until it commits one of its own: the orchestrator
                // and the dispatcher must not act on a store that misses them (they would
                // create a task a second time, or hand out stale assignments).
                let barrier = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    b = ctx.raft.read_barrier() => b,
                };
                if let Err(e) = barrier {
                    debug!(error = %e, "leader not ready yet");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                if !ctx.raft.is_leader() {
                    continue;
                }
                let token = shutdown.child_token();
                let components = crate::leader::start(ctx.clone(), token.clone());
                running = Some((token, components));
            }
            (false, Some(_)) => {
                if let Some(components) = running.take() {
                    stop_leading(&ctx, components).await;
                }
            }
            _ => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            changed = status.changed() => if changed.is_err() { break },
        }
    }
    match running {
        Some(components) => stop_leading(&ctx, components).await,
        None => ctx.dispatcher.close_all(),
    }
}

/// How long the leader components get to return once cancelled.
const LEADER_STOP_DEADLINE: Duration = Duration::from_secs(5);

/// Cancels the leader components, closes the agents' sessions, and waits for the components
/// to return (a new term's components never overlap an old term's).
async fn stop_leading(ctx: &ManagerCtx, (token, components): (CancellationToken, TaskGroup)) {
    token.cancel();
    ctx.dispatcher.close_all();
    if let Err(late) = components.join(LEADER_STOP_DEADLINE).await {
        warn!(?late, "leader components did not stop in time");
    }
}
