//! End-to-end: secrets and configs on real clusters with real containers. Data goes in on
//! stdin, comes out in the containers (and nowhere on disk), reaches only the nodes that run a
//! task using it, and rotates with the services' update policy.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{orch_bin, test_images, wait_for, Cluster, Run};
use serde_json::Value;

const IMAGE: &str = "orch-test/busybox:1";

/// `orch ARGS` on `node` with `input` on stdin.
fn orch_stdin(c: &Cluster, node: &str, args: &[&str], input: &[u8]) -> Run {
    let mut child = Command::new(orch_bin())
        .arg("--data-dir")
        .arg(&c.node(node).dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run orch");
    // A command that refuses its arguments exits before reading its input: the pipe is then
    // closed, and what it said is what the test checks.
    if let Err(e) = child.stdin.take().expect("stdin").write_all(input) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "write stdin: {e}");
    }
    let out = child.wait_with_output().expect("orch output");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A marker no file on this machine holds by chance.
fn marker(what: &str) -> String {
    format!(
        "{what}-{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    )
}

fn exec(container: &str, script: &str) -> String {
    let out = Command::new("docker")
        .args(["exec", container, "sh", "-c", script])
        .output()
        .expect("docker exec");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Running containers of `service` (engine names).
fn running(c: &Cluster, service: &str) -> Vec<common::Container> {
    c.containers()
        .into_iter()
        .filter(|k| k.running && k.service == service)
        .collect()
}

/// Files under `dir` whose bytes contain `needle` (`grep -r`, binary files included).
fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    let out = Command::new("grep")
        .args(["-rlsaF", needle])
        .arg(dir)
        .output()
        .expect("grep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// What `orch info` on `node` says its agent holds.
fn held(c: &Cluster, node: &str) -> String {
    c.orch(node, &["info"])
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("Secrets and configs held: "))
        .unwrap_or("?")
        .to_string()
}

fn inspect(c: &Cluster, node: &str, kind: &str, name: &str) -> Value {
    c.inspect(node, kind, name)
        .unwrap_or_else(|| panic!("{kind} inspect {name}"))
}

#[test]
fn secrets_and_configs_reach_only_their_tasks_and_never_a_disk() {
    test_images();
    let c = Cluster::with_nodes(1, 2, &[]);
    let secret = marker("db-password");
    let run = orch_stdin(
        &c,
        "m1",
        &["secret", "create", "db", "-"],
        secret.as_bytes(),
    );
    run.expect_ok("secret create");
    let secret_id = run.stdout.trim().to_string();
    let template = "name={{.Service.Name}} slot={{.Task.Slot}} host={{.Node.Hostname}} port={{env \"PORT\"}}\n";
    orch_stdin(
        &c,
        "m1",
        &[
            "config",
            "create",
            "--template-driver",
            "golang",
            "app.conf",
            "-",
        ],
        template.as_bytes(),
    )
    .expect_ok("config create");

    // Two tasks, never on w2.
    c.orch(
        "m1",
        &[
            "service",
            "create",
            "--name",
            "web",
            "--replicas",
            "2",
            "--constraint",
            "node.hostname!=w2",
            "--env",
            "PORT=8080",
            "--stop-grace-period",
            "1s",
            "--secret",
            "db",
            "--secret",
            "source=db,target=/etc/pw,uid=1000,gid=1001,mode=0400",
            "--config",
            "source=app.conf,target=/etc/app.conf",
            IMAGE,
            "sleep",
            "3600",
        ],
    )
    .expect_ok("service create");
    let tasks = running(&c, "web");
    assert_eq!(tasks.len(), 2, "{tasks:?}");
    let hostnames: std::collections::BTreeMap<String, &str> =
        ["m1", "w1"].iter().map(|n| (c.node_id(n), *n)).collect();
    for k in &tasks {
        assert_eq!(exec(&k.name, "cat /run/secrets/db"), secret);
        assert_eq!(
            exec(&k.name, "stat -c '%a %u %g' /run/secrets/db"),
            "444 0 0"
        );
        assert_eq!(exec(&k.name, "cat /etc/pw"), secret);
        assert_eq!(exec(&k.name, "stat -c '%a %u %g' /etc/pw"), "400 1000 1001");
        let slot = k.name.split('.').nth(1).expect("slot in the name");
        assert_eq!(
            exec(&k.name, "cat /etc/app.conf"),
            format!(
                "name=web slot={slot} host={} port=8080",
                hostnames[&k.node_id]
            )
        );
        // Each file is on a read-only tmpfs.
        let mounts = exec(&k.name, "cat /proc/mounts");
        for path in ["/run/secrets/db", "/etc/pw", "/etc/app.conf"] {
            let line = mounts
                .lines()
                .find(|l| l.split(' ').nth(1) == Some(path))
                .unwrap_or_else(|| panic!("{path} is not a mount:\n{mounts}"));
            assert!(
                line.starts_with("tmpfs ") && line.contains(" ro,"),
                "{line}"
            );
        }
    }

    // Only nodes that run a task of the service hold it; the API never shows secret data.
    assert_eq!(held(&c, "w2"), "none");
    assert!(held(&c, "m1").contains(&secret_id) || held(&c, "w1").contains(&secret_id));
    let shown = c.orch("m1", &["secret", "inspect", "db"]);
    assert!(!shown.stdout.contains(&secret), "inspect shows the data");
    let config = inspect(&c, "m1", "config", "app.conf");
    assert!(config["Spec"]["Data"]
        .as_str()
        .is_some_and(|d| !d.is_empty()));

    // No file of the nodes (raft logs and snapshots included) or of the engine has the bytes.
    assert_eq!(
        files_containing(c.root.path(), &secret),
        Vec::<String>::new()
    );
    let engine_root = Command::new("docker")
        .args(["info", "-f", "{{.DockerRootDir}}"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    assert_eq!(
        files_containing(Path::new(&engine_root), &secret),
        Vec::<String>::new()
    );

    // --secret-rm / --secret-add roll the service onto the new references.
    c.orch(
        "m1",
        &[
            "service",
            "update",
            "--secret-rm",
            "db",
            "--secret-add",
            "source=db,target=renamed",
            "--config-rm",
            "app.conf",
            "web",
        ],
    )
    .expect_ok("service update");
    wait_for(
        Duration::from_secs(60),
        "tasks with the new references",
        || {
            let tasks = running(&c, "web");
            tasks.len() == 2
            && tasks.iter().all(|k| {
                exec(
                    &k.name,
                    "cat /run/secrets/renamed; ls /run/secrets/db /etc/pw /etc/app.conf 2>/dev/null",
                ) == secret
            })
        },
    );

    // In use: refused, naming the service; after the service is gone: removed, and forgotten.
    let run = c.orch("m1", &["secret", "rm", "db"]);
    assert!(!run.ok());
    assert!(
        run.stderr
            .contains("secret 'db' is in use by the following service: web"),
        "{}",
        run.stderr
    );
    // The config is still in the service's previous spec (kept for a rollback).
    let run = c.orch("m1", &["config", "rm", "app.conf"]);
    assert!(
        run.stderr.contains("config 'app.conf' is in use"),
        "{}",
        run.stderr
    );
    c.orch("m1", &["service", "rm", "web"])
        .expect_ok("service rm");
    wait_for(Duration::from_secs(30), "the tasks to go", || {
        c.containers().iter().all(|k| k.service != "web")
    });
    wait_for(Duration::from_secs(30), "the secret removed", || {
        c.orch("m1", &["secret", "rm", "db"]).ok()
    });
    c.orch("m1", &["config", "rm", "app.conf"])
        .expect_ok("config rm");
    wait_for(Duration::from_secs(10), "nodes to forget", || {
        ["m1", "w1", "w2"].iter().all(|n| held(&c, n) == "none")
    });
    // The tasks' tmpfs mounts went with their containers.
    for n in ["m1", "w1", "w2"] {
        let dir = Path::new("/run/orch").join(c.node_id(n));
        let left: Vec<_> = std::fs::read_dir(&dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{n} left {left:?}");
    }
}

/// Seconds since midnight of a container's start (the engine's RFC 3339 StartedAt).
fn started_at(container: &str) -> f64 {
    let out = Command::new("docker")
        .args(["inspect", "-f", "{{.State.StartedAt}}", container])
        .output()
        .expect("docker inspect");
    let text = String::from_utf8_lossy(&out.stdout);
    let time = text.trim().split('T').nth(1).unwrap_or("");
    let mut parts = time.trim_end_matches('Z').split(':');
    let h: f64 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0.0);
    let m: f64 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0.0);
    let s: f64 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0.0);
    h * 3600.0 + m * 60.0 + s
}

/// The secret version each running container of `service` sees.
fn contents(c: &Cluster, service: &str) -> Vec<String> {
    let mut seen: Vec<String> = running(c, service)
        .iter()
        .map(|k| exec(&k.name, "cat /run/secrets/flag"))
        .collect();
    seen.sort();
    seen
}

#[test]
fn rotation_rolls_every_user_one_batch_at_a_time_and_a_bad_value_rolls_back() {
    test_images();
    let c = Cluster::with_nodes(1, 2, &[]);
    orch_stdin(&c, "m1", &["secret", "create", "flag", "-"], b"good-1").expect_ok("create");
    let common = [
        "--replicas",
        "2",
        "--stop-grace-period",
        "1s",
        "--update-parallelism",
        "1",
        "--update-delay",
        "2s",
        "--secret",
        "flag",
    ];
    // `checked` is healthy only while the secret says "good".
    let mut checked = vec!["service", "create", "--name", "checked"];
    checked.extend(common);
    checked.extend([
        "--health-cmd",
        "grep -q good /run/secrets/flag",
        "--health-interval",
        "1s",
        "--health-retries",
        "1",
        "--update-monitor",
        "4s",
        "--update-failure-action",
        "rollback",
        IMAGE,
        "sleep",
        "3600",
    ]);
    c.orch("m1", &checked).expect_ok("create checked");
    let mut plain = vec!["service", "create", "--name", "plain"];
    plain.extend(common);
    plain.extend([IMAGE, "sleep", "3600"]);
    c.orch("m1", &plain).expect_ok("create plain");
    assert_eq!(contents(&c, "checked"), ["good-1", "good-1"]);

    let run = orch_stdin(&c, "m1", &["secret", "rotate", "flag", "-"], b"good-2");
    run.expect_ok("rotate");
    assert!(run.stdout.contains("version 2"), "{}", run.stdout);
    assert!(
        run.stdout.contains("checked") && run.stdout.contains("plain"),
        "{}",
        run.stdout
    );
    for service in ["checked", "plain"] {
        wait_for(Duration::from_secs(60), "every task on version 2", || {
            contents(&c, service) == ["good-2", "good-2"]
        });
        // One task at a time: the second new task started at least the update delay after
        // the first.
        let mut starts: Vec<f64> = running(&c, service)
            .iter()
            .map(|k| started_at(&k.name))
            .collect();
        starts.sort_by(f64::total_cmp);
        assert!(
            starts[1] - starts[0] >= 2.0,
            "{service}: both tasks replaced together ({starts:?})"
        );
    }
    let versions = inspect(&c, "m1", "secret", "flag")["Versions"].clone();
    let v2 = versions
        .as_array()
        .and_then(|v| v.iter().find(|x| x["Version"] == 2))
        .cloned()
        .expect("version 2");
    let mut users: Vec<&str> = v2["Services"]
        .as_array()
        .expect("services")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    users.sort();
    assert_eq!(users, ["checked", "plain"]);

    // A value that fails the healthcheck: `checked` rolls back onto version 2, and the
    // command (which follows every update, as `service update` does) says so.
    let run = orch_stdin(&c, "m1", &["secret", "rotate", "flag", "-"], b"bad-3");
    assert!(!run.ok(), "{}", run.stdout);
    assert!(
        run.stderr.contains("not every service is on version 3") && run.stderr.contains("checked:"),
        "{}",
        run.stderr
    );
    wait_for(Duration::from_secs(90), "checked to roll back", || {
        c.inspect("m1", "service", "checked")
            .is_some_and(|s| s["UpdateStatus"]["State"] == "rollback_completed")
    });
    wait_for(Duration::from_secs(30), "checked back on version 2", || {
        contents(&c, "checked") == ["good-2", "good-2"]
    });
    wait_for(Duration::from_secs(60), "plain on version 3", || {
        contents(&c, "plain") == ["bad-3", "bad-3"]
    });
    // Version 1 is used by nothing any more (only ended tasks had it): it goes.
    wait_for(Duration::from_secs(30), "version 1 removed", || {
        inspect(&c, "m1", "secret", "flag")["Versions"]
            .as_array()
            .is_some_and(|v| v.iter().all(|x| x["Version"] != 1))
    });
}

#[test]
fn secrets_survive_a_manager_restart_and_a_leader_kill() {
    test_images();
    let c = Cluster::with_nodes(3, 0, &[]);
    let secret = marker("api-key");
    orch_stdin(
        &c,
        "m1",
        &["secret", "create", "key", "-"],
        secret.as_bytes(),
    )
    .expect_ok("create");
    c.orch(
        "m1",
        &[
            "service",
            "create",
            "--name",
            "api",
            "--stop-grace-period",
            "1s",
            "--secret",
            "key",
            IMAGE,
            "sleep",
            "3600",
        ],
    )
    .expect_ok("service create");
    // The raw raft logs of every manager hold only sealed bytes.
    for m in ["m1", "m2", "m3"] {
        let raft = c.node(m).dir.join("raft");
        assert!(raft.exists());
        assert_eq!(
            files_containing(&raft, &secret),
            Vec::<String>::new(),
            "{m}"
        );
    }

    c.stop("m2");
    c.restart("m2");
    let leader = c.wait_leader("m2");
    c.kill(&leader);
    let survivor = ["m1", "m2", "m3"]
        .into_iter()
        .find(|m| *m != leader)
        .expect("a survivor");
    wait_for(Duration::from_secs(30), "a new leader", || {
        c.leader(survivor).is_some_and(|l| l != leader)
    });
    let ls = c.orch(survivor, &["secret", "ls", "--format", "{{.Name}}"]);
    ls.expect_ok("secret ls");
    assert_eq!(ls.stdout.trim(), "key");
    // New tasks, sent by the new leader, get the data: it opens what the old one sealed.
    wait_for(Duration::from_secs(30), "scale accepted", || {
        c.orch(survivor, &["service", "scale", "-d", "api=3"]).ok()
    });
    wait_for(
        Duration::from_secs(60),
        "three tasks with the secret",
        || {
            let tasks = running(&c, "api");
            tasks.len() >= 3
                && tasks
                    .iter()
                    .all(|k| exec(&k.name, "cat /run/secrets/key") == secret)
        },
    );
}

#[test]
fn bad_secret_and_config_input_is_refused_and_changes_nothing() {
    test_images();
    let c = Cluster::with_nodes(1, 0, &[]);
    orch_stdin(&c, "m1", &["secret", "create", "db", "-"], b"pw").expect_ok("create");
    let big = vec![b'x'; 512_000];
    let cases: Vec<(Vec<&str>, &[u8], &str)> = vec![
        (
            vec!["secret", "create", "empty", "-"],
            b"",
            "error reading from STDIN: data is empty",
        ),
        (
            vec!["secret", "create", "big", "-"],
            &big,
            "secret data must be larger than 0 and less than 512000 bytes",
        ),
        (
            vec!["secret", "create", "bad-", "-"],
            b"x",
            "invalid name, only 64 [a-zA-Z0-9-_.] characters allowed",
        ),
        (
            vec!["secret", "create", "db", "-"],
            b"again",
            "secret db already exists",
        ),
        (
            vec!["config", "create", "--template-driver", "golang", "t", "-"],
            b"{{if .Service.Name}}x{{end}}",
            "is not supported",
        ),
        (
            vec!["config", "create", "--template-driver", "jinja", "t", "-"],
            b"x",
            "unrecognized template type",
        ),
        (
            vec![
                "service", "create", "--name", "s", "--secret", "nope", IMAGE,
            ],
            b"",
            "secret not found: nope",
        ),
        (
            vec![
                "service",
                "create",
                "--name",
                "s",
                "--secret",
                "db",
                "--secret",
                "source=db,target=db",
                IMAGE,
            ],
            b"",
            "duplicate secret target for db not allowed",
        ),
        (
            vec![
                "service",
                "create",
                "--name",
                "s",
                "--secret",
                "source=db,mode=0999",
                IMAGE,
            ],
            b"",
            "invalid mode",
        ),
        (vec!["secret", "rotate", "nope", "-"], b"x", "not found"),
    ];
    for (args, input, want) in cases {
        let run = orch_stdin(&c, "m1", &args, input);
        assert!(!run.ok(), "{args:?} succeeded");
        assert!(run.stderr.contains(want), "{args:?}: {}", run.stderr);
    }
    let secrets = c.orch("m1", &["secret", "ls", "-q"]);
    assert_eq!(secrets.stdout.lines().count(), 1, "{}", secrets.stdout);
    assert_eq!(c.orch("m1", &["config", "ls", "-q"]).stdout.trim(), "");
    assert_eq!(c.orch("m1", &["service", "ls", "-q"]).stdout.trim(), "");
    let versions = inspect(&c, "m1", "secret", "db")["Versions"].clone();
    assert_eq!(versions.as_array().map(Vec::len), Some(1));
}
