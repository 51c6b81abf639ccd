//! `orch stack deploy|ls|services|ps|rm|config`: compose files as docker's `stack` reads them
//! (`crate::stack`), on the cluster's control API. A stack is its label
//! (`com.docker.stack.namespace`), as in docker.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use orch_api::pb::{
    DataKind, GetDataRequest, GetServiceRequest, ListServicesRequest, ListTasksRequest,
};

use crate::client::{rpc, Target};
use crate::commands::service::{self, PsArgs};
use crate::output::{self, Format};
use crate::stack::{compose, convert, deploy};

#[derive(Subcommand, Debug)]
pub enum StackCmd {
    /// Deploy a new stack or update an existing stack
    #[command(alias = "up")]
    Deploy(DeployArgs),
    /// List stacks
    #[command(alias = "list")]
    Ls {
        #[arg(long)]
        format: Option<String>,
    },
    /// List the services in the stack
    Services {
        #[arg(short, long)]
        quiet: bool,
        #[arg(long)]
        format: Option<String>,
        stack: String,
    },
    /// List the tasks in the stack
    Ps {
        #[command(flatten)]
        ps: PsArgs,
    },
    /// Remove one or more stacks
    #[command(aliases = ["remove", "down"])]
    Rm {
        #[arg(required = true)]
        stacks: Vec<String>,
    },
    /// Print the merged, interpolated compose file
    Config {
        #[command(flatten)]
        files: FileArgs,
    },
}

#[derive(Args, Debug)]
pub struct FileArgs {
    /// Path to a Compose file, or "-" to read from stdin
    #[arg(short = 'c', long = "compose-file", required = true)]
    pub compose_file: Vec<PathBuf>,
    /// Read variables from this file instead of the .env beside the first compose file
    #[arg(long)]
    pub env_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct DeployArgs {
    #[command(flatten)]
    pub files: FileArgs,
    /// Remove services, networks, secrets and configs the file no longer names
    #[arg(long)]
    pub prune: bool,
    /// Return once the changes are sent, without waiting for the services
    #[arg(short, long)]
    pub detach: bool,
    /// Suppress progress output
    #[arg(short, long)]
    pub quiet: bool,
    /// Give up waiting after this long (e.g. 5m)
    #[arg(long)]
    pub timeout: Option<String>,
    pub stack: String,
}

pub async fn run(target: &Target, cmd: StackCmd) -> Result<()> {
    match cmd {
        StackCmd::Deploy(args) => deploy_cmd(target, args).await,
        StackCmd::Ls { format } => ls(target, format.as_deref()).await,
        StackCmd::Services {
            quiet,
            format,
            stack,
        } => services(target, &stack, quiet, format).await,
        StackCmd::Ps { ps } => ps_cmd(target, ps).await,
        StackCmd::Rm { stacks } => rm(target, &stacks).await,
        StackCmd::Config { files } => {
            let loaded = load(&files)?;
            for w in &loaded.warnings {
                eprintln!("{w}");
            }
            out!("{}", compose::to_yaml(&loaded.compose));
            Ok(())
        }
    }
}

fn load(files: &FileArgs) -> Result<crate::stack::model::Loaded> {
    let first_dir = compose::base_dir(&files.compose_file)?;
    let env = compose::Env::from_process(files.env_file.as_deref(), &first_dir)?;
    Ok(compose::load(&files.compose_file, &env)?)
}

async fn deploy_cmd(target: &Target, args: DeployArgs) -> Result<()> {
    let loaded = load(&args.files)?;
    let timeout = match &args.timeout {
        Some(t) => Some(
            humantime::parse_duration(t)
                .map_err(|e| anyhow::anyhow!("invalid --timeout {t:?}: {e}"))?,
        ),
        None => None,
    };
    let mut control = target.control()?;
    deploy::deploy(
        &mut control,
        &args.stack,
        &loaded,
        &deploy::Options {
            prune: args.prune,
            detach: args.detach,
            quiet: args.quiet,
            timeout,
        },
    )
    .await
}

async fn ls(target: &Target, format: Option<&str>) -> Result<()> {
    let format = Format::parse(format)?;
    let list = target
        .control()?
        .list_services(ListServicesRequest {})
        .await
        .map_err(rpc)?
        .into_inner();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for s in &list.services {
        if let Some(stack) = s
            .spec
            .as_ref()
            .and_then(|sp| sp.labels.get(convert::NAMESPACE))
        {
            *counts.entry(stack.clone()).or_default() += 1;
        }
    }
    let rows: Vec<serde_json::Value> = counts
        .iter()
        .map(|(name, n)| serde_json::json!({ "Name": name, "Services": n.to_string() }))
        .collect();
    output::print_list(&format, &["NAME", "SERVICES"], &["Name", "Services"], &rows)
}

async fn services(target: &Target, stack: &str, quiet: bool, format: Option<String>) -> Result<()> {
    let mut control = target.control()?;
    if deploy::stack_services(&mut control, stack)
        .await?
        .is_empty()
    {
        eprintln!("Nothing found in stack: {stack}");
        return Ok(());
    }
    service::ls_filtered(
        target,
        &[format!("label={}={stack}", convert::NAMESPACE)],
        quiet,
        format,
    )
    .await
}

async fn ps_cmd(target: &Target, mut args: PsArgs) -> Result<()> {
    let Some(stack) = args.targets.first().cloned() else {
        bail!("\"orch stack ps\" requires exactly 1 argument");
    };
    let mut control = target.control()?;
    let ids: Vec<String> = deploy::stack_services(&mut control, &stack)
        .await?
        .into_values()
        .map(|s| s.id)
        .collect();
    if ids.is_empty() {
        bail!("nothing found in stack: {stack}");
    }
    args.targets.clear();
    service::print_tasks(
        target,
        ListTasksRequest {
            service_ids: ids,
            ..Default::default()
        },
        &args,
    )
    .await
}

/// Removes each stack: its services, then (once their tasks have stopped) its secrets,
/// configs and networks. External objects and volumes stay.
async fn rm(target: &Target, stacks: &[String]) -> Result<()> {
    let mut control = target.control()?;
    let mut failures = Vec::new();
    for stack in stacks {
        let mut failed = false;
        let services = deploy::stack_services(&mut control, stack).await?;
        let data = deploy::stack_data(&mut control, stack).await?;
        let networks = deploy::stack_networks(&mut control, stack).await?;
        if services.is_empty() && data.is_empty() && networks.is_empty() {
            eprintln!("Nothing found in stack: {stack}");
            continue;
        }
        let ids: Vec<String> = services.values().map(|s| s.id.clone()).collect();
        for (name, s) in &services {
            outln!("Removing service {name}");
            if let Err(e) = control
                .remove_service(GetServiceRequest {
                    service: s.id.clone(),
                })
                .await
            {
                eprintln!("Failed to remove service {}: {}", s.id, e.message());
                failed = true;
            }
        }
        // The tasks stop before what they use goes: no network is removed under them.
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(120) && !ids.is_empty() {
            let left = control
                .list_tasks(ListTasksRequest {
                    service_ids: ids.clone(),
                    ..Default::default()
                })
                .await
                .map_err(rpc)?
                .into_inner()
                .tasks;
            if left.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        for (kind, name, id) in &data {
            let what = if *kind == DataKind::Secret {
                "secret"
            } else {
                "config"
            };
            outln!("Removing {what} {name}");
            if let Err(e) = control
                .remove_data(GetDataRequest {
                    kind: *kind as i32,
                    name: id.clone(),
                })
                .await
            {
                eprintln!("Failed to remove {what} {id}: {}", e.message());
                failed = true;
            }
        }
        for (name, id) in &networks {
            outln!("Removing network {name}");
            if let Err(e) = deploy::remove_network(&mut control, id).await {
                eprintln!("Failed to remove network {id}: {e}");
                failed = true;
            }
        }
        if failed {
            failures.push(stack.clone());
        }
    }
    if !failures.is_empty() {
        bail!(
            "failed to remove some resources from stack: {}",
            failures.join(", ")
        );
    }
    Ok(())
}
