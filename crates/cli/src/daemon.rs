//! The node process (`orch daemon`): serves the local control socket, keeps the agent's
//! session with the leader, renews the node certificate before it expires (and when the node's
//! role changes), and runs the manager stack while the node is a manager: promotion starts it
//! (joining raft), demotion stops it.

use std::fs;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use arc_swap::ArcSwapOption;
use orch_agent::session::{Registration, SessionState};
use orch_api::pb::ca_client::CaClient;
use orch_api::pb::control_server::ControlServer;
use orch_api::pb::node_control_server::{NodeControl, NodeControlServer};
use orch_api::pb::raft_client::RaftClient;
use orch_api::pb::{
    Empty, InfoResponse, LeaveRequest, LocalNodeState, NodeRole, RaftJoinRequest,
    RenewNodeCertificateRequest, StoreDigestResponse,
};
use orch_api::tasks::TaskGroup;
use orch_api::tls::{new_key_and_csr, CertInfo, NodeIdentity, TlsContext};
use orch_api::transport::{bind_unix, tls_channel, unix_incoming};
use orch_manager::controlapi::ControlApi;
use orch_manager::data::seal::DataKey;
use orch_manager::raft::node::RaftOptions;
use orch_manager::raft::storage::LogStore;
use orch_manager::{Manager, ManagerExit, ManagerParams, ManagerSlot};
use parking_lot::Mutex;
use rand::Rng;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::{error, info, warn, Instrument};

use crate::datadir::{write_atomic, DataDir, NodeConfig, RaftPeer};

/// Everything the node process shares between its parts.
struct Node {
    dd: DataDir,
    config: Mutex<NodeConfig>,
    identity: Arc<NodeIdentity>,
    tls: TlsContext,
    slot: ManagerSlot,
    session: watch::Receiver<SessionState>,
    managers: Arc<Mutex<Vec<String>>>,
    /// Bumped whenever the certificate is replaced.
    cert_changed: watch::Sender<CertInfo>,
    shutdown: CancellationToken,
    /// Set by `leave`: wipe the node's state on the way out.
    leaving: Mutex<bool>,
    manager_error: Mutex<String>,
    /// The secrets and configs the agent holds (in memory).
    data: orch_agent::data::DataStore,
    /// A listener bound by the caller, for the first manager term.
    manager_listener: Mutex<Option<tokio::net::TcpListener>>,
}

impl Node {
    fn advertise_ip(&self) -> String {
        let addr = self.config.lock().advertise_addr.clone();
        addr.parse::<SocketAddr>()
            .map(|a| a.ip().to_string())
            .unwrap_or(addr)
    }

    fn save_config(&self) {
        let config = self.config.lock().clone();
        if let Err(e) = self.dd.save_config(&config) {
            warn!(error = %e, "cannot save node config");
        }
    }
}

/// Loads the node's identity, finishing a renewal that a crash interrupted (the key is renamed
/// into place before the certificate).
fn load_identity(dd: &DataDir) -> Result<(String, Arc<NodeIdentity>)> {
    let (ca, cert, key) = dd.read_certs()?;
    match NodeIdentity::from_pem(&cert, &key) {
        Ok(identity) => Ok((ca, Arc::new(identity))),
        Err(first) => {
            let pending = dd.node_cert().with_extension("crt.new");
            if let Ok(new_cert) = fs::read_to_string(&pending) {
                if let Ok(identity) = NodeIdentity::from_pem(&new_cert, &key) {
                    fs::rename(&pending, dd.node_cert())?;
                    return Ok((ca, Arc::new(identity)));
                }
            }
            Err(anyhow!(
                "node certificate in {} is unusable: {first}",
                dd.certs_dir().display()
            ))
        }
    }
}

/// How long a new node process waits for a killed one, still exiting, to let go of the lock.
const EXITING_WAIT: Duration = Duration::from_secs(15);

/// Holds an exclusive lock on the pid file for the life of the process. A live holder is an
/// error at once; one that is exiting (killed, its threads finishing) is waited for.
fn lock_pid_file(dd: &DataDir) -> Result<nix::fcntl::Flock<fs::File>> {
    let started = std::time::Instant::now();
    let mut locked = loop {
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(dd.pid_file())?;
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(locked) => break locked,
            Err(_) => {
                let pid = fs::read_to_string(dd.pid_file()).unwrap_or_default();
                let holder = pid.trim().parse().ok().map(crate::process::proc_state);
                if holder != Some(crate::process::ProcState::Live)
                    && started.elapsed() < EXITING_WAIT
                {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                bail!(
                    "another orch daemon (pid {}) is running for {}",
                    pid.trim(),
                    dd.root.display()
                );
            }
        }
    };
    use std::io::{Seek, Write};
    locked.set_len(0)?;
    locked.seek(std::io::SeekFrom::Start(0))?;
    write!(locked, "{}", std::process::id())?;
    locked.sync_all()?;
    Ok(locked)
}

/// What the node process runs from: its data directory (made by `init` or `join`), and
/// optionally another Docker Engine than the one the node was set up with.
#[derive(Clone, Debug)]
pub struct Config {
    pub data_dir: DataDir,
    pub docker_host: Option<String>,
    /// Serve the Docker Engine API on this TCP address too (overrides the node's setting).
    pub engine_api_addr: Option<String>,
}

/// The sockets the node serves, bound before it starts: the local control socket (under the
/// lock that keeps a second node process off the same data directory), and optionally the
/// manager's TCP listener for its first term as a manager (bound from the node's config when
/// absent, and on every later promotion).
pub struct Listeners {
    pub control: tokio::net::UnixListener,
    /// The Docker Engine API's socket.
    pub engine: tokio::net::UnixListener,
    pub manager: Option<tokio::net::TcpListener>,
    pid_lock: nix::fcntl::Flock<fs::File>,
}

impl Listeners {
    /// Takes the data directory's lock and binds its control socket.
    pub fn bind(config: &Config) -> Result<Listeners> {
        let dd = &config.data_dir;
        if !dd.is_initialized() {
            bail!(
                "{}: run `orch init` or `orch join` first (no node in {})",
                orch_api::NOT_IN_SWARM,
                dd.root.display()
            );
        }
        let pid_lock = lock_pid_file(dd)?;
        let control = bind_unix(&dd.socket())
            .with_context(|| format!("cannot bind {}", dd.socket().display()))?;
        let engine = bind_unix(&dd.engine_socket())
            .with_context(|| format!("cannot bind {}", dd.engine_socket().display()))?;
        Ok(Listeners {
            control,
            engine,
            manager: None,
            pid_lock,
        })
    }
}

/// How long the node's parts get to end once it is stopping.
pub const STOP_DEADLINE: Duration = Duration::from_secs(10);

/// Runs the node until `shutdown` is cancelled (or `orch leave`, or a manager failure), then
/// stops every part it started and returns once they have ended. A part still running after
/// [`STOP_DEADLINE`] is named in the error (a write wedged on a full disk, say).
pub async fn run(config: Config, listeners: Listeners, shutdown: CancellationToken) -> Result<()> {
    let dd = config.data_dir.clone();
    let Listeners {
        control,
        engine: engine_listener,
        manager: manager_listener,
        pid_lock: _pid_lock,
    } = listeners;
    let mut node_config = dd.load_config()?;
    if let Some(host) = config.docker_host {
        node_config.docker_host = host;
    }
    if let Some(addr) = config.engine_api_addr {
        node_config.engine_api_addr = addr;
    }
    let config = node_config;
    let (ca_pem, identity) = load_identity(&dd)?;
    let tls = TlsContext::new(&ca_pem, identity.clone())?;
    let client_tls = tls.client_config()?;
    // The node's own token: `leave` and a manager failure stop it without stopping the caller.
    let shutdown = shutdown.child_token();
    let mut tasks = TaskGroup::new();

    let mut managers = config.managers.clone();
    if identity.info().role == NodeRole::Manager && !managers.contains(&config.advertise_addr) {
        managers.insert(0, config.advertise_addr.clone());
    }
    let managers = Arc::new(Mutex::new(managers));
    let (state_tx, state_rx) = watch::channel(SessionState::default());
    let (cert_tx, _) = watch::channel(identity.info());
    let node = Arc::new(Node {
        dd: dd.clone(),
        config: Mutex::new(config.clone()),
        identity: identity.clone(),
        tls,
        slot: Arc::new(ArcSwapOption::empty()),
        session: state_rx,
        managers: managers.clone(),
        cert_changed: cert_tx,
        shutdown: shutdown.clone(),
        leaving: Mutex::new(false),
        manager_error: Mutex::new(String::new()),
        manager_listener: Mutex::new(manager_listener),
        data: Default::default(),
    });
    info!(node = %config.node_id, data_dir = %dd.root.display(), "orch node starting");

    // The Docker Engine API first: a TCP address that cannot be bound stops the node before
    // anything else has started.
    serve_engine_api(&node, &config, engine_listener, &mut tasks).await?;

    // The local control socket.
    let incoming = unix_incoming(control, shutdown.clone());
    let local = tonic::transport::Server::builder()
        .add_service(NodeControlServer::new(LocalNode { node: node.clone() }))
        .add_service(
            ControlServer::new(ControlApi::for_node(node.slot.clone(), {
                let identity = node.identity.clone();
                Arc::new(move || identity.info().role == NodeRole::Manager)
            }))
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(256 << 20),
        )
        .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned());
    let drain = shutdown.clone();
    tasks.spawn("control_socket", async move {
        if let Some(Err(e)) =
            orch_api::tasks::drained(local, drain, orch_api::tasks::SERVER_DRAIN).await
        {
            error!(error = %e, "control socket server failed");
        }
    });

    // The agent: engine description, then the session.
    let docker = match orch_agent::engine::connect(&config.docker_host).await {
        Ok(d) => Some(d),
        Err(e) => {
            warn!(error = %e, "the Docker Engine does not answer; the node joins without it");
            None
        }
    };
    let (description, engine_error) =
        orch_agent::engine::describe(docker.as_ref(), &config.hostname).await;
    let registration = Arc::new(Mutex::new(Registration {
        description,
        advertise_addr: if config.advertise_addr.is_empty() {
            String::new()
        } else {
            node.advertise_ip()
        },
        engine_error: engine_error.unwrap_or_default(),
    }));
    let facts = {
        let platform = registration
            .lock()
            .description
            .platform
            .clone()
            .unwrap_or_default();
        orch_agent::data::NodeFacts {
            node_id: config.node_id.clone(),
            hostname: config.hostname.clone(),
            os: platform.os,
            arch: platform.architecture,
        }
    };
    let mut net = None;
    let exec: Arc<dyn orch_agent::exec::Executor> = match docker {
        Some(docker) => {
            // The overlay data plane: VXLAN from the node's advertised address.
            let underlay = node
                .advertise_ip()
                .parse()
                .unwrap_or(std::net::Ipv4Addr::LOCALHOST);
            let plane = orch_agent::net::plane::Plane::new(
                &config.node_id,
                underlay,
                orch_agent::net::dns::node_upstreams(),
            );
            net = Some(plane.clone());
            let exec = orch_agent::exec::docker::DockerExecutor::new(docker, &config.node_id)
                .with_data(node.data.clone(), facts)
                .with_net(plane);
            if let Err(e) = exec.reconcile_files().await {
                warn!(error = %e, "cannot tidy the secrets of tasks that ended while the node was down");
            }
            if let Err(e) = exec.reconcile_sandboxes().await {
                warn!(error = %e, "cannot tidy the network sandboxes of tasks that ended while the node was down");
            }
            Arc::new(exec)
        }
        None => Arc::new(orch_agent::exec::NoEngine(format!(
            "the Docker Engine at {} did not answer",
            config.docker_host
        ))),
    };
    tasks.extend(orch_agent::start(
        orch_agent::AgentParams {
            exec: exec.clone(),
            tls: client_tls.clone(),
            managers: managers.clone(),
            registration: registration.clone(),
            state: state_tx,
            data: node.data.clone(),
            net: net.clone(),
        },
        &shutdown,
    ));
    tasks.spawn("remember_managers", remember_managers(node.clone()));
    tasks.spawn(
        "cert_renewer",
        cert_renewer(node.clone()).instrument(tracing::info_span!("cert_renewer")),
    );

    let result = role_loop(node.clone()).await;
    shutdown.cancel();
    let stopped = tasks.join(STOP_DEADLINE).await;
    if *node.leaving.lock() {
        // Leaving the swarm ends this node's tasks: their containers and their secrets go.
        match exec.list().await {
            Ok(containers) => {
                for c in containers {
                    if let Err(e) = exec.remove_container(&c.id).await {
                        warn!(container = %c.id, error = %e, "cannot remove a task's container");
                    }
                }
            }
            Err(e) => warn!(error = %e, "cannot list this node's containers to remove them"),
        }
        orch_agent::data::TaskFiles::remove_node(&config.node_id);
        if let Some(net) = &net {
            net.remove_all();
        }
        dd.wipe()?;
        info!("left the swarm; node state removed");
    }
    let _ = fs::remove_file(dd.socket());
    let _ = fs::remove_file(dd.engine_socket());
    match (result, stopped) {
        (Err(e), _) => Err(e),
        (Ok(()), Err(late)) => Err(anyhow!(
            "the node did not stop cleanly within {STOP_DEADLINE:?}: still running: {}",
            late.join(", ")
        )),
        (Ok(()), Ok(())) => Ok(()),
    }
}

/// The Docker Engine API: on `docker.sock`, and on TCP with mTLS when configured (only
/// clients with a manager certificate of this cluster get an answer).
async fn serve_engine_api(
    node: &Arc<Node>,
    config: &NodeConfig,
    socket: tokio::net::UnixListener,
    tasks: &mut TaskGroup,
) -> Result<()> {
    // Everything that can fail comes before anything is spawned.
    let tcp = match config.engine_api_addr.as_str() {
        "" => None,
        addr => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot bind the Engine API's address {addr}"))?;
            let mut tls = (*node.tls.server_config()?).clone();
            tls.alpn_protocols = vec![b"http/1.1".to_vec()];
            Some((listener, Arc::new(tls)))
        }
    };
    let backend = orch_engine_api::Backend::new(&orch_engine_api::Options {
        control_socket: node.dd.socket(),
        engine_host: config.docker_host.clone(),
    })?;
    tasks.spawn(
        "engine_api_socket",
        orch_engine_api::serve_unix(socket, backend.clone(), node.shutdown.clone()),
    );
    if let Some((listener, tls)) = tcp {
        info!(addr = %config.engine_api_addr, "serving the Docker Engine API over mTLS");
        tasks.spawn(
            "engine_api_tcp",
            orch_engine_api::serve_tls(listener, tls, backend, node.shutdown.clone()),
        );
    }
    Ok(())
}

/// Stops `shutdown` on SIGTERM or SIGINT (the binary's; a node run as a library is stopped by
/// its caller).
pub fn spawn_signal_handler(shutdown: CancellationToken) {
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => info!("SIGTERM: stopping"),
            _ = int.recv() => info!("SIGINT: stopping"),
        }
        shutdown.cancel();
    });
}

/// Keeps node.json's manager list current, so a restarted node knows where managers are.
async fn remember_managers(node: Arc<Node>) {
    let mut session = node.session.clone();
    loop {
        tokio::select! {
            _ = node.shutdown.cancelled() => return,
            changed = session.changed() => if changed.is_err() { return },
        }
        let managers: Vec<String> = session
            .borrow_and_update()
            .info
            .as_ref()
            .map(|i| i.managers.iter().map(|m| m.addr.clone()).collect())
            .unwrap_or_default();
        if managers.is_empty() {
            continue;
        }
        let changed = {
            let mut config = node.config.lock();
            if config.managers != managers {
                config.managers = managers;
                true
            } else {
                false
            }
        };
        if changed {
            node.save_config();
        }
    }
}

/// Runs the manager stack while the certificate says manager; waits otherwise.
async fn role_loop(node: Arc<Node>) -> Result<()> {
    let mut cert = node.cert_changed.subscribe();
    loop {
        if node.shutdown.is_cancelled() {
            return Ok(());
        }
        if node.identity.info().role == NodeRole::Manager {
            match run_manager(&node).await {
                Ok(ManagerExit::Shutdown) => return Ok(()),
                Ok(ManagerExit::Removed) => {
                    info!("removed from the raft cluster; this node now runs as a worker");
                    let _ = fs::remove_file(node.dd.raft_db());
                    node.config.lock().raft_id = 0;
                    node.save_config();
                    if *node.leaving.lock() {
                        return Ok(());
                    }
                    wait_for_demotion(&node).await;
                    continue;
                }
                Ok(ManagerExit::Failed(message)) => {
                    error!(%message, "manager failed");
                    return Err(anyhow!("manager failed: {message}"));
                }
                Err(e) => {
                    let message = format!("{e:#}");
                    *node.manager_error.lock() = message.clone();
                    error!(error = %message, "cannot start the manager");
                    return Err(e);
                }
            }
        }
        tokio::select! {
            _ = node.shutdown.cancelled() => return Ok(()),
            changed = cert.changed() => if changed.is_err() { return Ok(()) },
        }
    }
}

/// After raft removed us, wait until the certificate says worker, unless the cluster wants
/// us as a manager again (a quick re-promotion).
async fn wait_for_demotion(node: &Node) {
    let mut cert = node.cert_changed.subscribe();
    let mut session = node.session.clone();
    let mut wanted_manager_since: Option<tokio::time::Instant> = None;
    loop {
        if node.identity.info().role == NodeRole::Worker {
            return;
        }
        let wants_manager = session
            .borrow()
            .info
            .as_ref()
            .is_some_and(|i| i.role() == NodeRole::Manager);
        match (wants_manager, wanted_manager_since) {
            (true, None) => wanted_manager_since = Some(tokio::time::Instant::now()),
            (true, Some(since)) if since.elapsed() > Duration::from_secs(5) => return,
            (false, _) => wanted_manager_since = None,
            _ => {}
        }
        tokio::select! {
            _ = node.shutdown.cancelled() => return,
            _ = cert.changed() => {}
            _ = session.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Joins raft through any known manager (the leader adds us as a voter).
async fn join_raft(node: &Node) -> Result<(u64, Vec<RaftPeer>, Vec<u8>)> {
    let advertise = node.config.lock().advertise_addr.clone();
    let client_tls = node.tls.client_config()?;
    let mut last_error = String::from("no manager known");
    for attempt in 0..60 {
        let managers: Vec<String> = node
            .managers
            .lock()
            .iter()
            .filter(|m| **m != advertise)
            .cloned()
            .collect();
        for addr in managers {
            let channel = tls_channel(&addr, client_tls.clone())?;
            match RaftClient::new(channel)
                .join(RaftJoinRequest {
                    addr: advertise.clone(),
                })
                .await
            {
                Ok(resp) => {
                    let resp = resp.into_inner();
                    info!(raft_id = resp.raft_id, via = %addr, "joined the raft cluster");
                    let peers = resp
                        .members
                        .into_iter()
                        .map(|m| RaftPeer {
                            raft_id: m.raft_id,
                            node_id: m.node_id,
                            addr: m.addr,
                        })
                        .collect();
                    return Ok((resp.raft_id, peers, resp.data_key));
                }
                Err(status) => last_error = format!("{addr}: {}", status.message()),
            }
        }
        if attempt % 10 == 0 {
            warn!(error = %last_error, "cannot join the raft cluster yet");
        }
        tokio::select! {
            _ = node.shutdown.cancelled() => bail!("stopped while joining the raft cluster"),
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
    bail!("cannot join the raft cluster: {last_error}")
}

async fn run_manager(node: &Arc<Node>) -> Result<ManagerExit> {
    let config = node.config.lock().clone();
    let listen: SocketAddr = config.listen_addr.parse().with_context(|| {
        format!(
            "invalid listen address {:?} in node config",
            config.listen_addr
        )
    })?;
    // Bind first: a port in use fails before this node asks to join raft.
    let given = node.manager_listener.lock().take();
    let listener = match given {
        Some(listener) => listener,
        None => tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?,
    };
    let raft_db = node.dd.raft_db();
    let mut raft_id = config.raft_id;
    if raft_id == 0 {
        let _ = fs::remove_file(&raft_db);
        let (id, peers, data_key) = join_raft(node).await?;
        raft_id = id;
        DataKey::from_bytes(&data_key).map_err(|e| {
            anyhow!("the manager that let this node join sent no usable data key: {e}")
        })?;
        write_atomic(&node.dd.data_key(), &data_key, 0o600)?;
        fs::create_dir_all(node.dd.raft_dir())?;
        LogStore::create(&raft_db, None)?;
        {
            let mut config = node.config.lock();
            config.raft_id = raft_id;
            config.raft_peers = peers;
        }
        node.save_config();
    }
    let log = LogStore::open(&raft_db).map_err(|e| anyhow!("{e}"))?;
    let data_key = DataKey::load(&node.dd.data_key()).map_err(|e| anyhow!("{e}"))?;
    let params = ManagerParams {
        data_key,
        node_id: config.node_id.clone(),
        raft_id,
        advertise_addr: config.advertise_addr.clone(),
        raft: RaftOptions::new(raft_id),
        tls: node.tls.clone(),
        initial_peers: node
            .config
            .lock()
            .raft_peers
            .iter()
            .map(|p| orch_api::pb::RaftMember {
                raft_id: p.raft_id,
                node_id: p.node_id.clone(),
                addr: p.addr.clone(),
            })
            .collect(),
    };
    let mut manager = Manager::start(params, log, listener, &node.shutdown)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    node.slot.store(Some(manager.ctx.clone()));
    // A removed member may never see its own removal (the leader stops replicating to it once
    // the change commits); the certificate, renewed as a worker's, says it for sure.
    let mut cert = node.cert_changed.subscribe();
    let demoted = async move {
        let _ = cert.wait_for(|c| c.role == NodeRole::Worker).await;
    };
    let exit = tokio::select! {
        exit = manager.wait() => exit,
        _ = demoted => ManagerExit::Removed,
    };
    node.slot.store(None);
    if let Err(late) = manager.stop(STOP_DEADLINE).await {
        warn!(?late, "parts of the manager did not stop in time");
    }
    Ok(exit)
}

/// Renews the node certificate at a random point between 50% and 80% of its life, and at
/// once when the cluster says the node's role changed.
async fn cert_renewer(node: Arc<Node>) {
    let mut session = node.session.clone();
    let mut fraction: f64 = rand::rng().random_range(0.5..0.8);
    let mut failures = 0u32;
    loop {
        let info = node.identity.info();
        let renew_at = orch_api::tls::renew_at(info.not_before, info.not_after, fraction);
        let now = orch_api::now_nanos() / 1_000_000_000;
        let session_role = session.borrow().info.as_ref().map(|i| i.role);
        let role_changed = session_role.is_some_and(|r| r != info.role as i32);
        if role_changed || now >= renew_at {
            match renew(&node).await {
                Ok(new) => {
                    info!(role = ?new.role, not_after = new.not_after, "node certificate renewed");
                    fraction = rand::rng().random_range(0.5..0.8);
                    failures = 0;
                    let _ = node.cert_changed.send(new);
                    continue;
                }
                Err(e) => {
                    failures += 1;
                    warn!(error = %e, "certificate renewal failed; retrying");
                }
            }
        }
        let wait = if failures > 0 {
            Duration::from_secs(u64::from(failures.min(10)))
        } else {
            Duration::from_secs((renew_at - now).clamp(1, 3600) as u64)
        };
        tokio::select! {
            _ = node.shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
            changed = session.changed() => if changed.is_err() { return },
        }
    }
}

async fn renew(node: &Node) -> Result<CertInfo> {
    let client_tls = node.tls.client_config()?;
    let mut managers = node.managers.lock().clone();
    let connected = node.session.borrow().manager_addr.clone();
    if !connected.is_empty() {
        managers.insert(0, connected);
    }
    let csr = new_key_and_csr()?;
    let mut last_error = anyhow!("no manager known");
    for addr in managers {
        let channel = tls_channel(&addr, client_tls.clone())?;
        match CaClient::new(channel)
            .renew_node_certificate(RenewNodeCertificateRequest {
                csr: csr.csr_der.clone(),
            })
            .await
        {
            Ok(resp) => {
                let resp = resp.into_inner();
                let identity = NodeIdentity::from_pem(&resp.cert_pem, &csr.key_pem)?;
                let info = identity.info();
                if info.node_id != node.identity.info().node_id {
                    bail!("renewed certificate names another node");
                }
                // Key first, certificate last; a crash in between is finished at next start.
                let pending = node.dd.node_cert().with_extension("crt.new");
                write_atomic(&pending, resp.cert_pem.as_bytes(), 0o644)?;
                write_atomic(&node.dd.node_key(), csr.key_pem.as_bytes(), 0o600)?;
                fs::rename(&pending, node.dd.node_cert())?;
                node.identity.replace(&resp.cert_pem, &csr.key_pem)?;
                return Ok(info);
            }
            Err(status) => last_error = anyhow!("{addr}: {}", status.message()),
        }
    }
    Err(last_error)
}

/// The node-local RPCs of the unix socket.
struct LocalNode {
    node: Arc<Node>,
}

#[tonic::async_trait]
impl NodeControl for LocalNode {
    async fn info(&self, _request: Request<Empty>) -> Result<Response<InfoResponse>, Status> {
        let node = &self.node;
        let config = node.config.lock().clone();
        let cert = node.identity.info();
        let session = node.session.borrow().clone();
        let mut info = InfoResponse {
            node_id: config.node_id.clone(),
            cluster_id: config.cluster_id.clone(),
            node_addr: node.advertise_ip(),
            hostname: config.hostname.clone(),
            cert_not_after: cert.not_after,
            ca_digest: orch_api::token::ca_digest(&node.tls.root_ca_pem),
            session_ready: session.connected,
            error: session.last_error.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            os_arch: crate::output::os_arch(),
            data_held: node.data.held(),
            ..Default::default()
        };
        let manager_error = node.manager_error.lock().clone();
        if !manager_error.is_empty() {
            info.error = manager_error;
        }
        let mut ready = session.connected;
        match node.slot.load_full() {
            Some(ctx) => {
                let view = ctx.store.view();
                let status = ctx.raft.status();
                info.is_manager = true;
                info.managers = view.members().len() as u32;
                info.nodes = view.node_count() as u32;
                info.manager_addrs = view.members().into_iter().map(|m| m.addr).collect();
                info.cluster_spec = view.cluster().and_then(|c| c.spec.clone());
                info.leader_id = view
                    .node_by_raft_id(status.leader)
                    .map(|n| n.id.clone())
                    .unwrap_or_default();
                info.raft_id = status.id;
                info.raft_term = status.term;
                info.raft_applied = status.applied;
                ready = ready
                    && status.leader != 0
                    && view
                        .node(&config.node_id)
                        .is_some_and(|n| n.manager_status.is_some());
            }
            None => {
                if cert.role == NodeRole::Manager {
                    ready = false;
                }
                if let Some(si) = &session.info {
                    info.managers = si.managers.len() as u32;
                    info.manager_addrs = si.managers.iter().map(|m| m.addr.clone()).collect();
                }
            }
        }
        info.state = if ready {
            LocalNodeState::Active
        } else {
            LocalNodeState::Pending
        } as i32;
        Ok(Response::new(info))
    }

    async fn store_digest(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<StoreDigestResponse>, Status> {
        use prost::Message as _;
        use sha2::Digest as _;
        let ctx = self
            .node
            .slot
            .load_full()
            .ok_or_else(|| Status::failed_precondition(orch_api::NOT_A_MANAGER))?;
        let view = ctx.store.view();
        let encoded = view.to_snapshot().encode_to_vec();
        let digest = sha2::Sha256::digest(&encoded);
        Ok(Response::new(StoreDigestResponse {
            index: view.index,
            digest: digest.iter().map(|b| format!("{b:02x}")).collect(),
            nodes: view.node_count() as u32,
            services: view.services().count() as u32,
            tasks: view.task_count() as u32,
        }))
    }

    async fn leave(&self, request: Request<LeaveRequest>) -> Result<Response<Empty>, Status> {
        let force = request.into_inner().force;
        let node = self.node.clone();
        if let Some(ctx) = node.slot.load_full() {
            let status = ctx.raft.status();
            let managers = status.voters.len();
            if !force {
                let remaining = managers.saturating_sub(1);
                let message = if managers <= 1 {
                    "You are attempting to leave the swarm on a node that is participating as a manager. Removing the last manager erases all current state of the swarm. Use `--force` to ignore this message.".to_string()
                } else {
                    format!(
                        "You are attempting to leave the swarm on a node that is participating as a manager. Removing this node leaves {remaining} managers out of {managers}. Without a Raft quorum your swarm will be inaccessible. The only way to restore a swarm that has lost consensus is to reinitialize it with `--force-new-cluster`. Use `--force` to suppress this message."
                    )
                };
                return Err(Status::failed_precondition(message));
            }
            if managers > 1 {
                // Leave raft through our own RaftService (it hands leadership over first).
                let addr = node.config.lock().advertise_addr.clone();
                let channel = tls_channel(&addr, ctx.client_tls.clone())
                    .map_err(|e| Status::internal(e.to_string()))?;
                if let Err(status) = RaftClient::new(channel).leave(Empty {}).await {
                    warn!(error = %status.message(), "could not leave the raft cluster cleanly; leaving anyway (--force)");
                }
            }
        }
        *node.leaving.lock() = true;
        node.shutdown.cancel();
        Ok(Response::new(Empty {}))
    }
}
