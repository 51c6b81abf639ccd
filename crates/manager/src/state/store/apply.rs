//! Applying a committed [`StoreTransaction`] to [`Tables`]: create, update (with its version
//! check), delete, the meta stamp, status reports, and raft membership changes.

use std::sync::Arc;

use orch_api::pb::store_action::Action;
use orch_api::pb::{
    Cluster, DataObject, ManagerStatus, Meta, Network, Node, RaftMember, Service, StoreTransaction,
    Task,
};

use super::{Event, Object, Tables};

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
    /// The transaction would break a rule between objects (a service using a secret that is
    /// gone, a secret removed while used).
    #[error("{0}")]
    Refused(String),
    /// An address the allocator handed out is already held (a race the caller may retry).
    #[error("address {addr} on network {network} is already in use")]
    AddressInUse { addr: String, network: String },
    /// A published port another service holds (swarm's message; a race the caller may retry).
    #[error("{0}")]
    PortInUse(String),
}

fn check_ports(t: &Tables, s: &Service) -> Result<(), ApplyError> {
    crate::network::ports::check(t.services.values().map(|s| s.as_ref()), s)
        .map_err(ApplyError::PortInUse)
}

/// Every secret and config a service spec uses exists, in the version it names.
fn check_data_refs(t: &Tables, s: &Service) -> Result<(), ApplyError> {
    let spec = s.spec.as_ref().and_then(|sp| sp.task.as_ref());
    for (kind, r) in crate::data::refs(spec) {
        let exists = t
            .data
            .get(&r.id)
            .is_some_and(|d| d.kind() == kind && d.versions.iter().any(|v| v.version == r.version));
        if !exists {
            return Err(ApplyError::Refused(format!(
                "{} not found: {} (version {})",
                orch_api::data::kind_name(kind),
                r.name,
                r.version
            )));
        }
    }
    Ok(())
}

/// A secret or config no service uses (its spec or previous spec) may be deleted.
fn check_data_unused(t: &Tables, id: &str) -> Result<(), ApplyError> {
    let users = crate::data::users(t, id);
    if users.is_empty() {
        return Ok(());
    }
    Err(ApplyError::Refused(format!(
        "in use by: {}",
        users.keys().cloned().collect::<Vec<_>>().join(", ")
    )))
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

stored!(DataObject, "secret or config", Data,
    put: |t, d| t.insert_data(d),
    remove: |t, id| t.remove_data(id),
    get: data);

stored!(Network, "network", Network,
    put: |t, n| t.insert_network(n),
    remove: |t, id| t.remove_network(id),
    get: networks);

/// A network may not share its name, subnet or VXLAN ID with another.
fn network_conflict(t: &Tables, n: &Network) -> Result<(), ApplyError> {
    let name = super::tables::network_name(n).to_string();
    if t.network_names.get(&name).is_some_and(|id| id != &n.id) {
        return Err(ApplyError::NameConflict {
            kind: "network",
            name,
        });
    }
    let subnet = orch_api::network::Cidr::parse(&n.subnet)
        .map_err(|e| ApplyError::Refused(format!("network {name}: {e}")))?;
    for other in t.networks.values().filter(|o| o.id != n.id) {
        let overlaps =
            orch_api::network::Cidr::parse(&other.subnet).is_ok_and(|o| o.overlaps(&subnet));
        if overlaps {
            return Err(ApplyError::Refused(format!(
                "subnet {} overlaps network {} ({})",
                n.subnet,
                super::tables::network_name(other),
                other.subnet
            )));
        }
        if other.vni == n.vni {
            return Err(ApplyError::Refused(format!(
                "VXLAN ID {} is taken by network {}",
                n.vni,
                super::tables::network_name(other)
            )));
        }
    }
    Ok(())
}

/// A network no service uses may be deleted.
fn check_network_unused(t: &Tables, id: &str) -> Result<(), ApplyError> {
    let ingress = t
        .networks
        .get(id)
        .is_some_and(|n| n.spec.as_ref().is_some_and(|s| s.ingress));
    if ingress {
        // The mesh's services depend on it without naming it (swarm's message).
        let publisher = t.services.values().find(|s| {
            s.ports.iter().any(orch_api::network::through_mesh)
                || orch_api::network::uses_mesh(s.spec.as_ref().and_then(|sp| sp.endpoint.as_ref()))
        });
        if let Some(s) = publisher {
            return Err(ApplyError::Refused(format!(
                "ingress network cannot be removed because service {} depends on it",
                s.id
            )));
        }
    }
    let user = t.services.values().find(|s| {
        s.spec
            .as_ref()
            .and_then(|sp| sp.task.as_ref())
            .is_some_and(|task| task.networks.iter().any(|n| n.target == id))
    });
    match user {
        Some(s) => Err(ApplyError::Refused(format!(
            "network {} is in use by service {}",
            t.networks
                .get(id)
                .map_or(id, |n| super::tables::network_name(n)),
            s.spec.as_ref().map_or("", |sp| sp.name.as_str())
        ))),
        None => Ok(()),
    }
}

/// Every address newly given to `owner` (a service's VIP or a task's attachment) lies in its
/// network's subnet and is held by nobody else: the allocator's promise, checked where it
/// cannot be raced (two leaders' terms, the scheduler and a service update).
fn check_addresses<'a>(
    t: &Tables,
    owner: &str,
    new: impl Iterator<Item = (&'a str, &'a str)>,
    old: &[(&str, &str)],
) -> Result<(), ApplyError> {
    for (network_id, addr) in new {
        if old.contains(&(network_id, addr)) {
            continue;
        }
        let network = t
            .networks
            .get(network_id)
            .ok_or_else(|| ApplyError::Refused(format!("network {network_id} not found")))?;
        let name = super::tables::network_name(network);
        let in_subnet = orch_api::network::Cidr::parse(&network.subnet)
            .ok()
            .zip(addr.parse::<std::net::Ipv4Addr>().ok())
            .is_some_and(|(c, ip)| {
                let ip = u32::from(ip);
                c.contains(ip) && ip >= c.first_host() && ip <= c.last_host()
            });
        if !in_subnet || addr == network.gateway {
            return Err(ApplyError::Refused(format!(
                "address {addr} is not free on network {name}"
            )));
        }
        let by_service = t.services.values().any(|s| {
            s.id != owner
                && s.virtual_ips
                    .iter()
                    .any(|v| v.network_id == network_id && v.addr == addr)
        });
        let by_task = || {
            t.tasks.values().any(|k| {
                k.id != owner
                    && orch_api::network::holds_addresses(k)
                    && k.networks
                        .iter()
                        .any(|a| a.network_id == network_id && a.addr == addr)
            })
        };
        let by_node = || {
            t.nodes.values().any(|n| {
                n.id != owner
                    && n.ingress
                        .as_ref()
                        .is_some_and(|a| a.network_id == network_id && a.addr == addr)
            })
        };
        if by_service || by_task() || by_node() {
            return Err(ApplyError::AddressInUse {
                addr: addr.to_string(),
                network: name.to_string(),
            });
        }
    }
    Ok(())
}

fn service_addresses(s: &Service) -> impl Iterator<Item = (&str, &str)> {
    s.virtual_ips
        .iter()
        .map(|v| (v.network_id.as_str(), v.addr.as_str()))
}

fn task_addresses(task: &Task) -> impl Iterator<Item = (&str, &str)> {
    let holds = orch_api::network::holds_addresses(task);
    task.networks
        .iter()
        .filter(move |_| holds)
        .map(|a| (a.network_id.as_str(), a.addr.as_str()))
}

fn check_service_addresses(t: &Tables, s: &Service) -> Result<(), ApplyError> {
    let old = t.services.get(&s.id).cloned();
    let old: Vec<(&str, &str)> = old
        .as_deref()
        .map_or_else(Vec::new, |o| service_addresses(o).collect());
    check_addresses(t, &s.id, service_addresses(s), &old)
}

fn node_addresses(n: &Node) -> impl Iterator<Item = (&str, &str)> {
    n.ingress
        .iter()
        .map(|a| (a.network_id.as_str(), a.addr.as_str()))
}

fn check_node_addresses(t: &Tables, n: &Node) -> Result<(), ApplyError> {
    let old = t.nodes.get(&n.id).cloned();
    let old: Vec<(&str, &str)> = old
        .as_deref()
        .map_or_else(Vec::new, |o| node_addresses(o).collect());
    check_addresses(t, &n.id, node_addresses(n), &old)
}

fn check_task_addresses(t: &Tables, task: &Task) -> Result<(), ApplyError> {
    if task.networks.is_empty() {
        return Ok(());
    }
    let old = t.tasks.get(&task.id).cloned();
    let old: Vec<(&str, &str)> = old
        .as_deref()
        .map_or_else(Vec::new, |o| task_addresses(o).collect());
    check_addresses(t, &task.id, task_addresses(task), &old)
}

/// A secret or config whose name another object of its kind has.
fn data_name_conflict(t: &Tables, d: &DataObject) -> Result<(), ApplyError> {
    let name = super::tables::data_name(d).to_string();
    match t.data_names.get(&(d.kind, name.clone())) {
        Some(id) if id != &d.id => Err(ApplyError::NameConflict {
            kind: orch_api::data::kind_name(d.kind()),
            name,
        }),
        _ => Ok(()),
    }
}

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
    // An object made without a creation time (the first node, from the bootstrap snapshot)
    // gets one at its first update.
    stamp(
        new.meta_mut(),
        index,
        ts,
        Some(created_of(old.meta())).filter(|c| *c > 0),
    );
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
pub(super) fn apply_txn(
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
            Action::UpdateNode(n) => {
                check_node_addresses(t, n)?;
                update(t, index, ts, n, events)?
            }
            Action::DeleteNode(id) => delete::<Node>(t, id, events)?,
            Action::CreateService(s) => {
                let name = service_name(s);
                if t.service_names.contains_key(&name) {
                    return Err(ApplyError::NameConflict {
                        kind: "service",
                        name,
                    });
                }
                check_data_refs(t, s)?;
                check_service_addresses(t, s)?;
                check_ports(t, s)?;
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
                check_data_refs(t, s)?;
                check_service_addresses(t, s)?;
                check_ports(t, s)?;
                update(t, index, ts, s, events)?
            }
            Action::DeleteService(id) => delete::<Service>(t, id, events)?,
            Action::CreateData(d) => {
                data_name_conflict(t, d)?;
                create(t, index, ts, d, events)?
            }
            Action::UpdateData(d) => {
                data_name_conflict(t, d)?;
                let used = crate::data::users(t, &d.id).into_values().flatten();
                if let Some(v) = used
                    .into_iter()
                    .find(|v| !d.versions.iter().any(|k| k.version == *v))
                {
                    return Err(ApplyError::Refused(format!(
                        "version {v} of {} is still in use",
                        super::tables::data_name(d)
                    )));
                }
                update(t, index, ts, d, events)?
            }
            Action::CreateNetwork(n) => {
                network_conflict(t, n)?;
                create(t, index, ts, n, events)?
            }
            Action::UpdateNetwork(n) => {
                network_conflict(t, n)?;
                update(t, index, ts, n, events)?
            }
            Action::DeleteNetwork(id) => {
                check_network_unused(t, id)?;
                delete::<Network>(t, id, events)?
            }
            Action::DeleteData(id) => {
                check_data_unused(t, id)?;
                delete::<DataObject>(t, id, events)?
            }
            Action::CreateTask(task) => {
                check_task_addresses(t, task)?;
                create(t, index, ts, task, events)?
            }
            Action::UpdateTask(task) => {
                check_task_addresses(t, task)?;
                update(t, index, ts, task, events)?
            }
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

/// Sets (added) or clears (removed) the manager status on a raft member's node object.
pub(super) fn apply_member_change(
    t: &mut Tables,
    index: u64,
    member: &RaftMember,
    added: bool,
    timestamp: i64,
    events: &mut Vec<Event>,
) {
    let node_id = if added {
        Some(member.node_id.clone())
    } else {
        t.node_by_raft_id(member.raft_id).map(|n| n.id.clone())
    };
    if let Some(old) = node_id.and_then(|id| t.nodes.get(&id).cloned()) {
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
        replace(t, index, timestamp, &old, n, events);
    }
}
