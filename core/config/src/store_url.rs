//! Where the store lives: `sqlite://PATH` (embedded, the default) or `postgres://USER@HOST:PORT/DATABASE`.
//!
//! Parsing is pure. The full URL may hold a password, so it is kept as a secret and only
//! [`StoreUrl::redacted`] (no password) is ever printed.

use std::fmt;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};

/// Default store URL: a SQLite file beside the working directory.
pub const DEFAULT_STORE_URL: &str = "sqlite://spindle.db";

/// Which database backs the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite in one file (embedded).
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

impl Backend {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// A parsed, validated store location.
#[derive(Clone)]
pub struct StoreUrl {
    backend: Backend,
    url: SecretString,
    redacted: String,
    sqlite_path: Option<PathBuf>,
    schema: Option<String>,
}

/// Why a store URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct StoreUrlError {
    /// What is wrong, phrased for the user.
    pub reason: String,
}

impl StoreUrl {
    /// Parses a store URL. `base_dir` anchors a relative SQLite path (the config file's folder); `schema`
    /// selects a PostgreSQL schema (created if missing) and is refused for SQLite.
    pub fn parse(url: &str, base_dir: &Path, schema: Option<&str>) -> Result<Self, StoreUrlError> {
        let fail = |reason: String| StoreUrlError { reason };
        if let Some(rest) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            if schema.is_some() {
                return Err(fail("`schema` applies to PostgreSQL stores only".into()));
            }
            let path = rest.split('?').next().unwrap_or_default();
            if path.is_empty() || path == ":memory:" {
                return Err(fail(
                    "a SQLite store needs a file path, e.g. `sqlite://spindle.db` (in-memory stores lose data)"
                        .into(),
                ));
            }
            let path = base_dir.join(path);
            let redacted = format!("sqlite://{}", path.display());
            return Ok(Self {
                backend: Backend::Sqlite,
                url: SecretString::from(redacted.clone()),
                redacted,
                sqlite_path: Some(path),
                schema: None,
            });
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let parsed = url::Url::parse(url)
                .map_err(|err| fail(format!("not a valid PostgreSQL URL: {err}")))?;
            let host = parsed.host_str().filter(|h| !h.is_empty()).ok_or_else(|| {
                fail("a PostgreSQL URL needs a host, e.g. `postgres://spindle@127.0.0.1:5432/spindle`".into())
            })?;
            let database = parsed.path().trim_start_matches('/');
            if database.is_empty() {
                return Err(fail(
                    "a PostgreSQL URL needs a database name, e.g. `postgres://spindle@127.0.0.1:5432/spindle`".into(),
                ));
            }
            if let Some(schema) = schema {
                validate_schema_name(schema).map_err(fail)?;
            }
            let user = parsed.username();
            let at = if user.is_empty() {
                String::new()
            } else {
                format!("{user}@")
            };
            let port = parsed.port().map(|p| format!(":{p}")).unwrap_or_default();
            let redacted = format!("postgres://{at}{host}{port}/{database}");
            return Ok(Self {
                backend: Backend::Postgres,
                url: SecretString::from(url.to_owned()),
                redacted,
                sqlite_path: None,
                schema: schema.map(str::to_owned),
            });
        }
        let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or(url);
        Err(fail(format!(
            "unknown store scheme `{scheme}`; use `sqlite://PATH` or `postgres://USER@HOST:PORT/DATABASE`"
        )))
    }

    /// Which backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The URL without any password, safe to print.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    /// The SQLite file, for SQLite stores.
    pub fn sqlite_path(&self) -> Option<&Path> {
        self.sqlite_path.as_deref()
    }

    /// The PostgreSQL schema, when one is configured.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// The full connection URL, password included. Only for handing to the database driver.
    pub fn expose_connection_url(&self) -> &str {
        self.url.expose_secret()
    }
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreUrl")
            .field("url", &self.redacted)
            .field("schema", &self.schema)
            .finish()
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

/// A PostgreSQL schema name Spindle accepts: lowercase letters, digits and `_`, starting with a letter or `_`,
/// at most 63 bytes. Quoting is then never needed.
pub fn validate_schema_name(schema: &str) -> Result<(), String> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !schema.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "schema `{schema}` is not a plain lowercase identifier (letters, digits, `_`, not starting with a digit, at most 63 bytes)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_paths_are_relative_to_the_config_folder() {
        let url =
            StoreUrl::parse("sqlite://data/spindle.db", Path::new("/etc/spindle"), None).unwrap();
        assert_eq!(url.backend(), Backend::Sqlite);
        assert_eq!(
            url.sqlite_path(),
            Some(Path::new("/etc/spindle/data/spindle.db"))
        );
        let abs = StoreUrl::parse("sqlite:///var/lib/spindle.db", Path::new("/etc"), None).unwrap();
        assert_eq!(abs.sqlite_path(), Some(Path::new("/var/lib/spindle.db")));
    }

    #[test]
    fn postgres_password_never_shows() {
        let url = StoreUrl::parse(
            "postgres://app:hunter2@db.internal:5432/cdp",
            Path::new("."),
            Some("spindle"),
        )
        .unwrap();
        assert_eq!(url.redacted(), "postgres://app@db.internal:5432/cdp");
        assert!(!format!("{url:?} {url}").contains("hunter2"));
        assert!(url.expose_connection_url().contains("hunter2"));
    }

    #[test]
    fn bad_urls_say_what_to_write() {
        let err = StoreUrl::parse("mysql://x/y", Path::new("."), None).unwrap_err();
        assert!(err.reason.contains("unknown store scheme `mysql`"), "{err}");
        let err = StoreUrl::parse("postgres://localhost", Path::new("."), None).unwrap_err();
        assert!(err.reason.contains("database name"), "{err}");
        let err = StoreUrl::parse("sqlite://", Path::new("."), None).unwrap_err();
        assert!(err.reason.contains("file path"), "{err}");
        let err = StoreUrl::parse("postgres://h/db", Path::new("."), Some("Bad-Name")).unwrap_err();
        assert!(err.reason.contains("plain lowercase identifier"), "{err}");
    }
}
