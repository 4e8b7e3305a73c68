//! `idem keys`: the operator's CLI for the gateway's keys API (on its admin
//! listener): inspect a key, list the keys waiting for a decision, release,
//! resolve or purge one.

use anyhow::{bail, Context as _};
use bytes::Bytes;
use clap::{Args, Subcommand};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use std::process::ExitCode;

#[derive(Args)]
pub(crate) struct KeysArgs {
    /// The gateway's admin listener.
    #[arg(
        long,
        global = true,
        default_value = "http://127.0.0.1:9090",
        value_name = "URL"
    )]
    admin: String,
    /// The environment variable holding the admin token.
    #[arg(
        long,
        global = true,
        default_value = "IDEM_ADMIN_TOKEN",
        value_name = "NAME"
    )]
    token_env: String,
    /// Print the API's JSON instead of a summary.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: KeysCommand,
}

/// Which record: the key and its tenant.
#[derive(Args)]
struct Which {
    /// The Idempotency-Key.
    key: String,
    /// The stored scope id (as `get` and `list` show it).
    #[arg(
        long,
        conflicts_with = "credential",
        required_unless_present = "credential"
    )]
    scope: Option<String>,
    /// The credential the client sent (e.g. its API key or bearer token);
    /// the scope is derived from it exactly as the gateway derives it.
    #[arg(long)]
    credential: Option<String>,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Show a key's record.
    Get {
        #[command(flatten)]
        which: Which,
        /// Include the stored response body.
        #[arg(long)]
        body: bool,
    },
    /// List the keys waiting for a decision, oldest first.
    List {
        /// outcome-unknown or in-flight.
        #[arg(long, default_value = "outcome-unknown")]
        state: String,
        /// At most this many (1..=500).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Resume where the previous page ended.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// The request did NOT execute: free the key, so the next retry executes.
    Release {
        #[command(flatten)]
        which: Which,
        /// The record's token, as `get` showed it.
        #[arg(long)]
        token: u64,
    },
    /// The request DID execute: store its outcome, so retries replay it.
    Resolve {
        #[command(flatten)]
        which: Which,
        /// The record's token, as `get` showed it.
        #[arg(long)]
        token: u64,
        /// The response status retries get.
        #[arg(long)]
        status: u16,
        /// A response header, `NAME: VALUE` (repeatable).
        #[arg(long = "header", value_name = "NAME: VALUE")]
        headers: Vec<String>,
        /// The response body.
        #[arg(long, conflicts_with = "body_file")]
        body: Option<String>,
        /// The response body, read from a file.
        #[arg(long)]
        body_file: Option<std::path::PathBuf>,
    },
    /// Erase the stored response (e.g. an erasure request).
    Purge {
        #[command(flatten)]
        which: Which,
        /// The record's token, as `get` showed it.
        #[arg(long)]
        token: u64,
        /// Free the key at once instead of keeping a tombstone (retries
        /// would then execute again).
        #[arg(long)]
        no_tombstone: bool,
    },
}

/// Runs the command: exit 0 when done, 1 when the API refused (the record
/// changed, wrong state, not found), 2 for usage or an unreachable admin.
pub(crate) fn run(args: KeysArgs) -> anyhow::Result<ExitCode> {
    let token = std::env::var(&args.token_env)
        .ok()
        .filter(|t| !t.trim().is_empty())
        .with_context(|| {
            format!(
                "--token-env: ${} is not set (the gateway's admin token)",
                args.token_env
            )
        })?;
    let admin = args.admin.trim_end_matches('/').to_owned();
    let (method, path, body) = request_of(&args.command)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (status, answer) = runtime.block_on(call(&admin, &token, method, &path, body))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else if status.is_success() {
        print_human(&args.command, &answer);
    }
    if status.is_success() {
        return Ok(ExitCode::SUCCESS);
    }
    let detail = answer["detail"].as_str().unwrap_or("no detail");
    if status == StatusCode::UNAUTHORIZED {
        bail!(
            "the admin listener refused the token in ${}: {detail}",
            args.token_env
        );
    }
    if status.is_client_error() && status != StatusCode::BAD_REQUEST {
        eprintln!(
            "idem keys: {} ({status}): {detail}",
            answer["title"].as_str().unwrap_or("refused")
        );
        return Ok(ExitCode::from(1));
    }
    bail!("{status}: {detail}")
}

fn which_query(which: &Which) -> String {
    let mut q = form(&[]);
    match (&which.scope, &which.credential) {
        (Some(scope), _) => q.append_pair("scope", scope),
        (None, Some(credential)) => q.append_pair("credential", credential),
        (None, None) => &mut q,
    };
    q.finish()
}

fn form(pairs: &[(&str, &str)]) -> url::form_urlencoded::Serializer<'static, String> {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        q.append_pair(k, v);
    }
    q
}

fn key_path(which: &Which) -> String {
    let key: String = url::form_urlencoded::byte_serialize(which.key.as_bytes()).collect();
    format!("/v1/keys/{}", key.replace('+', "%20"))
}

fn request_of(command: &KeysCommand) -> anyhow::Result<(Method, String, Bytes)> {
    Ok(match command {
        KeysCommand::Get { which, body } => {
            let mut q = which_query(which);
            if *body {
                q.push_str("&body=true");
            }
            (
                Method::GET,
                format!("{}?{q}", key_path(which)),
                Bytes::new(),
            )
        }
        KeysCommand::List {
            state,
            limit,
            cursor,
        } => {
            let limit = limit.to_string();
            let mut q = form(&[("state", state), ("limit", &limit)]);
            if let Some(cursor) = cursor {
                q.append_pair("cursor", cursor);
            }
            (
                Method::GET,
                format!("/v1/keys?{}", q.finish()),
                Bytes::new(),
            )
        }
        KeysCommand::Release { which, token } => (
            Method::POST,
            format!(
                "{}/release?{}&token={token}",
                key_path(which),
                which_query(which)
            ),
            Bytes::new(),
        ),
        KeysCommand::Resolve {
            which,
            token,
            status,
            headers,
            body,
            body_file,
        } => {
            let mut map = serde_json::Map::new();
            for h in headers {
                let Some((name, value)) = h.split_once(':') else {
                    bail!("--header: `{h}` is not `NAME: VALUE`");
                };
                map.insert(
                    name.trim().to_owned(),
                    Value::String(value.trim().to_owned()),
                );
            }
            let payload = match (body, body_file) {
                (Some(b), _) => b.clone().into_bytes(),
                (None, Some(f)) => {
                    std::fs::read(f).with_context(|| format!("--body-file: {}", f.display()))?
                }
                (None, None) => Vec::new(),
            };
            let mut json = serde_json::json!({"status": status, "headers": map});
            match String::from_utf8(payload) {
                Ok(text) => json["body"] = Value::String(text),
                Err(e) => {
                    use base64::Engine as _;
                    json["body_base64"] = Value::String(
                        base64::engine::general_purpose::STANDARD.encode(e.into_bytes()),
                    );
                }
            }
            (
                Method::POST,
                format!(
                    "{}/resolve?{}&token={token}",
                    key_path(which),
                    which_query(which)
                ),
                Bytes::from(json.to_string()),
            )
        }
        KeysCommand::Purge {
            which,
            token,
            no_tombstone,
        } => (
            Method::DELETE,
            format!(
                "{}?{}&token={token}{}",
                key_path(which),
                which_query(which),
                if *no_tombstone {
                    "&tombstone=false"
                } else {
                    ""
                }
            ),
            Bytes::new(),
        ),
    })
}

async fn call(
    admin: &str,
    token: &str,
    method: Method,
    path: &str,
    body: Bytes,
) -> anyhow::Result<(StatusCode, Value)> {
    if !admin.starts_with("http://") {
        bail!("--admin: `{admin}` must be an http:// URL (the admin listener speaks plain HTTP)");
    }
    let uri: http::Uri = format!("{admin}{path}")
        .parse()
        .with_context(|| format!("--admin: `{admin}` is not a URL"))?;
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header(
            http::header::AUTHORIZATION,
            format!("Bearer {}", token.trim()),
        )
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))?;
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let response =
        tokio::time::timeout(std::time::Duration::from_secs(30), client.request(request))
            .await
            .with_context(|| format!("{admin}: no answer within 30 s"))?
            .with_context(|| format!("{admin}: cannot reach the admin listener"))?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .context("reading the answer")?
        .to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or_else(
        |_| serde_json::json!({"detail": String::from_utf8_lossy(&bytes).trim().to_owned()}),
    );
    Ok((status, value))
}

fn print_human(command: &KeysCommand, answer: &Value) {
    match command {
        KeysCommand::List { .. } => {
            let keys = answer["keys"].as_array().cloned().unwrap_or_default();
            if keys.is_empty() {
                println!("no keys");
            }
            for k in &keys {
                println!(
                    "{}  {:<15}  token {:<16}  {}  scope {}  holder {}",
                    k["claimed_at"].as_str().unwrap_or("?"),
                    k["state"].as_str().unwrap_or("?"),
                    k["token"],
                    k["key"].as_str().unwrap_or("?"),
                    k["scope"].as_str().unwrap_or("?"),
                    k["holder"].as_str().unwrap_or("-"),
                );
            }
            if let Some(next) = answer["next_cursor"].as_str() {
                println!("more: --cursor {next}");
            }
        }
        _ => {
            if !matches!(command, KeysCommand::Get { .. }) {
                println!("done; the record is now:");
            }
            for field in [
                "key",
                "scope",
                "state",
                "token",
                "fingerprint",
                "claimed_at",
                "lease_until",
                "holder",
                "expires_at",
                "tombstone_until",
            ] {
                let v = &answer[field];
                let shown = match v {
                    Value::String(s) => s.clone(),
                    Value::Null => "-".to_owned(),
                    other => other.to_string(),
                };
                println!("{field:<16} {shown}");
            }
            if let Some(r) = answer.get("response") {
                println!("{:<16} {}", "status", r["status"]);
                if let Some(headers) = r["headers"].as_object() {
                    for (n, v) in headers {
                        println!("{:<16} {n}: {}", "header", v.as_str().unwrap_or(""));
                    }
                }
                if let Some(body) = r["body"].as_str() {
                    println!("{:<16} {body}", "body");
                }
            }
        }
    }
}
