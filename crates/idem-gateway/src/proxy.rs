//! The reverse proxy the layer wraps: no idempotency rules here, only
//! faithful forwarding.

use http::header::{HeaderName, HeaderValue, CONNECTION, HOST};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use idem_core::headers::is_hop_by_hop;
use idem_tower::{BoxError, NotExecuted, RequestBody};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tower_service::Service;

/// The client's address, put in request extensions by the server.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// Forwards requests to one upstream over a pooled keep-alive client.
#[derive(Clone)]
pub struct Proxy {
    client: Client<HttpConnector, RequestBody<Incoming>>,
    scheme: Scheme,
    authority: Authority,
    base_path: String,
}

/// The upstream URL is not one the proxy can use.
#[derive(Debug, thiserror::Error)]
#[error("upstream `{uri}`: {reason}")]
pub struct InvalidUpstream {
    uri: String,
    reason: &'static str,
}

impl Proxy {
    /// A proxy to `upstream` (`http://host:port[/base]`).
    pub fn new(upstream: &Uri) -> Result<Self, InvalidUpstream> {
        let invalid = |reason| InvalidUpstream {
            uri: upstream.to_string(),
            reason,
        };
        let scheme = upstream
            .scheme()
            .cloned()
            .ok_or_else(|| invalid("needs a scheme, e.g. http://127.0.0.1:3000"))?;
        if scheme != Scheme::HTTP {
            return Err(invalid("only http:// upstreams are supported"));
        }
        let authority = upstream
            .authority()
            .cloned()
            .ok_or_else(|| invalid("needs a host"))?;
        let base_path = upstream.path().trim_end_matches('/').to_owned();
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(10)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(1024)
            .build(connector);
        Ok(Proxy {
            client,
            scheme,
            authority,
            base_path,
        })
    }

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

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    let hop: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_hop_by_hop(name.as_str()))
        .cloned()
        .collect();
    for name in hop {
        headers.remove(name);
    }
}

fn set_forwarded(headers: &mut HeaderMap, client: Option<SocketAddr>) {
    if let Some(addr) = client {
        let ip = addr.ip().to_string();
        let value = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(prior) => format!("{prior}, {ip}"),
            None => ip,
        };
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert("x-forwarded-for", v);
        }
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    if let Some(host) = headers.get(HOST).cloned() {
        headers.insert("x-forwarded-host", host);
    }
}

impl Service<Request<RequestBody<Incoming>>> for Proxy {
    type Response = Response<Incoming>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Incoming>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<RequestBody<Incoming>>) -> Self::Future {
        let client = self.client.clone();
        let uri = self.upstream_uri(request.uri());
        Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            parts.uri = uri.map_err(NotExecuted::new)?;
            let client_addr = parts.extensions.get::<ClientAddr>().map(|c| c.0);
            strip_hop_by_hop(&mut parts.headers);
            set_forwarded(&mut parts.headers, client_addr);
            // The client sets Host from the upstream URI.
            parts.headers.remove(HOST);
            parts.version = http::Version::HTTP_11;
            match client.request(Request::from_parts(parts, body)).await {
                Ok(mut response) => {
                    strip_hop_by_hop(response.headers_mut());
                    Ok(response)
                }
                // Refused, unreachable, DNS: nothing reached the upstream.
                Err(e) if e.is_connect() => Err(Box::new(NotExecuted::new(e)) as BoxError),
                Err(e) => Err(Box::new(e) as BoxError),
            }
        })
    }
}
