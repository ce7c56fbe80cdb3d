//! An appspace's egress allowlist and the decision for one destination.
//!
//! Entries are host names (`api.example.com`, or `*.example.com` for any
//! name under it) or explicit addresses and networks (`203.0.113.7`,
//! `10.1.0.0/16`, `[2001:db8::1]`, `[2001:db8::/32]`), each with an
//! optional `:port`; without one, ports 80 and 443.
//!
//! A destination is checked in its canonical form only: lower case names
//! without a trailing dot, dotted-quad IPv4 and plain IPv6. Every other
//! spelling of an address (`2130706433`, `0x7f.1`, `0177.0.0.1`,
//! `::ffff:127.0.0.1`) is refused rather than interpreted, since resolvers
//! disagree on them. Names are resolved by the host; an address that is not
//! public (loopback, private, link-local and cloud metadata, CGNAT,
//! multicast, documentation, ...) is refused unless the destination was
//! that address and an entry names it explicitly. The address checked is
//! the address connected to.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::LazyLock;

use ipnet::IpNet;

/// Ports allowed by an entry that names none.
pub const DEFAULT_PORTS: [u16; 2] = [80, 443];

/// What an entry matches.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// A name, or with `wildcard` every name under it.
    Name { name: String, wildcard: bool },
    /// An address or network.
    Net(IpNet),
}

/// One allowlist entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    target: Target,
    port: Option<u16>,
}

/// Address ranges that are not the public internet, with what they are.
static NON_PUBLIC: LazyLock<Vec<(IpNet, &'static str)>> = LazyLock::new(|| {
    [
        ("0.0.0.0/8", "this-network"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "carrier-grade NAT"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local (cloud metadata)"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "IETF protocol assignments"),
        ("192.0.2.0/24", "documentation"),
        ("192.88.99.0/24", "6to4 relay"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("::ffff:0:0/96", "IPv4-mapped"),
        ("64:ff9b::/96", "NAT64"),
        ("64:ff9b:1::/48", "NAT64"),
        ("100::/64", "discard"),
        ("2001::/32", "Teredo"),
        ("2001:db8::/32", "documentation"),
        ("2002::/16", "6to4"),
        ("fc00::/7", "unique-local (private)"),
        ("fe80::/10", "link-local"),
        ("ff00::/8", "multicast"),
    ]
    .into_iter()
    .map(|(net, what)| (IpNet::from_str(net).expect("static network"), what))
    .collect()
});

/// Why `ip` is not public, if it is not.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    NON_PUBLIC
        .iter()
        .find(|(net, _)| net.contains(&ip))
        .map(|(_, what)| *what)
}

/// Never connected to, whatever the list says.
fn never(ip: IpAddr) -> bool {
    ip.is_unspecified() || ip.is_multicast() || ip == IpAddr::V4(Ipv4Addr::BROADCAST)
}

/// Why an entry or destination was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?}: {why}")]
pub struct BadEntry {
    /// The text.
    pub text: String,
    /// What is wrong.
    pub why: String,
}

fn bad(text: &str, why: impl Into<String>) -> BadEntry {
    BadEntry {
        text: text.chars().take(100).collect(),
        why: why.into(),
    }
}

/// A canonical host name: lower case `[a-z0-9_-]` labels of 1 to 63
/// characters, no trailing dot, not all-numeric at the end (that would be
/// an address in another spelling).
fn check_name(text: &str, name: &str) -> Result<(), BadEntry> {
    if name.is_empty() || name.len() > 253 {
        return Err(bad(text, "a host name has 1 to 253 characters"));
    }
    if name.ends_with('.') {
        return Err(bad(
            text,
            "a trailing dot is not accepted; write the name without it",
        ));
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(bad(text, "every label of a name has 1 to 63 characters"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return Err(bad(
                text,
                "a name has only lower-case letters, digits, '-', '_' and '.'",
            ));
        }
    }
    let last = name.rsplit('.').next().unwrap_or("");
    if last.bytes().next().is_some_and(|b| b.is_ascii_digit()) {
        return Err(bad(
            text,
            "not a canonical address: write IPv4 as four decimal numbers (a.b.c.d) without leading zeros",
        ));
    }
    Ok(())
}

/// Parses an address in its canonical spelling only.
fn canonical_ip(text: &str, host: &str) -> Result<Option<IpAddr>, BadEntry> {
    if host.contains(':') {
        let v6 = Ipv6Addr::from_str(host).map_err(|_| bad(text, "not a valid IPv6 address"))?;
        if v6.to_ipv4_mapped().is_some() {
            return Err(bad(
                text,
                "IPv4-mapped IPv6 addresses are refused; use the IPv4 address",
            ));
        }
        return Ok(Some(IpAddr::V6(v6)));
    }
    match Ipv4Addr::from_str(host) {
        Ok(v4) if v4.to_string() == host => Ok(Some(IpAddr::V4(v4))),
        Ok(_) => Err(bad(text, "not a canonical IPv4 address")),
        Err(_) => Ok(None),
    }
}

fn parse_port(text: &str, port: &str) -> Result<u16, BadEntry> {
    match port.parse::<u16>() {
        Ok(p) if p > 0 && port.bytes().all(|b| b.is_ascii_digit()) => Ok(p),
        _ => Err(bad(text, "the port must be a number from 1 to 65535")),
    }
}

impl FromStr for Rule {
    type Err = BadEntry;

    fn from_str(text: &str) -> Result<Self, BadEntry> {
        let t = text.trim();
        // [v6 or v6/len] with an optional :port
        if let Some(rest) = t.strip_prefix('[') {
            let (inside, after) = rest
                .split_once(']')
                .ok_or_else(|| bad(text, "unterminated '['"))?;
            let port = match after {
                "" => None,
                p => Some(parse_port(
                    text,
                    p.strip_prefix(':')
                        .ok_or_else(|| bad(text, "expected :port after ']'"))?,
                )?),
            };
            return Ok(Self {
                target: Target::Net(parse_net(text, inside, true)?),
                port,
            });
        }
        if t.matches(':').count() > 1 {
            return Err(bad(
                text,
                "write IPv6 addresses in brackets: [2001:db8::1]:443",
            ));
        }
        let (host, port) = match t.rsplit_once(':') {
            Some((h, p)) => (h, Some(parse_port(text, p)?)),
            None => (t, None),
        };
        if host.contains('/')
            || host.bytes().next().is_some_and(|b| b.is_ascii_digit())
                && canonical_ip(text, host.split('/').next().unwrap_or(""))?.is_some()
        {
            return Ok(Self {
                target: Target::Net(parse_net(text, host, false)?),
                port,
            });
        }
        let (name, wildcard) = match host.strip_prefix("*.") {
            Some(suffix) => (suffix, true),
            None => (host, false),
        };
        if name.contains('*') {
            return Err(bad(text, "a wildcard is only allowed as a leading '*.'"));
        }
        check_name(text, name)?;
        Ok(Self {
            target: Target::Name {
                name: name.to_owned(),
                wildcard,
            },
            port,
        })
    }
}

fn parse_net(text: &str, spec: &str, v6: bool) -> Result<IpNet, BadEntry> {
    let (addr, len) = match spec.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (spec, None),
    };
    let ip = canonical_ip(text, addr)?.ok_or_else(|| bad(text, "not an address"))?;
    if ip.is_ipv6() != v6 {
        return Err(bad(text, "write IPv6 addresses in brackets, IPv4 without"));
    }
    if never(ip) && len.is_none() {
        return Err(bad(
            text,
            "the unspecified, broadcast and multicast addresses are never reachable",
        ));
    }
    let max = if v6 { 128 } else { 32 };
    let len = match len {
        None => max,
        Some(l) => l
            .parse::<u8>()
            .ok()
            .filter(|l| *l <= max && !l.to_string().is_empty())
            .ok_or_else(|| bad(text, format!("the prefix length must be 0 to {max}")))?,
    };
    let net = IpNet::new(ip, len).map_err(|e| bad(text, e.to_string()))?;
    if net.trunc() != net {
        return Err(bad(
            text,
            format!("host bits are set; did you mean {}?", net.trunc()),
        ));
    }
    Ok(net)
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = self.host_text();
        match self.port {
            Some(p) => write!(f, "{host}:{p}"),
            None => f.write_str(&host),
        }
    }
}

impl Rule {
    /// The entry as Deno's `--allow-net` hosts (`host:port`, one per port
    /// it allows), or `None` for a network wider than one address, which
    /// Deno's permissions cannot express.
    pub fn deno_hosts(&self) -> Option<Vec<String>> {
        if let Target::Net(n) = &self.target {
            if n.prefix_len() != n.max_prefix_len() {
                return None;
            }
        }
        let host = self.host_text();
        let ports = match self.port {
            Some(p) => vec![p],
            None => DEFAULT_PORTS.to_vec(),
        };
        Some(ports.iter().map(|p| format!("{host}:{p}")).collect())
    }

    /// The entry without its port, canonical: `*.name`, `name`, an
    /// address (IPv6 in brackets) or a network.
    fn host_text(&self) -> String {
        match &self.target {
            Target::Name {
                name,
                wildcard: true,
            } => format!("*.{name}"),
            Target::Name { name, .. } => name.clone(),
            Target::Net(IpNet::V6(n)) if n.prefix_len() == 128 => format!("[{}]", n.addr()),
            Target::Net(IpNet::V6(n)) => format!("[{n}]"),
            Target::Net(IpNet::V4(n)) if n.prefix_len() == 32 => n.addr().to_string(),
            Target::Net(n) => n.to_string(),
        }
    }

    fn port_ok(&self, port: u16) -> bool {
        match self.port {
            Some(p) => p == port,
            None => DEFAULT_PORTS.contains(&port),
        }
    }

    /// Whether this entry, matching `ip`, names it explicitly enough to
    /// reach a non-public address: a single address, or a network inside
    /// one non-public range (so `0.0.0.0/0` never opens loopback).
    fn names_explicitly(&self, ip: IpAddr) -> bool {
        let Target::Net(net) = &self.target else {
            return false;
        };
        net.contains(&ip)
            && (net.prefix_len() == net.max_prefix_len()
                || NON_PUBLIC.iter().any(|(range, _)| range.contains(net)))
    }
}

/// What the app asked to reach, as checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A canonical name, to be resolved.
    Name(String),
    /// A canonical address.
    Ip(IpAddr),
}

/// Checks the spelling of a destination host (from the agent); names are
/// lower-cased (DNS names are case-insensitive), everything else must
/// already be canonical.
pub fn canonical_host(host: &str) -> Result<Host, BadEntry> {
    if let Some(ip) = canonical_ip(host, host)? {
        return Ok(Host::Ip(ip));
    }
    let lower = host.to_ascii_lowercase();
    check_name(host, &lower)?;
    Ok(Host::Name(lower))
}

/// The entry of `rules` that lets `host`:`port` be asked for, if any.
pub fn matching<'r>(rules: &'r [Rule], host: &Host, port: u16) -> Option<&'r Rule> {
    rules.iter().find(|r| {
        r.port_ok(port)
            && match (&r.target, host) {
                (Target::Name { name, wildcard }, Host::Name(h)) => {
                    if *wildcard {
                        h.len() > name.len() + 1
                            && h.ends_with(name.as_str())
                            && h.as_bytes()[h.len() - name.len() - 1] == b'.'
                    } else {
                        h == name
                    }
                }
                (Target::Net(net), Host::Ip(ip)) => net.contains(ip),
                _ => false,
            }
    })
}

/// The outcome of checking one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Connect to these addresses (in order), which were checked.
    Connect(Vec<SocketAddr>),
    /// Refused, with the reason the app is shown.
    Deny(String),
}

/// Decides for `host`:`port` against `rules`, resolving names with
/// `resolve` (injected so tests need no DNS).
pub async fn decide<F, Fut>(rules: &[Rule], host: &str, port: u16, resolve: F) -> Verdict
where
    F: FnOnce(String, u16) -> Fut,
    Fut: std::future::Future<Output = std::io::Result<Vec<SocketAddr>>>,
{
    let host = match canonical_host(host) {
        Ok(h) => h,
        Err(e) => return Verdict::Deny(e.to_string()),
    };
    let Some(rule) = matching(rules, &host, port) else {
        let shown = match &host {
            Host::Name(n) => format!("{n}:{port}"),
            Host::Ip(IpAddr::V6(ip)) => format!("[{ip}]:{port}"),
            Host::Ip(ip) => format!("{ip}:{port}"),
        };
        return Verdict::Deny(format!(
            "{shown} is not on this appspace's egress allowlist"
        ));
    };
    match host {
        Host::Ip(ip) => {
            if never(ip) {
                return Verdict::Deny(format!("{ip} is never reachable"));
            }
            match non_public(ip) {
                Some(what) if !rule.names_explicitly(ip) => Verdict::Deny(format!(
                    "{ip} is a {what} address; only an entry naming it explicitly allows it"
                )),
                _ => Verdict::Connect(vec![SocketAddr::new(ip, port)]),
            }
        }
        Host::Name(name) => {
            let addrs = match resolve(name.clone(), port).await {
                Ok(a) if !a.is_empty() => a,
                Ok(_) => return Verdict::Deny(format!("{name} has no address")),
                Err(e) => return Verdict::Deny(format!("resolving {name}: {e}")),
            };
            let (public, refused): (Vec<SocketAddr>, Vec<SocketAddr>) = addrs
                .into_iter()
                .partition(|a| non_public(a.ip()).is_none() && !never(a.ip()));
            if public.is_empty() {
                let first = refused[0].ip();
                return Verdict::Deny(format!(
                    "{name} resolves to {first}, a {} address; names may only lead to public addresses",
                    non_public(first).unwrap_or("unreachable")
                ));
            }
            Verdict::Connect(public)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(list: &[&str]) -> Vec<Rule> {
        list.iter().map(|r| r.parse().unwrap()).collect()
    }

    #[test]
    fn entries_parse_and_print_canonically() {
        for (text, shown) in [
            ("example.com", "example.com"),
            ("  api.example.com:8443 ", "api.example.com:8443"),
            ("*.example.com", "*.example.com"),
            ("203.0.113.7", "203.0.113.7"),
            ("127.0.0.1:9000", "127.0.0.1:9000"),
            ("10.1.0.0/16", "10.1.0.0/16"),
            ("10.1.0.0/16:443", "10.1.0.0/16:443"),
            ("[2001:db8::1]", "[2001:db8::1]"),
            ("[2001:db8::1]:443", "[2001:db8::1]:443"),
            ("[2001:db8::/32]", "[2001:db8::/32]"),
        ] {
            let rule: Rule = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(rule.to_string(), shown);
            assert_eq!(rule.to_string().parse::<Rule>().unwrap(), rule);
        }
        for text in [
            "",
            "Example.com",
            "example.com.",
            "exa mple.com",
            "a.*.example.com",
            "*",
            "example.com:0",
            "example.com:99999",
            "example.com:http",
            "2130706433",
            "0x7f000001",
            "0177.0.0.1",
            "127.1",
            "127.000.0.1",
            "2001:db8::1",
            "[::ffff:127.0.0.1]",
            "[2001:db8::1",
            "10.1.0.1/16",
            "10.0.0.0/33",
            "0.0.0.0",
            "user@example.com",
        ] {
            assert!(text.parse::<Rule>().is_err(), "{text:?} was accepted");
        }
    }

    async fn no_dns(_: String, _: u16) -> std::io::Result<Vec<SocketAddr>> {
        Err(std::io::Error::other("no DNS in this test"))
    }

    fn resolving(
        to: &'static [&'static str],
    ) -> impl FnOnce(String, u16) -> std::future::Ready<std::io::Result<Vec<SocketAddr>>> {
        move |_, port| {
            std::future::ready(Ok(to
                .iter()
                .map(|ip| SocketAddr::new(ip.parse().unwrap(), port))
                .collect()))
        }
    }

    fn denied(v: Verdict) -> String {
        match v {
            Verdict::Deny(why) => why,
            Verdict::Connect(a) => panic!("allowed: {a:?}"),
        }
    }

    #[tokio::test]
    async fn explicit_addresses_reach_private_ones_and_nothing_else_does() {
        let list = rules(&[
            "127.0.0.1:9000",
            "api.example.com",
            "localhost:9000",
            "*.example.org:8080",
            "0.0.0.0/0",
        ]);
        assert_eq!(
            decide(&list, "127.0.0.1", 9000, no_dns).await,
            Verdict::Connect(vec!["127.0.0.1:9000".parse().unwrap()])
        );
        // Other spellings of the same address are refused outright.
        for trick in [
            "2130706433",
            "0x7f000001",
            "0177.0.0.1",
            "127.1",
            "0x7f.0.0.1",
            "::ffff:127.0.0.1",
            "::ffff:7f00:1",
        ] {
            let why = denied(decide(&list, trick, 9000, no_dns).await);
            assert!(
                why.contains("canonical") || why.contains("mapped"),
                "{trick}: {why}"
            );
        }
        // 0.0.0.0/0 covers public space, so it does not open loopback.
        assert!(denied(decide(&list, "127.0.0.2", 80, no_dns).await).contains("loopback"));
        assert!(denied(decide(&list, "169.254.169.254", 80, no_dns).await).contains("metadata"));
        // An unlisted port.
        assert!(denied(decide(&list, "127.0.0.1", 9001, no_dns).await).contains("not on"));
        let only = rules(&["127.0.0.1:9000"]);
        assert!(denied(decide(&only, "127.0.0.1", 9001, no_dns).await).contains("not on"));
        // A listed name resolving to a private address.
        let why = denied(decide(&list, "localhost", 9000, resolving(&["127.0.0.1"])).await);
        assert!(why.contains("loopback"), "{why}");
        let why = denied(decide(&list, "LocalHost", 9000, resolving(&["::1"])).await);
        assert!(why.contains("loopback"), "{why}");
        // Trailing dots and userinfo never match.
        assert!(
            denied(decide(&list, "api.example.com.", 443, no_dns).await).contains("trailing dot")
        );
        assert!(
            denied(decide(&list, "api.example.com@evil.com", 443, no_dns).await)
                .contains("lower-case")
        );
        // Public answers are kept, private ones dropped.
        assert_eq!(
            decide(
                &list,
                "API.Example.com",
                443,
                resolving(&["10.0.0.1", "93.184.216.34"])
            )
            .await,
            Verdict::Connect(vec!["93.184.216.34:443".parse().unwrap()])
        );
        // Wildcards match names under the suffix only, on their port.
        assert!(matches!(
            decide(
                &list,
                "a.b.example.org",
                8080,
                resolving(&["93.184.216.34"])
            )
            .await,
            Verdict::Connect(_)
        ));
        assert!(denied(decide(&list, "example.org", 8080, no_dns).await).contains("not on"));
        assert!(denied(decide(&list, "badexample.org", 8080, no_dns).await).contains("not on"));
        assert!(denied(decide(&list, "a.example.org", 443, no_dns).await).contains("not on"));
        // Default ports.
        assert!(denied(decide(&list, "api.example.com", 22, no_dns).await).contains("not on"));
    }

    #[tokio::test]
    async fn private_networks_named_explicitly_are_reachable() {
        let list = rules(&["10.1.0.0/16", "[fd00::/8]:443"]);
        assert!(matches!(
            decide(&list, "10.1.2.3", 80, no_dns).await,
            Verdict::Connect(_)
        ));
        assert!(matches!(
            decide(&list, "fd00::5", 443, no_dns).await,
            Verdict::Connect(_)
        ));
        assert!(denied(decide(&list, "10.2.0.1", 80, no_dns).await).contains("not on"));
    }

    #[test]
    fn classification() {
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00:ec2::254",
            "224.0.0.1",
            "0.0.0.0",
        ] {
            assert!(non_public(ip.parse().unwrap()).is_some(), "{ip}");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert!(non_public(ip.parse().unwrap()).is_none(), "{ip}");
        }
    }
}
