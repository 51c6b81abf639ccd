//! `engine-api`: what the Docker Engine API costs, in a 3-node netns lab with 10 services of 2
//! replicas, measured in one run against the node's own Docker Engine as the reference:
//! - one request per connection on the unix socket, as a CLI invocation makes them: orch's
//!   `/_ping`, `/info`, `/services?status=true` and a service's `/tasks` against the engine's
//!   `/_ping`, `/info` and `/containers/json` (with the same containers running);
//! - whole `docker` CLI invocations: `docker service ls` and `docker service ps` on orch, and
//!   `orch service ls`, against `docker ps` on the engine.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::percentile;

const ENGINE: &str = "/var/run/docker.sock";

/// One GET on a new connection: the time until the whole answer is read.
fn get(socket: &Path, path: &str) -> Result<f64> {
    let started = Instant::now();
    let mut s = UnixStream::connect(socket).with_context(|| socket.display().to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)?;
    if !answer.starts_with(b"HTTP/1.1 200") {
        bail!(
            "GET {path}: {}",
            String::from_utf8_lossy(&answer[..answer.len().min(200)])
        );
    }
    Ok(started.elapsed().as_secs_f64() * 1e3)
}

fn timed(n: usize, mut f: impl FnMut() -> Result<f64>) -> Result<Vec<f64>> {
    let mut out = (0..n).map(|_| f()).collect::<Result<Vec<f64>>>()?;
    out.sort_by(f64::total_cmp);
    Ok(out)
}

fn command_ms(program: &str, args: &[&str], env: Option<(&str, &str)>) -> Result<f64> {
    let started = Instant::now();
    let mut cmd = Command::new(program);
    cmd.args(args);
    if let Some((k, v)) = env {
        cmd.env(k, v);
    }
    let out = cmd.output()?;
    if !out.status.success() {
        bail!(
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(started.elapsed().as_secs_f64() * 1e3)
}

fn line(what: &str, ms: &[f64], reference: &[f64]) {
    println!(
        "{what:<44} p50 {:>7.2} ms  p99 {:>7.2} ms  ratio to the reference {:.2}",
        percentile(ms, 50.0),
        percentile(ms, 99.0),
        percentile(ms, 50.0) / percentile(reference, 50.0)
    );
}

pub fn run(orch_bin: &str, requests: usize, invocations: usize) -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let lab = crate::netns_lab(scratch.path(), orch_bin)?;
    for i in 0..10 {
        let name = format!("bench{i}");
        lab.orch_ok(
            "m1",
            &[
                "service",
                "create",
                "-q",
                "--name",
                &name,
                "--replicas",
                "2",
                "orch-test/busybox:1",
                "sleep",
                "3600",
            ],
        )?;
    }
    let sock = scratch.path().join("lab/m1/docker.sock");
    let engine = Path::new(ENGINE);
    let service = lab.orch_ok(
        "m1",
        &["service", "inspect", "bench0", "--format", "{{.ID}}"],
    )?;
    let tasks = format!(
        "/v1.44/tasks?filters=%7B%22service%22%3A%7B%22{}%22%3Atrue%7D%7D",
        service.trim()
    );

    println!("one request per connection, {requests} each (reference: the node's Docker Engine)");
    let engine_ping = timed(requests, || get(engine, "/_ping"))?;
    let engine_info = timed(requests, || get(engine, "/info"))?;
    let engine_list = timed(requests, || get(engine, "/containers/json"))?;
    line("engine GET /_ping (reference)", &engine_ping, &engine_ping);
    line(
        "orch   GET /_ping",
        &timed(requests, || get(&sock, "/_ping"))?,
        &engine_ping,
    );
    line("engine GET /info (reference)", &engine_info, &engine_info);
    line(
        "orch   GET /v1.44/info",
        &timed(requests, || get(&sock, "/v1.44/info"))?,
        &engine_info,
    );
    line(
        "engine GET /containers/json (reference)",
        &engine_list,
        &engine_list,
    );
    line(
        "orch   GET /v1.44/services?status=true",
        &timed(requests, || get(&sock, "/v1.44/services?status=true"))?,
        &engine_list,
    );
    line(
        "orch   GET /v1.44/tasks?filters=service",
        &timed(requests, || get(&sock, &tasks))?,
        &engine_list,
    );

    println!("whole CLI invocations, {invocations} each (reference: `docker ps` on the engine)");
    let host = format!("unix://{}", sock.display());
    let config = scratch.path().join("docker-config");
    std::fs::create_dir_all(&config)?;
    let config = config.to_string_lossy().into_owned();
    let docker = |args: &[&str], host: &str| -> Result<f64> {
        let mut all = vec!["-H", host];
        all.extend_from_slice(args);
        command_ms("docker", &all, Some(("DOCKER_CONFIG", &config)))
    };
    let engine_host = format!("unix://{ENGINE}");
    let docker_ps = timed(invocations, || docker(&["ps"], &engine_host))?;
    line(
        "docker ps on the engine (reference)",
        &docker_ps,
        &docker_ps,
    );
    line(
        "docker service ls on orch",
        &timed(invocations, || docker(&["service", "ls"], &host))?,
        &docker_ps,
    );
    line(
        "docker service ps bench0 on orch",
        &timed(invocations, || docker(&["service", "ps", "bench0"], &host))?,
        &docker_ps,
    );
    let data_dir = scratch.path().join("lab/m1");
    let data_dir = data_dir.to_string_lossy().into_owned();
    line(
        "orch service ls",
        &timed(invocations, || {
            command_ms(orch_bin, &["--data-dir", &data_dir, "service", "ls"], None)
        })?,
        &docker_ps,
    );
    Ok(())
}
