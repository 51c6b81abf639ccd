//! `orch lab up|down|status`: a multi-node cluster on this machine.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};

use orch_lab::chaos::{self, Schedule};
use orch_lab::{Lab, LabConfig};

#[derive(Subcommand, Debug)]
pub enum LabCmd {
    /// Start a local multi-node cluster on this machine
    Up(UpArgs),
    /// Remove a lab: its processes, containers, namespaces and files
    Down {
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Show a lab's nodes
    Status {
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Run the fault-injection suite against a fresh lab (network namespaces; root)
    Chaos(ChaosArgs),
}

#[derive(Args, Debug)]
pub struct ChaosArgs {
    /// How many times to run every schedule
    #[arg(long, default_value_t = 1)]
    cycles: usize,
    /// Schedules to run (repeatable; all when omitted)
    #[arg(long = "schedule", value_enum)]
    schedules: Vec<Schedule>,
    /// How long each fault is held
    #[arg(long, default_value = "6s")]
    hold: String,
    /// Concurrent workload clients
    #[arg(long, default_value_t = 2)]
    clients: usize,
    /// Seed of the workload's choices
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The two images services alternate between (each needs a `sleep` command)
    #[arg(long = "image", num_args = 1)]
    images: Vec<String>,
    /// Append the report (markdown) to this file
    #[arg(long)]
    report: Option<PathBuf>,
    /// Where the lab's data dirs go (a fresh temporary dir when omitted)
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Leave the lab up afterwards (to look at its logs); remove it with `orch lab down --dir`
    #[arg(long)]
    keep: bool,
}

#[derive(Args, Debug)]
pub struct UpArgs {
    #[arg(long, default_value_t = 3)]
    managers: usize,
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Put every node in its own network namespace on a bridge (root; lets `cut` links)
    #[arg(long)]
    netns: bool,
    /// Dispatcher heartbeat period of the lab cluster
    #[arg(long, default_value = "1s")]
    heartbeat: String,
    /// Where the lab's data dirs go
    #[arg(long)]
    dir: Option<PathBuf>,
}

pub fn default_dir() -> PathBuf {
    let base = crate::datadir::default_data_dir();
    base.with_file_name(format!(
        "{}-lab",
        base.file_name().and_then(|n| n.to_str()).unwrap_or("orch")
    ))
}

pub async fn run(cmd: LabCmd) -> Result<()> {
    match cmd {
        LabCmd::Up(args) => {
            let root = args.dir.unwrap_or_else(default_dir);
            let orch = std::env::current_exe()?;
            let config = LabConfig {
                root: root.clone(),
                managers: args.managers,
                workers: args.workers,
                netns: args.netns,
                heartbeat: args.heartbeat,
                orch,
                id: 0,
                tmpfs_mib: None,
            };
            let lab = tokio::task::spawn_blocking(move || Lab::up(config)).await??;
            print_status(&lab);
            outln!(
                "\nUse it:\n  export ORCH_DATA_DIR={}\n  orch node ls\n",
                lab.state.nodes[0].dir.display()
            );
            outln!(
                "Remove it:\n  orch lab down{}",
                if root == default_dir() {
                    String::new()
                } else {
                    format!(" --dir {}", root.display())
                }
            );
            Ok(())
        }
        LabCmd::Down { dir } => {
            let root = dir.unwrap_or_else(default_dir);
            let lab = Lab::load(&root)?;
            tokio::task::spawn_blocking(move || lab.down()).await??;
            outln!("Lab in {} removed.", root.display());
            Ok(())
        }
        LabCmd::Status { dir } => {
            let lab = Lab::load(&dir.unwrap_or_else(default_dir))?;
            print_status(&lab);
            Ok(())
        }
        LabCmd::Chaos(args) => tokio::task::spawn_blocking(move || run_chaos(args)).await?,
    }
}

fn run_chaos(args: ChaosArgs) -> Result<()> {
    let mut opts = chaos::Options {
        cycles: args.cycles,
        clients: args.clients.max(1),
        seed: args.seed,
        hold: humantime::parse_duration(&args.hold)
            .map_err(|e| anyhow::anyhow!("invalid --hold {:?}: {e}", args.hold))?,
        ..Default::default()
    };
    if !args.schedules.is_empty() {
        opts.schedules = args.schedules;
    }
    match args.images.as_slice() {
        [] => {}
        [a, b] => opts.images = [a.clone(), b.clone()],
        _ => anyhow::bail!("give --image twice (two images to alternate between), or not at all"),
    }
    for image in &opts.images {
        let found = std::process::Command::new("docker")
            .args(["image", "inspect", image])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            anyhow::bail!(
                "image {image} is not in the local engine: build the test images with scripts/build-test-images.sh, or name two images with --image"
            );
        }
    }
    let root = args
        .dir
        .unwrap_or_else(|| std::env::temp_dir().join(format!("orch-chaos-{}", std::process::id())));
    let mut lab = Lab::up(LabConfig {
        root: root.clone(),
        managers: 3,
        workers: 2,
        netns: true,
        heartbeat: "2s".into(),
        orch: std::env::current_exe()?,
        id: 0,
        tmpfs_mib: Some(64),
    })?;
    lab.down_on_drop = !args.keep;
    outln!(
        "Lab up in {}; running {} schedule(s) × {} cycle(s).",
        root.display(),
        opts.schedules.len(),
        opts.cycles
    );
    let report = chaos::run(&lab, &opts, &mut |line| outln!("{line}"))?;
    drop(lab);
    if args.keep {
        outln!("The lab stays up: orch lab down --dir {}", root.display());
    } else {
        let _ = std::fs::remove_dir_all(&root);
    }
    let table = report.table();
    outln!("\n{table}");
    if let Some(path) = args.report {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        writeln!(f, "{table}")?;
    }
    let anomalies = report.anomalies();
    if anomalies.is_empty() {
        outln!("No anomalies ({} operations acknowledged).", report.acked());
        Ok(())
    } else {
        for a in &anomalies {
            outln!("ANOMALY {a}");
        }
        anyhow::bail!("{} anomalies found", anomalies.len())
    }
}

fn print_status(lab: &Lab) {
    let managers = lab.state.nodes.iter().filter(|n| n.manager).count();
    let how = if lab.state.bridge.is_some() {
        "network namespaces on bridge"
    } else {
        "loopback addresses"
    };
    outln!(
        "Lab: {managers} managers, {} workers ({how})",
        lab.state.nodes.len() - managers
    );
    for n in &lab.state.nodes {
        let role = if n.manager { "manager" } else { "worker" };
        let state = if lab.alive(&n.name) {
            "running"
        } else {
            "stopped"
        };
        outln!(
            "  {:<4} {:<18} {:<8} {:<8} --data-dir {}",
            n.name,
            n.addr(),
            role,
            state,
            n.dir.display()
        );
    }
}
