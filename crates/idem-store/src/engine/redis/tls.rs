//! TLS to Redis: a `rediss://` URL (the store spec turns
//! `rediss+cluster://` into `rediss://` nodes) connects over TLS with
//! redis-rs's rustls support, checking the server's certificate and host
//! name against Mozilla's roots (webpki-roots), or against the CA file
//! named by the idem parameter `tls_ca=FILE` (read at open, removed before
//! the URL reaches the driver). `redis://` stays plaintext; `tls_ca` on it
//! is refused rather than ignored.

use ::redis::{Client, RedisResult, TlsCertificates};
use std::path::Path;

/// The TLS settings of a store URL.
#[derive(Clone, Default)]
pub(super) struct Tls {
    /// Whether the URL is `rediss://`.
    on: bool,
    /// `tls_ca`: the file, and the certificates it holds for the driver.
    ca: Option<(String, TlsCertificates)>,
}

impl Tls {
    /// `url` without its `tls_ca` parameter, and its TLS settings. The CA
    /// file is read now: a missing or unreadable file fails the open.
    pub(super) fn take(url: &str) -> Result<(String, Tls), String> {
        let (url, ca) = super::super::take_query_param(url, "tls_ca");
        let on = url.starts_with("rediss://");
        let ca = match ca {
            None => None,
            Some(raw) => {
                let path = idem_core::path::percent_decode(&raw)
                    .ok_or_else(|| format!("tls_ca={raw}: malformed %-escape"))?;
                if !on {
                    return Err(format!(
                        "tls_ca={path} is for TLS connections: the URL must start with rediss:// (or rediss+cluster://)"
                    ));
                }
                // Checked here, so a bad file fails the open naming tls_ca;
                // redis-rs parses the PEM itself.
                idem_tls::read_certs("tls_ca", Path::new(&path)).map_err(|e| e.to_string())?;
                let pem = std::fs::read(&path).map_err(|e| format!("tls_ca: {path}: {e}"))?;
                let certs = TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                };
                Some((path, certs))
            }
        };
        if on {
            install_provider();
        }
        Ok((url, Tls { on, ca }))
    }

    /// A client for `url` with these settings.
    pub(super) fn client(&self, url: &str) -> RedisResult<Client> {
        match &self.ca {
            Some((_, certs)) => Client::build_with_tls(url, certs.clone()),
            None => Client::open(url),
        }
    }

    /// The certificates a cluster client is built with, if any.
    pub(super) fn certs(&self) -> Option<TlsCertificates> {
        self.ca.as_ref().map(|(_, certs)| certs.clone())
    }

    /// What a failure to connect (`error`'s text, or a timeout when
    /// `None`) means for TLS, naming what to check; `None` for a plaintext
    /// URL or a failure TLS has nothing to do with.
    pub(super) fn explain(&self, error: Option<&str>) -> Option<String> {
        if !self.on {
            return None;
        }
        let roots = match &self.ca {
            Some((path, _)) => format!("the CA in tls_ca={path}"),
            None => "a public root CA (none given: name the server's CA file with tls_ca=FILE)"
                .to_owned(),
        };
        let Some(error) = error else {
            return Some(
                "rediss://: no TLS handshake in time; is the server listening for TLS (tls-port) on that port?"
                    .to_owned(),
            );
        };
        if error.contains("NotValidForName") || error.contains("not valid for name") {
            Some("rediss://: the server's certificate does not name the host in the URL (connect by a name the certificate holds)".to_owned())
        } else if error.contains("invalid peer certificate") {
            Some(format!(
                "rediss://: the server's certificate is not signed by {roots}"
            ))
        } else if error.contains("corrupt message") || error.contains("InvalidContentType") {
            Some(
                "rediss://: the server did not answer in TLS; is that port its tls-port?"
                    .to_owned(),
            )
        } else {
            None
        }
    }
}

/// redis-rs builds its rustls configuration with the process's default
/// crypto provider: make it ring, the engines' provider, unless the
/// process chose one already.
fn install_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Another thread may have installed one in between: either is fine.
        let _ = std::sync::Arc::unwrap_or_clone(idem_tls::provider()).install_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_ca_is_idems_and_only_for_rediss() {
        let (url, tls) = Tls::take("rediss://h:6380/?protocol=resp3").unwrap();
        assert_eq!(url, "rediss://h:6380/?protocol=resp3");
        assert!(tls.on && tls.ca.is_none());
        let err = Tls::take("redis://h:6379/?tls_ca=/etc/ca.pem")
            .err()
            .unwrap();
        assert!(
            err.contains("tls_ca=/etc/ca.pem") && err.contains("rediss://"),
            "{err}"
        );
        let err = Tls::take("rediss://h:6380/?tls_ca=/nonexistent/ca%2Epem")
            .err()
            .unwrap();
        assert!(err.starts_with("tls_ca: /nonexistent/ca.pem: "), "{err}");
        let (_, plain) = Tls::take("redis://h:6379/").unwrap();
        assert_eq!(
            plain.explain(Some("invalid peer certificate: UnknownIssuer")),
            None
        );
    }
}
