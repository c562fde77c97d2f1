//! A gateway speaking for another device, as IoT Core's gateways did: a gateway (a device whose
//! `gatewayConfig.gatewayType` is `GATEWAY`) that proved itself may act for a device of its
//! registry when its `gatewayAuthMethod` allows: bound to it (`ASSOCIATION_ONLY`, the default),
//! holding the device's own token (`DEVICE_AUTH_TOKEN_ONLY`), or both. The device is then served
//! exactly as if it had come itself (routing, attributes, bookkeeping), with the gateway
//! recorded as its `lastAccessedGatewayId`. The checks read the store, not the token cache: they
//! happen once per MQTT attach, and a binding just removed must count at once.

use std::sync::{Arc, OnceLock};

use shared::resources::{Device, GatewayConfig};
use shared::{Code, DeviceName, DeviceRef, NumId};
use shared::{DeviceId, RegistryName};

use super::error::BridgeError;
use super::{Bridge, DeviceSession, Protocol, Refusal};
use crate::auth::AuthenticatedDevice;
use crate::registry::StoreError;

impl Bridge {
    /// Lets `device` in for `protocol` through `gateway`, already admitted, at `now` (Unix
    /// seconds), with the device's own token when the gateway's auth method needs one. A refusal
    /// is counted and kept as the gateway's last error: the gateway is the one that must act.
    pub async fn admit_delegated(
        &self,
        protocol: Protocol,
        gateway: &AuthenticatedDevice,
        device: &DeviceRef,
        device_token: Option<&str>,
        now: i64,
    ) -> Result<DeviceSession, Refusal> {
        match self
            .delegate(protocol, gateway, device, device_token, now)
            .await
        {
            Ok(delegated) => Ok(DeviceSession::new(
                self.clone(),
                Arc::new(delegated),
                protocol,
            )),
            Err(refusal) => {
                self.inner.metrics.refused(refusal.reason, protocol.label());
                self.note_error(&gateway.registry, &gateway.id, &refusal);
                Err(refusal)
            }
        }
    }

    /// Records that `device`, admitted for `protocol` with its own token, came through `gateway`
    /// (by id or numeric id): the gateway must exist in the device's registry, be a gateway and
    /// not be blocked, and have the device bound when its `gatewayAuthMethod` needs binding (the
    /// device's own token, already proved, meets any need for one). The session returned records
    /// the gateway as the device's `lastAccessedGatewayId`. Unlike [`Bridge::admit_delegated`]
    /// the device is neither proved nor rate-counted again, and a refusal is kept as the
    /// device's last error: the device is the one that named the gateway.
    pub async fn admit_through_gateway(
        &self,
        protocol: Protocol,
        device: &AuthenticatedDevice,
        gateway: &DeviceRef,
    ) -> Result<DeviceSession, Refusal> {
        match self.check_gateway_of(device, gateway).await {
            Ok(gateway_id) => {
                let through = Arc::new(AuthenticatedDevice {
                    via_gateway: gateway_id,
                    ..device.clone()
                });
                Ok(DeviceSession::new(self.clone(), through, protocol))
            }
            Err(refusal) => {
                self.refused(protocol, device, &refusal);
                Err(refusal)
            }
        }
    }

    /// The id of the gateway `device` says it came through, once the checks above pass.
    async fn check_gateway_of(
        &self,
        device: &AuthenticatedDevice,
        gateway: &DeviceRef,
    ) -> Result<Option<DeviceId>, Refusal> {
        let registry = &device.registry;
        let stored = match self.inner.registry.get_device(registry, gateway).await {
            Ok(stored) => stored,
            Err(StoreError::NotFound(_)) => {
                return Err(Refusal::new(
                    Code::NotFound,
                    "gateway_unknown",
                    format!(
                        "gateway `{gateway}` does not exist in registry `{registry}`; device `{}` \
                         can only come through a gateway of its own registry",
                        device.id
                    ),
                ));
            }
            Err(e) => return Err(store_refusal(e)),
        };
        if stored.num_id == Some(device.num_id.0) {
            return Err(Refusal::new(
                Code::FailedPrecondition,
                "gateway_is_self",
                format!(
                    "device `{}` names itself as the gateway it came through; name the gateway \
                     that forwarded the request, or leave the gateway out",
                    device.id
                ),
            ));
        }
        let config = stored.gateway_config.unwrap_or_default();
        if !config.is_gateway() {
            return Err(Refusal::new(
                Code::FailedPrecondition,
                "not_a_gateway",
                format!(
                    "device `{gateway}` is not a gateway (its gatewayConfig.gatewayType is not \
                     GATEWAY), so device `{}` cannot come through it",
                    device.id
                ),
            ));
        }
        if stored.blocked {
            return Err(Refusal::new(
                Code::PermissionDenied,
                "gateway_blocked",
                format!(
                    "gateway `{gateway}` is blocked, so no device may come through it; unblock \
                     it (ingest devices unblock) or send without it"
                ),
            ));
        }
        let method = config.auth_method();
        let gateway_num = NumId(stored.num_id.unwrap_or_default());
        if method.needs_binding()
            && !self
                .is_bound_to(registry, gateway_num, device.num_id)
                .await?
        {
            return Err(Refusal::new(
                Code::PermissionDenied,
                "gateway_not_bound",
                format!(
                    "device `{}` is not bound to gateway `{gateway}`, and the gateway's \
                     gatewayAuthMethod {} needs that: bind it with :bindDeviceToGateway \
                     (ingest gateways bind)",
                    device.id,
                    method.as_str()
                ),
            ));
        }
        Ok(stored.id)
    }

    async fn is_bound_to(
        &self,
        registry: &RegistryName,
        gateway: NumId,
        device: NumId,
    ) -> Result<bool, Refusal> {
        self.inner
            .registry
            .is_bound(registry, gateway, device)
            .await
            .map_err(store_refusal)
    }

    async fn delegate(
        &self,
        protocol: Protocol,
        gateway: &AuthenticatedDevice,
        device: &DeviceRef,
        device_token: Option<&str>,
        now: i64,
    ) -> Result<AuthenticatedDevice, Refusal> {
        let registry = &gateway.registry;
        let config = self.gateway_config(gateway).await?;
        let name = DeviceName {
            registry: registry.clone(),
            device: device.clone(),
        };
        let target = self.delegated_device(&name, gateway).await?;
        let num_id = NumId(target.num_id.unwrap_or_default());
        let method = config.auth_method();
        if method.needs_binding() && !self.bound(gateway, num_id).await? {
            return Err(Refusal::new(
                Code::PermissionDenied,
                "gateway_not_bound",
                format!(
                    "device `{name}` is not bound to gateway `{}`, and the gateway's \
                     gatewayAuthMethod {} needs that: bind it with :bindDeviceToGateway \
                     (ingest gateways bind)",
                    gateway.id,
                    method.as_str()
                ),
            ));
        }
        let token_exp = match (method.needs_device_token(), device_token) {
            (false, _) => gateway.token_exp,
            (true, Some(token)) => {
                let proved = self.inner.auth.authenticate(&name, token, now).await;
                proved
                    .map_err(|e| Refusal::from(BridgeError::Auth(e)))?
                    .token_exp
            }
            (true, None) => {
                return Err(Refusal::new(
                    Code::Unauthenticated,
                    "gateway_device_token_missing",
                    format!(
                        "gateway `{}` has gatewayAuthMethod {}: attach device `{}` with its own \
                         JWT, {{\"authorization\": \"<JWT>\"}}",
                        gateway.id,
                        method.as_str(),
                        name.device
                    ),
                ));
            }
        };
        let delegated = AuthenticatedDevice {
            registry: registry.clone(),
            id: target.id.clone().unwrap_or_else(|| gateway.id.clone()),
            num_id,
            token_exp,
            via_gateway: Some(gateway.id.clone()),
            attributes: OnceLock::new(),
        };
        self.check_admission(protocol, &delegated)
            .await
            .map_err(Refusal::from)?;
        Ok(delegated)
    }

    /// The gateway's `gatewayConfig`, refusing a device that is not a gateway.
    async fn gateway_config(
        &self,
        gateway: &AuthenticatedDevice,
    ) -> Result<GatewayConfig, Refusal> {
        let stored = self
            .inner
            .registry
            .get_device(&gateway.registry, &DeviceRef::Id(gateway.id.clone()))
            .await
            .map_err(store_refusal)?;
        let config = stored.gateway_config.unwrap_or_default();
        if !config.is_gateway() {
            return Err(Refusal::new(
                Code::FailedPrecondition,
                "not_a_gateway",
                format!(
                    "device `{}` is not a gateway (its gatewayConfig.gatewayType is not \
                     GATEWAY), so it cannot speak for other devices",
                    gateway.id
                ),
            ));
        }
        Ok(config)
    }

    /// The device a gateway speaks for: it must exist, not be blocked, and not be a gateway.
    async fn delegated_device(
        &self,
        name: &DeviceName,
        gateway: &AuthenticatedDevice,
    ) -> Result<Device, Refusal> {
        let device = match self
            .inner
            .registry
            .get_device(&name.registry, &name.device)
            .await
        {
            Ok(device) => device,
            Err(StoreError::NotFound(_)) => {
                return Err(Refusal::new(
                    Code::NotFound,
                    "gateway_unknown_device",
                    format!(
                        "device `{name}` does not exist in gateway `{}`'s registry",
                        gateway.id
                    ),
                ));
            }
            Err(e) => return Err(store_refusal(e)),
        };
        if device.blocked {
            return Err(Refusal::new(
                Code::PermissionDenied,
                "blocked",
                format!(
                    "device `{name}` is blocked; unblock it (ingest devices unblock) before a \
                     gateway speaks for it"
                ),
            ));
        }
        if device
            .gateway_config
            .as_ref()
            .is_some_and(GatewayConfig::is_gateway)
        {
            return Err(Refusal::new(
                Code::FailedPrecondition,
                "gateway_for_gateway",
                format!("`{name}` is a gateway itself; a gateway cannot speak for a gateway"),
            ));
        }
        Ok(device)
    }

    async fn bound(&self, gateway: &AuthenticatedDevice, device: NumId) -> Result<bool, Refusal> {
        self.inner
            .registry
            .is_bound(&gateway.registry, gateway.num_id, device)
            .await
            .map_err(store_refusal)
    }
}

fn store_refusal(err: StoreError) -> Refusal {
    Refusal::from(BridgeError::Store(err))
}

impl Bridge {
    /// Whether `device` is a gateway, as the registry says now.
    pub async fn is_gateway(&self, device: &AuthenticatedDevice) -> Result<bool, Refusal> {
        let stored = self
            .inner
            .registry
            .get_device(&device.registry, &DeviceRef::Id(device.id.clone()))
            .await
            .map_err(store_refusal)?;
        Ok(stored
            .gateway_config
            .as_ref()
            .is_some_and(GatewayConfig::is_gateway))
    }
}
