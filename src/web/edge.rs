//! The server's edge to the internet: the public URL it is reached at (`--public-url`: with
//! `https://`, session cookies get `Secure` and responses carry HSTS), the reverse proxies whose
//! forwarded-for header is believed (`--trusted-proxy`), and so the client address the login
//! throttle counts. Parsed once at start-up; the rest of `web` asks [`Edge`].
//!
//! The client address: the TCP peer, unless the peer is a trusted proxy; then the
//! `X-Forwarded-For` list is read from the right (the entry the trusted proxy appended last),
//! skipping further trusted proxies, and the first address that is not one is the client. A
//! header from anyone else is ignored, so a client cannot choose the address it is throttled
//! under; a trusted peer that sends no usable header is itself the client.
//!
//! TLS in the server itself ([`TlsFiles`], [`serve_tls`]): rustls (ring) over hyper-util, for
//! teams without a reverse proxy.

use axum::http::HeaderMap;
use std::net::{IpAddr, SocketAddr};

/// The public URL's scheme and origin, as the operator gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl {
    pub origin: String,
    pub https: bool,
}

impl std::str::FromStr for PublicUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim().trim_end_matches('/');
        let (https, rest) = if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!("`{s}` is not an http(s) URL: give the address annotators open, such as https://mmtt.example.org"));
        };
        let host = rest.split('/').next().unwrap_or_default();
        if host.is_empty() || host.contains(['@', ' ', '?', '#']) {
            return Err(format!("`{s}` has no usable host: give the address annotators open, such as https://mmtt.example.org"));
        }
        Ok(PublicUrl { origin: format!("{}://{host}", if https { "https" } else { "http" }), https })
    }
}

/// A trusted proxy: one address or a CIDR block (`10.0.0.0/8`, `fd00::/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyNet {
    addr: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for ProxyNet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "`{s}` is not an IP address or CIDR block: give the proxy's address as the server sees it, such as 127.0.0.1 or 10.0.0.0/8"
            )
        };
        let (a, p) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = a.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
        };
        Ok(ProxyNet { addr, prefix })
    }
}

impl ProxyNet {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => {
                let mask = if self.prefix == 0 { 0 } else { u32::MAX << (32 - self.prefix) };
                u32::from(n) & mask == u32::from(i) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(i)) => {
                let mask = if self.prefix == 0 { 0 } else { u128::MAX << (128 - self.prefix) };
                u128::from(n) & mask == u128::from(i) & mask
            }
            _ => false,
        }
    }
}

/// How the server meets the internet.
#[derive(Debug, Clone, Default)]
pub struct Edge {
    pub public_url: Option<PublicUrl>,
    pub trusted_proxies: Vec<ProxyNet>,
}

impl Edge {
    /// Cookies get `Secure` and responses HSTS: the public URL is https.
    pub fn https(&self) -> bool {
        self.public_url.as_ref().is_some_and(|u| u.https)
    }

    fn trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|n| n.contains(ip))
    }

    /// The client's address (see the module documentation).
    pub fn client_ip(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.ip();
        if !self.trusted(peer) {
            return peer;
        }
        let mut hops: Vec<IpAddr> = Vec::new();
        for v in headers.get_all("x-forwarded-for") {
            let Ok(v) = v.to_str() else { return peer };
            for part in v.split(',') {
                match parse_hop(part.trim()) {
                    Some(ip) => hops.push(ip),
                    // an unparsable entry: nothing left of it can be believed
                    None => hops.clear(),
                }
            }
        }
        hops.into_iter().rev().find(|ip| !self.trusted(*ip)).unwrap_or(peer)
    }
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:5`, `[::1]:5`).
fn parse_hop(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    s.strip_prefix('[').and_then(|r| r.strip_suffix(']')).and_then(|r| r.parse().ok())
}

/// TLS in the server itself (`--tls-cert FILE --tls-key FILE`, PEM): for teams without a
/// reverse proxy.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

impl TlsFiles {
    /// The rustls server configuration (ring, TLS 1.2 and 1.3, HTTP/1.1 and h2 by ALPN); a file
    /// that cannot be read or parsed is named with the fix.
    pub fn server_config(&self) -> Result<tokio_rustls::rustls::ServerConfig, String> {
        use tokio_rustls::rustls;
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.cert)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("--tls-cert {}: {e}: give the server's certificate chain as PEM", self.cert.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "--tls-cert {}: no certificate in the file: give the server's certificate chain as PEM",
                self.cert.display()
            ));
        }
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|e| {
            format!("--tls-key {}: {e}: give the certificate's private key as PEM (PKCS#8, PKCS#1 or SEC1)", self.key.display())
        })?;
        let mut c = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| format!("--tls-cert/--tls-key: {e}: the key must belong to the certificate"))?;
        c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(c)
    }
}

/// Serves `app` over TLS on `listener` until `shutdown` resolves: each connection's handshake
/// (at most 10 s) and requests run on a task of their own; the peer address reaches handlers as
/// `ConnectInfo`, as with plain `axum::serve`.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    config: tokio_rustls::rustls::ServerConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let svc = hyper_util::service::TowerToHyperService::new(app.layer(axum::Extension(axum::extract::ConnectInfo(peer))));
            let served = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(tls), svc)
                .await;
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn edge(proxies: &[&str]) -> Edge {
        Edge { public_url: None, trusted_proxies: proxies.iter().map(|p| p.parse().unwrap()).collect() }
    }

    #[test]
    fn the_forwarded_client_counts_only_behind_a_trusted_proxy() {
        let e = edge(&["10.0.0.5"]);
        let proxy: SocketAddr = "10.0.0.5:40000".parse().unwrap();
        let other: SocketAddr = "203.0.113.9:40000".parse().unwrap();
        let h = headers(&["198.51.100.7"]);
        assert_eq!(e.client_ip(proxy, &h), "198.51.100.7".parse::<IpAddr>().unwrap());
        // from anyone else the header is ignored
        assert_eq!(e.client_ip(other, &h), other.ip());
        // a client's own forged entry lies left of the one the proxy appended
        let h = headers(&["1.1.1.1, 198.51.100.7"]);
        assert_eq!(e.client_ip(proxy, &h), "198.51.100.7".parse::<IpAddr>().unwrap());
        // no header, or garbage: the proxy itself
        assert_eq!(e.client_ip(proxy, &HeaderMap::new()), proxy.ip());
        assert_eq!(e.client_ip(proxy, &headers(&["not an address"])), proxy.ip());
        // with ports and across repeated headers
        assert_eq!(e.client_ip(proxy, &headers(&["1.1.1.1", "[2001:db8::1]:443"])), "2001:db8::1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn chained_trusted_proxies_are_skipped_and_cidr_blocks_match() {
        let e = edge(&["10.0.0.0/8", "::1"]);
        let peer: SocketAddr = "[::1]:9".parse().unwrap();
        assert_eq!(e.client_ip(peer, &headers(&["198.51.100.7, 10.1.2.3"])), "198.51.100.7".parse::<IpAddr>().unwrap());
        let n: ProxyNet = "10.0.0.0/8".parse().unwrap();
        assert!(n.contains("10.255.0.1".parse().unwrap()) && !n.contains("11.0.0.1".parse().unwrap()));
        assert!(n.contains("::ffff:10.0.0.1".parse().unwrap()), "IPv4-mapped IPv6 peers");
        for bad in ["10.0.0.0/33", "proxy.local", "10.0.0/8", ""] {
            let e = bad.parse::<ProxyNet>().unwrap_err();
            assert!(e.contains("CIDR") && e.contains("such as"), "{e}");
        }
    }

    #[test]
    fn public_urls_parse_once() {
        let u: PublicUrl = "https://mmtt.example.org/".parse().unwrap();
        assert_eq!(u, PublicUrl { origin: "https://mmtt.example.org".into(), https: true });
        assert!(!"http://10.0.0.1:8080".parse::<PublicUrl>().unwrap().https);
        for bad in ["mmtt.example.org", "ftp://x", "https://", "https://user@host"] {
            assert!(bad.parse::<PublicUrl>().unwrap_err().contains("such as https://"), "{bad}");
        }
    }
}
