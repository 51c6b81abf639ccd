//! The fault-injection suite: a workload of clients changing services while a fault schedule
//! runs against a lab, and a checker that holds the cluster to what it acknowledged.
//!
//! Each run of a schedule: clients start; the fault is injected, held and healed; the time
//! until the cluster is whole again is measured; clients stop; then the checker verifies
//! that every service converges to its spec within a bound, that every name holds a state
//! the acknowledged operations allow (nothing acknowledged lost, nothing unacknowledged
//! appeared), and that all managers hold the same store. Throughout, a sampler watches the
//! engine and the store for a slot running two tasks of one spec at once.

mod check;
pub mod workload;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use orch_api::pb::UpdateState;
use parking_lot::Mutex;
use serde::Serialize;

use super::{Direction, Lab};
use check::{Probe, PREFIX};
pub use workload::Value;
use workload::{create_args, orch_with_timeout, update_args, NameState, Outcome, Shared, Spec};

/// A fault schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    /// SIGKILL the leader; restart it after the hold.
    LeaderKill,
    /// SIGKILL a follower; restart it after the hold.
    FollowerKill,
    /// Cut the leader off from every node, both ways: it must step down and refuse writes
    /// while the majority elects a new leader.
    LeaderPartition,
    /// Drop only the leader's outgoing packets.
    OneWayPartition,
    /// SIGKILL every manager at once, then restart them all.
    AllManagersRestart,
    /// Cut a worker off until it is marked Down, then heal: its stale tasks stop and no slot
    /// runs twice.
    WorkerPartition,
    /// SIGKILL a worker's node process in the middle of a rolling update; restart it.
    AgentRestartDuringUpdate,
    /// Fill one manager's disk: it must exit loudly while the cluster goes on; then free the
    /// disk and restart it.
    DiskFull,
    /// Add 100ms each way to every link of the leader.
    SlowLeader,
    /// SIGSTOP the leader (a long GC pause, a stalled VM) for the hold, then SIGCONT it: the
    /// majority elects a new leader meanwhile, and the old one, waking with stale leadership,
    /// must step down and follow.
    LeaderPause,
    /// Links flap for the hold: one node after another, chosen at random (leader, follower or
    /// worker), is cut off both ways for 0.3–1.5 s, then healed; leadership may move and
    /// sessions reconnect over and over while writes go on.
    FlappingLinks,
}

impl Schedule {
    pub const ALL: [Schedule; 11] = [
        Schedule::LeaderKill,
        Schedule::FollowerKill,
        Schedule::LeaderPartition,
        Schedule::OneWayPartition,
        Schedule::AllManagersRestart,
        Schedule::WorkerPartition,
        Schedule::AgentRestartDuringUpdate,
        Schedule::DiskFull,
        Schedule::SlowLeader,
        Schedule::LeaderPause,
        Schedule::FlappingLinks,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Schedule::LeaderKill => "leader-kill",
            Schedule::FollowerKill => "follower-kill",
            Schedule::LeaderPartition => "leader-partition",
            Schedule::OneWayPartition => "one-way-partition",
            Schedule::AllManagersRestart => "all-managers-restart",
            Schedule::WorkerPartition => "worker-partition",
            Schedule::AgentRestartDuringUpdate => "agent-restart-during-update",
            Schedule::DiskFull => "disk-full",
            Schedule::SlowLeader => "slow-leader",
            Schedule::LeaderPause => "leader-pause",
            Schedule::FlappingLinks => "flapping-links",
        }
    }

    /// Faults that take the leader away: writes stop until a new one is elected.
    fn costs_the_leader(self) -> bool {
        matches!(
            self,
            Schedule::LeaderKill
                | Schedule::LeaderPause
                | Schedule::LeaderPartition
                | Schedule::OneWayPartition
                | Schedule::AllManagersRestart
        )
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub schedules: Vec<Schedule>,
    pub cycles: usize,
    pub clients: usize,
    pub names_per_client: usize,
    /// How long a fault is held.
    pub hold: Duration,
    /// The bound on convergence once the workload stops.
    pub converge_within: Duration,
    /// Two images with a `sleep` command.
    pub images: [String; 2],
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            schedules: Schedule::ALL.to_vec(),
            cycles: 1,
            clients: 2,
            names_per_client: 6,
            hold: Duration::from_secs(6),
            converge_within: Duration::from_secs(60),
            images: ["orch-test/busybox:1".into(), "orch-test/busybox:2".into()],
            seed: 1,
        }
    }
}

/// One run of one schedule.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub schedule: Schedule,
    pub cycle: usize,
    pub acked: usize,
    pub refused: usize,
    pub unknown: usize,
    /// Fault start to the first acknowledged write that started after it (leader faults),
    /// as the write prober saw it.
    pub unavailable: Option<Duration>,
    /// Heal to the cluster being whole again (one leader, every manager reachable, every
    /// node Ready).
    pub recovered: Duration,
    /// Workload stop to every service running its spec, in the store and the engine.
    pub converged: Duration,
    pub notes: Vec<String>,
    pub anomalies: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub runs: Vec<Run>,
}

/// The `p`th percentile (nearest rank) of `sorted`; zero when empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn secs(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

impl Report {
    pub fn anomalies(&self) -> Vec<String> {
        self.runs
            .iter()
            .flat_map(|r| {
                r.anomalies
                    .iter()
                    .map(move |a| format!("{} #{}: {a}", r.schedule.name(), r.cycle))
            })
            .collect()
    }

    pub fn acked(&self) -> usize {
        self.runs.iter().map(|r| r.acked).sum()
    }

    /// A markdown table: per schedule, cycles, operations, anomalies, recovery p50/p99.
    pub fn table(&self) -> String {
        let mut out = String::from(
            "| schedule | cycles | ops acked / refused / unknown | anomalies | writes unavailable p50 / p99 | recovered p50 / p99 | converged p50 / p99 |\n|---|---|---|---|---|---|---|\n",
        );
        for s in Schedule::ALL {
            let runs: Vec<&Run> = self.runs.iter().filter(|r| r.schedule == s).collect();
            if runs.is_empty() {
                continue;
            }
            let sorted = |f: &dyn Fn(&Run) -> Option<Duration>| {
                let mut v: Vec<Duration> = runs.iter().filter_map(|r| f(r)).collect();
                v.sort();
                v
            };
            let pair = |v: Vec<Duration>| {
                if v.is_empty() {
                    "–".to_string()
                } else {
                    format!(
                        "{} / {}",
                        secs(percentile(&v, 50.0)),
                        secs(percentile(&v, 99.0))
                    )
                }
            };
            out.push_str(&format!(
                "| {} | {} | {} / {} / {} | {} | {} | {} | {} |\n",
                s.name(),
                runs.len(),
                runs.iter().map(|r| r.acked).sum::<usize>(),
                runs.iter().map(|r| r.refused).sum::<usize>(),
                runs.iter().map(|r| r.unknown).sum::<usize>(),
                runs.iter().map(|r| r.anomalies.len()).sum::<usize>(),
                pair(sorted(&|r| r.unavailable)),
                pair(sorted(&|r| Some(r.recovered))),
                pair(sorted(&|r| Some(r.converged))),
            ));
        }
        out
    }
}

/// Everything one run needs.
/// How long the agent-restart schedule's rolling update may take after the restart.
const UPDATE_WITHIN: Duration = Duration::from_secs(120);

/// What the sampler found: each message with the names of the nodes involved.
type Sampled = BTreeMap<String, Vec<String>>;

struct Ctx<'a> {
    lab: &'a Lab,
    opts: &'a Options,
    probe: Probe,
    shared: Arc<Shared>,
    target: workload::Target,
    client_names: Vec<Vec<String>>,
    node_ids: HashSet<String>,
    /// Nodes marked Down this cycle while their agent process was dead.
    unsupervised: Mutex<HashSet<String>>,
}

/// Runs every schedule of `opts`, `cycles` times, against `lab` (a netns lab with at least 3
/// managers and 2 workers; disk-full needs its tmpfs). `log` hears about progress.
pub fn run(lab: &Lab, opts: &Options, log: &mut dyn FnMut(&str)) -> Result<Report> {
    let managers: Vec<(String, std::path::PathBuf)> = lab
        .state
        .nodes
        .iter()
        .filter(|n| n.manager)
        .map(|n| (n.name.clone(), n.dir.clone()))
        .collect();
    let workers = lab.state.nodes.iter().filter(|n| !n.manager).count();
    if managers.len() < 3 || workers < 2 || lab.state.bridge.is_none() {
        bail!("chaos needs a --netns lab with at least 3 managers and 2 workers");
    }
    let ctx = Ctx {
        lab,
        opts,
        probe: Probe::new()?,
        shared: Arc::new(Shared::default()),
        target: workload::Target {
            orch: lab.state.orch.clone(),
            managers,
            images: opts.images.clone(),
            timeout: Duration::from_secs(10),
        },
        client_names: (0..opts.clients)
            .map(|c| {
                (0..opts.names_per_client)
                    .map(|k| format!("{PREFIX}{c}-{k}"))
                    .collect()
            })
            .collect(),
        node_ids: lab.node_ids().into_iter().collect(),
        unsupervised: Mutex::new(HashSet::new()),
    };
    {
        let mut names = ctx.shared.names.lock();
        for n in ctx.client_names.iter().flatten() {
            names.insert(
                n.clone(),
                NameState {
                    possible: vec![Value::Absent],
                    gen: 0,
                },
            );
        }
    }
    let mut report = Report::default();
    for cycle in 0..opts.cycles {
        for &schedule in &opts.schedules {
            log(&format!("cycle {cycle}: {}", schedule.name()));
            let run = ctx.run_once(schedule, cycle, log)?;
            log(&format!(
                "  {} acked, {} refused, {} unknown; recovered in {}, converged in {}; {} anomalies",
                run.acked,
                run.refused,
                run.unknown,
                secs(run.recovered),
                secs(run.converged),
                run.anomalies.len()
            ));
            for n in &run.notes {
                log(&format!("  {n}"));
            }
            for a in &run.anomalies {
                log(&format!("  ANOMALY: {a}"));
            }
            report.runs.push(run);
        }
    }
    Ok(report)
}

/// Polls `cond` every 100ms until it holds or `timeout` passes; returns how long it took.
fn poll(timeout: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if cond() {
            return Some(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Ctx<'_> {
    fn managers(&self) -> Vec<String> {
        self.target
            .managers
            .iter()
            .map(|(n, _)| n.clone())
            .collect()
    }

    fn dir(&self, name: &str) -> Result<std::path::PathBuf> {
        Ok(self.lab.node(name)?.dir.clone())
    }

    /// The leader, as the live managers agree it.
    fn leader(&self) -> Result<String> {
        let mut found = None;
        poll(Duration::from_secs(30), || {
            found = self
                .lab
                .live_managers()
                .iter()
                .find_map(|m| self.lab.leader(m));
            found.is_some()
        });
        found.ok_or_else(|| anyhow!("no leader within 30s"))
    }

    /// Waits until a manager other than `old` reports a leader other than `old`.
    fn new_leader(&self, old: &str, within: Duration) -> Option<(String, Duration)> {
        let mut found = None;
        let took = poll(within, || {
            found = self
                .lab
                .live_managers()
                .iter()
                .filter(|m| *m != old)
                .find_map(|m| self.lab.leader(m).filter(|l| l != old));
            found.is_some()
        })?;
        found.map(|l| (l, took))
    }

    fn services(&self) -> Result<Vec<orch_api::pb::Service>> {
        let mut last = anyhow!("no live manager");
        for m in self.lab.live_managers() {
            match self.probe.services(&self.dir(&m)?) {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn tasks(&self) -> Result<Vec<orch_api::pb::Task>> {
        let mut last = anyhow!("no live manager");
        for m in self.lab.live_managers() {
            match self.probe.tasks(&self.dir(&m)?) {
                Ok(t) => return Ok(t),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn run_once(&self, schedule: Schedule, cycle: usize, log: &mut dyn FnMut(&str)) -> Result<Run> {
        let first_op = self.shared.history.lock().len();
        let first_anomaly = self.shared.anomalies.lock().len();
        let stop = Arc::new(AtomicBool::new(false));
        let sampled = Arc::new(Mutex::new(Sampled::new()));
        self.unsupervised.lock().clear();
        self.shared.backlog.store(0, Ordering::SeqCst);
        self.shared.backlog_peak.store(0, Ordering::SeqCst);
        let sampler = self.spawn_sampler(stop.clone(), sampled.clone());
        let clients: Vec<_> = self
            .client_names
            .iter()
            .enumerate()
            .map(|(i, names)| {
                let (names, target, shared, stop) = (
                    names.clone(),
                    self.target.clone(),
                    self.shared.clone(),
                    stop.clone(),
                );
                let seed =
                    self.opts.seed ^ ((cycle as u64) << 32) ^ (i as u64) << 8 ^ schedule as u64;
                std::thread::spawn(move || workload::client(i, names, target, shared, stop, seed))
            })
            .collect();
        let probes = Arc::new(Mutex::new(Vec::new()));
        let prober = {
            let (target, stop, probes) = (self.target.clone(), stop.clone(), probes.clone());
            let node = self.node_ids.iter().min().cloned().unwrap_or_default();
            std::thread::spawn(move || workload::prober(target, node, stop, probes))
        };

        std::thread::sleep(Duration::from_secs(3));
        let mut notes = Vec::new();
        let mut anomalies = Vec::new();
        // When the fault is in place (the schedule moves it past a slow kill or cut).
        let mut fault = Instant::now();
        let result = self.inject(schedule, cycle, &mut fault, &mut notes, &mut anomalies);
        let healed = Instant::now();
        log(&format!(
            "  fault over after {}; checking",
            secs(healed - fault)
        ));
        // Whole again: one leader, every manager reachable, every node Ready.
        // What recovery waited on longest (what bounds it), and what was missing at the end.
        let mut waited_on: BTreeMap<String, Duration> = BTreeMap::new();
        let mut last_check = Instant::now();
        let mut last_why = String::new();
        let recovered = poll(Duration::from_secs(90), || {
            let health = self.lab.health();
            let now = Instant::now();
            if let Err(why) = &health {
                *waited_on.entry(why.clone()).or_default() += now - last_check;
                last_why = why.clone();
            }
            last_check = now;
            health.is_ok()
        });
        if recovered.is_none() {
            anomalies.push(format!(
                "the cluster was not whole again 90s after the fault healed: {last_why}"
            ));
        }
        if let Some((what, long)) = waited_on.iter().max_by_key(|(_, d)| **d) {
            notes.push(format!("recovery waited {} on: {what}", secs(*long)));
        }
        let recovered = recovered.unwrap_or(healed.elapsed());
        std::thread::sleep(Duration::from_secs(1));
        stop.store(true, Ordering::SeqCst);
        for c in clients {
            let _ = c.join();
        }
        let _ = prober.join();
        if let Err(e) = result {
            anomalies.push(format!("the fault schedule failed: {e:#}"));
        }

        // Convergence, in the store and the engine.
        let mut last = String::new();
        let converged = poll(self.opts.converge_within, || {
            let state = (|| -> Result<()> {
                let services = self.services()?;
                let tasks = self.tasks()?;
                let containers = check::engine_containers(&self.node_ids)?;
                check::converged(&services, &tasks, &containers)
            })();
            match state {
                Ok(()) => true,
                Err(e) => {
                    last = format!("{e:#}");
                    false
                }
            }
        });
        if converged.is_none() {
            anomalies.push(format!(
                "services did not converge within {}: {last}",
                secs(self.opts.converge_within)
            ));
        }
        let converged = converged.unwrap_or(self.opts.converge_within);

        self.resolve(&mut anomalies);
        self.digests_agree(&mut anomalies);
        stop.store(true, Ordering::SeqCst);
        let _ = sampler.join();
        // A killed agent cannot fence: once its node is marked Down, its containers run on
        // unsupervised while their replacements start, until the agent is back (swarm behaves
        // the same). Such overlaps are reported as notes, any other as anomalies.
        let unsupervised = self.unsupervised.lock().clone();
        for (message, nodes) in sampled.lock().iter() {
            if nodes.iter().any(|n| unsupervised.contains(n)) {
                notes.push(format!(
                    "expected while a dead agent's node was Down: {message}"
                ));
            } else {
                anomalies.push(message.clone());
            }
        }
        anomalies.extend(
            self.shared.anomalies.lock()[first_anomaly..]
                .iter()
                .cloned(),
        );

        let history = self.shared.history.lock();
        let ops = &history[first_op..];
        let count = |o: Outcome| ops.iter().filter(|op| op.outcome == o).count();
        // Write availability is the prober's (a write every 200 ms, none waiting on another);
        // the clients' first write after the fault is paced by the engine and kept as a note.
        let first_after = |acks: &mut dyn Iterator<Item = (Instant, Instant)>| {
            acks.filter(|(start, _)| *start >= fault)
                .map(|(_, end)| end - fault)
                .min()
        };
        let client_first = first_after(
            &mut ops
                .iter()
                .filter(|op| op.outcome == Outcome::Ok)
                .map(|op| (op.start, op.end)),
        );
        let probe_first = first_after(&mut probes.lock().iter().copied());
        let unavailable = schedule
            .costs_the_leader()
            .then(|| probe_first.unwrap_or(healed - fault));
        // Why operations went unanswered, most common first.
        let mut reasons: std::collections::BTreeMap<String, usize> = Default::default();
        for op in ops.iter().filter(|op| op.outcome != Outcome::Ok) {
            let reason: String = op
                .error
                .lines()
                .last()
                .unwrap_or("")
                .chars()
                .take(90)
                .collect();
            *reasons.entry(reason).or_default() += 1;
        }
        let mut reasons: Vec<(String, usize)> = reasons.into_iter().collect();
        reasons.sort_by_key(|r| std::cmp::Reverse(r.1));
        for (reason, n) in reasons.iter().take(4) {
            notes.push(format!("{n} × {reason}"));
        }
        notes.push(format!(
            "at most {} tasks were waiting to start at once",
            self.shared.backlog_peak.load(Ordering::SeqCst)
        ));
        if let Some(u) = unavailable {
            notes.push(format!(
                "first acknowledged write {} after the fault (a client's: {})",
                secs(u),
                client_first.map_or("none".to_string(), secs)
            ));
        }
        if count(Outcome::Ok) == 0 {
            anomalies.push("no operation was acknowledged during the run".into());
        }
        Ok(Run {
            schedule,
            cycle,
            acked: count(Outcome::Ok),
            refused: count(Outcome::Refused),
            unknown: count(Outcome::Unknown),
            unavailable,
            recovered,
            converged,
            notes,
            anomalies,
        })
    }

    /// Watches the engine and the store (every 0.5s) for a slot that runs two tasks of one
    /// spec at once, until `stop`; keeps the clients' gauge of tasks waiting to start.
    fn spawn_sampler(
        &self,
        stop: Arc<AtomicBool>,
        found: Arc<Mutex<Sampled>>,
    ) -> std::thread::JoinHandle<()> {
        let node_ids = self.node_ids.clone();
        let managers = self.target.managers.clone();
        let names = self.node_names();
        let shared = self.shared.clone();
        std::thread::spawn(move || {
            let Ok(probe) = Probe::new() else { return };
            let node_name = |id: &str| names.get(id).cloned().unwrap_or_else(|| id.to_string());
            let mut tick = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let (_, dir) = &managers[tick as usize % managers.len()];
                if let Ok(containers) = check::engine_containers(&node_ids) {
                    let dups = check::engine_duplicates(&containers, &node_name);
                    if !dups.is_empty() {
                        // What the store says about them, for the report.
                        let tasks = probe.tasks(dir).unwrap_or_default();
                        for dup in dups {
                            let mut found = found.lock();
                            if !found.keys().any(|f| f.starts_with(&dup.message)) {
                                let store =
                                    check::describe_tasks(&tasks, &dup.task_ids, &node_name);
                                found
                                    .insert(format!("{} [store: {store}]", dup.message), dup.nodes);
                            }
                        }
                    }
                }
                if let Ok(tasks) = probe.tasks(dir) {
                    let backlog = check::start_backlog(&tasks);
                    shared.backlog.store(backlog, Ordering::SeqCst);
                    shared.backlog_peak.fetch_max(backlog, Ordering::SeqCst);
                    found.lock().extend(
                        check::store_duplicates(&tasks)
                            .into_iter()
                            .map(|d| (d, Vec::new())),
                    );
                }
                tick += 1;
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    }

    /// Every name's actual state must be one the acknowledged operations allow; then the
    /// model takes it as known.
    fn resolve(&self, anomalies: &mut Vec<String>) {
        let services = match poll(Duration::from_secs(30), || self.services().is_ok()) {
            Some(_) => self.services().unwrap_or_default(),
            None => {
                anomalies.push("could not read the services to check them".into());
                return;
            }
        };
        let mut actual = std::collections::BTreeMap::new();
        for s in &services {
            let name = s.spec.as_ref().map_or("", |sp| sp.name.as_str());
            if !name.starts_with(PREFIX) {
                continue;
            }
            if actual
                .insert(name.to_string(), check::value_of(s))
                .is_some()
            {
                anomalies.push(format!("two services are named {name}"));
            }
        }
        let mut model = self.shared.names.lock();
        for (name, value) in &actual {
            if !model.contains_key(name) {
                anomalies.push(format!(
                    "service {name} ({value}) exists, but no client ever created it"
                ));
            }
        }
        for (name, state) in model.iter_mut() {
            let now = actual.get(name).cloned().unwrap_or(Value::Absent);
            if !state.possible.iter().any(|p| p.admits(&now)) {
                let allowed: Vec<String> = state.possible.iter().map(|p| p.to_string()).collect();
                anomalies.push(format!(
                    "{name} is {now}, but the acknowledged operations allow only {}",
                    allowed.join(" or ")
                ));
            }
            if let Value::Present(s) = &now {
                state.gen = state.gen.max(s.gen);
            }
            state.possible = vec![now];
        }
    }

    /// All managers reach the same applied index and hold the same store there.
    fn digests_agree(&self, anomalies: &mut Vec<String>) {
        let mut last = String::new();
        let agreed = poll(Duration::from_secs(30), || {
            let digests: Vec<_> = self
                .target
                .managers
                .iter()
                .map(|(n, d)| (n, self.probe.digest(d)))
                .collect();
            let mut seen: Vec<(u64, String, &String)> = Vec::new();
            for (n, d) in &digests {
                match d {
                    Ok(d) => seen.push((d.index, d.digest.clone(), n)),
                    Err(e) => {
                        last = format!("{n}: {e:#}");
                        return false;
                    }
                }
            }
            last = seen
                .iter()
                .map(|(i, d, n)| format!("{n} at {i}: {}", &d[..d.len().min(12)]))
                .collect::<Vec<_>>()
                .join(", ");
            if seen.iter().any(|s| s.0 != seen[0].0) {
                return false;
            }
            if seen.iter().any(|s| s.1 != seen[0].1) {
                anomalies.push(format!("managers hold different stores: {last}"));
            }
            true
        });
        if agreed.is_none() {
            anomalies.push(format!(
                "managers did not reach one index within 30s: {last}"
            ));
        }
    }

    /// Records an acknowledged change of a name the schedule itself manages.
    fn set_known(&self, name: &str, value: Value) {
        let mut model = self.shared.names.lock();
        let state = model.entry(name.to_string()).or_insert(NameState {
            possible: vec![Value::Absent],
            gen: 0,
        });
        if let Value::Present(s) = &value {
            state.gen = state.gen.max(s.gen);
        }
        state.possible = vec![value];
    }

    fn acked_since(&self, since: Instant) -> usize {
        self.shared
            .history
            .lock()
            .iter()
            .filter(|op| op.outcome == Outcome::Ok && op.start >= since)
            .count()
    }

    /// Injects the fault, holds it, heals it.
    fn inject(
        &self,
        schedule: Schedule,
        cycle: usize,
        placed: &mut Instant,
        notes: &mut Vec<String>,
        anomalies: &mut Vec<String>,
    ) -> Result<()> {
        let lab = self.lab;
        let hold = self.opts.hold;
        match schedule {
            Schedule::LeaderKill => {
                let l = self.leader()?;
                lab.kill(&l);
                *placed = Instant::now();
                notes.push(format!("SIGKILLed leader {l}"));
                match self.new_leader(&l, Duration::from_secs(20)) {
                    Some((n, t)) => notes.push(format!("{n} leads after {}", secs(t))),
                    None => anomalies.push("no new leader within 20s of killing the leader".into()),
                }
                std::thread::sleep(hold);
                lab.restart(&l)?;
            }
            Schedule::LeaderPause => {
                let l = self.leader()?;
                lab.pause(&l);
                *placed = Instant::now();
                notes.push(format!("SIGSTOPped leader {l}"));
                let elected = self.new_leader(&l, Duration::from_secs(20));
                match &elected {
                    Some((n, t)) => notes.push(format!("{n} leads after {}", secs(*t))),
                    None => anomalies.push("no new leader within 20s of pausing the leader".into()),
                }
                std::thread::sleep(hold);
                lab.resume(&l);
                let resumed = Instant::now();
                // Awake, it must learn it was deposed and follow the new leader.
                let follows = poll(Duration::from_secs(15), || {
                    lab.leader(&l).is_some_and(|leader| leader != l)
                });
                match follows {
                    Some(_) => notes.push(format!(
                        "{l}, resumed, follows {} after {}",
                        lab.leader(&l).unwrap_or_default(),
                        secs(resumed.elapsed())
                    )),
                    None => anomalies.push(format!(
                        "{l} did not follow a new leader within 15s of resuming (it says {:?})",
                        lab.leader(&l)
                    )),
                }
            }
            Schedule::FollowerKill => {
                let l = self.leader()?;
                let f = self
                    .managers()
                    .into_iter()
                    .find(|m| *m != l)
                    .ok_or_else(|| anyhow!("no follower"))?;
                lab.kill(&f);
                notes.push(format!("SIGKILLed follower {f}"));
                std::thread::sleep(hold);
                lab.restart(&f)?;
            }
            Schedule::LeaderPartition => {
                let l = self.leader()?;
                lab.cut(&l, &[], Direction::Both)?;
                let cut_at = Instant::now();
                *placed = cut_at;
                notes.push(format!("cut leader {l} off from every node"));
                // The old leader steps down (watched from the cut, beside the election, by
                // its own raft status: asking it for the node list would wait for a leader).
                let (elected, stepped_down) = std::thread::scope(|scope| {
                    let stepped = scope.spawn(|| {
                        poll(Duration::from_secs(10), || {
                            lab.claims_leadership(&l) == Some(false)
                        })
                    });
                    let elected = self.new_leader(&l, Duration::from_secs(20));
                    (elected, stepped.join().ok().flatten())
                });
                match elected {
                    Some((n, t)) => notes.push(format!("majority elected {n} after {}", secs(t))),
                    None => anomalies.push("the majority elected no leader within 20s".into()),
                }
                match stepped_down {
                    Some(t) if t <= Duration::from_secs(5) => notes.push(format!(
                        "{l} stopped claiming leadership {} after the cut",
                        secs(t)
                    )),
                    Some(t) => anomalies.push(format!(
                        "{l}, cut off, claimed leadership for {} (more than 5s)",
                        secs(t)
                    )),
                    None => anomalies.push(format!("{l} still claims leadership, cut off")),
                }
                // ...and refuses writes: a create through it is not acknowledged, and never
                // appears (the checker holds the name to "absent").
                let fence = format!("{PREFIX}fence-{cycle}");
                self.set_known(&fence, Value::Absent);
                let spec = Spec {
                    image: self.opts.images[0].clone(),
                    gen: 1,
                    replicas: 1,
                };
                let answer = orch_with_timeout(
                    &lab.state.orch,
                    &self.dir(&l)?,
                    &create_args(&fence, &spec),
                    Duration::from_secs(8),
                );
                match answer {
                    Some((true, _)) => anomalies.push(format!(
                        "{l}, cut off from the majority, acknowledged a write"
                    )),
                    Some((false, err)) => notes.push(format!(
                        "{l} refused a write: {}",
                        err.lines().last().unwrap_or("").trim()
                    )),
                    None => notes.push(format!("a write through {l} timed out")),
                }
                std::thread::sleep(hold.saturating_sub(cut_at.elapsed()));
                lab.heal()?;
            }
            Schedule::OneWayPartition => {
                let l = self.leader()?;
                lab.cut(&l, &[], Direction::Outgoing)?;
                *placed = Instant::now();
                notes.push(format!("dropped leader {l}'s outgoing packets"));
                match self.new_leader(&l, Duration::from_secs(20)) {
                    Some((n, t)) => notes.push(format!("{n} leads after {}", secs(t))),
                    None => anomalies.push("no new leader within 20s of the one-way cut".into()),
                }
                std::thread::sleep(hold);
                lab.heal()?;
            }
            Schedule::AllManagersRestart => {
                let managers = self.managers();
                for m in &managers {
                    lab.kill(m);
                }
                *placed = Instant::now();
                notes.push(format!("SIGKILLed {}", managers.join(", ")));
                std::thread::sleep(Duration::from_secs(1));
                for m in &managers {
                    lab.restart(m)?;
                }
            }
            Schedule::WorkerPartition => {
                let w = self.worker(0)?;
                lab.cut(&w, &[], Direction::Both)?;
                let managers = self.managers();
                let down = poll(Duration::from_secs(60), || {
                    managers.iter().any(|m| {
                        lab.node_rows(m).is_some_and(|rows| {
                            rows.iter()
                                .any(|r| r["Hostname"] == w.as_str() && r["Status"] == "Down")
                        })
                    })
                });
                match down {
                    Some(t) => notes.push(format!("cut {w} off; marked Down after {}", secs(t))),
                    None => anomalies.push(format!("{w} was not marked Down within 60s")),
                }
                std::thread::sleep(Duration::from_secs(3));
                lab.heal()?;
            }
            Schedule::AgentRestartDuringUpdate => {
                self.agent_restart_during_update(cycle, notes, anomalies)?
            }
            Schedule::DiskFull => {
                let m = lab
                    .state
                    .nodes
                    .iter()
                    .find(|n| n.tmpfs)
                    .map(|n| n.name.clone())
                    .ok_or_else(|| anyhow!("disk-full needs a lab made with a tmpfs manager"))?;
                lab.fill_disk(&m)?;
                notes.push(format!("filled {m}'s raft disk"));
                match poll(Duration::from_secs(60), || !lab.alive(&m)) {
                    Some(t) => {
                        let log = std::fs::read_to_string(self.dir(&m)?.join("orch.log"))
                            .unwrap_or_default();
                        let said = log
                            .lines()
                            .rev()
                            .find(|l| l.contains("manager failed"))
                            .map(str::to_string);
                        match said {
                            Some(line) => {
                                notes.push(format!("{m} exited {} later: {}", secs(t), line.trim()))
                            }
                            None => anomalies.push(format!("{m} exited without saying why")),
                        }
                    }
                    None => anomalies.push(format!("{m} kept running on a full disk for 60s")),
                }
                let after = Instant::now();
                std::thread::sleep(hold);
                let acked = self.acked_since(after);
                if acked == 0 {
                    anomalies.push(format!("no write was acknowledged while {m} was out"));
                } else {
                    notes.push(format!("{acked} writes acknowledged while {m} was out"));
                }
                lab.free_disk(&m)?;
                lab.restart(&m)?;
            }
            Schedule::FlappingLinks => {
                use rand::prelude::*;
                let names: Vec<String> = lab.state.nodes.iter().map(|n| n.name.clone()).collect();
                let mut rng = StdRng::seed_from_u64(
                    self.opts.seed ^ (cycle as u64) << 16 ^ Schedule::FlappingLinks as u64,
                );
                let since = Instant::now();
                let mut flaps = Vec::new();
                while since.elapsed() < hold {
                    let Some(n) = names.choose(&mut rng) else {
                        break;
                    };
                    lab.cut(n, &[], Direction::Both)?;
                    std::thread::sleep(Duration::from_millis(rng.random_range(300..1500)));
                    lab.heal()?;
                    flaps.push(n.clone());
                    std::thread::sleep(Duration::from_millis(rng.random_range(200..800)));
                }
                let acked = self.acked_since(since);
                notes.push(format!(
                    "{} flaps ({}); {acked} writes acknowledged meanwhile",
                    flaps.len(),
                    flaps.join(" ")
                ));
                if acked == 0 {
                    anomalies.push("no write was acknowledged while links flapped".into());
                }
            }
            Schedule::SlowLeader => {
                let l = self.leader()?;
                let since = Instant::now();
                let delay = lab.delay(&l, Duration::from_millis(100))?;
                std::thread::sleep(hold);
                drop(delay);
                let acked = self.acked_since(since);
                notes.push(format!(
                    "leader {l} 100ms away from every node: {acked} writes acknowledged"
                ));
                if acked == 0 {
                    anomalies.push("no write was acknowledged with a slow leader".into());
                }
            }
        }
        Ok(())
    }

    /// Node ID -> lab node name.
    fn node_names(&self) -> std::collections::HashMap<String, String> {
        self.lab
            .state
            .nodes
            .iter()
            .filter_map(|n| {
                let text = std::fs::read_to_string(n.dir.join("node.json")).ok()?;
                let v: serde_json::Value = serde_json::from_str(&text).ok()?;
                Some((v["node_id"].as_str()?.to_string(), n.name.clone()))
            })
            .collect()
    }

    fn worker(&self, k: usize) -> Result<String> {
        self.lab
            .state
            .nodes
            .iter()
            .filter(|n| !n.manager)
            .nth(k)
            .map(|n| n.name.clone())
            .ok_or_else(|| anyhow!("no worker {k}"))
    }

    /// A service of its own is rolled out one task at a time; a worker's node process is
    /// SIGKILLed once the update is under way and restarted 2s later. The update must
    /// complete, with one task per slot.
    fn agent_restart_during_update(
        &self,
        cycle: usize,
        notes: &mut Vec<String>,
        anomalies: &mut Vec<String>,
    ) -> Result<()> {
        let lab = self.lab;
        let name = format!("{PREFIX}roll-{cycle}");
        let m = self.leader()?;
        let dir = self.dir(&m)?;
        let v1 = Spec {
            image: self.opts.images[0].clone(),
            gen: 1,
            replicas: 4,
        };
        let mut args = create_args(&name, &v1);
        // One at a time, 1s apart, so the kill lands mid-update.
        if let Some(p) = args.iter().position(|a| a == "--update-parallelism") {
            args[p + 1] = "1".into();
        }
        args.splice(2..2, ["--update-delay".to_string(), "1s".to_string()]);
        if !matches!(
            orch_with_timeout(&lab.state.orch, &dir, &args, Duration::from_secs(20)),
            Some((true, _))
        ) {
            bail!("could not create {name}");
        }
        self.set_known(&name, Value::Present(v1.clone()));
        let running = |spec: &Spec| {
            self.tasks().map_or(0, |tasks| {
                tasks
                    .iter()
                    .filter(|t| {
                        t.service_name == name
                            && t.desired_state() == orch_api::pb::TaskState::Running
                            && t.observed_state() == orch_api::pb::TaskState::Running
                            && t.spec
                                .as_ref()
                                .and_then(|s| s.container.as_ref())
                                .is_some_and(|c| {
                                    c.image == spec.image
                                        && c.labels.get("chaos.gen") == Some(&spec.gen.to_string())
                                })
                    })
                    .count()
            })
        };
        if poll(Duration::from_secs(30), || running(&v1) == 4).is_none() {
            bail!("{name} did not start");
        }
        let v2 = Spec {
            image: self.opts.images[1].clone(),
            gen: 2,
            replicas: 4,
        };
        if !matches!(
            orch_with_timeout(
                &lab.state.orch,
                &dir,
                &update_args(&name, &v2),
                Duration::from_secs(20)
            ),
            Some((true, _))
        ) {
            bail!("could not update {name}");
        }
        self.set_known(&name, Value::Present(v2.clone()));
        if poll(Duration::from_secs(30), || running(&v2) >= 1).is_none() {
            bail!("the update of {name} did not start");
        }
        let w = self.worker(0)?;
        lab.kill(&w);
        let killed = Instant::now();
        notes.push(format!("SIGKILLed {w} with the update of {name} under way"));
        // Whether the managers mark the node Down while its agent is away (they should not:
        // the restart is shorter than the heartbeat grace, unless the machine is slow).
        let done = AtomicBool::new(false);
        let watch = std::thread::scope(|scope| -> Result<_> {
            let watcher = scope.spawn(|| {
                let mut down: Option<Duration> = None;
                while !done.load(Ordering::SeqCst) {
                    let rows = lab.node_rows(&m).unwrap_or_default();
                    if down.is_none()
                        && rows
                            .iter()
                            .any(|r| r["Hostname"] == w.as_str() && r["Status"] == "Down")
                    {
                        down = Some(killed.elapsed());
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                down
            });
            std::thread::sleep(Duration::from_secs(2));
            let restarted = lab.restart(&w).map(|()| killed.elapsed());
            // Back in session: Ready again.
            let back = poll(Duration::from_secs(30), || {
                lab.node_rows(&m).is_some_and(|rows| {
                    rows.iter()
                        .any(|r| r["Hostname"] == w.as_str() && r["Status"] == "Ready")
                })
            })
            .map(|_| killed.elapsed());
            done.store(true, Ordering::SeqCst);
            let down = watcher.join().unwrap_or(None);
            Ok((restarted?, back, down))
        })?;
        let (restarted, back, down) = watch;
        notes.push(format!(
            "{w}'s daemon answered {} after the kill; Ready again after {}",
            secs(restarted),
            back.map_or("more than 30s".into(), secs)
        ));
        if let Some(t) = down {
            notes.push(format!(
                "{w} was marked Down {} after the kill, its agent still away",
                secs(t)
            ));
            self.unsupervised.lock().insert(w.clone());
        }
        // A liveness bound, not a speed claim: under the workload's churn each new task
        // queues behind other services' starts on its node (the engine starts two at a time),
        // and the four slots go one by one; 36–53 s after the restart is usual.
        let completed = poll(UPDATE_WITHIN, || {
            self.services().is_ok_and(|services| {
                services.iter().any(|s| {
                    s.spec.as_ref().is_some_and(|sp| sp.name == name)
                        && s.update_status
                            .as_ref()
                            .is_some_and(|u| u.state() == UpdateState::Completed)
                })
            })
        });
        match completed {
            Some(t) => notes.push(format!(
                "the update completed {} after the restart",
                secs(t)
            )),
            None => {
                let status = self.services().ok().and_then(|services| {
                    services
                        .into_iter()
                        .find(|s| s.spec.as_ref().is_some_and(|sp| sp.name == name))
                        .and_then(|s| s.update_status)
                });
                let states: Vec<String> = self
                    .tasks()
                    .unwrap_or_default()
                    .iter()
                    .filter(|t| t.service_name == name)
                    .map(|t| {
                        format!(
                            "slot {} gen {} desired {} state {}",
                            t.slot,
                            t.spec
                                .as_ref()
                                .and_then(|s| s.container.as_ref())
                                .and_then(|c| c.labels.get("chaos.gen").cloned())
                                .unwrap_or_default(),
                            t.desired_state().display(),
                            t.observed_state().display()
                        )
                    })
                    .collect();
                anomalies.push(format!(
                    "the update of {name} did not complete within {} (update status {:?}; tasks: {})",
                    secs(UPDATE_WITHIN),
                    status.map(|u| (u.state, u.message)),
                    states.join(", ")
                ))
            }
        }
        // Out of the way for the next cycles.
        let rm = ["service".to_string(), "rm".into(), name.clone()];
        match orch_with_timeout(&lab.state.orch, &dir, &rm, Duration::from_secs(20)) {
            Some((true, _)) => self.set_known(&name, Value::Absent),
            _ => {
                let mut model = self.shared.names.lock();
                if let Some(state) = model.get_mut(&name) {
                    state.possible = vec![Value::Present(v2), Value::Absent];
                }
            }
        }
        Ok(())
    }
}
