//! The one place a store string (`--store`) maps to an engine.

use crate::{SqliteSynchronous, Store};
use std::path::PathBuf;
use std::sync::Arc;

/// A parsed `--store` value.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// `memory`: in-process, nothing survives a restart.
    Memory,
    /// `sqlite:PATH`: the embedded durable default
    /// (`sqlite:PATH?synchronous=normal` for the weaker sync, see
    /// [`SqliteSynchronous`]).
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// When commits reach the disk.
        synchronous: SqliteSynchronous,
    },
    /// `postgres://…` or `postgresql://…`: PostgreSQL, shared by many
    /// gateways.
    Postgres {
        /// The connection URL, as given.
        url: String,
    },
    /// `redis://…` (or `rediss://…` over TLS): one Redis server, shared
    /// by many gateways.
    Redis {
        /// The connection URL, as given.
        url: String,
    },
    /// `redis+cluster://HOST:PORT,HOST:PORT` (or `redis://` with several
    /// comma-separated nodes; `rediss+cluster://` or `rediss://` over
    /// TLS): Redis Cluster, reached through any of the nodes.
    RedisCluster {
        /// Each node as a `redis://` (or `rediss://`) URL (credentials and
        /// query of the spec repeated on each).
        nodes: Vec<String>,
    },
}

/// A `--store` value that names no engine, or a bad one.
#[derive(Debug, thiserror::Error)]
pub enum StoreSpecError {
    /// The scheme is not one of the engines.
    #[error(
        "unknown store `{0}`: expected `memory`, `sqlite:PATH` (e.g. sqlite:idem.db), \
         `postgres://USER@HOST:PORT/DB`, `redis://HOST:PORT/` or \
         `redis+cluster://HOST:PORT,HOST:PORT` (`rediss://`, `rediss+cluster://` over TLS)"
    )]
    UnknownScheme(String),
    /// `sqlite:` without a path.
    #[error("store `sqlite:` needs a file path, e.g. sqlite:idem.db")]
    MissingPath,
    /// A `sqlite:PATH?…` parameter that is not `synchronous=full|normal`.
    #[error(
        "store `{0}`: unknown parameter `{1}` (the one parameter is synchronous=full or synchronous=normal)"
    )]
    SqliteParameter(String, String),
    /// A URL store without a host.
    #[error(
        "store `{0}` names no server: expected e.g. postgres://idem@db:5432/idem, \
         redis://cache:6379/ or redis+cluster://node1:7000,node2:7000"
    )]
    MissingHost(String),
    /// The engine was compiled out.
    #[error("store engine `{0}` is not compiled into this build")]
    NotCompiled(&'static str),
    /// Opening failed.
    #[error("cannot open store `{spec}`")]
    Open {
        /// The store string.
        spec: String,
        /// Why.
        source: crate::StoreError,
    },
}

impl std::str::FromStr for StoreSpec {
    type Err = StoreSpecError;

    /// ```
    /// use idem_store::StoreSpec;
    /// assert_eq!("memory".parse::<StoreSpec>().unwrap(), StoreSpec::Memory);
    /// assert!(matches!("sqlite:/tmp/x.db".parse::<StoreSpec>().unwrap(), StoreSpec::Sqlite { .. }));
    /// assert!(matches!("postgres://idem@db/idem".parse::<StoreSpec>().unwrap(), StoreSpec::Postgres { .. }));
    /// assert!(matches!("redis://cache:6379/".parse::<StoreSpec>().unwrap(), StoreSpec::Redis { .. }));
    /// assert_eq!(
    ///     "redis+cluster://a:7000,b:7001".parse::<StoreSpec>().unwrap(),
    ///     StoreSpec::RedisCluster { nodes: vec!["redis://a:7000".into(), "redis://b:7001".into()] },
    /// );
    /// assert!("mysql://x".parse::<StoreSpec>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "memory" {
            return Ok(StoreSpec::Memory);
        }
        if let Some(path) = s.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            let (path, params) = match path.split_once('?') {
                Some((path, params)) => (path, Some(params)),
                None => (path, None),
            };
            if path.is_empty() {
                return Err(StoreSpecError::MissingPath);
            }
            let mut synchronous = SqliteSynchronous::Full;
            for param in params.into_iter().flat_map(|p| p.split('&')) {
                synchronous = match param.to_ascii_lowercase().as_str() {
                    "synchronous=full" => SqliteSynchronous::Full,
                    "synchronous=normal" => SqliteSynchronous::Normal,
                    _ => {
                        return Err(StoreSpecError::SqliteParameter(
                            s.to_owned(),
                            param.to_owned(),
                        ))
                    }
                };
            }
            return Ok(StoreSpec::Sqlite {
                path: path.into(),
                synchronous,
            });
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            if authority(s).is_none_or(|a| a.rsplit('@').next().unwrap_or("").is_empty()) {
                return Err(StoreSpecError::MissingHost(redact(s)));
            }
            return Ok(StoreSpec::Postgres { url: s.to_owned() });
        }
        for (cluster, node) in [
            ("redis+cluster://", "redis://"),
            ("rediss+cluster://", "rediss://"),
        ] {
            if let Some(rest) = s.strip_prefix(cluster) {
                return cluster_nodes(s, node, rest).map(|nodes| StoreSpec::RedisCluster { nodes });
            }
        }
        for node in ["redis://", "rediss://"] {
            if let Some(rest) = s.strip_prefix(node) {
                let hosts = authority(s).map(|a| a.rsplit('@').next().unwrap_or(""));
                if hosts.is_none_or(str::is_empty) {
                    return Err(StoreSpecError::MissingHost(redact(s)));
                }
                if hosts.is_some_and(|h| h.contains(',')) {
                    return cluster_nodes(s, node, rest)
                        .map(|nodes| StoreSpec::RedisCluster { nodes });
                }
                return Ok(StoreSpec::Redis { url: s.to_owned() });
            }
        }
        Err(StoreSpecError::UnknownScheme(s.to_owned()))
    }
}

/// Debug output is the redacted display form: no password reaches a log.
impl std::fmt::Debug for StoreSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoreSpec({self})")
    }
}

impl std::fmt::Display for StoreSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreSpec::Memory => f.write_str("memory"),
            StoreSpec::Sqlite { path, synchronous } => {
                write!(f, "sqlite:{}", path.display())?;
                match synchronous {
                    SqliteSynchronous::Full => Ok(()),
                    SqliteSynchronous::Normal => f.write_str("?synchronous=normal"),
                }
            }
            // Passwords are never shown (this is what logs and errors print).
            StoreSpec::Postgres { url } | StoreSpec::Redis { url } => f.write_str(&redact(url)),
            StoreSpec::RedisCluster { nodes } => {
                let tls = nodes.first().is_some_and(|n| n.starts_with("rediss://"));
                f.write_str(if tls {
                    "rediss+cluster://"
                } else {
                    "redis+cluster://"
                })?;
                let mut query = None;
                for (i, node) in nodes.iter().enumerate() {
                    let shown = redact(node);
                    let host = shown
                        .strip_prefix("redis://")
                        .or_else(|| shown.strip_prefix("rediss://"))
                        .unwrap_or(&shown);
                    // The query, repeated on every node, is shown once.
                    let host = match host.split_once('?') {
                        Some((host, q)) => {
                            query = Some(q.to_owned());
                            host.trim_end_matches('/')
                        }
                        None => host,
                    };
                    // Credentials, repeated on every node, are shown once.
                    let host = if i == 0 {
                        host
                    } else {
                        host.rsplit('@').next().unwrap_or(host)
                    };
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    f.write_str(host)?;
                }
                if let Some(query) = query {
                    write!(f, "/?{query}")?;
                }
                Ok(())
            }
        }
    }
}

/// The authority of a `scheme://authority/...` URL.
fn authority(url: &str) -> Option<&str> {
    let rest = &url[url.find("://")? + 3..];
    Some(&rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())])
}

/// `url` with the password in its user info replaced by `***`.
fn redact(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let Some(auth) = authority(url) else {
        return url.to_owned();
    };
    let Some(at) = auth.rfind('@') else {
        return url.to_owned();
    };
    match auth[..at].find(':') {
        Some(colon) => format!("{}***{}", &url[..start + colon + 1], &url[start + at..]),
        None => url.to_owned(),
    }
}

/// The nodes of `redis+cluster://[USER:PASS@]HOST:PORT,HOST:PORT[/][?QUERY]`
/// (`rest` is what follows the scheme), each as a `scheme` (`redis://` or
/// `rediss://`) URL carrying the credentials (and the query, e.g.
/// `prefix=NAME`, as `/?QUERY`).
fn cluster_nodes(spec: &str, scheme: &str, rest: &str) -> Result<Vec<String>, StoreSpecError> {
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, Some(query)),
        None => (rest, None),
    };
    let rest = rest.trim_end_matches('/');
    let (userinfo, hosts) = match rest.rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let nodes: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .map(|host| {
            let node = match userinfo {
                Some(u) => format!("{scheme}{u}@{host}"),
                None => format!("{scheme}{host}"),
            };
            match query {
                Some(query) => format!("{node}/?{query}"),
                None => node,
            }
        })
        .collect();
    if hosts.split(',').any(|h| h.trim().is_empty()) {
        return Err(StoreSpecError::MissingHost(redact(spec)));
    }
    Ok(nodes)
}

/// Opens the engine a spec names.
pub async fn open(spec: &StoreSpec) -> Result<Arc<dyn Store>, StoreSpecError> {
    match spec {
        StoreSpec::Memory => Ok(Arc::new(crate::MemoryStore::new())),
        #[cfg(feature = "sqlite")]
        StoreSpec::Sqlite { path, synchronous } => {
            let options = crate::SqliteOptions {
                synchronous: *synchronous,
                ..crate::SqliteOptions::default()
            };
            crate::SqliteStore::open(path, options)
                .map(|s| Arc::new(s) as Arc<dyn Store>)
                .map_err(|source| StoreSpecError::Open {
                    spec: spec.to_string(),
                    source,
                })
        }
        #[cfg(not(feature = "sqlite"))]
        StoreSpec::Sqlite { .. } => Err(StoreSpecError::NotCompiled("sqlite")),
        #[cfg(feature = "postgres")]
        StoreSpec::Postgres { url } => {
            crate::PostgresStore::open(url, crate::PostgresOptions::default())
                .await
                .map(|s| Arc::new(s) as Arc<dyn Store>)
                .map_err(|source| StoreSpecError::Open {
                    spec: spec.to_string(),
                    source,
                })
        }
        #[cfg(not(feature = "postgres"))]
        StoreSpec::Postgres { .. } => Err(StoreSpecError::NotCompiled("postgres")),
        #[cfg(feature = "redis")]
        StoreSpec::Redis { url } => crate::RedisStore::open(url, crate::RedisOptions::default())
            .await
            .map(|s| Arc::new(s) as Arc<dyn Store>)
            .map_err(|source| StoreSpecError::Open {
                spec: spec.to_string(),
                source,
            }),
        #[cfg(feature = "redis")]
        StoreSpec::RedisCluster { nodes } => {
            crate::RedisStore::open_cluster(nodes, crate::RedisOptions::default())
                .await
                .map(|s| Arc::new(s) as Arc<dyn Store>)
                .map_err(|source| StoreSpecError::Open {
                    spec: spec.to_string(),
                    source,
                })
        }
        #[cfg(not(feature = "redis"))]
        StoreSpec::Redis { .. } | StoreSpec::RedisCluster { .. } => {
            Err(StoreSpecError::NotCompiled("redis"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> StoreSpec {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn url_stores_parse_and_never_show_passwords() {
        let pg = parse("postgresql://idem:s3cret@db:5432/idem?sslmode=disable");
        assert_eq!(
            pg,
            StoreSpec::Postgres {
                url: "postgresql://idem:s3cret@db:5432/idem?sslmode=disable".into()
            }
        );
        assert_eq!(
            pg.to_string(),
            "postgresql://idem:***@db:5432/idem?sslmode=disable"
        );
        assert_eq!(
            parse("postgres://db/idem").to_string(),
            "postgres://db/idem"
        );
        let redis = parse("redis://:pw@cache:6379/2");
        assert_eq!(redis.to_string(), "redis://:***@cache:6379/2");
        assert!(matches!(redis, StoreSpec::Redis { .. }));
    }

    #[test]
    fn sqlite_takes_one_parameter_the_sync_and_names_any_other() {
        let full = parse("sqlite:/var/lib/idem.db");
        assert_eq!(
            full,
            StoreSpec::Sqlite {
                path: "/var/lib/idem.db".into(),
                synchronous: SqliteSynchronous::Full
            }
        );
        assert_eq!(parse("sqlite:/var/lib/idem.db?synchronous=FULL"), full);
        let normal = parse("sqlite:idem.db?synchronous=normal");
        assert_eq!(
            normal,
            StoreSpec::Sqlite {
                path: "idem.db".into(),
                synchronous: SqliteSynchronous::Normal
            }
        );
        assert_eq!(normal.to_string(), "sqlite:idem.db?synchronous=normal");
        assert_eq!(parse(&normal.to_string()), normal);
        for bad in ["sqlite:idem.db?synchronous=off", "sqlite:idem.db?mode=ro"] {
            let err = bad.parse::<StoreSpec>().unwrap_err().to_string();
            assert!(
                err.contains("unknown parameter") && err.contains(bad.split('?').nth(1).unwrap()),
                "{err}"
            );
        }
        assert!(matches!(
            "sqlite:?synchronous=normal".parse::<StoreSpec>(),
            Err(StoreSpecError::MissingPath)
        ));
    }

    #[test]
    fn clusters_are_named_by_their_nodes() {
        let c = parse("redis+cluster://u:pw@a:7000,b:7001/");
        assert_eq!(
            c,
            StoreSpec::RedisCluster {
                nodes: vec!["redis://u:pw@a:7000".into(), "redis://u:pw@b:7001".into()]
            }
        );
        assert_eq!(c.to_string(), "redis+cluster://u:***@a:7000,b:7001");
        // Several nodes in a redis:// URL are a cluster too.
        assert_eq!(
            parse("redis://a:7000,b:7001"),
            StoreSpec::RedisCluster {
                nodes: vec!["redis://a:7000".into(), "redis://b:7001".into()]
            }
        );
        assert_eq!(
            parse(&parse("redis+cluster://a:1,b:2").to_string()),
            parse("redis+cluster://a:1,b:2")
        );
        // Idem's parameters (the key prefix) reach every node.
        let c = parse("redis+cluster://u:pw@a:7000,b:7001/?prefix=payments");
        assert_eq!(
            c,
            StoreSpec::RedisCluster {
                nodes: vec![
                    "redis://u:pw@a:7000/?prefix=payments".into(),
                    "redis://u:pw@b:7001/?prefix=payments".into()
                ]
            }
        );
        assert_eq!(
            c.to_string(),
            "redis+cluster://u:***@a:7000,b:7001/?prefix=payments"
        );
        assert_eq!(parse(&c.to_string().replace("***", "pw")), c);
        assert_eq!(
            parse("redis://a:7000,b:7001?prefix=p"),
            StoreSpec::RedisCluster {
                nodes: vec![
                    "redis://a:7000/?prefix=p".into(),
                    "redis://b:7001/?prefix=p".into()
                ]
            }
        );
    }

    #[test]
    fn rediss_stores_are_redis_over_tls_single_or_cluster() {
        assert_eq!(
            parse("rediss://:pw@cache:6380/?tls_ca=/etc/ca.pem"),
            StoreSpec::Redis {
                url: "rediss://:pw@cache:6380/?tls_ca=/etc/ca.pem".into()
            }
        );
        let c = parse("rediss+cluster://u:pw@a:7000,b:7001/?tls_ca=/etc/ca.pem");
        assert_eq!(
            c,
            StoreSpec::RedisCluster {
                nodes: vec![
                    "rediss://u:pw@a:7000/?tls_ca=/etc/ca.pem".into(),
                    "rediss://u:pw@b:7001/?tls_ca=/etc/ca.pem".into()
                ]
            }
        );
        assert_eq!(
            c.to_string(),
            "rediss+cluster://u:***@a:7000,b:7001/?tls_ca=/etc/ca.pem"
        );
        assert_eq!(parse(&c.to_string().replace("***", "pw")), c);
        assert_eq!(
            parse("rediss://a:7000,b:7001"),
            StoreSpec::RedisCluster {
                nodes: vec!["rediss://a:7000".into(), "rediss://b:7001".into()]
            }
        );
        for bad in [
            "rediss://",
            "rediss+cluster://",
            "rediss+cluster://a:1,,b:2",
        ] {
            let err = bad.parse::<StoreSpec>().unwrap_err().to_string();
            assert!(err.contains("names no server"), "{bad}: {err}");
        }
    }

    #[test]
    fn url_stores_without_a_server_are_refused_with_examples() {
        for bad in [
            "postgres://",
            "postgres://user:pw@/db",
            "redis://",
            "redis+cluster://",
            "redis+cluster://a:1,,b:2",
        ] {
            let err = bad.parse::<StoreSpec>().unwrap_err().to_string();
            assert!(err.contains("names no server"), "{bad}: {err}");
            assert!(!err.contains("pw@"), "{err}");
        }
        let err = "mysql://x".parse::<StoreSpec>().unwrap_err().to_string();
        for form in [
            "memory",
            "sqlite:PATH",
            "postgres://",
            "redis://",
            "redis+cluster://",
        ] {
            assert!(err.contains(form), "{err}");
        }
    }
}
