//! A service's networks on `service update` (`--network-add`, `--network-rm`). An attachment
//! holds its network as it was typed (a name, an ID, an ID prefix) or as the manager stored it
//! (the ID), so references are resolved against the cluster's networks before they are
//! compared: `--network-rm front` finds an attachment stored by ID, and the reverse.

use anyhow::{bail, Result};
use orch_api::pb::{Network, TaskSpec};

use crate::commands::spec_flags::parse_network;

/// The network `reference` names, as the manager resolves it: full ID, then name, then a
/// unique ID prefix. `None` when it names none (or an ambiguous prefix).
pub(super) fn resolve<'a>(networks: &'a [Network], reference: &str) -> Option<&'a Network> {
    if reference.is_empty() {
        return None;
    }
    if let Some(n) = networks.iter().find(|n| n.id == reference) {
        return Some(n);
    }
    if let Some(n) = networks
        .iter()
        .find(|n| n.spec.as_ref().is_some_and(|s| s.name == reference))
    {
        return Some(n);
    }
    let mut by_prefix = networks.iter().filter(|n| n.id.starts_with(reference));
    match (by_prefix.next(), by_prefix.next()) {
        (Some(n), None) => Some(n),
        _ => None,
    }
}

/// Whether two references name the same network: the same text, or both resolve to it.
fn same_network(networks: &[Network], a: &str, b: &str) -> bool {
    a == b
        || matches!(
            (resolve(networks, a), resolve(networks, b)),
            (Some(x), Some(y)) if x.id == y.id
        )
}

/// Applies `--network-rm` (removing a network the service is not on does nothing, as docker),
/// then `--network-add` (a network the service is already on is refused, as docker). Added
/// networks keep the reference as typed; the manager resolves it (and refuses unknown ones).
pub(super) fn update_networks(
    task: &mut TaskSpec,
    add: &[String],
    rm: &[String],
    networks: &[Network],
) -> Result<()> {
    for r in rm {
        task.networks
            .retain(|n| !same_network(networks, &n.target, r.trim()));
    }
    for a in add {
        let n = parse_network(a, "network-add")?;
        if task
            .networks
            .iter()
            .any(|x| same_network(networks, &x.target, &n.target))
        {
            bail!("service is already attached to network {}", n.target);
        }
        task.networks.push(n);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use orch_api::pb::{NetworkAttachmentConfig, NetworkSpec};

    use super::*;

    const FRONT_ID: &str = "f1a2b3c4d5e6f7a8b9c0d1e2f";
    const BACK_ID: &str = "b0c1d2e3f4a5b6c7d8e9f0a1b";

    fn network(id: &str, name: &str) -> Network {
        Network {
            id: id.into(),
            spec: Some(NetworkSpec {
                name: name.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn attachment(target: &str, aliases: &[&str]) -> NetworkAttachmentConfig {
        NetworkAttachmentConfig {
            target: target.into(),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
        }
    }

    #[test]
    fn resolve_as_the_manager_does() {
        let networks = [network(FRONT_ID, "front"), network(BACK_ID, "back")];
        let id = |r: &str| resolve(&networks, r).map(|n| n.id.as_str());
        assert_eq!(id("front"), Some(FRONT_ID));
        assert_eq!(id(FRONT_ID), Some(FRONT_ID));
        assert_eq!(id("f1a2"), Some(FRONT_ID), "unique ID prefix");
        assert_eq!(id("nosuch"), None);
        assert_eq!(id(""), None);
        // A network named like another's ID prefix: the name wins, as in the manager.
        let networks = [network(FRONT_ID, "front"), network(BACK_ID, "f1a2")];
        assert_eq!(
            resolve(&networks, "f1a2").map(|n| n.id.as_str()),
            Some(BACK_ID)
        );
        // An ambiguous prefix names nothing.
        let networks = [network("ab1", "x"), network("ab2", "y")];
        assert!(resolve(&networks, "ab").is_none());
    }

    #[test]
    fn network_add_and_rm() {
        let networks = [network(FRONT_ID, "front"), network(BACK_ID, "back")];
        struct Case {
            name: &'static str,
            attached: Vec<NetworkAttachmentConfig>,
            add: &'static [&'static str],
            rm: &'static [&'static str],
            /// The attachments after, or words the error must hold.
            expected: std::result::Result<Vec<NetworkAttachmentConfig>, Vec<&'static str>>,
        }
        let cases = [
            Case {
                name: "add by name",
                attached: vec![],
                add: &["front"],
                rm: &[],
                expected: Ok(vec![attachment("front", &[])]),
            },
            Case {
                name: "add long form with aliases",
                attached: vec![attachment(FRONT_ID, &[])],
                add: &["name=back,alias=db,alias=cache"],
                rm: &[],
                expected: Ok(vec![
                    attachment(FRONT_ID, &[]),
                    attachment("back", &["db", "cache"]),
                ]),
            },
            Case {
                name: "add a network already there by the same name",
                attached: vec![attachment("front", &[])],
                add: &["front"],
                rm: &[],
                expected: Err(vec!["service is already attached to network front"]),
            },
            Case {
                name: "add by name a network stored by ID",
                attached: vec![attachment(FRONT_ID, &[])],
                add: &["name=front,alias=web"],
                rm: &[],
                expected: Err(vec!["service is already attached to network front"]),
            },
            Case {
                name: "add by ID prefix a network stored by name",
                attached: vec![attachment("front", &[])],
                add: &["f1a2b3"],
                rm: &[],
                expected: Err(vec!["service is already attached to network f1a2b3"]),
            },
            Case {
                name: "add twice in one update",
                attached: vec![],
                add: &["back", "back"],
                rm: &[],
                expected: Err(vec!["service is already attached to network back"]),
            },
            Case {
                name: "add with a bad key",
                attached: vec![],
                add: &["name=back,aliases=db"],
                rm: &[],
                expected: Err(vec!["--network-add", "unknown key \"aliases\""]),
            },
            Case {
                name: "add with an empty name",
                attached: vec![],
                add: &["name=,alias=db"],
                rm: &[],
                expected: Err(vec!["--network-add", "name must not be empty"]),
            },
            Case {
                name: "add an unknown network (the manager refuses it)",
                attached: vec![],
                add: &["nosuch"],
                rm: &[],
                expected: Ok(vec![attachment("nosuch", &[])]),
            },
            Case {
                name: "rm by name a network stored by ID",
                attached: vec![attachment(FRONT_ID, &["web"]), attachment(BACK_ID, &[])],
                add: &[],
                rm: &["front"],
                expected: Ok(vec![attachment(BACK_ID, &[])]),
            },
            Case {
                name: "rm by ID a network stored by name",
                attached: vec![attachment("front", &[]), attachment("back", &[])],
                add: &[],
                rm: &[BACK_ID],
                expected: Ok(vec![attachment("front", &[])]),
            },
            Case {
                name: "rm by the stored text",
                attached: vec![attachment("front", &[])],
                add: &[],
                rm: &["front"],
                expected: Ok(vec![]),
            },
            Case {
                name: "rm a network not attached is ignored",
                attached: vec![attachment("front", &[])],
                add: &[],
                rm: &["back"],
                expected: Ok(vec![attachment("front", &[])]),
            },
            Case {
                name: "rm an unknown network is ignored",
                attached: vec![attachment("front", &[])],
                add: &[],
                rm: &["nosuch"],
                expected: Ok(vec![attachment("front", &[])]),
            },
            Case {
                name: "rm then add changes the aliases",
                attached: vec![attachment(FRONT_ID, &["old"])],
                add: &["name=front,alias=new"],
                rm: &["front"],
                expected: Ok(vec![attachment("front", &["new"])]),
            },
        ];
        for case in cases {
            let mut task = TaskSpec {
                networks: case.attached.clone(),
                ..Default::default()
            };
            let add: Vec<String> = case.add.iter().map(|s| s.to_string()).collect();
            let rm: Vec<String> = case.rm.iter().map(|s| s.to_string()).collect();
            let got = update_networks(&mut task, &add, &rm, &networks);
            match (got, case.expected) {
                (Ok(()), Ok(expected)) => assert_eq!(task.networks, expected, "{}", case.name),
                (Err(e), Err(words)) => {
                    let msg = e.to_string();
                    for w in words {
                        assert!(
                            msg.contains(w),
                            "{}: {msg:?} should contain {w:?}",
                            case.name
                        );
                    }
                }
                (got, expected) => panic!(
                    "{}: got {got:?} ({:?}), expected {expected:?}",
                    case.name, task.networks
                ),
            }
        }
    }
}
