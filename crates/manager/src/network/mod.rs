//! Networks on the manager: resolving a service's attachments at the API edge, the address
//! allocator (leader only), and what each node's data plane needs to know.

pub mod alloc;
pub mod endpoints;
pub mod ports;

use std::collections::BTreeSet;

use orch_api::pb::{NetworkAttachment, ServiceSpec, Task, VirtualIp};

use crate::state::store::Tables;
use alloc::{AllocError, Pools};

/// Replaces each attachment's network name (or ID prefix) by the network's ID, refusing a
/// missing network, the ingress network and a network named twice.
pub fn resolve_attachments(view: &Tables, spec: &mut ServiceSpec) -> Result<(), String> {
    let Some(task) = spec.task.as_mut() else {
        return Ok(());
    };
    let mut seen = BTreeSet::new();
    for a in &mut task.networks {
        let n = view
            .find_network(&a.target)
            .map_err(|_| format!("network {} not found", a.target))?;
        if n.spec.as_ref().is_some_and(|s| s.ingress) {
            return Err(format!(
                "service cannot be explicitly attached to the ingress network {:?}",
                a.target
            ));
        }
        if !seen.insert(n.id.clone()) {
            return Err(format!("network {} specified multiple times", a.target));
        }
        a.target = n.id.clone();
    }
    Ok(())
}

/// Host-mode ports are bound by the engine on its own network; a task in an overlay sandbox
/// has its node deliver them instead (as local mode does), which needs the port's number.
pub fn check_host_ports(spec: &ServiceSpec) -> Result<(), String> {
    let ports: Vec<_> = spec.endpoint.iter().flat_map(|e| &e.ports).collect();
    let networks = spec.task.as_ref().is_some_and(|t| !t.networks.is_empty());
    let sandboxed = networks || ports.iter().any(|p| orch_api::network::through_mesh(p));
    let unnumbered = ports
        .iter()
        .find(|p| !orch_api::network::through_mesh(p) && p.published_port == 0);
    match unnumbered {
        Some(p) if sandboxed => Err(format!(
            "port {}/{} is published in host mode without a published port, which a service on overlay networks or with ports on the routing mesh cannot have: give it one (published=P)",
            p.target_port, p.protocol
        )),
        _ => Ok(()),
    }
}

fn uses_vips(spec: &ServiceSpec) -> bool {
    spec.endpoint.as_ref().is_none_or(|e| e.mode != "dnsrr")
}

/// The service's VIPs for `spec`: one per network in endpoint mode `vip` (none with `dnsrr`),
/// keeping those the service already has, allocating the rest.
pub fn virtual_ips(
    view: &Tables,
    old: &[VirtualIp],
    spec: &ServiceSpec,
) -> Result<Vec<VirtualIp>, AllocError> {
    if !uses_vips(spec) {
        return Ok(Vec::new());
    }
    let mut pools: Option<Pools> = None;
    let mut out = Vec::new();
    for a in spec.task.iter().flat_map(|t| &t.networks) {
        if let Some(v) = old.iter().find(|v| v.network_id == a.target) {
            out.push(v.clone());
            continue;
        }
        let pools = pools.get_or_insert_with(|| Pools::from_view(view));
        let ip = pools.allocate(&a.target)?;
        out.push(VirtualIp {
            network_id: a.target.clone(),
            addr: ip.to_string(),
        });
    }
    Ok(out)
}

/// Whether a task needs an address: it names networks, or publishes through the mesh.
pub fn needs_addresses(task: &Task) -> bool {
    let networks = task.spec.as_ref().is_some_and(|s| !s.networks.is_empty());
    networks || orch_api::network::on_ingress(networks, task.endpoint.as_ref())
}

/// A task's addresses as it is placed: one per network its spec names, and one on the
/// ingress network (last) when it publishes through the mesh; keeping any it has. On failure
/// nothing stays taken in `pools`.
pub fn attach_task(pools: &mut Pools, task: &Task) -> Result<Vec<NetworkAttachment>, AllocError> {
    let mut out: Vec<NetworkAttachment> = Vec::new();
    let mut taken: Vec<(String, String)> = Vec::new();
    let mut wanted: Vec<(String, Vec<String>)> = task
        .spec
        .iter()
        .flat_map(|s| &s.networks)
        .map(|c| (c.target.clone(), c.aliases.clone()))
        .collect();
    if orch_api::network::on_ingress(!wanted.is_empty(), task.endpoint.as_ref()) {
        let ingress = pools
            .ingress()
            .ok_or_else(|| AllocError::NoNetwork(orch_api::network::INGRESS_NAME.into()))?;
        wanted.push((ingress.to_string(), Vec::new()));
    }
    for (network_id, aliases) in wanted {
        if let Some(a) = task
            .networks
            .iter()
            .find(|a| a.network_id == network_id && !a.addr.is_empty())
        {
            out.push(a.clone());
            continue;
        }
        match pools.allocate(&network_id) {
            Ok(ip) => {
                taken.push((network_id.clone(), ip.to_string()));
                out.push(NetworkAttachment {
                    network_id,
                    addr: ip.to_string(),
                    aliases,
                });
            }
            Err(e) => {
                for (network, addr) in &taken {
                    pools.release(network, addr);
                }
                return Err(e);
            }
        }
    }
    Ok(out)
}
