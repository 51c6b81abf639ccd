//! `stack`: a 10-service stack in a 3-node netns lab, measured in one run:
//! `orch stack deploy` (which waits for every service at once) until all converged, against
//! the same network and services made one by one with `network create` and `service create`
//! (each of which waits for its service, as a deploy script would), `trials` times each,
//! alternating, each time from an empty cluster.

use std::time::Instant;

use anyhow::{bail, Result};

use crate::percentile;

const IMAGE: &str = "orch-test/busybox:1";

fn orch(lab: &orch_lab::Lab, args: &[&str]) -> Result<String> {
    lab.orch_ok("m1", args)
}

fn compose(services: usize, replicas: usize) -> String {
    let mut out = String::from("services:\n");
    for i in 0..services {
        out.push_str(&format!(
            "  s{i}:\n    image: {IMAGE}\n    command: sleep 3600\n    deploy:\n      replicas: {replicas}\n    networks: [net]\n"
        ));
    }
    out.push_str("networks:\n  net:\n");
    out
}

fn empty(lab: &orch_lab::Lab) -> Result<()> {
    let start = Instant::now();
    while start.elapsed().as_secs() < 120 {
        let services = orch(lab, &["service", "ls", "-q"])?;
        let networks = orch(lab, &["network", "ls", "-q", "-f", "name=bench"])?;
        if services.trim().is_empty() && networks.trim().is_empty() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    bail!("the cluster did not empty")
}

pub fn run(orch_bin: &str, trials: usize, services: usize, replicas: usize) -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let lab = crate::netns_lab(scratch.path(), orch_bin)?;
    let file = scratch.path().join("bench.yml");
    std::fs::write(&file, compose(services, replicas))?;
    let file = file.to_string_lossy().into_owned();
    let (mut stack, mut one_by_one) = (Vec::new(), Vec::new());
    for _ in 0..trials {
        let started = Instant::now();
        orch(&lab, &["stack", "deploy", "-q", "-c", &file, "bench"])?;
        stack.push(started.elapsed().as_secs_f64());
        orch(&lab, &["stack", "rm", "bench"])?;
        empty(&lab)?;

        let started = Instant::now();
        orch(&lab, &["network", "create", "bench_net"])?;
        let replicas = replicas.to_string();
        for i in 0..services {
            let name = format!("bench_s{i}");
            orch(
                &lab,
                &[
                    "service",
                    "create",
                    "-q",
                    "--name",
                    &name,
                    "--network",
                    "bench_net",
                    "--replicas",
                    &replicas,
                    IMAGE,
                    "sleep",
                    "3600",
                ],
            )?;
        }
        one_by_one.push(started.elapsed().as_secs_f64());
        for i in 0..services {
            orch(&lab, &["service", "rm", &format!("bench_s{i}")])?;
        }
        let start = Instant::now();
        while orch(&lab, &["network", "rm", "bench_net"]).is_err() && start.elapsed().as_secs() < 60
        {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        empty(&lab)?;
    }
    stack.sort_by(f64::total_cmp);
    one_by_one.sort_by(f64::total_cmp);
    println!(
        "{services} services × {replicas} replicas on one overlay, all converged: stack deploy p50 {:.2} s (min {:.2}, max {:.2}); network + service create one by one p50 {:.2} s (min {:.2}, max {:.2}); ratio of p50s {:.2} ({trials} trials each)",
        percentile(&stack, 50.0),
        percentile(&stack, 0.0),
        percentile(&stack, 100.0),
        percentile(&one_by_one, 50.0),
        percentile(&one_by_one, 0.0),
        percentile(&one_by_one, 100.0),
        percentile(&stack, 50.0) / percentile(&one_by_one, 50.0)
    );
    Ok(())
}
