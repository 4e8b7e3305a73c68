//! The counting oracles: how the auditor learns how many times an effect
//! happened, beyond what the answers say. `--count-url` is read with a GET
//! (with the tenant's headers), `--check-cmd` is run by `sh -c` and prints
//! a count. The id-field and body oracles work on answers and live with the
//! scenarios (`Tally`).

use crate::endpoint::Endpoint;
use crate::http::{Client, Request};
use bytes::Bytes;
use http::Method;
use std::time::Duration;

/// Whose credentials a request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Tenant {
    /// `--header`.
    Primary,
    /// `--header` with `--alt-header` replacing same-named ones.
    Alternate,
}

impl Tenant {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Tenant::Primary => "primary",
            Tenant::Alternate => "alternate",
        }
    }
}

/// The headers a tenant's requests carry: `--header`, with same-named ones
/// replaced by `--alt-header` for the second tenant.
pub(crate) fn tenant_headers(endpoint: &Endpoint, tenant: Tenant) -> Vec<(String, Vec<u8>)> {
    let alternate = tenant == Tenant::Alternate;
    let replaced = |name: &str| {
        alternate
            && endpoint
                .alt_headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(name))
    };
    let own = endpoint.headers.iter().filter(|(name, _)| !replaced(name));
    let alt = endpoint.alt_headers.iter().filter(|_| alternate);
    own.chain(alt)
        .map(|(name, value)| (name.clone(), value.clone().into_bytes()))
        .collect()
}

/// Why a count could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OracleError {
    /// `--count-url` failed.
    #[error("--count-url {url}: {what}")]
    CountUrl {
        /// The URL.
        url: String,
        /// What went wrong.
        what: String,
    },
    /// `--check-cmd` failed.
    #[error("--check-cmd `{cmd}`: {what}")]
    CheckCmd {
        /// The command.
        cmd: String,
        /// What went wrong.
        what: String,
    },
}

/// One reading of every counting oracle, in a fixed order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Counts(Vec<u64>);

impl Counts {
    /// The effects between two readings: the largest change any oracle
    /// saw (a duplicate seen by either is a duplicate). `Err` names a count
    /// that went down, which something else must have changed.
    pub(crate) fn since(&self, before: &Counts) -> Result<u64, String> {
        let mut effects = 0;
        for (b, a) in before.0.iter().zip(&self.0) {
            if a < b {
                return Err(format!("{b} → {a}"));
            }
            effects = effects.max(a - b);
        }
        Ok(effects)
    }
}

/// The readings as reports show them: `12`, or `12 and 7` with both
/// oracles (`--count-url`'s first).
impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, n) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" and ")?;
            }
            write!(f, "{n}")?;
        }
        Ok(())
    }
}

/// Longest a `--check-cmd` may run.
const CHECK_CMD_TIMEOUT: Duration = Duration::from_secs(60);

/// The counting oracles of one endpoint.
pub(crate) struct Oracles<'a> {
    endpoint: &'a Endpoint,
    client: Client,
}

impl<'a> Oracles<'a> {
    pub(crate) fn new(endpoint: &'a Endpoint, client: Client) -> Self {
        Oracles { endpoint, client }
    }

    /// The name reports give the counting oracle.
    pub(crate) fn counting_name(&self) -> &'static str {
        match (&self.endpoint.count_url, &self.endpoint.check_cmd) {
            (Some(_), Some(_)) => "count-url+check-cmd",
            (Some(_), None) => "count-url",
            (None, Some(_)) => "check-cmd",
            (None, None) => "none",
        }
    }

    /// The counts for a tenant: `None` without a counting oracle, else one
    /// per oracle (`--count-url`, then `--check-cmd`).
    pub(crate) async fn count(&self, tenant: Tenant) -> Result<Option<Counts>, OracleError> {
        let mut counts = Vec::new();
        if let Some(url) = &self.endpoint.count_url {
            counts.push(self.read_url(url, tenant).await?);
        }
        if let Some(cmd) = &self.endpoint.check_cmd {
            counts.push(self.run_cmd(cmd, tenant).await?);
        }
        Ok((!counts.is_empty()).then_some(Counts(counts)))
    }

    async fn read_url(&self, url: &url::Url, tenant: Tenant) -> Result<u64, OracleError> {
        let e = self.endpoint;
        let mut headers = tenant_headers(e, tenant);
        headers.retain(|(name, _)| !name.eq_ignore_ascii_case("content-type"));
        let request = Request {
            method: Method::GET,
            url: url.clone(),
            headers,
            body: Bytes::new(),
        };
        let fail = |what: String| OracleError::CountUrl {
            url: url.to_string(),
            what,
        };
        let response = self
            .client
            .send(&request)
            .await
            .0
            .map_err(|e| fail(e.to_string()))?;
        if !response.is_success() {
            return Err(fail(format!(
                "answered {} ({})",
                response.status,
                String::from_utf8_lossy(&response.body[..response.body.len().min(200)])
            )));
        }
        let json: serde_json::Value = serde_json::from_slice(&response.body)
            .map_err(|e| fail(format!("the answer is not JSON ({e})")))?;
        e.count_field
            .extract(&json)
            .map_err(|err| fail(err.to_string()))
    }

    async fn run_cmd(&self, cmd: &str, tenant: Tenant) -> Result<u64, OracleError> {
        let fail = |what: String| OracleError::CheckCmd {
            cmd: cmd.to_owned(),
            what,
        };
        let child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .env("IDEM_AUDIT_TENANT", tenant.as_str())
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(CHECK_CMD_TIMEOUT, child)
            .await
            .map_err(|_| fail(format!("did not finish within {CHECK_CMD_TIMEOUT:?}")))?
            .map_err(|e| fail(format!("cannot run it: {e}")))?;
        if !output.status.success() {
            return Err(fail(format!(
                "exited with {} ({})",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        last_count(&stdout).ok_or_else(|| {
            fail(format!(
                "printed no line holding just a whole number (stdout: `{}`); print only the count, e.g. psql -tAc 'select count(*) ...'",
                stdout.trim()
            ))
        })
    }
}

/// The last line of output that is a whole number and nothing else (so
/// psql's `(1 row)` footer is not mistaken for the count).
fn last_count(stdout: &str) -> Option<u64> {
    stdout
        .lines()
        .rev()
        .find_map(|line| line.trim().parse::<u64>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_change_of_any_oracle_counts() {
        let before = Counts(vec![10, 3]);
        assert_eq!(Counts(vec![11, 5]).since(&before), Ok(2));
        assert_eq!(Counts(vec![12, 3]).since(&before), Ok(2));
        assert!(Counts(vec![9, 9]).since(&before).is_err());
    }

    #[test]
    fn the_last_number_printed_is_the_count() {
        assert_eq!(last_count("42\n"), Some(42));
        assert_eq!(last_count(" count\n-------\n    17\n(1 row)\n"), Some(17));
        assert_eq!(last_count("payments: 7"), None);
        assert_eq!(last_count("none"), None);
    }
}
