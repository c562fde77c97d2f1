//! MQTT over WebSocket: `GET /mqtt` on the device HTTP port, subprotocol `mqtt`, MQTT packets in
//! binary frames (a packet may be split across frames, or several packed into one). This is the
//! transport Cloud Run can host, since it serves HTTP and WebSockets but not raw TCP. The frames'
//! bytes are pumped into the same session loop the TCP listeners use, so the protocol is the
//! same in every detail.

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::BytesMut;
use shared::Code;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::MqttBridge;
use crate::http::error::ApiError;

/// Bytes buffered between the WebSocket and the session in each direction.
const PIPE: usize = 64 * 1024;

/// The `/mqtt` route.
pub fn router(mqtt: MqttBridge) -> Router {
    Router::new().route("/mqtt", get(upgrade)).with_state(mqtt)
}

async fn upgrade(State(mqtt): State<MqttBridge>, ws: WebSocketUpgrade) -> Response {
    let Some(permit) = mqtt.try_permit() else {
        return ApiError::new(
            Code::Unavailable,
            "the MQTT bridge is at its connection limit; retry later",
        )
        .into_response();
    };
    let max = mqtt.shared.settings.max_packet_bytes * 2;
    ws.protocols(["mqtt"])
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| async move {
            let deadline = tokio::time::Instant::now() + mqtt.connect_timeout();
            let (ours, theirs) = tokio::io::duplex(PIPE);
            let session = mqtt.clone();
            mqtt.track(async move { session.run(theirs, deadline, permit).await });
            pump(socket, ours).await;
        })
}

/// Moves bytes between the WebSocket and the session until either side ends.
async fn pump(mut socket: WebSocket, mut pipe: DuplexStream) {
    let mut out = BytesMut::with_capacity(4096);
    loop {
        tokio::select! {
            frame = socket.recv() => match frame {
                Some(Ok(Message::Binary(bytes))) => {
                    if pipe.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                // MQTT over WebSocket is binary frames only (MQTT 3.1.1 §6).
                Some(Ok(Message::Text(_) | Message::Close(_)) | Err(_)) | None => break,
            },
            read = pipe.read_buf(&mut out) => match read {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if socket.send(Message::Binary(out.split().freeze())).await.is_err() {
                        break;
                    }
                }
            },
        }
    }
    let _ = socket.send(Message::Close(None)).await;
}
