//! End-to-end: `orch stack` in a 3-node lab, each node in its own network namespace, with
//! real containers: the Get Started stack, a redeploy that scales one service and leaves the
//! other alone, a web + db stack with a secret and `depends_on: service_healthy`, a secret
//! that changes, `--prune`, a broken update rolled back, and `stack rm`. Needs root, iproute2,
//! nftables and a Docker Engine.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::netns::{http_get as get, NetnsLab};
use common::{containers_under, wait_for};

const WEB: &str = "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www";

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write a file");
    path.to_string_lossy().into_owned()
}

/// `stack deploy`: (succeeded, stdout and stderr).
fn deploy(l: &NetnsLab, file: &str, stack: &str, extra: &[&str]) -> (bool, String) {
    let mut args = vec!["stack", "deploy", "-c", file, "--timeout", "3m"];
    args.extend_from_slice(extra);
    args.push(stack);
    match l.lab.orch("m1", &args) {
        Ok(out) => (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ),
        Err(e) => (false, e.to_string()),
    }
}

fn deploy_ok(l: &NetnsLab, file: &str, stack: &str, extra: &[&str]) -> String {
    let (ok, out) = deploy(l, file, stack, extra);
    assert!(
        ok,
        "stack deploy {stack} failed:\n{out}\n--- m1 log ---\n{}",
        l.log("m1")
    );
    out
}

/// Task IDs of a stack's service that run.
fn running_tasks(l: &NetnsLab, service: &str) -> BTreeSet<String> {
    l.running(service).into_iter().map(|k| k.task_id).collect()
}

fn get_started(replicas: u32) -> String {
    format!(
        r#"version: "3"
services:
  web:
    image: orch-test/busybox:1
    command: ["sh", "-c", "{WEB}"]
    deploy:
      replicas: {replicas}
      resources:
        limits:
          cpus: "0.1"
          memory: 50M
      restart_policy:
        condition: on-failure
    ports:
      - "4000:80"
    networks:
      - webnet
  idle:
    image: orch-test/busybox:1
    command: sleep 3600
    networks: [webnet]
networks:
  webnet:
"#
    )
}

#[test]
fn stacks_deploy_update_roll_prune_and_go_away() {
    let l = NetnsLab::up("stacks", "all");
    let dir = l.root.join("files");
    std::fs::create_dir_all(&dir).expect("files dir");
    let addrs = l.addrs();

    // The Get Started stack: 5 web tasks, port 4000 on every node.
    let file = write(&dir, "getstarted.yml", &get_started(5));
    let out = deploy_ok(&l, &file, "getstarted", &[]);
    assert!(out.contains("Creating network getstarted_webnet"), "{out}");
    assert!(out.contains("Creating service getstarted_web"), "{out}");
    let ps = l.ok(&[
        "stack",
        "ps",
        "getstarted",
        "--filter",
        "desired-state=running",
    ]);
    let web_rows = ps.lines().filter(|r| r.contains("getstarted_web.")).count();
    assert_eq!(web_rows, 5, "{ps}");
    for (node, addr) in &addrs {
        wait_for(Duration::from_secs(30), &format!("4000 on {node}"), || {
            get(addr, 4000).is_some()
        });
    }
    let ls = l.ok(&["stack", "ls"]);
    assert!(
        ls.lines()
            .any(|r| r.starts_with("getstarted") && r.trim_end().ends_with('2')),
        "{ls}"
    );
    let services = l.ok(&["stack", "services", "getstarted"]);
    assert!(services.contains("*:4000->80/tcp"), "{services}");

    // replicas: 7 and deploy again: 7 web tasks; idle did not change and keeps its task.
    let idle_before = running_tasks(&l, "getstarted_idle");
    assert_eq!(idle_before.len(), 1);
    write(&dir, "getstarted.yml", &get_started(7));
    deploy_ok(&l, &file, "getstarted", &[]);
    assert_eq!(l.running("getstarted_web").len(), 7);
    assert_eq!(running_tasks(&l, "getstarted_idle"), idle_before);

    // web + db: a secret from a file, db healthy before web is created, web reaches db by
    // name.
    write(&dir, "dbpass.txt", "first-secret\n");
    let app = r#"services:
  db:
    image: orch-test/busybox:1
    command: ["sh", "-c", "mkdir -p /www && cp /run/secrets/dbpass /www/index.html && exec httpd -f -p 80 -h /www"]
    secrets:
      - dbpass
    healthcheck:
      test: ["CMD", "test", "-f", "/www/index.html"]
      interval: 1s
      retries: 3
  web:
    image: orch-test/busybox:1
    command: sleep 3600
    configs:
      - source: greeting
        target: /etc/greeting
        mode: 0440
    depends_on:
      db:
        condition: service_healthy
    deploy:
      update_config:
        failure_action: rollback
        monitor: 5s
  cron:
    image: orch-test/busybox:1
    command: sleep 3600
secrets:
  dbpass:
    file: ./dbpass.txt
configs:
  greeting:
    file: ./greeting.txt
"#;
    write(&dir, "greeting.txt", "hello from a config\n");
    let app_file = write(&dir, "app.yml", app);
    let out = deploy_ok(&l, &app_file, "app", &[]);
    let waited = out.find("Waiting for app_db to be healthy before app_web");
    let created = out.find("Creating service app_web");
    assert!(
        waited.is_some() && created.is_some() && waited < created,
        "web waits for db:\n{out}"
    );
    assert!(out.contains("Creating secret app_dbpass"), "{out}");
    let web = l.one("app_web");
    let ask_db = |web: &str| {
        let out = Command::new("docker")
            .args([
                "exec",
                web,
                "sh",
                "-c",
                "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 db 80",
            ])
            .stdin(Stdio::null())
            .output()
            .expect("docker exec");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert!(ask_db(&web).contains("first-secret"), "web → db by name");
    let greeting = Command::new("docker")
        .args([
            "exec",
            &web,
            "sh",
            "-c",
            "cat /etc/greeting; stat -c %a /etc/greeting",
        ])
        .output()
        .expect("docker exec");
    let greeting = String::from_utf8_lossy(&greeting.stdout);
    assert!(
        greeting.contains("hello from a config") && greeting.contains("440"),
        "the config, mode 0440: {greeting}"
    );

    // The secret's file changes: a new version, and db rolls onto it.
    write(&dir, "dbpass.txt", "second-secret\n");
    let out = deploy_ok(&l, &app_file, "app", &[]);
    assert!(
        out.contains("Updating secret app_dbpass (version 2"),
        "{out}"
    );
    wait_for(Duration::from_secs(60), "db serving the new secret", || {
        ask_db(&l.one("app_web")).contains("second-secret")
    });

    // --prune: cron is gone from the file, so from the cluster.
    let without_cron = app.replace(
        "  cron:\n    image: orch-test/busybox:1\n    command: sleep 3600\n",
        "",
    );
    write(&dir, "app.yml", &without_cron);
    let out = deploy_ok(&l, &app_file, "app", &["--prune"]);
    assert!(out.contains("Removing service app_cron"), "{out}");
    assert!(!l.ok(&["service", "ls"]).contains("app_cron"));

    // A broken update (a command that cannot start) rolls back, and deploy says so.
    let broken = without_cron.replace(
        "    command: sleep 3600\n    configs:",
        "    command: /no/such/binary\n    configs:",
    );
    assert_ne!(broken, without_cron);
    write(&dir, "app.yml", &broken);
    let (ok, out) = deploy(&l, &app_file, "app", &[]);
    assert!(!ok, "a rolled back update must fail the deploy:\n{out}");
    assert!(
        out.contains("app_web"),
        "the failure names the service:\n{out}"
    );

    // stack rm: nothing of either stack stays.
    for stack in ["app", "getstarted"] {
        let out = l.ok(&["stack", "rm", stack]);
        assert!(out.contains(&format!("Removing service {stack}_")), "{out}");
    }
    assert!(l.ok(&["service", "ls", "-q"]).trim().is_empty());
    let networks = l.ok(&["network", "ls"]);
    assert!(
        !networks.contains("getstarted_") && !networks.contains("app_"),
        "{networks}"
    );
    assert!(!l.ok(&["secret", "ls"]).contains("app_dbpass"));
    assert!(!l.ok(&["config", "ls"]).contains("app_greeting"));
    wait_for(Duration::from_secs(30), "every container gone", || {
        containers_under(&l.root).is_empty()
    });
    let out = l.ok(&["stack", "ls"]);
    assert_eq!(out.lines().count(), 1, "only the header: {out}");
}
