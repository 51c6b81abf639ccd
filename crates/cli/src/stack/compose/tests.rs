//! Loader tests: tables of named cases over small files, and the stack files of
//! `src/stack/testdata/` (a "Get Started" file, a web+db file, its override, `.env` files).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::super::model::{
    Compose, Condition, DataDef, DataRef, Healthcheck, Logging, Mode, MountKind, Network, Port,
    ServiceNetwork, Ulimit, UpdateConfig, Volume, VolumeMount,
};
use super::{load, load_texts, to_yaml, Env, LoadError};

const DIR: &str = "/stack";

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/stack/testdata")
}

fn shell(vars: &[(&str, &str)]) -> BTreeMap<String, String> {
    vars.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The shell every table case runs with (no `.env`: the directory does not exist).
fn test_env() -> Env {
    Env::new(
        shell(&[
            ("HOME", "/home/me"),
            ("N", "3"),
            ("TTY", "yes"),
            ("CPUS", "0.5"),
            ("MEM", "1g"),
            ("TAG", "1.25"),
            ("EMPTY", ""),
            ("FROM_SHELL", "shell-value"),
            ("PORT", "8080"),
        ]),
        None,
        Path::new("/nonexistent-orch-compose-test"),
    )
    .expect("env")
}

fn load_one(yaml: &str) -> Result<super::model::Loaded, LoadError> {
    load_texts(
        &[("compose.yml".to_string(), yaml.to_string())],
        Path::new(DIR),
        &test_env(),
    )
}

fn load_many(yamls: &[&str]) -> Result<super::model::Loaded, LoadError> {
    let texts: Vec<(String, String)> = yamls
        .iter()
        .enumerate()
        .map(|(i, y)| (format!("f{i}.yml"), y.to_string()))
        .collect();
    load_texts(&texts, Path::new(DIR), &test_env())
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn smap(v: &[(&str, &str)]) -> BTreeMap<String, String> {
    shell(v)
}

fn port(published: Option<u32>, target: u32, protocol: &str, mode: &str) -> Port {
    Port {
        target,
        published,
        protocol: protocol.to_string(),
        mode: mode.to_string(),
    }
}

fn mount(kind: MountKind, source: Option<&str>, target: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        kind,
        source: source.map(str::to_string),
        target: target.to_string(),
        read_only,
        tmpfs_size: None,
    }
}

fn svc<'a>(c: &'a Compose, name: &str) -> &'a super::super::model::Service {
    c.services
        .get(name)
        .unwrap_or_else(|| panic!("no service {name} in {:?}", c.services.keys()))
}

type Check = fn(&Compose);

/// Files that load, and what of the model to check.
#[test]
fn loads() {
    let cases: Vec<(&str, &str, Check)> = vec![
        (
            "minimal",
            "services: {web: {image: nginx}}",
            |c| {
                let s = svc(c, "web");
                assert_eq!(s.image, "nginx");
                assert!(s.networks.is_empty());
                assert_eq!(s.deploy.mode, Mode::Replicated);
                assert_eq!(s.deploy.replicas, None);
            },
        ),
        ("no services at all", "version: '3.8'", |c| assert!(c.services.is_empty())),
        ("version 3 as a number", "version: 3\nservices: {web: {image: nginx}}", |c| {
            assert_eq!(svc(c, "web").image, "nginx")
        }),
        ("version 3.13", "version: '3.13'\nservices: {web: {image: nginx}}", |c| {
            assert_eq!(svc(c, "web").image, "nginx")
        }),
        ("version 3.99 accepted", "version: '3.99'\nservices: {web: {image: nginx}}", |c| {
            assert_eq!(svc(c, "web").image, "nginx")
        }),
        (
            "short ports",
            r#"
services:
  web:
    image: nginx
    ports: ["80", "8080:80", "8080:80/udp", 9090, "8000-8001:7000-7001", "127.0.0.1:8443:443"]
"#,
            |c| {
                assert_eq!(
                    svc(c, "web").ports,
                    vec![
                        port(None, 80, "tcp", "ingress"),
                        port(None, 9090, "tcp", "ingress"),
                        port(Some(8000), 7000, "tcp", "ingress"),
                        port(Some(8001), 7001, "tcp", "ingress"),
                        port(Some(8080), 80, "tcp", "ingress"),
                        port(Some(8080), 80, "udp", "ingress"),
                        port(Some(8443), 443, "tcp", "ingress"),
                    ]
                )
            },
        ),
        (
            "long ports",
            r#"
services:
  web:
    image: nginx
    ports:
      - {target: 80, published: 8080}
      - {target: "53", published: "5353", protocol: UDP, mode: host}
      - {target: 9000}
"#,
            |c| {
                assert_eq!(
                    svc(c, "web").ports,
                    vec![
                        port(None, 9000, "tcp", "ingress"),
                        port(Some(5353), 53, "udp", "host"),
                        port(Some(8080), 80, "tcp", "ingress"),
                    ]
                )
            },
        ),
        (
            "ports from interpolation",
            "services: {web: {image: nginx, ports: ['${PORT}:80', {target: '${PORT}', published: '${PORT}'}]}}",
            |c| {
                assert_eq!(
                    svc(c, "web").ports,
                    vec![port(Some(8080), 80, "tcp", "ingress"), port(Some(8080), 8080, "tcp", "ingress")]
                )
            },
        ),
        (
            "environment list, bare key from the shell, numbers and booleans",
            r#"
services:
  web:
    image: nginx
    environment: ["B=2", "A=1", "FROM_SHELL", "NOT_SET", "EQ=a=b", "EMPTY_VALUE="]
  api:
    image: nginx
    environment: {Z: 1, Y: true, X: null, FROM_SHELL: null, W: "", V: 1.5}
"#,
            |c| {
                assert_eq!(
                    svc(c, "web").environment,
                    strings(&["A=1", "B=2", "EMPTY_VALUE=", "EQ=a=b", "FROM_SHELL=shell-value", "NOT_SET"])
                );
                assert_eq!(
                    svc(c, "api").environment,
                    strings(&["FROM_SHELL=shell-value", "V=1.5", "W=", "X", "Y=true", "Z=1"])
                );
            },
        ),
        (
            "labels list and map",
            r#"
services:
  web:
    image: nginx
    labels: ["com.example.a=1", "com.example.flag"]
    deploy:
      labels: {traefik.enable: true, traefik.port: 80, x-not-an-extension: kept}
"#,
            |c| {
                let s = svc(c, "web");
                assert_eq!(s.labels, smap(&[("com.example.a", "1"), ("com.example.flag", "")]));
                assert_eq!(
                    s.deploy.labels,
                    smap(&[("traefik.enable", "true"), ("traefik.port", "80"), ("x-not-an-extension", "kept")])
                );
            },
        ),
        (
            "command and entrypoint",
            r#"
services:
  web:
    image: nginx
    entrypoint: ["/bin/sh", "-c"]
    command: echo "hello world" 'single quoted' plain
  job:
    image: busybox
    entrypoint: /entry.sh --flag
    command: [sleep, 10]
  empty:
    image: busybox
    command: []
"#,
            |c| {
                let web = svc(c, "web");
                assert_eq!(web.entrypoint, Some(strings(&["/bin/sh", "-c"])));
                assert_eq!(web.command, Some(strings(&["echo", "hello world", "single quoted", "plain"])));
                let job = svc(c, "job");
                assert_eq!(job.entrypoint, Some(strings(&["/entry.sh", "--flag"])));
                assert_eq!(job.command, Some(strings(&["sleep", "10"])));
                assert_eq!(svc(c, "empty").command, Some(vec![]));
                assert_eq!(svc(c, "empty").entrypoint, None);
            },
        ),
        (
            "service networks: list, map with aliases, null, default",
            r#"
services:
  a: {image: x, networks: [front, back]}
  b:
    image: x
    networks:
      front:
      back: {aliases: [db, database]}
  c: {image: x, networks: [default]}
networks:
  front: {}
  back:
"#,
            |c| {
                let plain = ServiceNetwork::default();
                assert_eq!(
                    svc(c, "a").networks,
                    BTreeMap::from([("back".to_string(), plain.clone()), ("front".to_string(), plain.clone())])
                );
                assert_eq!(
                    svc(c, "b").networks.get("back"),
                    Some(&ServiceNetwork { aliases: strings(&["db", "database"]) })
                );
                assert_eq!(svc(c, "b").networks.get("front"), Some(&plain));
                assert!(svc(c, "c").networks.contains_key("default"));
            },
        ),
        (
            "short volumes",
            r#"
services:
  web:
    image: nginx
    volumes:
      - data:/data
      - ./site:/usr/share/nginx/html:ro
      - ../shared:/shared:z
      - ~/conf:/conf:rw,nocopy
      - /var/log:/var/log:ro,Z
      - /cache
volumes:
  data:
"#,
            |c| {
                assert_eq!(
                    svc(c, "web").volumes,
                    vec![
                        mount(MountKind::Volume, Some("data"), "/data", false),
                        mount(MountKind::Bind, Some("/stack/site"), "/usr/share/nginx/html", true),
                        mount(MountKind::Bind, Some("/shared"), "/shared", false),
                        mount(MountKind::Bind, Some("/home/me/conf"), "/conf", false),
                        mount(MountKind::Bind, Some("/var/log"), "/var/log", true),
                        mount(MountKind::Volume, None, "/cache", false),
                    ]
                )
            },
        ),
        (
            "long volumes",
            r#"
services:
  web:
    image: nginx
    volumes:
      - {type: volume, source: data, target: /data, read_only: true, volume: {nocopy: true}}
      - {type: bind, source: ./conf, target: /conf}
      - {type: tmpfs, target: /tmp, tmpfs: {size: 64m}}
      - {type: tmpfs, target: /run, tmpfs: {size: 1000}}
      - {type: volume, target: /anon}
volumes:
  data: {}
"#,
            |c| {
                let v = &svc(c, "web").volumes;
                assert_eq!(v[0], mount(MountKind::Volume, Some("data"), "/data", true));
                assert_eq!(v[1], mount(MountKind::Bind, Some("/stack/conf"), "/conf", false));
                assert_eq!(
                    v[2],
                    VolumeMount { tmpfs_size: Some(64 << 20), ..mount(MountKind::Tmpfs, None, "/tmp", false) }
                );
                assert_eq!(v[3].tmpfs_size, Some(1000));
                assert_eq!(v[4], mount(MountKind::Volume, None, "/anon", false));
            },
        ),
        (
            "secrets and configs: short, long, octal modes, numeric ids",
            r#"
services:
  web:
    image: nginx
    secrets:
      - plain
      - {source: a, mode: 0440}
      - {source: b, mode: "0440"}
      - {source: c, mode: 0o440}
      - {source: d, mode: 288, uid: 1000, gid: "1001", target: /etc/d.pem}
      - {source: e, mode: "0x120"}
    configs:
      - {source: conf, target: /etc/app.conf, mode: 0444}
secrets:
  plain: {file: ./plain.txt}
  a: {file: /abs/a}
  b: {file: secrets/b}
  c: {external: true}
  d: {external: {name: shared_d}}
  e: {file: ~/e, name: "e_v2", labels: [rotated=yes], template_driver: golang}
configs:
  conf: {file: ./app.conf}
"#,
            |c| {
                let s = svc(c, "web");
                let r = |source: &str, mode: u32| DataRef {
                    source: source.to_string(),
                    mode: Some(mode),
                    ..DataRef::default()
                };
                assert_eq!(
                    s.secrets,
                    vec![
                        r("a", 288),
                        r("b", 288),
                        r("c", 288),
                        DataRef {
                            target: Some("/etc/d.pem".to_string()),
                            uid: Some("1000".to_string()),
                            gid: Some("1001".to_string()),
                            ..r("d", 288)
                        },
                        r("e", 288),
                        DataRef { source: "plain".to_string(), ..DataRef::default() },
                    ]
                );
                assert_eq!(
                    s.configs,
                    vec![DataRef { target: Some("/etc/app.conf".to_string()), ..r("conf", 0o444) }]
                );
                let file = |f: &str| DataDef { file: Some(PathBuf::from(f)), ..DataDef::default() };
                assert_eq!(c.secrets.get("plain"), Some(&file("/stack/plain.txt")));
                assert_eq!(c.secrets.get("a"), Some(&file("/abs/a")));
                assert_eq!(c.secrets.get("b"), Some(&file("/stack/secrets/b")));
                assert_eq!(c.secrets.get("c"), Some(&DataDef { external: true, ..DataDef::default() }));
                assert_eq!(
                    c.secrets.get("d"),
                    Some(&DataDef { external: true, name: Some("shared_d".to_string()), ..DataDef::default() })
                );
                assert_eq!(
                    c.secrets.get("e"),
                    Some(&DataDef {
                        file: Some(PathBuf::from("/home/me/e")),
                        name: Some("e_v2".to_string()),
                        labels: smap(&[("rotated", "yes")]),
                        template_driver: Some("golang".to_string()),
                        external: false,
                    })
                );
                assert_eq!(c.configs.get("conf"), Some(&file("/stack/app.conf")));
            },
        ),
        (
            "depends_on short and long",
            r#"
services:
  web:
    image: x
    depends_on:
      db: {condition: service_healthy}
      cache: {condition: service_started, required: true}
      migrate: {condition: service_completed_successfully}
      optional: {required: false}
  worker: {image: x, depends_on: [db, cache]}
  db: {image: x}
  cache: {image: x}
  migrate: {image: x, deploy: {mode: replicated-job}}
"#,
            |c| {
                assert_eq!(
                    svc(c, "web").depends_on,
                    BTreeMap::from([
                        ("cache".to_string(), Condition::Started),
                        ("db".to_string(), Condition::Healthy),
                        ("migrate".to_string(), Condition::CompletedSuccessfully),
                        ("optional".to_string(), Condition::Started),
                    ])
                );
                assert_eq!(
                    svc(c, "worker").depends_on,
                    BTreeMap::from([("cache".to_string(), Condition::Started), ("db".to_string(), Condition::Started)])
                );
            },
        ),
        (
            "healthchecks",
            r#"
services:
  a: {image: x, healthcheck: {test: curl -f http://localhost || exit 1, interval: 1m30s, timeout: 300ms, start_period: 1.5h, retries: "3"}}
  b: {image: x, healthcheck: {test: [CMD, pg_isready]}}
  c: {image: x, healthcheck: {disable: true}}
  d: {image: x, healthcheck: {test: [NONE]}}
  e: {image: x, healthcheck: {retries: 2}}
"#,
            |c| {
                assert_eq!(
                    svc(c, "a").healthcheck,
                    Some(Healthcheck {
                        test: strings(&["CMD-SHELL", "curl -f http://localhost || exit 1"]),
                        interval: Some(Duration::from_secs(90)),
                        timeout: Some(Duration::from_millis(300)),
                        start_period: Some(Duration::from_secs(5400)),
                        retries: Some(3),
                    })
                );
                let test = |n: &str| svc(c, n).healthcheck.as_ref().map(|h| h.test.clone());
                assert_eq!(test("b"), Some(strings(&["CMD", "pg_isready"])));
                assert_eq!(test("c"), Some(strings(&["NONE"])));
                assert_eq!(test("d"), Some(strings(&["NONE"])));
                assert_eq!(test("e"), Some(vec![]));
            },
        ),
        (
            "deploy in full",
            r#"
services:
  web:
    image: x
    deploy:
      mode: replicated
      replicas: 6
      endpoint_mode: DNSRR
      placement:
        constraints: [node.role == worker, "node.labels.zone != b"]
        preferences: [{spread: node.labels.zone}, {spread: node.labels.rack}]
        max_replicas_per_node: 2
      resources:
        limits: {cpus: '0.5', memory: 512M, pids: 100}
        reservations: {cpus: 0.25, memory: 134217728}
      restart_policy: {condition: any, delay: 5s, max_attempts: 3, window: 2m}
      update_config: {parallelism: 2, delay: 10s, failure_action: rollback, monitor: 30s, max_failure_ratio: 0.1, order: start-first}
      rollback_config: {monitor: 5s}
"#,
            |c| {
                let d = &svc(c, "web").deploy;
                assert_eq!(d.replicas, Some(6));
                assert_eq!(d.endpoint_mode.as_deref(), Some("dnsrr"));
                assert_eq!(d.placement.constraints, strings(&["node.role == worker", "node.labels.zone != b"]));
                assert_eq!(d.placement.preferences, strings(&["node.labels.zone", "node.labels.rack"]));
                assert_eq!(d.placement.max_replicas_per_node, Some(2));
                assert_eq!(d.resources.limits.nano_cpus, Some(500_000_000));
                assert_eq!(d.resources.limits.memory_bytes, Some(512 << 20));
                assert_eq!(d.resources.limits.pids, Some(100));
                assert_eq!(d.resources.reservations.nano_cpus, Some(250_000_000));
                assert_eq!(d.resources.reservations.memory_bytes, Some(128 << 20));
                let rp = d.restart_policy.as_ref().expect("restart policy");
                assert_eq!(rp.condition.as_deref(), Some("any"));
                assert_eq!(rp.delay, Some(Duration::from_secs(5)));
                assert_eq!(rp.max_attempts, Some(3));
                assert_eq!(rp.window, Some(Duration::from_secs(120)));
                assert_eq!(
                    d.update_config,
                    Some(UpdateConfig {
                        parallelism: 2,
                        delay: Some(Duration::from_secs(10)),
                        failure_action: Some("rollback".to_string()),
                        monitor: Some(Duration::from_secs(30)),
                        max_failure_ratio: Some(0.1),
                        order: Some("start-first".to_string()),
                    })
                );
                assert_eq!(
                    d.rollback_config,
                    Some(UpdateConfig { parallelism: 1, monitor: Some(Duration::from_secs(5)), ..UpdateConfig::default() })
                );
            },
        ),
        ("global mode", "services: {agent: {image: x, deploy: {mode: global}}}", |c| {
            assert_eq!(svc(c, "agent").deploy.mode, Mode::Global)
        }),
        ("job modes", "services: {a: {image: x, deploy: {mode: replicated-job, replicas: 4}}, b: {image: x, deploy: {mode: global-job}}}", |c| {
            assert_eq!(svc(c, "a").deploy.mode, Mode::ReplicatedJob);
            assert_eq!(svc(c, "a").deploy.replicas, Some(4));
            assert_eq!(svc(c, "b").deploy.mode, Mode::GlobalJob);
        }),
        (
            "typed fields from interpolated strings",
            r#"
services:
  web:
    image: "nginx:${TAG}"
    tty: ${TTY}
    stdin_open: "on"
    read_only: "No"
    init: "TRUE"
    deploy:
      replicas: "${N}"
      resources: {limits: {cpus: "${CPUS}", memory: "${MEM}"}}
      update_config: {parallelism: "${N}", max_failure_ratio: "0.5"}
"#,
            |c| {
                let s = svc(c, "web");
                assert_eq!(s.image, "nginx:1.25");
                assert!(s.tty);
                assert!(s.stdin_open);
                assert!(!s.read_only);
                assert_eq!(s.init, Some(true));
                assert_eq!(s.deploy.replicas, Some(3));
                assert_eq!(s.deploy.resources.limits.nano_cpus, Some(500_000_000));
                assert_eq!(s.deploy.resources.limits.memory_bytes, Some(1 << 30));
                let u = s.deploy.update_config.as_ref().expect("update config");
                assert_eq!((u.parallelism, u.max_failure_ratio), (3, Some(0.5)));
            },
        ),
        (
            "interpolation forms in values",
            r#"
services:
  web:
    image: nginx
    environment:
      - NESTED=${UNSET_A:-${UNSET_B:-deep}}
      - NESTED_SET=${UNSET_A:-${TAG}}
      - DOLLARS=$$HOME and $${TAG}
      - EMPTY_COLON=${EMPTY:-dflt}
      - EMPTY_DASH=${EMPTY-dflt}
      - UNSET_DASH=${UNSET_C-dflt}
      - PLUS=${TAG:+has-tag}
      - BARE=$TAG/x
    labels:
      ${NOT_INTERPOLATED}: "keys stay"
"#,
            |c| {
                let s = svc(c, "web");
                assert_eq!(
                    s.environment,
                    strings(&[
                        "BARE=1.25/x",
                        "DOLLARS=$HOME and ${TAG}",
                        "EMPTY_COLON=dflt",
                        "EMPTY_DASH=",
                        "NESTED=deep",
                        "NESTED_SET=1.25",
                        "PLUS=has-tag",
                        "UNSET_DASH=dflt",
                    ])
                );
                assert_eq!(s.labels, smap(&[("${NOT_INTERPOLATED}", "keys stay")]));
            },
        ),
        (
            "small service keys",
            r#"
services:
  web:
    image: x
    extra_hosts: ["db:10.0.0.2", "cache=10.0.0.3", "v6:[::1]"]
    dns: 8.8.8.8
    dns_search: [example.com, example.org]
    cap_add: [NET_ADMIN]
    cap_drop: [ALL]
    sysctls: ["net.core.somaxconn=1024"]
    ulimits: {nproc: 65535, nofile: {soft: 20000, hard: "40000"}}
    logging: {driver: syslog, options: {syslog-address: "udp://1.2.3.4:514", max-file: 3}}
    stop_grace_period: 1m30s
    stop_signal: SIGINT
    user: 1000
    working_dir: /app
    hostname: "{{.Service.Name}}-{{.Task.Slot}}"
    restart: on-failure:3
  api:
    image: x
    extra_hosts: {db: 10.0.0.2}
    sysctls: {net.ipv4.ip_forward: 1}
    restart: "no"
"#,
            |c| {
                let s = svc(c, "web");
                assert_eq!(s.extra_hosts, strings(&["db:10.0.0.2", "cache:10.0.0.3", "v6:::1"]));
                assert_eq!(s.dns, strings(&["8.8.8.8"]));
                assert_eq!(s.dns_search, strings(&["example.com", "example.org"]));
                assert_eq!((s.cap_add.clone(), s.cap_drop.clone()), (strings(&["NET_ADMIN"]), strings(&["ALL"])));
                assert_eq!(s.sysctls, smap(&[("net.core.somaxconn", "1024")]));
                assert_eq!(
                    s.ulimits,
                    BTreeMap::from([
                        ("nofile".to_string(), Ulimit { soft: 20000, hard: 40000 }),
                        ("nproc".to_string(), Ulimit { soft: 65535, hard: 65535 }),
                    ])
                );
                assert_eq!(
                    s.logging,
                    Some(Logging {
                        driver: Some("syslog".to_string()),
                        options: smap(&[("max-file", "3"), ("syslog-address", "udp://1.2.3.4:514")]),
                    })
                );
                assert_eq!(s.stop_grace_period, Some(Duration::from_secs(90)));
                assert_eq!(s.stop_signal.as_deref(), Some("SIGINT"));
                assert_eq!(s.user.as_deref(), Some("1000"));
                assert_eq!(s.working_dir.as_deref(), Some("/app"));
                assert_eq!(s.hostname.as_deref(), Some("{{.Service.Name}}-{{.Task.Slot}}"));
                assert_eq!(s.restart.as_deref(), Some("on-failure:3"));
                let a = svc(c, "api");
                assert_eq!(a.extra_hosts, strings(&["db:10.0.0.2"]));
                assert_eq!(a.sysctls, smap(&[("net.ipv4.ip_forward", "1")]));
                assert_eq!(a.restart.as_deref(), Some("no"));
            },
        ),
        (
            "top-level networks and volumes",
            r#"
services: {web: {image: x, networks: [front, ext, old]}}
networks:
  front:
    driver: overlay
    driver_opts: {encrypted: ""}
    attachable: true
    internal: "yes"
    labels: {team: web}
    name: front-net
    ipam: {driver: default, config: [{subnet: 10.10.0.0/24}]}
  ext: {external: true}
  old: {external: {name: legacy-net}}
volumes:
  data: {driver: local, driver_opts: {type: nfs, o: "addr=10.0.0.1"}, labels: [backup=daily], name: app-data}
  shared: {external: true, name: shared-vol}
  legacy: {external: {name: legacy-vol}}
"#,
            |c| {
                assert_eq!(
                    c.networks.get("front"),
                    Some(&Network {
                        name: Some("front-net".to_string()),
                        external: false,
                        driver: Some("overlay".to_string()),
                        driver_opts: smap(&[("encrypted", "")]),
                        attachable: true,
                        internal: true,
                        labels: smap(&[("team", "web")]),
                        subnet: Some("10.10.0.0/24".to_string()),
                    })
                );
                assert_eq!(c.networks.get("ext"), Some(&Network { external: true, ..Network::default() }));
                assert_eq!(
                    c.networks.get("old"),
                    Some(&Network { external: true, name: Some("legacy-net".to_string()), ..Network::default() })
                );
                assert_eq!(
                    c.volumes.get("data"),
                    Some(&Volume {
                        name: Some("app-data".to_string()),
                        external: false,
                        driver: Some("local".to_string()),
                        driver_opts: smap(&[("o", "addr=10.0.0.1"), ("type", "nfs")]),
                        labels: smap(&[("backup", "daily")]),
                    })
                );
                assert_eq!(
                    c.volumes.get("shared"),
                    Some(&Volume { external: true, name: Some("shared-vol".to_string()), ..Volume::default() })
                );
                assert_eq!(c.volumes.get("legacy").and_then(|v| v.name.as_deref()), Some("legacy-vol"));
            },
        ),
        (
            "YAML merge keys, chained",
            r#"
x-base: &base
  image: base:1
  environment: {A: "1"}
x-more: &more
  <<: *base
  user: app
services:
  web:
    <<: *more
    environment: {B: "2"}
  api:
    <<: [*base]
    image: api:1
"#,
            |c| {
                let web = svc(c, "web");
                assert_eq!(web.image, "base:1");
                assert_eq!(web.user.as_deref(), Some("app"));
                // A mapping of the merging file wins whole over the merged one, as YAML says.
                assert_eq!(web.environment, strings(&["B=2"]));
                assert_eq!(svc(c, "api").image, "api:1");
                assert_eq!(svc(c, "api").environment, strings(&["A=1"]));
            },
        ),
        (
            "tags are dropped",
            "services: {web: {image: !custom nginx, ports: !override ['80:80']}}",
            |c| assert_eq!(svc(c, "web").ports, vec![port(Some(80), 80, "tcp", "ingress")]),
        ),
    ];
    for (name, yaml, check) in cases {
        let loaded = load_one(yaml).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(loaded.dir, PathBuf::from(DIR), "{name}");
        check(&loaded.compose);
    }
}

/// Files that fail: (name, yaml, error path, what the message holds).
#[test]
fn errors() {
    let cases: Vec<(&str, &str, &str, &str)> = vec![
        ("top level is a list", "- a\n- b", "", "compose.yml: top-level object must be a mapping"),
        ("top level is a scalar", "hello", "", "top-level object must be a mapping"),
        ("empty file", "", "", "top-level object must be a mapping"),
        ("bad YAML", "services: {web: [}", "", "compose.yml: "),
        ("duplicate keys", "services: {web: {image: a, image: b}}", "", "duplicate"),
        ("version 2", "version: '2'\nservices: {}", "", "unsupported Compose file version: 2"),
        ("version 2.4", "version: '2.4'", "", "unsupported Compose file version: 2.4"),
        ("version 1 as a number", "version: 1", "", "unsupported Compose file version: 1"),
        (
            "forbidden extends",
            "services: {web: {image: x, extends: {service: base}}}",
            "",
            "compose file contains unsupported options:\n\nextends: Support for `extends` is not implemented yet.",
        ),
        (
            "forbidden keys sorted, each once",
            "services: {a: {image: x, mem_limit: 1g, cpu_shares: 2}, b: {image: x, mem_limit: 2g}}",
            "",
            "compose file contains unsupported options:\n\ncpu_shares: Set resource limits using deploy.resources\n\nmem_limit: Set resource limits using deploy.resources",
        ),
        (
            "forbidden volume_driver",
            "services: {a: {image: x, volume_driver: flocker}}",
            "",
            "volume_driver: Instead of setting the volume driver on the service, define a volume using the top-level `volumes` option and specify the driver there.",
        ),
        (
            "forbidden volumes_from",
            "services: {a: {image: x, volumes_from: [b]}}",
            "",
            "volumes_from: To share a volume between services, define it using the top-level `volumes` option and reference it from each service that shares it using the service-level `volumes` option.",
        ),
        ("forbidden before interpolation", "services: {a: {image: '${', cpuset: '0'}}", "", "cpuset: Set resource limits"),
        ("invalid template", "services: {web: {image: 'nginx:${'}}", "services.web.image", "Invalid template: \"nginx:${\""),
        ("unterminated template", "services: {web: {image: x, environment: ['A=${TAG']}}", "services.web.environment[0]", "Invalid template"),
        ("template without name", "services: {web: {image: '${-x}'}}", "services.web.image", "Invalid template"),
        (
            "required variable",
            "services: {web: {image: x, deploy: {labels: {a: '${NOPE:?set NOPE first}'}}}}",
            "services.web.deploy.labels.a",
            "required variable NOPE is missing a value: set NOPE first",
        ),
        ("required variable, empty", "services: {web: {image: '${EMPTY:?e}'}}", "services.web.image", "required variable EMPTY is missing a value: e"),
        ("required variable without colon", "services: {web: {image: '${NOPE?gone}'}}", "services.web.image", "required variable NOPE is missing a value: gone"),
        ("replicas not a number", "services: {web: {image: x, deploy: {replicas: many}}}", "services.web.deploy.replicas", "invalid number \"many\""),
        ("replicas negative", "services: {web: {image: x, deploy: {replicas: -1}}}", "services.web.deploy.replicas", "non-negative"),
        (
            "replicas with global",
            "services: {web: {image: x, deploy: {mode: global, replicas: 2}}}",
            "services.web.deploy.replicas",
            "replicas can only be used with replicated or replicated-job mode",
        ),
        (
            "replicas with global-job",
            "services: {web: {image: x, deploy: {mode: global-job, replicas: 2}}}",
            "services.web.deploy.replicas",
            "replicas can only be used",
        ),
        ("unknown mode", "services: {web: {image: x, deploy: {mode: daemon}}}", "services.web.deploy.mode", "unknown mode: daemon"),
        ("no image", "services: {web: {deploy: {replicas: 1}}}", "", "invalid image reference for service web: no image specified"),
        ("empty image", "services: {web: {image: '${UNSET_IMAGE}'}}", "", "invalid image reference for service web: no image specified"),
        ("undefined network", "services: {web: {image: x, networks: [front]}}", "services.web.networks", "undefined network \"front\""),
        ("undefined volume", "services: {web: {image: x, volumes: ['data:/data']}}", "services.web.volumes", "undefined volume \"data\""),
        ("undefined long volume", "services: {web: {image: x, volumes: [{type: volume, source: data, target: /d}]}}", "services.web.volumes", "undefined volume \"data\""),
        ("undefined secret", "services: {web: {image: x, secrets: [token]}}", "services.web.secrets", "undefined secret \"token\""),
        ("undefined config", "services: {web: {image: x, configs: [{source: conf}]}}", "services.web.configs", "undefined config \"conf\""),
        (
            "depends on an unknown service",
            "services: {web: {image: x, depends_on: [db]}}",
            "services.web.depends_on",
            "service \"web\" depends on undefined service \"db\"",
        ),
        (
            "unknown condition",
            "services: {web: {image: x, depends_on: {db: {condition: service_ready}}}, db: {image: x}}",
            "services.web.depends_on.db.condition",
            "unknown condition \"service_ready\"",
        ),
        ("self dependency", "services: {a: {image: x, depends_on: [a]}}", "services.a.depends_on", "dependency cycle: a -> a"),
        (
            "two-service cycle",
            "services: {a: {image: x, depends_on: [b]}, b: {image: x, depends_on: {a: {condition: service_healthy}}}}",
            "services.a.depends_on",
            "dependency cycle: a -> b -> a",
        ),
        (
            "three-service cycle behind a chain",
            "services: {w: {image: x, depends_on: [a]}, a: {image: x, depends_on: [b]}, b: {image: x, depends_on: [c]}, c: {image: x, depends_on: [a]}}",
            "services.a.depends_on",
            "dependency cycle: a -> b -> c -> a",
        ),
        (
            "test and disable",
            "services: {web: {image: x, healthcheck: {test: [CMD, true], disable: true}}}",
            "services.web.healthcheck",
            "test and disable can't be set at the same time",
        ),
        ("duration without unit", "services: {web: {image: x, stop_grace_period: 10}}", "services.web.stop_grace_period", "missing unit"),
        ("bad duration", "services: {web: {image: x, healthcheck: {interval: 5 seconds}}}", "services.web.healthcheck.interval", "invalid duration"),
        ("bad size", "services: {web: {image: x, deploy: {resources: {limits: {memory: 12X}}}}}", "services.web.deploy.resources.limits.memory", "invalid size: '12X'"),
        ("bad cpus", "services: {web: {image: x, deploy: {resources: {limits: {cpus: half}}}}}", "services.web.deploy.resources.limits.cpus", "invalid CPU count"),
        ("port zero", "services: {web: {image: x, ports: ['0:80']}}", "services.web.ports[0]", "not between 1 and 65535"),
        ("port too big", "services: {web: {image: x, ports: [80, '70000:80']}}", "services.web.ports[1]", "70000 is not between 1 and 65535"),
        ("port not a number", "services: {web: {image: x, ports: ['http']}}", "services.web.ports[0]", "not a number"),
        ("long port target zero", "services: {web: {image: x, ports: [{target: 0}]}}", "services.web.ports[0].target", "not between"),
        ("long port without target", "services: {web: {image: x, ports: [{published: 80}]}}", "services.web.ports[0]", "target is required"),
        ("long port bad mode", "services: {web: {image: x, ports: [{target: 80, mode: bridge}]}}", "services.web.ports[0].mode", "unknown port mode \"bridge\""),
        ("ports not a list", "services: {web: {image: x, ports: '80'}}", "services.web.ports", "must be a list"),
        (
            "external volume with driver",
            "services: {web: {image: x}}\nvolumes: {data: {external: true, driver: local}}",
            "volumes.data",
            "conflicting parameters \"external\" and \"driver\" specified for volume \"data\"",
        ),
        (
            "external volume with labels",
            "volumes: {data: {external: true, labels: {a: b}}}",
            "volumes.data",
            "conflicting parameters \"external\" and \"labels\" specified for volume \"data\"",
        ),
        ("secret without file", "secrets: {token: {name: t}}", "secrets.token", "secret \"token\" must have a file or be external"),
        ("secret null", "secrets: {token: }", "secrets.token", "secret \"token\" must have a file or be external"),
        ("config without file", "configs: {conf: {labels: {a: b}}}", "configs.conf", "config \"conf\" must have a file or be external"),
        ("secret file and external", "secrets: {t: {file: ./t, external: true}}", "secrets.t", "conflicting parameters \"external\" and \"file\""),
        (
            "network external name and name",
            "networks: {n: {name: a, external: {name: b}}}",
            "networks.n",
            "network.external.name and network.name conflict",
        ),
        ("bad endpoint mode", "services: {web: {image: x, deploy: {endpoint_mode: round-robin}}}", "services.web.deploy.endpoint_mode", "unknown endpoint mode"),
        ("bad restart condition", "services: {web: {image: x, deploy: {restart_policy: {condition: always}}}}", "services.web.deploy.restart_policy.condition", "unknown restart condition \"always\""),
        ("bad update order", "services: {web: {image: x, deploy: {update_config: {order: random}}}}", "services.web.deploy.update_config.order", "unknown order"),
        ("bad restart", "services: {web: {image: x, restart: sometimes}}", "services.web.restart", "unknown restart policy: sometimes"),
        ("services not a mapping", "services: [web]", "services", "must be a mapping"),
        ("service not a mapping", "services: {web: nginx}", "services.web", "must be a mapping"),
        ("unsupported mount type", "services: {web: {image: x, volumes: [{type: npipe, source: a, target: /a}]}}", "services.web.volumes[0].type", "unsupported mount type \"npipe\""),
        ("relative mount target", "services: {web: {image: x, volumes: ['./a:data']}}", "services.web.volumes[0]", "must be an absolute path"),
        ("too many colons in a volume", "services: {web: {image: x, volumes: ['a:/b:ro:x']}}", "services.web.volumes[0]", "invalid volume spec"),
        ("tmpfs options on a bind", "services: {web: {image: x, volumes: [{type: bind, source: /a, target: /a, tmpfs: {size: 1}}]}}", "services.web.volumes[0].tmpfs", "only for type tmpfs"),
        ("bad octal mode", "services: {web: {image: x, secrets: [{source: s, mode: '0948'}]}}\nsecrets: {s: {file: ./s}}", "services.web.secrets[0].mode", "invalid mode \"0948\""),
        ("secret without source", "services: {web: {image: x, secrets: [{target: s}]}}", "services.web.secrets[0]", "source is required"),
        ("ulimit with soft only", "services: {web: {image: x, ulimits: {nofile: {soft: 1}}}}", "services.web.ulimits.nofile", "soft and hard are both required"),
        ("unbalanced quotes", "services: {web: {image: x, command: 'echo \"hi'}}", "services.web.command", "unbalanced quotes"),
        ("bad boolean", "services: {web: {image: x, tty: maybe}}", "services.web.tty", "invalid boolean \"maybe\""),
        ("boolean from a number", "services: {web: {image: x, read_only: 1}}", "services.web.read_only", "must be a boolean"),
        ("image as a list", "services: {web: {image: [a]}}", "services.web.image", "must be a string"),
        ("missing required env_file", "services: {web: {image: x, env_file: ./nope.env}}", "services.web.env_file", "couldn't read env file /stack/nope.env"),
        ("bad extra host", "services: {web: {image: x, extra_hosts: [justahost]}}", "services.web.extra_hosts[0]", "invalid extra host"),
        ("environment key with a space", "services: {web: {image: x, environment: ['A B=1']}}", "services.web.environment[0]", "invalid variable name"),
        ("merge of a scalar", "a: &a 1\nb: {<<: *a}", "", "compose.yml: "),
    ];
    for (name, yaml, path, message) in cases {
        let e = match load_one(yaml) {
            Ok(l) => panic!("{name}: loaded {:?}", l.compose),
            Err(e) => e,
        };
        assert_eq!(e.path, path, "{name}: {e}");
        assert!(
            e.message.contains(message),
            "{name}: {:?} lacks {message:?}",
            e.message
        );
    }
}

#[test]
fn error_display() {
    let e = LoadError::new("services.web.deploy.replicas", "invalid number");
    assert_eq!(
        e.to_string(),
        "services.web.deploy.replicas: invalid number"
    );
    assert_eq!(LoadError::new("", "just this").to_string(), "just this");
}

/// Files that load with warnings: (name, yaml, the exact warnings).
#[test]
fn warnings() {
    let cases: Vec<(&str, &str, Vec<&str>)> = vec![
        ("none", "services: {web: {image: x}}", vec![]),
        (
            "unsupported keys in one warning",
            "services: {web: {image: x, build: ., links: [db], restart: always}, db: {image: y, privileged: true}}",
            vec!["Ignoring unsupported options: services.db.privileged, services.web.build, services.web.links"],
        ),
        (
            "docker's whole unsupported list",
            r#"
services:
  web:
    image: x
    build: .
    cgroupns_mode: host
    cgroup_parent: m
    devices: [/dev/fuse]
    domainname: example.com
    external_links: [a]
    ipc: host
    links: [db]
    mac_address: 02:42:ac:11:65:43
    network_mode: host
    pid: host
    privileged: true
    security_opt: [label:disable]
    shm_size: 64m
    userns_mode: host
"#,
            vec!["Ignoring unsupported options: services.web.build, services.web.cgroup_parent, services.web.cgroupns_mode, services.web.devices, services.web.domainname, services.web.external_links, services.web.ipc, services.web.links, services.web.mac_address, services.web.network_mode, services.web.pid, services.web.privileged, services.web.security_opt, services.web.shm_size, services.web.userns_mode"],
        ),
        (
            "deprecated keys in a second warning",
            "services: {web: {image: x, container_name: web1, expose: [80], build: .}}",
            vec![
                "Ignoring unsupported options: services.web.build",
                "Ignoring deprecated options: services.web.container_name, services.web.expose",
            ],
        ),
        (
            "unknown keys anywhere",
            r#"
name: mystack
include: [other.yml]
services:
  web:
    image: x
    profiles: [debug]
    platform: linux/amd64
    pull_policy: always
    scale: 2
    mem_reservation: 1g
    frobnicate: 1
    ports: [{target: 80, app_protocol: http}]
    deploy:
      resources:
        reservations: {generic_resources: [{discrete_resource_spec: {kind: gpu, value: 1}}], devices: [{capabilities: [gpu]}]}
      placement: {preferences: [{spread: a, weight: 2}]}
    networks: {front: {ipv4_address: 10.0.0.2}}
    healthcheck: {test: [CMD, "true"], start_interval: 1s}
networks:
  front: {enable_ipv6: true, ipam: {config: [{subnet: 10.0.0.0/24, gateway: 10.0.0.1}]}}
secrets:
  s: {file: ./s, driver: vault}
"#,
            vec!["Ignoring unsupported options: include, name, networks.front.enable_ipv6, networks.front.ipam.config[0].gateway, secrets.s.driver, services.web.deploy.placement.preferences[0].weight, services.web.deploy.resources.reservations.devices, services.web.deploy.resources.reservations.generic_resources, services.web.frobnicate, services.web.healthcheck.start_interval, services.web.mem_reservation, services.web.networks.front.ipv4_address, services.web.platform, services.web.ports[0].app_protocol, services.web.profiles, services.web.pull_policy, services.web.scale"],
        ),
        (
            "x- keys are silent",
            r#"
x-top: {a: 1}
services:
  x-not-a-service: {whatever: true}
  web:
    image: x
    x-meta: {owner: me}
    deploy: {x-note: hi, replicas: 1}
networks:
  n: {x-n: 1}
volumes:
  v: {x-cluster-spec: {}}
secrets:
  s: {file: ./s, x-s: 1}
configs:
  c: {file: ./c, x-c: 1}
"#,
            vec![],
        ),
        (
            "unset variables, once each",
            "services: {web: {image: 'x:${NOPE}', environment: ['A=${NOPE}', 'B=$OTHER', 'C=${DEF:-ok}']}}",
            vec![
                "The \"NOPE\" variable is not set. Defaulting to a blank string.",
                "The \"OTHER\" variable is not set. Defaulting to a blank string.",
            ],
        ),
        (
            "host IP dropped from a port",
            "services: {web: {image: x, ports: ['127.0.0.1:8080:80']}}",
            vec!["services.web.ports[0]: ignoring IP-address 127.0.0.1: the service will listen on all addresses (0.0.0.0)"],
        ),
        (
            "x- extensions are not interpolated",
            "x-defaults: {image: '${NOT_LOOKED_UP}'}\nservices: {web: {image: x, x-also: '${NOR_THIS}'}}",
            vec![],
        ),
    ];
    for (name, yaml, want) in cases {
        let loaded = load_one(yaml).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(loaded.warnings, want, "{name}");
    }
}

#[test]
fn get_started_file() {
    let path = testdata().join("getstarted.yml");
    let env = Env::new(BTreeMap::new(), None, &testdata()).expect("env");
    let loaded = load(&[path], &env).expect("loads");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(loaded.dir, testdata());
    let c = &loaded.compose;
    let web = svc(c, "web");
    assert_eq!(web.image, "username/repo:tag");
    assert_eq!(web.deploy.replicas, Some(5));
    assert_eq!(web.deploy.resources.limits.nano_cpus, Some(100_000_000));
    assert_eq!(web.deploy.resources.limits.memory_bytes, Some(50 << 20));
    assert_eq!(
        web.deploy
            .restart_policy
            .as_ref()
            .and_then(|r| r.condition.as_deref()),
        Some("on-failure")
    );
    assert_eq!(web.ports, vec![port(Some(4000), 80, "tcp", "ingress")]);
    assert_eq!(web.networks.keys().collect::<Vec<_>>(), vec!["webnet"]);
    assert_eq!(c.networks.get("webnet"), Some(&Network::default()));
}

fn webdb_files() -> Vec<PathBuf> {
    vec![
        testdata().join("webdb.yml"),
        testdata().join("webdb.override.yml"),
    ]
}

#[test]
fn web_db_file() {
    let env = Env::new(shell(&[("TAG", "1.4")]), None, &testdata()).expect("env");
    let loaded = load(&webdb_files()[..1], &env).expect("loads");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let c = &loaded.compose;
    let web = svc(c, "web");
    assert_eq!(web.image, "example/web:1.4");
    assert_eq!(
        web.command,
        Some(strings(&["gunicorn", "-b", "0.0.0.0:8000", "app:app"]))
    );
    assert_eq!(
        web.environment,
        strings(&[
            "DATABASE_HOST=db",
            "DATABASE_PASSWORD_FILE=/run/secrets/db_password",
            "DEBUG=false"
        ])
    );
    assert_eq!(web.ports, vec![port(Some(8000), 8000, "tcp", "ingress")]);
    assert_eq!(
        web.depends_on,
        BTreeMap::from([("db".to_string(), Condition::Healthy)])
    );
    assert_eq!(
        web.secrets,
        vec![DataRef {
            source: "db_password".to_string(),
            target: Some("db_password".to_string()),
            uid: Some("1000".to_string()),
            gid: Some("1000".to_string()),
            mode: Some(0o440),
        }]
    );
    assert_eq!(web.configs[0].mode, Some(0o444));
    assert_eq!(
        web.networks.get("backend").map(|n| n.aliases.clone()),
        Some(strings(&["api"]))
    );
    let hc = web.healthcheck.as_ref().expect("healthcheck");
    assert_eq!(hc.test[0], "CMD-SHELL");
    assert_eq!(hc.start_period, Some(Duration::from_secs(60)));
    assert_eq!(
        web.logging.as_ref().map(|l| l.options.clone()),
        Some(smap(&[("max-file", "3"), ("max-size", "10m")]))
    );
    assert_eq!(
        web.deploy.update_config,
        Some(UpdateConfig {
            parallelism: 1,
            delay: Some(Duration::from_secs(10)),
            order: Some("start-first".to_string()),
            ..UpdateConfig::default()
        })
    );
    assert_eq!(
        web.deploy.rollback_config.as_ref().map(|r| r.parallelism),
        Some(2)
    );
    let db = svc(c, "db");
    assert_eq!(
        db.volumes,
        vec![
            mount(
                MountKind::Volume,
                Some("db-data"),
                "/var/lib/postgresql/data",
                false
            ),
            mount(
                MountKind::Bind,
                Some(&testdata().join("initdb").to_string_lossy()),
                "/docker-entrypoint-initdb.d",
                true
            ),
        ]
    );
    assert_eq!(db.stop_grace_period, Some(Duration::from_secs(90)));
    assert_eq!(
        db.deploy.resources.reservations.memory_bytes,
        Some(256 << 20)
    );
    assert_eq!(
        c.secrets["db_password"].file,
        Some(testdata().join("secrets/db_password.txt"))
    );
    assert_eq!(
        c.configs["nginx_conf"].file,
        Some(testdata().join("nginx.conf"))
    );
    assert!(c.networks["backend"].internal);
    assert_eq!(c.volumes.get("db-data"), Some(&Volume::default()));
}

#[test]
fn override_file_merges() {
    let env = Env::new(BTreeMap::new(), None, &testdata()).expect("env");
    let loaded = load(&webdb_files(), &env).expect("loads");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let c = &loaded.compose;
    let web = svc(c, "web");
    assert_eq!(web.image, "example/web:2.0");
    assert_eq!(
        web.environment,
        strings(&[
            "DATABASE_HOST=db",
            "DATABASE_PASSWORD_FILE=/run/secrets/db_password",
            "DEBUG=true",
            "EXTRA=1",
        ])
    );
    assert_eq!(
        web.ports,
        vec![
            port(Some(8000), 8001, "tcp", "ingress"),
            port(Some(9000), 9000, "udp", "ingress")
        ]
    );
    assert_eq!(web.deploy.replicas, Some(4));
    assert_eq!(web.deploy.labels, smap(&[("tier", "front")]));
    // Untouched parts of the base stay.
    assert_eq!(
        web.deploy.update_config.as_ref().map(|u| u.parallelism),
        Some(1)
    );
    assert_eq!(web.depends_on.get("db"), Some(&Condition::Healthy));
    assert_eq!(web.secrets.len(), 1);
    let db = svc(c, "db");
    assert_eq!(db.image, "postgres:16");
    assert_eq!(
        db.volumes[0],
        mount(
            MountKind::Bind,
            Some("/srv/pgdata"),
            "/var/lib/postgresql/data",
            false
        )
    );
    assert_eq!(db.volumes.len(), 2);
    assert_eq!(
        svc(c, "adminer").ports,
        vec![port(Some(8080), 8080, "tcp", "ingress")]
    );
}

/// Two small files merged: (name, base, override, check).
#[test]
fn merges() {
    let cases: Vec<(&str, &str, &str, Check)> = vec![
        (
            "scalars replaced, new services added",
            "services: {web: {image: a, user: root}}",
            "services: {web: {image: b}, api: {image: c}}",
            |c| {
                assert_eq!(svc(c, "web").image, "b");
                assert_eq!(svc(c, "web").user.as_deref(), Some("root"));
                assert_eq!(svc(c, "api").image, "c");
            },
        ),
        (
            "environment list merged with a map",
            "services: {web: {image: a, environment: [A=1, B=2]}}",
            "services: {web: {environment: {B: 3, C: 4}}}",
            |c| assert_eq!(svc(c, "web").environment, strings(&["A=1", "B=3", "C=4"])),
        ),
        (
            "labels merged",
            "services: {web: {image: a, labels: {a: '1'}, deploy: {labels: [x=1]}}}",
            "services: {web: {labels: [b=2], deploy: {labels: {y: '2'}}}}",
            |c| {
                assert_eq!(svc(c, "web").labels, smap(&[("a", "1"), ("b", "2")]));
                assert_eq!(svc(c, "web").deploy.labels, smap(&[("x", "1"), ("y", "2")]));
            },
        ),
        (
            "command replaced, not appended",
            "services: {web: {image: a, command: [a, b], entrypoint: x}}",
            "services: {web: {command: c d}}",
            |c| {
                assert_eq!(svc(c, "web").command, Some(strings(&["c", "d"])));
                assert_eq!(svc(c, "web").entrypoint, Some(strings(&["x"])));
            },
        ),
        (
            "other lists appended without duplicates",
            "services: {web: {image: a, dns: 1.1.1.1, cap_add: [A], deploy: {placement: {constraints: [c1]}}}}",
            "services: {web: {dns: [1.1.1.1, 8.8.8.8], cap_add: [A, B], deploy: {placement: {constraints: [c2, c1]}}}}",
            |c| {
                let s = svc(c, "web");
                assert_eq!(s.dns, strings(&["1.1.1.1", "8.8.8.8"]));
                assert_eq!(s.cap_add, strings(&["A", "B"]));
                assert_eq!(s.deploy.placement.constraints, strings(&["c1", "c2"]));
            },
        ),
        (
            "ports keyed by published port and protocol",
            "services: {web: {image: a, ports: ['80:80', '53:53/udp', '9000']}}",
            "services: {web: {ports: [{target: 8080, published: 80}, '53:5353/tcp', '9000']}}",
            |c| {
                assert_eq!(
                    svc(c, "web").ports,
                    vec![
                        port(None, 9000, "tcp", "ingress"),
                        port(Some(53), 53, "udp", "ingress"),
                        port(Some(53), 5353, "tcp", "ingress"),
                        port(Some(80), 8080, "tcp", "ingress"),
                    ]
                )
            },
        ),
        (
            "secrets keyed by source, volumes by target",
            "services: {web: {image: a, secrets: [s, t], volumes: ['v:/data', '/logs']}}\nsecrets: {s: {file: ./s}, t: {file: ./t}}\nvolumes: {v: {}}",
            "services: {web: {secrets: [{source: s, mode: 0400}], volumes: [{type: bind, source: /srv, target: /data}]}}",
            |c| {
                let s = svc(c, "web");
                assert_eq!(s.secrets.iter().map(|r| (r.source.as_str(), r.mode)).collect::<Vec<_>>(), vec![("s", Some(0o400)), ("t", None)]);
                assert_eq!(
                    s.volumes,
                    vec![mount(MountKind::Bind, Some("/srv"), "/data", false), mount(MountKind::Volume, None, "/logs", false)]
                );
            },
        ),
        (
            "deploy merged key by key",
            "services: {web: {image: a, deploy: {replicas: 2, resources: {limits: {cpus: '1', memory: 1g}}}}}",
            "services: {web: {deploy: {resources: {limits: {memory: 2g}}}}}",
            |c| {
                let d = &svc(c, "web").deploy;
                assert_eq!(d.replicas, Some(2));
                assert_eq!(d.resources.limits.nano_cpus, Some(1_000_000_000));
                assert_eq!(d.resources.limits.memory_bytes, Some(2 << 30));
            },
        ),
        (
            "healthcheck test replaced",
            "services: {web: {image: a, healthcheck: {test: [CMD, a], retries: 3}}}",
            "services: {web: {healthcheck: {test: [CMD, b]}}}",
            |c| {
                let h = svc(c, "web").healthcheck.clone().expect("healthcheck");
                assert_eq!((h.test, h.retries), (strings(&["CMD", "b"]), Some(3)));
            },
        ),
        (
            "logging options dropped when the driver changes",
            "services: {web: {image: a, logging: {driver: json-file, options: {max-size: 1m}}}, api: {image: a, logging: {driver: syslog, options: {a: '1'}}}}",
            "services: {web: {logging: {driver: syslog}}, api: {logging: {options: {b: '2'}}}}",
            |c| {
                assert_eq!(svc(c, "web").logging.as_ref().map(|l| l.options.len()), Some(0));
                assert_eq!(svc(c, "api").logging.as_ref().map(|l| l.options.clone()), Some(smap(&[("a", "1"), ("b", "2")])));
            },
        ),
        (
            "networks and depends_on lists merged with maps",
            "services: {web: {image: a, networks: [front], depends_on: [db]}, db: {image: b}, cache: {image: c}}\nnetworks: {front: {}, back: {}}",
            "services: {web: {networks: {back: {aliases: [w]}}, depends_on: {cache: {condition: service_healthy}}}}",
            |c| {
                let s = svc(c, "web");
                assert_eq!(s.networks.keys().collect::<Vec<_>>(), vec!["back", "front"]);
                assert_eq!(s.networks["back"].aliases, strings(&["w"]));
                assert_eq!(
                    s.depends_on,
                    BTreeMap::from([("cache".to_string(), Condition::Healthy), ("db".to_string(), Condition::Started)])
                );
            },
        ),
        (
            "top-level entries replaced whole",
            "services: {web: {image: a}}\nnetworks: {n: {driver: overlay, attachable: true}, m: {}}\nsecrets: {s: {file: ./a}}",
            "networks: {n: {internal: true}}\nsecrets: {s: {external: true}}",
            |c| {
                assert_eq!(c.networks["n"], Network { internal: true, ..Network::default() });
                assert!(c.networks.contains_key("m"));
                assert_eq!(c.secrets["s"], DataDef { external: true, ..DataDef::default() });
            },
        ),
        (
            "a declaration in the override satisfies the base",
            "services: {web: {image: a, networks: [late]}}",
            "networks: {late: {}}",
            |c| assert!(c.networks.contains_key("late")),
        ),
        (
            "an image in the override only",
            "services: {web: {deploy: {replicas: 2}}}",
            "services: {web: {image: b}}",
            |c| assert_eq!(svc(c, "web").image, "b"),
        ),
        (
            "same versions",
            "version: '3.8'\nservices: {web: {image: a}}",
            "version: '3.8'",
            |c| assert_eq!(c.services.len(), 1),
        ),
        (
            "a version in one file only",
            "services: {web: {image: a}}",
            "version: '3.9'",
            |c| assert_eq!(c.services.len(), 1),
        ),
    ];
    for (name, base, over, check) in cases {
        let loaded = load_many(&[base, over]).unwrap_or_else(|e| panic!("{name}: {e}"));
        check(&loaded.compose);
    }
}

#[test]
fn merge_errors() {
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        (
            "different versions",
            vec!["version: '3.8'\nservices: {}", "version: '3.9'"],
            "version mismatched between two composefiles : 3.8 and 3.9",
        ),
        (
            "a forbidden key in the override",
            vec![
                "services: {web: {image: a}}",
                "services: {web: {mem_limit: 1g}}",
            ],
            "mem_limit: Set resource limits",
        ),
        (
            "a bad port in the override",
            vec![
                "services: {web: {image: a, ports: ['80']}}",
                "services: {web: {ports: ['x:80']}}",
            ],
            "not a number",
        ),
        (
            "the override not a mapping",
            vec!["services: {web: {image: a}}", "[]"],
            "f1.yml: top-level object must be a mapping",
        ),
    ];
    for (name, files, want) in cases {
        let e = load_many(&files).expect_err(name);
        assert!(e.to_string().contains(want), "{name}: {e}");
    }
    let e = load_texts(&[], Path::new(DIR), &test_env()).expect_err("no files");
    assert_eq!(e.message, "no compose file given");
}

#[test]
fn dotenv_beside_the_file() {
    let dir = testdata().join("dotenv");
    let file = dir.join("compose.yml");

    // .env alone.
    let env = Env::new(BTreeMap::new(), None, &dir).expect("env");
    let loaded = load(std::slice::from_ref(&file), &env).expect("loads");
    let app = svc(&loaded.compose, "app");
    assert_eq!(app.image, "nginx:1.25");
    assert_eq!(
        app.environment,
        strings(&["GREETING=hello world", "PORT=8081", "WHO=dotenv"])
    );
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);

    // The shell wins over .env.
    let env = Env::new(shell(&[("TAG", "1.27"), ("WHO", "shell")]), None, &dir).expect("env");
    let loaded = load(std::slice::from_ref(&file), &env).expect("loads");
    let app = svc(&loaded.compose, "app");
    assert_eq!(app.image, "nginx:1.27");
    assert!(app.environment.contains(&"WHO=shell".to_string()));

    // --env-file replaces .env.
    let env = Env::new(BTreeMap::new(), Some(&dir.join("other.env")), &dir).expect("env");
    let loaded = load(std::slice::from_ref(&file), &env).expect("loads");
    let app = svc(&loaded.compose, "app");
    assert_eq!(app.image, "nginx:alpine");
    assert_eq!(
        app.environment,
        strings(&["GREETING=", "PORT=80", "WHO=nobody"])
    );
    assert_eq!(
        loaded.warnings,
        vec!["The \"GREETING\" variable is not set. Defaulting to a blank string.".to_string()]
    );

    // A missing --env-file is an error; a missing .env is not.
    let e = Env::new(BTreeMap::new(), Some(&dir.join("missing.env")), &dir).expect_err("missing");
    assert!(e.message.contains("couldn't read env file"), "{e}");
    assert!(Env::new(BTreeMap::new(), None, &testdata().join("nope")).is_ok());
}

#[test]
fn dotenv_format() {
    let text = "# comment\n\nA=1\nexport B = two \nC=\"quoted # not a comment\"\nD='single'\nE=value # comment\nF=\"line\\nbreak\"\nNOEQUALS\nG=a=b\n";
    let parsed = super::parse_dotenv(".env", text).expect("parses");
    let want: Vec<(&str, &str)> = vec![
        ("A", "1"),
        ("B", "two"),
        ("C", "quoted # not a comment"),
        ("D", "single"),
        ("E", "value"),
        ("F", "line\nbreak"),
        ("G", "a=b"),
    ];
    assert_eq!(parsed, smap(&want));
    let e = super::parse_dotenv(".env", "OK=1\nBAD KEY=2\n").expect_err("bad key");
    assert!(e.message.contains(".env:2"), "{e}");
}

#[test]
fn env_files() {
    let env = Env::new(shell(&[("FROM_SHELL", "from-shell")]), None, &testdata()).expect("env");
    let cases: Vec<(&str, &str, Vec<&str>)> = vec![
        (
            "kvfile rules",
            "services: {web: {image: x, env_file: ./web.env}}",
            vec!["EMPTY=", "FROM_SHELL=from-shell", "LOG_LEVEL=debug", "QUOTED=\"kept as is\"", "WORKERS=4"],
        ),
        (
            "environment wins",
            "services: {web: {image: x, env_file: [web.env], environment: {LOG_LEVEL: info, NEW: '1'}}}",
            vec!["EMPTY=", "FROM_SHELL=from-shell", "LOG_LEVEL=info", "NEW=1", "QUOTED=\"kept as is\"", "WORKERS=4"],
        ),
        (
            "optional missing file skipped",
            "services: {web: {image: x, env_file: [{path: ./missing.env, required: false}, {path: ./web.env}]}}",
            vec!["EMPTY=", "FROM_SHELL=from-shell", "LOG_LEVEL=debug", "QUOTED=\"kept as is\"", "WORKERS=4"],
        ),
    ];
    for (name, yaml, want) in cases {
        let loaded = load_texts(
            &[("c.yml".to_string(), yaml.to_string())],
            &testdata(),
            &env,
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            svc(&loaded.compose, "web").environment,
            strings(&want),
            "{name}"
        );
    }
    let e = load_texts(
        &[(
            "c.yml".to_string(),
            "services: {web: {image: x, env_file: [{path: ./missing.env}]}}".to_string(),
        )],
        &testdata(),
        &env,
    )
    .expect_err("required by default");
    assert_eq!(e.path, "services.web.env_file[0]");
}

fn round_trip(name: &str, loaded: &super::model::Loaded) {
    let yaml = to_yaml(&loaded.compose);
    let again = load_texts(
        &[("config.yml".to_string(), yaml.clone())],
        Path::new("/elsewhere"),
        &test_env(),
    )
    .unwrap_or_else(|e| panic!("{name}: {e}\n{yaml}"));
    assert_eq!(again.compose, loaded.compose, "{name}:\n{yaml}");
    assert_eq!(to_yaml(&again.compose), yaml, "{name}: deterministic");
    assert!(
        again.warnings.is_empty(),
        "{name}: {:?}\n{yaml}",
        again.warnings
    );
}

#[test]
fn to_yaml_round_trips() {
    let env = Env::new(BTreeMap::new(), None, &testdata()).expect("env");
    let merged = load(&webdb_files(), &env).expect("loads");
    round_trip("web+db merged", &merged);
    let started = load(&[testdata().join("getstarted.yml")], &env).expect("loads");
    round_trip("get started", &started);

    let kitchen_sink = r#"
services:
  web:
    image: "registry.example.com/web:${TAG}"
    entrypoint: [/entry.sh]
    command: echo "$$HOME is not expanded" '100%'
    environment: {A: "1", B: "x$$y", FROM_SHELL: null, "NOT_SET": null, E: ""}
    labels: {a: "true", b: "0440", c: "1.5", d: "yes", e: "null", f: "~"}
    ports: ["8080:80", "9090/udp", {target: 443, published: 8443, mode: host}]
    networks: {front: {aliases: [w, www]}, default: null}
    volumes: [data:/data, ./site:/site:ro, /anon, {type: tmpfs, target: /tmp, tmpfs: {size: 64m}}]
    secrets: [s, {source: t, target: /etc/t, uid: "1000", gid: 0, mode: 0400}]
    configs: [{source: c, mode: 0o444}]
    healthcheck: {test: pg_isready, interval: 1m30s, timeout: 1.5s, start_period: 300ms, retries: 3}
    stop_grace_period: 2h45m
    stop_signal: SIGTERM
    user: "1000:1000"
    working_dir: /app
    hostname: web
    dns: [1.1.1.1]
    dns_search: [example.com]
    extra_hosts: ["db:10.0.0.2"]
    cap_add: [NET_ADMIN]
    cap_drop: [ALL]
    sysctls: {net.core.somaxconn: 1024}
    ulimits: {nofile: {soft: 1, hard: 2}, nproc: 3}
    init: false
    tty: true
    stdin_open: true
    read_only: true
    logging: {driver: json-file, options: {max-size: 10m}}
    depends_on: {db: {condition: service_healthy}, job: {condition: service_completed_successfully}, cache: {}}
    restart: on-failure:2
    deploy:
      mode: replicated
      replicas: 0
      labels: {x: y}
      endpoint_mode: dnsrr
      placement: {constraints: [node.role==worker], preferences: [{spread: node.labels.zone}], max_replicas_per_node: 1}
      resources: {limits: {cpus: "0.333", memory: 1.5g, pids: 10}, reservations: {cpus: 2, memory: 1}}
      restart_policy: {}
      update_config: {max_failure_ratio: 0.3, monitor: 1us, failure_action: continue, order: stop-first, delay: 1ns}
      rollback_config: {parallelism: 0}
  db: {image: postgres, healthcheck: {disable: true}, deploy: {mode: global}}
  job: {image: busybox, command: [], deploy: {mode: replicated-job, replicas: 3}}
  cache: {image: redis, logging: {}, deploy: {mode: global-job}}
networks:
  front: {driver: overlay, driver_opts: {encrypted: ""}, attachable: true, internal: true, labels: {a: b}, name: front-net, ipam: {config: [{subnet: 10.1.0.0/16}]}}
  ext: {external: {name: outside}}
volumes:
  data: {driver: local, driver_opts: {type: tmpfs}, labels: {l: v}, name: "data-$$1"}
  ext: {external: true}
secrets:
  s: {file: ./s.txt, labels: {v: "2"}, name: s_v2, template_driver: golang}
  t: {external: true, name: t_ext}
configs:
  c: {file: /etc/c.conf}
"#;
    let loaded = load_one(kitchen_sink).expect("kitchen sink loads");
    let web = svc(&loaded.compose, "web");
    assert_eq!(
        web.command,
        Some(strings(&["echo", "$HOME is not expanded", "100%"]))
    );
    assert!(web.environment.contains(&"B=x$y".to_string()));
    round_trip("kitchen sink", &loaded);

    let yaml = to_yaml(&loaded.compose);
    for needle in [
        "1m30s",
        "2h45m0s",
        "1.5s",
        "300ms",
        "memory: 1610612736",
        "cpus: '0.333'",
        "mode: '0400'",
        "$$HOME",
    ] {
        assert!(yaml.contains(needle), "{needle} not in\n{yaml}");
    }
    assert_eq!(to_yaml(&Compose::default()), "{}\n");
    round_trip("empty", &load_one("{}").expect("empty mapping"));
}

/// Every prefix of the fixtures (cut files are a good source of odd YAML) loads or fails,
/// without a panic.
#[test]
fn never_panics_on_cut_files() {
    let env = test_env();
    for file in ["webdb.yml", "webdb.override.yml", "getstarted.yml"] {
        let text = std::fs::read_to_string(testdata().join(file)).expect("fixture");
        for (cut, _) in text.char_indices() {
            let _ = load_texts(
                &[("cut.yml".to_string(), text[..cut].to_string())],
                Path::new(DIR),
                &env,
            );
        }
    }
    let odd = [
        "services: {web: {image: x, ports: [[1]]}}",
        "services: {web: {image: x, ports: [{target: [1]}]}}",
        "services: {web: {image: x, deploy: []}}",
        "services: {web: {image: x, healthcheck: [a]}}",
        "services: {web: {image: x, volumes: [~]}}",
        "services: {web: {image: x, environment: [[a]]}}",
        "services: {web: {image: x, ulimits: [1]}}",
        "services: {1: {image: x}}",
        "services: {? [a] : {image: x}}",
        "networks: [a]",
        "secrets: {s: {external: {name: [x]}}}",
        "services: {web: {image: x, stop_grace_period: '-1s'}}",
        "services: {web: {image: x, deploy: {replicas: 1e99}}}",
        "services: {web: {image: x, deploy: {resources: {limits: {cpus: 1e300, memory: 1e300}}}}}",
        "services: {web: {image: '$', command: '${A:-${B:-${C:-}}}'}}",
        "services: {web: {image: x, ports: ['99999999999999999999:1']}}",
        "services: {web: {image: x, extra_hosts: {a: [b]}}}",
        "a: &a [*a]",
    ];
    for yaml in odd {
        let _ = load_one(yaml);
    }
}

#[test]
fn clean_paths() {
    let cases: Vec<(&str, &str, &str)> = vec![
        ("dot components", "/stack/./a/./b", "/stack/a/b"),
        ("parent", "/stack/a/../b", "/stack/b"),
        ("parent past the root", "/../a", "/a"),
        ("relative parents kept", "../../a", "../../a"),
        ("relative parent cancels", "a/../../b", "../b"),
        ("nothing left", "a/..", "."),
    ];
    for (name, input, want) in cases {
        assert_eq!(
            super::clean_path(Path::new(input)),
            PathBuf::from(want),
            "{name}"
        );
    }
}
