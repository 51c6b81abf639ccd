//! Published ports. A port published through the routing mesh (modes ingress and local) is the
//! cluster's: one service per protocol and port, on every node. A mesh port the spec leaves
//! out is picked from 30000-32767 and kept across updates. Host-mode ports belong to the nodes
//! their tasks run on (the scheduler keeps two tasks from sharing one), but may not take a
//! mesh port. Messages are swarm's.

use std::collections::{BTreeMap, BTreeSet};

use orch_api::network::{through_mesh, MESH_PORTS};
use orch_api::pb::{PortConfig, Service, ServiceSpec};

use crate::state::store::Tables;

/// Who holds a published port: (service name, service ID, through the mesh).
type Holders<'a> = BTreeMap<(&'a str, u32), (&'a str, &'a str, bool)>;

fn holders<'a>(services: impl Iterator<Item = &'a Service>, except: &str) -> Holders<'a> {
    let mut out = Holders::new();
    for s in services.filter(|s| s.id != except) {
        let name = s.spec.as_ref().map_or("", |sp| sp.name.as_str());
        let spec_ports = s
            .spec
            .iter()
            .flat_map(|sp| sp.endpoint.iter())
            .flat_map(|e| &e.ports);
        for p in s.ports.iter().chain(spec_ports) {
            if p.published_port != 0 {
                let held = out
                    .entry((p.protocol.as_str(), p.published_port))
                    .or_insert((name, s.id.as_str(), false));
                held.2 |= through_mesh(p);
            }
        }
    }
    out
}

/// Why `p` cannot be published while `held` holds its port; None when it can.
fn conflict(p: &PortConfig, held: &Holders<'_>) -> Option<String> {
    let (name, id, mesh) = held.get(&(p.protocol.as_str(), p.published_port))?;
    if through_mesh(p) {
        Some(format!(
            "port '{}' is already in use by service '{name}' ({id}) as an ingress port",
            p.published_port
        ))
    } else if *mesh {
        Some(format!(
            "port '{}' is already in use by service '{name}' ({id}) as a host-published port",
            p.published_port
        ))
    } else {
        // Host-mode ports of two services may share a number: the scheduler keeps them apart.
        None
    }
}

/// The ports `spec` publishes, with mesh ports it leaves out picked: those the service had
/// (`old`) kept, the rest the lowest free in 30000-32767. Refuses a port another service holds.
pub fn allocate(
    view: &Tables,
    service_id: &str,
    old: &[PortConfig],
    spec: &ServiceSpec,
) -> Result<Vec<PortConfig>, String> {
    let held = holders(view.services().map(|s| s.as_ref()), service_id);
    let wanted: Vec<PortConfig> = spec.endpoint.iter().flat_map(|e| e.ports.clone()).collect();
    let mut taken: BTreeSet<(String, u32)> = wanted
        .iter()
        .filter(|p| p.published_port != 0)
        .map(|p| (p.protocol.clone(), p.published_port))
        .collect();
    let mut out = Vec::with_capacity(wanted.len());
    for mut p in wanted {
        if p.published_port == 0 && through_mesh(&p) {
            let free = |port: u32, taken: &BTreeSet<(String, u32)>| {
                !held.contains_key(&(p.protocol.as_str(), port))
                    && !taken.contains(&(p.protocol.clone(), port))
            };
            let kept = old
                .iter()
                .find(|o| {
                    o.protocol == p.protocol
                        && o.target_port == p.target_port
                        && o.publish_mode == p.publish_mode
                        && free(o.published_port, &taken)
                })
                .map(|o| o.published_port);
            p.published_port = kept
                .or_else(|| MESH_PORTS.clone().find(|port| free(*port, &taken)))
                .ok_or_else(|| {
                    format!(
                        "no free port left to publish {}/{} (30000-32767 are all in use)",
                        p.target_port, p.protocol
                    )
                })?;
            taken.insert((p.protocol.clone(), p.published_port));
        }
        if let Some(why) = conflict(&p, &held) {
            return Err(why);
        }
        out.push(p);
    }
    Ok(out)
}

/// The store's own check of `s`'s ports against every other service's (two API calls that
/// raced past `allocate`).
pub fn check<'a>(services: impl Iterator<Item = &'a Service>, s: &Service) -> Result<(), String> {
    let held = holders(services, &s.id);
    for p in s.ports.iter().filter(|p| p.published_port != 0) {
        if let Some(why) = conflict(p, &held) {
            return Err(why);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use orch_api::pb::store_action::Action;
    use orch_api::pb::{EndpointSpec, PublishMode};

    use super::*;
    use crate::handles::testing::Applier;
    use crate::handles::Proposer;
    use crate::state::store::Store;
    use crate::testkit;

    fn port(published: u32, target: u32, mode: PublishMode) -> PortConfig {
        PortConfig {
            protocol: "tcp".into(),
            target_port: target,
            published_port: published,
            publish_mode: mode as i32,
            ..Default::default()
        }
    }

    fn spec(name: &str, ports: Vec<PortConfig>) -> ServiceSpec {
        let mut s = testkit::replicated(name, 1).spec.unwrap_or_default();
        s.endpoint = Some(EndpointSpec {
            mode: "vip".into(),
            ports,
        });
        s
    }

    async fn store_with(services: &[(&str, Vec<PortConfig>)]) -> Arc<Store> {
        let store = Arc::new(Store::new());
        let applier = Applier::new(store.clone());
        for (name, ports) in services {
            let mut s = testkit::replicated(name, 1);
            s.spec = Some(spec(name, ports.clone()));
            s.ports = ports.clone();
            applier
                .propose(vec![Action::CreateService(s)])
                .await
                .expect("create");
        }
        store
    }

    #[tokio::test]
    async fn mesh_ports_are_picked_kept_and_never_shared() {
        let store = store_with(&[
            ("web", vec![port(8080, 80, PublishMode::Ingress)]),
            ("auto", vec![port(30000, 80, PublishMode::Ingress)]),
            ("pinned", vec![port(9000, 80, PublishMode::Host)]),
        ])
        .await;
        let view = store.view();
        // Picked: the lowest free one (30000 is taken).
        let got = allocate(
            &view,
            "new",
            &[],
            &spec("a", vec![port(0, 80, PublishMode::Ingress)]),
        )
        .expect("free");
        assert_eq!(got[0].published_port, 30001);
        // Kept across an update that still leaves it out.
        let old = vec![port(30005, 80, PublishMode::Ingress)];
        let got = allocate(
            &view,
            "new",
            &old,
            &spec("a", vec![port(0, 80, PublishMode::Ingress)]),
        )
        .expect("kept");
        assert_eq!(got[0].published_port, 30005);
        // Two mesh ports left out in one spec get two ports; a UDP port may share a number.
        let mut udp = port(0, 53, PublishMode::Ingress);
        udp.protocol = "udp".into();
        let got = allocate(
            &view,
            "new",
            &[],
            &spec(
                "a",
                vec![
                    port(0, 80, PublishMode::Ingress),
                    port(0, 81, PublishMode::Local),
                    udp,
                ],
            ),
        )
        .expect("three");
        let picked: Vec<u32> = got.iter().map(|p| p.published_port).collect();
        assert_eq!(picked, vec![30001, 30002, 30000]);
        let cases = [
            (
                port(8080, 80, PublishMode::Ingress),
                Some("port '8080' is already in use by service 'web' ("),
            ),
            (
                port(8080, 80, PublishMode::Local),
                Some("port '8080' is already in use by service 'web' ("),
            ),
            (
                port(8080, 80, PublishMode::Host),
                Some("as a host-published port"),
            ),
            (
                port(9000, 80, PublishMode::Ingress),
                Some("port '9000' is already in use by service 'pinned' ("),
            ),
            (port(9000, 80, PublishMode::Host), None),
            (port(8081, 80, PublishMode::Ingress), None),
        ];
        for (p, refused) in cases {
            let got = allocate(&view, "new", &[], &spec("a", vec![p.clone()]));
            match refused {
                Some(why) => assert!(
                    got.as_ref().is_err_and(|e| e.contains(why)),
                    "{p:?}: {got:?}"
                ),
                None => assert!(got.is_ok(), "{p:?}: {got:?}"),
            }
        }
        // The service itself may keep its port on update.
        let web = view.find_service("web").expect("web");
        assert!(allocate(&view, &web.id, &web.ports, &spec("web", web.ports.clone())).is_ok());
    }

    #[tokio::test]
    async fn the_store_refuses_a_port_that_raced_past_the_edge() {
        let store = store_with(&[("web", vec![port(8080, 80, PublishMode::Ingress)])]).await;
        let applier = Applier::new(store.clone());
        let mut other = testkit::replicated("other", 1);
        other.ports = vec![port(8080, 80, PublishMode::Ingress)];
        let err = applier
            .propose(vec![Action::CreateService(other)])
            .await
            .expect_err("refused");
        assert!(err.to_string().contains("already in use"), "{err}");
    }
}
