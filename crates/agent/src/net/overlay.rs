//! One overlay network on one node, as `../shared/docs/networking.md` records what worked on
//! this kernel: a sandbox netns holding a bridge and the VXLAN device (made in the node's netns,
//! so its UDP socket uses the node's underlay, then moved in); no flooding and no learning —
//! each remote endpoint is one permanent neighbour entry and one FDB entry; tasks attach by a
//! veth pair (MTU 1450 on both ends) whose host end sits on the sandbox's bridge.
//!
//! Driven through `ip` (iproute2), from the node's own netns (or, in tests, another one named
//! by `node_ns`). Every name carries the node's prefix, so nodes that share a machine (the lab)
//! never collide; teardown of a network is one `ip netns del`.

use std::net::Ipv4Addr;
use std::process::{Command, Output, Stdio};

/// VXLAN adds 50 bytes to each frame; both ends of a task's veth use this.
pub const OVERLAY_MTU: u32 = 1450;
pub const VXLAN_PORT: u16 = 4789;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NetError(pub String);

/// What a command that ran (`out`) means: its own message on failure, prefixed by `what`.
pub(crate) fn outcome(what: &str, out: std::io::Result<Output>) -> Result<(), NetError> {
    let out = out.map_err(|e| NetError(format!("cannot run {what}: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetError(format!(
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Whether a command runs and succeeds (its output ignored): for "does X exist" checks.
pub(crate) fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `ip ARGS` (in `ns` when given); the error carries iproute2's message.
pub(crate) fn ip(ns: Option<&str>, args: &[&str]) -> Result<(), NetError> {
    let mut cmd = Command::new("ip");
    if let Some(ns) = ns {
        cmd.args(["-n", ns]);
    }
    outcome(&format!("ip {}", args.join(" ")), cmd.args(args).output())
}

/// The MAC an endpoint's address maps to (02:42 and the four address bytes, as docker's), so
/// neighbour entries need no ARP across the overlay.
pub fn mac_for(addr: Ipv4Addr) -> String {
    let [a, b, c, d] = addr.octets();
    format!("02:42:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

/// Where a task's end of a veth goes.
#[derive(Debug, Clone)]
pub enum TaskNetns {
    /// A named netns (`ip netns add`).
    Named(String),
    /// The netns of a process (a task's sandbox container).
    Pid(u32),
}

/// One overlay on one node.
#[derive(Debug, Clone)]
pub struct Overlay {
    /// The netns the node's own links live in; None: this process's.
    pub node_ns: Option<String>,
    /// A short, machine-unique prefix for this node's names.
    pub node_tag: String,
    pub vni: u32,
    /// The node's underlay address (VXLAN's local end).
    pub underlay: Ipv4Addr,
    /// The network's prefix length.
    pub prefix: u8,
}

impl Overlay {
    /// The sandbox netns of this network on this node.
    pub fn sandbox(&self) -> String {
        format!("orch-{}-{}", self.node_tag, self.vni)
    }

    fn vxlan(&self) -> String {
        format!("vx{}-{}", self.node_tag, self.vni)
    }

    /// Creates the sandbox, its bridge and the VXLAN device; a sandbox that exists is kept
    /// (an agent restart adopts what is there).
    pub fn ensure(&self) -> Result<(), NetError> {
        let sandbox = self.sandbox();
        if self.exists() {
            return Ok(());
        }
        ip(None, &["netns", "add", &sandbox])?;
        let built = (|| {
            ip(Some(&sandbox), &["link", "set", "lo", "up"])?;
            ip(Some(&sandbox), &["link", "add", "br0", "type", "bridge"])?;
            let vxlan = self.vxlan();
            let vni = self.vni.to_string();
            let local = self.underlay.to_string();
            let port = VXLAN_PORT.to_string();
            ip(
                self.node_ns.as_deref(),
                &[
                    "link",
                    "add",
                    &vxlan,
                    "type",
                    "vxlan",
                    "id",
                    &vni,
                    "dstport",
                    &port,
                    "local",
                    &local,
                    "nolearning",
                    "proxy",
                ],
            )?;
            ip(
                self.node_ns.as_deref(),
                &["link", "set", &vxlan, "netns", &sandbox],
            )?;
            ip(Some(&sandbox), &["link", "set", &vxlan, "master", "br0"])?;
            ip(Some(&sandbox), &["link", "set", &vxlan, "up"])?;
            ip(Some(&sandbox), &["link", "set", "br0", "up"])
        })();
        if built.is_err() {
            self.remove();
        }
        built
    }

    pub fn exists(&self) -> bool {
        std::path::Path::new("/run/netns")
            .join(self.sandbox())
            .exists()
    }

    /// A remote endpoint: its address lives behind `node` (that node's underlay address).
    pub fn add_peer(&self, addr: Ipv4Addr, node: Ipv4Addr) -> Result<(), NetError> {
        let sandbox = self.sandbox();
        let vxlan = self.vxlan();
        let mac = mac_for(addr);
        ip(
            Some(&sandbox),
            &[
                "neigh",
                "replace",
                &addr.to_string(),
                "lladdr",
                &mac,
                "dev",
                &vxlan,
                "nud",
                "permanent",
            ],
        )?;
        outcome(
            &format!("bridge fdb replace {mac}"),
            Command::new("bridge")
                .args(["-n", &sandbox, "fdb", "replace", &mac, "dev", &vxlan])
                .args(["dst", &node.to_string(), "self", "permanent"])
                .output(),
        )
    }

    /// Forgets a remote endpoint.
    pub fn remove_peer(&self, addr: Ipv4Addr) {
        let sandbox = self.sandbox();
        let vxlan = self.vxlan();
        let _ = ip(
            Some(&sandbox),
            &["neigh", "del", &addr.to_string(), "dev", &vxlan],
        );
        let _ = Command::new("bridge")
            .args(["-n", &sandbox, "fdb", "del", &mac_for(addr), "dev", &vxlan])
            .args(["self"])
            .output();
    }

    /// Attaches a task: a veth pair, the host end on the bridge, the other end moved into the
    /// task's netns as `ifname`, addressed, MTU 1450 on both ends, up. `link` names the host
    /// end (unique per node and task: the caller's choice, at most 15 bytes).
    pub fn attach(
        &self,
        task: &TaskNetns,
        link: &str,
        ifname: &str,
        addr: Ipv4Addr,
    ) -> Result<(), NetError> {
        let sandbox = self.sandbox();
        let peer = format!("{link}p");
        let mtu = OVERLAY_MTU.to_string();
        ip(
            Some(&sandbox),
            &[
                "link", "add", link, "mtu", &mtu, "type", "veth", "peer", "name", &peer, "mtu",
                &mtu,
            ],
        )?;
        let done = (|| {
            ip(
                Some(&sandbox),
                &["link", "set", link, "master", "br0", "up"],
            )?;
            let target = match task {
                TaskNetns::Named(name) => name.clone(),
                TaskNetns::Pid(pid) => pid.to_string(),
            };
            ip(Some(&sandbox), &["link", "set", &peer, "netns", &target])?;
            let in_task = |args: &[&str]| -> Result<(), NetError> {
                match task {
                    TaskNetns::Named(name) => ip(Some(name), args),
                    TaskNetns::Pid(pid) => outcome(
                        &format!("ip {} (in pid {pid}'s netns)", args.join(" ")),
                        Command::new("nsenter")
                            .args(["-t", &pid.to_string(), "-n", "ip"])
                            .args(args)
                            .output(),
                    ),
                }
            };
            in_task(&["link", "set", &peer, "name", ifname])?;
            in_task(&["link", "set", ifname, "address", &mac_for(addr)])?;
            in_task(&[
                "addr",
                "add",
                &format!("{addr}/{}", self.prefix),
                "dev",
                ifname,
            ])?;
            in_task(&["link", "set", ifname, "up"])
        })();
        if done.is_err() {
            self.detach(link);
        }
        done
    }

    /// Removes a task's veth (its host end; the pair goes with it).
    pub fn detach(&self, link: &str) {
        let _ = ip(Some(&self.sandbox()), &["link", "del", link]);
    }

    /// Removes the network from this node: the sandbox and everything in it.
    pub fn remove(&self) {
        let _ = ip(None, &["netns", "del", &self.sandbox()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_come_from_addresses() {
        assert_eq!(mac_for(Ipv4Addr::new(10, 0, 1, 2)), "02:42:0a:00:01:02");
    }
}
