//! The raft node: one task owns the `RawNode` and its log store, ticks it on a logical clock,
//! persists each Ready (with fsync) before sending the messages that depend on it, and applies
//! committed entries to the [`Store`]. Everything else talks to it through a [`RaftHandle`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use orch_api::pb::{MemberChange, RaftMember, StoreSnapshot, StoreTransaction};
use prost::Message as _;
use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeType, ConfState, Entry, EntryType, Message, Snapshot};
use raft::{RawNode, ReadOnlyOption, SnapshotStatus, StateRole, Storage};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::storage::{LogError, LogStore};
use crate::state::store::{ApplyError, Store};

/// Raft timing. Ticks are logical: tests may drive them faster.
#[derive(Debug, Clone)]
pub struct RaftOptions {
    pub id: u64,
    pub tick: Duration,
    /// Election timeout = tick × election_ticks (randomized up to twice that).
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
}

impl RaftOptions {
    pub fn new(id: u64) -> Self {
        RaftOptions {
            id,
            tick: Duration::from_millis(100),
            election_ticks: 10,
            heartbeat_ticks: 1,
        }
    }

    pub fn election_timeout(&self) -> Duration {
        self.tick * self.election_ticks as u32
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("The swarm does not have a leader. It's possible that too few managers are online. Make sure more than half of the managers are online.")]
    NoLeader,
    #[error("this manager is not the leader")]
    NotLeader { leader: u64 },
    #[error(
        "leadership changed before the write was committed; it may or may not have been applied"
    )]
    LostLeadership,
    #[error("the write was not committed within {0:?}: too few managers may be reachable; it may or may not have been applied")]
    Timeout(Duration),
    #[error("{0}")]
    Rejected(ApplyError),
    #[error("raft: {0}")]
    Raft(String),
    #[error("the raft node has stopped")]
    Stopped,
}

/// What the node looks like now.
#[derive(Debug, Clone, Default)]
pub struct RaftStatus {
    pub id: u64,
    /// 0 when no leader is known.
    pub leader: u64,
    pub term: u64,
    pub is_leader: bool,
    pub applied: u64,
    pub voters: Vec<u64>,
    /// This node was removed from the raft cluster.
    pub removed: bool,
    /// Leader only: peers heard from recently.
    pub reachable: BTreeMap<u64, bool>,
}

enum Request {
    Propose {
        data: Vec<u8>,
        reply: oneshot::Sender<Result<u64, ProposeError>>,
    },
    ConfChange {
        cc: ConfChange,
        reply: oneshot::Sender<Result<u64, ProposeError>>,
    },
    ReadIndex {
        reply: oneshot::Sender<Result<u64, ProposeError>>,
    },
    TransferLeader {
        to: u64,
    },
    Step(Vec<Message>),
    Unreachable(u64),
    SnapshotStatus(u64, SnapshotStatus),
    SnapshotBuilt {
        index: u64,
        conf_state: ConfState,
        data: Vec<u8>,
    },
    Campaign,
}

/// Where outgoing raft messages go (the gRPC transport in production, channels in tests).
pub trait Transport: Send + Sync + 'static {
    fn send(&self, messages: Vec<Message>);
    fn set_peer(&self, member: &RaftMember);
    fn remove_peer(&self, raft_id: u64);
}

/// The member and the proposer's timestamp of a membership change entry's context (a bare
/// `RaftMember`, with no timestamp, in entries written before `MemberChange`).
fn member_change(context: &[u8]) -> (RaftMember, i64) {
    match MemberChange::decode(context) {
        Ok(MemberChange {
            member: Some(member),
            timestamp,
        }) => (member, timestamp),
        _ => (RaftMember::decode(context).unwrap_or_default(), 0),
    }
}

/// A cheap handle to the raft node task.
#[derive(Clone)]
pub struct RaftHandle {
    tx: mpsc::Sender<Request>,
    status: watch::Receiver<RaftStatus>,
    pub store: Arc<Store>,
    propose_timeout: Duration,
}

const PROPOSE_TIMEOUT: Duration = Duration::from_secs(5);

impl RaftHandle {
    async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, ProposeError>>) -> Request,
    ) -> Result<T, ProposeError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| ProposeError::Stopped)?;
        match tokio::time::timeout(self.propose_timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ProposeError::Stopped),
            Err(_) => Err(ProposeError::Timeout(self.propose_timeout)),
        }
    }

    /// Proposes a transaction; returns its raft index once applied on this node.
    pub async fn propose(&self, txn: StoreTransaction) -> Result<u64, ProposeError> {
        let data = txn.encode_to_vec();
        self.request(|reply| Request::Propose { data, reply }).await
    }

    /// Adds or removes a voter; returns once the change is applied here.
    pub async fn change_membership(
        &self,
        member: &RaftMember,
        add: bool,
    ) -> Result<u64, ProposeError> {
        let mut cc = ConfChange::default();
        cc.set_change_type(if add {
            ConfChangeType::AddNode
        } else {
            ConfChangeType::RemoveNode
        });
        cc.node_id = member.raft_id;
        cc.context = MemberChange {
            member: Some(member.clone()),
            timestamp: orch_api::now_nanos(),
        }
        .encode_to_vec()
        .into();
        self.request(|reply| Request::ConfChange { cc, reply })
            .await
    }

    /// Linearizable read barrier: returns once this node's store holds every write committed
    /// before the call (leader only; confirms leadership with a quorum).
    pub async fn read_barrier(&self) -> Result<(), ProposeError> {
        let index = self.request(|reply| Request::ReadIndex { reply }).await?;
        tokio::time::timeout(self.propose_timeout, self.store.wait_applied(index))
            .await
            .map_err(|_| ProposeError::Timeout(self.propose_timeout))
    }

    pub fn transfer_leadership(&self, to: u64) {
        let _ = self.tx.try_send(Request::TransferLeader { to });
    }

    /// Asks the node to start an election now (used by a lone manager at start).
    pub fn campaign(&self) {
        let _ = self.tx.try_send(Request::Campaign);
    }

    /// Feeds messages received from peers. Drops them when the node is overloaded (raft
    /// retransmits).
    pub fn step(&self, messages: Vec<Message>) {
        let _ = self.tx.try_send(Request::Step(messages));
    }

    pub fn report_unreachable(&self, raft_id: u64) {
        let _ = self.tx.try_send(Request::Unreachable(raft_id));
    }

    pub fn report_snapshot(&self, raft_id: u64, status: SnapshotStatus) {
        let _ = self.tx.try_send(Request::SnapshotStatus(raft_id, status));
    }

    pub fn status(&self) -> RaftStatus {
        self.status.borrow().clone()
    }

    pub fn watch_status(&self) -> watch::Receiver<RaftStatus> {
        self.status.clone()
    }

    pub fn is_leader(&self) -> bool {
        self.status.borrow().is_leader
    }
}

struct Pending {
    reply: oneshot::Sender<Result<u64, ProposeError>>,
}

struct RaftNode<T: Transport> {
    raw: RawNode<LogStore>,
    opts: RaftOptions,
    store: Arc<Store>,
    transport: Arc<T>,
    status_tx: watch::Sender<RaftStatus>,
    self_tx: mpsc::Sender<Request>,
    next_proposal: u64,
    pending: HashMap<u64, Pending>,
    conf_queue:
        std::collections::VecDeque<(ConfChange, oneshot::Sender<Result<u64, ProposeError>>)>,
    reads: HashMap<u64, oneshot::Sender<Result<u64, ProposeError>>>,
    deferred_reads: Vec<oneshot::Sender<Result<u64, ProposeError>>>,
    last_heard: HashMap<u64, Instant>,
    applied: u64,
    snapshot_in_progress: bool,
    removed: bool,
    was_leader: bool,
    snapshot_interval: u64,
    keep_entries: u64,
}

/// Snapshot cadence, read from the cluster spec after each apply.
fn snapshot_settings(store: &Store) -> (u64, u64) {
    store
        .view()
        .cluster()
        .and_then(|c| {
            c.spec
                .as_ref()
                .map(|s| (s.snapshot_interval, s.log_entries_for_slow_followers))
        })
        .map(|(i, k)| {
            (
                if i == 0 { 10_000 } else { i },
                if k == 0 { 500 } else { k },
            )
        })
        .unwrap_or((10_000, 500))
}

/// Starts the raft node over an opened log. The store is restored from the log's snapshot,
/// and committed entries after it are re-applied.
pub fn start<T: Transport>(
    opts: RaftOptions,
    log: LogStore,
    store: Arc<Store>,
    transport: Arc<T>,
    shutdown: CancellationToken,
) -> Result<(RaftHandle, tokio::task::JoinHandle<Result<(), RaftError>>), RaftError> {
    let snapshot_index = log.snapshot_index();
    if let Some(data) = log.snapshot_data()? {
        let snapshot = StoreSnapshot::decode(data.as_slice())
            .map_err(|e| RaftError::Corrupt(format!("snapshot: {e}")))?;
        store.restore(snapshot_index, snapshot);
    }
    let voters = log.conf_state().voters.clone();
    let config = raft::Config {
        id: opts.id,
        election_tick: opts.election_ticks,
        heartbeat_tick: opts.heartbeat_ticks,
        applied: snapshot_index,
        max_size_per_msg: 4 << 20,
        max_inflight_msgs: 256,
        check_quorum: true,
        pre_vote: true,
        read_only_option: ReadOnlyOption::Safe,
        max_committed_size_per_ready: 64 << 20,
        ..Default::default()
    };
    config
        .validate()
        .map_err(|e| RaftError::Raft(e.to_string()))?;
    let logger = slog::Logger::root(
        crate::raft::log::TracingDrain,
        slog::o!("raft_id" => opts.id),
    );
    let raw = RawNode::new(&config, log, &logger).map_err(|e| RaftError::Raft(e.to_string()))?;
    let (tx, rx) = mpsc::channel(4096);
    let (status_tx, status_rx) = watch::channel(RaftStatus {
        id: opts.id,
        voters: voters.clone(),
        ..Default::default()
    });
    let (snapshot_interval, keep_entries) = snapshot_settings(&store);
    let members = store.view().members();
    for m in members.iter().filter(|m| m.raft_id != opts.id) {
        transport.set_peer(m);
    }
    let node = RaftNode {
        raw,
        opts: opts.clone(),
        store: store.clone(),
        transport,
        status_tx,
        self_tx: tx.clone(),
        next_proposal: rand::random::<u64>() >> 16,
        pending: HashMap::new(),
        conf_queue: Default::default(),
        reads: HashMap::new(),
        deferred_reads: Vec::new(),
        last_heard: HashMap::new(),
        applied: snapshot_index,
        snapshot_in_progress: false,
        removed: false,
        was_leader: false,
        snapshot_interval,
        keep_entries,
    };
    let handle = RaftHandle {
        tx,
        status: status_rx,
        store,
        propose_timeout: PROPOSE_TIMEOUT,
    };
    if voters == [opts.id] {
        handle.campaign();
    }
    let task = tokio::spawn(node.run(rx, shutdown));
    Ok((handle, task))
}

/// Runs `f`, which blocks (fsync, applying a large batch), without holding up the runtime's
/// other tasks: on a multi-threaded runtime the worker hands them to another thread first.
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RaftError {
    #[error("{0}")]
    Log(#[from] LogError),
    #[error("raft log is corrupt: {0}")]
    Corrupt(String),
    #[error("raft: {0}")]
    Raft(String),
}

impl<T: Transport> RaftNode<T> {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Request>,
        shutdown: CancellationToken,
    ) -> Result<(), RaftError> {
        let mut ticker = tokio::time::interval(self.opts.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let result = loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break Ok(()),
                req = rx.recv() => {
                    let Some(req) = req else { break Ok(()) };
                    self.handle(req);
                    // Take everything queued so one Ready (one fsync) covers the batch.
                    let mut n = 0;
                    while n < 4096 {
                        match rx.try_recv() {
                            Ok(req) => self.handle(req),
                            Err(_) => break,
                        }
                        n += 1;
                    }
                }
                _ = ticker.tick() => {
                    self.raw.tick();
                }
            }
            if let Err(e) = blocking(|| self.on_ready()) {
                error!(error = %e, "raft node failed");
                break Err(e);
            }
        };
        self.fail_pending(ProposeError::Stopped);
        result
    }

    fn handle(&mut self, req: Request) {
        match req {
            Request::Propose { data, reply } => {
                if let Some(err) = self.not_leader() {
                    let _ = reply.send(Err(err));
                    return;
                }
                let id = self.next_id();
                match self.raw.propose(id.to_le_bytes().to_vec(), data) {
                    Ok(()) => {
                        self.pending.insert(id, Pending { reply });
                    }
                    Err(e) => {
                        let _ = reply.send(Err(ProposeError::Raft(e.to_string())));
                    }
                }
            }
            Request::ConfChange { cc, reply } => {
                if let Some(err) = self.not_leader() {
                    let _ = reply.send(Err(err));
                    return;
                }
                // raft accepts one membership change at a time (and none before the leader's
                // first entry is applied): queue, and propose when it can take it.
                self.conf_queue.push_back((cc, reply));
                self.propose_queued_conf_change();
            }
            Request::ReadIndex { reply } => {
                if let Some(err) = self.not_leader() {
                    let _ = reply.send(Err(err));
                    return;
                }
                // raft drops read-index requests until the new leader has committed an entry
                // of its term: hold them until then.
                self.deferred_reads.push(reply);
                self.issue_deferred_reads();
            }
            Request::TransferLeader { to } => self.raw.transfer_leader(to),
            Request::Step(messages) => {
                let now = Instant::now();
                for m in messages {
                    self.last_heard.insert(m.from, now);
                    if let Err(e) = self.raw.step(m) {
                        debug!(error = %e, "raft step");
                    }
                }
            }
            Request::Unreachable(id) => self.raw.report_unreachable(id),
            Request::SnapshotStatus(id, status) => self.raw.report_snapshot(id, status),
            Request::SnapshotBuilt {
                index,
                conf_state,
                data,
            } => {
                self.snapshot_in_progress = false;
                let compact_to = index.saturating_sub(self.keep_entries).max(1);
                match self
                    .raw
                    .mut_store()
                    .create_snapshot(index, conf_state, &data, compact_to)
                {
                    Ok(()) => info!(index, bytes = data.len(), "raft snapshot taken"),
                    Err(e) => error!(error = %e, "raft snapshot failed"),
                }
            }
            Request::Campaign => {
                if let Err(e) = self.raw.campaign() {
                    debug!(error = %e, "campaign");
                }
            }
        }
    }

    fn issue_deferred_reads(&mut self) {
        if self.deferred_reads.is_empty() || !self.raw.raft.commit_to_current_term() {
            return;
        }
        if let Some(err) = self.not_leader() {
            for reply in self.deferred_reads.drain(..) {
                let _ = reply.send(Err(err.clone()));
            }
            return;
        }
        for reply in std::mem::take(&mut self.deferred_reads) {
            let id = self.next_id();
            self.reads.insert(id, reply);
            self.raw.read_index(id.to_le_bytes().to_vec());
        }
    }

    fn propose_queued_conf_change(&mut self) {
        if self.conf_queue.is_empty() || self.raw.raft.has_pending_conf() {
            return;
        }
        if let Some(err) = self.not_leader() {
            for (_, reply) in self.conf_queue.drain(..) {
                let _ = reply.send(Err(err.clone()));
            }
            return;
        }
        let Some((cc, reply)) = self.conf_queue.pop_front() else {
            return;
        };
        let id = self.next_id();
        match self.raw.propose_conf_change(id.to_le_bytes().to_vec(), cc) {
            Ok(()) => {
                self.pending.insert(id, Pending { reply });
            }
            Err(e) => {
                let _ = reply.send(Err(ProposeError::Raft(e.to_string())));
            }
        }
    }

    fn next_id(&mut self) -> u64 {
        self.next_proposal = self.next_proposal.wrapping_add(1);
        self.next_proposal
    }

    fn not_leader(&self) -> Option<ProposeError> {
        if self.raw.raft.state == StateRole::Leader {
            return None;
        }
        Some(match self.raw.raft.leader_id {
            0 => ProposeError::NoLeader,
            leader => ProposeError::NotLeader { leader },
        })
    }

    fn fail_pending(&mut self, err: ProposeError) {
        for (_, p) in self.pending.drain() {
            let _ = p.reply.send(Err(err.clone()));
        }
        for (_, r) in self.reads.drain() {
            let _ = r.send(Err(err.clone()));
        }
        for (_, reply) in self.conf_queue.drain(..) {
            let _ = reply.send(Err(err.clone()));
        }
        for reply in self.deferred_reads.drain(..) {
            let _ = reply.send(Err(err.clone()));
        }
    }

    fn on_ready(&mut self) -> Result<(), RaftError> {
        if !self.raw.has_ready() {
            self.publish_status();
            return Ok(());
        }
        let mut ready = self.raw.ready();
        if !ready.messages().is_empty() {
            self.transport.send(ready.take_messages());
        }
        if !ready.snapshot().is_empty() {
            let snap = ready.snapshot().clone();
            self.install_snapshot(&snap)?;
        }
        self.apply(ready.take_committed_entries())?;
        self.raw.mut_store().append(ready.entries(), ready.hs())?;
        if !ready.persisted_messages().is_empty() {
            self.transport.send(ready.take_persisted_messages());
        }
        for rs in ready.take_read_states() {
            let Ok(ctx) = <[u8; 8]>::try_from(rs.request_ctx.as_slice()) else {
                continue;
            };
            if let Some(reply) = self.reads.remove(&u64::from_le_bytes(ctx)) {
                let _ = reply.send(Ok(rs.index));
            }
        }
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().set_commit(commit);
        }
        if !light.messages().is_empty() {
            self.transport.send(light.take_messages());
        }
        self.apply(light.take_committed_entries())?;
        self.raw.advance_apply();
        self.propose_queued_conf_change();
        self.issue_deferred_reads();
        self.maybe_snapshot();
        self.publish_status();
        Ok(())
    }

    fn install_snapshot(&mut self, snap: &Snapshot) -> Result<(), RaftError> {
        let index = snap.get_metadata().index;
        let state = StoreSnapshot::decode(snap.get_data())
            .map_err(|e| RaftError::Corrupt(format!("snapshot from leader: {e}")))?;
        self.raw.mut_store().apply_snapshot(snap)?;
        self.store.restore(index, state);
        self.applied = index;
        for m in self.store.view().members() {
            if m.raft_id != self.opts.id {
                self.transport.set_peer(&m);
            }
        }
        info!(index, "installed raft snapshot from the leader");
        Ok(())
    }

    fn apply(&mut self, entries: Vec<Entry>) -> Result<(), RaftError> {
        for entry in entries {
            if entry.index <= self.applied {
                continue;
            }
            let proposal = <[u8; 8]>::try_from(entry.context.as_ref())
                .ok()
                .map(u64::from_le_bytes);
            let result = match entry.get_entry_type() {
                EntryType::EntryNormal if entry.data.is_empty() => {
                    self.store.advance(entry.index);
                    Ok(entry.index)
                }
                EntryType::EntryNormal => {
                    let txn = StoreTransaction::decode(entry.data.as_ref())
                        .map_err(|e| RaftError::Corrupt(format!("entry {}: {e}", entry.index)))?;
                    self.store
                        .apply(entry.index, &txn)
                        .map(|()| entry.index)
                        .map_err(ProposeError::Rejected)
                }
                EntryType::EntryConfChange => self.apply_conf_change(&entry)?,
                EntryType::EntryConfChangeV2 => {
                    self.store.advance(entry.index);
                    Err(ProposeError::Raft("joint consensus is not used".into()))
                }
            };
            self.applied = entry.index;
            if let Some(p) = proposal.and_then(|id| self.pending.remove(&id)) {
                let _ = p.reply.send(result);
            }
        }
        Ok(())
    }

    fn apply_conf_change(&mut self, entry: &Entry) -> Result<Result<u64, ProposeError>, RaftError> {
        let cc = ConfChange::parse_from_bytes(entry.data.as_ref())
            .map_err(|e| RaftError::Corrupt(format!("conf change {}: {e}", entry.index)))?;
        let (member, ts) = member_change(&cc.context);
        let added = cc.get_change_type() == ConfChangeType::AddNode;
        let cs = match self.raw.apply_conf_change(&cc) {
            Ok(cs) => cs,
            Err(e) => {
                self.store.advance(entry.index);
                return Ok(Err(ProposeError::Raft(e.to_string())));
            }
        };
        self.raw.mut_store().set_conf_state(cs)?;
        self.store.apply_member_change(
            entry.index,
            &RaftMember {
                raft_id: cc.node_id,
                ..member.clone()
            },
            added,
            ts,
        );
        if added {
            if cc.node_id != self.opts.id {
                self.transport.set_peer(&RaftMember {
                    raft_id: cc.node_id,
                    ..member
                });
            }
            info!(raft_id = cc.node_id, "raft member added");
        } else {
            info!(raft_id = cc.node_id, "raft member removed");
            if cc.node_id == self.opts.id {
                warn!("this manager was removed from the raft cluster");
                self.removed = true;
            } else {
                self.transport.remove_peer(cc.node_id);
            }
        }
        // Whoever waits on this change sees the new membership in the status once it returns.
        self.publish_status();
        Ok(Ok(entry.index))
    }

    fn maybe_snapshot(&mut self) {
        if self.snapshot_in_progress {
            return;
        }
        let (interval, keep) = snapshot_settings(&self.store);
        self.snapshot_interval = interval;
        self.keep_entries = keep;
        let last_snapshot = self.raw.store().snapshot_index();
        let wanted = self.raw.store().take_snapshot_wanted() && self.applied > last_snapshot;
        if !wanted && self.applied < last_snapshot + self.snapshot_interval {
            return;
        }
        // The view is taken at exactly `applied`; encoding runs off the raft task.
        let view = self.store.view();
        if view.index != self.applied {
            return;
        }
        let index = self.applied;
        let conf_state = self.raw.raft.prs().conf().to_conf_state();
        let tx = self.self_tx.clone();
        self.snapshot_in_progress = true;
        tokio::task::spawn_blocking(move || {
            let data = view.to_snapshot().encode_to_vec();
            let _ = tx.blocking_send(Request::SnapshotBuilt {
                index,
                conf_state,
                data,
            });
        });
    }

    fn publish_status(&mut self) {
        let is_leader = self.raw.raft.state == StateRole::Leader;
        if self.was_leader && !is_leader {
            info!(term = self.raw.raft.term, "lost raft leadership");
            self.fail_pending(ProposeError::LostLeadership);
        } else if !self.was_leader && is_leader {
            let raft = &self.raw.raft;
            info!(term = raft.term, "became raft leader");
            // Peers get a fresh grace period: silence before our term is not theirs to answer for.
            let now = Instant::now();
            for id in raft.prs().conf().voters().ids().iter() {
                self.last_heard.insert(id, now);
            }
        }
        self.was_leader = is_leader;
        let raft = &self.raw.raft;
        let term = raft.term;
        let voters: Vec<u64> = raft.prs().conf().voters().ids().iter().collect();
        let mut reachable = BTreeMap::new();
        if is_leader {
            let window = self.opts.election_timeout() * 2;
            for &id in &voters {
                let ok = id == self.opts.id
                    || self
                        .last_heard
                        .get(&id)
                        .is_some_and(|t| t.elapsed() < window);
                reachable.insert(id, ok);
            }
        }
        let status = RaftStatus {
            id: self.opts.id,
            leader: raft.leader_id,
            term,
            is_leader,
            applied: self.applied,
            voters,
            removed: self.removed,
            reachable,
        };
        self.status_tx.send_if_modified(|old| {
            let changed = old.leader != status.leader
                || old.term != status.term
                || old.is_leader != status.is_leader
                || old.voters != status.voters
                || old.removed != status.removed
                || old.reachable != status.reachable
                || old.applied != status.applied;
            if changed {
                *old = status;
            }
            changed
        });
    }
}

/// Checks a raft snapshot's store data before it is used (tests and tools).
pub fn decode_snapshot(data: &[u8]) -> Result<StoreSnapshot, RaftError> {
    StoreSnapshot::decode(data).map_err(|e| RaftError::Corrupt(e.to_string()))
}

/// The bootstrap snapshot of a new cluster: index 1, term 1, one voter, the initial store.
pub fn bootstrap_snapshot(raft_id: u64, state: &StoreSnapshot) -> Snapshot {
    let mut snap = Snapshot::default();
    snap.mut_metadata().index = 1;
    snap.mut_metadata().term = 1;
    snap.mut_metadata().mut_conf_state().voters = vec![raft_id];
    snap.data = state.encode_to_vec().into();
    snap
}

/// Applies every entry in the log after its snapshot to `store` (already restored from that
/// snapshot), treating the whole local log as committed. Returns the last index.
pub fn replay_log(log: &LogStore, store: &Store) -> Result<u64, RaftError> {
    let first = log
        .first_index()
        .map_err(|e| RaftError::Raft(e.to_string()))?;
    let last = log
        .last_index()
        .map_err(|e| RaftError::Raft(e.to_string()))?;
    let start = first.max(log.snapshot_index() + 1);
    if start > last {
        return Ok(log.snapshot_index());
    }
    let entries = log
        .entries(start, last + 1, None, raft::GetEntriesContext::empty(false))
        .map_err(|e| RaftError::Raft(e.to_string()))?;
    for entry in entries {
        match entry.get_entry_type() {
            EntryType::EntryNormal if !entry.data.is_empty() => {
                let txn = StoreTransaction::decode(entry.data.as_ref())
                    .map_err(|e| RaftError::Corrupt(format!("entry {}: {e}", entry.index)))?;
                let _ = store.apply(entry.index, &txn);
            }
            EntryType::EntryConfChange => {
                let cc = ConfChange::parse_from_bytes(entry.data.as_ref())
                    .map_err(|e| RaftError::Corrupt(format!("conf change {}: {e}", entry.index)))?;
                let (member, ts) = member_change(&cc.context);
                let added = cc.get_change_type() == ConfChangeType::AddNode;
                store.apply_member_change(
                    entry.index,
                    &RaftMember {
                        raft_id: cc.node_id,
                        ..member
                    },
                    added,
                    ts,
                );
            }
            _ => store.advance(entry.index),
        }
    }
    Ok(last)
}

/// Rewrites a manager's log into a one-member cluster holding all of its state
/// (`init --force-new-cluster`): everything in the local log is kept, other managers are
/// demoted to workers, and the result becomes a snapshot with only this node as voter, at a
/// term above anything seen.
pub fn force_new_cluster(log: &mut LogStore, raft_id: u64, store: &Store) -> Result<(), RaftError> {
    use orch_api::pb::{store_action::Action, NodeRole, StoreAction};
    let last = replay_log(log, store)?;
    let view = store.view();
    let demote: Vec<StoreAction> = view
        .nodes()
        .filter(|n| {
            n.manager_status
                .as_ref()
                .is_some_and(|m| m.raft_id != raft_id)
        })
        .map(|n| {
            let mut n = (**n).clone();
            n.manager_status = None;
            n.role = NodeRole::Worker as i32;
            if let Some(spec) = n.spec.as_mut() {
                spec.desired_role = NodeRole::Worker as i32;
            }
            StoreAction {
                action: Some(Action::UpdateNode(n)),
            }
        })
        .collect();
    let index = last + 1;
    if !demote.is_empty() {
        store
            .apply(
                index,
                &StoreTransaction {
                    actions: demote,
                    timestamp: orch_api::now_nanos(),
                },
            )
            .map_err(|e| RaftError::Raft(e.to_string()))?;
    }
    let term = log.hard_state().term + 1;
    let mut snap = Snapshot::default();
    snap.mut_metadata().index = index;
    snap.mut_metadata().term = term;
    snap.mut_metadata().mut_conf_state().voters = vec![raft_id];
    snap.data = store.view().to_snapshot().encode_to_vec().into();
    log.apply_snapshot(&snap)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    /// Every manager stamps a member's node with the proposer's clock carried in the entry
    /// (it used its own clock when applying, and 0 when replaying: apply differed between
    /// managers and between a manager and itself after a restart).
    #[test]
    fn a_membership_change_carries_the_proposers_timestamp() {
        let member = RaftMember {
            raft_id: 7,
            node_id: "n7".into(),
            addr: "10.0.0.7:2377".into(),
        };
        let now = MemberChange {
            member: Some(member.clone()),
            timestamp: 42,
        }
        .encode_to_vec();
        assert_eq!(member_change(&now), (member.clone(), 42));
        // Entries written before MemberChange: a bare RaftMember, no timestamp.
        assert_eq!(member_change(&member.encode_to_vec()), (member.clone(), 0));
        let no_raft_id = RaftMember {
            raft_id: 0,
            ..member.clone()
        };
        assert_eq!(member_change(&no_raft_id.encode_to_vec()), (no_raft_id, 0));
        assert_eq!(member_change(&[]), (RaftMember::default(), 0));
    }
}
