//! What the routes reach: the node's control API (through its own control socket, as the
//! `orch` command does) and the node's Docker Engine.

use std::path::PathBuf;
use std::sync::Arc;

use orch_api::pb::control_client::ControlClient;
use orch_api::pb::node_control_client::NodeControlClient;
use tonic::transport::Channel;

use crate::events::Hub;

/// Where the node's Docker Engine listens, as the node was configured (`unix:///…` or
/// `tcp://host:port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineAddr {
    Unix(PathBuf),
    Tcp(String),
}

impl EngineAddr {
    pub fn parse(host: &str) -> Option<EngineAddr> {
        if let Some(path) = host.strip_prefix("unix://") {
            return Some(EngineAddr::Unix(PathBuf::from(path)));
        }
        if let Some(addr) = host.strip_prefix("tcp://") {
            return Some(EngineAddr::Tcp(addr.trim_end_matches('/').to_string()));
        }
        None
    }
}

pub struct Options {
    /// The node's control socket.
    pub control_socket: PathBuf,
    /// The node's Docker Engine (`unix:///var/run/docker.sock`, `tcp://…`).
    pub engine_host: String,
}

#[derive(Clone)]
pub struct Backend {
    inner: Arc<Inner>,
}

struct Inner {
    control: ControlClient<Channel>,
    node: NodeControlClient<Channel>,
    engine: Option<EngineAddr>,
    events: Hub,
}

impl Backend {
    pub fn new(options: &Options) -> Result<Backend, tonic::transport::Error> {
        let channel = orch_api::transport::unix_channel(&options.control_socket)?;
        let control = ControlClient::new(channel.clone())
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(64 << 20);
        let node = NodeControlClient::new(channel);
        let backend = Backend {
            inner: Arc::new(Inner {
                control: control.clone(),
                node,
                engine: EngineAddr::parse(&options.engine_host),
                events: Hub::new(control),
            }),
        };
        Ok(backend)
    }

    pub fn control(&self) -> ControlClient<Channel> {
        self.inner.control.clone()
    }

    pub fn node(&self) -> NodeControlClient<Channel> {
        self.inner.node.clone()
    }

    pub fn engine(&self) -> Option<&EngineAddr> {
        self.inner.engine.as_ref()
    }

    pub fn events(&self) -> &Hub {
        &self.inner.events
    }
}
