//! What the checker looks at: the store (through a manager's control API), the engine (the
//! containers the lab's nodes made), and every manager's store digest.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::future::Future;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, Result};
use orch_api::pb::service_spec::Mode;
use orch_api::pb::{
    Empty, ListServicesRequest, ListTasksRequest, Service, StoreDigestResponse, Task, TaskSpec,
    TaskState,
};

use orch_api::pb::control_client::ControlClient;
use orch_api::pb::node_control_client::NodeControlClient;
use orch_api::transport::unix_channel;
use tonic::transport::Channel;

use super::workload::{Spec, Value};

pub const PREFIX: &str = "chaos-";
const GEN: &str = "chaos.gen";

/// Blocking calls to a lab node's control API (over its unix socket).
pub struct Probe {
    rt: tokio::runtime::Runtime,
}

impl Probe {
    pub fn new() -> Result<Probe> {
        Ok(Probe {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
        })
    }

    fn call<T, F: Future<Output = Result<T>>>(&self, f: F) -> Result<T> {
        self.rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), f)
                .await
                .map_err(|_| anyhow!("timed out"))?
        })
    }

    /// A channel to the node process whose data dir is `dir` (over its control socket).
    fn channel(dir: &Path) -> Result<Channel> {
        let socket = dir.join("orch.sock");
        if !socket.exists() {
            anyhow::bail!(
                "the orch node process is not running (no socket at {})",
                socket.display()
            );
        }
        Ok(unix_channel(&socket)?)
    }

    fn control(dir: &Path) -> Result<ControlClient<Channel>> {
        Ok(ControlClient::new(Self::channel(dir)?)
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(64 << 20))
    }

    pub fn services(&self, dir: &Path) -> Result<Vec<Service>> {
        self.call(async {
            let mut c = Self::control(dir)?;
            Ok(c.list_services(ListServicesRequest {})
                .await?
                .into_inner()
                .services)
        })
    }

    pub fn tasks(&self, dir: &Path) -> Result<Vec<Task>> {
        self.call(async {
            let mut c = Self::control(dir)?;
            Ok(c.list_tasks(ListTasksRequest::default())
                .await?
                .into_inner()
                .tasks)
        })
    }

    pub fn digest(&self, dir: &Path) -> Result<StoreDigestResponse> {
        self.call(async {
            let mut c = NodeControlClient::new(Self::channel(dir)?);
            Ok(c.store_digest(Empty {}).await?.into_inner())
        })
    }
}

/// (image, generation) of a task spec: what "the same spec" means to the checker.
fn task_key(spec: Option<&TaskSpec>) -> (String, String) {
    let c = spec.and_then(|s| s.container.as_ref());
    (
        c.map(|c| c.image.clone()).unwrap_or_default(),
        c.and_then(|c| c.labels.get(GEN).cloned())
            .unwrap_or_default(),
    )
}

/// What a service in the store says it should run, in the model's terms.
pub fn value_of(service: &Service) -> Value {
    let spec = service.spec.as_ref();
    let (image, gen) = task_key(spec.and_then(|s| s.task.as_ref()));
    let replicas = match spec.and_then(|s| s.mode.as_ref()) {
        Some(Mode::Replicated(r)) => r.replicas,
        _ => 0,
    };
    Value::Present(Spec {
        image,
        gen: gen.parse().unwrap_or(0),
        replicas,
    })
}

fn running(t: &Task) -> bool {
    t.desired_state() == TaskState::Running
        && t.status.as_ref().map_or(TaskState::New, |s| s.state()) == TaskState::Running
}

/// Tasks of the workload's services wanted running that are not running yet: the queue of
/// starts the engine is behind on.
pub fn start_backlog(tasks: &[Task]) -> usize {
    tasks
        .iter()
        .filter(|t| {
            t.service_name.starts_with(PREFIX)
                && t.desired_state() == TaskState::Running
                && t.status.as_ref().map_or(TaskState::New, |s| s.state()) < TaskState::Running
        })
        .count()
}

/// Slots the store says run two tasks of one spec at once.
pub fn store_duplicates(tasks: &[Task]) -> Vec<String> {
    type Slot<'a> = (&'a str, u64, (String, String));
    let mut slots: BTreeMap<Slot<'_>, Vec<&Task>> = BTreeMap::new();
    for t in tasks.iter().filter(|t| t.slot > 0 && running(t)) {
        slots
            .entry((&t.service_id, t.slot, task_key(t.spec.as_ref())))
            .or_default()
            .push(t);
    }
    slots
        .into_iter()
        .filter(|(_, same)| same.len() > 1)
        .map(|((_, slot, (image, gen)), same)| {
            let service = &same[0].service_name;
            let ids: Vec<&str> = same.iter().map(|t| t.id.as_str()).collect();
            format!(
                "store: slot {service}.{slot} had {} running tasks of {image} gen {gen}: {}",
                ids.len(),
                ids.join(", ")
            )
        })
        .collect()
}

/// A running container the lab's nodes made.
#[derive(Debug, Clone)]
pub struct Container {
    pub name: String,
    pub node_id: String,
    pub task_id: String,
    pub service_id: String,
    pub slot: u64,
    pub image: String,
    pub gen: String,
}

/// The running containers of the lab's nodes, as the engine lists them.
pub fn engine_containers(node_ids: &HashSet<String>) -> Result<Vec<Container>> {
    let out = Command::new("docker")
        .args([
            "ps",
            "--filter",
            "label=orch.task.id",
            "--format",
            "{{.Names}}\t{{.Label \"orch.node.id\"}}\t{{.Label \"orch.service.id\"}}\t{{.Label \"orch.task.slot\"}}\t{{.Image}}\t{{.Label \"chaos.gen\"}}\t{{.Label \"orch.task.id\"}}",
        ])
        .output()?;
    if !out.status.success() {
        return Err(anyhow!(
            "docker ps: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            (f.len() == 7 && node_ids.contains(f[1])).then(|| Container {
                name: f[0].into(),
                node_id: f[1].into(),
                task_id: f[6].into(),
                service_id: f[2].into(),
                slot: f[3].parse().unwrap_or(0),
                image: f[4].into(),
                gen: f[5].into(),
            })
        })
        .collect())
}

/// A slot the engine runs two containers of one spec in at once.
pub struct EngineDuplicate {
    pub message: String,
    pub task_ids: Vec<String>,
    /// The names of the nodes the containers run on.
    pub nodes: Vec<String>,
}

/// Slots the engine runs two containers of one spec in at once.
pub fn engine_duplicates(
    containers: &[Container],
    node_name: &dyn Fn(&str) -> String,
) -> Vec<EngineDuplicate> {
    let mut slots: BTreeMap<(&str, u64, &str, &str), Vec<&Container>> = BTreeMap::new();
    for c in containers.iter().filter(|c| c.slot > 0) {
        slots
            .entry((&c.service_id, c.slot, &c.image, &c.gen))
            .or_default()
            .push(c);
    }
    slots
        .into_iter()
        .filter(|(_, same)| same.len() > 1)
        .map(|((_, _, image, gen), same)| {
            let names: Vec<String> = same
                .iter()
                .map(|c| format!("{} on {}", c.name, node_name(&c.node_id)))
                .collect();
            EngineDuplicate {
                message: format!(
                    "engine: {} containers of {image} gen {gen} ran in one slot at once: {}",
                    same.len(),
                    names.join(", ")
                ),
                task_ids: same.iter().map(|c| c.task_id.clone()).collect(),
                nodes: same.iter().map(|c| node_name(&c.node_id)).collect(),
            }
        })
        .collect()
}

/// How the store sees some tasks (for an anomaly's report).
pub fn describe_tasks(
    tasks: &[Task],
    ids: &[String],
    node_name: &dyn Fn(&str) -> String,
) -> String {
    ids.iter()
        .map(|id| match tasks.iter().find(|t| &t.id == id) {
            Some(t) => {
                let status = t.status.clone().unwrap_or_default();
                format!(
                    "{id}: on {}, desired {:?}, {:?} ({}), created {}",
                    node_name(&t.node_id),
                    TaskState::try_from(t.desired_state).unwrap_or(TaskState::New),
                    TaskState::try_from(status.state).unwrap_or(TaskState::New),
                    status.message,
                    t.meta.as_ref().map_or(0, |m| m.created_at) / 1_000_000 % 1_000_000,
                )
            }
            None => format!("{id}: not in the store"),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Whether the store and the engine both run exactly what every chaos service asks for, and
/// nothing of services that are gone. Err says what is still off.
pub fn converged(services: &[Service], tasks: &[Task], containers: &[Container]) -> Result<()> {
    let chaos: Vec<&Service> = services
        .iter()
        .filter(|s| {
            s.spec
                .as_ref()
                .is_some_and(|sp| sp.name.starts_with(PREFIX))
        })
        .collect();
    let ids: BTreeSet<&str> = services.iter().map(|s| s.id.as_str()).collect();
    for s in &chaos {
        let name = s.spec.as_ref().map_or("", |sp| sp.name.as_str());
        let Value::Present(want) = value_of(s) else {
            continue;
        };
        let key = (want.image.clone(), want.gen.to_string());
        let current: Vec<&Task> = tasks
            .iter()
            .filter(|t| t.service_id == s.id && t.desired_state() <= TaskState::Running)
            .collect();
        let slots: BTreeSet<u64> = current
            .iter()
            .filter(|t| running(t) && task_key(t.spec.as_ref()) == key)
            .map(|t| t.slot)
            .collect();
        if current.len() as u64 != want.replicas || slots.len() as u64 != want.replicas {
            return Err(anyhow!(
                "{name}: {} of {} tasks running {want} ({} current)",
                slots.len(),
                want.replicas,
                current.len()
            ));
        }
        let mine: Vec<&Container> = containers.iter().filter(|c| c.service_id == s.id).collect();
        let matching = mine
            .iter()
            .filter(|c| (c.image.clone(), c.gen.clone()) == key)
            .count();
        if mine.len() as u64 != want.replicas || matching as u64 != want.replicas {
            return Err(anyhow!(
                "{name}: the engine runs {} containers ({matching} of {want})",
                mine.len()
            ));
        }
    }
    if let Some(stray) = containers
        .iter()
        .find(|c| !ids.contains(c.service_id.as_str()))
    {
        return Err(anyhow!(
            "container {} of a removed service still runs",
            stray.name
        ));
    }
    Ok(())
}
