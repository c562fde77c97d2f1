-- Schema version 2: presence, which MQTT connection holds each device.
--
-- instances   one row per running `ingest serve` that has held a connection: its lease. A claim
--             counts only while its instance's `lease_until` (microseconds since the epoch) is
--             in the future, so the claims of an instance that died lapse with its lease.
-- presence    one row per device that has ever been claimed, by numeric id. `instance` is NULL
--             once the claim is released; the row stays so that `generation` only grows and a
--             stale instance cannot touch a newer claim. Goes with its device.

CREATE TABLE instances (
    id          TEXT    PRIMARY KEY,
    lease_until INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE presence (
    num_id      INTEGER PRIMARY KEY REFERENCES devices (num_id) ON DELETE CASCADE,
    instance    TEXT,
    since       INTEGER NOT NULL,
    generation  INTEGER NOT NULL,
    config      INTEGER NOT NULL DEFAULT 0,
    commands    INTEGER NOT NULL DEFAULT 0
) STRICT;
