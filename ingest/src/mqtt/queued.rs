//! Queued commands over MQTT (an extension beside IoT Core): once a device subscribes to
//! `/devices/{d}/commands/#`, the commands an operator queued for it with a `ttl` while it was
//! away are sent to it, oldest first, one at a time, through the same path as a live command (the
//! subscription's QoS; at QoS 1 resent until PUBACK). Each is recorded as delivered once the
//! connection says the device has it, and the queue is read again, so a command queued meanwhile
//! follows. Delivery stops at the first command that does not reach the device (the connection
//! closed, no PUBACK in time); the rest stay queued for the next subscription or HTTP fetch.
//!
//! A connection has one such task at most, woken on each subscription and each time the admin
//! API queues a command for the device: a wake during a pass makes one more pass, so a command
//! queued while the device was subscribing is not left waiting, and no command goes out twice.

use std::sync::Arc;

use bytes::Bytes;
use shared::DeviceRef;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::bridge::DeviceSession;
use crate::c2d::Delivery;

/// A connection's queued-command task; it ends with the connection (when this is dropped).
pub(super) struct QueuedCommands {
    wake: Arc<Notify>,
    task: JoinHandle<()>,
}

impl QueuedCommands {
    /// Starts the task, asleep until [`QueuedCommands::wake`].
    pub(super) fn start(session: Arc<DeviceSession>, delivery: Delivery) -> Self {
        let wake = Arc::new(Notify::new());
        let task = tokio::spawn(run(session, delivery, wake.clone()));
        Self { wake, task }
    }

    /// Reads the queue and sends what is pending (once more, if a pass is under way).
    pub(super) fn wake(&self) {
        self.wake.notify_one();
    }
}

impl Drop for QueuedCommands {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(session: Arc<DeviceSession>, delivery: Delivery, wake: Arc<Notify>) {
    loop {
        wake.notified().await;
        deliver_pending(&session, &delivery).await;
    }
}

/// One pass: sends the pending commands one by one until none is left or one does not arrive.
async fn deliver_pending(session: &DeviceSession, delivery: &Delivery) {
    let device = session.device();
    let by_id = DeviceRef::Id(device.id.clone());
    let mut ack = None;
    loop {
        // A refusal here (the store unreachable) is counted and kept as the device's last error
        // by the session; the commands stay queued.
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
                tracing::debug!(device = %device.id, ?failure, "a queued command was not delivered; it stays queued");
                return;
            }
        }
    }
}
