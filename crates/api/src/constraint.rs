//! Placement constraints as swarm users write them: `node.hostname==web1`,
//! `node.labels.zone!=east`, `node.role==manager`, `engine.labels.gpu==true`.

use std::fmt;
use std::net::IpAddr;

use crate::pb::{Node, NodeRole, Placement};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Id,
    Hostname,
    Role,
    Ip,
    Os,
    Arch,
    NodeLabel(String),
    EngineLabel(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    pub key: Key,
    pub equal: bool,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid constraint {text:?}: {reason}")]
pub struct ConstraintError {
    pub text: String,
    pub reason: String,
}

impl Constraint {
    pub fn parse(text: &str) -> Result<Self, ConstraintError> {
        let err = |reason: &str| ConstraintError {
            text: text.to_string(),
            reason: reason.to_string(),
        };
        let (left, right, equal) = if let Some((l, r)) = text.split_once("!=") {
            (l, r, false)
        } else if let Some((l, r)) = text.split_once("==") {
            (l, r, true)
        } else {
            return Err(err("expected KEY==VALUE or KEY!=VALUE"));
        };
        let key_text = left.trim();
        let value = right.trim().to_string();
        if value.is_empty() {
            return Err(err("the value is empty"));
        }
        if value.contains("==") || value.contains("!=") {
            return Err(err("more than one operator"));
        }
        let key = match key_text.to_ascii_lowercase().as_str() {
            "node.id" => Key::Id,
            "node.hostname" => Key::Hostname,
            "node.role" => Key::Role,
            "node.ip" => Key::Ip,
            "node.platform.os" => Key::Os,
            "node.platform.arch" => Key::Arch,
            lower => {
                if let Some(label) = key_text
                    .strip_prefix("node.labels.")
                    .filter(|_| lower.starts_with("node.labels."))
                {
                    Key::NodeLabel(label.to_string())
                } else if let Some(label) = key_text
                    .strip_prefix("engine.labels.")
                    .filter(|_| lower.starts_with("engine.labels."))
                {
                    Key::EngineLabel(label.to_string())
                } else {
                    return Err(err(
                        "unknown key: use node.id, node.hostname, node.role, node.ip, node.platform.os, node.platform.arch, node.labels.<label> or engine.labels.<label>",
                    ));
                }
            }
        };
        match &key {
            Key::NodeLabel(l) | Key::EngineLabel(l) if l.is_empty() => {
                return Err(err("the label name is empty"))
            }
            Key::Role if value != "manager" && value != "worker" => {
                return Err(err("node.role is manager or worker"))
            }
            Key::Ip if parse_ip_or_cidr(&value).is_none() => {
                return Err(err("node.ip takes an IP address or a CIDR range"))
            }
            _ => {}
        }
        Ok(Constraint { key, equal, value })
    }

    /// Whether `node` satisfies the constraint.
    pub fn matches(&self, node: &Node) -> bool {
        let desc = node.description.as_ref();
        let found: Option<String> = match &self.key {
            Key::Id => Some(node.id.clone()),
            Key::Hostname => desc.map(|d| d.hostname.clone()),
            Key::Role => Some(
                if node.role() == NodeRole::Manager {
                    "manager"
                } else {
                    "worker"
                }
                .to_string(),
            ),
            Key::Ip => {
                let addr = node
                    .status
                    .as_ref()
                    .map(|s| s.addr.clone())
                    .unwrap_or_default();
                let ip = addr
                    .parse::<IpAddr>()
                    .ok()
                    .or_else(|| addr.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()));
                let hit = match (ip, parse_ip_or_cidr(&self.value)) {
                    (Some(ip), Some((net, prefix))) => in_network(ip, net, prefix),
                    _ => false,
                };
                return hit == self.equal;
            }
            Key::Os => desc.and_then(|d| d.platform.as_ref()).map(|p| p.os.clone()),
            Key::Arch => desc
                .and_then(|d| d.platform.as_ref())
                .map(|p| p.architecture.clone()),
            Key::NodeLabel(l) => node.spec.as_ref().and_then(|s| s.labels.get(l).cloned()),
            Key::EngineLabel(l) => desc
                .and_then(|d| d.engine.as_ref())
                .and_then(|e| e.labels.get(l).cloned()),
        };
        // Values compare case-insensitively, as swarm's; a missing label never equals.
        let equal = found.is_some_and(|f| f.eq_ignore_ascii_case(&self.value));
        equal == self.equal
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = match &self.key {
            Key::Id => "node.id".to_string(),
            Key::Hostname => "node.hostname".to_string(),
            Key::Role => "node.role".to_string(),
            Key::Ip => "node.ip".to_string(),
            Key::Os => "node.platform.os".to_string(),
            Key::Arch => "node.platform.arch".to_string(),
            Key::NodeLabel(l) => format!("node.labels.{l}"),
            Key::EngineLabel(l) => format!("engine.labels.{l}"),
        };
        write!(
            f,
            "{key}{}{}",
            if self.equal { "==" } else { "!=" },
            self.value
        )
    }
}

fn parse_ip_or_cidr(s: &str) -> Option<(IpAddr, u8)> {
    match s.split_once('/') {
        Some((ip, prefix)) => {
            let ip: IpAddr = ip.parse().ok()?;
            let prefix: u8 = prefix.parse().ok()?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            (prefix <= max).then_some((ip, prefix))
        }
        None => {
            let ip: IpAddr = s.parse().ok()?;
            Some((ip, if ip.is_ipv4() { 32 } else { 128 }))
        }
    }
}

fn in_network(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix))
            };
            (u32::from(a) & mask) == (u32::from(b) & mask)
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix))
            };
            (u128::from(a) & mask) == (u128::from(b) & mask)
        }
        _ => false,
    }
}

/// Why a node does not fit a placement's static filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mismatch {
    Constraints,
    Platform,
}

/// The part of a placement that depends on the node alone — its constraints and platforms —
/// as the scheduler (for replicated tasks) and the global orchestrator (which nodes get a
/// task) both apply it.
#[derive(Debug, Clone, Default)]
pub struct NodeFilter {
    constraints: Vec<Constraint>,
    /// (os, architecture); an empty field matches any.
    platforms: Vec<(String, String)>,
}

impl NodeFilter {
    /// Specs are validated at the API edge; a constraint that no longer parses matches nothing
    /// (it is dropped, as swarm does).
    pub fn of(placement: &Placement) -> Self {
        NodeFilter {
            constraints: placement
                .constraints
                .iter()
                .filter_map(|c| Constraint::parse(c).ok())
                .collect(),
            platforms: placement
                .platforms
                .iter()
                .map(|p| (p.os.clone(), p.architecture.clone()))
                .collect(),
        }
    }

    /// Whether `node` fits, or the first filter it fails.
    pub fn check(&self, node: &Node) -> Result<(), Mismatch> {
        if !self.constraints.iter().all(|c| c.matches(node)) {
            return Err(Mismatch::Constraints);
        }
        if !self.platforms.is_empty() {
            let p = node
                .description
                .as_ref()
                .and_then(|d| d.platform.clone())
                .unwrap_or_default();
            let fits = self.platforms.iter().any(|(os, arch)| {
                (os.is_empty() || os.eq_ignore_ascii_case(&p.os))
                    && (arch.is_empty() || arch.eq_ignore_ascii_case(&p.architecture))
            });
            if !fits {
                return Err(Mismatch::Platform);
            }
        }
        Ok(())
    }
}

/// Parses all of a task's constraints.
pub fn parse_all(texts: &[String]) -> Result<Vec<Constraint>, ConstraintError> {
    texts.iter().map(|t| Constraint::parse(t)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::{EngineDescription, NodeDescription, NodeSpec, NodeStatus, Platform};

    fn node() -> Node {
        Node {
            id: "abc123".into(),
            role: NodeRole::Worker as i32,
            spec: Some(NodeSpec {
                labels: [("zone".to_string(), "east".to_string())].into(),
                ..Default::default()
            }),
            description: Some(NodeDescription {
                hostname: "web1".into(),
                platform: Some(Platform {
                    architecture: "x86_64".into(),
                    os: "linux".into(),
                }),
                engine: Some(EngineDescription {
                    labels: [("gpu".to_string(), "true".to_string())].into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                addr: "10.1.2.3".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn constraint_table() {
        let cases = [
            ("node.hostname==web1", true),
            ("node.hostname==WEB1", true),
            ("node.hostname!=web1", false),
            ("node.id==abc123", true),
            ("node.role==worker", true),
            ("node.role==manager", false),
            ("node.role!=manager", true),
            ("node.ip==10.1.2.3", true),
            ("node.ip==10.1.0.0/16", true),
            ("node.ip!=10.2.0.0/16", true),
            ("node.platform.os==linux", true),
            ("node.platform.arch==x86_64", true),
            ("node.labels.zone==east", true),
            ("node.labels.zone!=east", false),
            ("node.labels.rack==a", false),
            ("node.labels.rack!=a", true),
            ("engine.labels.gpu==true", true),
            (" node.hostname == web1 ", true),
        ];
        for (text, want) in cases {
            let c = Constraint::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(c.matches(&node()), want, "{text}");
        }
    }

    #[test]
    fn malformed_constraints_are_refused() {
        let cases = [
            "node.hostname=web1",
            "node.hostname",
            "node.hostname==",
            "node.color==red",
            "node.labels.==x",
            "node.role==boss",
            "node.ip==not-an-ip",
            "node.ip==10.0.0.0/40",
            "a==b==c",
            "",
        ];
        for text in cases {
            assert!(
                Constraint::parse(text).is_err(),
                "{text:?} should be refused"
            );
        }
    }

    /// The filter the scheduler and the global orchestrator share: constraints first, then
    /// platforms; an empty platform field matches any.
    #[test]
    fn node_filter_cases() {
        let placement = |constraints: &[&str], platforms: &[(&str, &str)]| Placement {
            constraints: constraints.iter().map(|c| c.to_string()).collect(),
            platforms: platforms
                .iter()
                .map(|(os, arch)| Platform {
                    os: os.to_string(),
                    architecture: arch.to_string(),
                })
                .collect(),
            ..Default::default()
        };
        let cases: [(&str, Placement, Result<(), Mismatch>); 7] = [
            ("nothing asked", placement(&[], &[]), Ok(())),
            (
                "constraint met",
                placement(&["node.labels.zone==east"], &[]),
                Ok(()),
            ),
            (
                "constraint not met",
                placement(&["node.labels.zone==west"], &[]),
                Err(Mismatch::Constraints),
            ),
            (
                "platform met, any case",
                placement(&[], &[("Linux", "X86_64")]),
                Ok(()),
            ),
            ("os only", placement(&[], &[("linux", "")]), Ok(())),
            (
                "platform not met",
                placement(&[], &[("windows", ""), ("linux", "arm64")]),
                Err(Mismatch::Platform),
            ),
            (
                "constraints are checked first",
                placement(&["node.role==manager"], &[("windows", "")]),
                Err(Mismatch::Constraints),
            ),
        ];
        for (name, p, want) in cases {
            assert_eq!(NodeFilter::of(&p).check(&node()), want, "{name}");
        }
    }
}
