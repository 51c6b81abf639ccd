//! `/events`: the cluster's changes as docker's event messages (`service create`, `node
//! update`, task state changes…). While anyone listens, one poller per node reads the cluster
//! every half second and sends what changed since its last read; nobody listening, no reads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use orch_api::pb::control_client::ControlClient;
use orch_api::pb::service_spec::Mode;
use orch_api::pb::{DataKind, Node, Service, Task};
use serde_json::{json, Map, Value};
use tokio::sync::broadcast;
use tonic::transport::Channel;

use crate::convert::objects::{
    self, availability_name, role_name, task_state_name, update_state_name,
};
use crate::read;

const POLL: Duration = Duration::from_millis(500);

/// One docker event message.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub kind: &'static str,
    pub action: &'static str,
    pub id: String,
    pub attributes: Vec<(String, String)>,
}

impl Event {
    pub fn new(kind: &'static str, action: &'static str, id: &str, name: &str) -> Event {
        Event {
            kind,
            action,
            id: id.to_string(),
            attributes: vec![("name".to_string(), name.to_string())],
        }
    }

    fn changed(mut self, key: &str, old: &str, new: &str) -> Event {
        if old != new {
            self.attributes
                .push((format!("{key}.old"), old.to_string()));
            self.attributes
                .push((format!("{key}.new"), new.to_string()));
        }
        self
    }

    pub fn to_json(&self, time_nanos: i64) -> Value {
        let attributes: Map<String, Value> = self
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        json!({
            "Type": self.kind,
            "Action": self.action,
            "Actor": { "ID": self.id, "Attributes": attributes },
            "scope": "swarm",
            "time": time_nanos / 1_000_000_000,
            "timeNano": time_nanos,
        })
    }
}

/// What the poller compares between reads.
#[derive(Default)]
struct Snapshot {
    services: HashMap<String, Service>,
    nodes: HashMap<String, Node>,
    tasks: HashMap<String, Task>,
    /// Networks, secrets and configs: (type, name, version) by ID.
    named: HashMap<String, (&'static str, String, u64)>,
}

fn version(meta: Option<&orch_api::pb::Meta>) -> u64 {
    meta.map_or(0, |m| m.version)
}

impl Snapshot {
    async fn read(control: &mut ControlClient<Channel>) -> Result<Snapshot, tonic::Status> {
        let services = read::services(control).await?;
        let nodes = read::nodes(control).await?;
        let tasks = read::tasks(control).await?;
        let mut named = HashMap::new();
        for n in read::networks(control).await? {
            let name = n.spec.map(|s| s.name).unwrap_or_default();
            named.insert(n.id, ("network", name, version(n.meta.as_ref())));
        }
        for (kind, name) in [(DataKind::Secret, "secret"), (DataKind::Config, "config")] {
            for d in read::data(control, kind).await? {
                let n = d.spec.map(|s| s.name).unwrap_or_default();
                named.insert(d.id, (name, n, version(d.meta.as_ref())));
            }
        }
        Ok(Snapshot {
            services: services.into_iter().map(|s| (s.id.clone(), s)).collect(),
            nodes: nodes.into_iter().map(|n| (n.id.clone(), n)).collect(),
            tasks: tasks.into_iter().map(|t| (t.id.clone(), t)).collect(),
            named,
        })
    }
}

fn service_name(s: &Service) -> String {
    s.spec.as_ref().map(|s| s.name.clone()).unwrap_or_default()
}

fn replicas(s: &Service) -> String {
    match s.spec.as_ref().and_then(|s| s.mode) {
        Some(Mode::Replicated(r)) => r.replicas.to_string(),
        _ => String::new(),
    }
}

fn image(s: &Service) -> String {
    s.spec
        .as_ref()
        .and_then(|s| s.task.as_ref())
        .and_then(|t| t.container.as_ref())
        .map(|c| c.image.clone())
        .unwrap_or_default()
}

fn hostname(n: &Node) -> String {
    n.description
        .as_ref()
        .map(|d| d.hostname.clone())
        .unwrap_or_default()
}

fn task_name(t: &Task) -> String {
    objects::task_name(&t.service_name, t)
}

/// The events between two reads: per kind of object, creations and updates, then removals.
fn diff(old: &Snapshot, new: &Snapshot) -> Vec<Event> {
    let mut events = Vec::new();
    for (id, s) in &new.services {
        match old.services.get(id) {
            None => events.push(Event::new("service", "create", id, &service_name(s))),
            Some(o) if version(o.meta.as_ref()) != version(s.meta.as_ref()) => {
                let state = |s: &Service| {
                    s.update_status
                        .as_ref()
                        .map_or("", |u| update_state_name(u.state()))
                };
                events.push(
                    Event::new("service", "update", id, &service_name(s))
                        .changed("replicas", &replicas(o), &replicas(s))
                        .changed("image", &image(o), &image(s))
                        .changed("updatestate", state(o), state(s)),
                )
            }
            Some(_) => {}
        }
    }
    for (id, n) in &new.nodes {
        match old.nodes.get(id) {
            None => events.push(Event::new("node", "create", id, &hostname(n))),
            Some(o) if version(o.meta.as_ref()) != version(n.meta.as_ref()) => {
                let state = |n: &Node| format!("{:?}", n.node_state()).to_lowercase();
                events.push(
                    Event::new("node", "update", id, &hostname(n))
                        .changed(
                            "availability",
                            availability_name(o.availability()),
                            availability_name(n.availability()),
                        )
                        .changed(
                            "role",
                            role_name(o.desired_role()),
                            role_name(n.desired_role()),
                        )
                        .changed("state", &state(o), &state(n)),
                )
            }
            Some(_) => {}
        }
    }
    for (id, t) in &new.tasks {
        let task_event = |action| {
            let mut e = Event::new("task", action, id, &task_name(t));
            e.attributes.push(("service".into(), t.service_id.clone()));
            e.attributes.push(("node".into(), t.node_id.clone()));
            e
        };
        match old.tasks.get(id) {
            None => events.push(task_event("create")),
            Some(o) if o.observed_state() != t.observed_state() => {
                events.push(task_event("update").changed(
                    "state",
                    task_state_name(o.observed_state()),
                    task_state_name(t.observed_state()),
                ))
            }
            Some(_) => {}
        }
    }
    for (id, (kind, name, v)) in &new.named {
        match old.named.get(id) {
            None => events.push(Event::new(kind, "create", id, name)),
            Some((_, _, ov)) if ov != v => events.push(Event::new(kind, "update", id, name)),
            Some(_) => {}
        }
    }
    for (id, s) in &old.services {
        if !new.services.contains_key(id) {
            events.push(Event::new("service", "remove", id, &service_name(s)));
        }
    }
    for (id, n) in &old.nodes {
        if !new.nodes.contains_key(id) {
            events.push(Event::new("node", "remove", id, &hostname(n)));
        }
    }
    for (id, t) in &old.tasks {
        if !new.tasks.contains_key(id) {
            events.push(Event::new("task", "remove", id, &task_name(t)));
        }
    }
    for (id, (kind, name, _)) in &old.named {
        if !new.named.contains_key(id) {
            events.push(Event::new(kind, "remove", id, name));
        }
    }
    events
}

/// The node's event source: one poller, however many listeners.
pub struct Hub {
    control: ControlClient<Channel>,
    tx: broadcast::Sender<Arc<Event>>,
    running: Arc<AtomicBool>,
}

impl Hub {
    pub fn new(control: ControlClient<Channel>) -> Hub {
        Hub {
            control,
            tx: broadcast::channel(1024).0,
            running: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        let rx = self.tx.subscribe();
        if !self.running.swap(true, Ordering::SeqCst) {
            tokio::spawn(poll(
                self.control.clone(),
                self.tx.clone(),
                self.running.clone(),
            ));
        }
        rx
    }
}

async fn poll(
    mut control: ControlClient<Channel>,
    tx: broadcast::Sender<Arc<Event>>,
    running: Arc<AtomicBool>,
) {
    let mut last: Option<Snapshot> = None;
    loop {
        if tx.receiver_count() == 0 {
            running.store(false, Ordering::SeqCst);
            // A listener that came between the count and the store started no poller.
            if tx.receiver_count() == 0 || running.swap(true, Ordering::SeqCst) {
                return;
            }
        }
        if let Ok(now) = Snapshot::read(&mut control).await {
            if let Some(prev) = &last {
                for e in diff(prev, &now) {
                    let _ = tx.send(Arc::new(e));
                }
            }
            last = Some(now);
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use orch_api::pb::{Meta, ReplicatedService, ServiceSpec, TaskState, TaskStatus};

    use super::*;

    fn service(id: &str, version: u64, replicas: u64) -> Service {
        Service {
            id: id.into(),
            meta: Some(Meta {
                version,
                ..Default::default()
            }),
            spec: Some(ServiceSpec {
                name: "web".into(),
                mode: Some(Mode::Replicated(ReplicatedService { replicas })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn task(state: TaskState) -> Task {
        Task {
            id: "t1".into(),
            service_name: "web".into(),
            slot: 1,
            status: Some(TaskStatus {
                state: state as i32,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn creations_updates_and_removals_become_events() {
        let empty = Snapshot::default();
        let mut one = Snapshot::default();
        one.services.insert("s1".into(), service("s1", 1, 1));
        one.tasks.insert("t1".into(), task(TaskState::Pending));
        let created = diff(&empty, &one);
        assert_eq!(created[0], Event::new("service", "create", "s1", "web"));
        assert_eq!(created[1].kind, "task");
        assert_eq!(created[1].action, "create");

        let mut scaled = Snapshot::default();
        scaled.services.insert("s1".into(), service("s1", 2, 3));
        scaled.tasks.insert("t1".into(), task(TaskState::Running));
        let updated = diff(&one, &scaled);
        assert!(updated[0]
            .attributes
            .contains(&("replicas.old".into(), "1".into())));
        assert!(updated[0]
            .attributes
            .contains(&("replicas.new".into(), "3".into())));
        assert!(updated[1]
            .attributes
            .contains(&("state.new".into(), "running".into())));

        let removed = diff(&scaled, &empty);
        assert_eq!(removed.len(), 2);
        assert!(removed.iter().all(|e| e.action == "remove"));
        assert!(diff(&scaled, &scaled).is_empty());
    }
}
