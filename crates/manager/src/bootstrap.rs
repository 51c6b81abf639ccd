//! The state a new cluster starts from: root CA, join tokens, the cluster object, and the
//! first managers' node objects. `orch init` writes it as the first raft snapshot.

use std::time::Duration;

use orch_api::pb::{
    Cluster, ClusterSpec, JoinTokens, ManagerStatus, Node, NodeAvailability, NodeDescription,
    NodeRole, NodeSpec, NodeState, NodeStatus, RootCa as RootCaObject,
};

use crate::ca::{CaError, RootCa};

/// Settings `init` takes.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    pub cert_expiry: Duration,
    pub heartbeat: Duration,
    pub task_history_limit: i64,
    pub snapshot_interval: u64,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            cert_expiry: crate::ca::DEFAULT_CERT_EXPIRY,
            heartbeat: orch_api::heartbeat::DEFAULT_PERIOD,
            task_history_limit: 5,
            snapshot_interval: 10_000,
        }
    }
}

pub struct NewCluster {
    pub ca: RootCa,
    pub cluster: Cluster,
    pub worker_token: String,
    pub manager_token: String,
}

/// A new cluster: a fresh root CA and join tokens.
pub fn new_cluster(settings: &ClusterSettings) -> Result<NewCluster, CaError> {
    let ca = RootCa::generate()?;
    let worker_token = orch_api::token::generate(&ca.cert_pem);
    let manager_token = orch_api::token::generate(&ca.cert_pem);
    let cluster = Cluster {
        id: orch_api::ids::new_id(),
        spec: Some(ClusterSpec {
            name: "default".into(),
            task_history_retention_limit: settings.task_history_limit,
            snapshot_interval: settings.snapshot_interval,
            log_entries_for_slow_followers: 500,
            heartbeat_period: settings.heartbeat.as_nanos() as i64,
            node_cert_expiry: settings.cert_expiry.as_nanos() as i64,
            ..Default::default()
        }),
        root_ca: Some(RootCaObject {
            ca_cert_pem: ca.cert_pem.clone(),
            ca_key_pem: ca.key_pem.clone(),
            join_tokens: Some(JoinTokens {
                worker: worker_token.clone(),
                manager: manager_token.clone(),
            }),
        }),
        ..Default::default()
    };
    Ok(NewCluster {
        ca,
        cluster,
        worker_token,
        manager_token,
    })
}

/// The node object of a manager that is a raft member from the start.
pub fn manager_node(
    node_id: &str,
    hostname: &str,
    raft_id: u64,
    addr: &str,
    availability: NodeAvailability,
) -> Node {
    Node {
        id: node_id.to_string(),
        spec: Some(NodeSpec {
            labels: Default::default(),
            desired_role: NodeRole::Manager as i32,
            availability: availability as i32,
        }),
        description: Some(NodeDescription {
            hostname: hostname.to_string(),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            state: NodeState::Unknown as i32,
            ..Default::default()
        }),
        manager_status: Some(ManagerStatus {
            raft_id,
            addr: addr.to_string(),
            ..Default::default()
        }),
        role: NodeRole::Manager as i32,
        ..Default::default()
    }
}

/// A random nonzero raft ID.
pub fn new_raft_id() -> u64 {
    loop {
        let id = rand::random::<u64>() >> 1;
        if id != 0 {
            return id;
        }
    }
}

/// The routing mesh's network, as `init` makes it (swarm's: 10.0.0.0/24, VXLAN ID 4096).
pub fn ingress_network() -> orch_api::pb::Network {
    use orch_api::network::{INGRESS_NAME, INGRESS_SUBNET, INGRESS_VNI, OVERLAY};
    orch_api::pb::Network {
        id: orch_api::ids::new_id(),
        spec: Some(orch_api::pb::NetworkSpec {
            name: INGRESS_NAME.into(),
            driver: OVERLAY.into(),
            ingress: true,
            ..Default::default()
        }),
        vni: INGRESS_VNI,
        subnet: INGRESS_SUBNET.into(),
        gateway: "10.0.0.1".into(),
        ..Default::default()
    }
}
