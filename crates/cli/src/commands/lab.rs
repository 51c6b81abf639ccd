//! `orch lab up|down|status`: a multi-node cluster on this machine.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};

use crate::lab::{Lab, LabConfig};

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
            println!(
                "\nUse it:\n  export ORCH_DATA_DIR={}\n  orch node ls\n",
                lab.state.nodes[0].dir.display()
            );
            println!(
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
            println!("Lab in {} removed.", root.display());
            Ok(())
        }
        LabCmd::Status { dir } => {
            let lab = Lab::load(&dir.unwrap_or_else(default_dir))?;
            print_status(&lab);
            Ok(())
        }
    }
}

fn print_status(lab: &Lab) {
    let managers = lab.state.nodes.iter().filter(|n| n.manager).count();
    let how = if lab.state.bridge.is_some() {
        "network namespaces on bridge"
    } else {
        "loopback addresses"
    };
    println!(
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
        println!(
            "  {:<4} {:<18} {:<8} {:<8} --data-dir {}",
            n.name,
            n.addr(),
            role,
            state,
            n.dir.display()
        );
    }
}
