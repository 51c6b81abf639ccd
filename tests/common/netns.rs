//! A 3-manager `orch lab` with each node in its own network namespace (real VXLAN between the
//! nodes, real containers), for the data-plane tests; taken down when dropped, even when the
//! test fails.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use super::{containers_under, orch_bin, test_images, Container};

pub struct NetnsLab {
    pub lab: orch_lab::Lab,
    pub root: PathBuf,
}

impl Drop for NetnsLab {
    fn drop(&mut self) {
        let _ = self.lab.down();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

impl NetnsLab {
    /// A lab under the temp dir, named after the test binary (`kind`) and the test (`name`).
    pub fn up(kind: &str, name: &str) -> NetnsLab {
        test_images();
        let root = std::env::temp_dir().join(format!("orch-{kind}-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let lab = orch_lab::Lab::up(orch_lab::LabConfig::netns_managers(
            root.clone(),
            3,
            orch_bin(),
        ))
        .expect("lab up");
        NetnsLab { lab, root }
    }

    /// `orch ARGS` on m1: its output, or its error.
    pub fn orch(&self, args: &[&str]) -> Result<String, String> {
        self.lab.orch_ok("m1", args).map_err(|e| e.to_string())
    }

    /// `orch ARGS` on m1, which must succeed (else the test fails with m1's log).
    pub fn ok(&self, args: &[&str]) -> String {
        match self.orch(args) {
            Ok(out) => out,
            Err(e) => panic!("{e}\n--- m1 log ---\n{}", self.log("m1")),
        }
    }

    /// The last 40 lines of a node's log.
    pub fn log(&self, node: &str) -> String {
        let text =
            std::fs::read_to_string(self.root.join(node).join("orch.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Running containers of `service`.
    pub fn running(&self, service: &str) -> Vec<Container> {
        containers_under(&self.root)
            .into_iter()
            .filter(|k| k.running && k.service == service)
            .collect()
    }

    /// The name of one running container of `service` ("" when none runs).
    pub fn one(&self, service: &str) -> String {
        self.running(service)
            .first()
            .map(|k| k.name.clone())
            .unwrap_or_default()
    }

    /// The nodes' own addresses, by name.
    pub fn addrs(&self) -> BTreeMap<String, String> {
        self.lab
            .state
            .nodes
            .iter()
            .map(|n| (n.name.clone(), n.ip.clone()))
            .collect()
    }

    /// The host's address on the lab bridge: outside the cluster, where the test's own
    /// connections come from.
    pub fn host_addr(&self) -> String {
        format!("10.77.{}.1", self.lab.state.id)
    }
}

/// `GET /` over HTTP/1.0 to `addr:port`: the last line of the answer, if one came.
pub fn http_get(addr: &str, port: u16) -> Option<String> {
    let sock: std::net::SocketAddr = format!("{addr}:{port}").parse().ok()?;
    let mut s = std::net::TcpStream::connect_timeout(&sock, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.starts_with("HTTP/1")
        .then(|| out.lines().last().unwrap_or("").trim().to_string())
}
