//! What each node's data plane needs to know of the networks, from the store alone: the
//! networks its tasks use, the endpoints of those networks on other nodes (static VXLAN
//! neighbour and FDB entries: no flooding, no gossip), and the service table (names, VIPs,
//! backends) for its DNS resolver and VIP rules. The dispatcher sends a node its view whole when
//! its session starts, then the difference to what it sent last.

use std::collections::{BTreeMap, BTreeSet};

use orch_api::network::holds_addresses;
use orch_api::network::through_mesh;
use orch_api::pb::{
    MeshPort, Network, NetworkPeer, NetworkUpdate, Node, ServiceRecord, Task, TaskState,
};

use crate::state::store::Tables;

/// A node's view, keyed for diffing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeNetView {
    pub networks: BTreeMap<String, Network>,
    /// By (network ID, address).
    pub peers: BTreeMap<(String, String), NetworkPeer>,
    /// By (network ID, service ID).
    pub services: BTreeMap<(String, String), ServiceRecord>,
    /// The node's own endpoint on the ingress network; empty without a mesh.
    pub ingress_addr: String,
    /// The mesh's published ports, by (protocol, published port).
    pub ports: BTreeMap<(String, u32), MeshPort>,
}

/// The node's underlay address (its advertised address without the port).
pub fn underlay_addr(node: &Node) -> Option<String> {
    let addr = node.status.as_ref()?.addr.as_str();
    if let Ok(sock) = addr.parse::<std::net::SocketAddr>() {
        return Some(sock.ip().to_string());
    }
    addr.parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| ip.to_string())
}

/// A task is a backend of its service's VIP and DNS names while it runs and, with a
/// healthcheck, is not known to be unhealthy or still starting.
pub fn is_backend(task: &Task) -> bool {
    let running = task.observed_state() == TaskState::Running;
    let wanted = task.desired_state() <= TaskState::Running;
    let health_ok = task
        .status
        .as_ref()
        .is_none_or(|s| s.health.is_empty() || s.health == "healthy");
    running && wanted && health_ok
}

/// A task's endpoints exist on the overlay from its placement until it ends.
fn is_endpoint(task: &Task) -> bool {
    !task.node_id.is_empty()
        && task.observed_state() >= TaskState::Assigned
        && holds_addresses(task)
}

/// Nodes that are Down: their tasks may still say RUNNING (a global service's stay until the
/// node comes back), but nothing reaches them.
fn down_nodes(view: &Tables) -> BTreeSet<&str> {
    view.nodes()
        .filter(|n| n.node_state() == orch_api::pb::NodeState::Down)
        .map(|n| n.id.as_str())
        .collect()
}

/// Every node's view at once (one pass over the tasks).
pub fn views(view: &Tables, nodes: &[String]) -> BTreeMap<String, NodeNetView> {
    let down = down_nodes(view);
    // Per network: (task node, address) of every endpoint.
    let mut endpoints: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
    // Per network and service: the backends' addresses.
    let mut backends: BTreeMap<(&str, &str), Vec<String>> = BTreeMap::new();
    let mut used_by_node: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for t in view.tasks().filter(|t| is_endpoint(t)) {
        let backend = is_backend(t) && !down.contains(t.node_id.as_str());
        for a in &t.networks {
            endpoints
                .entry(a.network_id.as_str())
                .or_default()
                .push((t.node_id.as_str(), a.addr.as_str()));
            used_by_node
                .entry(t.node_id.as_str())
                .or_default()
                .insert(a.network_id.as_str());
            if backend {
                backends
                    .entry((a.network_id.as_str(), t.service_id.as_str()))
                    .or_default()
                    .push(a.addr.clone());
            }
        }
    }
    let underlay: BTreeMap<&str, String> = view
        .nodes()
        .filter_map(|n| underlay_addr(n).map(|a| (n.id.as_str(), a)))
        .collect();
    // Per network: the service records.
    let mut records: BTreeMap<&str, Vec<ServiceRecord>> = BTreeMap::new();
    for s in view.services() {
        let Some(spec) = s.spec.as_ref() else {
            continue;
        };
        for a in spec.task.iter().flat_map(|t| &t.networks) {
            let mut b = backends
                .get(&(a.target.as_str(), s.id.as_str()))
                .cloned()
                .unwrap_or_default();
            b.sort();
            records
                .entry(a.target.as_str())
                .or_default()
                .push(ServiceRecord {
                    network_id: a.target.clone(),
                    service_id: s.id.clone(),
                    name: spec.name.clone(),
                    aliases: a.aliases.clone(),
                    vip: s
                        .virtual_ips
                        .iter()
                        .find(|v| v.network_id == a.target)
                        .map(|v| v.addr.clone())
                        .unwrap_or_default(),
                    backends: b,
                });
        }
    }
    let mesh = Mesh::of(view, &underlay, &down);
    let mut out = BTreeMap::new();
    for node in nodes {
        let mut v = NodeNetView::default();
        if let Some(mesh) = &mesh {
            mesh.fill(view, node, &mut v);
        }
        for network_id in used_by_node.get(node.as_str()).into_iter().flatten() {
            let Some(n) = view.network(network_id) else {
                continue;
            };
            v.networks.insert(n.id.clone(), (**n).clone());
            for (peer_node, addr) in endpoints.get(network_id).into_iter().flatten() {
                if *peer_node == node.as_str() {
                    continue;
                }
                let Some(node_addr) = underlay.get(peer_node) else {
                    continue;
                };
                v.peers.insert(
                    (n.id.clone(), addr.to_string()),
                    NetworkPeer {
                        network_id: n.id.clone(),
                        addr: addr.to_string(),
                        node_addr: node_addr.clone(),
                    },
                );
            }
            for r in records.get(network_id).into_iter().flatten() {
                v.services
                    .insert((r.network_id.clone(), r.service_id.clone()), r.clone());
            }
        }
        out.insert(node.clone(), v);
    }
    out
}

/// The routing mesh, as every node sees it: present while a service publishes through it.
struct Mesh<'a> {
    ingress: &'a Network,
    /// Every endpoint on the ingress network: (node, address), tasks' and nodes' own.
    endpoints: Vec<(&'a str, &'a str, String)>,
    ports: Vec<MeshEntry<'a>>,
}

/// A published port and where its service's tasks are.
struct MeshEntry<'a> {
    port: MeshPort,
    /// The service's running tasks on the ingress network: (node, address).
    backends: Vec<(&'a str, String)>,
    /// A host-mode port: only the nodes running a task have it.
    host: bool,
}

impl<'a> Mesh<'a> {
    fn of(
        view: &'a Tables,
        underlay: &BTreeMap<&str, String>,
        down: &BTreeSet<&str>,
    ) -> Option<Mesh<'a>> {
        let ingress = view
            .networks()
            .find(|n| n.spec.as_ref().is_some_and(|s| s.ingress))?;
        // Ports through the mesh, and host-mode ports of tasks in overlay sandboxes (which
        // their nodes deliver as local mode does).
        let published: Vec<_> = view
            .services()
            .flat_map(|s| {
                let networks = s
                    .spec
                    .as_ref()
                    .and_then(|sp| sp.task.as_ref())
                    .is_some_and(|t| !t.networks.is_empty());
                let sandboxed = networks || s.ports.iter().any(through_mesh);
                s.ports
                    .iter()
                    .filter(move |p| sandboxed || through_mesh(p))
                    .filter(|p| p.published_port != 0)
                    .map(move |p| (s, p))
            })
            .collect();
        if published.is_empty() {
            return None;
        }
        let mut endpoints = Vec::new();
        for n in view.nodes() {
            let (Some(a), Some(node_addr)) = (n.ingress.as_ref(), underlay.get(n.id.as_str()))
            else {
                continue;
            };
            if a.network_id == ingress.id {
                endpoints.push((n.id.as_str(), a.addr.as_str(), node_addr.clone()));
            }
        }
        let mut backends: BTreeMap<&str, Vec<(&str, String)>> = BTreeMap::new();
        for t in view.tasks().filter(|t| is_endpoint(t)) {
            let Some(a) = t.networks.iter().find(|a| a.network_id == ingress.id) else {
                continue;
            };
            if let Some(node_addr) = underlay.get(t.node_id.as_str()) {
                endpoints.push((t.node_id.as_str(), a.addr.as_str(), node_addr.clone()));
            }
            if is_backend(t) && !down.contains(t.node_id.as_str()) {
                backends
                    .entry(t.service_id.as_str())
                    .or_default()
                    .push((t.node_id.as_str(), a.addr.clone()));
            }
        }
        let ports = published
            .into_iter()
            .map(|(s, p)| {
                let host = !through_mesh(p);
                let port = MeshPort {
                    protocol: p.protocol.clone(),
                    published_port: p.published_port,
                    target_port: p.target_port,
                    local: host || p.publish_mode() == orch_api::pb::PublishMode::Local,
                    service_id: s.id.clone(),
                    backends: Vec::new(),
                };
                MeshEntry {
                    port,
                    backends: backends.get(s.id.as_str()).cloned().unwrap_or_default(),
                    host,
                }
            })
            .collect();
        Some(Mesh {
            ingress,
            endpoints,
            ports,
        })
    }

    /// A node's part: the ingress network, its own address, the other endpoints, the ports.
    fn fill(&self, view: &Tables, node: &str, v: &mut NodeNetView) {
        let own = view
            .node(node)
            .and_then(|n| n.ingress.clone())
            .filter(|a| a.network_id == self.ingress.id);
        let Some(own) = own else {
            return;
        };
        v.ingress_addr = own.addr;
        v.networks
            .insert(self.ingress.id.clone(), self.ingress.clone());
        for (peer_node, addr, node_addr) in &self.endpoints {
            if *peer_node != node {
                v.peers.insert(
                    (self.ingress.id.clone(), addr.to_string()),
                    NetworkPeer {
                        network_id: self.ingress.id.clone(),
                        addr: addr.to_string(),
                        node_addr: node_addr.clone(),
                    },
                );
            }
        }
        for MeshEntry {
            port,
            backends,
            host,
        } in &self.ports
        {
            let mut p = port.clone();
            p.backends = backends
                .iter()
                .filter(|(n, _)| !p.local || *n == node)
                .map(|(_, a)| a.clone())
                .collect();
            p.backends.sort();
            // A host-mode port is this node's only while it runs one of the service's tasks
            // (two services may publish the same one on different nodes).
            if *host && p.backends.is_empty() {
                continue;
            }
            v.ports.insert((p.protocol.clone(), p.published_port), p);
        }
    }
}

/// The whole view, for a session that starts.
pub fn full(v: &NodeNetView) -> NetworkUpdate {
    NetworkUpdate {
        full: true,
        networks: v.networks.values().cloned().collect(),
        peers: v.peers.values().cloned().collect(),
        services: v.services.values().cloned().collect(),
        ingress_addr: v.ingress_addr.clone(),
        ports: v.ports.values().cloned().collect(),
        ..Default::default()
    }
}

fn diff_map<K: Ord + Clone, V: Clone + PartialEq>(
    old: &BTreeMap<K, V>,
    new: &BTreeMap<K, V>,
) -> (Vec<V>, Vec<V>) {
    let set = new
        .iter()
        .filter(|(k, v)| old.get(k) != Some(v))
        .map(|(_, v)| v.clone())
        .collect();
    let removed = old
        .iter()
        .filter(|(k, _)| !new.contains_key(k))
        .map(|(_, v)| v.clone())
        .collect();
    (set, removed)
}

/// What changed from `old` to `new`; None when nothing did.
pub fn diff(old: &NodeNetView, new: &NodeNetView) -> Option<NetworkUpdate> {
    if old == new {
        return None;
    }
    let (networks, networks_removed) = diff_map(&old.networks, &new.networks);
    let (peers, peers_removed) = diff_map(&old.peers, &new.peers);
    let (services, services_removed) = diff_map(&old.services, &new.services);
    let (ports, ports_removed) = diff_map(&old.ports, &new.ports);
    Some(NetworkUpdate {
        full: false,
        networks,
        networks_removed: networks_removed.into_iter().map(|n| n.id).collect(),
        peers,
        peers_removed,
        services,
        services_removed,
        ingress_addr: new.ingress_addr.clone(),
        ports,
        ports_removed,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use orch_api::pb::store_action::Action;
    use orch_api::pb::{
        NetworkAttachment, NetworkAttachmentConfig, NetworkSpec, NodeStatus, TaskStatus, VirtualIp,
    };

    use super::*;
    use crate::handles::testing::Applier;
    use crate::handles::Proposer;
    use crate::state::store::Store;
    use crate::testkit;

    fn on(mut t: Task, net: &str, addr: &str) -> Task {
        t.networks = vec![NetworkAttachment {
            network_id: net.into(),
            addr: addr.into(),
            aliases: vec![],
        }];
        t
    }

    fn state(mut t: Task, s: TaskState) -> Task {
        t.status = Some(TaskStatus {
            state: s as i32,
            ..Default::default()
        });
        t
    }

    /// Each node gets the networks its own tasks use, the other nodes' endpoints on them, and
    /// the services' records with running tasks only as backends; changes come as differences.
    #[tokio::test]
    async fn nodes_see_their_networks_peers_and_services() {
        let store = Arc::new(Store::new());
        let applier = Applier::new(store.clone());
        let mut nodes = Vec::new();
        for (id, addr) in [
            ("n1", "10.77.0.1:2377"),
            ("n2", "10.77.0.2:2377"),
            ("n3", "x"),
        ] {
            let mut n = testkit::node(id);
            n.status = Some(NodeStatus {
                addr: addr.into(),
                ..Default::default()
            });
            nodes.push(Action::CreateNode(n));
        }
        let mut web = testkit::replicated("web", 2);
        if let Some(task) = web.spec.as_mut().and_then(|s| s.task.as_mut()) {
            task.networks = vec![NetworkAttachmentConfig {
                target: "net".into(),
                aliases: vec!["www".into()],
            }];
        }
        web.virtual_ips = vec![VirtualIp {
            network_id: "net".into(),
            addr: "10.1.0.2".into(),
        }];
        let mut actions = nodes;
        actions.push(Action::CreateNetwork(Network {
            id: "net".into(),
            spec: Some(NetworkSpec {
                name: "front".into(),
                ..Default::default()
            }),
            vni: 4097,
            subnet: "10.1.0.0/24".into(),
            gateway: "10.1.0.1".into(),
            ..Default::default()
        }));
        actions.push(Action::CreateService(web.clone()));
        actions.push(Action::CreateTask(on(
            testkit::running("t1", &web, 1, "n1"),
            "net",
            "10.1.0.3",
        )));
        actions.push(Action::CreateTask(on(
            state(testkit::running("t2", &web, 2, "n2"), TaskState::Starting),
            "net",
            "10.1.0.4",
        )));
        applier.propose(actions).await.expect("setup");

        let names: Vec<String> = ["n1", "n2", "n3"].map(String::from).to_vec();
        let v = views(&store.view(), &names);
        let n1 = &v["n1"];
        assert_eq!(n1.networks.keys().collect::<Vec<_>>(), ["net"]);
        let peers: Vec<_> = n1
            .peers
            .values()
            .map(|p| (p.addr.as_str(), p.node_addr.as_str()))
            .collect();
        assert_eq!(
            peers,
            [("10.1.0.4", "10.77.0.2")],
            "the other node's endpoint, even before it runs"
        );
        let record = &n1.services[&("net".to_string(), web.id.clone())];
        assert_eq!(record.name, "web");
        assert_eq!(record.aliases, ["www"]);
        assert_eq!(record.vip, "10.1.0.2");
        assert_eq!(record.backends, ["10.1.0.3"], "only the running task");
        assert!(
            v["n3"].networks.is_empty(),
            "a node without tasks on it hears nothing"
        );
        assert_eq!(full(n1).networks.len(), 1);

        // t2 runs: both nodes' records gain it; n1's peers stay as they were.
        let before = v;
        let t2 = store.view().task("t2").map(|t| (**t).clone()).expect("t2");
        applier
            .propose(vec![Action::UpdateTask(state(t2, TaskState::Running))])
            .await
            .expect("running");
        let after = views(&store.view(), &names);
        let d = diff(&before["n1"], &after["n1"]).expect("a change");
        assert!(!d.full);
        assert!(d.peers.is_empty() && d.peers_removed.is_empty() && d.networks.is_empty());
        assert_eq!(d.services.len(), 1);
        assert_eq!(d.services[0].backends, ["10.1.0.3", "10.1.0.4"]);
        assert_eq!(diff(&after["n1"], &after["n1"]), None);

        // t1 ends: n1 leaves the network; n2 forgets n1's endpoint.
        let t1 = store.view().task("t1").map(|t| (**t).clone()).expect("t1");
        applier
            .propose(vec![Action::UpdateTask(state(t1, TaskState::Failed))])
            .await
            .expect("failed");
        let last = views(&store.view(), &names);
        let d1 = diff(&after["n1"], &last["n1"]).expect("n1 changes");
        assert_eq!(d1.networks_removed, ["net"]);
        let d2 = diff(&after["n2"], &last["n2"]).expect("n2 changes");
        assert_eq!(
            d2.peers_removed
                .iter()
                .map(|p| p.addr.as_str())
                .collect::<Vec<_>>(),
            ["10.1.0.3"]
        );
        assert_eq!(d2.services[0].backends, ["10.1.0.4"]);
    }

    /// With a service publishing through the mesh, every node with an ingress endpoint gets
    /// the ingress network, every other endpoint on it (nodes' and tasks'), its own address,
    /// and the ports: ingress mode over every running task, local mode over its own only.
    #[tokio::test]
    async fn every_node_sees_the_mesh_while_a_service_publishes_through_it() {
        use orch_api::pb::{PortConfig, PublishMode};
        let store = Arc::new(Store::new());
        let applier = Applier::new(store.clone());
        let mut actions = vec![Action::CreateNetwork(Network {
            id: "ing".into(),
            spec: Some(NetworkSpec {
                name: "ingress".into(),
                ingress: true,
                ..Default::default()
            }),
            vni: 4096,
            subnet: "10.0.0.0/24".into(),
            gateway: "10.0.0.1".into(),
            ..Default::default()
        })];
        for (i, id) in ["n1", "n2", "n3"].iter().enumerate() {
            let mut n = testkit::node(id);
            n.status = Some(NodeStatus {
                addr: format!("10.77.0.{}:2377", i + 1),
                ..Default::default()
            });
            n.ingress = Some(NetworkAttachment {
                network_id: "ing".into(),
                addr: format!("10.0.0.{}", i + 2),
                aliases: vec![],
            });
            actions.push(Action::CreateNode(n));
        }
        let mut web = testkit::replicated("web", 2);
        let port = |published, mode: PublishMode| PortConfig {
            protocol: "tcp".into(),
            target_port: 80,
            published_port: published,
            publish_mode: mode as i32,
            ..Default::default()
        };
        web.ports = vec![
            port(8080, PublishMode::Ingress),
            port(8081, PublishMode::Local),
        ];
        actions.push(Action::CreateService(web.clone()));
        actions.push(Action::CreateTask(on(
            testkit::running("t1", &web, 1, "n1"),
            "ing",
            "10.0.0.10",
        )));
        actions.push(Action::CreateTask(on(
            testkit::running("t2", &web, 2, "n2"),
            "ing",
            "10.0.0.11",
        )));
        applier.propose(actions).await.expect("setup");

        let names: Vec<String> = ["n1", "n2", "n3"].map(String::from).to_vec();
        let v = views(&store.view(), &names);
        let n3 = &v["n3"];
        assert_eq!(n3.ingress_addr, "10.0.0.4");
        assert_eq!(n3.networks.keys().collect::<Vec<_>>(), ["ing"]);
        let peers: Vec<&str> = n3.peers.values().map(|p| p.addr.as_str()).collect();
        assert_eq!(peers, ["10.0.0.10", "10.0.0.11", "10.0.0.2", "10.0.0.3"]);
        let ingress = &n3.ports[&("tcp".to_string(), 8080)];
        assert_eq!(ingress.backends, ["10.0.0.10", "10.0.0.11"]);
        assert!(!ingress.local);
        let local = &n3.ports[&("tcp".to_string(), 8081)];
        assert!(local.local && local.backends.is_empty(), "no task on n3");
        assert_eq!(
            v["n1"].ports[&("tcp".to_string(), 8081)].backends,
            ["10.0.0.10"]
        );
        assert_eq!(full(n3).ingress_addr, "10.0.0.4");

        // n2 goes Down: its task still says RUNNING, but no node sends to it.
        let mut n2 = store.view().node("n2").map(|n| (**n).clone()).expect("n2");
        if let Some(st) = n2.status.as_mut() {
            st.state = orch_api::pb::NodeState::Down as i32;
        }
        applier
            .propose(vec![Action::UpdateNode(n2)])
            .await
            .expect("down");
        let v = views(&store.view(), &names);
        assert_eq!(
            v["n3"].ports[&("tcp".to_string(), 8080)].backends,
            ["10.0.0.10"],
            "a Down node's task is no backend"
        );

        // The service goes: the mesh goes from every node.
        let before = v;
        applier
            .propose(vec![
                Action::DeleteTask("t1".into()),
                Action::DeleteTask("t2".into()),
                Action::DeleteService(web.id.clone()),
            ])
            .await
            .expect("removed");
        let after = views(&store.view(), &names);
        let d = diff(&before["n3"], &after["n3"]).expect("a change");
        assert_eq!(d.ingress_addr, "");
        assert_eq!(d.networks_removed, ["ing"]);
        assert_eq!(d.ports_removed.len(), 2);
    }
}
