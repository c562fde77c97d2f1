//! Presence in the SQLite store: a `presence` row per claimed device and an `instances` row per
//! lease. With one `ingest serve` per file there is one instance, but the rules are the fleet's:
//! generations only grow, and a claim counts only while its instance's lease is live.

use jiff::Timestamp;
use rusqlite::{OptionalExtension as _, Transaction};

use super::codec::{micros, required_time};
use crate::registry::{Presence, StoreResult};

/// Takes the device for `instance`; returns the new generation and the claim it replaced.
pub(super) fn claim(
    tx: &Transaction<'_>,
    num_id: i64,
    instance: &str,
    now: Timestamp,
) -> StoreResult<(u64, Option<Presence>)> {
    let previous: Option<(Option<Presence>, u64)> = tx
        .query_row(
            "SELECT instance, since, generation, config, commands FROM presence WHERE num_id = ?1",
            [num_id],
            |row| {
                let generation: i64 = row.get(2)?;
                let claim = match row.get::<_, Option<String>>(0)? {
                    Some(instance) => Some(Presence {
                        instance,
                        since: required_time(row, 1)?,
                        generation: generation as u64,
                        config: row.get(3)?,
                        commands: row.get(4)?,
                    }),
                    None => None,
                };
                Ok((claim, generation as u64))
            },
        )
        .optional()?;
    let generation = previous.as_ref().map_or(0, |(_, g)| *g) + 1;
    tx.execute(
        "INSERT INTO presence (num_id, instance, since, generation) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (num_id) DO UPDATE SET instance = ?2, since = ?3, generation = ?4, \
         config = 0, commands = 0",
        (num_id, instance, micros(now), generation as i64),
    )?;
    Ok((generation, previous.and_then(|(claim, _)| claim)))
}

/// Sets the subscriptions of claim `generation`, if it is still the device's.
pub(super) fn subscriptions(
    tx: &Transaction<'_>,
    num_id: i64,
    generation: u64,
    config: bool,
    commands: bool,
) -> StoreResult<()> {
    tx.execute(
        "UPDATE presence SET config = ?3, commands = ?4 \
         WHERE num_id = ?1 AND generation = ?2 AND instance IS NOT NULL",
        (num_id, generation as i64, config, commands),
    )?;
    Ok(())
}

/// Releases claim `generation`, if it is still the device's.
pub(super) fn release(tx: &Transaction<'_>, num_id: i64, generation: u64) -> StoreResult<()> {
    tx.execute(
        "UPDATE presence SET instance = NULL, config = 0, commands = 0 \
         WHERE num_id = ?1 AND generation = ?2",
        (num_id, generation as i64),
    )?;
    Ok(())
}

/// The device's claim, if its instance's lease is live at `now`.
pub(super) fn get(
    tx: &Transaction<'_>,
    num_id: i64,
    now: Timestamp,
) -> StoreResult<Option<Presence>> {
    let found = tx
        .query_row(
            "SELECT p.instance, p.since, p.generation, p.config, p.commands \
             FROM presence p JOIN instances i ON i.id = p.instance \
             WHERE p.num_id = ?1 AND i.lease_until > ?2",
            (num_id, micros(now)),
            |row| {
                Ok(Presence {
                    instance: row.get(0)?,
                    since: required_time(row, 1)?,
                    generation: row.get::<_, i64>(2)? as u64,
                    config: row.get(3)?,
                    commands: row.get(4)?,
                })
            },
        )
        .optional()?;
    Ok(found)
}

/// Sets `instance`'s lease to end at `until`.
pub(super) fn renew(tx: &Transaction<'_>, instance: &str, until: Timestamp) -> StoreResult<()> {
    tx.execute(
        "INSERT INTO instances (id, lease_until) VALUES (?1, ?2) \
         ON CONFLICT (id) DO UPDATE SET lease_until = ?2",
        (instance, micros(until)),
    )?;
    Ok(())
}

/// Ends `instance`'s lease and releases its claims.
pub(super) fn end(tx: &Transaction<'_>, instance: &str) -> StoreResult<()> {
    tx.execute("DELETE FROM instances WHERE id = ?1", [instance])?;
    tx.execute(
        "UPDATE presence SET instance = NULL, config = 0, commands = 0 WHERE instance = ?1",
        [instance],
    )?;
    Ok(())
}
