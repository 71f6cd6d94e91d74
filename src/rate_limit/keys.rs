//! What one client is: [`KeyBy`], and the client address behind trusted
//! proxies.

use std::{
    fmt,
    hash::Hash,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use axum::{
    extract::ConnectInfo,
    http::{HeaderName, header, request::Parts},
};

/// What one client is, for the limiter. See the [module docs](crate::rate_limit).
#[derive(Clone)]
#[non_exhaustive]
pub enum KeyBy {
    /// The TCP peer's IP address.
    PeerIp,
    /// The client's IP as reported by trusted proxies, else the peer's.
    ClientIp(TrustedProxies),
    /// A header's value.
    Header(HeaderName),
    /// One limit shared by every request.
    Global,
    /// A function of the request; `None` shares one key.
    Custom(KeyFn),
}

/// A key function of [`KeyBy::Custom`].
pub type KeyFn = Arc<dyn Fn(&Parts) -> Option<String> + Send + Sync>;

impl KeyBy {
    /// [`KeyBy::ClientIp`] trusting the proxies in `networks`
    /// (`"10.0.0.0/8"`, `"::1/128"`, or a single address).
    ///
    /// Behind a trusted peer, the client is the rightmost address of
    /// `Forwarded` (or, without it, `X-Forwarded-For`) that is not a
    /// trusted proxy. Entries may carry a port (`203.0.113.5:51234`,
    /// `[2001:db8::7]:1234`); one that is no address (`unknown`) ends the
    /// walk, and the peer is the key. IPv4 peers seen through a dual-stack
    /// listener (`::ffff:10.0.0.7`) match IPv4 networks.
    ///
    /// ```
    /// let key = axum_pools::layer::KeyBy::client_ip(["127.0.0.1", "10.0.0.0/8"]).unwrap();
    /// assert!(axum_pools::layer::KeyBy::client_ip(["10.0.0.0/33"]).is_err());
    /// ```
    ///
    /// # Errors
    ///
    /// A network that does not parse, named in the message.
    pub fn client_ip<I, S>(networks: I) -> Result<Self, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let nets = networks
            .into_iter()
            .map(|n| parse_cidr(n.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(Self::ClientIp(TrustedProxies(nets)))
    }

    /// [`KeyBy::Custom`] from a closure.
    ///
    /// ```
    /// use axum_pools::layer::KeyBy;
    /// let by_tenant = KeyBy::custom(|parts| {
    ///     parts.uri.path().split('/').nth(1).map(str::to_owned)
    /// });
    /// ```
    pub fn custom(f: impl Fn(&Parts) -> Option<String> + Send + Sync + 'static) -> Self {
        Self::Custom(Arc::new(f))
    }

    /// Keys by the peer's address, which only `ConnectInfo` gives.
    pub(super) fn by_peer(&self) -> bool {
        matches!(self, Self::PeerIp | Self::ClientIp(_))
    }

    pub(super) fn key(&self, parts: &Parts) -> Key {
        // A dual-stack listener (`[::]`) sees IPv4 peers as `::ffff:a.b.c.d`.
        let peer = || {
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip().to_canonical())
        };
        match self {
            Self::PeerIp => peer().map_or(Key::Unknown, Key::Ip),
            Self::ClientIp(trusted) => {
                peer().map_or(Key::Unknown, |ip| Key::Ip(trusted.client(ip, parts)))
            }
            Self::Header(name) => parts.headers.get(name).map_or(Key::Unknown, |v| {
                Key::Text(String::from_utf8_lossy(v.as_bytes()).into_owned())
            }),
            Self::Global => Key::Unknown,
            Self::Custom(f) => f(parts).map_or(Key::Unknown, Key::Text),
        }
    }
}

impl fmt::Debug for KeyBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PeerIp => f.write_str("PeerIp"),
            Self::ClientIp(t) => f.debug_tuple("ClientIp").field(t).finish(),
            Self::Header(h) => f.debug_tuple("Header").field(h).finish(),
            Self::Global => f.write_str("Global"),
            Self::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

/// Networks whose forwarding headers are believed.
#[derive(Clone, Debug)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

impl TrustedProxies {
    fn trusts(&self, ip: IpAddr) -> bool {
        self.0
            .iter()
            .any(|&(net, prefix)| in_network(ip, net, prefix))
    }

    /// The rightmost address in the forwarding chain that is not a trusted
    /// proxy; the peer itself when it is not trusted (a spoofed header from
    /// an untrusted peer is ignored). An entry that is no address
    /// (`unknown`, `_hidden`, garbage) ends the walk at the peer: what lies
    /// left of it may be the client's own writing.
    fn client(&self, peer: IpAddr, parts: &Parts) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        // `None` for an entry that is no address.
        let mut chain: Vec<Option<IpAddr>> = Vec::new();
        for value in parts.headers.get_all(header::FORWARDED) {
            for element in value.to_str().unwrap_or_default().split(',') {
                for pair in element.split(';') {
                    if let Some((k, v)) = pair.trim().split_once('=')
                        && k.eq_ignore_ascii_case("for")
                    {
                        chain.push(parse_forwarded_for(v));
                    }
                }
            }
        }
        if chain.is_empty() {
            for value in parts.headers.get_all("x-forwarded-for") {
                chain.extend(
                    value
                        .to_str()
                        .unwrap_or_default()
                        .split(',')
                        .map(parse_forwarded_for),
                );
            }
        }
        for entry in chain.into_iter().rev() {
            match entry {
                Some(ip) if self.trusts(ip) => {}
                Some(ip) => return ip,
                None => return peer,
            }
        }
        peer
    }
}

/// One forwarding entry's address: `a.b.c.d`, `a.b.c.d:port`, `v6`,
/// `[v6]`, `[v6]:port`, quoted or not (RFC 7239 and what proxies write
/// into `X-Forwarded-For`); IPv4-mapped IPv6 as IPv4.
fn parse_forwarded_for(v: &str) -> Option<IpAddr> {
    let v = v.trim().trim_matches('"');
    let v = v
        .strip_prefix('[')
        .map_or(v, |rest| rest.split(']').next().unwrap_or(rest));
    v.parse()
        .ok()
        .or_else(|| v.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .map(|ip: IpAddr| ip.to_canonical())
}

fn parse_cidr(s: &str) -> Result<(IpAddr, u8), String> {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let ip: IpAddr = addr
        .trim()
        .parse()
        .map_err(|_| format!("trusted proxy network {s:?}: not an IP address"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        Some(p) => p
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("trusted proxy network {s:?}: prefix must be 0..={max}"))?,
        None => max,
    };
    Ok((ip, prefix))
}

fn in_network(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) enum Key {
    Ip(IpAddr),
    Text(String),
    Unknown,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_matching() {
        let (net, p) = parse_cidr("10.0.0.0/8").unwrap();
        assert!(in_network("10.1.2.3".parse().unwrap(), net, p));
        assert!(!in_network("11.0.0.1".parse().unwrap(), net, p));
        let (net, p) = parse_cidr("::1").unwrap();
        assert!(in_network("::1".parse().unwrap(), net, p));
        assert!(!in_network("127.0.0.1".parse().unwrap(), net, p));
        let (net, p) = parse_cidr("0.0.0.0/0").unwrap();
        assert!(in_network("8.8.8.8".parse().unwrap(), net, p));
        assert!(parse_cidr("10.0.0.0/33").unwrap_err().contains("0..=32"));
        assert!(parse_cidr("nope").unwrap_err().contains("not an IP"));
    }

    #[test]
    fn forwarded_for_forms() {
        assert_eq!(
            parse_forwarded_for("192.0.2.60"),
            Some("192.0.2.60".parse().unwrap())
        );
        assert_eq!(
            parse_forwarded_for("\"[2001:db8::1]:4711\""),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(parse_forwarded_for("_hidden"), None);
    }
}
