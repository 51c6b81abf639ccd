//! End-to-end: overlay networks in the store and the CLI (`network create|ls|inspect|rm`),
//! with docker's output and messages; what is refused and why, for networks and for services
//! naming them. (Tasks on networks, with real containers: `overlay.rs`.)

mod common;

use common::Cluster;
use serde_json::Value;

fn names(c: &Cluster) -> Vec<String> {
    let run = c.orch("m1", &["network", "ls", "--format", "{{.Name}}"]);
    run.expect_ok("network ls");
    run.stdout.lines().map(str::to_string).collect()
}

#[test]
fn networks_are_created_listed_inspected_and_removed_as_docker_does() {
    let c = Cluster::with_nodes(3, 0, &[]);
    // `init` made the routing mesh's network.
    assert_eq!(names(&c), ["ingress"]);
    let ingress = c.inspect("m1", "network", "ingress").expect("ingress");
    assert_eq!(ingress["Ingress"], true);
    assert_eq!(ingress["IPAM"]["Config"][0]["Subnet"], "10.0.0.0/24");

    let run = c.orch("m1", &["network", "create", "-d", "overlay", "front"]);
    run.expect_ok("create front");
    let id = run.stdout.trim().to_string();
    c.orch(
        "m2",
        &[
            "network",
            "create",
            "--subnet",
            "192.168.50.0/24",
            "--gateway",
            "192.168.50.254",
            "--internal",
            "--attachable",
            "--label",
            "tier=back",
            "back",
        ],
    )
    .expect_ok("create back through a follower");
    assert_eq!(names(&c), ["back", "front", "ingress"]);

    let front: Value = c.inspect("m3", "network", "front").expect("inspect front");
    assert_eq!(front["Id"], id.as_str());
    assert_eq!(front["Scope"], "swarm");
    assert_eq!(front["Driver"], "overlay");
    assert_eq!(front["IPAM"]["Config"][0]["Subnet"], "10.0.1.0/24");
    assert_eq!(front["IPAM"]["Config"][0]["Gateway"], "10.0.1.1");
    let back: Value = c.inspect("m1", "network", "back").expect("inspect back");
    assert_eq!(back["Internal"], true);
    assert_eq!(back["Attachable"], true);
    assert_eq!(back["Labels"]["tier"], "back");
    assert_eq!(back["IPAM"]["Config"][0]["Gateway"], "192.168.50.254");
    assert_ne!(
        front["Options"]["com.docker.network.driver.overlay.vxlanid_list"],
        back["Options"]["com.docker.network.driver.overlay.vxlanid_list"]
    );
    let filtered = c.orch(
        "m1",
        &["network", "ls", "-q", "--no-trunc", "-f", "label=tier"],
    );
    assert_eq!(filtered.stdout.trim(), back["Id"].as_str().expect("id"));

    // A leader change keeps them.
    let leader = c.leader("m1").expect("leader");
    c.kill(&leader);
    let survivor = ["m1", "m2", "m3"]
        .into_iter()
        .find(|m| *m != leader)
        .expect("survivor");
    common::wait_for(std::time::Duration::from_secs(20), "a new leader", || {
        c.orch(survivor, &["network", "inspect", "front"]).ok()
    });

    // rm by name and by ID prefix; a missing one is an error, the others are still removed.
    let run = c.orch(
        survivor,
        &[
            "network",
            "rm",
            "front",
            &back["Id"].as_str().expect("id")[..6],
            "nope",
        ],
    );
    assert!(!run.ok());
    assert!(
        run.stderr.contains("network nope not found"),
        "{}",
        run.stderr
    );
    assert_eq!(run.stdout.lines().count(), 2, "{}", run.stdout);
    let left = c.orch(survivor, &["network", "ls", "--format", "{{.Name}}"]);
    assert_eq!(left.stdout.trim(), "ingress");
}

#[test]
fn bad_network_and_port_input_is_refused_and_changes_nothing() {
    let c = Cluster::with_nodes(1, 0, &[]);
    c.orch(
        "m1",
        &["network", "create", "--subnet", "10.5.0.0/16", "taken"],
    )
    .expect_ok("create");
    let cases: Vec<(&[&str], &str)> = vec![
        (
            &["network", "create", "--subnet", "10.5.0.0/33", "x"],
            "invalid subnet",
        ),
        (
            &["network", "create", "--subnet", "10.5.1.7/24", "x"],
            "did you mean 10.5.1.0/24?",
        ),
        (
            &["network", "create", "--subnet", "10.5.9.0/24", "x"],
            "overlaps network taken (10.5.0.0/16)",
        ),
        (
            &["network", "create", "taken"],
            "network with name taken already exists",
        ),
        (
            &[
                "network",
                "create",
                "--subnet",
                "10.9.0.0/24",
                "--gateway",
                "10.8.0.1",
                "x",
            ],
            "invalid gateway",
        ),
        (
            &["network", "create", "--opt", "encrypted", "x"],
            "neither ESP (IPsec) nor WireGuard",
        ),
        (
            &["network", "create", "-d", "macvlan", "x"],
            "not supported",
        ),
        (&["network", "create", "bad name"], "invalid network name"),
        (
            &[
                "service",
                "create",
                "--network",
                "missing",
                "orch-test/busybox:1",
            ],
            "network missing not found",
        ),
        (
            &[
                "service",
                "create",
                "--network",
                "ingress",
                "orch-test/busybox:1",
            ],
            "cannot be explicitly attached to the ingress network",
        ),
        (
            &[
                "service",
                "create",
                "--network",
                "name=taken,alias=not_a_label",
                "orch-test/busybox:1",
            ],
            "invalid network alias",
        ),
        (
            &[
                "service",
                "create",
                "--network",
                "taken",
                "--network",
                "taken",
                "orch-test/busybox:1",
            ],
            "specified multiple times",
        ),
        (
            &["service", "create", "-p", "0:80", "orch-test/busybox:1"],
            "ports are 1-65535",
        ),
        (
            &[
                "service",
                "create",
                "-p",
                "8080:65536",
                "orch-test/busybox:1",
            ],
            "ports are 1-65535",
        ),
        (
            &[
                "service",
                "create",
                "-p",
                "8080:80/icmp",
                "orch-test/busybox:1",
            ],
            "invalid protocol \"icmp\"",
        ),
        (
            &[
                "service",
                "create",
                "--publish",
                "published=8080,target=80,mode=mesh",
                "orch-test/busybox:1",
            ],
            "invalid publish mode \"mesh\"",
        ),
        (
            &[
                "service",
                "create",
                "-p",
                "8080:80",
                "-p",
                "8080:81",
                "orch-test/busybox:1",
            ],
            "port 8080/tcp is published twice",
        ),
        (
            &[
                "service",
                "create",
                "--network",
                "taken",
                "--publish",
                "target=80,mode=host",
                "orch-test/busybox:1",
            ],
            "in host mode without a published port",
        ),
    ];
    for (args, says) in cases {
        let run = c.orch("m1", args);
        assert!(!run.ok(), "{args:?} succeeded");
        assert!(run.stderr.contains(says), "{args:?}: {}", run.stderr);
    }
    assert_eq!(names(&c), ["ingress", "taken"]);
    let services = c.orch("m1", &["service", "ls", "-q"]);
    assert_eq!(services.stdout.trim(), "", "no service was created");
}
