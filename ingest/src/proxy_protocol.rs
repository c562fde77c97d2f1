//! The PROXY protocol (HAProxy's, versions 1 and 2) at the start of a connection, for MQTT behind
//! a proxy load balancer: Google Cloud's external proxy Network Load Balancer sends version 1,
//! AWS's NLB and HAProxy version 2. Behind one, every connection comes from the balancer, so the
//! per-address cap would count the balancer; the header carries the device's own address.
//!
//! It is read only when configured: otherwise any client could claim any address. Configured,
//! a connection that does not start with a valid header is closed. The reader takes exactly the
//! header's bytes, so what follows (TLS or MQTT) is untouched.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt};

/// Version 2's fixed signature.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// Version 1's longest header, CRLF included (the specification's limit).
const V1_MAX: usize = 107;
/// The most address and TLV bytes a version 2 header may carry here: the addresses need 36 at
/// most, and balancers add a few small TLVs.
const V2_MAX: usize = 1024;

/// Reads the header from the start of `reader`: the client's address, or `None` when the header
/// says there is none to give (v1 `UNKNOWN`, v2 `LOCAL` as in a balancer's health check, or an
/// address family other than TCP over IPv4 or IPv6); then the connection's own peer counts.
/// `Err` names what was wrong.
pub async fn read_source<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> Result<Option<SocketAddr>, String> {
    let mut start = [0u8; 12];
    reader
        .read_exact(&mut start)
        .await
        .map_err(|err| format!("the connection ended before a PROXY header ({err})"))?;
    if &start == V2_SIGNATURE {
        return read_v2(reader).await;
    }
    if start.starts_with(b"PROXY ") {
        return read_v1(reader, &start).await;
    }
    Err("the connection does not start with a PROXY protocol header".to_owned())
}

async fn read_v1<R: AsyncRead + Unpin>(
    reader: &mut R,
    start: &[u8],
) -> Result<Option<SocketAddr>, String> {
    let mut line = start.to_vec();
    // Byte by byte, to leave what follows the CRLF unread; once per connection, 107 at most.
    while !line.ends_with(b"\r\n") {
        if line.len() >= V1_MAX {
            return Err(format!("a PROXY v1 header longer than {V1_MAX} bytes"));
        }
        let byte = reader
            .read_u8()
            .await
            .map_err(|err| format!("the connection ended inside a PROXY header ({err})"))?;
        line.push(byte);
    }
    let text = std::str::from_utf8(&line[..line.len() - 2])
        .map_err(|_| "a PROXY v1 header that is not ASCII".to_owned())?;
    parse_v1(text)
}

/// `PROXY TCP4 SRC DST SPORT DPORT` (or `TCP6`, or `UNKNOWN …`), without the CRLF.
fn parse_v1(text: &str) -> Result<Option<SocketAddr>, String> {
    let fields: Vec<&str> = text.split(' ').collect();
    match fields.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Ok(None),
        ["PROXY", family @ ("TCP4" | "TCP6"), source, _, port, _] => {
            let ip: IpAddr = source
                .parse()
                .map_err(|_| format!("a PROXY v1 source address that is not an IP: {source:?}"))?;
            if ip.is_ipv4() != (*family == "TCP4") {
                return Err(format!("a PROXY v1 {family} header with the address {ip}"));
            }
            let port: u16 = port
                .parse()
                .map_err(|_| format!("a PROXY v1 source port that is not a port: {port:?}"))?;
            Ok(Some(SocketAddr::new(ip, port)))
        }
        _ => Err("a malformed PROXY v1 header".to_owned()),
    }
}

async fn read_v2<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Option<SocketAddr>, String> {
    let mut fixed = [0u8; 4];
    reader
        .read_exact(&mut fixed)
        .await
        .map_err(|err| format!("the connection ended inside a PROXY v2 header ({err})"))?;
    let [version_command, family, high, low] = fixed;
    let length = usize::from(u16::from_be_bytes([high, low]));
    if version_command >> 4 != 2 {
        return Err(format!(
            "a PROXY header of version {}",
            version_command >> 4
        ));
    }
    if length > V2_MAX {
        return Err(format!(
            "a PROXY v2 header of {length} bytes, more than {V2_MAX}"
        ));
    }
    let mut body = vec![0u8; length];
    reader
        .read_exact(&mut body)
        .await
        .map_err(|err| format!("the connection ended inside a PROXY v2 header ({err})"))?;
    match version_command & 0x0F {
        0 => Ok(None),
        1 => parse_v2_addresses(family, &body),
        other => Err(format!("a PROXY v2 header with command {other}")),
    }
}

/// The source of a v2 PROXY command: TCP over IPv4 (`0x11`) or IPv6 (`0x21`); other families
/// carry no address this service can use.
fn parse_v2_addresses(family: u8, body: &[u8]) -> Result<Option<SocketAddr>, String> {
    let short = || {
        format!(
            "a PROXY v2 header too short for its addresses ({} bytes)",
            body.len()
        )
    };
    match family {
        0x11 => {
            let b = body.get(..12).ok_or_else(short)?;
            let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            Ok(Some(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([b[8], b[9]]),
            )))
        }
        0x21 => {
            let b = body.get(..36).ok_or_else(short)?;
            let octets: [u8; 16] = b[..16].try_into().expect("16 bytes");
            let port = u16::from_be_bytes([b[32], b[33]]);
            Ok(Some(SocketAddr::new(Ipv6Addr::from(octets).into(), port)))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(bytes: &[u8]) -> (Result<Option<SocketAddr>, String>, Vec<u8>) {
        let mut reader = bytes;
        let source = read_source(&mut reader).await;
        (source, reader.to_vec())
    }

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(0x20 | command);
        out.push(family);
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    #[tokio::test]
    async fn a_v1_header_gives_the_source_and_leaves_the_rest_unread() {
        let (source, rest) = read(b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 8883\r\n\x10\x0c").await;
        assert_eq!(source.unwrap(), Some("203.0.113.7:5555".parse().unwrap()));
        assert_eq!(rest, b"\x10\x0c");
        let (source, _) = read(b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 443\r\n").await;
        assert_eq!(source.unwrap(), Some("[2001:db8::1]:4000".parse().unwrap()));
        let (source, rest) = read(b"PROXY UNKNOWN\r\nMQTT").await;
        assert_eq!((source.unwrap(), rest.as_slice()), (None, &b"MQTT"[..]));
    }

    #[tokio::test]
    async fn malformed_v1_headers_are_refused_naming_the_fault() {
        for (bytes, words) in [
            (&b"PROXY TCP4 nowhere 10.0.0.1 1 2\r\n"[..], "not an IP"),
            (b"PROXY TCP4 2001:db8::1 10.0.0.1 1 2\r\n", "TCP4"),
            (b"PROXY TCP4 1.2.3.4 10.0.0.1 99999 2\r\n", "not a port"),
            (b"PROXY TCP4 1.2.3.4\r\n", "malformed"),
            (b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c", "does not start"),
            (b"PROXY TCP4 1.2.3.4 ", "ended"),
        ] {
            let err = read(bytes).await.0.unwrap_err();
            assert!(err.contains(words), "{err}");
        }
        let long = format!("PROXY TCP4 {}\r\n", "1".repeat(200));
        let err = read(long.as_bytes()).await.0.unwrap_err();
        assert!(err.contains("longer than 107"), "{err}");
    }

    #[tokio::test]
    async fn a_v2_header_gives_the_source_for_tcp_and_none_for_local() {
        let mut ipv4 = vec![198, 51, 100, 9, 10, 0, 0, 1];
        ipv4.extend_from_slice(&4242u16.to_be_bytes());
        ipv4.extend_from_slice(&8883u16.to_be_bytes());
        ipv4.extend_from_slice(&[0x04, 0x00, 0x01, 0x00]); // a TLV after the addresses
        let mut bytes = v2(1, 0x11, &ipv4);
        bytes.extend_from_slice(b"rest");
        let (source, rest) = read(&bytes).await;
        assert_eq!(source.unwrap(), Some("198.51.100.9:4242".parse().unwrap()));
        assert_eq!(rest, b"rest");

        let mut ipv6 = [0u8; 36];
        ipv6[..16].copy_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        ipv6[32..34].copy_from_slice(&1234u16.to_be_bytes());
        let (source, _) = read(&v2(1, 0x21, &ipv6)).await;
        assert_eq!(source.unwrap(), Some("[2001:db8::7]:1234".parse().unwrap()));

        assert_eq!(read(&v2(0, 0x00, &[])).await.0.unwrap(), None, "LOCAL");
        assert_eq!(read(&v2(1, 0x31, &[0; 216])).await.0.unwrap(), None, "unix");
    }

    #[tokio::test]
    async fn malformed_v2_headers_are_refused() {
        let mut wrong_version = v2(1, 0x11, &[0; 12]);
        wrong_version[12] = 0x31;
        assert!(
            read(&wrong_version)
                .await
                .0
                .unwrap_err()
                .contains("version 3")
        );
        assert!(
            read(&v2(1, 0x11, &[0; 5]))
                .await
                .0
                .unwrap_err()
                .contains("too short")
        );
        assert!(
            read(&v2(7, 0x11, &[0; 12]))
                .await
                .0
                .unwrap_err()
                .contains("command 7")
        );
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xFF, 0xFF]);
        assert!(read(&huge).await.0.unwrap_err().contains("more than 1024"));
    }
}
