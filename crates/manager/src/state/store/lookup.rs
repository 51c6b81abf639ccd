//! Read-side queries on [`Tables`]: objects by ID, name or ID prefix, a node's load, a
//! service's counts, tasks by service or node, and raft members.

use std::sync::Arc;

use orch_api::pb::{Cluster, DataKind, DataObject, Network, Node, RaftMember, Service, Task};

use super::{NodeLoad, Tables};

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
        self.nodes.values().filter_map(|n| member_of(n)).collect()
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

    pub fn networks(&self) -> impl Iterator<Item = &Arc<Network>> {
        self.networks.values()
    }

    pub fn network(&self, id: &str) -> Option<&Arc<Network>> {
        self.networks.get(id)
    }

    /// Finds a network by full ID, name, or unique ID prefix.
    pub fn find_network(&self, reference: &str) -> Result<Arc<Network>, LookupError> {
        if let Some(n) = self.networks.get(reference) {
            return Ok(n.clone());
        }
        if let Some(n) = self
            .network_names
            .get(reference)
            .and_then(|id| self.networks.get(id))
        {
            return Ok(n.clone());
        }
        let by_prefix: Vec<_> = self
            .networks
            .values()
            .filter(|n| n.id.starts_with(reference))
            .collect();
        resolve("network", reference, Vec::new(), by_prefix)
    }

    pub fn data_object(&self, id: &str) -> Option<&Arc<DataObject>> {
        self.data.get(id)
    }

    /// The secrets (or configs), by ID.
    pub fn data_objects(&self, kind: DataKind) -> impl Iterator<Item = &Arc<DataObject>> {
        self.data.values().filter(move |d| d.kind() == kind)
    }

    /// Whether any secret or config has more than one version.
    pub fn data_versions_exist(&self) -> bool {
        self.data.values().any(|d| d.versions.len() > 1)
    }

    pub fn data_by_name(&self, kind: DataKind, name: &str) -> Option<&Arc<DataObject>> {
        self.data_names
            .get(&(kind as i32, name.to_string()))
            .and_then(|id| self.data.get(id))
    }

    /// Finds a secret or config by full ID, name, or unique ID prefix.
    pub fn find_data(
        &self,
        kind: DataKind,
        reference: &str,
    ) -> Result<Arc<DataObject>, LookupError> {
        let kind_name = orch_api::data::kind_name(kind);
        if let Some(d) = self.data.get(reference).filter(|d| d.kind() == kind) {
            return Ok(d.clone());
        }
        if let Some(d) = self.data_by_name(kind, reference) {
            return Ok(d.clone());
        }
        let by_prefix: Vec<_> = self
            .data_objects(kind)
            .filter(|d| d.id.starts_with(reference))
            .collect();
        resolve(kind_name, reference, Vec::new(), by_prefix)
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

/// The node as a raft member (its raft ID and address), if it is one.
pub fn member_of(node: &Node) -> Option<RaftMember> {
    node.manager_status
        .as_ref()
        .filter(|m| m.raft_id != 0)
        .map(|m| RaftMember {
            raft_id: m.raft_id,
            node_id: node.id.clone(),
            addr: m.addr.clone(),
        })
}
