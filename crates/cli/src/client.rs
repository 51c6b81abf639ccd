//! Reaching the cluster: the local node's unix socket, or with `-H` a manager over mTLS using
//! this machine's node certificate.

use std::fmt;

use anyhow::{bail, Result};
use orch_api::pb::control_client::ControlClient;
use orch_api::pb::node_control_client::NodeControlClient;
use orch_api::tls::{NodeIdentity, TlsContext};
use orch_api::transport::{tls_channel, unix_channel};
use tonic::transport::Channel;

use crate::datadir::DataDir;

/// An error the node or manager answered with (printed as docker prints daemon errors).
#[derive(Debug)]
pub struct DaemonError(pub String);

impl fmt::Display for DaemonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DaemonError {}

pub const NO_SWARM: &str =
    "This node is not a swarm manager. Use \"orch init\" or \"orch join\" to connect this node to swarm and try again.";

/// Turns a gRPC status into the error the user sees.
pub fn rpc(status: tonic::Status) -> anyhow::Error {
    let message = status.message().to_string();
    // A status the client made itself from a failed connection carries that error as its
    // source; one the node sent has none.
    if status.code() == tonic::Code::Unavailable && std::error::Error::source(&status).is_some() {
        return anyhow::anyhow!("cannot reach the orch node: {message}");
    }
    anyhow::Error::new(DaemonError(message))
}

pub struct Target {
    pub dd: DataDir,
    pub host: Option<String>,
}

impl Target {
    pub fn control(&self) -> Result<ControlClient<Channel>> {
        let channel = match &self.host {
            Some(host) => {
                if !self.dd.is_initialized() {
                    bail!(
                        "-H needs this machine's node certificate, and there is no node in {}",
                        self.dd.root.display()
                    );
                }
                let (ca, cert, key) = self.dd.read_certs()?;
                let identity = std::sync::Arc::new(NodeIdentity::from_pem(&cert, &key)?);
                let tls = TlsContext::new(&ca, identity)?;
                tls_channel(&crate::net::remote_addr(host)?, tls.client_config()?)?
            }
            None => self.local_channel()?,
        };
        Ok(ControlClient::new(channel)
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(64 << 20))
    }

    pub fn node_control(&self) -> Result<NodeControlClient<Channel>> {
        Ok(NodeControlClient::new(self.local_channel()?))
    }

    fn local_channel(&self) -> Result<Channel> {
        if !self.dd.is_initialized() {
            bail!(DaemonError(NO_SWARM.into()));
        }
        if !self.dd.socket().exists() {
            bail!(
                "the orch node process is not running (no socket at {}); start it with `orch daemon --data-dir {}`",
                self.dd.socket().display(),
                self.dd.root.display()
            );
        }
        Ok(unix_channel(&self.dd.socket())?)
    }

    /// The ID of the node this machine runs (for `*` in `node ls`).
    pub fn self_node_id(&self) -> String {
        self.dd.load_config().map(|c| c.node_id).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orch_api::pb::Empty;

    #[tokio::test]
    async fn a_failed_connection_is_told_apart_from_an_answer_by_its_origin() {
        let dir = tempfile::tempdir().expect("tempdir");
        let channel = unix_channel(&dir.path().join("nobody.sock")).expect("channel");
        let status = NodeControlClient::new(channel)
            .info(Empty {})
            .await
            .expect_err("nobody listens");
        let err = rpc(status);
        assert!(err.downcast_ref::<DaemonError>().is_none(), "{err:#}");
        assert!(
            err.to_string().starts_with("cannot reach the orch node"),
            "{err:#}"
        );

        // A node's answer is the node's, whatever words it uses.
        let answer = rpc(tonic::Status::unavailable(
            "no leader: cannot connect, transport to m2 failed",
        ));
        assert!(answer.downcast_ref::<DaemonError>().is_some(), "{answer:#}");
    }
}
