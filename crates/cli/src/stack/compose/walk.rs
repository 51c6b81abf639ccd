//! The merged value turned into the typed model: a hand-written walker, lenient with strings
//! where numbers or booleans are expected (they come from interpolation), that records every
//! key it does not use by path instead of failing, then the checks between sections
//! (undefined networks, volumes, secrets, configs, services; dependency cycles).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_norway::{Mapping, Value};

use super::super::model::{
    Compose, Condition, DataDef, DataRef, Deploy, Healthcheck, Limits, Logging, Mode, MountKind,
    Network, Placement, Port, Resources, RestartPolicy, Service, ServiceNetwork, Ulimit,
    UpdateConfig, Volume, VolumeMount,
};
use super::values::{
    err, index, join, key_text, kind, opt_bool, opt_bytes, opt_duration, opt_f32, opt_i64,
    opt_mode, opt_nano_cpus, opt_u64, parse_short_port, port_number, protocol, scalar, string_list,
    text, R,
};
use super::{clean_path, Env};

/// Service keys docker warns about as deprecated.
const DEPRECATED: &[&str] = &["container_name", "expose"];

pub(super) struct Walker<'a> {
    env: &'a Env,
    dir: &'a Path,
    /// Paths of the keys dropped (docker's unsupported ones and any other unknown key).
    pub unsupported: Vec<String>,
    /// Paths of the deprecated keys dropped.
    pub deprecated: Vec<String>,
    /// Other warnings (a host IP dropped from a port).
    pub warnings: Vec<String>,
    /// `depends_on` entries marked `required: false`, by service: they may name services
    /// that are not there.
    pub optional_deps: BTreeMap<String, BTreeSet<String>>,
}

/// A mapping's entries with their keys as text; null is an empty mapping.
fn entries<'v>(path: &str, v: &'v Value) -> R<Vec<(String, &'v Value)>> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Mapping(m) => m.iter().map(|(k, v)| Ok((key_text(path, k)?, v))).collect(),
        other => Err(err(path, format!("must be a mapping, not {}", kind(other)))),
    }
}

/// A list's items; null is an empty list.
fn list<'v>(path: &str, v: &'v Value) -> R<&'v [Value]> {
    match v {
        Value::Sequence(items) => Ok(items),
        Value::Null => Ok(&[]),
        other => Err(err(path, format!("must be a list, not {}", kind(other)))),
    }
}

/// A free-form `KEY: value` mapping or a `["KEY=value"]` list (labels, sysctls, options);
/// values are stringified, a missing one is "".
fn string_map(path: &str, v: &Value) -> R<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    match v {
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                let s = text(&index(path, i), item)?;
                let (k, val) = s.split_once('=').unwrap_or((&s, ""));
                out.insert(k.to_string(), val.to_string());
            }
        }
        other => {
            for (k, val) in entries(path, other)? {
                let val = scalar(&join(path, &k), val)?.unwrap_or_default();
                out.insert(k, val);
            }
        }
    }
    Ok(out)
}

/// `external: true` or the deprecated `external: {name: x}`: (external, the name given).
fn external(path: &str, v: &Value) -> R<(bool, Option<String>)> {
    match v {
        Value::Mapping(_) => {
            let mut name = None;
            for (k, val) in entries(path, v)? {
                match k.as_str() {
                    "name" => name = scalar(&join(path, &k), val)?,
                    _ if k.starts_with("x-") => {}
                    _ => return Err(err(&join(path, &k), "unknown key in external")),
                }
            }
            Ok((true, name))
        }
        other => Ok((opt_bool(path, other)?.unwrap_or(false), None)),
    }
}

/// `name:` and the deprecated `external: {name:}` (not both).
fn external_name(
    path: &str,
    what: &str,
    name: Option<String>,
    ext_name: Option<String>,
) -> R<Option<String>> {
    match (name, ext_name) {
        (Some(_), Some(_)) => Err(err(
            path,
            format!("{what}.external.name and {what}.name conflict; only use {what}.name"),
        )),
        (name, ext) => Ok(name.or(ext)),
    }
}

impl<'a> Walker<'a> {
    pub(super) fn new(env: &'a Env, dir: &'a Path) -> Self {
        Walker {
            env,
            dir,
            unsupported: Vec::new(),
            deprecated: Vec::new(),
            warnings: Vec::new(),
            optional_deps: BTreeMap::new(),
        }
    }

    /// A key this walker does not use: `x-` extensions silently, others recorded.
    fn unknown(&mut self, path: &str, key: &str) {
        if !key.starts_with("x-") {
            self.unsupported.push(join(path, key));
        }
    }

    pub(super) fn compose(&mut self, root: &Mapping) -> R<Compose> {
        let mut c = Compose::default();
        let mut services = None;
        for (k, v) in root {
            let key = key_text("", k)?;
            match key.as_str() {
                "version" => {}
                "services" => services = Some(v),
                "networks" => {
                    for (name, def) in entries("networks", v)? {
                        let n = self.network(&join("networks", &name), def)?;
                        c.networks.insert(name, n);
                    }
                }
                "volumes" => {
                    for (name, def) in entries("volumes", v)? {
                        let n = self.volume(&name, &join("volumes", &name), def)?;
                        c.volumes.insert(name, n);
                    }
                }
                "secrets" | "configs" => {
                    let what = if key == "secrets" { "secret" } else { "config" };
                    for (name, def) in entries(&key, v)? {
                        let d = self.data_def(what, &name, &join(&key, &name), def)?;
                        if key == "secrets" {
                            c.secrets.insert(name, d);
                        } else {
                            c.configs.insert(name, d);
                        }
                    }
                }
                _ => self.unknown("", &key),
            }
        }
        if let Some(v) = services {
            for (name, def) in entries("services", v)? {
                if name.starts_with("x-") {
                    continue;
                }
                let s = self.service(&name, &join("services", &name), def)?;
                c.services.insert(name, s);
            }
        }
        Ok(c)
    }

    fn network(&mut self, path: &str, v: &Value) -> R<Network> {
        let mut n = Network::default();
        let mut ext_name = None;
        for (k, val) in entries(path, v)? {
            let p = join(path, &k);
            match k.as_str() {
                "name" => n.name = scalar(&p, val)?,
                "external" => (n.external, ext_name) = external(&p, val)?,
                "driver" => n.driver = scalar(&p, val)?,
                "driver_opts" => n.driver_opts = string_map(&p, val)?,
                "attachable" => n.attachable = opt_bool(&p, val)?.unwrap_or(false),
                "internal" => n.internal = opt_bool(&p, val)?.unwrap_or(false),
                "labels" => n.labels = string_map(&p, val)?,
                "ipam" => n.subnet = self.ipam(&p, val)?,
                _ => self.unknown(path, &k),
            }
        }
        n.name = external_name(path, "network", n.name, ext_name)?;
        Ok(n)
    }

    fn ipam(&mut self, path: &str, v: &Value) -> R<Option<String>> {
        let mut subnet = None;
        for (k, val) in entries(path, v)? {
            let p = join(path, &k);
            match k.as_str() {
                "config" => {
                    let items = list(&p, val)?;
                    for (i, item) in items.iter().enumerate() {
                        let ip = index(&p, i);
                        for (ck, cv) in entries(&ip, item)? {
                            match ck.as_str() {
                                "subnet" if i == 0 => subnet = scalar(&join(&ip, &ck), cv)?,
                                _ => self.unknown(&ip, &ck),
                            }
                        }
                    }
                }
                _ => self.unknown(path, &k),
            }
        }
        Ok(subnet)
    }

    fn volume(&mut self, name: &str, path: &str, v: &Value) -> R<Volume> {
        let mut vol = Volume::default();
        let mut ext_name = None;
        for (k, val) in entries(path, v)? {
            let p = join(path, &k);
            match k.as_str() {
                "name" => vol.name = scalar(&p, val)?,
                "external" => (vol.external, ext_name) = external(&p, val)?,
                "driver" => vol.driver = scalar(&p, val)?,
                "driver_opts" => vol.driver_opts = string_map(&p, val)?,
                "labels" => vol.labels = string_map(&p, val)?,
                _ => self.unknown(path, &k),
            }
        }
        vol.name = external_name(path, "volume", vol.name, ext_name)?;
        if vol.external {
            let conflict = if vol.driver.is_some() {
                Some("driver")
            } else if !vol.driver_opts.is_empty() {
                Some("driver_opts")
            } else if !vol.labels.is_empty() {
                Some("labels")
            } else {
                None
            };
            if let Some(c) = conflict {
                return Err(err(
                    path,
                    format!("conflicting parameters \"external\" and {c:?} specified for volume {name:?}"),
                ));
            }
        }
        Ok(vol)
    }

    fn data_def(&mut self, what: &str, name: &str, path: &str, v: &Value) -> R<DataDef> {
        let mut d = DataDef::default();
        let mut ext_name = None;
        for (k, val) in entries(path, v)? {
            let p = join(path, &k);
            match k.as_str() {
                "file" => {
                    d.file = match scalar(&p, val)? {
                        Some(f) => Some(self.host_path(&p, &f)?),
                        None => None,
                    }
                }
                "external" => (d.external, ext_name) = external(&p, val)?,
                "name" => d.name = scalar(&p, val)?,
                "labels" => d.labels = string_map(&p, val)?,
                "template_driver" => d.template_driver = scalar(&p, val)?,
                _ => self.unknown(path, &k),
            }
        }
        d.name = external_name(path, what, d.name, ext_name)?;
        match (d.external, &d.file) {
            (false, None) => Err(err(
                path,
                format!("{what} {name:?} must have a file or be external"),
            )),
            (true, Some(_)) => Err(err(
                path,
                format!("conflicting parameters \"external\" and \"file\" specified for {what} {name:?}"),
            )),
            _ => Ok(d),
        }
    }

    /// A host path made absolute: `~` from HOME, relative ones against the first file's
    /// directory.
    fn host_path(&self, path: &str, p: &str) -> R<PathBuf> {
        let expanded = if p == "~" || p.starts_with("~/") {
            let home = self
                .env
                .shell("HOME")
                .ok_or_else(|| err(path, format!("cannot expand {p:?}: HOME is not set")))?;
            PathBuf::from(home).join(p.trim_start_matches('~').trim_start_matches('/'))
        } else {
            PathBuf::from(p)
        };
        Ok(clean_path(&self.dir.join(expanded)))
    }

    fn service(&mut self, name: &str, path: &str, v: &Value) -> R<Service> {
        let mut s = Service::default();
        let mut environment: Vec<(String, Option<String>)> = Vec::new();
        let mut env_files: Vec<(String, PathBuf, bool)> = Vec::new();
        for (k, val) in entries(path, v)? {
            let p = join(path, &k);
            match k.as_str() {
                "image" => s.image = scalar(&p, val)?.unwrap_or_default(),
                "entrypoint" => s.entrypoint = command(&p, val)?,
                "command" => s.command = command(&p, val)?,
                "environment" => environment = env_entries(&p, val)?,
                "env_file" => env_files = self.env_files(&p, val)?,
                "labels" => s.labels = string_map(&p, val)?,
                "deploy" => s.deploy = self.deploy(&p, val)?,
                "ports" => s.ports = self.ports(&p, val)?,
                "networks" => s.networks = self.service_networks(&p, val)?,
                "volumes" => s.volumes = self.mounts(&p, val)?,
                "secrets" => s.secrets = self.data_refs(&p, val)?,
                "configs" => s.configs = self.data_refs(&p, val)?,
                "healthcheck" => s.healthcheck = self.healthcheck(&p, val)?,
                "stop_grace_period" => s.stop_grace_period = opt_duration(&p, val)?,
                "stop_signal" => s.stop_signal = scalar(&p, val)?,
                "user" => s.user = scalar(&p, val)?,
                "working_dir" => s.working_dir = scalar(&p, val)?,
                "hostname" => s.hostname = scalar(&p, val)?,
                "dns" => s.dns = string_list(&p, val)?,
                "dns_search" => s.dns_search = string_list(&p, val)?,
                "extra_hosts" => s.extra_hosts = extra_hosts(&p, val)?,
                "cap_add" => s.cap_add = string_list(&p, val)?,
                "cap_drop" => s.cap_drop = string_list(&p, val)?,
                "sysctls" => s.sysctls = string_map(&p, val)?,
                "ulimits" => s.ulimits = ulimits(&p, val)?,
                "init" => s.init = opt_bool(&p, val)?,
                "tty" => s.tty = opt_bool(&p, val)?.unwrap_or(false),
                "stdin_open" => s.stdin_open = opt_bool(&p, val)?.unwrap_or(false),
                "read_only" => s.read_only = opt_bool(&p, val)?.unwrap_or(false),
                "logging" => s.logging = self.logging(&p, val)?,
                "depends_on" => s.depends_on = self.depends_on(name, &p, val)?,
                "restart" => s.restart = restart(&p, val)?,
                _ if DEPRECATED.contains(&k.as_str()) => self.deprecated.push(p),
                _ => self.unknown(path, &k),
            }
        }
        s.environment = self.fold_environment(env_files, environment)?;
        if s.image.trim().is_empty() {
            return Err(err(
                "",
                format!("invalid image reference for service {name}: no image specified"),
            ));
        }
        Ok(s)
    }

    fn env_files(&mut self, path: &str, v: &Value) -> R<Vec<(String, PathBuf, bool)>> {
        let items: Vec<&Value> = match v {
            Value::Sequence(items) => items.iter().collect(),
            Value::Null => Vec::new(),
            other => vec![other],
        };
        let mut out = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let ip = if matches!(v, Value::Sequence(_)) {
                index(path, i)
            } else {
                path.to_string()
            };
            let (file, required) = match item {
                Value::Mapping(_) => {
                    let mut file = None;
                    let mut required = true;
                    for (k, val) in entries(&ip, item)? {
                        let p = join(&ip, &k);
                        match k.as_str() {
                            "path" => file = scalar(&p, val)?,
                            "required" => required = opt_bool(&p, val)?.unwrap_or(true),
                            _ => self.unknown(&ip, &k),
                        }
                    }
                    let file = file.ok_or_else(|| err(&ip, "path is required"))?;
                    (file, required)
                }
                other => (text(&ip, other)?, true),
            };
            let resolved = self.host_path(&ip, &file)?;
            out.push((ip, resolved, required));
        }
        Ok(out)
    }

    /// `env_file`s first (in order), then `environment`; a bare `KEY` takes the shell's value
    /// (an `env_file`'s bare key is dropped when the shell has none, as docker does).
    fn fold_environment(
        &self,
        env_files: Vec<(String, PathBuf, bool)>,
        environment: Vec<(String, Option<String>)>,
    ) -> R<Vec<String>> {
        let mut vars: BTreeMap<String, Option<String>> = BTreeMap::new();
        for (p, file, required) in env_files {
            let content = match std::fs::read_to_string(&file) {
                Ok(c) => c,
                Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(err(
                        &p,
                        format!("couldn't read env file {}: {e}", file.display()),
                    ))
                }
            };
            for (n, raw) in content.lines().enumerate() {
                let line = raw.trim_start();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let (key, value) = match line.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (line.trim_end().to_string(), None),
                };
                if key.is_empty() || key.chars().any(char::is_whitespace) {
                    return Err(err(
                        &p,
                        format!(
                            "{}:{}: variable {key:?} contains whitespaces",
                            file.display(),
                            n + 1
                        ),
                    ));
                }
                match value {
                    Some(v) => {
                        vars.insert(key, Some(v));
                    }
                    None => {
                        if let Some(v) = self.env.shell(&key) {
                            vars.insert(key, Some(v.to_string()));
                        }
                    }
                }
            }
        }
        for (key, value) in environment {
            let value = value.or_else(|| self.env.shell(&key).map(str::to_string));
            vars.insert(key, value);
        }
        Ok(vars
            .into_iter()
            .map(|(k, v)| match v {
                Some(v) => format!("{k}={v}"),
                None => k,
            })
            .collect())
    }

    fn deploy(&mut self, path: &str, v: &Value) -> R<Deploy> {
        let mut d = Deploy::default();
        for (k, val) in entries(path, v)? {
            let p = join(path, &k);
            match k.as_str() {
                "mode" => {
                    if let Some(m) = scalar(&p, val)? {
                        d.mode = match m.as_str() {
                            "replicated" => Mode::Replicated,
                            "global" => Mode::Global,
                            "replicated-job" => Mode::ReplicatedJob,
                            "global-job" => Mode::GlobalJob,
                            _ => return Err(err(&p, format!("unknown mode: {m}"))),
                        };
                    }
                }
                "replicas" => d.replicas = opt_u64(&p, val)?,
                "labels" => d.labels = string_map(&p, val)?,
                "placement" => d.placement = self.placement(&p, val)?,
                "resources" => d.resources = self.resources(&p, val)?,
                "restart_policy" => d.restart_policy = self.restart_policy(&p, val)?,
                "update_config" => d.update_config = self.update_config(&p, val)?,
                "rollback_config" => d.rollback_config = self.update_config(&p, val)?,
                "endpoint_mode" => {
                    if let Some(m) = scalar(&p, val)? {
                        let m = m.to_ascii_lowercase();
                        if m != "vip" && m != "dnsrr" {
                            return Err(err(&p, format!("unknown endpoint mode: {m}")));
                        }
                        d.endpoint_mode = Some(m);
                    }
                }
                _ => self.unknown(path, &k),
            }
        }
        if d.replicas.is_some() && matches!(d.mode, Mode::Global | Mode::GlobalJob) {
            return Err(err(
                &join(path, "replicas"),
                "replicas can only be used with replicated or replicated-job mode",
            ));
        }
        Ok(d)
    }

    fn placement(&mut self, path: &str, v: &Value) -> R<Placement> {
        let mut pl = Placement::default();
        for (k, val) in entries(path, v)? {
            let p = join(path, &k);
            match k.as_str() {
                "constraints" => pl.constraints = string_list(&p, val)?,
                "preferences" => {
                    let items = list(&p, val)?;
                    for (i, item) in items.iter().enumerate() {
                        let ip = index(&p, i);
                        for (pk, pv) in entries(&ip, item)? {
                            match pk.as_str() {
                                "spread" => pl.preferences.push(text(&join(&ip, &pk), pv)?),
                                _ => self.unknown(&ip, &pk),
                            }
                        }
                    }
                }
                "max_replicas_per_node" => pl.max_replicas_per_node = opt_u64(&p, val)?,
                _ => self.unknown(path, &k),
            }
        }
        Ok(pl)
    }

    fn resources(&mut self, path: &str, v: &Value) -> R<Resources> {
        let mut r = Resources::default();
        for (k, val) in entries(path, v)? {
            let p = join(path, &k);
            match k.as_str() {
                "limits" => r.limits = self.limits(&p, val, true)?,
                "reservations" => r.reservations = self.limits(&p, val, false)?,
                _ => self.unknown(path, &k),
            }
        }
        Ok(r)
    }

    fn limits(&mut self, path: &str, v: &Value, pids: bool) -> R<Limits> {
        let mut l = Limits::default();
        for (k, val) in entries(path, v)? {
            let p = join(path, &k);
            match k.as_str() {
                "cpus" => l.nano_cpus = opt_nano_cpus(&p, val)?,
                "memory" => l.memory_bytes = opt_bytes(&p, val)?,
                "pids" if pids => l.pids = opt_i64(&p, val)?,
                _ => self.unknown(path, &k),
            }
        }
        Ok(l)
    }

    fn restart_policy(&mut self, path: &str, v: &Value) -> R<Option<RestartPolicy>> {
        if v.is_null() {
            return Ok(None);
        }
        let mut r = RestartPolicy::default();
        for (k, val) in entries(path, v)? {
            let p = join(path, &k);
            match k.as_str() {
                "condition" => {
                    r.condition =
                        one_of(&p, val, &["none", "on-failure", "any"], "restart condition")?
                }
                "delay" => r.delay = opt_duration(&p, val)?,
                "max_attempts" => r.max_attempts = opt_u64(&p, val)?,
                "window" => r.window = opt_duration(&p, val)?,
                _ => self.unknown(path, &k),
            }
        }
        Ok(Some(r))
    }

    fn update_config(&mut self, path: &str, v: &Value) -> R<Option<UpdateConfig>> {
        if v.is_null() {
            return Ok(None);
        }
        let mut u = UpdateConfig {
            parallelism: 1,
            ..UpdateConfig::default()
        };
        for (k, val) in entries(path, v)? {
            let p = join(path, &k);
            match k.as_str() {
                "parallelism" => u.parallelism = opt_u64(&p, val)?.unwrap_or(1),
                "delay" => u.delay = opt_duration(&p, val)?,
                "failure_action" => {
                    u.failure_action = one_of(
                        &p,
                        val,
                        &["pause", "continue", "rollback"],
                        "failure action",
                    )?
                }
                "monitor" => u.monitor = opt_duration(&p, val)?,
                "max_failure_ratio" => u.max_failure_ratio = opt_f32(&p, val)?,
                "order" => u.order = one_of(&p, val, &["stop-first", "start-first"], "order")?,
                _ => self.unknown(path, &k),
            }
        }
        Ok(Some(u))
    }

    fn ports(&mut self, path: &str, v: &Value) -> R<Vec<Port>> {
        let items = list(path, v)?;
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let ip = index(path, i);
            match item {
                Value::String(_) | Value::Number(_) => {
                    let spec = text(&ip, item)?;
                    for sp in parse_short_port(&spec).map_err(|m| err(&ip, m))? {
                        if let Some(host) = &sp.host_ip {
                            self.host_ip_warning(&ip, host);
                        }
                        out.push(Port {
                            target: sp.target,
                            published: sp.published,
                            protocol: sp.protocol,
                            mode: "ingress".to_string(),
                        });
                    }
                }
                Value::Mapping(_) => out.push(self.long_port(&ip, item)?),
                other => {
                    return Err(err(
                        &ip,
                        format!("must be a string or a mapping, not {}", kind(other)),
                    ))
                }
            }
        }
        out.sort_by(|a, b| {
            (a.published.unwrap_or(0), a.target, &a.protocol, &a.mode).cmp(&(
                b.published.unwrap_or(0),
                b.target,
                &b.protocol,
                &b.mode,
            ))
        });
        out.dedup();
        Ok(out)
    }

    fn host_ip_warning(&mut self, path: &str, host: &str) {
        self.warnings.push(format!(
            "{path}: ignoring IP-address {host}: the service will listen on all addresses (0.0.0.0)"
        ));
    }

    fn long_port(&mut self, path: &str, v: &Value) -> R<Port> {
        let mut target = None;
        let mut port = Port {
            protocol: "tcp".to_string(),
            mode: "ingress".to_string(),
            ..Port::default()
        };
        for (k, val) in entries(path, v)? {
            let p = join(path, &k);
            match k.as_str() {
                "target" => {
                    target = match scalar(&p, val)? {
                        Some(t) => Some(port_number(&t, &t).map_err(|m| err(&p, m))?),
                        None => None,
                    }
                }
                "published" => {
                    port.published = match scalar(&p, val)? {
                        Some(t) => Some(port_number(&t, &t).map_err(|m| err(&p, m))?),
                        None => None,
                    }
                }
                "protocol" => {
                    if let Some(pr) = scalar(&p, val)? {
                        port.protocol = protocol(&pr).map_err(|m| err(&p, m))?;
                    }
                }
                "mode" => {
                    if let Some(m) = one_of(&p, val, &["ingress", "host", "local"], "port mode")? {
                        port.mode = m;
                    }
                }
                "host_ip" => {
                    if let Some(host) = scalar(&p, val)? {
                        if !host.is_empty() {
                            self.host_ip_warning(path, &host);
                        }
                    }
                }
                _ => self.unknown(path, &k),
            }
        }
        port.target = target.ok_or_else(|| err(path, "target is required"))?;
        Ok(port)
    }

    fn service_networks(&mut self, path: &str, v: &Value) -> R<BTreeMap<String, ServiceNetwork>> {
        let mut out = BTreeMap::new();
        match v {
            Value::Sequence(items) => {
                for (i, item) in items.iter().enumerate() {
                    out.insert(text(&index(path, i), item)?, ServiceNetwork::default());
                }
            }
            other => {
                for (name, def) in entries(path, other)? {
                    let np = join(path, &name);
                    let mut sn = ServiceNetwork::default();
                    for (k, val) in entries(&np, def)? {
                        match k.as_str() {
                            "aliases" => sn.aliases = string_list(&join(&np, &k), val)?,
                            _ => self.unknown(&np, &k),
                        }
                    }
                    out.insert(name, sn);
                }
            }
        }
        Ok(out)
    }

    fn mounts(&mut self, path: &str, v: &Value) -> R<Vec<VolumeMount>> {
        let items = list(path, v)?;
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let ip = index(path, i);
            let m = match item {
                Value::Mapping(_) => self.long_mount(&ip, item)?,
                other => {
                    let spec = text(&ip, other)?;
                    self.short_mount(&ip, &spec)?
                }
            };
            if !m.target.starts_with('/') {
                return Err(err(
                    &ip,
                    format!(
                        "invalid mount target {:?}: must be an absolute path",
                        m.target
                    ),
                ));
            }
            out.push(m);
        }
        Ok(out)
    }

    /// `src:dst[:opts]`, `dst`; a source starting with `.`, `/` or `~` is a bind.
    fn short_mount(&mut self, path: &str, spec: &str) -> R<VolumeMount> {
        let parts: Vec<&str> = spec.split(':').collect();
        let (source, target, opts) = match parts.as_slice() {
            [t] => (None, *t, ""),
            [s, t] => (Some(*s), *t, ""),
            [s, t, o] => (Some(*s), *t, *o),
            _ => {
                return Err(err(
                    path,
                    format!("invalid volume spec {spec:?}: too many colons"),
                ))
            }
        };
        if target.is_empty() || source.is_some_and(str::is_empty) {
            return Err(err(path, format!("invalid volume spec {spec:?}")));
        }
        let mut m = VolumeMount {
            target: target.to_string(),
            ..VolumeMount::default()
        };
        // Unknown options (`z`, `Z`, `nocopy`, `cached`, propagation) are ignored, as docker does.
        for o in opts.split(',') {
            match o {
                "ro" => m.read_only = true,
                "rw" => m.read_only = false,
                _ => {}
            }
        }
        if let Some(src) = source {
            if src.starts_with(['.', '/', '~']) {
                m.kind = MountKind::Bind;
                m.source = Some(self.host_path(path, src)?.to_string_lossy().into_owned());
            } else {
                m.source = Some(src.to_string());
            }
        }
        Ok(m)
    }

    fn long_mount(&mut self, path: &str, v: &Value) -> R<VolumeMount> {
        let mut m = VolumeMount::default();
        let mut tmpfs_given = false;
        let mut target = None;
        for (k, val) in entries(path, v)? {
            let p = join(path, &k);
            match k.as_str() {
                "type" => {
                    if let Some(t) = scalar(&p, val)? {
                        m.kind = match t.as_str() {
                            "volume" => MountKind::Volume,
                            "bind" => MountKind::Bind,
                            "tmpfs" => MountKind::Tmpfs,
                            _ => {
                                return Err(err(
                                    &p,
                                    format!(
                                    "unsupported mount type {t:?}: must be volume, bind or tmpfs"
                                ),
                                ))
                            }
                        };
                    }
                }
                "source" => m.source = scalar(&p, val)?.filter(|s| !s.is_empty()),
                "target" => target = scalar(&p, val)?,
                "read_only" => m.read_only = opt_bool(&p, val)?.unwrap_or(false),
                "tmpfs" => {
                    for (tk, tv) in entries(&p, val)? {
                        tmpfs_given = true;
                        match tk.as_str() {
                            "size" => m.tmpfs_size = opt_bytes(&join(&p, &tk), tv)?,
                            _ => self.unknown(&p, &tk),
                        }
                    }
                }
                _ => self.unknown(path, &k),
            }
        }
        m.target = target
            .filter(|t| !t.is_empty())
            .ok_or_else(|| err(path, "target is required"))?;
        match m.kind {
            MountKind::Bind => {
                let src = m
                    .source
                    .take()
                    .ok_or_else(|| err(path, "a bind mount needs a source"))?;
                m.source = Some(self.host_path(path, &src)?.to_string_lossy().into_owned());
            }
            MountKind::Tmpfs => {
                if m.source.is_some() {
                    return Err(err(path, "a tmpfs mount takes no source"));
                }
            }
            MountKind::Volume => {}
        }
        if tmpfs_given && m.kind != MountKind::Tmpfs {
            return Err(err(
                &join(path, "tmpfs"),
                "tmpfs options are only for type tmpfs",
            ));
        }
        Ok(m)
    }

    fn data_refs(&mut self, path: &str, v: &Value) -> R<Vec<DataRef>> {
        let items = list(path, v)?;
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let ip = index(path, i);
            let r = match item {
                Value::Mapping(_) => {
                    let mut r = DataRef::default();
                    let mut source = None;
                    for (k, val) in entries(&ip, item)? {
                        let p = join(&ip, &k);
                        match k.as_str() {
                            "source" => source = scalar(&p, val)?,
                            "target" => r.target = scalar(&p, val)?,
                            "uid" => r.uid = scalar(&p, val)?,
                            "gid" => r.gid = scalar(&p, val)?,
                            "mode" => r.mode = opt_mode(&p, val)?,
                            _ => self.unknown(&ip, &k),
                        }
                    }
                    r.source = source
                        .filter(|s| !s.is_empty())
                        .ok_or_else(|| err(&ip, "source is required"))?;
                    r
                }
                other => DataRef {
                    source: text(&ip, other)?,
                    ..DataRef::default()
                },
            };
            out.push(r);
        }
        out.sort_by(|a, b| (&a.source, &a.target).cmp(&(&b.source, &b.target)));
        Ok(out)
    }

    fn healthcheck(&mut self, path: &str, v: &Value) -> R<Option<Healthcheck>> {
        if v.is_null() {
            return Ok(None);
        }
        let mut h = Healthcheck::default();
        let mut disable = false;
        for (k, val) in entries(path, v)? {
            let p = join(path, &k);
            match k.as_str() {
                "test" => {
                    h.test = match val {
                        Value::Sequence(_) => string_list(&p, val)?,
                        Value::Null => Vec::new(),
                        other => vec!["CMD-SHELL".to_string(), text(&p, other)?],
                    }
                }
                "interval" => h.interval = opt_duration(&p, val)?,
                "timeout" => h.timeout = opt_duration(&p, val)?,
                "start_period" => h.start_period = opt_duration(&p, val)?,
                "retries" => h.retries = opt_u64(&p, val)?,
                "disable" => disable = opt_bool(&p, val)?.unwrap_or(false),
                _ => self.unknown(path, &k),
            }
        }
        if disable {
            if !h.test.is_empty() {
                return Err(err(path, "test and disable can't be set at the same time"));
            }
            h.test = vec!["NONE".to_string()];
        }
        Ok(Some(h))
    }

    fn logging(&mut self, path: &str, v: &Value) -> R<Option<Logging>> {
        if v.is_null() {
            return Ok(None);
        }
        let mut l = Logging::default();
        for (k, val) in entries(path, v)? {
            let p = join(path, &k);
            match k.as_str() {
                "driver" => l.driver = scalar(&p, val)?,
                "options" => l.options = string_map(&p, val)?,
                _ => self.unknown(path, &k),
            }
        }
        Ok(Some(l))
    }

    fn depends_on(
        &mut self,
        service: &str,
        path: &str,
        v: &Value,
    ) -> R<BTreeMap<String, Condition>> {
        let mut out = BTreeMap::new();
        match v {
            Value::Sequence(items) => {
                for (i, item) in items.iter().enumerate() {
                    out.insert(text(&index(path, i), item)?, Condition::Started);
                }
            }
            other => {
                for (name, def) in entries(path, other)? {
                    let np = join(path, &name);
                    let mut cond = Condition::Started;
                    for (k, val) in entries(&np, def)? {
                        let p = join(&np, &k);
                        match k.as_str() {
                            "condition" => {
                                cond = match scalar(&p, val)?.as_deref() {
                                    None | Some("service_started") => Condition::Started,
                                    Some("service_healthy") => Condition::Healthy,
                                    Some("service_completed_successfully") => {
                                        Condition::CompletedSuccessfully
                                    }
                                    Some(c) => {
                                        return Err(err(&p, format!("unknown condition {c:?}: must be service_started, service_healthy or service_completed_successfully")))
                                    }
                                }
                            }
                            "required" => {
                                if opt_bool(&p, val)? == Some(false) {
                                    self.optional_deps
                                        .entry(service.to_string())
                                        .or_default()
                                        .insert(name.clone());
                                }
                            }
                            // compose's "restart the dependent when the dependency restarts"
                            "restart" => {
                                opt_bool(&p, val)?;
                            }
                            _ => self.unknown(&np, &k),
                        }
                    }
                    out.insert(name, cond);
                }
            }
        }
        Ok(out)
    }
}

/// A string or a list as a command line.
fn command(path: &str, v: &Value) -> R<Option<Vec<String>>> {
    match v {
        Value::Null => Ok(None),
        Value::Sequence(_) => string_list(path, v).map(Some),
        other => {
            let s = text(path, other)?;
            shlex::split(&s)
                .map(Some)
                .ok_or_else(|| err(path, format!("cannot split {s:?}: unbalanced quotes")))
        }
    }
}

/// `environment` entries in order: (key, value), None for a bare `KEY`.
fn env_entries(path: &str, v: &Value) -> R<Vec<(String, Option<String>)>> {
    let mut out = Vec::new();
    match v {
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                let s = text(&index(path, i), item)?;
                match s.split_once('=') {
                    Some((k, val)) => out.push((k.to_string(), Some(val.to_string()))),
                    None => out.push((s, None)),
                }
            }
        }
        other => {
            for (k, val) in entries(path, other)? {
                let val = scalar(&join(path, &k), val)?;
                out.push((k, val));
            }
        }
    }
    for (i, (k, _)) in out.iter().enumerate() {
        if k.is_empty() || k.chars().any(char::is_whitespace) {
            return Err(err(&index(path, i), format!("invalid variable name {k:?}")));
        }
    }
    Ok(out)
}

/// `host:ip`, `host=ip` or a `host: ip` mapping, as `host:ip` (IPv6 brackets stripped).
fn extra_hosts(path: &str, v: &Value) -> R<Vec<String>> {
    let mut pairs = Vec::new();
    match v {
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                let ip = index(path, i);
                let s = text(&ip, item)?;
                let (h, addr) = s
                    .split_once('=')
                    .or_else(|| s.split_once(':'))
                    .ok_or_else(|| err(&ip, format!("invalid extra host {s:?}: want host:ip")))?;
                pairs.push((h.to_string(), addr.to_string()));
            }
        }
        other => {
            for (h, addr) in entries(path, other)? {
                let addr = text(&join(path, &h), addr)?;
                pairs.push((h, addr));
            }
        }
    }
    pairs
        .into_iter()
        .enumerate()
        .map(|(i, (h, addr))| {
            let addr = addr.trim();
            let addr = addr
                .strip_prefix('[')
                .and_then(|a| a.strip_suffix(']'))
                .unwrap_or(addr);
            if h.trim().is_empty() || addr.is_empty() {
                return Err(err(&index(path, i), format!("invalid extra host {h:?}")));
            }
            Ok(format!("{}:{addr}", h.trim()))
        })
        .collect()
}

fn ulimits(path: &str, v: &Value) -> R<BTreeMap<String, Ulimit>> {
    let mut out = BTreeMap::new();
    for (name, val) in entries(path, v)? {
        let p = join(path, &name);
        let u = match val {
            Value::Mapping(_) => {
                let (mut soft, mut hard) = (None, None);
                for (k, lv) in entries(&p, val)? {
                    match k.as_str() {
                        "soft" => soft = opt_i64(&join(&p, &k), lv)?,
                        "hard" => hard = opt_i64(&join(&p, &k), lv)?,
                        _ if k.starts_with("x-") => {}
                        _ => return Err(err(&join(&p, &k), "unknown key: want soft and hard")),
                    }
                }
                match (soft, hard) {
                    (Some(soft), Some(hard)) => Ulimit { soft, hard },
                    _ => return Err(err(&p, "soft and hard are both required")),
                }
            }
            other => {
                let n = opt_i64(&p, other)?.ok_or_else(|| err(&p, "a limit is required"))?;
                Ulimit { soft: n, hard: n }
            }
        };
        out.insert(name, u);
    }
    Ok(out)
}

/// `no`, `always`, `on-failure[:N]`, `unless-stopped` (a YAML `false` is `no`).
fn restart(path: &str, v: &Value) -> R<Option<String>> {
    let Some(r) = scalar(path, v)? else {
        return Ok(None);
    };
    let r = if r == "false" { "no".to_string() } else { r };
    let ok = match r.split_once(':') {
        Some(("on-failure", n)) => n.parse::<u64>().is_ok(),
        Some(_) => false,
        None => matches!(
            r.as_str(),
            "no" | "always" | "on-failure" | "unless-stopped"
        ),
    };
    if !ok {
        return Err(err(path, format!("unknown restart policy: {r}")));
    }
    Ok(Some(r))
}

/// A string that must be one of `allowed`.
fn one_of(path: &str, v: &Value, allowed: &[&str], what: &str) -> R<Option<String>> {
    match scalar(path, v)? {
        None => Ok(None),
        Some(s) if allowed.contains(&s.as_str()) => Ok(Some(s)),
        Some(s) => Err(err(
            path,
            format!(
                "unknown {what} {s:?}: must be one of {}",
                allowed.join(", ")
            ),
        )),
    }
}

/// The references between sections, then dependency cycles.
pub(super) fn check_references(
    c: &Compose,
    optional: &BTreeMap<String, BTreeSet<String>>,
) -> R<()> {
    for (name, s) in &c.services {
        let path = join("services", name);
        for net in s.networks.keys() {
            if net != "default" && !c.networks.contains_key(net) {
                return Err(err(
                    &join(&path, "networks"),
                    format!("undefined network {net:?}"),
                ));
            }
        }
        for m in &s.volumes {
            if let (MountKind::Volume, Some(src)) = (m.kind, &m.source) {
                if !c.volumes.contains_key(src) {
                    return Err(err(
                        &join(&path, "volumes"),
                        format!("undefined volume {src:?}"),
                    ));
                }
            }
        }
        for r in &s.secrets {
            if !c.secrets.contains_key(&r.source) {
                return Err(err(
                    &join(&path, "secrets"),
                    format!("undefined secret {:?}", r.source),
                ));
            }
        }
        for r in &s.configs {
            if !c.configs.contains_key(&r.source) {
                return Err(err(
                    &join(&path, "configs"),
                    format!("undefined config {:?}", r.source),
                ));
            }
        }
        for dep in s.depends_on.keys() {
            let optional = optional.get(name).is_some_and(|o| o.contains(dep));
            if !c.services.contains_key(dep) && !optional {
                return Err(err(
                    &join(&path, "depends_on"),
                    format!("service {name:?} depends on undefined service {dep:?}"),
                ));
            }
        }
    }
    check_cycles(c)
}

fn check_cycles(c: &Compose) -> R<()> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let mut marks: BTreeMap<&str, Mark> =
        c.services.keys().map(|k| (k.as_str(), Mark::New)).collect();
    // Iterative depth-first search: (service, its dependencies still to visit).
    for start in c.services.keys() {
        if marks.get(start.as_str()) != Some(&Mark::New) {
            continue;
        }
        let mut stack: Vec<(&str, Vec<&str>)> = Vec::new();
        let deps = |n: &str| -> Vec<&str> {
            c.services
                .get(n)
                .map(|s| s.depends_on.keys().rev().map(String::as_str).collect())
                .unwrap_or_default()
        };
        marks.insert(start, Mark::Open);
        stack.push((start, deps(start)));
        while let Some((node, todo)) = stack.last_mut() {
            let node = *node;
            let Some(next) = todo.pop() else {
                marks.insert(node, Mark::Done);
                stack.pop();
                continue;
            };
            match marks.get(next).copied() {
                Some(Mark::New) => {
                    marks.insert(next, Mark::Open);
                    stack.push((next, deps(next)));
                }
                Some(Mark::Open) => {
                    let from = stack.iter().position(|(n, _)| *n == next).unwrap_or(0);
                    let mut cycle: Vec<&str> = stack[from..].iter().map(|(n, _)| *n).collect();
                    cycle.push(next);
                    return Err(err(
                        &join(&join("services", next), "depends_on"),
                        format!("dependency cycle: {}", cycle.join(" -> ")),
                    ));
                }
                // Done, or an (optional) service that is not there.
                _ => {}
            }
        }
    }
    Ok(())
}
