-- Schema version 1 of the SQLite registry store.
--
-- registries       one row per registry, unique by (project, location, id). Notification configs
--                  are JSON text in the admin API's camelCase shape; enum switches and the log
--                  level are their API names (`MQTT_ENABLED`, `DEBUG`).
-- devices          one row per device, unique by (registry, id); `num_id` is unique across the
--                  whole store. Credentials and metadata are JSON text. Every time is an integer
--                  count of microseconds since the Unix epoch (Firestore's precision too).
--                  A registry cannot be deleted while it has devices (RESTRICT); the store checks
--                  first so it can say how many remain.
-- device_configs   the newest 10 config versions of each device, keyed by (device, version).
-- device_states    the newest 10 states of each device; `pk` is the insertion order, which
--                  decides "latest" even if two instances' clocks disagree.
--
-- Configs and states go with their device (ON DELETE CASCADE). Tables are STRICT so a bug that
-- writes text where a number belongs fails loudly instead of being stored.

CREATE TABLE registries (
    pk                          INTEGER PRIMARY KEY,
    project                     TEXT    NOT NULL,
    location                    TEXT    NOT NULL,
    id                          TEXT    NOT NULL,
    event_notification_configs  TEXT    NOT NULL DEFAULT '[]',
    state_notification_config   TEXT,
    mqtt_enabled_state          TEXT    NOT NULL,
    http_enabled_state          TEXT    NOT NULL,
    log_level                   TEXT,
    create_time                 INTEGER NOT NULL,
    UNIQUE (project, location, id)
) STRICT;

CREATE TABLE devices (
    pk                      INTEGER PRIMARY KEY,
    registry_pk             INTEGER NOT NULL REFERENCES registries (pk) ON DELETE RESTRICT,
    id                      TEXT    NOT NULL,
    num_id                  INTEGER NOT NULL UNIQUE,
    credentials             TEXT    NOT NULL DEFAULT '[]',
    blocked                 INTEGER NOT NULL DEFAULT 0,
    metadata                TEXT    NOT NULL DEFAULT '{}',
    log_level               TEXT,
    create_time             INTEGER NOT NULL,
    last_heartbeat_time     INTEGER,
    last_event_time         INTEGER,
    last_state_time         INTEGER,
    last_config_ack_time    INTEGER,
    last_config_send_time   INTEGER,
    last_error_time         INTEGER,
    last_error_code         INTEGER,
    last_error_message      TEXT,
    UNIQUE (registry_pk, id)
) STRICT;

CREATE TABLE device_configs (
    device_pk           INTEGER NOT NULL REFERENCES devices (pk) ON DELETE CASCADE,
    version             INTEGER NOT NULL,
    binary_data         BLOB    NOT NULL,
    cloud_update_time   INTEGER NOT NULL,
    device_ack_time     INTEGER,
    PRIMARY KEY (device_pk, version)
) STRICT, WITHOUT ROWID;

CREATE TABLE device_states (
    pk          INTEGER PRIMARY KEY,
    device_pk   INTEGER NOT NULL REFERENCES devices (pk) ON DELETE CASCADE,
    update_time INTEGER NOT NULL,
    binary_data BLOB    NOT NULL
) STRICT;

-- Latest-state lookups and pruning walk one device's states in insertion order.
CREATE INDEX device_states_by_device ON device_states (device_pk, pk);
