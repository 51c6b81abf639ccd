//! `orch network create|ls|inspect|rm`: overlay networks, shown as the Engine API shows them.

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use orch_api::pb::{CreateNetworkRequest, Empty, GetNetworkRequest, Network, NetworkSpec};
use orch_engine_api::convert::objects;
use serde_json::{json, Value};

use crate::client::{rpc, DaemonError, Target};
use crate::commands::spec_flags::parse_key_values;
use crate::output::{print_inspect, print_list, Format};

#[derive(Subcommand, Debug)]
pub enum NetworkCmd {
    /// Create a network
    Create(CreateArgs),
    /// List networks
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Display detailed information on one or more networks
    Inspect {
        #[arg(short, long)]
        format: Option<String>,
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Remove one or more networks
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        networks: Vec<String>,
    },
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Driver to manage the network ("overlay")
    #[arg(short, long, default_value = "overlay")]
    driver: String,
    /// Subnet in CIDR format (default: the next free /24 of 10.0.0.0/8)
    #[arg(long)]
    subnet: Option<String>,
    /// IPv4 gateway for the subnet
    #[arg(long)]
    gateway: Option<String>,
    /// Enable manual container attachment
    #[arg(long)]
    attachable: bool,
    /// Restrict external access to the network
    #[arg(long)]
    internal: bool,
    /// Create a swarm routing-mesh network
    #[arg(long)]
    ingress: bool,
    /// Set metadata on a network
    #[arg(long)]
    label: Vec<String>,
    /// Set driver specific options (`encrypted` is refused: see the message)
    #[arg(short, long)]
    opt: Vec<String>,
    name: String,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Only display network IDs
    #[arg(short, long)]
    quiet: bool,
    /// Provide filter values (driver=, id=, label=, name=)
    #[arg(short, long)]
    filter: Vec<String>,
    /// Do not truncate the output
    #[arg(long)]
    no_trunc: bool,
    #[arg(long)]
    format: Option<String>,
}

pub async fn run(target: &Target, cmd: NetworkCmd) -> Result<()> {
    match cmd {
        NetworkCmd::Create(args) => create(target, args).await,
        NetworkCmd::Ls(args) => ls(target, args).await,
        NetworkCmd::Inspect { format, networks } => inspect(target, format, &networks).await,
        NetworkCmd::Rm { networks } => rm(target, &networks).await,
    }
}

async fn create(target: &Target, args: CreateArgs) -> Result<()> {
    let options = args
        .opt
        .iter()
        .map(|o| match o.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (o.clone(), String::new()),
        })
        .collect();
    let created = target
        .control()?
        .create_network(CreateNetworkRequest {
            spec: Some(NetworkSpec {
                name: args.name,
                labels: parse_key_values(&args.label)?.into_iter().collect(),
                driver: args.driver,
                subnet: args.subnet.unwrap_or_default(),
                gateway: args.gateway.unwrap_or_default(),
                internal: args.internal,
                attachable: args.attachable,
                ingress: args.ingress,
                options,
            }),
        })
        .await
        .map_err(rpc)?
        .into_inner();
    outln!("{}", created.id);
    Ok(())
}

fn spec(n: &Network) -> NetworkSpec {
    n.spec.clone().unwrap_or_default()
}

fn matches(n: &Network, filter: &str) -> Result<bool> {
    let Some((key, value)) = filter.split_once('=') else {
        bail!("bad format of filter (expected name=value): {filter}");
    };
    let s = spec(n);
    Ok(match key {
        "id" => n.id.starts_with(value),
        "name" => s.name.contains(value),
        "driver" => s.driver == value,
        "label" => crate::commands::label_filter(&s.labels, value),
        other => bail!("invalid filter '{other}'"),
    })
}

async fn ls(target: &Target, args: LsArgs) -> Result<()> {
    let format = Format::parse(args.format.as_deref())?;
    let mut networks = target
        .control()?
        .list_networks(Empty {})
        .await
        .map_err(rpc)?
        .into_inner()
        .networks;
    let mut kept = Vec::new();
    for n in networks.drain(..) {
        let mut keep = true;
        for f in &args.filter {
            keep &= matches(&n, f)?;
        }
        if keep {
            kept.push(n);
        }
    }
    kept.sort_by_key(|n| spec(n).name);
    let id = |n: &Network| {
        if args.no_trunc {
            n.id.clone()
        } else {
            n.id.chars().take(12).collect()
        }
    };
    if args.quiet {
        for n in &kept {
            outln!("{}", id(n));
        }
        return Ok(());
    }
    let rows: Vec<Value> = kept
        .iter()
        .map(|n| {
            let s = spec(n);
            json!({ "ID": id(n), "Name": s.name, "Driver": s.driver, "Scope": "swarm" })
        })
        .collect();
    print_list(
        &format,
        &["NETWORK ID", "NAME", "DRIVER", "SCOPE"],
        &["ID", "Name", "Driver", "Scope"],
        &rows,
    )
}

async fn inspect(target: &Target, format: Option<String>, names: &[String]) -> Result<()> {
    let mut control = target.control()?;
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for name in names {
        match control
            .get_network(GetNetworkRequest {
                network: name.clone(),
            })
            .await
        {
            Ok(n) => found.push(objects::network(&n.into_inner())),
            Err(status) => errors.push(rpc(status).to_string()),
        }
    }
    print_inspect(format.as_deref(), &found)?;
    if !errors.is_empty() {
        bail!(DaemonError(errors.join("\n")));
    }
    Ok(())
}

async fn rm(target: &Target, names: &[String]) -> Result<()> {
    let mut control = target.control()?;
    let mut errors = Vec::new();
    for name in names {
        match control
            .remove_network(GetNetworkRequest {
                network: name.clone(),
            })
            .await
        {
            Ok(_) => outln!("{name}"),
            Err(status) => errors.push(rpc(status).to_string()),
        }
    }
    if !errors.is_empty() {
        bail!(DaemonError(errors.join("\n")));
    }
    Ok(())
}
