//! `orch node ls|inspect|update|promote|demote|rm|ps`.

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use orch_api::pb::{
    GetNodeRequest, ListNodesRequest, Node, NodeRole, RemoveNodeRequest, UpdateNodeRequest,
};
use orch_engine_api::convert::objects;
use orch_engine_api::read;

use super::cluster::parse_availability;
use crate::client::{rpc, Target};
use crate::output::{self, json, Format};

#[derive(Subcommand, Debug)]
pub enum NodeCmd {
    /// List nodes in the swarm
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Display detailed information on one or more nodes
    Inspect(InspectArgs),
    /// Update a node
    Update(UpdateArgs),
    /// Promote one or more nodes to manager in the swarm
    Promote { nodes: Vec<String> },
    /// Demote one or more nodes from manager in the swarm
    Demote { nodes: Vec<String> },
    /// Remove one or more nodes from the swarm
    #[command(alias = "remove")]
    Rm {
        /// Force remove a node from the swarm
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// List tasks running on one or more nodes, defaults to current node
    Ps(crate::commands::service::PsArgs),
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Only display IDs
    #[arg(short, long)]
    quiet: bool,
    /// Filter output based on conditions provided (id, name, role, membership, label)
    #[arg(short, long)]
    filter: Vec<String>,
    #[arg(long)]
    format: Option<String>,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Print the information in a human friendly format
    #[arg(long)]
    pretty: bool,
    #[arg(short, long)]
    format: Option<String>,
    #[arg(required = true)]
    nodes: Vec<String>,
}

#[derive(Args, Debug)]
pub struct UpdateArgs {
    #[arg(long)]
    availability: Option<String>,
    /// Add or update a node label (key=value)
    #[arg(long)]
    label_add: Vec<String>,
    /// Remove a node label if exists
    #[arg(long)]
    label_rm: Vec<String>,
    #[arg(long)]
    role: Option<String>,
    node: String,
}

pub async fn run(target: &Target, cmd: NodeCmd) -> Result<()> {
    match cmd {
        NodeCmd::Ls(args) => ls(target, args).await,
        NodeCmd::Inspect(args) => inspect(target, args).await,
        NodeCmd::Update(args) => update(target, args).await,
        NodeCmd::Promote { nodes } => set_role(target, nodes, NodeRole::Manager).await,
        NodeCmd::Demote { nodes } => set_role(target, nodes, NodeRole::Worker).await,
        NodeCmd::Rm { force, nodes } => rm(target, force, nodes).await,
        NodeCmd::Ps(args) => crate::commands::service::node_ps(target, args).await,
    }
}

fn matches_filter(n: &Node, filter: &str) -> Result<bool> {
    let Some((key, value)) = filter.split_once('=') else {
        bail!("bad format of filter (expected name=value)");
    };
    let desc = n.description.clone().unwrap_or_default();
    let spec = n.spec.clone().unwrap_or_default();
    Ok(match key {
        "id" => n.id.starts_with(value),
        "name" | "hostname" => desc.hostname.contains(value),
        "role" => json::role_name(spec.desired_role) == value,
        "membership" => value == "accepted",
        "label" | "node.label" => crate::commands::label_filter(&spec.labels, value),
        other => bail!("invalid filter '{other}'"),
    })
}

async fn ls(target: &Target, args: LsArgs) -> Result<()> {
    let format = Format::parse(args.format.as_deref())?;
    let mut nodes = target
        .control()?
        .list_nodes(ListNodesRequest {})
        .await
        .map_err(rpc)?
        .into_inner()
        .nodes;
    for f in &args.filter {
        let mut kept = Vec::new();
        for n in nodes {
            if matches_filter(&n, f)? {
                kept.push(n);
            }
        }
        nodes = kept;
    }
    nodes.sort_by(|a, b| {
        let host = |n: &Node| {
            n.description
                .as_ref()
                .map(|d| d.hostname.clone())
                .unwrap_or_default()
        };
        host(a).cmp(&host(b)).then(a.id.cmp(&b.id))
    });
    if args.quiet {
        for n in &nodes {
            outln!("{}", n.id);
        }
        return Ok(());
    }
    let self_id = target.self_node_id();
    let rows: Vec<_> = nodes.iter().map(|n| json::node_row(n, &self_id)).collect();
    if let Format::Table = format {
        // The table marks the current node with `*` after its ID, as docker does.
        let marked: Vec<_> = rows
            .iter()
            .map(|r| {
                let mut r = r.clone();
                if r["Self"] == serde_json::Value::Bool(true) {
                    r["ID"] =
                        serde_json::Value::String(format!("{} *", r["ID"].as_str().unwrap_or("")));
                }
                r
            })
            .collect();
        return output::print_list(
            &format,
            &[
                "ID",
                "HOSTNAME",
                "STATUS",
                "AVAILABILITY",
                "MANAGER STATUS",
                "ENGINE VERSION",
            ],
            &[
                "ID",
                "Hostname",
                "Status",
                "Availability",
                "ManagerStatus",
                "EngineVersion",
            ],
            &marked,
        );
    }
    output::print_list(&format, &[], &[], &rows)
}

async fn get_nodes(target: &Target, refs: &[String]) -> Result<Vec<Node>> {
    let mut control = target.control()?;
    let mut nodes = Vec::new();
    for r in refs {
        let node = if r == "self" {
            target.self_node_id()
        } else {
            r.clone()
        };
        nodes.push(
            control
                .get_node(GetNodeRequest { node })
                .await
                .map_err(rpc)?
                .into_inner(),
        );
    }
    Ok(nodes)
}

async fn inspect(target: &Target, args: InspectArgs) -> Result<()> {
    let nodes = get_nodes(target, &args.nodes).await?;
    if args.pretty {
        for (i, n) in nodes.iter().enumerate() {
            if i > 0 {
                outln!();
            }
            print_pretty(n);
        }
        return Ok(());
    }
    let root = read::trust_root(&mut target.control()?).await;
    let found: Vec<_> = nodes.iter().map(|n| objects::node(n, &root)).collect();
    output::print_inspect(args.format.as_deref(), &found)
}

fn print_pretty(n: &Node) {
    let desc = n.description.clone().unwrap_or_default();
    let spec = n.spec.clone().unwrap_or_default();
    let status = n.status.clone().unwrap_or_default();
    outln!("ID:\t\t\t{}", n.id);
    if !spec.labels.is_empty() {
        outln!("Labels:");
        let mut labels: Vec<_> = spec.labels.iter().collect();
        labels.sort();
        for (k, v) in labels {
            outln!(" - {k}={v}");
        }
    }
    outln!("Hostname:\t\t{}", desc.hostname);
    outln!(
        "Joined at:\t\t{}",
        output::rfc3339(n.meta.as_ref().map_or(0, |m| m.created_at))
    );
    outln!("Status:");
    outln!(
        " State:\t\t\t{}",
        json::title(json::node_state_name(status.state))
    );
    if !status.message.is_empty() {
        outln!(" Message:\t\t{}", status.message);
    }
    outln!(
        " Availability:\t\t{}",
        json::title(json::availability_name(spec.availability))
    );
    outln!(" Address:\t\t{}", status.addr);
    if let Some(ms) = &n.manager_status {
        outln!("Manager Status:");
        outln!(" Address:\t\t{}", ms.addr);
        outln!(
            " Raft Status:\t\t{}",
            json::title(json::reachability_name(ms.reachability))
        );
        outln!(" Leader:\t\t{}", if ms.leader { "Yes" } else { "No" });
    }
    let platform = desc.platform.clone().unwrap_or_default();
    outln!("Platform:");
    outln!(" Operating System:\t{}", platform.os);
    outln!(" Architecture:\t\t{}", platform.architecture);
    let resources = desc.resources.unwrap_or_default();
    outln!("Resources:");
    outln!(" CPUs:\t\t\t{}", resources.nano_cpus / 1_000_000_000);
    outln!(" Memory:\t\t{}", output::bytes(resources.memory_bytes));
    let engine = desc.engine.clone().unwrap_or_default();
    outln!("Engine Version:\t\t{}", engine.engine_version);
    if !engine.labels.is_empty() {
        outln!("Engine Labels:");
        let mut labels: Vec<_> = engine.labels.iter().collect();
        labels.sort();
        for (k, v) in labels {
            outln!(" - {k}={v}");
        }
    }
}

fn parse_role(s: &str) -> Result<NodeRole> {
    Ok(match s {
        "manager" => NodeRole::Manager,
        "worker" => NodeRole::Worker,
        other => bail!("invalid role {other:?}: must be worker or manager"),
    })
}

async fn update(target: &Target, args: UpdateArgs) -> Result<()> {
    let mut req = UpdateNodeRequest {
        node: args.node.clone(),
        ..Default::default()
    };
    if let Some(a) = &args.availability {
        req.availability = Some(parse_availability(a)? as i32);
    }
    for label in &args.label_add {
        let (k, v) = label.split_once('=').unwrap_or((label.as_str(), ""));
        if k.is_empty() {
            bail!("invalid label {label:?}: the key must not be empty");
        }
        req.label_add.insert(k.to_string(), v.to_string());
    }
    req.label_rm = args.label_rm.clone();
    if let Some(r) = &args.role {
        req.role = Some(parse_role(r)? as i32);
    }
    target.control()?.update_node(req).await.map_err(rpc)?;
    outln!("{}", args.node);
    Ok(())
}

async fn set_role(target: &Target, nodes: Vec<String>, role: NodeRole) -> Result<()> {
    if nodes.is_empty() {
        bail!(
            "\"orch node {}\" requires at least 1 argument",
            if role == NodeRole::Manager {
                "promote"
            } else {
                "demote"
            }
        );
    }
    let mut control = target.control()?;
    for name in nodes {
        let node = control
            .get_node(GetNodeRequest { node: name.clone() })
            .await
            .map_err(rpc)?
            .into_inner();
        if node.desired_role() == role {
            match role {
                NodeRole::Manager => outln!("Node {name} is already a manager."),
                NodeRole::Worker => outln!("Node {name} is already a worker."),
            }
            continue;
        }
        let req = UpdateNodeRequest {
            node: node.id.clone(),
            role: Some(role as i32),
            ..Default::default()
        };
        control.update_node(req).await.map_err(rpc)?;
        match role {
            NodeRole::Manager => outln!("Node {name} promoted to a manager in the swarm."),
            NodeRole::Worker => outln!("Manager {name} demoted in the swarm."),
        }
    }
    Ok(())
}

async fn rm(target: &Target, force: bool, nodes: Vec<String>) -> Result<()> {
    let mut control = target.control()?;
    let mut failed = Vec::new();
    for name in nodes {
        match control
            .remove_node(RemoveNodeRequest {
                node: name.clone(),
                force,
            })
            .await
        {
            Ok(_) => outln!("{name}"),
            Err(status) => failed.push(status.message().to_string()),
        }
    }
    if !failed.is_empty() {
        bail!(crate::client::DaemonError(failed.join("\n")));
    }
    Ok(())
}
