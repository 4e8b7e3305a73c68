//! The one place a store string (`--store`) maps to an engine.

use crate::Store;
use std::path::PathBuf;
use std::sync::Arc;

/// A parsed `--store` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// `memory`: in-process, nothing survives a restart.
    Memory,
    /// `sqlite:PATH`: the embedded durable default.
    Sqlite {
        /// The database file.
        path: PathBuf,
    },
}

/// A `--store` value that names no engine, or a bad one.
#[derive(Debug, thiserror::Error)]
pub enum StoreSpecError {
    /// The scheme is not one of the engines.
    #[error("unknown store `{0}`: expected `memory` or `sqlite:PATH` (e.g. sqlite:idem.db)")]
    UnknownScheme(String),
    /// `sqlite:` without a path.
    #[error("store `sqlite:` needs a file path, e.g. sqlite:idem.db")]
    MissingPath,
    /// The engine was compiled out.
    #[error("store engine `{0}` is not compiled into this build")]
    NotCompiled(&'static str),
    /// Opening failed.
    #[error("cannot open store `{spec}`: {source}")]
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
    /// assert!("mysql://x".parse::<StoreSpec>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "memory" {
            return Ok(StoreSpec::Memory);
        }
        if let Some(path) = s.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(StoreSpecError::MissingPath);
            }
            return Ok(StoreSpec::Sqlite { path: path.into() });
        }
        Err(StoreSpecError::UnknownScheme(s.to_owned()))
    }
}

impl std::fmt::Display for StoreSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreSpec::Memory => f.write_str("memory"),
            StoreSpec::Sqlite { path } => write!(f, "sqlite:{}", path.display()),
        }
    }
}

/// Opens the engine a spec names.
pub async fn open(spec: &StoreSpec) -> Result<Arc<dyn Store>, StoreSpecError> {
    match spec {
        StoreSpec::Memory => Ok(Arc::new(crate::MemoryStore::new())),
        #[cfg(feature = "sqlite")]
        StoreSpec::Sqlite { path } => {
            crate::SqliteStore::open(path, crate::SqliteOptions::default())
                .map(|s| Arc::new(s) as Arc<dyn Store>)
                .map_err(|source| StoreSpecError::Open {
                    spec: spec.to_string(),
                    source,
                })
        }
        #[cfg(not(feature = "sqlite"))]
        StoreSpec::Sqlite { .. } => Err(StoreSpecError::NotCompiled("sqlite")),
    }
}
