//! A multi-node orch cluster on one machine, for trying HA on a laptop (`orch lab`) and for
//! the fault-injection suite. Each node is a real `orch` node process with its own data dir
//! and address: in network namespaces on a shared bridge (`--netns`, needs root and iproute2)
//! or on loopback addresses (127.x.y.z). All nodes share the local Docker Engine.
//!
//! Faults: SIGKILL / SIGSTOP / SIGCONT / restart a node process; cut a node off from others
//! (both directions or one) and heal, with iptables inside the node's namespace; add latency
//! to a node's links (`delay`); fill a manager's disk (its raft dir sits on a small tmpfs).
//! `chaos` runs a workload against the lab under fault schedules and checks what the cluster
//! acknowledged against what it holds. The lab's state is saved in
//! `lab.json`, so `orch lab down` removes everything a lab made — processes, containers,
//! namespaces, the bridge, mounts, directories — from any process, even after a crash.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub mod chaos;
mod delay;
pub mod process;

pub use delay::Delay;

/// One node of a lab.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabNode {
    pub name: String,
    pub dir: PathBuf,
    pub ip: String,
    /// The network namespace the node process runs in (netns labs).
    pub netns: Option<String>,
    pub manager: bool,
    /// A tmpfs mounted on the node's raft dir (for disk-full faults).
    #[serde(default)]
    pub tmpfs: bool,
}

impl LabNode {
    pub fn addr(&self) -> String {
        format!("{}:2377", self.ip)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabState {
    pub id: u8,
    pub root: PathBuf,
    pub orch: PathBuf,
    pub bridge: Option<String>,
    pub nodes: Vec<LabNode>,
    pub heartbeat: String,
}

#[derive(Debug, Clone)]
pub struct LabConfig {
    pub root: PathBuf,
    pub managers: usize,
    pub workers: usize,
    pub netns: bool,
    /// Dispatcher heartbeat period, e.g. "1s".
    pub heartbeat: String,
    pub orch: PathBuf,
    /// Distinguishes labs on one machine (subnet 10.77.<id>.0/24 or 127.<id>.<k>.z); 0 picks one.
    pub id: u8,
    /// The last manager's raft dir is a tmpfs of this many MiB (disk-full faults; its log
    /// and socket stay on the real disk, so it can still say what went wrong).
    pub tmpfs_mib: Option<u32>,
}

impl LabConfig {
    /// `managers` managers and no workers, each in its own network namespace, heartbeat 1 s:
    /// the lab the fault, overlay and benchmark runs use.
    pub fn netns_managers(root: PathBuf, managers: usize, orch: PathBuf) -> LabConfig {
        LabConfig {
            root,
            managers,
            workers: 0,
            netns: true,
            heartbeat: "1s".into(),
            orch,
            id: 0,
            tmpfs_mib: None,
        }
    }
}

/// Which traffic a cut drops, seen from the node being cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Both,
    /// The node's outgoing packets to the peers are dropped.
    Outgoing,
    /// Packets from the peers to the node are dropped.
    Incoming,
}

pub struct Lab {
    pub state: LabState,
    /// Tear everything down when dropped (tests); `orch lab up` keeps the lab.
    pub down_on_drop: bool,
}

fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

fn ip(args: &[&str]) -> Result<()> {
    run(Command::new("ip").args(args)).map(|_| ())
}

/// Whether the node process `pid` still holds its files (a killed one may still be exiting).
fn pid_alive(pid: i32) -> bool {
    crate::process::holds_files(pid)
}

fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

impl Lab {
    fn state_file(root: &Path) -> PathBuf {
        root.join("lab.json")
    }

    fn save(&self) -> Result<()> {
        std::fs::write(
            Self::state_file(&self.state.root),
            serde_json::to_vec_pretty(&self.state)?,
        )?;
        Ok(())
    }

    /// The lab described by `root/lab.json`.
    pub fn load(root: &Path) -> Result<Lab> {
        let text = std::fs::read_to_string(Self::state_file(root))
            .with_context(|| format!("no lab in {}", root.display()))?;
        Ok(Lab {
            state: serde_json::from_str(&text)?,
            down_on_drop: false,
        })
    }

    fn pick_id(netns: bool) -> u8 {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(1)
            ^ std::process::id().wrapping_mul(2654435761);
        for k in 0..250u32 {
            let id = (1 + (seed.wrapping_add(k * 7919)) % 250) as u8;
            if !netns || !Path::new(&format!("/sys/class/net/orchlab{id}")).exists() {
                return id;
            }
        }
        1
    }

    /// Creates the lab: network, data dirs, `orch init` on the first manager, joins.
    pub fn up(config: LabConfig) -> Result<Lab> {
        if config.managers == 0 {
            bail!("a lab needs at least one manager");
        }
        if config.managers + config.workers > 200 {
            bail!("at most 200 nodes in a lab");
        }
        std::fs::create_dir_all(&config.root)?;
        if Self::state_file(&config.root).exists() {
            bail!(
                "{} already holds a lab: `orch lab down` it first",
                config.root.display()
            );
        }
        let id = if config.id == 0 {
            Self::pick_id(config.netns)
        } else {
            config.id
        };
        let bridge = config.netns.then(|| format!("orchlab{id}"));
        let mut nodes = Vec::new();
        for i in 0..config.managers + config.workers {
            let manager = i < config.managers;
            let name = if manager {
                format!("m{}", i + 1)
            } else {
                format!("w{}", i + 1 - config.managers)
            };
            let (addr, netns) = if config.netns {
                (
                    format!("10.77.{id}.{}", 10 + i),
                    Some(format!("orchlab{id}-{name}")),
                )
            } else {
                (format!("127.{id}.{}.{}", 100 + i / 200, 1 + i % 200), None)
            };
            let tmpfs = config.tmpfs_mib.is_some() && i + 1 == config.managers;
            nodes.push(LabNode {
                name: name.clone(),
                dir: config.root.join(&name),
                ip: addr,
                netns,
                manager,
                tmpfs,
            });
        }
        let lab = Lab {
            state: LabState {
                id,
                root: config.root.clone(),
                orch: config.orch.clone(),
                bridge,
                nodes,
                heartbeat: config.heartbeat.clone(),
            },
            down_on_drop: true,
        };
        // From here on, a failure tears down what was made (`lab` is dropped with it).
        let mut guard = lab;
        guard.save()?;
        guard.build_network()?;
        if let Some(mib) = config.tmpfs_mib {
            for n in guard.state.nodes.iter().filter(|n| n.tmpfs) {
                std::fs::create_dir_all(n.dir.join("raft"))?;
                run(Command::new("mount")
                    .args([
                        "-t",
                        "tmpfs",
                        "-o",
                        &format!("size={mib}m,mode=0700"),
                        "tmpfs",
                    ])
                    .arg(n.dir.join("raft")))?;
            }
        }
        guard.start_cluster()?;
        guard.down_on_drop = false;
        Ok(guard)
    }

    fn build_network(&self) -> Result<()> {
        let Some(bridge) = &self.state.bridge else {
            return Ok(());
        };
        let id = self.state.id;
        ip(&["link", "add", bridge, "type", "bridge"])?;
        ip(&["addr", "add", &format!("10.77.{id}.1/24"), "dev", bridge])?;
        ip(&["link", "set", bridge, "up"])?;
        // Docker sets the host's FORWARD policy to DROP, which bridged traffic meets when
        // bridge netfilter is on: let the lab's bridge forward between its nodes.
        run(Command::new("iptables")
            .args(["-I", "FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT"]))?;
        for (i, n) in self.state.nodes.iter().enumerate() {
            let ns = n.netns.as_deref().unwrap_or_default();
            let host_end = format!("olab{id}n{i}");
            ip(&["netns", "add", ns])?;
            ip(&[
                "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", ns,
            ])?;
            ip(&["link", "set", &host_end, "master", bridge])?;
            ip(&["link", "set", &host_end, "up"])?;
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{}/24", n.ip),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    /// A command for `node`, inside its namespace when it has one. `nsenter` enters the
    /// network namespace only (`ip netns exec` would also give the node a mount namespace of
    /// its own, where the overlay sandboxes it names with `ip netns` would die with the
    /// process: a restarted agent could not adopt them, as a real node's does).
    fn command(&self, node: &LabNode) -> Command {
        match &node.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}"))
                    .arg("--")
                    .arg(&self.state.orch);
                c
            }
            None => Command::new(&self.state.orch),
        }
    }

    pub fn node(&self, name: &str) -> Result<&LabNode> {
        self.state
            .nodes
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| anyhow!("no node {name} in the lab"))
    }

    /// Runs `orch --data-dir <node> ARGS` (client commands need no namespace: they use the
    /// node's unix socket).
    pub fn orch(&self, name: &str, args: &[&str]) -> Result<Output> {
        let node = self.node(name)?;
        Ok(Command::new(&self.state.orch)
            .arg("--data-dir")
            .arg(&node.dir)
            .args(args)
            .stdin(Stdio::null())
            .output()?)
    }

    /// Like `orch`, but an error unless it exits 0; returns stdout.
    pub fn orch_ok(&self, name: &str, args: &[&str]) -> Result<String> {
        let out = self.orch(name, args)?;
        if !out.status.success() {
            bail!(
                "orch {args:?} on {name}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn start_cluster(&self) -> Result<()> {
        let first = &self.state.nodes[0];
        let hb = self.state.heartbeat.clone();
        let out = self
            .command(first)
            .arg("--data-dir")
            .arg(&first.dir)
            .args([
                "init",
                "--advertise-addr",
                &first.ip,
                "--listen-addr",
                &first.ip,
                "--hostname",
                &first.name,
                "--dispatcher-heartbeat",
                &hb,
            ])
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            bail!(
                "orch init on {}: {}",
                first.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let worker = self
            .orch_ok(&first.name, &["join-token", "-q", "worker"])?
            .trim()
            .to_string();
        let manager = self
            .orch_ok(&first.name, &["join-token", "-q", "manager"])?
            .trim()
            .to_string();
        for n in &self.state.nodes[1..] {
            let token = if n.manager { &manager } else { &worker };
            let out = self
                .command(n)
                .arg("--data-dir")
                .arg(&n.dir)
                .args([
                    "join",
                    "--token",
                    token,
                    "--advertise-addr",
                    &n.ip,
                    "--listen-addr",
                    &n.ip,
                    "--hostname",
                    &n.name,
                ])
                .arg(first.addr())
                .stdin(Stdio::null())
                .output()?;
            if !out.status.success() {
                bail!(
                    "orch join on {}: {}",
                    n.name,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        Ok(())
    }

    pub fn pid(&self, name: &str) -> Option<i32> {
        let node = self.node(name).ok()?;
        std::fs::read_to_string(node.dir.join("orch.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn signal(&self, name: &str, sig: &str) {
        if let Some(pid) = self.pid(name) {
            let _ = Command::new("kill")
                .args([sig, &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
    }

    pub fn alive(&self, name: &str) -> bool {
        self.pid(name).is_some_and(pid_alive)
    }

    /// SIGKILL, and wait until the process is gone.
    pub fn kill(&self, name: &str) {
        let pid = self.pid(name);
        self.signal(name, "-KILL");
        if let Some(pid) = pid {
            wait_until(Duration::from_secs(10), || !pid_alive(pid));
        }
    }

    /// SIGTERM, and wait until the process has exited.
    pub fn stop(&self, name: &str) {
        let pid = self.pid(name);
        self.signal(name, "-TERM");
        if let Some(pid) = pid {
            if !wait_until(Duration::from_secs(15), || !pid_alive(pid)) {
                self.signal(name, "-KILL");
            }
        }
    }

    pub fn pause(&self, name: &str) {
        self.signal(name, "-STOP");
    }

    pub fn resume(&self, name: &str) {
        self.signal(name, "-CONT");
    }

    /// Starts a stopped node's process again (in its namespace), logging to its orch.log.
    pub fn restart(&self, name: &str) -> Result<()> {
        let node = self.node(name)?;
        crate::process::spawn_node(self.command(node), &node.dir)?;
        let sock = node.dir.join("orch.sock");
        if !wait_until(Duration::from_secs(20), || {
            sock.exists() && self.orch(name, &["info"]).is_ok_and(|o| o.status.success())
        }) {
            bail!("{name} did not come back");
        }
        Ok(())
    }

    fn iptables(&self, node: &LabNode, args: &[&str]) -> Result<()> {
        let ns = node
            .netns
            .as_deref()
            .ok_or_else(|| anyhow!("cutting links needs a --netns lab"))?;
        run(Command::new("ip")
            .args(["netns", "exec", ns, "iptables"])
            .args(args))
        .map(|_| ())
    }

    /// Cuts `name` off from `peers` (all other nodes when empty).
    pub fn cut(&self, name: &str, peers: &[&str], direction: Direction) -> Result<()> {
        let node = self.node(name)?;
        let targets: Vec<&LabNode> = self
            .state
            .nodes
            .iter()
            .filter(|n| n.name != name && (peers.is_empty() || peers.contains(&n.name.as_str())))
            .collect();
        for peer in targets {
            if matches!(direction, Direction::Both | Direction::Incoming) {
                self.iptables(node, &["-A", "INPUT", "-s", &peer.ip, "-j", "DROP"])?;
            }
            if matches!(direction, Direction::Both | Direction::Outgoing) {
                self.iptables(node, &["-A", "OUTPUT", "-d", &peer.ip, "-j", "DROP"])?;
            }
        }
        Ok(())
    }

    /// Removes every cut of every node.
    pub fn heal(&self) -> Result<()> {
        for n in self.state.nodes.iter().filter(|n| n.netns.is_some()) {
            self.iptables(n, &["-F", "INPUT"])?;
            self.iptables(n, &["-F", "OUTPUT"])?;
        }
        Ok(())
    }

    /// Fills a tmpfs-backed node's raft disk (leaving nothing free).
    pub fn fill_disk(&self, name: &str) -> Result<()> {
        let node = self.node(name)?;
        if !node.tmpfs {
            bail!("{name}'s raft dir is not on a lab tmpfs");
        }
        let _ = Command::new("dd")
            .arg("if=/dev/zero")
            .arg(format!("of={}", node.dir.join("raft/filler").display()))
            .args(["bs=1M", "count=4096"])
            .stderr(Stdio::null())
            .status();
        Ok(())
    }

    pub fn free_disk(&self, name: &str) -> Result<()> {
        let node = self.node(name)?;
        let _ = std::fs::remove_file(node.dir.join("raft/filler"));
        Ok(())
    }

    /// `node ls --format json` rows from `from`.
    pub fn node_rows(&self, from: &str) -> Option<Vec<Value>> {
        let out = self.orch(from, &["node", "ls", "--format", "json"]).ok()?;
        if !out.status.success() {
            return None;
        }
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The leader's name, as manager `from` sees it.
    pub fn leader(&self, from: &str) -> Option<String> {
        self.node_rows(from)?
            .into_iter()
            .find(|r| r["ManagerStatus"] == "Leader")
            .and_then(|r| r["Hostname"].as_str().map(str::to_string))
    }

    /// Whether manager `name` believes it leads, from its own raft status (`orch info`, which
    /// needs no leader: a manager cut off answers at once); None when it does not answer.
    pub fn claims_leadership(&self, name: &str) -> Option<bool> {
        let out = self.orch(name, &["info"]).ok()?;
        if !out.status.success() {
            return None;
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.trim().strip_prefix(key).map(|v| v.trim().to_string()))
        };
        let (me, leader) = (field("NodeID:")?, field("Leader:")?);
        Some(!me.is_empty() && me == leader)
    }

    /// Managers whose process runs.
    pub fn live_managers(&self) -> Vec<String> {
        self.state
            .nodes
            .iter()
            .filter(|n| n.manager && self.alive(&n.name))
            .map(|n| n.name.clone())
            .collect()
    }

    /// Every node Ready, one leader, every manager reachable, as some live manager sees it.
    pub fn healthy(&self) -> bool {
        self.health().is_ok()
    }

    /// Whether the lab is whole (one leader, every other manager reachable, every node
    /// Ready), or what is still missing (`m3 Down`, `w1 unreachable`), as the last live
    /// manager asked sees it.
    pub fn health(&self) -> std::result::Result<(), String> {
        let mut why = "no live manager answered".to_string();
        for m in self.live_managers() {
            let Some(rows) = self.node_rows(&m) else {
                why = format!("{m} did not answer node ls");
                continue;
            };
            let host = |r: &Value| r["Hostname"].as_str().unwrap_or("?").to_string();
            let mut missing = Vec::new();
            if rows.len() != self.state.nodes.len() {
                missing.push(format!("{} nodes listed", rows.len()));
            }
            for r in &rows {
                if r["Status"] != "Ready" {
                    missing.push(format!(
                        "{} {}",
                        host(r),
                        r["Status"].as_str().unwrap_or("?")
                    ));
                }
                if r["ManagerStatus"] == "Unreachable" {
                    missing.push(format!("{} unreachable", host(r)));
                }
            }
            let leaders = rows
                .iter()
                .filter(|r| r["ManagerStatus"] == "Leader")
                .count();
            if leaders != 1 {
                missing.push(format!("{leaders} leaders"));
            }
            let reachable = rows
                .iter()
                .filter(|r| r["ManagerStatus"] == "Reachable")
                .count();
            let managers = self.state.nodes.iter().filter(|n| n.manager).count();
            if missing.is_empty() && reachable == managers - 1 {
                return Ok(());
            }
            if missing.is_empty() {
                missing.push(format!(
                    "{reachable} of {} followers reachable",
                    managers - 1
                ));
            }
            why = missing.join(", ");
        }
        Err(why)
    }

    /// Node IDs of the lab's nodes (from their data dirs).
    pub fn node_ids(&self) -> Vec<String> {
        self.state
            .nodes
            .iter()
            .filter_map(|n| std::fs::read_to_string(n.dir.join("node.json")).ok())
            .filter_map(|t| {
                serde_json::from_str::<Value>(&t)
                    .ok()
                    .and_then(|v| v["node_id"].as_str().map(str::to_string))
            })
            .collect()
    }

    /// Removes everything the lab made.
    pub fn down(&self) -> Result<()> {
        let ids = self.node_ids();
        for n in &self.state.nodes {
            self.signal(&n.name, "-KILL");
            self.signal(&n.name, "-CONT");
        }
        for n in &self.state.nodes {
            if let Some(pid) = self.pid(&n.name) {
                wait_until(Duration::from_secs(5), || !pid_alive(pid));
            }
        }
        // Twice: the engine finishes a create a killed agent had sent, and that container can
        // appear after the first listing (seen: a lone "created" container after a fault test).
        for pass in 0..2 {
            if pass > 0 {
                std::thread::sleep(Duration::from_millis(500));
            }
            for id in &ids {
                let listed = Command::new("docker")
                    .args(["ps", "-aq", "--filter", &format!("label=orch.node.id={id}")])
                    .output();
                if let Ok(out) = listed {
                    let cids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                        .split_whitespace()
                        .map(str::to_string)
                        .collect();
                    if !cids.is_empty() {
                        let _ = Command::new("docker")
                            .arg("rm")
                            .arg("-f")
                            .args(&cids)
                            .stdout(Stdio::null())
                            .stderr(Stdio::null())
                            .status();
                    }
                }
            }
        }
        // The secrets' tmpfs of the nodes' tasks (under /run/orch/<node ID>).
        for id in &ids {
            orch_agent::data::TaskFiles::remove_node(id);
            // The nodes' overlay sandboxes and task netns names.
            let tag: String = id.chars().take(6).collect();
            orch_agent::net::plane::remove_node_leftovers(&tag);
        }
        for n in &self.state.nodes {
            if let Some(ns) = &n.netns {
                let _ = Command::new("ip")
                    .args(["netns", "del", ns])
                    .stderr(Stdio::null())
                    .status();
            }
            if n.tmpfs {
                let _ = Command::new("umount")
                    .arg("-l")
                    .arg(n.dir.join("raft"))
                    .stderr(Stdio::null())
                    .status();
            }
        }
        if let Some(bridge) = &self.state.bridge {
            let _ = Command::new("iptables")
                .args(["-D", "FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT"])
                .stderr(Stdio::null())
                .status();
            let _ = Command::new("ip")
                .args(["link", "del", bridge])
                .stderr(Stdio::null())
                .status();
        }
        for n in &self.state.nodes {
            let _ = std::fs::remove_dir_all(&n.dir);
        }
        let _ = std::fs::remove_file(Self::state_file(&self.state.root));
        // The lab's own directory goes too, unless something else was put in it.
        let _ = std::fs::remove_dir(&self.state.root);
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.down_on_drop {
            let _ = self.down();
        }
    }
}
