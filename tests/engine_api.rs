//! End-to-end: the Docker Engine API. The real `docker` CLI drives a 3-node lab (each node in
//! its own network namespace, real containers) through a manager's `docker.sock`; raw requests
//! check docker's statuses and messages for bad input; a worker answers swarm routes with
//! docker's "not a swarm manager"; the TCP listener lets in only manager certificates.
//! Needs root, iproute2, nftables, a Docker Engine and the `docker` CLI.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::netns::http_get as get;
use common::{wait_for, Cluster};
use serde_json::{json, Value};

/// A raw HTTP/1.1 answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    content_type: String,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    fn message(&self) -> String {
        self.json()["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// One request on a unix socket, `Connection: close`, read to the end.
fn http(socket: &Path, method: &str, path: &str, body: Option<&str>) -> Answer {
    let mut s = UnixStream::connect(socket).expect("connect to docker.sock");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).expect("send");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    Answer {
        status,
        content_type,
        body: if chunked {
            dechunk(rest)
        } else {
            rest.to_string()
        },
    }
}

/// `POST /services/{id}/update?version=N` with a whole spec.
fn update_service(socket: &Path, id: &str, version: u64, spec: &Value) -> Answer {
    http(
        socket,
        "POST",
        &format!("/v1.44/services/{id}/update?version={version}"),
        Some(&spec.to_string()),
    )
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

/// `docker -H unix://SOCKET ARGS` with its own (empty) client configuration.
fn docker(socket: &Path, args: &[&str]) -> Output {
    docker_input(socket, args, None)
}

fn docker_input(socket: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let config = std::env::temp_dir().join(format!("orch-docker-config-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&config);
    let mut child = Command::new("docker")
        .arg("-H")
        .arg(format!("unix://{}", socket.display()))
        .args(args)
        .env("DOCKER_CONFIG", &config)
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_CONTEXT")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the docker CLI runs");
    if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
        input.write_all(text.as_bytes()).expect("stdin");
    }
    child.wait_with_output().expect("docker finishes")
}

/// `docker -H unix://SOCKET ARGS` left running, its stdout piped (`events`, `logs -f`).
fn docker_spawn(socket: &Path, args: &[&str]) -> std::process::Child {
    Command::new("docker")
        .arg("-H")
        .arg(format!("unix://{}", socket.display()))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the docker CLI runs")
}

fn out(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[track_caller]
fn docker_ok(socket: &Path, args: &[&str]) -> String {
    let o = docker(socket, args);
    assert!(o.status.success(), "docker {args:?} failed:\n{}", out(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn socket_of(dir: &Path) -> PathBuf {
    dir.join("docker.sock")
}

/// Bad input through the API gets docker's status and message, and changes nothing; a worker
/// answers swarm routes as docker's workers do; TCP needs a manager certificate.
#[test]
fn bad_input_gets_dockers_status_and_message() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut c = Cluster::new();
    let tcp_addr = format!("127.0.0.1:{port}");
    c.init("m1", &["--engine-api-addr", &tcp_addr])
        .expect_ok("init");
    c.join("w1", "worker", "m1").expect_ok("worker join");
    let sock = socket_of(&c.node("m1").dir);
    let mode = std::fs::metadata(&sock)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
        .expect("docker.sock exists");
    assert_eq!(mode, 0o600, "docker.sock is 0600");

    // The ping: docker's headers.
    let ping = {
        let mut s = UnixStream::connect(&sock).expect("connect");
        s.write_all(b"HEAD /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n")
            .expect("send");
        let mut text = String::new();
        s.read_to_string(&mut text).expect("read");
        text.to_ascii_lowercase()
    };
    assert!(ping.starts_with("http/1.1 200"), "{ping}");
    for header in [
        "api-version: 1.44",
        "ostype: linux",
        "swarm: active/manager",
        "docker-experimental: false",
    ] {
        assert!(ping.contains(header), "ping lacks {header}: {ping}");
    }

    // Malformed JSON.
    let a = http(&sock, "POST", "/v1.44/services/create", Some("{not json"));
    assert_eq!(a.status, 400, "{a:?}");
    assert_eq!(a.content_type, "application/json");
    assert!(a.message().starts_with("invalid JSON"), "{a:?}");
    // An unknown mode.
    let a = http(
        &sock,
        "POST",
        "/v1.44/services/create",
        Some(
            r#"{"Name":"x","TaskTemplate":{"ContainerSpec":{"Image":"orch-test/busybox:1"}},"Mode":{"Sometimes":{}}}"#,
        ),
    );
    assert_eq!(a.status, 400, "{a:?}");
    assert_eq!(a.message(), "invalid mode: unknown mode \"Sometimes\"");
    // A request above the claimed version, and below the oldest.
    let a = http(&sock, "GET", "/v1.45/info", None);
    assert_eq!(
        (a.status, a.message().as_str()),
        (
            400,
            "client version 1.45 is too new. Maximum supported API version is 1.44"
        )
    );
    let a = http(&sock, "GET", "/v1.23/info", None);
    assert_eq!(a.status, 400, "{a:?}");
    // Unknown objects: 404 (the docker CLI's flows rely on it).
    for (path, message) in [
        ("/v1.44/services/nosuch", "service nosuch not found"),
        ("/v1.44/nodes/nosuch", "node nosuch not found"),
        ("/v1.44/secrets/nosuch", "secret nosuch not found"),
        ("/v1.44/networks/nosuch", "network nosuch not found"),
        ("/v1.44/tasks/nosuch", "task nosuch not found"),
    ] {
        let a = http(&sock, "GET", path, None);
        assert_eq!(
            (a.status, a.message().as_str()),
            (404, message),
            "{path}: {a:?}"
        );
        assert_eq!(a.content_type, "application/json");
    }
    // The node's engine gets reads only, of the paths their routes name.
    for (method, path) in [
        ("DELETE", "/v1.44/images/orch-test/busybox:1"),
        ("POST", "/v1.44/images/create?fromImage=busybox"),
        ("DELETE", "/v1.44/volumes/data"),
        ("GET", "/v1.44/containers/%2e%2e/json"),
        ("GET", "/v1.44/images/..%2Finfo/json"),
    ] {
        let a = http(&sock, method, path, None);
        assert_eq!(a.status, 404, "{method} {path}: {a:?}");
        assert!(
            a.message().starts_with("orch passes only reads") || a.message() == "page not found",
            "{method} {path}: {a:?}"
        );
    }
    // An unknown filter.
    let a = http(
        &sock,
        "GET",
        "/v1.44/services?filters=%7B%22colour%22%3A%7B%22red%22%3Atrue%7D%7D",
        None,
    );
    assert_eq!(
        (a.status, a.message().as_str()),
        (400, "invalid filter 'colour'")
    );

    // A stale version= is "update out of sequence", and the spec stays as it was.
    let create = http(
        &sock,
        "POST",
        "/v1.44/services/create",
        Some(
            r#"{"Name":"seq","TaskTemplate":{"ContainerSpec":{"Image":"orch-test/busybox:1","Args":["sleep","1d"]}},"Mode":{"Replicated":{"Replicas":0}}}"#,
        ),
    );
    assert_eq!(create.status, 201, "{create:?}");
    let id = create.json()["ID"].as_str().expect("ID").to_string();
    let got = http(&sock, "GET", "/v1.44/services/seq", None).json();
    let version = got["Version"]["Index"].as_u64().expect("version");
    let mut spec = got["Spec"].clone();
    spec["Labels"] = json!({"round": "1"});
    let a = update_service(&sock, &id, version, &spec);
    assert_eq!(a.status, 200, "{a:?}");
    spec["Labels"] = json!({"round": "2"});
    let a = update_service(&sock, &id, version, &spec);
    assert_eq!(a.status, 500, "{a:?}");
    assert!(
        a.message()
            .starts_with("rpc error: code = Unknown desc = update out of sequence"),
        "{a:?}"
    );
    let now = http(&sock, "GET", "/v1.44/services/seq", None).json();
    assert_eq!(now["Spec"]["Labels"], json!({"round": "1"}));
    // What GET returns, POST takes back whole: fields orch does not act on come back as sent.
    let mut spec = now["Spec"].clone();
    spec["TaskTemplate"]["ContainerSpec"]["Privileges"] = json!({"NoNewPrivileges": true});
    spec["TaskTemplate"]["ContainerSpec"]["Isolation"] = json!("default");
    let v = now["Version"]["Index"].as_u64().expect("version");
    let a = update_service(&sock, &id, v, &spec);
    assert_eq!(a.status, 200, "{a:?}");
    assert!(
        a.body.contains("NoNewPrivileges"),
        "a warning names what orch does not act on: {a:?}"
    );
    let back = http(&sock, "GET", "/v1.44/services/seq", None).json();
    assert_eq!(back["Spec"], spec, "the spec round-trips");

    // An ID prefix matching two objects: secrets until two IDs share a first character.
    let mut firsts = std::collections::BTreeMap::new();
    let mut shared = None;
    for i in 0..40 {
        let body = json!({"Name": format!("amb{i}"), "Data": "eA=="}).to_string();
        let a = http(&sock, "POST", "/v1.44/secrets/create", Some(&body));
        assert_eq!(a.status, 201, "{a:?}");
        let id = a.json()["ID"].as_str().expect("ID").to_string();
        let first = id[..1].to_string();
        if firsts.insert(first.clone(), id).is_some() {
            shared = Some(first);
            break;
        }
    }
    let prefix = shared.expect("two secret IDs share a first character");
    let a = http(&sock, "GET", &format!("/v1.44/secrets/{prefix}"), None);
    assert_eq!(a.status, 400, "{a:?}");
    assert_eq!(
        a.message(),
        format!("secret {prefix} is ambiguous (2 matches found)")
    );
    // A secret's data may not change through an update (labels may).
    let s = http(&sock, "GET", "/v1.44/secrets/amb0", None).json();
    let v = s["Version"]["Index"].as_u64().expect("version");
    let a = http(
        &sock,
        "POST",
        &format!("/v1.44/secrets/amb0/update?version={v}"),
        Some(r#"{"Name":"amb0","Labels":{},"Data":"eQ=="}"#),
    );
    assert_eq!(a.status, 400, "{a:?}");
    assert!(
        a.message().ends_with("only updates to Labels are allowed"),
        "{a:?}"
    );
    let a = http(
        &sock,
        "POST",
        &format!("/v1.44/secrets/amb0/update?version={v}"),
        Some(r#"{"Name":"amb0","Labels":{"k":"v"},"Data":"eA=="}"#),
    );
    assert_eq!(a.status, 200, "{a:?}");
    assert!(http(&sock, "GET", "/v1.44/secrets/amb0", None)
        .body
        .contains(r#""k":"v""#));
    assert!(
        !http(&sock, "GET", "/v1.44/secrets/amb0", None)
            .body
            .contains("\"Data\""),
        "a secret's data is never returned"
    );

    // A worker's socket: swarm routes answer docker's "not a swarm manager"; /info works.
    let wsock = socket_of(&c.node("w1").dir);
    let a = http(&wsock, "GET", "/v1.44/services", None);
    assert_eq!(
        (a.status, a.message().as_str()),
        (503, orch_api::NOT_A_MANAGER)
    );
    let o = docker(&wsock, &["service", "ls"]);
    assert!(!o.status.success());
    assert!(out(&o).contains("Error response from daemon: This node is not a swarm manager. Worker nodes can't be used"), "{}", out(&o));
    let info = docker_ok(
        &wsock,
        &[
            "info",
            "--format",
            "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}",
        ],
    );
    assert_eq!(info.trim(), "active false");

    // TCP: a manager's certificate gets an answer; a worker's, or none, does not.
    let curl = |dir: &Path, with_cert: bool| -> Option<String> {
        let certs = dir.join("certificates");
        let mut cmd = Command::new("curl");
        cmd.args(["-fsS", "--max-time", "5", "--cacert"])
            .arg(certs.join("swarm-root-ca.crt"))
            .args(["--resolve", &format!("swarm-manager:{port}:127.0.0.1")]);
        if with_cert {
            cmd.arg("--cert").arg(certs.join("swarm-node.crt"));
            cmd.arg("--key").arg(certs.join("swarm-node.key"));
        }
        let o = cmd
            .arg(format!("https://swarm-manager:{port}/v1.44/_ping"))
            .output()
            .ok()?;
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    wait_for(Duration::from_secs(10), "the TCP Engine API", || {
        curl(&c.node("m1").dir, true).as_deref() == Some("OK")
    });
    // The docker CLI over TCP with a manager's certificate, checking the server's name
    // (`swarm-manager`, resolved by a hosts file private to its mount namespace).
    let hosts = c.root.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.1 swarm-manager\n").expect("hosts file");
    let certs = c.node("m1").dir.join("certificates");
    let o = Command::new("unshare")
        .args(["-m", "sh", "-c"])
        .arg(format!(
            "mount --bind \"$1\" /etc/hosts && exec docker --tlsverify --tlscacert \"$2\" \
             --tlscert \"$3\" --tlskey \"$4\" -H tcp://swarm-manager:{port} node ls \
             --format '{{{{.Hostname}}}} {{{{.ManagerStatus}}}}'"
        ))
        .arg("sh")
        .arg(&hosts)
        .arg(certs.join("swarm-root-ca.crt"))
        .arg(certs.join("swarm-node.crt"))
        .arg(certs.join("swarm-node.key"))
        .env("DOCKER_CONFIG", c.root.path().join("docker-config"))
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_CONTEXT")
        .output()
        .expect("unshare runs");
    let listed = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "docker over TCP:\n{}", out(&o));
    let mut listed: Vec<&str> = listed.lines().collect();
    listed.sort();
    assert_eq!(listed, ["m1 Leader", "w1 "], "docker node ls over TCP");
    // A manager's certificate stops working once its node is no longer a manager, even
    // before it expires (a copy taken while it was one).
    c.join("m2", "manager", "m1").expect_ok("manager join");
    let kept = c.root.path().join("m2-manager-certs");
    std::fs::create_dir_all(kept.join("certificates")).expect("dir");
    for f in ["swarm-root-ca.crt", "swarm-node.crt", "swarm-node.key"] {
        std::fs::copy(
            c.node("m2").dir.join("certificates").join(f),
            kept.join("certificates").join(f),
        )
        .expect("copy a certificate");
    }
    wait_for(
        Duration::from_secs(20),
        "a manager's certificate to work",
        || curl(&kept, true).as_deref() == Some("OK"),
    );
    c.orch("m1", &["node", "demote", "m2"])
        .expect_ok("demote m2");
    wait_for(
        Duration::from_secs(20),
        "the demoted manager's certificate to be refused",
        || curl(&kept, true).is_none(),
    );
    assert_eq!(
        curl(&c.node("w1").dir, true),
        None,
        "a worker certificate is refused"
    );
    assert_eq!(
        curl(&c.node("m1").dir, false),
        None,
        "no certificate is refused"
    );
}

const WEB: &str =
    "echo hello-from-$(hostname); mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www";
const TICKER: &str = "i=0; while true; do echo tick $i; i=$((i+1)); sleep 1; done";

/// The rows of a docker table, split on runs of 2+ spaces, header first.
fn rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect()
        })
        .collect()
}

/// The row whose cells include `cell`.
fn row_with(table: &str, cell: &str) -> Vec<String> {
    rows(table)
        .into_iter()
        .find(|r| r.iter().any(|c| c == cell))
        .unwrap_or_else(|| panic!("no row with {cell:?} in:\n{table}"))
}

/// The docker CLI drives a 3-node cluster: nodes, services with progress, updates, rollbacks,
/// logs, networks, secrets, configs, a stack with a published port, join tokens.
#[test]
fn the_docker_cli_drives_a_cluster() {
    let l = common::netns::NetnsLab::up("engine", "cli");
    let sock = socket_of(&l.root.join("m1"));
    let addrs = l.addrs();
    let m1_id = l
        .ok(&["node", "inspect", "self", "--format", "{{.ID}}"])
        .trim()
        .to_string();

    // docker info: the Swarm section.
    let info = docker_ok(&sock, &["info"]);
    for line in [
        "Swarm: active",
        "Is Manager: true",
        &format!("NodeID: {m1_id}"),
        "Managers: 3",
        "Nodes: 3",
    ] {
        assert!(info.contains(line), "docker info lacks {line:?}:\n{info}");
    }
    let version = docker_ok(&sock, &["version", "--format", "{{.Server.APIVersion}}"]);
    assert_eq!(version.trim(), "1.44");

    // node ls: every column, `*` on self.
    let nodes = docker_ok(&sock, &["node", "ls"]);
    let header = &rows(&nodes)[0];
    assert_eq!(
        header,
        &[
            "ID",
            "HOSTNAME",
            "STATUS",
            "AVAILABILITY",
            "MANAGER STATUS",
            "ENGINE VERSION"
        ]
    );
    let me = row_with(&nodes, "m1");
    assert_eq!(me[0], format!("{m1_id} *"), "{nodes}");
    assert_eq!(&me[2..4], ["Ready", "Active"]);
    let statuses: Vec<String> = ["m1", "m2", "m3"]
        .iter()
        .map(|n| row_with(&nodes, n)[4].clone())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| *s == "Leader").count(),
        1,
        "{nodes}"
    );
    assert_eq!(
        statuses.iter().filter(|s| *s == "Reachable").count(),
        2,
        "{nodes}"
    );

    // node update --availability drain, then back.
    assert_eq!(
        docker_ok(&sock, &["node", "update", "--availability", "drain", "m3"]).trim(),
        "m3"
    );
    assert_eq!(
        row_with(&docker_ok(&sock, &["node", "ls"]), "m3")[3],
        "Drain"
    );
    docker_ok(
        &sock,
        &[
            "node",
            "update",
            "--availability",
            "active",
            "--label-add",
            "zone=a",
            "m3",
        ],
    );
    let m3 = docker_ok(
        &sock,
        &[
            "node",
            "inspect",
            "m3",
            "--format",
            "{{.Spec.Availability}} {{.Spec.Labels.zone}}",
        ],
    );
    assert_eq!(m3.trim(), "active a");

    // demote and promote.
    assert_eq!(
        docker_ok(&sock, &["node", "demote", "m3"]).trim(),
        "Manager m3 demoted in the swarm."
    );
    wait_for(Duration::from_secs(30), "m3 to be a worker", || {
        row_with(&docker_ok(&sock, &["node", "ls"]), "m3").len() == 5
    });
    assert_eq!(
        docker_ok(&sock, &["node", "promote", "m3"]).trim(),
        "Node m3 promoted to a manager in the swarm."
    );
    wait_for(
        Duration::from_secs(60),
        "m3 to be a reachable manager again",
        || {
            row_with(&docker_ok(&sock, &["node", "ls"]), "m3")
                .get(4)
                .map(String::as_str)
                == Some("Reachable")
        },
    );

    // networks.
    let net_id = docker_ok(&sock, &["network", "create", "-d", "overlay", "appnet"]);
    let net_id = net_id.trim();
    assert!(net_id.len() >= 12, "{net_id}");
    let nets = docker_ok(&sock, &["network", "ls"]);
    assert_eq!(
        row_with(&nets, "appnet")[1..],
        ["appnet", "overlay", "swarm"]
    );
    assert_eq!(row_with(&nets, "ingress")[2..], ["overlay", "swarm"]);
    let inspect = docker_ok(
        &sock,
        &[
            "network",
            "inspect",
            "appnet",
            "--format",
            "{{.Id}} {{.Scope}} {{.Driver}}",
        ],
    );
    assert_eq!(inspect.trim(), format!("{net_id} swarm overlay"));

    // secrets and configs.
    let o = docker_input(
        &sock,
        &["secret", "create", "--label", "team=a", "s1", "-"],
        Some("hunter2"),
    );
    assert!(o.status.success(), "{}", out(&o));
    let secrets = docker_ok(&sock, &["secret", "ls"]);
    assert!(row_with(&secrets, "s1").len() >= 3, "{secrets}");
    let s1 = docker_ok(
        &sock,
        &[
            "secret",
            "inspect",
            "s1",
            "--format",
            "{{.Spec.Name}} {{.Spec.Labels.team}}",
        ],
    );
    assert_eq!(s1.trim(), "s1 a");
    let cfg = l.root.join("c1.txt");
    std::fs::write(&cfg, "colour=blue\n").expect("config file");
    docker_ok(&sock, &["config", "create", "c1", &cfg.to_string_lossy()]);
    let c1 = docker_ok(&sock, &["config", "inspect", "--pretty", "c1"]);
    assert!(c1.contains("colour=blue"), "{c1}");
    assert!(row_with(&docker_ok(&sock, &["config", "ls"]), "c1").len() >= 3);

    // service create, waiting for convergence.
    let o = docker(
        &sock,
        &[
            "service",
            "create",
            "--name",
            "web",
            "--replicas",
            "2",
            // httpd as PID 1 ignores SIGTERM: stop it after 1s rather than 10s.
            "--stop-grace-period",
            "1s",
            "--update-monitor",
            "2s",
            "--rollback-monitor",
            "2s",
            "--network",
            "appnet",
            "-p",
            "8080:80",
            "--secret",
            "s1",
            "--config",
            "source=c1,target=/etc/c1",
            "orch-test/busybox:1",
            "sh",
            "-c",
            WEB,
        ],
    );
    let text = out(&o);
    assert!(
        o.status.success(),
        "service create failed:\n{text}\n{}",
        l.log("m1")
    );
    assert!(
        text.contains("verify: Service web converged") || text.contains("converged"),
        "{text}"
    );
    for (name, ip) in &addrs {
        wait_for(Duration::from_secs(20), &format!("web on {name}"), || {
            get(ip, 8080).is_some()
        });
    }
    // The node's own containers, images and volumes, as its engine has them. The lab's nodes
    // share this machine's engine with other tests, whose services may also be called `web`:
    // the service's ID picks out this cluster's containers.
    let web_id = docker_ok(&sock, &["service", "inspect", "web", "--format", "{{.ID}}"]);
    let ps = docker_ok(
        &sock,
        &[
            "ps",
            "--filter",
            "label=com.docker.swarm.service.name=web",
            "--filter",
            &format!("label=com.docker.swarm.service.id={}", web_id.trim()),
            "--format",
            "{{.Names}}",
        ],
    );
    assert_eq!(
        ps.lines().filter(|n| n.starts_with("web.")).count(),
        2,
        "{ps}"
    );
    // One of them, as dashboards look at it: its logs, processes and resource use.
    let first = ps
        .lines()
        .find(|n| n.starts_with("web."))
        .expect("a web container");
    let logs = docker_ok(&sock, &["logs", first]);
    assert!(logs.contains("hello-from-"), "docker logs {first}: {logs}");
    let top = docker_ok(&sock, &["top", first]);
    assert!(top.contains("httpd"), "docker top {first}: {top}");
    let stats = docker_ok(
        &sock,
        &[
            "stats",
            "--no-stream",
            "--format",
            "{{.Name}} {{.PIDs}}",
            first,
        ],
    );
    assert!(
        stats.trim().starts_with(&format!("{first} ")) && !stats.contains("--"),
        "docker stats {first}: {stats}"
    );
    let images = docker_ok(&sock, &["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(
        images.lines().any(|i| i == "orch-test/busybox:1"),
        "{images}"
    );
    let image = docker_ok(
        &sock,
        &[
            "image",
            "inspect",
            "orch-test/busybox:1",
            "--format",
            "{{.Os}} {{json .RepoTags}}",
        ],
    );
    assert!(
        image.starts_with("linux ") && image.contains("\"orch-test/busybox:1\""),
        "image inspect: {image}"
    );
    let history = docker_ok(&sock, &["image", "history", "-q", "orch-test/busybox:1"]);
    assert!(history.lines().count() >= 1, "image history: {history}");
    docker_ok(&sock, &["volume", "ls"]);
    // orch's own inspect prints the very objects docker gets (secrets and configs add orch's
    // versions), for a service orch created as for one docker created.
    l.ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "idle",
        "--replicas",
        "0",
        "orch-test/busybox:1",
        "sleep",
        "1d",
    ]);
    for (kind, name) in [
        ("service", "web"),
        ("service", "idle"),
        ("network", "appnet"),
        ("config", "c1"),
    ] {
        let from_docker: Value =
            serde_json::from_str(&docker_ok(&sock, &[kind, "inspect", name])).expect("docker JSON");
        let mut from_orch: Value =
            serde_json::from_str(&l.ok(&[kind, "inspect", name])).expect("orch JSON");
        if let Some(o) = from_orch[0].as_object_mut() {
            o.remove("Versions");
        }
        assert_eq!(from_orch, from_docker, "{kind} inspect {name}");
    }
    l.ok(&["service", "rm", "idle"]);
    // Events: a listener sees the next service being created.
    let mut events = docker_spawn(
        &sock,
        &[
            "events",
            "--filter",
            "type=service",
            "--format",
            "{{.Type}} {{.Action}} {{.Actor.Attributes.name}}",
        ],
    );
    let events_out = events.stdout.take().expect("stdout");
    let watcher = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(events_out)
            .lines()
            .map_while(Result::ok)
            .find(|l| l == "service create ticker")
    });
    std::thread::sleep(Duration::from_millis(700));
    // service create -d.
    let id = docker_ok(
        &sock,
        &[
            "service",
            "create",
            "-d",
            "--name",
            "ticker",
            "--mode",
            "global",
            "orch-test/busybox:1",
            "sh",
            "-c",
            TICKER,
        ],
    );
    assert!(id.trim().len() >= 12, "{id}");

    wait_for(Duration::from_secs(10), "the service create event", || {
        watcher.is_finished()
    });
    let _ = events.kill();
    let _ = events.wait();
    assert_eq!(
        watcher.join().expect("watcher").as_deref(),
        Some("service create ticker")
    );
    // service ls: REPLICAS and PORTS.
    wait_for(Duration::from_secs(60), "ticker on every node", || {
        row_with(&docker_ok(&sock, &["service", "ls"]), "ticker")[3] == "3/3"
    });
    let ls = docker_ok(&sock, &["service", "ls"]);
    let web = row_with(&ls, "web");
    assert_eq!(
        web[2..],
        ["replicated", "2/2", "orch-test/busybox:1", "*:8080->80/tcp"],
        "{ls}"
    );
    assert_eq!(row_with(&ls, "ticker")[2], "global");

    // inspect --pretty.
    let pretty = docker_ok(&sock, &["service", "inspect", "--pretty", "web"]);
    for line in [
        "Name:\t\tweb",
        "Replicas:\t2",
        "Image:\t\torch-test/busybox:1",
        "PublishedPort = 8080",
        "Networks: appnet",
    ] {
        assert!(
            pretty.contains(line),
            "inspect --pretty lacks {line:?}:\n{pretty}"
        );
    }

    // scale, update --image, rollback.
    let o = docker(&sock, &["service", "scale", "web=3"]);
    assert!(
        o.status.success() && out(&o).contains("web scaled to 3"),
        "{}",
        out(&o)
    );
    let o = docker(
        &sock,
        &["service", "update", "--image", "orch-test/busybox:2", "web"],
    );
    assert!(o.status.success(), "update --image:\n{}", out(&o));
    let image = docker_ok(
        &sock,
        &[
            "service",
            "inspect",
            "web",
            "--format",
            "{{.Spec.TaskTemplate.ContainerSpec.Image}} {{.Spec.Mode.Replicated.Replicas}}",
        ],
    );
    assert_eq!(image.trim(), "orch-test/busybox:2 3");
    let ps = docker_ok(&sock, &["service", "ps", "web"]);
    assert!(ps.contains(" \\_ web.1"), "history rows:\n{ps}");
    assert_eq!(
        ps.lines()
            .filter(|l| l.contains("orch-test/busybox:2") && l.contains("Running"))
            .count(),
        3,
        "{ps}"
    );
    let o = docker(&sock, &["service", "rollback", "web"]);
    let text = out(&o);
    assert!(o.status.success(), "rollback:\n{text}");
    assert!(
        text.contains("rollback: manually requested rollback"),
        "{text}"
    );
    let image = docker_ok(
        &sock,
        &[
            "service",
            "inspect",
            "web",
            "--format",
            "{{.Spec.TaskTemplate.ContainerSpec.Image}}",
        ],
    );
    assert_eq!(image.trim(), "orch-test/busybox:1");
    // A failing update rolls back (docker's CLI then exits 0, the service converged back).
    let o = docker(
        &sock,
        &[
            "service",
            "update",
            "--update-failure-action",
            "rollback",
            "--update-monitor",
            "3s",
            "--args",
            "sh -c 'exit 3'",
            "web",
        ],
    );
    let text = out(&o);
    assert!(
        text.contains("rollback: update rolled back due to failure or early termination of task"),
        "{text}"
    );
    assert!(text.contains("verify: Service web converged"), "{text}");
    // A scale after that is no update: the CLI waits for it, without the last update's status.
    let o = docker(&sock, &["service", "scale", "web=2"]);
    let text = out(&o);
    assert!(o.status.success(), "{text}");
    assert!(
        text.contains("verify: Service web converged") && !text.contains("rollback"),
        "{text}"
    );
    let args = docker_ok(
        &sock,
        &[
            "service",
            "inspect",
            "web",
            "--format",
            "{{json .Spec.TaskTemplate.ContainerSpec.Args}}",
        ],
    );
    assert!(args.contains("hello-from"), "the spec is back: {args}");

    // logs, and -f.
    let logs = docker_ok(&sock, &["service", "logs", "web"]);
    let line = logs
        .lines()
        .find(|l| l.contains("hello-from"))
        .unwrap_or_else(|| panic!("no hello in:\n{logs}"));
    assert!(
        line.starts_with("web.") && line.contains('@') && line.contains("    | hello-from"),
        "{line}"
    );
    let mut follow = docker_spawn(&sock, &["service", "logs", "-f", "--raw", "ticker"]);
    let mut stdout = follow.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut seen = String::new();
        let mut buf = [0u8; 4096];
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
            if seen.lines().filter(|l| l.starts_with("tick ")).count() >= 6 {
                break;
            }
        }
        seen
    });
    let seen = reader.join().expect("reader");
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(
        seen.lines().filter(|l| l.starts_with("tick ")).count() >= 6,
        "logs -f:\n{seen}"
    );

    // service rm.
    assert_eq!(
        docker_ok(&sock, &["service", "rm", "ticker"]).trim(),
        "ticker"
    );
    let o = docker(&sock, &["service", "rm", "nosuch"]);
    assert!(
        out(&o).contains("Error response from daemon: service nosuch not found"),
        "{}",
        out(&o)
    );

    // A stack: published port, network, secret.
    let secret_file = l.root.join("stack-secret.txt");
    std::fs::write(&secret_file, "stack-secret\n").expect("secret file");
    let compose = l.root.join("stack.yml");
    std::fs::write(&compose, format!(
        r#"version: "3.8"
services:
  front:
    image: orch-test/busybox:1
    command: ["sh", "-c", "cat /run/secrets/token > /www/index.html 2>/dev/null; mkdir -p /www && cat /run/secrets/token > /www/index.html && exec httpd -f -p 80 -h /www"]
    ports:
      - "8081:80"
    networks: [front]
    secrets: [token]
    deploy:
      replicas: 2
networks:
  front: {{}}
secrets:
  token:
    file: {}
"#, secret_file.display())).expect("compose file");
    let o = docker(
        &sock,
        &["stack", "deploy", "-c", &compose.to_string_lossy(), "st"],
    );
    let text = out(&o);
    assert!(o.status.success(), "stack deploy:\n{text}\n{}", l.log("m1"));
    for line in [
        "Creating network st_front",
        "Creating secret st_token",
        "Creating service st_front",
    ] {
        assert!(text.contains(line), "stack deploy lacks {line:?}:\n{text}");
    }
    let stacks = docker_ok(&sock, &["stack", "ls"]);
    assert_eq!(row_with(&stacks, "st")[..2], ["st", "1"], "{stacks}");
    wait_for(Duration::from_secs(60), "st_front 2/2", || {
        row_with(&docker_ok(&sock, &["stack", "services", "st"]), "st_front")[3] == "2/2"
    });
    assert_eq!(
        row_with(&docker_ok(&sock, &["stack", "services", "st"]), "st_front")[5],
        "*:8081->80/tcp"
    );
    let ps = docker_ok(&sock, &["stack", "ps", "st"]);
    assert_eq!(
        ps.lines()
            .filter(|l| l.contains("st_front.") && l.contains("Running"))
            .count(),
        2,
        "{ps}"
    );
    let ip = &addrs["m2"];
    wait_for(Duration::from_secs(20), "the stack's port", || {
        get(ip, 8081).as_deref() == Some("stack-secret")
    });
    let o = docker(&sock, &["stack", "rm", "st"]);
    let text = out(&o);
    assert!(o.status.success(), "stack rm:\n{text}");
    for line in [
        "Removing service st_front",
        "Removing secret st_token",
        "Removing network st_front",
    ] {
        assert!(text.contains(line), "stack rm lacks {line:?}:\n{text}");
    }
    wait_for(Duration::from_secs(30), "the stack to go", || {
        docker_ok(&sock, &["stack", "ls"]).lines().count() == 1
    });

    // join tokens.
    let token = docker_ok(&sock, &["swarm", "join-token", "-q", "worker"]);
    assert_eq!(token.trim(), l.ok(&["join-token", "-q", "worker"]).trim());
    let rotated = docker_ok(&sock, &["swarm", "join-token", "--rotate", "-q", "worker"]);
    assert_ne!(rotated.trim(), token.trim());
    assert_eq!(l.ok(&["join-token", "-q", "worker"]).trim(), rotated.trim());
    let cmd = docker_ok(&sock, &["swarm", "join-token", "manager"]);
    assert!(cmd.contains("docker swarm join --token SWMTKN-"), "{cmd}");

    // Tidy: web, the network, the secret and the config go.
    assert_eq!(docker_ok(&sock, &["service", "rm", "web"]).trim(), "web");
    wait_for(Duration::from_secs(30), "appnet to be free", || {
        docker(&sock, &["network", "rm", "appnet"]).status.success()
    });
    assert_eq!(docker_ok(&sock, &["secret", "rm", "s1"]).trim(), "s1");
    assert_eq!(docker_ok(&sock, &["config", "rm", "c1"]).trim(), "c1");
    assert!(!docker_ok(&sock, &["network", "ls"]).contains("appnet"));
}
