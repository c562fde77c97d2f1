//! Queued commands over MQTT (an extension beside IoT Core): once a device subscribes to
//! `/devices/{d}/commands/#`, the commands an operator queued for it with a `ttl` while it was
//! away are sent to it, oldest first, one at a time, through the same path as a live command (the
//! subscription's QoS; at QoS 1 resent until PUBACK). Each is recorded as delivered once the
//! connection says the device has it, and the queue is read again, so a command queued meanwhile
//! follows. Delivery stops at the first command that does not reach the device (the connection
//! closed, no PUBACK in time); the rest stay queued for the next subscription or HTTP fetch.

use std::sync::Arc;

use bytes::Bytes;
use shared::DeviceRef;

use crate::bridge::DeviceSession;
use crate::c2d::Delivery;

/// Sends the device's queued commands to its connection in the background.
pub(super) fn deliver(session: Arc<DeviceSession>, delivery: Delivery) {
    tokio::spawn(async move {
        let device = session.device();
        let by_id = DeviceRef::Id(device.id.clone());
        let mut ack = None;
        loop {
            // A refusal here (the store unreachable) is counted and kept as the device's last
            // error by the session; the commands stay queued.
            let Ok(pending) = session.pending_commands(ack).await else {
                return;
            };
            let Some(next) = pending.into_iter().next() else {
                return;
            };
            let data = Bytes::from(next.binary_data);
            match delivery
                .send_command(&device.registry, &by_id, next.subfolder, data)
                .await
            {
                Ok(()) => ack = Some(next.id),
                Err(failure) => {
                    tracing::debug!(device = %device.id, ?failure, "queued command not delivered; it stays queued");
                    return;
                }
            }
        }
    });
}
