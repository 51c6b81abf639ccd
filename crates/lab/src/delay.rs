//! Latency on a lab node's links. The kernel may have no netem, so the delay is made in user
//! space: connections between the node and its peers' port 2377 are redirected (iptables DNAT
//! in each namespace) to proxies on the bridge's host address, which hold every chunk of bytes
//! for the delay before passing it on. Connections that were open before are reset, so they
//! come back through the proxies. Dropping the `Delay` removes the rules and closes the proxied
//! connections, which then reconnect directly.
//!
//! Each direction is delayed by the given amount: a round trip grows by twice that.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};

use super::Lab;

const PORT: u16 = 2377;

/// Added latency on one node's links; removed when dropped.
pub struct Delay {
    stop: Arc<AtomicBool>,
    /// (namespace, iptables rule) pairs to delete again.
    rules: Vec<(String, Vec<String>)>,
    threads: Vec<JoinHandle<()>>,
}

impl Lab {
    /// Delays every packet between `name` and the other lab nodes by `by`, each way.
    pub fn delay(&self, name: &str, by: Duration) -> Result<Delay> {
        let node = self.node(name)?.clone();
        if self.state.bridge.is_none() {
            bail!("adding latency needs a --netns lab");
        }
        let host = format!("10.77.{}.1", self.state.id);
        let mut delay = Delay {
            stop: Arc::new(AtomicBool::new(false)),
            rules: Vec::new(),
            threads: Vec::new(),
        };
        let peers: Vec<_> = self
            .state
            .nodes
            .iter()
            .filter(|n| n.name != name)
            .cloned()
            .collect();
        // Connections the node opens to each peer, and the peers open to the node.
        let mut routes = Vec::new();
        for peer in &peers {
            routes.push((node.clone(), peer.clone()));
            routes.push((peer.clone(), node.clone()));
        }
        let mut proxies = std::collections::HashMap::new();
        for (from, to) in &routes {
            let port = match proxies.get(&to.ip) {
                Some(port) => *port,
                None => {
                    let target: SocketAddr = format!("{}:{PORT}", to.ip).parse()?;
                    let listener = TcpListener::bind(format!("{host}:0"))?;
                    let port = listener.local_addr()?.port();
                    delay
                        .threads
                        .push(spawn_proxy(listener, target, by, delay.stop.clone()));
                    proxies.insert(to.ip.clone(), port);
                    port
                }
            };
            let ns = from
                .netns
                .clone()
                .ok_or_else(|| anyhow!("{} has no namespace", from.name))?;
            let dport = PORT.to_string();
            // A rule in `table`'s OUTPUT chain for TCP to the target's orch port.
            let to_target = |table: &str, action: &[&str]| -> Vec<String> {
                [
                    "-t", table, "OUTPUT", "-p", "tcp", "-d", &to.ip, "--dport", &dport,
                ]
                .iter()
                .chain(action)
                .map(|s| s.to_string())
                .collect()
            };
            let proxy = format!("{host}:{port}");
            let redirect = to_target("nat", &["-j", "DNAT", "--to-destination", &proxy]);
            // Direct connections opened before the redirect: reset, so they come back through
            // the proxy (redirected packets no longer match: their destination is rewritten).
            let reset = to_target("filter", &["-j", "REJECT", "--reject-with", "tcp-reset"]);
            for rule in [redirect, reset] {
                iptables_rule(&ns, "-A", &rule)?;
                delay.rules.push((ns.clone(), rule));
            }
        }
        Ok(delay)
    }
}

/// `iptables -t TABLE <op> CHAIN rest...` in namespace `ns`; `rule` is `[-t, table, chain, ..]`.
fn iptables_rule(ns: &str, op: &str, rule: &[String]) -> Result<()> {
    let mut args: Vec<&str> = vec!["netns", "exec", ns, "iptables"];
    args.extend(rule[..2].iter().map(String::as_str));
    args.push(op);
    args.extend(rule[2..].iter().map(String::as_str));
    let out = Command::new("ip")
        .args(&args)
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Drop for Delay {
    fn drop(&mut self) {
        for (ns, rule) in self.rules.drain(..) {
            let _ = iptables_rule(&ns, "-D", &rule);
        }
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn spawn_proxy(
    listener: TcpListener,
    target: SocketAddr,
    by: Duration,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let _ = listener.set_nonblocking(true);
        let mut pumps = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((client, _)) => {
                    let _ = client.set_nonblocking(false);
                    let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(2))
                    else {
                        continue;
                    };
                    for (from, to) in [(&client, &server), (&server, &client)] {
                        if let (Ok(from), Ok(to)) = (from.try_clone(), to.try_clone()) {
                            pumps.extend(pump(from, to, by, stop.clone()));
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        for p in pumps {
            let _ = p.join();
        }
    })
}

/// Copies `from` to `to`, each chunk `by` after it was read.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    by: Duration,
    stop: Arc<AtomicBool>,
) -> [JoinHandle<()>; 2] {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let reader_stop = stop.clone();
    let reader = std::thread::spawn(move || {
        let _ = from.set_read_timeout(Some(Duration::from_millis(200)));
        let mut buf = vec![0u8; 64 << 10];
        while !reader_stop.load(Ordering::SeqCst) {
            match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx.send((Instant::now() + by, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
        }
        let _ = from.shutdown(Shutdown::Read);
    });
    let writer = std::thread::spawn(move || {
        loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok((due, bytes)) => {
                    std::thread::sleep(due.saturating_duration_since(Instant::now()));
                    if to.write_all(&bytes).is_err() {
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) if !stop.load(Ordering::SeqCst) => {}
                Err(_) => break,
            }
        }
        let _ = to.shutdown(Shutdown::Both);
    });
    [reader, writer]
}
