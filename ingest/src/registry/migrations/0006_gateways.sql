-- Schema version 6: gateways, as IoT Core's.
--
-- devices.gateway_*       a device's gatewayConfig: its type and auth method (API enum names,
--                         NULL when not given) and the gateway it last spoke through.
-- gateway_bindings        which devices are bound to which gateway of the same registry. A device
--                         with bindings cannot be deleted (RESTRICT); the store checks first so it
--                         can say how many bindings stand in the way.

ALTER TABLE devices ADD COLUMN gateway_type TEXT;
ALTER TABLE devices ADD COLUMN gateway_auth_method TEXT;
ALTER TABLE devices ADD COLUMN last_accessed_gateway_id TEXT;
ALTER TABLE devices ADD COLUMN last_accessed_gateway_time INTEGER;

CREATE TABLE gateway_bindings (
    gateway_pk  INTEGER NOT NULL REFERENCES devices (pk) ON DELETE RESTRICT,
    device_pk   INTEGER NOT NULL REFERENCES devices (pk) ON DELETE RESTRICT,
    PRIMARY KEY (gateway_pk, device_pk)
) STRICT, WITHOUT ROWID;

-- "Which gateways is this device bound to" walks the other way.
CREATE INDEX gateway_bindings_by_device ON gateway_bindings (device_pk, gateway_pk);
