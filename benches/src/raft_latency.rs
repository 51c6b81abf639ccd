//! Raft commit latency through the production path: `ManagerCtx::propose` on the leader of a
//! 3-manager cluster whose members talk over mTLS gRPC on loopback and fsync their redb logs.
//! The reference, measured in the same run on the same disk, is one bare fdatasync.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use orch_api::pb::store_action::Action;
use orch_api::pb::{
    NodeAvailability, NodeRole, NodeState, NodeStatus, NodeStatusChange, StoreSnapshot,
};
use orch_api::tls::{NodeIdentity, TlsContext};
use orch_manager::bootstrap::{manager_node, new_cluster, new_raft_id, ClusterSettings};
use orch_manager::raft::node::{bootstrap_snapshot, RaftOptions};
use orch_manager::raft::storage::LogStore;
use orch_manager::{Manager, ManagerCtx, ManagerParams};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::percentile;

fn fsync_reference(dir: &std::path::Path, n: usize) -> Result<Vec<f64>> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("fsync.probe"))?;
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        f.write_all(&[7u8; 512])?;
        let t = Instant::now();
        f.sync_data()?;
        samples.push(t.elapsed().as_secs_f64() * 1e3);
    }
    samples.sort_by(f64::total_cmp);
    Ok(samples)
}

/// One raft entry appended (one redb write transaction with fsync), the log store's unit cost.
fn append_reference(dir: &std::path::Path, n: usize) -> Result<Vec<f64>> {
    let mut snapshot = raft::eraftpb::Snapshot::default();
    snapshot.mut_metadata().index = 1;
    snapshot.mut_metadata().term = 1;
    snapshot.mut_metadata().mut_conf_state().voters = vec![1];
    let mut log =
        LogStore::create(&dir.join("append.redb"), Some(&snapshot)).map_err(|e| anyhow!("{e}"))?;
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let entry = raft::eraftpb::Entry {
            index: 2 + i as u64,
            term: 1,
            data: vec![1u8; 200].into(),
            ..Default::default()
        };
        let t = Instant::now();
        log.append(&[entry], None).map_err(|e| anyhow!("{e}"))?;
        samples.push(t.elapsed().as_secs_f64() * 1e3);
    }
    samples.sort_by(f64::total_cmp);
    Ok(samples)
}

pub async fn run(ops: usize, concurrency: usize) -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("orch-bench-raft-")
        .tempdir_in(".")?;
    let new = new_cluster(&ClusterSettings::default())?;
    let mut listeners = Vec::new();
    let mut nodes = Vec::new();
    for i in 0..3 {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let node_id = orch_api::ids::new_id();
        let raft_id = new_raft_id();
        nodes.push((node_id.clone(), raft_id, addr.clone()));
        listeners.push(listener);
        let _ = i;
    }
    let state = StoreSnapshot {
        clusters: vec![new.cluster.clone()],
        nodes: nodes
            .iter()
            .enumerate()
            .map(|(i, (id, raft_id, addr))| {
                manager_node(
                    id,
                    &format!("m{i}"),
                    *raft_id,
                    addr,
                    NodeAvailability::Active,
                )
            })
            .collect(),
        ..Default::default()
    };
    let shutdown = CancellationToken::new();
    let mut managers = Vec::new();
    for ((node_id, raft_id, addr), listener) in nodes.iter().zip(listeners) {
        let mut snapshot = bootstrap_snapshot(*raft_id, &state);
        snapshot.mut_metadata().mut_conf_state().voters = nodes.iter().map(|n| n.1).collect();
        let path = dir.path().join(format!("{node_id}.redb"));
        let log = LogStore::create(&path, Some(&snapshot)).map_err(|e| anyhow!("{e}"))?;
        let (cert, key) = new.ca.issue_with_key(
            node_id,
            NodeRole::Manager,
            &new.cluster.id,
            Duration::from_secs(3600),
        )?;
        let tls = TlsContext::new(
            &new.ca.cert_pem,
            Arc::new(NodeIdentity::from_pem(&cert, &key)?),
        )?;
        let params = ManagerParams {
            node_id: node_id.clone(),
            raft_id: *raft_id,
            advertise_addr: addr.clone(),
            raft: RaftOptions::new(*raft_id),
            tls,
            initial_peers: Vec::new(),
            data_key: orch_manager::data::seal::DataKey::generate().map_err(|e| anyhow!("{e}"))?,
        };
        managers.push(
            Manager::start(params, log, listener, &shutdown)
                .await
                .map_err(|e| anyhow!("{e}"))?,
        );
    }
    let started = Instant::now();
    let leader: Arc<ManagerCtx> = loop {
        if let Some(m) = managers.iter().find(|m| m.ctx.raft.is_leader()) {
            break m.ctx.clone();
        }
        if started.elapsed() > Duration::from_secs(10) {
            return Err(anyhow!("no leader elected"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let target = nodes[0].0.clone();
    let write = |i: usize| {
        Action::NodeStatus(NodeStatusChange {
            node_id: target.clone(),
            status: Some(NodeStatus {
                state: NodeState::Ready as i32,
                message: format!("bench {i}"),
                addr: String::new(),
                engine_error: String::new(),
            }),
            description: None,
        })
    };
    // Warm up connections and caches.
    for i in 0..100 {
        leader.propose(vec![write(i)]).await?;
    }
    let mut samples = Vec::with_capacity(ops);
    for i in 0..ops {
        let t = Instant::now();
        leader.propose(vec![write(100 + i)]).await?;
        samples.push(t.elapsed().as_secs_f64() * 1e3);
    }
    samples.sort_by(f64::total_cmp);
    let fsync = fsync_reference(dir.path(), ops)?;
    let appends = append_reference(dir.path(), ops)?;
    let (p50, p99) = (percentile(&samples, 50.0), percentile(&samples, 99.0));
    let (f50, f99) = (percentile(&fsync, 50.0), percentile(&fsync, 99.0));
    println!(
        "log-append: one raft entry appended to a redb log with fsync: p50 {:.3} ms, p99 {:.3} ms",
        percentile(&appends, 50.0),
        percentile(&appends, 99.0)
    );
    println!(
        "raft-latency: 3 managers, {ops} sequential proposals: p50 {p50:.3} ms, p99 {p99:.3} ms; bare fdatasync same disk: p50 {f50:.3} ms, p99 {f99:.3} ms; ratio p50 {:.2}x",
        p50 / f50
    );
    // Throughput with many proposers at once (batched into shared fsyncs).
    let total = ops * 4;
    let t = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let leader = leader.clone();
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..total).step_by(concurrency) {
                let action = Action::NodeStatus(NodeStatusChange {
                    node_id: target.clone(),
                    status: Some(NodeStatus {
                        state: NodeState::Ready as i32,
                        message: format!("c {i}"),
                        addr: String::new(),
                        engine_error: String::new(),
                    }),
                    description: None,
                });
                leader.propose(vec![action]).await?;
            }
            Ok::<(), anyhow::Error>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let secs = t.elapsed().as_secs_f64();
    println!("raft-throughput: {concurrency} concurrent proposers: {:.0} commits/s ({total} in {secs:.2} s)", total as f64 / secs);
    shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}
