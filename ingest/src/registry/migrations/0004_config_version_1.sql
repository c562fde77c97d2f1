-- Schema version 4: every device has config version 1 from its creation, as in IoT Core.
--
-- Devices created before this version without config data had no config at all; they get an
-- empty version 1 dated at their creation, so every device reads the same way.

INSERT INTO device_configs (device_pk, version, binary_data, cloud_update_time)
SELECT d.pk, 1, X'', d.create_time
FROM devices d
WHERE NOT EXISTS (SELECT 1 FROM device_configs c WHERE c.device_pk = d.pk);
