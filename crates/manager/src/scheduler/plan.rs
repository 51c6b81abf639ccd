//! The scheduler's decision: which node each pending task goes to, as a pure function of a
//! store view. Filters run in swarm's order (ready and active, resources, constraints,
//! platform, host ports, replicas per node); among the nodes left, the spread strategy picks
//! the one with the fewest tasks of the service, then the fewest tasks overall, after
//! spreading over placement-preference label values. A task that fits nowhere gets swarm's
//! explanation with per-reason node counts.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use orch_api::constraint::{Mismatch, NodeFilter};
use orch_api::pb::{Node, NodeAvailability, NodeState, Task};

use crate::state::store::{self, occupies_node, reservation, Tables};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    /// (task ID, node ID)
    pub assignments: Vec<(String, String)>,
    /// (task ID, why it fits nowhere)
    pub unschedulable: Vec<(String, String)>,
}

/// Why a node was passed over, in the order the filters run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Reason {
    NotAvailable,
    Resources,
    Constraints,
    Platform,
    HostPort,
    MaxReplicas,
}

impl Reason {
    fn describe(self, n: usize) -> String {
        let nodes = if n == 1 {
            "1 node".to_string()
        } else {
            format!("{n} nodes")
        };
        match self {
            Reason::NotAvailable => format!("{nodes} not available for new tasks"),
            Reason::Resources => format!("insufficient resources on {nodes}"),
            Reason::Constraints => format!("scheduling constraints not satisfied on {nodes}"),
            Reason::Platform => format!("unsupported platform on {nodes}"),
            Reason::HostPort => format!("host-mode port already in use on {nodes}"),
            Reason::MaxReplicas => format!("max replicas per node limit exceed on {nodes}"),
        }
    }
}

/// What the scheduler tracks per node while it places tasks.
struct NodeInfo {
    node: Arc<Node>,
    available: bool,
    free_cpu: i64,
    free_memory: i64,
    total: usize,
    by_service: HashMap<String, usize>,
    host_ports: HashSet<(String, u32)>,
}

fn host_ports(t: &Task) -> Vec<(String, u32)> {
    store::host_ports(t)
        .map(|(protocol, port)| (protocol.to_string(), port))
        .collect()
}

/// The nodes as the scheduler sees them: availability, free resources, and the tasks they
/// hold — per service only for `services` (those with tasks to place). From the store's
/// per-node load, not by walking every task.
fn node_infos(view: &Tables, services: &HashSet<&str>) -> Vec<NodeInfo> {
    view.nodes()
        .map(|n| {
            // A node whose engine does not answer is up but cannot run containers.
            let ready = n
                .status
                .as_ref()
                .is_some_and(|s| s.state() == NodeState::Ready && s.engine_error.is_empty());
            let active = n.availability() == NodeAvailability::Active;
            let resources = n.description.as_ref().and_then(|d| d.resources.as_ref());
            let load = view.node_load(&n.id);
            let mut info = NodeInfo {
                node: n.clone(),
                available: ready && active,
                free_cpu: resources.map_or(0, |r| r.nano_cpus),
                free_memory: resources.map_or(0, |r| r.memory_bytes),
                total: 0,
                by_service: HashMap::new(),
                host_ports: HashSet::new(),
            };
            if let Some(load) = load {
                info.free_cpu -= load.nano_cpus;
                info.free_memory -= load.memory_bytes;
                info.total = load.tasks;
                for s in services {
                    if let Some(count) = load.by_service.get(*s) {
                        info.by_service.insert(s.to_string(), *count);
                    }
                }
                if load.with_host_ports > 0 {
                    for t in view.tasks_of_node(&n.id) {
                        if occupies_node(t) {
                            info.host_ports.extend(host_ports(t));
                        }
                    }
                }
            }
            info
        })
        .collect()
}

/// What a group of identical pending tasks asks of a node.
struct Demand {
    service_id: String,
    cpu: i64,
    memory: i64,
    filter: NodeFilter,
    ports: Vec<(String, u32)>,
    max_replicas: u64,
    preferences: Vec<String>,
}

impl Demand {
    fn of(t: &Task) -> Self {
        let placement = t
            .spec
            .as_ref()
            .and_then(|s| s.placement.clone())
            .unwrap_or_default();
        let (cpu, memory) = reservation(t);
        Demand {
            service_id: t.service_id.clone(),
            cpu,
            memory,
            filter: NodeFilter::of(&placement),
            ports: host_ports(t),
            max_replicas: placement.max_replicas,
            preferences: placement
                .preferences
                .iter()
                .map(|p| p.spread_descriptor.clone())
                .collect(),
        }
    }

    /// The first filter `info` fails, if any.
    fn check(&self, info: &NodeInfo) -> Option<Reason> {
        self.check_static(info).or_else(|| self.check_dynamic(info))
    }

    /// Filters whose answer placing this group's tasks cannot change.
    fn check_static(&self, info: &NodeInfo) -> Option<Reason> {
        if !info.available {
            return Some(Reason::NotAvailable);
        }
        match self.filter.check(&info.node) {
            Ok(()) => None,
            Err(Mismatch::Constraints) => Some(Reason::Constraints),
            Err(Mismatch::Platform) => Some(Reason::Platform),
        }
    }

    /// Filters that change as tasks are placed (resources, ports, replicas per node).
    fn check_dynamic(&self, info: &NodeInfo) -> Option<Reason> {
        if self.cpu > info.free_cpu || self.memory > info.free_memory {
            return Some(Reason::Resources);
        }
        if self.ports.iter().any(|p| info.host_ports.contains(p)) {
            return Some(Reason::HostPort);
        }
        if self.max_replicas > 0
            && info.by_service.get(&self.service_id).copied().unwrap_or(0) as u64
                >= self.max_replicas
        {
            return Some(Reason::MaxReplicas);
        }
        None
    }

    fn take(&self, info: &mut NodeInfo) {
        info.free_cpu -= self.cpu;
        info.free_memory -= self.memory;
        info.total += 1;
        *info.by_service.entry(self.service_id.clone()).or_default() += 1;
        info.host_ports.extend(self.ports.iter().cloned());
    }

    fn label_value(&self, descriptor: &str, node: &Node) -> String {
        if let Some(label) = descriptor.strip_prefix("node.labels.") {
            return node
                .spec
                .as_ref()
                .and_then(|s| s.labels.get(label).cloned())
                .unwrap_or_default();
        }
        if let Some(label) = descriptor.strip_prefix("engine.labels.") {
            return node
                .description
                .as_ref()
                .and_then(|d| d.engine.as_ref())
                .and_then(|e| e.labels.get(label).cloned())
                .unwrap_or_default();
        }
        String::new()
    }
}

fn explain(reasons: &BTreeMap<Reason, usize>) -> String {
    let mut counted: Vec<(Reason, usize)> = reasons.iter().map(|(r, n)| (*r, *n)).collect();
    counted.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let parts: Vec<String> = counted.into_iter().map(|(r, n)| r.describe(n)).collect();
    if parts.is_empty() {
        "no suitable node (no nodes in the cluster)".into()
    } else {
        format!("no suitable node ({})", parts.join("; "))
    }
}

/// Places `pending` tasks (each with status PENDING) on the nodes of `view`.
pub fn plan(view: &Tables, pending: &[Arc<Task>]) -> Plan {
    let services: HashSet<&str> = pending.iter().map(|t| t.service_id.as_str()).collect();
    let mut nodes = node_infos(view, &services);
    let by_id: HashMap<String, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.node.id.clone(), i))
        .collect();
    let mut out = Plan::default();
    // Identical tasks of one service share a demand; order groups for determinism.
    let mut groups: BTreeMap<(String, u64), Vec<&Arc<Task>>> = BTreeMap::new();
    for t in pending {
        groups
            .entry((t.service_id.clone(), t.spec_version))
            .or_default()
            .push(t);
    }
    for tasks in groups.values_mut() {
        tasks.sort_by_key(|t| (t.slot, t.id.clone()));
        let demand = Demand::of(tasks[0]);
        if demand.preferences.is_empty() && tasks.iter().all(|t| t.node_id.is_empty()) {
            place_group(&demand, tasks, &mut nodes, &mut out);
            continue;
        }
        for task in tasks.iter() {
            // A task with a node already chosen (global services) only checks that node.
            let candidates: Vec<usize> = if task.node_id.is_empty() {
                (0..nodes.len()).collect()
            } else {
                by_id.get(&task.node_id).copied().into_iter().collect()
            };
            let mut reasons: BTreeMap<Reason, usize> = BTreeMap::new();
            let mut best: Option<usize> = None;
            let mut best_key: Option<Vec<usize>> = None;
            let group_counts = preference_counts(&demand, &nodes);
            for i in candidates {
                if let Some(reason) = demand.check(&nodes[i]) {
                    *reasons.entry(reason).or_default() += 1;
                    continue;
                }
                let key = rank(&demand, &nodes[i], &group_counts);
                let better = match &best_key {
                    None => true,
                    Some(k) => match key.cmp(k) {
                        Ordering::Less => true,
                        Ordering::Equal => {
                            best.is_some_and(|b| nodes[i].node.id < nodes[b].node.id)
                        }
                        Ordering::Greater => false,
                    },
                };
                if better {
                    best = Some(i);
                    best_key = Some(key);
                }
            }
            match best {
                Some(i) => {
                    demand.take(&mut nodes[i]);
                    out.assignments
                        .push((task.id.clone(), nodes[i].node.id.clone()));
                }
                None => out.unschedulable.push((task.id.clone(), explain(&reasons))),
            }
        }
    }
    out
}

/// Places a group of identical tasks without placement preferences: static filters once,
/// then the best node from a heap per task (O(nodes + tasks × log nodes)). Only the chosen
/// node's counts change, so the other nodes' keys stay valid.
fn place_group(demand: &Demand, tasks: &[&Arc<Task>], nodes: &mut [NodeInfo], out: &mut Plan) {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let mut reasons: BTreeMap<Reason, usize> = BTreeMap::new();
    let mut heap = BinaryHeap::new();
    let key = |info: &NodeInfo| {
        (
            info.by_service
                .get(&demand.service_id)
                .copied()
                .unwrap_or(0),
            info.total,
        )
    };
    for (i, info) in nodes.iter().enumerate() {
        match demand.check_static(info) {
            Some(reason) => *reasons.entry(reason).or_default() += 1,
            None => heap.push(Reverse((key(info), info.node.id.clone(), i))),
        }
    }
    for task in tasks {
        let mut placed = false;
        while let Some(Reverse((_, _, i))) = heap.pop() {
            if let Some(reason) = demand.check_dynamic(&nodes[i]) {
                // Full for this group from now on.
                *reasons.entry(reason).or_default() += 1;
                continue;
            }
            demand.take(&mut nodes[i]);
            out.assignments
                .push((task.id.clone(), nodes[i].node.id.clone()));
            heap.push(Reverse((key(&nodes[i]), nodes[i].node.id.clone(), i)));
            placed = true;
            break;
        }
        if !placed {
            out.unschedulable.push((task.id.clone(), explain(&reasons)));
        }
    }
}

/// Tasks of the service per placement-preference group (label values), level by level.
fn preference_counts(demand: &Demand, nodes: &[NodeInfo]) -> Vec<HashMap<Vec<String>, usize>> {
    let mut levels = Vec::new();
    for depth in 1..=demand.preferences.len() {
        let mut counts: HashMap<Vec<String>, usize> = HashMap::new();
        for info in nodes.iter().filter(|n| n.available) {
            let key: Vec<String> = demand.preferences[..depth]
                .iter()
                .map(|d| demand.label_value(d, &info.node))
                .collect();
            *counts.entry(key).or_default() += info
                .by_service
                .get(&demand.service_id)
                .copied()
                .unwrap_or(0);
        }
        levels.push(counts);
    }
    levels
}

/// Lower is better: preference groups with fewer of the service's tasks, then fewer of the
/// service's tasks on the node, then fewer tasks overall.
fn rank(demand: &Demand, info: &NodeInfo, groups: &[HashMap<Vec<String>, usize>]) -> Vec<usize> {
    let mut key = Vec::with_capacity(groups.len() + 2);
    for (depth, counts) in groups.iter().enumerate() {
        let group: Vec<String> = demand.preferences[..=depth]
            .iter()
            .map(|d| demand.label_value(d, &info.node))
            .collect();
        key.push(counts.get(&group).copied().unwrap_or(0));
    }
    key.push(
        info.by_service
            .get(&demand.service_id)
            .copied()
            .unwrap_or(0),
    );
    key.push(info.total);
    key
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use orch_api::pb::{EndpointSpec, NodeAvailability, PortConfig, PublishMode};

    use super::*;
    use crate::testkit::*;

    struct Case {
        name: &'static str,
        nodes: Vec<Node>,
        service: orch_api::pb::Service,
        existing: Vec<Task>,
        pending: usize,
        /// Tasks placed per node after planning (existing ones included).
        want_per_node: Vec<(&'static str, usize)>,
        want_unschedulable: Option<&'static str>,
    }

    fn run(case: Case) {
        let pending: Vec<Task> = (0..case.pending)
            .map(|i| pending(&format!("p{i}"), &case.service, 100 + i as u64))
            .collect();
        let mut all = case.existing.clone();
        all.extend(pending.clone());
        let v = view(case.nodes.clone(), vec![case.service.clone()], all);
        let plan = plan(&v, &arcs(&pending));
        let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
        for t in &case.existing {
            *per_node.entry(t.node_id.clone()).or_default() += 1;
        }
        for (_, node) in &plan.assignments {
            *per_node.entry(node.clone()).or_default() += 1;
        }
        for (node, want) in &case.want_per_node {
            assert_eq!(
                per_node.get(*node).copied().unwrap_or(0),
                *want,
                "{}: tasks on {node} ({per_node:?})",
                case.name
            );
        }
        match case.want_unschedulable {
            None => assert!(
                plan.unschedulable.is_empty(),
                "{}: {:?}",
                case.name,
                plan.unschedulable
            ),
            Some(why) => {
                assert!(
                    !plan.unschedulable.is_empty(),
                    "{}: expected unschedulable tasks",
                    case.name
                );
                assert_eq!(plan.unschedulable[0].1, why, "{}", case.name);
            }
        }
    }

    fn three() -> Vec<Node> {
        vec![node("n1"), node("n2"), node("n3")]
    }

    #[test]
    fn scheduler_cases() {
        let web = replicated("web", 6);
        let cases = vec![
            Case {
                name: "six replicas spread 2/2/2",
                nodes: three(),
                service: web.clone(),
                existing: vec![],
                pending: 6,
                want_per_node: vec![("n1", 2), ("n2", 2), ("n3", 2)],
                want_unschedulable: None,
            },
            Case {
                name: "a hostname constraint puts every task there",
                nodes: three(),
                service: placement(web.clone(), &["node.hostname==n2"], &[], 0),
                existing: vec![],
                pending: 4,
                want_per_node: vec![("n1", 0), ("n2", 4), ("n3", 0)],
                want_unschedulable: None,
            },
            Case {
                name: "an impossible constraint explains itself",
                nodes: three(),
                service: placement(web.clone(), &["node.labels.zone==mars"], &[], 0),
                existing: vec![],
                pending: 2,
                want_per_node: vec![],
                want_unschedulable: Some("no suitable node (scheduling constraints not satisfied on 3 nodes)"),
            },
            Case {
                name: "drained, paused and down nodes take nothing; counts by reason",
                nodes: vec![
                    labelled(node("n1"), "zone", "a"),
                    with_availability(node("n2"), NodeAvailability::Drain),
                    with_availability(node("n3"), NodeAvailability::Pause),
                    down(node("n4")),
                ],
                service: placement(web.clone(), &["node.labels.zone==b"], &[], 0),
                existing: vec![],
                pending: 1,
                want_per_node: vec![],
                want_unschedulable: Some("no suitable node (3 nodes not available for new tasks; scheduling constraints not satisfied on 1 node)"),
            },
            Case {
                name: "reservations skip nodes without room",
                nodes: vec![with_memory(node("n1"), GIB), node("n2")],
                service: reserve_memory(web.clone(), 2 * GIB),
                existing: vec![],
                pending: 2,
                want_per_node: vec![("n1", 0), ("n2", 2)],
                want_unschedulable: None,
            },
            Case {
                name: "no room anywhere",
                nodes: vec![with_memory(node("n1"), GIB), with_memory(node("n2"), GIB)],
                service: reserve_memory(web.clone(), 2 * GIB),
                existing: vec![],
                pending: 1,
                want_per_node: vec![],
                want_unschedulable: Some("no suitable node (insufficient resources on 2 nodes)"),
            },
            Case {
                name: "max replicas per node",
                nodes: three(),
                service: placement(web.clone(), &[], &[], 1),
                existing: vec![],
                pending: 4,
                want_per_node: vec![("n1", 1), ("n2", 1), ("n3", 1)],
                want_unschedulable: Some("no suitable node (max replicas per node limit exceed on 3 nodes)"),
            },
            Case {
                name: "fewest tasks of the service first, then fewest overall",
                nodes: three(),
                service: web.clone(),
                existing: vec![
                    running("e1", &web, 1, "n1"),
                    running("e2", &web, 2, "n2"),
                    running("o1", &replicated("other", 2), 1, "n1"),
                ],
                pending: 2,
                // n3 first (no web task), then n2 (as few web tasks as n1, fewer tasks overall).
                want_per_node: vec![("n1", 2), ("n2", 2), ("n3", 1)],
                want_unschedulable: None,
            },
            Case {
                name: "spread over a label's values before nodes",
                nodes: vec![labelled(node("n1"), "zone", "a"), labelled(node("n2"), "zone", "a"), labelled(node("n3"), "zone", "b")],
                service: placement(web.clone(), &[], &["node.labels.zone"], 0),
                existing: vec![],
                pending: 4,
                want_per_node: vec![("n1", 1), ("n2", 1), ("n3", 2)],
                want_unschedulable: None,
            },
        ];
        for case in cases {
            run(case);
        }
    }

    proptest::proptest! {
        /// Without constraints or reservations, every task is placed and a service's tasks per
        /// node differ by at most one, whatever the cluster already runs.
        #[test]
        fn spread_stays_within_one(nodes in 1usize..12, existing in proptest::collection::vec(0usize..12, 0..20), pending in 0usize..60) {
            let web = replicated("web", 0);
            let other = replicated("other", 0);
            let node_list: Vec<Node> = (0..nodes).map(|i| node(&format!("n{i:02}"))).collect();
            let mut tasks: Vec<Task> = existing
                .iter()
                .enumerate()
                .map(|(i, n)| running(&format!("o{i}"), &other, i as u64 + 1, &format!("n{:02}", n % nodes)))
                .collect();
            let new: Vec<Task> = (0..pending).map(|i| super::super::plan::tests::pending_task(&web, i)).collect();
            tasks.extend(new.clone());
            let v = view(node_list, vec![web, other], tasks);
            let plan = plan(&v, &arcs(&new));
            proptest::prop_assert_eq!(plan.assignments.len(), pending);
            let mut per: BTreeMap<String, usize> = (0..nodes).map(|i| (format!("n{i:02}"), 0)).collect();
            for (_, n) in &plan.assignments {
                *per.entry(n.clone()).or_default() += 1;
            }
            let max = per.values().max().copied().unwrap_or(0);
            let min = per.values().min().copied().unwrap_or(0);
            proptest::prop_assert!(max - min <= 1, "spread {:?}", per);
        }
    }

    fn pending_task(service: &orch_api::pb::Service, i: usize) -> Task {
        pending(&format!("p{i}"), service, i as u64 + 1)
    }

    #[test]
    fn host_ports_conflict_per_node() {
        let mut web = replicated("web", 3);
        let endpoint = EndpointSpec {
            mode: "vip".into(),
            ports: vec![PortConfig {
                protocol: "tcp".into(),
                target_port: 80,
                published_port: 8080,
                publish_mode: PublishMode::Host as i32,
                ..Default::default()
            }],
        };
        web.spec.as_mut().expect("spec").endpoint = Some(endpoint.clone());
        let mut tasks: Vec<Task> = (0..3)
            .map(|i| pending(&format!("p{i}"), &web, i + 1))
            .collect();
        for t in &mut tasks {
            t.endpoint = Some(endpoint.clone());
        }
        let v = view(vec![node("n1"), node("n2")], vec![web], tasks.clone());
        let plan = plan(&v, &arcs(&tasks));
        assert_eq!(plan.assignments.len(), 2);
        assert_ne!(plan.assignments[0].1, plan.assignments[1].1);
        assert_eq!(
            plan.unschedulable[0].1,
            "no suitable node (host-mode port already in use on 2 nodes)"
        );
    }

    #[test]
    fn a_task_with_a_chosen_node_only_checks_that_node() {
        let g = global("g");
        let mut t = pending("g1", &g, 0);
        t.node_id = "n2".into();
        let v = view(vec![node("n1"), down(node("n2"))], vec![g], vec![t.clone()]);
        let plan = plan(&v, &arcs(&[t]));
        assert!(plan.assignments.is_empty());
        assert_eq!(
            plan.unschedulable[0].1,
            "no suitable node (1 node not available for new tasks)"
        );
    }

    /// Readiness is the node's engine state, a field of its status: the message is for
    /// people (it used to be read by its prefix).
    #[test]
    fn a_node_whose_engine_does_not_answer_gets_no_task() {
        let s = replicated("s", 1);
        let t = pending("s1", &s, 1);
        let mut broken = node("n1");
        if let Some(st) = broken.status.as_mut() {
            st.engine_error = "connection refused".into();
            st.message = "something else entirely".into();
        }
        let v = view(vec![broken, node("n2")], vec![s.clone()], vec![t.clone()]);
        let plan = plan_of(&v, &t);
        assert_eq!(plan.assignments.len(), 1);
        assert_eq!(plan.assignments[0].1, "n2");
        // A message alone does not make a node unready.
        let mut worded = node("n1");
        if let Some(st) = worded.status.as_mut() {
            st.message = "engine unavailable: but the field says it answers".into();
        }
        let v = view(vec![worded], vec![s], vec![t.clone()]);
        assert_eq!(plan_of(&v, &t).assignments.len(), 1);
    }

    fn plan_of(v: &Tables, t: &Task) -> Plan {
        plan(v, &arcs(std::slice::from_ref(t)))
    }
}
