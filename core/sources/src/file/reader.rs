//! Reading one batch of rows from a position in a CSV or JSONL file, keeping each row's raw bytes.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use super::io_error;
use crate::SourceError;

/// A row's content, or why it cannot be read.
#[derive(Debug)]
pub(super) enum RowData {
    /// CSV fields.
    Csv(Result<Vec<String>, String>),
    /// A JSON object.
    Json(Result<serde_json::Map<String, serde_json::Value>, String>),
}

/// One row as read.
#[derive(Debug)]
pub(super) struct RawRow {
    /// Line where the row starts, counted from the batch's start (1-based).
    pub line: u64,
    /// The row's bytes.
    pub raw: Vec<u8>,
    /// Its content.
    pub data: RowData,
}

/// A batch of rows and the bytes it consumed.
#[derive(Debug)]
pub(super) struct Rows {
    pub rows: Vec<RawRow>,
    /// Every byte read, from the batch's start to the end of its last row.
    pub consumed: Vec<u8>,
    /// True when the file's end was reached.
    pub at_end: bool,
}

fn csv_reader<R: Read>(input: R, delimiter: u8) -> csv::Reader<R> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .from_reader(input)
}

fn csv_error(path: &Path, err: csv::Error) -> SourceError {
    match err.into_kind() {
        csv::ErrorKind::Io(source) => SourceError::Io {
            path: path.to_owned(),
            source,
        },
        other => SourceError::Mismatch(format!("cannot read {} as CSV: {other:?}", path.display())),
    }
}

/// The header row of a CSV file, or `None` for an empty file.
pub(super) fn csv_header(path: &Path, delimiter: u8) -> Result<Option<Vec<String>>, SourceError> {
    let file = File::open(path).map_err(io_error(path))?;
    let mut reader = csv_reader(file, delimiter);
    let mut record = csv::ByteRecord::new();
    if !reader
        .read_byte_record(&mut record)
        .map_err(|e| csv_error(path, e))?
    {
        return Ok(None);
    }
    let header = record
        .iter()
        .enumerate()
        .map(|(i, field)| {
            let text = String::from_utf8_lossy(field);
            let text = if i == 0 {
                text.trim_start_matches('\u{feff}').to_owned()
            } else {
                text.into_owned()
            };
            text.trim().to_owned()
        })
        .collect();
    Ok(Some(header))
}

/// Reads up to `limit` data rows from `offset` (which is 0 or just after a row). At offset 0 the header row
/// is consumed and skipped.
pub(super) fn read_csv(
    file: &mut File,
    path: &Path,
    offset: u64,
    delimiter: u8,
    limit: usize,
) -> Result<Rows, SourceError> {
    let mut spans = Vec::new();
    let mut end = 0u64;
    let mut at_end = false;
    {
        let mut reader = csv_reader(&mut *file, delimiter);
        let mut record = csv::ByteRecord::new();
        let mut skip_header = offset == 0;
        while spans.len() < limit {
            if !reader
                .read_byte_record(&mut record)
                .map_err(|e| csv_error(path, e))?
            {
                at_end = true;
                break;
            }
            let (start, line) = record.position().map_or((end, 0), |p| (p.byte(), p.line()));
            end = reader.position().byte();
            if std::mem::take(&mut skip_header) {
                continue;
            }
            if record.len() == 1 && record.get(0).is_some_and(<[u8]>::is_empty) {
                continue; // a blank line
            }
            let fields: Result<Vec<String>, String> = record
                .iter()
                .enumerate()
                .map(|(i, field)| {
                    String::from_utf8(field.to_vec())
                        .map(|s| s.trim().to_owned())
                        .map_err(|_| format!("field {} is not valid UTF-8", i + 1))
                })
                .collect();
            spans.push((start, end, line, RowData::Csv(fields)));
        }
        if !at_end {
            // Look ahead: a batch that ends exactly at the file's end is the last one.
            at_end = reader.is_done() || {
                reader
                    .read_byte_record(&mut record)
                    .map(|more| !more)
                    .unwrap_or(false)
            };
        }
    }
    let consumed = read_range(file, path, offset, end)?;
    let slice = |at: u64| {
        usize::try_from(at)
            .unwrap_or(usize::MAX)
            .min(consumed.len())
    };
    let rows = spans
        .into_iter()
        .map(|(start, row_end, line, data)| RawRow {
            line,
            raw: consumed[slice(start)..slice(row_end).max(slice(start))].to_vec(),
            data,
        })
        .collect();
    Ok(Rows {
        rows,
        consumed,
        at_end,
    })
}

fn read_range(file: &mut File, path: &Path, offset: u64, len: u64) -> Result<Vec<u8>, SourceError> {
    file.seek(SeekFrom::Start(offset)).map_err(io_error(path))?;
    let mut consumed = vec![0u8; usize::try_from(len).unwrap_or(0)];
    file.read_exact(&mut consumed).map_err(io_error(path))?;
    Ok(consumed)
}

/// Reads up to `limit` non-blank lines from the file's current position.
pub(super) fn read_jsonl(file: &mut File, path: &Path, limit: usize) -> Result<Rows, SourceError> {
    let mut reader = BufReader::new(file);
    let mut consumed = Vec::new();
    let mut rows = Vec::new();
    let mut line = 0u64;
    let mut at_end = false;
    while rows.len() < limit {
        let start = consumed.len();
        let read = reader
            .read_until(b'\n', &mut consumed)
            .map_err(io_error(path))?;
        if read == 0 {
            at_end = true;
            break;
        }
        line += 1;
        let raw = consumed[start..].to_vec();
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let data = match serde_json::from_slice::<serde_json::Value>(&raw) {
            Ok(serde_json::Value::Object(map)) => Ok(map),
            Ok(other) => Err(format!(
                "line is JSON {} but must be an object",
                json_type(&other)
            )),
            Err(err) => Err(format!("invalid JSON: {err}")),
        };
        rows.push(RawRow {
            line,
            raw,
            data: RowData::Json(data),
        });
    }
    if !at_end {
        at_end = reader.fill_buf().map_err(io_error(path))?.is_empty();
    }
    Ok(Rows {
        rows,
        consumed,
        at_end,
    })
}

/// The JSON type of a value, for messages.
pub(super) fn json_type(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}
