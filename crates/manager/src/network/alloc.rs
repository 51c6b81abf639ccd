//! The address allocator: which addresses of each network are taken, derived from the store
//! alone (service VIPs, task attachments, nodes' ingress endpoints, each network's gateway). A new leader, or a manager
//! restarted from a snapshot, derives exactly what the old leader committed, so an address is
//! never handed out twice; an allocation is only real once the transaction that records it
//! commits (with the task's move to PENDING, or the service's creation).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use orch_api::network::Cidr;

use crate::state::store::{network_name, Tables};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("no free address on network {0}")]
    Full(String),
    #[error("network {0} not found")]
    NoNetwork(String),
}

#[derive(Debug, Clone)]
struct Pool {
    name: String,
    subnet: Cidr,
    used: BTreeSet<u32>,
}

/// The taken addresses of every network.
#[derive(Debug, Clone, Default)]
pub struct Pools {
    pools: BTreeMap<String, Pool>,
    /// The ingress network's ID, when there is one.
    ingress: Option<String>,
}

fn parse_ip(s: &str) -> Option<u32> {
    s.parse::<Ipv4Addr>().ok().map(u32::from)
}

impl Pools {
    /// What the store says is taken.
    pub fn from_view(view: &Tables) -> Pools {
        let mut pools = BTreeMap::new();
        for n in view.networks() {
            let Ok(subnet) = Cidr::parse(&n.subnet) else {
                continue;
            };
            let mut used = BTreeSet::new();
            used.extend(parse_ip(&n.gateway));
            pools.insert(
                n.id.clone(),
                Pool {
                    name: network_name(n).to_string(),
                    subnet,
                    used,
                },
            );
        }
        let ingress = view
            .networks()
            .find(|n| n.spec.as_ref().is_some_and(|s| s.ingress))
            .map(|n| n.id.clone());
        let mut take = |network_id: &str, addr: &str| {
            if let (Some(pool), Some(ip)) = (pools.get_mut(network_id), parse_ip(addr)) {
                pool.used.insert(ip);
            }
        };
        for s in view.services() {
            for vip in &s.virtual_ips {
                take(&vip.network_id, &vip.addr);
            }
        }
        for t in view
            .tasks()
            .filter(|t| orch_api::network::holds_addresses(t))
        {
            for a in &t.networks {
                take(&a.network_id, &a.addr);
            }
        }
        for a in view.nodes().filter_map(|n| n.ingress.as_ref()) {
            take(&a.network_id, &a.addr);
        }
        Pools { pools, ingress }
    }

    /// The ingress network's ID, when there is one.
    pub fn ingress(&self) -> Option<&str> {
        self.ingress.as_deref()
    }

    /// Takes the lowest free address of the network.
    pub fn allocate(&mut self, network_id: &str) -> Result<Ipv4Addr, AllocError> {
        let pool = self
            .pools
            .get_mut(network_id)
            .ok_or_else(|| AllocError::NoNetwork(network_id.to_string()))?;
        let free = (pool.subnet.first_host()..=pool.subnet.last_host())
            .find(|ip| !pool.used.contains(ip))
            .ok_or_else(|| AllocError::Full(pool.name.clone()))?;
        pool.used.insert(free);
        Ok(Ipv4Addr::from(free))
    }

    /// Gives an address back (a task or service that is deleted).
    pub fn release(&mut self, network_id: &str, addr: &str) {
        if let (Some(pool), Some(ip)) = (self.pools.get_mut(network_id), parse_ip(addr)) {
            pool.used.remove(&ip);
        }
    }

    /// Free addresses left on the network.
    pub fn free(&self, network_id: &str) -> usize {
        self.pools.get(network_id).map_or(0, |p| {
            (p.subnet.size() as usize)
                .saturating_sub(2)
                .saturating_sub(p.used.len())
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use orch_api::pb::store_action::Action;
    use orch_api::pb::{Network, NetworkAttachment, NetworkSpec, VirtualIp};

    use super::*;
    use crate::handles::testing::Applier;
    use crate::handles::Proposer;
    use crate::state::store::Store;
    use crate::testkit;

    fn network(id: &str, subnet: &str, gateway: &str, vni: u32) -> Network {
        Network {
            id: id.into(),
            spec: Some(NetworkSpec {
                name: format!("net-{id}"),
                ..Default::default()
            }),
            vni,
            subnet: subnet.into(),
            gateway: gateway.into(),
            ..Default::default()
        }
    }

    /// A store with a /29 network (gateway .1: 5 addresses left) and a /24.
    async fn store() -> (Arc<Store>, Arc<Applier>) {
        let store = Arc::new(Store::new());
        let applier = Applier::new(store.clone());
        applier
            .propose(vec![
                Action::CreateNetwork(network("small", "10.9.0.0/29", "10.9.0.1", 5000)),
                Action::CreateNetwork(network("big", "10.8.0.0/24", "10.8.0.1", 5001)),
            ])
            .await
            .expect("networks");
        (store, applier)
    }

    fn attached(id: &str, network_id: &str, addr: &str) -> orch_api::pb::Task {
        let svc = testkit::replicated("web", 1);
        let mut t = testkit::running(id, &svc, 1, "n1");
        t.networks = vec![NetworkAttachment {
            network_id: network_id.into(),
            addr: addr.into(),
            aliases: vec![],
        }];
        t
    }

    #[tokio::test]
    async fn addresses_run_out_are_released_and_are_never_handed_out_twice() {
        let (store, applier) = store().await;
        let mut pools = Pools::from_view(&store.view());
        assert_eq!(pools.free("small"), 5);
        let got: Vec<String> = (0..6)
            .map(|_| match pools.allocate("small") {
                Ok(ip) => ip.to_string(),
                Err(e) => e.to_string(),
            })
            .collect();
        assert_eq!(
            got,
            [
                "10.9.0.2",
                "10.9.0.3",
                "10.9.0.4",
                "10.9.0.5",
                "10.9.0.6",
                "no free address on network net-small"
            ],
            "the gateway, the network and the broadcast address are never handed out"
        );
        pools.release("small", "10.9.0.4");
        assert_eq!(
            pools.allocate("small").map(|ip| ip.to_string()),
            Ok("10.9.0.4".into())
        );
        assert_eq!(
            pools.allocate("nope"),
            Err(AllocError::NoNetwork("nope".into()))
        );

        // What is committed is what a new leader (or a restart from a snapshot) sees as taken.
        let mut web = testkit::replicated("web", 1);
        web.virtual_ips = vec![VirtualIp {
            network_id: "big".into(),
            addr: "10.8.0.2".into(),
        }];
        applier
            .propose(vec![
                Action::CreateService(web),
                Action::CreateTask(attached("t1", "big", "10.8.0.3")),
                Action::CreateTask(attached("t2", "small", "10.9.0.2")),
            ])
            .await
            .expect("committed");
        let mut after_failover = Pools::from_view(&store.view());
        assert_eq!(
            after_failover.allocate("big").map(|ip| ip.to_string()),
            Ok("10.8.0.4".into())
        );
        assert_eq!(
            after_failover.allocate("small").map(|ip| ip.to_string()),
            Ok("10.9.0.3".into())
        );

        let restored = Store::new();
        restored.restore(store.view().index, store.view().to_snapshot());
        let mut from_snapshot = Pools::from_view(&restored.view());
        assert_eq!(
            from_snapshot.allocate("big").map(|ip| ip.to_string()),
            Ok("10.8.0.4".into())
        );

        // A deleted task's address is free again.
        applier
            .propose(vec![Action::DeleteTask("t1".into())])
            .await
            .expect("deleted");
        let mut released = Pools::from_view(&store.view());
        assert_eq!(
            released.allocate("big").map(|ip| ip.to_string()),
            Ok("10.8.0.3".into())
        );
    }

    /// The store refuses an address someone live holds, whatever allocator handed it out (a
    /// deposed leader's scheduler, a racing service update); an ended task's address is free.
    #[tokio::test]
    async fn the_store_never_accepts_one_address_twice() {
        let (store, applier) = store().await;
        applier
            .propose(vec![Action::CreateTask(attached("t1", "big", "10.8.0.3"))])
            .await
            .expect("first holder");
        let cases: Vec<(&str, orch_api::pb::Task, Option<&str>)> = vec![
            (
                "the same address again",
                attached("t2", "big", "10.8.0.3"),
                Some("address 10.8.0.3 on network net-big is already in use"),
            ),
            (
                "the gateway",
                attached("t3", "big", "10.8.0.1"),
                Some("address 10.8.0.1 is not free on network net-big"),
            ),
            (
                "outside the subnet",
                attached("t4", "big", "10.7.0.9"),
                Some("address 10.7.0.9 is not free on network net-big"),
            ),
            (
                "a missing network",
                attached("t5", "gone", "10.8.0.9"),
                Some("network gone not found"),
            ),
            ("a free address", attached("t6", "big", "10.8.0.4"), None),
        ];
        for (name, task, want) in cases {
            let got = applier.propose(vec![Action::CreateTask(task)]).await;
            match want {
                Some(msg) => assert!(
                    got.as_ref().is_err_and(|e| e.to_string().contains(msg)),
                    "{name}: {got:?}"
                ),
                None => assert!(got.is_ok(), "{name}: {got:?}"),
            }
        }
        // t1 ends: its address may be given to another task.
        let mut t1 = store.view().task("t1").map(|t| (**t).clone()).expect("t1");
        t1.status = Some(orch_api::pb::TaskStatus {
            state: orch_api::pb::TaskState::Failed as i32,
            ..Default::default()
        });
        applier
            .propose(vec![Action::UpdateTask(t1)])
            .await
            .expect("ended");
        assert_eq!(
            Pools::from_view(&store.view()).free("big"),
            252,
            "254 hosts less the gateway and t6's address"
        );
        applier
            .propose(vec![Action::CreateTask(attached("t7", "big", "10.8.0.3"))])
            .await
            .expect("the freed address is taken again");
    }
}
