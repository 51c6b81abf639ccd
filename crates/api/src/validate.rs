//! Service spec validation and defaults, applied at the API edge: a spec that passes here is
//! one every component can act on. Defaults are swarm's (restart any/5s, update and rollback
//! parallelism 1 / pause / 5s monitor / stop-first, 10s stop grace period).

use std::time::Duration;

use crate::constraint::Constraint;
use crate::pb::service_spec::Mode;
use crate::pb::{
    ContainerSpec, EndpointSpec, FailureAction, PublishMode, ReplicatedJob, ReplicatedService,
    RestartCondition, RestartPolicy, ServiceSpec, TaskSpec, UpdateConfig, UpdateOrder,
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(pub String);

fn invalid<T>(message: impl Into<String>) -> Result<T, SpecError> {
    Err(SpecError(message.into()))
}

pub const DEFAULT_RESTART_DELAY: Duration = Duration::from_secs(5);
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);
pub const DEFAULT_MONITOR: Duration = Duration::from_secs(5);

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

pub fn default_update_config() -> UpdateConfig {
    UpdateConfig {
        parallelism: 1,
        delay: 0,
        failure_action: FailureAction::Pause as i32,
        monitor: nanos(DEFAULT_MONITOR),
        max_failure_ratio: 0.0,
        order: UpdateOrder::StopFirst as i32,
    }
}

pub fn is_job(spec: &ServiceSpec) -> bool {
    matches!(
        spec.mode,
        Some(Mode::ReplicatedJob(_)) | Some(Mode::GlobalJob(_))
    )
}

/// Service names are DNS labels: letters, digits, `-` and `_` inside, at most 63.
pub fn valid_service_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !name.is_empty()
        && name.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
}

/// Fills in swarm's defaults and checks everything components rely on.
pub fn normalize_service_spec(spec: &mut ServiceSpec) -> Result<(), SpecError> {
    if !valid_service_name(&spec.name) {
        return invalid(format!(
            "invalid name {:?}: a service name is 1 to 63 letters, digits, '-' or '_', starting and ending with a letter or digit",
            spec.name
        ));
    }
    if spec.mode.is_none() {
        spec.mode = Some(Mode::Replicated(ReplicatedService { replicas: 1 }));
    }
    if let Some(Mode::ReplicatedJob(job)) = spec.mode.as_mut() {
        normalize_job(job);
    }
    let job = is_job(spec);
    let task = spec.task.get_or_insert_with(TaskSpec::default);
    validate_task(task, job)?;
    for (name, config) in [
        ("update", &mut spec.update),
        ("rollback", &mut spec.rollback),
    ] {
        let c = config.get_or_insert_with(default_update_config);
        validate_update(name, c)?;
    }
    let endpoint = spec.endpoint.get_or_insert_with(EndpointSpec::default);
    validate_endpoint(endpoint)?;
    validate_engine_extra(&spec.engine_extra)
}

/// The most an Engine API client may store in fields orch does not act on.
pub const MAX_ENGINE_EXTRA: usize = 64 << 10;

fn validate_engine_extra(extra: &str) -> Result<(), SpecError> {
    if extra.is_empty() {
        return Ok(());
    }
    if extra.len() > MAX_ENGINE_EXTRA {
        return invalid(format!(
            "the fields orch keeps but does not act on take {} bytes, more than {MAX_ENGINE_EXTRA}",
            extra.len()
        ));
    }
    match serde_json::from_str::<serde_json::Value>(extra) {
        Ok(serde_json::Value::Object(_)) => Ok(()),
        _ => invalid("engine_extra must be a JSON object"),
    }
}

fn normalize_job(job: &mut ReplicatedJob) {
    if job.total_completions == 0 {
        job.total_completions = 1;
    }
    if job.max_concurrent == 0 {
        job.max_concurrent = job.total_completions;
    }
}

fn validate_task(task: &mut TaskSpec, job: bool) -> Result<(), SpecError> {
    let container = task.container.get_or_insert_with(ContainerSpec::default);
    validate_container(container)?;
    let restart = task.restart.get_or_insert_with(|| RestartPolicy {
        condition: if job {
            RestartCondition::OnFailure
        } else {
            RestartCondition::Any
        } as i32,
        delay: nanos(DEFAULT_RESTART_DELAY),
        max_attempts: 0,
        window: 0,
    });
    if RestartCondition::try_from(restart.condition).is_err() {
        return invalid(format!("invalid restart condition {}", restart.condition));
    }
    if restart.delay < 0 || restart.window < 0 {
        return invalid("restart delay and window must not be negative");
    }
    if let Some(resources) = &task.resources {
        for limits in [&resources.limits, &resources.reservations]
            .into_iter()
            .flatten()
        {
            if limits.nano_cpus < 0 || limits.memory_bytes < 0 {
                return invalid("resource limits and reservations must not be negative");
            }
        }
    }
    if let Some(placement) = &task.placement {
        for c in &placement.constraints {
            Constraint::parse(c).map_err(|e| SpecError(e.to_string()))?;
        }
        for p in &placement.preferences {
            let d = &p.spread_descriptor;
            if !(d.starts_with("node.labels.") || d.starts_with("engine.labels."))
                || d.ends_with('.')
            {
                return invalid(format!(
                    "invalid placement preference spread={d}: spread over node.labels.<label> or engine.labels.<label>"
                ));
            }
        }
    }
    let mut targets = std::collections::BTreeSet::new();
    for n in &task.networks {
        if n.target.trim().is_empty() {
            return invalid("a network attachment needs a network name");
        }
        if !targets.insert(n.target.as_str()) {
            return invalid(format!("network {} specified multiple times", n.target));
        }
        for alias in &n.aliases {
            crate::network::check_alias(alias).map_err(SpecError)?;
        }
    }
    Ok(())
}

fn validate_container(c: &mut ContainerSpec) -> Result<(), SpecError> {
    if c.image.trim().is_empty() {
        return invalid("an image reference must be provided");
    }
    if c.image.chars().any(char::is_whitespace) {
        return invalid(format!("invalid image reference {:?}", c.image));
    }
    if !c.has_stop_grace_period {
        c.stop_grace_period = nanos(DEFAULT_STOP_GRACE);
        c.has_stop_grace_period = true;
    }
    if c.stop_grace_period < 0 {
        return invalid("the stop grace period must not be negative");
    }
    for env in &c.env {
        if env.starts_with('=') || env.is_empty() {
            return invalid(format!("invalid environment variable {env:?}"));
        }
    }
    for m in &c.mounts {
        match m.r#type.as_str() {
            "bind" | "volume" | "tmpfs" => {}
            other => {
                return invalid(format!(
                    "invalid mount type {other:?}: bind, volume or tmpfs"
                ))
            }
        }
        if !m.target.starts_with('/') {
            return invalid(format!(
                "invalid mount target {:?}: must be an absolute path",
                m.target
            ));
        }
        if m.r#type == "bind" && !m.source.starts_with('/') {
            return invalid(format!(
                "invalid bind mount source {:?}: must be an absolute path",
                m.source
            ));
        }
        if m.r#type == "tmpfs" && !m.source.is_empty() {
            return invalid("a tmpfs mount takes no source");
        }
    }
    if let Some(h) = &c.healthcheck {
        if h.interval < 0 || h.timeout < 0 || h.start_period < 0 || h.retries < 0 {
            return invalid("healthcheck durations and retries must not be negative");
        }
    }
    Ok(())
}

fn validate_update(name: &str, c: &UpdateConfig) -> Result<(), SpecError> {
    if c.delay < 0 || c.monitor < 0 {
        return invalid(format!("{name} delay and monitor must not be negative"));
    }
    if !(0.0..=1.0).contains(&c.max_failure_ratio) || c.max_failure_ratio.is_nan() {
        return invalid(format!(
            "{name} max failure ratio must be between 0 and 1, not {}",
            c.max_failure_ratio
        ));
    }
    if FailureAction::try_from(c.failure_action).is_err() {
        return invalid(format!(
            "invalid {name} failure action {}",
            c.failure_action
        ));
    }
    if UpdateOrder::try_from(c.order).is_err() {
        return invalid(format!("invalid {name} order {}", c.order));
    }
    Ok(())
}

fn validate_endpoint(e: &mut EndpointSpec) -> Result<(), SpecError> {
    if e.mode.is_empty() {
        e.mode = "vip".into();
    }
    if e.mode != "vip" && e.mode != "dnsrr" {
        return invalid(format!("invalid endpoint mode {:?}: vip or dnsrr", e.mode));
    }
    let mut seen = std::collections::HashSet::new();
    for p in &mut e.ports {
        if p.protocol.is_empty() {
            p.protocol = "tcp".into();
        }
        if !["tcp", "udp", "sctp"].contains(&p.protocol.as_str()) {
            return invalid(format!(
                "invalid protocol {:?}: tcp, udp or sctp",
                p.protocol
            ));
        }
        if p.target_port == 0 || p.target_port > 65535 || p.published_port > 65535 {
            return invalid("ports must be between 1 and 65535");
        }
        if PublishMode::try_from(p.publish_mode).is_err() {
            return invalid(format!(
                "invalid publish mode {}: ingress, host or local",
                p.publish_mode
            ));
        }
        if p.published_port != 0 && !seen.insert((p.protocol.clone(), p.published_port)) {
            return invalid(format!(
                "port {}/{} is published twice",
                p.published_port, p.protocol
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::{GlobalService, Mount, Placement, PlacementPreference, PortConfig};

    fn spec(name: &str) -> ServiceSpec {
        ServiceSpec {
            name: name.into(),
            task: Some(TaskSpec {
                container: Some(ContainerSpec {
                    image: "busybox".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_are_swarms() {
        let mut s = spec("web");
        normalize_service_spec(&mut s).expect("valid");
        assert_eq!(
            s.mode,
            Some(Mode::Replicated(ReplicatedService { replicas: 1 }))
        );
        let task = s.task.as_ref().expect("task");
        let restart = task.restart.as_ref().expect("restart");
        assert_eq!(restart.condition, RestartCondition::Any as i32);
        assert_eq!(restart.delay, 5_000_000_000);
        assert_eq!(
            task.container.as_ref().expect("c").stop_grace_period,
            10_000_000_000
        );
        let update = s.update.as_ref().expect("update");
        assert_eq!(
            (update.parallelism, update.failure_action, update.monitor),
            (1, FailureAction::Pause as i32, 5_000_000_000)
        );
        assert_eq!(s.endpoint.as_ref().expect("endpoint").mode, "vip");

        let mut job = spec("job");
        job.mode = Some(Mode::ReplicatedJob(ReplicatedJob {
            max_concurrent: 0,
            total_completions: 4,
        }));
        normalize_service_spec(&mut job).expect("valid");
        assert_eq!(
            job.mode,
            Some(Mode::ReplicatedJob(ReplicatedJob {
                max_concurrent: 4,
                total_completions: 4
            }))
        );
        assert_eq!(
            job.task.expect("task").restart.expect("restart").condition,
            RestartCondition::OnFailure as i32
        );
    }

    #[test]
    fn bad_specs_are_refused() {
        type Edit = fn(&mut ServiceSpec);
        let cases: Vec<(&str, Edit)> = vec![
            ("empty name", |s| s.name.clear()),
            ("bad name", |s| s.name = "-web".into()),
            ("long name", |s| s.name = "a".repeat(64)),
            ("no image", |s| {
                s.task
                    .as_mut()
                    .and_then(|t| t.container.as_mut())
                    .expect("c")
                    .image
                    .clear()
            }),
            ("bad constraint", |s| {
                s.task.as_mut().expect("t").placement = Some(Placement {
                    constraints: vec!["node.color==red".into()],
                    ..Default::default()
                })
            }),
            ("bad preference", |s| {
                s.task.as_mut().expect("t").placement = Some(Placement {
                    preferences: vec![PlacementPreference {
                        spread_descriptor: "zone".into(),
                    }],
                    ..Default::default()
                })
            }),
            ("failure ratio", |s| {
                s.update = Some(UpdateConfig {
                    max_failure_ratio: 1.5,
                    ..default_update_config()
                })
            }),
            ("failure action", |s| {
                s.update = Some(UpdateConfig {
                    failure_action: 9,
                    ..default_update_config()
                })
            }),
            ("relative mount", |s| {
                s.task
                    .as_mut()
                    .and_then(|t| t.container.as_mut())
                    .expect("c")
                    .mounts = vec![Mount {
                    r#type: "bind".into(),
                    source: "/tmp".into(),
                    target: "data".into(),
                    ..Default::default()
                }]
            }),
            ("mount type", |s| {
                s.task
                    .as_mut()
                    .and_then(|t| t.container.as_mut())
                    .expect("c")
                    .mounts = vec![Mount {
                    r#type: "nfs".into(),
                    target: "/d".into(),
                    ..Default::default()
                }]
            }),
            ("unknown publish mode", |s| {
                s.endpoint = Some(EndpointSpec {
                    ports: vec![PortConfig {
                        target_port: 80,
                        published_port: 8080,
                        publish_mode: 7,
                        ..Default::default()
                    }],
                    ..Default::default()
                })
            }),
            ("target port 0", |s| {
                s.endpoint = Some(EndpointSpec {
                    ports: vec![PortConfig {
                        published_port: 8080,
                        ..Default::default()
                    }],
                    ..Default::default()
                })
            }),
            ("published port above 65535", |s| {
                s.endpoint = Some(EndpointSpec {
                    ports: vec![PortConfig {
                        target_port: 80,
                        published_port: 65536,
                        ..Default::default()
                    }],
                    ..Default::default()
                })
            }),
            ("unknown protocol", |s| {
                s.endpoint = Some(EndpointSpec {
                    ports: vec![PortConfig {
                        target_port: 80,
                        protocol: "icmp".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                })
            }),
            ("the same port twice", |s| {
                let p = PortConfig {
                    target_port: 80,
                    published_port: 8080,
                    ..Default::default()
                };
                s.endpoint = Some(EndpointSpec {
                    ports: vec![
                        p.clone(),
                        PortConfig {
                            target_port: 81,
                            ..p
                        },
                    ],
                    ..Default::default()
                })
            }),
            ("restart condition", |s| {
                s.task.as_mut().expect("t").restart = Some(RestartPolicy {
                    condition: 7,
                    ..Default::default()
                })
            }),
        ];
        for (name, edit) in cases {
            let mut s = spec("web");
            edit(&mut s);
            assert!(
                normalize_service_spec(&mut s).is_err(),
                "{name} should be refused"
            );
        }
        let mut global = spec("g");
        global.mode = Some(Mode::Global(GlobalService {}));
        normalize_service_spec(&mut global).expect("global is fine");
    }
}
