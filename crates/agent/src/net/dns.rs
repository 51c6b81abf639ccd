//! The DNS resolver of an overlay network on this node (service discovery). There is one per
//! network: it listens on UDP 53 at the network's gateway address inside the network's sandbox
//! netns, where tasks' resolv.conf points. Names the agent's table knows are answered here (A
//! records, TTL 0, since endpoints move); anything else is relayed as-is to the node's own
//! resolvers, from a socket in the agent's netns (the sandbox has no way out, the node does).
//!
//! The wire format is the small part of RFC 1035 a stub resolver's query needs: one question,
//! no compression in queries, answers pointing back at the question.

use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Where `ip netns add` puts the named network namespaces.
const NETNS_DIR: &str = "/run/netns";

/// A forwarded query gets this long, over all upstreams, before the client gets SERVFAIL
/// (well under the 5 s a stub resolver waits, so it can retry).
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);
/// Forwards in flight per network; past this, SERVFAIL at once instead of one more task and
/// socket (a task flooding unknown names must not exhaust the agent).
const MAX_FORWARDS: usize = 256;
/// Large enough for any UDP datagram, so nothing is cut short.
const MAX_PACKET: usize = 65535;
/// Our own answers carry no EDNS, so they must fit the classic UDP limit.
const MAX_UDP_REPLY: usize = 512;

const HEADER_LEN: usize = 12;
const MAX_LABEL: usize = 63;
/// The longest name on the wire, length octets and root included.
const MAX_NAME: usize = 255;
/// Pointer (2), type (2), class (2), TTL (4), length (2), address (4).
const ANSWER_LEN: usize = 16;

pub const TYPE_A: u16 = 1;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_ANY: u16 = 255;
pub const CLASS_IN: u16 = 1;
pub const CLASS_ANY: u16 = 255;

const FLAG_QR: u16 = 0x8000;
const OPCODE_MASK: u16 = 0x7800;
const FLAG_AA: u16 = 0x0400;
const FLAG_RD: u16 = 0x0100;
const FLAG_RA: u16 = 0x0080;

/// What the agent's table says about a name, asked by `client` (the querying container's
/// address) on network `network_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Addrs(Vec<Ipv4Addr>),
    /// The name is known but has no address now (e.g. no tasks under dnsrr): NOERROR, no
    /// records, so the client does not go on to search domains or upstream names.
    NoData,
    /// Not ours: forward.
    Unknown,
}

/// The agent's name table, as the resolver sees it.
pub trait Lookup: Send + Sync + 'static {
    /// `name` is lower-cased, without the trailing dot.
    fn lookup(&self, network_id: &str, client: Ipv4Addr, name: &str) -> Answer;
}

/// Response codes we send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Rcode {
    NoError = 0,
    FormErr = 1,
    ServFail = 2,
    NxDomain = 3,
    NotImp = 4,
    Refused = 5,
}

/// One parsed query: what answering needs, plus where its question sits in the packet so
/// the response can echo it byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub id: u16,
    pub flags: u16,
    /// Lower-cased, no trailing dot ("" for the root); bytes that are not plain printable
    /// ASCII, and dots inside a label, appear as `\DDD`, so they can never match a table name.
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
    /// The question section (name, type, class) in the packet.
    pub question: Range<usize>,
}

impl Query {
    /// 0 is a standard query; anything else we do not implement.
    pub fn opcode(&self) -> u8 {
        ((self.flags & OPCODE_MASK) >> 11) as u8
    }
}

fn be16(packet: &[u8], at: usize) -> Option<u16> {
    let b: [u8; 2] = packet.get(at..at.checked_add(2)?)?.try_into().ok()?;
    Some(u16::from_be_bytes(b))
}

/// Parses a query; None for anything that is not one well-formed question (responses,
/// truncation, qdcount other than 1, compression pointers, over-long labels or names), which
/// the server drops. Other sections (an EDNS OPT record) are left alone.
pub fn parse_query(packet: &[u8]) -> Option<Query> {
    if packet.len() < HEADER_LEN {
        return None;
    }
    let id = be16(packet, 0)?;
    let flags = be16(packet, 2)?;
    if flags & FLAG_QR != 0 {
        // A response sent to us: answering it could start a loop.
        return None;
    }
    if be16(packet, 4)? != 1 {
        return None;
    }
    let (name, end) = parse_name(packet, HEADER_LEN)?;
    let qtype = be16(packet, end)?;
    let qclass = be16(packet, end + 2)?;
    Some(Query {
        id,
        flags,
        name,
        qtype,
        qclass,
        question: HEADER_LEN..end + 4,
    })
}

/// Reads an uncompressed name at `start`; returns it and the offset past its root octet.
/// A query has nothing earlier to point at, so a pointer (or any other label type) is refused.
fn parse_name(packet: &[u8], start: usize) -> Option<(String, usize)> {
    let mut name = String::new();
    let mut at = start;
    loop {
        let len = usize::from(*packet.get(at)?);
        if len == 0 {
            return Some((name, at + 1));
        }
        // Lengths over 63 are the 0x40/0x80/0xC0 label types, pointers among them.
        if len > MAX_LABEL {
            return None;
        }
        let label = packet.get(at + 1..at + 1 + len)?;
        at += 1 + len;
        if at - start + 1 > MAX_NAME {
            return None;
        }
        if !name.is_empty() {
            name.push('.');
        }
        for &b in label {
            match b {
                b'.' | b'\\' => push_escaped(&mut name, b),
                0x21..=0x7e => name.push(char::from(b.to_ascii_lowercase())),
                _ => push_escaped(&mut name, b),
            }
        }
    }
}

fn push_escaped(name: &mut String, b: u8) {
    name.push('\\');
    name.push_str(&format!("{b:03}"));
}

/// Builds a response to `query` (whose packet is `original`): QR and RA set, opcode and RD
/// copied, the question echoed, one A record per address (TTL 0, name given by a pointer to the
/// question). Addresses that would not fit 512 bytes are left out rather than setting TC: we
/// have no TCP side to send the client to, and some of a service's addresses serve as well.
pub fn respond(
    query: &Query,
    original: &[u8],
    rcode: Rcode,
    addrs: &[Ipv4Addr],
    authoritative: bool,
) -> Vec<u8> {
    let question = original.get(query.question.clone()).unwrap_or_default();
    // Answers point at the question; without one there is nothing to answer for.
    let room = if question.is_empty() {
        0
    } else {
        MAX_UDP_REPLY.saturating_sub(HEADER_LEN + question.len()) / ANSWER_LEN
    };
    let addrs = addrs.get(..addrs.len().min(room)).unwrap_or_default();
    let mut flags = FLAG_QR | FLAG_RA | (query.flags & (OPCODE_MASK | FLAG_RD)) | rcode as u16;
    if authoritative {
        flags |= FLAG_AA;
    }
    let qdcount: u16 = if question.is_empty() { 0 } else { 1 };
    let ancount = u16::try_from(addrs.len()).unwrap_or(0);
    let mut out = Vec::with_capacity(HEADER_LEN + question.len() + addrs.len() * ANSWER_LEN);
    for word in [query.id, flags, qdcount, ancount, 0, 0] {
        out.extend_from_slice(&word.to_be_bytes());
    }
    out.extend_from_slice(question);
    for addr in addrs {
        out.extend_from_slice(&[0xC0, 0x0C]);
        out.extend_from_slice(&TYPE_A.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&4u16.to_be_bytes());
        out.extend_from_slice(&addr.octets());
    }
    out
}

/// Our reply to a query from what the table said; None: not ours, forward it.
pub fn local_reply(query: &Query, packet: &[u8], answer: &Answer) -> Option<Vec<u8>> {
    if query.opcode() != 0 {
        return Some(respond(query, packet, Rcode::NotImp, &[], false));
    }
    let wants_a =
        matches!(query.qtype, TYPE_A | TYPE_ANY) && matches!(query.qclass, CLASS_IN | CLASS_ANY);
    match answer {
        Answer::Unknown => None,
        Answer::Addrs(addrs) if wants_a => {
            Some(respond(query, packet, Rcode::NoError, addrs, true))
        }
        // AAAA and the rest of a name we know: it exists, it just has no such records, so
        // the client does not wait on a forward that cannot know it.
        Answer::Addrs(_) | Answer::NoData => {
            Some(respond(query, packet, Rcode::NoError, &[], true))
        }
    }
}

/// Binds a UDP socket at `addr` inside the named netns (/run/netns/<netns>): from a fresh std
/// thread that setns()es into it, so no tokio worker (nor this thread) changes netns. The
/// socket keeps the netns it was made in; it is non-blocking, ready for
/// `tokio::net::UdpSocket::from_std`. Blocks only for the thread's short life.
pub fn bind_in_netns(netns: &str, addr: SocketAddrV4) -> io::Result<std::net::UdpSocket> {
    if netns.is_empty() || netns.contains('/') || netns == "." || netns == ".." {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad netns name {netns:?}"),
        ));
    }
    let path = Path::new(NETNS_DIR).join(netns);
    std::thread::Builder::new()
        .name("orch-dns-bind".into())
        .spawn(move || -> io::Result<std::net::UdpSocket> {
            let ns = File::open(&path)?;
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
            let socket = std::net::UdpSocket::bind(addr)?;
            socket.set_nonblocking(true)?;
            Ok(socket)
        })?
        .join()
        .map_err(|_| io::Error::other("netns bind thread panicked"))?
}

/// The node's upstream resolvers from a resolv.conf text (nameserver lines, IPv4 and IPv6,
/// port 53), in order, without repeats. Loopback ones (systemd-resolved's 127.0.0.53) are kept:
/// forwards leave from the agent's netns, where they answer.
pub fn upstreams_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or_default();
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(addr) = words.next().and_then(nameserver) else {
            continue;
        };
        if !out.contains(&addr) {
            out.push(addr);
        }
    }
    out
}

/// One nameserver address; an IPv6 link-local one may carry its zone (`fe80::1%eth0`).
fn nameserver(word: &str) -> Option<SocketAddr> {
    if let Ok(ip) = word.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, 53));
    }
    let (ip, zone) = word.split_once('%')?;
    let ip: Ipv6Addr = ip.parse().ok()?;
    let scope = match zone.parse::<u32>() {
        Ok(index) => index,
        Err(_) => nix::net::if_::if_nametoindex(zone).ok()?,
    };
    Some(SocketAddr::V6(SocketAddrV6::new(ip, 53, 0, scope)))
}

/// The node's upstreams from /etc/resolv.conf; none when it cannot be read.
pub fn node_upstreams() -> Vec<SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .map(|text| upstreams_from_resolv_conf(&text))
        .unwrap_or_default()
}

/// Serves until `token` is cancelled (forwards in flight end with it). See the module doc;
/// malformed packets are dropped, never answered.
pub async fn serve(
    socket: UdpSocket,
    network_id: String,
    lookup: Arc<dyn Lookup>,
    upstreams: Vec<SocketAddr>,
    token: CancellationToken,
) {
    let socket = Arc::new(socket);
    let upstreams: Arc<[SocketAddr]> = upstreams.into();
    let forwards = Arc::new(Semaphore::new(MAX_FORWARDS));
    let mut buf = vec![0u8; MAX_PACKET];
    loop {
        let received = tokio::select! {
            () = token.cancelled() => return,
            r = socket.recv_from(&mut buf) => r,
        };
        let (len, from) = match received {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(network = %network_id, "dns: receive failed: {e}");
                // Not a busy loop should the error persist.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let packet = buf.get(..len).unwrap_or_default();
        let Some(query) = parse_query(packet) else {
            tracing::trace!(network = %network_id, %from, "dns: dropped a malformed packet");
            continue;
        };
        let client = match from.ip() {
            IpAddr::V4(a) => a,
            IpAddr::V6(a) => a.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED),
        };
        let reply = if query.opcode() != 0 {
            local_reply(&query, packet, &Answer::Unknown)
        } else {
            let answer = lookup.lookup(&network_id, client, &query.name);
            local_reply(&query, packet, &answer)
        };
        if let Some(reply) = reply {
            send(&socket, &reply, from).await;
            continue;
        }
        if upstreams.is_empty() {
            let reply = respond(&query, packet, Rcode::ServFail, &[], false);
            send(&socket, &reply, from).await;
            continue;
        }
        let Ok(permit) = forwards.clone().try_acquire_owned() else {
            tracing::debug!(network = %network_id, "dns: too many forwards in flight");
            let reply = respond(&query, packet, Rcode::ServFail, &[], false);
            send(&socket, &reply, from).await;
            continue;
        };
        tokio::spawn(forward(
            socket.clone(),
            from,
            query,
            packet.to_vec(),
            upstreams.clone(),
            permit,
            token.clone(),
        ));
    }
}

async fn send(socket: &UdpSocket, reply: &[u8], to: SocketAddr) {
    if let Err(e) = socket.send_to(reply, to).await {
        tracing::debug!(%to, "dns: send failed: {e}");
    }
}

/// Relays one query upstream and its answer (or SERVFAIL) back to the client.
async fn forward(
    socket: Arc<UdpSocket>,
    client: SocketAddr,
    query: Query,
    packet: Vec<u8>,
    upstreams: Arc<[SocketAddr]>,
    _permit: OwnedSemaphorePermit,
    token: CancellationToken,
) {
    let relayed = tokio::select! {
        () = token.cancelled() => return,
        r = relay(&packet, &upstreams) => r,
    };
    let reply = match relayed {
        Some(mut reply) => {
            if let Some(id) = reply.get_mut(0..2) {
                id.copy_from_slice(&query.id.to_be_bytes());
            }
            reply
        }
        None => respond(&query, &packet, Rcode::ServFail, &[], false),
    };
    send(&socket, &reply, client).await;
}

/// Asks the upstreams in turn, each with an even share of what is left of FORWARD_TIMEOUT; an
/// upstream that refuses at once (ICMP unreachable) hands its share on. The query goes out
/// under a fresh random ID from a fresh socket (random port), so a spoofed answer must guess
/// both.
async fn relay(packet: &[u8], upstreams: &[SocketAddr]) -> Option<Vec<u8>> {
    let deadline = Instant::now() + FORWARD_TIMEOUT;
    let id: u16 = rand::random();
    let mut out = packet.to_vec();
    out.get_mut(0..2)?.copy_from_slice(&id.to_be_bytes());
    for (i, &upstream) in upstreams.iter().enumerate() {
        let left = u32::try_from(upstreams.len() - i).unwrap_or(u32::MAX);
        let share = deadline.saturating_duration_since(Instant::now()) / left;
        match tokio::time::timeout(share, ask(&out, upstream, id)).await {
            Ok(Ok(reply)) => return Some(reply),
            Ok(Err(e)) => tracing::debug!(%upstream, "dns: forward failed: {e}"),
            Err(_) => tracing::debug!(%upstream, "dns: forward timed out"),
        }
    }
    None
}

/// One try at one upstream, from a socket in this (the agent's) netns; connected, so only the
/// upstream's datagrams arrive.
async fn ask(packet: &[u8], upstream: SocketAddr, id: u16) -> io::Result<Vec<u8>> {
    let local: SocketAddr = match upstream {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(upstream).await?;
    socket.send(packet).await?;
    let mut buf = vec![0u8; MAX_PACKET];
    loop {
        let len = socket.recv(&mut buf).await?;
        let reply = buf.get(..len).unwrap_or_default();
        let is_answer = be16(reply, 0) == Some(id)
            && be16(reply, 2).is_some_and(|flags| flags & FLAG_QR != 0)
            && reply.len() >= HEADER_LEN;
        if is_answer {
            return Ok(reply.to_vec());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query packet for `labels` (raw label bytes) with the given header words.
    fn packet(id: u16, flags: u16, qdcount: u16, labels: &[&[u8]], qtype: u16) -> Vec<u8> {
        let mut p = Vec::new();
        for word in [id, flags, qdcount, 0, 0, 0] {
            p.extend_from_slice(&word.to_be_bytes());
        }
        for label in labels {
            p.push(u8::try_from(label.len()).expect("test labels fit a length octet"));
            p.extend_from_slice(label);
        }
        p.push(0);
        p.extend_from_slice(&qtype.to_be_bytes());
        p.extend_from_slice(&CLASS_IN.to_be_bytes());
        p
    }

    fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
        let labels: Vec<&[u8]> = name
            .split('.')
            .filter(|l| !l.is_empty())
            .map(str::as_bytes)
            .collect();
        packet(id, FLAG_RD, 1, &labels, qtype)
    }

    fn rcode_of(reply: &[u8]) -> u16 {
        be16(reply, 2).expect("reply has a header") & 0x000f
    }

    /// The A records of a reply built by `respond` (answers right after the question).
    fn addrs_of(reply: &[u8], question_end: usize) -> Vec<Ipv4Addr> {
        let count = be16(reply, 6).expect("reply has a header");
        (0..usize::from(count))
            .map(|i| {
                let at = question_end + i * ANSWER_LEN;
                let rr = reply.get(at..at + ANSWER_LEN).expect("answer is whole");
                assert_eq!(
                    rr.get(..2),
                    Some(&[0xC0, 0x0C][..]),
                    "name points at question"
                );
                assert_eq!(be16(rr, 2), Some(TYPE_A));
                assert_eq!(rr.get(6..10), Some(&[0, 0, 0, 0][..]), "TTL 0");
                let a: [u8; 4] = rr
                    .get(12..16)
                    .expect("address")
                    .try_into()
                    .expect("4 bytes");
                Ipv4Addr::from(a)
            })
            .collect()
    }

    /// A case's name, its packet, and the (name, type) it parses to; None: refused.
    type ParseCase<'a> = (&'a str, Vec<u8>, Option<(&'a str, u16)>);

    /// What `local_reply` sends: rcode, answers, AA; None: forwarded.
    type Expected = Option<(u16, Vec<Ipv4Addr>, bool)>;

    #[test]
    fn parses_queries() {
        let long63 = [b'a'; 63];
        let long61 = [b'b'; 61];
        let longest = format!("{0}.{0}.{0}.{1}", "a".repeat(63), "b".repeat(61));
        let cases: Vec<ParseCase<'_>> = vec![
            ("plain A", query(7, "web.", TYPE_A), Some(("web", TYPE_A))),
            (
                "uppercase",
                query(7, "Tasks.WEB", TYPE_A),
                Some(("tasks.web", TYPE_A)),
            ),
            (
                "root form, trailing dot",
                query(7, "web.example.", TYPE_A),
                Some(("web.example", TYPE_A)),
            ),
            (
                "the root itself",
                packet(7, 0, 1, &[], TYPE_A),
                Some(("", TYPE_A)),
            ),
            ("AAAA", query(7, "web", TYPE_AAAA), Some(("web", TYPE_AAAA))),
            (
                "dot inside a label",
                packet(7, 0, 1, &[b"a.b"], TYPE_A),
                Some((r"a\046b", TYPE_A)),
            ),
            (
                "non-ascii byte",
                packet(7, 0, 1, &[b"a\xffb"], TYPE_A),
                Some((r"a\255b", TYPE_A)),
            ),
            (
                "255-octet name, the most allowed",
                packet(7, 0, 1, &[&long63, &long63, &long63, &long61], TYPE_A),
                Some((&longest, TYPE_A)),
            ),
            ("empty", Vec::new(), None),
            ("short header", vec![0, 7, 1, 0, 0, 1, 0, 0, 0, 0, 0], None),
            (
                "header only",
                packet(7, 0, 1, &[], TYPE_A)
                    .get(..12)
                    .expect("header")
                    .to_vec(),
                None,
            ),
            ("garbage", vec![0xff; 40], None),
            (
                "no root octet",
                packet(7, 0, 1, &[b"web"], TYPE_A)
                    .get(..16)
                    .expect("prefix")
                    .to_vec(),
                None,
            ),
            (
                "no type or class",
                packet(7, 0, 1, &[b"web"], TYPE_A)
                    .get(..19)
                    .expect("prefix")
                    .to_vec(),
                None,
            ),
            (
                "class cut short",
                packet(7, 0, 1, &[b"web"], TYPE_A)
                    .get(..20)
                    .expect("prefix")
                    .to_vec(),
                None,
            ),
            ("a response", packet(7, FLAG_QR, 1, &[b"web"], TYPE_A), None),
            ("qdcount 0", packet(7, 0, 0, &[b"web"], TYPE_A), None),
            ("qdcount 2", packet(7, 0, 2, &[b"web"], TYPE_A), None),
            ("label of 64", packet(7, 0, 1, &[&[b'a'; 64]], TYPE_A), None),
            (
                "256-octet name",
                packet(7, 0, 1, &[&long63, &long63, &long63, &[b'b'; 62]], TYPE_A),
                None,
            ),
            (
                "321-octet name",
                packet(7, 0, 1, &[&long63[..]; 5], TYPE_A),
                None,
            ),
        ];
        for (what, p, want) in cases {
            let got = parse_query(&p);
            match (got, want) {
                (None, None) => {}
                (Some(q), Some((name, qtype))) => {
                    assert_eq!(q.name, name, "{what}");
                    assert_eq!(q.qtype, qtype, "{what}");
                    assert_eq!(q.id, 7, "{what}");
                    assert_eq!(q.qclass, CLASS_IN, "{what}");
                    assert_eq!(q.question, 12..p.len(), "{what}");
                }
                (got, want) => panic!("{what}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn refuses_compression_pointers_in_queries() {
        let mut p = query(1, "web", TYPE_A);
        // Question name replaced by a pointer to offset 12 (itself).
        p.truncate(12);
        p.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1]);
        assert_eq!(parse_query(&p), None, "pointer as the whole name");

        let mut p = query(1, "web", TYPE_A);
        p.truncate(16); // header + "\x03web"
        p.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1]);
        assert_eq!(parse_query(&p), None, "pointer after a label");
    }

    #[test]
    fn never_panics_on_noise() {
        let whole = query(0x1234, "tasks.web.example", TYPE_A);
        for end in 0..whole.len() {
            assert_eq!(
                parse_query(whole.get(..end).expect("prefix")),
                None,
                "prefix of {end}"
            );
        }
        assert!(parse_query(&whole).is_some());
        // Random bytes behind a plausible header, from a fixed xorshift so runs repeat.
        let mut x: u32 = 0x9e37_79b9;
        for _ in 0..5000 {
            let mut p = vec![0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
            let len = (x % 300) as usize;
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                p.push(x.to_le_bytes()[0]);
            }
            if let Some(q) = parse_query(&p) {
                assert!(q.question.end <= p.len());
                let reply = respond(&q, &p, Rcode::NoError, &[Ipv4Addr::LOCALHOST], true);
                assert!(reply.len() <= MAX_UDP_REPLY);
            }
        }
    }

    #[test]
    fn responses() {
        let known = Answer::Addrs(vec![Ipv4Addr::new(10, 0, 1, 2), Ipv4Addr::new(10, 0, 1, 3)]);
        let cases: Vec<(&str, Vec<u8>, Answer, Expected)> = vec![
            (
                "A of a known name",
                query(9, "web", TYPE_A),
                known.clone(),
                Some((
                    0,
                    vec![Ipv4Addr::new(10, 0, 1, 2), Ipv4Addr::new(10, 0, 1, 3)],
                    true,
                )),
            ),
            (
                "ANY of a known name",
                query(9, "web", TYPE_ANY),
                known.clone(),
                Some((
                    0,
                    vec![Ipv4Addr::new(10, 0, 1, 2), Ipv4Addr::new(10, 0, 1, 3)],
                    true,
                )),
            ),
            (
                "AAAA of a known name",
                query(9, "web", TYPE_AAAA),
                known.clone(),
                Some((0, vec![], true)),
            ),
            (
                "MX of a known name",
                query(9, "web", 15),
                known.clone(),
                Some((0, vec![], true)),
            ),
            (
                "known, no tasks",
                query(9, "tasks.web", TYPE_A),
                Answer::NoData,
                Some((0, vec![], true)),
            ),
            (
                "unknown",
                query(9, "example.com", TYPE_A),
                Answer::Unknown,
                None,
            ),
            (
                "not a standard query",
                packet(9, 2 << 11, 1, &[b"web"], TYPE_A),
                known.clone(),
                Some((Rcode::NotImp as u16, vec![], false)),
            ),
        ];
        for (what, p, answer, want) in cases {
            let q = parse_query(&p).expect("test queries parse");
            let got = local_reply(&q, &p, &answer);
            let Some((rcode, addrs, aa)) = want else {
                assert_eq!(got, None, "{what}");
                continue;
            };
            let reply = got.expect(what);
            assert_eq!(be16(&reply, 0), Some(9), "{what}: id");
            let flags = be16(&reply, 2).expect("header");
            assert_ne!(flags & FLAG_QR, 0, "{what}: QR");
            assert_ne!(flags & FLAG_RA, 0, "{what}: RA");
            assert_eq!(flags & FLAG_RD, q.flags & FLAG_RD, "{what}: RD copied");
            assert_eq!(flags & FLAG_AA != 0, aa, "{what}: AA");
            assert_eq!(rcode_of(&reply), rcode, "{what}: rcode");
            assert_eq!(be16(&reply, 4), Some(1), "{what}: qdcount");
            assert_eq!(
                reply.get(q.question.clone()),
                p.get(q.question.clone()),
                "{what}: question echoed"
            );
            assert_eq!(addrs_of(&reply, q.question.end), addrs, "{what}: answers");
            assert_eq!(
                reply.len(),
                q.question.end + addrs.len() * ANSWER_LEN,
                "{what}: length"
            );
        }
    }

    #[test]
    fn rd_is_copied_not_invented() {
        let p = packet(3, 0, 1, &[b"web"], TYPE_A);
        let q = parse_query(&p).expect("parses");
        let reply = respond(&q, &p, Rcode::NoError, &[], true);
        assert_eq!(be16(&reply, 2).expect("header") & FLAG_RD, 0);
    }

    #[test]
    fn answers_fit_512_bytes() {
        let p = query(1, "tasks.big", TYPE_A);
        let q = parse_query(&p).expect("parses");
        let many: Vec<Ipv4Addr> = (0..100).map(|i| Ipv4Addr::new(10, 0, 2, i)).collect();
        let reply = respond(&q, &p, Rcode::NoError, &many, true);
        assert!(reply.len() <= MAX_UDP_REPLY);
        let got = addrs_of(&reply, q.question.end);
        assert_eq!(got.len(), (MAX_UDP_REPLY - q.question.end) / ANSWER_LEN);
        assert_eq!(got.as_slice(), many.get(..got.len()).expect("a prefix"));
    }

    #[test]
    fn reads_resolv_conf() {
        let text = "\
# generated
search example.com
nameserver 10.0.0.2
nameserver 10.0.0.2
  nameserver   2001:db8::53   # v6
;nameserver 10.9.9.9
nameserver fe80::1%7
nameserver not-an-address
options edns0
nameserver 127.0.0.53
";
        let want: Vec<SocketAddr> = vec![
            "10.0.0.2:53".parse().expect("addr"),
            "[2001:db8::53]:53".parse().expect("addr"),
            SocketAddr::V6(SocketAddrV6::new(
                "fe80::1".parse().expect("addr"),
                53,
                0,
                7,
            )),
            "127.0.0.53:53".parse().expect("addr"),
        ];
        assert_eq!(upstreams_from_resolv_conf(text), want);
        assert_eq!(upstreams_from_resolv_conf(""), Vec::<SocketAddr>::new());
    }

    #[test]
    fn bind_in_netns_refuses_bad_names() {
        let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0);
        for name in ["", ".", "..", "../etc", "a/b"] {
            let err = bind_in_netns(name, addr).expect_err("a bad name");
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{name:?}");
        }
        let err = bind_in_netns("orch-dns-test-no-such-netns", addr).expect_err("no such netns");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    /// A table for one network: "web" (two tasks, VIP-less for the test), "tasks.web", "empty"
    /// (no tasks); it records who asked.
    struct Table {
        asked: parking_lot::Mutex<Vec<(String, Ipv4Addr, String)>>,
    }

    impl Lookup for Table {
        fn lookup(&self, network_id: &str, client: Ipv4Addr, name: &str) -> Answer {
            self.asked
                .lock()
                .push((network_id.to_string(), client, name.to_string()));
            if network_id != "net1" {
                return Answer::Unknown;
            }
            match name {
                "web" => Answer::Addrs(vec![Ipv4Addr::new(10, 0, 1, 100)]),
                "tasks.web" => {
                    Answer::Addrs(vec![Ipv4Addr::new(10, 0, 1, 2), Ipv4Addr::new(10, 0, 1, 3)])
                }
                "empty" | "tasks.empty" => Answer::NoData,
                _ => Answer::Unknown,
            }
        }
    }

    struct Server {
        addr: SocketAddr,
        table: Arc<Table>,
        token: CancellationToken,
        done: tokio::task::JoinHandle<()>,
    }

    async fn start(upstreams: Vec<SocketAddr>) -> Server {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind server");
        let addr = socket.local_addr().expect("server addr");
        let table = Arc::new(Table {
            asked: parking_lot::Mutex::new(Vec::new()),
        });
        let token = CancellationToken::new();
        let done = tokio::spawn(serve(
            socket,
            "net1".to_string(),
            table.clone(),
            upstreams,
            token.clone(),
        ));
        Server {
            addr,
            table,
            token,
            done,
        }
    }

    async fn ask_server(server: SocketAddr, packet: &[u8]) -> Vec<u8> {
        let client = UdpSocket::bind("127.0.0.1:0").await.expect("bind client");
        client.send_to(packet, server).await.expect("send query");
        let mut buf = vec![0u8; 2048];
        let (len, _) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
            .await
            .expect("an answer within 5 s")
            .expect("receive");
        buf.truncate(len);
        buf
    }

    /// A fake upstream: answers every A query with 192.0.2.1 (echoing the ID it was sent),
    /// and reports each query it got.
    async fn fake_upstream() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>) {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind upstream");
        let addr = socket.local_addr().expect("upstream addr");
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            while let Ok((len, from)) = socket.recv_from(&mut buf).await {
                let p = buf.get(..len).expect("received bytes").to_vec();
                let Some(q) = parse_query(&p) else { continue };
                let reply = respond(
                    &q,
                    &p,
                    Rcode::NoError,
                    &[Ipv4Addr::new(192, 0, 2, 1)],
                    false,
                );
                let _ = tx.send(p);
                let _ = socket.send_to(&reply, from).await;
            }
        });
        (addr, rx)
    }

    #[tokio::test]
    async fn serves_the_table() {
        let server = start(Vec::new()).await;

        let p = query(0x0101, "WEB", TYPE_A);
        let reply = ask_server(server.addr, &p).await;
        assert_eq!(be16(&reply, 0), Some(0x0101));
        assert_eq!(rcode_of(&reply), 0);
        assert_eq!(
            addrs_of(&reply, p.len()),
            vec![Ipv4Addr::new(10, 0, 1, 100)]
        );

        let p = query(0x0202, "tasks.web", TYPE_A);
        let reply = ask_server(server.addr, &p).await;
        assert_eq!(be16(&reply, 0), Some(0x0202));
        assert_eq!(
            addrs_of(&reply, p.len()),
            vec![Ipv4Addr::new(10, 0, 1, 2), Ipv4Addr::new(10, 0, 1, 3)]
        );

        let p = query(0x0303, "tasks.web", TYPE_AAAA);
        let reply = ask_server(server.addr, &p).await;
        assert_eq!(
            (rcode_of(&reply), be16(&reply, 6)),
            (0, Some(0)),
            "AAAA: NOERROR, empty"
        );

        let p = query(0x0404, "tasks.empty", TYPE_A);
        let reply = ask_server(server.addr, &p).await;
        assert_eq!(
            (rcode_of(&reply), be16(&reply, 6)),
            (0, Some(0)),
            "no tasks: NOERROR, empty"
        );

        let p = query(0x0505, "example.com", TYPE_A);
        let reply = ask_server(server.addr, &p).await;
        assert_eq!(be16(&reply, 0), Some(0x0505));
        assert_eq!(
            rcode_of(&reply),
            Rcode::ServFail as u16,
            "no upstreams: SERVFAIL"
        );

        // Garbage is dropped, and the server still answers afterwards.
        let noise = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        noise.send_to(&[0xff; 7], server.addr).await.expect("send");
        let p = query(0x0606, "web", TYPE_A);
        let reply = ask_server(server.addr, &p).await;
        assert_eq!(be16(&reply, 0), Some(0x0606));
        let mut buf = [0u8; 512];
        let silent =
            tokio::time::timeout(Duration::from_millis(200), noise.recv_from(&mut buf)).await;
        assert!(silent.is_err(), "garbage got an answer");

        {
            let asked = server.table.asked.lock();
            assert!(asked
                .iter()
                .all(|(net, client, _)| net == "net1" && *client == Ipv4Addr::LOCALHOST));
            assert!(
                asked.iter().any(|(_, _, name)| name == "web"),
                "names reach the table lower-cased"
            );
        }

        server.token.cancel();
        tokio::time::timeout(Duration::from_secs(2), server.done)
            .await
            .expect("serve ends when cancelled")
            .expect("serve did not panic");
    }

    #[tokio::test]
    async fn forwards_unknown_names() {
        let (upstream, mut seen) = fake_upstream().await;
        let server = start(vec![upstream]).await;

        let p = query(0xBEEF, "example.com", TYPE_A);
        let reply = ask_server(server.addr, &p).await;
        assert_eq!(be16(&reply, 0), Some(0xBEEF), "the client's ID comes back");
        assert_eq!(rcode_of(&reply), 0);
        assert_eq!(addrs_of(&reply, p.len()), vec![Ipv4Addr::new(192, 0, 2, 1)]);
        assert_eq!(be16(&reply, 2).expect("header") & FLAG_AA, 0, "not ours");

        let relayed = seen.recv().await.expect("upstream saw the query");
        assert_eq!(relayed.get(2..), p.get(2..), "relayed as-is but for the ID");

        // Known names never leave the node.
        let p = query(0x0001, "web", TYPE_A);
        let reply = ask_server(server.addr, &p).await;
        assert_eq!(
            addrs_of(&reply, p.len()),
            vec![Ipv4Addr::new(10, 0, 1, 100)]
        );
        assert!(seen.try_recv().is_err(), "a known name was forwarded");

        server.token.cancel();
    }

    #[tokio::test]
    async fn a_silent_upstream_gives_servfail_or_the_next_one() {
        let silent = UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind silent upstream");
        let silent_addr = silent.local_addr().expect("addr");

        let alone = start(vec![silent_addr]).await;
        let p = query(0x0A0A, "example.com", TYPE_A);
        let began = Instant::now();
        let reply = ask_server(alone.addr, &p).await;
        assert_eq!(be16(&reply, 0), Some(0x0A0A));
        assert_eq!(rcode_of(&reply), Rcode::ServFail as u16);
        assert!(began.elapsed() >= FORWARD_TIMEOUT - Duration::from_millis(100));
        alone.token.cancel();

        let (good, _seen) = fake_upstream().await;
        let server = start(vec![silent_addr, good]).await;
        let p = query(0x0B0B, "example.com", TYPE_A);
        let reply = ask_server(server.addr, &p).await;
        assert_eq!(be16(&reply, 0), Some(0x0B0B));
        assert_eq!(addrs_of(&reply, p.len()), vec![Ipv4Addr::new(192, 0, 2, 1)]);
        server.token.cancel();
        drop(silent);
    }
}
