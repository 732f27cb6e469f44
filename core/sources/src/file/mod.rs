//! File sources: `kind = "csv"` (with a header row) and `kind = "jsonl"` (one JSON object per line).
//!
//! Contract:
//! - The cursor holds the byte offset and line reached, a SHA-256 of the file's bytes before that offset,
//!   and the last version handed out. A file whose first `offset` bytes are unchanged is read from the offset
//!   (appended rows only); an unchanged file imports nothing; a file that was rewritten or truncated is read
//!   again from the start (the store keeps unchanged rows as they are and updates changed ones).
//! - Each row's version is larger than any earlier one from this source, so a later row for the same id
//!   replaces an earlier one, within a file and across runs.
//! - A row that cannot be mapped (no identifier, wrong field count, wrong type, invalid UTF-8 or JSON) is
//!   quarantined with its line number, reason and raw text; the run goes on.
//! - A mapped column missing from the CSV header stops the run with a [`SourceError::Mismatch`] naming it.
//! - Writers should append whole lines; a last line without a newline is read as it is.

mod mapping;
mod reader;

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use spindle_config::FileSourceSettings;
use spindle_model::Cursor;
use spindle_store::SourceBatch;

use crate::{Next, Pull, Source, SourceError};

/// How the file is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Comma (or other delimiter) separated values with a header row.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

/// A CSV or JSONL file source.
#[derive(Debug)]
pub struct FileSource {
    settings: FileSourceSettings,
    format: Format,
    state: Option<ReadState>,
}

/// What the cursor stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct FilePosition {
    offset: u64,
    line: u64,
    prefix_sha256: String,
    last_version: i64,
}

/// Where this run stands in the file; kept between pulls so the prefix is hashed once per run.
#[derive(Debug, Clone)]
struct ReadState {
    offset: u64,
    line: u64,
    prefix: Sha256,
    last_version: i64,
    csv_header: Option<Vec<String>>,
}

impl ReadState {
    fn fresh(last_version: i64) -> Self {
        Self {
            offset: 0,
            line: 0,
            prefix: Sha256::new(),
            last_version,
            csv_header: None,
        }
    }

    fn position(&self) -> FilePosition {
        FilePosition {
            offset: self.offset,
            line: self.line,
            prefix_sha256: hex::encode(self.prefix.clone().finalize()),
            last_version: self.last_version,
        }
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> SourceError + '_ {
    move |source| SourceError::Io {
        path: path.to_owned(),
        source,
    }
}

impl FileSource {
    /// A CSV source.
    pub fn csv(settings: FileSourceSettings) -> Self {
        Self {
            settings,
            format: Format::Csv,
            state: None,
        }
    }

    /// A JSONL source.
    pub fn jsonl(settings: FileSourceSettings) -> Self {
        Self {
            settings,
            format: Format::Jsonl,
            state: None,
        }
    }

    /// Restores the read state from the stored cursor, checking that the bytes it covers are unchanged.
    fn resume(&self, cursor: Option<&Cursor>) -> Result<ReadState, SourceError> {
        let path = &self.settings.path;
        let Some(cursor) = cursor else {
            return Ok(ReadState::fresh(0));
        };
        let position: FilePosition = match serde_json::from_value(cursor.position.clone()) {
            Ok(position) => position,
            Err(err) => {
                tracing::warn!(path = %path.display(), error = %err, "unreadable file cursor; importing the file again");
                return Ok(ReadState::fresh(0));
            }
        };
        let mut file = std::fs::File::open(path).map_err(io_error(path))?;
        let len = file.metadata().map_err(io_error(path))?.len();
        if len < position.offset {
            tracing::info!(path = %path.display(), "file is shorter than at the last import; importing it again");
            return Ok(ReadState::fresh(position.last_version));
        }
        let mut prefix = Sha256::new();
        let mut remaining = position.offset;
        let mut buffer = vec![0u8; 64 * 1024];
        while remaining > 0 {
            let want = usize::try_from(remaining.min(buffer.len() as u64)).unwrap_or(buffer.len());
            let got = file.read(&mut buffer[..want]).map_err(io_error(path))?;
            if got == 0 {
                break;
            }
            prefix.update(&buffer[..got]);
            remaining -= got as u64;
        }
        if hex::encode(prefix.clone().finalize()) != position.prefix_sha256 {
            tracing::info!(path = %path.display(), "file was rewritten since the last import; importing it again");
            return Ok(ReadState::fresh(position.last_version));
        }
        Ok(ReadState {
            offset: position.offset,
            line: position.line,
            prefix,
            last_version: position.last_version,
            csv_header: None,
        })
    }

    fn pull_blocking(&mut self, cursor: Option<&Cursor>) -> Result<Pull, SourceError> {
        let stored =
            cursor.and_then(|c| serde_json::from_value::<FilePosition>(c.position.clone()).ok());
        let in_step =
            matches!((&self.state, &stored), (Some(state), Some(pos)) if state.position() == *pos);
        let mut state = match self.state.take() {
            Some(state) if in_step => state,
            _ => self.resume(cursor)?,
        };
        let path = self.settings.path.clone();
        let mut file = std::fs::File::open(&path).map_err(io_error(&path))?;
        // Versions only grow: a later row for the same id replaces an earlier one.
        let now_micros = chrono::Utc::now().timestamp_micros();
        let first_version = now_micros.max(state.last_version + 1);

        let rows = match self.format {
            Format::Csv => {
                if state.csv_header.is_none() {
                    match reader::csv_header(&path, self.settings.delimiter)? {
                        Some(header) => state.csv_header = Some(header),
                        None => {
                            // An empty file: nothing to import yet.
                            self.state = Some(state);
                            return Ok(Pull {
                                batch: SourceBatch::default(),
                                next: Next::Done,
                            });
                        }
                    }
                }
                let header = state.csv_header.as_deref().unwrap_or_default();
                mapping::check_header(&self.settings, header, &path)?;
                file.seek(SeekFrom::Start(state.offset))
                    .map_err(io_error(&path))?;
                reader::read_csv(
                    &mut file,
                    &path,
                    state.offset,
                    self.settings.delimiter,
                    self.settings.batch_size,
                )?
            }
            Format::Jsonl => {
                file.seek(SeekFrom::Start(state.offset))
                    .map_err(io_error(&path))?;
                reader::read_jsonl(&mut file, &path, self.settings.batch_size)?
            }
        };

        let mut batch = SourceBatch::default();
        let header = state.csv_header.clone().unwrap_or_default();
        for (index, row) in rows.rows.iter().enumerate() {
            let line = state.line + row.line;
            let version = first_version + index as i64;
            match mapping::map_row(&self.settings, &header, row, line, version) {
                Ok(record) => batch.records.push(record),
                Err(reason) => batch.quarantined.push(spindle_model::QuarantinedRecord {
                    stream: self.settings.stream.clone(),
                    location: format!("{}:{line}", path.display()),
                    reason,
                    payload: String::from_utf8_lossy(&row.raw).trim_end().to_owned(),
                }),
            }
        }
        let handed_out = i64::try_from(rows.rows.len()).unwrap_or(i64::MAX);
        if handed_out > 0 {
            state.last_version = first_version + handed_out - 1;
        }
        state.prefix.update(&rows.consumed);
        state.offset += rows.consumed.len() as u64;
        state.line += rows.consumed.iter().filter(|b| **b == b'\n').count() as u64;
        let advanced = !rows.consumed.is_empty();
        if advanced {
            batch.cursors.push(Cursor {
                stream: self.settings.stream.clone(),
                position: serde_json::to_value(state.position()).unwrap_or_default(),
            });
        }
        let next = if rows.at_end { Next::Done } else { Next::More };
        self.state = Some(state);
        Ok(Pull { batch, next })
    }
}

#[async_trait]
impl Source for FileSource {
    fn kind(&self) -> &'static str {
        match self.format {
            Format::Csv => "csv",
            Format::Jsonl => "jsonl",
        }
    }

    fn streams(&self) -> Vec<String> {
        vec![self.settings.stream.clone()]
    }

    async fn pull(&mut self, _stream: &str, cursor: Option<&Cursor>) -> Result<Pull, SourceError> {
        // A pull reads one bounded batch from a local file. On the multi-threaded runtime the daemon uses,
        // block_in_place lets other tasks move to another worker meanwhile.
        if tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::MultiThread
        {
            tokio::task::block_in_place(|| self.pull_blocking(cursor))
        } else {
            self.pull_blocking(cursor)
        }
    }

    async fn check(&self) -> Result<(), SourceError> {
        let path = &self.settings.path;
        std::fs::File::open(path).map_err(io_error(path))?;
        if self.format == Format::Csv
            && let Some(header) = reader::csv_header(path, self.settings.delimiter)?
        {
            {
                mapping::check_header(&self.settings, &header, path)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
