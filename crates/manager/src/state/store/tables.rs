//! The tables and their indexes: [`Tables`], the index maintenance that keeps task sets,
//! pending tasks, node loads and service counts in step with the tasks, and snapshots to and
//! from raft.

use std::sync::Arc;

use imbl::{OrdMap, OrdSet};
use orch_api::pb::{Cluster, DataObject, Network, Node, Service, StoreSnapshot, Task};

fn is_pending(t: &Task) -> bool {
    t.status
        .as_ref()
        .is_some_and(|s| s.state() == orch_api::pb::TaskState::Pending)
}

/// A consistent read view of every table at one applied index.
#[derive(Debug, Clone, Default)]
pub struct Tables {
    pub index: u64,
    pub(super) clusters: OrdMap<String, Arc<Cluster>>,
    pub(super) nodes: OrdMap<String, Arc<Node>>,
    pub(super) services: OrdMap<String, Arc<Service>>,
    pub(super) tasks: OrdMap<String, Arc<Task>>,
    pub(super) service_names: OrdMap<String, String>,
    /// Secrets and configs.
    pub(super) data: OrdMap<String, Arc<DataObject>>,
    /// (kind, name) -> ID: secret and config names are unique per kind.
    pub(super) data_names: OrdMap<(i32, String), String>,
    pub(super) networks: OrdMap<String, Arc<Network>>,
    pub(super) network_names: OrdMap<String, String>,
    pub(super) tasks_by_service: OrdMap<String, OrdSet<String>>,
    pub(super) tasks_by_node: OrdMap<String, OrdSet<String>>,
    /// Tasks waiting for the scheduler (status PENDING).
    pub(super) pending: OrdSet<String>,
    /// What each node's tasks hold, kept as tasks change (the scheduler reads it each round
    /// instead of walking every task).
    pub(super) node_load: OrdMap<String, NodeLoad>,
    /// Per service: (tasks desired running, of which running), for `service ls`.
    pub(super) service_counts: OrdMap<String, (u64, u64)>,
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

/// A network's name.
pub fn network_name(n: &Network) -> &str {
    n.spec.as_ref().map_or("", |s| s.name.as_str())
}

/// A secret's or config's name.
pub fn data_name(d: &DataObject) -> &str {
    d.spec.as_ref().map_or("", |s| s.name.as_str())
}

/// A task holds its node's resources from assignment until it stops or is told to stop.
pub fn occupies_node(t: &Task) -> bool {
    !t.node_id.is_empty()
        && t.desired_state() <= orch_api::pb::TaskState::Running
        && t.observed_state() < orch_api::pb::TaskState::Complete
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
        .filter(|p| p.publish_mode() == orch_api::pb::PublishMode::Host && p.published_port != 0)
        .map(|p| (p.protocol.as_str(), p.published_port))
}

/// Whether the task publishes a port in host mode.
pub fn publishes_host_ports(t: &Task) -> bool {
    host_ports(t).next().is_some()
}

impl Tables {
    /// Every object, as raft snapshots hold them.
    pub fn to_snapshot(&self) -> StoreSnapshot {
        StoreSnapshot {
            clusters: self.clusters.values().map(|c| (**c).clone()).collect(),
            nodes: self.nodes.values().map(|n| (**n).clone()).collect(),
            services: self.services.values().map(|s| (**s).clone()).collect(),
            tasks: self.tasks.values().map(|t| (**t).clone()).collect(),
            data_objects: self.data.values().map(|d| (**d).clone()).collect(),
            networks: self.networks.values().map(|n| (**n).clone()).collect(),
        }
    }

    pub(super) fn from_snapshot(index: u64, snapshot: StoreSnapshot) -> Self {
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
        for d in snapshot.data_objects {
            t.insert_data(Arc::new(d));
        }
        for n in snapshot.networks {
            t.insert_network(Arc::new(n));
        }
        t
    }

    pub(super) fn insert_network(&mut self, n: Arc<Network>) {
        self.remove_network(&n.id);
        self.network_names
            .insert(network_name(&n).to_string(), n.id.clone());
        self.networks.insert(n.id.clone(), n);
    }

    pub(super) fn remove_network(&mut self, id: &str) -> Option<Arc<Network>> {
        let old = self.networks.remove(id)?;
        let name = network_name(&old).to_string();
        if self.network_names.get(&name).is_some_and(|nid| nid == id) {
            self.network_names.remove(&name);
        }
        Some(old)
    }

    pub(super) fn insert_data(&mut self, d: Arc<DataObject>) {
        self.remove_data(&d.id);
        self.data_names
            .insert((d.kind, data_name(&d).to_string()), d.id.clone());
        self.data.insert(d.id.clone(), d);
    }

    pub(super) fn remove_data(&mut self, id: &str) -> Option<Arc<DataObject>> {
        let old = self.data.remove(id)?;
        let key = (old.kind, data_name(&old).to_string());
        if self.data_names.get(&key).is_some_and(|did| did == id) {
            self.data_names.remove(&key);
        }
        Some(old)
    }

    pub(super) fn insert_service(&mut self, s: Arc<Service>) {
        if let Some(spec) = &s.spec {
            self.service_names.insert(spec.name.clone(), s.id.clone());
        }
        self.services.insert(s.id.clone(), s);
    }

    pub(super) fn remove_service(&mut self, id: &str) -> Option<Arc<Service>> {
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

    pub(super) fn insert_task(&mut self, t: Arc<Task>) {
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
        if t.desired_state() == orch_api::pb::TaskState::Running {
            let running = u64::from(
                t.status
                    .as_ref()
                    .map_or(orch_api::pb::TaskState::New, |s| s.state())
                    == orch_api::pb::TaskState::Running,
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

    pub(super) fn remove_task(&mut self, id: &str) -> Option<Arc<Task>> {
        let old = self.tasks.remove(id)?;
        self.unindex_task(&old);
        Some(old)
    }
}
