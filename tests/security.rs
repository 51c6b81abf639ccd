//! End-to-end: join tokens, CA pinning, certificates, authorization.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{wait_for, Cluster};
use x509_parser::prelude::*;

struct CertFacts {
    cn: String,
    ou: String,
    o: String,
    lifetime: i64,
    not_after: i64,
}

fn cert_facts(pem_text: &str) -> CertFacts {
    let (_, pem) = parse_x509_pem(pem_text.as_bytes()).expect("pem");
    let cert = pem.parse_x509().expect("x509");
    let subject = cert.subject();
    let get = |it: &mut dyn Iterator<Item = &AttributeTypeAndValue<'_>>| {
        it.next()
            .and_then(|a| a.as_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let facts = CertFacts {
        cn: get(&mut subject.iter_common_name()),
        ou: get(&mut subject.iter_organizational_unit()),
        o: get(&mut subject.iter_organization()),
        lifetime: cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
    };
    facts
}

fn node_cert(c: &Cluster, name: &str) -> String {
    std::fs::read_to_string(c.node(name).dir.join("certificates/swarm-node.crt")).expect("cert")
}

#[test]
fn bad_tokens_are_refused_and_leave_nothing_behind() {
    let mut c = Cluster::with_nodes(1, 0, &[]);
    let good = c.token("m1", "worker");
    let addr = c.node("m1").addr();
    let cases = [
        (
            "wrong secret",
            format!("{}{}", &good[..good.len() - 25], "0".repeat(25)),
            "A valid join token is necessary to join this cluster",
        ),
        (
            "other CA digest",
            format!("SWMTKN-1-{}-{}", "1".repeat(50), &good[good.len() - 25..]),
            "remote CA does not match fingerprint",
        ),
        (
            "malformed",
            "SWMTKN-1-nope".to_string(),
            "invalid join token",
        ),
    ];
    for (i, (name, token, message)) in cases.iter().enumerate() {
        let node = format!("bad{i}");
        let run = c.join_with_token(&node, token, &addr, &[]);
        assert!(!run.ok(), "{name}: join must fail");
        assert!(run.stderr.contains(message), "{name}: {}", run.stderr);
        assert!(
            !c.node(&node).dir.join("node.json").exists(),
            "{name}: no node state written"
        );
    }
    // Rotation invalidates the old token at once.
    let old = c.token("m1", "worker");
    let run = c.orch("m1", &["join-token", "--rotate", "worker"]);
    run.expect_ok("rotate");
    assert!(run
        .stdout
        .contains("Successfully rotated worker join token."));
    let new = c.token("m1", "worker");
    assert_ne!(old, new);
    let run = c.join_with_token("old-token", &old, &addr, &[]);
    assert!(
        run.stderr.contains("A valid join token is necessary"),
        "{}",
        run.stderr
    );
    c.join_with_token("new-token", &new, &addr, &[])
        .expect_ok("join with the rotated token");
    // Nodes that were refused never appeared.
    assert_eq!(c.node_ls("m1").expect("ls").len(), 2);
}

#[test]
fn certificates_carry_role_cluster_and_expiry_and_keys_are_private() {
    let c = Cluster::with_nodes(1, 1, &["--cert-expiry", "48h"]);
    let info = c.orch("m1", &["info"]).stdout;
    let cluster_id = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("ClusterID: "))
        .expect("cluster id")
        .to_string();
    let node_id = |name: &str| {
        c.inspect("m1", "node", name).expect("inspect")["ID"]
            .as_str()
            .expect("id")
            .to_string()
    };
    for (name, ou) in [("m1", "swarm-manager"), ("w1", "swarm-worker")] {
        let facts = cert_facts(&node_cert(&c, name));
        assert_eq!(facts.ou, ou, "{name}");
        assert_eq!(facts.cn, node_id(name), "{name}");
        assert_eq!(facts.o, cluster_id, "{name}");
        assert!(
            (facts.lifetime - 48 * 3600).abs() < 60,
            "{name}: lifetime {}s",
            facts.lifetime
        );
        let key = c.node(name).dir.join("certificates/swarm-node.key");
        assert_eq!(
            std::fs::metadata(&key).expect("key").permissions().mode() & 0o777,
            0o600,
            "{name} key"
        );
    }
    let raft = c.node("m1").dir.join("raft/raft.redb");
    assert_eq!(
        std::fs::metadata(raft)
            .expect("raft db")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let sock = c.node("m1").dir.join("orch.sock");
    assert_eq!(
        std::fs::metadata(sock)
            .expect("socket")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
}

#[test]
fn certificate_from_another_cluster_is_refused() {
    let a = Cluster::with_nodes(1, 0, &[]);
    let b = Cluster::with_nodes(1, 0, &[]);
    let run = b.orch("m1", &["-H", &a.node("m1").addr(), "node", "ls"]);
    assert!(
        !run.ok(),
        "a certificate of another CA must not reach the control API"
    );
    assert!(!run.stdout.contains("m1"), "{}", run.stdout);
}

#[test]
fn certificates_renew_before_expiry_without_restart() {
    let c = Cluster::with_nodes(1, 1, &["--cert-expiry", "1m"]);
    let pid = c.pid("w1");
    let first = cert_facts(&node_cert(&c, "w1")).not_after;
    let m1_first = cert_facts(&node_cert(&c, "m1")).not_after;
    // Renewal happens between 50% and 80% of the minute, on both nodes.
    wait_for(Duration::from_secs(70), "certificate renewals", || {
        cert_facts(&node_cert(&c, "w1")).not_after > first
            && cert_facts(&node_cert(&c, "m1")).not_after > m1_first
    });
    assert_eq!(c.pid("w1"), pid, "renewed without a restart");
    assert_eq!(cert_facts(&node_cert(&c, "w1")).ou, "swarm-worker");
    // The renewed certificate is in use: the node stays Ready and commands keep working.
    wait_for(Duration::from_secs(10), "w1 Ready", || {
        c.node_rows("m1")
            .is_some_and(|r| r["w1"]["Status"] == "Ready")
    });
    c.orch("m1", &["-H", &c.node("m1").addr(), "node", "ls"])
        .expect_ok("mTLS with the renewed certificate");
}
