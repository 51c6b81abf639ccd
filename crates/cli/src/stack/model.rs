//! A stack file as `stack deploy` uses it: the compose files merged, interpolated, defaulted
//! and checked, in plain types (no YAML left). The loader (`compose`) makes it; `deploy` turns
//! it into networks, secrets, configs and services. Maps are ordered so that the same files
//! always give the same result (a redeploy of an unchanged file changes nothing).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Compose {
    pub services: BTreeMap<String, Service>,
    pub networks: BTreeMap<String, Network>,
    pub volumes: BTreeMap<String, Volume>,
    pub secrets: BTreeMap<String, DataDef>,
    pub configs: BTreeMap<String, DataDef>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Service {
    pub image: String,
    /// `entrypoint` (the container's command), split as a shell would when a string.
    pub entrypoint: Option<Vec<String>>,
    /// `command` (the container's args), split as a shell would when a string.
    pub command: Option<Vec<String>>,
    /// `KEY=VALUE`, sorted by key; `env_file` folded in (`environment` wins).
    pub environment: Vec<String>,
    /// Container labels.
    pub labels: BTreeMap<String, String>,
    pub deploy: Deploy,
    pub ports: Vec<Port>,
    /// The networks named (with their aliases); empty: the stack's `default` network.
    pub networks: BTreeMap<String, ServiceNetwork>,
    pub volumes: Vec<VolumeMount>,
    pub secrets: Vec<DataRef>,
    pub configs: Vec<DataRef>,
    pub healthcheck: Option<Healthcheck>,
    pub stop_grace_period: Option<Duration>,
    pub stop_signal: Option<String>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
    pub hostname: Option<String>,
    pub dns: Vec<String>,
    pub dns_search: Vec<String>,
    /// `HOST:IP`.
    pub extra_hosts: Vec<String>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub sysctls: BTreeMap<String, String>,
    pub ulimits: BTreeMap<String, Ulimit>,
    pub init: Option<bool>,
    pub tty: bool,
    pub stdin_open: bool,
    pub read_only: bool,
    pub logging: Option<Logging>,
    /// Services this one waits for, and for what.
    pub depends_on: BTreeMap<String, Condition>,
    /// Service-level `restart` (`no`, `always`, `on-failure[:N]`, `unless-stopped`): the
    /// restart policy when `deploy.restart_policy` is absent, as docker uses it.
    pub restart: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Condition {
    /// `service_started` (and the short form): the dependency's service exists with its tasks
    /// running.
    #[default]
    Started,
    /// `service_healthy`: its tasks are running and healthy.
    Healthy,
    /// `service_completed_successfully`: a job whose tasks completed.
    CompletedSuccessfully,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    #[default]
    Replicated,
    Global,
    ReplicatedJob,
    GlobalJob,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Deploy {
    pub mode: Mode,
    /// None: not said (a redeploy keeps the current scale; a new service gets 1).
    pub replicas: Option<u64>,
    /// Service labels.
    pub labels: BTreeMap<String, String>,
    pub placement: Placement,
    pub resources: Resources,
    pub restart_policy: Option<RestartPolicy>,
    pub update_config: Option<UpdateConfig>,
    pub rollback_config: Option<UpdateConfig>,
    /// `vip` or `dnsrr`.
    pub endpoint_mode: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Placement {
    pub constraints: Vec<String>,
    /// `spread` descriptors (`node.labels.zone`).
    pub preferences: Vec<String>,
    pub max_replicas_per_node: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    pub limits: Limits,
    pub reservations: Limits,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Limits {
    /// From a CPU string (`'0.5'`): nano CPUs.
    pub nano_cpus: Option<i64>,
    /// From a byte size (`512M`, `1g`, a bare number of bytes), 1024-based.
    pub memory_bytes: Option<i64>,
    pub pids: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RestartPolicy {
    /// `none`, `on-failure` or `any`.
    pub condition: Option<String>,
    pub delay: Option<Duration>,
    pub max_attempts: Option<u64>,
    pub window: Option<Duration>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpdateConfig {
    /// Docker's default when the block is there: 1.
    pub parallelism: u64,
    pub delay: Option<Duration>,
    /// `pause`, `continue` or `rollback`.
    pub failure_action: Option<String>,
    pub monitor: Option<Duration>,
    pub max_failure_ratio: Option<f32>,
    /// `stop-first` or `start-first`.
    pub order: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Port {
    pub target: u32,
    /// None: the manager picks one.
    pub published: Option<u32>,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    /// `ingress`, `host` or `local`.
    pub mode: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceNetwork {
    pub aliases: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MountKind {
    #[default]
    Volume,
    Bind,
    Tmpfs,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeMount {
    pub kind: MountKind,
    /// Bind: an absolute host path (relative ones resolved against the first file's
    /// directory, `~` against HOME); volume: the top-level volume's key (None: anonymous).
    pub source: Option<String>,
    pub target: String,
    pub read_only: bool,
    pub tmpfs_size: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataRef {
    /// The top-level `secrets`/`configs` key.
    pub source: String,
    /// Default: the key (secrets under /run/secrets/, configs at /<key>).
    pub target: Option<String>,
    pub uid: Option<String>,
    pub gid: Option<String>,
    /// From an integer or an octal string (`0440`, `"0440"`, `0o440`).
    pub mode: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Healthcheck {
    /// `["CMD-SHELL", s]` from a string; `["NONE"]` from `disable: true`.
    pub test: Vec<String>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub start_period: Option<Duration>,
    pub retries: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ulimit {
    pub soft: i64,
    pub hard: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Logging {
    pub driver: Option<String>,
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Network {
    /// `name:` (not prefixed with the stack's name).
    pub name: Option<String>,
    pub external: bool,
    /// Default `overlay`.
    pub driver: Option<String>,
    pub driver_opts: BTreeMap<String, String>,
    pub attachable: bool,
    pub internal: bool,
    pub labels: BTreeMap<String, String>,
    /// `ipam.config[0].subnet`.
    pub subnet: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Volume {
    pub name: Option<String>,
    pub external: bool,
    pub driver: Option<String>,
    pub driver_opts: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

/// A top-level secret or config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataDef {
    /// `file:`, made absolute against the first file's directory.
    pub file: Option<PathBuf>,
    pub external: bool,
    /// `name:` (not prefixed), or an external object's name.
    pub name: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub template_driver: Option<String>,
}

/// What the loader made of the files: the model, the warnings to print (ignored keys, by
/// path), and where relative paths were resolved from.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub compose: Compose,
    pub warnings: Vec<String>,
    pub dir: PathBuf,
}
