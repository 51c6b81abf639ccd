//! The overlay data plane on real network namespaces: two "nodes" joined by an underlay link,
//! one overlay on each, a task namespace attached on each side. Tasks reach each other across
//! the nodes only once each side knows the other's endpoint (no flooding, no learning), and
//! removing the network leaves nothing behind. Needs root (CI runs as root).

use std::net::Ipv4Addr;
use std::process::Command;

use orch_agent::net::overlay::{Overlay, TaskNetns, OVERLAY_MTU};

fn must(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Deletes the namespaces of the test however it ends.
struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Runs `f` on a thread inside the named netns (never on a shared runtime's thread).
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("netns file");
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("netns thread")
}

/// Whether a UDP datagram of `size` bytes from netns `from` reaches `to` (in netns `to_ns`)
/// and its echo comes back (this machine has no ping: the test carries its own).
/// `reach`, given three tries: the first datagram after an endpoint appears can meet the
/// neighbour entry the earlier, refused attempt left failed.
fn reach_soon(from: &str, to_ns: &str, to: Ipv4Addr, size: usize) -> bool {
    (0..3).any(|_| reach(from, to_ns, to, size))
}

fn reach(from: &str, to_ns: &str, to: Ipv4Addr, size: usize) -> bool {
    use std::net::{SocketAddr, UdpSocket};
    use std::time::Duration;
    let target = SocketAddr::from((to, 7777));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let to_ns = to_ns.to_string();
    let server = std::thread::spawn(move || {
        in_netns(&to_ns, move || {
            let socket = UdpSocket::bind(target).expect("bind the echo");
            socket
                .set_read_timeout(Some(Duration::from_millis(1500)))
                .expect("timeout");
            let _ = ready_tx.send(());
            let mut buf = vec![0u8; 2048];
            if let Ok((n, peer)) = socket.recv_from(&mut buf) {
                let _ = socket.send_to(&buf[..n], peer);
            }
        })
    });
    ready_rx.recv().expect("echo ready");
    let ok = in_netns(from, move || {
        let socket = UdpSocket::bind("0.0.0.0:0").expect("bind");
        socket
            .set_read_timeout(Some(Duration::from_millis(1000)))
            .expect("timeout");
        let payload = vec![7u8; size];
        if socket.send_to(&payload, target).is_err() {
            return false;
        }
        let mut buf = vec![0u8; 2048];
        matches!(socket.recv_from(&mut buf), Ok((n, _)) if n == size)
    });
    let _ = server.join();
    ok
}

#[test]
fn tasks_on_two_nodes_reach_each_other_over_vxlan_only_through_known_endpoints() {
    let tag = format!("t{:05}", std::process::id() % 100_000);
    let (node_a, node_b) = (format!("{tag}-na"), format!("{tag}-nb"));
    let (task_a, task_b) = (format!("{tag}-ta"), format!("{tag}-tb"));
    let mut guard = Namespaces(vec![
        node_a.clone(),
        node_b.clone(),
        task_a.clone(),
        task_b.clone(),
    ]);
    for ns in &guard.0 {
        must(&["ip", "netns", "add", ns]);
        must(&["ip", "-n", ns, "link", "set", "lo", "up"]);
    }
    // The underlay: a veth between the two nodes.
    let (ua, ub) = (
        Ipv4Addr::new(172, 31, 250, 1),
        Ipv4Addr::new(172, 31, 250, 2),
    );
    must(&[
        "ip", "-n", &node_a, "link", "add", "u0", "type", "veth", "peer", "name", "u1", "netns",
        &node_b,
    ]);
    must(&[
        "ip",
        "-n",
        &node_a,
        "addr",
        "add",
        "172.31.250.1/24",
        "dev",
        "u0",
    ]);
    must(&[
        "ip",
        "-n",
        &node_b,
        "addr",
        "add",
        "172.31.250.2/24",
        "dev",
        "u1",
    ]);
    must(&["ip", "-n", &node_a, "link", "set", "u0", "up"]);
    must(&["ip", "-n", &node_b, "link", "set", "u1", "up"]);

    let overlay = |node: &str, underlay, node_tag: &str| Overlay {
        node_ns: Some(node.to_string()),
        node_tag: node_tag.to_string(),
        vni: 4242,
        underlay,
        prefix: 24,
    };
    let a = overlay(&node_a, ua, &format!("{}a", &tag[1..]));
    let b = overlay(&node_b, ub, &format!("{}b", &tag[1..]));
    guard.0.push(a.sandbox());
    guard.0.push(b.sandbox());
    a.ensure().expect("overlay on a");
    b.ensure().expect("overlay on b");
    a.ensure().expect("ensuring again keeps what is there");

    let (addr_a, addr_b) = (Ipv4Addr::new(10, 200, 0, 2), Ipv4Addr::new(10, 200, 0, 3));
    a.attach(&TaskNetns::Named(task_a.clone()), "veth-t1", "eth0", addr_a)
        .expect("attach on a");
    b.attach(&TaskNetns::Named(task_b.clone()), "veth-t2", "eth0", addr_b)
        .expect("attach on b");
    let mtu = Command::new("ip")
        .args(["-n", &task_a, "-o", "link", "show", "eth0"])
        .output()
        .expect("ip link");
    assert!(
        String::from_utf8_lossy(&mtu.stdout).contains(&format!("mtu {OVERLAY_MTU}")),
        "{}",
        String::from_utf8_lossy(&mtu.stdout)
    );

    // No flooding, no learning: unknown endpoints are unreachable.
    assert!(
        !reach(&task_a, &task_b, addr_b, 32),
        "reached a peer nobody announced"
    );

    a.add_peer(addr_b, ub).expect("peer on a");
    b.add_peer(addr_a, ua).expect("peer on b");
    assert!(
        reach_soon(&task_a, &task_b, addr_b, 32),
        "a -> b over the overlay"
    );
    assert!(
        reach_soon(&task_b, &task_a, addr_a, 32),
        "b -> a over the overlay"
    );

    // A datagram that fills the 1450-byte MTU crosses too.
    assert!(
        reach_soon(&task_a, &task_b, addr_b, 1450 - 28),
        "a full-size datagram"
    );

    // An endpoint that leaves is unreachable again; removing the network removes its sandbox.
    a.remove_peer(addr_b);
    assert!(
        !reach(&task_a, &task_b, addr_b, 32),
        "a removed peer still answered"
    );
    a.detach("veth-t1");
    a.remove();
    b.remove();
    assert!(!a.exists() && !b.exists());
}
