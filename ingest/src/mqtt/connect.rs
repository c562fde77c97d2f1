//! The CONNECT: the first packet of every connection, and the only one that may come before the
//! device is proved. Client id = the full device path (by id or numeric id), password = the
//! device's JWT, username ignored, MQTT 3.1.1 only. A refusal is a CONNACK code chosen from the
//! bridge's answer (4: the token; 5: not allowed; 3: try later) and then the connection closes;
//! the cause, in the same words as HTTP's, becomes the device's last error.

use rumqttc::mqttbytes::Protocol as Level;
use rumqttc::mqttbytes::v4::{ConnAck, Connect, ConnectReturnCode, Packet};
use shared::{Code, DeviceName};

use crate::bridge::{Bridge, DeviceSession, Protocol, Refusal};

/// A CONNECT that was let in.
#[derive(Debug)]
pub(crate) struct Admitted {
    /// The proved device.
    pub session: DeviceSession,
    /// The token it proved itself with, kept to check it again when the device changes.
    pub token: String,
    /// Seconds of keepalive the client asked for (0: none).
    pub keep_alive: u16,
}

/// A CONNECT that was not: the CONNACK code to send.
#[derive(Debug)]
pub(crate) struct Refused {
    pub code: ConnectReturnCode,
    pub refusal: Refusal,
}

/// Proves the device a CONNECT names.
pub(crate) async fn admit(bridge: &Bridge, connect: Connect) -> Result<Admitted, Refused> {
    if connect.protocol != Level::V4 {
        return Err(unproven(
            bridge,
            ConnectReturnCode::RefusedProtocolVersion,
            Refusal::new(
                Code::InvalidArgument,
                "mqtt_protocol_level",
                "only MQTT 3.1.1 (protocol level 4) is served, as by IoT Core",
            ),
        ));
    }
    let name = DeviceName::parse(&connect.client_id).map_err(|err| {
        unproven(
            bridge,
            ConnectReturnCode::BadClientId,
            Refusal::new(
                Code::InvalidArgument,
                "mqtt_client_id",
                format!(
                    "the client id must be the device's full path, \
                     projects/{{project}}/locations/{{region}}/registries/{{registry}}/devices/{{device}}: {err}"
                ),
            ),
        )
    })?;
    let token = connect
        .login
        .map(|login| login.password)
        .filter(|password| !password.is_empty())
        .ok_or_else(|| {
            unproven(
                bridge,
                ConnectReturnCode::BadUserNamePassword,
                Refusal::new(
                    Code::Unauthenticated,
                    "missing_token",
                    "the CONNECT has no password; the password must be a JWT signed by the \
                     device's private key (the username is ignored)",
                ),
            )
        })?;
    let now = bridge.clock().now().as_second();
    let session = bridge
        .admit(Protocol::Mqtt, &name, &token, now)
        .await
        .map_err(|refusal| Refused {
            code: return_code(&refusal),
            refusal,
        })?;
    if connect.last_will.is_some() {
        let refusal = session.refuse(
            Code::InvalidArgument,
            "mqtt_last_will",
            "a last will is not supported, as in IoT Core; connect without one",
        );
        return Err(Refused {
            code: ConnectReturnCode::NotAuthorized,
            refusal,
        });
    }
    Ok(Admitted {
        session,
        token,
        keep_alive: connect.keep_alive,
    })
}

/// The CONNACK for a refusal of the bridge: 4 for anything wrong with the token, 5 for a device
/// that may not connect (unknown, blocked, MQTT switched off), 3 when the service cannot check
/// now and the device should retry.
pub(crate) fn return_code(refusal: &Refusal) -> ConnectReturnCode {
    match refusal.code {
        Code::Unauthenticated => ConnectReturnCode::BadUserNamePassword,
        Code::PermissionDenied | Code::NotFound | Code::InvalidArgument => {
            ConnectReturnCode::NotAuthorized
        }
        _ => ConnectReturnCode::ServiceUnavailable,
    }
}

/// A CONNACK packet.
pub(crate) fn connack(code: ConnectReturnCode) -> Packet {
    Packet::ConnAck(ConnAck::new(code, false))
}

fn unproven(bridge: &Bridge, code: ConnectReturnCode, refusal: Refusal) -> Refused {
    bridge.note_refusal(Protocol::Mqtt, &refusal);
    Refused { code, refusal }
}
