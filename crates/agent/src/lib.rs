//! The orch agent: keeps a session with the dispatcher and runs the node's tasks through the
//! local Docker Engine.

pub mod data;
pub mod engine;
pub mod exec;
pub mod logs;
pub mod net;
pub mod session;
pub mod shared;
pub mod sim;
pub mod task;
pub mod worker;

use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::session::{Registration, SessionState};

/// What a node's agent is started with.
pub struct AgentParams {
    pub exec: Arc<dyn exec::Executor>,
    pub tls: Arc<rustls::ClientConfig>,
    /// Manager addresses to try, best first; the session keeps them up to date.
    pub managers: Arc<Mutex<Vec<String>>>,
    pub registration: Arc<Mutex<Registration>>,
    /// Where the session publishes its state.
    pub state: watch::Sender<SessionState>,
    /// The secrets and configs the node's tasks use (the executor reads them).
    pub data: data::DataStore,
    /// The overlay data plane (None: tasks on networks are refused).
    pub net: Option<Arc<net::plane::Plane>>,
}

/// Starts a node's agent: the session with the dispatcher and the worker that runs the node's
/// tasks, wired together, until `shutdown`.
pub fn start(params: AgentParams, shutdown: &CancellationToken) -> orch_api::tasks::TaskGroup {
    let mut tasks = orch_api::tasks::TaskGroup::new();
    let registry: shared::TaskRegistry = Default::default();
    let contact = shared::Contact::default();
    let (assign_tx, assign_rx) = mpsc::channel(64);
    let (status_tx, status_rx) = mpsc::channel(64);
    let generation_rx = session::generations(params.state.subscribe());
    tasks.spawn(
        "worker",
        worker::run(
            worker::WorkerParams {
                exec: params.exec.clone(),
                registry: registry.clone(),
                contact: contact.clone(),
                assignments: assign_rx,
                statuses: status_tx,
                session_generation: generation_rx,
            },
            shutdown.clone(),
        )
        .instrument(tracing::info_span!("worker")),
    );
    tasks.spawn(
        "session",
        session::run(
            session::SessionParams {
                exec: params.exec,
                contact,
                tasks: registry,
                tls: params.tls,
                managers: params.managers,
                registration: params.registration,
                state: params.state,
                assignments: assign_tx,
                statuses: status_rx,
                data: params.data,
                net: params.net.clone(),
            },
            shutdown.clone(),
        )
        .instrument(tracing::info_span!("session")),
    );
    if let Some(net) = params.net {
        tasks.spawn("network", net.run(shutdown.clone()));
    }
    tasks
}
