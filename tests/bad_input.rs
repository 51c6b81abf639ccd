//! End-to-end: bad input gets a clear error and loses nothing.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{orch_in, Cluster};

#[test]
fn garbage_on_the_listen_port_is_dropped_and_the_node_carries_on() {
    let c = Cluster::with_nodes(1, 0, &[]);
    let addr = c.node("m1").addr();
    let payloads: [&[u8]; 3] = [
        b"\x00\xff\x13\x37 garbage garbage garbage\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    ];
    for payload in payloads {
        let mut stream = TcpStream::connect(&addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        stream.write_all(payload).expect("write");
        let mut buf = [0u8; 256];
        // The server answers with a TLS alert or closes; it never speaks plaintext gRPC.
        let n = stream.read(&mut buf).unwrap_or(0);
        assert!(
            !String::from_utf8_lossy(&buf[..n]).contains("HTTP/"),
            "plaintext answer to {payload:?}"
        );
    }
    // Many half-open connections do not block the accept loop either.
    let _idle: Vec<TcpStream> = (0..50)
        .filter_map(|_| TcpStream::connect(&addr).ok())
        .collect();
    c.orch("m1", &["node", "ls"])
        .expect_ok("node ls after garbage");
    c.orch("m1", &["-H", &addr, "node", "ls"])
        .expect_ok("mTLS after garbage");
}

#[test]
fn init_twice_is_refused() {
    let mut c = Cluster::new();
    c.init("m1", &[]).expect_ok("init");
    let run = c.orch("m1", &["init"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("This node is already part of a swarm. Use \"orch leave\" to leave this swarm and join another one."),
        "{}",
        run.stderr
    );
    c.orch("m1", &["node", "ls"])
        .expect_ok("the first cluster still works");
}

#[test]
fn join_where_no_manager_listens_fails_fast_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = dir.path().join("n");
    let token = format!("SWMTKN-1-{}-{}", "1".repeat(50), "2".repeat(25));
    let started = Instant::now();
    let run = orch_in(&node, &["join", "--token", &token, "127.0.0.1:1"]);
    assert!(!run.ok());
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        run.stderr.contains("cannot reach a manager at 127.0.0.1:1"),
        "{}",
        run.stderr
    );
    assert!(!node.join("node.json").exists());
    assert!(!node.join("certificates/swarm-node.key").exists());
}

#[test]
fn bad_flag_values_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = dir.path().join("n");
    let cases: [(&[&str], &str); 6] = [
        (
            &["init", "--availability", "sometimes"],
            "invalid availability",
        ),
        (
            &["init", "--cert-expiry", "10s"],
            "minimum certificate expiry",
        ),
        (&["init", "--cert-expiry", "soon"], "invalid duration"),
        (&["init", "--dispatcher-heartbeat", "1ms"], "at least 100ms"),
        (
            &["init", "--advertise-addr", "no-such-iface9"],
            "no such interface",
        ),
        (
            &["init", "--listen-addr", "127.0.0.1:99999"],
            "invalid port",
        ),
    ];
    for (args, message) in cases {
        let run = orch_in(&node, args);
        assert!(!run.ok(), "{args:?} must fail");
        assert!(run.stderr.contains(message), "{args:?}: {}", run.stderr);
        assert!(!node.join("node.json").exists(), "{args:?} wrote a node");
    }
}

#[test]
fn a_truncated_raft_log_is_refused_and_left_untouched() {
    let mut c = Cluster::new();
    c.init("m1", &[]).expect_ok("init");
    for i in 0..20 {
        c.orch(
            "m1",
            &["node", "update", "--label-add", &format!("k{i}=v{i}"), "m1"],
        )
        .expect_ok("write");
    }
    c.stop("m1");
    let db = c.node("m1").dir.join("raft/raft.redb");
    let len = std::fs::metadata(&db).expect("db").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&db)
        .expect("open")
        .set_len(len / 2)
        .expect("truncate");
    let before = std::fs::read(&db).expect("read");
    let run = orch_in(&c.node("m1").dir, &["daemon"]);
    assert!(!run.ok(), "the daemon must refuse a truncated log");
    assert!(run.stderr.contains("refusing to start"), "{}", run.stderr);
    assert_eq!(
        std::fs::read(&db).expect("read"),
        before,
        "the raft database was modified"
    );
    // Garbage instead of a database: same.
    std::fs::write(&db, vec![0x5a; 64 * 1024]).expect("write");
    let run = orch_in(&c.node("m1").dir, &["daemon"]);
    assert!(!run.ok());
    assert!(
        run.stderr.contains("refusing to start") || run.stderr.contains("not an orch raft log"),
        "{}",
        run.stderr
    );
    assert_eq!(std::fs::read(&db).expect("read"), vec![0x5a; 64 * 1024]);
}
