//! Addresses as users type them: `ADDR`, `ADDR:PORT`, `IFACE` or `IFACE:PORT`, as docker
//! accepts for --listen-addr and --advertise-addr.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};

use anyhow::{anyhow, bail, Result};

pub const DEFAULT_PORT: u16 = 2377;

fn interface_ip(name: &str) -> Result<Option<IpAddr>> {
    let addrs =
        nix::ifaddrs::getifaddrs().map_err(|e| anyhow!("cannot list network interfaces: {e}"))?;
    let mut found_iface = false;
    for ifa in addrs {
        if ifa.interface_name != name {
            continue;
        }
        found_iface = true;
        if let Some(ip) = ifa
            .address
            .as_ref()
            .and_then(|a| a.as_sockaddr_in())
            .map(|s| IpAddr::V4(s.ip()))
        {
            return Ok(Some(ip));
        }
    }
    if found_iface {
        bail!("interface {name} has no IPv4 address");
    }
    Ok(None)
}

/// Splits `spec` into host and port (the port defaulting to `default_port`).
fn split_host_port(spec: &str, default_port: u16) -> Result<(String, u16)> {
    if let Ok(sa) = spec.parse::<SocketAddr>() {
        if sa.port() == 0 {
            bail!("invalid port in address {spec:?}");
        }
        return Ok((sa.ip().to_string(), sa.port()));
    }
    if spec.parse::<IpAddr>().is_ok() {
        return Ok((spec.to_string(), default_port));
    }
    match spec.rsplit_once(':') {
        Some((host, port)) => {
            let port: u16 = port
                .parse()
                .map_err(|_| anyhow!("invalid port in address {spec:?}"))?;
            if port == 0 {
                bail!("invalid port in address {spec:?}");
            }
            Ok((host.to_string(), port))
        }
        None => Ok((spec.to_string(), default_port)),
    }
}

/// Resolves ADDR|IFACE[:PORT] to an IP and port. Interface names give their IPv4 address.
pub fn resolve_local(spec: &str, default_port: u16) -> Result<(IpAddr, u16)> {
    let spec = spec.trim();
    if spec.is_empty() {
        bail!("empty address");
    }
    let (host, port) = split_host_port(spec, default_port)?;
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok((ip, port));
    }
    match interface_ip(&host)? {
        Some(ip) => Ok((ip, port)),
        None => {
            bail!("invalid address or interface name {host:?}: no such interface on this machine")
        }
    }
}

/// The IPv4 address of the interface holding the default route.
pub fn default_route_ip() -> Result<IpAddr> {
    let routes = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    for line in routes.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() > 2 && fields[1] == "00000000" {
            if let Some(ip) = interface_ip(fields[0])? {
                return Ok(ip);
            }
        }
    }
    bail!("could not choose an IP address to advertise: no default route; specify one with --advertise-addr")
}

/// The address to advertise: --advertise-addr if given, else the listen IP when specific,
/// else the default route's interface address. The port defaults to the listen port.
pub fn advertise_addr(advertise: Option<&str>, listen: SocketAddr) -> Result<SocketAddr> {
    if let Some(spec) = advertise {
        let (ip, port) = resolve_local(spec, listen.port())?;
        if ip.is_unspecified() {
            bail!("advertise address must be a non-zero IP address or network interface (with optional port number)");
        }
        return Ok(SocketAddr::new(ip, port));
    }
    if !listen.ip().is_unspecified() {
        return Ok(listen);
    }
    Ok(SocketAddr::new(default_route_ip()?, listen.port()))
}

/// The listen address (default 0.0.0.0:2377).
pub fn listen_addr(spec: Option<&str>) -> Result<SocketAddr> {
    match spec {
        None => Ok(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            DEFAULT_PORT,
        )),
        Some(spec) => {
            let (ip, port) = resolve_local(spec, DEFAULT_PORT)?;
            Ok(SocketAddr::new(ip, port))
        }
    }
}

/// A remote manager's address as given to `join` (host names are resolved).
pub fn remote_addr(spec: &str) -> Result<String> {
    let (host, port) = split_host_port(spec.trim(), DEFAULT_PORT)?;
    if host.is_empty() {
        bail!("invalid manager address {spec:?}");
    }
    let addr = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| anyhow!("cannot resolve manager address {spec:?}: {e}"))?
        .next()
        .ok_or_else(|| anyhow!("cannot resolve manager address {spec:?}"))?;
    Ok(addr.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_forms() {
        let cases: &[(&str, Option<(&str, u16)>)] = &[
            ("127.0.0.5", Some(("127.0.0.5", 2377))),
            ("127.0.0.5:4000", Some(("127.0.0.5", 4000))),
            ("lo", Some(("127.0.0.1", 2377))),
            ("lo:4001", Some(("127.0.0.1", 4001))),
            ("no-such-iface0", None),
            ("127.0.0.1:notaport", None),
            ("127.0.0.1:0", None),
        ];
        for (spec, expect) in cases {
            let got = resolve_local(spec, DEFAULT_PORT)
                .ok()
                .map(|(ip, port)| (ip.to_string(), port));
            assert_eq!(
                got,
                expect.map(|(ip, port)| (ip.to_string(), port)),
                "{spec}"
            );
        }
    }

    #[test]
    fn advertise_defaults_to_specific_listen_ip() {
        let listen: SocketAddr = "127.0.0.9:2377".parse().expect("addr");
        assert_eq!(advertise_addr(None, listen).expect("addr"), listen);
        assert!(advertise_addr(Some("0.0.0.0"), listen).is_err());
        assert_eq!(
            advertise_addr(Some("127.0.0.3"), listen)
                .expect("addr")
                .to_string(),
            "127.0.0.3:2377"
        );
    }
}
