//! End-to-end: the routing mesh in a 3-node lab, each node in its own network namespace (real
//! VXLAN, real nftables DNAT, real containers). The test process is the outside client: it
//! sits on the lab bridge and connects to the nodes' own addresses, as a user would. Needs
//! root, iproute2, nftables, gcc (the UDP test image) and a Docker Engine.

mod common;

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{containers_under, test_images, wait_for};

const IMAGE: &str = "orch-test/busybox:1";
const UDP_IMAGE: &str = "orch-test/udp-echo:1";
/// Answers `GET /` with its hostname, and `GET /cgi-bin/ip` with the client's address.
const WEB: &str = "mkdir -p /www/cgi-bin && hostname > /www/index.html \
    && printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho $REMOTE_ADDR\\n' > /www/cgi-bin/ip \
    && chmod +x /www/cgi-bin/ip && exec httpd -f -p 80 -h /www";

type Lab = common::netns::NetnsLab;

/// `GET path` from this process to `addr:port`; the body's last line.
fn get(addr: &str, port: u16, path: &str) -> Result<String, String> {
    let sock: SocketAddr = format!("{addr}:{port}")
        .parse()
        .map_err(|e| format!("{e}"))?;
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(2))
        .map_err(|e| format!("connect {sock}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .map_err(|e| e.to_string())?;
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .map_err(|e| format!("send {sock}: {e}"))?;
    let mut out = String::new();
    s.read_to_string(&mut out)
        .map_err(|e| format!("read {sock}: {e}"))?;
    if !out.starts_with("HTTP/1") {
        return Err(format!("{sock} answered {out:?}"));
    }
    Ok(out.lines().last().unwrap_or("").trim().to_string())
}

/// Whether `addr:port` refuses a connection at once (nothing behind the port).
fn refuses(addr: &str, port: u16) -> bool {
    let Ok(sock) = format!("{addr}:{port}").parse::<SocketAddr>() else {
        return false;
    };
    matches!(
        TcpStream::connect_timeout(&sock, Duration::from_secs(2)),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused
    )
}

/// A datagram to `addr:port`; the answer.
fn udp(addr: &str, port: u16) -> Result<String, String> {
    let s = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    s.send_to(b"ping", format!("{addr}:{port}"))
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 512];
    let (n, _) = s.recv_from(&mut buf).map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&buf[..n]).trim().to_string())
}

/// Requests to every node in turn, every 20 ms, until stopped: (successes, failures).
struct Load {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<(usize, Vec<String>)>,
}

impl Load {
    fn start(addrs: Vec<String>, port: u16) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let (mut ok, mut failed) = (0, Vec::new());
            let mut i = 0;
            while !flag.load(Ordering::Relaxed) {
                let addr = &addrs[i % addrs.len()];
                i += 1;
                match get(addr, port, "/") {
                    Ok(_) => ok += 1,
                    Err(e) => failed.push(e),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (ok, failed)
        });
        Load { stop, handle }
    }

    fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .join()
            .unwrap_or((0, vec!["load thread panicked".into()]))
    }
}

/// Runs `change` under a steady loop of requests to every node's 8080 (from a second before
/// it to `settle` after it): none may fail.
fn without_a_failed_request(addrs: &[String], what: &str, settle: Duration, change: impl FnOnce()) {
    let load = Load::start(addrs.to_vec(), 8080);
    std::thread::sleep(Duration::from_secs(1));
    change();
    std::thread::sleep(settle);
    let (ok, failed) = load.finish();
    assert!(ok > 50, "{what}: only {ok} requests");
    assert!(
        failed.is_empty(),
        "{what}: {} failed: {failed:?}",
        failed.len()
    );
}

/// A service's `Endpoint.Ports` from `inspect`: (published, target, protocol, mode).
fn endpoint_ports(l: &Lab, service: &str) -> Vec<(u64, u64, String, String)> {
    let out = l.ok(&["service", "inspect", service]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("inspect JSON");
    v[0]["Endpoint"]["Ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["PublishedPort"].as_u64().unwrap_or(0),
                p["TargetPort"].as_u64().unwrap_or(0),
                p["Protocol"].as_str().unwrap_or("").to_string(),
                p["PublishMode"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn a_published_port_answers_on_every_node_and_follows_the_service() {
    let l = Lab::up("mesh", "ports");
    let addrs = l.addrs();
    let all: Vec<String> = addrs.values().cloned().collect();

    // Two tasks, on m1 and m2; m3 has none.
    let created = Instant::now();
    l.ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "web",
        "-p",
        "8080:80",
        "--replicas",
        "2",
        "--constraint",
        "node.hostname!=m3",
        IMAGE,
        "sh",
        "-c",
        WEB,
    ]);
    wait_for(
        Duration::from_secs(90),
        "web answering on every node",
        || all.iter().all(|a| get(a, 8080, "/").is_ok()),
    );
    println!(
        "service create -p to the port answering on every node: {} ms",
        created.elapsed().as_millis()
    );
    // Both tasks running and in every node's mesh (the port answers with the first one).
    wait_for(
        Duration::from_secs(60),
        "both tasks behind every node",
        || {
            l.running("web").len() == 2
                && all.iter().all(|a| {
                    let hosts: std::collections::BTreeSet<String> =
                        (0..20).filter_map(|_| get(a, 8080, "/").ok()).collect();
                    hosts.len() == 2
                })
        },
    );

    // 100 requests to each node's address, the node without a task included: all answer,
    // and each task gets at least a quarter.
    for (node, addr) in &addrs {
        let mut hits: BTreeMap<String, usize> = BTreeMap::new();
        for _ in 0..100 {
            match get(addr, 8080, "/") {
                Ok(host) => *hits.entry(host).or_default() += 1,
                Err(e) => panic!("a request to {node} ({addr}) failed: {e}"),
            }
        }
        assert_eq!(hits.len(), 2, "{node}: {hits:?}");
        assert!(hits.values().all(|n| *n >= 25), "{node}: {hits:?}");
    }
    // The node's own connections, to 127.0.0.1, go through the mesh too.
    let m3_ns = l
        .lab
        .node("m3")
        .ok()
        .and_then(|n| n.netns.clone())
        .expect("netns");
    let local = std::process::Command::new("nsenter")
        .arg(format!("--net=/run/netns/{m3_ns}"))
        .args(["--", "curl", "-s", "-m", "3", "http://127.0.0.1:8080/"])
        .output()
        .expect("curl in m3's netns");
    assert!(
        local.status.success() && !local.stdout.is_empty(),
        "127.0.0.1:8080 on m3: {local:?}"
    );

    // UDP: a published UDP port answers on every node.
    l.ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "echo",
        "-p",
        "5353:53/udp",
        "--constraint",
        "node.hostname==m1",
        UDP_IMAGE,
    ]);
    wait_for(
        Duration::from_secs(60),
        "UDP answering on every node",
        || all.iter().all(|a| udp(a, 5353).is_ok()),
    );
    // A UDP flow (one client port) follows its backend's replacement: the node forgets the
    // flow's old backend, though the client keeps sending.
    let flow = UdpSocket::bind("0.0.0.0:0").expect("a client port");
    flow.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let m3 = addrs["m3"].clone();
    let ask = || -> Option<String> {
        flow.send_to(b"ping", format!("{m3}:5353")).ok()?;
        let mut buf = [0u8; 512];
        let (n, _) = flow.recv_from(&mut buf).ok()?;
        String::from_utf8_lossy(&buf[..n])
            .split_whitespace()
            .next()
            .map(str::to_string)
    };
    let before = ask().expect("the flow's first answer");
    l.ok(&["service", "update", "--force", "echo"]);
    wait_for(
        Duration::from_secs(60),
        "the flow answered by the new task",
        || ask().is_some_and(|host| host != before),
    );

    // Local mode: the task sees the client's own address; a node without a task refuses at
    // once.
    l.ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "who",
        "--publish",
        "published=8081,target=80,mode=local",
        "--constraint",
        "node.hostname==m1",
        IMAGE,
        "sh",
        "-c",
        WEB,
    ]);
    let m1 = addrs["m1"].clone();
    wait_for(Duration::from_secs(60), "who answering on m1", || {
        get(&m1, 8081, "/cgi-bin/ip").is_ok()
    });
    let seen = get(&m1, 8081, "/cgi-bin/ip").expect("who");
    assert!(
        seen.contains(&l.host_addr()),
        "the task saw {seen:?}, not the client's {}",
        l.host_addr()
    );
    for node in ["m2", "m3"] {
        let started = Instant::now();
        assert!(refuses(&addrs[node], 8081), "{node} should refuse 8081");
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "{node} took {:?} to refuse",
            started.elapsed()
        );
    }
    // Host mode on an overlay: the node running the task answers (the client's address
    // kept, as docker's host mode does); the others refuse.
    l.ok(&["network", "create", "front"]);
    l.ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "pinned",
        "--network",
        "front",
        "--publish",
        "published=8082,target=80,mode=host",
        "--constraint",
        "node.hostname==m2",
        IMAGE,
        "sh",
        "-c",
        WEB,
    ]);
    let m2 = addrs["m2"].clone();
    wait_for(Duration::from_secs(60), "pinned answering on m2", || {
        get(&m2, 8082, "/cgi-bin/ip").is_ok()
    });
    let seen = get(&m2, 8082, "/cgi-bin/ip").expect("pinned");
    assert!(seen.contains(&l.host_addr()), "host mode saw {seen:?}");
    for node in ["m1", "m3"] {
        assert!(refuses(&addrs[node], 8082), "{node} should refuse 8082");
    }
    let refused = l
        .orch(&[
            "service",
            "create",
            "-d",
            "--name",
            "anyport",
            "--network",
            "front",
            "--publish",
            "target=80,mode=host",
            IMAGE,
        ])
        .expect_err("host mode on an overlay needs a published port");
    assert!(refused.contains("without a published port"), "{refused}");

    let ls = l.ok(&["service", "ls"]);
    assert!(ls.contains("*:8080->80/tcp"), "{ls}");
    assert!(ls.contains("*:5353->53/udp"), "{ls}");
    assert!(ls.contains("*:8081->80/tcp (local)"), "{ls}");

    // A port another service holds is refused with swarm's message, and nothing is created.
    let err = l
        .orch(&[
            "service", "create", "-d", "--name", "thief", "-p", "8080:80", IMAGE,
        ])
        .expect_err("8080 is web's");
    assert!(
        err.contains("port '8080' is already in use by service 'web'"),
        "{err}"
    );
    assert!(!l.ok(&["service", "ls"]).contains("thief"));

    // No published port given: one is picked from 30000-32767, shown by ls and inspect.
    l.ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "auto",
        "-p",
        "80",
        "--constraint",
        "node.hostname==m2",
        IMAGE,
        "sh",
        "-c",
        WEB,
    ]);
    let ports = endpoint_ports(&l, "auto");
    assert_eq!(ports.len(), 1, "{ports:?}");
    let (picked, target, proto, mode) = ports[0].clone();
    assert!((30000..=32767).contains(&picked), "{picked}");
    assert_eq!(
        (target, proto.as_str(), mode.as_str()),
        (80, "tcp", "ingress")
    );
    let ls = l.ok(&["service", "ls"]);
    assert!(ls.contains(&format!("*:{picked}->80/tcp")), "{ls}");
    let picked = u16::try_from(picked).expect("a port");
    wait_for(Duration::from_secs(60), "the picked port answering", || {
        all.iter().all(|a| get(a, picked, "/").is_ok())
    });

    // Scale 2→4 under a steady loop of requests to every node: nothing fails.
    without_a_failed_request(&all, "scale-up", Duration::from_secs(2), || {
        l.ok(&["service", "scale", "web=4"]);
    });

    // A rolling update, start-first, under the loop: nothing fails.
    without_a_failed_request(&all, "rolling update", Duration::from_secs(3), || {
        l.ok(&[
            "service",
            "update",
            "--update-order",
            "start-first",
            "--update-parallelism",
            "2",
            "--image",
            "orch-test/busybox:2",
            "web",
        ]);
    });
    let on_two = containers_under(&l.root)
        .into_iter()
        .filter(|k| k.running && k.service == "web" && k.image.ends_with(":2"))
        .count();
    assert_eq!(on_two, 4, "every web task runs the new image");

    // m2 drained under the loop: its tasks leave the mesh before they stop; nothing fails.
    without_a_failed_request(&all, "drain", Duration::from_secs(1), || {
        l.ok(&["node", "update", "--availability", "drain", "m2"]);
        wait_for(Duration::from_secs(60), "web's tasks off m2", || {
            let ps = l.orch(&["service", "ps", "web", "--filter", "desired-state=running"]);
            ps.is_ok_and(|out| !out.lines().skip(1).any(|line| line.contains(" m2 ")))
                && l.running("web").len() == 4
        });
    });
    l.ok(&["node", "update", "--availability", "active", "m2"]);

    // Removed: the port stops answering on every node within a second, and is free again.
    let removed = Instant::now();
    l.ok(&["service", "rm", "web"]);
    let mut refused: BTreeMap<&str, Duration> = BTreeMap::new();
    while refused.len() < addrs.len() && removed.elapsed() < Duration::from_secs(5) {
        for (node, addr) in &addrs {
            if !refused.contains_key(node.as_str()) && refuses(addr, 8080) {
                refused.insert(node, removed.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    println!("service rm: 8080 refused after {refused:?}");
    assert_eq!(refused.len(), addrs.len(), "{refused:?}");
    assert!(
        refused.values().all(|t| *t < Duration::from_secs(1)),
        "{refused:?}"
    );
    l.ok(&[
        "service", "create", "-d", "--name", "web2", "-p", "8080:80", IMAGE, "sleep", "600",
    ]);

    // Everything the mesh made goes with the lab.
    let tags: Vec<String> = l
        .ok(&["node", "ls", "-q"])
        .lines()
        .map(|id| format!("orch-{}-", id.trim().chars().take(6).collect::<String>()))
        .collect();
    drop(l);
    let leftovers = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    assert!(
        !leftovers
            .lines()
            .any(|n| tags.iter().any(|t| n.starts_with(t.as_str()))),
        "netns left: {leftovers}"
    );
}

/// What a single node in the host's own netns makes for the mesh, removed whatever happens
/// (a failed test must not leave a host with orch's links or rules).
struct HostMesh {
    client_ns: String,
    host_link: String,
    node_tag: String,
}

impl Drop for HostMesh {
    fn drop(&mut self) {
        let run = |args: &[&str]| {
            let _ = std::process::Command::new(args[0])
                .args(&args[1..])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        };
        run(&["ip", "netns", "del", &self.client_ns]);
        run(&["ip", "link", "del", &self.host_link]);
        if self.node_tag.is_empty() {
            return;
        }
        run(&["ip", "link", "del", "ing0"]);
        run(&["nft", "delete", "table", "ip", "orch_mesh"]);
        for dir in ["-i", "-o"] {
            run(&["iptables", "-D", "DOCKER-USER", dir, "ing0", "-j", "ACCEPT"]);
        }
        orch_agent::net::plane::remove_node_leftovers(&self.node_tag);
    }
}

fn succeeds(args: &[&str]) -> bool {
    std::process::Command::new(args[0])
        .args(&args[1..])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn sh(args: &[&str]) {
    assert!(succeeds(args), "{args:?} failed");
}

/// On a host with Docker (FORWARD policy DROP), a client behind an interface Docker knows
/// nothing of reaches a published port: orch's DOCKER-USER rules let the mesh through, come
/// back when removed (as an engine restart does), and `leave` takes every link, table and
/// rule away.
#[test]
fn on_a_docker_host_the_mesh_gets_past_the_forward_policy_and_leave_removes_it() {
    test_images();
    let pid = std::process::id();
    let mut guard = HostMesh {
        client_ns: format!("orchmt-{pid}"),
        host_link: format!("omt{}", pid % 100_000),
        node_tag: String::new(),
    };
    // The client: its own netns, a /30 to the host.
    let octet = 1 + pid % 250;
    let (host_ip, client_ip) = (format!("10.199.{octet}.1"), format!("10.199.{octet}.2"));
    let ns = guard.client_ns.clone();
    let link = guard.host_link.clone();
    sh(&["ip", "netns", "add", &ns]);
    sh(&[
        "ip", "link", "add", &link, "type", "veth", "peer", "name", "c0", "netns", &ns,
    ]);
    sh(&["ip", "addr", "add", &format!("{host_ip}/30"), "dev", &link]);
    sh(&["ip", "link", "set", &link, "up"]);
    sh(&[
        "ip",
        "-n",
        &ns,
        "addr",
        "add",
        &format!("{client_ip}/30"),
        "dev",
        "c0",
    ]);
    sh(&["ip", "-n", &ns, "link", "set", "c0", "up"]);
    sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
    sh(&["ip", "-n", &ns, "route", "add", "default", "via", &host_ip]);

    let c = common::Cluster::with_nodes(1, 0, &[]);
    guard.node_tag = c.node_id("m1").chars().take(6).collect();
    c.orch(
        "m1",
        &[
            "service",
            "create",
            "-d",
            "--name",
            "web",
            "-p",
            "18080:80",
            "--replicas",
            "2",
            IMAGE,
            "sh",
            "-c",
            WEB,
        ],
    )
    .expect_ok("service create");
    // Host mode: the engine binds the port on the node running the task.
    c.orch(
        "m1",
        &[
            "service",
            "create",
            "-d",
            "--name",
            "pinned",
            "--publish",
            "published=18090,target=80,mode=host",
            IMAGE,
            "sh",
            "-c",
            WEB,
        ],
    )
    .expect_ok("host-mode service");
    let url = format!("http://{host_ip}:18080/cgi-bin/ip");
    let from_client = || {
        std::process::Command::new("nsenter")
            .arg(format!("--net=/run/netns/{ns}"))
            .args(["--", "curl", "-s", "-m", "2", &url])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    wait_for(Duration::from_secs(90), "the client reaching 18080", || {
        from_client().is_some()
    });
    let seen = from_client().unwrap_or_default();
    assert!(!seen.is_empty(), "no answer");
    assert!(get("127.0.0.1", 18080, "/").is_ok(), "127.0.0.1:18080");
    wait_for(Duration::from_secs(60), "the host-mode port", || {
        get("127.0.0.1", 18090, "/").is_ok()
    });
    let rule = [
        "iptables",
        "-C",
        "DOCKER-USER",
        "-o",
        "ing0",
        "-j",
        "ACCEPT",
    ];
    assert!(succeeds(&rule), "orch's DOCKER-USER rule");

    // Docker's chains rewritten (an engine restart): orch puts its rules back.
    while succeeds(&[
        "iptables",
        "-D",
        "DOCKER-USER",
        "-o",
        "ing0",
        "-j",
        "ACCEPT",
    ]) {}
    let answered = from_client().is_some();
    if !succeeds(&rule) {
        // Still without the rule after the request: the request had none either.
        assert!(!answered, "without the rule, FORWARD drops the mesh");
    }
    let back = wait_for(Duration::from_secs(20), "the rule back", || succeeds(&rule));
    println!("DOCKER-USER rule back after {back:?}");
    assert!(from_client().is_some(), "the client reaches the mesh again");

    // Leave: no link, table, rule or container of the mesh stays.
    c.orch("m1", &["leave", "--force"]).expect_ok("leave");
    assert!(!succeeds(&["ip", "link", "show", "ing0"]), "ing0 left");
    assert!(
        !succeeds(&["nft", "list", "table", "ip", "orch_mesh"]),
        "orch_mesh table left"
    );
    assert!(!succeeds(&rule), "DOCKER-USER rule left");
    let netns = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    assert!(
        !netns.contains(&format!("orch-{}-", guard.node_tag)),
        "netns left: {netns}"
    );
    assert!(c.containers().is_empty(), "containers left");
}
