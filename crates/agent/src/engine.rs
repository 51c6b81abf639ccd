//! The local Docker Engine: connecting (unix or tcp, with API version negotiation so engines
//! as old as API 1.41 work) and describing the node from it.

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use orch_api::pb::{EngineDescription, NodeDescription, Platform, Resources};

pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot connect to the Docker Engine at {host}: {message}")]
    Connect { host: String, message: String },
}

/// Connects to the engine at `host` (`unix://PATH`, `tcp://HOST:PORT` or `http://…`) and
/// negotiates the API version.
pub async fn connect(host: &str) -> Result<Docker, EngineError> {
    let err = |e: bollard::errors::Error| EngineError::Connect {
        host: host.to_string(),
        message: e.to_string(),
    };
    let docker = if host.starts_with("unix://") || host.starts_with('/') {
        Docker::connect_with_unix(host, 120, bollard::API_DEFAULT_VERSION).map_err(err)?
    } else {
        Docker::connect_with_http(host, 120, bollard::API_DEFAULT_VERSION).map_err(err)?
    };
    tokio::time::timeout(Duration::from_secs(5), docker.negotiate_version())
        .await
        .map_err(|_| EngineError::Connect {
            host: host.to_string(),
            message: "no answer within 5s".into(),
        })?
        .map_err(err)
}

/// The platform names docker uses.
pub fn local_platform() -> Platform {
    // Rust's names for these are docker's (x86_64, aarch64; linux).
    Platform {
        architecture: std::env::consts::ARCH.to_string(),
        os: std::env::consts::OS.to_string(),
    }
}

pub fn local_resources() -> Resources {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get() as i64)
        .unwrap_or(1);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<i64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0);
    Resources {
        nano_cpus: cpus * 1_000_000_000,
        memory_bytes: memory,
    }
}

/// Describes this node: from the engine when it answers, from the OS otherwise (with the
/// engine's error, which the node reports in its status).
pub async fn describe(
    docker: Option<&Docker>,
    hostname: &str,
) -> (NodeDescription, Option<String>) {
    let mut description = NodeDescription {
        hostname: hostname.to_string(),
        platform: Some(local_platform()),
        resources: Some(local_resources()),
        engine: None,
    };
    let Some(docker) = docker else {
        return (description, Some("no engine connection".into()));
    };
    match tokio::time::timeout(Duration::from_secs(5), docker.info()).await {
        Ok(Ok(info)) => {
            if let (Some(ncpu), Some(mem)) = (info.ncpu, info.mem_total) {
                description.resources = Some(Resources {
                    nano_cpus: ncpu * 1_000_000_000,
                    memory_bytes: mem,
                });
            }
            if let Some(arch) = info.architecture.filter(|a| !a.is_empty()) {
                let os = info
                    .os_type
                    .unwrap_or_else(|| std::env::consts::OS.to_string());
                description.platform = Some(Platform {
                    architecture: arch,
                    os,
                });
            }
            let labels: HashMap<String, String> = info
                .labels
                .unwrap_or_default()
                .into_iter()
                .map(|l| match l.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (l, String::new()),
                })
                .collect();
            description.engine = Some(EngineDescription {
                engine_version: info.server_version.unwrap_or_default(),
                labels,
            });
            (description, None)
        }
        Ok(Err(e)) => (description, Some(e.to_string())),
        Err(_) => (
            description,
            Some("the engine did not answer within 5s".into()),
        ),
    }
}
