//! The fault-injection suite, CI-sized: every fault schedule once, each against a fresh lab of
//! 3 managers and 2 workers in their own network namespaces, driven through `orch lab chaos` as
//! a user runs it. The chaos run's checker fails the run on any anomaly (a lost acknowledged
//! write, a duplicate, a slot running a spec twice, no convergence, managers disagreeing, a
//! partitioned leader accepting writes, a full disk not failing loudly); these tests also check
//! that the run did work (operations were acknowledged) and that the lab is gone afterwards.
//! `orch lab up`/`status`/`down` are tested here too.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{orch_bin, orch_in, test_images, wait_for};

/// Removes a lab whatever happens to the test.
struct LabGuard(PathBuf);

impl Drop for LabGuard {
    fn drop(&mut self) {
        if self.0.join("lab.json").exists() {
            let _ = lab_cmd("down", &self.0)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(name: &str) -> LabGuard {
    let dir = std::env::temp_dir().join(format!("orch-faults-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    LabGuard(dir)
}

/// `orch lab VERB --dir DIR`.
fn lab_cmd(verb: &str, dir: &Path) -> Command {
    let mut cmd = Command::new(orch_bin());
    cmd.args(["lab", verb, "--dir"])
        .arg(dir)
        .stdin(Stdio::null());
    cmd
}

fn netns_names() -> String {
    Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Namespaces, processes, containers and mounts of the lab in `dir` are all gone.
#[track_caller]
fn assert_lab_gone(dir: &Path, lab_id: &str) {
    let d = dir.display().to_string();
    let procs = Command::new("pgrep")
        .args(["-f", &d])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    assert!(procs.trim().is_empty(), "processes of {d} left: {procs}");
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    assert!(!mounts.contains(&d), "mounts under {d} left");
    if !lab_id.is_empty() {
        let left: Vec<String> = netns_names()
            .lines()
            .filter(|l| l.starts_with(&format!("{lab_id}-")))
            .map(str::to_string)
            .collect();
        assert!(left.is_empty(), "namespaces left: {left:?}");
    }
}

/// Runs one schedule once; asserts no anomaly and that the workload got writes through.
fn chaos(schedule: &str) {
    test_images();
    let guard = scratch(schedule);
    let report = guard.0.with_extension("md");
    let _ = std::fs::remove_file(&report);
    let started = Instant::now();
    let out = Command::new(orch_bin())
        .args(["lab", "chaos", "--schedule", schedule, "--dir"])
        .arg(&guard.0)
        .arg("--report")
        .arg(&report)
        .stdin(Stdio::null())
        .output()
        .expect("run orch lab chaos");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{schedule}: {:.0?}\n{stdout}\n{stderr}", started.elapsed());
    assert!(
        out.status.success(),
        "orch lab chaos --schedule {schedule} failed:\n{stdout}\n{stderr}"
    );
    let acked: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("No anomalies ("))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary line in:\n{stdout}"));
    assert!(acked > 0, "the workload got nothing acknowledged");
    let table = std::fs::read_to_string(&report).expect("the report file");
    assert!(
        table.contains(&format!("| {schedule} | 1 |")),
        "report row for {schedule}:\n{table}"
    );
    let _ = std::fs::remove_file(&report);
    // The run removed its lab (it was not --keep).
    assert!(!guard.0.exists(), "{} left behind", guard.0.display());
    assert_lab_gone(&guard.0, "");
}

#[test]
fn leader_kill() {
    chaos("leader-kill");
}

#[test]
fn leader_pause() {
    chaos("leader-pause");
}

#[test]
fn follower_kill() {
    chaos("follower-kill");
}

#[test]
fn leader_partition() {
    chaos("leader-partition");
}

#[test]
fn one_way_partition() {
    chaos("one-way-partition");
}

#[test]
fn all_managers_restart() {
    chaos("all-managers-restart");
}

#[test]
fn worker_partition() {
    chaos("worker-partition");
}

#[test]
fn agent_restart_during_update() {
    chaos("agent-restart-during-update");
}

#[test]
fn disk_full() {
    chaos("disk-full");
}

#[test]
fn slow_leader() {
    chaos("slow-leader");
}

#[test]
fn flapping_links() {
    chaos("flapping-links");
}

/// `orch lab up` brings up a cluster a user can drive with the data dirs it prints; `status`
/// lists the nodes; `down` leaves nothing behind.
#[test]
fn lab_up_status_down() {
    test_images();
    let guard = scratch("updown");
    let dir = guard.0.clone();
    let up = Command::new(orch_bin())
        .args([
            "lab",
            "up",
            "--managers",
            "3",
            "--workers",
            "2",
            "--netns",
            "--dir",
        ])
        .arg(&dir)
        .stdin(Stdio::null())
        .output()
        .expect("run orch lab up");
    let stdout = String::from_utf8_lossy(&up.stdout).into_owned();
    assert!(
        up.status.success(),
        "lab up failed: {stdout}{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let m1 = dir.join("m1");
    assert!(
        stdout.contains(&m1.display().to_string()),
        "lab up says how to reach it:\n{stdout}"
    );
    let lab: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("lab.json")).expect("test step"))
            .expect("test step");
    let bridge = lab["bridge"].as_str().unwrap_or_default().to_string();
    assert!(!bridge.is_empty(), "a --netns lab has a bridge: {lab}");

    wait_for(Duration::from_secs(30), "5 Ready nodes", || {
        let ls = orch_in(&m1, &["node", "ls"]);
        ls.ok() && ls.stdout.matches(" Ready ").count() == 5
    });
    let status = lab_cmd("status", &dir).output().expect("test step");
    let status = String::from_utf8_lossy(&status.stdout);
    assert_eq!(status.matches("running").count(), 5, "{status}");

    // A service runs on the lab, through a follower too.
    let create = orch_in(
        &dir.join("m2"),
        &[
            "service",
            "create",
            "-d",
            "--name",
            "web",
            "--replicas",
            "2",
            "orch-test/busybox:1",
            "sleep",
            "100000",
        ],
    );
    assert!(create.ok(), "{create:?}");
    wait_for(Duration::from_secs(30), "2 running tasks", || {
        let ps = orch_in(&m1, &["service", "ps", "web"]);
        ps.stdout.matches("Running").count() == 2
    });

    let node_ids: Vec<String> = ["m1", "m2", "m3", "w1", "w2"]
        .iter()
        .filter_map(|n| {
            let text = std::fs::read_to_string(dir.join(n).join("node.json")).ok()?;
            let v: serde_json::Value = serde_json::from_str(&text).ok()?;
            v["node_id"].as_str().map(str::to_string)
        })
        .collect();
    assert_eq!(node_ids.len(), 5, "every lab node has an id");

    let down = lab_cmd("down", &dir).output().expect("test step");
    assert!(down.status.success(), "{down:?}");
    assert!(!dir.exists(), "lab down removes its directory");
    assert_lab_gone(&dir, &bridge);
    for id in node_ids {
        let left = Command::new("docker")
            .args(["ps", "-aq", "--filter", &format!("label=orch.node.id={id}")])
            .output()
            .expect("test step");
        let left = String::from_utf8_lossy(&left.stdout);
        assert!(
            left.trim().is_empty(),
            "containers of node {id} left: {left}"
        );
    }
}

/// A lab of `managers` managers and no workers, in namespaces, removed when dropped.
fn manager_lab(name: &str, tmpfs_mib: Option<u32>) -> (orch_lab::Lab, LabGuard) {
    let guard = scratch(name);
    let mut lab = orch_lab::Lab::up(orch_lab::LabConfig {
        tmpfs_mib,
        ..orch_lab::LabConfig::netns_managers(guard.0.clone(), 3, orch_bin())
    })
    .expect("lab up");
    lab.down_on_drop = true;
    (lab, guard)
}

/// `orch service create -d --name NAME orch-test/busybox:1 sleep 9` on lab node `node`.
fn create_sleeper(
    lab: &orch_lab::Lab,
    node: &str,
    name: &str,
) -> anyhow::Result<std::process::Output> {
    lab.orch(
        node,
        &[
            "service",
            "create",
            "-d",
            "--name",
            name,
            "orch-test/busybox:1",
            "sleep",
            "9",
        ],
    )
}

fn leader_of(lab: &orch_lab::Lab) -> String {
    let mut leader = None;
    wait_for(Duration::from_secs(20), "a leader", || {
        leader = lab.leader("m1");
        leader.is_some()
    });
    leader.expect("test step")
}

/// Found by the long chaos run (leader-partition "recovered" p99 of 8 s): when the leader was
/// cut off, every agent whose session was with it heard nothing and, 2 s later, stopped all its
/// tasks ("no manager reachable") — although the other managers were reachable and elected a
/// new leader within 2 s. The agent only gave up on its silent session after 4 s, and then
/// could be sent back to the cut-off leader. Every task of the cluster was killed and replaced,
/// and the nodes were marked Down. An agent now leaves a silent session after 1.5 periods,
/// tries the other managers first, and keeps its tasks.
#[test]
fn regression_a_leader_partition_made_every_agent_stop_its_tasks() {
    let (lab, _guard) = manager_lab("fence", None);
    let leader = leader_of(&lab);
    let followers: Vec<&str> = ["m1", "m2", "m3"]
        .into_iter()
        .filter(|m| *m != leader)
        .collect();
    lab.orch_ok(
        followers[0],
        &[
            "service",
            "create",
            "--name",
            "kept",
            "--replicas",
            "4",
            "--constraint",
            &format!("node.hostname!={leader}"),
            "orch-test/busybox:1",
            "sleep",
            "1000000",
        ],
    )
    .expect("create a service on the followers' nodes");
    let running = |from: &str| {
        lab.orch_ok(
            from,
            &[
                "service",
                "ps",
                "-q",
                "--no-trunc",
                "--filter",
                "desired-state=running",
                "kept",
            ],
        )
        .map(|out| {
            let mut ids: Vec<String> = out.lines().map(str::to_string).collect();
            ids.sort();
            ids
        })
        .unwrap_or_default()
    };
    let before = running(followers[0]);
    assert_eq!(before.len(), 4, "{before:?}");
    lab.cut(&leader, &[], orch_lab::Direction::Both)
        .expect("cut the leader off");
    std::thread::sleep(Duration::from_secs(6));
    lab.heal().expect("heal");
    wait_for(Duration::from_secs(20), "the lab whole again", || {
        lab.healthy()
    });
    for f in &followers {
        let log = std::fs::read_to_string(lab.node(f).expect("test step").dir.join("orch.log"))
            .expect("test step");
        assert!(
            !log.contains("stopping this node's tasks"),
            "{f}'s agent stopped its tasks although two managers were reachable"
        );
    }
    assert_eq!(
        running(followers[0]),
        before,
        "the same tasks run: none was killed and replaced"
    );
}

/// Found by the chaos suite (leader partitioned): a write sent to a follower was forwarded to
/// the leader; when the leader was cut off, the forwarded call hung until the connection's
/// keepalive gave up (~15s), long after a new leader had been elected. It now ends as soon as
/// the follower sees the leader change, saying the outcome is unknown.
#[test]
fn regression_forwarded_call_hung_after_the_leader_was_cut_off() {
    let (lab, _guard) = manager_lab("forward", None);
    let leader = leader_of(&lab);
    let follower = ["m1", "m2", "m3"]
        .into_iter()
        .find(|m| *m != leader)
        .expect("test step");
    lab.orch_ok(follower, &["node", "ls"])
        .expect("the follower answers");
    lab.cut(&leader, &[], orch_lab::Direction::Both)
        .expect("cut the leader off");
    let started = Instant::now();
    let out = create_sleeper(&lab, follower, "fwd").expect("run orch");
    let took = started.elapsed();
    lab.heal().expect("heal");
    assert!(
        took < Duration::from_secs(8),
        "the forwarded create took {took:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("leader") || stderr.contains("quorum"),
            "a refusal says why: {stderr}"
        );
    }
    // The cluster goes on: a write through the follower succeeds once a new leader is up.
    wait_for(
        Duration::from_secs(20),
        "a write through the follower",
        || {
            lab.orch(follower, &["service", "rm", "fwd"]).is_ok()
                && create_sleeper(&lab, follower, "fwd2").is_ok_and(|o| o.status.success())
        },
    );
}

/// Found by the long chaos run (disk-full, cycles 3 and 4 of 5): a manager whose disk filled
/// up ran on for over a minute, looking healthy — its raft log reused pages that compaction had
/// freed inside its file, so no write failed. Whether a write fails depends on the log's past;
/// the full disk does not: with no write at all, the manager must stop within seconds, saying
/// the disk is full.
#[test]
fn regression_a_full_disk_went_unnoticed_while_no_write_failed() {
    let (lab, _guard) = manager_lab("diskquiet", Some(64));
    leader_of(&lab);
    lab.fill_disk("m3").expect("fill m3's raft disk");
    let filled = Instant::now();
    wait_for(Duration::from_secs(15), "m3 to exit", || !lab.alive("m3"));
    let took = filled.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "m3 exited {took:?} after its disk filled"
    );
    m3_said_why_and_the_others_go_on(&lab, &["is full"]);
}

/// Found by the chaos suite (disk full): a manager whose raft disk filled up logged the error
/// but its process could stay up, wedged, instead of failing loudly. It now exits, saying why.
#[test]
fn regression_full_disk_left_the_manager_running() {
    let (lab, _guard) = manager_lab("diskfull", Some(64));
    leader_of(&lab);
    lab.fill_disk("m3").expect("fill m3's raft disk");
    // Writes make m3 append to its log.
    let mut n = 0;
    wait_for(Duration::from_secs(30), "m3 to exit", || {
        n += 1;
        let _ = create_sleeper(&lab, "m1", &format!("d{n}"));
        !lab.alive("m3")
    });
    m3_said_why_and_the_others_go_on(&lab, &["No space left on device", "is full"]);
}

/// m3's log says it stopped for one of `reasons`, and the other two managers still take writes.
#[track_caller]
fn m3_said_why_and_the_others_go_on(lab: &orch_lab::Lab, reasons: &[&str]) {
    let log = std::fs::read_to_string(lab.node("m3").expect("test step").dir.join("orch.log"))
        .expect("test step");
    assert!(
        reasons.iter().any(|r| log.contains(r)) && log.contains("manager failed"),
        "m3 says why it stopped:\n{log}"
    );
    let out = create_sleeper(lab, "m1", "after").expect("test step");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
