-- Schema version 3: queued commands, an extension beside IoT Core's API.
--
-- device_commands  commands sent with a `ttl` to a device that was not connected and subscribed,
--                  kept until the device has them (`deliver_time`) or `expire_time` passes; at most
--                  50 pending and 10 finished per device (the store drops the oldest finished
--                  first). `id` grows per device and is what the device acknowledges up to. Times
--                  are microseconds since the Unix epoch. They go with their device.

CREATE TABLE device_commands (
    device_pk       INTEGER NOT NULL REFERENCES devices (pk) ON DELETE CASCADE,
    id              INTEGER NOT NULL,
    subfolder       TEXT,
    binary_data     BLOB    NOT NULL,
    queue_time      INTEGER NOT NULL,
    expire_time     INTEGER NOT NULL,
    deliver_time    INTEGER,
    PRIMARY KEY (device_pk, id)
) STRICT, WITHOUT ROWID;
