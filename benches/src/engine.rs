//! 50 replicas on the local Docker Engine, create → all running, three ways in one run:
//! orch (`orch service create -d --replicas 50` on a one-node cluster), 50 `docker run -d` 8
//! at a time, and Docker swarm mode's `docker service create -d --replicas 50` (the engine's
//! own swarm, initialized for the run and left afterwards). Each is timed the same way: from
//! the command until `docker ps` counts 50 running containers of the workload.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};

const IMAGE: &str = "orch-test/busybox:1";

fn docker(args: &[&str]) -> Result<String> {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        bail!("docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn count(filter: &str) -> usize {
    docker(&["ps", "-q", "--filter", filter])
        .map(|o| o.lines().count())
        .unwrap_or(0)
}

fn count_all(filter: &str) -> usize {
    docker(&["ps", "-aq", "--filter", filter])
        .map(|o| o.lines().count())
        .unwrap_or(0)
}

fn wait_running(filter: &str, n: usize, started: Instant) -> Result<f64> {
    while count(filter) < n {
        if started.elapsed() > Duration::from_secs(300) {
            bail!("{n} containers ({filter}) not running after 300 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(started.elapsed().as_secs_f64())
}

fn wait_gone(filter: &str) {
    let start = Instant::now();
    while count_all(filter) > 0 && start.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn docker_run(n: usize) -> Result<f64> {
    let started = Instant::now();
    let script = format!("seq {n} | xargs -P 8 -I{{}} docker run -d -q --label orch.bench=run --name orch-bench-run-{{}} {IMAGE} sleep 3600 >/dev/null");
    let status = Command::new("sh").arg("-c").arg(&script).status()?;
    if !status.success() {
        bail!("docker run failed");
    }
    let t = wait_running("label=orch.bench=run", n, started)?;
    let ids = docker(&["ps", "-aq", "--filter", "label=orch.bench=run"])?;
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if !ids.is_empty() {
        let mut args = vec!["rm", "-f"];
        args.extend(ids);
        docker(&args)?;
    }
    Ok(t)
}

fn swarm_available() -> bool {
    docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"]).is_ok()
}

/// With `--with-data`: each container mounts this secret and this config.
const DATA_FLAGS: [&str; 4] = [
    "--secret",
    "bench-secret",
    "--config",
    "source=bench-config,target=/etc/bench.conf",
];

fn swarm(n: usize, extra: &[&str]) -> Result<f64> {
    let started = Instant::now();
    let replicas = n.to_string();
    let mut args = vec![
        "service",
        "create",
        "-d",
        "-q",
        "--no-resolve-image",
        "--name",
        "orch-bench-swarm",
        "--replicas",
        &replicas,
        "--stop-grace-period",
        "1s",
    ];
    args.extend(extra);
    args.extend([IMAGE, "sleep", "3600"]);
    docker(&args)?;
    let t = wait_running(
        "label=com.docker.swarm.service.name=orch-bench-swarm",
        n,
        started,
    )?;
    docker(&["service", "rm", "orch-bench-swarm"])?;
    wait_gone("label=com.docker.swarm.service.name=orch-bench-swarm");
    Ok(t)
}

fn orch(bin: &Path, dir: &Path, n: usize, extra: &[&str]) -> Result<f64> {
    let started = Instant::now();
    let out = Command::new(bin)
        .arg("--data-dir")
        .arg(dir)
        .args([
            "service",
            "create",
            "-d",
            "-q",
            "--name",
            "bench",
            "--replicas",
            &n.to_string(),
            "--stop-grace-period",
            "1s",
        ])
        .args(extra)
        .args([IMAGE, "sleep", "3600"])
        .output()?;
    if !out.status.success() {
        bail!(
            "orch service create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let t = wait_running("label=orch.service.name=bench", n, started)?;
    let rm = Command::new(bin)
        .arg("--data-dir")
        .arg(dir)
        .args(["service", "rm", "bench"])
        .output()?;
    if !rm.status.success() {
        bail!("orch service rm: {}", String::from_utf8_lossy(&rm.stderr));
    }
    wait_gone("label=orch.service.name=bench");
    Ok(t)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A one-node orch cluster for the run, and the engine's swarm mode when it offers it (left
/// again afterwards if this run initialized it).
struct Bench {
    bin: std::path::PathBuf,
    dir: std::path::PathBuf,
    swarm_ok: bool,
    made_swarm: bool,
    _root: tempfile::TempDir,
}

impl Bench {
    fn setup(orch_bin: &str, name: &str, octet: u32) -> Result<Self> {
        let bin = std::fs::canonicalize(orch_bin).map_err(|e| anyhow!("{orch_bin}: {e}"))?;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-test-images.sh");
        if !Command::new("bash").arg(script).status()?.success() {
            bail!("cannot build the test images");
        }
        let root = tempfile::Builder::new()
            .prefix(&format!("orch-bench-{name}-"))
            .tempdir()?;
        let dir = root.path().join("m1");
        let ip = format!("127.{octet}.{}.1", 1 + std::process::id() % 200);
        let init = Command::new(&bin)
            .arg("--data-dir")
            .arg(&dir)
            .args(["init", "--advertise-addr", &ip, "--listen-addr", &ip])
            .output()?;
        if !init.status.success() {
            bail!("orch init: {}", String::from_utf8_lossy(&init.stderr));
        }
        let swarm_ok = swarm_available();
        let made_swarm = swarm_ok
            && docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"])?.trim() != "active";
        let bench = Bench {
            bin,
            dir,
            swarm_ok,
            made_swarm,
            _root: root,
        };
        if made_swarm {
            docker(&[
                "swarm",
                "init",
                "--advertise-addr",
                "127.0.0.1",
                "--listen-addr",
                "127.0.0.1:2477",
            ])?;
        }
        Ok(bench)
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        if self.made_swarm {
            let _ = docker(&["swarm", "leave", "--force"]);
        }
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("orch.pid")) {
            let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
        }
    }
}

/// Creates the secret and config of `--with-data` on orch (and on swarm when it runs).
fn create_data(bench: &Bench) -> Result<()> {
    let secret = bench._root.path().join("secret");
    let config = bench._root.path().join("config");
    std::fs::write(&secret, "s3cr3t-for-the-bench")?;
    std::fs::write(&config, "listen=8080\n")?;
    for (kind, name, file) in [
        ("secret", "bench-secret", &secret),
        ("config", "bench-config", &config),
    ] {
        let file = file.to_string_lossy();
        let out = Command::new(&bench.bin)
            .arg("--data-dir")
            .arg(&bench.dir)
            .args([kind, "create", name, &file])
            .output()?;
        if !out.status.success() {
            bail!(
                "orch {kind} create: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if bench.swarm_ok {
            let _ = docker(&[kind, "rm", name]);
            docker(&[kind, "create", name, &file])?;
        }
    }
    Ok(())
}

pub fn run(orch_bin: &str, replicas: usize, trials: usize, with_data: bool) -> Result<()> {
    let bench = Bench::setup(orch_bin, "engine", 78)?;
    let (bin, dir, swarm_ok) = (&bench.bin, &bench.dir, bench.swarm_ok);
    let extra: &[&str] = if with_data {
        create_data(&bench)?;
        &DATA_FLAGS
    } else {
        &[]
    };
    let mut runs = Vec::new();
    let mut orchs = Vec::new();
    let mut swarms = Vec::new();
    let result = (|| -> Result<()> {
        for trial in 0..trials {
            let r = docker_run(replicas)?;
            let o = orch(bin, dir, replicas, extra)?;
            let s = if swarm_ok {
                Some(swarm(replicas, extra)?)
            } else {
                None
            };
            println!("trial {trial}: docker run x{replicas} (8 at a time) {r:.2} s, orch {o:.2} s, swarm {}", s.map_or("n/a".into(), |s| format!("{s:.2} s")));
            runs.push(r);
            orchs.push(o);
            if let Some(s) = s {
                swarms.push(s);
            }
        }
        Ok(())
    })();
    result?;
    let (r, o) = (median(runs), median(orchs));
    let swarm_text = if swarms.is_empty() {
        "swarm mode not available on this engine".to_string()
    } else {
        let s = median(swarms);
        format!("docker swarm mode {s:.2} s (orch/swarm {:.2}x)", o / s)
    };
    if with_data && swarm_ok {
        let _ = docker(&["secret", "rm", "bench-secret"]);
        let _ = docker(&["config", "rm", "bench-config"]);
    }
    let data = if with_data {
        " (each with a secret and a config)"
    } else {
        ""
    };
    println!("engine-{replicas}{data}: medians of {trials}: orch {o:.2} s, 50 x docker run 8-wide {r:.2} s (orch/docker-run {:.2}x), {swarm_text}", o / r);
    Ok(())
}

fn count_image(label: &str, image: &str) -> usize {
    docker(&["ps", "--filter", label, "--format", "{{.Image}}"])
        .map(|o| o.lines().filter(|i| *i == image).count())
        .unwrap_or(0)
}

fn wait_image(label: &str, image: &str, n: usize, started: Instant) -> Result<f64> {
    while count_image(label, image) < n || count(label) > n {
        if started.elapsed() > Duration::from_secs(600) {
            bail!("{n} containers of {image} not running after 600 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(started.elapsed().as_secs_f64())
}

const V2: &str = "orch-test/busybox:2";

/// 50 replicas updated from :1 to :2, parallelism 10, delay 0, monitor 0, on orch and on
/// Docker swarm mode, in the same run.
pub fn rolling(orch_bin: &str, replicas: usize, trials: usize) -> Result<()> {
    let bench = Bench::setup(orch_bin, "rolling", 79)?;
    let (bin, dir, swarm_ok) = (&bench.bin, &bench.dir, bench.swarm_ok);
    let n = replicas.to_string();
    let orch = |args: &[&str]| -> Result<()> {
        let out = Command::new(bin)
            .arg("--data-dir")
            .arg(dir)
            .args(args)
            .output()?;
        if !out.status.success() {
            bail!("orch {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    };
    let flags = [
        "--update-parallelism",
        "10",
        "--update-delay",
        "0s",
        "--update-monitor",
        "0s",
        "--stop-grace-period",
        "1s",
    ];
    let mut orchs = Vec::new();
    let mut swarms = Vec::new();
    let result = (|| -> Result<()> {
        for trial in 0..trials {
            let mut create = vec![
                "service",
                "create",
                "-q",
                "--name",
                "roll",
                "--replicas",
                &n,
            ];
            create.extend(flags);
            create.extend([IMAGE, "sleep", "3600"]);
            orch(&create)?;
            let started = Instant::now();
            orch(&["service", "update", "-d", "-q", "--image", V2, "roll"])?;
            let o = wait_image("label=orch.service.name=roll", V2, replicas, started)?;
            orch(&["service", "rm", "roll"])?;
            wait_gone("label=orch.service.name=roll");
            orchs.push(o);
            let s = if swarm_ok {
                let label = "label=com.docker.swarm.service.name=orch-bench-roll";
                let mut create = vec![
                    "service",
                    "create",
                    "-q",
                    "--detach=false",
                    "--no-resolve-image",
                    "--name",
                    "orch-bench-roll",
                    "--replicas",
                    &n,
                ];
                create.extend(flags);
                create.extend([IMAGE, "sleep", "3600"]);
                docker(&create)?;
                let started = Instant::now();
                docker(&[
                    "service",
                    "update",
                    "-d",
                    "-q",
                    "--no-resolve-image",
                    "--image",
                    V2,
                    "orch-bench-roll",
                ])?;
                let s = wait_image(label, V2, replicas, started)?;
                docker(&["service", "rm", "orch-bench-roll"])?;
                wait_gone(label);
                swarms.push(s);
                Some(s)
            } else {
                None
            };
            println!(
                "trial {trial}: rolling update of {replicas}: orch {o:.2} s, swarm {}",
                s.map_or("n/a".into(), |s| format!("{s:.2} s"))
            );
        }
        Ok(())
    })();
    result?;
    let o = median(orchs);
    let swarm_text = if swarms.is_empty() {
        "swarm mode not available".to_string()
    } else {
        let s = median(swarms);
        format!("docker swarm mode {s:.2} s (orch/swarm {:.2}x)", o / s)
    };
    println!("rolling-{replicas}: medians of {trials}: orch {o:.2} s, {swarm_text}");
    Ok(())
}
