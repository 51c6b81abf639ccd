//! End-to-end: services on overlay networks in a 3-node lab, each node in its own network
//! namespace (real VXLAN between the nodes, real containers, real DNS and VIP rules). Needs
//! root, iproute2, nftables and a Docker Engine.

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::wait_for;

const IMAGE: &str = "orch-test/busybox:1";

type Lab = common::netns::NetnsLab;

fn lab(name: &str) -> Lab {
    Lab::up("overlay", name)
}

fn exec(container: &str, script: &str) -> (bool, String) {
    let out = Command::new("docker")
        .args(["exec", container, "sh", "-c", script])
        .stdin(Stdio::null())
        .output()
        .expect("docker exec");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    )
}

/// The addresses `nslookup NAME` answers with (busybox's output: "Address: A" lines after
/// the server's own).
fn lookup(container: &str, name: &str) -> BTreeSet<String> {
    let (_, out) = exec(container, &format!("nslookup {name} 2>/dev/null"));
    out.split("Name:")
        .skip(1)
        .flat_map(|block| {
            block
                .lines()
                .filter_map(|l| l.trim().strip_prefix("Address:"))
                .map(|a| a.trim().split(' ').next().unwrap_or("").to_string())
                .collect::<Vec<_>>()
        })
        .filter(|a| !a.is_empty())
        .collect()
}

/// An HTTP request from `container` to `addr` (busybox's `nc`: its static `wget` cannot
/// resolve names without NSS); the body's last line, None when nothing answered.
fn http(container: &str, addr: &str) -> Option<String> {
    let (_, out) = exec(
        container,
        &format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {addr}"),
    );
    out.starts_with("HTTP/1")
        .then(|| out.lines().last().unwrap_or("").trim().to_string())
}

/// The hostnames `count` requests to `addr` (port 80) reached.
fn reached(container: &str, addr: &str, count: usize) -> BTreeSet<String> {
    (0..count)
        .filter_map(|_| http(container, &format!("{addr} 80")))
        .collect()
}

/// The one address `name` resolves to from `container`.
fn resolve(container: &str, name: &str) -> String {
    lookup(container, name)
        .into_iter()
        .next()
        .unwrap_or_default()
}

/// `service create -d --name NAME --network NETWORK FLAGS… IMAGE COMMAND…`.
fn create(l: &Lab, name: &str, network: &str, flags: &[&str], command: &[&str]) {
    let mut args = vec![
        "service",
        "create",
        "-d",
        "--name",
        name,
        "--network",
        network,
    ];
    args.extend_from_slice(flags);
    args.push(IMAGE);
    args.extend_from_slice(command);
    l.ok(&args);
}

const SLEEP: &[&str] = &["sleep", "3600"];

/// A web server answering with its hostname, on m1 and m2.
fn web(l: &Lab, name: &str, network: &str, replicas: &str, extra: &[&str]) {
    let mut flags = vec!["--replicas", replicas, "--constraint", "node.hostname!=m3"];
    flags.extend_from_slice(extra);
    create(
        l,
        name,
        network,
        &flags,
        &[
            "sh",
            "-c",
            "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www",
        ],
    );
}

/// A container to look from, on m3.
fn client(l: &Lab, name: &str, network: &str) {
    create(
        l,
        name,
        network,
        &["--constraint", "node.hostname==m3"],
        SLEEP,
    );
}

#[test]
fn services_on_an_overlay_reach_each_other_by_name_across_nodes() {
    let l = lab("names");
    l.ok(&["network", "create", "front"]);
    l.ok(&["network", "create", "back"]);
    l.ok(&["network", "create", "--internal", "sealed"]);
    web(&l, "web", "front", "2", &[]);
    web(&l, "rr", "front", "2", &["--endpoint-mode", "dnsrr"]);
    web(&l, "other", "back", "1", &[]);
    client(&l, "client", "front");
    client(&l, "inside", "sealed");
    wait_for(Duration::from_secs(90), "every task running", || {
        [
            ("web", 2),
            ("rr", 2),
            ("other", 1),
            ("client", 1),
            ("inside", 1),
        ]
        .iter()
        .all(|(s, n)| l.running(s).len() == *n)
    });
    let client = l.one("client");

    // Every task's address is unique, and inspect shows them.
    let mut addrs = BTreeSet::new();
    let mut web_addrs = BTreeSet::new();
    for service in ["web", "rr", "other", "client", "inside"] {
        let ps = l.ok(&["service", "ps", service, "-q"]);
        for id in ps.lines() {
            let v: serde_json::Value =
                serde_json::from_str(&l.ok(&["inspect", id])).expect("task json");
            let addr = v[0]["NetworksAttachments"][0]["Addresses"][0]
                .as_str()
                .unwrap_or("")
                .split('/')
                .next()
                .unwrap_or("")
                .to_string();
            assert!(!addr.is_empty(), "{service} task {id} has an address: {v}");
            assert!(addrs.insert(addr.clone()), "{addr} handed out twice");
            if service == "web" {
                web_addrs.insert(addr);
            }
        }
    }
    let vip = {
        let v: serde_json::Value =
            serde_json::from_str(&l.ok(&["service", "inspect", "web"])).expect("service json");
        v[0]["Endpoint"]["VirtualIPs"][0]["Addr"]
            .as_str()
            .unwrap_or("")
            .split('/')
            .next()
            .unwrap_or("")
            .to_string()
    };
    assert!(!vip.is_empty());

    // Names: the VIP, the tasks, dnsrr's tasks.
    wait_for(Duration::from_secs(20), "web resolves to its VIP", || {
        lookup(&client, "web") == BTreeSet::from([vip.clone()])
    });
    assert_eq!(lookup(&client, "tasks.web"), web_addrs);
    assert_eq!(
        lookup(&client, "rr").len(),
        2,
        "dnsrr answers with the tasks"
    );
    assert!(
        lookup(&client, "other").is_empty(),
        "another network's service is not ours"
    );

    // Through the VIP, from the third node, both tasks answer.
    assert_eq!(resolve(&client, "web"), vip);
    let hosts = reached(&client, &vip, 20);
    assert_eq!(
        hosts.len(),
        2,
        "both tasks reached over the overlay: {hosts:?}"
    );

    // Isolation: the other network's task is not reachable by address.
    let other_addr = addresses(&l, "other")
        .into_iter()
        .next()
        .unwrap_or_default();
    assert!(!other_addr.is_empty());
    assert_eq!(
        http(&client, &format!("{other_addr} 80")),
        None,
        "a second network is isolated"
    );

    // Egress: an address outside the cluster (the lab bridge's, on the host) answers a
    // task on a normal network, not one on an internal network.
    let bridge = l.lab.state.bridge.clone().expect("a netns lab");
    let outside = l.host_addr();
    let mut server = Command::new("python3")
        .args(["-m", "http.server", "--bind", &outside, "18080"])
        .current_dir(&l.root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("an outside server");
    // The server is up once the host can connect (python starts slowly on a busy machine).
    let target: std::net::SocketAddr = format!("{outside}:18080").parse().expect("address");
    wait_for(Duration::from_secs(20), "the outside server", || {
        std::net::TcpStream::connect_timeout(&target, Duration::from_millis(200)).is_ok()
    });
    let mut from_client = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while from_client.is_none() && std::time::Instant::now() < deadline {
        from_client = http(&client, &format!("{outside} 18080"));
    }
    let from_inside = http(&l.one("inside"), &format!("{outside} 18080"));
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        from_client.is_some(),
        "egress from a normal network (via {bridge})"
    );
    assert_eq!(from_inside, None, "no egress from an internal network");

    // Scale: the VIP's backends follow.
    l.ok(&["service", "scale", "-d", "web=4"]);
    wait_for(
        Duration::from_secs(60),
        "4 web tasks answer through the VIP",
        || l.running("web").len() == 4 && reached(&client, &vip, 30).len() == 4,
    );
    l.ok(&["service", "scale", "-d", "web=1"]);
    wait_for(Duration::from_secs(60), "1 web task answers", || {
        l.running("web").len() == 1 && reached(&client, &vip, 10).len() == 1
    });

    // Regression: a task attached on a node changed its gateway bridge's MAC (a bridge takes
    // its lowest port's), and DNS queries from the node's tasks were lost for 5-40 s after a
    // scale-up (a longer loop of this kind lost 22 of 264 before the fix, 0 after).
    create(&l, "probe", "front", &["--mode", "global"], SLEEP);
    wait_for(Duration::from_secs(60), "a probe on every node", || {
        l.running("probe").len() == 3
    });
    let probes: Vec<String> = l.running("probe").into_iter().map(|k| k.name).collect();
    let mut lost = Vec::new();
    for replicas in 2..=9 {
        l.ok(&["service", "scale", "-d", &format!("web={replicas}")]);
        for probe in &probes {
            for _ in 0..3 {
                if !exec(probe, "timeout 3 nslookup tasks.web >/dev/null").0 {
                    lost.push(format!("{probe} at web={replicas}"));
                }
            }
        }
    }
    assert_eq!(
        lost,
        Vec::<String>::new(),
        "DNS queries lost while tasks attached"
    );

    // A used network cannot be removed; an unused one can, and leaves nothing behind.
    let refused = l.lab.orch("m1", &["network", "rm", "front"]).expect("run");
    assert!(!refused.status.success());
    l.ok(&["service", "rm", "other"]);
    wait_for(Duration::from_secs(30), "other's task gone", || {
        l.running("other").is_empty()
    });
    l.ok(&["network", "rm", "back"]);
}

/// The overlay address of each running container of `service`.
fn addresses(l: &Lab, service: &str) -> BTreeSet<String> {
    l.running(service)
        .iter()
        .map(|k| {
            exec(&k.name, "ip addr show eth0 | awk '/inet /{print $2}'")
                .1
                .split('/')
                .next()
                .unwrap_or("")
                .to_string()
        })
        .filter(|a| !a.is_empty())
        .collect()
}

/// Every address held by a task of the cluster that has not ended (from `inspect`).
fn held_addresses(l: &Lab, services: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for service in services {
        let ps = l.ok(&["service", "ps", service, "-q"]);
        for id in ps.lines() {
            let v: serde_json::Value =
                serde_json::from_str(&l.ok(&["inspect", id])).expect("task json");
            let state = v[0]["Status"]["State"].as_str().unwrap_or("");
            if !matches!(
                state,
                "new" | "pending" | "assigned" | "accepted" | "preparing" | "starting" | "running"
            ) {
                continue;
            }
            for a in v[0]["NetworksAttachments"].as_array().into_iter().flatten() {
                for addr in a["Addresses"].as_array().into_iter().flatten() {
                    out.push(addr.as_str().unwrap_or("").to_string());
                }
            }
        }
    }
    out
}

#[test]
fn endpoints_follow_restarts_drains_leader_loss_and_a_full_subnet() {
    let l = lab("follow");
    l.ok(&["network", "create", "front"]);
    web(&l, "web", "front", "2", &[]);
    client(&l, "client", "front");
    wait_for(Duration::from_secs(90), "tasks running", || {
        l.running("web").len() == 2 && l.running("client").len() == 1
    });
    let client = l.one("client");
    let vip = resolve(&client, "web");
    wait_for(
        Duration::from_secs(20),
        "both tasks through the VIP",
        || reached(&client, &vip, 20).len() == 2,
    );

    // An agent restart keeps its containers, their addresses and their plumbing, once. (m2:
    // restarting the leader's node is the fault suite's business.)
    let before: BTreeSet<(String, String)> = l
        .running("web")
        .into_iter()
        .map(|k| (k.id.clone(), k.node_id.clone()))
        .collect();
    let web_addrs = addresses(&l, "web");
    let m1 = l
        .ok(&["node", "inspect", "m1", "--format", "{{.ID}}"])
        .trim()
        .to_string();
    let m2 = l
        .ok(&["node", "inspect", "m2", "--format", "{{.ID}}"])
        .trim()
        .to_string();
    let vni = {
        let v: serde_json::Value =
            serde_json::from_str(&l.ok(&["network", "inspect", "front"])).expect("json");
        v[0]["Options"]["com.docker.network.driver.overlay.vxlanid_list"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    let sandbox = format!("orch-{}-{vni}", &m2[..6]);
    let task_links = || {
        let out = Command::new("ip")
            .args(["-n", &sandbox, "-o", "link", "show"])
            .output()
            .expect("ip");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.split(": ").nth(1).is_some_and(|n| n.starts_with('t')))
            .count()
    };
    let on_m2 = before.iter().filter(|(_, n)| *n == m2).count();
    assert_eq!(
        task_links(),
        on_m2,
        "one veth per task of m2 on the network"
    );
    l.lab.stop("m2");
    l.lab.restart("m2").expect("m2 back");
    wait_for(Duration::from_secs(30), "m2 Ready", || {
        l.lab
            .node_rows("m1")
            .is_some_and(|rows| rows.iter().all(|r| r["Status"] == "Ready"))
    });
    std::thread::sleep(Duration::from_secs(3));
    let after: BTreeSet<(String, String)> = l
        .running("web")
        .into_iter()
        .map(|k| (k.id.clone(), k.node_id.clone()))
        .collect();
    assert_eq!(after, before, "the same containers run");
    assert_eq!(addresses(&l, "web"), web_addrs, "with the same addresses");
    assert_eq!(task_links(), on_m2, "nothing plumbed twice");
    wait_for(
        Duration::from_secs(20),
        "both tasks through the VIP after the restart",
        || reached(&client, &vip, 20).len() == 2,
    );

    // Drain m2: its endpoint leaves the names and the VIP everywhere; the task moves.
    l.ok(&["node", "update", "--availability", "drain", "m2"]);
    wait_for(Duration::from_secs(60), "web moved off m2", || {
        let running = l.running("web");
        running.len() == 2 && running.iter().all(|k| k.node_id == m1)
    });
    let now = addresses(&l, "web");
    // Names and the VIP follow (the VIP table is written just after the DNS table changes, and
    // a new task's httpd starts just after its container runs).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let names = lookup(&client, "tasks.web");
        if names == now && reached(&client, &vip, 20).len() == 2 {
            break;
        }
        if std::time::Instant::now() > deadline {
            let mut diag = format!("tasks.web: {names:?}, running: {now:?}\n");
            for a in &now {
                diag.push_str(&format!("{a}: {:?}\n", http(&client, &format!("{a} 80"))));
            }
            diag.push_str(&exec(&client, "nslookup tasks.web; ip neigh; ip route").1);
            diag.push_str(&l.ok(&["service", "ps", "--no-trunc", "web"]));
            let ps = Command::new("docker")
                .args(["ps", "-a", "--format", "{{.Names}} {{.Status}}"])
                .output()
                .expect("docker ps");
            diag.push_str(&String::from_utf8_lossy(&ps.stdout));
            panic!(
                "names and the VIP after the drain:\n{diag}\n--- m3 ---\n{}\n--- m1 ---\n{}",
                l.log("m3"),
                l.log("m1")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    l.ok(&["node", "update", "--availability", "active", "m2"]);

    // The leader is killed during a scale-up: no address is handed out twice.
    let leader = l.lab.leader("m3").expect("a leader");
    l.ok(&["service", "scale", "-d", "web=6"]);
    l.lab.kill(&leader);
    let survivor = if leader == "m3" { "m2" } else { "m3" };
    wait_for(Duration::from_secs(90), "6 web tasks", || {
        l.lab
            .orch(survivor, &["service", "ls", "--format", "{{.Replicas}}"])
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("6/6"))
    });
    l.lab.restart(&leader).expect("back");
    wait_for(Duration::from_secs(20), "m1 answers", || {
        l.lab
            .orch("m1", &["service", "ls"])
            .is_ok_and(|o| o.status.success())
    });
    let held = held_addresses(&l, &["web", "client"]);
    let unique: BTreeSet<&String> = held.iter().collect();
    assert_eq!(unique.len(), held.len(), "an address held twice: {held:?}");

    // A full subnet: the task says why it waits, and is placed once an address frees.
    l.ok(&["network", "create", "--subnet", "10.99.0.0/29", "tiny"]);
    for (name, replicas) in [("hog", "2"), ("big", "4")] {
        create(&l, name, "tiny", &["--replicas", replicas], SLEEP);
    }
    wait_for(Duration::from_secs(60), "big waits for addresses", || {
        l.ok(&["service", "ps", "--no-trunc", "big"])
            .contains("no free address on network tiny")
            && l.running("big").len() == 1
    });
    l.ok(&["service", "rm", "hog"]);
    wait_for(
        Duration::from_secs(60),
        "big placed once hog's addresses free",
        || l.running("big").len() == 4,
    );

    // Teardown leaves nothing of the nodes: no sandbox or task netns, no container.
    let ids = l.lab.node_ids();
    l.lab.down().expect("lab down");
    for id in ids {
        let prefix = format!("orch-{}-", &id[..6]);
        let left: Vec<String> = std::fs::read_dir("/run/netns")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&prefix))
            .collect();
        assert_eq!(left, Vec::<String>::new(), "netns left by node {id}");
        let containers = Command::new("docker")
            .args(["ps", "-aq", "--filter", &format!("label=orch.node.id={id}")])
            .output()
            .expect("docker ps");
        assert_eq!(
            String::from_utf8_lossy(&containers.stdout).trim(),
            "",
            "containers of {id}"
        );
    }
}
