//! The Docker Engine executor (bollard). Placeholder until the real one lands.

use bollard::Docker;
use orch_api::pb::Task;

use super::{ContainerInfo, ExecError, Executor, LogOptions, LogStream};

pub struct DockerExecutor {
    #[allow(dead_code)]
    docker: Docker,
    #[allow(dead_code)]
    node_id: String,
}

impl DockerExecutor {
    pub fn new(docker: Docker, node_id: &str) -> Self {
        DockerExecutor { docker, node_id: node_id.to_string() }
    }
}

fn todo() -> ExecError {
    ExecError::Unavailable("the Docker executor is not implemented yet".into())
}

#[tonic::async_trait]
impl Executor for DockerExecutor {
    async fn list(&self) -> Result<Vec<ContainerInfo>, ExecError> {
        Err(todo())
    }
    async fn prepare(&self, _task: &Task) -> Result<(), ExecError> {
        Err(todo())
    }
    async fn create(&self, _task: &Task) -> Result<String, ExecError> {
        Err(todo())
    }
    async fn start(&self, _task: &Task) -> Result<(), ExecError> {
        Err(todo())
    }
    async fn inspect(&self, _task: &Task) -> Result<Option<ContainerInfo>, ExecError> {
        Err(todo())
    }
    async fn wait(&self, _task: &Task) -> Result<ContainerInfo, ExecError> {
        Err(todo())
    }
    async fn stop(&self, _task: &Task) -> Result<(), ExecError> {
        Err(todo())
    }
    async fn remove(&self, _task: &Task) -> Result<(), ExecError> {
        Err(todo())
    }
    async fn remove_container(&self, _container_id: &str) -> Result<(), ExecError> {
        Err(todo())
    }
    async fn logs(&self, _task: &Task, _options: LogOptions) -> Result<LogStream, ExecError> {
        Err(todo())
    }
}
