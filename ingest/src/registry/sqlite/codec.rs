//! How values cross the SQLite boundary: times as integer microseconds, structured fields as
//! JSON text, enums by their API names, and rusqlite errors as [`StoreError`]s.
//! Decoding failures surface as rusqlite conversion errors so that a corrupt row is a backend
//! failure, never a panic.

use jiff::Timestamp;
use rusqlite::types::Type;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::registry::StoreError;

/// Wraps any failure of the database itself.
pub(super) fn backend(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StoreError {
    StoreError::Backend(error.into())
}

// `?` on a rusqlite call inside the store means "the database failed"; expected outcomes such as
// a taken id are checked explicitly before they could become constraint errors. A full disk and
// a lock held too long by another process are conditions an operator fixes and a caller retries,
// so they are `Unavailable` (503) in words that say which, not an internal error.
impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        match error.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => StoreError::Unavailable(
                "the disk holding the registry database is full, so the change was not stored; \
                 free space on it and retry"
                    .into(),
            ),
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Unavailable(
                "another process held the registry database's write lock for too long; retry \
                 shortly (is a backup or a second ingest writing to the same file?)"
                    .into(),
            ),
            _ => backend(error),
        }
    }
}

/// Whether an error is a UNIQUE or PRIMARY KEY violation, i.e. another writer took the key.
pub(super) fn is_unique_violation(error: &rusqlite::Error) -> bool {
    matches!(
        error,
        rusqlite::Error::SqliteFailure(e, _)
            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
    )
}

/// A time as stored: microseconds since the epoch.
pub(super) fn micros(time: Timestamp) -> i64 {
    time.as_microsecond()
}

/// Drops the nanoseconds the store cannot keep, so a value returned by a write equals the value a
/// later read returns.
pub(super) fn truncate(time: Timestamp) -> Timestamp {
    Timestamp::from_microsecond(time.as_microsecond()).unwrap_or(time)
}

/// Reads a nullable time column.
pub(super) fn time_column(
    row: &rusqlite::Row<'_>,
    idx: usize,
) -> rusqlite::Result<Option<Timestamp>> {
    row.get::<_, Option<i64>>(idx)?
        .map(|us| {
            Timestamp::from_microsecond(us).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(idx, Type::Integer, e.into())
            })
        })
        .transpose()
}

/// Reads a non-null time column.
pub(super) fn required_time(row: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<Timestamp> {
    time_column(row, idx)?.ok_or(rusqlite::Error::InvalidColumnType(
        idx,
        "time".into(),
        Type::Null,
    ))
}

/// Serialises a value as JSON text for a column.
pub(super) fn to_json<T: Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(backend)
}

/// Reads a JSON text column.
pub(super) fn json_column<T: DeserializeOwned>(
    row: &rusqlite::Row<'_>,
    idx: usize,
) -> rusqlite::Result<T> {
    let text: String = row.get(idx)?;
    serde_json::from_str(&text)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, e.into()))
}

/// Reads a nullable JSON text column.
pub(super) fn opt_json_column<T: DeserializeOwned>(
    row: &rusqlite::Row<'_>,
    idx: usize,
) -> rusqlite::Result<Option<T>> {
    match row.get_ref(idx)? {
        rusqlite::types::ValueRef::Null => Ok(None),
        _ => json_column(row, idx).map(Some),
    }
}

/// An enum's API name (`MQTT_ENABLED`), the form its column holds.
pub(super) fn enum_name<T: Serialize>(value: &T) -> Result<String, StoreError> {
    match serde_json::to_value(value).map_err(backend)? {
        serde_json::Value::String(name) => Ok(name),
        other => Err(backend(format!("enum serialised as {other}, not a name"))),
    }
}

/// Reads an enum stored by its API name.
pub(super) fn enum_column<T: DeserializeOwned>(
    row: &rusqlite::Row<'_>,
    idx: usize,
) -> rusqlite::Result<T> {
    let name: String = row.get(idx)?;
    serde_json::from_value(serde_json::Value::String(name))
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, e.into()))
}

/// Reads a nullable enum column.
pub(super) fn opt_enum_column<T: DeserializeOwned>(
    row: &rusqlite::Row<'_>,
    idx: usize,
) -> rusqlite::Result<Option<T>> {
    match row.get_ref(idx)? {
        rusqlite::types::ValueRef::Null => Ok(None),
        _ => enum_column(row, idx).map(Some),
    }
}

/// An optional enum as its API name, for a nullable column.
pub(super) fn opt_enum_name<T: Serialize>(value: Option<&T>) -> Result<Option<String>, StoreError> {
    value.map(enum_name).transpose()
}

/// The SQL `LIMIT` for "at most `limit`, 0 meaning all": SQLite reads -1 as no limit.
pub(super) fn sql_limit(limit: usize) -> i64 {
    match limit {
        0 => -1,
        n => i64::try_from(n).unwrap_or(i64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_times_drop_only_the_nanoseconds() {
        let time = Timestamp::new(1_700_000_000, 123_456_789).unwrap();
        assert_eq!(
            truncate(time),
            Timestamp::new(1_700_000_000, 123_456_000).unwrap()
        );
        assert_eq!(micros(truncate(time)), micros(time));
    }
}
