//! The end-to-end harness: real `orch` node processes on one machine, each with its own data
//! directory and its own loopback address (127.A.B.N, random per cluster so tests run side by
//! side), driven through the `orch` command as a user drives it. Everything a cluster started
//! is killed and removed when it is dropped, even when the test fails.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod netns;

pub fn orch_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_orch"))
}

/// The result of one `orch` invocation.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Self {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn ok(&self) -> bool {
        self.code == 0
    }

    #[track_caller]
    pub fn expect_ok(&self, what: &str) -> &Self {
        assert!(
            self.ok(),
            "{what} failed (exit {}):\nstdout: {}\nstderr: {}",
            self.code,
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Waits until `cond` holds, polling; panics with `what` after `timeout`.
#[track_caller]
pub fn wait_for(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if cond() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub struct Node {
    pub name: String,
    pub dir: PathBuf,
    pub ip: String,
}

impl Node {
    pub fn addr(&self) -> String {
        format!("{}:2377", self.ip)
    }
}

pub struct Cluster {
    pub root: tempfile::TempDir,
    pub nodes: BTreeMap<String, Node>,
    prefix: String,
    next_host: u8,
}

impl Default for Cluster {
    fn default() -> Self {
        Self::new()
    }
}

impl Cluster {
    pub fn new() -> Self {
        let a = 1 + rand_u8() % 250;
        let b = 1 + rand_u8() % 250;
        Cluster {
            root: tempfile::Builder::new()
                .prefix("orch-e2e-")
                .tempdir()
                .expect("tempdir"),
            nodes: BTreeMap::new(),
            prefix: format!("127.{a}.{b}"),
            next_host: 1,
        }
    }

    /// A node's data dir and address, without starting anything.
    pub fn add(&mut self, name: &str) -> &Node {
        let ip = format!("{}.{}", self.prefix, self.next_host);
        self.next_host += 1;
        let dir = self.root.path().join(name);
        self.nodes.insert(
            name.to_string(),
            Node {
                name: name.to_string(),
                dir,
                ip,
            },
        );
        &self.nodes[name]
    }

    pub fn node(&self, name: &str) -> &Node {
        self.nodes
            .get(name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    /// Runs `orch --data-dir <node> ARGS`.
    pub fn orch(&self, name: &str, args: &[&str]) -> Run {
        let node = self.node(name);
        orch_in(&node.dir, args)
    }

    /// `orch init` on a new node `name`, with a 1s heartbeat unless `extra` sets one.
    pub fn init(&mut self, name: &str, extra: &[&str]) -> Run {
        let node = self.add(name);
        let ip = node.ip.clone();
        let mut args = vec![
            "init",
            "--advertise-addr",
            &ip,
            "--listen-addr",
            &ip,
            "--hostname",
            name,
        ];
        if !extra
            .iter()
            .any(|a| a.starts_with("--dispatcher-heartbeat"))
        {
            args.extend(["--dispatcher-heartbeat", "1s"]);
        }
        args.extend(extra);
        self.orch(name, &args)
    }

    pub fn token(&self, from: &str, role: &str) -> String {
        let run = self.orch(from, &["join-token", "-q", role]);
        run.expect_ok("join-token");
        run.stdout.trim().to_string()
    }

    /// `orch join` of a new node `name` through `via`, with the token for `role`.
    pub fn join(&mut self, name: &str, role: &str, via: &str) -> Run {
        let token = self.token(via, role);
        let via_addr = self.node(via).addr();
        self.join_with_token(name, &token, &via_addr, &[])
    }

    pub fn join_with_token(
        &mut self,
        name: &str,
        token: &str,
        via_addr: &str,
        extra: &[&str],
    ) -> Run {
        let node = self.add(name);
        let ip = node.ip.clone();
        let mut args = vec![
            "join",
            "--token",
            token,
            "--advertise-addr",
            &ip,
            "--listen-addr",
            &ip,
            "--hostname",
            name,
        ];
        args.extend(extra);
        args.push(via_addr);
        self.orch(name, &args)
    }

    /// A cluster of `managers` managers (m1 initializes) and `workers` workers.
    pub fn with_nodes(managers: usize, workers: usize, init_extra: &[&str]) -> Self {
        let mut c = Cluster::new();
        c.init("m1", init_extra).expect_ok("init");
        for i in 2..=managers {
            c.join(&format!("m{i}"), "manager", "m1")
                .expect_ok("manager join");
        }
        for i in 1..=workers {
            c.join(&format!("w{i}"), "worker", "m1")
                .expect_ok("worker join");
        }
        c
    }

    pub fn pid(&self, name: &str) -> Option<i32> {
        std::fs::read_to_string(self.node(name).dir.join("orch.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    pub fn signal(&self, name: &str, signal: &str) {
        if let Some(pid) = self.pid(name) {
            let _ = Command::new("kill")
                .args([&format!("-{signal}"), &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
    }

    /// SIGKILLs a node's process and waits until it is gone.
    pub fn kill(&self, name: &str) {
        let pid = self.pid(name);
        self.signal(name, "KILL");
        if let Some(pid) = pid {
            wait_for(Duration::from_secs(10), "process to die", || !alive(pid));
        }
    }

    /// SIGTERMs a node's process and waits until it exits.
    pub fn stop(&self, name: &str) {
        let pid = self.pid(name);
        self.signal(name, "TERM");
        if let Some(pid) = pid {
            wait_for(Duration::from_secs(15), "process to stop", || !alive(pid));
        }
    }

    /// Starts a stopped node's process again (`orch daemon` in the background).
    pub fn restart(&self, name: &str) {
        let node = self.node(name);
        orch_lab::process::spawn_node(Command::new(orch_bin()), &node.dir).expect("spawn daemon");
        wait_for(Duration::from_secs(20), "restarted node to answer", || {
            node.dir.join("orch.sock").exists() && self.orch(name, &["info"]).ok()
        });
    }

    /// `node ls --format json` as seen from `from`.
    pub fn node_ls(&self, from: &str) -> Option<Vec<Value>> {
        let run = self.orch(from, &["node", "ls", "--format", "json"]);
        if !run.ok() {
            return None;
        }
        run.stdout
            .lines()
            .map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The hostname → row map of `node ls` from `from`.
    pub fn node_rows(&self, from: &str) -> Option<BTreeMap<String, Value>> {
        Some(
            self.node_ls(from)?
                .into_iter()
                .map(|r| (r["Hostname"].as_str().unwrap_or("").to_string(), r))
                .collect(),
        )
    }

    pub fn leader(&self, from: &str) -> Option<String> {
        self.node_rows(from)?
            .into_iter()
            .find(|(_, r)| r["ManagerStatus"] == "Leader")
            .map(|(h, _)| h)
    }

    /// The leader as `from` sees it, waiting up to 20 s: a node that just
    /// restarted learns who leads only from the leader's next message.
    pub fn wait_leader(&self, from: &str) -> String {
        let mut found = None;
        wait_for(Duration::from_secs(20), "a leader", || {
            found = self.leader(from);
            found.is_some()
        });
        found.unwrap_or_default()
    }

    pub fn inspect(&self, from: &str, kind: &str, what: &str) -> Option<Value> {
        let run = self.orch(from, &[kind, "inspect", what]);
        if !run.ok() {
            return None;
        }
        serde_json::from_str::<Value>(&run.stdout)
            .ok()
            .and_then(|v| v.get(0).cloned())
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.node(name).dir.join("orch.log")).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        for name in &names {
            if let Some(pid) = self.pid(name) {
                for sig in ["-KILL", "-CONT"] {
                    let _ = Command::new("kill")
                        .args([sig, &pid.to_string()])
                        .stderr(Stdio::null())
                        .status();
                }
            }
        }
        if std::thread::panicking() {
            for name in &names {
                let log = self.log(name);
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("----- {name} log (last lines) -----");
                for line in tail.into_iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
        remove_containers_of(&self.root.path().to_string_lossy());
    }
}

/// Removes every container the nodes under `root` created (labelled with their node IDs).
pub fn remove_containers_of(root: &str) {
    for id in node_ids_under(Path::new(root)) {
        // The secrets tmpfs a killed node left under /run/orch/<node ID>.
        orch_agent::data::TaskFiles::remove_node(&id);
        let ids = Command::new("docker")
            .args(["ps", "-aq", "--filter", &format!("label=orch.node.id={id}")])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .arg("rm")
                .arg("-f")
                .args(&ids)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn node_ids_under(root: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            std::fs::read_to_string(e.path().join("node.json"))
                .ok()
                .or_else(|| std::fs::read_to_string(e.path().join("node-id")).ok())
        })
        .filter_map(|text| {
            serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["node_id"].as_str().map(str::to_string))
        })
        .collect()
}

/// Builds the registry-free test images (orch-test/busybox:1 and :2) once per test binary.
pub fn test_images() {
    static BUILT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let result = BUILT.get_or_init(|| {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/build-test-images.sh");
        let out = Command::new("bash")
            .arg(&script)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
    if let Err(e) = result {
        panic!("building the test images failed:\n{e}");
    }
}

/// A container as the engine sees it.
#[derive(Debug, Clone)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub running: bool,
    pub node_id: String,
    pub task_id: String,
    pub image: String,
    pub service: String,
}

impl Cluster {
    /// Node ID of a node of this cluster.
    pub fn node_id(&self, name: &str) -> String {
        let text =
            std::fs::read_to_string(self.node(name).dir.join("node.json")).unwrap_or_default();
        serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["node_id"].as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// Every container of this cluster's nodes, running or not.
    pub fn containers(&self) -> Vec<Container> {
        containers_under(self.root.path())
    }
}

/// Every container of the nodes whose data dirs are under `root`, running or not.
pub fn containers_under(root: &Path) -> Vec<Container> {
    {
        let mut out = Vec::new();
        for node_id in node_ids_under(root) {
            let listed = Command::new("docker")
                .args([
                    "ps",
                    "-a",
                    "--filter",
                    &format!("label=orch.node.id={node_id}"),
                    "--format",
                    "{{.ID}}|{{.Names}}|{{.State}}|{{.Label \"orch.task.id\"}}|{{.Image}}|{{.Label \"orch.service.name\"}}",
                ])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            for line in listed.lines() {
                let parts: Vec<&str> = line.split('|').collect();
                if parts.len() == 6 {
                    out.push(Container {
                        id: parts[0].to_string(),
                        name: parts[1].to_string(),
                        running: parts[2] == "running",
                        node_id: node_id.clone(),
                        task_id: parts[3].to_string(),
                        image: parts[4].to_string(),
                        service: parts[5].to_string(),
                    });
                }
            }
        }
        out
    }
}

impl Cluster {
    /// `service ps --format json` rows.
    pub fn service_ps(&self, from: &str, service: &str) -> Vec<Value> {
        let run = self.orch(
            from,
            &["service", "ps", "--no-trunc", "--format", "json", service],
        );
        run.stdout
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Running tasks of `service` per node hostname, from `service ps`.
    pub fn running_per_node(&self, from: &str, service: &str) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for row in self.service_ps(from, service) {
            if row["DesiredState"] == "Running"
                && row["CurrentState"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("Running"))
            {
                *out.entry(row["Node"].as_str().unwrap_or("").to_string())
                    .or_default() += 1;
            }
        }
        out
    }
}

pub fn orch_in(dir: &Path, args: &[&str]) -> Run {
    let out = Command::new(orch_bin())
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run orch");
    Run::from(out)
}

pub fn alive(pid: i32) -> bool {
    // A zombie counts as dead once every thread has exited (until then it holds its files,
    // the pid-file lock among them).
    orch_lab::process::holds_files(pid)
}

fn rand_u8() -> u8 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(7);
    let pid = std::process::id();
    ((nanos ^ (pid.wrapping_mul(2654435761))) >> 3) as u8
}
