//! Overlay networks: the rules for names, subnets and gateways (IPv4 CIDRs), and the default
//! address pool, shared by the CLI, the control API and the allocator.

use std::fmt;
use std::net::Ipv4Addr;

/// The only network driver.
pub const OVERLAY: &str = "overlay";
/// The routing mesh's network, made by `init`.
pub const INGRESS_NAME: &str = "ingress";
pub const INGRESS_SUBNET: &str = "10.0.0.0/24";
pub const INGRESS_VNI: u32 = 4096;
/// Networks made without `--subnet` get the next free /24 of this pool (as swarm's default).
pub const DEFAULT_POOL: &str = "10.0.0.0/8";
pub const DEFAULT_PREFIX: u8 = 24;
/// VXLAN IDs of user networks start above the ingress's.
pub const FIRST_VNI: u32 = INGRESS_VNI + 1;
/// The largest VXLAN ID (24 bits).
pub const MAX_VNI: u32 = (1 << 24) - 1;

/// An IPv4 network: its address (host bits zero) and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cidr {
    pub addr: u32,
    pub prefix: u8,
}

impl Cidr {
    /// Parses `A.B.C.D/N`; the address must be the network's own (host bits zero), as docker
    /// requires.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let invalid = || format!("invalid subnet {s:?}: expected an IPv4 CIDR like 10.1.2.0/24");
        let (ip, prefix) = s.split_once('/').ok_or_else(invalid)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| invalid())?;
        let prefix: u8 = prefix.parse().map_err(|_| invalid())?;
        if prefix > 32 {
            return Err(invalid());
        }
        let addr = u32::from(ip);
        let cidr = Cidr { addr, prefix };
        if addr & !cidr.mask() != 0 {
            return Err(format!(
                "invalid subnet {s:?}: the address has host bits set (did you mean {}?)",
                Cidr {
                    addr: addr & cidr.mask(),
                    prefix
                }
            ));
        }
        if prefix > 29 {
            return Err(format!(
                "invalid subnet {s:?}: too small for a network (at most /29)"
            ));
        }
        Ok(cidr)
    }

    pub fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }

    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    pub fn contains(&self, ip: u32) -> bool {
        ip & self.mask() == self.addr
    }

    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }

    /// The first usable address (the default gateway).
    pub fn first_host(&self) -> u32 {
        self.addr + 1
    }

    /// The last usable address (before the broadcast address).
    pub fn last_host(&self) -> u32 {
        self.addr + (self.size() as u32) - 2
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.addr), self.prefix)
    }
}

/// Parses a gateway for `subnet`: an address inside it that is neither the network's nor the
/// broadcast address.
pub fn parse_gateway(gateway: &str, subnet: &Cidr) -> Result<u32, String> {
    let ip: Ipv4Addr = gateway
        .parse()
        .map_err(|_| format!("invalid gateway {gateway:?}: expected an IPv4 address"))?;
    let ip = u32::from(ip);
    if !subnet.contains(ip) || ip < subnet.first_host() || ip > subnet.last_host() {
        return Err(format!(
            "invalid gateway {gateway}: not a usable address of subnet {subnet}"
        ));
    }
    Ok(ip)
}

/// docker's network name rule.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid network name {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed, at most 64 characters"
        ))
    }
}

/// A network alias (and the name a service answers to in DNS) is one DNS label.
pub fn check_alias(alias: &str) -> Result<(), String> {
    let b = alias.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-';
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid network alias {alias:?}: a DNS label of 1-63 letters, digits and '-', not starting or ending with '-'"
        ))
    }
}

/// Whether a task still holds its network addresses: until the agent reports it ended. An
/// ended task's record keeps its attachments (for `inspect`), but the addresses are free.
pub fn holds_addresses(task: &crate::pb::Task) -> bool {
    task.observed_state() <= crate::pb::TaskState::Running
}

/// The published ports the manager picks from when a spec names none (docker's range).
pub const MESH_PORTS: std::ops::RangeInclusive<u32> = 30000..=32767;

/// Whether a published port goes through the routing mesh (modes ingress and local).
pub fn through_mesh(p: &crate::pb::PortConfig) -> bool {
    p.publish_mode() != crate::pb::PublishMode::Host
}

/// Whether a service (or task) with this endpoint publishes through the mesh, so its tasks
/// need an address on the ingress network.
pub fn uses_mesh(endpoint: Option<&crate::pb::EndpointSpec>) -> bool {
    endpoint.is_some_and(|e| e.ports.iter().any(through_mesh))
}

/// Whether a task lives on the ingress network: it publishes through the mesh, or it has
/// host-mode ports while its netns is an overlay sandbox (`networks`), which the engine cannot
/// bind; its node then delivers those ports itself, as in local mode.
pub fn on_ingress(networks: bool, endpoint: Option<&crate::pb::EndpointSpec>) -> bool {
    uses_mesh(endpoint)
        || (networks && endpoint.is_some_and(|e| e.ports.iter().any(|p| !through_mesh(p))))
}

/// A port's mode as users write it.
pub fn publish_mode_name(p: &crate::pb::PortConfig) -> &'static str {
    match p.publish_mode() {
        crate::pb::PublishMode::Ingress => "ingress",
        crate::pb::PublishMode::Host => "host",
        crate::pb::PublishMode::Local => "local",
    }
}

/// The next free subnet of the default pool: the lowest /24 of 10.0.0.0/8 that overlaps none
/// of `used`.
pub fn next_free_subnet(used: &[Cidr]) -> Option<Cidr> {
    let pool = Cidr::parse(DEFAULT_POOL).ok()?;
    let step = 1u32 << (32 - u32::from(DEFAULT_PREFIX));
    let count = (pool.size() / u64::from(step)) as u32;
    (0..count)
        .map(|i| Cidr {
            addr: pool.addr + i * step,
            prefix: DEFAULT_PREFIX,
        })
        .find(|c| !used.iter().any(|u| u.overlaps(c)))
}

/// The lowest VXLAN ID of a user network that none of `used` has.
pub fn next_free_vni(used: &[u32]) -> Option<u32> {
    let mut sorted: Vec<u32> = used.iter().copied().filter(|v| *v >= FIRST_VNI).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut next = FIRST_VNI;
    for v in sorted {
        if v > next {
            break;
        }
        next = v + 1;
    }
    (next <= MAX_VNI).then_some(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_are_dns_labels() {
        for good in ["db", "web-1", "A9", &"x".repeat(63)] {
            assert_eq!(check_alias(good), Ok(()), "{good}");
        }
        for bad in ["", "-db", "db-", "a.b", "a_b", "a b", &"x".repeat(64)] {
            assert!(check_alias(bad).is_err(), "{bad:?}");
        }
    }

    fn cidr(s: &str) -> Cidr {
        Cidr::parse(s).expect(s)
    }

    #[test]
    fn subnets_parse_as_docker_wants_them() {
        assert_eq!(cidr("10.1.2.0/24").to_string(), "10.1.2.0/24");
        assert_eq!(cidr("192.168.0.0/16").size(), 65536);
        for (bad, says) in [
            ("10.1.2.0", "IPv4 CIDR"),
            ("10.1.2.300/24", "IPv4 CIDR"),
            ("10.1.2.0/33", "IPv4 CIDR"),
            ("fd00::/64", "IPv4 CIDR"),
            ("10.1.2.5/24", "did you mean 10.1.2.0/24?"),
            ("10.1.2.0/30", "at most /29"),
        ] {
            let err = Cidr::parse(bad).expect_err(bad);
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn overlap_and_gateways() {
        assert!(cidr("10.0.0.0/8").overlaps(&cidr("10.5.0.0/16")));
        assert!(cidr("10.5.0.0/16").overlaps(&cidr("10.0.0.0/8")));
        assert!(!cidr("10.0.1.0/24").overlaps(&cidr("10.0.2.0/24")));
        let net = cidr("10.9.0.0/24");
        assert_eq!(
            parse_gateway("10.9.0.1", &net),
            Ok(u32::from(Ipv4Addr::new(10, 9, 0, 1)))
        );
        for bad in ["10.9.0.0", "10.9.0.255", "10.8.0.1", "gw"] {
            assert!(parse_gateway(bad, &net).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_pool_hands_out_the_lowest_free_24_and_vni() {
        // (name, subnets in use, the next one)
        let cases: [(&str, Vec<Cidr>, Option<&str>); 4] = [
            (
                "only ingress",
                vec![cidr("10.0.0.0/24")],
                Some("10.0.1.0/24"),
            ),
            (
                "a gap is reused",
                vec![cidr("10.0.0.0/24"), cidr("10.0.2.0/24")],
                Some("10.0.1.0/24"),
            ),
            (
                "a user /16 is skipped whole",
                vec![cidr("10.0.0.0/24"), cidr("10.0.0.0/16")],
                Some("10.1.0.0/24"),
            ),
            ("the pool is full", vec![cidr("10.0.0.0/8")], None),
        ];
        for (name, used, want) in cases {
            assert_eq!(
                next_free_subnet(&used).map(|c| c.to_string()).as_deref(),
                want,
                "{name}"
            );
        }
        assert_eq!(next_free_vni(&[]), Some(FIRST_VNI));
        assert_eq!(
            next_free_vni(&[INGRESS_VNI, FIRST_VNI]),
            Some(FIRST_VNI + 1)
        );
        assert_eq!(
            next_free_vni(&[FIRST_VNI, FIRST_VNI + 2]),
            Some(FIRST_VNI + 1)
        );
        assert!(check_name("front_end.v2-x").is_ok());
        assert!(check_name("-x").is_err() && check_name("a b").is_err() && check_name("").is_err());
    }
}
