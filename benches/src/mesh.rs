//! `mesh`: the routing mesh in a 3-node netns lab (real VXLAN, nftables DNAT, real
//! containers), measured in one run from the host (an outside client on the lab bridge):
//!
//! - requests/s and latency of short HTTP requests (a new TCP connection each, the same
//!   busybox `httpd` answering) through the mesh: to the node without a task (every request
//!   crosses the overlay) and to a node with one (half stay local); against requests straight
//!   to one task's address (routed through its node, no NAT) — the reference;
//! - the time from `service create -p` to the port answering on every node, against
//!   `docker run -p` to its port answering, alternating, `trials` times each.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::percentile;

const IMAGE: &str = "orch-test/busybox:1";
const WEB: &str = "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www";
/// Concurrent clients of a load run.
const CLIENTS: usize = 4;

fn orch(lab: &orch_lab::Lab, args: &[&str]) -> Result<String> {
    lab.orch_ok("m1", args)
}

fn get(addr: SocketAddr) -> Result<()> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    if !out.starts_with(b"HTTP/1") {
        bail!("{addr} answered {} bytes", out.len());
    }
    Ok(())
}

/// `CLIENTS` clients sending requests to `addr` for `secs`: (requests/s, p50 ms, p99 ms,
/// failures).
fn load(addr: SocketAddr, secs: u64) -> (f64, f64, f64, usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (mut lat, mut failed) = (Vec::new(), 0);
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    match get(addr) {
                        Ok(()) => lat.push(t.elapsed().as_secs_f64() * 1000.0),
                        Err(_) => failed += 1,
                    }
                }
                (lat, failed)
            })
        })
        .collect();
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    let (mut lat, mut failed) = (Vec::new(), 0);
    for c in clients {
        if let Ok((l, f)) = c.join() {
            lat.extend(l);
            failed += f;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    (
        lat.len() as f64 / elapsed,
        percentile(&lat, 50.0),
        percentile(&lat, 99.0),
        failed,
    )
}

fn wait(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) -> Result<Duration> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if ok() {
            return Ok(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    bail!("timed out waiting for {what}")
}

/// A task of `service` running on node `node_id`: its ingress address.
fn task_addr_on(lab: &orch_lab::Lab, service: &str, node_id: &str) -> Result<String> {
    for id in orch(lab, &["service", "ps", service, "-q", "--no-trunc"])?.lines() {
        let v: Value = serde_json::from_str(&orch(lab, &["inspect", id])?)?;
        let t = &v[0];
        if t["Status"]["State"] == "running" && t["NodeID"] == node_id {
            let addr = t["NetworksAttachments"][0]["Addresses"][0]
                .as_str()
                .unwrap_or("")
                .split('/')
                .next()
                .unwrap_or("")
                .to_string();
            return Ok(addr);
        }
    }
    bail!("no running task of {service} on {node_id}")
}

fn sock(ip: &str, port: u16) -> Result<SocketAddr> {
    format!("{ip}:{port}").parse().context("address")
}

pub fn run(orch_bin: &str, trials: usize, secs: u64) -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let lab = crate::netns_lab(scratch.path(), orch_bin)?;
    let ips: BTreeMap<String, String> = lab
        .state
        .nodes
        .iter()
        .map(|n| (n.name.clone(), n.ip.clone()))
        .collect();
    let m1_id = {
        let v: Value = serde_json::from_str(&orch(&lab, &["node", "inspect", "m1"])?)?;
        v[0]["ID"].as_str().unwrap_or("").to_string()
    };

    // Two tasks, on m1 and m2; m3 has none.
    orch(
        &lab,
        &[
            "service",
            "create",
            "-d",
            "--name",
            "web",
            "-p",
            "8080:80",
            "--replicas",
            "2",
            "--constraint",
            "node.hostname!=m3",
            IMAGE,
            "sh",
            "-c",
            WEB,
        ],
    )?;
    let every = |port: u16| {
        ips.values()
            .all(|ip| sock(ip, port).is_ok_and(|a| get(a).is_ok()))
    };
    wait("web on every node", Duration::from_secs(120), || {
        every(8080)
    })?;
    let task = task_addr_on(&lab, "web", &m1_id)?;
    // The host reaches the ingress network through m1 (plain routing, no NAT).
    let route = ["10.0.0.0/24", "via", ips["m1"].as_str()];
    let added = Command::new("ip")
        .args(["route", "add"])
        .args(route)
        .status()?;
    if !added.success() {
        bail!("cannot route 10.0.0.0/24 through m1 (a route exists already?)");
    }
    let result = (|| -> Result<()> {
        wait("the task's own address", Duration::from_secs(10), || {
            get(sock(&task, 80).expect("an address")).is_ok()
        })?;
        let runs = [
            ("straight to a task (reference)", sock(&task, 80)?),
            ("mesh, node with a task (m1)", sock(&ips["m1"], 8080)?),
            ("mesh, node without a task (m3)", sock(&ips["m3"], 8080)?),
        ];
        let mut reference = 0.0;
        for (what, addr) in runs {
            get(addr)?;
            let (rps, p50, p99, failed) = load(addr, secs);
            if reference == 0.0 {
                reference = rps;
            }
            println!(
                "{what}: {rps:.0} requests/s ({:.2} of the reference), latency p50 {p50:.2} ms p99 {p99:.2} ms, {failed} failed ({CLIENTS} clients, {secs} s)",
                rps / reference
            );
        }
        Ok(())
    })();
    let _ = Command::new("ip")
        .args(["route", "del"])
        .args(route)
        .status();
    result?;

    // `service create -p` → the port answers on every node, against `docker run -p`.
    let (mut mesh, mut docker) = (Vec::new(), Vec::new());
    for i in 0..trials {
        let port = 18100 + i as u16;
        let name = format!("t{i}");
        let p = format!("{port}:80");
        let started = Instant::now();
        orch(
            &lab,
            &[
                "service", "create", "-d", "--name", &name, "-p", &p, IMAGE, "sh", "-c", WEB,
            ],
        )?;
        wait(
            "the new port on every node",
            Duration::from_secs(60),
            || every(port),
        )?;
        mesh.push(started.elapsed().as_secs_f64() * 1000.0);
        orch(&lab, &["service", "rm", &name])?;

        let host_port = 18200 + i as u16;
        let started = Instant::now();
        let out = Command::new("docker")
            .args([
                "run",
                "-d",
                "--rm",
                "-p",
                &format!("127.0.0.1:{host_port}:80"),
                IMAGE,
            ])
            .args(["sh", "-c", WEB])
            .stderr(Stdio::inherit())
            .output()?;
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let answered = wait("docker run -p answering", Duration::from_secs(60), || {
            sock("127.0.0.1", host_port).is_ok_and(|a| get(a).is_ok())
        });
        docker.push(started.elapsed().as_secs_f64() * 1000.0);
        let _ = Command::new("docker")
            .args(["rm", "-f", &id])
            .stdout(Stdio::null())
            .status();
        answered?;
    }
    mesh.sort_by(f64::total_cmp);
    docker.sort_by(f64::total_cmp);
    println!(
        "service create -p → answering on all 3 nodes: p50 {:.0} ms, max {:.0} ms; docker run -p → answering: p50 {:.0} ms, max {:.0} ms (ratio of p50s {:.2}, {trials} trials each)",
        percentile(&mesh, 50.0),
        percentile(&mesh, 100.0),
        percentile(&docker, 50.0),
        percentile(&docker, 100.0),
        percentile(&mesh, 50.0) / percentile(&docker, 50.0)
    );
    Ok(())
}
