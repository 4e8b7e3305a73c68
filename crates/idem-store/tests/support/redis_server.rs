//! A private redis-server for one test, on a free 127.0.0.1 port: TLS only
//! (`--port 0 --tls-port P`, the test's certificate, no client
//! certificates asked), optionally as a one-node cluster holding every
//! slot, or plaintext. Stopped when dropped. Without `redis-server` the
//! test skips (fails under `CI=true`).

use idem_testkit::tls::CertifiedPem as ServerCert;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const INSTALL: &str = "apt-get install redis-server (Debian's build supports TLS)";

/// A running private server.
pub(crate) struct RedisServer {
    child: Child,
    pub(crate) port: u16,
    _dir: tempfile::TempDir,
}

/// How the server listens.
pub(crate) enum Listen<'a> {
    /// Plaintext only.
    Plain,
    /// TLS only, presenting `cert`; `ca` is the CA file that signed it.
    Tls { cert: &'a ServerCert, ca: &'a Path },
    /// As `Tls`, as a one-node cluster (cluster bus over TLS too) serving
    /// every slot; `cert` must name 127.0.0.1 (the slots are assigned
    /// through it).
    TlsCluster { cert: &'a ServerCert, ca: &'a Path },
}

impl RedisServer {
    /// Starts a server; `None` (after reporting) without `redis-server`.
    pub(crate) async fn start(listen: Listen<'_>) -> Option<RedisServer> {
        let Some(bin) = binary() else {
            super::unavailable("redis-server", "not on PATH", INSTALL);
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("idem-redis-")
            .tempdir()
            .expect("a temporary folder");
        for _ in 0..5 {
            let port = super::free_port();
            let log = dir.path().join(format!("server-{port}.log"));
            let mut command = Command::new(&bin);
            command
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir.path())
                .arg("--logfile")
                .arg(&log)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let tls = match &listen {
                Listen::Plain => {
                    command.args(["--port", &port.to_string()]);
                    None
                }
                Listen::Tls { cert, ca } | Listen::TlsCluster { cert, ca } => {
                    let (crt, key) = (dir.path().join("server.crt"), dir.path().join("server.key"));
                    std::fs::write(&crt, &cert.cert).expect("write the certificate");
                    std::fs::write(&key, &cert.key).expect("write the key");
                    command
                        .args(["--port", "0", "--tls-port", &port.to_string()])
                        .arg("--tls-cert-file")
                        .arg(&crt)
                        .arg("--tls-key-file")
                        .arg(&key)
                        .arg("--tls-ca-cert-file")
                        .arg(ca)
                        .args(["--tls-auth-clients", "no"]);
                    Some(std::fs::read(ca).expect("read the CA file"))
                }
            };
            if let Listen::TlsCluster { .. } = listen {
                command
                    .args(["--cluster-enabled", "yes", "--tls-cluster", "yes"])
                    .args(["--cluster-port", &super::free_port().to_string()])
                    .arg("--cluster-config-file")
                    .arg(dir.path().join(format!("nodes-{port}.conf")));
            }
            let mut child = command.spawn().expect("start redis-server");
            match ready(port, &mut child, &log).await {
                Ok(()) => {
                    // Built first, so that a failure below still stops it.
                    let server = RedisServer {
                        child,
                        port,
                        _dir: dir,
                    };
                    if let (Listen::TlsCluster { .. }, Some(ca)) = (&listen, tls) {
                        serve_every_slot(&mut tls_connection(port, ca).await).await;
                    }
                    return Some(server);
                }
                Err(log) => {
                    super::stop(&mut child, "-TERM");
                    if !log.contains("in use") {
                        panic!("redis-server did not start:\n{log}");
                    }
                }
            }
        }
        panic!("redis-server found no free port in 5 tries");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        super::stop(&mut self.child, "-TERM");
    }
}

fn binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("redis-server"))
        .find(|bin| bin.exists())
}

/// Waits (20 s at most) until the server on `port` accepts connections;
/// what it logged if it exits first.
async fn ready(port: u16, child: &mut Child, log: &Path) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            return Err(format!("{status}: {log}"));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err("redis-server took over 20 s to start".to_owned());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A TLS connection to the server on `port` by 127.0.0.1, trusting `ca`.
async fn tls_connection(port: u16, ca: Vec<u8>) -> redis::aio::MultiplexedConnection {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = redis::Client::build_with_tls(
        format!("rediss://127.0.0.1:{port}/"),
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(ca),
        },
    )
    .expect("a client of the test server");
    client
        .get_multiplexed_async_connection()
        .await
        .expect("a TLS connection to the test server (its certificate must name 127.0.0.1)")
}

/// Gives the one node every slot and waits until the cluster says ok.
async fn serve_every_slot(conn: &mut redis::aio::MultiplexedConnection) {
    redis::cmd("CLUSTER")
        .arg("ADDSLOTSRANGE")
        .arg(0)
        .arg(16383)
        .exec_async(conn)
        .await
        .expect("CLUSTER ADDSLOTSRANGE");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let info: String = redis::cmd("CLUSTER")
            .arg("INFO")
            .query_async(conn)
            .await
            .expect("CLUSTER INFO");
        if info.contains("cluster_state:ok") {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the one-node cluster is not ok after 20 s:\n{info}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
