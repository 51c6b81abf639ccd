//! The node's data plane for overlay networks: what the dispatcher says (networks, the other
//! nodes' endpoints, the service table) made real with `ip` and `nft`, as
//! `../shared/docs/networking.md` records it working on this kernel.
//!
//! - One sandbox netns per network (bridge, VXLAN, static neighbour and FDB entries per remote
//!   endpoint; the network's gateway address on the bridge). A network that is not `internal`
//!   gets an egress link to the node's netns, masqueraded twice (sandbox, node).
//! - A DNS resolver per sandbox, at the gateway address: names of the services on the asking
//!   task's networks, `tasks.NAME`, aliases; other names go to the node's resolvers.
//! - A task's netns (its pause container's, named `orch-<node>-t-<task>`) gets one veth per
//!   network, its default route through its first non-internal network, and an nftables table
//!   that DNATs each VIP to the running backends (or rejects at once when there are none).
//!
//! Everything runs `ip`/`nft` (blocking): callers use `spawn_blocking`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::process::{Command, Stdio};
use std::sync::Arc;

use orch_api::pb::{
    MeshPort, Network, NetworkAttachment, NetworkPeer, NetworkUpdate, ServiceRecord, Task,
};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::dns::{self, Answer, Lookup};
use super::overlay::{ip, outcome, succeeds, NetError, Overlay, TaskNetns};

/// What the dispatcher said.
#[derive(Default)]
struct Known {
    networks: BTreeMap<String, Network>,
    peers: BTreeMap<(String, String), NetworkPeer>,
    services: BTreeMap<(String, String), ServiceRecord>,
    /// This node's endpoint on the ingress network; empty without a mesh.
    ingress_addr: String,
    ports: BTreeMap<(String, u32), MeshPort>,
}

/// The routing mesh as made on this node.
#[derive(Default)]
struct MeshState {
    /// The address `ing0` was given ("" when there is no `ing0`).
    endpoint: String,
    /// The `orch_mesh` table last written ("" when there is none).
    table: String,
    /// The UDP ports' backends in that table: what a rewrite takes away has its flows
    /// forgotten.
    udp_backends: BTreeMap<u32, BTreeSet<String>>,
}

/// A network made on this node.
struct Sandbox {
    overlay: Overlay,
    peers: BTreeSet<String>,
    resolver: CancellationToken,
    /// Not internal: it has a way out through the node.
    egress: bool,
}

/// A task attached here.
struct Attached {
    attachments: Vec<NetworkAttachment>,
    /// The VIP table last written into its netns.
    vip_table: String,
    /// The node endpoint its mesh replies are routed through ("" until set).
    mesh_gateway: String,
}

pub struct Plane {
    tag: String,
    underlay: Ipv4Addr,
    upstreams: Vec<SocketAddr>,
    known: Mutex<Known>,
    sandboxes: Mutex<HashMap<String, Sandbox>>,
    tasks: Mutex<HashMap<String, Attached>>,
    mesh: Mutex<MeshState>,
    /// This plane (for tasks it spawns on itself).
    me: std::sync::Weak<Plane>,
    /// One reconcile at a time (attach/detach and the loop).
    plumbing: Mutex<()>,
    changed: tokio::sync::Notify,
    runtime: tokio::runtime::Handle,
    /// Set by a full update: sandboxes left by an earlier run for networks no task here uses
    /// are removed at the next reconcile.
    sweep: std::sync::atomic::AtomicBool,
}

/// What lets the sandboxes' forwarded traffic past Docker's FORWARD policy.
const DOCKER_USER_RULES: [[&str; 5]; 2] = [
    ["DOCKER-USER", "-i", "og+", "-j", "ACCEPT"],
    ["DOCKER-USER", "-o", "og+", "-j", "ACCEPT"],
];

/// What lets the mesh's forwarded traffic past Docker's FORWARD policy.
const MESH_DOCKER_USER_RULES: [[&str; 5]; 2] = [
    ["DOCKER-USER", "-i", MESH_LINK, "-j", "ACCEPT"],
    ["DOCKER-USER", "-o", MESH_LINK, "-j", "ACCEPT"],
];

/// The node's endpoint on the ingress network, in the node's netns.
pub const MESH_LINK: &str = "ing0";
/// Its other end, on the ingress sandbox's bridge.
const MESH_LINK_SANDBOX: &str = "ingh";
/// The routing table (in a task's netns) of what its ingress address sends: the mesh's
/// replies go back through the node's endpoint, whatever the task's default route.
const MESH_ROUTE_TABLE: &str = "100";

/// How soon a mesh step that failed is tried again.
const MESH_RETRY: std::time::Duration = std::time::Duration::from_secs(2);

/// How often the DOCKER-USER rules are checked (the engine may have restarted).
const DOCKER_RULES_RECHECK: std::time::Duration = std::time::Duration::from_secs(10);

/// VIP tables written at once by a reconcile.
const NFT_WRITERS: usize = 4;

/// The netns name of a task's sandbox container.
pub fn task_netns(tag: &str, task_id: &str) -> String {
    format!("orch-{tag}-t-{task_id}")
}

/// What every host end of a task's veths starts with.
fn task_link_prefix(task_id: &str) -> String {
    let short: String = task_id.chars().take(12).collect();
    format!("t{short}")
}

/// The host end of a task's veth on its `i`th network (15 bytes at most, its peer adds "p").
fn task_link(task_id: &str, i: usize) -> String {
    format!("{}{}", task_link_prefix(task_id), i % 10)
}

/// The named netns of a node on disk (`orch-<tag>-…`): its sandboxes and its tasks' names.
fn node_netns(tag: &str) -> Vec<String> {
    let prefix = format!("orch-{tag}-");
    std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

/// The node's network sandboxes on disk, with their VXLAN IDs (`orch-<tag>-<vni>`).
fn node_sandboxes(tag: &str) -> Vec<(String, u32)> {
    let prefix = format!("orch-{tag}-");
    node_netns(tag)
        .into_iter()
        .filter_map(|n| {
            let vni = n.strip_prefix(&prefix)?.parse().ok()?;
            Some((n, vni))
        })
        .collect()
}

fn netns_exists(name: &str) -> bool {
    std::path::Path::new("/run/netns").join(name).exists()
}

/// Runs `nft -f -` (in `ns` when given) with `rules` on stdin.
fn nft(ns: Option<&str>, rules: &str) -> Result<(), NetError> {
    let mut cmd = match ns {
        Some(ns) => {
            // nsenter enters the netns only (`ip netns exec` also makes a mount namespace:
            // twice the cost, paid once per task on every service change).
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/run/netns/{ns}"))
                .args(["--", "nft", "-f", "-"]);
            c
        }
        None => {
            let mut c = Command::new("nft");
            c.args(["-f", "-"]);
            c
        }
    };
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| NetError(format!("cannot run nft: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(rules.as_bytes())
            .map_err(|e| NetError(format!("nft: {e}")))?;
    }
    outcome("nft", child.wait_with_output())
}

fn sysctl_in(ns: &str, key: &str, value: &str) -> Result<(), NetError> {
    outcome(
        &format!("sysctl {key}"),
        Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                &format!("{key}={value}"),
            ])
            .output(),
    )
}

/// Inserts each of `rules` in Docker's `DOCKER-USER` chain unless it is there (a host
/// without Docker has no such chain, and no FORWARD policy to get past).
fn assert_docker_user(rules: &[[&str; 5]]) {
    if !succeeds(Command::new("iptables").args(["-n", "-L", "DOCKER-USER"])) {
        return;
    }
    for rule in rules {
        if !succeeds(Command::new("iptables").arg("-C").args(rule)) {
            let _ = succeeds(Command::new("iptables").arg("-I").args(rule));
        }
    }
}

/// In a task's netns: what leaves from its ingress address `addr` (on `dev`) uses a table of
/// its own, the ingress subnet on the link and, once the node has one, the default route
/// through the node's ingress endpoint.
fn mesh_reply_route(
    ns: &str,
    addr: &str,
    dev: &str,
    subnet: &str,
    node_addr: &str,
) -> Result<(), NetError> {
    let table = MESH_ROUTE_TABLE;
    let from = format!("{addr}/32");
    if rule_missing(ns, &from) {
        ip(
            Some(ns),
            &["rule", "add", "from", &from, "table", table, "pref", table],
        )?;
    }
    ip(
        Some(ns),
        &["route", "replace", subnet, "dev", dev, "table", table],
    )?;
    if node_addr.is_empty() {
        // No endpoint on this node (any more): the task's own default route serves.
        let _ = ip(Some(ns), &["route", "del", "default", "table", table]);
    } else {
        ip(
            Some(ns),
            &[
                "route", "replace", "default", "via", node_addr, "dev", dev, "table", table,
            ],
        )?;
    }
    Ok(())
}

/// Whether the task's netns has no rule for `from` yet.
fn rule_missing(ns: &str, from: &str) -> bool {
    Command::new("ip")
        .args(["-n", ns, "rule", "show", "from", from])
        .output()
        .map_or(true, |o| {
            String::from_utf8_lossy(&o.stdout).trim().is_empty()
        })
}

/// The /31 linking a network's sandbox to the node's netns: (node end, sandbox end).
fn egress_link(vni: u32) -> (Ipv4Addr, Ipv4Addr) {
    let i = vni % 32768;
    let node = Ipv4Addr::new(169, 254, (i / 128) as u8, ((i % 128) * 2) as u8);
    let sandbox = Ipv4Addr::from(u32::from(node) + 1);
    (node, sandbox)
}

/// The nftables table of a task's netns: each VIP of its networks DNATed to a random running
/// backend; a VIP with no backend refused at once (never a 3 s ARP wait).
pub fn vip_table<'a>(services: impl Iterator<Item = &'a ServiceRecord>) -> String {
    let mut dnat = String::new();
    let mut reject = String::new();
    for s in services.filter(|s| !s.vip.is_empty()) {
        match s.backends.len() {
            0 => reject.push_str(&format!("    ip daddr {} reject\n", s.vip)),
            1 => dnat.push_str(&format!(
                "    ip daddr {} dnat to {}\n",
                s.vip, s.backends[0]
            )),
            n => {
                let map: Vec<String> = s
                    .backends
                    .iter()
                    .enumerate()
                    .map(|(i, b)| format!("{i} : {b}"))
                    .collect();
                dnat.push_str(&format!(
                    "    ip daddr {} dnat to numgen random mod {n} map {{ {} }}\n",
                    s.vip,
                    map.join(", ")
                ));
            }
        }
    }
    format!(
        "table ip orch_vip\ndelete table ip orch_vip\ntable ip orch_vip {{\n  chain out {{\n    type nat hook output priority -100; policy accept;\n{dnat}  }}\n  chain refuse {{\n    type filter hook output priority 0; policy accept;\n{reject}  }}\n}}\n"
    )
}

/// The node's `orch_mesh` table: each published port DNATed (in prerouting for what arrives,
/// in output for the node's own connections, 127.0.0.1 included) to a random backend's
/// ingress address. Ingress mode masquerades toward the ingress network so replies come back
/// through this node; local mode delivers without source NAT (the task sees the client). A
/// port with no backend has no rule: nothing listens, so the kernel refuses at once.
pub fn mesh_table<'a>(ports: impl Iterator<Item = &'a MeshPort>) -> String {
    let mut dnat = String::new();
    let mut masquerade = String::new();
    for p in ports {
        let proto = p.protocol.as_str();
        if !["tcp", "udp", "sctp"].contains(&proto) {
            continue;
        }
        let to = match p.backends.len() {
            0 => continue,
            1 => format!("{}:{}", p.backends[0], p.target_port),
            n => {
                let map: Vec<String> = p
                    .backends
                    .iter()
                    .enumerate()
                    .map(|(i, b)| format!("{i} : {b}"))
                    .collect();
                format!(
                    "numgen random mod {n} map {{ {} }}:{}",
                    map.join(", "),
                    p.target_port
                )
            }
        };
        dnat.push_str(&format!(
            "    fib daddr type local {proto} dport {} dnat to {to}\n",
            p.published_port
        ));
        if !p.local {
            masquerade.push_str(&format!(
                "    oifname \"{MESH_LINK}\" ct status dnat meta l4proto {proto} ct original proto-dst {} masquerade\n",
                p.published_port
            ));
        }
    }
    format!(
        "table ip orch_mesh\ndelete table ip orch_mesh\ntable ip orch_mesh {{\n  chain pre {{\n    type nat hook prerouting priority -100; policy accept;\n{dnat}  }}\n  chain out {{\n    type nat hook output priority -100; policy accept;\n{dnat}  }}\n  chain post {{\n    type nat hook postrouting priority 100; policy accept;\n{masquerade}    oifname \"{MESH_LINK}\" ip saddr 127.0.0.0/8 masquerade\n    iifname \"{MESH_LINK}\" oifname != \"{MESH_LINK}\" masquerade\n  }}\n}}\n"
    )
}

const NO_MESH_TABLE: &str = "table ip orch_mesh\ndelete table ip orch_mesh\n";

/// Each published UDP port's backends.
fn udp_backends<'a>(ports: impl Iterator<Item = &'a MeshPort>) -> BTreeMap<u32, BTreeSet<String>> {
    ports
        .filter(|p| p.protocol == "udp")
        .map(|p| (p.published_port, p.backends.iter().cloned().collect()))
        .collect()
}

/// UDP has no end of a flow: conntrack keeps sending a client's datagrams to the backend it
/// first picked, gone or not, until the flow idles out. The flows of a backend that left a
/// port are deleted (TCP connections end by themselves, and a draining task finishes its
/// own). Without the `conntrack` tool, flows wait for their timeout.
fn forget_udp_flows(old: &BTreeMap<u32, BTreeSet<String>>, now: &BTreeMap<u32, BTreeSet<String>>) {
    for (port, backends) in old {
        let kept = now.get(port);
        for gone in backends
            .iter()
            .filter(|b| kept.is_none_or(|k| !k.contains(*b)))
        {
            let deleted = Command::new("conntrack")
                .args(["-D", "-p", "udp", "--orig-port-dst", &port.to_string()])
                .args(["--reply-src", gone])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if let Err(e) = deleted {
                debug!(error = %e, "no conntrack tool: UDP flows keep their old backend until idle");
            }
        }
    }
}

/// The mesh's state on this node before a full update has been made real.
const UNKNOWN: &str = "?";

impl Plane {
    /// `node_id` names this node's links; `underlay` is its address for VXLAN.
    pub fn new(node_id: &str, underlay: Ipv4Addr, upstreams: Vec<SocketAddr>) -> Arc<Plane> {
        Arc::new_cyclic(|me| Plane {
            tag: node_id.chars().take(6).collect(),
            underlay,
            upstreams,
            known: Mutex::default(),
            sandboxes: Mutex::default(),
            tasks: Mutex::default(),
            mesh: Mutex::default(),
            me: me.clone(),
            plumbing: Mutex::new(()),
            changed: tokio::sync::Notify::new(),
            runtime: tokio::runtime::Handle::current(),
            sweep: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// Takes in what the dispatcher sent; the loop makes it real.
    pub fn apply(&self, update: &NetworkUpdate) {
        let mut k = self.known.lock();
        if update.full {
            *k = Known::default();
            self.sweep.store(true, std::sync::atomic::Ordering::Relaxed);
            // What an earlier run left (a mesh table, ing0, their rules) is unknown: the next
            // reconcile makes the mesh what this update says, or removes it.
            let mut mesh = self.mesh.lock();
            mesh.endpoint = UNKNOWN.into();
            mesh.table = UNKNOWN.into();
        }
        for id in &update.networks_removed {
            k.networks.remove(id);
        }
        for n in &update.networks {
            k.networks.insert(n.id.clone(), n.clone());
        }
        for p in &update.peers_removed {
            k.peers.remove(&(p.network_id.clone(), p.addr.clone()));
        }
        for p in &update.peers {
            k.peers
                .insert((p.network_id.clone(), p.addr.clone()), p.clone());
        }
        for s in &update.services_removed {
            k.services
                .remove(&(s.network_id.clone(), s.service_id.clone()));
        }
        for s in &update.services {
            k.services
                .insert((s.network_id.clone(), s.service_id.clone()), s.clone());
        }
        k.ingress_addr = update.ingress_addr.clone();
        for p in &update.ports_removed {
            k.ports.remove(&(p.protocol.clone(), p.published_port));
        }
        for p in &update.ports {
            k.ports
                .insert((p.protocol.clone(), p.published_port), p.clone());
        }
        drop(k);
        self.changed.notify_one();
    }

    /// Reconciles whenever the dispatcher's view changes, until `token`.
    pub async fn run(self: Arc<Self>, token: CancellationToken) {
        // Docker rewrites its chains when the engine restarts: the rules that let the
        // overlays' and the mesh's traffic past its FORWARD policy are asserted again.
        let mut recheck = tokio::time::interval(DOCKER_RULES_RECHECK);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = token.cancelled() => break,
                _ = self.changed.notified() => {}
                _ = recheck.tick() => {
                    let plane = self.clone();
                    let _ = tokio::task::spawn_blocking(move || plane.assert_rules()).await;
                    continue;
                }
            }
            let plane = self.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || plane.reconcile()).await {
                warn!(error = %e, "network reconcile panicked");
            }
        }
        for s in self.sandboxes.lock().values() {
            s.resolver.cancel();
        }
    }

    /// The DOCKER-USER rules of what this node has made (none when it has made nothing).
    fn assert_rules(&self) {
        let _one = self.plumbing.lock();
        if self.sandboxes.lock().values().any(|s| s.egress) {
            assert_docker_user(&DOCKER_USER_RULES);
        }
        let endpoint = self.mesh.lock().endpoint.clone();
        if !endpoint.is_empty() && endpoint != UNKNOWN {
            assert_docker_user(&MESH_DOCKER_USER_RULES);
        }
    }

    fn overlay(&self, n: &Network) -> Result<Overlay, NetError> {
        let subnet = orch_api::network::Cidr::parse(&n.subnet).map_err(NetError)?;
        Ok(Overlay {
            node_ns: None,
            node_tag: self.tag.clone(),
            vni: n.vni,
            underlay: self.underlay,
            prefix: subnet.prefix,
        })
    }

    /// Makes the network's sandbox (kept if it exists), its gateway address, egress and DNS.
    fn ensure_sandbox(self: &Arc<Self>, n: &Network) -> Result<(), NetError> {
        if self.sandboxes.lock().contains_key(&n.id) {
            return Ok(());
        }
        let overlay = self.overlay(n)?;
        overlay.ensure()?;
        let sandbox = overlay.sandbox();
        let gateway: Ipv4Addr = n
            .gateway
            .parse()
            .map_err(|_| NetError(format!("bad gateway {:?}", n.gateway)))?;
        // A bridge takes the lowest MAC of its ports unless given one: each task attached
        // would change the gateway's MAC under its neighbours' ARP caches (measured: DNS
        // queries to the gateway lost for 5-40 s after a task started on the node).
        ip(
            Some(&sandbox),
            &[
                "link",
                "set",
                "br0",
                "address",
                &super::overlay::mac_for(gateway),
            ],
        )?;
        let gw_cidr = format!("{gateway}/{}", overlay.prefix);
        if let Err(e) = ip(Some(&sandbox), &["addr", "add", &gw_cidr, "dev", "br0"]) {
            // Kept from an earlier run of the agent (an adopted sandbox).
            if !(e.0.contains("File exists") || e.0.contains("already assigned")) {
                return Err(e);
            }
        }
        let internal = n.spec.as_ref().is_some_and(|s| s.internal);
        if !internal {
            self.egress(&overlay, n.vni)?;
        }
        let resolver = CancellationToken::new();
        match dns::bind_in_netns(&sandbox, SocketAddrV4::new(gateway, 53)) {
            Ok(socket) => {
                let _guard = self.runtime.enter();
                match tokio::net::UdpSocket::from_std(socket) {
                    Ok(socket) => {
                        let lookup: Arc<dyn Lookup> = self.clone();
                        self.runtime.spawn(dns::serve(
                            socket,
                            n.id.clone(),
                            lookup,
                            self.upstreams.clone(),
                            resolver.clone(),
                        ));
                    }
                    Err(e) => warn!(error = %e, network = %n.id, "no DNS resolver"),
                }
            }
            Err(e) => warn!(error = %e, network = %n.id, "no DNS resolver"),
        }
        self.sandboxes.lock().insert(
            n.id.clone(),
            Sandbox {
                overlay,
                peers: BTreeSet::new(),
                resolver,
                egress: !internal,
            },
        );
        Ok(())
    }

    /// The sandbox's way out: a veth to the node's netns, masqueraded on both sides.
    fn egress(&self, overlay: &Overlay, vni: u32) -> Result<(), NetError> {
        let sandbox = overlay.sandbox();
        let host = format!("og{vni}");
        let (node_end, sandbox_end) = egress_link(vni);
        if succeeds(Command::new("ip").args(["link", "show", &host])) {
            // An earlier run of the agent made it (its sandbox was adopted): keep it.
            return Ok(());
        }
        ip(
            None,
            &[
                "link", "add", &host, "type", "veth", "peer", "name", "eg0", "netns", &sandbox,
            ],
        )?;
        ip(
            None,
            &["addr", "add", &format!("{node_end}/31"), "dev", &host],
        )?;
        ip(None, &["link", "set", &host, "up"])?;
        ip(
            Some(&sandbox),
            &["addr", "add", &format!("{sandbox_end}/31"), "dev", "eg0"],
        )?;
        ip(Some(&sandbox), &["link", "set", "eg0", "up"])?;
        ip(
            Some(&sandbox),
            &["route", "replace", "default", "via", &node_end.to_string()],
        )?;
        sysctl_in(&sandbox, "net.ipv4.ip_forward", "1")?;
        nft(
            Some(&sandbox),
            "table ip orch_egress\ndelete table ip orch_egress\ntable ip orch_egress {\n  chain post {\n    type nat hook postrouting priority 100; policy accept;\n    oifname \"eg0\" masquerade\n  }\n}\n",
        )?;
        // The node's side: forward and masquerade what comes from the sandboxes.
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            .map_err(|e| NetError(format!("cannot enable forwarding: {e}")))?;
        nft(
            None,
            "table ip orch_egress\ndelete table ip orch_egress\ntable ip orch_egress {\n  chain post {\n    type nat hook postrouting priority 100; policy accept;\n    iifname \"og*\" oifname != \"og*\" masquerade\n  }\n}\n",
        )?;
        // Docker's FORWARD policy drops forwarded traffic: let the sandboxes' through.
        assert_docker_user(&DOCKER_USER_RULES);
        Ok(())
    }

    fn remove_sandbox(&self, id: &str) {
        if let Some(s) = self.sandboxes.lock().remove(id) {
            s.resolver.cancel();
            let _ = ip(None, &["link", "del", &format!("og{}", s.overlay.vni)]);
            s.overlay.remove();
            debug!(network = %id, "network removed from this node");
        }
    }

    /// Makes the dispatcher's view real: sandboxes, peers, the tasks' VIP tables; removes
    /// networks no task here uses any more.
    pub fn reconcile(self: &Arc<Self>) {
        let _one = self.plumbing.lock();
        let (networks, peers, services, ingress_addr, ports) = {
            let k = self.known.lock();
            (
                k.networks.clone(),
                k.peers.clone(),
                k.services.clone(),
                k.ingress_addr.clone(),
                k.ports.clone(),
            )
        };
        let used: BTreeSet<String> = self
            .tasks
            .lock()
            .values()
            .flat_map(|t| t.attachments.iter().map(|a| a.network_id.clone()))
            .collect();
        for n in networks.values() {
            if let Err(e) = self.ensure_sandbox(n) {
                warn!(error = %e, network = %n.id, "cannot make the network");
                continue;
            }
            let want: BTreeMap<&str, &NetworkPeer> = peers
                .values()
                .filter(|p| p.network_id == n.id)
                .map(|p| (p.addr.as_str(), p))
                .collect();
            let mut sandboxes = self.sandboxes.lock();
            let Some(s) = sandboxes.get_mut(&n.id) else {
                continue;
            };
            for (addr, p) in &want {
                if s.peers.contains(*addr) {
                    continue;
                }
                let (Ok(a), Ok(node)) = (addr.parse(), p.node_addr.parse()) else {
                    continue;
                };
                match s.overlay.add_peer(a, node) {
                    Ok(()) => {
                        s.peers.insert(addr.to_string());
                    }
                    Err(e) => warn!(error = %e, "cannot add an overlay peer"),
                }
            }
            let gone: Vec<String> = s
                .peers
                .iter()
                .filter(|a| !want.contains_key(a.as_str()))
                .cloned()
                .collect();
            for addr in gone {
                if let Ok(a) = addr.parse() {
                    s.overlay.remove_peer(a);
                }
                s.peers.remove(&addr);
            }
        }
        let ingress = networks
            .values()
            .find(|n| n.spec.as_ref().is_some_and(|s| s.ingress));
        self.reconcile_mesh(ingress, &ingress_addr, &ports);
        let stale: Vec<String> = self
            .sandboxes
            .lock()
            .keys()
            .filter(|id| !networks.contains_key(*id) && !used.contains(*id))
            .cloned()
            .collect();
        for id in stale {
            self.remove_sandbox(&id);
        }
        if self.sweep.swap(false, std::sync::atomic::Ordering::Relaxed) {
            let vnis: BTreeSet<u32> = networks.values().map(|n| n.vni).collect();
            self.sweep_sandboxes(&vnis);
        }
        // The tables to write, computed under the lock and written without it: the DNS
        // resolver reads the tasks meanwhile.
        let writes: Vec<(String, String)> =
            self.tasks
                .lock()
                .iter()
                .filter_map(|(task_id, t)| {
                    let table =
                        vip_table(services.values().filter(|s| {
                            t.attachments.iter().any(|a| a.network_id == s.network_id)
                        }));
                    (table != t.vip_table).then(|| (task_id.clone(), table))
                })
                .collect();
        // A service change rewrites the table of every task on its network: a few at once.
        let written: Vec<(String, String)> = std::thread::scope(|scope| {
            let handles: Vec<_> = writes
                .chunks(writes.len().div_ceil(NFT_WRITERS).max(1))
                .map(|chunk| {
                    scope.spawn(move || {
                        chunk
                            .iter()
                            .filter(|(task_id, table)| {
                                match nft(Some(&task_netns(&self.tag, task_id)), table) {
                                    Ok(()) => true,
                                    Err(e) => {
                                        warn!(error = %e, task = %task_id, "cannot write the VIP table");
                                        false
                                    }
                                }
                            })
                            .cloned()
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        });
        let mut tasks = self.tasks.lock();
        for (task_id, table) in written {
            if let Some(t) = tasks.get_mut(&task_id) {
                t.vip_table = table;
            }
        }
        drop(tasks);
        if let Some(n) = ingress {
            self.route_mesh_replies(n, &ingress_addr);
        }
    }

    /// Makes the node's mesh what the dispatcher says: `ing0` on the ingress network with
    /// the node's address, and the `orch_mesh` table; or neither.
    fn reconcile_mesh(
        &self,
        ingress: Option<&Network>,
        addr: &str,
        ports: &BTreeMap<(String, u32), MeshPort>,
    ) {
        let endpoint = match ingress {
            Some(n) if !addr.is_empty() && self.sandboxes.lock().contains_key(&n.id) => {
                match self.ensure_mesh_endpoint(n, addr) {
                    Ok(()) => true,
                    Err(e) => {
                        warn!(error = %e, "cannot make the node's ingress endpoint; trying again");
                        self.retry_soon();
                        false
                    }
                }
            }
            Some(_) if !addr.is_empty() => {
                // The ingress sandbox could not be made (said above): again shortly.
                self.retry_soon();
                false
            }
            _ => {
                self.remove_mesh_endpoint();
                false
            }
        };
        let table = if endpoint {
            mesh_table(ports.values())
        } else {
            String::new()
        };
        let mut mesh = self.mesh.lock();
        if table == mesh.table {
            return;
        }
        let written = if table.is_empty() {
            nft(None, NO_MESH_TABLE)
        } else {
            nft(None, &table)
        };
        match written {
            Ok(()) => {
                mesh.table = table;
                let now: BTreeMap<u32, BTreeSet<String>> = if endpoint {
                    udp_backends(ports.values())
                } else {
                    BTreeMap::new()
                };
                let old = std::mem::replace(&mut mesh.udp_backends, now.clone());
                drop(mesh);
                forget_udp_flows(&old, &now);
            }
            Err(e) => {
                warn!(error = %e, "cannot write the mesh table; trying again");
                drop(mesh);
                self.retry_soon();
            }
        }
    }

    /// Another reconcile in a while (a step of the mesh failed; the dispatcher may send
    /// nothing new for a long time).
    fn retry_soon(&self) {
        let Some(me) = self.me.upgrade() else {
            return;
        };
        self.runtime.spawn(async move {
            tokio::time::sleep(MESH_RETRY).await;
            me.changed.notify_one();
        });
    }

    /// `ing0`: a veth from the ingress sandbox's bridge into the node's netns, with the
    /// node's ingress address (kept when it is there already, from an earlier run).
    fn ensure_mesh_endpoint(&self, n: &Network, addr: &str) -> Result<(), NetError> {
        if self.mesh.lock().endpoint == addr {
            return Ok(());
        }
        let ip_addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| NetError(format!("bad ingress address {addr:?}")))?;
        let overlay = self.overlay(n)?;
        if let Ok(subnet) = orch_api::network::Cidr::parse(&n.subnet) {
            if subnet.contains(u32::from(self.underlay)) {
                return Err(NetError(format!(
                    "the ingress network's subnet {} holds this node's own address {}: recreate the ingress network on another subnet",
                    n.subnet, self.underlay
                )));
            }
        }
        let cidr = format!("{addr}/{}", overlay.prefix);
        let adopted = Command::new("ip")
            .args(["-o", "-4", "addr", "show", "dev", MESH_LINK])
            .output()
            .is_ok_and(|o| {
                o.status.success()
                    && String::from_utf8_lossy(&o.stdout).contains(&format!(" {cidr} "))
            });
        if !adopted {
            let _ = ip(None, &["link", "del", MESH_LINK]);
            let _ = ip(
                Some(&overlay.sandbox()),
                &["link", "del", MESH_LINK_SANDBOX],
            );
            overlay.attach(
                &TaskNetns::Pid(std::process::id()),
                MESH_LINK_SANDBOX,
                MESH_LINK,
                ip_addr,
            )?;
        }
        // Connections to 127.0.0.1:P leave through ing0 (masqueraded there).
        std::fs::write(
            format!("/proc/sys/net/ipv4/conf/{MESH_LINK}/route_localnet"),
            "1",
        )
        .map_err(|e| NetError(format!("cannot set route_localnet: {e}")))?;
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            .map_err(|e| NetError(format!("cannot enable forwarding: {e}")))?;
        assert_docker_user(&MESH_DOCKER_USER_RULES);
        self.mesh.lock().endpoint = addr.to_string();
        debug!(addr, adopted, "ingress endpoint ready");
        Ok(())
    }

    /// Removes `ing0` and its rules when this run made them (or an earlier run may have:
    /// the state is UNKNOWN then).
    fn remove_mesh_endpoint(&self) {
        let made = std::mem::take(&mut self.mesh.lock().endpoint);
        if made.is_empty() {
            return;
        }
        let _ = ip(None, &["link", "del", MESH_LINK]);
        for rule in MESH_DOCKER_USER_RULES {
            while succeeds(Command::new("iptables").arg("-D").args(rule)) {}
        }
    }

    /// Each task on the ingress network sends what its ingress address sends (the mesh's
    /// replies) through the node's endpoint: in local mode the client's address is not NATed,
    /// and the task's default route may be another network's.
    fn route_mesh_replies(&self, ingress: &Network, node_addr: &str) {
        let todo: Vec<(String, String, usize)> = self
            .tasks
            .lock()
            .iter()
            .filter(|(_, t)| t.mesh_gateway != node_addr)
            .filter_map(|(id, t)| {
                let i = t
                    .attachments
                    .iter()
                    .position(|a| a.network_id == ingress.id)?;
                Some((id.clone(), t.attachments[i].addr.clone(), i))
            })
            .collect();
        for (task_id, addr, i) in todo {
            let ns = task_netns(&self.tag, &task_id);
            let dev = format!("eth{i}");
            let routed = mesh_reply_route(&ns, &addr, &dev, &ingress.subnet, node_addr);
            match routed {
                Ok(()) => {
                    if let Some(t) = self.tasks.lock().get_mut(&task_id) {
                        t.mesh_gateway = node_addr.to_string();
                    }
                }
                Err(e) => warn!(error = %e, task = %task_id, "cannot route the mesh's replies"),
            }
        }
    }

    /// Deletes sandboxes on disk (an earlier run's) of networks other than `keep`.
    fn sweep_sandboxes(&self, keep: &BTreeSet<u32>) {
        for (name, vni) in node_sandboxes(&self.tag) {
            if !keep.contains(&vni) {
                let _ = ip(None, &["link", "del", &format!("og{vni}")]);
                let _ = ip(None, &["netns", "del", &name]);
                debug!(sandbox = %name, "removed a sandbox left by an earlier run");
            }
        }
    }

    /// The first network of the task (its DNS resolver's address goes in resolv.conf).
    pub fn dns_server(&self, task: &Task) -> Option<String> {
        let k = self.known.lock();
        task.networks
            .iter()
            .find_map(|a| k.networks.get(&a.network_id))
            .map(|n| n.gateway.clone())
    }

    /// Plumbs the task's netns (its sandbox container's, `pid`) before the task starts.
    pub fn attach(self: &Arc<Self>, task: &Task, pid: u32) -> Result<(), String> {
        let networks: Vec<Network> = {
            let k = self.known.lock();
            task.networks
                .iter()
                .map(|a| {
                    k.networks.get(&a.network_id).cloned().ok_or_else(|| {
                        format!("network {} is not known on this node yet", a.network_id)
                    })
                })
                .collect::<Result<_, _>>()?
        };
        let _one = self.plumbing.lock();
        let name = task_netns(&self.tag, &task.id);
        let _ = ip(None, &["netns", "del", &name]);
        ip(None, &["netns", "attach", &name, &pid.to_string()]).map_err(|e| e.0)?;
        let done = (|| -> Result<(), NetError> {
            let mut default_route = None;
            for (i, (a, n)) in task.networks.iter().zip(&networks).enumerate() {
                self.ensure_sandbox(n)?;
                let overlay = self.overlay(n)?;
                let addr: Ipv4Addr = a
                    .addr
                    .parse()
                    .map_err(|_| NetError(format!("bad task address {:?}", a.addr)))?;
                overlay.attach(
                    &TaskNetns::Named(name.clone()),
                    &task_link(&task.id, i),
                    &format!("eth{i}"),
                    addr,
                )?;
                let internal = n.spec.as_ref().is_some_and(|s| s.internal);
                if !internal && default_route.is_none() {
                    default_route = Some(n.gateway.clone());
                }
            }
            ip(Some(&name), &["link", "set", "lo", "up"])?;
            if let Some(gw) = default_route {
                ip(Some(&name), &["route", "replace", "default", "via", &gw])?;
            }
            Ok(())
        })();
        if let Err(e) = done {
            self.unplumb(&task.id);
            return Err(e.0);
        }
        self.tasks.lock().insert(
            task.id.clone(),
            Attached {
                attachments: task.networks.clone(),
                vip_table: String::new(),
                mesh_gateway: String::new(),
            },
        );
        drop(_one);
        // The VIP table goes in before the task's process starts.
        self.reconcile();
        Ok(())
    }

    pub fn is_attached(&self, task_id: &str) -> bool {
        self.tasks.lock().contains_key(task_id)
    }

    /// A task plumbed by an earlier run of the agent: taken over, nothing made twice.
    pub fn adopt(&self, task: &Task) {
        if task.networks.is_empty() || !netns_exists(&task_netns(&self.tag, &task.id)) {
            return;
        }
        let mut tasks = self.tasks.lock();
        if tasks.contains_key(&task.id) {
            return;
        }
        tasks.insert(
            task.id.clone(),
            Attached {
                attachments: task.networks.clone(),
                vip_table: String::new(),
                mesh_gateway: String::new(),
            },
        );
        drop(tasks);
        self.changed.notify_one();
    }

    /// Deletes the host ends of the task's veths in every sandbox of this node on disk (an
    /// agent that just restarted may not have taken them over yet), and its netns name.
    fn unplumb(&self, task_id: &str) {
        let prefix = task_link_prefix(task_id);
        for (sandbox, _) in node_sandboxes(&self.tag) {
            let Ok(out) = Command::new("ip")
                .args(["-n", &sandbox, "-o", "link", "show"])
                .output()
            else {
                continue;
            };
            // Lines read "12: tNAME@if11: <…>".
            let links: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.split(": ").nth(1))
                .map(|n| n.split('@').next().unwrap_or(n).to_string())
                .filter(|n| n.starts_with(&prefix))
                .collect();
            for link in links {
                let _ = ip(Some(&sandbox), &["link", "del", &link]);
            }
        }
        let _ = ip(None, &["netns", "del", &task_netns(&self.tag, task_id)]);
    }

    /// Undoes a task's plumbing (its veths; the netns goes with its sandbox container).
    pub fn detach(&self, task_id: &str) {
        let _one = self.plumbing.lock();
        self.tasks.lock().remove(task_id);
        self.unplumb(task_id);
        drop(_one);
        self.changed.notify_one();
    }

    /// Removes every sandbox and task netns name of this node (leave, tests).
    pub fn remove_all(&self) {
        let ids: Vec<String> = self.sandboxes.lock().keys().cloned().collect();
        for id in ids {
            self.remove_sandbox(&id);
        }
        remove_node_leftovers(&self.tag);
        self.mesh.lock().endpoint = UNKNOWN.into();
        self.remove_mesh_endpoint();
        let _ = nft(None, NO_MESH_TABLE);
        self.mesh.lock().table.clear();
        // The node netns' own rules (leave: the host as it was).
        let _ = nft(None, "table ip orch_egress\ndelete table ip orch_egress\n");
        for rule in DOCKER_USER_RULES {
            while succeeds(Command::new("iptables").arg("-D").args(rule)) {}
        }
    }
}

/// Deletes the named netns of a node (sandboxes and task names): what a crashed agent, or
/// `leave`, leaves behind.
pub fn remove_node_leftovers(tag: &str) {
    for name in node_netns(tag) {
        let _ = ip(None, &["netns", "del", &name]);
    }
}

impl Lookup for Plane {
    fn lookup(&self, network_id: &str, client: Ipv4Addr, name: &str) -> Answer {
        let client = client.to_string();
        // The asking task's networks: names of services on any of them resolve.
        let networks: BTreeSet<String> = self
            .tasks
            .lock()
            .values()
            .find(|t| {
                t.attachments
                    .iter()
                    .any(|a| a.network_id == network_id && a.addr == client)
            })
            .map(|t| t.attachments.iter().map(|a| a.network_id.clone()).collect())
            .unwrap_or_else(|| BTreeSet::from([network_id.to_string()]));
        let (tasks_of, plain) = match name.strip_prefix("tasks.") {
            Some(rest) => (true, rest),
            None => (false, name),
        };
        let k = self.known.lock();
        let record = k.services.values().find(|s| {
            networks.contains(&s.network_id)
                && (s.name == plain || s.aliases.iter().any(|a| a == plain))
        });
        let Some(s) = record else {
            return Answer::Unknown;
        };
        let addrs: Vec<Ipv4Addr> = if tasks_of || s.vip.is_empty() {
            s.backends.iter().filter_map(|b| b.parse().ok()).collect()
        } else {
            s.vip.parse().ok().into_iter().collect()
        };
        if addrs.is_empty() {
            Answer::NoData
        } else {
            Answer::Addrs(addrs)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(vip: &str, backends: &[&str]) -> ServiceRecord {
        ServiceRecord {
            network_id: "n".into(),
            service_id: vip.into(),
            name: "web".into(),
            vip: vip.into(),
            backends: backends.iter().map(|b| b.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn vip_tables_spread_over_backends_and_refuse_when_none() {
        let services = [
            record("10.0.1.2", &["10.0.1.5", "10.0.1.6"]),
            record("10.0.1.3", &["10.0.1.7"]),
            record("10.0.1.4", &[]),
            record("", &["10.0.1.8"]),
        ];
        let table = vip_table(services.iter());
        assert!(table.contains(
            "ip daddr 10.0.1.2 dnat to numgen random mod 2 map { 0 : 10.0.1.5, 1 : 10.0.1.6 }"
        ));
        assert!(table.contains("ip daddr 10.0.1.3 dnat to 10.0.1.7"));
        assert!(table.contains("ip daddr 10.0.1.4 reject"));
        assert!(!table.contains("10.0.1.8"), "dnsrr services have no VIP");
        assert!(table.starts_with("table ip orch_vip\ndelete table ip orch_vip\n"));
    }

    #[test]
    fn mesh_tables_spread_masquerade_ingress_and_leave_local_alone() {
        let port = |published, proto: &str, local, backends: &[&str]| MeshPort {
            protocol: proto.into(),
            published_port: published,
            target_port: 80,
            local,
            service_id: "s".into(),
            backends: backends.iter().map(|b| b.to_string()).collect(),
        };
        let ports = [
            port(8080, "tcp", false, &["10.0.0.5", "10.0.0.6"]),
            port(5353, "udp", false, &["10.0.0.7"]),
            port(8081, "tcp", true, &["10.0.0.8"]),
            port(8082, "tcp", false, &[]),
            port(8083, "icmp", false, &["10.0.0.9"]),
        ];
        let table = mesh_table(ports.iter());
        let dnat = "fib daddr type local tcp dport 8080 dnat to numgen random mod 2 map { 0 : 10.0.0.5, 1 : 10.0.0.6 }:80";
        assert_eq!(table.matches(dnat).count(), 2, "prerouting and output");
        assert!(table.contains("fib daddr type local udp dport 5353 dnat to 10.0.0.7:80"));
        assert!(table.contains("fib daddr type local tcp dport 8081 dnat to 10.0.0.8:80"));
        assert!(table.contains("ct original proto-dst 8080 masquerade"));
        assert!(table.contains("meta l4proto udp ct original proto-dst 5353 masquerade"));
        assert!(
            !table.contains("proto-dst 8081"),
            "local mode keeps the client's address"
        );
        assert!(
            !table.contains("8082"),
            "no backend: no rule, the kernel refuses"
        );
        assert!(
            !table.contains("8083"),
            "an unknown protocol is never written"
        );
        assert!(table.starts_with("table ip orch_mesh\ndelete table ip orch_mesh\n"));
    }

    #[test]
    fn link_names_fit_and_differ() {
        let a = task_link("abcdefghijklmnopqrstuvwxy", 0);
        assert!(a.len() < 15, "{a}");
        assert_ne!(a, task_link("abcdefghijklmnopqrstuvwxy", 1));
        assert_eq!(
            egress_link(4097),
            (
                Ipv4Addr::new(169, 254, 32, 2),
                Ipv4Addr::new(169, 254, 32, 3)
            )
        );
    }
}
