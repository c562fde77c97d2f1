//! One MQTT 3.1.1 connection: TCP (and TLS), CONNECT and CONNACK, then packets in and out through
//! rumqttc's v4 codec. The loop around it is ours rather than rumqttc's `EventLoop` because a
//! load generator must not shape the result: that event loop stalls when acks come back out of
//! order (its packet ids wrap at the in-flight limit) and flushes after every request, while here
//! acks may arrive in any order and a whole batch of publishes leaves in one write.

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::Error as CodecError;
use rumqttc::mqttbytes::v4::{ConnAck, Connect, ConnectReturnCode, Packet};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::cli::{Target, expand};

/// Largest packet accepted from the server; a bridge sends acks, pings and small configs here.
const MAX_INCOMING: usize = 1024 * 1024;

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub struct Connection {
    stream: Box<dyn Io>,
    rx: BytesMut,
    tx: BytesMut,
}

/// Why a connection could not be established; the JSON result counts these by kind.
#[derive(Debug)]
pub enum ConnectError {
    Refused(ConnectReturnCode),
    Timeout,
    Failed(String),
}

impl ConnectError {
    pub fn kind(&self) -> String {
        match self {
            ConnectError::Refused(code) => format!("refused: {code:?}"),
            ConnectError::Timeout => "timed out".to_owned(),
            ConnectError::Failed(why) => why.clone(),
        }
    }
}

impl Connection {
    /// TCP, TLS when asked, CONNECT, and a successful CONNACK, all within the connect timeout.
    pub async fn open(target: &Target, index: u64) -> Result<Connection, ConnectError> {
        match tokio::time::timeout(target.connect_timeout, Self::handshake(target, index)).await {
            Ok(result) => result,
            Err(_) => Err(ConnectError::Timeout),
        }
    }

    async fn handshake(target: &Target, index: u64) -> Result<Connection, ConnectError> {
        let failed =
            |what: &str, e: io::Error| ConnectError::Failed(format!("{what}: {}", e.kind()));
        let tcp = TcpStream::connect(target.addr)
            .await
            .map_err(|e| failed("tcp connect", e))?;
        // Publishes are written in batches already; Nagle would only delay the last of each.
        tcp.set_nodelay(true).map_err(|e| failed("nodelay", e))?;
        let stream: Box<dyn Io> = match &target.tls {
            None => Box::new(tcp),
            Some(tls) => Box::new(
                tls.connector
                    .connect(tls.server_name.clone(), tcp)
                    .await
                    .map_err(|e| ConnectError::Failed(format!("tls: {e}")))?,
            ),
        };
        let mut conn = Connection {
            stream,
            rx: BytesMut::with_capacity(256),
            tx: BytesMut::with_capacity(256),
        };
        conn.queue(&Packet::Connect(connect_packet(target, index)))
            .map_err(|e| ConnectError::Failed(format!("encoding CONNECT: {e}")))?;
        conn.flush()
            .await
            .map_err(|e| failed("writing CONNECT", e))?;
        match conn.next_packet().await {
            Ok(Packet::ConnAck(ConnAck {
                code: ConnectReturnCode::Success,
                ..
            })) => Ok(conn),
            Ok(Packet::ConnAck(ConnAck { code, .. })) => Err(ConnectError::Refused(code)),
            Ok(other) => Err(ConnectError::Failed(format!(
                "expected CONNACK, got {other:?}"
            ))),
            Err(e) => Err(ConnectError::Failed(format!("reading CONNACK: {e}"))),
        }
    }

    /// Encodes a packet into the write buffer; nothing is sent until `flush`.
    pub fn queue(&mut self, packet: &Packet) -> Result<(), CodecError> {
        packet.write(&mut self.tx, usize::MAX).map(|_| ())
    }

    /// Appends bytes encoded elsewhere (the publish template) to the write buffer.
    pub fn queue_raw(&mut self, bytes: &[u8]) {
        self.tx.extend_from_slice(bytes);
    }

    pub fn has_queued(&self) -> bool {
        !self.tx.is_empty()
    }

    /// Writes everything queued in one go.
    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.tx.is_empty() {
            self.stream.write_all(&self.tx).await?;
            self.tx.clear();
        }
        self.stream.flush().await
    }

    /// The next packet from the server, reading as needed. Cancel-safe: bytes read so far stay
    /// in the buffer, so it can sit in a `select!` beside a timer.
    pub async fn next_packet(&mut self) -> io::Result<Packet> {
        loop {
            if let Some(packet) = self.try_packet()? {
                return Ok(packet);
            }
            if self.stream.read_buf(&mut self.rx).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                ));
            }
        }
    }

    /// A packet already in the read buffer, if a whole one is there; never waits.
    pub fn try_packet(&mut self) -> io::Result<Option<Packet>> {
        match Packet::read(&mut self.rx, MAX_INCOMING) {
            Ok(packet) => Ok(Some(packet)),
            Err(CodecError::InsufficientBytes(more)) => {
                self.rx.reserve(more);
                Ok(None)
            }
            Err(e) => Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
        }
    }

    /// DISCONNECT and close, best effort and briefly: the run's figures are already taken.
    pub async fn close(mut self) {
        if self.queue(&Packet::Disconnect).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                let _ = self.flush().await;
                let _ = self.stream.shutdown().await;
            })
            .await;
        }
    }
}

/// Clean session, as IoT Core demanded; a username only together with a password (MQTT 3.1.1
/// forbids a password without a username).
fn connect_packet(target: &Target, index: u64) -> Connect {
    let mut connect = Connect::new(expand(&target.client_id, index));
    connect.keep_alive = target.keepalive;
    connect.clean_session = true;
    if let Some(password) = &target.password {
        connect.set_login(target.username.clone(), expand(password, index));
    }
    connect
}
