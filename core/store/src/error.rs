//! Typed store errors.

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store URL is not one Spindle understands.
    #[error(
        "unsupported store url `{url}`: {reason}; expected `sqlite://PATH` or `postgres://USER@HOST:PORT/DATABASE`"
    )]
    UnsupportedUrl {
        /// The URL with any password removed.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The database could not be reached or opened.
    #[error("cannot open the store at {target}: {source}")]
    Connect {
        /// The store, described without credentials.
        target: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// A migration failed or the database holds migrations this build does not know.
    #[error("cannot migrate the store at {target}: {source}")]
    Migrate {
        /// The store, described without credentials.
        target: String,
        /// The migrator's error.
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// A query failed.
    #[error("store query failed: {0}")]
    Query(#[from] sqlx::Error),
    /// A read through SQLite's own interface failed (see `sqlite_reader`).
    #[error("store query failed: {0}")]
    SqliteRead(#[from] rusqlite::Error),
    /// A read running on a thread of its own was cancelled: the runtime is shutting down.
    #[error("a read of the store was cancelled: the runtime is shutting down")]
    Cancelled,
    /// Another full pass of identity resolution began staging its rows after this one did: this one
    /// stops rather than put rows of two passes in place.
    #[error(
        "another full pass of identity resolution started while this one ran; this one stopped (run it again once the other has finished)"
    )]
    StagingTaken,
    /// A write of a resolution step met a full pass that began and has not put its rows in place.
    #[error(
        "a full pass of identity resolution has begun and not finished; resolution steps wait for one to finish (the next resolution runs a full pass if none is running)"
    )]
    FullPassUnfinished,
    /// A stored value could not be decoded.
    #[error("corrupt value in the store: {0}")]
    Corrupt(String),
    /// A backup or restore could not be done.
    #[error("{0}")]
    Backup(String),
    /// A file operation around the store failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl From<serde_json::Error> for StoreError {
    fn from(err: serde_json::Error) -> Self {
        StoreError::Corrupt(err.to_string())
    }
}
