//! In-process raft clusters: real redb logs on disk (fsync on), an in-memory transport whose
//! links can be cut, and fast logical ticks. Elections, failover, partitions, membership and
//! snapshot catch-up.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use orch_api::pb::store_action::Action;
use orch_api::pb::{
    Cluster, ClusterSpec, ManagerStatus, Node, RaftMember, StoreAction, StoreSnapshot,
    StoreTransaction,
};
use orch_manager::raft::node::{self, ProposeError, RaftHandle, RaftOptions, Transport};
use orch_manager::raft::storage::LogStore;
use orch_manager::state::store::Store;
use parking_lot::Mutex;
use raft::eraftpb::Message;
use tokio_util::sync::CancellationToken;

#[derive(Default)]
struct Net {
    handles: Mutex<HashMap<u64, RaftHandle>>,
    /// Directed links that drop everything.
    cut: Mutex<HashSet<(u64, u64)>>,
}

struct ChannelTransport {
    from: u64,
    net: Arc<Net>,
}

impl Transport for ChannelTransport {
    fn send(&self, messages: Vec<Message>) {
        let cut = self.net.cut.lock().clone();
        let handles = self.net.handles.lock();
        for m in messages {
            if cut.contains(&(self.from, m.to)) {
                continue;
            }
            if let Some(h) = handles.get(&m.to) {
                h.step(vec![m]);
            }
        }
    }
    fn set_peer(&self, _member: &RaftMember) {}
    fn remove_peer(&self, _raft_id: u64) {}
}

struct Member {
    id: u64,
    path: PathBuf,
    handle: Option<RaftHandle>,
    cancel: CancellationToken,
    task: Option<tokio::task::JoinHandle<Result<(), node::RaftError>>>,
}

struct Cluster3 {
    _dir: tempfile::TempDir,
    net: Arc<Net>,
    members: Vec<Member>,
}

fn opts(id: u64) -> RaftOptions {
    RaftOptions {
        id,
        tick: Duration::from_millis(10),
        election_ticks: 10,
        heartbeat_ticks: 1,
    }
}

fn txn(actions: Vec<Action>) -> StoreTransaction {
    StoreTransaction {
        actions: actions
            .into_iter()
            .map(|a| StoreAction { action: Some(a) })
            .collect(),
        timestamp: 1,
    }
}

fn node_obj(id: &str, raft_id: u64) -> Node {
    Node {
        id: id.into(),
        manager_status: Some(ManagerStatus {
            raft_id,
            addr: format!("n{raft_id}"),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn wait_for<F: FnMut() -> bool>(mut cond: F, timeout: Duration, what: &str) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

impl Cluster3 {
    /// Node 1 bootstraps; the others join through conf changes and catch up by snapshot.
    async fn new(size: u64, snapshot_interval: u64) -> Self {
        init_tracing();
        let dir = tempfile::tempdir().expect("tempdir");
        let net = Arc::new(Net::default());
        let mut c = Cluster3 {
            _dir: dir,
            net,
            members: Vec::new(),
        };
        let state = StoreSnapshot {
            clusters: vec![Cluster {
                id: "c".into(),
                spec: Some(ClusterSpec {
                    snapshot_interval,
                    log_entries_for_slow_followers: 5,
                    ..Default::default()
                }),
                ..Default::default()
            }],
            nodes: vec![node_obj("node1", 1)],
            ..Default::default()
        };
        let path = c._dir.path().join("1.redb");
        LogStore::create(&path, Some(&node::bootstrap_snapshot(1, &state))).expect("create");
        c.members.push(Member {
            id: 1,
            path,
            handle: None,
            cancel: CancellationToken::new(),
            task: None,
        });
        c.start(1);
        c.wait_leader(Duration::from_secs(5)).await;
        for id in 2..=size {
            let path = c._dir.path().join(format!("{id}.redb"));
            LogStore::create(&path, None).expect("create empty");
            c.members.push(Member {
                id,
                path,
                handle: None,
                cancel: CancellationToken::new(),
                task: None,
            });
            c.start(id);
            let leader = c.leader().expect("leader");
            leader
                .change_membership(
                    &RaftMember {
                        raft_id: id,
                        node_id: format!("node{id}"),
                        addr: format!("n{id}"),
                    },
                    true,
                )
                .await
                .expect("add member");
        }
        c
    }

    fn member(&mut self, id: u64) -> &mut Member {
        self.members
            .iter_mut()
            .find(|m| m.id == id)
            .expect("member")
    }

    fn start(&mut self, id: u64) {
        let net = self.net.clone();
        let m = self.member(id);
        let log = LogStore::open(&m.path).expect("open log");
        m.cancel = CancellationToken::new();
        let transport = Arc::new(ChannelTransport {
            from: id,
            net: net.clone(),
        });
        let (handle, task) = node::start(
            opts(id),
            log,
            Arc::new(Store::new()),
            transport,
            m.cancel.clone(),
        )
        .expect("start");
        net.handles.lock().insert(id, handle.clone());
        m.handle = Some(handle);
        m.task = Some(task);
    }

    async fn stop(&mut self, id: u64) {
        self.net.handles.lock().remove(&id);
        let m = self.member(id);
        m.cancel.cancel();
        if let Some(task) = m.task.take() {
            let _ = task.await;
        }
        m.handle = None;
    }

    fn handle(&self, id: u64) -> RaftHandle {
        self.members
            .iter()
            .find(|m| m.id == id)
            .and_then(|m| m.handle.clone())
            .expect("running")
    }

    fn leader(&self) -> Option<RaftHandle> {
        self.members
            .iter()
            .filter_map(|m| m.handle.clone())
            .find(|h| h.is_leader())
    }

    async fn wait_leader(&self, timeout: Duration) -> RaftHandle {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(h) = self.leader() {
                return h;
            }
            assert!(Instant::now() < deadline, "no leader elected");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn isolate(&self, id: u64) {
        let mut cut = self.net.cut.lock();
        for m in &self.members {
            if m.id != id {
                cut.insert((id, m.id));
                cut.insert((m.id, id));
            }
        }
    }

    fn heal(&self) {
        self.net.cut.lock().clear();
    }
}

async fn create_node(h: &RaftHandle, id: &str) -> Result<u64, ProposeError> {
    h.propose(txn(vec![Action::CreateNode(Node {
        id: id.into(),
        ..Default::default()
    })]))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_managers_replicate_every_write() {
    let c = Cluster3::new(3, 10_000).await;
    let leader = c.wait_leader(Duration::from_secs(5)).await;
    for i in 0..20 {
        create_node(&leader, &format!("w{i}"))
            .await
            .expect("propose");
    }
    let target = leader.store.index();
    for id in 1..=3 {
        let h = c.handle(id);
        wait_for(
            || h.store.index() >= target,
            Duration::from_secs(5),
            "replication",
        )
        .await;
        assert_eq!(h.store.view().node_count(), 1 + 20, "node {id} store");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_loss_elects_a_new_leader_and_the_old_one_catches_up() {
    let mut c = Cluster3::new(3, 10_000).await;
    let old = c.wait_leader(Duration::from_secs(5)).await;
    let old_id = old.status().id;
    create_node(&old, "before").await.expect("write");
    c.stop(old_id).await;
    let started = Instant::now();
    let new = c.wait_leader(Duration::from_secs(5)).await;
    assert_ne!(new.status().id, old_id);
    create_node(&new, "after")
        .await
        .expect("write on new leader");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "failover took {:?}",
        started.elapsed()
    );
    c.start(old_id);
    let restarted = c.handle(old_id);
    let target = new.store.index();
    wait_for(
        || restarted.store.index() >= target,
        Duration::from_secs(5),
        "catch up",
    )
    .await;
    let view = restarted.store.view();
    assert!(view.node("before").is_some() && view.node("after").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_leader_steps_down_and_majority_goes_on() {
    let c = Cluster3::new(3, 10_000).await;
    let old = c.wait_leader(Duration::from_secs(5)).await;
    let old_id = old.status().id;
    c.isolate(old_id);
    // check-quorum: the cut-off leader notices it has no quorum within a couple of timeouts.
    wait_for(
        || !old.is_leader(),
        Duration::from_secs(2),
        "old leader to step down",
    )
    .await;
    let err = create_node(&old, "lost")
        .await
        .expect_err("minority refuses writes");
    assert!(
        matches!(err, ProposeError::NoLeader | ProposeError::NotLeader { .. }),
        "{err:?}"
    );
    let new = c.wait_leader(Duration::from_secs(5)).await;
    assert_ne!(new.status().id, old_id);
    create_node(&new, "majority")
        .await
        .expect("majority writes");
    c.heal();
    let target = new.store.index();
    wait_for(
        || old.store.index() >= target,
        Duration::from_secs(5),
        "healed node to catch up",
    )
    .await;
    assert!(old.store.view().node("lost").is_none());
    assert!(old.store.view().node("majority").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_without_quorum_fail_fast() {
    let mut c = Cluster3::new(3, 10_000).await;
    let leader = c.wait_leader(Duration::from_secs(5)).await;
    let leader_id = leader.status().id;
    for id in 1..=3 {
        if id != leader_id {
            c.stop(id).await;
        }
    }
    let started = Instant::now();
    let result = create_node(&leader, "x").await;
    assert!(result.is_err(), "write without quorum must fail");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_member_catches_up_by_snapshot_and_restarts_from_it() {
    let mut c = Cluster3::new(2, 20).await;
    let leader = c.wait_leader(Duration::from_secs(5)).await;
    for i in 0..100 {
        create_node(&leader, &format!("n{i}")).await.expect("write");
    }
    // A third member joins after the log was compacted: it can only catch up by snapshot.
    let path = c._dir.path().join("3.redb");
    LogStore::create(&path, None).expect("create");
    c.members.push(Member {
        id: 3,
        path,
        handle: None,
        cancel: CancellationToken::new(),
        task: None,
    });
    c.start(3);
    leader
        .change_membership(
            &RaftMember {
                raft_id: 3,
                node_id: "node3".into(),
                addr: "n3".into(),
            },
            true,
        )
        .await
        .expect("add");
    let target = leader.store.index();
    let h3 = c.handle(3);
    wait_for(
        || h3.store.index() >= target,
        Duration::from_secs(5),
        "snapshot catch-up",
    )
    .await;
    assert_eq!(
        h3.store.view().node_count(),
        leader.store.view().node_count()
    );
    // Restart from its own snapshot plus log tail.
    c.stop(3).await;
    c.start(3);
    let h3 = c.handle(3);
    wait_for(
        || h3.store.view().node_count() == leader.store.view().node_count(),
        Duration::from_secs(5),
        "restart state",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_member_knows_it_was_removed() {
    let c = Cluster3::new(3, 10_000).await;
    let leader = c.wait_leader(Duration::from_secs(5)).await;
    let victim = (1..=3)
        .find(|id| *id != leader.status().id)
        .expect("follower");
    leader
        .change_membership(
            &RaftMember {
                raft_id: victim,
                node_id: format!("node{victim}"),
                addr: String::new(),
            },
            false,
        )
        .await
        .expect("remove");
    let h = c.handle(victim);
    wait_for(
        || h.status().removed,
        Duration::from_secs(5),
        "removal to reach the member",
    )
    .await;
    assert_eq!(leader.status().voters.len(), 2);
    create_node(&leader, "after-removal")
        .await
        .expect("two members still commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_barrier_on_a_new_leader_waits_for_its_first_commit() {
    // Regression: raft drops read-index requests on a leader that has not committed in its
    // term; they used to hang until the 5 s timeout right after every failover.
    let mut c = Cluster3::new(3, 10_000).await;
    let old = c.wait_leader(Duration::from_secs(5)).await;
    let old_id = old.status().id;
    c.stop(old_id).await;
    let new = c.wait_leader(Duration::from_secs(5)).await;
    let started = Instant::now();
    new.read_barrier().await.expect("read barrier");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "read barrier took {:?}",
        started.elapsed()
    );
}
