//! TLS to the database, as libpq does it: `sslmode` and `sslrootcert` in
//! the store URL (read by idem and removed before the driver parses the
//! rest: tokio-postgres knows only `disable`, `prefer` and `require`), and
//! rustls underneath (tokio-postgres-rustls).
//!
//! | `sslmode` | encrypted | chain checked | host name checked | plaintext fallback |
//! |---|---|---|---|---|
//! | `disable` | no | | | |
//! | `prefer` (default) | if the server accepts TLS | only with `sslrootcert` | no | when the server declines TLS (`ssl = off`) or refuses the TLS connection at authentication (`hostnossl` only) |
//! | `require` | yes | only with `sslrootcert` (then as `verify-ca`) | no | never |
//! | `verify-ca` | yes | yes: `sslrootcert`, or the public roots | no | never |
//! | `verify-full` | yes | yes: `sslrootcert`, or the public roots | yes | never |
//!
//! The public roots are Mozilla's (webpki-roots, through idem-tls, which
//! also reads the `sslrootcert` file). Every connection the
//! engine makes, pooled or LISTENing, goes through [`Connector`].

use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::RootCertStore;
use std::path::Path;
use std::sync::Arc;
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Config, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

/// The stream of a connection, encrypted or not.
pub(super) type Stream = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream;
/// A connection of the engine (its half that must be polled).
pub(super) type Connection = tokio_postgres::Connection<Socket, Stream>;

/// libpq's `sslmode` (without `allow`, which prefers plaintext).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl Mode {
    fn parse(value: &str) -> Result<Self, String> {
        Ok(match value {
            "disable" => Mode::Disable,
            "prefer" => Mode::Prefer,
            "require" => Mode::Require,
            "verify-ca" => Mode::VerifyCa,
            "verify-full" => Mode::VerifyFull,
            other => {
                return Err(format!(
                    "sslmode={other}: expected disable, prefer, require, verify-ca or verify-full"
                ))
            }
        })
    }

    fn name(self) -> &'static str {
        match self {
            Mode::Disable => "disable",
            Mode::Prefer => "prefer",
            Mode::Require => "require",
            Mode::VerifyCa => "verify-ca",
            Mode::VerifyFull => "verify-full",
        }
    }

    /// Whether a connection without TLS is refused.
    fn requires_tls(self) -> bool {
        matches!(self, Mode::Require | Mode::VerifyCa | Mode::VerifyFull)
    }
}

/// `url` without its `sslmode` and `sslrootcert` (URL query parameters, or
/// keywords of a key-value string), the mode (default `prefer`) and the
/// root certificate file.
pub(super) fn take_params(url: &str) -> Result<(String, Mode, Option<String>), String> {
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let take = |url: &str, name: &str| -> Result<(String, Option<String>), String> {
        if !is_url {
            return Ok(take_keyword(url, name));
        }
        let (url, value) = super::super::take_query_param(url, name);
        match value {
            None => Ok((url, None)),
            Some(v) => idem_core::path::percent_decode(&v)
                .map(|v| (url, Some(v)))
                .ok_or_else(|| format!("{name}={v}: malformed %-escape")),
        }
    };
    let (url, mode) = take(url, "sslmode")?;
    let (url, rootcert) = take(&url, "sslrootcert")?;
    let mode = mode.as_deref().map_or(Ok(Mode::Prefer), Mode::parse)?;
    if rootcert.as_deref() == Some("") {
        return Err("sslrootcert= names no file".to_owned());
    }
    Ok((url, mode, rootcert))
}

/// Opens the engine's connections with the URL's TLS settings.
#[derive(Clone)]
pub(super) struct Connector {
    mode: Mode,
    rootcert: Option<String>,
    tls: MakeRustlsConnect,
}

impl Connector {
    /// Reads `rootcert` (a PEM file) now: a missing or unreadable file
    /// fails the store's opening, not each connection.
    pub(super) fn new(mode: Mode, rootcert: Option<String>) -> Result<Self, String> {
        let roots = match &rootcert {
            // libpq ignores the file when it does not use TLS.
            Some(path) if mode != Mode::Disable => Some(
                idem_tls::roots(Some(("sslrootcert", Path::new(path))))
                    .map_err(|e| e.to_string())?,
            ),
            _ => None,
        };
        let provider = idem_tls::provider();
        let verifier = verifier(mode, roots, &provider)?;
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        // What libpq 17 sends; servers before 17 ignore it.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(Connector {
            mode,
            rootcert,
            tls: MakeRustlsConnect::new(config),
        })
    }

    /// The driver's own setting for this mode.
    pub(super) fn driver_mode(&self) -> SslMode {
        match self.mode {
            Mode::Disable => SslMode::Disable,
            Mode::Prefer => SslMode::Prefer,
            Mode::Require | Mode::VerifyCa | Mode::VerifyFull => SslMode::Require,
        }
    }

    /// Connects with `config` (whose `ssl_mode` is [`Self::driver_mode`]).
    /// Under `prefer`, a server that refuses the TLS connection at
    /// authentication (`hostnossl` lines only) is tried again without TLS,
    /// as libpq does; a server that declines TLS outright is spoken to in
    /// plaintext by the driver itself. Stronger modes never fall back.
    pub(super) async fn connect(
        &self,
        config: &Config,
    ) -> Result<(Client, Connection), tokio_postgres::Error> {
        match config.connect(self.tls.clone()).await {
            Err(e)
                if self.mode == Mode::Prefer
                    && e.code() == Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION) =>
            {
                let mut plain = config.clone();
                plain.ssl_mode(SslMode::Disable);
                plain.connect(self.tls.clone()).await
            }
            other => other,
        }
    }

    /// What a failed connection's error means for TLS, naming the URL
    /// parameter to check; `None` when TLS had nothing to do with it.
    pub(super) fn explain(&self, e: &tokio_postgres::Error) -> Option<String> {
        let mode = self.mode.name();
        let untrusted = match &self.rootcert {
            Some(path) => format!("the CA in sslrootcert={path} (sslmode={mode})"),
            None => format!(
                "a public root CA (sslmode={mode} without sslrootcert: name the database's CA file with sslrootcert=FILE)"
            ),
        };
        if let Some(tls) = idem_tls::rustls_error(e) {
            return Some(if idem_tls::is_name_error(tls) {
                format!(
                    "the server's certificate does not name the host in the URL (sslmode={mode} checks the host name; connect by a name the certificate holds)"
                )
            } else if is_certificate_error(tls) {
                format!("the server's certificate is not signed by {untrusted}")
            } else {
                format!("the TLS handshake with the server failed (sslmode={mode})")
            });
        }
        // The driver's own words when the server answers "no TLS" (its
        // Display leaves the cause out).
        let cause = std::error::Error::source(e).map(ToString::to_string);
        if cause.as_deref() == Some("server does not support TLS") {
            return Some(format!(
                "the server does not accept TLS (is `ssl = on` in its postgresql.conf?), and sslmode={mode} never falls back to plaintext"
            ));
        }
        if self.mode.requires_tls()
            && e.code() == Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION)
            && e.as_db_error()
                .is_some_and(|db| db.message().contains("SSL"))
        {
            return Some(format!(
                "the server refused this connection over TLS (its pg_hba.conf may admit this client only without TLS), and sslmode={mode} never falls back to plaintext"
            ));
        }
        None
    }
}

/// The pool's connections.
impl deadpool_postgres::Connect for Connector {
    fn connect(
        &self,
        config: &Config,
    ) -> super::BoxFuture<'_, Result<(Client, tokio::task::JoinHandle<()>), tokio_postgres::Error>>
    {
        let config = config.clone();
        Box::pin(async move {
            let (client, connection) = Connector::connect(self, &config).await?;
            let task = tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(
                        error = &e as &dyn std::error::Error,
                        "postgres store: a connection closed"
                    );
                }
            });
            Ok((client, task))
        })
    }
}

/// The certificate check of `mode` (see the module's table).
fn verifier(
    mode: Mode,
    roots: Option<RootCertStore>,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ServerCertVerifier>, String> {
    let webpki = |roots: Option<RootCertStore>| {
        let roots = match roots {
            Some(roots) => roots,
            None => idem_tls::roots(None).map_err(|e| e.to_string())?,
        };
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| format!("TLS: cannot build the certificate verifier: {e}"))
    };
    Ok(match (mode, roots) {
        (Mode::VerifyFull, roots) => webpki(roots)?,
        (Mode::VerifyCa, roots) | (Mode::Require | Mode::Prefer, roots @ Some(_)) => {
            Arc::new(idem_tls::danger::AnyServerName::new(webpki(roots)?))
        }
        (Mode::Disable, _) | (Mode::Prefer | Mode::Require, None) => {
            Arc::new(idem_tls::danger::AnyCertificate::new(provider.clone()))
        }
    })
}

/// Whether `e` says the server's certificate was refused (rather than,
/// say, the handshake failing for lack of a common protocol).
fn is_certificate_error(e: &rustls::Error) -> bool {
    matches!(
        e,
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
    )
}

/// `s` (a libpq key-value string) without its `name = value` pair, and the
/// value: unquoted up to white space, or single-quoted, `\` escaping the
/// next character in either. Anything malformed is left for the driver to
/// report.
fn take_keyword(s: &str, name: &str) -> (String, Option<String>) {
    let b = s.as_bytes();
    let skip_space = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    let (mut kept, mut value) = (Vec::<&str>::new(), None);
    let mut i = skip_space(0);
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i] != b'=' && !b[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = &s[start..i];
        i = skip_space(i);
        if b.get(i) != Some(&b'=') {
            kept.push(&s[start..]);
            break;
        }
        i = skip_space(i + 1);
        let quoted = b.get(i) == Some(&b'\'');
        if quoted {
            i += 1;
        }
        let mut v = Vec::new();
        while i < b.len() {
            match b[i] {
                b'\\' if i + 1 < b.len() => {
                    v.push(b[i + 1]);
                    i += 2;
                    continue;
                }
                b'\'' if quoted => {
                    i += 1;
                    break;
                }
                c if !quoted && c.is_ascii_whitespace() => break,
                c => v.push(c),
            }
            i += 1;
        }
        if key == name {
            value = Some(String::from_utf8_lossy(&v).into_owned());
        } else {
            kept.push(&s[start..i]);
        }
        i = skip_space(i);
    }
    (kept.join(" "), value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_idems_not_the_drivers() {
        let (url, mode, root) = take_params(
            "postgres://u@h/db?sslmode=verify-full&application_name=x&sslrootcert=/etc/ca%20dir/ca.pem",
        )
        .unwrap();
        assert_eq!(url, "postgres://u@h/db?application_name=x");
        assert_eq!(mode, Mode::VerifyFull);
        assert_eq!(root.as_deref(), Some("/etc/ca dir/ca.pem"));
        let (url, mode, root) = take_params("postgresql://u@h/db").unwrap();
        assert_eq!(
            (url.as_str(), mode, root),
            ("postgresql://u@h/db", Mode::Prefer, None)
        );
        let (url, mode, root) = take_params(
            "host=h user=u sslmode = 'verify-ca' sslrootcert='/a b/c\\'d.pem' dbname=x",
        )
        .unwrap();
        assert_eq!(url, "host=h user=u dbname=x");
        assert_eq!(mode, Mode::VerifyCa);
        assert_eq!(root.as_deref(), Some("/a b/c'd.pem"));
    }

    #[test]
    fn a_bad_sslmode_or_sslrootcert_is_refused_naming_it() {
        let err = take_params("postgres://h/db?sslmode=allow").unwrap_err();
        assert!(
            err.contains("sslmode=allow") && err.contains("verify-full"),
            "{err}"
        );
        let err = take_params("postgres://h/db?sslrootcert=").unwrap_err();
        assert!(err.contains("sslrootcert"), "{err}");
        let err = Connector::new(Mode::VerifyFull, Some("/nonexistent/ca.pem".into()))
            .err()
            .unwrap();
        assert!(
            err.starts_with("sslrootcert: /nonexistent/ca.pem: "),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = Connector::new(Mode::VerifyCa, Some(empty.display().to_string()))
            .err()
            .unwrap();
        assert!(err.contains("no PEM certificate"), "{err}");
        // Without TLS the file is not read, as libpq.
        assert!(Connector::new(Mode::Disable, Some("/nonexistent/ca.pem".into())).is_ok());
    }

    #[test]
    fn only_disable_and_prefer_let_the_driver_speak_plaintext() {
        for (mode, driver) in [
            (Mode::Disable, SslMode::Disable),
            (Mode::Prefer, SslMode::Prefer),
            (Mode::Require, SslMode::Require),
            (Mode::VerifyCa, SslMode::Require),
            (Mode::VerifyFull, SslMode::Require),
        ] {
            assert_eq!(Connector::new(mode, None).unwrap().driver_mode(), driver);
        }
    }
}
