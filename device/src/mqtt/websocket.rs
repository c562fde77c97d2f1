//! MQTT over WebSocket (`transport = "mqtt+ws"`): the agent's MQTT session carried in binary
//! frames on `wss://HOST/mqtt` (subprotocol `mqtt`), which ingest serves on its HTTP port and is
//! the only MQTT a Cloud Run deployment has (Cloud Run takes HTTP and WebSockets, not raw TCP).
//!
//! rumqttc's own WebSocket transport would bring a second TLS set-up (async-tungstenite's rustls
//! with the aws-lc-rs provider, C code the agent keeps out) and a second tungstenite release. So
//! the agent opens the WebSocket itself — tungstenite over its own rustls (`ring`) and roots, the
//! same TLS as HTTPS — and hands rumqttc a Unix socket in a directory only this user can open,
//! relaying bytes between the two. The WebSocket is up before rumqttc connects, so a failure
//! (DNS, TCP, TLS, an HTTP answer instead of the upgrade) is reported as itself.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixListener, UnixStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// Where the MQTT-over-WebSocket endpoint is.
#[derive(Debug, Clone)]
pub struct WsEndpoint {
    /// `wss://HOST:PORT/mqtt` (or `ws://` for a plain local endpoint).
    pub url: String,
    /// TLS with the agent's roots, for `wss`.
    pub tls: Arc<rustls::ClientConfig>,
}

/// A WebSocket to the bridge, waiting to be relayed to rumqttc.
#[derive(Debug)]
pub struct Relay {
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Relay {
    /// The Unix socket rumqttc connects to (its `Transport::Unix`).
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

/// Opens the WebSocket (TCP, TLS when `wss`, the upgrade with subprotocol `mqtt`) and starts
/// relaying it to the first connection on a fresh Unix socket. `Err` says what failed, in words.
pub async fn open(endpoint: &WsEndpoint) -> Result<Relay, String> {
    let url = &endpoint.url;
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|err| format!("the WebSocket URL {url}: {err}"))?;
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
    let uri = request.uri();
    let secure = uri.scheme_str() == Some("wss");
    let host = uri.host().unwrap_or_default().to_owned();
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|err| format!("TCP to {host}:{port}: {err}"))?;
    let _ = tcp.set_nodelay(true);
    let dir = tempfile::Builder::new()
        .prefix("iotcore-mqtt-ws-")
        .tempdir()
        .map_err(|err| format!("a private directory for the relay socket: {err}"))?;
    let socket = dir.path().join("mqtt.sock");
    let listener = UnixListener::bind(&socket)
        .map_err(|err| format!("the relay socket {}: {err}", socket.display()))?;
    if secure {
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|_| format!("`{host}` is not a host name TLS can check"))?;
        let stream = tokio_rustls::TlsConnector::from(endpoint.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|err| format!("TLS with {host}: {err}"))?;
        start(request, stream, listener).await?;
    } else {
        start(request, tcp, listener).await?;
    }
    Ok(Relay { socket, _dir: dir })
}

/// The upgrade on `stream`, then a task that relays the first Unix connection to it.
async fn start<S>(request: Request, stream: S, listener: UnixListener) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let url = request.uri().to_string();
    let (ws, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .map_err(|err| format!("the WebSocket upgrade at {url}: {err}"))?;
    tokio::spawn(async move {
        // One connection: rumqttc's, made right after this returns.
        if let Ok((unix, _)) = listener.accept().await {
            drop(listener);
            relay(ws, unix).await;
        }
    });
    Ok(())
}

/// Moves bytes between rumqttc and the WebSocket until either side ends; each read from
/// rumqttc goes out as one binary frame.
async fn relay<S>(ws: WebSocketStream<S>, mut unix: UnixStream)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut to_bridge, mut from_bridge) = ws.split();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            read = unix.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let frame = Message::Binary(buf[..n].to_vec().into());
                    if to_bridge.send(frame).await.is_err() {
                        break;
                    }
                }
            },
            frame = from_bridge.next() => match frame {
                Some(Ok(Message::Binary(bytes))) => {
                    if unix.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                // tungstenite answers pings itself; text frames are not MQTT.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Text(_) | Message::Close(_)) | Err(_)) | None => break,
            },
        }
    }
    let _ = to_bridge.send(Message::Close(None)).await;
    let _ = unix.shutdown().await;
}
