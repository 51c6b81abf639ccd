//! The Docker Engine executor (bollard): each task runs as one container, named and labelled
//! as swarm does (`<service>.<slot>.<task id>`, the [`labels`] set plus the spec's labels).
//! Every call only touches containers labelled with this executor's node ID, so several nodes
//! can share one engine. Errors carry the engine's own message; an engine that does not answer
//! gives [`ExecError::Unavailable`] so the runner retries.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, HealthConfig,
    HealthStatusEnum, HostConfig, HostConfigLogConfig, Mount, MountTmpfsOptions, MountType,
    PortBinding, ResourcesUlimits,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptions, LogsOptions,
    RemoveContainerOptions, StopContainerOptions, WaitContainerOptions,
};
use bollard::Docker;
use futures::StreamExt;
use orch_api::pb::{self, ContainerSpec, ResourceLimits, Task};

use crate::data::{DataStore, NodeFacts, TaskFiles, FILES_ROOT};
use crate::net::pause;
use crate::net::plane::Plane;

use super::{
    container_name, labels, ContainerInfo, ExecError, Executor, Health, LogLine, LogOptions,
    LogStream, StartTurn,
};

/// Docker's stop timeout when the spec sets none.
const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);
/// How much longer than the grace period the client waits for a stop to answer.
const STOP_SLACK: Duration = Duration::from_secs(30);
/// Containers inspected at once by `list`.
const LIST_CONCURRENCY: usize = 8;
/// Containers started at once. Docker 20.10's network setup can deadlock the engine (runc's
/// `libnetwork-setkey` hooks wait on the daemon forever) when many containers start while
/// others stop; the fault suite's churn hit it. A burst of starts queues here instead.
const START_CONCURRENCY: usize = 2;

/// `ORCH_START_CONCURRENCY` overrides [`START_CONCURRENCY`] (1–64), for measuring what the
/// limit costs on an engine that does not wedge (BENCHMARKS.md).
fn start_concurrency() -> usize {
    std::env::var("ORCH_START_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| (1..=64).contains(n))
        .unwrap_or(START_CONCURRENCY)
}

pub struct DockerExecutor {
    docker: Docker,
    node_id: String,
    starts: Arc<tokio::sync::Semaphore>,
    /// The secrets and configs the dispatcher sent, and what templates may say of the node.
    data: DataStore,
    facts: NodeFacts,
    /// Where each task's secrets tmpfs is mounted (`/run/orch/<node ID>/<task ID>`).
    files_root: PathBuf,
    /// The overlay data plane, for tasks on networks.
    net: Option<Arc<Plane>>,
}

/// The sandbox (pause) container of a task on overlay networks: it holds the task's netns.
pub fn sandbox_name(task_id: &str) -> String {
    format!("orch-sandbox-{task_id}")
}

impl DockerExecutor {
    pub fn new(docker: Docker, node_id: &str) -> Self {
        DockerExecutor {
            docker,
            node_id: node_id.to_string(),
            starts: Arc::new(tokio::sync::Semaphore::new(start_concurrency())),
            data: DataStore::default(),
            facts: NodeFacts {
                node_id: node_id.to_string(),
                ..Default::default()
            },
            files_root: Path::new(FILES_ROOT).join(node_id),
            net: None,
        }
    }

    /// Attaches tasks on overlay networks through `plane`.
    pub fn with_net(mut self, plane: Arc<Plane>) -> Self {
        self.net = Some(plane);
        self
    }

    /// Makes (or finds) the task's sandbox container, plumbed, and returns its ID.
    async fn sandbox(&self, plane: &Arc<Plane>, task: &Task) -> Result<String, ExecError> {
        let began = std::time::Instant::now();
        let name = sandbox_name(&task.id);
        let existing = self.inspect_own(&name).await.map_err(EngineError::failed)?;
        let running = existing
            .as_ref()
            .and_then(|c| c.state.as_ref())
            .is_some_and(|s| s.running == Some(true));
        if running {
            plane.adopt(task);
        }
        if running && plane.is_attached(&task.id) {
            return Ok(existing.and_then(|c| c.id).unwrap_or(name));
        }
        if let Some(c) = existing {
            // A sandbox that stopped has lost its netns: start over.
            self.force_remove(&c.id.unwrap_or_else(|| name.clone()))
                .await?;
        }
        pause::ensure_image(&self.docker)
            .await
            .map_err(ExecError::Rejected)?;
        let spec = container_spec(task)?;
        let labels = HashMap::from([
            (labels::NODE_ID.to_string(), self.node_id.clone()),
            (labels::SANDBOX_OF.to_string(), task.id.clone()),
        ]);
        // The task joins this netns, so its name resolution and network sysctls are set
        // here: orch's resolver first, then the spec's own.
        let mut dns: Vec<String> = plane.dns_server(task).into_iter().collect();
        dns.extend(spec.dns.iter().cloned());
        let dns_search = if spec.dns_search.is_empty() {
            vec![".".to_string()]
        } else {
            spec.dns_search.clone()
        };
        let net_sysctls: HashMap<String, String> = spec
            .sysctls
            .iter()
            .filter(|(k, _)| k.starts_with("net."))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let body = ContainerCreateBody {
            image: Some(pause::IMAGE.to_string()),
            hostname: non_empty(&spec.hostname),
            labels: Some(labels),
            host_config: Some(HostConfig {
                network_mode: Some("none".into()),
                dns: Some(dns),
                dns_search: Some(dns_search),
                extra_hosts: non_empty_vec(&spec.hosts),
                sysctls: (!net_sysctls.is_empty()).then_some(net_sysctls),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptions {
            name: Some(name.clone()),
            platform: String::new(),
        };
        let id = self
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| EngineError::from(e).failed())?
            .id;
        self.docker
            .start_container(&id, None)
            .await
            .map_err(|e| EngineError::from(e).failed())?;
        let pid = self
            .docker
            .inspect_container(&id, None)
            .await
            .map_err(|e| EngineError::from(e).failed())?
            .state
            .and_then(|s| s.pid)
            .filter(|p| *p > 0)
            .ok_or_else(|| ExecError::Failed("the sandbox container has no process".into()))?;
        let (plane2, task2) = (plane.clone(), task.clone());
        let plumbed = tokio::task::spawn_blocking(move || plane2.attach(&task2, pid as u32))
            .await
            .map_err(|e| ExecError::Failed(format!("network plumbing panicked: {e}")))?;
        if let Err(e) = plumbed {
            let _ = self.force_remove(&id).await;
            return Err(ExecError::Failed(format!(
                "cannot attach the task's networks: {e}"
            )));
        }
        tracing::info!(
            task = %task.id,
            elapsed_ms = began.elapsed().as_millis() as u64,
            "networks attached"
        );
        Ok(id)
    }

    /// Removes the task's sandbox container and plumbing, if it has any.
    async fn remove_sandbox(&self, task_id: &str) -> Result<(), ExecError> {
        let Some(plane) = &self.net else {
            return Ok(());
        };
        let name = sandbox_name(task_id);
        if let Some(c) = self.inspect_own(&name).await.map_err(EngineError::failed)? {
            self.force_remove(&c.id.unwrap_or(name)).await?;
        }
        let plane = plane.clone();
        let task_id = task_id.to_string();
        let _ = tokio::task::spawn_blocking(move || plane.detach(&task_id)).await;
        Ok(())
    }

    /// A task whose container has ended gives up its netns and veths before its end is
    /// reported: the store then frees its addresses, and a new task given the same address
    /// must not meet a stale veth with the same MAC on the bridge (measured: the new task
    /// was unreachable).
    async fn release_networks(&self, task: &Task) {
        if task.networks.is_empty() {
            return;
        }
        if let Err(e) = self.remove_sandbox(&task.id).await {
            tracing::warn!(task = %task.id, error = %e, "cannot release the task's networks");
        }
    }

    /// Removes sandbox containers whose task container is gone (a crash between the two).
    pub async fn reconcile_sandboxes(&self) -> Result<(), ExecError> {
        let tasks: std::collections::HashSet<String> =
            self.list().await?.into_iter().map(|c| c.task_id).collect();
        let filter = format!("{}={}", labels::NODE_ID, self.node_id);
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([("label".to_string(), vec![filter])])),
            ..Default::default()
        };
        let all = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| EngineError::from(e).failed())?;
        for c in all {
            let Some(task_id) = c
                .labels
                .as_ref()
                .and_then(|l| l.get(labels::SANDBOX_OF))
                .cloned()
            else {
                continue;
            };
            if !tasks.contains(&task_id) {
                self.remove_sandbox(&task_id).await?;
            }
        }
        Ok(())
    }

    /// Mounts the tasks' secrets and configs from `data`; `facts` fill templates.
    pub fn with_data(mut self, data: DataStore, facts: NodeFacts) -> Self {
        self.data = data;
        self.facts = NodeFacts {
            node_id: self.node_id.clone(),
            ..facts
        };
        self
    }

    /// Removes the secrets tmpfs of every task that has no container here any more (what a
    /// crashed agent left behind).
    pub async fn reconcile_files(&self) -> Result<(), ExecError> {
        let keep = self.list().await?.into_iter().map(|c| c.task_id).collect();
        TaskFiles::reconcile(&self.files_root, &keep);
        Ok(())
    }

    /// Mounts the task's secrets and configs, if it uses any: bind mounts for its container.
    fn data_mounts(&self, task: &Task) -> Result<Vec<Mount>, ExecError> {
        let files = self
            .data
            .files_for(task, &self.facts)
            .map_err(ExecError::Rejected)?;
        if files.is_empty() {
            return Ok(Vec::new());
        }
        let binds =
            TaskFiles::create(&self.files_root, &task.id, &files).map_err(ExecError::Rejected)?;
        Ok(binds
            .into_iter()
            .map(|(source, target)| Mount {
                target: Some(target),
                source: Some(source.to_string_lossy().into_owned()),
                typ: Some(MountType::BIND),
                read_only: Some(true),
                ..Default::default()
            })
            .collect())
    }

    /// Whether the container carries this node's label.
    fn is_own(&self, c: &ContainerInspectResponse) -> bool {
        label(c, labels::NODE_ID) == Some(self.node_id.as_str())
    }

    /// The container `name_or_id` when it exists and is this node's.
    async fn inspect_own(
        &self,
        name_or_id: &str,
    ) -> Result<Option<ContainerInspectResponse>, EngineError> {
        match self.docker.inspect_container(name_or_id, None).await {
            Ok(c) if self.is_own(&c) => Ok(Some(c)),
            Ok(_) => Ok(None),
            Err(e) => EngineError::from(e).unless(Kind::NotFound, None),
        }
    }

    /// The ID of the task's container; `Failed` when it has none.
    async fn own_id(&self, task: &Task) -> Result<String, ExecError> {
        let name = container_name(task);
        match self.inspect_own(&name).await.map_err(EngineError::failed)? {
            Some(c) => Ok(c.id.unwrap_or(name)),
            None => Err(ExecError::Failed(format!("No such container: {name}"))),
        }
    }

    /// Every label the task's container carries: the spec's, then orch's (which win).
    fn container_labels(&self, task: &Task, spec: &ContainerSpec) -> HashMap<String, String> {
        let mut all = spec.labels.clone();
        let system = [
            (labels::NODE_ID, self.node_id.clone()),
            (labels::SERVICE_ID, task.service_id.clone()),
            (labels::SERVICE_NAME, task.service_name.clone()),
            (labels::TASK_ID, task.id.clone()),
            (labels::TASK_SLOT, task.slot.to_string()),
            // Docker swarm's labels, which dashboards and `docker ps --filter` rely on.
            ("com.docker.swarm.node.id", self.node_id.clone()),
            ("com.docker.swarm.service.id", task.service_id.clone()),
            ("com.docker.swarm.service.name", task.service_name.clone()),
            ("com.docker.swarm.task", String::new()),
            ("com.docker.swarm.task.id", task.id.clone()),
            ("com.docker.swarm.task.name", super::container_name(task)),
        ];
        all.extend(system.into_iter().map(|(k, v)| (k.to_string(), v)));
        all
    }

    /// The engine's create request for the task (`data`: its secrets' and configs' mounts).
    fn create_body(&self, task: &Task, data: Vec<Mount>) -> Result<ContainerCreateBody, ExecError> {
        let spec = container_spec(task)?;
        let limits = task
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.limits.as_ref());
        let host_ports = host_ports(task)?;
        let mut host_config = host_config(spec, limits, data)?;
        if !host_ports.is_empty() {
            host_config.port_bindings = Some(
                host_ports
                    .iter()
                    .map(|(key, binding)| (key.clone(), Some(vec![binding.clone()])))
                    .collect(),
            );
        }
        Ok(ContainerCreateBody {
            exposed_ports: (!host_ports.is_empty())
                .then(|| host_ports.iter().map(|(key, _)| key.clone()).collect()),
            image: Some(spec.image.clone()),
            entrypoint: non_empty_vec(&spec.command),
            cmd: non_empty_vec(&spec.args),
            env: non_empty_vec(&spec.env),
            working_dir: non_empty(&spec.dir),
            user: non_empty(&spec.user),
            hostname: non_empty(&spec.hostname),
            labels: Some(self.container_labels(task, spec)),
            stop_signal: non_empty(&spec.stop_signal),
            stop_timeout: Some(whole_seconds(stop_grace(spec))),
            healthcheck: spec.healthcheck.as_ref().map(health_config),
            tty: spec.tty.then_some(true),
            open_stdin: spec.open_stdin.then_some(true),
            host_config: Some(host_config),
            ..Default::default()
        })
    }

    /// The container `name` that a create found in the way: the task's own one (created by an
    /// earlier call) is reused, anything else is a conflict.
    async fn existing(
        &self,
        task: &Task,
        name: &str,
        conflict: String,
    ) -> Result<String, ExecError> {
        let Some(c) = self.inspect_own(name).await.map_err(EngineError::failed)? else {
            return Err(ExecError::Failed(conflict));
        };
        let same_task = label(&c, labels::TASK_ID) == Some(task.id.as_str());
        match c.id {
            Some(id) if same_task => Ok(id),
            _ => Err(ExecError::Failed(conflict)),
        }
    }

    /// Pulls `image` (tag `latest` when it names none), draining the progress stream.
    async fn pull(&self, image: &str) -> Result<(), ExecError> {
        let (from_image, tag) = split_reference(image);
        let options = CreateImageOptions {
            from_image: Some(from_image),
            tag,
            ..Default::default()
        };
        let mut progress = self.docker.create_image(Some(options), None, None);
        while let Some(item) = progress.next().await {
            item.map_err(|e| EngineError::from(e).rejected_unless_unreachable())?;
        }
        Ok(())
    }

    /// Force-removes the container `id` with its anonymous volumes; a missing one is fine.
    async fn force_remove(&self, id: &str) -> Result<(), ExecError> {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            link: false,
        };
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let e = EngineError::from(e);
                let in_progress = e.kind == Kind::Conflict && e.message.contains("in progress");
                if in_progress {
                    return Ok(());
                }
                e.unless(Kind::NotFound, ()).map_err(EngineError::failed)
            }
        }
    }
}

#[tonic::async_trait]
impl Executor for DockerExecutor {
    async fn list(&self) -> Result<Vec<ContainerInfo>, ExecError> {
        let filter = format!("{}={}", labels::NODE_ID, self.node_id);
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([("label".to_string(), vec![filter])])),
            ..Default::default()
        };
        let summaries = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| EngineError::from(e).failed())?;
        let inspected: Vec<_> = futures::stream::iter(summaries.into_iter().filter_map(|s| s.id))
            .map(|id| async move { self.inspect_own(&id).await })
            .buffered(LIST_CONCURRENCY)
            .collect()
            .await;
        let mut infos = Vec::with_capacity(inspected.len());
        for c in inspected {
            // None: removed since the listing.
            if let Some(c) = c.map_err(EngineError::failed)? {
                if label(&c, labels::SANDBOX_OF).is_none() {
                    infos.push(container_info(c));
                }
            }
        }
        Ok(infos)
    }

    async fn prepare(&self, task: &Task) -> Result<(), ExecError> {
        let image = &container_spec(task)?.image;
        match self.docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(e) => {
                let e = EngineError::from(e);
                if e.kind != Kind::NotFound {
                    return Err(e.rejected());
                }
            }
        }
        self.pull(image).await
    }

    async fn create(&self, task: &Task) -> Result<String, ExecError> {
        let name = container_name(task);
        let data = self.data_mounts(task)?;
        let mut body = match self.create_body(task, data) {
            Ok(body) => body,
            Err(e) => {
                TaskFiles::remove(&self.files_root, &task.id);
                return Err(e);
            }
        };
        if !task.networks.is_empty() {
            let Some(plane) = &self.net else {
                return Err(ExecError::Rejected(
                    "this node has no overlay data plane".into(),
                ));
            };
            let sandbox = self.sandbox(plane, task).await?;
            // The task joins its sandbox's netns (hostname, DNS, hosts and the network
            // sysctls come from the sandbox: the engine refuses them with this mode).
            body.hostname = None;
            if let Some(hc) = body.host_config.as_mut() {
                hc.network_mode = Some(format!("container:{sandbox}"));
                hc.dns = None;
                hc.dns_search = None;
                hc.extra_hosts = None;
                if let Some(sysctls) = hc.sysctls.as_mut() {
                    sysctls.retain(|k, _| !k.starts_with("net."));
                }
                if hc.sysctls.as_ref().is_some_and(|s| s.is_empty()) {
                    hc.sysctls = None;
                }
            }
        }
        let options = CreateContainerOptions {
            name: Some(name.clone()),
            platform: String::new(),
        };
        match self.docker.create_container(Some(options), body).await {
            Ok(created) => Ok(created.id),
            Err(e) => {
                let e = EngineError::from(e);
                if e.kind == Kind::Conflict {
                    return self.existing(task, &name, e.message).await;
                }
                Err(e.rejected())
            }
        }
    }

    async fn start_turn(&self) -> StartTurn {
        StartTurn {
            _permit: self.starts.clone().acquire_owned().await.ok(),
        }
    }

    async fn start(&self, task: &Task) -> Result<(), ExecError> {
        let id = self.own_id(task).await?;
        match self.docker.start_container(&id, None).await {
            Ok(()) => Ok(()),
            // bollard already takes 304 (already started) as success; kept for clarity.
            Err(e) => EngineError::from(e)
                .unless(Kind::NotModified, ())
                .map_err(EngineError::failed),
        }
    }

    async fn inspect(&self, task: &Task) -> Result<Option<ContainerInfo>, ExecError> {
        let c = self
            .inspect_own(&container_name(task))
            .await
            .map_err(EngineError::failed)?;
        if let (Some(plane), Some(_)) = (&self.net, &c) {
            plane.adopt(task);
        }
        Ok(c.map(container_info))
    }

    async fn wait(&self, task: &Task) -> Result<ContainerInfo, ExecError> {
        let id = self.own_id(task).await?;
        let options = WaitContainerOptions {
            condition: "not-running".to_string(),
        };
        let mut waiting = self.docker.wait_container(&id, Some(options));
        let exit_code = match waiting.next().await {
            Some(Ok(answer)) => Some(answer.status_code),
            // bollard turns a non-zero exit into an error: the container did exit.
            Some(Err(BollardError::DockerContainerWaitError { code, .. })) => Some(code),
            Some(Err(e)) => return Err(EngineError::from(e).failed()),
            None => None,
        };
        drop(waiting);
        match (
            self.inspect_own(&id).await.map_err(EngineError::failed)?,
            exit_code,
        ) {
            (Some(c), _) => {
                let info = container_info(c);
                if info.running {
                    return Err(ExecError::Unavailable(format!(
                        "the engine stopped waiting for container {id} while it still runs"
                    )));
                }
                self.release_networks(task).await;
                Ok(info)
            }
            // Removed right after it exited: what the wait said is all there is.
            (None, Some(code)) => {
                self.release_networks(task).await;
                Ok(ContainerInfo {
                    id,
                    task_id: task.id.clone(),
                    exit_code: Some(code),
                    ..Default::default()
                })
            }
            (None, None) => Err(ExecError::Failed(format!("No such container: {id}"))),
        }
    }

    async fn stop(&self, task: &Task) -> Result<(), ExecError> {
        let name = container_name(task);
        let Some(c) = self.inspect_own(&name).await.map_err(EngineError::failed)? else {
            return Ok(());
        };
        if !c.state.as_ref().and_then(|s| s.running).unwrap_or(false) {
            return Ok(());
        }
        let id = c.id.unwrap_or(name);
        let spec = container_spec(task).ok();
        let grace = spec.map_or(DEFAULT_STOP_GRACE, stop_grace);
        let options = StopContainerOptions {
            signal: spec.and_then(|s| non_empty(&s.stop_signal)),
            t: Some(i32::try_from(whole_seconds(grace)).unwrap_or(i32::MAX)),
        };
        // The engine answers once the container is gone: wait for longer than the grace.
        let docker = self
            .docker
            .clone()
            .with_timeout(self.docker.timeout().max(grace + STOP_SLACK));
        match docker.stop_container(&id, Some(options)).await {
            Ok(()) => {
                self.release_networks(task).await;
                Ok(())
            }
            Err(e) => {
                let e = EngineError::from(e);
                match e.kind {
                    Kind::NotFound | Kind::NotModified => {
                        self.release_networks(task).await;
                        Ok(())
                    }
                    _ => Err(e.failed()),
                }
            }
        }
    }

    async fn remove(&self, task: &Task) -> Result<(), ExecError> {
        let name = container_name(task);
        if let Some(c) = self.inspect_own(&name).await.map_err(EngineError::failed)? {
            self.force_remove(&c.id.unwrap_or(name)).await?;
        }
        TaskFiles::remove(&self.files_root, &task.id);
        if !task.networks.is_empty() {
            self.remove_sandbox(&task.id).await?;
        }
        Ok(())
    }

    async fn remove_container(&self, container_id: &str) -> Result<(), ExecError> {
        match self
            .inspect_own(container_id)
            .await
            .map_err(EngineError::failed)?
        {
            Some(c) => {
                self.force_remove(container_id).await?;
                if let Some(task_id) = label(&c, labels::TASK_ID) {
                    TaskFiles::remove(&self.files_root, task_id);
                    self.remove_sandbox(task_id).await?;
                }
                Ok(())
            }
            // Missing, or another node's: not this node's to remove.
            None => Ok(()),
        }
    }

    async fn logs(&self, task: &Task, options: LogOptions) -> Result<LogStream, ExecError> {
        let id = self.own_id(task).await?;
        let timestamps = options.timestamps;
        let options = LogsOptions {
            follow: options.follow,
            stdout: true,
            stderr: true,
            since: i32::try_from(options.since.max(0)).unwrap_or(i32::MAX),
            until: 0,
            timestamps,
            tail: options
                .tail
                .map_or_else(|| "all".to_string(), |n| n.to_string()),
        };
        let lines = self
            .docker
            .logs(&id, Some(options))
            .filter_map(move |item| async move {
                match item {
                    Ok(output) => log_line(output, timestamps).map(Ok),
                    Err(e) => Some(Err(EngineError::from(e).failed())),
                }
            });
        Ok(Box::pin(lines))
    }
}

/// What kind of failure a bollard error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// 304: already in the asked state.
    NotModified,
    /// 400: the engine refuses the request as invalid.
    BadRequest,
    NotFound,
    Conflict,
    /// Any other answer of the engine.
    Engine,
    /// The engine did not answer.
    Unreachable,
}

/// A bollard error, classified, with the engine's message.
#[derive(Debug)]
struct EngineError {
    kind: Kind,
    message: String,
}

impl From<BollardError> for EngineError {
    fn from(err: BollardError) -> Self {
        use BollardError as E;
        match err {
            E::DockerResponseServerError {
                status_code,
                message,
            } => {
                let kind = match status_code {
                    304 => Kind::NotModified,
                    400 => Kind::BadRequest,
                    404 => Kind::NotFound,
                    409 => Kind::Conflict,
                    _ => Kind::Engine,
                };
                let message = if message.is_empty() {
                    format!("the Docker Engine answered status {status_code}")
                } else {
                    message
                };
                EngineError { kind, message }
            }
            E::DockerStreamError { error } => EngineError {
                kind: Kind::Engine,
                message: error,
            },
            e @ (E::RequestTimeoutError
            | E::IOError { .. }
            | E::HyperResponseError { .. }
            | E::HyperLegacyError { .. }
            | E::SocketNotFoundError(_)) => EngineError {
                kind: Kind::Unreachable,
                message: format!("the Docker Engine does not answer: {e}"),
            },
            e => EngineError {
                kind: Kind::Engine,
                message: e.to_string(),
            },
        }
    }
}

impl EngineError {
    /// `Ok(value)` when the error is of `kind` (an outcome the caller accepts).
    fn unless<T>(self, kind: Kind, value: T) -> Result<T, Self> {
        if self.kind == kind {
            Ok(value)
        } else {
            Err(self)
        }
    }

    /// For calls whose failure fails the task.
    fn failed(self) -> ExecError {
        match self.kind {
            Kind::Unreachable => ExecError::Unavailable(self.message),
            _ => ExecError::Failed(self.message),
        }
    }

    /// For calls where the engine refusing the spec (invalid, or naming what does not exist)
    /// rejects the task.
    fn rejected(self) -> ExecError {
        match self.kind {
            Kind::BadRequest | Kind::NotFound => ExecError::Rejected(self.message),
            _ => self.failed(),
        }
    }

    /// For pulls: whatever the engine answers rejects the task.
    fn rejected_unless_unreachable(self) -> ExecError {
        match self.kind {
            Kind::Unreachable => ExecError::Unavailable(self.message),
            _ => ExecError::Rejected(self.message),
        }
    }
}

/// The container's label `key`.
fn label<'a>(c: &'a ContainerInspectResponse, key: &str) -> Option<&'a str> {
    let labels = c.config.as_ref()?.labels.as_ref()?;
    labels.get(key).map(String::as_str)
}

/// The task's container spec; a task without one (or without an image) cannot run.
fn container_spec(task: &Task) -> Result<&ContainerSpec, ExecError> {
    let spec = task
        .spec
        .as_ref()
        .and_then(|s| s.container.as_ref())
        .ok_or_else(|| ExecError::Rejected(format!("task {} has no container spec", task.id)))?;
    if spec.image.is_empty() {
        return Err(ExecError::Rejected(format!(
            "task {} names no image",
            task.id
        )));
    }
    Ok(spec)
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

fn non_empty_vec(v: &[String]) -> Option<Vec<String>> {
    (!v.is_empty()).then(|| v.to_vec())
}

fn positive(n: i64) -> Option<i64> {
    (n > 0).then_some(n)
}

/// The spec's stop grace period; docker's 10s when it sets none.
fn stop_grace(spec: &ContainerSpec) -> Duration {
    if spec.has_stop_grace_period {
        Duration::from_nanos(u64::try_from(spec.stop_grace_period).unwrap_or(0))
    } else {
        DEFAULT_STOP_GRACE
    }
}

/// Whole seconds, rounded up so a grace period is never cut short.
fn whole_seconds(d: Duration) -> i64 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i64::try_from(secs).unwrap_or(i64::MAX)
}

/// The task's host-mode ports as the engine binds them (`80/tcp` → the node's port; none
/// given: the engine picks one), for a task on the engine's own network.
fn host_ports(task: &Task) -> Result<Vec<(String, PortBinding)>, ExecError> {
    let ports: Vec<&pb::PortConfig> = task
        .endpoint
        .iter()
        .flat_map(|e| &e.ports)
        .filter(|p| p.publish_mode() == pb::PublishMode::Host)
        .collect();
    if !task.networks.is_empty() {
        // In an overlay sandbox: the node delivers them (the mesh's table, local mode).
        return Ok(Vec::new());
    }
    Ok(ports
        .into_iter()
        .map(|p| {
            let binding = PortBinding {
                host_ip: None,
                host_port: (p.published_port != 0).then(|| p.published_port.to_string()),
            };
            (format!("{}/{}", p.target_port, p.protocol), binding)
        })
        .collect())
}

/// The engine's healthcheck: zero durations and an empty test keep the image's values, and
/// `["NONE"]` disables the image's check (the engine reads these as `docker run` does).
fn health_config(h: &pb::HealthConfig) -> HealthConfig {
    HealthConfig {
        test: non_empty_vec(&h.test),
        interval: positive(h.interval),
        timeout: positive(h.timeout),
        start_period: positive(h.start_period),
        retries: (h.retries > 0).then_some(i64::from(h.retries)),
        ..Default::default()
    }
}

fn host_config(
    spec: &ContainerSpec,
    limits: Option<&ResourceLimits>,
    data: Vec<Mount>,
) -> Result<HostConfig, ExecError> {
    let mut mounts = spec
        .mounts
        .iter()
        .map(mount)
        .collect::<Result<Vec<_>, _>>()?;
    mounts.extend(data);
    let ulimits: Vec<ResourcesUlimits> = spec
        .ulimits
        .iter()
        .map(|u| ResourcesUlimits {
            name: Some(u.name.clone()),
            soft: Some(u.soft),
            hard: Some(u.hard),
        })
        .collect();
    Ok(HostConfig {
        mounts: (!mounts.is_empty()).then_some(mounts),
        nano_cpus: limits.and_then(|l| positive(l.nano_cpus)),
        memory: limits.and_then(|l| positive(l.memory_bytes)),
        pids_limit: limits.and_then(|l| positive(l.pids)),
        dns: non_empty_vec(&spec.dns),
        dns_search: non_empty_vec(&spec.dns_search),
        extra_hosts: non_empty_vec(&spec.hosts),
        cap_add: non_empty_vec(&spec.cap_add),
        cap_drop: non_empty_vec(&spec.cap_drop),
        sysctls: (!spec.sysctls.is_empty()).then(|| {
            spec.sysctls
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }),
        ulimits: (!ulimits.is_empty()).then_some(ulimits),
        init: spec.init,
        readonly_rootfs: spec.read_only.then_some(true),
        log_config: spec
            .log_driver
            .as_ref()
            .filter(|l| !l.name.is_empty())
            .map(|l| HostConfigLogConfig {
                typ: Some(l.name.clone()),
                config: (!l.options.is_empty()).then(|| {
                    l.options
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect()
                }),
            }),
        ..Default::default()
    })
}

fn mount(m: &pb::Mount) -> Result<Mount, ExecError> {
    let typ = match m.r#type.as_str() {
        "bind" => MountType::BIND,
        "volume" | "" => MountType::VOLUME,
        "tmpfs" => MountType::TMPFS,
        other => {
            return Err(ExecError::Rejected(format!(
                "invalid mount type {other:?}: must be bind, volume or tmpfs"
            )))
        }
    };
    let tmpfs_options =
        (typ == MountType::TMPFS && m.tmpfs_size_bytes > 0).then(|| MountTmpfsOptions {
            size_bytes: Some(m.tmpfs_size_bytes),
            ..Default::default()
        });
    Ok(Mount {
        target: Some(m.target.clone()),
        source: non_empty(&m.source),
        typ: Some(typ),
        read_only: m.read_only.then_some(true),
        tmpfs_options,
        ..Default::default()
    })
}

/// `(fromImage, tag)` for a pull: the tag is `latest` when the reference names none; a
/// digest reference is pulled as it is.
fn split_reference(image: &str) -> (String, Option<String>) {
    if image.contains('@') {
        return (image.to_string(), None);
    }
    // A ':' before the last '/' is a registry's port, not a tag.
    let name_start = image.rfind('/').map_or(0, |i| i + 1);
    match image[name_start..].rfind(':') {
        Some(i) => {
            let (repo, tag) = image.split_at(name_start + i);
            (repo.to_string(), Some(tag[1..].to_string()))
        }
        None => (image.to_string(), Some("latest".to_string())),
    }
}

/// What the runner needs from an inspected container.
fn container_info(c: ContainerInspectResponse) -> ContainerInfo {
    let state = c.state.unwrap_or_default();
    let running = state.running.unwrap_or(false);
    let code = state.exit_code.unwrap_or(0);
    let exited = matches!(
        state.status,
        Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD)
    );
    let mut error = state.error.unwrap_or_default();
    if state.oom_killed == Some(true) {
        error = if error.is_empty() {
            "OOM killed".to_string()
        } else {
            format!("OOM killed: {error}")
        };
    }
    let task_id = c
        .config
        .and_then(|config| config.labels)
        .and_then(|mut l| l.remove(labels::TASK_ID))
        .unwrap_or_default();
    ContainerInfo {
        id: c.id.unwrap_or_default(),
        task_id,
        running,
        // A container that failed to start also has an exit code (e.g. 127, 128).
        exit_code: (!running && (exited || code != 0)).then_some(code),
        pid: state.pid.unwrap_or(0),
        health: health(state.health.and_then(|h| h.status)),
        error,
    }
}

fn health(status: Option<HealthStatusEnum>) -> Health {
    match status {
        Some(HealthStatusEnum::STARTING) => Health::Starting,
        Some(HealthStatusEnum::HEALTHY) => Health::Healthy,
        Some(HealthStatusEnum::UNHEALTHY) => Health::Unhealthy,
        Some(HealthStatusEnum::NONE | HealthStatusEnum::EMPTY) | None => Health::None,
    }
}

/// One log frame as a line: stdout (and tty output) is stream 1, stderr 2.
fn log_line(output: LogOutput, timestamps: bool) -> Option<LogLine> {
    let (stream, message) = match output {
        LogOutput::StdOut { message } | LogOutput::Console { message } => (1, message),
        LogOutput::StdErr { message } => (2, message),
        LogOutput::StdIn { .. } => return None,
    };
    let (timestamp, data) = if timestamps {
        split_timestamp(&message)
    } else {
        (0, message.to_vec())
    };
    Some(LogLine {
        stream,
        timestamp,
        data,
    })
}

/// Splits the RFC 3339 timestamp docker puts before each line (`timestamps=true`) from the
/// line: (unix nanoseconds, data). A line without one keeps its bytes and timestamp 0.
fn split_timestamp(message: &[u8]) -> (i64, Vec<u8>) {
    let Some(space) = message.iter().position(|&b| b == b' ') else {
        return (0, message.to_vec());
    };
    let nanos = std::str::from_utf8(&message[..space])
        .ok()
        .and_then(|s| humantime::parse_rfc3339(s).ok())
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_nanos()).ok());
    match nanos {
        Some(nanos) => (nanos, message[space + 1..].to_vec()),
        None => (0, message.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_into_image_and_tag() {
        let split = |s: &str| split_reference(s);
        assert_eq!(split("busybox"), ("busybox".into(), Some("latest".into())));
        assert_eq!(
            split("orch-test/busybox:2"),
            ("orch-test/busybox".into(), Some("2".into()))
        );
        assert_eq!(
            split("registry:5000/team/app"),
            ("registry:5000/team/app".into(), Some("latest".into()))
        );
        assert_eq!(
            split("registry:5000/app:v1"),
            ("registry:5000/app".into(), Some("v1".into()))
        );
        assert_eq!(split("app@sha256:abcd"), ("app@sha256:abcd".into(), None));
    }

    #[test]
    fn timestamps_are_split_from_lines() {
        let (ts, data) = split_timestamp(b"2024-01-02T03:04:05.000000006Z hello world\n");
        assert_eq!(ts, 1_704_164_645_000_000_006);
        assert_eq!(data, b"hello world\n");
        assert_eq!(
            split_timestamp(b"no timestamp here\n"),
            (0, b"no timestamp here\n".to_vec())
        );
    }

    #[test]
    fn grace_periods_round_up_to_seconds() {
        let mut spec = ContainerSpec::default();
        assert_eq!(whole_seconds(stop_grace(&spec)), 10);
        spec.has_stop_grace_period = true;
        assert_eq!(whole_seconds(stop_grace(&spec)), 0);
        spec.stop_grace_period = 1_500_000_000;
        assert_eq!(whole_seconds(stop_grace(&spec)), 2);
    }

    #[test]
    fn unknown_mount_types_are_rejected() {
        let m = pb::Mount {
            r#type: "npipe".into(),
            target: "/x".into(),
            ..Default::default()
        };
        assert!(matches!(mount(&m), Err(ExecError::Rejected(_))));
        let m = pb::Mount {
            r#type: "tmpfs".into(),
            target: "/x".into(),
            tmpfs_size_bytes: 1024,
            ..Default::default()
        };
        let got = mount(&m).expect("tmpfs is a valid mount type");
        assert_eq!(got.typ, Some(MountType::TMPFS));
        assert_eq!(got.tmpfs_options.and_then(|o| o.size_bytes), Some(1024));
    }
}
