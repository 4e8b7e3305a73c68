//! `bench-upstream`: a minimal, fast HTTP/1.1 origin server for benchmarks.
//!
//! Every `POST` is answered with `201 Created` and a small JSON body
//! `{"id":N,"ok":true}`, where `N` counts side effects (one per POST that
//! reached this server). Every other method is answered with `200 OK`. The
//! request body is always drained before answering. Connections are kept
//! alive.

/// The same allocator in the gateway and the benchmark's pass-through proxy,
/// so their ratio compares proxies, not allocators.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use clap::Parser;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(
    name = "bench-upstream",
    about = "Fast benchmark upstream (POST -> 201 JSON)"
)]
struct Args {
    /// Address to listen on, e.g. 127.0.0.1:18080.
    #[arg(long)]
    listen: SocketAddr,
    /// Serve HTTPS with this PEM certificate chain (needs --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = idem_bench::bind_and_announce(args.listen).await?;
    let side_effects = Arc::new(AtomicU64::new(0));
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(idem_bench::tls_acceptor(cert, key)?),
        _ => None,
    };

    // Runs until killed: nothing cancels `forever`.
    let forever = tokio_util::sync::CancellationToken::new();
    while let Some((stream, _peer)) = idem_serve::accept(&listener, &forever).await {
        let side_effects = Arc::clone(&side_effects);
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(req, Arc::clone(&side_effects)));
            let served = match tls {
                None => {
                    http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service)
                        .await
                }
                Some(tls) => match tls.accept(stream).await {
                    Ok(stream) => {
                        http1::Builder::new()
                            .keep_alive(true)
                            .serve_connection(TokioIo::new(stream), service)
                            .await
                    }
                    Err(err) => {
                        eprintln!("TLS handshake failed: {err}");
                        return;
                    }
                },
            };
            if let Err(err) = served {
                if !err.is_incomplete_message() {
                    eprintln!("connection error: {err}");
                }
            }
        });
    }
    Ok(())
}

/// Drains the request body, then answers `201` + JSON for POST,
/// `{"count":N}` (side effects so far) for `GET /count`, `200` otherwise.
async fn handle(
    req: Request<Incoming>,
    side_effects: Arc<AtomicU64>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, mut body) = req.into_parts();
    // Drain without buffering; a broken body still gets an answer.
    while let Some(frame) = body.frame().await {
        if frame.is_err() {
            return Ok(plain(StatusCode::BAD_REQUEST, "bad body\n"));
        }
    }

    let response = if parts.method == Method::POST {
        let id = side_effects.fetch_add(1, Ordering::Relaxed) + 1;
        let json = format!("{{\"id\":{id},\"ok\":true}}");
        Response::builder()
            .status(StatusCode::CREATED)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(json)))
            .expect("static response parts are valid")
    } else if parts.uri.path() == "/count" {
        // The count oracle for `idem soak --count-url`.
        let json = format!("{{\"count\":{}}}", side_effects.load(Ordering::Relaxed));
        Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(json)))
            .expect("static response parts are valid")
    } else {
        plain(StatusCode::OK, "ok\n")
    };
    Ok(response)
}

/// A small `text/plain` response.
fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Full::new(Bytes::from_static(text.as_bytes())))
        .expect("static response parts are valid")
}
