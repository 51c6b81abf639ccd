//! A model printed back as a compose file: long forms only, keys sorted, defaults left out,
//! durations as Go prints them, sizes in bytes, modes in octal, `$` escaped as `$$` (the
//! text is interpolated again when loaded).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_norway::{Mapping, Value};

use super::super::model::{
    Compose, Condition, DataDef, DataRef, Deploy, Healthcheck, Limits, Mode, MountKind, Network,
    Port, Service, UpdateConfig, Volume, VolumeMount,
};
use super::values::{format_cpus, format_duration};

/// A mapping under construction; its keys come out sorted.
#[derive(Default)]
struct Obj(BTreeMap<&'static str, Value>);

impl Obj {
    fn put(&mut self, k: &'static str, v: Value) {
        self.0.insert(k, v);
    }
    fn opt<T>(&mut self, k: &'static str, v: Option<T>, f: impl FnOnce(T) -> Value) {
        if let Some(v) = v {
            self.0.insert(k, f(v));
        }
    }
    fn flag(&mut self, k: &'static str, v: bool) {
        if v {
            self.0.insert(k, Value::Bool(true));
        }
    }
    fn list(&mut self, k: &'static str, v: &[String]) {
        if !v.is_empty() {
            self.0.insert(k, strings(v));
        }
    }
    fn map(&mut self, k: &'static str, v: &BTreeMap<String, String>) {
        if !v.is_empty() {
            self.0.insert(k, string_map(v));
        }
    }
    /// Only when it holds something.
    fn nested(&mut self, k: &'static str, o: Obj) {
        if !o.0.is_empty() {
            self.0.insert(k, o.value());
        }
    }
    fn value(self) -> Value {
        let mut m = Mapping::new();
        for (k, v) in self.0 {
            m.insert(Value::String(k.to_string()), v);
        }
        Value::Mapping(m)
    }
}

/// A string value, `$` escaped.
fn s(v: &str) -> Value {
    Value::String(v.replace('$', "$$"))
}

fn strings(v: &[String]) -> Value {
    Value::Sequence(v.iter().map(|x| s(x)).collect())
}

fn string_map(v: &BTreeMap<String, String>) -> Value {
    let mut m = Mapping::new();
    for (k, val) in v {
        m.insert(Value::String(k.clone()), s(val));
    }
    Value::Mapping(m)
}

fn keyed<T>(v: &BTreeMap<String, T>, f: impl Fn(&T) -> Value) -> Value {
    let mut m = Mapping::new();
    for (k, val) in v {
        m.insert(Value::String(k.clone()), f(val));
    }
    Value::Mapping(m)
}

fn dur(d: Duration) -> Value {
    Value::String(format_duration(d))
}

fn num<T: Into<serde_norway::Number>>(n: T) -> Value {
    Value::Number(n.into())
}

pub(super) fn to_yaml(c: &Compose) -> String {
    // The sections in docker's order; the keys inside them sorted.
    let mut top = Mapping::new();
    let mut section = |name: &str, v: Value, empty: bool| {
        if !empty {
            top.insert(Value::String(name.to_string()), v);
        }
    };
    section(
        "services",
        keyed(&c.services, service),
        c.services.is_empty(),
    );
    section(
        "networks",
        keyed(&c.networks, network),
        c.networks.is_empty(),
    );
    section("volumes", keyed(&c.volumes, volume), c.volumes.is_empty());
    section("secrets", keyed(&c.secrets, data_def), c.secrets.is_empty());
    section("configs", keyed(&c.configs, data_def), c.configs.is_empty());
    serde_norway::to_string(&Value::Mapping(top))
        .unwrap_or_else(|e| format!("# cannot print: {e}\n"))
}

fn service(sv: &Service) -> Value {
    let mut o = Obj::default();
    o.put("image", s(&sv.image));
    o.opt("entrypoint", sv.entrypoint.as_deref(), strings);
    o.opt("command", sv.command.as_deref(), strings);
    o.list("environment", &sv.environment);
    o.map("labels", &sv.labels);
    o.nested("deploy", deploy(&sv.deploy));
    if !sv.ports.is_empty() {
        o.put(
            "ports",
            Value::Sequence(sv.ports.iter().map(port).collect()),
        );
    }
    if !sv.networks.is_empty() {
        o.put(
            "networks",
            keyed(&sv.networks, |n| {
                let mut no = Obj::default();
                no.list("aliases", &n.aliases);
                no.value()
            }),
        );
    }
    if !sv.volumes.is_empty() {
        o.put(
            "volumes",
            Value::Sequence(sv.volumes.iter().map(mount).collect()),
        );
    }
    if !sv.secrets.is_empty() {
        o.put(
            "secrets",
            Value::Sequence(sv.secrets.iter().map(data_ref).collect()),
        );
    }
    if !sv.configs.is_empty() {
        o.put(
            "configs",
            Value::Sequence(sv.configs.iter().map(data_ref).collect()),
        );
    }
    o.opt("healthcheck", sv.healthcheck.as_ref(), healthcheck);
    o.opt("stop_grace_period", sv.stop_grace_period, dur);
    o.opt("stop_signal", sv.stop_signal.as_deref(), s);
    o.opt("user", sv.user.as_deref(), s);
    o.opt("working_dir", sv.working_dir.as_deref(), s);
    o.opt("hostname", sv.hostname.as_deref(), s);
    o.list("dns", &sv.dns);
    o.list("dns_search", &sv.dns_search);
    o.list("extra_hosts", &sv.extra_hosts);
    o.list("cap_add", &sv.cap_add);
    o.list("cap_drop", &sv.cap_drop);
    o.map("sysctls", &sv.sysctls);
    if !sv.ulimits.is_empty() {
        o.put(
            "ulimits",
            keyed(&sv.ulimits, |u| {
                let mut uo = Obj::default();
                uo.put("soft", num(u.soft));
                uo.put("hard", num(u.hard));
                uo.value()
            }),
        );
    }
    o.opt("init", sv.init, Value::Bool);
    o.flag("tty", sv.tty);
    o.flag("stdin_open", sv.stdin_open);
    o.flag("read_only", sv.read_only);
    o.opt("logging", sv.logging.as_ref(), |l| {
        let mut lo = Obj::default();
        lo.opt("driver", l.driver.as_deref(), s);
        lo.map("options", &l.options);
        lo.value()
    });
    if !sv.depends_on.is_empty() {
        o.put(
            "depends_on",
            keyed(&sv.depends_on, |c| {
                let mut co = Obj::default();
                co.put(
                    "condition",
                    s(match c {
                        Condition::Started => "service_started",
                        Condition::Healthy => "service_healthy",
                        Condition::CompletedSuccessfully => "service_completed_successfully",
                    }),
                );
                co.value()
            }),
        );
    }
    o.opt("restart", sv.restart.as_deref(), s);
    o.value()
}

fn deploy(d: &Deploy) -> Obj {
    let mut o = Obj::default();
    match d.mode {
        Mode::Replicated => {}
        Mode::Global => o.put("mode", s("global")),
        Mode::ReplicatedJob => o.put("mode", s("replicated-job")),
        Mode::GlobalJob => o.put("mode", s("global-job")),
    }
    o.opt("replicas", d.replicas, num);
    o.map("labels", &d.labels);
    let mut pl = Obj::default();
    pl.list("constraints", &d.placement.constraints);
    if !d.placement.preferences.is_empty() {
        let prefs = d
            .placement
            .preferences
            .iter()
            .map(|p| {
                let mut po = Obj::default();
                po.put("spread", s(p));
                po.value()
            })
            .collect();
        pl.put("preferences", Value::Sequence(prefs));
    }
    pl.opt(
        "max_replicas_per_node",
        d.placement.max_replicas_per_node,
        num,
    );
    o.nested("placement", pl);
    let mut res = Obj::default();
    res.nested("limits", limits(&d.resources.limits));
    res.nested("reservations", limits(&d.resources.reservations));
    o.nested("resources", res);
    o.opt("restart_policy", d.restart_policy.as_ref(), |r| {
        let mut ro = Obj::default();
        ro.opt("condition", r.condition.as_deref(), s);
        ro.opt("delay", r.delay, dur);
        ro.opt("max_attempts", r.max_attempts, num);
        ro.opt("window", r.window, dur);
        ro.value()
    });
    o.opt("update_config", d.update_config.as_ref(), update_config);
    o.opt("rollback_config", d.rollback_config.as_ref(), update_config);
    o.opt("endpoint_mode", d.endpoint_mode.as_deref(), s);
    o
}

fn limits(l: &Limits) -> Obj {
    let mut o = Obj::default();
    o.opt("cpus", l.nano_cpus, |n| s(&format_cpus(n)));
    o.opt("memory", l.memory_bytes, num);
    o.opt("pids", l.pids, num);
    o
}

fn update_config(u: &UpdateConfig) -> Value {
    let mut o = Obj::default();
    o.put("parallelism", num(u.parallelism));
    o.opt("delay", u.delay, dur);
    o.opt("failure_action", u.failure_action.as_deref(), s);
    o.opt("monitor", u.monitor, dur);
    o.opt("max_failure_ratio", u.max_failure_ratio, |r| {
        // The shortest text that reads back as the same f32.
        num(r.to_string().parse::<f64>().unwrap_or(f64::from(r)))
    });
    o.opt("order", u.order.as_deref(), s);
    o.value()
}

fn port(p: &Port) -> Value {
    let mut o = Obj::default();
    o.put("target", num(p.target));
    o.opt("published", p.published, num);
    o.put("protocol", s(&p.protocol));
    o.put("mode", s(&p.mode));
    o.value()
}

fn mount(m: &VolumeMount) -> Value {
    let mut o = Obj::default();
    o.put(
        "type",
        s(match m.kind {
            MountKind::Volume => "volume",
            MountKind::Bind => "bind",
            MountKind::Tmpfs => "tmpfs",
        }),
    );
    o.opt("source", m.source.as_deref(), s);
    o.put("target", s(&m.target));
    o.flag("read_only", m.read_only);
    o.opt("tmpfs", m.tmpfs_size, |size| {
        let mut t = Obj::default();
        t.put("size", num(size));
        t.value()
    });
    o.value()
}

fn data_ref(r: &DataRef) -> Value {
    let mut o = Obj::default();
    o.put("source", s(&r.source));
    o.opt("target", r.target.as_deref(), s);
    o.opt("uid", r.uid.as_deref(), s);
    o.opt("gid", r.gid.as_deref(), s);
    o.opt("mode", r.mode, |m| Value::String(format!("0{m:o}")));
    o.value()
}

fn healthcheck(h: &Healthcheck) -> Value {
    let mut o = Obj::default();
    o.list("test", &h.test);
    o.opt("interval", h.interval, dur);
    o.opt("timeout", h.timeout, dur);
    o.opt("start_period", h.start_period, dur);
    o.opt("retries", h.retries, num);
    o.value()
}

fn network(n: &Network) -> Value {
    let mut o = Obj::default();
    o.opt("name", n.name.as_deref(), s);
    o.flag("external", n.external);
    o.opt("driver", n.driver.as_deref(), s);
    o.map("driver_opts", &n.driver_opts);
    o.flag("attachable", n.attachable);
    o.flag("internal", n.internal);
    o.map("labels", &n.labels);
    if let Some(subnet) = &n.subnet {
        let mut config = Obj::default();
        config.put("subnet", s(subnet));
        let mut ipam = Obj::default();
        ipam.put("config", Value::Sequence(vec![config.value()]));
        o.put("ipam", ipam.value());
    }
    o.value()
}

fn volume(v: &Volume) -> Value {
    let mut o = Obj::default();
    o.opt("name", v.name.as_deref(), s);
    o.flag("external", v.external);
    o.opt("driver", v.driver.as_deref(), s);
    o.map("driver_opts", &v.driver_opts);
    o.map("labels", &v.labels);
    o.value()
}

fn data_def(d: &DataDef) -> Value {
    let mut o = Obj::default();
    o.opt("file", d.file.as_ref(), |f| s(&f.to_string_lossy()));
    o.flag("external", d.external);
    o.opt("name", d.name.as_deref(), s);
    o.map("labels", &d.labels);
    o.opt("template_driver", d.template_driver.as_deref(), s);
    o.value()
}
