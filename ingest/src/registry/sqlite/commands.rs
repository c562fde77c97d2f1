//! Queued commands in the SQLite store: `device_commands` rows keyed by device and a per-device
//! id. Callers resolve the device first, in the same write transaction, so the queue's bound is
//! checked and the next id taken in one step.

use jiff::Timestamp;
use rusqlite::{Row, Transaction};

use super::codec::{micros, required_time, time_column, truncate};
use crate::registry::{
    NewCommand, QueuedCommand, Resource, StoreError, StoreResult, commands_to_drop, next_command_id,
};

/// Adds `command` to the device's queue, dropping the oldest finished ones beyond the kept
/// number; `QueueFull` (naming `describe`) when the pending ones fill the queue.
pub(super) fn queue(
    tx: &Transaction<'_>,
    device_pk: i64,
    command: NewCommand,
    now: Timestamp,
    describe: impl FnOnce() -> Resource,
) -> StoreResult<QueuedCommand> {
    let kept = list(tx, device_pk)?;
    let Some(dropped) = commands_to_drop(&kept, now) else {
        return Err(StoreError::QueueFull(describe()));
    };
    let mut delete =
        tx.prepare_cached("DELETE FROM device_commands WHERE device_pk = ?1 AND id = ?2")?;
    for id in dropped {
        delete.execute((device_pk, id as i64))?;
    }
    let queued = QueuedCommand {
        id: next_command_id(&kept),
        subfolder: command.subfolder,
        binary_data: command.data,
        queue_time: truncate(now),
        expire_time: truncate(command.expire_time),
        deliver_time: None,
    };
    tx.execute(
        "INSERT INTO device_commands \
         (device_pk, id, subfolder, binary_data, queue_time, expire_time) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        (
            device_pk,
            queued.id as i64,
            queued.subfolder.as_deref(),
            &queued.binary_data,
            micros(queued.queue_time),
            micros(queued.expire_time),
        ),
    )?;
    Ok(queued)
}

/// The device's kept commands, oldest first.
pub(super) fn list(tx: &Transaction<'_>, device_pk: i64) -> StoreResult<Vec<QueuedCommand>> {
    let mut stmt = tx.prepare_cached(
        "SELECT id, subfolder, binary_data, queue_time, expire_time, deliver_time \
         FROM device_commands WHERE device_pk = ?1 ORDER BY id",
    )?;
    let rows = stmt.query_map([device_pk], from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Marks the undelivered commands up to id `up_to` delivered at `now`.
pub(super) fn mark_delivered(
    tx: &Transaction<'_>,
    device_pk: i64,
    up_to: u64,
    now: Timestamp,
) -> StoreResult<usize> {
    let up_to = i64::try_from(up_to).unwrap_or(i64::MAX);
    Ok(tx.execute(
        "UPDATE device_commands SET deliver_time = ?3 \
         WHERE device_pk = ?1 AND id <= ?2 AND deliver_time IS NULL",
        (device_pk, up_to, micros(now)),
    )?)
}

fn from_row(row: &Row<'_>) -> rusqlite::Result<QueuedCommand> {
    Ok(QueuedCommand {
        id: row.get::<_, i64>(0)? as u64,
        subfolder: row.get(1)?,
        binary_data: row.get(2)?,
        queue_time: required_time(row, 3)?,
        expire_time: required_time(row, 4)?,
        deliver_time: time_column(row, 5)?,
    })
}
