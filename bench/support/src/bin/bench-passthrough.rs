//! `bench-passthrough`: a bare reverse proxy built from the same stack as the
//! `idem` gateway (hyper 1 server via `hyper_util::server::conn::auto`, and a
//! pooled keep-alive `hyper_util::client::legacy::Client` with
//! `HttpConnector`, wrapped in hyper-rustls for https:// upstreams; rustls
//! on the listener with `--tls-cert`), with no idempotency logic at all.
//!
//! Request and response bodies are streamed through without buffering, the
//! URI is rewritten to the upstream, hop-by-hop headers are stripped in both
//! directions and `X-Forwarded-For` is set. Its throughput is the ceiling any
//! proxy in this benchmark can reach.

/// The same allocator in the gateway and the benchmark's pass-through proxy,
/// so their ratio compares proxies, not allocators.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use clap::Parser;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(
    name = "bench-passthrough",
    about = "Bare streaming reverse proxy (the benchmark ceiling)"
)]
struct Args {
    /// Address to listen on, e.g. 127.0.0.1:18081.
    #[arg(long)]
    listen: SocketAddr,
    /// Upstream base URL, e.g. http://127.0.0.1:18080 or https://….
    #[arg(long)]
    upstream: Uri,
    /// PEM file of the CA that signs an https:// upstream's certificate
    /// (default: Mozilla's roots), as the gateway's `upstream_ca`.
    #[arg(long)]
    upstream_ca: Option<std::path::PathBuf>,
    /// Terminate TLS with this PEM certificate chain (needs --tls-key), as
    /// the gateway's `tls_cert`.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
}

/// Response body: either the streamed upstream body or a small local error.
type ProxyBody = Either<Incoming, Full<Bytes>>;

/// Hop-by-hop headers that must not be forwarded (RFC 9110 section 7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Where and how to forward requests.
struct Proxy {
    /// Pooled keep-alive HTTP client (TLS for an https:// upstream, with
    /// the gateway's rustls provider).
    client: Client<HttpsConnector<HttpConnector>, Incoming>,
    /// Upstream scheme.
    scheme: Scheme,
    /// Upstream `host:port`.
    authority: Authority,
    /// Upstream base path without a trailing slash (often empty).
    base_path: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let proxy = Arc::new(Proxy::new(&args.upstream, args.upstream_ca.as_deref())?);
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(idem_bench::tls_acceptor(cert, key)?),
        _ => None,
    };
    let listener = idem_bench::bind_and_announce(args.listen).await?;

    let mut server = auto::Builder::new(TokioExecutor::new());
    server.http1().keep_alive(true);
    let server = Arc::new(server);

    // Runs until killed: nothing cancels `forever`.
    let forever = tokio_util::sync::CancellationToken::new();
    while let Some((stream, peer)) = idem_serve::accept(&listener, &forever).await {
        let proxy = Arc::clone(&proxy);
        let server = Arc::clone(&server);
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let proxy = Arc::clone(&proxy);
                async move { Ok::<_, std::convert::Infallible>(proxy.forward(req, peer.ip()).await) }
            });
            let served = match tls {
                None => server.serve_connection(TokioIo::new(stream), service).await,
                Some(tls) => match tls.accept(stream).await {
                    Ok(stream) => server.serve_connection(TokioIo::new(stream), service).await,
                    Err(err) => {
                        eprintln!("TLS handshake failed: {err}");
                        return;
                    }
                },
            };
            if let Err(err) = served {
                eprintln!("connection error: {err}");
            }
        });
    }
    Ok(())
}

impl Proxy {
    /// Validates the upstream URL and builds the pooled client.
    fn new(upstream: &Uri, ca: Option<&std::path::Path>) -> anyhow::Result<Self> {
        let scheme = upstream
            .scheme()
            .cloned()
            .context("--upstream needs a scheme")?;
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            bail!("--upstream must be an http:// or https:// URL, got {upstream}");
        }
        let authority = upstream
            .authority()
            .cloned()
            .context("--upstream needs a host")?;
        let base_path = upstream.path().trim_end_matches('/').to_owned();

        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_keepalive(Some(std::time::Duration::from_secs(60)));
        connector.enforce_http(false);
        let roots = idem_tls::roots(ca.map(|ca| ("--upstream-ca", ca)))?;
        let https = HttpsConnectorBuilder::new()
            .with_tls_config(idem_tls::client_config(roots, None)?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .build(https);

        Ok(Self {
            client,
            scheme,
            authority,
            base_path,
        })
    }

    /// Forwards one request upstream and streams the answer back.
    async fn forward(&self, req: Request<Incoming>, peer: IpAddr) -> Response<ProxyBody> {
        let (mut parts, body) = req.into_parts();

        parts.uri = match self.upstream_uri(&parts.uri) {
            Ok(uri) => uri,
            Err(err) => return error(StatusCode::BAD_REQUEST, &format!("bad request URI: {err}")),
        };
        parts.version = Version::HTTP_11;
        strip_hop_by_hop(&mut parts.headers);
        // Let the client set Host from the rewritten URI.
        parts.headers.remove(header::HOST);
        append_forwarded_for(&mut parts.headers, peer);

        match self.client.request(Request::from_parts(parts, body)).await {
            Ok(resp) => {
                let (mut parts, body) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                Response::from_parts(parts, Either::Left(body))
            }
            Err(err) => error(StatusCode::BAD_GATEWAY, &format!("upstream error: {err}")),
        }
    }

    /// Rewrites the incoming request URI onto the upstream.
    fn upstream_uri(&self, incoming: &Uri) -> Result<Uri, http::Error> {
        let pq = incoming.path_and_query().map_or("/", PathAndQuery::as_str);
        let path_and_query = if self.base_path.is_empty() {
            PathAndQuery::try_from(pq)?
        } else {
            PathAndQuery::try_from(format!("{}{pq}", self.base_path))?
        };
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
    }
}

/// Removes the fixed hop-by-hop headers and any header named in `Connection`.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Appends the client address to `X-Forwarded-For` (creating it if absent).
fn append_forwarded_for(headers: &mut HeaderMap, peer: IpAddr) {
    const XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
    let value = match headers.get(&XFF).and_then(|v| v.to_str().ok()) {
        Some(prior) => format!("{prior}, {peer}"),
        None => peer.to_string(),
    };
    if let Ok(value) = HeaderValue::try_from(value) {
        headers.insert(XFF, value);
    }
}

/// A small local `text/plain` error response.
fn error(status: StatusCode, message: &str) -> Response<ProxyBody> {
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from(format!(
        "{message}\n"
    )))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
