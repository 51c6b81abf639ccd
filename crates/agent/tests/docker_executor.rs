//! The Docker executor against the real engine, with the local images that
//! `scripts/build-test-images.sh` builds (no registry is needed). Each test acts as its own
//! node (a random node ID), so it only sees its own containers, and removes them when it ends.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures::StreamExt;
use orch_agent::exec::docker::DockerExecutor;
use orch_agent::exec::{labels, ContainerInfo, ExecError, Executor, Health, LogLine, LogOptions};
use orch_api::ids::new_id;
use orch_api::pb::{
    ContainerSpec, HealthConfig, Mount, ResourceLimits, ResourceRequirements, Task, TaskSpec,
};

const IMAGE: &str = "orch-test/busybox:1";
const DOCKER_HOST: &str = "unix:///var/run/docker.sock";
const SECOND: i64 = 1_000_000_000;

/// Builds the test images once per test binary; every test fails clearly if that fails.
fn images_ready() {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/build-test-images.sh");
        let out = Command::new("bash")
            .arg(&script)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if out.status.success() {
            return Ok(());
        }
        Err(format!(
            "{} failed ({}):\n{}{}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    });
    if let Err(e) = built {
        panic!("the test images are not there: {e}");
    }
}

/// A node of its own for one test: its executor, and its containers removed on drop (even
/// when the test fails).
struct Node {
    id: String,
    exec: DockerExecutor,
}

impl Node {
    async fn new() -> Node {
        images_ready();
        let id = format!("exectest-{}", new_id());
        Node {
            exec: DockerExecutor::new(docker().await, &id),
            id,
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let filter = format!("label={}={}", labels::NODE_ID, self.id);
        let Ok(out) = Command::new("docker")
            .args(["ps", "-aq", "--filter", &filter])
            .output()
        else {
            return;
        };
        let listed = String::from_utf8_lossy(&out.stdout).into_owned();
        let ids: Vec<&str> = listed.split_whitespace().collect();
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f", "-v"])
                .args(&ids)
                .output();
        }
    }
}

async fn docker() -> bollard::Docker {
    orch_agent::engine::connect(DOCKER_HOST)
        .await
        .expect("the Docker Engine answers")
}

fn spec(args: &[&str]) -> ContainerSpec {
    ContainerSpec {
        image: IMAGE.to_string(),
        args: args.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn with_grace(mut spec: ContainerSpec, nanos: i64) -> ContainerSpec {
    spec.stop_grace_period = nanos;
    spec.has_stop_grace_period = true;
    spec
}

fn task(container: ContainerSpec) -> Task {
    Task {
        id: new_id(),
        service_id: new_id(),
        service_name: "exectest".to_string(),
        slot: 1,
        spec: Some(TaskSpec {
            container: Some(container),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn within<T>(secs: u64, what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {secs}s"))
}

/// prepare, create and start.
async fn run(node: &Node, t: &Task) -> String {
    node.exec.prepare(t).await.expect("prepare");
    let id = node.exec.create(t).await.expect("create");
    node.exec.start(t).await.expect("start");
    id
}

async fn wait(node: &Node, t: &Task) -> ContainerInfo {
    within(30, "wait", node.exec.wait(t)).await.expect("wait")
}

async fn inspect(node: &Node, t: &Task) -> ContainerInfo {
    node.exec
        .inspect(t)
        .await
        .expect("inspect")
        .expect("the task has a container")
}

async fn read_logs(node: &Node, t: &Task, timestamps: bool) -> Vec<LogLine> {
    let options = LogOptions {
        timestamps,
        ..Default::default()
    };
    let stream = node.exec.logs(t, options).await.expect("logs");
    let lines: Vec<_> = within(10, "logs", stream.collect::<Vec<_>>()).await;
    lines.into_iter().map(|l| l.expect("log line")).collect()
}

fn stdout_text(lines: &[LogLine]) -> String {
    lines
        .iter()
        .filter(|l| l.stream == 1)
        .map(|l| String::from_utf8_lossy(&l.data).into_owned())
        .collect()
}

async fn poll_health(node: &Node, t: &Task, want: Health) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let health = inspect(node, t).await.health;
        if health == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "health is {health:?} after 10s, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn full_lifecycle() {
    let node = Node::new().await;
    let t = task(with_grace(spec(&[]), SECOND)); // the image's `sleep 3600`
    let id = run(&node, &t).await;

    let info = inspect(&node, &t).await;
    assert_eq!(info.id, id);
    assert_eq!(info.task_id, t.id);
    assert!(info.running, "{info:?}");
    assert!(info.pid > 0, "{info:?}");
    assert_eq!(info.exit_code, None);
    assert_eq!(info.health, Health::None);
    node.exec
        .start(&t)
        .await
        .expect("starting a started container is fine");

    within(10, "stop", node.exec.stop(&t)).await.expect("stop");
    let done = wait(&node, &t).await;
    assert!(!done.running);
    // `sleep` as PID 1 ignores SIGTERM: killed after the grace period.
    assert_eq!(done.exit_code, Some(137), "{done:?}");
    node.exec
        .stop(&t)
        .await
        .expect("stopping a stopped container is fine");

    node.exec.remove(&t).await.expect("remove");
    assert_eq!(node.exec.inspect(&t).await.expect("inspect"), None);
    node.exec
        .remove(&t)
        .await
        .expect("removing a missing container is fine");
    node.exec
        .stop(&t)
        .await
        .expect("stopping a missing container is fine");
    node.exec
        .remove_container(&id)
        .await
        .expect("removing a missing ID is fine");
    assert!(matches!(
        node.exec.wait(&t).await,
        Err(ExecError::Failed(_))
    ));
    assert!(matches!(
        node.exec.start(&t).await,
        Err(ExecError::Failed(_))
    ));
}

#[tokio::test]
async fn exit_code_is_reported() {
    let node = Node::new().await;
    let mut s = spec(&["echo first; sleep 1; echo second; exit 3"]);
    s.command = vec!["sh".into(), "-c".into()];
    let t = task(s);
    run(&node, &t).await;
    // Following the logs ends when the container exits.
    let follow = LogOptions {
        follow: true,
        ..Default::default()
    };
    let stream = node.exec.logs(&t, follow).await.expect("logs");
    let lines: Vec<_> = within(10, "following logs", stream.collect::<Vec<_>>()).await;
    let lines: Vec<_> = lines.into_iter().map(|l| l.expect("log line")).collect();
    assert_eq!(stdout_text(&lines), "first\nsecond\n");
    let done = wait(&node, &t).await;
    assert_eq!(done.exit_code, Some(3), "{done:?}");
    assert!(!done.running);
    assert_eq!(done.task_id, t.id);
    assert_eq!(inspect(&node, &t).await.exit_code, Some(3));
}

#[tokio::test]
async fn create_is_idempotent() {
    let node = Node::new().await;
    let t = task(spec(&[]));
    node.exec.prepare(&t).await.expect("prepare");
    let first = node.exec.create(&t).await.expect("create");
    let second = node.exec.create(&t).await.expect("create again");
    assert_eq!(first, second);
    let listed = node.exec.list().await.expect("list");
    assert_eq!(listed.len(), 1, "{listed:?}");
    // Created, never started: no exit code yet.
    assert_eq!(listed[0].exit_code, None);
    assert!(!listed[0].running);
}

#[tokio::test]
async fn unknown_image_is_rejected() {
    let node = Node::new().await;
    let t = task(ContainerSpec {
        image: "orch-test/does-not-exist:7".into(),
        ..Default::default()
    });
    match within(120, "prepare", node.exec.prepare(&t)).await {
        Err(ExecError::Rejected(message)) => assert!(!message.is_empty()),
        other => panic!("want Rejected, got {other:?}"),
    }
    // Create without the image is refused too.
    assert!(matches!(
        node.exec.create(&t).await,
        Err(ExecError::Rejected(_))
    ));
}

#[tokio::test]
async fn list_shows_only_this_nodes_containers() {
    let node = Node::new().await;
    let other = Node::new().await;
    let mine = task(spec(&["true"]));
    let theirs = task(spec(&[]));
    run(&node, &mine).await;
    run(&other, &theirs).await;
    wait(&node, &mine).await;

    let listed = node.exec.list().await.expect("list");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].task_id, mine.id);
    assert_eq!(listed[0].exit_code, Some(0));
    let listed = other.exec.list().await.expect("list");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].task_id, theirs.id);
    assert!(listed[0].running);

    // Another node's container is invisible and untouchable by name or ID.
    let mut theirs_here = theirs.clone();
    theirs_here.node_id = node.id.clone();
    assert_eq!(
        node.exec.inspect(&theirs_here).await.expect("inspect"),
        None
    );
    node.exec.remove(&theirs_here).await.expect("remove");
    node.exec
        .remove_container(&listed[0].id)
        .await
        .expect("remove_container");
    assert!(inspect(&other, &theirs).await.running);
}

#[tokio::test]
async fn spec_reaches_the_container() {
    let node = Node::new().await;
    let mut s = spec(&["sh", "-c", "echo $FOO; pwd; id -u; echo oops >&2"]);
    s.env = vec!["FOO=bar".into()];
    s.dir = "/tmp".into();
    s.user = "1000".into();
    s.hostname = "exechost".into();
    s.labels = HashMap::from([("team".to_string(), "blue".to_string())]);
    s.stop_signal = "SIGUSR1".into();
    let t = task(with_grace(s, 7 * SECOND));
    let id = run(&node, &t).await;
    assert_eq!(wait(&node, &t).await.exit_code, Some(0));

    let lines = read_logs(&node, &t, false).await;
    assert_eq!(stdout_text(&lines), "bar\n/tmp\n1000\n");
    let stderr: Vec<_> = lines.iter().filter(|l| l.stream == 2).collect();
    assert_eq!(stderr.len(), 1, "{lines:?}");
    assert_eq!(stderr[0].data, b"oops\n");
    assert!(lines.iter().all(|l| l.timestamp == 0));

    let stamped = read_logs(&node, &t, true).await;
    assert_eq!(stdout_text(&stamped), "bar\n/tmp\n1000\n");
    let now = orch_api::now_nanos();
    assert!(stamped
        .iter()
        .all(|l| l.timestamp > now - 600 * SECOND && l.timestamp <= now));
    let tail = LogOptions {
        tail: Some(1),
        ..Default::default()
    };
    let last: Vec<_> = node
        .exec
        .logs(&t, tail)
        .await
        .expect("logs")
        .collect()
        .await;
    assert_eq!(last.len(), 1, "{last:?}");

    let c = docker()
        .await
        .inspect_container(&id, None)
        .await
        .expect("inspect");
    let config = c.config.expect("config");
    let got = config.labels.expect("labels");
    assert_eq!(got.get("team").map(String::as_str), Some("blue"));
    assert_eq!(got.get(labels::NODE_ID), Some(&node.id));
    assert_eq!(got.get(labels::TASK_ID), Some(&t.id));
    assert_eq!(got.get(labels::SERVICE_ID), Some(&t.service_id));
    assert_eq!(
        got.get(labels::SERVICE_NAME).map(String::as_str),
        Some("exectest")
    );
    assert_eq!(got.get(labels::TASK_SLOT).map(String::as_str), Some("1"));
    assert_eq!(config.hostname.as_deref(), Some("exechost"));
    assert_eq!(config.stop_signal.as_deref(), Some("SIGUSR1"));
    assert_eq!(config.stop_timeout, Some(7));
    assert_eq!(
        c.name.as_deref(),
        Some(format!("/exectest.1.{}", t.id).as_str())
    );
}

#[tokio::test]
async fn healthchecks_report_healthy_and_unhealthy() {
    let node = Node::new().await;
    let check = |cmd: &str, retries: i32| HealthConfig {
        test: vec!["CMD-SHELL".into(), cmd.into()],
        interval: SECOND / 5,
        retries,
        ..Default::default()
    };
    let mut none = spec(&[]);
    none.healthcheck = Some(HealthConfig {
        test: vec!["NONE".into()],
        ..Default::default()
    });
    let none = task(none);
    let none_id = run(&node, &none).await;
    assert_eq!(inspect(&node, &none).await.health, Health::None);
    let c = docker()
        .await
        .inspect_container(&none_id, None)
        .await
        .expect("inspect");
    let test = c.config.and_then(|c| c.healthcheck).and_then(|h| h.test);
    assert_eq!(test, Some(vec!["NONE".to_string()]));

    let mut good = spec(&[]);
    good.healthcheck = Some(check("true", 0));
    let mut bad = spec(&[]);
    bad.healthcheck = Some(check("false", 1));
    let (good, bad) = (task(good), task(bad));
    run(&node, &good).await;
    run(&node, &bad).await;
    poll_health(&node, &good, Health::Healthy).await;
    poll_health(&node, &bad, Health::Unhealthy).await;
    assert!(inspect(&node, &bad).await.running);
}

#[tokio::test]
async fn stop_honours_the_grace_period() {
    let node = Node::new().await;
    let t = task(with_grace(
        spec(&["sh", "-c", "trap '' TERM; sleep 100"]),
        SECOND,
    ));
    run(&node, &t).await;
    // wait blocks while the container runs, and resolves when stop kills it.
    let (done, took) = tokio::join!(wait(&node, &t), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = Instant::now();
        within(20, "stop", node.exec.stop(&t)).await.expect("stop");
        started.elapsed()
    });
    assert!(
        took >= Duration::from_millis(800) && took <= Duration::from_secs(5),
        "stop took {took:?}"
    );
    assert_eq!(done.exit_code, Some(137), "{done:?}");
}

#[tokio::test]
async fn mounts_reach_the_container() {
    let node = Node::new().await;
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("hello"), "from the host\n").expect("write");
    let mut s = spec(&[
        "sh",
        "-c",
        "cat /data/hello; touch /data/x || echo ro; df -k /scratch",
    ]);
    s.mounts = vec![
        Mount {
            r#type: "bind".into(),
            source: dir.path().display().to_string(),
            target: "/data".into(),
            read_only: true,
            ..Default::default()
        },
        Mount {
            r#type: "tmpfs".into(),
            target: "/scratch".into(),
            tmpfs_size_bytes: 4 << 20,
            ..Default::default()
        },
        Mount {
            r#type: "volume".into(),
            target: "/vol".into(),
            ..Default::default()
        },
    ];
    let t = task(s);
    run(&node, &t).await;
    wait(&node, &t).await;
    let out = stdout_text(&read_logs(&node, &t, false).await);
    assert!(out.starts_with("from the host\nro\n"), "{out}");
    assert!(out.contains("tmpfs") && out.contains("4096"), "{out}");
    assert!(!dir.path().join("x").exists());
}

#[tokio::test]
async fn bad_mounts_are_rejected() {
    let node = Node::new().await;
    let mut s = spec(&[]);
    s.mounts = vec![Mount {
        r#type: "bind".into(),
        source: "/does/not/exist/anywhere".into(),
        target: "/data".into(),
        ..Default::default()
    }];
    match node.exec.create(&task(s)).await {
        Err(ExecError::Rejected(message)) => assert!(message.contains("/does/not/exist")),
        other => panic!("want Rejected, got {other:?}"),
    }
}

#[tokio::test]
async fn resource_limits_and_container_options_land_in_the_container() {
    let node = Node::new().await;
    let mut t = task(spec(&[]));
    if let Some(task_spec) = t.spec.as_mut() {
        task_spec.resources = Some(ResourceRequirements {
            limits: Some(ResourceLimits {
                nano_cpus: SECOND / 2,
                memory_bytes: 64 << 20,
                pids: 64,
            }),
            reservations: None,
        });
        if let Some(c) = task_spec.container.as_mut() {
            // What a stack file can say of the container (`stack deploy`).
            c.dns = vec!["10.9.9.9".into()];
            c.dns_search = vec!["example.test".into()];
            c.hosts = vec!["db.test:10.1.2.3".into()];
            c.cap_add = vec!["NET_ADMIN".into()];
            c.cap_drop = vec!["MKNOD".into()];
            c.sysctls = [("kernel.msgmax".to_string(), "65536".to_string())].into();
            c.ulimits = vec![orch_api::pb::Ulimit {
                name: "nofile".into(),
                soft: 1024,
                hard: 2048,
            }];
            c.init = Some(true);
            c.tty = true;
            c.read_only = true;
        }
    }
    let id = run(&node, &t).await;
    let c = docker()
        .await
        .inspect_container(&id, None)
        .await
        .expect("inspect");
    let host = c.host_config.expect("host config");
    assert_eq!(host.memory, Some(64 << 20));
    assert_eq!(host.nano_cpus, Some(SECOND / 2));
    assert_eq!(host.pids_limit, Some(64));
    assert_eq!(host.dns, Some(vec!["10.9.9.9".to_string()]));
    assert_eq!(host.dns_search, Some(vec!["example.test".to_string()]));
    assert_eq!(host.extra_hosts, Some(vec!["db.test:10.1.2.3".to_string()]));
    assert_eq!(host.cap_add, Some(vec!["NET_ADMIN".to_string()]));
    assert_eq!(host.cap_drop, Some(vec!["MKNOD".to_string()]));
    assert_eq!(
        host.sysctls.and_then(|s| s.get("kernel.msgmax").cloned()),
        Some("65536".to_string())
    );
    let nofile = host.ulimits.unwrap_or_default();
    assert_eq!(
        nofile
            .iter()
            .map(|u| (u.name.clone(), u.soft, u.hard))
            .collect::<Vec<_>>(),
        [(Some("nofile".to_string()), Some(1024), Some(2048))]
    );
    assert_eq!(host.init, Some(true));
    assert_eq!(host.readonly_rootfs, Some(true));
    assert_eq!(c.config.and_then(|k| k.tty), Some(true));
}

#[tokio::test]
async fn an_engine_that_does_not_answer_is_unavailable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("docker.sock");
    // A socket file nobody listens on: connections are refused.
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("bind"));
    let host = format!("unix://{}", socket.display());
    let docker = bollard::Docker::connect_with_unix(&host, 5, bollard::API_DEFAULT_VERSION)
        .expect("a client for the socket");
    let exec = DockerExecutor::new(docker, "nobody");
    let t = task(spec(&[]));
    let unavailable = |r: Result<(), ExecError>| matches!(r, Err(ExecError::Unavailable(_)));
    assert!(unavailable(exec.prepare(&t).await));
    assert!(unavailable(exec.create(&t).await.map(drop)));
    assert!(unavailable(exec.start(&t).await));
    assert!(unavailable(exec.inspect(&t).await.map(drop)));
    assert!(unavailable(exec.list().await.map(drop)));
    assert!(unavailable(exec.stop(&t).await));
    assert!(unavailable(exec.remove(&t).await));
}
