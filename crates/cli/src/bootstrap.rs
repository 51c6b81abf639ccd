//! Setting a node up: `init` creates a cluster (root CA, tokens, the first manager's raft log
//! holding the initial store); `join` pins the cluster's CA to the token, trades the token for a
//! certificate, and records the managers. Both then start the node process in the background
//! and wait until it is ready. Nothing is left on disk when setup fails.

use std::fs;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use orch_api::pb::ca_client::CaClient;
use orch_api::pb::node_control_client::NodeControlClient;
use orch_api::pb::{
    Empty, InfoResponse, IssueNodeCertificateRequest, LocalNodeState, NodeAvailability, NodeRole,
    StoreSnapshot,
};
use orch_api::tls::{anonymous_client_config, new_key_and_csr};
use orch_api::token::{ca_digest, JoinToken};
use orch_api::transport::{tls_channel, unix_channel};
pub use orch_manager::bootstrap::ClusterSettings;
use orch_manager::bootstrap::{manager_node, new_cluster, new_raft_id, NewCluster};
use orch_manager::raft::node::{bootstrap_snapshot, force_new_cluster};
use orch_manager::raft::storage::LogStore;
use orch_manager::state::store::Store;

use crate::datadir::{DataDir, NodeConfig};
use crate::net;

pub const ALREADY_IN_SWARM: &str =
    "This node is already part of a swarm. Use \"orch leave\" to leave this swarm and join another one.";

pub struct InitOptions {
    pub advertise_addr: Option<String>,
    pub listen_addr: Option<String>,
    pub hostname: Option<String>,
    pub availability: NodeAvailability,
    pub settings: ClusterSettings,
    pub docker_host: String,
    pub engine_api_addr: String,
}

pub struct JoinOptions {
    pub token: String,
    pub remote: String,
    pub advertise_addr: Option<String>,
    pub listen_addr: Option<String>,
    pub hostname: Option<String>,
    pub availability: NodeAvailability,
    pub docker_host: String,
    pub engine_api_addr: String,
    pub timeout: Duration,
}

pub fn hostname(given: Option<&str>) -> String {
    given
        .map(str::to_string)
        .or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
        })
        .unwrap_or_else(|| "localhost".into())
}

/// Runs `setup`; on failure removes whatever it wrote, so the directory holds no node.
fn all_or_nothing<T>(dd: &DataDir, setup: impl FnOnce() -> Result<T>) -> Result<T> {
    match setup() {
        Ok(v) => Ok(v),
        Err(e) => {
            let _ = dd.wipe();
            Err(e)
        }
    }
}

pub struct Initialized {
    pub node_id: String,
    pub advertise_addr: String,
    pub worker_token: String,
}

/// Creates a new cluster in `dd` with this node as its only manager.
pub fn init_cluster(dd: &DataDir, opts: &InitOptions) -> Result<Initialized> {
    if dd.is_initialized() {
        bail!(ALREADY_IN_SWARM);
    }
    let listen = net::listen_addr(opts.listen_addr.as_deref())?;
    let advertise = net::advertise_addr(opts.advertise_addr.as_deref(), listen)?;
    dd.create()?;
    all_or_nothing(dd, || {
        let node_id = orch_api::ids::new_id();
        let raft_id = new_raft_id();
        let NewCluster {
            ca,
            cluster,
            worker_token,
            ..
        } = new_cluster(&opts.settings)?;
        let cluster_id = cluster.id.clone();
        let (cert_pem, key_pem) = ca.issue_with_key(
            &node_id,
            NodeRole::Manager,
            &cluster_id,
            opts.settings.cert_expiry,
        )?;
        let hostname = hostname(opts.hostname.as_deref());
        let node = manager_node(
            &node_id,
            &hostname,
            raft_id,
            &advertise.to_string(),
            opts.availability,
        );
        let state = StoreSnapshot {
            clusters: vec![cluster],
            nodes: vec![node],
            networks: vec![orch_manager::bootstrap::ingress_network()],
            ..Default::default()
        };
        dd.write_certs(&ca.cert_pem, &cert_pem, &key_pem)?;
        let data_key = orch_manager::data::seal::DataKey::generate().map_err(|e| anyhow!(e))?;
        crate::datadir::write_atomic(&dd.data_key(), data_key.as_bytes(), 0o600)?;
        LogStore::create(&dd.raft_db(), Some(&bootstrap_snapshot(raft_id, &state)))
            .map_err(|e| anyhow!("{e}"))?;
        dd.save_config(&NodeConfig {
            node_id: node_id.clone(),
            cluster_id,
            hostname,
            listen_addr: listen.to_string(),
            advertise_addr: advertise.to_string(),
            advertise_spec: opts.advertise_addr.clone().unwrap_or_default(),
            docker_host: opts.docker_host.clone(),
            managers: vec![advertise.to_string()],
            raft_id,
            raft_peers: Vec::new(),
            engine_api_addr: opts.engine_api_addr.clone(),
        })?;
        Ok(Initialized {
            node_id,
            advertise_addr: advertise.to_string(),
            worker_token,
        })
    })
}

/// `init --force-new-cluster`: turns this (stopped) manager into a one-manager cluster that
/// keeps all its state.
pub fn force_new(dd: &DataDir) -> Result<Initialized> {
    if !dd.is_initialized() {
        bail!(
            "--force-new-cluster needs a node that was a manager: no node in {}",
            dd.root.display()
        );
    }
    let mut config = dd.load_config()?;
    if config.raft_id == 0 || !dd.raft_db().exists() {
        bail!("--force-new-cluster needs a node that was a manager: this node has no raft state");
    }
    let mut log = LogStore::open(&dd.raft_db()).map_err(|e| anyhow!("{e}"))?;
    let store = Store::new();
    if let Some(data) = log.snapshot_data().map_err(|e| anyhow!("{e}"))? {
        store.restore(
            log.snapshot_index(),
            orch_manager::raft::node::decode_snapshot(&data).map_err(|e| anyhow!("{e}"))?,
        );
    }
    force_new_cluster(&mut log, config.raft_id, &store).map_err(|e| anyhow!("{e}"))?;
    drop(log);
    config.managers = vec![config.advertise_addr.clone()];
    dd.save_config(&config)?;
    let view = store.view();
    let worker_token = view
        .cluster()
        .and_then(|c| c.root_ca.as_ref())
        .and_then(|r| r.join_tokens.as_ref())
        .map(|t| t.worker.clone())
        .unwrap_or_default();
    Ok(Initialized {
        node_id: config.node_id,
        advertise_addr: config.advertise_addr,
        worker_token,
    })
}

fn rpc_error(addr: &str, status: tonic::Status) -> anyhow::Error {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown => {
            anyhow!("cannot reach a manager at {addr}: {}", status.message())
        }
        _ => anyhow!("{}", status.message()),
    }
}

/// Joins the cluster a manager at `opts.remote` belongs to. Returns the role the token gave.
pub async fn join_cluster(dd: &DataDir, opts: &JoinOptions) -> Result<NodeRole> {
    if dd.is_initialized() {
        bail!(ALREADY_IN_SWARM);
    }
    let token = JoinToken::parse(&opts.token).map_err(|_| anyhow!("invalid join token"))?;
    let remote = net::remote_addr(&opts.remote)?;
    let listen = net::listen_addr(opts.listen_addr.as_deref())?;

    // Fetch the root CA without trusting it, then pin it to the token's digest.
    let anon = tls_channel(&remote, anonymous_client_config(None)?)?;
    let fetched = tokio::time::timeout(
        Duration::from_secs(10),
        CaClient::new(anon).get_root_ca_certificate(Empty {}),
    )
    .await
    .map_err(|_| anyhow!("cannot reach a manager at {remote}: no answer within 10s"))?
    .map_err(|s| rpc_error(&remote, s))?
    .into_inner();
    let digest = ca_digest(&fetched.cert_pem);
    if digest != token.ca_digest {
        bail!(
            "remote CA does not match fingerprint. Expected: {}",
            token.ca_digest
        );
    }
    let csr = new_key_and_csr()?;
    let hostname = hostname(opts.hostname.as_deref());
    let verified = tls_channel(&remote, anonymous_client_config(Some(&fetched.cert_pem))?)?;
    let issued = tokio::time::timeout(
        Duration::from_secs(15),
        CaClient::new(verified).issue_node_certificate(IssueNodeCertificateRequest {
            token: opts.token.trim().to_string(),
            csr: csr.csr_der.clone(),
            hostname: hostname.clone(),
            availability: opts.availability as i32,
        }),
    )
    .await
    .map_err(|_| anyhow!("cannot reach a manager at {remote}: no answer within 15s"))?
    .map_err(|s| rpc_error(&remote, s))?
    .into_inner();
    let role = NodeRole::try_from(issued.role).unwrap_or(NodeRole::Worker);
    let advertise = match (opts.advertise_addr.as_deref(), role) {
        (Some(spec), _) => net::advertise_addr(Some(spec), listen)?.to_string(),
        (None, NodeRole::Manager) => net::advertise_addr(None, listen)?.to_string(),
        (None, NodeRole::Worker) if !listen.ip().is_unspecified() => listen.to_string(),
        (None, NodeRole::Worker) => String::new(),
    };
    let mut managers = vec![remote.clone()];
    for m in &issued.managers {
        if !m.addr.is_empty() && !managers.contains(&m.addr) {
            managers.push(m.addr.clone());
        }
    }
    dd.create()?;
    all_or_nothing(dd, || {
        dd.write_certs(&issued.ca_pem, &issued.cert_pem, &csr.key_pem)?;
        dd.save_config(&NodeConfig {
            node_id: issued.node_id.clone(),
            cluster_id: issued.cluster_id.clone(),
            hostname: hostname.clone(),
            listen_addr: listen.to_string(),
            advertise_addr: advertise.clone(),
            advertise_spec: opts.advertise_addr.clone().unwrap_or_default(),
            docker_host: opts.docker_host.clone(),
            managers,
            raft_id: 0,
            raft_peers: Vec::new(),
            engine_api_addr: opts.engine_api_addr.clone(),
        })
    })?;
    Ok(role)
}

/// Starts `orch daemon` for `dd` in the background, logging to `DATA_DIR/orch.log`.
pub fn spawn_daemon(dd: &DataDir) -> Result<Child> {
    let exe = std::env::current_exe().context("cannot find the orch executable")?;
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(dd.log_file())
        .with_context(|| format!("cannot open {}", dd.log_file().display()))?;
    let child = Command::new(exe)
        .arg("daemon")
        .arg("--data-dir")
        .arg(&dd.root)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("cannot start the node process")?;
    Ok(child)
}

fn log_tail(dd: &DataDir, lines: usize) -> String {
    let text = fs::read_to_string(dd.log_file()).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Waits until the node process answers and reports itself ready.
pub async fn wait_ready(
    dd: &DataDir,
    child: &mut Child,
    timeout: Duration,
) -> Result<InfoResponse> {
    let started = Instant::now();
    let mut last = String::new();
    loop {
        if let Some(status) = child.try_wait()? {
            bail!(
                "the node process exited ({status}) before it was ready; last lines of {}:\n{}",
                dd.log_file().display(),
                log_tail(dd, 15)
            );
        }
        if dd.socket().exists() {
            if let Ok(channel) = unix_channel(&dd.socket()) {
                if let Ok(info) = NodeControlClient::new(channel).info(Empty {}).await {
                    let info = info.into_inner();
                    if info.state() == LocalNodeState::Active {
                        return Ok(info);
                    }
                    last = info.error;
                }
            }
        }
        if started.elapsed() > timeout {
            let why = if last.is_empty() {
                String::new()
            } else {
                format!(" ({last})")
            };
            bail!(
                "the node did not become ready within {timeout:?}{why}; it keeps trying in the background: see {} or run `orch info`",
                dd.log_file().display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
