//! The cluster load generator: 1 or 3 real `orch` managers (separate processes, real disks,
//! loopback addresses), N simulated agents in this process (real joins, mTLS sessions,
//! heartbeats, assignments and status reports; no containers), then scenarios, one line of
//! figures each:
//!
//! - create S services totalling T tasks: placements committed per second, time until all
//!   RUNNING, per-service spread (max − min tasks per node);
//! - leader RSS before and after, per task;
//! - control API latency (`service ls`, `service inspect`) during the run;
//! - drain 10% of the nodes: time until every moved task is RUNNING elsewhere;
//! - SIGKILL the leader (3 managers): time until a new leader accepts a write and every agent
//!   is back in session; nodes wrongly marked Down; tasks rescheduled.
//!
//! Correctness (every task RUNNING, spread ≤ 1, nothing rescheduled by a leader change) makes
//! the exit status; speed is only reported.

use orch_lab::chaos::percentile;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use orch_agent::sim::{self, SimAgent};
use orch_api::pb::control_client::ControlClient;
use orch_api::pb::service_spec::Mode;
use orch_api::pb::{
    ContainerSpec, CreateServiceRequest, GetServiceRequest, ListNodesRequest, ListServicesRequest,
    ListTasksRequest, NodeState, Placement, ReplicatedService, ServiceSpec, Task, TaskSpec,
    TaskState,
};
use orch_lab::{Lab, LabConfig};
use parking_lot::Mutex;
use tonic::transport::Channel;

pub struct Options {
    pub orch: PathBuf,
    pub managers: usize,
    pub agents: usize,
    pub services: usize,
    pub tasks: usize,
    pub heartbeat: String,
    pub drain_percent: usize,
    pub kill_leader: bool,
    pub timeout: Duration,
    pub join_concurrency: usize,
}

fn control(lab: &Lab, name: &str) -> Result<ControlClient<Channel>> {
    let dir = &lab.node(name)?.dir;
    let ch = orch_api::transport::unix_channel(&dir.join("orch.sock"))?;
    Ok(ControlClient::new(ch)
        .max_decoding_message_size(1 << 30)
        .max_encoding_message_size(64 << 20))
}

fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

fn ms(d: Duration) -> String {
    format!("{:.1}ms", d.as_secs_f64() * 1000.0)
}

fn running(t: &Task) -> bool {
    t.status
        .as_ref()
        .is_some_and(|s| s.state == TaskState::Running as i32)
}

/// Tasks of the load services that run, by the counts `service ls` shows (cheap: the store
/// keeps them; listing 100,000 tasks every poll would load the leader more than the run).
async fn running_total(c: &mut ControlClient<Channel>) -> Result<u64> {
    let r = c.list_services(ListServicesRequest {}).await?.into_inner();
    Ok(r.services
        .iter()
        .filter(|s| {
            s.spec
                .as_ref()
                .is_some_and(|sp| sp.name.starts_with("load-"))
        })
        .map(|s| r.running.get(&s.id).copied().unwrap_or(0))
        .sum())
}

/// Containers the simulated agents run: tasks delivered to their nodes and started.
fn started_on_agents(agents: &Mutex<Vec<SimAgent>>) -> usize {
    agents.lock().iter().map(|a| a.exec.running()).sum()
}

async fn tasks(c: &mut ControlClient<Channel>) -> Result<Vec<Task>> {
    Ok(c.list_tasks(ListTasksRequest {
        desired_running: true,
        ..Default::default()
    })
    .await?
    .into_inner()
    .tasks)
}

/// The leader's lab name, as `from` sees it.
fn leader(lab: &Lab, from: &str) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(l) = lab.leader(from) {
            return Ok(l);
        }
        if Instant::now() > deadline {
            bail!("no leader seen from {from}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub async fn run(o: Options) -> Result<bool> {
    if o.managers != 1 && o.managers != 3 {
        bail!("--managers is 1 or 3");
    }
    let root = std::env::temp_dir().join(format!("orch-load-{}", std::process::id()));
    let config = LabConfig {
        root,
        managers: o.managers,
        workers: 0,
        netns: false,
        heartbeat: o.heartbeat.clone(),
        orch: o.orch.clone(),
        id: 0,
        tmpfs_mib: None,
    };
    let mut lab = tokio::task::spawn_blocking(move || Lab::up(config)).await??;
    lab.down_on_drop = true;
    let lab = Arc::new(lab);
    let managers: Vec<String> = lab
        .state
        .nodes
        .iter()
        .filter(|n| n.manager)
        .map(|n| n.name.clone())
        .collect();
    // Tasks go to the simulated agents only.
    for m in &managers {
        lab.orch_ok("m1", &["node", "update", "--availability", "drain", m])?;
    }
    let token = lab
        .orch_ok("m1", &["join-token", "-q", "worker"])?
        .trim()
        .to_string();
    let addrs: Vec<String> = lab
        .state
        .nodes
        .iter()
        .filter(|n| n.manager)
        .map(|n| n.addr())
        .collect();

    // Join the agents, a few at a time, spread over the managers.
    let started = Instant::now();
    let agents: Arc<Mutex<Vec<SimAgent>>> = Default::default();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut joiners = Vec::new();
    for _ in 0..o.join_concurrency.max(1) {
        let (agents, next, token, addrs) =
            (agents.clone(), next.clone(), token.clone(), addrs.clone());
        let total = o.agents;
        joiners.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    return Ok::<(), anyhow::Error>(());
                }
                let name = format!("sim-{i:05}");
                let remote = &addrs[i % addrs.len()];
                let joined = sim::join(remote, &token, &name)
                    .await
                    .with_context(|| format!("join {name} via {remote}"))?;
                agents.lock().push(SimAgent::start(&joined, &name)?);
            }
        }));
    }
    for j in joiners {
        j.await??;
    }
    let joined_in = started.elapsed();
    let mut c = control(&lab, "m1")?;
    let ready = wait(o.timeout, || async {
        let nodes = control(&lab, "m1")?
            .list_nodes(ListNodesRequest {})
            .await?
            .into_inner()
            .nodes;
        Ok(nodes
            .iter()
            .filter(|n| {
                n.status
                    .as_ref()
                    .is_some_and(|s| s.state == NodeState::Ready as i32)
            })
            .count()
            >= o.agents + o.managers)
    })
    .await?;
    println!(
        "agents: {} simulated nodes joined in {:.1}s ({:.0}/s), all Ready after {:.1}s",
        o.agents,
        joined_in.as_secs_f64(),
        o.agents as f64 / joined_in.as_secs_f64(),
        (joined_in + ready).as_secs_f64()
    );
    let agent_nodes: HashMap<String, usize> = agents
        .lock()
        .iter()
        .enumerate()
        .map(|(i, a)| (a.node_id.clone(), i))
        .collect();

    let leader_name = leader(&lab, "m1")?;
    let leader_pid = lab.pid(&leader_name).unwrap_or(0);
    let rss_before = rss_kib(leader_pid);

    // Create the services; sample the control API while they roll out.
    let per = o.tasks / o.services.max(1);
    let total = per * o.services;
    let stop_sampling = tokio_util::sync::CancellationToken::new();
    let samples: Arc<Mutex<(Vec<Duration>, Vec<Duration>)>> = Default::default();
    let sampler = {
        let (stop, samples, mut sc) =
            (stop_sampling.clone(), samples.clone(), control(&lab, "m1")?);
        let services = o.services;
        tokio::spawn(async move {
            let mut k = 0usize;
            while !stop.is_cancelled() {
                let t = Instant::now();
                if sc.list_services(ListServicesRequest {}).await.is_ok() {
                    samples.lock().0.push(t.elapsed());
                }
                let t = Instant::now();
                let name = format!("load-{}", k % services.max(1));
                if sc
                    .get_service(GetServiceRequest { service: name })
                    .await
                    .is_ok()
                {
                    samples.lock().1.push(t.elapsed());
                }
                k += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    // The services are created 16 at a time, as several users or a CI pipeline would.
    let created = Instant::now();
    let next_service = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut creators = Vec::new();
    for _ in 0..16.min(o.services.max(1)) {
        let (next_service, mut cc, services) = (next_service.clone(), c.clone(), o.services);
        creators.push(tokio::spawn(async move {
            loop {
                let s = next_service.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if s >= services {
                    return Ok::<(), anyhow::Error>(());
                }
                cc.create_service(CreateServiceRequest {
                    spec: Some(load_spec(s, per)),
                })
                .await
                .with_context(|| format!("create load-{s}"))?;
            }
        }));
    }
    for cr in creators {
        cr.await??;
    }
    let created_in = created.elapsed();
    let mut placed_at = None;
    let mut last: Vec<Task>;
    let deadline = Instant::now() + o.timeout;
    let all_running = loop {
        if placed_at.is_none() && started_on_agents(&agents) >= total {
            placed_at = Some(created.elapsed());
        }
        if running_total(&mut c).await? >= total as u64 {
            break Some(created.elapsed());
        }
        if Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Every task was placed on an agent before it could be reported running.
    let placed_at = placed_at.or(all_running);
    last = tasks(&mut c).await?;
    stop_sampling.cancel();
    let _ = sampler.await;
    let mut ok = true;
    let spread = worst_spread(&last, &agent_nodes);
    let running_now = last.iter().filter(|t| running(t)).count();
    match (placed_at, all_running) {
        (Some(p), Some(r)) => println!(
            "create: {} services x {} tasks on {} nodes (API calls {:.1}s): {} placements committed and started on the agents in {:.1}s ({:.0}/s), all RUNNING (committed) after {:.1}s; spread (max-min tasks per node, worst service) {}",
            o.services, per, o.agents, created_in.as_secs_f64(), total, p.as_secs_f64(),
            total as f64 / p.as_secs_f64(), r.as_secs_f64(), spread
        ),
        _ => {
            ok = false;
            println!(
                "create: FAILED: {running_now} of {total} tasks RUNNING after {:.0}s",
                o.timeout.as_secs_f64()
            );
        }
    }
    if all_running.is_some() && running_now < total {
        ok = false;
        println!("create: FAILED: service ls counted every task RUNNING, the task list only {running_now} of {total}");
    }
    if spread > 1 {
        ok = false;
        println!("create: FAILED: a service's spread is {spread} (> 1)");
    }
    let rss_after = rss_kib(leader_pid);
    println!(
        "memory: leader ({leader_name}) RSS {:.1} MiB before, {:.1} MiB after; {:.2} KiB per task",
        rss_before as f64 / 1024.0,
        rss_after as f64 / 1024.0,
        rss_after.saturating_sub(rss_before) as f64 / total.max(1) as f64
    );
    {
        let (mut ls, mut inspect) = samples.lock().clone();
        ls.sort();
        inspect.sort();
        println!(
            "api during the run: service ls p50 {} p99 {} ({} calls); service inspect p50 {} p99 {} ({} calls)",
            ms(percentile(&ls, 50.0)), ms(percentile(&ls, 99.0)), ls.len(),
            ms(percentile(&inspect, 50.0)), ms(percentile(&inspect, 99.0)), inspect.len()
        );
    }
    if !ok {
        return Ok(false);
    }

    // Drain a share of the nodes.
    if o.drain_percent > 0 {
        let n = (o.agents * o.drain_percent / 100).max(1);
        let drained: Vec<(String, String)> = agents
            .lock()
            .iter()
            .take(n)
            .map(|a| (a.node_id.clone(), a.hostname.clone()))
            .collect();
        let drained_ids: HashSet<String> = drained.iter().map(|d| d.0.clone()).collect();
        let moving = last
            .iter()
            .filter(|t| drained_ids.contains(&t.node_id))
            .count();
        let t0 = Instant::now();
        for (_, host) in &drained {
            lab.orch_ok("m1", &["node", "update", "--availability", "drain", host])?;
        }
        let drained_agents: Vec<usize> = agents
            .lock()
            .iter()
            .enumerate()
            .filter(|(_, a)| drained_ids.contains(&a.node_id))
            .map(|(i, _)| i)
            .collect();
        // Done when the drained nodes run nothing and every task runs again.
        let done = wait(o.timeout, || {
            let (lab, agents, drained_agents) = (&lab, &agents, &drained_agents);
            async move {
                let idle = {
                    let agents = agents.lock();
                    drained_agents
                        .iter()
                        .all(|i| agents[*i].exec.running() == 0)
                };
                Ok(idle && running_total(&mut control(lab, "m1")?).await? >= total as u64)
            }
        })
        .await;
        match done {
            Ok(_) => println!(
                "drain: {n} nodes ({}%), {moving} tasks moved, all RUNNING elsewhere after {:.1}s",
                o.drain_percent,
                t0.elapsed().as_secs_f64()
            ),
            Err(_) => {
                println!(
                    "drain: FAILED: moved tasks not all RUNNING after {:.0}s",
                    o.timeout.as_secs_f64()
                );
                return Ok(false);
            }
        }
        last = tasks(&mut c).await?;
    }

    // Kill the leader.
    if o.kill_leader && o.managers == 3 {
        let before: HashSet<String> = last
            .iter()
            .filter(|t| running(t))
            .map(|t| t.id.clone())
            .collect();
        let generations: Vec<u64> = agents.lock().iter().map(|a| a.generation()).collect();
        let l = leader(&lab, "m1")?;
        let other = managers
            .iter()
            .find(|m| **m != l)
            .cloned()
            .unwrap_or_default();
        let t0 = Instant::now();
        lab.kill(&l);
        let mut k = 0;
        let write = wait(o.timeout, || {
            k += 1;
            let name = format!("probe-{k}");
            let lab = &lab;
            let other = &other;
            async move {
                let out = lab.orch(
                    other,
                    &[
                        "service",
                        "create",
                        "-d",
                        "--name",
                        &name,
                        "--replicas",
                        "0",
                        "orch-test/busybox:1",
                        "true",
                    ],
                )?;
                Ok(out.status.success())
            }
        })
        .await
        .map_err(|_| anyhow!("no write accepted after killing the leader"))?;
        let back = wait(o.timeout, || {
            let agents = &agents;
            let generations = &generations;
            async move {
                Ok(agents
                    .lock()
                    .iter()
                    .zip(generations)
                    .all(|(a, g)| a.connected() && a.generation() > *g))
            }
        })
        .await
        .map(|_| t0.elapsed());
        let mut oc = control(&lab, &other)?;
        let nodes = oc.list_nodes(ListNodesRequest {}).await?.into_inner().nodes;
        let down = nodes
            .iter()
            .filter(|n| n.id != lab_node_id(&lab, &l))
            .filter(|n| {
                n.status
                    .as_ref()
                    .is_some_and(|s| s.state == NodeState::Down as i32)
            })
            .count();
        let after: HashSet<String> = tasks(&mut oc)
            .await?
            .iter()
            .filter(|t| running(t) && t.service_name.starts_with("load-"))
            .map(|t| t.id.clone())
            .collect();
        let rescheduled = before.difference(&after).count();
        match back {
            Ok(b) => println!(
                "leader kill ({} agents): a new leader accepted a write after {:.2}s; every agent back in session after {:.2}s; {down} nodes marked Down; {rescheduled} tasks rescheduled",
                o.agents,
                write.as_secs_f64(),
                b.as_secs_f64()
            ),
            Err(_) => {
                println!("leader kill: FAILED: not every agent back in session");
                ok = false;
            }
        }
        if down > 0 || rescheduled > 0 {
            ok = false;
        }
    }
    drop(agents);
    Ok(ok)
}

fn load_spec(s: usize, replicas: usize) -> ServiceSpec {
    ServiceSpec {
        name: format!("load-{s}"),
        task: Some(TaskSpec {
            container: Some(ContainerSpec {
                image: "orch-test/busybox:1".into(),
                args: vec!["sleep".into(), "100000".into()],
                ..Default::default()
            }),
            placement: Some(Placement {
                constraints: vec!["node.role==worker".into()],
                ..Default::default()
            }),
            ..Default::default()
        }),
        mode: Some(Mode::Replicated(ReplicatedService {
            replicas: replicas as u64,
        })),
        ..Default::default()
    }
}

fn lab_node_id(lab: &Lab, name: &str) -> String {
    lab.node(name)
        .ok()
        .and_then(|n| std::fs::read_to_string(n.dir.join("node.json")).ok())
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["node_id"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The worst (max − min tasks per node) over services, counting every active agent node.
fn worst_spread(tasks: &[Task], agent_nodes: &HashMap<String, usize>) -> usize {
    let mut per_service: BTreeMap<&str, HashMap<&str, usize>> = BTreeMap::new();
    for t in tasks {
        *per_service
            .entry(&t.service_id)
            .or_default()
            .entry(&t.node_id)
            .or_default() += 1;
    }
    per_service
        .values()
        .map(|counts| {
            let all = agent_nodes
                .keys()
                .map(|n| counts.get(n.as_str()).copied().unwrap_or(0));
            let max = all.clone().max().unwrap_or(0);
            let min = all.min().unwrap_or(0);
            max - min
        })
        .max()
        .unwrap_or(0)
}

/// Polls `cond` until true; how long it took.
async fn wait<F, Fut>(timeout: Duration, mut cond: F) -> Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let t0 = Instant::now();
    loop {
        if let Ok(true) = cond().await {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > timeout {
            bail!("timed out after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
