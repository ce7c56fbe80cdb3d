//! How the supervisor turns an egress name into addresses without parsing
//! a DNS answer itself (docs/privsep.md): names in `/etc/hosts` are
//! answered from it (local configuration, read at start, as glibc's
//! `files` before `dns`); any other name is asked of the nameservers in
//! `/etc/resolv.conf`, in order, each over a fresh UDP socket connected to
//! it (so a new random source port per lookup) that the confined front
//! door gets with the name and answers with addresses only
//! (`front_door/dns.rs`); an answer too long for a datagram (truncated) is
//! asked again over a TCP connection to the same nameserver, handed over
//! the same way. Without a front door (it is restarting) a lookup
//! fails, and the egress attempt is refused saying so.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, OnceLock, Weak};

use crate::supervisor::front_door::FrontDoor;

/// The most nameservers asked, as glibc's `MAXNS`.
const MAX_NAMESERVERS: usize = 3;

/// Names to addresses, for the egress gate.
#[derive(Debug)]
pub struct Resolver {
    nameservers: Vec<SocketAddr>,
    hosts: HashMap<String, Vec<IpAddr>>,
    front: OnceLock<Weak<FrontDoor>>,
}

impl Resolver {
    /// The system's: `/etc/hosts` and `/etc/resolv.conf` (127.0.0.1 when
    /// it names no nameserver, as glibc does), unless `nameservers` are
    /// given.
    pub fn system(nameservers: &[SocketAddr]) -> Arc<Self> {
        let read = |p: &str| std::fs::read_to_string(Path::new(p)).unwrap_or_default();
        let mut servers = if nameservers.is_empty() {
            parse_resolv_conf(&read("/etc/resolv.conf"))
        } else {
            nameservers.to_vec()
        };
        if servers.is_empty() {
            servers.push(SocketAddr::from((Ipv4Addr::LOCALHOST, 53)));
        }
        servers.truncate(MAX_NAMESERVERS);
        Arc::new(Self {
            nameservers: servers,
            hosts: parse_hosts(&read("/etc/hosts")),
            front: OnceLock::new(),
        })
    }

    /// Lookups go through `front` from now on.
    pub fn attach(&self, front: &Arc<FrontDoor>) {
        let _ = self.front.set(Arc::downgrade(front));
    }

    /// The addresses of `name` (lower case, no trailing dot), each with
    /// `port`.
    pub async fn resolve(&self, name: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        let with_port = |ips: &[IpAddr]| ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect();
        if let Some(ips) = self.hosts.get(name) {
            return Ok(with_port(ips));
        }
        let front = self
            .front
            .get()
            .and_then(Weak::upgrade)
            .ok_or_else(|| io::Error::other("no resolver (the front door is not running)"))?;
        let mut last = io::Error::other("no nameserver");
        for server in &self.nameservers {
            let socket = match connected_udp(*server).await {
                Ok(s) => s,
                Err(e) => {
                    last = io::Error::new(e.kind(), format!("nameserver {server}: {e}"));
                    continue;
                }
            };
            let mut answer = front.resolve(name, socket).await;
            if answer
                .as_ref()
                .is_err_and(|why| why.contains(crate::front_door::dns::TRUNCATED))
            {
                // Too long for a datagram: the same questions over TCP.
                answer = match connected_tcp(*server).await {
                    Ok(stream) => front.resolve(name, stream).await,
                    Err(e) => Err(format!("over TCP: {e}")),
                };
            }
            match answer {
                Ok(ips) => return Ok(with_port(&ips)),
                Err(why) => last = io::Error::other(format!("nameserver {server}: {why}")),
            }
        }
        Err(last)
    }
}

/// A UDP socket connected to `server`, from a port the kernel picks.
async fn connected_udp(server: SocketAddr) -> io::Result<std::os::fd::OwnedFd> {
    let any: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = tokio::net::UdpSocket::bind(any).await?;
    socket.connect(server).await?;
    Ok(socket.into_std()?.into())
}

/// A TCP connection to `server`, within the time a UDP answer gets.
async fn connected_tcp(server: SocketAddr) -> io::Result<std::os::fd::OwnedFd> {
    let wait = crate::front_door::dns::ANSWER_WAIT;
    let stream = tokio::time::timeout(wait, tokio::net::TcpStream::connect(server))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connecting timed out"))??;
    Ok(stream.into_std()?.into())
}

/// The `nameserver` lines of a `resolv.conf`.
fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next()? == "nameserver")
                .then(|| words.next()?.parse::<IpAddr>().ok())
                .flatten()
        })
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// An `/etc/hosts`: each name (lower case) to its addresses, in order.
fn parse_hosts(text: &str) -> HashMap<String, Vec<IpAddr>> {
    let mut hosts: HashMap<String, Vec<IpAddr>> = HashMap::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        let Some(ip) = words.next().and_then(|w| w.parse::<IpAddr>().ok()) else {
            continue;
        };
        for name in words {
            let entry = hosts
                .entry(name.trim_end_matches('.').to_ascii_lowercase())
                .or_default();
            if !entry.contains(&ip) {
                entry.push(ip);
            }
        }
    }
    hosts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_files_are_read_as_glibc_reads_them() {
        let conf = "# comment\nsearch example.org\nnameserver 192.0.2.1\nnameserver ::1\nnameserver bogus\noptions edns0\n";
        assert_eq!(
            parse_resolv_conf(conf),
            vec![
                "192.0.2.1:53".parse::<SocketAddr>().unwrap(),
                "[::1]:53".parse().unwrap()
            ]
        );
        let hosts = parse_hosts("127.0.0.1 localhost\n::1 localhost ip6-localhost # v6\n# 10.0.0.1 gone\n192.0.2.7 Box.Lan. box\nnot-an-ip name\n");
        assert_eq!(
            hosts["localhost"],
            vec![
                "127.0.0.1".parse::<IpAddr>().unwrap(),
                "::1".parse().unwrap()
            ]
        );
        assert_eq!(
            hosts["box.lan"],
            vec!["192.0.2.7".parse::<IpAddr>().unwrap()]
        );
        assert!(!hosts.contains_key("gone") && !hosts.contains_key("name"));
    }
}
