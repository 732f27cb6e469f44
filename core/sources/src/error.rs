//! Typed errors of source runs.

use std::path::PathBuf;

/// Why a source run stopped.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The data does not fit the configuration (a mapped column missing from the header, ...). Fix the
    /// configuration or the file; nothing was imported from the stream.
    #[error("{0}")]
    Mismatch(String),
    /// A vendor API request failed for good (after the retries it allows).
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
    /// The store failed; the batch was not committed and will be read again.
    #[error(transparent)]
    Store(#[from] spindle_store::StoreError),
}
