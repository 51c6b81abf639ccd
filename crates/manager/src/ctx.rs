//! What the manager's gRPC services share: the raft handle, the store, TLS, the sessions'
//! registry, and the routing of leader-only requests (serve here, or forward to the leader).
//! Leader components take narrower handles (`crate::handles`). `crate::manager` builds this
//! and wires everything; nothing here imports a component.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use orch_api::pb::store_action::Action;
use orch_api::pb::{Node, Reachability, StoreAction, StoreTransaction};
use orch_api::tls::TlsContext;
use orch_api::transport::tls_channel;
use parking_lot::Mutex;
use rustls::ClientConfig;
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tonic::{Request, Status};
use tracing::error;

use crate::dispatcher::sessions::Dispatcher;
use crate::error::ManagerError;
use crate::raft::node::{ProposeError, RaftHandle, RaftOptions};
use crate::state::store::{Store, Tables};

/// Metadata set on requests a follower forwards to the leader.
pub const FORWARDED: &str = "orch-forwarded";

/// How long a manager without a known leader waits for one before failing a request.
pub const LEADER_WAIT: Duration = Duration::from_secs(3);

/// A slot holding the manager while this node is one (empty on workers).
pub type ManagerSlot = Arc<ArcSwapOption<ManagerCtx>>;

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
    /// Seals secrets in the store (`crate::data::seal`).
    pub data_key: Arc<crate::data::seal::DataKey>,
    pub(crate) leader_conn: Mutex<Option<(String, Channel)>>,
    pub(crate) fatal: mpsc::UnboundedSender<String>,
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
