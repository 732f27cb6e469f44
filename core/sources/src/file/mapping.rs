//! From a row to a record: the configured identifier and trait mapping, and the reasons a row is refused.

use std::collections::BTreeMap;
use std::path::Path;

use spindle_config::FileSourceSettings;
use spindle_model::{Identifier, RawRecord};

use super::reader::{RawRow, RowData, json_type};
use crate::SourceError;

/// Fails when a column the mapping names is not in the CSV header.
pub(super) fn check_header(
    settings: &FileSourceSettings,
    header: &[String],
    path: &Path,
) -> Result<(), SourceError> {
    let mapped = settings
        .identifiers
        .iter()
        .map(|(kind, column)| (format!("identifiers.{kind}"), column))
        .chain(
            settings
                .traits
                .iter()
                .map(|(name, column)| (format!("traits.{name}"), column)),
        )
        .chain(
            settings
                .id_field
                .iter()
                .map(|column| ("id".to_owned(), column)),
        );
    let missing: Vec<String> = mapped
        .filter(|(_, column)| !header.iter().any(|h| h == *column))
        .map(|(key, column)| format!("`{column}` ({key})"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(SourceError::Mismatch(format!(
        "{} has no column {}; its header has: {}",
        path.display(),
        missing.join(", "),
        header
            .iter()
            .map(|h| format!("`{h}`"))
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// A field's value: `None` when empty or absent.
fn field(
    header: &[String],
    row: &RowData,
    name: &str,
) -> Result<Option<serde_json::Value>, String> {
    match row {
        RowData::Csv(Ok(fields)) => {
            let index = header.iter().position(|h| h == name);
            Ok(index
                .and_then(|i| fields.get(i))
                .filter(|v| !v.is_empty())
                .map(|v| serde_json::Value::String(v.clone())))
        }
        RowData::Json(Ok(object)) => {
            let mut current = object.get(name).or_else(|| lookup_path(object, name));
            if matches!(current, Some(serde_json::Value::Null)) {
                current = None;
            }
            Ok(current.cloned())
        }
        RowData::Csv(Err(reason)) | RowData::Json(Err(reason)) => Err(reason.clone()),
    }
}

/// `customer.email` reaches into nested objects when no key has that exact name.
fn lookup_path<'a>(
    object: &'a serde_json::Map<String, serde_json::Value>,
    path: &str,
) -> Option<&'a serde_json::Value> {
    let mut parts = path.split('.');
    let mut current = object.get(parts.next()?)?;
    for part in parts {
        current = current.as_object()?.get(part)?;
    }
    Some(current)
}

fn as_identifier(value: serde_json::Value, kind: &str, column: &str) -> Result<String, String> {
    match value {
        serde_json::Value::String(s) => Ok(s),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        other => Err(format!(
            "`{column}` (identifiers.{kind}) is {}, expected a string",
            json_type(&other)
        )),
    }
}

/// Maps one row, or says why it cannot be.
pub(super) fn map_row(
    settings: &FileSourceSettings,
    header: &[String],
    row: &RawRow,
    line: u64,
    version: i64,
) -> Result<RawRecord, String> {
    if let RowData::Csv(Ok(fields)) = &row.data
        && fields.len() != header.len()
    {
        {
            return Err(format!(
                "row has {} fields but the header has {}",
                fields.len(),
                header.len()
            ));
        }
    }
    let external_id = match &settings.id_field {
        None => format!("line:{line}"),
        Some(column) => match field(header, &row.data, column)? {
            Some(value) => as_identifier(value, "id", column)?.trim().to_owned(),
            None => return Err(format!("id column `{column}` is empty")),
        },
    };
    let mut identifiers = Vec::new();
    for (kind, column) in &settings.identifiers {
        if let Some(value) = field(header, &row.data, column)? {
            let value = as_identifier(value, kind, column)?;
            if !value.trim().is_empty() {
                identifiers.push(Identifier::new(kind.clone(), value));
            }
        }
    }
    if identifiers.is_empty() {
        let columns: Vec<String> = settings
            .identifiers
            .values()
            .map(|c| format!("`{c}`"))
            .collect();
        return Err(format!(
            "row has no identifier: {} empty",
            columns.join(", ")
        ));
    }
    let mut traits = BTreeMap::new();
    for (name, column) in &settings.traits {
        if let Some(value) = field(header, &row.data, column)? {
            traits.insert(name.clone(), value);
        }
    }
    Ok(RawRecord {
        stream: settings.stream.clone(),
        external_id,
        version,
        updated_at: None,
        deleted: false,
        identifiers,
        traits,
        events: Vec::new(),
    })
}
