//! Arbitrary bytes as what an MQTT client sends, read packet by packet with the reader every
//! connection uses (`take_packet`: rumqttc's codec plus ingest's reserved-flag checks), with a
//! small packet cap so oversized packets are reached too; and the CONNECT protocol-level peek.
//!
//! Asserts: no panic; each packet read, encoded again as the session writes packets, reads back
//! as the same packet from exactly the bytes written; `Ok(None)` consumes nothing; the same
//! bytes arriving in small pieces (sizes taken from the input) give the same packets and the
//! same end (an error, or waiting for more) as arriving at once.

#![no_main]

use bytes::BytesMut;
use ingest::mqtt::{connect_level, encode_packet, take_packet};
use libfuzzer_sys::fuzz_target;
use rumqttc::mqttbytes::v4::Packet;

const MAX: usize = 1024;

/// Every packet in `buf`, and how reading ended: `Ok(())` waiting for more, or the error.
fn read_all(buf: &mut BytesMut) -> (Vec<Packet>, Result<(), String>) {
    let mut packets = Vec::new();
    loop {
        let before = buf.clone();
        match take_packet(buf, MAX) {
            Ok(Some(packet)) => packets.push(packet),
            Ok(None) => {
                assert_eq!(*buf, before, "waiting for more consumed bytes");
                return (packets, Ok(()));
            }
            Err(err) => return (packets, Err(err)),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = connect_level(data);

    let (packets, end) = read_all(&mut BytesMut::from(data));
    for packet in &packets {
        let mut written = BytesMut::new();
        encode_packet(packet, &mut written).expect("a packet read encodes");
        let len = written.len();
        let mut reread = written.clone();
        match take_packet(&mut reread, usize::MAX) {
            Ok(Some(again)) => assert_eq!(&again, packet, "re-read differs"),
            other => panic!("{packet:?} written as {written:?} reads as {other:?}"),
        }
        assert!(
            reread.is_empty(),
            "{len} bytes written, {} left",
            reread.len()
        );
    }

    // The same bytes in pieces of 1 to 16 bytes, the sizes cycling through the input's bytes.
    let mut piecewise = Vec::new();
    let mut buf = BytesMut::new();
    let mut rest = data;
    let mut sizes = data.iter().cycle();
    let mut piecewise_end = Ok(());
    while !rest.is_empty() {
        let size = (usize::from(*sizes.next().unwrap_or(&0)) % 16 + 1).min(rest.len());
        buf.extend_from_slice(&rest[..size]);
        rest = &rest[size..];
        let (got, end) = read_all(&mut buf);
        piecewise.extend(got);
        if end.is_err() {
            piecewise_end = end;
            break;
        }
    }
    assert_eq!(piecewise, packets, "pieces give other packets");
    assert_eq!(
        piecewise_end.is_err(),
        end.is_err(),
        "{piecewise_end:?} vs {end:?}"
    );
});
