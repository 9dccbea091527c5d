//! Who an anonymous caller is: the socket's peer address, or — only when that peer is a
//! trusted proxy — the address the proxy names in its forwarding header.

use axum::http::{HeaderMap, HeaderName};
use ipnet::IpNet;
use std::net::IpAddr;

/// Resolves client addresses (config `rate_limits.trusted_proxies`, `client_ip_header`).
#[derive(Debug, Clone)]
pub struct ClientIp {
    trusted: Vec<IpNet>,
    header: Option<HeaderName>,
}

impl ClientIp {
    pub fn new(trusted: Vec<IpNet>, header: &str) -> Self {
        Self {
            trusted,
            header: HeaderName::from_bytes(header.trim().as_bytes()).ok(),
        }
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.trusted.iter().any(|n| n.contains(&ip))
    }

    /// The client of a request from `peer`: the header is read only when `peer` is trusted,
    /// and then the right-most address in it that is not a trusted proxy itself (the left part
    /// of the header is whatever the client chose to send, so it is never believed).
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        let Some(header) = &self.header else {
            return peer;
        };
        if !self.is_trusted(peer) {
            return peer;
        }
        let mut client = peer;
        // Several header lines count as one comma-separated list, in order.
        let hops: Vec<&str> = headers
            .get_all(header)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        for hop in hops.iter().rev() {
            match parse_hop(hop) {
                Some(ip) if self.is_trusted(ip) => client = ip,
                Some(ip) => return ip,
                // Garbage from here leftwards cannot be trusted: stop at the last good hop.
                None => return client,
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry: an address, maybe with a port or IPv6 brackets.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sa) = hop.parse::<std::net::SocketAddr>() {
        return Some(canonical(sa.ip()));
    }
    hop.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .and_then(|h| h.parse::<IpAddr>().ok())
        .map(canonical)
}

/// IPv4-mapped IPv6 addresses are the IPv4 address (one caller, one limiter entry).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn header_only_from_trusted_peers() {
        let c = ClientIp::new(
            vec![
                "10.0.0.0/8".parse().unwrap(),
                "192.168.1.1/32".parse().unwrap(),
            ],
            "X-Forwarded-For",
        );
        let h = headers(&["203.0.113.9"]);
        assert_eq!(c.resolve(ip("198.51.100.1"), &h), ip("198.51.100.1"));
        assert_eq!(c.resolve(ip("10.1.2.3"), &h), ip("203.0.113.9"));
        // A client-chosen prefix is not believed: the right-most untrusted hop is the client.
        let h = headers(&["1.1.1.1, 203.0.113.9, 10.0.0.7"]);
        assert_eq!(c.resolve(ip("192.168.1.1"), &h), ip("203.0.113.9"));
        let h = headers(&["1.1.1.1", "203.0.113.9:4711, 10.0.0.7"]);
        assert_eq!(c.resolve(ip("10.0.0.1"), &h), ip("203.0.113.9"));
        let h = headers(&["[2001:db8::1]:443"]);
        assert_eq!(c.resolve(ip("10.0.0.1"), &h), ip("2001:db8::1"));
        // Garbage stops the walk at the last good hop; no header is the peer itself.
        let h = headers(&["not-an-ip, 10.0.0.9"]);
        assert_eq!(c.resolve(ip("10.0.0.1"), &h), ip("10.0.0.9"));
        assert_eq!(c.resolve(ip("10.0.0.1"), &HeaderMap::new()), ip("10.0.0.1"));
        assert_eq!(
            c.resolve(ip("::ffff:10.0.0.1"), &HeaderMap::new()),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn no_trusted_proxies_means_the_socket() {
        let c = ClientIp::new(vec![], "x-forwarded-for");
        assert_eq!(
            c.resolve(ip("127.0.0.1"), &headers(&["203.0.113.9"])),
            ip("127.0.0.1")
        );
    }
}
