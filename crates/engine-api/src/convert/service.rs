//! Service specs: the Engine API's ServiceSpec JSON and orch's `ServiceSpec`.
//!
//! Reading a request body maps every field orch acts on into the proto. What a rendering of
//! that proto lacks (the *residue*: fields orch does not know, and values it does not keep,
//! such as an empty `DNSConfig`) is stored as JSON in `ServiceSpec.engine_extra`, and
//! rendering merges it back. So a client's read-modify-write (`docker service update`,
//! `scale`, a stack redeploy) loses nothing.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use orch_api::pb::service_spec::Mode;
use orch_api::pb::{
    ContainerSpec, DataReference, EndpointSpec, FailureAction, GlobalJob, GlobalService,
    HealthConfig, LogDriver, Mount, NetworkAttachmentConfig, Placement, PlacementPreference,
    Platform, PortConfig, PublishMode, ReplicatedJob, ReplicatedService, ResourceLimits,
    ResourceRequirements, RestartCondition, RestartPolicy, ServiceSpec, TaskSpec, Ulimit,
    UpdateConfig, UpdateOrder,
};
use orch_api::validate::{
    DEFAULT_MONITOR, DEFAULT_RESTART_DELAY, DEFAULT_STOP_GRACE, MAX_ENGINE_EXTRA,
};
use serde_json::{json, Map, Value};

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

// Enum names, the default first: an empty string in a request means the first entry.
const RESTART_CONDITIONS: [(&str, i32); 3] = [
    ("any", RestartCondition::Any as i32),
    ("on-failure", RestartCondition::OnFailure as i32),
    ("none", RestartCondition::None as i32),
];
const FAILURE_ACTIONS: [(&str, i32); 3] = [
    ("pause", FailureAction::Pause as i32),
    ("continue", FailureAction::Continue as i32),
    ("rollback", FailureAction::Rollback as i32),
];
const UPDATE_ORDERS: [(&str, i32); 2] = [
    ("stop-first", UpdateOrder::StopFirst as i32),
    ("start-first", UpdateOrder::StartFirst as i32),
];
const PUBLISH_MODES: [(&str, i32); 3] = [
    ("ingress", PublishMode::Ingress as i32),
    ("host", PublishMode::Host as i32),
    ("local", PublishMode::Local as i32),
];
const PROTOCOLS: [(&str, &str); 3] = [("tcp", "tcp"), ("udp", "udp"), ("sctp", "sctp")];
const ENDPOINT_MODES: [(&str, &str); 2] = [("vip", "vip"), ("dnsrr", "dnsrr")];
const MOUNT_TYPES: [&str; 3] = ["bind", "volume", "tmpfs"];
const MODES: [&str; 4] = ["Replicated", "Global", "ReplicatedJob", "GlobalJob"];

/// Where orch renders an array of objects. A residue there is per element; should orch's array
/// have become empty since, it must not come back on its own (see [`merge`]).
const OBJECT_ARRAYS: [&str; 8] = [
    "TaskTemplate.ContainerSpec.Mounts",
    "TaskTemplate.ContainerSpec.Secrets",
    "TaskTemplate.ContainerSpec.Configs",
    "TaskTemplate.ContainerSpec.Ulimits",
    "TaskTemplate.Placement.Preferences",
    "TaskTemplate.Placement.Platforms",
    "TaskTemplate.Networks",
    "EndpointSpec.Ports",
];

/// The deprecated top-level `Networks`: read when `TaskTemplate.Networks` is empty, never kept
/// or rendered.
const DEPRECATED_NETWORKS: &str = "Networks";

// ---------------------------------------------------------------------------------------------
// Engine API → orch
// ---------------------------------------------------------------------------------------------

/// An Engine API ServiceSpec (request body of POST /services/create or /services/{id}/update)
/// → orch's spec. Err(message) becomes a 400 with that message.
///
/// Fields orch does not act on are kept in `engine_extra`; missing defaults that orch's manager
/// fills (update config, restart policy, stop grace period) are left unset.
pub fn spec_from_engine(body: &Value) -> Result<ServiceSpec, String> {
    let root = Obj::root(body)?;
    let mut task = task_from_engine(&root.obj_or_empty("TaskTemplate")?)?;
    let deprecated_networks = networks_from_engine(&root, DEPRECATED_NETWORKS)?;
    if task.networks.is_empty() {
        task.networks = deprecated_networks;
    }
    let mut spec = ServiceSpec {
        name: root.string("Name")?,
        labels: root.string_map("Labels")?,
        task: Some(task),
        mode: Some(mode_from_engine(&root.obj_or_empty("Mode")?)?),
        update: root.nested("UpdateConfig", update_from_engine)?,
        rollback: root.nested("RollbackConfig", update_from_engine)?,
        endpoint: root.nested("EndpointSpec", endpoint_from_engine)?,
        engine_extra: String::new(),
    };
    spec.engine_extra = engine_extra_of(body, &render_spec(&spec))?;
    Ok(spec)
}

fn task_from_engine(t: &Obj<'_>) -> Result<TaskSpec, String> {
    check_runtime(t)?;
    let mut container = t.nested("ContainerSpec", container_from_engine)?;
    if let Some(log) = t.obj("LogDriver")? {
        container
            .get_or_insert_with(ContainerSpec::default)
            .log_driver = Some(LogDriver {
            name: log.string("Name")?,
            options: log.string_map("Options")?,
        });
    }
    Ok(TaskSpec {
        container,
        resources: t.nested("Resources", resources_from_engine)?,
        restart: t.nested("RestartPolicy", restart_from_engine)?,
        placement: t.nested("Placement", placement_from_engine)?,
        force_update: t.int("ForceUpdate")?,
        networks: networks_from_engine(t, "Networks")?,
    })
}

/// orch runs containers: refuse plugin and network-attachment tasks.
fn check_runtime(t: &Obj<'_>) -> Result<(), String> {
    let runtime = t.string("Runtime")?;
    let unsupported = match runtime.as_str() {
        "" | "container" => None,
        other => Some(other),
    }
    .or_else(|| t.get("PluginSpec").map(|_| "plugin"))
    .or_else(|| t.get("NetworkAttachmentSpec").map(|_| "attachment"));
    match unsupported {
        Some(r) => Err(format!(
            "orch runs containers only: runtime {r:?} is not supported"
        )),
        None => Ok(()),
    }
}

fn container_from_engine(c: &Obj<'_>) -> Result<ContainerSpec, String> {
    let grace = c.opt_int::<i64>("StopGracePeriod")?;
    let dns = c.obj_or_empty("DNSConfig")?;
    Ok(ContainerSpec {
        image: c.string("Image")?,
        labels: c.string_map("Labels")?,
        command: c.strings("Command")?,
        args: c.strings("Args")?,
        hostname: c.string("Hostname")?,
        env: c.strings("Env")?,
        dir: c.string("Dir")?,
        user: c.string("User")?,
        mounts: each(c.objs("Mounts")?, mount_from_engine)?,
        stop_grace_period: grace.unwrap_or(0),
        has_stop_grace_period: grace.is_some(),
        stop_signal: c.string("StopSignal")?,
        healthcheck: c.nested("Healthcheck", health_from_engine)?,
        secrets: each(c.objs("Secrets")?, |s| data_ref_from_engine(s, "Secret"))?,
        configs: each(c.objs("Configs")?, |s| data_ref_from_engine(s, "Config"))?,
        dns: dns.strings("Nameservers")?,
        dns_search: dns.strings("Search")?,
        hosts: hosts_from_engine(c)?,
        cap_add: c.strings("CapabilityAdd")?,
        cap_drop: c.strings("CapabilityDrop")?,
        sysctls: c.string_map("Sysctls")?,
        ulimits: each(c.objs("Ulimits")?, |u| {
            Ok(Ulimit {
                name: u.string("Name")?,
                soft: u.int("Soft")?,
                hard: u.int("Hard")?,
            })
        })?,
        init: c.opt_bool("Init")?,
        tty: c.bool("TTY")?,
        open_stdin: c.bool("OpenStdin")?,
        read_only: c.bool("ReadOnly")?,
        log_driver: None,
    })
}

fn mount_from_engine(m: &Obj<'_>) -> Result<Mount, String> {
    let kind = m.string("Type")?;
    if !MOUNT_TYPES.contains(&kind.as_str()) {
        return Err(invalid(
            &m.path_of("Type"),
            &format!("unsupported mount type {kind:?}: orch mounts bind, volume or tmpfs"),
        ));
    }
    Ok(Mount {
        r#type: kind,
        source: m.string("Source")?,
        target: m.string("Target")?,
        read_only: m.bool("ReadOnly")?,
        tmpfs_size_bytes: m.obj_or_empty("TmpfsOptions")?.int("SizeBytes")?,
    })
}

fn health_from_engine(h: &Obj<'_>) -> Result<HealthConfig, String> {
    Ok(HealthConfig {
        test: h.strings("Test")?,
        interval: h.int("Interval")?,
        timeout: h.int("Timeout")?,
        start_period: h.int("StartPeriod")?,
        retries: h.int("Retries")?,
    })
}

/// A secret (`kind` "Secret") or config ("Config") reference: `File` is where it is mounted.
fn data_ref_from_engine(d: &Obj<'_>, kind: &str) -> Result<DataReference, String> {
    if kind == "Config" && d.get("Runtime").is_some() {
        return Err("config runtime targets are not supported".to_string());
    }
    let file = d.obj_or_empty("File")?;
    Ok(DataReference {
        id: d.string(&format!("{kind}ID"))?,
        name: d.string(&format!("{kind}Name"))?,
        version: 0,
        target: file.string("Name")?,
        uid: file.string("UID")?,
        gid: file.string("GID")?,
        mode: file.int("Mode")?,
    })
}

/// The Engine API's `"IP NAME [ALIAS...]"` entries → orch's `"NAME:IP"`, one per name.
fn hosts_from_engine(c: &Obj<'_>) -> Result<Vec<String>, String> {
    let mut hosts = Vec::new();
    for (i, entry) in c.strings("Hosts")?.iter().enumerate() {
        let mut fields = entry.split_whitespace();
        let ip = fields.next().unwrap_or_default();
        let names: Vec<&str> = fields.collect();
        if names.is_empty() {
            return Err(invalid(
                &format!("{}[{i}]", c.path_of("Hosts")),
                &format!("expected \"IP NAME [ALIAS...]\", not {entry:?}"),
            ));
        }
        hosts.extend(names.iter().map(|name| format!("{name}:{ip}")));
    }
    Ok(hosts)
}

fn resources_from_engine(r: &Obj<'_>) -> Result<ResourceRequirements, String> {
    let limits = |o: &Obj<'_>, with_pids: bool| -> Result<ResourceLimits, String> {
        Ok(ResourceLimits {
            nano_cpus: o.int("NanoCPUs")?,
            memory_bytes: o.int("MemoryBytes")?,
            // Pids is a limit only.
            pids: if with_pids { o.int("Pids")? } else { 0 },
        })
    };
    Ok(ResourceRequirements {
        limits: r.nested("Limits", |o| limits(o, true))?,
        reservations: r.nested("Reservations", |o| limits(o, false))?,
    })
}

fn restart_from_engine(r: &Obj<'_>) -> Result<RestartPolicy, String> {
    Ok(RestartPolicy {
        condition: r.choice("Condition", &RESTART_CONDITIONS)?,
        delay: r.opt_int("Delay")?.unwrap_or(nanos(DEFAULT_RESTART_DELAY)),
        max_attempts: r.int("MaxAttempts")?,
        window: r.int("Window")?,
    })
}

fn placement_from_engine(p: &Obj<'_>) -> Result<Placement, String> {
    Ok(Placement {
        constraints: p.strings("Constraints")?,
        preferences: each(p.objs("Preferences")?, |pref| {
            let spread = pref
                .obj("Spread")?
                .ok_or_else(|| expected(&pref.path_of("Spread"), "an object"))?;
            Ok(PlacementPreference {
                spread_descriptor: spread.string("SpreadDescriptor")?,
            })
        })?,
        max_replicas: p.int("MaxReplicas")?,
        platforms: each(p.objs("Platforms")?, |o| {
            Ok(Platform {
                architecture: o.string("Architecture")?,
                os: o.string("OS")?,
            })
        })?,
    })
}

fn networks_from_engine(o: &Obj<'_>, key: &str) -> Result<Vec<NetworkAttachmentConfig>, String> {
    each(o.objs(key)?, |n| {
        Ok(NetworkAttachmentConfig {
            target: n.string("Target")?,
            aliases: n.strings("Aliases")?,
        })
    })
}

/// Exactly one mode; absent or `{}` is one replica. Jobs default as dockerd does.
fn mode_from_engine(m: &Obj<'_>) -> Result<Mode, String> {
    let mut chosen = None;
    for (key, value) in m.map.into_iter().flatten() {
        if !MODES.contains(&key.as_str()) {
            return Err(format!("invalid mode: unknown mode {key:?}"));
        }
        if !value.is_null() && chosen.replace(key.as_str()).is_some() {
            return Err(
                "invalid mode: only one of Replicated, Global, ReplicatedJob, GlobalJob may be set"
                    .to_string(),
            );
        }
    }
    let Some(key) = chosen else {
        return Ok(Mode::Replicated(ReplicatedService { replicas: 1 }));
    };
    let o = m.obj_or_empty(key)?;
    Ok(match key {
        "Replicated" => Mode::Replicated(ReplicatedService {
            replicas: o.opt_int("Replicas")?.unwrap_or(1),
        }),
        "ReplicatedJob" => {
            let max_concurrent = o.opt_int("MaxConcurrent")?.unwrap_or(1);
            Mode::ReplicatedJob(ReplicatedJob {
                max_concurrent,
                total_completions: o.opt_int("TotalCompletions")?.unwrap_or(max_concurrent),
            })
        }
        "Global" => Mode::Global(GlobalService {}),
        _ => Mode::GlobalJob(GlobalJob {}),
    })
}

fn update_from_engine(u: &Obj<'_>) -> Result<UpdateConfig, String> {
    let monitor = u.int("Monitor")?;
    Ok(UpdateConfig {
        parallelism: u.int("Parallelism")?,
        delay: u.int("Delay")?,
        failure_action: u.choice("FailureAction", &FAILURE_ACTIONS)?,
        monitor: if monitor == 0 {
            nanos(DEFAULT_MONITOR)
        } else {
            monitor
        },
        max_failure_ratio: u.opt_f32("MaxFailureRatio")?.unwrap_or(0.0),
        order: u.choice("Order", &UPDATE_ORDERS)?,
    })
}

fn endpoint_from_engine(e: &Obj<'_>) -> Result<EndpointSpec, String> {
    Ok(EndpointSpec {
        mode: e.choice("Mode", &ENDPOINT_MODES)?.to_string(),
        ports: each(e.objs("Ports")?, |p| {
            Ok(PortConfig {
                name: p.string("Name")?,
                protocol: p.choice("Protocol", &PROTOCOLS)?.to_string(),
                target_port: p.int("TargetPort")?,
                published_port: p.int("PublishedPort")?,
                publish_mode: p.choice("PublishMode", &PUBLISH_MODES)?,
            })
        })?,
    })
}

fn each<T>(
    items: Vec<Obj<'_>>,
    convert: impl Fn(&Obj<'_>) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    items.iter().map(convert).collect()
}

// ---------------------------------------------------------------------------------------------
// The path-aware reader
// ---------------------------------------------------------------------------------------------

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// `invalid ServiceSpec: <path>: <problem>`.
fn invalid(path: &str, problem: &str) -> String {
    if path.is_empty() {
        format!("invalid ServiceSpec: {problem}")
    } else {
        format!("invalid ServiceSpec: {path}: {problem}")
    }
}

fn expected(path: &str, what: &str) -> String {
    invalid(path, &format!("expected {what}"))
}

/// Integer types read from JSON numbers; floats and out-of-range numbers are refused.
trait JsonInt: Copy + Default + TryFrom<i128> + std::fmt::Display {
    const MIN: Self;
    const MAX: Self;
    fn expected() -> String {
        format!("an integer from {} to {}", Self::MIN, Self::MAX)
    }
}

macro_rules! json_int {
    ($($t:ty),*) => {$(
        impl JsonInt for $t {
            const MIN: Self = <$t>::MIN;
            const MAX: Self = <$t>::MAX;
        }
    )*};
}
json_int!(i32, i64, u32, u64);

/// A JSON object of the request with its path, for error messages. An absent or `null`
/// object reads as empty (Go's decoder treats `null` as absent), as do `null` fields.
struct Obj<'a> {
    path: String,
    map: Option<&'a Map<String, Value>>,
}

impl<'a> Obj<'a> {
    fn root(body: &'a Value) -> Result<Self, String> {
        match body {
            Value::Object(map) => Ok(Obj {
                path: String::new(),
                map: Some(map),
            }),
            _ => Err(expected("", "an object")),
        }
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map?.get(key).filter(|v| !v.is_null())
    }

    fn path_of(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// The field converted, None when absent; a 400 naming the path when `convert` refuses it.
    fn read<T>(
        &self,
        key: &str,
        what: &str,
        convert: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Result<Option<T>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => convert(v)
                .map(Some)
                .ok_or_else(|| expected(&self.path_of(key), what)),
        }
    }

    fn string(&self, key: &str) -> Result<String, String> {
        let s = self.read(key, "a string", |v| v.as_str().map(str::to_owned))?;
        Ok(s.unwrap_or_default())
    }

    fn opt_bool(&self, key: &str) -> Result<Option<bool>, String> {
        self.read(key, "a boolean", Value::as_bool)
    }

    fn bool(&self, key: &str) -> Result<bool, String> {
        Ok(self.opt_bool(key)?.unwrap_or(false))
    }

    fn opt_int<T: JsonInt>(&self, key: &str) -> Result<Option<T>, String> {
        self.read(key, &T::expected(), |v| {
            let n = v
                .as_i64()
                .map(i128::from)
                .or_else(|| v.as_u64().map(i128::from))?;
            T::try_from(n).ok()
        })
    }

    fn int<T: JsonInt>(&self, key: &str) -> Result<T, String> {
        Ok(self.opt_int(key)?.unwrap_or_default())
    }

    fn opt_f32(&self, key: &str) -> Result<Option<f32>, String> {
        self.read(key, "a number", |v| {
            v.as_f64().map(|x| x as f32).filter(|x| x.is_finite())
        })
    }

    fn strings(&self, key: &str) -> Result<Vec<String>, String> {
        let list = self.read(key, "an array of strings", |v| {
            v.as_array()?
                .iter()
                .map(|s| s.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
        })?;
        Ok(list.unwrap_or_default())
    }

    fn string_map(&self, key: &str) -> Result<HashMap<String, String>, String> {
        let map = self.read(key, "an object of strings", |v| {
            v.as_object()?
                .iter()
                .map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect::<Option<HashMap<_, _>>>()
        })?;
        Ok(map.unwrap_or_default())
    }

    /// An enum field: one of `choices` by name, the first when empty or absent.
    fn choice<T: Copy>(&self, key: &str, choices: &[(&str, T)]) -> Result<T, String> {
        let value = self.string(key)?;
        let found = if value.is_empty() {
            choices.first()
        } else {
            choices.iter().find(|(name, _)| *name == value)
        };
        found.map(|(_, v)| *v).ok_or_else(|| {
            let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
            invalid(
                &self.path_of(key),
                &format!("invalid value {value:?}: expected {}", names.join(", ")),
            )
        })
    }

    /// A nested object, None when absent or `null`.
    fn obj(&self, key: &str) -> Result<Option<Obj<'a>>, String> {
        let map = self.read(key, "an object", Value::as_object)?;
        Ok(map.map(|map| Obj {
            path: self.path_of(key),
            map: Some(map),
        }))
    }

    /// A nested object converted by `convert`, None when absent or `null`.
    fn nested<T>(
        &self,
        key: &str,
        convert: impl FnOnce(&Obj<'a>) -> Result<T, String>,
    ) -> Result<Option<T>, String> {
        self.obj(key)?.as_ref().map(convert).transpose()
    }

    fn obj_or_empty(&self, key: &str) -> Result<Obj<'a>, String> {
        Ok(self.obj(key)?.unwrap_or_else(|| Obj {
            path: self.path_of(key),
            map: None,
        }))
    }

    /// An array of objects; elements are named `key[i]` in errors.
    fn objs(&self, key: &str) -> Result<Vec<Obj<'a>>, String> {
        let items = self.read(key, "an array", Value::as_array)?;
        let items = items.map(Vec::as_slice).unwrap_or_default();
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let path = format!("{}[{i}]", self.path_of(key));
                match item.as_object() {
                    Some(map) => Ok(Obj {
                        path,
                        map: Some(map),
                    }),
                    None => Err(expected(&path, "an object")),
                }
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// orch → Engine API
// ---------------------------------------------------------------------------------------------

/// orch's spec → the Engine API ServiceSpec JSON, with `engine_extra` merged back in.
pub fn spec_to_engine(spec: &ServiceSpec) -> Value {
    let mut out = render_spec(spec);
    if let Some(extra) = parse_extra(&spec.engine_extra) {
        merge(&mut out, &extra, "");
    }
    out
}

/// A task's spec (a copy of the service's TaskTemplate) → Engine API TaskSpec JSON.
/// ContainerSpec always present.
pub fn task_spec_to_engine(task: &TaskSpec) -> Value {
    let container = task.container.as_ref();
    let mut out = Out::default();
    out.put(
        "ContainerSpec",
        container.map_or_else(|| json!({}), render_container),
    );
    if let Some(r) = &task.resources {
        out.put("Resources", render_resources(r));
    }
    if let Some(r) = &task.restart {
        out.put("RestartPolicy", render_restart(r));
    }
    if let Some(p) = &task.placement {
        out.put("Placement", render_placement(p));
    }
    out.objects("Networks", task.networks.iter().map(render_network));
    if let Some(log) = container.and_then(|c| c.log_driver.as_ref()) {
        out.put(
            "LogDriver",
            Out::default()
                .put("Name", log.name.as_str())
                .map("Options", &log.options)
                .done(),
        );
    }
    out.put("ForceUpdate", task.force_update)
        .put("Runtime", "container")
        .done()
}

/// Ports → `[{"Name"?,"Protocol","TargetPort","PublishedPort","PublishMode"}]` (used for
/// Endpoint.Ports, EndpointSpec.Ports and task PortStatus). orch's `local` publish mode is
/// rendered as `"local"`.
pub fn ports_to_engine(ports: &[PortConfig]) -> Value {
    Value::Array(ports.iter().map(render_port).collect())
}

/// `insertDefaults=true`: fill swarm's defaults into a rendered spec where absent
/// (StopGracePeriod 10s, DNSConfig {}, Resources {}, RestartPolicy {Condition any, Delay 5s,
/// MaxAttempts 0}, Placement {}, UpdateConfig/RollbackConfig {Parallelism 1, FailureAction
/// pause, Monitor 5s, MaxFailureRatio 0, Order stop-first}). Present values are kept.
pub fn insert_defaults(spec: &mut Value) {
    let Some(spec) = spec.as_object_mut() else {
        return;
    };
    if let Some(task) = object_at(spec, "TaskTemplate") {
        if let Some(c) = object_at(task, "ContainerSpec") {
            fill(c, "StopGracePeriod", json!(nanos(DEFAULT_STOP_GRACE)));
            fill(c, "DNSConfig", json!({}));
        }
        fill(task, "Resources", json!({}));
        if let Some(r) = object_at(task, "RestartPolicy") {
            fill(r, "Condition", json!("any"));
            fill(r, "Delay", json!(nanos(DEFAULT_RESTART_DELAY)));
            fill(r, "MaxAttempts", json!(0));
        }
        fill(task, "Placement", json!({}));
    }
    for key in ["UpdateConfig", "RollbackConfig"] {
        if let Some(u) = object_at(spec, key) {
            fill(u, "Parallelism", json!(1));
            fill(u, "FailureAction", json!("pause"));
            fill(u, "Monitor", json!(nanos(DEFAULT_MONITOR)));
            fill(u, "MaxFailureRatio", json!(0));
            fill(u, "Order", json!("stop-first"));
        }
    }
}

/// The object at `key`, `{}` inserted when absent or null; None when something else is there.
fn object_at<'m>(m: &'m mut Map<String, Value>, key: &str) -> Option<&'m mut Map<String, Value>> {
    let v = m.entry(key).or_insert(Value::Null);
    if v.is_null() {
        *v = json!({});
    }
    v.as_object_mut()
}

fn fill(m: &mut Map<String, Value>, key: &str, value: Value) {
    if m.get(key).is_none_or(Value::is_null) {
        m.insert(key.to_string(), value);
    }
}

/// orch's spec alone, without `engine_extra`.
fn render_spec(spec: &ServiceSpec) -> Value {
    let mut out = Out::default();
    let task = match &spec.task {
        Some(t) => task_spec_to_engine(t),
        None => task_spec_to_engine(&TaskSpec::default()),
    };
    out.put("Name", spec.name.as_str())
        .put("Labels", string_map(&spec.labels))
        .put("TaskTemplate", task)
        .put("Mode", render_mode(spec.mode.as_ref()));
    if let Some(u) = &spec.update {
        out.put("UpdateConfig", render_update(u));
    }
    if let Some(u) = &spec.rollback {
        out.put("RollbackConfig", render_update(u));
    }
    if let Some(e) = &spec.endpoint {
        let mode = if e.mode.is_empty() {
            "vip"
        } else {
            e.mode.as_str()
        };
        let mut endpoint = Out::default();
        endpoint.put("Mode", mode);
        if !e.ports.is_empty() {
            endpoint.put("Ports", ports_to_engine(&e.ports));
        }
        out.put("EndpointSpec", endpoint.done());
    }
    out.done()
}

fn render_container(c: &ContainerSpec) -> Value {
    let mut out = Out::default();
    out.text("Image", &c.image)
        .map("Labels", &c.labels)
        .list("Command", &c.command)
        .list("Args", &c.args)
        .text("Hostname", &c.hostname)
        .list("Env", &c.env)
        .text("Dir", &c.dir)
        .text("User", &c.user)
        .objects("Mounts", c.mounts.iter().map(render_mount));
    if c.has_stop_grace_period {
        out.put("StopGracePeriod", c.stop_grace_period);
    }
    out.text("StopSignal", &c.stop_signal);
    if let Some(h) = &c.healthcheck {
        out.put("Healthcheck", render_health(h));
    }
    out.objects(
        "Secrets",
        c.secrets.iter().map(|s| render_data_ref(s, "Secret")),
    )
    .objects(
        "Configs",
        c.configs.iter().map(|s| render_data_ref(s, "Config")),
    );
    if !c.dns.is_empty() || !c.dns_search.is_empty() {
        out.put(
            "DNSConfig",
            Out::default()
                .list("Nameservers", &c.dns)
                .list("Search", &c.dns_search)
                .done(),
        );
    }
    out.list("Hosts", &hosts_to_engine(&c.hosts))
        .list("CapabilityAdd", &c.cap_add)
        .list("CapabilityDrop", &c.cap_drop)
        .map("Sysctls", &c.sysctls)
        .objects(
            "Ulimits",
            c.ulimits
                .iter()
                .map(|u| json!({"Name": u.name, "Soft": u.soft, "Hard": u.hard})),
        );
    if let Some(init) = c.init {
        out.put("Init", init);
    }
    out.flag("TTY", c.tty)
        .flag("OpenStdin", c.open_stdin)
        .flag("ReadOnly", c.read_only)
        .done()
}

fn render_mount(m: &Mount) -> Value {
    let mut out = Out::default();
    out.put("Type", m.r#type.as_str())
        .text("Source", &m.source)
        .text("Target", &m.target)
        .flag("ReadOnly", m.read_only);
    if m.tmpfs_size_bytes != 0 {
        out.put("TmpfsOptions", json!({"SizeBytes": m.tmpfs_size_bytes}));
    }
    out.done()
}

fn render_health(h: &HealthConfig) -> Value {
    Out::default()
        .list("Test", &h.test)
        .nonzero("Interval", h.interval)
        .nonzero("Timeout", h.timeout)
        .nonzero("StartPeriod", h.start_period)
        .nonzero("Retries", h.retries)
        .done()
}

fn render_data_ref(d: &DataReference, kind: &str) -> Value {
    let mut out = Out::default();
    if !d.target.is_empty() || !d.uid.is_empty() || !d.gid.is_empty() || d.mode != 0 {
        out.put(
            "File",
            json!({"Name": d.target, "UID": d.uid, "GID": d.gid, "Mode": d.mode}),
        );
    }
    out.put(&format!("{kind}ID"), d.id.as_str())
        .put(&format!("{kind}Name"), d.name.as_str())
        .done()
}

/// orch's `"NAME:IP"` → the Engine API's `"IP NAME"`. Names hold no ':', IPv6 addresses do: the
/// first ':' ends the name (as docker's own `host:ip` parsing).
fn hosts_to_engine(hosts: &[String]) -> Vec<String> {
    hosts
        .iter()
        .map(|h| match h.split_once(':') {
            Some((name, ip)) => format!("{ip} {name}"),
            None => h.clone(),
        })
        .collect()
}

fn render_resources(r: &ResourceRequirements) -> Value {
    let mut out = Out::default();
    if let Some(l) = &r.limits {
        out.put(
            "Limits",
            Out::default()
                .nonzero("NanoCPUs", l.nano_cpus)
                .nonzero("MemoryBytes", l.memory_bytes)
                .nonzero("Pids", l.pids)
                .done(),
        );
    }
    if let Some(l) = &r.reservations {
        out.put(
            "Reservations",
            Out::default()
                .nonzero("NanoCPUs", l.nano_cpus)
                .nonzero("MemoryBytes", l.memory_bytes)
                .done(),
        );
    }
    out.done()
}

fn render_restart(r: &RestartPolicy) -> Value {
    Out::default()
        .put("Condition", restart_condition_name(r.condition))
        .put("Delay", r.delay)
        .put("MaxAttempts", r.max_attempts)
        .nonzero("Window", r.window)
        .done()
}

fn render_placement(p: &Placement) -> Value {
    Out::default()
        .list("Constraints", &p.constraints)
        .objects(
            "Preferences",
            p.preferences
                .iter()
                .map(|s| json!({"Spread": {"SpreadDescriptor": s.spread_descriptor}})),
        )
        .nonzero("MaxReplicas", p.max_replicas)
        .objects(
            "Platforms",
            p.platforms.iter().map(|pl| {
                Out::default()
                    .text("Architecture", &pl.architecture)
                    .text("OS", &pl.os)
                    .done()
            }),
        )
        .done()
}

fn render_network(n: &NetworkAttachmentConfig) -> Value {
    Out::default()
        .put("Target", n.target.as_str())
        .list("Aliases", &n.aliases)
        .done()
}

fn render_mode(mode: Option<&Mode>) -> Value {
    match mode {
        None => json!({"Replicated": {"Replicas": 1}}),
        Some(Mode::Replicated(r)) => json!({"Replicated": {"Replicas": r.replicas}}),
        Some(Mode::Global(_)) => json!({"Global": {}}),
        Some(Mode::ReplicatedJob(j)) => json!({"ReplicatedJob": {
            "MaxConcurrent": j.max_concurrent,
            "TotalCompletions": j.total_completions,
        }}),
        Some(Mode::GlobalJob(_)) => json!({"GlobalJob": {}}),
    }
}

/// moby's `UpdateConfig`: `Delay` and `Monitor` are omitted when zero, as dockerd omits them.
fn render_update(u: &UpdateConfig) -> Value {
    Out::default()
        .put("Parallelism", u.parallelism)
        .nonzero("Delay", u.delay)
        .put("FailureAction", failure_action_name(u.failure_action))
        .nonzero("Monitor", u.monitor)
        .put("MaxFailureRatio", ratio(u.max_failure_ratio))
        .put("Order", update_order_name(u.order))
        .done()
}

fn render_port(p: &PortConfig) -> Value {
    let protocol = if p.protocol.is_empty() {
        "tcp"
    } else {
        p.protocol.as_str()
    };
    Out::default()
        .text("Name", &p.name)
        .put("Protocol", protocol)
        .put("TargetPort", p.target_port)
        .put("PublishedPort", p.published_port)
        .put("PublishMode", name_of(&PUBLISH_MODES, p.publish_mode))
        .done()
}

/// An enum value's name; unknown values show as the default (the first).
/// The Engine API's names of a restart condition, an update failure action and an update
/// order (unknown values read as the default), for the CLI's `--pretty` output too.
pub fn restart_condition_name(c: i32) -> &'static str {
    name_of(&RESTART_CONDITIONS, c)
}

pub fn failure_action_name(a: i32) -> &'static str {
    name_of(&FAILURE_ACTIONS, a)
}

pub fn update_order_name(o: i32) -> &'static str {
    name_of(&UPDATE_ORDERS, o)
}

fn name_of(choices: &[(&'static str, i32)], value: i32) -> &'static str {
    choices
        .iter()
        .find(|(_, v)| *v == value)
        .or(choices.first())
        .map_or("", |(name, _)| name)
}

/// A float32 as its shortest decimal (0.1, not 0.10000000149011612); whole numbers as integers,
/// as Go prints them.
fn ratio(f: f32) -> Value {
    let x: f64 = f.to_string().parse().unwrap_or(0.0);
    if x.fract() == 0.0 && x.abs() < 1e15 {
        json!(x as i64)
    } else {
        serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
    }
}

fn string_map(m: &HashMap<String, String>) -> Value {
    let sorted: BTreeMap<&String, &String> = m.iter().collect();
    Value::Object(
        sorted
            .into_iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

/// Builds a JSON object, leaving out empty values as moby's `omitempty` does.
#[derive(Default)]
struct Out(Map<String, Value>);

impl Out {
    fn put(&mut self, key: &str, value: impl Into<Value>) -> &mut Self {
        self.0.insert(key.to_string(), value.into());
        self
    }

    fn text(&mut self, key: &str, s: &str) -> &mut Self {
        if !s.is_empty() {
            self.put(key, s);
        }
        self
    }

    fn nonzero<N: Into<Value> + Default + PartialEq>(&mut self, key: &str, n: N) -> &mut Self {
        if n != N::default() {
            self.put(key, n);
        }
        self
    }

    fn flag(&mut self, key: &str, b: bool) -> &mut Self {
        if b {
            self.put(key, true);
        }
        self
    }

    fn list(&mut self, key: &str, items: &[String]) -> &mut Self {
        if !items.is_empty() {
            self.put(key, items.to_vec());
        }
        self
    }

    fn map(&mut self, key: &str, m: &HashMap<String, String>) -> &mut Self {
        if !m.is_empty() {
            self.put(key, string_map(m));
        }
        self
    }

    fn objects(&mut self, key: &str, items: impl Iterator<Item = Value>) -> &mut Self {
        let items: Vec<Value> = items.collect();
        if !items.is_empty() {
            self.put(key, items);
        }
        self
    }

    fn done(&mut self) -> Value {
        Value::Object(std::mem::take(&mut self.0))
    }
}

// ---------------------------------------------------------------------------------------------
// engine_extra: the residue
// ---------------------------------------------------------------------------------------------

/// The residue of `body` against orch's rendering of it, as compact JSON ("" for none).
fn engine_extra_of(body: &Value, rendered: &Value) -> Result<String, String> {
    let mut extra = residue(body, rendered);
    if let Some(Value::Object(m)) = &mut extra {
        m.remove(DEPRECATED_NETWORKS);
    }
    let Some(extra) = extra.filter(|e| e.as_object().is_some_and(|m| !m.is_empty())) else {
        return Ok(String::new());
    };
    let text = extra.to_string();
    if text.len() > MAX_ENGINE_EXTRA {
        return Err(invalid(
            "",
            &format!(
                "the fields orch keeps but does not act on take {} bytes, more than {MAX_ENGINE_EXTRA}",
                text.len()
            ),
        ));
    }
    if serde_json::from_str::<Value>(&text).is_err() {
        return Err(invalid(
            "",
            "the fields orch keeps but does not act on are nested too deeply",
        ));
    }
    Ok(text)
}

/// What `body` has that `rendered` lacks: keys missing from the rendering whole; objects in
/// both recurse; arrays of equal length recurse element-wise (`null`: nothing for that
/// element). Values in both that differ are orch's (normalized): nothing is kept.
fn residue(body: &Value, rendered: &Value) -> Option<Value> {
    match (body, rendered) {
        (Value::Object(b), Value::Object(r)) => {
            let kept: Map<String, Value> = b
                .iter()
                .filter_map(|(key, bv)| match r.get(key) {
                    None => Some((key.clone(), bv.clone())),
                    Some(rv) => residue(bv, rv).map(|sub| (key.clone(), sub)),
                })
                .collect();
            (!kept.is_empty()).then_some(Value::Object(kept))
        }
        (Value::Array(b), Value::Array(r)) if b.len() == r.len() => {
            let items: Vec<Value> = b
                .iter()
                .zip(r)
                .map(|(bv, rv)| residue(bv, rv).unwrap_or(Value::Null))
                .collect();
            items
                .iter()
                .any(|v| !v.is_null())
                .then_some(Value::Array(items))
        }
        _ => None,
    }
}

/// `engine_extra` as a JSON object; None when empty or not valid.
fn parse_extra(extra: &str) -> Option<Value> {
    if extra.is_empty() {
        return None;
    }
    serde_json::from_str::<Value>(extra)
        .ok()
        .filter(Value::is_object)
}

/// Merges a residue back into a rendering: missing keys inserted, objects recursed, arrays
/// recursed element-wise when the lengths still match (else that residue is dropped).
fn merge(rendered: &mut Value, extra: &Value, path: &str) {
    match (rendered, extra) {
        (Value::Object(r), Value::Object(e)) => {
            for (key, ev) in e {
                let sub = join(path, key);
                match r.get_mut(key) {
                    Some(rv) => merge(rv, ev, &sub),
                    None if keeps_whole(&sub, ev) => {
                        r.insert(key.clone(), ev.clone());
                    }
                    None => {}
                }
            }
        }
        (Value::Array(r), Value::Array(e)) if r.len() == e.len() => {
            let sub = format!("{path}[]");
            for (rv, ev) in r.iter_mut().zip(e) {
                merge(rv, ev, &sub);
            }
        }
        _ => {}
    }
}

/// Whether a residue for a key the rendering lacks comes back whole. Not the deprecated
/// top-level `Networks`, nor per-element residues of an array orch has since emptied.
fn keeps_whole(path: &str, extra: &Value) -> bool {
    if path == DEPRECATED_NETWORKS {
        return false;
    }
    let per_element = matches!(extra, Value::Array(items) if !items.is_empty());
    !(per_element && OBJECT_ARRAYS.contains(&path))
}

/// The fields kept in engine_extra with a non-empty value (not null/false/0/""/{}/[]), as paths
/// like "TaskTemplate.ContainerSpec.Privileges.NoNewPrivileges": the create/update response's
/// Warnings say orch keeps these but does not act on them.
pub fn unacted(spec: &ServiceSpec) -> Vec<String> {
    let mut found = Vec::new();
    if let Some(extra) = parse_extra(&spec.engine_extra) {
        collect_set(&extra, "", &mut found);
    }
    found
}

/// Paths of the non-empty leaves under `v`; an array of scalars is one leaf.
fn collect_set(v: &Value, path: &str, found: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (key, item) in m {
                collect_set(item, &join(path, key), found);
            }
        }
        Value::Array(items) if items.iter().any(|i| i.is_object() || i.is_array()) => {
            for (i, item) in items.iter().enumerate() {
                collect_set(item, &format!("{path}[{i}]"), found);
            }
        }
        _ if is_set(v) => found.push(path.to_string()),
        _ => {}
    }
}

fn is_set(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|x| x != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(items) => items.iter().any(is_set),
        Value::Object(m) => m.values().any(is_set),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIMPLE: &str = include_str!("../../testdata/service_create_simple.json");
    const BIG: &str = include_str!("../../testdata/service_create_big.json");
    const STACK: &str = include_str!("../../testdata/stack_deploy_web.json");
    const INSPECT: &str = include_str!("../../testdata/service_inspect.json");
    const EXTRAS: &str = include_str!("../../testdata/service_extras.json");

    fn parse(text: &str) -> Value {
        serde_json::from_str(text).expect("test JSON parses")
    }

    /// The bodies the docker CLI sends (and the Spec of a service it accepted).
    fn bodies() -> Vec<(&'static str, Value)> {
        let inspect = parse(INSPECT);
        vec![
            ("simple", parse(SIMPLE)),
            ("big", parse(BIG)),
            ("stack", parse(STACK)),
            ("inspect", inspect["Spec"].clone()),
            ("previous", inspect["PreviousSpec"].clone()),
            ("extras", parse(EXTRAS)),
        ]
    }

    fn convert(body: &Value) -> ServiceSpec {
        spec_from_engine(body).expect("the body converts")
    }

    fn container(spec: &ServiceSpec) -> &ContainerSpec {
        spec.task
            .as_ref()
            .and_then(|t| t.container.as_ref())
            .expect("a container spec")
    }

    fn container_mut(spec: &mut ServiceSpec) -> &mut ContainerSpec {
        spec.task
            .as_mut()
            .and_then(|t| t.container.as_mut())
            .expect("a container spec")
    }

    fn task(spec: &ServiceSpec) -> &TaskSpec {
        spec.task.as_ref().expect("a task spec")
    }

    fn numbers_equal(a: &serde_json::Number, b: &serde_json::Number) -> bool {
        match (a.as_i64(), b.as_i64(), a.as_u64(), b.as_u64()) {
            (Some(x), Some(y), _, _) => x == y,
            (_, _, Some(x), Some(y)) => x == y,
            _ => a.as_f64() == b.as_f64(),
        }
    }

    /// Every key and value of `inner` is in `outer` (numbers compared by value); Err names the
    /// path of the first mismatch. Paths in `skip` may differ.
    fn contains(outer: &Value, inner: &Value, path: &str, skip: &[&str]) -> Result<(), String> {
        if skip.contains(&path) {
            return Ok(());
        }
        match (outer, inner) {
            (Value::Object(o), Value::Object(i)) => {
                for (key, iv) in i {
                    let sub = join(path, key);
                    match o.get(key) {
                        Some(ov) => contains(ov, iv, &sub, skip)?,
                        None if skip.contains(&sub.as_str()) => {}
                        None => return Err(format!("{sub}: missing (want {iv})")),
                    }
                }
                Ok(())
            }
            (Value::Array(o), Value::Array(i)) if o.len() == i.len() => {
                for (n, (ov, iv)) in o.iter().zip(i).enumerate() {
                    contains(ov, iv, &format!("{path}[{n}]"), skip)?;
                }
                Ok(())
            }
            (Value::Number(a), Value::Number(b)) if numbers_equal(a, b) => Ok(()),
            (o, i) if o == i => Ok(()),
            (o, i) => Err(format!("{path}: have {o}, want {i}")),
        }
    }

    #[test]
    fn contains_reports_the_first_mismatch() {
        let outer = json!({"A": {"B": [1, {"C": "x"}]}, "D": 0.0});
        assert_eq!(contains(&outer, &json!({"D": 0, "A": {}}), "", &[]), Ok(()));
        assert_eq!(
            contains(&outer, &json!({"A": {"B": [1, {"C": "y"}]}}), "", &[]),
            Err(r#"A.B[1].C: have "x", want "y""#.to_string())
        );
        assert_eq!(
            contains(&outer, &json!({"E": 1}), "", &[]),
            Err("E: missing (want 1)".to_string())
        );
        assert!(contains(&outer, &json!({"A": {"B": [1]}}), "", &[]).is_err());
        assert_eq!(contains(&outer, &json!({"E": 1}), "", &["E"]), Ok(()));
    }

    /// Values orch normalizes (checked separately in `normalized_values_are_orchs`).
    const NORMALIZED: [&str; 1] = ["UpdateConfig.Order"];

    #[test]
    fn round_trip_keeps_every_field_of_the_clis_bodies() {
        for (name, body) in bodies() {
            let rendered = spec_to_engine(&convert(&body));
            contains(&rendered, &body, "", &NORMALIZED)
                .unwrap_or_else(|e| panic!("{name}: {e}\nrendered: {rendered}"));
        }
    }

    #[test]
    fn round_trip_survives_the_managers_normalization() {
        for (name, body) in bodies() {
            let mut spec = convert(&body);
            orch_api::validate::normalize_service_spec(&mut spec)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let rendered = spec_to_engine(&spec);
            contains(&rendered, &body, "", &NORMALIZED)
                .unwrap_or_else(|e| panic!("{name}: {e}\nrendered: {rendered}"));
        }
    }

    #[test]
    fn normalized_values_are_orchs() {
        let rendered = spec_to_engine(&convert(&parse(STACK)));
        assert_eq!(rendered["UpdateConfig"]["Order"], "stop-first");
        assert_eq!(rendered["UpdateConfig"]["FailureAction"], "pause");
        assert_eq!(rendered["UpdateConfig"]["Monitor"], 5_000_000_000_i64);
        assert_eq!(
            rendered["TaskTemplate"]["RestartPolicy"]["Delay"],
            5_000_000_000_i64
        );
        assert_eq!(rendered["EndpointSpec"]["Mode"], "vip");
        let global = convert(&json!({"Name": "g", "Mode": {"Global": {}}, "EndpointSpec": {}}));
        assert_eq!(
            spec_to_engine(&global)["EndpointSpec"],
            json!({"Mode": "vip"})
        );
        let port = convert(&json!({"EndpointSpec": {"Ports": [{"TargetPort": 80}]}}));
        assert_eq!(
            spec_to_engine(&port)["EndpointSpec"]["Ports"],
            json!([{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 0, "PublishMode": "ingress"}])
        );
        let replicated = convert(&json!({"Mode": {"Replicated": {}}}));
        assert_eq!(
            spec_to_engine(&replicated)["Mode"],
            json!({"Replicated": {"Replicas": 1}})
        );
    }

    #[test]
    fn converting_a_rendering_again_changes_nothing() {
        for (name, body) in bodies() {
            let first = convert(&body);
            let rendered = spec_to_engine(&first);
            let second = convert(&rendered);
            assert_eq!(spec_to_engine(&second), rendered, "{name}: rendering");
            assert_eq!(
                parse_extra(&second.engine_extra),
                parse_extra(&first.engine_extra),
                "{name}: engine_extra"
            );
            let strip = |s: &ServiceSpec| ServiceSpec {
                engine_extra: String::new(),
                ..s.clone()
            };
            assert_eq!(strip(&second), strip(&first), "{name}: spec");
        }
    }

    #[test]
    fn the_clis_simple_and_inspected_bodies_keep_only_empty_values() {
        for (name, body) in bodies() {
            if name == "extras" {
                continue;
            }
            assert_eq!(unacted(&convert(&body)), Vec::<String>::new(), "{name}");
        }
        assert_eq!(
            convert(&parse(SIMPLE)).engine_extra,
            r#"{"TaskTemplate":{"ContainerSpec":{"DNSConfig":{}}}}"#
        );
    }

    #[test]
    fn simple_body_maps_to_the_proto() {
        let spec = convert(&parse(SIMPLE));
        let c = container(&spec);
        assert_eq!(spec.name, "web");
        assert_eq!(c.image, "img:latest");
        assert_eq!(c.args, ["cmd"]);
        assert!(c.command.is_empty(), "trailing arguments are Args");
        assert_eq!(c.env, ["A=1"]);
        assert_eq!(c.init, Some(false));
        assert!(!c.has_stop_grace_period);
        assert_eq!(
            spec.mode,
            Some(Mode::Replicated(ReplicatedService { replicas: 3 }))
        );
        assert_eq!(
            task(&spec)
                .placement
                .as_ref()
                .expect("placement")
                .constraints,
            ["node.role==worker"]
        );
        let endpoint = spec.endpoint.as_ref().expect("endpoint");
        assert_eq!(endpoint.mode, "vip");
        assert_eq!(
            endpoint.ports,
            [PortConfig {
                name: String::new(),
                protocol: "tcp".into(),
                target_port: 80,
                published_port: 8080,
                publish_mode: PublishMode::Ingress as i32,
            }]
        );
        assert!(spec.update.is_none() && spec.rollback.is_none());
        assert!(task(&spec).restart.is_none());
    }

    #[test]
    fn big_body_maps_to_the_proto() {
        let spec = convert(&parse(BIG));
        let c = container(&spec);
        assert_eq!(c.args, ["sh", "-c", "sleep 1000"]);
        assert_eq!((c.hostname.as_str(), c.dir.as_str()), ("h", "/w"));
        assert_eq!(c.user, "nobody");
        assert_eq!(c.stop_grace_period, 20_000_000_000);
        assert!(c.has_stop_grace_period);
        assert_eq!(c.mounts.len(), 2);
        assert_eq!(
            (c.mounts[1].r#type.as_str(), c.mounts[1].read_only),
            ("bind", true)
        );
        assert_eq!(
            c.secrets[0],
            DataReference {
                id: "<id>".into(),
                name: "s1".into(),
                version: 0,
                target: "s1".into(),
                uid: "0".into(),
                gid: "0".into(),
                mode: 0o444,
            }
        );
        assert_eq!(
            (c.secrets[1].target.as_str(), c.secrets[1].mode),
            ("/run/s1alt", 0o400)
        );
        assert_eq!(
            (c.configs[0].name.as_str(), c.configs[0].target.as_str()),
            ("c1", "/etc/c1")
        );
        assert_eq!(c.dns, ["8.8.8.8"]);
        assert_eq!(c.cap_add, ["CAP_NET_ADMIN"]);
        assert_eq!(
            c.ulimits,
            [Ulimit {
                name: "nofile".into(),
                soft: 1024,
                hard: 2048
            }]
        );
        let health = c.healthcheck.as_ref().expect("healthcheck");
        assert_eq!(health.interval, 5_000_000_000);
        let t = task(&spec);
        let limits = t
            .resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .expect("limits");
        assert_eq!(
            (limits.nano_cpus, limits.memory_bytes),
            (500_000_000, 268_435_456)
        );
        let restart = t.restart.as_ref().expect("restart");
        assert_eq!(restart.condition, RestartCondition::OnFailure as i32);
        assert_eq!(restart.max_attempts, 3);
        let placement = t.placement.as_ref().expect("placement");
        assert_eq!(
            placement.preferences[0].spread_descriptor,
            "node.labels.zone"
        );
        assert_eq!(placement.max_replicas, 2);
        assert_eq!(t.networks[0].target, "<network ID>");
        let update = spec.update.as_ref().expect("update");
        assert_eq!(update.failure_action, FailureAction::Rollback as i32);
        assert_eq!(update.order, UpdateOrder::StartFirst as i32);
        assert_eq!(update.parallelism, 2);
        let ports = &spec.endpoint.as_ref().expect("endpoint").ports;
        assert_eq!(ports[0].publish_mode, PublishMode::Host as i32);
        assert_eq!(ports[1].protocol, "udp");
    }

    #[test]
    fn extras_body_maps_to_the_proto_and_keeps_the_rest() {
        let spec = convert(&parse(EXTRAS));
        let c = container(&spec);
        assert_eq!(c.command, ["/entry"]);
        assert_eq!(c.args, ["--serve"]);
        assert_eq!(c.hosts, ["db:10.0.0.1", "v6host:fe80::1"]);
        assert_eq!(c.init, Some(true));
        assert!(c.tty && c.open_stdin && c.read_only);
        assert_eq!(c.mounts[2].tmpfs_size_bytes, 1_048_576);
        assert_eq!(c.dns_search, ["example.org"]);
        assert_eq!(c.cap_drop, ["CAP_MKNOD"]);
        let log = c.log_driver.as_ref().expect("log driver");
        assert_eq!(log.name, "json-file");
        assert_eq!(log.options.get("max-size").map(String::as_str), Some("10m"));
        let t = task(&spec);
        assert_eq!(t.force_update, 7);
        let limits = t
            .resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .expect("limits");
        assert_eq!(limits.pids, 100);
        assert_eq!(t.restart.as_ref().expect("restart").window, 60_000_000_000);
        assert_eq!(
            t.placement.as_ref().expect("placement").platforms,
            [Platform {
                architecture: "arm64".into(),
                os: "linux".into()
            }]
        );
        assert_eq!(
            spec.mode,
            Some(Mode::ReplicatedJob(ReplicatedJob {
                max_concurrent: 2,
                total_completions: 6
            }))
        );
        let update = spec.update.as_ref().expect("update");
        assert_eq!(update.max_failure_ratio, 0.25);
        assert_eq!(update.failure_action, FailureAction::Continue as i32);
        let endpoint = spec.endpoint.as_ref().expect("endpoint");
        assert_eq!(endpoint.mode, "dnsrr");
        assert_eq!(endpoint.ports[0].publish_mode, PublishMode::Local as i32);
        assert_eq!(endpoint.ports[0].name, "dns");

        let extra = parse(&spec.engine_extra);
        let ct = &extra["TaskTemplate"]["ContainerSpec"];
        assert_eq!(ct["Privileges"]["NoNewPrivileges"], true);
        assert_eq!(ct["Mounts"][0]["BindOptions"]["Propagation"], "rslave");
        assert_eq!(ct["Mounts"][1]["VolumeOptions"]["NoCopy"], true);
        assert_eq!(ct["Mounts"][2]["TmpfsOptions"], json!({"Mode": 1023}));
        assert_eq!(ct["Healthcheck"], json!({"StartInterval": 500_000_000}));
        assert_eq!(ct["DNSConfig"], json!({"Options": ["ndots:2"]}));
        assert_eq!(
            extra["TaskTemplate"]["Networks"],
            json!([{"DriverOpts": {"com.example.opt": "1"}}])
        );
        assert_eq!(
            extra["TaskTemplate"]["Placement"]["Platforms"],
            json!([{"Variant": "v8"}])
        );
        assert!(extra["TaskTemplate"]["Resources"]["Reservations"]["GenericResources"].is_array());
        assert!(extra["TaskTemplate"].get("Runtime").is_none(), "rendered");

        let rendered = spec_to_engine(&spec);
        assert_eq!(
            rendered["TaskTemplate"]["ContainerSpec"]["Hosts"],
            json!(["10.0.0.1 db", "fe80::1 v6host"])
        );
        assert_eq!(rendered["UpdateConfig"]["MaxFailureRatio"], json!(0.25));
    }

    #[test]
    fn hosts_with_aliases_become_one_orch_entry_per_name() {
        let spec = convert(&json!({"TaskTemplate": {"ContainerSpec": {
            "Hosts": ["10.0.0.1\tdb  db.local", "::1 localhost6"]}}}));
        assert_eq!(
            container(&spec).hosts,
            ["db:10.0.0.1", "db.local:10.0.0.1", "localhost6:::1"]
        );
        assert_eq!(
            spec_to_engine(&spec)["TaskTemplate"]["ContainerSpec"]["Hosts"],
            json!(["10.0.0.1 db", "10.0.0.1 db.local", "::1 localhost6"])
        );
        assert_eq!(
            hosts_to_engine(&["db.test:10.1.2.3".into(), "v6:2001:db8::1".into()]),
            ["10.1.2.3 db.test", "2001:db8::1 v6"]
        );
    }

    #[test]
    fn init_and_stop_grace_period_keep_absence() {
        let c = |body: Value| {
            container(&convert(&json!({"TaskTemplate": {"ContainerSpec": body}}))).clone()
        };
        assert_eq!(c(json!({})).init, None);
        assert_eq!(c(json!({"Init": null})).init, None);
        assert_eq!(c(json!({"Init": false})).init, Some(false));
        assert_eq!(c(json!({"Init": true})).init, Some(true));
        let absent = c(json!({}));
        assert!(!absent.has_stop_grace_period);
        assert!(render_container(&absent).get("StopGracePeriod").is_none());
        let zero = c(json!({"StopGracePeriod": 0}));
        assert!(zero.has_stop_grace_period);
        assert_eq!(render_container(&zero)["StopGracePeriod"], 0);
        let set = c(json!({"StopGracePeriod": 3_000_000_000_i64}));
        assert_eq!(
            (set.has_stop_grace_period, set.stop_grace_period),
            (true, 3_000_000_000)
        );
    }

    #[test]
    fn modes_and_their_defaults() {
        let mode = |m: Value| convert(&json!({"Mode": m})).mode;
        let replicated = |n| Some(Mode::Replicated(ReplicatedService { replicas: n }));
        let job = |m, t| {
            Some(Mode::ReplicatedJob(ReplicatedJob {
                max_concurrent: m,
                total_completions: t,
            }))
        };
        assert_eq!(convert(&json!({})).mode, replicated(1));
        assert_eq!(mode(json!(null)), replicated(1));
        assert_eq!(mode(json!({})), replicated(1));
        assert_eq!(mode(json!({"Replicated": {}})), replicated(1));
        assert_eq!(mode(json!({"Replicated": {"Replicas": 0}})), replicated(0));
        assert_eq!(
            mode(json!({"Global": {}, "Replicated": null})),
            Some(Mode::Global(GlobalService {}))
        );
        assert_eq!(mode(json!({"ReplicatedJob": {}})), job(1, 1));
        assert_eq!(
            mode(json!({"ReplicatedJob": {"MaxConcurrent": 3}})),
            job(3, 3)
        );
        assert_eq!(
            mode(json!({"ReplicatedJob": {"TotalCompletions": 5}})),
            job(1, 5)
        );
        assert_eq!(
            mode(json!({"GlobalJob": {}})),
            Some(Mode::GlobalJob(GlobalJob {}))
        );
        let rendered = spec_to_engine(&convert(&json!({"Mode": {"ReplicatedJob": {}}})));
        assert_eq!(
            rendered["Mode"],
            json!({"ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": 1}})
        );
    }

    #[test]
    fn deprecated_top_level_networks_fill_an_empty_task_list_and_are_never_rendered() {
        let spec = convert(&json!({"Networks": [{"Target": "old", "Aliases": ["a"]}]}));
        assert_eq!(task(&spec).networks[0].target, "old");
        assert_eq!(task(&spec).networks[0].aliases, ["a"]);
        let rendered = spec_to_engine(&spec);
        assert!(rendered.get("Networks").is_none());
        assert_eq!(rendered["TaskTemplate"]["Networks"][0]["Target"], "old");
        assert_eq!(spec.engine_extra, "");

        let both = convert(&json!({
            "Networks": [{"Target": "old"}],
            "TaskTemplate": {"Networks": [{"Target": "new"}]}
        }));
        assert_eq!(task(&both).networks.len(), 1);
        assert_eq!(task(&both).networks[0].target, "new");
        assert!(spec_to_engine(&both).get("Networks").is_none());

        let smuggled = ServiceSpec {
            engine_extra: r#"{"Networks":[{"Target":"x"}]}"#.into(),
            ..Default::default()
        };
        assert!(spec_to_engine(&smuggled).get("Networks").is_none());
    }

    #[test]
    fn residue_of_an_array_orch_has_changed_is_dropped() {
        let mut spec = convert(&parse(EXTRAS));
        container_mut(&mut spec).mounts.truncate(1);
        let rendered = spec_to_engine(&spec);
        let mounts = &rendered["TaskTemplate"]["ContainerSpec"]["Mounts"];
        assert_eq!(mounts.as_array().map(Vec::len), Some(1));
        assert!(mounts[0].get("BindOptions").is_none(), "lengths differ");

        container_mut(&mut spec).mounts.clear();
        let rendered = spec_to_engine(&spec);
        assert!(
            rendered["TaskTemplate"]["ContainerSpec"]
                .get("Mounts")
                .is_none(),
            "no mount comes back from its residue alone"
        );
    }

    #[test]
    fn orchs_values_win_over_the_residue() {
        let mut spec = convert(&json!({"TaskTemplate": {"ContainerSpec": {
            "Image": "a", "DNSConfig": {"Options": ["ndots:1"]}}}}));
        assert_eq!(
            spec_to_engine(&spec)["TaskTemplate"]["ContainerSpec"]["DNSConfig"],
            json!({"Options": ["ndots:1"]})
        );
        container_mut(&mut spec).image = "b".into();
        container_mut(&mut spec).dns = vec!["9.9.9.9".into()];
        let c = &spec_to_engine(&spec)["TaskTemplate"]["ContainerSpec"];
        assert_eq!(c["Image"], "b");
        assert_eq!(
            c["DNSConfig"],
            json!({"Nameservers": ["9.9.9.9"], "Options": ["ndots:1"]})
        );
    }

    #[test]
    fn invalid_engine_extra_is_ignored() {
        for extra in [
            "{",
            "[1]",
            "null",
            "\"x\"",
            "{\"Name\":",
            "{\"TaskTemplate\":5}",
        ] {
            let spec = ServiceSpec {
                name: "web".into(),
                engine_extra: extra.into(),
                ..Default::default()
            };
            let rendered = spec_to_engine(&spec);
            assert_eq!(rendered["Name"], "web", "{extra}");
            assert!(rendered["TaskTemplate"]["ContainerSpec"].is_object());
            let _ = unacted(&spec);
        }
    }

    #[test]
    fn refusals_carry_their_message() {
        let tt = |t: Value| json!({"Name": "x", "TaskTemplate": t});
        let cs = |c: Value| tt(json!({"ContainerSpec": c}));
        let cases: Vec<(Value, &str)> = vec![
            (json!({"Mode": {"Foo": {}}}), r#"invalid mode: unknown mode "Foo""#),
            (
                json!({"Mode": {"Replicated": {}, "Global": {}}}),
                "invalid mode: only one of Replicated, Global, ReplicatedJob, GlobalJob may be set",
            ),
            (
                json!({"Mode": {"Global": 1}}),
                "invalid ServiceSpec: Mode.Global: expected an object",
            ),
            (
                cs(json!({"Configs": [{"Runtime": {}, "ConfigID": "c"}]})),
                "config runtime targets are not supported",
            ),
            (
                tt(json!({"Runtime": "plugin"})),
                r#"orch runs containers only: runtime "plugin" is not supported"#,
            ),
            (
                tt(json!({"PluginSpec": {"Name": "p"}})),
                r#"orch runs containers only: runtime "plugin" is not supported"#,
            ),
            (
                tt(json!({"NetworkAttachmentSpec": {"ContainerID": "c"}})),
                r#"orch runs containers only: runtime "attachment" is not supported"#,
            ),
            (
                cs(json!({"Env": "A=1"})),
                "invalid ServiceSpec: TaskTemplate.ContainerSpec.Env: expected an array of strings",
            ),
            (
                cs(json!({"Mounts": [{"Type": "npipe", "Target": "/x"}]})),
                r#"invalid ServiceSpec: TaskTemplate.ContainerSpec.Mounts[0].Type: unsupported mount type "npipe": orch mounts bind, volume or tmpfs"#,
            ),
            (
                cs(json!({"Mounts": [{"Target": "/x"}]})),
                r#"invalid ServiceSpec: TaskTemplate.ContainerSpec.Mounts[0].Type: unsupported mount type "": orch mounts bind, volume or tmpfs"#,
            ),
            (
                cs(json!({"Hosts": ["10.0.0.1"]})),
                r#"invalid ServiceSpec: TaskTemplate.ContainerSpec.Hosts[0]: expected "IP NAME [ALIAS...]", not "10.0.0.1""#,
            ),
            (
                tt(json!({"RestartPolicy": {"Condition": "always"}})),
                r#"invalid ServiceSpec: TaskTemplate.RestartPolicy.Condition: invalid value "always": expected any, on-failure, none"#,
            ),
            (
                json!({"UpdateConfig": {"FailureAction": "explode"}}),
                r#"invalid ServiceSpec: UpdateConfig.FailureAction: invalid value "explode": expected pause, continue, rollback"#,
            ),
            (
                json!({"RollbackConfig": {"Order": "random"}}),
                r#"invalid ServiceSpec: RollbackConfig.Order: invalid value "random": expected stop-first, start-first"#,
            ),
            (
                json!({"EndpointSpec": {"Mode": "lb"}}),
                r#"invalid ServiceSpec: EndpointSpec.Mode: invalid value "lb": expected vip, dnsrr"#,
            ),
            (
                json!({"EndpointSpec": {"Ports": [{"Protocol": "icmp", "TargetPort": 1}]}}),
                r#"invalid ServiceSpec: EndpointSpec.Ports[0].Protocol: invalid value "icmp": expected tcp, udp, sctp"#,
            ),
            (
                json!({"EndpointSpec": {"Ports": [{"PublishMode": "mesh", "TargetPort": 1}]}}),
                r#"invalid ServiceSpec: EndpointSpec.Ports[0].PublishMode: invalid value "mesh": expected ingress, host, local"#,
            ),
            (
                json!({"EndpointSpec": {"Ports": [{"TargetPort": 5_000_000_000_i64}]}}),
                "invalid ServiceSpec: EndpointSpec.Ports[0].TargetPort: expected an integer from 0 to 4294967295",
            ),
            (
                json!({"EndpointSpec": {"Ports": [{"TargetPort": -1}]}}),
                "invalid ServiceSpec: EndpointSpec.Ports[0].TargetPort: expected an integer from 0 to 4294967295",
            ),
            (
                json!({"Mode": {"Replicated": {"Replicas": 1.5}}}),
                "invalid ServiceSpec: Mode.Replicated.Replicas: expected an integer from 0 to 18446744073709551615",
            ),
            (
                tt(json!({"ForceUpdate": 1e300})),
                "invalid ServiceSpec: TaskTemplate.ForceUpdate: expected an integer from 0 to 18446744073709551615",
            ),
            (
                cs(json!({"Healthcheck": {"Retries": 3_000_000_000_i64}})),
                "invalid ServiceSpec: TaskTemplate.ContainerSpec.Healthcheck.Retries: expected an integer from -2147483648 to 2147483647",
            ),
            (
                json!({"UpdateConfig": {"MaxFailureRatio": "0.5"}}),
                "invalid ServiceSpec: UpdateConfig.MaxFailureRatio: expected a number",
            ),
            (
                json!({"UpdateConfig": {"MaxFailureRatio": 1e300}}),
                "invalid ServiceSpec: UpdateConfig.MaxFailureRatio: expected a number",
            ),
            (
                json!({"Labels": {"a": 1}}),
                "invalid ServiceSpec: Labels: expected an object of strings",
            ),
            (json!({"Name": 5}), "invalid ServiceSpec: Name: expected a string"),
            (
                cs(json!({"Init": "yes"})),
                "invalid ServiceSpec: TaskTemplate.ContainerSpec.Init: expected a boolean",
            ),
            (
                tt(json!({"Placement": {"Preferences": [{}]}})),
                "invalid ServiceSpec: TaskTemplate.Placement.Preferences[0].Spread: expected an object",
            ),
            (
                cs(json!({"Secrets": [null]})),
                "invalid ServiceSpec: TaskTemplate.ContainerSpec.Secrets[0]: expected an object",
            ),
            (
                tt(json!({"Networks": {}})),
                "invalid ServiceSpec: TaskTemplate.Networks: expected an array",
            ),
            (
                json!({"Networks": [5]}),
                "invalid ServiceSpec: Networks[0]: expected an object",
            ),
            (json!([]), "invalid ServiceSpec: expected an object"),
            (json!(null), "invalid ServiceSpec: expected an object"),
        ];
        for (body, message) in cases {
            assert_eq!(spec_from_engine(&body), Err(message.to_string()), "{body}");
        }
    }

    #[test]
    fn oversized_or_too_deep_residue_is_refused() {
        let big = json!({"Name": "x", "Isolation": "x".repeat(MAX_ENGINE_EXTRA)});
        let err = spec_from_engine(&big).expect_err("too big");
        assert!(err.contains("more than 65536"), "{err}");

        let mut deep = json!(1);
        for _ in 0..200 {
            deep = json!([deep]);
        }
        let err = spec_from_engine(&json!({"Deep": deep})).expect_err("too deep");
        assert!(err.contains("nested too deeply"), "{err}");

        let mut fine = json!(1);
        for _ in 0..50 {
            fine = json!({"a": fine});
        }
        let spec = convert(&json!({"Deep": fine}));
        assert_eq!(spec_to_engine(&spec)["Deep"], fine);
    }

    /// Puts `value` at `key` of the object at JSON pointer `parent` (if there is one).
    fn set(body: &mut Value, parent: &str, key: &str, value: Value) {
        if let Some(Value::Object(m)) = body.pointer_mut(parent) {
            m.insert(key.to_string(), value);
        }
    }

    #[test]
    fn hostile_inputs_never_panic() {
        let mut deep = json!({});
        for _ in 0..100 {
            deep = json!({"x": [deep]});
        }
        let hostile = [
            json!(null),
            json!(true),
            json!(-1),
            json!(i64::MIN),
            json!(18_446_744_073_709_551_615_u64),
            json!(1.5),
            json!(1e308),
            json!(-0.0),
            json!(""),
            json!("\u{0}∞ x"),
            json!([]),
            json!([null]),
            json!([1, "a", {}]),
            json!([{"Type": "tmpfs"}]),
            json!({}),
            json!({"a": null}),
            json!({"Replicated": {"Replicas": -1}}),
            deep,
        ];
        // (parent object as a JSON pointer, the keys to overwrite there)
        let places = [
            (
                "",
                "Name Labels TaskTemplate Mode UpdateConfig RollbackConfig EndpointSpec Networks X",
            ),
            (
                "/TaskTemplate",
                "ContainerSpec Resources RestartPolicy Placement Networks LogDriver",
            ),
            ("/TaskTemplate", "ForceUpdate Runtime PluginSpec"),
            (
                "/TaskTemplate/ContainerSpec",
                "Image Labels Command Args Env Mounts StopGracePeriod",
            ),
            (
                "/TaskTemplate/ContainerSpec",
                "Healthcheck Secrets Configs DNSConfig Hosts Sysctls",
            ),
            ("/TaskTemplate/ContainerSpec", "Ulimits Init TTY Privileges"),
            (
                "/TaskTemplate/ContainerSpec/Mounts/0",
                "Type Source ReadOnly TmpfsOptions BindOptions",
            ),
            ("/TaskTemplate/ContainerSpec/Secrets/0", "File SecretID"),
            (
                "/TaskTemplate/ContainerSpec/Secrets/0/File",
                "Name Mode UID",
            ),
            (
                "/TaskTemplate/ContainerSpec/Healthcheck",
                "Test Interval Retries",
            ),
            ("/TaskTemplate/ContainerSpec/Ulimits/0", "Name Soft Hard"),
            ("/TaskTemplate/Resources", "Limits Reservations"),
            (
                "/TaskTemplate/Resources/Limits",
                "NanoCPUs MemoryBytes Pids",
            ),
            (
                "/TaskTemplate/RestartPolicy",
                "Condition Delay MaxAttempts Window",
            ),
            (
                "/TaskTemplate/Placement",
                "Constraints Preferences MaxReplicas Platforms",
            ),
            ("/TaskTemplate/Placement/Preferences/0", "Spread"),
            ("/TaskTemplate/Networks/0", "Target Aliases DriverOpts"),
            ("/Mode", "Replicated Global ReplicatedJob GlobalJob Other"),
            ("/Mode/Replicated", "Replicas"),
            (
                "/UpdateConfig",
                "Parallelism Delay FailureAction Monitor MaxFailureRatio Order",
            ),
            ("/EndpointSpec", "Mode Ports"),
            (
                "/EndpointSpec/Ports/0",
                "Name Protocol TargetPort PublishedPort PublishMode",
            ),
        ];
        let mut accepted = 0;
        for (_, base) in bodies() {
            for (parent, keys) in places {
                for key in keys.split_whitespace() {
                    for value in &hostile {
                        let mut body = base.clone();
                        set(&mut body, parent, key, value.clone());
                        let Ok(spec) = spec_from_engine(&body) else {
                            continue;
                        };
                        accepted += 1;
                        let mut rendered = spec_to_engine(&spec);
                        insert_defaults(&mut rendered);
                        let _ = unacted(&spec);
                        let _ = spec_from_engine(&rendered);
                        let _ = task_spec_to_engine(spec.task.as_ref().expect("task"));
                    }
                }
            }
        }
        assert!(accepted > 0);
        let mut odd = Value::Null;
        insert_defaults(&mut odd);
        let mut odd = json!({"TaskTemplate": 1, "UpdateConfig": [], "RollbackConfig": null});
        insert_defaults(&mut odd);
        assert_eq!(odd["TaskTemplate"], 1);
        assert_eq!(odd["RollbackConfig"]["Order"], "stop-first");
    }

    #[test]
    fn wrong_types_name_their_path() {
        let base = parse(BIG);
        let cases = [
            (
                "/TaskTemplate/ContainerSpec",
                "Args",
                "TaskTemplate.ContainerSpec.Args",
            ),
            (
                "/TaskTemplate/ContainerSpec/Mounts/1",
                "ReadOnly",
                "TaskTemplate.ContainerSpec.Mounts[1].ReadOnly",
            ),
            (
                "/TaskTemplate/ContainerSpec/Secrets/1/File",
                "Mode",
                "TaskTemplate.ContainerSpec.Secrets[1].File.Mode",
            ),
            (
                "/TaskTemplate/Resources/Limits",
                "MemoryBytes",
                "TaskTemplate.Resources.Limits.MemoryBytes",
            ),
            (
                "/TaskTemplate/Placement",
                "MaxReplicas",
                "TaskTemplate.Placement.MaxReplicas",
            ),
            ("/UpdateConfig", "Monitor", "UpdateConfig.Monitor"),
            (
                "/EndpointSpec/Ports/1",
                "PublishedPort",
                "EndpointSpec.Ports[1].PublishedPort",
            ),
            (
                "/TaskTemplate",
                "RestartPolicy",
                "TaskTemplate.RestartPolicy",
            ),
        ];
        for (parent, key, path) in cases {
            let mut body = base.clone();
            set(&mut body, parent, key, json!(7.5));
            let err = spec_from_engine(&body).expect_err(path);
            assert!(
                err.starts_with(&format!("invalid ServiceSpec: {path}: expected ")),
                "{err}"
            );
        }
    }

    #[test]
    fn unacted_lists_only_fields_with_a_value() {
        let spec = convert(&json!({"Name": "x", "TaskTemplate": {"ContainerSpec": {
            "Image": "i", "Init": false, "DNSConfig": {}, "Labels": {}, "Hostname": "",
            "Privileges": {"CredentialSpec": null, "NoNewPrivileges": true},
            "Mounts": [{"Type": "bind", "Source": "/a", "Target": "/b",
                        "BindOptions": {"Propagation": "rshared", "NonRecursive": false}}],
            "Groups": ["wheel"]}}}));
        let mut found = unacted(&spec);
        found.sort();
        assert_eq!(
            found,
            [
                "TaskTemplate.ContainerSpec.Groups",
                "TaskTemplate.ContainerSpec.Mounts[0].BindOptions.Propagation",
                "TaskTemplate.ContainerSpec.Privileges.NoNewPrivileges",
            ]
        );
        assert!(unacted(&convert(&parse(STACK))).is_empty());
        let extras = unacted(&convert(&parse(EXTRAS)));
        for path in [
            "TaskTemplate.ContainerSpec.Isolation",
            "TaskTemplate.ContainerSpec.Healthcheck.StartInterval",
            "TaskTemplate.ContainerSpec.DNSConfig.Options",
            "TaskTemplate.Networks[0].DriverOpts.com.example.opt",
            "TaskTemplate.Placement.Platforms[0].Variant",
            "TaskTemplate.Resources.Reservations.GenericResources[0].DiscreteResourceSpec.Kind",
        ] {
            assert!(extras.iter().any(|p| p == path), "{path} in {extras:?}");
        }
    }

    #[test]
    fn insert_defaults_fills_only_what_is_absent() {
        let mut bare = spec_to_engine(&convert(&json!({"Name": "x"})));
        insert_defaults(&mut bare);
        let t = &bare["TaskTemplate"];
        assert_eq!(t["ContainerSpec"]["StopGracePeriod"], 10_000_000_000_i64);
        assert_eq!(t["ContainerSpec"]["DNSConfig"], json!({}));
        assert_eq!(t["Resources"], json!({}));
        assert_eq!(t["Placement"], json!({}));
        assert_eq!(
            t["RestartPolicy"],
            json!({"Condition": "any", "Delay": 5_000_000_000_i64, "MaxAttempts": 0})
        );
        let update = json!({"Parallelism": 1, "FailureAction": "pause",
            "Monitor": 5_000_000_000_i64, "MaxFailureRatio": 0, "Order": "stop-first"});
        assert_eq!(bare["UpdateConfig"], update);
        assert_eq!(bare["RollbackConfig"], update);

        let body = parse(BIG);
        let mut big = spec_to_engine(&convert(&body));
        let before = big.clone();
        insert_defaults(&mut big);
        contains(&big, &before, "", &[]).expect("nothing overridden");
        assert_eq!(
            big["TaskTemplate"]["ContainerSpec"]["StopGracePeriod"],
            20_000_000_000_i64
        );
        assert_eq!(big["UpdateConfig"]["Parallelism"], 2);

        let mut partial = json!({"TaskTemplate": {"RestartPolicy": {"Condition": "none"}},
            "UpdateConfig": {"Parallelism": 0, "Monitor": null}});
        insert_defaults(&mut partial);
        assert_eq!(
            partial["TaskTemplate"]["RestartPolicy"]["Condition"],
            "none"
        );
        assert_eq!(
            partial["TaskTemplate"]["RestartPolicy"]["Delay"],
            5_000_000_000_i64
        );
        assert_eq!(partial["UpdateConfig"]["Parallelism"], 0);
        assert_eq!(partial["UpdateConfig"]["Monitor"], 5_000_000_000_i64);
    }

    #[test]
    fn tasks_and_ports_render() {
        assert_eq!(
            task_spec_to_engine(&TaskSpec::default()),
            json!({"ContainerSpec": {}, "ForceUpdate": 0, "Runtime": "container"})
        );
        let spec = convert(&parse(BIG));
        let rendered = task_spec_to_engine(task(&spec));
        assert_eq!(rendered["ContainerSpec"]["Image"], "img:1");
        assert_eq!(rendered["Networks"], json!([{"Target": "<network ID>"}]));
        let ports = [PortConfig {
            name: "web".into(),
            protocol: String::new(),
            target_port: 80,
            published_port: 30001,
            publish_mode: PublishMode::Local as i32,
        }];
        assert_eq!(
            ports_to_engine(&ports),
            json!([{"Name": "web", "Protocol": "tcp", "TargetPort": 80,
                    "PublishedPort": 30001, "PublishMode": "local"}])
        );
        assert_eq!(ports_to_engine(&[]), json!([]));
    }

    #[test]
    fn failure_ratios_render_as_written() {
        assert_eq!(ratio(0.0), json!(0));
        assert_eq!(ratio(0.1), json!(0.1));
        assert_eq!(ratio(1.0), json!(1));
        assert_eq!(ratio(f32::NAN), Value::Null);
        assert_eq!(ratio(f32::INFINITY), Value::Null);
    }
}
