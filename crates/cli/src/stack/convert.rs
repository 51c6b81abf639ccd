//! A stack's objects from the model: names (`<stack>_<key>` unless a `name:` or an external
//! object says otherwise), the namespace label on everything, and each service's spec as
//! `service create` would send it.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Result};
use orch_api::pb::service_spec::Mode as PbMode;
use orch_api::pb::{
    ContainerSpec, DataReference, EndpointSpec, FailureAction, GlobalJob, GlobalService,
    HealthConfig, LogDriver, Mount, NetworkAttachmentConfig, NetworkSpec, Placement,
    PlacementPreference, PortConfig, PublishMode, ReplicatedJob, ReplicatedService, ResourceLimits,
    ResourceRequirements, RestartCondition, RestartPolicy, ServiceSpec, TaskSpec, Ulimit,
    UpdateConfig, UpdateOrder,
};

use super::model::{self, Compose, DataDef, Mode, MountKind};

/// The label that makes an object part of a stack (docker's).
pub const NAMESPACE: &str = "com.docker.stack.namespace";
/// The image as the stack file wrote it (docker's).
pub const IMAGE_LABEL: &str = "com.docker.stack.image";

/// Stack names become the prefix of service names, so they follow service names' rule.
pub fn check_stack_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 50
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric());
    if !ok {
        bail!(
            "invalid stack name {name:?}: use letters, digits, '-' and '_', starting with a letter or digit"
        );
    }
    Ok(())
}

/// `<stack>_<key>`.
pub fn scoped(stack: &str, key: &str) -> String {
    format!("{stack}_{key}")
}

/// The name a top-level network takes in the cluster.
pub fn network_name(stack: &str, key: &str, n: Option<&model::Network>) -> String {
    match n.and_then(|n| n.name.clone()) {
        Some(name) => name,
        None => scoped(stack, key),
    }
}

/// The name a top-level secret or config takes in the cluster.
pub fn data_name(stack: &str, key: &str, d: &DataDef) -> String {
    d.name.clone().unwrap_or_else(|| scoped(stack, key))
}

fn with_namespace(stack: &str, labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut out = labels.clone();
    out.insert(NAMESPACE.into(), stack.into());
    out
}

/// The networks each service joins, by their key: those it names, or `default`.
pub fn service_networks(s: &model::Service) -> Vec<(String, Vec<String>)> {
    if s.networks.is_empty() {
        return vec![("default".to_string(), Vec::new())];
    }
    s.networks
        .iter()
        .map(|(k, n)| (k.clone(), n.aliases.clone()))
        .collect()
}

/// The spec of a network the stack creates.
pub fn network_spec(stack: &str, key: &str, n: Option<&model::Network>) -> NetworkSpec {
    let default = model::Network::default();
    let n = n.unwrap_or(&default);
    NetworkSpec {
        name: network_name(stack, key, Some(n)),
        labels: with_namespace(stack, &n.labels).into_iter().collect(),
        driver: n.driver.clone().unwrap_or_else(|| "overlay".into()),
        subnet: n.subnet.clone().unwrap_or_default(),
        internal: n.internal,
        attachable: n.attachable,
        options: n.driver_opts.clone().into_iter().collect(),
        ..Default::default()
    }
}

fn nanos(d: Option<Duration>) -> i64 {
    d.map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

fn update_config(c: &model::UpdateConfig) -> Result<UpdateConfig> {
    let mut out = orch_api::validate::default_update_config();
    out.parallelism = c.parallelism;
    if c.delay.is_some() {
        out.delay = nanos(c.delay);
    }
    if c.monitor.is_some() {
        out.monitor = nanos(c.monitor);
    }
    if let Some(r) = c.max_failure_ratio {
        out.max_failure_ratio = r;
    }
    if let Some(a) = &c.failure_action {
        out.failure_action = match a.as_str() {
            "pause" => FailureAction::Pause,
            "continue" => FailureAction::Continue,
            "rollback" => FailureAction::Rollback,
            other => bail!("invalid failure_action {other:?}: pause, continue or rollback"),
        } as i32;
    }
    if let Some(o) = &c.order {
        out.order = match o.as_str() {
            "stop-first" => UpdateOrder::StopFirst,
            "start-first" => UpdateOrder::StartFirst,
            other => bail!("invalid order {other:?}: stop-first or start-first"),
        } as i32;
    }
    Ok(out)
}

/// `deploy.restart_policy`, or docker's fallback from the service's `restart`.
fn restart_policy(s: &model::Service) -> Result<Option<RestartPolicy>> {
    if let Some(p) = &s.deploy.restart_policy {
        let condition = match p.condition.as_deref() {
            None | Some("any") => RestartCondition::Any,
            Some("on-failure") => RestartCondition::OnFailure,
            Some("none") => RestartCondition::None,
            Some(other) => bail!("invalid restart_policy condition {other:?}"),
        };
        return Ok(Some(RestartPolicy {
            condition: condition as i32,
            delay: p.delay.map_or(5_000_000_000, |d| nanos(Some(d))),
            max_attempts: p.max_attempts.unwrap_or(0),
            window: nanos(p.window),
        }));
    }
    let Some(r) = s.restart.as_deref() else {
        return Ok(None);
    };
    let (condition, attempts) = match r.split_once(':') {
        Some(("on-failure", n)) => (
            RestartCondition::OnFailure,
            n.parse::<u64>()
                .map_err(|_| anyhow::anyhow!("invalid restart policy {r:?}"))?,
        ),
        _ => match r {
            "always" | "unless-stopped" | "no" => (RestartCondition::Any, 0),
            "on-failure" => (RestartCondition::OnFailure, 0),
            other => bail!("invalid restart policy {other:?}"),
        },
    };
    Ok(Some(RestartPolicy {
        condition: condition as i32,
        delay: 5_000_000_000,
        max_attempts: attempts,
        window: 0,
    }))
}

fn limits(l: &model::Limits) -> Option<ResourceLimits> {
    let out = ResourceLimits {
        nano_cpus: l.nano_cpus.unwrap_or(0),
        memory_bytes: l.memory_bytes.unwrap_or(0),
        pids: l.pids.unwrap_or(0),
    };
    (out != ResourceLimits::default()).then_some(out)
}

fn data_refs(
    stack: &str,
    refs: &[model::DataRef],
    defs: &BTreeMap<String, DataDef>,
) -> Vec<DataReference> {
    refs.iter()
        .map(|r| {
            let name = defs.get(&r.source).map_or_else(
                || scoped(stack, &r.source),
                |d| data_name(stack, &r.source, d),
            );
            DataReference {
                name,
                target: r.target.clone().unwrap_or_else(|| r.source.clone()),
                uid: r.uid.clone().unwrap_or_else(|| "0".into()),
                gid: r.gid.clone().unwrap_or_else(|| "0".into()),
                mode: r.mode.unwrap_or(0o444),
                ..Default::default()
            }
        })
        .collect()
}

fn mounts(stack: &str, s: &model::Service, c: &Compose) -> Vec<Mount> {
    s.volumes
        .iter()
        .map(|v| {
            let (kind, source) = match v.kind {
                MountKind::Bind => ("bind", v.source.clone().unwrap_or_default()),
                MountKind::Tmpfs => ("tmpfs", String::new()),
                MountKind::Volume => (
                    "volume",
                    v.source.as_ref().map_or_else(String::new, |key| {
                        match c.volumes.get(key).and_then(|vol| vol.name.clone()) {
                            Some(name) => name,
                            None => scoped(stack, key),
                        }
                    }),
                ),
            };
            Mount {
                r#type: kind.into(),
                source,
                target: v.target.clone(),
                read_only: v.read_only,
                tmpfs_size_bytes: v.tmpfs_size.unwrap_or(0),
            }
        })
        .collect()
}

/// The spec of service `key`. `current_replicas` is the scale the service has now, kept when
/// the file does not say (`None` for a new service: 1).
pub fn service_spec(
    stack: &str,
    key: &str,
    c: &Compose,
    current_replicas: Option<u64>,
) -> Result<ServiceSpec> {
    let Some(s) = c.services.get(key) else {
        bail!("no service {key} in the stack");
    };
    let d = &s.deploy;
    let mut labels = with_namespace(stack, &d.labels);
    labels.insert(IMAGE_LABEL.into(), s.image.clone());
    let healthcheck = s.healthcheck.as_ref().map(|h| HealthConfig {
        test: h.test.clone(),
        interval: nanos(h.interval),
        timeout: nanos(h.timeout),
        start_period: nanos(h.start_period),
        retries: h
            .retries
            .map_or(0, |r| i32::try_from(r).unwrap_or(i32::MAX)),
    });
    let container = ContainerSpec {
        image: s.image.clone(),
        labels: with_namespace(stack, &s.labels).into_iter().collect(),
        command: s.entrypoint.clone().unwrap_or_default(),
        args: s.command.clone().unwrap_or_default(),
        hostname: s.hostname.clone().unwrap_or_default(),
        env: s.environment.clone(),
        dir: s.working_dir.clone().unwrap_or_default(),
        user: s.user.clone().unwrap_or_default(),
        mounts: mounts(stack, s, c),
        stop_grace_period: nanos(s.stop_grace_period),
        has_stop_grace_period: s.stop_grace_period.is_some(),
        stop_signal: s.stop_signal.clone().unwrap_or_default(),
        healthcheck,
        secrets: data_refs(stack, &s.secrets, &c.secrets),
        configs: data_refs(stack, &s.configs, &c.configs),
        dns: s.dns.clone(),
        dns_search: s.dns_search.clone(),
        hosts: s.extra_hosts.clone(),
        cap_add: s.cap_add.clone(),
        cap_drop: s.cap_drop.clone(),
        sysctls: s.sysctls.clone().into_iter().collect(),
        ulimits: s
            .ulimits
            .iter()
            .map(|(name, u)| Ulimit {
                name: name.clone(),
                soft: u.soft,
                hard: u.hard,
            })
            .collect(),
        init: s.init,
        tty: s.tty,
        open_stdin: s.stdin_open,
        read_only: s.read_only,
        log_driver: s.logging.as_ref().map(|l| LogDriver {
            name: l.driver.clone().unwrap_or_default(),
            options: l.options.clone().into_iter().collect(),
        }),
    };
    let networks = service_networks(s)
        .into_iter()
        .map(|(k, mut aliases)| {
            // Docker adds the service's short name as an alias on every network.
            if !aliases.contains(&key.to_string()) {
                aliases.insert(0, key.to_string());
            }
            NetworkAttachmentConfig {
                target: network_name(stack, &k, c.networks.get(&k)),
                aliases,
            }
        })
        .collect();
    let resources = {
        let r = ResourceRequirements {
            limits: limits(&d.resources.limits),
            reservations: limits(&d.resources.reservations),
        };
        (r != ResourceRequirements::default()).then_some(r)
    };
    let placement = Placement {
        constraints: d.placement.constraints.clone(),
        preferences: d
            .placement
            .preferences
            .iter()
            .map(|p| PlacementPreference {
                spread_descriptor: p.clone(),
            })
            .collect(),
        max_replicas: d.placement.max_replicas_per_node.unwrap_or(0),
        platforms: Vec::new(),
    };
    let replicas = d.replicas.or(current_replicas).unwrap_or(1);
    let mode = match d.mode {
        Mode::Replicated => PbMode::Replicated(ReplicatedService { replicas }),
        Mode::Global => PbMode::Global(GlobalService {}),
        Mode::ReplicatedJob => PbMode::ReplicatedJob(ReplicatedJob {
            max_concurrent: d.replicas.unwrap_or(1),
            total_completions: d.replicas.unwrap_or(1),
        }),
        Mode::GlobalJob => PbMode::GlobalJob(GlobalJob {}),
    };
    let ports = s
        .ports
        .iter()
        .map(|p| {
            let mode = match p.mode.as_str() {
                "host" => PublishMode::Host,
                "local" => PublishMode::Local,
                _ => PublishMode::Ingress,
            };
            PortConfig {
                protocol: p.protocol.clone(),
                target_port: p.target,
                published_port: p.published.unwrap_or(0),
                publish_mode: mode as i32,
                ..Default::default()
            }
        })
        .collect();
    Ok(ServiceSpec {
        name: scoped(stack, key),
        labels: labels.into_iter().collect(),
        task: Some(TaskSpec {
            container: Some(container),
            resources,
            restart: restart_policy(s)?,
            placement: (placement != Placement::default()).then_some(placement),
            force_update: 0,
            networks,
        }),
        mode: Some(mode),
        update: d.update_config.as_ref().map(update_config).transpose()?,
        rollback: d.rollback_config.as_ref().map(update_config).transpose()?,
        endpoint: Some(EndpointSpec {
            mode: d.endpoint_mode.clone().unwrap_or_default(),
            ports,
        }),
        engine_extra: String::new(),
    })
}

/// Services in an order that creates each after what it depends on (the loader refused
/// cycles); ties by name.
pub fn creation_order(c: &Compose) -> Vec<String> {
    let mut done: Vec<String> = Vec::new();
    let mut left: Vec<&String> = c.services.keys().collect();
    while !left.is_empty() {
        let before = left.len();
        let mut i = 0;
        while i < left.len() {
            let key = left[i];
            let ready = c.services[key]
                .depends_on
                .keys()
                .all(|d| done.contains(d) || !c.services.contains_key(d));
            if ready {
                done.push(key.clone());
                left.remove(i);
            } else {
                i += 1;
            }
        }
        if left.len() == before {
            // A cycle the loader let through: the rest in name order.
            done.extend(left.drain(..).cloned());
        }
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::model::{Condition, Port, Service};

    fn compose() -> Compose {
        let mut c = Compose::default();
        c.services.insert(
            "web".into(),
            Service {
                image: "img:1".into(),
                ports: vec![Port {
                    target: 80,
                    published: Some(4000),
                    protocol: "tcp".into(),
                    mode: "ingress".into(),
                }],
                depends_on: BTreeMap::from([("db".to_string(), Condition::Healthy)]),
                secrets: vec![model::DataRef {
                    source: "pw".into(),
                    mode: Some(0o440),
                    ..Default::default()
                }],
                ..Default::default()
            },
        );
        c.services.insert(
            "db".into(),
            Service {
                image: "db:1".into(),
                networks: BTreeMap::from([(
                    "back".to_string(),
                    model::ServiceNetwork {
                        aliases: vec!["database".into()],
                    },
                )]),
                ..Default::default()
            },
        );
        c.networks.insert(
            "back".into(),
            model::Network {
                name: Some("shared-back".into()),
                ..Default::default()
            },
        );
        c.secrets.insert(
            "pw".into(),
            DataDef {
                file: Some("/tmp/pw".into()),
                ..Default::default()
            },
        );
        c
    }

    #[test]
    fn specs_carry_the_stacks_names_labels_and_defaults() {
        let c = compose();
        let web = service_spec("app", "web", &c, None).expect("web");
        assert_eq!(web.name, "app_web");
        assert_eq!(web.labels.get(NAMESPACE).map(String::as_str), Some("app"));
        assert_eq!(
            web.labels.get(IMAGE_LABEL).map(String::as_str),
            Some("img:1")
        );
        assert_eq!(
            web.mode,
            Some(PbMode::Replicated(ReplicatedService { replicas: 1 }))
        );
        let task = web.task.clone().expect("task");
        assert_eq!(task.networks[0].target, "app_default");
        assert_eq!(task.networks[0].aliases, ["web"]);
        let secret = &task.container.as_ref().expect("c").secrets[0];
        assert_eq!(
            (secret.name.as_str(), secret.target.as_str(), secret.mode),
            ("app_pw", "pw", 0o440)
        );
        let ports = web.endpoint.expect("endpoint").ports;
        assert_eq!((ports[0].published_port, ports[0].target_port), (4000, 80));

        // The scale a service has is kept when the file does not say.
        let kept = service_spec("app", "web", &c, Some(7)).expect("web");
        assert_eq!(
            kept.mode,
            Some(PbMode::Replicated(ReplicatedService { replicas: 7 }))
        );

        let db = service_spec("app", "db", &c, None).expect("db");
        let net = &db.task.expect("task").networks[0];
        assert_eq!(
            net.target, "shared-back",
            "a network's name: is not prefixed"
        );
        assert_eq!(net.aliases, ["db", "database"]);
        assert_eq!(creation_order(&c), ["db", "web"]);
    }

    #[test]
    fn stack_names_are_checked() {
        for ok in ["app", "my-app_2"] {
            assert!(check_stack_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a.b", "-x", "a b", "ä"] {
            assert!(check_stack_name(bad).is_err(), "{bad}");
        }
    }
}
