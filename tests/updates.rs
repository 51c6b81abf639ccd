//! End-to-end: rolling updates, rollbacks and health-gated deploys, on a 3-node cluster with
//! two image tags that differ (orch-test/busybox:1 and :2).

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{test_images, wait_for, Cluster};

const V1: &str = "orch-test/busybox:1";
const V2: &str = "orch-test/busybox:2";

fn cluster(managers: usize) -> Cluster {
    test_images();
    Cluster::with_nodes(managers, 2, &["--dispatcher-heartbeat", "1s"])
}

fn create(c: &Cluster, name: &str, replicas: &str, extra: &[&str]) {
    let mut args = vec![
        "service",
        "create",
        "--name",
        name,
        "--replicas",
        replicas,
        "--stop-grace-period",
        "1s",
        "--timeout",
        "60s",
    ];
    args.extend(extra);
    args.extend([V1, "sleep", "3600"]);
    c.orch("m1", &args).expect_ok("create");
}

/// Running containers of this cluster's `service` with `image` (any image when None).
fn running(c: &Cluster, service: &str, image: Option<&str>) -> usize {
    c.containers()
        .iter()
        .filter(|k| k.running && k.service == service && image.is_none_or(|i| k.image == i))
        .count()
}

/// Samples the running count of `service` in the background; returns (stop flag, min seen).
fn sample_min_running(
    c: &Cluster,
    service: &'static str,
) -> (
    Arc<AtomicBool>,
    Arc<AtomicUsize>,
    std::thread::JoinHandle<()>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let min = Arc::new(AtomicUsize::new(usize::MAX));
    let (s, m) = (stop.clone(), min.clone());
    let root = c.root.path().to_path_buf();
    let handle = std::thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            let n = common::containers_under(&root)
                .iter()
                .filter(|k| k.running && k.service == service)
                .count();
            m.fetch_min(n, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    (stop, min, handle)
}

/// Creation seconds of the containers of `service` running `image`, sorted.
fn creation_waves(c: &Cluster, service: &str, image: &str) -> Vec<Vec<i64>> {
    let mine: std::collections::HashSet<String> =
        c.containers().into_iter().map(|k| k.id).collect();
    let ids = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            &format!("label=orch.service.name={service}"),
            "--format",
            "{{.ID}} {{.Image}}",
        ])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| {
                    l.split_once(' ')
                        .filter(|(_, i)| *i == image)
                        .map(|(id, _)| id.to_string())
                })
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .filter(|id| mine.contains(id))
        .collect::<Vec<_>>();
    let mut times: Vec<i64> = ids
        .iter()
        .filter_map(|id| {
            let out = Command::new("docker")
                .args(["inspect", "--format", "{{.Created}}", id])
                .output()
                .ok()?;
            let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let t = humantime::parse_rfc3339(&text).ok()?;
            t.duration_since(std::time::UNIX_EPOCH)
                .ok()
                .map(|d| d.as_millis() as i64)
        })
        .collect();
    times.sort();
    // Containers created within 700 ms of each other belong to one wave.
    let mut waves: Vec<Vec<i64>> = Vec::new();
    for t in times {
        match waves.last_mut() {
            Some(w) if t - w[0] < 700 => w.push(t),
            _ => waves.push(vec![t]),
        }
    }
    waves
}

fn update_state(c: &Cluster, service: &str) -> String {
    c.orch(
        "m1",
        &[
            "service",
            "inspect",
            "--format",
            "{{.UpdateStatus.State}}",
            service,
        ],
    )
    .stdout
    .trim()
    .to_string()
}

fn image_of(c: &Cluster, service: &str) -> String {
    c.orch(
        "m1",
        &[
            "service",
            "inspect",
            "--format",
            "{{.Spec.TaskTemplate.ContainerSpec.Image}}",
            service,
        ],
    )
    .stdout
    .trim()
    .to_string()
}

#[test]
fn rolling_update_in_batches_with_history() {
    let c = cluster(1);
    create(
        &c,
        "web",
        "6",
        &[
            "--update-parallelism",
            "2",
            "--update-delay",
            "2s",
            "--update-monitor",
            "500ms",
            "--rollback-parallelism",
            "3",
            "--rollback-monitor",
            "300ms",
        ],
    );
    let (stop, min, sampler) = sample_min_running(&c, "web");
    let run = c.orch(
        "m1",
        &[
            "service",
            "update",
            "--image",
            V2,
            "--timeout",
            "90s",
            "web",
        ],
    );
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    run.expect_ok("update");
    assert!(run.stdout.contains("verify: Service"), "{}", run.stdout);
    assert_eq!(running(&c, "web", Some(V2)), 6, "every task runs :2");
    assert_eq!(running(&c, "web", Some(V1)), 0);
    assert_eq!(update_state(&c, "web"), "completed");
    // Stop-first with parallelism 2: never more than 2 slots down at once.
    let lowest = min.load(Ordering::Relaxed);
    assert!(
        lowest >= 4,
        "running dropped to {lowest}: more than 2 tasks updated at once"
    );
    // The new containers came in waves of at most 2, separated by the delay.
    let waves = creation_waves(&c, "web", V2);
    assert!(waves.len() >= 3, "waves {waves:?}");
    assert!(waves.iter().all(|w| w.len() <= 2), "waves {waves:?}");
    // The old tasks are history rows, shut down.
    let rows = c.service_ps("m1", "web");
    let history: Vec<_> = rows
        .iter()
        .filter(|r| r["Name"].as_str().is_some_and(|n| n.starts_with(" \\_")))
        .collect();
    assert_eq!(history.len(), 6, "{rows:?}");
    assert!(history.iter().all(|r| r["Image"] == V1
        && r["DesiredState"] == "Shutdown"
        && r["CurrentState"]
            .as_str()
            .is_some_and(|s| s.starts_with("Shutdown"))));
    // --force replaces every task although nothing else changed.
    let before: std::collections::BTreeSet<String> = c
        .containers()
        .into_iter()
        .filter(|k| k.running)
        .map(|k| k.id)
        .collect();
    c.orch(
        "m1",
        &[
            "service",
            "update",
            "--force",
            "--update-delay",
            "0s",
            "--timeout",
            "90s",
            "web",
        ],
    )
    .expect_ok("force");
    let after: std::collections::BTreeSet<String> = c
        .containers()
        .into_iter()
        .filter(|k| k.running)
        .map(|k| k.id)
        .collect();
    assert_eq!(after.len(), 6);
    assert!(before.is_disjoint(&after), "--force kept some containers");
    assert_eq!(running(&c, "web", Some(V2)), 6);
    // Rolling back a --force update goes back to the same image (one force counter earlier).
    c.orch("m1", &["service", "rollback", "--timeout", "90s", "web"])
        .expect_ok("rollback of --force");
    assert_eq!(
        running(&c, "web", Some(V2)),
        6,
        "rolling back --force keeps the image"
    );
    // The previous spec is the one the rollback replaced: :2 as well.
    let previous = c.orch(
        "m1",
        &[
            "service",
            "inspect",
            "--format",
            "{{.PreviousSpec.TaskTemplate.ContainerSpec.Image}}",
            "web",
        ],
    );
    assert_eq!(previous.stdout.trim(), V2);
}

#[test]
fn start_first_never_drops_below_the_replica_count() {
    let c = cluster(1);
    create(
        &c,
        "api",
        "4",
        &[
            "--update-parallelism",
            "2",
            "--update-order",
            "start-first",
            "--update-monitor",
            "300ms",
        ],
    );
    let (stop, min, sampler) = sample_min_running(&c, "api");
    let run = c.orch(
        "m1",
        &[
            "service",
            "update",
            "--image",
            V2,
            "--timeout",
            "90s",
            "api",
        ],
    );
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    run.expect_ok("update");
    wait_for(Duration::from_secs(20), "old containers stopped", || {
        running(&c, "api", Some(V1)) == 0
    });
    assert_eq!(running(&c, "api", Some(V2)), 4);
    assert!(
        min.load(Ordering::Relaxed) >= 4,
        "running dropped to {}",
        min.load(Ordering::Relaxed)
    );
}

#[test]
fn a_failing_update_rolls_back_and_the_cli_says_so() {
    let c = cluster(1);
    create(
        &c,
        "svc",
        "3",
        &[
            "--update-failure-action",
            "rollback",
            "--update-monitor",
            "2s",
        ],
    );
    // The new command exits 1 at once.
    let run = c.orch(
        "m1",
        &[
            "service",
            "update",
            "--args",
            "sh -c exit_1_now",
            "--timeout",
            "90s",
            "svc",
        ],
    );
    assert!(
        !run.ok(),
        "a rolled back update must not exit 0:\n{}",
        run.stdout
    );
    assert!(run.stderr.contains("update rolled back"), "{}", run.stderr);
    assert!(
        run.stderr.contains("failure or early termination of task"),
        "{}",
        run.stderr
    );
    assert_eq!(update_state(&c, "svc"), "rollback_completed");
    // Back on the previous spec, all running.
    assert_eq!(
        c.orch(
            "m1",
            &[
                "service",
                "inspect",
                "--format",
                "{{json .Spec.TaskTemplate.ContainerSpec.Args}}",
                "svc"
            ]
        )
        .stdout
        .trim(),
        "[\"sleep\",\"3600\"]"
    );
    wait_for(Duration::from_secs(30), "3 running again", || {
        running(&c, "svc", None) == 3
    });
}

#[test]
fn a_healthcheck_that_never_passes_rolls_back() {
    let c = cluster(1);
    create(
        &c,
        "hc",
        "2",
        &[
            "--update-failure-action",
            "rollback",
            "--health-cmd",
            "true",
            "--health-interval",
            "300ms",
        ],
    );
    let run = c.orch(
        "m1",
        &[
            "service",
            "update",
            "--image",
            V2,
            "--health-cmd",
            "false",
            "--health-interval",
            "300ms",
            "--health-retries",
            "1",
            "--timeout",
            "90s",
            "hc",
        ],
    );
    assert!(!run.ok(), "{}", run.stdout);
    assert!(run.stderr.contains("update rolled back"), "{}", run.stderr);
    assert_eq!(update_state(&c, "hc"), "rollback_completed");
    assert_eq!(image_of(&c, "hc"), V1);
    let rows = c.service_ps("m1", "hc");
    assert!(
        rows.iter()
            .any(|r| r["Error"].as_str().is_some_and(|e| e.contains("unhealthy"))),
        "{rows:?}"
    );
    wait_for(Duration::from_secs(30), "2 healthy :1 running", || {
        running(&c, "hc", Some(V1)) == 2
    });
}

#[test]
fn a_paused_update_resumes_and_manual_rollback() {
    let c = cluster(1);
    create(
        &c,
        "p",
        "2",
        &["--update-failure-action", "pause", "--update-monitor", "1s"],
    );
    let run = c.orch(
        "m1",
        &[
            "service",
            "update",
            "--args",
            "sh -c exit_2_now",
            "--timeout",
            "90s",
            "p",
        ],
    );
    assert!(!run.ok());
    assert!(run.stderr.contains("update paused"), "{}", run.stderr);
    assert_eq!(update_state(&c, "p"), "paused");
    let pretty = c
        .orch("m1", &["service", "inspect", "--pretty", "p"])
        .stdout;
    assert!(
        pretty.contains("State:\t\tpaused") && pretty.contains("failure or early termination"),
        "{pretty}"
    );
    // An update of the paused service resumes it (here with a command that works).
    c.orch(
        "m1",
        &[
            "service",
            "update",
            "--args",
            "sleep 3600",
            "--timeout",
            "90s",
            "p",
        ],
    )
    .expect_ok("resume");
    assert_eq!(update_state(&c, "p"), "completed");
    wait_for(Duration::from_secs(30), "2 running", || {
        running(&c, "p", None) == 2
    });
    // Roll back by hand: to the previous spec.
    c.orch(
        "m1",
        &["service", "update", "--image", V2, "--timeout", "90s", "p"],
    )
    .expect_ok("update to :2");
    let run = c.orch("m1", &["service", "rollback", "--timeout", "90s", "p"]);
    run.expect_ok("rollback");
    assert!(
        run.stdout.contains("rollback: manually requested rollback"),
        "{}",
        run.stdout
    );
    assert_eq!(image_of(&c, "p"), V1);
    assert_eq!(update_state(&c, "p"), "rollback_completed");
    wait_for(Duration::from_secs(30), ":1 running again", || {
        running(&c, "p", Some(V1)) == 2
    });
}

#[test]
fn an_update_survives_a_leader_kill() {
    let c = cluster(3);
    create(
        &c,
        "slow",
        "4",
        &[
            "--update-parallelism",
            "1",
            "--update-delay",
            "1s",
            "--update-monitor",
            "500ms",
            "--constraint",
            "node.role==worker",
        ],
    );
    c.orch("m1", &["service", "update", "-d", "--image", V2, "slow"])
        .expect_ok("update");
    wait_for(Duration::from_secs(30), "the first new task", || {
        running(&c, "slow", Some(V2)) >= 1
    });
    let leader = c.leader("m1").expect("leader");
    let survivor = ["m1", "m2", "m3"]
        .into_iter()
        .find(|m| *m != leader)
        .expect("survivor");
    c.kill(&leader);
    wait_for(
        Duration::from_secs(60),
        "the update to complete under the new leader",
        || {
            c.orch(
                survivor,
                &[
                    "service",
                    "inspect",
                    "--format",
                    "{{.UpdateStatus.State}}",
                    "slow",
                ],
            )
            .stdout
            .trim()
                == "completed"
        },
    );
    assert_eq!(running(&c, "slow", Some(V2)), 4);
    assert_eq!(running(&c, "slow", Some(V1)), 0);
}

#[test]
fn bad_update_input_is_refused_and_changes_nothing() {
    let c = cluster(1);
    create(&c, "b", "1", &[]);
    let version = |c: &Cluster| {
        c.orch(
            "m1",
            &["service", "inspect", "--format", "{{.Version.Index}}", "b"],
        )
        .stdout
    };
    let before = version(&c);
    let cases: [(&[&str], &str); 4] = [
        (
            &["--update-failure-action", "explode"],
            "must be pause or continue or rollback",
        ),
        (&["--update-parallelism", "-1"], "must be 0 or more"),
        (
            &["--update-max-failure-ratio", "1.5"],
            "must be between 0 and 1",
        ),
        (
            &["--rollback-failure-action", "rollback"],
            "must be pause or continue",
        ),
    ];
    for (args, message) in cases {
        let mut full = vec!["service", "update"];
        full.extend(args);
        full.push("b");
        let run = c.orch("m1", &full);
        assert!(!run.ok(), "{args:?} must fail");
        assert!(run.stderr.contains(message), "{args:?}: {}", run.stderr);
    }
    assert_eq!(version(&c), before, "a refused update changed the service");
    // A service that was never updated has nothing to roll back to.
    let run = c.orch("m1", &["service", "rollback", "b"]);
    assert!(
        !run.ok() && run.stderr.contains("does not have a previous spec"),
        "{}",
        run.stderr
    );
    assert_eq!(version(&c), before);
}

#[test]
fn every_wait_ends_correctly_or_times_out_saying_what_is_missing() {
    let c = cluster(1);
    // A global service with no eligible node has nothing to wait for.
    let run = c.orch(
        "m1",
        &[
            "service",
            "create",
            "--name",
            "g",
            "--mode",
            "global",
            "--constraint",
            "node.labels.none==here",
            "--timeout",
            "20s",
            V1,
        ],
    );
    run.expect_ok("global with no eligible node");
    assert!(
        run.stdout.contains("overall progress: 0 out of 0 tasks"),
        "{}",
        run.stdout
    );
    // Scaled to zero: done once the tasks have stopped.
    create(&c, "z", "2", &[]);
    c.orch("m1", &["service", "scale", "z=0", "--timeout", "30s"])
        .expect_ok("scale to 0");
    assert_eq!(running(&c, "z", None), 0);
    // A task that can never be placed: --timeout fails with the reason.
    let started = std::time::Instant::now();
    let run = c.orch(
        "m1",
        &[
            "service",
            "create",
            "--name",
            "stuck",
            "--constraint",
            "node.hostname==nowhere",
            "--timeout",
            "3s",
            V1,
        ],
    );
    assert!(!run.ok());
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        run.stderr.contains("did not converge within 3s"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("no suitable node (scheduling constraints not satisfied on 3 nodes)"),
        "{}",
        run.stderr
    );
}
