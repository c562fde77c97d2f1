//! The gateway side of a connection, as IoT Core's MQTT bridge had it: a gateway publishes to
//! `/devices/{d}/attach` (with `{"authorization": "<d's JWT>"}` when its auth method needs the
//! device's token) to speak for device `d`, then uses `d`'s topics over its own connection;
//! `/devices/{d}/detach` ends that. An attach is answered with a PUBACK only when the bridge let
//! the device in; otherwise the refusal goes to the gateway's errors topic and the gateway stays
//! connected. An attached device holds the fleet's claim like a connected device, so configs
//! and commands reach it here, and a block, re-key or unbinding detaches it at once.

use std::sync::Arc;

use rumqttc::mqttbytes::v4::Publish;
use shared::{Code, DeviceRef};
use tokio::io::{AsyncRead, AsyncWrite};

use super::link::Link;
use super::{Close, Live};
use crate::bridge::{Protocol, Refusal};
use crate::c2d::Control;

impl<R, W> Live<R, W>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    /// A PUBLISH to `/devices/{device}/{rest}` for a device other than the connection's own:
    /// an attach or a detach, or a message for a device not attached. Only a gateway may do
    /// either; a plain device is refused as for any topic not its own.
    pub(super) async fn publish_as_gateway(
        &mut self,
        device: &str,
        rest: &str,
        publish: Publish,
        pkid: Option<u16>,
    ) -> Result<(), Close> {
        if !self.own_is_gateway().await? {
            let message = self
                .own
                .topics
                .publish(&publish.topic)
                .err()
                .unwrap_or_default();
            return Err(self.refuse(Code::InvalidArgument, "mqtt_topic", message));
        }
        match rest {
            "attach" => self.attach(device, &publish.payload, pkid).await,
            "detach" => {
                if let Some(at) = self.attached.iter().position(|l| l.topics.is_named(device)) {
                    let generation = self.attached[at].generation;
                    self.drop_link(generation).await;
                }
                self.settled(pkid, Ok(()), None);
                Ok(())
            }
            _ => {
                let refusal = self.own.session.refuse(
                    Code::FailedPrecondition,
                    "gateway_device_not_attached",
                    format!(
                        "gateway `{}` sent for device `{device}`, which it has not attached; \
                         publish to /devices/{device}/attach first",
                        self.own.id()
                    ),
                );
                self.settled(pkid, Err(refusal), Some(device.to_owned()));
                Ok(())
            }
        }
    }

    /// Whether the connection's own device is a gateway, read from the registry once.
    async fn own_is_gateway(&mut self) -> Result<bool, Close> {
        if let Some(known) = self.is_gateway {
            return Ok(known);
        }
        let bridge = self.own.session.bridge().clone();
        match bridge.is_gateway(self.own.session.device()).await {
            Ok(known) => {
                self.is_gateway = Some(known);
                Ok(known)
            }
            Err(refusal) => Err(Close::Because(refusal)),
        }
    }

    /// Attaches `device` when the bridge lets it in through this gateway; attaching a device
    /// attached already only acknowledges.
    async fn attach(
        &mut self,
        device: &str,
        payload: &[u8],
        pkid: Option<u16>,
    ) -> Result<(), Close> {
        if self.attached.iter().any(|l| l.topics.is_named(device)) {
            self.settled(pkid, Ok(()), None);
            return Ok(());
        }
        match self.admit_attached(device, payload).await {
            Ok(link) => {
                self.attached.push(link);
                self.settled(pkid, Ok(()), None);
            }
            Err(refusal) => self.settled(pkid, Err(refusal), Some(device.to_owned())),
        }
        Ok(())
    }

    async fn admit_attached(&mut self, device: &str, payload: &[u8]) -> Result<Link, Refusal> {
        let refuse = |code, reason, message: String| self.own.session.refuse(code, reason, message);
        let limit = self.shared.settings.max_attached_devices;
        if self.attached.len() >= limit {
            return Err(refuse(
                Code::ResourceExhausted,
                "gateway_attach_limit",
                format!(
                    "this gateway connection has {limit} devices attached, its limit (IoT \
                     Core's was 1,000); detach one first"
                ),
            ));
        }
        let token = attach_token(payload)
            .map_err(|why| refuse(Code::InvalidArgument, "gateway_attach_payload", why))?;
        let target = DeviceRef::parse(device).map_err(|e| {
            refuse(
                Code::InvalidArgument,
                "mqtt_topic",
                format!("`{device}` in an attach topic is not a device id: {e}"),
            )
        })?;
        let bridge = self.own.session.bridge().clone();
        let now = bridge.clock().now().as_second();
        let gateway = self.own.session.device();
        let session = bridge
            .admit_delegated(Protocol::Mqtt, gateway, &target, token.as_deref(), now)
            .await?;
        let admitted = session.device();
        let attachment = self
            .shared
            .fleet
            .connected(&admitted.registry, &admitted.id, admitted.num_id)
            .await;
        let (link, inbox) = Link::new(Arc::new(session), attachment, token);
        self.inboxes.push(inbox);
        Ok(link)
    }

    /// A delivery for an attached device: a config or command goes out on its topics; a change
    /// to it is checked again, detaching it when it no longer passes.
    pub(super) async fn attached_control(
        &mut self,
        generation: u64,
        control: Option<Control>,
    ) -> Result<(), Close> {
        if !self.attached.iter().any(|l| l.generation == generation) {
            // A detached device's claim ending.
            return Ok(());
        }
        match control {
            Some(Control::Config(config)) => self.send_config(generation, *config).await,
            Some(Control::Command(command)) => self.command(generation, *command).await,
            Some(Control::Queued) => {
                self.wake_queued(generation);
                Ok(())
            }
            Some(Control::Recheck) => {
                if let Err(refusal) = self.recheck_attached(generation).await {
                    let link = self.drop_link(generation).await;
                    let about = link.as_ref().map(Link::id);
                    self.tell(&refusal, None, about).await;
                }
                Ok(())
            }
            Some(Control::Replaced) | None => {
                if let Some(link) = self.drop_link(generation).await {
                    let refusal = Refusal::new(
                        Code::Aborted,
                        "mqtt_replaced",
                        format!(
                            "device `{}` connected elsewhere (or another gateway attached it); \
                             it is detached from this gateway",
                            link.id()
                        ),
                    );
                    self.tell(&refusal, None, Some(link.id())).await;
                }
                Ok(())
            }
        }
    }

    /// The attached device changed (blocked, re-keyed, unbound): it must pass again.
    async fn recheck_attached(&mut self, generation: u64) -> Result<(), Refusal> {
        let Some(link) = self.attached.iter().find(|l| l.generation == generation) else {
            return Ok(());
        };
        let bridge = self.own.session.bridge().clone();
        let now = bridge.clock().now().as_second();
        let target = DeviceRef::Id(link.session.device().id.clone());
        let token = link.token.clone();
        let gateway = self.own.session.device();
        bridge
            .admit_delegated(Protocol::Mqtt, gateway, &target, token.as_deref(), now)
            .await
            .map(drop)
    }

    /// Detaches link `generation`: its claim is released and its deliveries stop.
    async fn drop_link(&mut self, generation: u64) -> Option<Link> {
        let at = self
            .attached
            .iter()
            .position(|l| l.generation == generation)?;
        let link = self.attached.remove(at);
        let device = link.session.device();
        self.shared
            .fleet
            .disconnected(
                &device.registry,
                &device.id,
                device.num_id,
                link.claim(),
                true,
            )
            .await;
        Some(link)
    }
}

/// The device token in an attach payload: none for an empty payload, else
/// `{"authorization": "<JWT>"}` (the field may be absent).
fn attach_token(payload: &[u8]) -> Result<Option<String>, String> {
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let body: serde_json::Value = serde_json::from_slice(payload).map_err(|e| {
        format!("an attach payload is empty or {{\"authorization\": \"<device JWT>\"}}: {e}")
    })?;
    match body.get("authorization") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(token)) => Ok(Some(token.clone())),
        Some(_) => {
            Err("an attach payload's `authorization` must be the device's JWT, a string".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attach_payload_is_empty_or_carries_the_device_token() {
        assert_eq!(attach_token(b""), Ok(None));
        assert_eq!(attach_token(b"{}"), Ok(None));
        assert_eq!(
            attach_token(br#"{"authorization": "a.b.c"}"#),
            Ok(Some("a.b.c".into()))
        );
        assert!(attach_token(b"not json").is_err());
        assert!(attach_token(br#"{"authorization": 7}"#).is_err());
    }
}
