//! The reverse proxy the layer wraps: no idempotency rules here, only
//! faithful forwarding.

use crate::upstream_tls::{UpstreamHttp2, UpstreamTls};
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, Request, Response, Uri};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use idem_core::headers::strip_hop_by_hop;
use idem_tower::{BoxError, NotExecuted, RequestBody};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tower_service::Service;

// Named once: a header name given as a string is parsed on every use.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The client's address, put in request extensions by the server.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// Put in request extensions by the server when the client spoke TLS to
/// it: the upstream is told `X-Forwarded-Proto: https`.
#[derive(Debug, Clone, Copy)]
pub struct TlsTerminated;

/// Forwards requests to one upstream (`http://` or `https://`) over a
/// pooled keep-alive client.
#[derive(Clone)]
pub struct Proxy {
    // Behind one `Arc`: the proxy is cloned for every request (by the
    // server, the layer and `call`), and the client alone holds several.
    inner: Arc<ProxyInner>,
}

struct ProxyInner {
    client: Client<HttpsConnector<HttpConnector>, RequestBody<Incoming>>,
    scheme: Scheme,
    authority: Authority,
    base_path: String,
    forwarding: Forwarding,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = &self.inner;
        f.debug_struct("Proxy")
            .field("scheme", &inner.scheme)
            .field("authority", &inner.authority)
            .field("base_path", &inner.base_path)
            .field("forwarding", &inner.forwarding)
            .finish_non_exhaustive()
    }
}

/// What the proxy does to headers on the way to the upstream, beyond
/// removing hop-by-hop ones.
#[derive(Debug, Clone, Default)]
pub struct Forwarding {
    /// Headers never removed because `Connection` names them: the key, the
    /// headers the scope and fingerprint are read from. Otherwise a client
    /// could have the gateway claim under one tenant and the upstream see
    /// another (or none), or defeat an upstream that dedupes by key.
    pub protected: Vec<HeaderName>,
    /// Keep inbound `Forwarded`, `X-Forwarded-*` and `X-Real-IP` and append
    /// to them (only behind a proxy that sets them itself). When false,
    /// they are dropped and the gateway writes its own.
    pub trust_forwarded: bool,
}

impl Forwarding {
    /// The protected headers of a layer configured with `config`.
    pub fn for_config(config: &idem_tower::IdempotencyConfig, trust_forwarded: bool) -> Self {
        let mut protected = vec![config.key_header.clone(), CONTENT_TYPE];
        protected.extend(config.scope.headers());
        protected.extend(config.all_fingerprint_headers());
        protected.dedup();
        Forwarding {
            protected,
            trust_forwarded,
        }
    }
}

/// The upstream URL is not one the proxy can use.
#[derive(Debug, thiserror::Error)]
#[error("upstream `{uri}`: {reason}")]
pub struct InvalidUpstream {
    uri: String,
    reason: String,
}

impl Proxy {
    /// A proxy to `upstream` (`http://` or `https://host[:port][/base]`),
    /// reached as `tls` says.
    pub fn new(
        upstream: &Uri,
        forwarding: Forwarding,
        tls: &UpstreamTls,
    ) -> Result<Self, InvalidUpstream> {
        let invalid = |reason: String| InvalidUpstream {
            uri: upstream.to_string(),
            reason,
        };
        let scheme = upstream
            .scheme()
            .cloned()
            .ok_or_else(|| invalid("needs a scheme, e.g. http://127.0.0.1:3000".to_owned()))?;
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return Err(invalid(
                "only http:// and https:// upstreams are supported".to_owned(),
            ));
        }
        let authority = upstream
            .authority()
            .cloned()
            .ok_or_else(|| invalid("needs a host".to_owned()))?;
        let base_path = upstream.path().trim_end_matches('/').to_owned();
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(10)));
        // The TLS connector wraps the TCP one; `https_or_http` lets the
        // same client reach an `http://` upstream in the clear.
        connector.enforce_http(false);
        let tls_config = tls.client_config().map_err(|e| invalid(e.to_string()))?;
        let https = HttpsConnectorBuilder::new()
            .with_tls_config(tls_config)
            .https_or_http();
        // ALPN follows the versions enabled here.
        let https = match tls.http2 {
            UpstreamHttp2::Auto => https
                .enable_http1()
                .enable_http2()
                .wrap_connector(connector),
            UpstreamHttp2::Never => https.enable_http1().wrap_connector(connector),
            UpstreamHttp2::Always => https.enable_http2().wrap_connector(connector),
        };
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(1024);
        if tls.http2 == UpstreamHttp2::Always {
            builder.http2_only(true);
        }
        let client = builder.build(https);
        Ok(Proxy {
            inner: Arc::new(ProxyInner {
                client,
                scheme,
                authority,
                base_path,
                forwarding,
            }),
        })
    }
}

impl ProxyInner {
    fn upstream_uri(&self, uri: &Uri) -> Result<Uri, http::Error> {
        let path_and_query = uri
            .path_and_query()
            .map(PathAndQuery::as_str)
            .unwrap_or("/");
        let pq: PathAndQuery = if self.base_path.is_empty() {
            PathAndQuery::try_from(path_and_query)?
        } else {
            PathAndQuery::try_from(format!("{}{}", self.base_path, path_and_query))?
        };
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
    }
}

/// Whether a client could use the header to claim another address or host:
/// `Forwarded`, `X-Real-IP` and every `X-Forwarded-*`.
fn is_forwarding(name: &HeaderName) -> bool {
    let name = name.as_str();
    name == "forwarded" || name == "x-real-ip" || name.starts_with("x-forwarded-")
}

fn set_forwarded(
    headers: &mut HeaderMap,
    host: Option<HeaderValue>,
    client: Option<SocketAddr>,
    tls: bool,
    trust: bool,
) {
    if !trust {
        // One pass over the names present; nothing is allocated when the
        // client sent none (the usual case).
        let claimed: Vec<HeaderName> = headers
            .keys()
            .filter(|n| is_forwarding(n))
            .cloned()
            .collect();
        for name in claimed {
            headers.remove(name);
        }
    }
    if let Some(addr) = client {
        let ip = addr.ip().to_string();
        let prior: Vec<&str> = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let value = if prior.is_empty() {
            ip
        } else {
            format!("{}, {ip}", prior.join(", "))
        };
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(X_FORWARDED_FOR, v);
        }
    }
    let proto = if tls { "https" } else { "http" };
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    // Always the gateway's own reading, never the client's header.
    match host {
        Some(host) => {
            headers.insert(X_FORWARDED_HOST, host);
        }
        None => {
            headers.remove(X_FORWARDED_HOST);
        }
    }
}

/// The host the client asked for: `Host`, or the `:authority` of HTTP/2.
fn request_host(parts: &http::request::Parts) -> Option<HeaderValue> {
    parts.headers.get(HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    })
}

impl Service<Request<RequestBody<Incoming>>> for Proxy {
    type Response = Response<Incoming>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Incoming>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<RequestBody<Incoming>>) -> Self::Future {
        let inner = self.inner.clone();
        let uri = inner.upstream_uri(request.uri());
        Box::pin(async move {
            let forwarding = &inner.forwarding;
            let (mut parts, body) = request.into_parts();
            let host = request_host(&parts);
            parts.uri = uri.map_err(NotExecuted::new)?;
            let client_addr = parts.extensions.get::<ClientAddr>().map(|c| c.0);
            strip_hop_by_hop(&mut parts.headers, &forwarding.protected);
            let tls = parts.extensions.get::<TlsTerminated>().is_some();
            set_forwarded(
                &mut parts.headers,
                host,
                client_addr,
                tls,
                forwarding.trust_forwarded,
            );
            // The client sets Host from the upstream URI.
            parts.headers.remove(HOST);
            parts.version = http::Version::HTTP_11;
            match inner.client.request(Request::from_parts(parts, body)).await {
                Ok(mut response) => {
                    strip_hop_by_hop(response.headers_mut(), &[]);
                    Ok(response)
                }
                // Refused, unreachable, DNS, a TLS handshake that failed:
                // nothing reached the upstream.
                Err(e) if e.is_connect() || never_sent(&e) => {
                    // hyper's own message ("client error (Connect)") does not say why.
                    let reason = idem_core::causes::Causes(&e).to_string();
                    tracing::warn!(%reason, "upstream not reached; nothing was executed");
                    Err(Box::new(NotExecuted::new(reason)) as BoxError)
                }
                Err(e) => Err(Box::new(e) as BoxError),
            }
        })
    }
}

/// Whether the request never reached the upstream's application although
/// the connection was made:
/// - hyper cancelled it because the connection closed while it was still
///   queued (hyper hands such a request back unsent);
/// - the upstream's TLS endpoint refused the handshake (a bad or missing
///   client certificate, an alert). With TLS 1.3 a server judges the
///   client's certificate after the client considers the handshake done,
///   so the refusal arrives while the request is being sent; but a server
///   that refused the handshake never hands the request to its
///   application.
fn never_sent(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_canceled)
        {
            return true;
        }
        if let Some(tls) = c.downcast_ref::<rustls::Error>() {
            return is_handshake_refusal(tls);
        }
        // tokio-rustls hands the alert up as an `io::Error` carrying only
        // rustls's message, not the error itself.
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::InvalidData {
                let text = io.to_string();
                if let Some(alert) = text.strip_prefix("received fatal alert: ") {
                    return HANDSHAKE_ALERTS.contains(&alert);
                }
            }
        }
        cause = c.source();
    }
    false
}

/// The alerts a TLS server sends when it refuses the handshake (rustls's
/// names): the client's certificate, or no agreement on how to talk.
const HANDSHAKE_ALERTS: [&str; 11] = [
    "HandshakeFailure",
    "BadCertificate",
    "UnsupportedCertificate",
    "CertificateRevoked",
    "CertificateExpired",
    "CertificateUnknown",
    "CertificateRequired",
    "UnknownCA",
    "AccessDenied",
    "ProtocolVersion",
    "NoApplicationProtocol",
];

fn is_handshake_refusal(tls: &rustls::Error) -> bool {
    match tls {
        rustls::Error::AlertReceived(alert) => {
            HANDSHAKE_ALERTS.contains(&format!("{alert:?}").as_str())
        }
        rustls::Error::InvalidCertificate(_)
        | rustls::Error::NoCertificatesPresented
        | rustls::Error::PeerIncompatible(_) => true,
        _ => false,
    }
}
