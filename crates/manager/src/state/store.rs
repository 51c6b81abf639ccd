//! The replicated store: tables of clusters, nodes, services and tasks, changed only by
//! applying committed raft entries, in log order, on every manager.
//!
//! Tables are persistent maps (imbl): a read view is an O(1) clone that never blocks the
//! applier, and components take one, decide, and propose a transaction. A transaction applies
//! all-or-nothing: an update carries the version it read, and a stale one fails the whole
//! transaction on every manager alike. Every applied transaction is broadcast as a [`Change`]:
//! the store is the bus components watch.

use std::sync::Arc;

use imbl::{OrdMap, OrdSet};
use orch_api::pb::store_action::Action;
use orch_api::pb::{
    Cluster, ManagerStatus, Meta, Node, RaftMember, Service, StoreSnapshot, StoreTransaction, Task,
};
use parking_lot::RwLock;
use tokio::sync::{broadcast, watch};

fn is_pending(t: &Task) -> bool {
    t.status
        .as_ref()
        .is_some_and(|s| s.state == orch_api::pb::TaskState::Pending as i32)
}

/// An object of any table.
#[derive(Debug, Clone)]
pub enum Object {
    Cluster(Arc<Cluster>),
    Node(Arc<Node>),
    Service(Arc<Service>),
    Task(Arc<Task>),
}

#[derive(Debug, Clone)]
pub enum Event {
    Created(Object),
    Updated { old: Object, new: Object },
    Deleted(Object),
}

impl Event {
    /// The object as it is after the event (the deleted object for deletions).
    pub fn object(&self) -> &Object {
        match self {
            Event::Created(o) | Event::Deleted(o) => o,
            Event::Updated { new, .. } => new,
        }
    }
}

/// One applied transaction's events.
#[derive(Debug)]
pub struct Change {
    pub index: u64,
    pub events: Vec<Event>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("{kind} {id} already exists")]
    Exists { kind: &'static str, id: String },
    #[error("{kind} with name {name} already exists")]
    NameConflict { kind: &'static str, name: String },
    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },
    #[error("update out of sequence: {kind} {id} changed since it was read (version {read}, now {current})")]
    VersionConflict {
        kind: &'static str,
        id: String,
        read: u64,
        current: u64,
    },
    #[error("malformed store transaction: {0}")]
    Malformed(String),
}

/// A consistent read view of every table at one applied index.
#[derive(Debug, Clone, Default)]
pub struct Tables {
    pub index: u64,
    clusters: OrdMap<String, Arc<Cluster>>,
    nodes: OrdMap<String, Arc<Node>>,
    services: OrdMap<String, Arc<Service>>,
    tasks: OrdMap<String, Arc<Task>>,
    service_names: OrdMap<String, String>,
    tasks_by_service: OrdMap<String, OrdSet<String>>,
    tasks_by_node: OrdMap<String, OrdSet<String>>,
    /// Tasks waiting for the scheduler (status PENDING).
    pending: OrdSet<String>,
    /// What each node's tasks hold, kept as tasks change (the scheduler reads it each round
    /// instead of walking every task).
    node_load: OrdMap<String, NodeLoad>,
    /// Per service: (tasks desired running, of which running), for `service ls`.
    service_counts: OrdMap<String, (u64, u64)>,
}

/// What the tasks that occupy a node (see [`occupies_node`]) hold of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeLoad {
    pub tasks: usize,
    pub nano_cpus: i64,
    pub memory_bytes: i64,
    pub by_service: OrdMap<String, usize>,
    /// Tasks that publish ports in host mode (the scheduler then looks at their ports).
    pub with_host_ports: usize,
}

/// A task holds its node's resources from assignment until it stops or is told to stop.
pub fn occupies_node(t: &Task) -> bool {
    let state = t.status.as_ref().map_or(0, |s| s.state);
    !t.node_id.is_empty()
        && t.desired_state <= orch_api::pb::TaskState::Running as i32
        && state < orch_api::pb::TaskState::Complete as i32
}

/// The resources a task reserves: (nano CPUs, memory bytes).
pub fn reservation(t: &Task) -> (i64, i64) {
    t.spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.reservations.as_ref())
        .map_or((0, 0), |r| (r.nano_cpus, r.memory_bytes))
}

/// The ports the task publishes in host mode: (protocol, published port).
pub fn host_ports(t: &Task) -> impl Iterator<Item = (&str, u32)> {
    t.endpoint
        .iter()
        .flat_map(|e| e.ports.iter())
        .filter(|p| {
            p.publish_mode == orch_api::pb::PublishMode::Host as i32 && p.published_port != 0
        })
        .map(|p| (p.protocol.as_str(), p.published_port))
}

/// Whether the task publishes a port in host mode.
pub fn publishes_host_ports(t: &Task) -> bool {
    host_ports(t).next().is_some()
}

/// What a lookup by user-given reference (ID, ID prefix, or name) found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("{kind} {reference} not found")]
    NotFound {
        kind: &'static str,
        reference: String,
    },
    #[error("{kind} {reference} is ambiguous ({count} matches found)")]
    Ambiguous {
        kind: &'static str,
        reference: String,
        count: usize,
    },
}

impl Tables {
    /// The cluster object (there is exactly one once the cluster is initialized).
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.clusters.values().next()
    }

    pub fn node(&self, id: &str) -> Option<&Arc<Node>> {
        self.nodes.get(id)
    }

    pub fn nodes(&self) -> impl Iterator<Item = &Arc<Node>> {
        self.nodes.values()
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub fn service(&self, id: &str) -> Option<&Arc<Service>> {
        self.services.get(id)
    }

    pub fn services(&self) -> impl Iterator<Item = &Arc<Service>> {
        self.services.values()
    }

    pub fn service_by_name(&self, name: &str) -> Option<&Arc<Service>> {
        self.service_names
            .get(name)
            .and_then(|id| self.services.get(id))
    }

    pub fn task(&self, id: &str) -> Option<&Arc<Task>> {
        self.tasks.get(id)
    }

    pub fn tasks(&self) -> impl Iterator<Item = &Arc<Task>> {
        self.tasks.values()
    }

    /// IDs of services that have tasks (including deleted services whose tasks remain).
    pub fn services_with_tasks(&self) -> impl Iterator<Item = String> + '_ {
        self.tasks_by_service.keys().cloned()
    }

    /// What the tasks on `node_id` hold of it (None: nothing).
    pub fn node_load(&self, node_id: &str) -> Option<&NodeLoad> {
        self.node_load.get(node_id)
    }

    /// A service's tasks desired running, and how many of them run.
    pub fn service_counts(&self, service_id: &str) -> (u64, u64) {
        self.service_counts
            .get(service_id)
            .copied()
            .unwrap_or_default()
    }

    /// Tasks whose status is PENDING (waiting to be scheduled).
    pub fn pending_tasks(&self) -> impl Iterator<Item = &Arc<Task>> {
        self.pending.iter().filter_map(|id| self.tasks.get(id))
    }

    pub fn task_count(&self) -> usize {
        self.tasks.len()
    }

    pub fn tasks_of_service<'a>(
        &'a self,
        service_id: &str,
    ) -> impl Iterator<Item = &'a Arc<Task>> + 'a {
        self.tasks_by_service
            .get(service_id)
            .into_iter()
            .flat_map(|ids| ids.iter())
            .filter_map(|id| self.tasks.get(id))
    }

    pub fn tasks_of_node<'a>(&'a self, node_id: &str) -> impl Iterator<Item = &'a Arc<Task>> + 'a {
        self.tasks_by_node
            .get(node_id)
            .into_iter()
            .flat_map(|ids| ids.iter())
            .filter_map(|id| self.tasks.get(id))
    }

    /// Managers that are raft members, with their raft ID and address.
    pub fn members(&self) -> Vec<RaftMember> {
        self.nodes
            .values()
            .filter_map(|n| {
                n.manager_status
                    .as_ref()
                    .filter(|m| m.raft_id != 0)
                    .map(|m| RaftMember {
                        raft_id: m.raft_id,
                        node_id: n.id.clone(),
                        addr: m.addr.clone(),
                    })
            })
            .collect()
    }

    pub fn node_by_raft_id(&self, raft_id: u64) -> Option<&Arc<Node>> {
        self.nodes.values().find(|n| {
            n.manager_status
                .as_ref()
                .is_some_and(|m| m.raft_id == raft_id)
        })
    }

    /// Finds a node by full ID, unique ID prefix, or hostname, as docker resolves NODE.
    pub fn find_node(&self, reference: &str) -> Result<Arc<Node>, LookupError> {
        if let Some(n) = self.nodes.get(reference) {
            return Ok(n.clone());
        }
        let by_name: Vec<_> = self
            .nodes
            .values()
            .filter(|n| {
                n.description
                    .as_ref()
                    .is_some_and(|d| d.hostname == reference)
            })
            .collect();
        let by_prefix: Vec<_> = self
            .nodes
            .values()
            .filter(|n| n.id.starts_with(reference))
            .collect();
        resolve("node", reference, by_name, by_prefix)
    }

    /// Finds a service by full ID, name, or unique ID prefix.
    pub fn find_service(&self, reference: &str) -> Result<Arc<Service>, LookupError> {
        if let Some(s) = self.services.get(reference) {
            return Ok(s.clone());
        }
        if let Some(s) = self.service_by_name(reference) {
            return Ok(s.clone());
        }
        let by_prefix: Vec<_> = self
            .services
            .values()
            .filter(|s| s.id.starts_with(reference))
            .collect();
        resolve("service", reference, Vec::new(), by_prefix)
    }

    /// Every object, as raft snapshots hold them.
    pub fn to_snapshot(&self) -> StoreSnapshot {
        StoreSnapshot {
            clusters: self.clusters.values().map(|c| (**c).clone()).collect(),
            nodes: self.nodes.values().map(|n| (**n).clone()).collect(),
            services: self.services.values().map(|s| (**s).clone()).collect(),
            tasks: self.tasks.values().map(|t| (**t).clone()).collect(),
        }
    }

    fn from_snapshot(index: u64, snapshot: StoreSnapshot) -> Self {
        let mut t = Tables {
            index,
            ..Default::default()
        };
        for c in snapshot.clusters {
            t.clusters.insert(c.id.clone(), Arc::new(c));
        }
        for n in snapshot.nodes {
            t.nodes.insert(n.id.clone(), Arc::new(n));
        }
        for s in snapshot.services {
            t.insert_service(Arc::new(s));
        }
        for task in snapshot.tasks {
            t.insert_task(Arc::new(task));
        }
        t
    }

    fn insert_service(&mut self, s: Arc<Service>) {
        if let Some(spec) = &s.spec {
            self.service_names.insert(spec.name.clone(), s.id.clone());
        }
        self.services.insert(s.id.clone(), s);
    }

    fn remove_service(&mut self, id: &str) -> Option<Arc<Service>> {
        let old = self.services.remove(id)?;
        if let Some(spec) = &old.spec {
            if self
                .service_names
                .get(&spec.name)
                .is_some_and(|sid| sid == id)
            {
                self.service_names.remove(&spec.name);
            }
        }
        Some(old)
    }

    fn insert_task(&mut self, t: Arc<Task>) {
        let old = self.tasks.get(&t.id).cloned();
        match &old {
            // Most updates are status reports: the service and node sets stay as they are.
            Some(old) if old.service_id == t.service_id && old.node_id == t.node_id => {
                self.load(old, false);
                if is_pending(old) && !is_pending(&t) {
                    self.pending.remove(&t.id);
                }
            }
            Some(old) => {
                self.unindex_task(old);
                self.index_sets(&t);
            }
            None => self.index_sets(&t),
        }
        if is_pending(&t) && !old.as_ref().is_some_and(|o| is_pending(o)) {
            self.pending.insert(t.id.clone());
        }
        self.load(&t, true);
        self.tasks.insert(t.id.clone(), t);
    }

    fn index_sets(&mut self, t: &Task) {
        self.tasks_by_service
            .entry(t.service_id.clone())
            .or_default()
            .insert(t.id.clone());
        if !t.node_id.is_empty() {
            self.tasks_by_node
                .entry(t.node_id.clone())
                .or_default()
                .insert(t.id.clone());
        }
    }

    /// Adds (or takes away) what `t` holds of its node, and counts it for its service.
    fn load(&mut self, t: &Task, add: bool) {
        if t.desired_state == orch_api::pb::TaskState::Running as i32 {
            let running = u64::from(
                t.status.as_ref().map_or(0, |s| s.state) == orch_api::pb::TaskState::Running as i32,
            );
            let counts = self.service_counts.entry(t.service_id.clone()).or_default();
            if add {
                counts.0 += 1;
                counts.1 += running;
            } else {
                counts.0 = counts.0.saturating_sub(1);
                counts.1 = counts.1.saturating_sub(running);
            }
            if counts.0 == 0 {
                self.service_counts.remove(&t.service_id);
            }
        }
        if !occupies_node(t) {
            return;
        }
        let (cpu, memory) = reservation(t);
        let sign = if add { 1 } else { -1 };
        let load = self.node_load.entry(t.node_id.clone()).or_default();
        if add {
            load.tasks += 1;
            *load.by_service.entry(t.service_id.clone()).or_default() += 1;
        } else {
            load.tasks = load.tasks.saturating_sub(1);
            let gone = match load.by_service.get_mut(&t.service_id) {
                Some(n) => {
                    *n = n.saturating_sub(1);
                    *n == 0
                }
                None => false,
            };
            if gone {
                load.by_service.remove(&t.service_id);
            }
        }
        load.nano_cpus += sign * cpu;
        load.memory_bytes += sign * memory;
        if publishes_host_ports(t) {
            load.with_host_ports = if add {
                load.with_host_ports + 1
            } else {
                load.with_host_ports.saturating_sub(1)
            };
        }
        if load.tasks == 0 {
            self.node_load.remove(&t.node_id);
        }
    }

    fn unindex_task(&mut self, t: &Task) {
        self.load(t, false);
        self.pending.remove(&t.id);
        for (index, key) in [
            (&mut self.tasks_by_service, &t.service_id),
            (&mut self.tasks_by_node, &t.node_id),
        ] {
            if key.is_empty() {
                continue;
            }
            let now_empty = match index.get_mut(key) {
                Some(set) => {
                    set.remove(&t.id);
                    set.is_empty()
                }
                None => false,
            };
            if now_empty {
                index.remove(key);
            }
        }
    }

    fn remove_task(&mut self, id: &str) -> Option<Arc<Task>> {
        let old = self.tasks.remove(id)?;
        self.unindex_task(&old);
        Some(old)
    }
}

fn resolve<T: Clone>(
    kind: &'static str,
    reference: &str,
    by_name: Vec<&T>,
    by_prefix: Vec<&T>,
) -> Result<T, LookupError> {
    let candidates = if !by_name.is_empty() {
        by_name
    } else {
        by_prefix
    };
    match candidates.as_slice() {
        [] => Err(LookupError::NotFound {
            kind,
            reference: reference.to_string(),
        }),
        [one] => Ok((*one).clone()),
        many => Err(LookupError::Ambiguous {
            kind,
            reference: reference.to_string(),
            count: many.len(),
        }),
    }
}

/// What every table's objects share, so create/update/delete are written once.
trait Stored: Clone + PartialEq {
    const KIND: &'static str;
    fn id(&self) -> &str;
    fn meta(&self) -> &Option<Meta>;
    fn meta_mut(&mut self) -> &mut Option<Meta>;
    fn object(obj: Arc<Self>) -> Object;
    fn get(t: &Tables, id: &str) -> Option<Arc<Self>>;
    /// Inserts or replaces, keeping the table's indexes.
    fn put(t: &mut Tables, obj: Arc<Self>);
    fn remove(t: &mut Tables, id: &str) -> Option<Arc<Self>>;
}

macro_rules! stored {
    ($ty:ty, $kind:literal, $variant:ident, put: $put:expr, remove: $remove:expr, get: $table:ident) => {
        impl Stored for $ty {
            const KIND: &'static str = $kind;
            fn id(&self) -> &str {
                &self.id
            }
            fn meta(&self) -> &Option<Meta> {
                &self.meta
            }
            fn meta_mut(&mut self) -> &mut Option<Meta> {
                &mut self.meta
            }
            fn object(obj: Arc<Self>) -> Object {
                Object::$variant(obj)
            }
            fn get(t: &Tables, id: &str) -> Option<Arc<Self>> {
                t.$table.get(id).cloned()
            }
            fn put(t: &mut Tables, obj: Arc<Self>) {
                let put: fn(&mut Tables, Arc<Self>) = $put;
                put(t, obj)
            }
            fn remove(t: &mut Tables, id: &str) -> Option<Arc<Self>> {
                let remove: fn(&mut Tables, &str) -> Option<Arc<Self>> = $remove;
                remove(t, id)
            }
        }
    };
}

stored!(Cluster, "cluster", Cluster,
    put: |t, c| { t.clusters.insert(c.id.clone(), c); },
    remove: |t, id| t.clusters.remove(id),
    get: clusters);
stored!(Node, "node", Node,
    put: |t, n| { t.nodes.insert(n.id.clone(), n); },
    remove: |t, id| t.nodes.remove(id),
    get: nodes);
stored!(Service, "service", Service,
    put: |t, s| {
        t.remove_service(&s.id);
        t.insert_service(s);
    },
    remove: |t, id| t.remove_service(id),
    get: services);
stored!(Task, "task", Task,
    put: |t, task| t.insert_task(task),
    remove: |t, id| t.remove_task(id),
    get: tasks);

fn stamp(meta: &mut Option<Meta>, index: u64, ts: i64, created: Option<i64>) {
    let meta = meta.get_or_insert_with(Default::default);
    meta.version = index;
    meta.updated_at = ts;
    match created {
        Some(created) => meta.created_at = created,
        None if meta.created_at == 0 => meta.created_at = ts,
        None => {}
    }
}

fn version_of(meta: &Option<Meta>) -> u64 {
    meta.as_ref().map_or(0, |m| m.version)
}

fn created_of(meta: &Option<Meta>) -> i64 {
    meta.as_ref().map_or(0, |m| m.created_at)
}

fn not_found<T: Stored>(id: &str) -> ApplyError {
    ApplyError::NotFound {
        kind: T::KIND,
        id: id.to_string(),
    }
}

fn create<T: Stored>(
    t: &mut Tables,
    index: u64,
    ts: i64,
    obj: &T,
    events: &mut Vec<Event>,
) -> Result<(), ApplyError> {
    if T::get(t, obj.id()).is_some() {
        return Err(ApplyError::Exists {
            kind: T::KIND,
            id: obj.id().to_string(),
        });
    }
    let mut obj = obj.clone();
    stamp(obj.meta_mut(), index, ts, None);
    let obj = Arc::new(obj);
    T::put(t, obj.clone());
    events.push(Event::Created(T::object(obj)));
    Ok(())
}

/// Replaces an object read at the version its meta carries (optimistic concurrency).
fn update<T: Stored>(
    t: &mut Tables,
    index: u64,
    ts: i64,
    obj: &T,
    events: &mut Vec<Event>,
) -> Result<(), ApplyError> {
    let old = T::get(t, obj.id()).ok_or_else(|| not_found::<T>(obj.id()))?;
    let (read, current) = (version_of(obj.meta()), version_of(old.meta()));
    if read != current {
        return Err(ApplyError::VersionConflict {
            kind: T::KIND,
            id: obj.id().to_string(),
            read,
            current,
        });
    }
    replace(t, index, ts, &old, obj.clone(), events);
    Ok(())
}

/// Stores `new` in place of `old` (no version check), recording the event.
fn replace<T: Stored>(
    t: &mut Tables,
    index: u64,
    ts: i64,
    old: &Arc<T>,
    mut new: T,
    events: &mut Vec<Event>,
) {
    stamp(new.meta_mut(), index, ts, Some(created_of(old.meta())));
    let new = Arc::new(new);
    T::put(t, new.clone());
    events.push(Event::Updated {
        old: T::object(old.clone()),
        new: T::object(new),
    });
}

fn delete<T: Stored>(t: &mut Tables, id: &str, events: &mut Vec<Event>) -> Result<(), ApplyError> {
    let old = T::remove(t, id).ok_or_else(|| not_found::<T>(id))?;
    events.push(Event::Deleted(T::object(old)));
    Ok(())
}

fn service_name(s: &Service) -> String {
    s.spec
        .as_ref()
        .map(|sp| sp.name.clone())
        .unwrap_or_default()
}

/// Applies one transaction to `t`, collecting events. Pure: the caller discards `t` on error.
fn apply_txn(
    t: &mut Tables,
    index: u64,
    txn: &StoreTransaction,
    events: &mut Vec<Event>,
) -> Result<(), ApplyError> {
    let ts = txn.timestamp;
    for action in &txn.actions {
        let action = action
            .action
            .as_ref()
            .ok_or_else(|| ApplyError::Malformed("empty action".into()))?;
        match action {
            Action::CreateCluster(c) => create(t, index, ts, c, events)?,
            Action::UpdateCluster(c) => update(t, index, ts, c, events)?,
            Action::CreateNode(n) => create(t, index, ts, n, events)?,
            Action::UpdateNode(n) => update(t, index, ts, n, events)?,
            Action::DeleteNode(id) => delete::<Node>(t, id, events)?,
            Action::CreateService(s) => {
                let name = service_name(s);
                if t.service_names.contains_key(&name) {
                    return Err(ApplyError::NameConflict {
                        kind: "service",
                        name,
                    });
                }
                create(t, index, ts, s, events)?
            }
            Action::UpdateService(s) => {
                let name = service_name(s);
                if t.service_names.get(&name).is_some_and(|id| id != &s.id) {
                    return Err(ApplyError::NameConflict {
                        kind: "service",
                        name,
                    });
                }
                update(t, index, ts, s, events)?
            }
            Action::DeleteService(id) => delete::<Service>(t, id, events)?,
            Action::CreateTask(task) => create(t, index, ts, task, events)?,
            Action::UpdateTask(task) => update(t, index, ts, task, events)?,
            Action::DeleteTask(id) => delete::<Task>(t, id, events)?,
            Action::TaskStatus(report) => {
                // Agents report what they see; a report about a task that is gone, or an
                // older state than the store has, is dropped without failing the batch.
                let (Some(old), Some(status)) = (
                    t.tasks.get(&report.task_id).cloned(),
                    report.status.as_ref(),
                ) else {
                    continue;
                };
                let current = old.status.as_ref();
                let cur_state = current.map_or(0, |s| s.state);
                let newer = status.state > cur_state
                    || (status.state == cur_state
                        && current.is_some_and(|c| c != status && status.timestamp >= c.timestamp));
                if newer {
                    let mut task = (*old).clone();
                    task.status = Some(status.clone());
                    replace(t, index, ts, &old, task, events);
                }
            }
            Action::NodeStatus(change) => {
                let Some(old) = t.nodes.get(&change.node_id).cloned() else {
                    continue;
                };
                let mut n = (*old).clone();
                if let Some(status) = &change.status {
                    n.status = Some(status.clone());
                }
                if let Some(description) = &change.description {
                    n.description = Some(description.clone());
                }
                if *old != n {
                    replace(t, index, ts, &old, n, events);
                }
            }
        }
    }
    Ok(())
}

/// The store of one manager.
pub struct Store {
    tables: RwLock<Tables>,
    events: broadcast::Sender<Arc<Change>>,
    applied: watch::Sender<u64>,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(4096);
        let (applied, _) = watch::channel(0);
        Store {
            tables: RwLock::new(Tables::default()),
            events,
            applied,
        }
    }

    /// A consistent view of every table (O(1)).
    pub fn view(&self) -> Tables {
        self.tables.read().clone()
    }

    /// A view and a subscription that starts exactly after it.
    pub fn view_and_watch(&self) -> (Tables, broadcast::Receiver<Arc<Change>>) {
        let tables = self.tables.read();
        (tables.clone(), self.events.subscribe())
    }

    pub fn index(&self) -> u64 {
        self.tables.read().index
    }

    /// Waits until the store has applied `index`.
    pub async fn wait_applied(&self, index: u64) {
        let mut rx = self.applied.subscribe();
        let _ = rx.wait_for(|applied| *applied >= index).await;
    }

    /// Applies a committed transaction at raft `index`. A rejected transaction changes nothing
    /// (but the index still advances).
    pub fn apply(&self, index: u64, txn: &StoreTransaction) -> Result<(), ApplyError> {
        let mut tables = self.tables.write();
        let mut next = tables.clone();
        let mut events = Vec::new();
        let result = apply_txn(&mut next, index, txn, &mut events);
        match result {
            Ok(()) => {
                next.index = index;
                *tables = next;
            }
            Err(_) => {
                tables.index = index;
                events.clear();
            }
        }
        self.publish(&mut tables, index, events);
        result
    }

    /// Records a raft membership change on the member's node object (its manager status).
    pub fn apply_member_change(
        &self,
        index: u64,
        member: &RaftMember,
        added: bool,
        timestamp: i64,
    ) {
        let mut tables = self.tables.write();
        let mut events = Vec::new();
        let node_id = if added {
            Some(member.node_id.clone())
        } else {
            tables.node_by_raft_id(member.raft_id).map(|n| n.id.clone())
        };
        if let Some(old) = node_id.and_then(|id| tables.nodes.get(&id).cloned()) {
            let mut n = (*old).clone();
            n.manager_status = if added {
                Some(ManagerStatus {
                    raft_id: member.raft_id,
                    addr: member.addr.clone(),
                    ..Default::default()
                })
            } else {
                None
            };
            replace(&mut tables, index, timestamp, &old, n, &mut events);
        }
        tables.index = index;
        self.publish(&mut tables, index, events);
    }

    /// Notes that raft applied `index` without a store change (empty or conf entries).
    pub fn advance(&self, index: u64) {
        let mut tables = self.tables.write();
        if index > tables.index {
            tables.index = index;
            self.publish(&mut tables, index, Vec::new());
        }
    }

    /// Replaces everything with a snapshot's contents at raft `index`. Watchers see a change
    /// with no events and must re-read (they cannot tell what changed).
    pub fn restore(&self, index: u64, snapshot: StoreSnapshot) {
        let mut tables = self.tables.write();
        *tables = Tables::from_snapshot(index, snapshot);
        self.publish(&mut tables, index, Vec::new());
        let _ = self.events.send(Arc::new(Change {
            index,
            events: vec![],
        }));
    }

    fn publish(&self, tables: &mut Tables, index: u64, events: Vec<Event>) {
        if !events.is_empty() {
            let _ = self.events.send(Arc::new(Change { index, events }));
        }
        let _ = tables;
        self.applied.send_replace(index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orch_api::pb::{NodeDescription, ServiceSpec, StoreAction};

    fn txn(actions: Vec<Action>) -> StoreTransaction {
        StoreTransaction {
            actions: actions
                .into_iter()
                .map(|a| StoreAction { action: Some(a) })
                .collect(),
            timestamp: 42,
        }
    }

    fn node(id: &str, hostname: &str) -> Node {
        Node {
            id: id.into(),
            description: Some(NodeDescription {
                hostname: hostname.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn service(id: &str, name: &str) -> Service {
        Service {
            id: id.into(),
            spec: Some(ServiceSpec {
                name: name.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn create_sets_version_and_watchers_see_it() {
        let store = Store::new();
        let (_, mut rx) = store.view_and_watch();
        store
            .apply(5, &txn(vec![Action::CreateNode(node("n1", "a"))]))
            .expect("apply");
        let view = store.view();
        assert_eq!(
            view.node("n1").and_then(|n| n.meta).map(|m| m.version),
            Some(5)
        );
        let change = rx.try_recv().expect("event");
        assert_eq!(change.index, 5);
        assert!(matches!(change.events[0], Event::Created(Object::Node(_))));
    }

    #[test]
    fn stale_update_rejects_whole_transaction() {
        let store = Store::new();
        store
            .apply(1, &txn(vec![Action::CreateNode(node("n1", "a"))]))
            .expect("create");
        let mut stale = node("n1", "b");
        stale.meta = Some(Meta {
            version: 0,
            ..Default::default()
        });
        let err = store
            .apply(
                2,
                &txn(vec![
                    Action::CreateNode(node("n2", "c")),
                    Action::UpdateNode(stale),
                ]),
            )
            .expect_err("conflict");
        assert!(matches!(err, ApplyError::VersionConflict { .. }));
        let view = store.view();
        assert!(view.node("n2").is_none(), "first action rolled back");
        assert_eq!(view.index, 2, "index advances anyway");
    }

    #[test]
    fn service_names_are_unique() {
        let store = Store::new();
        store
            .apply(1, &txn(vec![Action::CreateService(service("s1", "web"))]))
            .expect("create");
        let err = store
            .apply(2, &txn(vec![Action::CreateService(service("s2", "web"))]))
            .expect_err("dup");
        assert_eq!(
            err,
            ApplyError::NameConflict {
                kind: "service",
                name: "web".into()
            }
        );
        store
            .apply(3, &txn(vec![Action::DeleteService("s1".into())]))
            .expect("delete");
        store
            .apply(4, &txn(vec![Action::CreateService(service("s2", "web"))]))
            .expect("reuse name");
    }

    #[test]
    fn find_node_by_id_prefix_and_hostname() {
        let store = Store::new();
        store
            .apply(
                1,
                &txn(vec![
                    Action::CreateNode(node("abc111", "alpha")),
                    Action::CreateNode(node("abc222", "beta")),
                ]),
            )
            .expect("create");
        let view = store.view();
        assert_eq!(
            view.find_node("abc111").map(|n| n.id.clone()),
            Ok("abc111".into())
        );
        assert_eq!(
            view.find_node("beta").map(|n| n.id.clone()),
            Ok("abc222".into())
        );
        assert_eq!(
            view.find_node("abc2").map(|n| n.id.clone()),
            Ok("abc222".into())
        );
        assert!(matches!(
            view.find_node("abc"),
            Err(LookupError::Ambiguous { count: 2, .. })
        ));
        assert!(matches!(
            view.find_node("zzz"),
            Err(LookupError::NotFound { .. })
        ));
    }

    #[test]
    fn task_indexes_follow_updates_and_snapshots() {
        let store = Store::new();
        let task = Task {
            id: "t1".into(),
            service_id: "s1".into(),
            node_id: "n1".into(),
            ..Default::default()
        };
        store
            .apply(1, &txn(vec![Action::CreateTask(task)]))
            .expect("create");
        let mut moved = (**store.view().task("t1").expect("task")).clone();
        moved.node_id = "n2".into();
        store
            .apply(2, &txn(vec![Action::UpdateTask(moved)]))
            .expect("update");
        let view = store.view();
        assert_eq!(view.tasks_of_node("n1").count(), 0);
        assert_eq!(view.tasks_of_node("n2").count(), 1);
        let restored = Store::new();
        restored.restore(2, view.to_snapshot());
        assert_eq!(restored.view().tasks_of_service("s1").count(), 1);
        assert_eq!(restored.view().tasks_of_node("n2").count(), 1);
    }

    /// The per-node load the store keeps equals what walking the tasks gives, through
    /// creates, assignments, moves, stops, status reports, deletes and a snapshot.
    #[test]
    fn node_load_follows_every_task_change() {
        use orch_api::pb::{
            PortConfig, PublishMode, ResourceLimits, ResourceRequirements, TaskSpec, TaskState,
            TaskStatus,
        };
        fn walked(view: &Tables, node: &str) -> Option<NodeLoad> {
            let mut load = NodeLoad::default();
            for t in view.tasks_of_node(node).filter(|t| occupies_node(t)) {
                let (cpu, memory) = reservation(t);
                load.tasks += 1;
                load.nano_cpus += cpu;
                load.memory_bytes += memory;
                *load.by_service.entry(t.service_id.clone()).or_default() += 1;
                load.with_host_ports += usize::from(publishes_host_ports(t));
            }
            (load.tasks > 0).then_some(load)
        }
        let store = Store::new();
        let mut index = 0;
        let mut apply = |actions: Vec<Action>| {
            index += 1;
            store.apply(index, &txn(actions)).expect("apply");
        };
        let task = |id: &str, service: &str, node: &str, state: TaskState| Task {
            id: id.into(),
            service_id: service.into(),
            node_id: node.into(),
            desired_state: TaskState::Running as i32,
            spec: Some(TaskSpec {
                resources: Some(ResourceRequirements {
                    reservations: Some(ResourceLimits {
                        nano_cpus: 100,
                        memory_bytes: 1 << 20,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            status: Some(TaskStatus {
                state: state as i32,
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut with_port = task("t4", "s2", "n1", TaskState::Running);
        with_port.endpoint = Some(orch_api::pb::EndpointSpec {
            ports: vec![PortConfig {
                publish_mode: PublishMode::Host as i32,
                published_port: 8080,
                target_port: 80,
                protocol: "tcp".into(),
                ..Default::default()
            }],
            ..Default::default()
        });
        apply(vec![
            Action::CreateTask(task("t1", "s1", "", TaskState::Pending)),
            Action::CreateTask(task("t2", "s1", "n1", TaskState::Assigned)),
            Action::CreateTask(task("t3", "s2", "n2", TaskState::Running)),
            Action::CreateTask(with_port),
        ]);
        let current = |id: &str| (**store.view().task(id).expect("task")).clone();
        let mut checks = Vec::new();
        let mut check = |view: Tables, step: &str| {
            for node in ["n1", "n2", "n3"] {
                checks.push(step.to_string());
                assert_eq!(
                    view.node_load(node).cloned(),
                    walked(&view, node),
                    "{step}: {node}"
                );
            }
        };
        check(store.view(), "created");
        let mut t1 = current("t1");
        t1.node_id = "n2".into();
        t1.status.get_or_insert_with(Default::default).state = TaskState::Assigned as i32;
        apply(vec![Action::UpdateTask(t1)]);
        check(store.view(), "assigned");
        let mut t2 = current("t2");
        t2.status.get_or_insert_with(Default::default).state = TaskState::Running as i32;
        apply(vec![Action::UpdateTask(t2)]);
        check(store.view(), "status report");
        let mut t3 = current("t3");
        t3.desired_state = TaskState::Shutdown as i32;
        apply(vec![Action::UpdateTask(t3)]);
        check(store.view(), "told to stop");
        let mut t2 = current("t2");
        t2.status.get_or_insert_with(Default::default).state = TaskState::Failed as i32;
        apply(vec![Action::UpdateTask(t2)]);
        check(store.view(), "failed");
        let mut t4 = current("t4");
        t4.node_id = "n3".into();
        apply(vec![Action::UpdateTask(t4)]);
        check(store.view(), "moved");
        apply(vec![Action::DeleteTask("t1".into())]);
        check(store.view(), "deleted");
        assert!(store.view().node_load("n1").is_none(), "n1 holds nothing");
        assert_eq!(
            store.view().node_load("n3").map(|l| l.with_host_ports),
            Some(1)
        );
        let restored = Store::new();
        restored.restore(index, store.view().to_snapshot());
        check(restored.view(), "restored");
        // s1: t2 failed (desired running), t1 deleted; s2: t3 told to stop, t4 running.
        assert_eq!(store.view().service_counts("s1"), (1, 0));
        assert_eq!(store.view().service_counts("s2"), (1, 1));
        assert_eq!(restored.view().service_counts("s2"), (1, 1));
        assert_eq!(
            restored.view().node_load("n3"),
            store.view().node_load("n3")
        );
        assert_eq!(checks.len(), 24);
    }
}
