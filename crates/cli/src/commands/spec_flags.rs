//! The flags `service create` takes (docker's), and how they become a service spec.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use orch_api::pb::service_spec::Mode;
use orch_api::pb::{
    ContainerSpec, DataReference, EndpointSpec, FailureAction, GlobalJob, GlobalService,
    HealthConfig, Mount, NetworkAttachmentConfig, Placement, PlacementPreference, PortConfig,
    PublishMode, ReplicatedJob, ReplicatedService, ResourceLimits, ResourceRequirements,
    RestartCondition, RestartPolicy, ServiceSpec, TaskSpec, UpdateConfig, UpdateOrder,
};

use crate::output::parse_duration;

/// Options shared by `service create` and `service update`.
#[derive(Args, Debug, Default, Clone)]
pub struct SpecFlags {
    /// Service name
    #[arg(long)]
    pub name: Option<String>,
    /// Number of tasks
    #[arg(long, allow_negative_numbers = true)]
    pub replicas: Option<i64>,
    /// Service mode (replicated, global, replicated-job, global-job)
    #[arg(long)]
    pub mode: Option<String>,
    /// Number of job tasks to run concurrently (default equal to --replicas)
    #[arg(long, allow_negative_numbers = true)]
    pub max_concurrent: Option<i64>,
    /// Set environment variables
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Read in a file of environment variables
    #[arg(long)]
    pub env_file: Vec<String>,
    /// Service labels
    #[arg(short = 'l', long = "label")]
    pub label: Vec<String>,
    /// Container labels
    #[arg(long)]
    pub container_label: Vec<String>,
    /// Placement constraints
    #[arg(long)]
    pub constraint: Vec<String>,
    /// Add a placement preference (spread=node.labels.X)
    #[arg(long)]
    pub placement_pref: Vec<String>,
    /// Maximum number of tasks per node (default 0 = unlimited)
    #[arg(long, allow_negative_numbers = true)]
    pub replicas_max_per_node: Option<i64>,
    #[arg(long)]
    pub reserve_cpu: Option<String>,
    #[arg(long)]
    pub reserve_memory: Option<String>,
    #[arg(long)]
    pub limit_cpu: Option<String>,
    #[arg(long)]
    pub limit_memory: Option<String>,
    /// Restart when condition is met ("none", "on-failure", "any")
    #[arg(long)]
    pub restart_condition: Option<String>,
    #[arg(long)]
    pub restart_delay: Option<String>,
    #[arg(long, allow_negative_numbers = true)]
    pub restart_max_attempts: Option<i64>,
    #[arg(long)]
    pub restart_window: Option<String>,
    /// Time to wait before force killing a container
    #[arg(long)]
    pub stop_grace_period: Option<String>,
    #[arg(long)]
    pub stop_signal: Option<String>,
    #[arg(long, allow_negative_numbers = true)]
    pub update_parallelism: Option<i64>,
    #[arg(long)]
    pub update_delay: Option<String>,
    #[arg(long)]
    pub update_failure_action: Option<String>,
    #[arg(long)]
    pub update_monitor: Option<String>,
    #[arg(long, allow_negative_numbers = true)]
    pub update_max_failure_ratio: Option<f32>,
    #[arg(long)]
    pub update_order: Option<String>,
    #[arg(long, allow_negative_numbers = true)]
    pub rollback_parallelism: Option<i64>,
    #[arg(long)]
    pub rollback_delay: Option<String>,
    #[arg(long)]
    pub rollback_failure_action: Option<String>,
    #[arg(long)]
    pub rollback_monitor: Option<String>,
    #[arg(long, allow_negative_numbers = true)]
    pub rollback_max_failure_ratio: Option<f32>,
    #[arg(long)]
    pub rollback_order: Option<String>,
    /// Command to run to check health
    #[arg(long)]
    pub health_cmd: Option<String>,
    #[arg(long)]
    pub health_interval: Option<String>,
    #[arg(long, allow_negative_numbers = true)]
    pub health_retries: Option<i64>,
    #[arg(long)]
    pub health_start_period: Option<String>,
    #[arg(long)]
    pub health_timeout: Option<String>,
    /// Disable any container-specified HEALTHCHECK
    #[arg(long)]
    pub no_healthcheck: bool,
    /// Overwrite the default ENTRYPOINT of the image
    #[arg(long)]
    pub entrypoint: Option<String>,
    #[arg(short = 'w', long)]
    pub workdir: Option<String>,
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Container hostname
    #[arg(long)]
    pub hostname: Option<String>,
    /// Attach a filesystem mount to the service
    #[arg(long)]
    pub mount: Vec<String>,
    /// Publish a port as a node port
    #[arg(short = 'p', long)]
    pub publish: Vec<String>,
    /// Attach the service to a network: NAME, or name=NAME,alias=ALIAS[,alias=...]
    #[arg(long)]
    pub network: Vec<String>,
    /// Give the service a secret: NAME, or source=NAME,target=FILE,uid=0,gid=0,mode=0444
    #[arg(long)]
    pub secret: Vec<String>,
    /// Give the service a config: NAME, or source=NAME,target=/PATH,uid=0,gid=0,mode=0444
    #[arg(long)]
    pub config: Vec<String>,
    /// Endpoint mode (vip or dnsrr)
    #[arg(long)]
    pub endpoint_mode: Option<String>,
    /// Set custom DNS servers (after orch's own resolver on overlay networks)
    #[arg(long)]
    pub dns: Vec<String>,
    /// Set custom DNS search domains
    #[arg(long)]
    pub dns_search: Vec<String>,
    /// Add a custom host-to-IP mapping (HOST:IP); docker's `--host`, a name orch's global
    /// manager address already has
    #[arg(long = "add-host")]
    pub hosts: Vec<String>,
    /// Add Linux capabilities
    #[arg(long)]
    pub cap_add: Vec<String>,
    /// Drop Linux capabilities
    #[arg(long)]
    pub cap_drop: Vec<String>,
    /// Sysctl options (KEY=VALUE)
    #[arg(long)]
    pub sysctl: Vec<String>,
    /// Ulimit options (NAME=SOFT[:HARD])
    #[arg(long)]
    pub ulimit: Vec<String>,
    /// Use an init inside each service container to forward signals and reap processes
    #[arg(long)]
    pub init: bool,
    /// Allocate a pseudo-TTY
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Mount the container's root filesystem as read only
    #[arg(long)]
    pub read_only: bool,
    /// Logging driver for the service
    #[arg(long)]
    pub log_driver: Option<String>,
    /// Logging driver options (KEY=VALUE)
    #[arg(long)]
    pub log_opt: Vec<String>,
    /// Limit the number of processes (0 = no limit)
    #[arg(long)]
    pub limit_pids: Option<i64>,
}

/// `--ulimit nofile=1024:2048` (or `nofile=1024`: soft and hard alike).
pub fn parse_ulimit(s: &str) -> Result<orch_api::pb::Ulimit> {
    let (name, values) = s
        .split_once('=')
        .ok_or_else(|| anyhow!("invalid ulimit {s:?}: expected NAME=SOFT[:HARD]"))?;
    let number = |v: &str| {
        v.parse::<i64>()
            .map_err(|_| anyhow!("invalid ulimit {s:?}: {v:?} is not a number"))
    };
    let (soft, hard) = match values.split_once(':') {
        Some((soft, hard)) => (number(soft)?, number(hard)?),
        None => (number(values)?, number(values)?),
    };
    if name.is_empty() || soft > hard {
        bail!("invalid ulimit {s:?}: a name, and a soft limit not above the hard one");
    }
    Ok(orch_api::pb::Ulimit {
        name: name.to_string(),
        soft,
        hard,
    })
}

/// `--secret`/`--config`: `NAME`, or `source=NAME,target=T,uid=U,gid=G,mode=M` (docker's
/// syntax; `src` for `source`, mode in octal).
pub fn parse_data_ref(s: &str, what: &str) -> Result<DataReference> {
    let mut r = DataReference::default();
    if !s.contains('=') {
        r.name = s.to_string();
    } else {
        for field in s.split(',') {
            let (k, v) = field
                .split_once('=')
                .ok_or_else(|| anyhow!("invalid field '{field}' must be a key=value pair"))?;
            match k.trim().to_ascii_lowercase().as_str() {
                "source" | "src" => r.name = v.to_string(),
                "target" => r.target = v.to_string(),
                "uid" => r.uid = v.to_string(),
                "gid" => r.gid = v.to_string(),
                "mode" => {
                    r.mode = u32::from_str_radix(v, 8)
                        .ok()
                        .filter(|m| *m <= 0o7777)
                        .ok_or_else(|| {
                            anyhow!(
                            "invalid mode {v:?} for --{what}: must be an octal file mode like 0440"
                        )
                        })?
                }
                other => bail!("invalid field key '{other}' for --{what}"),
            }
        }
    }
    if r.name.is_empty() {
        bail!("invalid --{what} {s:?}: source is required");
    }
    for (id, field) in [(&r.uid, "uid"), (&r.gid, "gid")] {
        if !id.is_empty() && id.parse::<u32>().is_err() {
            bail!("invalid {field} {id:?} for --{what}: must be a number");
        }
    }
    Ok(r)
}

/// `--network` (and `--network-add`): `NAME`, or `name=NAME,alias=A[,alias=B]` (docker's
/// syntax; `target` for `name`). The name stays as typed: the manager resolves it to the
/// network's ID. Aliases are only checked for being there: the manager checks that they are
/// DNS labels.
pub fn parse_network(s: &str, flag: &str) -> Result<NetworkAttachmentConfig> {
    let mut n = NetworkAttachmentConfig::default();
    if !s.contains('=') {
        n.target = s.trim().to_string();
    } else {
        for field in s.split(',') {
            let (k, v) = field.split_once('=').ok_or_else(|| {
                anyhow!("invalid --{flag} {s:?}: field {field:?} must be a key=value pair")
            })?;
            match k.trim().to_ascii_lowercase().as_str() {
                "name" | "target" => n.target = v.trim().to_string(),
                "alias" => {
                    let alias = v.trim();
                    if alias.is_empty() {
                        bail!("invalid --{flag} {s:?}: an alias must not be empty");
                    }
                    if !n.aliases.iter().any(|a| a == alias) {
                        n.aliases.push(alias.to_string());
                    }
                }
                other => {
                    bail!("invalid --{flag} {s:?}: unknown key {other:?} (use name=NETWORK and alias=ALIAS)")
                }
            }
        }
    }
    if n.target.is_empty() {
        bail!("invalid --{flag} {s:?}: the network name must not be empty");
    }
    Ok(n)
}

/// `--endpoint-mode`: `vip` or `dnsrr`.
pub fn parse_endpoint_mode(s: &str) -> Result<String> {
    match s {
        "vip" | "dnsrr" => Ok(s.to_string()),
        other => {
            bail!("invalid argument {other:?} for \"--endpoint-mode\" flag: must be vip or dnsrr")
        }
    }
}

/// Adds a reference; two on the same target are refused (docker's message).
pub fn add_data_ref(refs: &mut Vec<DataReference>, what: &str, r: DataReference) -> Result<()> {
    let target = |r: &DataReference| {
        if r.target.is_empty() {
            r.name.clone()
        } else {
            r.target.clone()
        }
    };
    if refs.iter().any(|x| target(x) == target(&r)) {
        bail!("duplicate {what} target for {} not allowed", r.name);
    }
    refs.push(r);
    Ok(())
}

/// `512m`, `1g`, `100MiB`, `2048` (bytes), as docker's RAMInBytes.
pub fn parse_bytes(s: &str) -> Result<i64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| anyhow!("invalid size {s:?}"))?;
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit.trim_end_matches('b').trim_end_matches('i');
    let scale: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024.0f64.powi(4),
        _ => bail!("invalid size {s:?}: use a number with an optional unit (b, k, m, g, t)"),
    };
    if value < 0.0 {
        bail!("invalid size {s:?}: must not be negative");
    }
    Ok((value * scale) as i64)
}

/// `0.5` CPUs → nano-CPUs.
pub fn parse_cpus(s: &str) -> Result<i64> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| anyhow!("invalid CPU value {s:?}: use a decimal number like 0.5"))?;
    if !(0.0..=1e6).contains(&v) {
        bail!("invalid CPU value {s:?}");
    }
    Ok((v * 1e9).round() as i64)
}

fn nanos(s: &str, flag: &str) -> Result<i64> {
    let d = parse_duration(s)
        .with_context(|| format!("invalid argument {s:?} for \"--{flag}\" flag"))?;
    Ok(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

fn non_negative(v: i64, flag: &str) -> Result<u64> {
    u64::try_from(v)
        .map_err(|_| anyhow!("invalid argument \"{v}\" for \"--{flag}\" flag: must be 0 or more"))
}

pub fn parse_key_values(items: &[String]) -> Result<Vec<(String, String)>> {
    items
        .iter()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
            if k.is_empty() {
                bail!("invalid label {l:?}: the key must not be empty");
            }
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

/// `type=bind,source=/a,target=/b,readonly`
pub fn parse_mount(s: &str) -> Result<Mount> {
    let mut m = Mount {
        r#type: "volume".into(),
        ..Default::default()
    };
    for field in s.split(',') {
        let (k, v) = match field.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.trim())),
            None => (field.trim().to_ascii_lowercase(), None),
        };
        match (k.as_str(), v) {
            ("type", Some(v)) => m.r#type = v.to_string(),
            ("source" | "src", Some(v)) => m.source = v.to_string(),
            ("target" | "destination" | "dst", Some(v)) => m.target = v.to_string(),
            ("readonly" | "ro", None) => m.read_only = true,
            ("readonly" | "ro", Some(v)) => {
                m.read_only = match v {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => bail!("invalid mount {s:?}: readonly takes true or false"),
                }
            }
            ("tmpfs-size", Some(v)) => m.tmpfs_size_bytes = parse_bytes(v)?,
            _ => bail!("invalid mount {s:?}: unknown or incomplete field {field:?}"),
        }
    }
    if m.target.is_empty() {
        bail!("invalid mount {s:?}: target is required");
    }
    Ok(m)
}

/// `8080:80`, `8080:80/udp`, or `published=8080,target=80,mode=host,protocol=tcp`.
pub fn parse_publish(s: &str) -> Result<PortConfig> {
    let mut p = PortConfig {
        protocol: "tcp".into(),
        publish_mode: PublishMode::Ingress as i32,
        ..Default::default()
    };
    let port = |v: &str| -> Result<u32> {
        v.parse::<u32>()
            .ok()
            .filter(|p| (1..=65535).contains(p))
            .ok_or_else(|| anyhow!("invalid port {v:?} in {s:?}: ports are 1-65535"))
    };
    if s.contains('=') {
        for field in s.split(',') {
            let (k, v) = field
                .split_once('=')
                .ok_or_else(|| anyhow!("invalid publish {s:?}: expected key=value fields"))?;
            match k.trim() {
                "published" => p.published_port = port(v.trim())?,
                "target" => p.target_port = port(v.trim())?,
                "protocol" => p.protocol = v.trim().to_string(),
                "mode" => {
                    p.publish_mode = match v.trim() {
                        "host" => PublishMode::Host as i32,
                        "ingress" => PublishMode::Ingress as i32,
                        "local" => PublishMode::Local as i32,
                        other => bail!("invalid publish mode {other:?}: ingress, host or local"),
                    }
                }
                other => bail!("invalid publish {s:?}: unknown field {other:?}"),
            }
        }
    } else {
        let (ports, proto) = s.split_once('/').unwrap_or((s, "tcp"));
        p.protocol = proto.to_string();
        match ports.split_once(':') {
            Some((published, target)) => {
                p.published_port = port(published)?;
                p.target_port = port(target)?;
            }
            None => p.target_port = port(ports)?,
        }
    }
    if p.target_port == 0 {
        bail!("invalid publish {s:?}: no target port");
    }
    if !["tcp", "udp", "sctp"].contains(&p.protocol.as_str()) {
        bail!(
            "invalid protocol {:?} in {s:?}: tcp, udp or sctp",
            p.protocol
        );
    }
    Ok(p)
}

fn read_env_files(files: &[String]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for f in files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("cannot read env file {f}"))?;
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            if line.contains('=') {
                out.push(line.to_string());
            } else if let Ok(v) = std::env::var(line) {
                out.push(format!("{line}={v}"));
            }
        }
    }
    Ok(out)
}

fn parse_condition(s: &str) -> Result<i32> {
    Ok(match s {
        "any" => RestartCondition::Any,
        "on-failure" => RestartCondition::OnFailure,
        "none" => RestartCondition::None,
        other => bail!("invalid restart condition {other:?}: none, on-failure or any"),
    } as i32)
}

pub fn parse_failure_action(s: &str, flag: &str) -> Result<i32> {
    Ok(match s {
        "pause" => FailureAction::Pause,
        "continue" => FailureAction::Continue,
        "rollback" if flag.starts_with("update") => FailureAction::Rollback,
        other => bail!(
            "invalid argument {other:?} for \"--{flag}\" flag: must be pause or continue{}",
            if flag.starts_with("update") {
                " or rollback"
            } else {
                ""
            }
        ),
    } as i32)
}

fn parse_order(s: &str, flag: &str) -> Result<i32> {
    Ok(match s {
        "stop-first" => UpdateOrder::StopFirst,
        "start-first" => UpdateOrder::StartFirst,
        other => bail!(
            "invalid argument {other:?} for \"--{flag}\" flag: must be stop-first or start-first"
        ),
    } as i32)
}

#[allow(clippy::too_many_arguments)]
fn apply_update_config(
    config: &mut Option<UpdateConfig>,
    prefix: &str,
    parallelism: Option<i64>,
    delay: &Option<String>,
    action: &Option<String>,
    monitor: &Option<String>,
    ratio: Option<f32>,
    order: &Option<String>,
) -> Result<()> {
    if parallelism.is_none()
        && delay.is_none()
        && action.is_none()
        && monitor.is_none()
        && ratio.is_none()
        && order.is_none()
    {
        return Ok(());
    }
    let c = config.get_or_insert_with(orch_api::validate::default_update_config);
    if let Some(p) = parallelism {
        c.parallelism = non_negative(p, &format!("{prefix}-parallelism"))?;
    }
    if let Some(d) = delay {
        c.delay = nanos(d, &format!("{prefix}-delay"))?;
    }
    if let Some(a) = action {
        c.failure_action = parse_failure_action(a, &format!("{prefix}-failure-action"))?;
    }
    if let Some(m) = monitor {
        c.monitor = nanos(m, &format!("{prefix}-monitor"))?;
    }
    if let Some(r) = ratio {
        if !(0.0..=1.0).contains(&r) {
            bail!("invalid argument \"{r}\" for \"--{prefix}-max-failure-ratio\" flag: must be between 0 and 1");
        }
        c.max_failure_ratio = r;
    }
    if let Some(o) = order {
        c.order = parse_order(o, &format!("{prefix}-order"))?;
    }
    Ok(())
}

fn job_counts(flags: &SpecFlags) -> Result<(u64, u64)> {
    let total = flags
        .replicas
        .map(|r| non_negative(r, "replicas"))
        .transpose()?
        .unwrap_or(1);
    let concurrent = flags
        .max_concurrent
        .map(|m| non_negative(m, "max-concurrent"))
        .transpose()?
        .unwrap_or(total);
    Ok((concurrent, total))
}

/// A new service's spec from `service create` flags, image, command and args.
pub fn build_spec(flags: &SpecFlags, image: &str, args: &[String]) -> Result<ServiceSpec> {
    let networks = flags
        .network
        .iter()
        .map(|n| parse_network(n, "network"))
        .collect::<Result<Vec<_>>>()?;
    let mode_name = flags.mode.as_deref().unwrap_or("replicated");
    let mode = match mode_name {
        "replicated" => Mode::Replicated(ReplicatedService {
            replicas: flags
                .replicas
                .map(|r| non_negative(r, "replicas"))
                .transpose()?
                .unwrap_or(1),
        }),
        "global" => Mode::Global(GlobalService {}),
        "replicated-job" => {
            let (max_concurrent, total_completions) = job_counts(flags)?;
            Mode::ReplicatedJob(ReplicatedJob {
                max_concurrent,
                total_completions,
            })
        }
        "global-job" => Mode::GlobalJob(GlobalJob {}),
        other => bail!(
            "invalid service mode {other:?}: replicated, global, replicated-job or global-job"
        ),
    };
    if flags.replicas.is_some() && matches!(mode, Mode::Global(_) | Mode::GlobalJob(_)) {
        bail!("replicas can only be used with replicated or replicated-job mode");
    }
    if flags.max_concurrent.is_some() && !matches!(mode, Mode::ReplicatedJob(_)) {
        bail!("max-concurrent can only be used with replicated-job mode");
    }
    let mut spec = ServiceSpec {
        name: flags.name.clone().unwrap_or_default(),
        labels: parse_key_values(&flags.label)?.into_iter().collect(),
        task: Some(TaskSpec {
            container: Some(ContainerSpec {
                image: image.to_string(),
                args: args.to_vec(),
                ..Default::default()
            }),
            networks,
            ..Default::default()
        }),
        mode: Some(mode),
        ..Default::default()
    };
    apply(flags, &mut spec)?;
    Ok(spec)
}

/// Applies every flag that was given onto `spec` (create and update share this).
pub fn apply(flags: &SpecFlags, spec: &mut ServiceSpec) -> Result<()> {
    let task = spec.task.get_or_insert_with(TaskSpec::default);
    let c = task.container.get_or_insert_with(ContainerSpec::default);
    c.env.extend(read_env_files(&flags.env_file)?);
    c.env.extend(flags.env.iter().cloned());
    for (k, v) in parse_key_values(&flags.container_label)? {
        c.labels.insert(k, v);
    }
    if let Some(e) = &flags.entrypoint {
        c.command = e.split_whitespace().map(str::to_string).collect();
    }
    if let Some(w) = &flags.workdir {
        c.dir = w.clone();
    }
    if let Some(u) = &flags.user {
        c.user = u.clone();
    }
    if let Some(h) = &flags.hostname {
        c.hostname = h.clone();
    }
    if let Some(g) = &flags.stop_grace_period {
        c.stop_grace_period = nanos(g, "stop-grace-period")?;
        c.has_stop_grace_period = true;
    }
    if let Some(s) = &flags.stop_signal {
        c.stop_signal = s.clone();
    }
    for m in &flags.mount {
        c.mounts.push(parse_mount(m)?);
    }
    c.dns.extend(flags.dns.iter().cloned());
    c.dns_search.extend(flags.dns_search.iter().cloned());
    for h in &flags.hosts {
        // docker accepts host:ip and host=ip.
        let (host, ip) = h
            .split_once(['=', ':'])
            .filter(|(host, ip)| !host.is_empty() && ip.parse::<std::net::IpAddr>().is_ok())
            .ok_or_else(|| anyhow!("invalid --add-host {h:?}: expected HOST:IP"))?;
        c.hosts.push(format!("{host}:{ip}"));
    }
    c.cap_add.extend(flags.cap_add.iter().cloned());
    c.cap_drop.extend(flags.cap_drop.iter().cloned());
    for (k, v) in parse_key_values(&flags.sysctl)? {
        c.sysctls.insert(k, v);
    }
    for u in &flags.ulimit {
        let u = parse_ulimit(u)?;
        c.ulimits.retain(|o| o.name != u.name);
        c.ulimits.push(u);
    }
    if flags.init {
        c.init = Some(true);
    }
    c.tty |= flags.tty;
    c.read_only |= flags.read_only;
    if flags.log_driver.is_some() || !flags.log_opt.is_empty() {
        let l = c.log_driver.get_or_insert_with(Default::default);
        if let Some(d) = &flags.log_driver {
            l.name = d.clone();
        }
        for (k, v) in parse_key_values(&flags.log_opt)? {
            l.options.insert(k, v);
        }
    }
    for s in &flags.secret {
        add_data_ref(&mut c.secrets, "secret", parse_data_ref(s, "secret")?)?;
    }
    for s in &flags.config {
        add_data_ref(&mut c.configs, "config", parse_data_ref(s, "config")?)?;
    }
    if flags.no_healthcheck && flags.health_cmd.is_some() {
        bail!("--no-healthcheck conflicts with --health-* options");
    }
    if flags.no_healthcheck {
        c.healthcheck = Some(HealthConfig {
            test: vec!["NONE".into()],
            ..Default::default()
        });
    } else if flags.health_cmd.is_some()
        || flags.health_interval.is_some()
        || flags.health_retries.is_some()
        || flags.health_start_period.is_some()
        || flags.health_timeout.is_some()
    {
        let h = c.healthcheck.get_or_insert_with(HealthConfig::default);
        if let Some(cmd) = &flags.health_cmd {
            h.test = vec!["CMD-SHELL".into(), cmd.clone()];
        }
        if let Some(v) = &flags.health_interval {
            h.interval = nanos(v, "health-interval")?;
        }
        if let Some(v) = &flags.health_timeout {
            h.timeout = nanos(v, "health-timeout")?;
        }
        if let Some(v) = &flags.health_start_period {
            h.start_period = nanos(v, "health-start-period")?;
        }
        if let Some(r) = flags.health_retries {
            h.retries = i32::try_from(non_negative(r, "health-retries")?).unwrap_or(i32::MAX);
        }
    }
    if flags.reserve_cpu.is_some()
        || flags.reserve_memory.is_some()
        || flags.limit_cpu.is_some()
        || flags.limit_memory.is_some()
        || flags.limit_pids.is_some()
    {
        let r = task
            .resources
            .get_or_insert_with(ResourceRequirements::default);
        let reservations = r.reservations.get_or_insert_with(ResourceLimits::default);
        if let Some(v) = &flags.reserve_cpu {
            reservations.nano_cpus = parse_cpus(v)?;
        }
        if let Some(v) = &flags.reserve_memory {
            reservations.memory_bytes = parse_bytes(v)?;
        }
        let limits = r.limits.get_or_insert_with(ResourceLimits::default);
        if let Some(v) = &flags.limit_cpu {
            limits.nano_cpus = parse_cpus(v)?;
        }
        if let Some(v) = &flags.limit_memory {
            limits.memory_bytes = parse_bytes(v)?;
        }
        if let Some(n) = flags.limit_pids {
            limits.pids = i64::try_from(non_negative(n, "limit-pids")?).unwrap_or(i64::MAX);
        }
    }
    if flags.restart_condition.is_some()
        || flags.restart_delay.is_some()
        || flags.restart_max_attempts.is_some()
        || flags.restart_window.is_some()
    {
        let job = matches!(spec.mode, Some(Mode::ReplicatedJob(_) | Mode::GlobalJob(_)));
        let r = task.restart.get_or_insert_with(|| RestartPolicy {
            condition: if job {
                RestartCondition::OnFailure
            } else {
                RestartCondition::Any
            } as i32,
            delay: i64::try_from(orch_api::validate::DEFAULT_RESTART_DELAY.as_nanos()).unwrap_or(0),
            max_attempts: 0,
            window: 0,
        });
        if let Some(v) = &flags.restart_condition {
            r.condition = parse_condition(v)?;
        }
        if let Some(v) = &flags.restart_delay {
            r.delay = nanos(v, "restart-delay")?;
        }
        if let Some(v) = flags.restart_max_attempts {
            r.max_attempts = non_negative(v, "restart-max-attempts")?;
        }
        if let Some(v) = &flags.restart_window {
            r.window = nanos(v, "restart-window")?;
        }
    }
    if !flags.constraint.is_empty()
        || !flags.placement_pref.is_empty()
        || flags.replicas_max_per_node.is_some()
    {
        let p = task.placement.get_or_insert_with(Placement::default);
        for c in &flags.constraint {
            orch_api::constraint::Constraint::parse(c)?;
            p.constraints.push(c.clone());
        }
        for pref in &flags.placement_pref {
            let descriptor = pref.strip_prefix("spread=").ok_or_else(|| {
                anyhow!("invalid placement preference {pref:?}: use spread=node.labels.<label>")
            })?;
            p.preferences.push(PlacementPreference {
                spread_descriptor: descriptor.to_string(),
            });
        }
        if let Some(m) = flags.replicas_max_per_node {
            p.max_replicas = non_negative(m, "replicas-max-per-node")?;
        }
    }
    apply_update_config(
        &mut spec.update,
        "update",
        flags.update_parallelism,
        &flags.update_delay,
        &flags.update_failure_action,
        &flags.update_monitor,
        flags.update_max_failure_ratio,
        &flags.update_order,
    )?;
    apply_update_config(
        &mut spec.rollback,
        "rollback",
        flags.rollback_parallelism,
        &flags.rollback_delay,
        &flags.rollback_failure_action,
        &flags.rollback_monitor,
        flags.rollback_max_failure_ratio,
        &flags.rollback_order,
    )?;
    if flags.endpoint_mode.is_some() || !flags.publish.is_empty() {
        let e = spec.endpoint.get_or_insert_with(EndpointSpec::default);
        if let Some(m) = &flags.endpoint_mode {
            e.mode = parse_endpoint_mode(m)?;
        }
        for p in &flags.publish {
            e.ports.push(parse_publish(p)?);
        }
    }
    Ok(())
}

/// Durations for `--timeout` (0 or absent: no limit).
pub fn timeout(s: &Option<String>) -> Result<Option<Duration>> {
    match s {
        None => Ok(None),
        Some(s) => {
            let d = parse_duration(s)?;
            Ok((d > Duration::ZERO).then_some(d))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_cpus_mounts_ports() {
        assert_eq!(parse_bytes("512m").ok(), Some(512 << 20));
        assert_eq!(parse_bytes("1g").ok(), Some(1 << 30));
        assert_eq!(parse_bytes("100MiB").ok(), Some(100 << 20));
        assert_eq!(parse_bytes("2048").ok(), Some(2048));
        assert!(parse_bytes("lots").is_err());
        assert_eq!(parse_cpus("0.5").ok(), Some(500_000_000));
        assert!(parse_cpus("-1").is_err());
        let m = parse_mount("type=bind,source=/tmp/a,target=/data,readonly").expect("mount");
        assert_eq!(
            (
                m.r#type.as_str(),
                m.source.as_str(),
                m.target.as_str(),
                m.read_only
            ),
            ("bind", "/tmp/a", "/data", true)
        );
        assert!(parse_mount("type=bind,source=/a").is_err());
        let p = parse_publish("published=8080,target=80,mode=host").expect("port");
        assert_eq!(
            (p.published_port, p.target_port, p.publish_mode),
            (8080, 80, PublishMode::Host as i32)
        );
        let p = parse_publish("8080:80/udp").expect("port");
        assert_eq!(
            (p.published_port, p.target_port, p.protocol.as_str()),
            (8080, 80, "udp")
        );
        assert!(parse_publish("99999:80").is_err());
        assert_eq!(
            parse_ulimit("nofile=1024:2048")
                .map(|u| (u.name, u.soft, u.hard))
                .ok(),
            Some(("nofile".to_string(), 1024, 2048))
        );
        assert_eq!(
            parse_ulimit("nproc=64").map(|u| (u.soft, u.hard)).ok(),
            Some((64, 64))
        );
        for bad in ["nofile", "nofile=a", "nofile=10:5", "=1"] {
            assert!(parse_ulimit(bad).is_err(), "{bad} should be refused");
        }
        let p = parse_publish("published=8080,target=80,mode=local").expect("local");
        assert_eq!(p.publish_mode, PublishMode::Local as i32);
        assert_eq!(
            parse_publish("80")
                .map(|p| (p.published_port, p.target_port))
                .ok(),
            Some((0, 80)),
            "no published port: the manager picks one"
        );
        for bad in [
            "0:80",
            "8080:0",
            "8080:65536",
            "8080:80/icmp",
            "published=8080,target=80,mode=mesh",
            "published=8080",
            "published=8080,target=80,proto=tcp",
        ] {
            assert!(parse_publish(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn create_flags_make_a_spec() {
        let flags = SpecFlags {
            name: Some("web".into()),
            replicas: Some(3),
            env: vec!["A=1".into()],
            constraint: vec!["node.role==worker".into()],
            restart_condition: Some("on-failure".into()),
            health_cmd: Some("true".into()),
            update_parallelism: Some(2),
            dns: vec!["10.9.9.9".into()],
            hosts: vec!["db=10.1.2.3".into()],
            cap_add: vec!["NET_ADMIN".into()],
            sysctl: vec!["net.core.somaxconn=1024".into()],
            ulimit: vec!["nofile=1024:2048".into()],
            init: true,
            read_only: true,
            log_driver: Some("json-file".into()),
            log_opt: vec!["max-size=10m".into()],
            limit_pids: Some(100),
            ..Default::default()
        };
        let spec = build_spec(&flags, "busybox", &["sleep".into(), "60".into()]).expect("spec");
        let c = spec
            .task
            .as_ref()
            .and_then(|t| t.container.clone())
            .expect("container");
        assert_eq!(c.dns, ["10.9.9.9"]);
        assert_eq!(c.hosts, ["db:10.1.2.3"]);
        assert_eq!(c.cap_add, ["NET_ADMIN"]);
        assert_eq!(
            c.sysctls.get("net.core.somaxconn").map(String::as_str),
            Some("1024")
        );
        assert_eq!(c.ulimits.len(), 1);
        assert_eq!((c.init, c.read_only), (Some(true), true));
        let log = c.log_driver.expect("log driver");
        assert_eq!(log.name, "json-file");
        assert_eq!(log.options.get("max-size").map(String::as_str), Some("10m"));
        assert_eq!(
            spec.task
                .as_ref()
                .and_then(|t| t.resources.as_ref())
                .and_then(|r| r.limits.as_ref())
                .map(|l| l.pids),
            Some(100)
        );
        assert_eq!(
            spec.mode,
            Some(Mode::Replicated(ReplicatedService { replicas: 3 }))
        );
        let task = spec.task.expect("task");
        let c = task.container.expect("container");
        assert_eq!(c.args, vec!["sleep", "60"]);
        assert_eq!(c.env, vec!["A=1"]);
        assert_eq!(
            c.healthcheck.expect("health").test,
            vec!["CMD-SHELL", "true"]
        );
        assert_eq!(
            task.restart.expect("restart").condition,
            RestartCondition::OnFailure as i32
        );
        assert_eq!(spec.update.expect("update").parallelism, 2);
    }

    #[test]
    fn bad_flags_are_refused() {
        let global_with_replicas = SpecFlags {
            mode: Some("global".into()),
            replicas: Some(2),
            ..Default::default()
        };
        assert!(build_spec(&global_with_replicas, "busybox", &[]).is_err());
        let negative = SpecFlags {
            replicas: Some(-1),
            ..Default::default()
        };
        assert!(build_spec(&negative, "busybox", &[]).is_err());
        let bad_constraint = SpecFlags {
            constraint: vec!["node.color==red".into()],
            ..Default::default()
        };
        assert!(build_spec(&bad_constraint, "busybox", &[]).is_err());
        let bad_action = SpecFlags {
            update_failure_action: Some("explode".into()),
            ..Default::default()
        };
        assert!(build_spec(&bad_action, "busybox", &[]).is_err());
        let bad_ratio = SpecFlags {
            update_max_failure_ratio: Some(1.5),
            ..Default::default()
        };
        assert!(build_spec(&bad_ratio, "busybox", &[]).is_err());
        let bad_parallelism = SpecFlags {
            update_parallelism: Some(-1),
            ..Default::default()
        };
        assert!(build_spec(&bad_parallelism, "busybox", &[]).is_err());
    }

    #[test]
    fn network_flags_parse() {
        // (case, --network value, Ok((target, aliases)) or Err(words the message must hold))
        type Expected = std::result::Result<(&'static str, Vec<&'static str>), Vec<&'static str>>;
        let cases: Vec<(&str, &str, Expected)> = vec![
            ("short form", "front", Ok(("front", vec![]))),
            ("short form by ID", "4f2a9c", Ok(("4f2a9c", vec![]))),
            (
                "long form with aliases",
                "name=front,alias=web,alias=www",
                Ok(("front", vec!["web", "www"])),
            ),
            (
                "target is name's synonym",
                "target=front,alias=web",
                Ok(("front", vec!["web"])),
            ),
            (
                "keys are case-insensitive",
                "Name=front,ALIAS=web",
                Ok(("front", vec!["web"])),
            ),
            (
                "a repeated alias counts once",
                "name=front,alias=a,alias=a",
                Ok(("front", vec!["a"])),
            ),
            (
                "unknown key",
                "name=front,ip=10.0.1.9",
                Err(vec!["--network", "unknown key \"ip\""]),
            ),
            (
                "field without a value",
                "name=front,alias",
                Err(vec!["--network", "key=value"]),
            ),
            (
                "empty short form",
                "",
                Err(vec!["--network", "name must not be empty"]),
            ),
            (
                "empty name",
                "name=,alias=web",
                Err(vec!["--network", "name must not be empty"]),
            ),
            (
                "alias without a name",
                "alias=web",
                Err(vec!["--network", "name must not be empty"]),
            ),
            (
                "empty alias",
                "name=front,alias=",
                Err(vec!["--network", "alias must not be empty"]),
            ),
        ];
        for (case, value, expected) in cases {
            let got = parse_network(value, "network");
            match (got, expected) {
                (Ok(n), Ok((target, aliases))) => {
                    assert_eq!(n.target, target, "{case}");
                    assert_eq!(n.aliases, aliases, "{case}");
                }
                (Err(e), Err(words)) => {
                    let msg = e.to_string();
                    for w in words {
                        assert!(msg.contains(w), "{case}: {msg:?} should contain {w:?}");
                    }
                }
                (got, expected) => panic!("{case}: got {got:?}, expected {expected:?}"),
            }
        }
    }

    #[test]
    fn create_attaches_networks_and_sets_the_endpoint_mode() {
        let flags = SpecFlags {
            network: vec!["front".into(), "name=back,alias=db".into()],
            endpoint_mode: Some("dnsrr".into()),
            ..Default::default()
        };
        let spec = build_spec(&flags, "busybox", &[]).expect("spec");
        let networks = spec.task.expect("task").networks;
        assert_eq!(
            networks,
            vec![
                NetworkAttachmentConfig {
                    target: "front".into(),
                    aliases: vec![],
                },
                NetworkAttachmentConfig {
                    target: "back".into(),
                    aliases: vec!["db".into()],
                },
            ]
        );
        assert_eq!(spec.endpoint.expect("endpoint").mode, "dnsrr");
        // No --network: no attachments, and no endpoint spec (the manager defaults to vip).
        let spec = build_spec(&SpecFlags::default(), "busybox", &[]).expect("spec");
        assert!(spec.task.expect("task").networks.is_empty());
        assert!(spec.endpoint.is_none());
    }

    #[test]
    fn bad_network_and_endpoint_flags_are_refused() {
        // (case, flags, words the message must hold)
        let cases = [
            (
                "bad key",
                SpecFlags {
                    network: vec!["name=front,driver=overlay".into()],
                    ..Default::default()
                },
                vec!["--network", "driver"],
            ),
            (
                "empty name",
                SpecFlags {
                    network: vec!["name=".into()],
                    ..Default::default()
                },
                vec!["--network", "empty"],
            ),
            (
                "unknown endpoint mode",
                SpecFlags {
                    endpoint_mode: Some("round-robin".into()),
                    ..Default::default()
                },
                vec!["--endpoint-mode", "vip or dnsrr"],
            ),
        ];
        for (case, flags, words) in cases {
            let msg = build_spec(&flags, "busybox", &[])
                .map(|_| ())
                .expect_err(case)
                .to_string();
            for w in words {
                assert!(msg.contains(w), "{case}: {msg:?} should contain {w:?}");
            }
        }
    }
}
