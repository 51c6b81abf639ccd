//! The workload and its model. Clients create, update, scale and remove services through the
//! `orch` command on a random live manager, each on names only it uses, and record every
//! outcome. The model keeps, per name, the set of states the cluster may be in:
//!
//! - an acknowledged operation (exit 0) fixes the state;
//! - a definite refusal ("already exists", "not found") says what the leader's linearizable
//!   view held, and is checked against the model on the spot; a version conflict changes nothing;
//! - anything else (timeout, no leader, connection lost) is indeterminate: the operation may
//!   take effect now or later. The name then holds both states and is left alone until the
//!   cycle ends, when the cluster is whole again and its actual state must be one of them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::prelude::*;

/// The spec fields the workload changes: what a service should be running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub image: String,
    /// The `chaos.gen` container label: a new value for every update, so every acknowledged
    /// update is told apart from every other.
    pub gen: u64,
    pub replicas: u64,
}

impl std::fmt::Display for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} gen {} ×{}", self.image, self.gen, self.replicas)
    }
}

/// A state a name can be in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Absent,
    Present(Spec),
    /// Some spec (after the cluster contradicted the model, which is reported).
    AnyPresent,
}

impl Value {
    pub fn admits(&self, actual: &Value) -> bool {
        match (self, actual) {
            (Value::AnyPresent, Value::Present(_)) => true,
            (a, b) => a == b,
        }
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Absent => f.write_str("absent"),
            Value::Present(s) => write!(f, "{s}"),
            Value::AnyPresent => f.write_str("present"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct NameState {
    /// States the cluster may hold for the name (one when known).
    pub possible: Vec<Value>,
    /// The last generation used for the name.
    pub gen: u64,
}

impl NameState {
    fn known(&self) -> Option<&Value> {
        match self.possible.as_slice() {
            [one] => Some(one),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Exit 0: the cluster acknowledged it.
    Ok,
    /// The cluster refused it, and said so: it had no effect.
    Refused,
    /// Nobody can say whether it took effect.
    Unknown,
}

/// One operation as a client saw it.
#[derive(Debug, Clone)]
pub struct Op {
    pub client: usize,
    pub name: String,
    pub what: String,
    pub manager: String,
    pub start: Instant,
    pub end: Instant,
    pub outcome: Outcome,
    /// What the command said when it failed.
    pub error: String,
}

/// What every client shares: the model, the history, anomalies found on the spot.
#[derive(Default)]
pub struct Shared {
    pub names: Mutex<BTreeMap<String, NameState>>,
    pub history: Mutex<Vec<Op>>,
    pub anomalies: Mutex<Vec<String>>,
    /// Tasks wanted running that are not running yet, as last sampled.
    pub backlog: AtomicUsize,
    /// The most `backlog` was during the current run.
    pub backlog_peak: AtomicUsize,
}

/// Clients hold off while more tasks than this wait to start...
const MAX_BACKLOG: usize = 6;
/// ...but for no longer than this: writes must keep flowing through every fault.
const MAX_HOLD_OFF: Duration = Duration::from_secs(3);

/// How clients reach the cluster.
#[derive(Clone)]
pub struct Target {
    pub orch: PathBuf,
    /// (name, data dir) of each manager.
    pub managers: Vec<(String, PathBuf)>,
    pub images: [String; 2],
    pub timeout: Duration,
}

impl Target {
    fn live_managers(&self) -> Vec<&(String, PathBuf)> {
        self.managers
            .iter()
            .filter(|(_, dir)| {
                std::fs::read_to_string(dir.join("orch.pid"))
                    .ok()
                    .and_then(|p| p.trim().parse::<i32>().ok())
                    .is_some_and(|pid| {
                        crate::process::proc_state(pid) == crate::process::ProcState::Live
                    })
            })
            .collect()
    }
}

/// Runs `orch --data-dir DIR ARGS` with a deadline; None when it had to be killed.
pub fn orch_with_timeout(
    orch: &PathBuf,
    dir: &PathBuf,
    args: &[String],
    timeout: Duration,
) -> Option<(bool, String)> {
    let mut child = Command::new(orch)
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let mut stderr = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
                }
                return Some((status.success(), stderr));
            }
            Ok(None) if start.elapsed() < timeout => {
                std::thread::sleep(Duration::from_millis(20));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// The arguments of a create of `name` with `spec`.
pub fn create_args(name: &str, spec: &Spec) -> Vec<String> {
    [
        "service",
        "create",
        "-d",
        "--name",
        name,
        "--replicas",
        &spec.replicas.to_string(),
        "--constraint",
        "node.role==worker",
        "--stop-grace-period",
        "1s",
        "--update-parallelism",
        "2",
        "--update-monitor",
        "1s",
        "--container-label",
        &format!("chaos.gen={}", spec.gen),
        &spec.image,
        "sleep",
        "1000000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The arguments of an update of `name` to `spec`'s image and generation.
pub fn update_args(name: &str, spec: &Spec) -> Vec<String> {
    [
        "service",
        "update",
        "-d",
        "--image",
        &spec.image,
        "--container-label-add",
        &format!("chaos.gen={}", spec.gen),
        name,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The request never reached a manager that could apply it: the node process was gone, the
/// connection to the leader was refused before anything was sent, or a manager found before
/// proposing that it was not (or knew no) leader.
fn never_sent(err: &str) -> bool {
    err.contains("Connection refused")
        || err.contains("the orch node process is not running")
        || err.contains(orch_api::MANAGER_NOT_READY)
        || err.contains("this manager is not the leader")
        || err.contains("The swarm does not have a leader")
}

fn classify(result: Option<(bool, String)>) -> (Outcome, String) {
    match result {
        Some((true, _)) => (Outcome::Ok, String::new()),
        Some((false, err)) => {
            let refused = [
                "already exists",
                "not found",
                "No such service",
                "No such object",
            ]
            .iter()
            .any(|m| err.contains(m))
                || err.contains("out of sequence")
                || never_sent(&err);
            let outcome = if refused {
                Outcome::Refused
            } else {
                Outcome::Unknown
            };
            (outcome, err.trim().to_string())
        }
        None => (Outcome::Unknown, "timed out".into()),
    }
}

/// How often the write prober sends a write.
pub const PROBE_EVERY: Duration = Duration::from_millis(200);
/// How long one probe write may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Probe writes in flight at most (a paused or cut-off manager holds its calls).
const PROBE_IN_FLIGHT: usize = 12;

/// Measures write availability apart from the clients: every `PROBE_EVERY`, a small write (a
/// label on `node`) to a random live manager, each in its own thread, so a call held by a
/// paused or cut-off manager hides nobody else's answer. The clients cannot measure this: they
/// are paced by the engine (they hold off while containers queue to start), wait out their
/// own calls one at a time, and so report when *they* next got a write through, not when the
/// cluster could first take one. Records (start, end) of every acknowledged probe.
pub fn prober(
    target: Target,
    node: String,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(Instant, Instant)>>>,
) {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut n = 0u64;
    let mut rng = StdRng::seed_from_u64(0x9e0b);
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(PROBE_EVERY);
        if in_flight.load(Ordering::SeqCst) >= PROBE_IN_FLIGHT {
            continue;
        }
        let live = target.live_managers();
        let Some((_, dir)) = live.choose(&mut rng).map(|m| (*m).clone()) else {
            continue;
        };
        n += 1;
        let args: Vec<String> = [
            "node",
            "update",
            "--label-add",
            &format!("chaos.probe={n}"),
            &node,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (orch, acked, in_flight) = (target.orch.clone(), acked.clone(), in_flight.clone());
        in_flight.fetch_add(1, Ordering::SeqCst);
        std::thread::spawn(move || {
            let start = Instant::now();
            if let Some((true, _)) = orch_with_timeout(&orch, &dir, &args, PROBE_TIMEOUT) {
                acked.lock().push((start, Instant::now()));
            }
            in_flight.fetch_sub(1, Ordering::SeqCst);
        });
    }
    // Let the calls in flight finish (each is bounded by its timeout).
    let waited = Instant::now();
    while in_flight.load(Ordering::SeqCst) > 0 && waited.elapsed() < PROBE_TIMEOUT * 2 {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One client: operations on its names until `stop`.
pub fn client(
    id: usize,
    names: Vec<String>,
    target: Target,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    seed: u64,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(rng.random_range(50..250)));
        // A closed loop: each write makes containers start and stop, and all the lab's nodes
        // share one engine. Writing faster than the engine starts containers only grows a
        // queue (every new task waits behind it), which tests the engine's throughput, not
        // orch; so clients wait while the queue is long.
        let held = Instant::now();
        while shared.backlog.load(Ordering::SeqCst) > MAX_BACKLOG
            && held.elapsed() < MAX_HOLD_OFF
            && !stop.load(Ordering::SeqCst)
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        // A name whose state is known (names in doubt wait for the cycle's end).
        let known: Vec<(String, Value, u64)> = {
            let model = shared.names.lock();
            names
                .iter()
                .filter_map(|n| {
                    let s = model.get(n)?;
                    s.known().map(|v| (n.clone(), v.clone(), s.gen))
                })
                .collect()
        };
        let Some((name, before, gen)) = known.choose(&mut rng).cloned() else {
            continue;
        };
        let live = target.live_managers();
        let Some((manager, dir)) = live.choose(&mut rng).map(|m| (*m).clone()) else {
            continue;
        };
        let image = target.images[rng.random_range(0..2)].clone();
        let (what, args, after) = match &before {
            Value::Absent => {
                let spec = Spec {
                    image,
                    gen: gen + 1,
                    replicas: rng.random_range(1..=3),
                };
                ("create", create_args(&name, &spec), Value::Present(spec))
            }
            Value::Present(old) => match rng.random_range(0..10) {
                0..4 => {
                    let spec = Spec {
                        image,
                        gen: gen + 1,
                        replicas: old.replicas,
                    };
                    ("update", update_args(&name, &spec), Value::Present(spec))
                }
                4..7 => {
                    let replicas = rng.random_range(0..=3);
                    let spec = Spec {
                        replicas,
                        ..old.clone()
                    };
                    let args = ["service", "update", "-d", "--replicas"]
                        .iter()
                        .map(|s| s.to_string())
                        .chain([replicas.to_string(), name.clone()])
                        .collect();
                    ("scale", args, Value::Present(spec))
                }
                _ => (
                    "remove",
                    vec!["service".into(), "rm".into(), name.clone()],
                    Value::Absent,
                ),
            },
            Value::AnyPresent => continue,
        };
        let start = Instant::now();
        let (outcome, err) = classify(orch_with_timeout(&target.orch, &dir, &args, target.timeout));
        let end = Instant::now();
        {
            let mut model = shared.names.lock();
            let state = model.entry(name.clone()).or_insert_with(|| NameState {
                possible: vec![Value::Absent],
                gen: 0,
            });
            if let Value::Present(s) = &after {
                state.gen = state.gen.max(s.gen);
            }
            match outcome {
                Outcome::Ok => state.possible = vec![after.clone()],
                Outcome::Unknown => state.possible = vec![before.clone(), after.clone()],
                Outcome::Refused if never_sent(&err) => {}
                Outcome::Refused => {
                    let exists = err.contains("already exists");
                    let missing = !exists && !err.contains("out of sequence");
                    let contradiction = match &before {
                        Value::Absent => exists,
                        _ => missing,
                    };
                    if contradiction {
                        shared.anomalies.lock().push(format!(
                            "{what} of {name} on {manager} was refused ({err}), but every \
                             acknowledged operation says it is {before}"
                        ));
                        state.possible = vec![Value::Absent, Value::AnyPresent];
                    }
                }
            }
        }
        shared.history.lock().push(Op {
            client: id,
            name,
            what: what.into(),
            manager,
            start,
            end,
            outcome,
            error: err,
        });
    }
}
