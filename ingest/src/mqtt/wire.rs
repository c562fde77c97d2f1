//! Packets on the wire: framing with `rumqttc`'s MQTT 3.1.1 codec, plus the checks that codec
//! leaves out (the fixed header's reserved flags, the CONNECT's protocol level), and writes that
//! give up on a peer that stopped reading.

use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::Error as CodecError;
use rumqttc::mqttbytes::v4::Packet;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How long one write may wait for the peer to take the bytes.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why no packet could be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// The peer closed the connection.
    #[error("the client closed the connection")]
    Closed,
    /// The bytes are not an MQTT 3.1.1 packet.
    #[error("malformed MQTT packet: {0}")]
    Malformed(String),
    /// The packet is larger than any message a device may send.
    #[error(
        "a packet of {size} bytes is larger than the largest message a device may send \
         ({max} bytes with its topic)"
    )]
    TooLarge {
        /// The packet's remaining length.
        size: usize,
        /// The cap.
        max: usize,
    },
    /// The socket failed.
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
}

/// Takes the next whole packet out of `buf`, if one is there.
pub(crate) fn take_packet(buf: &mut BytesMut, max: usize) -> Result<Option<Packet>, ReadError> {
    if let Some(&first) = buf.first() {
        check_flags(first)?;
    }
    match Packet::read(buf, max) {
        Ok(packet) => Ok(Some(packet)),
        Err(CodecError::InsufficientBytes(_)) => Ok(None),
        Err(CodecError::PayloadSizeLimitExceeded(size)) => Err(ReadError::TooLarge { size, max }),
        Err(err) => Err(ReadError::Malformed(err.to_string())),
    }
}

/// Reads until a whole packet is in `buf` and takes it.
pub(crate) async fn read_packet<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Packet, ReadError> {
    loop {
        if let Some(packet) = take_packet(buf, max)? {
            return Ok(packet);
        }
        if reader.read_buf(buf).await? == 0 {
            return Err(ReadError::Closed);
        }
    }
}

/// MQTT 3.1.1 §2.2.2: the low four bits are fixed for every type but PUBLISH; a server must
/// close the connection on any other value.
fn check_flags(first: u8) -> Result<(), ReadError> {
    let expected = match first >> 4 {
        3 => return Ok(()),
        6 | 8 | 10 => 0b0010,
        _ => 0,
    };
    if first & 0x0F == expected {
        Ok(())
    } else {
        Err(ReadError::Malformed(format!(
            "reserved flags {:#06b} of packet type {} must be {expected:#06b}",
            first & 0x0F,
            first >> 4
        )))
    }
}

/// The protocol level a CONNECT at the start of `buf` asks for, once its header is there:
/// `Some(4)` for MQTT 3.1.1, `Some(3)` for MQTT 3.1 (`MQIsdp`), `Some(5)` for MQTT 5. The codec
/// reads a level-5 CONNECT as if it were 3.1.1, so the level is looked at before parsing.
pub(crate) fn connect_level(buf: &[u8]) -> Option<u8> {
    // Fixed header: type byte, then 1–4 bytes of remaining length (high bit: more follow).
    let length_bytes = buf.iter().skip(1).take(4).position(|b| b & 0x80 == 0)? + 1;
    let header = &buf[1 + length_bytes..];
    let name_len = usize::from(u16::from_be_bytes([*header.first()?, *header.get(1)?]));
    let name = header.get(2..2 + name_len)?;
    let level = *header.get(2 + name_len)?;
    match name {
        b"MQTT" | b"MQIsdp" => Some(level),
        _ => Some(0),
    }
}

/// Appends one packet's bytes to `out`.
pub(crate) fn encode(packet: &Packet, out: &mut BytesMut) -> std::io::Result<()> {
    packet
        .write(out, usize::MAX)
        .map(drop)
        .map_err(|err| std::io::Error::other(err.to_string()))
}

/// Writes one packet, giving up after [`WRITE_TIMEOUT`].
pub(crate) async fn write_packet<W: AsyncWrite + Unpin>(
    writer: &mut W,
    scratch: &mut BytesMut,
    packet: &Packet,
) -> std::io::Result<()> {
    scratch.clear();
    encode(packet, scratch)?;
    write_all(writer, scratch).await
}

/// Writes `bytes` (one or many packets), giving up after [`WRITE_TIMEOUT`].
pub(crate) async fn write_all<W: AsyncWrite + Unpin>(
    writer: &mut W,
    bytes: &[u8],
) -> std::io::Result<()> {
    match tokio::time::timeout(WRITE_TIMEOUT, async {
        writer.write_all(bytes).await?;
        writer.flush().await
    })
    .await
    {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the client stopped reading",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::mqttbytes::v4::Connect;

    #[test]
    fn reserved_flags_are_checked() {
        assert!(check_flags(0b1000_0010).is_ok()); // SUBSCRIBE
        assert!(check_flags(0b1000_0000).is_err());
        assert!(check_flags(0b1100_0000).is_ok()); // PINGREQ
        assert!(check_flags(0b1100_0001).is_err());
        assert!(check_flags(0b0011_1011).is_ok()); // PUBLISH: any flags here
    }

    #[test]
    fn the_connect_level_is_read_before_parsing() {
        let mut buf = BytesMut::new();
        let mut connect = Connect::new("projects/p/locations/l/registries/r/devices/d");
        Packet::Connect(connect.clone())
            .write(&mut buf, usize::MAX)
            .unwrap();
        assert_eq!(connect_level(&buf), Some(4));
        connect.protocol = rumqttc::mqttbytes::Protocol::V5;
        buf.clear();
        Packet::Connect(connect)
            .write(&mut buf, usize::MAX)
            .unwrap();
        assert_eq!(connect_level(&buf), Some(5));
        assert_eq!(connect_level(&buf[..3]), None);
    }

    #[test]
    fn a_packet_split_anywhere_is_read_whole() {
        let mut whole = BytesMut::new();
        Packet::PingReq.write(&mut whole, usize::MAX).unwrap();
        let mut buf = BytesMut::from(&whole[..1]);
        assert!(take_packet(&mut buf, 1024).unwrap().is_none());
        buf.extend_from_slice(&whole[1..]);
        assert_eq!(take_packet(&mut buf, 1024).unwrap(), Some(Packet::PingReq));
    }
}
