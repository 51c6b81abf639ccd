//! Failover with real processes: three `orch` managers on their own loopback addresses; each
//! trial SIGKILLs the leader and times how long until a surviving manager accepts a write
//! (`orch node update`, retried back to back), then restarts the killed one.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use serde_json::Value;

use crate::percentile;

struct Bench {
    orch: PathBuf,
    root: tempfile::TempDir,
    ips: Vec<String>,
}

impl Bench {
    fn dir(&self, i: usize) -> PathBuf {
        self.root.path().join(format!("m{i}"))
    }

    fn orch(&self, i: usize, args: &[&str]) -> Result<std::process::Output> {
        Ok(Command::new(&self.orch)
            .arg("--data-dir")
            .arg(self.dir(i))
            .args(args)
            .stdin(Stdio::null())
            .output()?)
    }

    fn ok(&self, i: usize, args: &[&str]) -> Result<String> {
        let out = self.orch(i, args)?;
        if !out.status.success() {
            bail!(
                "orch {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn pid(&self, i: usize) -> Option<i32> {
        std::fs::read_to_string(self.dir(i).join("orch.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// (leader index, all three Ready and reachable) as manager `from` sees it.
    fn view(&self, from: usize) -> Option<(usize, bool)> {
        let out = self.orch(from, &["node", "ls", "--format", "json"]).ok()?;
        if !out.status.success() {
            return None;
        }
        let rows: Vec<Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let leader = rows.iter().find(|r| r["ManagerStatus"] == "Leader")?;
        let host = leader["Hostname"].as_str()?;
        let index: usize = host.trim_start_matches('m').parse().ok()?;
        let healthy = rows.len() == 3
            && rows.iter().all(|r| {
                r["Status"] == "Ready"
                    && (r["ManagerStatus"] == "Leader" || r["ManagerStatus"] == "Reachable")
            });
        Some((index, healthy))
    }

    fn restart(&self, i: usize) -> Result<()> {
        orch_lab::process::spawn_node(Command::new(&self.orch), &self.dir(i))?;
        Ok(())
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        for i in 1..=3 {
            if let Some(pid) = self.pid(i) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

fn wait(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > timeout {
            return Err(anyhow!("timed out waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

pub fn run(orch: &str, trials: usize) -> Result<()> {
    let orch = std::fs::canonicalize(Path::new(orch)).map_err(|e| anyhow!("{orch}: {e}"))?;
    let block = 1 + (std::process::id() % 200);
    let bench = Bench {
        orch,
        root: tempfile::Builder::new()
            .prefix("orch-bench-failover-")
            .tempdir()?,
        ips: (1..=3).map(|i| format!("127.77.{block}.{i}")).collect(),
    };
    let ip = |i: usize| bench.ips[i - 1].clone();
    bench.ok(
        1,
        &[
            "init",
            "--advertise-addr",
            &ip(1),
            "--listen-addr",
            &ip(1),
            "--hostname",
            "m1",
        ],
    )?;
    let token = bench
        .ok(1, &["join-token", "-q", "manager"])?
        .trim()
        .to_string();
    for i in 2..=3 {
        bench.ok(
            i,
            &[
                "join",
                "--token",
                &token,
                "--advertise-addr",
                &ip(i),
                "--listen-addr",
                &ip(i),
                "--hostname",
                &format!("m{i}"),
                &format!("{}:2377", ip(1)),
            ],
        )?;
    }
    let mut samples = Vec::new();
    for trial in 0..trials {
        wait(Duration::from_secs(30), "a healthy cluster", || {
            bench
                .view(1)
                .or_else(|| bench.view(2))
                .is_some_and(|(_, ok)| ok)
        })?;
        let (leader, _) = bench
            .view(1)
            .or_else(|| bench.view(2))
            .ok_or_else(|| anyhow!("no view"))?;
        let survivor = if leader == 1 { 2 } else { 1 };
        let pid = bench
            .pid(leader)
            .ok_or_else(|| anyhow!("no pid for m{leader}"))?;
        let label = format!("trial={trial}");
        let start = Instant::now();
        Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()?;
        loop {
            let out = bench.orch(
                survivor,
                &[
                    "node",
                    "update",
                    "--label-add",
                    &label,
                    &format!("m{survivor}"),
                ],
            )?;
            if out.status.success() {
                break;
            }
            if start.elapsed() > Duration::from_secs(30) {
                bail!("no write accepted 30 s after killing the leader");
            }
        }
        let took = start.elapsed().as_secs_f64();
        println!("trial {trial}: killed m{leader}, m{survivor} accepted a write after {took:.3} s");
        samples.push(took);
        // Let the killed process's port free up before restarting it.
        wait(
            Duration::from_secs(10),
            "the killed process to exit",
            || !orch_lab::process::holds_files(pid as i32),
        )?;
        bench.restart(leader)?;
    }
    samples.sort_by(f64::total_cmp);
    println!(
        "failover: {trials} trials, leader SIGKILL -> write accepted: median {:.3} s, p90 {:.3} s, max {:.3} s (election timeout {} ms)",
        percentile(&samples, 50.0),
        percentile(&samples, 90.0),
        samples.last().copied().unwrap_or(f64::NAN),
        orch_manager::raft::node::RaftOptions::new(1).election_timeout().as_millis()
    );
    Ok(())
}
