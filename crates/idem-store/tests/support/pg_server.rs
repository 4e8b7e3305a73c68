//! A private PostgreSQL server for one test: `initdb` into a temporary
//! folder, the test's certificate and `pg_hba.conf`, `postgres` on a free
//! 127.0.0.1 port, stopped when dropped. Run as the `postgres` user when
//! the test runs as root (initdb and postgres refuse root). Without the
//! server binaries the test skips (fails under `CI=true`).

use idem_testkit::tls::CertifiedPem as ServerCert;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How to get the server binaries.
const INSTALL: &str =
    "apt-get install postgresql (initdb and postgres under /usr/lib/postgresql/*/bin)";

/// A running private server.
pub(crate) struct PgServer {
    child: Child,
    pub(crate) port: u16,
    dir: tempfile::TempDir,
}

impl PgServer {
    /// Starts a server with TLS on (presenting `cert`) or off, admitting
    /// TCP clients from 127.0.0.1 by the `pg_hba.conf` lines `hba` (e.g.
    /// `"hostssl all all 127.0.0.1/32 trust"`). `None` (after reporting)
    /// when this machine has no PostgreSQL server binaries.
    pub(crate) async fn start(cert: Option<&ServerCert>, hba: &[&str]) -> Option<PgServer> {
        let Some(bin) = binaries() else {
            super::unavailable(
                "PostgreSQL server binaries",
                "no initdb under /usr/lib/postgresql/*/bin or on PATH",
                INSTALL,
            );
            return None;
        };
        let owner = owner();
        let dir = tempfile::Builder::new()
            .prefix("idem-pg-")
            .tempdir()
            .expect("a temporary folder");
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown");
        }
        let data = dir.path().join("data");
        let out = as_owner(Command::new(bin.join("initdb")), owner)
            .arg("-D")
            .arg(&data)
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut conf = format!(
            "\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             fsync = off\nmax_connections = 60\nshared_buffers = 16MB\n",
            dir.path().display()
        );
        match cert {
            Some(cert) => {
                write_owned(&data.join("server.crt"), &cert.cert, owner, 0o644);
                write_owned(&data.join("server.key"), &cert.key, owner, 0o600);
                conf.push_str(
                    "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
                );
            }
            None => conf.push_str("ssl = off\n"),
        }
        let mut pg_hba = "local all all trust\n".to_owned();
        for line in hba {
            pg_hba.push_str(line);
            pg_hba.push('\n');
        }
        write_owned(&data.join("pg_hba.conf"), &pg_hba, owner, 0o600);
        let config = data.join("postgresql.conf");
        let base = std::fs::read_to_string(&config).expect("read postgresql.conf");
        // A port is taken from a just-freed one: another process may grab
        // it first, so a failed bind tries another.
        for _ in 0..5 {
            let port = super::free_port();
            let settings = format!("{base}{conf}port = {port}\n");
            write_owned(&config, &settings, owner, 0o600);
            let log = std::fs::File::create(dir.path().join("server.log")).expect("a log file");
            let mut child = as_owner(Command::new(bin.join("postgres")), owner)
                .arg("-D")
                .arg(&data)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("start postgres");
            match ready(dir.path(), port, &mut child).await {
                Ok(()) => return Some(PgServer { child, port, dir }),
                Err(log) => {
                    super::stop(&mut child, "-INT");
                    if !(log.contains("could not bind") || log.contains("in use")) {
                        panic!("postgres did not start:\n{log}");
                    }
                }
            }
        }
        panic!("postgres found no free port in 5 tries");
    }

    /// A URL of this server by `host` (`127.0.0.1` or `localhost`), with
    /// the query `params` (may be empty).
    pub(crate) fn url(&self, host: &str, params: &str) -> String {
        let url = format!("postgres://postgres@{host}:{}/postgres", self.port);
        if params.is_empty() {
            url
        } else {
            format!("{url}?{params}")
        }
    }

    /// A plaintext connection through the server's Unix socket (whatever
    /// its TCP rules), for checks beside the store.
    pub(crate) async fn local_client(
        &self,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        local_client(self.dir.path(), self.port).await
    }
}

async fn local_client(
    dir: &Path,
    port: u16,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let config = format!(
        "host={} port={port} user=postgres dbname=postgres",
        dir.display()
    );
    let (client, connection) = tokio_postgres::connect(&config, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// Waits (30 s at most) until the server in `dir` takes connections; its
/// log if it exits first.
async fn ready(dir: &Path, port: u16, child: &mut Child) -> Result<(), String> {
    let log = || std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if local_client(dir, port).await.is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("{status}: {}", log()));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("postgres took over 30 s to start:\n{}", log()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        super::stop(&mut self.child, "-INT");
    }
}

/// The folder of the newest PostgreSQL's server binaries.
fn binaries() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .find(|dir| dir.join("initdb").exists() && dir.join("postgres").exists())
    })
}

/// The `postgres` user's ids when this test runs as root (the server
/// refuses root), else `None`: run as ourselves.
fn owner() -> Option<(u32, u32)> {
    let id = |args: &[&str]| -> Option<u32> {
        let out = Command::new("id").args(args).output().ok()?;
        String::from_utf8(out.stdout).ok()?.trim().parse().ok()
    };
    if id(&["-u"])? != 0 {
        return None;
    }
    let (Some(uid), Some(gid)) = (id(&["-u", "postgres"]), id(&["-g", "postgres"])) else {
        panic!("running as root, and there is no `postgres` user to run the server as");
    };
    Some((uid, gid))
}

/// `command` run as `owner` (dropping root's groups too), if any.
fn as_owner(mut command: Command, owner: Option<(u32, u32)>) -> Command {
    if let Some((uid, gid)) = owner {
        command.uid(uid).gid(gid);
    }
    command
}

fn write_owned(path: &Path, text: &str, owner: Option<(u32, u32)>, mode: u32) {
    std::fs::write(path, text).expect("write a server file");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown");
    }
}
