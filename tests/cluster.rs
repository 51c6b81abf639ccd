//! End-to-end: the cluster foundation. Real node processes, real mTLS, raft on disk.

mod common;

use std::time::{Duration, Instant};

use common::{wait_for, Cluster};

fn all_ready(c: &Cluster, from: &str, count: usize) -> bool {
    c.node_ls(from)
        .is_some_and(|rows| rows.len() == count && rows.iter().all(|r| r["Status"] == "Ready"))
}

#[test]
fn five_nodes_survive_leader_loss_and_full_restart() {
    let c = Cluster::with_nodes(3, 2, &[]);
    wait_for(Duration::from_secs(20), "5 Ready nodes", || {
        all_ready(&c, "m2", 5)
    });
    let rows = c.node_rows("m2").expect("node ls");
    let statuses: Vec<&str> = rows
        .values()
        .map(|r| r["ManagerStatus"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == "Leader").count(),
        1,
        "{rows:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == "Reachable").count(),
        2,
        "{rows:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| s.is_empty()).count(),
        2,
        "workers have no manager status"
    );
    // The table marks the node the command runs on.
    let table = c.orch("m2", &["node", "ls"]);
    assert!(
        table.stdout.lines().next().unwrap_or("").starts_with("ID"),
        "{}",
        table.stdout
    );
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.contains(" * ") && l.contains("m2")),
        "{}",
        table.stdout
    );
    c.orch("m1", &["node", "update", "--label-add", "zone=a", "w1"])
        .expect_ok("label");

    // SIGKILL the leader: another manager takes over and commands keep working through it.
    let leader = c.leader("m1").expect("leader");
    let survivor = ["m1", "m2", "m3"]
        .into_iter()
        .find(|m| *m != leader)
        .expect("survivor");
    c.kill(&leader);
    let started = Instant::now();
    wait_for(Duration::from_secs(10), "a write after leader loss", || {
        c.orch(
            survivor,
            &["node", "update", "--label-add", "after=kill", "w2"],
        )
        .ok()
    });
    let took = started.elapsed();
    let new_leader = c.leader(survivor).expect("new leader");
    assert_ne!(new_leader, leader);
    assert!(took < Duration::from_secs(5), "failover took {took:?}");
    // The killed manager comes back as Reachable.
    c.restart(&leader);
    wait_for(
        Duration::from_secs(20),
        "restarted manager Reachable",
        || {
            c.node_rows(survivor).is_some_and(|r| {
                r[&leader]["ManagerStatus"] == "Reachable" && r[&leader]["Status"] == "Ready"
            })
        },
    );

    // Stop every node and start them again: same cluster, same nodes, same labels.
    let mut cluster_id = None;
    wait_for(Duration::from_secs(10), "cluster ID", || {
        cluster_id = c
            .orch("m1", &["info"])
            .stdout
            .lines()
            .find(|l| l.contains("ClusterID"))
            .map(str::to_string);
        cluster_id.is_some()
    });
    let ids: Vec<String> = c
        .node_ls("m1")
        .expect("ls")
        .iter()
        .map(|r| r["ID"].as_str().unwrap_or("").to_string())
        .collect();
    for name in ["w1", "w2", "m1", "m2", "m3"] {
        c.stop(name);
    }
    for name in ["m1", "m2", "m3", "w1", "w2"] {
        c.restart(name);
    }
    wait_for(
        Duration::from_secs(30),
        "5 Ready nodes after restart",
        || all_ready(&c, "m3", 5),
    );
    let after: Vec<String> = c
        .node_ls("m1")
        .expect("ls")
        .iter()
        .map(|r| r["ID"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(ids, after);
    wait_for(
        Duration::from_secs(10),
        "same cluster ID after restart",
        || {
            c.orch("m1", &["info"])
                .stdout
                .lines()
                .find(|l| l.contains("ClusterID"))
                .map(str::to_string)
                == cluster_id
        },
    );
    let w1 = c.inspect("m2", "node", "w1").expect("inspect");
    assert_eq!(w1["Spec"]["Labels"]["zone"], "a");
    assert_eq!(
        c.inspect("m2", "node", "w2").expect("inspect")["Spec"]["Labels"]["after"],
        "kill"
    );
}

#[test]
fn writes_fail_fast_without_quorum() {
    let c = Cluster::with_nodes(3, 0, &[]);
    c.kill("m2");
    c.kill("m3");
    let started = Instant::now();
    let run = c.orch("m1", &["node", "update", "--label-add", "x=y", "m1"]);
    let took = started.elapsed();
    assert!(!run.ok(), "a write without quorum must fail");
    assert!(took < Duration::from_secs(6), "took {took:?}");
    assert!(
        run.stderr.contains("does not have a leader")
            || run.stderr.contains("may or may not have been applied"),
        "unclear error: {}",
        run.stderr
    );
}

#[test]
fn worker_cannot_manage_the_cluster() {
    let c = Cluster::with_nodes(1, 1, &[]);
    let run = c.orch("w1", &["node", "ls"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("This node is not a swarm manager. Worker nodes can't be used to view or modify cluster state. Please run this command on a manager node or promote the current node to a manager."),
        "{}",
        run.stderr
    );
    // The worker's certificate against the manager's control API over mTLS.
    let run = c.orch("w1", &["-H", &c.node("m1").addr(), "node", "ls"]);
    assert!(!run.ok());
    assert!(run.stderr.contains("Permission denied"), "{}", run.stderr);
    // A manager's certificate is accepted the same way.
    c.orch("m1", &["-H", &c.node("m1").addr(), "node", "ls"])
        .expect_ok("manager over mTLS");
}

#[test]
fn stopped_worker_goes_down_within_three_heartbeats_and_comes_back() {
    let c = Cluster::with_nodes(1, 1, &["--dispatcher-heartbeat", "1s"]);
    wait_for(Duration::from_secs(10), "2 Ready nodes", || {
        all_ready(&c, "m1", 2)
    });
    c.signal("w1", "STOP");
    let started = Instant::now();
    wait_for(Duration::from_secs(10), "w1 Down", || {
        c.node_rows("m1")
            .is_some_and(|r| r["w1"]["Status"] == "Down")
    });
    let took = started.elapsed();
    assert!(
        took <= Duration::from_millis(3_000 + 1_500),
        "Down after {took:?} (3 heartbeats of 1s)"
    );
    assert!(
        took >= Duration::from_millis(1_500),
        "Down too early: {took:?}"
    );
    // A second node process for w1's data dir is refused at once: a paused process is alive
    // (only a killed one, still exiting, is waited for).
    let started = Instant::now();
    let run = c.orch("w1", &["daemon"]);
    assert!(
        !run.ok() && run.stderr.contains("another orch daemon"),
        "{}",
        run.stderr
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    c.signal("w1", "CONT");
    wait_for(Duration::from_secs(10), "w1 Ready again", || {
        c.node_rows("m1")
            .is_some_and(|r| r["w1"]["Status"] == "Ready")
    });
}

#[test]
fn promote_demote_remove_and_their_refusals() {
    let c = Cluster::with_nodes(1, 2, &[]);
    // The last manager cannot be demoted.
    let run = c.orch("m1", &["node", "demote", "m1"]);
    assert!(!run.ok());
    assert!(
        run.stderr
            .contains("attempting to demote the last manager of the swarm"),
        "{}",
        run.stderr
    );
    // A node that is not down cannot be removed.
    let run = c.orch("m1", &["node", "rm", "w2"]);
    assert!(!run.ok());
    assert!(
        run.stderr.contains("is not down and can't be removed"),
        "{}",
        run.stderr
    );

    let run = c.orch("m1", &["node", "promote", "w1"]);
    run.expect_ok("promote");
    assert_eq!(
        run.stdout.trim(),
        "Node w1 promoted to a manager in the swarm."
    );
    wait_for(Duration::from_secs(20), "w1 Reachable manager", || {
        c.node_rows("m1")
            .is_some_and(|r| r["w1"]["ManagerStatus"] == "Reachable")
    });
    // The promoted node now serves the control API itself.
    wait_for(Duration::from_secs(10), "w1 serves node ls", || {
        c.orch("w1", &["node", "ls"]).ok()
    });
    // A manager cannot be removed without demotion.
    let run = c.orch("m1", &["node", "rm", "w1"]);
    assert!(run.stderr.contains("is a cluster manager and is a member of the raft cluster. It must be demoted to worker before removal"), "{}", run.stderr);
    // Demoting the leader hands leadership over first.
    let run = c.orch("w1", &["node", "demote", "m1"]);
    run.expect_ok("demote leader");
    assert_eq!(run.stdout.trim(), "Manager m1 demoted in the swarm.");
    wait_for(Duration::from_secs(20), "m1 demoted, w1 leader", || {
        c.node_rows("w1")
            .is_some_and(|r| r["w1"]["ManagerStatus"] == "Leader" && r["m1"]["ManagerStatus"] == "")
    });
    wait_for(
        Duration::from_secs(10),
        "m1 refuses manager commands",
        || {
            c.orch("m1", &["node", "ls"])
                .stderr
                .contains("This node is not a swarm manager")
        },
    );
    // Remove a worker by force, while it runs: its certificate stops working.
    c.orch("w1", &["node", "rm", "--force", "w2"])
        .expect_ok("rm --force");
    wait_for(Duration::from_secs(10), "w2 gone", || {
        c.node_rows("w1").is_some_and(|r| !r.contains_key("w2"))
    });
    let run = c.orch("w2", &["-H", &c.node("w1").addr(), "node", "ls"]);
    assert!(
        run.stderr.contains("removed from the swarm"),
        "{}",
        run.stderr
    );
}

#[test]
fn leave_and_force_new_cluster() {
    let mut c = Cluster::with_nodes(3, 1, &[]);
    c.orch("m1", &["node", "update", "--label-add", "keep=me", "w1"])
        .expect_ok("label");
    // A worker leaves: its state is gone, and it shows Down until removed.
    let run = c.orch("w1", &["leave"]);
    run.expect_ok("worker leave");
    assert!(run.stdout.contains("Node left the swarm."));
    assert!(!c.node("w1").dir.join("node.json").exists());
    wait_for(Duration::from_secs(10), "w1 Down", || {
        c.node_rows("m1")
            .is_some_and(|r| r["w1"]["Status"] == "Down")
    });
    c.orch("m1", &["node", "rm", "w1"])
        .expect_ok("rm a Down node");
    // A manager needs --force to leave.
    let run = c.orch("m3", &["leave"]);
    assert!(!run.ok());
    assert!(
        run.stderr.contains("participating as a manager"),
        "{}",
        run.stderr
    );
    c.orch("m3", &["leave", "--force"])
        .expect_ok("manager leave --force");
    wait_for(Duration::from_secs(10), "2 managers", || {
        c.node_rows("m1")
            .is_some_and(|r| r.values().filter(|n| n["ManagerStatus"] != "").count() == 2)
    });
    // Lose quorum, then turn the survivor into a new one-manager cluster with all state.
    c.orch("m1", &["node", "update", "--label-add", "zone=z", "m1"])
        .expect_ok("label m1");
    c.kill("m2");
    let run = c.orch("m1", &["init", "--force-new-cluster"]);
    run.expect_ok("force-new-cluster");
    assert!(run.stdout.contains("Swarm initialized"));
    let m1 = c.inspect("m1", "node", "m1").expect("inspect");
    assert_eq!(m1["Spec"]["Labels"]["zone"], "z");
    assert_eq!(m1["ManagerStatus"]["Leader"], true);
    let managers = c
        .node_rows("m1")
        .expect("ls")
        .values()
        .filter(|n| n["ManagerStatus"] != "")
        .count();
    assert_eq!(managers, 1);
    // And it takes new members again.
    c.join("w9", "worker", "m1")
        .expect_ok("join after force-new-cluster");
    let _ = &mut c;
}

#[test]
fn a_node_whose_engine_does_not_answer_joins_and_says_so() {
    let mut c = Cluster::with_nodes(1, 0, &[]);
    let token = c.token("m1", "worker");
    let addr = c.node("m1").addr();
    c.join_with_token(
        "w1",
        &token,
        &addr,
        &["--docker-host", "unix:///nonexistent/docker.sock"],
    )
    .expect_ok("join without engine");
    wait_for(Duration::from_secs(10), "w1 Ready", || {
        c.node_rows("m1")
            .is_some_and(|r| r["w1"]["Status"] == "Ready")
    });
    let w1 = c.inspect("m1", "node", "w1").expect("inspect");
    let message = w1["Status"]["Message"].as_str().unwrap_or("");
    assert!(message.contains("engine unavailable"), "{w1}");
    // The node with a working engine reports its engine version.
    let m1 = c.inspect("m1", "node", "m1").expect("inspect");
    assert!(
        !m1["Description"]["Engine"]["EngineVersion"]
            .as_str()
            .unwrap_or("")
            .is_empty(),
        "{m1}"
    );
    assert!(
        m1["Description"]["Resources"]["NanoCPUs"]
            .as_i64()
            .unwrap_or(0)
            > 0
    );
}

#[test]
fn cluster_settings_listing_formats_and_catch_up_after_compaction() {
    let mut c = Cluster::new();
    c.init("m1", &["--snapshot-interval", "5"])
        .expect_ok("init");
    // Enough writes to take snapshots and compact the log.
    for i in 0..30 {
        c.orch(
            "m1",
            &["node", "update", "--label-add", &format!("n{i}=v"), "m1"],
        )
        .expect_ok("write");
    }
    // A manager joining now can only catch up by snapshot.
    c.join("m2", "manager", "m1")
        .expect_ok("manager join after compaction");
    wait_for(Duration::from_secs(10), "m2 sees every label", || {
        c.inspect("m2", "node", "m1").is_some_and(|n| {
            n["Spec"]["Labels"]
                .as_object()
                .is_some_and(|l| l.len() == 30)
        })
    });
    assert!(
        c.log("m2").contains("installed raft snapshot"),
        "m2 caught up without a snapshot?"
    );

    c.orch(
        "m1",
        &[
            "cluster",
            "update",
            "--dispatcher-heartbeat",
            "2s",
            "--task-history-limit",
            "3",
        ],
    )
    .expect_ok("cluster update");
    let info = c.orch("m2", &["info"]).stdout;
    assert!(info.contains("Heartbeat Period: 2s"), "{info}");
    assert!(info.contains("Task History Retention Limit: 3"), "{info}");
    let run = c.orch("m1", &["cluster", "update", "--task-history-limit", "-1"]);
    assert!(
        !run.ok() && run.stderr.contains("must be 0 or more"),
        "{}",
        run.stderr
    );
    let run = c.orch("m1", &["cluster", "update", "--cert-expiry", "1s"]);
    assert!(
        !run.ok() && run.stderr.contains("minimum certificate expiry"),
        "{}",
        run.stderr
    );

    // -q prints IDs only; --pretty reads as docker's.
    let ids = c.orch("m1", &["node", "ls", "-q"]).stdout;
    assert_eq!(ids.lines().count(), 2);
    assert!(ids.lines().all(|l| l.len() == 25), "{ids}");
    let pretty = c.orch("m1", &["node", "inspect", "--pretty", "m2"]).stdout;
    for field in [
        "Hostname:",
        "Status:",
        "Manager Status:",
        "Platform:",
        "Engine Version:",
    ] {
        assert!(pretty.contains(field), "{field} missing in:\n{pretty}");
    }
    let templated = c
        .orch(
            "m1",
            &[
                "node",
                "inspect",
                "--format",
                "{{.Spec.Role}} {{.Description.Hostname}}",
                "m2",
            ],
        )
        .stdout;
    assert_eq!(templated.trim(), "manager m2");
}

/// Runs `orch --data-dir DIR ARGS` with its stdout a pipe nobody reads any more (as
/// `orch node ls | head -1` once head has exited); returns (exit code, stderr).
fn with_closed_stdout(dir: &std::path::Path, args: &[&str]) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = std::process::Command::new(common::orch_bin())
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run orch");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `orch version` shows this command's and the node process's versions, as `docker version`
/// does; a command whose reader went away ends quietly (it used to panic with a backtrace:
/// `orch node ls | head -1` on a busy cluster), with the status docker's gets from SIGPIPE.
#[test]
fn version_and_a_closed_stdout() {
    let c = Cluster::with_nodes(1, 0, &[]);
    let run = c.orch("m1", &["version"]);
    run.expect_ok("version");
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        run.stdout.starts_with("Client:\n")
            && run.stdout.contains("\nServer:\n")
            && run
                .stdout
                .matches(&format!(" Version:    {version}\n"))
                .count()
                == 2
            && run.stdout.contains(" Is Manager: true"),
        "{}",
        run.stdout
    );
    // No node process: the client part, then why the server's is missing.
    let nowhere = c.root.path().join("nowhere");
    let run = common::orch_in(&nowhere, &["version"]);
    assert!(!run.ok() && run.stdout.starts_with("Client:\n"), "{run:?}");
    assert!(run.stderr.contains("not a swarm manager"), "{}", run.stderr);

    for args in [&["node", "ls"][..], &["version"], &["service", "ls"]] {
        let (code, stderr) = with_closed_stdout(&c.node("m1").dir, args);
        assert_eq!(code, Some(141), "orch {args:?}: {stderr}");
        assert!(stderr.is_empty(), "orch {args:?} said: {stderr}");
    }
}
