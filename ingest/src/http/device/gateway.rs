//! IoT Core's `gatewayInfo` on the device API. A request may say it is a gateway acting for one
//! of its devices (`delegatedDeviceId`: the path and token are the gateway's) or a device that
//! came through a gateway (`gatewayId`: the path and token are the device's own). `publishEvent`
//! and `setState` carry it in the body (`gatewayInfo` or `gateway_info`); `GET …/config` and
//! `…/commands` as query parameters (`gatewayInfo.delegatedDeviceId`,
//! `gateway_info.gateway_id` …). It is a oneof: both fields set, or one that is not a device id,
//! is a `400` naming the field; neither set (or `{}`) is a plain device request, served as ever.
//!
//! The caller is always admitted first with its own token on its own path, so a bad token is
//! refused before any gateway is looked at; the [`Bridge`] then decides whether the gateway may
//! speak for the device, and the operation runs on the session it hands back, whose bookkeeping
//! records the gateway as the device's `lastAccessedGatewayId`. Over HTTP a gateway has no place
//! to put the delegated device's own token, so a gateway whose `gatewayAuthMethod` needs one is
//! refused for `delegatedDeviceId`, and told what works instead.

use shared::device_api::GatewayInfo;
use shared::{Code, DeviceRef};

use super::answer::{DeviceApiError, HttpRefusal};
use crate::bridge::{Bridge, DeviceSession, Protocol, Refusal};
use crate::http::request::Query;

/// Who the request speaks for, when `gatewayInfo` says anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Via {
    /// The caller is a gateway acting for this device.
    Delegated(DeviceRef),
    /// The caller is the device itself, which came through this gateway.
    Through(DeviceRef),
}

const DELEGATED: &str = "gatewayInfo.delegatedDeviceId";
const GATEWAY: &str = "gatewayInfo.gatewayId";

/// Reads `gatewayInfo` from a body (`None`: absent).
pub(super) fn from_body(info: Option<&GatewayInfo>) -> Result<Option<Via>, HttpRefusal> {
    info.map_or(Ok(None), via)
}

/// Reads `gatewayInfo.*` from a query string, in either spelling.
pub(super) fn from_query(query: Option<&str>) -> Result<Option<Via>, HttpRefusal> {
    let query = Query::parse(query);
    via(&GatewayInfo {
        delegated_device_id: query
            .get("gatewayInfo.delegatedDeviceId")
            .map(str::to_owned),
        gateway_id: query.get("gatewayInfo.gatewayId").map(str::to_owned),
    })
}

/// The oneof, checked: at most one field, naming a device by id or numeric id.
fn via(info: &GatewayInfo) -> Result<Option<Via>, HttpRefusal> {
    // proto3: an empty string is the field left unset.
    let set = |value: &Option<String>| value.clone().filter(|v| !v.is_empty());
    match (set(&info.delegated_device_id), set(&info.gateway_id)) {
        (None, None) => Ok(None),
        (Some(device), None) => Ok(Some(Via::Delegated(device_ref(DELEGATED, &device)?))),
        (None, Some(gateway)) => Ok(Some(Via::Through(device_ref(GATEWAY, &gateway)?))),
        (Some(_), Some(_)) => Err(HttpRefusal::invalid(
            "bad_gateway_info",
            format!(
                "gatewayInfo: set one of {DELEGATED} (a gateway acting for a device, with the \
                 gateway's token on the gateway's path) or {GATEWAY} (a device with its own \
                 token that came through a gateway), not both"
            ),
        )),
    }
}

fn device_ref(field: &str, value: &str) -> Result<DeviceRef, HttpRefusal> {
    DeviceRef::parse(value).map_err(|err| {
        HttpRefusal::invalid(
            "bad_gateway_info",
            format!("{field}: {err}; name the device by its id or numeric id"),
        )
    })
}

/// The session the request's operation runs on: the caller's own without `gatewayInfo`, else
/// the one the bridge admits through the gateway. A refusal is already counted and kept by the
/// bridge.
pub(super) async fn acting(
    bridge: &Bridge,
    caller: DeviceSession,
    via: Option<Via>,
) -> Result<DeviceSession, DeviceApiError> {
    let Some(via) = via else {
        return Ok(caller);
    };
    let proved = caller.device();
    let admitted = match via {
        Via::Delegated(device) => {
            let now = bridge.clock().now().as_second();
            bridge
                .admit_delegated(Protocol::Http, proved, &device, None, now)
                .await
                .map_err(|refusal| in_http_words(refusal, &caller, &device))
        }
        Via::Through(gateway) => {
            bridge
                .admit_through_gateway(Protocol::Http, proved, &gateway)
                .await
        }
    };
    Ok(admitted?)
}

/// The bridge asks for the device's token in MQTT's words (an attach message); an HTTP request
/// has no place for it, so the owner is told what does work over HTTP instead.
fn in_http_words(mut refusal: Refusal, gateway: &DeviceSession, device: &DeviceRef) -> Refusal {
    if refusal.code == Code::Unauthenticated && refusal.reason == "gateway_device_token_missing" {
        refusal.message = format!(
            "gateway `{}` has a gatewayAuthMethod that needs device `{device}`'s own JWT, and a \
             request with {DELEGATED} carries only the gateway's: send as the device, on its \
             own path with its own JWT, naming the gateway in {GATEWAY}, or set the gateway's \
             gatewayAuthMethod to ASSOCIATION_ONLY",
            gateway.device().id
        );
    }
    refusal
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(delegated: Option<&str>, gateway: Option<&str>) -> GatewayInfo {
        GatewayInfo {
            delegated_device_id: delegated.map(str::to_owned),
            gateway_id: gateway.map(str::to_owned),
        }
    }

    #[test]
    fn the_oneof_names_a_device_by_id_or_number() {
        let id = |text: &str| DeviceRef::parse(text).unwrap();
        assert_eq!(via(&info(None, None)).unwrap(), None);
        assert_eq!(via(&info(Some(""), Some(""))).unwrap(), None);
        assert_eq!(
            via(&info(Some("dev-1"), None)).unwrap(),
            Some(Via::Delegated(id("dev-1")))
        );
        assert_eq!(
            via(&info(Some(""), Some("123"))).unwrap(),
            Some(Via::Through(id("123")))
        );
        for bad in [info(Some("dev-1"), Some("gw-1")), info(Some("-x"), None)] {
            assert!(via(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_query_reads_both_spellings() {
        let read = |query: &str| from_query(Some(query)).unwrap();
        let expected = Some(Via::Delegated(DeviceRef::parse("dev-1").unwrap()));
        assert_eq!(read("gatewayInfo.delegatedDeviceId=dev-1"), expected);
        assert_eq!(read("gateway_info.delegated_device_id=dev-1"), expected);
        assert_eq!(
            read("local_version=2&gateway_info.gateway_id=gw-1"),
            Some(Via::Through(DeviceRef::parse("gw-1").unwrap()))
        );
        assert_eq!(read("local_version=2"), None);
        assert!(
            from_query(Some(
                "gatewayInfo.gatewayId=a&gatewayInfo.delegatedDeviceId=b"
            ))
            .is_err()
        );
    }
}
