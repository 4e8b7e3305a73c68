//! Every curl line in a report reproduces what the auditor sent: the real
//! `curl` runs each line against a relay on 127.0.0.1 that keeps the raw
//! bytes of every connection, and each request curl sends must be one the
//! auditor sent, header by header (names in any case, values byte for
//! byte) and body byte for byte. The body is chosen to need every form a
//! curl line has: a tab and a newline, `%`, `\`, `'` and non-ASCII text.

use idem_audit::{audit, AuditOptions, AuditReport, Endpoint, Progress, ScenarioId};
use idem_sample_api::{Flaw, SampleApiOptions};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A body with a tab, a newline, `%`, `\`, `'` and non-ASCII text.
const BODY: &str =
    "{\"amount\": 2500,\n\t\"currency\": \"eur\", \"note\": \"café ☃: it's 100% C:\\\\temp\"}";

/// One client connection through the relay.
#[derive(Default)]
struct Conn {
    sent: Vec<u8>,
    closed: bool,
}

/// A TCP relay in front of the API that records what each client sends.
struct Capture {
    addr: SocketAddr,
    conns: Arc<Mutex<Vec<Conn>>>,
}

impl Capture {
    async fn start(upstream: SocketAddr) -> Capture {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns: Arc<Mutex<Vec<Conn>>> = Arc::default();
        let recording = conns.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let conns = recording.clone();
                let index = {
                    let mut all = conns.lock().unwrap();
                    all.push(Conn::default());
                    all.len() - 1
                };
                tokio::spawn(relay(client, upstream, conns, index));
            }
        });
        Capture { addr, conns }
    }

    fn len(&self) -> usize {
        self.conns.lock().unwrap().len()
    }

    /// Waits until every connection so far has been closed by its client.
    async fn quiet(&self) {
        let conns = self.conns.clone();
        idem_testkit::poll_until(
            "every client connection closed",
            Duration::from_secs(30),
            || {
                let conns = conns.clone();
                async move { conns.lock().unwrap().iter().all(|c| c.closed) }
            },
        )
        .await;
    }

    /// The complete requests among connections `from..`.
    fn requests(&self, from: usize) -> Vec<Raw> {
        self.conns.lock().unwrap()[from..]
            .iter()
            .filter_map(|c| Raw::parse(&c.sent))
            .collect()
    }
}

async fn relay(
    client: TcpStream,
    upstream: SocketAddr,
    conns: Arc<Mutex<Vec<Conn>>>,
    index: usize,
) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        conns.lock().unwrap()[index].closed = true;
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = async {
        let mut buf = [0u8; 8192];
        loop {
            match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    conns.lock().unwrap()[index]
                        .sent
                        .extend_from_slice(&buf[..n]);
                    if server_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = server_write.shutdown().await;
        conns.lock().unwrap()[index].closed = true;
    };
    let down = tokio::io::copy(&mut server_read, &mut client_write);
    let _ = tokio::join!(up, down);
}

/// One request as it went over the wire: its request line, its headers
/// (names lowercased, each value the exact bytes after the colon), sorted,
/// and its body.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Raw {
    line: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Raw {
    fn parse(bytes: &[u8]) -> Option<Raw> {
        let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = &bytes[..end];
        let mut lines = head
            .split(|b| *b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
        let line = String::from_utf8_lossy(lines.next()?).into_owned();
        let mut headers: Vec<(String, Vec<u8>)> = lines
            .map(|l| {
                let colon = l.iter().position(|b| *b == b':').unwrap_or(l.len());
                let name = String::from_utf8_lossy(&l[..colon]).to_ascii_lowercase();
                (name, l.get(colon + 1..).unwrap_or_default().to_vec())
            })
            .collect();
        headers.sort();
        Some(Raw {
            line,
            headers,
            body: bytes[end + 4..].to_vec(),
        })
    }

    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    fn show(&self) -> String {
        let mut out = format!("{}\n", self.line);
        for (name, value) in &self.headers {
            out.push_str(&format!("{name}:{}\n", String::from_utf8_lossy(value)));
        }
        out.push_str(&format!("\n{:?}", String::from_utf8_lossy(&self.body)));
        out
    }
}

/// Notes where each scenario's connections start, so that a curl line is
/// compared with the requests of its own scenario only.
struct Marks {
    conns: Arc<Mutex<Vec<Conn>>>,
    starts: Mutex<Vec<(ScenarioId, usize)>>,
}

impl Progress for Marks {
    fn started(&self, _endpoint: &str, scenario: ScenarioId) {
        let at = self.conns.lock().unwrap().len();
        self.starts.lock().unwrap().push((scenario, at));
    }
}

impl Marks {
    /// The connections scenario `id` made.
    fn range(&self, id: ScenarioId, end: usize) -> std::ops::Range<usize> {
        let starts = self.starts.lock().unwrap();
        let i = starts.iter().position(|(s, _)| *s == id).unwrap();
        let to = starts.get(i + 1).map_or(end, |(_, at)| *at);
        starts[i].1..to
    }
}

fn curl_available() -> bool {
    std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_curl_line_sends_exactly_the_bytes_the_auditor_sent() {
    if !curl_available() {
        idem_testkit::unavailable("curl", "no curl binary on PATH", "apt-get install -y curl");
        return;
    }
    let mut options = SampleApiOptions::new(Flaw::None);
    options.latency = Duration::from_millis(150);
    let api = idem_sample_api::start(options).await.unwrap();
    let capture = Capture::start(api.addr()).await;
    let mut e = Endpoint::new(format!("http://{}/payments", capture.addr).parse().unwrap())
        .with_body(BODY)
        .with_header("Authorization", "Bearer sk_tenant_a")
        .with_alt_header("Authorization", "Bearer sk_tenant_b");
    e.id_field = Some("id".parse().unwrap());
    // The count goes straight to the API: only the operation's requests
    // pass the relay.
    e.count_url = Some(format!("{}/payments/count", api.url()).parse().unwrap());
    e.error_body = Some(r#"{"amount":5000000,"currency":"eur"}"#.into());
    e.burst = 3;
    e.rounds = 1;
    e.abandon_after = Duration::from_millis(50);
    let mut options = AuditOptions::new(vec![e]);
    options.show_secrets = true;
    let marks = Marks {
        conns: capture.conns.clone(),
        starts: Mutex::default(),
    };
    let report: AuditReport = audit(&options, &marks).await.expect("the audit runs");
    capture.quiet().await;
    let end = capture.len();
    assert!(
        capture.requests(0).len() > 20,
        "the auditor's requests were captured"
    );

    let mut lines = 0;
    let mut empty_key_reproduced = false;
    for result in &report.scenarios {
        let range = marks.range(result.id, end);
        let sent: Vec<Raw> = capture.conns.lock().unwrap()[range]
            .iter()
            .filter_map(|c| Raw::parse(&c.sent))
            .collect();
        for line in &result.evidence.curl {
            assert!(
                !line.chars().any(|c| c.is_control() && c != '\t'),
                "{}: a control character in {line:?}",
                result.id
            );
            let from = capture.len();
            let status = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(line)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
            tokio::time::timeout(Duration::from_secs(30), status)
                .await
                .expect("the curl line finishes")
                .expect("sh runs");
            capture.quiet().await;
            let reproduced = capture.requests(from);
            assert!(
                !reproduced.is_empty(),
                "{}: `{line}` sent no complete request",
                result.id
            );
            for request in reproduced {
                if !sent.contains(&request) {
                    let near: Vec<String> = sent
                        .iter()
                        .filter(|s| s.line == request.line)
                        .take(3)
                        .map(Raw::show)
                        .collect();
                    panic!(
                        "{}: `{line}` sent a request the auditor never sent in this scenario:\n{}\n\nthe auditor sent, on the same request line:\n{}",
                        result.id,
                        request.show(),
                        near.join("\n---\n")
                    );
                }
                empty_key_reproduced |= request.header("idempotency-key") == Some(b"");
            }
            lines += 1;
        }
    }
    assert!(lines >= 12, "only {lines} curl lines were run");
    assert!(
        empty_key_reproduced,
        "the empty-key line sends the empty Idempotency-Key header"
    );
}
