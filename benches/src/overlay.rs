//! `overlay`: the overlay data plane in a 3-node netns lab (each node its own network
//! namespace, real VXLAN between them, real containers), measured in one run:
//!
//! - RTT and one-stream TCP throughput between two containers on different nodes, over the
//!   overlay, as a ratio to the same between the two nodes' own (underlay) addresses — the
//!   same busybox binary (`ping`, `nc`) run in either netns;
//! - how 100 connections to a service's VIP spread over its 2 tasks;
//! - propagation: from a new task's RUNNING (its status timestamp) to its address being in
//!   `tasks.web` and in the VIP's DNAT table on every node, p50 and p99 over `tasks` tasks;
//! - the time a task's start spends on its sandbox container and plumbing (the agents' logs).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::percentile;

const IMAGE: &str = "orch-test/busybox:1";

fn orch(lab: &orch_lab::Lab, args: &[&str]) -> Result<String> {
    lab.orch_ok("m1", args)
}

fn wait(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("timed out waiting for {what}")
}

/// The static busybox of the test image, copied out to run in any netns.
fn busybox(dir: &Path) -> Result<PathBuf> {
    let out = Command::new("docker").args(["create", IMAGE]).output()?;
    if !out.status.success() {
        bail!("docker create {IMAGE}: run scripts/build-test-images.sh first");
    }
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let path = dir.join("busybox");
    let copied = Command::new("docker")
        .args(["cp", &format!("{id}:/bin/busybox")])
        .arg(&path)
        .status()?;
    let _ = Command::new("docker")
        .args(["rm", &id])
        .stdout(Stdio::null())
        .status();
    if !copied.success() {
        bail!("cannot copy busybox out of {IMAGE}");
    }
    Ok(path)
}

/// A netns to run in: a lab node's, or a task's (its sandbox container's process).
#[derive(Clone)]
enum Ns {
    Node(String),
    Pid(u32),
}

fn in_ns(ns: &Ns, program: &Path) -> Command {
    let mut c = Command::new("nsenter");
    match ns {
        Ns::Node(name) => c.arg(format!("--net=/run/netns/{name}")),
        Ns::Pid(pid) => c.args(["-t", &pid.to_string(), "-n"]),
    };
    c.arg("--").arg(program);
    c
}

/// A running task: (ID, node ID, address on its first network, RUNNING's timestamp, when the
/// store last changed it), times in seconds since the epoch.
type TaskRow = (String, String, String, f64, f64);

/// The running tasks of a service.
fn tasks(lab: &orch_lab::Lab, service: &str) -> Result<Vec<TaskRow>> {
    let ids = orch(lab, &["service", "ps", service, "-q"])?;
    let mut out = Vec::new();
    for id in ids.lines() {
        let v: Value = serde_json::from_str(&orch(lab, &["inspect", id])?)?;
        let t = &v[0];
        if t["Status"]["State"] != "running" {
            continue;
        }
        let addr = t["NetworksAttachments"][0]["Addresses"][0]
            .as_str()
            .unwrap_or("")
            .split('/')
            .next()
            .unwrap_or("")
            .to_string();
        let secs = |v: &Value| {
            v.as_str()
                .and_then(|s| humantime::parse_rfc3339_weak(s).ok())
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map_or(0.0, |d| d.as_secs_f64())
        };
        let at = secs(&t["Status"]["Timestamp"]);
        let stored = secs(&t["UpdatedAt"]);
        out.push((
            t["ID"].as_str().unwrap_or("").to_string(),
            t["NodeID"].as_str().unwrap_or("").to_string(),
            addr,
            at,
            stored,
        ));
    }
    Ok(out)
}

/// The PID of a task's sandbox container.
fn sandbox_pid(task_id: &str) -> Result<u32> {
    let out = Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{.State.Pid}}",
            &format!("orch-sandbox-{task_id}"),
        ])
        .output()?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|_| anyhow!("no sandbox container for task {task_id}"))
}

/// Average RTT (ms) of 20 pings.
fn rtt(bb: &Path, from: &Ns, to: &str) -> Result<f64> {
    let out = in_ns(from, bb)
        .args(["ping", "-c", "20", "-i", "0.05", "-q", to])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("min/avg/max"))
        .ok_or_else(|| anyhow!("ping {to}: {text}"))?;
    let avg = line
        .split('=')
        .nth(1)
        .and_then(|v| v.trim().split('/').nth(1))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("ping output: {line}"))?;
    Ok(avg)
}

const RECEIVER: &str = "import socket\ns = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind(('0.0.0.0', 5001))\ns.listen(1)\nc, _ = s.accept()\nn = 0\nwhile True:\n    b = c.recv(1 << 20)\n    if not b:\n        break\n    n += len(b)\nprint(n)\n";

const SENDER: &str = "import socket, sys\nc = socket.create_connection((sys.argv[1], 5001))\nb = bytes(1 << 20)\nfor _ in range(int(sys.argv[2])):\n    c.sendall(b)\nc.close()\n";

/// One TCP stream of `mib` MiB from `from` to a receiver in `server` at `addr` (python3 with
/// 1 MiB buffers, so the tool is not the limit): Gbit/s, timed until the receiver has it all.
fn throughput(server: &Ns, from: &Ns, addr: &str, mib: u64) -> Result<f64> {
    let listener = in_ns(server, Path::new("python3"))
        .args(["-c", RECEIVER])
        .stdout(Stdio::piped())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(400));
    let start = Instant::now();
    let sent = in_ns(from, Path::new("python3"))
        .args(["-c", SENDER, addr, &mib.to_string()])
        .status()?;
    let received = listener.wait_with_output()?;
    let secs = start.elapsed().as_secs_f64();
    let bytes: u64 = String::from_utf8_lossy(&received.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    if !sent.success() || bytes != mib * 1024 * 1024 {
        bail!("the stream to {addr} failed ({bytes} bytes arrived)");
    }
    Ok((bytes * 8) as f64 / secs / 1e9)
}

/// Whether `addr` is in `tasks.web` (DNS) and in the VIP's DNAT table (nft), seen from
/// `probe`'s netns.
fn visible(bb: &Path, probe: u32, gateway: &str, addr: &str) -> (bool, bool) {
    let dns = in_ns(&Ns::Pid(probe), bb)
        .args(["nslookup", "tasks.web", gateway])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("{addr}\n")));
    let nft = in_ns(&Ns::Pid(probe), Path::new("nft"))
        .args(["list", "table", "ip", "orch_vip"])
        .output()
        .is_ok_and(|o| {
            let text = String::from_utf8_lossy(&o.stdout);
            text.contains(&format!("{addr},")) || text.contains(&format!("{addr} }}"))
        });
    (dns, nft)
}

fn service(lab: &orch_lab::Lab, name: &str, extra: &[&str], command: &[&str]) -> Result<()> {
    let mut args = vec![
        "service",
        "create",
        "-d",
        "--name",
        name,
        "--network",
        "front",
    ];
    args.extend_from_slice(extra);
    args.push(IMAGE);
    args.extend_from_slice(command);
    orch(lab, &args).map(drop)
}

pub fn run(orch_bin: &str, samples: usize) -> Result<()> {
    let orch_path =
        std::fs::canonicalize(orch_bin).with_context(|| format!("--orch {orch_bin}"))?;
    let scratch = tempfile::tempdir()?;
    let bb = busybox(scratch.path())?;
    let mut lab = orch_lab::Lab::up(orch_lab::LabConfig::netns_managers(
        scratch.path().join("lab"),
        3,
        orch_path,
    ))?;
    lab.down_on_drop = true;
    let node_ns: BTreeMap<String, (String, String)> = lab
        .state
        .nodes
        .iter()
        .map(|n| {
            (
                n.name.clone(),
                (n.netns.clone().unwrap_or_default(), n.ip.clone()),
            )
        })
        .collect();
    orch(&lab, &["network", "create", "front"])?;
    let gateway = {
        let v: Value = serde_json::from_str(&orch(&lab, &["network", "inspect", "front"])?)?;
        v[0]["IPAM"]["Config"][0]["Gateway"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    service(
        &lab,
        "srv",
        &["--constraint", "node.hostname==m1"],
        &["sleep", "3600"],
    )?;
    service(
        &lab,
        "cli",
        &["--constraint", "node.hostname==m3"],
        &["sleep", "3600"],
    )?;
    service(&lab, "probe", &["--mode", "global"], &["sleep", "3600"])?;
    service(
        &lab,
        "web",
        &["--replicas", "2", "--constraint", "node.hostname!=m3"],
        &[
            "sh",
            "-c",
            "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www",
        ],
    )?;
    wait("the tasks", Duration::from_secs(120), || {
        [("srv", 1), ("cli", 1), ("probe", 3), ("web", 2)]
            .iter()
            .all(|(s, n)| tasks(&lab, s).is_ok_and(|t| t.len() == *n))
    })?;
    let srv = tasks(&lab, "srv")?.remove(0);
    let cli = tasks(&lab, "cli")?.remove(0);
    let (srv_ns, cli_ns) = (Ns::Pid(sandbox_pid(&srv.0)?), Ns::Pid(sandbox_pid(&cli.0)?));
    let (m1_ns, m1_ip) = node_ns.get("m1").cloned().unwrap_or_default();
    let (m3_ns, _) = node_ns.get("m3").cloned().unwrap_or_default();
    let (m1, m3) = (Ns::Node(m1_ns), Ns::Node(m3_ns));

    let rtt_overlay = rtt(&bb, &cli_ns, &srv.2)?;
    let rtt_underlay = rtt(&bb, &m3, &m1_ip)?;
    let mut gb_overlay = Vec::new();
    let mut gb_underlay = Vec::new();
    for _ in 0..3 {
        gb_overlay.push(throughput(&srv_ns, &cli_ns, &srv.2, 2048)?);
        gb_underlay.push(throughput(&m1, &m3, &m1_ip, 2048)?);
    }
    let best = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
    println!(
        "overlay RTT {rtt_overlay:.3} ms, underlay {rtt_underlay:.3} ms (ratio {:.2}); one TCP stream: overlay {:.2} Gbit/s, underlay {:.2} Gbit/s (ratio {:.2}, best of 3)",
        rtt_overlay / rtt_underlay,
        best(&gb_overlay),
        best(&gb_underlay),
        best(&gb_overlay) / best(&gb_underlay)
    );

    // VIP spread.
    let vip = {
        let v: Value = serde_json::from_str(&orch(&lab, &["service", "inspect", "web"])?)?;
        v[0]["Endpoint"]["VirtualIPs"][0]["Addr"]
            .as_str()
            .unwrap_or("")
            .split('/')
            .next()
            .unwrap_or("")
            .to_string()
    };
    let mut spread: BTreeMap<String, usize> = BTreeMap::new();
    let mut failed = 0;
    for _ in 0..100 {
        let out = in_ns(&cli_ns, Path::new("sh"))
            .args([
                "-c",
                &format!(
                    "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | {} nc -w 2 {vip} 80",
                    bb.display()
                ),
            ])
            .output()?;
        match String::from_utf8_lossy(&out.stdout).lines().last() {
            Some(host) if out.status.success() => *spread.entry(host.to_string()).or_default() += 1,
            _ => failed += 1,
        }
    }
    println!(
        "VIP spread over 100 connections: {:?}, {failed} failed",
        spread.values().collect::<Vec<_>>()
    );

    // Propagation.
    let probes: Vec<u32> = tasks(&lab, "probe")?
        .iter()
        .map(|t| sandbox_pid(&t.0))
        .collect::<Result<_>>()?;
    let mut known: BTreeSet<String> = tasks(&lab, "web")?.into_iter().map(|t| t.0).collect();
    let mut delays = Vec::new();
    for i in 0..samples {
        let replicas = format!("web={}", known.len() + 1);
        orch(&lab, &["service", "scale", "-d", &replicas])?;
        // The new task's address is known from its placement (before it runs), so the probes
        // watch from then on: the resolution is one probe round, not the CLI's polling.
        let mut new_id = None;
        wait("the new task", Duration::from_secs(60), || {
            new_id = orch(&lab, &["service", "ps", "web", "-q", "--no-trunc"])
                .ok()
                .and_then(|ids| {
                    ids.lines()
                        .find(|id| !known.contains(*id))
                        .map(str::to_string)
                });
            new_id.is_some()
        })?;
        let id = new_id.unwrap_or_default();
        let mut addr = String::new();
        wait("the new task's address", Duration::from_secs(60), || {
            addr = orch(&lab, &["inspect", &id])
                .ok()
                .and_then(|text| serde_json::from_str::<Value>(&text).ok())
                .and_then(|v| {
                    v[0]["NetworksAttachments"][0]["Addresses"][0]
                        .as_str()
                        .map(|a| a.split('/').next().unwrap_or("").to_string())
                })
                .unwrap_or_default();
            !addr.is_empty()
        })?;
        // Per probe: when DNS had it, when the VIP table had it.
        let mut seen: Vec<(Option<SystemTime>, Option<SystemTime>)> =
            vec![(None, None); probes.len()];
        let shown = wait(
            "the new task visible on every node",
            Duration::from_secs(60),
            || {
                for (k, probe) in probes.iter().enumerate() {
                    if seen[k].0.is_some() && seen[k].1.is_some() {
                        continue;
                    }
                    let (dns, nft) = visible(&bb, *probe, &gateway, &addr);
                    let now = SystemTime::now();
                    if dns && seen[k].0.is_none() {
                        seen[k].0 = Some(now);
                    }
                    if nft && seen[k].1.is_none() {
                        seen[k].1 = Some(now);
                    }
                }
                seen.iter().all(|(d, n)| d.is_some() && n.is_some())
            },
        );
        let (running_at, stored_at) = tasks(&lab, "web")?
            .into_iter()
            .find(|t| t.0 == id)
            .map(|t| (t.3, t.4))
            .ok_or_else(|| anyhow!("task {id} is visible but not running"))?;
        let secs = |t: &Option<SystemTime>| {
            t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map_or(f64::NAN, |d| d.as_secs_f64() - running_at)
        };
        let detail: Vec<String> = seen
            .iter()
            .map(|(d, n)| format!("dns {:.2}s nft {:.2}s", secs(d), secs(n)))
            .collect();
        if let Err(e) = shown {
            bail!("{e}: task {id} at {addr}: {detail:?}");
        }
        let seen: Vec<Option<SystemTime>> = seen.iter().map(|(d, n)| (*d).max(*n)).collect();
        let last = seen
            .iter()
            .flatten()
            .max()
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0.0, |d| d.as_secs_f64());
        delays.push(((last - running_at) * 1000.0).max(0.0));
        known.insert(id);
        eprintln!(
            "sample {}/{samples}: {:.0} ms (in the store after {:.3}s; {})",
            i + 1,
            delays[delays.len() - 1],
            stored_at - running_at,
            detail.join(", ")
        );
    }
    delays.sort_by(f64::total_cmp);
    println!(
        "propagation (RUNNING -> in tasks.web and the VIP table on all 3 nodes), {} tasks: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        delays.len(),
        percentile(&delays, 50.0),
        percentile(&delays, 99.0),
        delays.last().copied().unwrap_or(f64::NAN)
    );

    // Attach time, from the agents' logs.
    let mut attach = Vec::new();
    for n in &lab.state.nodes {
        let log = std::fs::read_to_string(n.dir.join("orch.log")).unwrap_or_default();
        for line in log.lines().filter(|l| l.contains("networks attached")) {
            if let Some(ms) = line
                .split("elapsed_ms=")
                .nth(1)
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok())
            {
                attach.push(ms);
            }
        }
    }
    attach.sort_by(f64::total_cmp);
    println!(
        "attach (sandbox container + plumbing) per task, {} tasks: p50 {:.0} ms, p99 {:.0} ms",
        attach.len(),
        percentile(&attach, 50.0),
        percentile(&attach, 99.0)
    );
    Ok(())
}
