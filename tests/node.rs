//! The node process as a library: the test runs a node in its own runtime through
//! `daemon::run`, the same call the binary makes, reaches it with the `orch` binary, stops it
//! through its shutdown token, and checks that the stop was complete (the call returned, the
//! socket and the manager port are free, the data-dir lock is released) and that the node
//! comes back with its state.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::orch_in;
use orch_cli::bootstrap::{init_cluster, InitOptions};
use orch_cli::daemon::{run, Config, Listeners};
use orch_cli::datadir::DataDir;
use tokio_util::sync::CancellationToken;

/// `orch info`'s "Key: value" lines.
fn info(dir: &std::path::Path) -> Option<BTreeMap<String, String>> {
    let out = orch_in(dir, &["info"]);
    if !out.ok() {
        return None;
    }
    Some(
        out.stdout
            .lines()
            .filter_map(|l| l.trim().split_once(": "))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// Waits until `orch info` says the node is an active manager.
fn wait_for_active_manager(dir: &std::path::Path) -> BTreeMap<String, String> {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(info) = info(dir) {
            if info.get("Swarm").map(String::as_str) == Some("active")
                && info.get("Is Manager").map(String::as_str) == Some("true")
            {
                return info;
            }
        }
        assert!(
            Instant::now() < until,
            "the node did not become an active manager"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_node_run_as_a_library_stops_completely_and_comes_back() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let root = tempfile::tempdir().expect("tempdir");
    let dd = DataDir::new(root.path().join("n1"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    init_cluster(
        &dd,
        &InitOptions {
            advertise_addr: Some(addr.clone()),
            listen_addr: Some(addr.clone()),
            hostname: Some("library-node".into()),
            availability: orch_api::pb::NodeAvailability::Active,
            settings: Default::default(),
            docker_host: orch_agent::engine::DEFAULT_DOCKER_HOST.into(),
            engine_api_addr: String::new(),
        },
    )
    .expect("init");
    let config = Config {
        data_dir: dd.clone(),
        docker_host: None,
        engine_api_addr: None,
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let _in_runtime = runtime.enter();

    let mut node_id = None;
    for round in 0..2 {
        // The caller binds the manager's port and hands it over, as a supervisor would.
        let listeners = runtime.block_on(async {
            let mut listeners = Listeners::bind(&config).expect("bind the control socket");
            listeners.manager = Some(
                tokio::net::TcpListener::bind(&addr)
                    .await
                    .expect("bind the manager port"),
            );
            listeners
        });
        // A second node process on the same data directory is refused while this one holds it.
        let second = Listeners::bind(&config).err().map(|e| e.to_string());
        assert!(
            second
                .as_deref()
                .is_some_and(|e| e.contains("another orch daemon")),
            "a second node on the same data dir: {second:?}"
        );
        let shutdown = CancellationToken::new();
        let node = runtime.spawn(run(config.clone(), listeners, shutdown.clone()));

        let info = wait_for_active_manager(dd.root.as_path());
        let id = info.get("NodeID").expect("node id").clone();
        assert_eq!(
            *node_id.get_or_insert_with(|| id.clone()),
            id,
            "round {round}: the node came back as another node"
        );
        let ls = orch_in(&dd.root, &["node", "ls", "--format", "{{.Hostname}}"]);
        ls.expect_ok("node ls");
        assert_eq!(ls.stdout.trim(), "library-node");

        let asked = Instant::now();
        shutdown.cancel();
        let result = runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(20), node).await })
            .expect("run returned after the shutdown")
            .expect("the node task did not panic");
        result.expect("the node stopped cleanly");
        let took = asked.elapsed();
        eprintln!("round {round}: stopped in {took:?}");
        assert!(took < Duration::from_secs(10), "stopping took {took:?}");

        // Everything the node held is free again.
        assert!(!dd.socket().exists(), "the control socket is left behind");
        std::net::TcpListener::bind(&addr).expect("the manager port is free again");
        drop(Listeners::bind(&config).expect("the data dir lock is released"));
    }
}
