//! End-to-end: services on real containers through the local Docker Engine, on a 3-node
//! cluster (one manager, two workers) on one machine.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{test_images, wait_for, Cluster};

const IMAGE: &str = "orch-test/busybox:1";

/// A cluster of m1 (manager) + w1, w2 with a 1 s heartbeat, images built.
fn cluster() -> Cluster {
    test_images();
    Cluster::with_nodes(1, 2, &["--dispatcher-heartbeat", "1s"])
}

/// `service create -d` with a quick stop, running `sleep` until stopped.
fn create(c: &Cluster, name: &str, extra: &[&str]) {
    let mut args = vec![
        "service",
        "create",
        "-d",
        "--name",
        name,
        "--stop-grace-period",
        "1s",
    ];
    args.extend(extra);
    args.extend([IMAGE, "sleep", "3600"]);
    c.orch("m1", &args).expect_ok("service create");
}

fn total(map: &BTreeMap<String, usize>) -> usize {
    map.values().sum()
}

#[test]
fn replicas_spread_scale_and_remove() {
    let c = cluster();
    let run = c.orch(
        "m1",
        &[
            "service",
            "create",
            "--name",
            "web",
            "--replicas",
            "6",
            "--stop-grace-period",
            "1s",
            "--timeout",
            "60s",
            IMAGE,
            "sleep",
            "3600",
        ],
    );
    run.expect_ok("create and wait");
    assert!(run.stdout.contains("verify: Service"), "{}", run.stdout);
    let spread = c.running_per_node("m1", "web");
    assert_eq!(
        spread,
        BTreeMap::from([
            ("m1".to_string(), 2),
            ("w1".to_string(), 2),
            ("w2".to_string(), 2)
        ])
    );
    // Real containers, named <service>.<slot>.<task id>, one per task.
    let containers: Vec<_> = c.containers().into_iter().filter(|k| k.running).collect();
    assert_eq!(containers.len(), 6);
    for k in &containers {
        assert!(
            k.name.starts_with("web.") && k.name.ends_with(&k.task_id),
            "{}",
            k.name
        );
    }
    // service ls shows 6/6; inspect shows the Engine API's shape.
    let ls = c.orch("m1", &["service", "ls", "--format", "json"]).stdout;
    assert!(ls.contains("\"Replicas\":\"6/6\""), "{ls}");
    let svc = c.inspect("m1", "service", "web").expect("inspect");
    assert_eq!(svc["Spec"]["Mode"]["Replicated"]["Replicas"], 6);
    assert_eq!(svc["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"], IMAGE);
    assert_eq!(
        svc["Spec"]["TaskTemplate"]["ContainerSpec"]["StopGracePeriod"],
        1_000_000_000i64
    );
    assert_eq!(
        svc["Spec"]["TaskTemplate"]["RestartPolicy"]["Condition"],
        "any"
    );
    assert_eq!(svc["Spec"]["UpdateConfig"]["FailureAction"], "pause");
    let pretty = c
        .orch("m1", &["service", "inspect", "--pretty", "web"])
        .stdout;
    assert!(
        pretty.contains("Service Mode:\tReplicated") && pretty.contains("Replicas:\t6"),
        "{pretty}"
    );
    let task_id = c.service_ps("m1", "web")[0]["ID"]
        .as_str()
        .expect("id")
        .to_string();
    let task = c
        .orch("m1", &["inspect", "--type", "task", &task_id])
        .stdout;
    let task: serde_json::Value = serde_json::from_str(&task).expect("task json");
    assert_eq!(task[0]["Status"]["State"], "running");
    assert_eq!(task[0]["DesiredState"], "running");
    assert!(task[0]["Status"]["ContainerStatus"]["ContainerID"]
        .as_str()
        .is_some_and(|id| !id.is_empty()));
    let node_ps = c.orch("m1", &["node", "ps", "w1"]).stdout;
    assert_eq!(
        node_ps.lines().filter(|l| l.contains("web.")).count(),
        2,
        "{node_ps}"
    );

    let run = c.orch("m1", &["service", "scale", "web=9", "--timeout", "60s"]);
    run.expect_ok("scale up");
    assert!(run.stdout.contains("web scaled to 9"));
    assert_eq!(total(&c.running_per_node("m1", "web")), 9);
    c.orch("m1", &["service", "scale", "web=2", "--timeout", "60s"])
        .expect_ok("scale down");
    assert_eq!(total(&c.running_per_node("m1", "web")), 2);
    wait_for(
        Duration::from_secs(20),
        "scaled-down containers gone",
        || c.containers().iter().filter(|k| k.running).count() == 2,
    );

    let run = c.orch("m1", &["service", "rm", "web"]);
    run.expect_ok("rm");
    assert_eq!(run.stdout.trim(), "web");
    wait_for(Duration::from_secs(30), "every container removed", || {
        c.containers().is_empty()
    });
    let run = c.orch("m1", &["service", "ps", "web"]);
    assert!(
        !run.ok() && run.stderr.contains("not found"),
        "{}",
        run.stderr
    );
}

#[test]
fn constraints_pending_explanations_and_labels() {
    let c = cluster();
    create(
        &c,
        "pinned",
        &["--replicas", "4", "--constraint", "node.hostname==w2"],
    );
    wait_for(Duration::from_secs(30), "4 tasks on w2", || {
        c.running_per_node("m1", "pinned") == BTreeMap::from([("w2".to_string(), 4)])
    });

    create(
        &c,
        "nowhere",
        &["--replicas", "2", "--constraint", "node.labels.zone==mars"],
    );
    wait_for(Duration::from_secs(10), "pending explanation", || {
        c.service_ps("m1", "nowhere").iter().any(|r| {
            r["Error"].as_str().is_some_and(|e| {
                e.contains("no suitable node (scheduling constraints not satisfied on 3 nodes)")
            }) && r["CurrentState"]
                .as_str()
                .is_some_and(|s| s.starts_with("Pending"))
        })
    });
    // As soon as a node fits, the tasks start there.
    c.orch("m1", &["node", "update", "--label-add", "zone=mars", "w1"])
        .expect_ok("label");
    wait_for(Duration::from_secs(30), "tasks running on w1", || {
        c.running_per_node("m1", "nowhere") == BTreeMap::from([("w1".to_string(), 2)])
    });
}

#[test]
fn drain_moves_tasks_and_pause_keeps_them() {
    let c = cluster();
    create(&c, "app", &["--replicas", "6"]);
    wait_for(Duration::from_secs(30), "6 running", || {
        total(&c.running_per_node("m1", "app")) == 6
    });
    c.orch("m1", &["node", "update", "--availability", "drain", "w1"])
        .expect_ok("drain");
    let took = wait_for(
        Duration::from_secs(30),
        "w1 empty, 6 running elsewhere",
        || {
            let spread = c.running_per_node("m1", "app");
            !spread.contains_key("w1") && total(&spread) == 6
        },
    );
    assert!(took < Duration::from_secs(20), "drain took {took:?}");
    let w1 = c.node_id("w1");
    wait_for(Duration::from_secs(20), "w1's containers stopped", || {
        !c.containers().iter().any(|k| k.node_id == w1 && k.running)
    });
    // History rows show the moved tasks.
    assert!(
        c.orch("m1", &["service", "ps", "app"])
            .stdout
            .contains("\\_ app."),
        "no history rows"
    );
    // Scale up: nothing lands on the drained node.
    c.orch("m1", &["service", "scale", "app=9", "-d"])
        .expect_ok("scale");
    wait_for(Duration::from_secs(30), "9 running", || {
        total(&c.running_per_node("m1", "app")) == 9
    });
    assert!(!c.running_per_node("m1", "app").contains_key("w1"));

    // Pause keeps its tasks and takes no new ones.
    c.orch("m1", &["node", "update", "--availability", "pause", "w2"])
        .expect_ok("pause");
    let on_w2 = c
        .running_per_node("m1", "app")
        .get("w2")
        .copied()
        .unwrap_or(0);
    assert!(on_w2 > 0);
    c.orch("m1", &["service", "scale", "app=12", "-d"])
        .expect_ok("scale");
    wait_for(Duration::from_secs(30), "12 running", || {
        total(&c.running_per_node("m1", "app")) == 12
    });
    assert_eq!(
        c.running_per_node("m1", "app")
            .get("w2")
            .copied()
            .unwrap_or(0),
        on_w2,
        "a paused node took new tasks or lost old ones"
    );
    // Active again: nothing moves back by itself.
    c.orch("m1", &["node", "update", "--availability", "active", "w1"])
        .expect_ok("active");
    std::thread::sleep(Duration::from_secs(2));
    assert!(!c.running_per_node("m1", "app").contains_key("w1"));
}

#[test]
fn global_services_follow_nodes() {
    let mut c = cluster();
    create(&c, "agent", &["--mode", "global"]);
    wait_for(Duration::from_secs(30), "one task per node", || {
        c.running_per_node("m1", "agent").len() == 3
    });
    assert!(c.running_per_node("m1", "agent").values().all(|n| *n == 1));
    let ls = c.orch("m1", &["service", "ls"]).stdout;
    assert!(ls.contains("global") && ls.contains("3/3"), "{ls}");
    // A node that joins gets one; a drained node loses its own.
    c.join("w3", "worker", "m1").expect_ok("join");
    wait_for(Duration::from_secs(30), "w3 runs the global task", || {
        c.running_per_node("m1", "agent").contains_key("w3")
    });
    c.orch("m1", &["node", "update", "--availability", "drain", "w1"])
        .expect_ok("drain");
    wait_for(Duration::from_secs(30), "w1's global task stopped", || {
        !c.running_per_node("m1", "agent").contains_key("w1")
    });
    assert_eq!(c.running_per_node("m1", "agent").len(), 3);
    // --replicas makes no sense for a global service.
    let run = c.orch(
        "m1",
        &[
            "service",
            "create",
            "--mode",
            "global",
            "--replicas",
            "2",
            IMAGE,
        ],
    );
    assert!(
        !run.ok()
            && run
                .stderr
                .contains("replicas can only be used with replicated"),
        "{}",
        run.stderr
    );
}

#[test]
fn failing_tasks_restart_per_policy_and_jobs_complete() {
    let c = cluster();
    // Exits 1 at once: restarted (delay 1s) until max attempts, each attempt a history row.
    c.orch(
        "m1",
        &[
            "service",
            "create",
            "-d",
            "--name",
            "crash",
            "--restart-delay",
            "1s",
            "--restart-max-attempts",
            "2",
            IMAGE,
            "sh",
            "-c",
            "exit 1",
        ],
    )
    .expect_ok("create");
    wait_for(Duration::from_secs(30), "three failed attempts", || {
        let rows = c.service_ps("m1", "crash");
        rows.len() == 3
            && rows.iter().all(|r| {
                r["CurrentState"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("Failed"))
            })
    });
    let rows = c.service_ps("m1", "crash");
    assert!(
        rows.iter().any(|r| r["Error"]
            .as_str()
            .is_some_and(|e| e.contains("non-zero exit (1)"))),
        "{rows:?}"
    );
    assert_eq!(
        rows.iter()
            .filter(|r| r["Name"].as_str().is_some_and(|n| n.starts_with(" \\_")))
            .count(),
        2,
        "{rows:?}"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        c.service_ps("m1", "crash").len(),
        3,
        "restarted beyond --restart-max-attempts"
    );

    // A job: 5 completions, 2 at a time; the CLI waits for it to finish.
    let run = c.orch(
        "m1",
        &[
            "service",
            "create",
            "--name",
            "batch",
            "--mode",
            "replicated-job",
            "--replicas",
            "5",
            "--max-concurrent",
            "2",
            "--timeout",
            "60s",
            IMAGE,
            "sh",
            "-c",
            "sleep 0.3",
        ],
    );
    run.expect_ok("job");
    assert!(
        run.stdout.contains("job progress: 5 out of 5 complete"),
        "{}",
        run.stdout
    );
    let rows = c.service_ps("m1", "batch");
    assert_eq!(
        rows.iter()
            .filter(|r| r["CurrentState"]
                .as_str()
                .is_some_and(|s| s.starts_with("Complete")))
            .count(),
        5
    );
    let ls = c.orch("m1", &["service", "ls"]).stdout;
    assert!(
        ls.contains("replicated job") && ls.contains("(5/5 completed)"),
        "{ls}"
    );
}

#[test]
fn a_dead_worker_is_replaced_and_a_restarted_agent_keeps_its_containers() {
    let c = cluster();
    create(&c, "keep", &["--replicas", "6"]);
    wait_for(Duration::from_secs(30), "6 running", || {
        total(&c.running_per_node("m1", "keep")) == 6
    });

    // Restart w2's node process: same containers (IDs), no duplicates.
    let w2 = c.node_id("w2");
    let before: BTreeSet<String> = c
        .containers()
        .into_iter()
        .filter(|k| k.node_id == w2)
        .map(|k| k.id)
        .collect();
    assert_eq!(before.len(), 2);
    c.kill("w2");
    c.restart("w2");
    wait_for(Duration::from_secs(20), "w2 Ready", || {
        c.node_rows("m1")
            .is_some_and(|r| r["w2"]["Status"] == "Ready")
    });
    std::thread::sleep(Duration::from_secs(2));
    let after: BTreeSet<String> = c
        .containers()
        .into_iter()
        .filter(|k| k.node_id == w2)
        .map(|k| k.id)
        .collect();
    assert_eq!(before, after, "the restarted agent replaced its containers");
    assert_eq!(total(&c.running_per_node("m1", "keep")), 6);

    // SIGKILL w1: marked Down, its tasks replaced on the others.
    c.kill("w1");
    wait_for(Duration::from_secs(15), "w1 Down", || {
        c.node_rows("m1")
            .is_some_and(|r| r["w1"]["Status"] == "Down")
    });
    wait_for(Duration::from_secs(30), "6 running without w1", || {
        let spread = c.running_per_node("m1", "keep");
        !spread.contains_key("w1") && total(&spread) == 6
    });
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let c = cluster();
    // An image that cannot be pulled: the task is rejected with the engine's message.
    c.orch(
        "m1",
        &[
            "service",
            "create",
            "-d",
            "--name",
            "ghost",
            "orch-test/no-such-image:9",
        ],
    )
    .expect_ok("create");
    wait_for(Duration::from_secs(30), "rejected task", || {
        c.service_ps("m1", "ghost").iter().any(|r| {
            r["CurrentState"]
                .as_str()
                .is_some_and(|s| s.starts_with("Rejected"))
                && r["Error"].as_str().is_some_and(|e| e.len() > 2)
        })
    });
    create(&c, "dup", &[]);
    let before = c.orch("m1", &["service", "ls", "-q"]).stdout;
    let cases: [(&[&str], &str); 6] = [
        (&["--name", "dup"], "already exists"),
        (
            &["--name", "x1", "--constraint", "node.color==red"],
            "invalid constraint",
        ),
        (&["--name", "x2", "--replicas", "-1"], "must be 0 or more"),
        (
            &["--name", "x3", "--mode", "global", "--replicas", "3"],
            "replicas can only be used",
        ),
        (&["--name=-bad"], "invalid name"),
        (
            &["--name", "x4", "--update-failure-action", "explode"],
            "must be pause or continue or rollback",
        ),
    ];
    for (args, message) in cases {
        let mut full = vec!["service", "create", "-d"];
        full.extend(args);
        full.push(IMAGE);
        let run = c.orch("m1", &full);
        assert!(!run.ok(), "{args:?} must fail");
        assert!(run.stderr.contains(message), "{args:?}: {}", run.stderr);
    }
    assert_eq!(
        c.orch("m1", &["service", "ls", "-q"]).stdout,
        before,
        "a refused create changed the services"
    );
    let run = c.orch("m1", &["service", "scale", "nope=2"]);
    assert!(
        !run.ok() && run.stderr.contains("not found"),
        "{}",
        run.stderr
    );
}

#[test]
fn logs_and_agents_that_follow_a_new_leader_keep_their_containers() {
    test_images();
    let c = Cluster::with_nodes(3, 2, &["--dispatcher-heartbeat", "1s"]);
    c.orch(
        "m1",
        &[
            "service",
            "create",
            "--name",
            "talk",
            "--replicas",
            "4",
            "--constraint",
            "node.role==worker",
            "--stop-grace-period",
            "1s",
            "--timeout",
            "60s",
            IMAGE,
            "sh",
            "-c",
            "echo hello from $(hostname); echo oops >&2; sleep 3600",
        ],
    )
    .expect_ok("create");
    let logs = c.orch("m2", &["service", "logs", "talk"]);
    logs.expect_ok("logs through a follower");
    let lines: Vec<&str> = logs
        .stdout
        .lines()
        .filter(|l| l.contains("hello from"))
        .collect();
    assert_eq!(lines.len(), 4, "{}", logs.stdout);
    for l in &lines {
        assert!(
            l.starts_with("talk.") && (l.contains("@w1    | ") || l.contains("@w2    | ")),
            "{l}"
        );
    }
    assert_eq!(
        logs.stderr.lines().filter(|l| l.contains("| oops")).count(),
        4,
        "stderr lines: {}",
        logs.stderr
    );
    let one_task = c.service_ps("m1", "talk")[0]["ID"]
        .as_str()
        .expect("id")
        .to_string();
    let single = c.orch("m1", &["service", "logs", "--raw", &one_task]);
    assert_eq!(
        single
            .stdout
            .lines()
            .filter(|l| l.starts_with("hello from"))
            .count(),
        1,
        "{}",
        single.stdout
    );

    // The leader dies: the workers' agents move to the new leader without touching containers.
    let before: BTreeSet<String> = c
        .containers()
        .into_iter()
        .filter(|k| k.running)
        .map(|k| k.id)
        .collect();
    let leader = c.leader("m1").expect("leader");
    let survivor = ["m1", "m2", "m3"]
        .into_iter()
        .find(|m| *m != leader)
        .expect("survivor");
    c.kill(&leader);
    wait_for(Duration::from_secs(15), "a new leader", || {
        c.leader(survivor).is_some_and(|l| l != leader)
    });
    wait_for(
        Duration::from_secs(15),
        "workers Ready under the new leader",
        || {
            c.node_rows(survivor)
                .is_some_and(|r| r["w1"]["Status"] == "Ready" && r["w2"]["Status"] == "Ready")
        },
    );
    std::thread::sleep(Duration::from_secs(3));
    let after: BTreeSet<String> = c
        .containers()
        .into_iter()
        .filter(|k| k.running)
        .map(|k| k.id)
        .collect();
    assert_eq!(before, after, "containers were restarted or duplicated");
    assert_eq!(total(&c.running_per_node(survivor, "talk")), 4);
    assert_eq!(
        c.service_ps(survivor, "talk").len(),
        4,
        "new tasks were created"
    );
}
