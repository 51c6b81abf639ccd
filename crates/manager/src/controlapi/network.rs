//! Overlay networks: create (validated at the edge; subnet and VXLAN ID allocated when not
//! given), inspect, list, remove (refused while a service uses the network).

use orch_api::network::{
    check_name, next_free_subnet, next_free_vni, parse_gateway, Cidr, OVERLAY,
};
use orch_api::pb::store_action::Action;
use orch_api::pb::{CreateNetworkRequest, ListNetworksResponse, Network};

use crate::ctx::ManagerCtx;
use crate::error::{ManagerError, Result};
use crate::raft::node::ProposeError;
use crate::state::store::{network_name, ApplyError, Tables};

/// Why orch cannot make an encrypted overlay on this kind of machine.
pub const NO_ENCRYPTION: &str = "encrypted overlay networks are not supported: the kernel has neither ESP (IPsec) nor WireGuard, which encrypting VXLAN traffic needs";

fn used_subnets(view: &Tables) -> Vec<Cidr> {
    view.networks()
        .filter_map(|n| Cidr::parse(&n.subnet).ok())
        .collect()
}

/// The network a request describes, with its subnet, gateway and VXLAN ID.
fn build(view: &Tables, req: CreateNetworkRequest) -> Result<Network> {
    let invalid = ManagerError::InvalidArgument;
    let mut spec = req
        .spec
        .ok_or_else(|| invalid("a network spec is required".into()))?;
    check_name(&spec.name).map_err(invalid)?;
    match spec.driver.as_str() {
        "" => spec.driver = OVERLAY.into(),
        OVERLAY => {}
        other => {
            return Err(invalid(format!(
                "network driver {other:?} is not supported: orch networks are {OVERLAY} networks"
            )))
        }
    }
    if spec.options.contains_key("encrypted") {
        return Err(invalid(NO_ENCRYPTION.into()));
    }
    if spec.ingress
        && view
            .networks()
            .any(|n| n.spec.as_ref().is_some_and(|s| s.ingress))
    {
        return Err(invalid("an ingress network already exists".into()));
    }
    if view
        .find_network(&spec.name)
        .is_ok_and(|n| network_name(&n) == spec.name)
    {
        return Err(ManagerError::AlreadyExists(format!(
            "network with name {} already exists",
            spec.name
        )));
    }
    let used = used_subnets(view);
    let subnet = if spec.subnet.is_empty() {
        if !spec.gateway.is_empty() {
            return Err(invalid("--gateway needs --subnet".into()));
        }
        next_free_subnet(&used)
            .ok_or_else(|| invalid("the default address pool (10.0.0.0/8) is used up".into()))?
    } else {
        let subnet = Cidr::parse(&spec.subnet).map_err(invalid)?;
        if let Some(other) = view
            .networks()
            .find(|n| Cidr::parse(&n.subnet).is_ok_and(|c| c.overlaps(&subnet)))
        {
            return Err(invalid(format!(
                "subnet {subnet} overlaps network {} ({})",
                network_name(other),
                other.subnet
            )));
        }
        subnet
    };
    let gateway = if spec.gateway.is_empty() {
        subnet.first_host()
    } else {
        parse_gateway(&spec.gateway, &subnet).map_err(invalid)?
    };
    let vni = if spec.ingress {
        orch_api::network::INGRESS_VNI
    } else {
        let used: Vec<u32> = view.networks().map(|n| n.vni).collect();
        next_free_vni(&used).ok_or_else(|| invalid("no VXLAN ID left".into()))?
    };
    Ok(Network {
        id: orch_api::ids::new_id(),
        vni,
        subnet: subnet.to_string(),
        gateway: std::net::Ipv4Addr::from(gateway).to_string(),
        spec: Some(spec),
        ..Default::default()
    })
}

pub async fn create(ctx: &ManagerCtx, req: CreateNetworkRequest) -> Result<Network> {
    let view = ctx.read_view().await?;
    let name = req
        .spec
        .as_ref()
        .map(|s| s.name.clone())
        .unwrap_or_default();
    let network = build(&view, req)?;
    ctx.propose(vec![Action::CreateNetwork(network.clone())])
        .await
        .map_err(|e| match e {
            ManagerError::Propose(ProposeError::Rejected(ApplyError::NameConflict { .. })) => {
                ManagerError::AlreadyExists(format!("network with name {name} already exists"))
            }
            ManagerError::Propose(ProposeError::Rejected(ApplyError::Refused(why))) => {
                ManagerError::InvalidArgument(why)
            }
            other => other,
        })?;
    let view = ctx.store.view();
    Ok((**view
        .network(&network.id)
        .ok_or_else(|| ManagerError::Internal("created network vanished".into()))?)
    .clone())
}

pub async fn get(ctx: &ManagerCtx, reference: &str) -> Result<Network> {
    let view = ctx.read_view().await?;
    Ok((*view.find_network(reference)?).clone())
}

pub async fn list(ctx: &ManagerCtx) -> Result<ListNetworksResponse> {
    let view = ctx.read_view().await?;
    Ok(ListNetworksResponse {
        networks: view.networks().map(|n| (**n).clone()).collect(),
    })
}

pub async fn remove(ctx: &ManagerCtx, reference: &str) -> Result<()> {
    let view = ctx.read_view().await?;
    let network = view.find_network(reference)?;
    ctx.propose(vec![Action::DeleteNetwork(network.id.clone())])
        .await
        .map_err(|e| match e {
            ManagerError::Propose(ProposeError::Rejected(ApplyError::Refused(why))) => {
                ManagerError::FailedPrecondition(why)
            }
            other => other,
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use orch_api::pb::NetworkSpec;

    use super::*;
    use crate::handles::testing::Applier;
    use crate::handles::Proposer;
    use crate::state::store::Store;

    fn request(name: &str, subnet: &str, gateway: &str) -> CreateNetworkRequest {
        CreateNetworkRequest {
            spec: Some(NetworkSpec {
                name: name.into(),
                subnet: subnet.into(),
                gateway: gateway.into(),
                ..Default::default()
            }),
        }
    }

    /// Networks as `init` and earlier creates left them, then a request: what `build` makes
    /// of it, or its error.
    #[tokio::test]
    async fn networks_get_a_free_subnet_and_vni_and_bad_requests_are_refused() {
        let store = std::sync::Arc::new(Store::new());
        let applier = Applier::new(store.clone());
        let mut existing = Vec::new();
        for (name, subnet, ingress) in [
            ("ingress", "10.0.0.0/24", true),
            ("front", "10.0.1.0/24", false),
            ("big", "10.1.0.0/16", false),
        ] {
            let mut req = request(name, subnet, "");
            if let Some(s) = req.spec.as_mut() {
                s.ingress = ingress;
            }
            let n = build(&store.view(), req).expect(name);
            applier
                .propose(vec![Action::CreateNetwork(n.clone())])
                .await
                .expect("stored");
            existing.push(n);
        }
        assert_eq!(existing[0].vni, orch_api::network::INGRESS_VNI);
        assert_eq!(existing[1].vni, orch_api::network::FIRST_VNI);
        assert_eq!(existing[1].gateway, "10.0.1.1");

        let view = store.view();
        let made = build(&view, request("back", "", "")).expect("back");
        assert_eq!(made.subnet, "10.0.2.0/24");
        assert_eq!(made.vni, orch_api::network::FIRST_VNI + 2);
        let custom = build(&view, request("c", "192.168.7.0/24", "192.168.7.254")).expect("c");
        assert_eq!(custom.gateway, "192.168.7.254");

        // (name, request, what the error says)
        let cases = [
            (
                "duplicate name",
                request("front", "", ""),
                "network with name front already exists",
            ),
            (
                "overlap",
                request("x", "10.1.5.0/24", ""),
                "overlaps network big (10.1.0.0/16)",
            ),
            (
                "bad subnet",
                request("x", "10.0.9.0/33", ""),
                "invalid subnet",
            ),
            (
                "gateway outside",
                request("x", "10.9.0.0/24", "10.8.0.1"),
                "invalid gateway",
            ),
            (
                "gateway alone",
                request("x", "", "10.9.0.1"),
                "--gateway needs --subnet",
            ),
            ("bad name", request("-x", "", ""), "invalid network name"),
        ];
        for (name, req, says) in cases {
            let err = build(&view, req).expect_err(name).to_string();
            assert!(err.contains(says), "{name}: {err}");
        }
        let mut encrypted = request("x", "", "");
        if let Some(s) = encrypted.spec.as_mut() {
            s.options.insert("encrypted".into(), String::new());
        }
        assert!(build(&view, encrypted)
            .expect_err("encrypted")
            .to_string()
            .contains("WireGuard"));
        let mut second_ingress = request("ing2", "", "");
        if let Some(s) = second_ingress.spec.as_mut() {
            s.ingress = true;
        }
        assert!(build(&view, second_ingress).is_err());
        let mut bridge = request("x", "", "");
        if let Some(s) = bridge.spec.as_mut() {
            s.driver = "bridge".into();
        }
        assert!(build(&view, bridge)
            .expect_err("bridge")
            .to_string()
            .contains("overlay"));

        // The store refuses an overlap that raced past the edge.
        let mut racing = made.clone();
        racing.id = "other".into();
        if let Some(s) = racing.spec.as_mut() {
            s.name = "racing".into();
        }
        applier
            .propose(vec![Action::CreateNetwork(made)])
            .await
            .expect("back stored");
        let refused = applier.propose(vec![Action::CreateNetwork(racing)]).await;
        assert!(
            refused.is_err_and(|e| e.to_string().contains("overlaps network back")),
            "an overlapping network was stored"
        );
    }
}
