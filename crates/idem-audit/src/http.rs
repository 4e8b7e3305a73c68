//! A one-connection-per-request HTTP/1.1 client with the fault points the
//! scenarios need and ordinary clients hide: holding back a request's last
//! byte (so a burst lands within microseconds), reading an answer and
//! throwing it away with a reset, and hanging up before the answer.
//!
//! The request is serialised by hand so the auditor controls every byte it
//! sends (including keys no header type would accept); responses are parsed
//! with `httparse`.

use crate::tls::Tls;
use bytes::{Buf, Bytes, BytesMut};
use http::Method;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use url::Url;

/// Largest response body kept; a larger one is an error, not a truncation,
/// since bodies are compared byte for byte.
const MAX_BODY: usize = 16 * 1024 * 1024;
/// Largest response head.
const MAX_HEAD: usize = 64 * 1024;

/// One request, as bytes on the wire will carry it.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub method: Method,
    pub url: Url,
    /// Header lines in order; values are raw bytes so invalid keys can be sent.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Bytes,
}

impl Request {
    /// The request's bytes: request line, `Host`, the headers,
    /// `Content-Length`, `User-Agent` (unless a header sets it),
    /// `Connection: close`, and the body.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut target = self.url.path().to_owned();
        if let Some(q) = self.url.query() {
            target.push('?');
            target.push_str(q);
        }
        let mut out = Vec::with_capacity(256 + self.body.len());
        out.extend_from_slice(format!("{} {} HTTP/1.1\r\n", self.method, target).as_bytes());
        out.extend_from_slice(format!("host: {}\r\n", host_header(&self.url)).as_bytes());
        for (name, value) in &self.headers {
            // `Name:` for an empty value, as curl writes it (`-H 'Name;'`),
            // so that a reproduced request carries the same bytes.
            out.extend_from_slice(name.as_bytes());
            out.push(b':');
            if !value.is_empty() {
                out.push(b' ');
                out.extend_from_slice(value);
            }
            out.extend_from_slice(b"\r\n");
        }
        if self.needs_length() {
            out.extend_from_slice(format!("content-length: {}\r\n", self.body.len()).as_bytes());
        }
        if self.adds_user_agent() {
            out.extend_from_slice(format!("user-agent: {USER_AGENT}\r\n").as_bytes());
        }
        out.extend_from_slice(b"connection: close\r\n\r\n");
        out.extend_from_slice(&self.body);
        out
    }

    /// Whether the request carries `Content-Length` (any body, and every
    /// POST, PUT and PATCH, even empty).
    pub(crate) fn needs_length(&self) -> bool {
        !self.body.is_empty() || matches!(self.method, Method::POST | Method::PUT | Method::PATCH)
    }

    /// Whether the auditor adds its own `User-Agent`: some firewalls refuse
    /// requests without one, so it says who it is unless a header does.
    pub(crate) fn adds_user_agent(&self) -> bool {
        !self
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("user-agent"))
    }
}

/// The `User-Agent` the auditor sends unless a header sets one.
pub(crate) const USER_AGENT: &str = concat!("idem-audit/", env!("CARGO_PKG_VERSION"));

fn host_header(url: &Url) -> String {
    let host = url.host_str().unwrap_or("localhost");
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

/// A complete response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Response {
    /// The first header with this (case-insensitive) name.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the status is 2xx.
    pub(crate) fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as JSON, if it is JSON.
    pub(crate) fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The RFC 9457 problem type's last path segment (`request-in-progress`
    /// for `https://idem.dev/problems/request-in-progress`), if the body is
    /// a problem document.
    pub(crate) fn problem_slug(&self) -> Option<String> {
        let json = self.json()?;
        let ty = json.get("type")?.as_str()?;
        Some(ty.rsplit('/').next().unwrap_or(ty).to_owned())
    }
}

/// Why no response was read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HttpError {
    /// The TLS handshake failed.
    #[error("TLS with {host} failed: {reason}")]
    Tls {
        /// The server name.
        host: String,
        /// Why (an unknown issuer names --cacert and --insecure).
        reason: String,
    },
    /// The TCP connection could not be made.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// host:port
        addr: String,
        /// The OS's reason.
        reason: String,
    },
    /// Writing the request or reading the answer failed.
    #[error("connection failed: {0}")]
    Io(String),
    /// The server closed the connection before a complete answer.
    #[error("the server closed the connection without a complete response")]
    Closed,
    /// No complete answer within the timeout.
    #[error("no response within {0:?}")]
    Timeout(Duration),
    /// The bytes are not an HTTP/1.1 response.
    #[error("malformed response: {0}")]
    Malformed(String),
}

/// One connection: plain TCP, or TLS over it for `https://`.
pub(crate) enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Conn {
    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(tcp) => tcp,
            Conn::Tls(tls) => tls.get_ref().0,
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Timeouts and TLS settings for every exchange.
#[derive(Clone)]
pub(crate) struct Client {
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub tls: Tls,
}

impl Client {
    /// Opens a connection to the URL's host and port, with a TLS
    /// handshake for `https://`.
    pub(crate) async fn connect(&self, url: &Url) -> Result<Conn, HttpError> {
        let tcp = self.connect_tcp(url).await?;
        if url.scheme() != "https" {
            return Ok(Conn::Plain(tcp));
        }
        let host = url.host_str().unwrap_or("localhost");
        let handshake = self.tls.connect(host, tcp);
        let tls = tokio::time::timeout(self.connect_timeout, handshake)
            .await
            .map_err(|_| HttpError::Tls {
                host: host.to_owned(),
                reason: format!("no TLS handshake within {:?}", self.connect_timeout),
            })?
            .map_err(|reason| HttpError::Tls {
                host: host.to_owned(),
                reason,
            })?;
        Ok(Conn::Tls(Box::new(tls)))
    }

    async fn connect_tcp(&self, url: &Url) -> Result<TcpStream, HttpError> {
        let host = url.host_str().unwrap_or("localhost");
        let port = url.port_or_known_default().unwrap_or(80);
        let addr = format!("{host}:{port}");
        let connect = TcpStream::connect((host, port));
        let stream = tokio::time::timeout(self.connect_timeout, connect)
            .await
            .map_err(|_| HttpError::Connect {
                addr: addr.clone(),
                reason: format!("timed out after {:?}", self.connect_timeout),
            })?
            .map_err(|e| HttpError::Connect {
                addr: addr.clone(),
                reason: e.to_string(),
            })?;
        // Partial writes must leave at once (bursts hold back one byte).
        stream
            .set_nodelay(true)
            .map_err(|e| HttpError::Io(e.to_string()))?;
        Ok(stream)
    }

    /// Sends a request and reads its answer. The duration runs from the
    /// last byte sent to the last byte read.
    pub(crate) async fn send(&self, request: &Request) -> (Result<Response, HttpError>, Duration) {
        self.exchange(request, |mut stream, method, sent| async move {
            let answer = self.read(&mut stream, &method).await;
            (answer, sent.elapsed())
        })
        .await
    }

    /// The lost-response fault point: sends, reads the whole answer (so the
    /// server finished and delivered it), then resets the connection. The
    /// caller treats the answer as never seen by the client.
    pub(crate) async fn send_and_discard(
        &self,
        request: &Request,
    ) -> (Result<Response, HttpError>, Duration) {
        self.exchange(request, |mut stream, method, sent| async move {
            let answer = self.read(&mut stream, &method).await;
            let elapsed = sent.elapsed();
            reset(stream);
            (answer, elapsed)
        })
        .await
    }

    /// The abandoned-request fault point: sends, waits up to `after` for
    /// an answer, and hangs up if none came. `Ok(None)` is a hang-up.
    pub(crate) async fn send_and_abandon(
        &self,
        request: &Request,
        after: Duration,
    ) -> (Result<Option<Response>, HttpError>, Duration) {
        self.exchange(request, |mut stream, method, sent| async move {
            let read = read_response(&mut stream, &method);
            match tokio::time::timeout(after, read).await {
                Ok(answer) => (answer.map(Some), sent.elapsed()),
                Err(_) => {
                    let elapsed = sent.elapsed();
                    // A plain close (FIN), as a client that times out does.
                    drop(stream);
                    (Ok(None), elapsed)
                }
            }
        })
        .await
    }

    /// Connects and writes the whole request, then hands the connection
    /// and the instant the last byte left to `then`. A failure before that
    /// is the answer, timed from the start.
    async fn exchange<T, F, Fut>(
        &self,
        request: &Request,
        then: F,
    ) -> (Result<T, HttpError>, Duration)
    where
        F: FnOnce(Conn, Method, Instant) -> Fut,
        Fut: std::future::Future<Output = (Result<T, HttpError>, Duration)>,
    {
        let started = Instant::now();
        let written = async {
            let mut stream = self.connect(&request.url).await?;
            write_all(&mut stream, &request.encode()).await?;
            Ok::<_, HttpError>(stream)
        }
        .await;
        match written {
            Ok(stream) => then(stream, request.method.clone(), Instant::now()).await,
            Err(e) => (Err(e), started.elapsed()),
        }
    }

    /// Sends all requests so that their last bytes land together: every
    /// connection is opened and every request written but its last byte,
    /// then the last bytes are written in one tight loop. Answers come
    /// back in request order, with the time the release loop took (the
    /// spread between the first and the last request's completion).
    pub(crate) async fn burst(
        &self,
        requests: &[Request],
    ) -> (Vec<(Result<Response, HttpError>, Duration)>, Duration) {
        let mut held: Vec<Result<(Conn, u8), HttpError>> = Vec::with_capacity(requests.len());
        for request in requests {
            let prepared = async {
                let mut stream = self.connect(&request.url).await?;
                let bytes = request.encode();
                let (head, last) = bytes.split_at(bytes.len() - 1);
                write_all(&mut stream, head).await?;
                Ok((stream, last[0]))
            }
            .await;
            held.push(prepared);
        }
        // The release: one write of one byte per connection, nothing else
        // in between.
        let released = Instant::now();
        let mut streams = Vec::with_capacity(held.len());
        for prepared in held {
            streams.push(match prepared {
                Ok((mut stream, last)) => write_all(&mut stream, &[last]).await.map(|()| stream),
                Err(e) => Err(e),
            });
        }
        let release = released.elapsed();
        let reads = streams
            .into_iter()
            .zip(requests)
            .map(|(stream, request)| async move {
                match stream {
                    Ok(mut stream) => {
                        let answer = self.read(&mut stream, &request.method).await;
                        (answer, released.elapsed())
                    }
                    Err(e) => (Err(e), released.elapsed()),
                }
            });
        (futures_util::future::join_all(reads).await, release)
    }

    async fn read(&self, stream: &mut Conn, method: &Method) -> Result<Response, HttpError> {
        tokio::time::timeout(self.response_timeout, read_response(stream, method))
            .await
            .map_err(|_| HttpError::Timeout(self.response_timeout))?
    }
}

async fn write_all(stream: &mut Conn, bytes: &[u8]) -> Result<(), HttpError> {
    // The flush matters for TLS: the bytes must be on the wire now (a
    // burst's held-back byte is released later, on its own).
    async {
        stream.write_all(bytes).await?;
        stream.flush().await
    }
    .await
    .map_err(|e| HttpError::Io(e.to_string()))
}

/// Closes with a TCP reset, as a middlebox that lost the answer would.
fn reset(stream: Conn) {
    // SO_LINGER 0: close sends RST instead of FIN. If the option cannot be
    // set, a plain close is the next best thing.
    let _ = socket2::SockRef::from(stream.tcp()).set_linger(Some(Duration::ZERO));
    drop(stream);
}

/// Reads one response: the head, then a body framed by `Content-Length`,
/// chunked encoding, or the end of the connection.
async fn read_response(stream: &mut Conn, method: &Method) -> Result<Response, HttpError> {
    let mut buf = BytesMut::with_capacity(8 * 1024);
    loop {
        let (status, headers, head_len) = loop {
            if let Some(parsed) = parse_head(&buf)? {
                break parsed;
            }
            if buf.len() > MAX_HEAD {
                return Err(HttpError::Malformed(format!(
                    "response head over {MAX_HEAD} bytes"
                )));
            }
            if read_more(stream, &mut buf).await? == 0 {
                return Err(HttpError::Closed);
            }
        };
        buf.advance(head_len);
        // Interim answers (100 Continue, 103 Early Hints) precede the real one.
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _): &&(String, String)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let no_body = *method == Method::HEAD || status == 204 || status == 304;
        let body = if no_body {
            Bytes::new()
        } else if header("transfer-encoding")
            .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"))
        {
            read_chunked(stream, &mut buf).await?
        } else if let Some(length) = header("content-length") {
            let length: usize = length
                .trim()
                .parse()
                .map_err(|_| HttpError::Malformed(format!("content-length `{length}`")))?;
            if length > MAX_BODY {
                return Err(HttpError::Malformed(format!(
                    "body of {length} bytes is over the {MAX_BODY}-byte limit"
                )));
            }
            while buf.len() < length {
                if read_more(stream, &mut buf).await? == 0 {
                    return Err(HttpError::Closed);
                }
            }
            buf.split_to(length).freeze()
        } else {
            while read_more(stream, &mut buf).await? != 0 {
                if buf.len() > MAX_BODY {
                    return Err(HttpError::Malformed(format!(
                        "body over the {MAX_BODY}-byte limit"
                    )));
                }
            }
            buf.split().freeze()
        };
        return Ok(Response {
            status,
            headers,
            body,
        });
    }
}

type Head = (u16, Vec<(String, String)>, usize);

fn parse_head(buf: &[u8]) -> Result<Option<Head>, HttpError> {
    let mut slots = [httparse::EMPTY_HEADER; 128];
    let mut response = httparse::Response::new(&mut slots);
    match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => {
            let status = response.code.unwrap_or(0);
            let headers = response
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_owned(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            Ok(Some((status, headers, len)))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(HttpError::Malformed(e.to_string())),
    }
}

async fn read_more(stream: &mut Conn, buf: &mut BytesMut) -> Result<usize, HttpError> {
    buf.reserve(8 * 1024);
    match stream.read_buf(buf).await {
        Ok(n) => Ok(n),
        // A reset after the server wrote everything still leaves a
        // complete answer in `buf`; the caller decides from what it has.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(0),
        Err(e) => Err(HttpError::Io(e.to_string())),
    }
}

async fn read_chunked(stream: &mut Conn, buf: &mut BytesMut) -> Result<Bytes, HttpError> {
    let mut body = BytesMut::new();
    loop {
        let line = read_line(stream, buf).await?;
        let size_text = line.split(';').next().unwrap_or("").trim().to_owned();
        let size = usize::from_str_radix(&size_text, 16)
            .map_err(|_| HttpError::Malformed(format!("chunk size `{size_text}`")))?;
        if size == 0 {
            // Trailers, up to the empty line.
            while !read_line(stream, buf).await?.is_empty() {}
            return Ok(body.freeze());
        }
        if body.len() + size > MAX_BODY {
            return Err(HttpError::Malformed(format!(
                "body over the {MAX_BODY}-byte limit"
            )));
        }
        while buf.len() < size + 2 {
            if read_more(stream, buf).await? == 0 {
                return Err(HttpError::Closed);
            }
        }
        body.extend_from_slice(&buf[..size]);
        buf.advance(size + 2);
    }
}

async fn read_line(stream: &mut Conn, buf: &mut BytesMut) -> Result<String, HttpError> {
    loop {
        if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.advance(end + 2);
            return Ok(line);
        }
        if buf.len() > MAX_HEAD {
            return Err(HttpError::Malformed("chunk line too long".to_owned()));
        }
        if read_more(stream, buf).await? == 0 {
            return Err(HttpError::Closed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn serve_once(reply: &'static [u8]) -> (Url, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}/p?q=1", listener.local_addr().unwrap())).unwrap();
        let task = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            let mut chunk = [0u8; 4096];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = socket.read(&mut chunk).await.unwrap();
                got.extend_from_slice(&chunk[..n]);
            }
            socket.write_all(reply).await.unwrap();
            socket.shutdown().await.unwrap();
            got
        });
        (url, task)
    }

    fn client() -> Client {
        Client {
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(5),
            tls: Tls::new(&Default::default()).unwrap(),
        }
    }

    #[tokio::test]
    async fn reads_chunked_bodies_and_sends_raw_header_bytes() {
        let (url, server) = serve_once(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nT: x\r\n\r\n",
        )
        .await;
        let request = Request {
            method: Method::GET,
            url,
            headers: vec![("idempotency-key".into(), "cl\u{e9}".as_bytes().to_vec())],
            body: Bytes::new(),
        };
        let (answer, _) = client().send(&request).await;
        let answer = answer.unwrap();
        assert_eq!(answer.status, 201);
        assert_eq!(&answer.body[..], b"hello world");
        assert_eq!(answer.header("x-a"), Some("1"));
        let sent = server.await.unwrap();
        assert!(sent.starts_with(b"GET /p?q=1 HTTP/1.1\r\n"));
        let key_line = "idempotency-key: cl\u{e9}\r\n".as_bytes();
        assert!(sent.windows(key_line.len()).any(|w| w == key_line));
    }

    #[tokio::test]
    async fn reads_bodies_delimited_by_close() {
        let (url, _server) = serve_once(b"HTTP/1.1 200 OK\r\n\r\nuntil close").await;
        let request = Request {
            method: Method::POST,
            url,
            headers: vec![],
            body: Bytes::from_static(b"{}"),
        };
        let answer = client().send(&request).await.0.unwrap();
        assert_eq!(&answer.body[..], b"until close");
    }

    #[tokio::test]
    async fn a_truncated_answer_is_an_error_not_a_response() {
        let (url, _server) =
            serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort").await;
        let request = Request {
            method: Method::POST,
            url,
            headers: vec![],
            body: Bytes::new(),
        };
        assert_eq!(client().send(&request).await.0, Err(HttpError::Closed));
    }

    #[tokio::test]
    async fn an_unreachable_target_names_the_address() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let request = Request {
            method: Method::POST,
            url: Url::parse(&format!("http://{addr}/")).unwrap(),
            headers: vec![],
            body: Bytes::new(),
        };
        let err = client().send(&request).await.0.unwrap_err();
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }
}
