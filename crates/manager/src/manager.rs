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
use orch_api::pb::store_action::Action;
use orch_api::pb::{Node, Reachability, StoreAction, StoreTransaction};
use orch_api::tls::TlsContext;
use orch_api::transport::{tls_channel, tls_incoming};
use parking_lot::Mutex;
use rustls::ClientConfig;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Server};
use tonic::{Request, Status};
use tracing::{debug, error, info, Instrument};

use crate::ca::service::CaService;
use crate::controlapi::ControlApi;
use crate::dispatcher::{Dispatcher, DispatcherService};
use crate::error::ManagerError;
use crate::raft::node::{ProposeError, RaftError, RaftHandle, RaftOptions};
use crate::raft::service::RaftService;
use crate::raft::storage::LogStore;
use crate::raft::transport::{GrpcTransport, MAX_RAFT_MESSAGE};
use crate::state::store::{Store, Tables};

/// Metadata set on requests a follower forwards to the leader.
pub const FORWARDED: &str = "orch-forwarded";

/// How long a manager without a known leader waits for one before failing a request.
pub const LEADER_WAIT: Duration = Duration::from_secs(3);

/// A slot holding the manager while this node is one (empty on workers).
pub type ManagerSlot = Arc<ArcSwapOption<ManagerCtx>>;

pub struct ManagerParams {
    pub node_id: String,
    pub raft_id: u64,
    pub advertise_addr: String,
    pub raft: RaftOptions,
    pub tls: TlsContext,
    /// Members to reach before the store knows any (a manager that just joined).
    pub initial_peers: Vec<orch_api::pb::RaftMember>,
}

/// What every manager component shares.
pub struct ManagerCtx {
    pub node_id: String,
    pub raft_id: u64,
    pub raft: RaftHandle,
    pub store: Arc<Store>,
    pub tls: TlsContext,
    pub client_tls: Arc<ClientConfig>,
    pub advertise_addr: String,
    pub raft_options: RaftOptions,
    pub dispatcher: Arc<Dispatcher>,
    leader_conn: Mutex<Option<(String, Channel)>>,
    fatal: mpsc::UnboundedSender<String>,
}

impl crate::handles::Proposer for ManagerCtx {
    fn propose(
        &self,
        actions: Vec<Action>,
    ) -> futures::future::BoxFuture<'_, Result<u64, ManagerError>> {
        Box::pin(ManagerCtx::propose(self, actions))
    }
}

/// Where a leader-only request runs.
pub enum Route {
    Local,
    /// To the leader (this raft ID) over this channel; run the call under
    /// [`ManagerCtx::forwarded`].
    Forward(Channel, u64),
}

impl ManagerCtx {
    /// Decides whether to serve `request` here (leader) or forward it to the leader. A request
    /// that was already forwarded once is not forwarded again. With no leader known, waits up
    /// to `LEADER_WAIT` (about one election) before giving up.
    pub async fn route<T>(&self, request: &Request<T>) -> Result<Route, Status> {
        let mut watch = self.raft.watch_status();
        let deadline = tokio::time::Instant::now() + LEADER_WAIT;
        loop {
            let status = watch.borrow_and_update().clone();
            if status.is_leader {
                return Ok(Route::Local);
            }
            if request.metadata().contains_key(FORWARDED) {
                return Err(Status::unavailable(
                    "leadership changed while the request was forwarded; retry",
                ));
            }
            let addr = (status.leader != 0 && !status.removed)
                .then(|| {
                    self.store
                        .view()
                        .node_by_raft_id(status.leader)
                        .and_then(|n| n.manager_status.as_ref().map(|m| m.addr.clone()))
                })
                .flatten();
            if let Some(addr) = addr {
                let mut cached = self.leader_conn.lock();
                if let Some((cached_addr, channel)) = cached.as_ref() {
                    if *cached_addr == addr {
                        return Ok(Route::Forward(channel.clone(), status.leader));
                    }
                }
                let channel = tls_channel(&addr, self.client_tls.clone())
                    .map_err(|e| Status::unavailable(e.to_string()))?;
                *cached = Some((addr, channel.clone()));
                return Ok(Route::Forward(channel, status.leader));
            }
            if status.removed || tokio::time::Instant::now() >= deadline {
                return Err(Status::unavailable(ProposeError::NoLeader.to_string()));
            }
            let _ = tokio::time::timeout_at(deadline, watch.changed()).await;
        }
    }

    /// Runs a call forwarded to `leader`, giving up as soon as this manager sees leadership
    /// move on: a leader cut off from the cluster may never answer, and the connection to it
    /// would take the transport's keepalive timeout to fail. The caller cannot know whether a
    /// write it forwarded was applied, and is told so.
    pub async fn forwarded<T>(
        &self,
        leader: u64,
        call: impl std::future::Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        let mut watch = self.raft.watch_status();
        tokio::select! {
            result = call => result,
            _ = watch.wait_for(|s| s.leader != leader) => Err(Status::unavailable(
                "the leader changed while the request was forwarded to it; it may or may not have been applied",
            )),
        }
    }

    /// Proposes actions as one transaction; returns once applied here.
    pub async fn propose(&self, actions: Vec<Action>) -> Result<u64, ManagerError> {
        let txn = StoreTransaction {
            actions: actions
                .into_iter()
                .map(|a| StoreAction { action: Some(a) })
                .collect(),
            timestamp: orch_api::now_nanos(),
        };
        Ok(self.raft.propose(txn).await?)
    }

    /// A view that includes every write committed before the call (leader only).
    pub async fn read_view(&self) -> Result<Tables, ManagerError> {
        self.raft.read_barrier().await?;
        Ok(self.store.view())
    }

    /// Fills in the live parts of a node's manager status (leader, reachability).
    pub fn decorate_node(&self, node: &Node) -> Node {
        let mut node = node.clone();
        let status = self.raft.status();
        if let Some(ms) = node.manager_status.as_mut() {
            ms.leader = ms.raft_id == status.leader && status.leader != 0;
            let reachable = if ms.raft_id == self.raft_id {
                true
            } else {
                status.reachable.get(&ms.raft_id).copied().unwrap_or(false)
            };
            ms.reachability = if reachable {
                Reachability::Reachable
            } else {
                Reachability::Unreachable
            } as i32;
        }
        node
    }

    /// Reports an unrecoverable failure: the node goes down loudly.
    pub fn fatal(&self, what: String) {
        error!(%what, "fatal manager error");
        let _ = self.fatal.send(what);
    }
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
    raft_task: JoinHandle<Result<(), RaftError>>,
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
        let server_shutdown = shutdown.clone();
        let server_ctx = ctx.clone();
        tokio::spawn(
            async move {
                if let Err(e) = router
                    .serve_with_incoming_shutdown(incoming, server_shutdown.cancelled_owned())
                    .await
                {
                    server_ctx.fatal(format!("manager gRPC server failed: {e}"));
                }
            }
            .instrument(tracing::info_span!("manager_server", %local_addr)),
        );
        let disk_ctx = ctx.clone();
        tokio::spawn(crate::raft::disk::watch(
            log_dir,
            crate::raft::disk::DISK_CHECK_PERIOD,
            shutdown.clone(),
            move |why| disk_ctx.fatal(why),
        ));
        tokio::spawn(
            leader_supervisor(ctx.clone(), shutdown.clone())
                .instrument(tracing::info_span!("leader_supervisor")),
        );
        info!(%local_addr, raft_id = ctx.raft_id, "manager started");
        Ok(Manager {
            ctx,
            local_addr,
            raft_task,
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
            tokio::select! {
                _ = self.shutdown.cancelled() => return ManagerExit::Shutdown,
                result = &mut self.raft_task => {
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
                    if changed.is_err() {
                        // The raft node stopped: say why (a full disk, say), not just that.
                        self.shutdown.cancel();
                        let why = tokio::time::timeout(Duration::from_secs(5), &mut self.raft_task).await;
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

    pub fn stop(&self) {
        self.shutdown.cancel();
    }
}

/// Starts the leader-only components when this manager becomes leader and cancels them
/// together when it stops being leader.
async fn leader_supervisor(ctx: Arc<ManagerCtx>, shutdown: CancellationToken) {
    let mut status = ctx.raft.watch_status();
    let mut running: Option<CancellationToken> = None;
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
                crate::leader::start(ctx.clone(), token.clone());
                running = Some(token);
            }
            (false, Some(token)) => {
                token.cancel();
                ctx.dispatcher.close_all();
                running = None;
            }
            _ => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            changed = status.changed() => if changed.is_err() { break },
        }
    }
    if let Some(token) = running {
        token.cancel();
    }
    ctx.dispatcher.close_all();
}
