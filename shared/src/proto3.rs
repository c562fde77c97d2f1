//! The proto3 JSON mapping details IoT Core's REST API used and its tooling relies on: `bytes`
//! as base64, 64-bit integers as decimal strings (numbers accepted on input), base64 input in
//! either alphabet with or without padding, and enums written by name but read by name or by
//! number (Google's client libraries send numbers: `"format": 3`).

use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};

const LENIENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_encode_padding(true)
    .with_decode_padding_mode(DecodePaddingMode::Indifferent);
const STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);

/// Base64 text that neither alphabet decodes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("is not valid base64 (standard or URL-safe alphabet, padding optional): {0}")]
pub struct Base64Error(String);

/// Decodes base64 in the standard or the URL-safe alphabet, padded or not. Mixing the two
/// alphabets in one value is refused.
pub fn decode_base64(text: &str) -> Result<Vec<u8>, Base64Error> {
    let url_safe = text.contains(['-', '_']);
    if url_safe && text.contains(['+', '/']) {
        return Err(Base64Error(
            "mixes the standard (+/) and URL-safe (-_) alphabets".into(),
        ));
    }
    let engine = if url_safe { &URL_SAFE } else { &STANDARD };
    engine.decode(text).map_err(|e| Base64Error(e.to_string()))
}

/// Encodes bytes as proto3 JSON does: standard alphabet, padded.
pub fn encode_base64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// `#[serde(with = "bytes")]` for `Vec<u8>` fields carried as base64.
pub mod bytes {
    use super::*;

    /// Writes standard padded base64.
    pub fn serialize<S: Serializer>(value: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode_base64(value))
    }

    /// Reads base64 in either alphabet; `null` reads as empty.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text: Option<String> = serde::Deserialize::deserialize(d)?;
        match text {
            None => Ok(Vec::new()),
            Some(text) => decode_base64(&text).map_err(de::Error::custom),
        }
    }
}

/// `#[serde(with = "int64")]` for `u64` fields: written as a decimal string, read from a string
/// or a JSON number, as the proto3 JSON mapping allows.
pub mod int64 {
    use super::*;

    /// Writes the number as a decimal string.
    pub fn serialize<S: Serializer>(value: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(value)
    }

    /// Reads a decimal string or a non-negative integer.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        d.deserialize_any(U64Visitor)
    }

    struct U64Visitor;

    impl Visitor<'_> for U64Visitor {
        type Value = u64;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a non-negative integer, as a number or a decimal string")
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| E::custom(format!("{v} is negative")))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
            if v.fract() == 0.0 && (0.0..9.007_199_254_740_992e15).contains(&v) {
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                Ok(v as u64)
            } else {
                Err(E::custom(format!("{v} is not a non-negative integer")))
            }
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
            v.parse()
                .map_err(|_| E::custom(format!("`{v}` is not a non-negative integer")))
        }

        fn visit_unit<E: de::Error>(self) -> Result<u64, E> {
            Ok(0)
        }
    }
}

/// `#[serde(with = "opt_int64")]` for `Option<u64>` fields (output-only ids such as `numId`).
pub mod opt_int64 {
    use super::*;

    /// Writes the number as a decimal string.
    pub fn serialize<S: Serializer>(value: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => s.collect_str(v),
            None => s.serialize_none(),
        }
    }

    /// Reads a decimal string, a number, or null.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        int64::deserialize(d).map(Some)
    }
}

/// Defines an enum of IoT Core's API with each value's proto name and number: it is written as
/// its name and read from its name or its number, as proto3 JSON parsers must; `NUMBERS` lists
/// them for answers that ask for numbers (`$alt=json;enum-encoding=int`).
macro_rules! proto3_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$variant_meta:meta])* $variant:ident = ($text:literal, $number:literal) ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$variant_meta])* $variant ),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// Each value's proto name and number, in declaration order.
            pub const NUMBERS: &'static [(&'static str, i32)] = &[$(($text, $number)),+];

            /// The value's name as the API spells it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// The value's number in IoT Core's `.proto`.
            pub fn number(self) -> i32 {
                match self {
                    $($name::$variant => $number),+
                }
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let at = $crate::proto3::enum_index(d, stringify!($name), Self::NUMBERS)?;
                Ok(Self::ALL[at])
            }
        }
    };
}

pub(crate) use proto3_enum;

/// Reads an enum value given by name or number; the index of its entry in `values`. The error
/// names the valid values with their numbers.
pub fn enum_index<'de, D: Deserializer<'de>>(
    d: D,
    what: &'static str,
    values: &'static [(&'static str, i32)],
) -> Result<usize, D::Error> {
    struct Index {
        what: &'static str,
        values: &'static [(&'static str, i32)],
    }

    impl Index {
        fn unknown<E: de::Error>(&self, given: impl std::fmt::Display) -> E {
            let valid: Vec<String> = self
                .values
                .iter()
                .map(|(name, number)| format!("{name} ({number})"))
                .collect();
            E::custom(format!(
                "`{given}` is not a {}; use one of {}",
                self.what,
                valid.join(", ")
            ))
        }

        fn by_number<E: de::Error>(&self, number: i64) -> Result<usize, E> {
            self.values
                .iter()
                .position(|(_, n)| i64::from(*n) == number)
                .ok_or_else(|| self.unknown(number))
        }
    }

    impl Visitor<'_> for Index {
        type Value = usize;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "a {} name or number", self.what)
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<usize, E> {
            self.values
                .iter()
                .position(|(name, _)| *name == v)
                .ok_or_else(|| self.unknown(v))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<usize, E> {
            self.by_number(v)
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<usize, E> {
            self.by_number(i64::try_from(v).unwrap_or(i64::MAX))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<usize, E> {
            Err(self.unknown(v))
        }

        fn visit_bool<E: de::Error>(self, v: bool) -> Result<usize, E> {
            Err(self.unknown(v))
        }
    }

    d.deserialize_any(Index { what, values })
}

/// Reads a `google.protobuf.Duration` as proto3 JSON writes it: seconds with up to nine
/// fractional digits and an `s` suffix (`"600s"`, `"1.5s"`). Negative durations are refused.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let invalid = || format!("`{text}` is not a duration like \"600s\" or \"1.5s\"");
    let number = text.strip_suffix('s').ok_or_else(invalid)?;
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (number, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let fraction_ok = fraction.is_none_or(|f| digits(f) && f.len() <= 9);
    if !digits(whole) || !fraction_ok {
        return Err(invalid());
    }
    let secs: u64 = whole.parse().map_err(|_| invalid())?;
    let nanos: u32 = format!("{:0<9}", fraction.unwrap_or_default())
        .parse()
        .map_err(|_| invalid())?;
    Ok(std::time::Duration::new(secs, nanos))
}

/// Writes a duration as proto3 JSON does: `"600s"`, `"1.500s"`.
pub fn format_duration(duration: std::time::Duration) -> String {
    match duration.subsec_nanos() {
        0 => format!("{}s", duration.as_secs()),
        n if n % 1_000_000 == 0 => format!("{}.{:03}s", duration.as_secs(), n / 1_000_000),
        n => format!("{}.{n:09}s", duration.as_secs()),
    }
}

/// `#[serde(with = "opt_duration")]` for `Option<std::time::Duration>` fields carried as
/// `google.protobuf.Duration` text.
pub mod opt_duration {
    use super::*;

    /// Writes `"600s"`.
    pub fn serialize<S: Serializer>(
        value: &Option<std::time::Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => s.serialize_str(&format_duration(*v)),
            None => s.serialize_none(),
        }
    }

    /// Reads `"600s"`, or null.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<std::time::Duration>, D::Error> {
        let text: Option<String> = serde::Deserialize::deserialize(d)?;
        text.map(|t| parse_duration(&t).map_err(de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[test]
    fn base64_accepts_both_alphabets_with_or_without_padding() {
        // 0xfb 0xff encodes with characters that differ between the alphabets.
        let table = [
            ("+/8=", vec![0xfb, 0xff]),
            ("+/8", vec![0xfb, 0xff]),
            ("-_8=", vec![0xfb, 0xff]),
            ("-_8", vec![0xfb, 0xff]),
            ("aGVsbG8=", b"hello".to_vec()),
            ("aGVsbG8", b"hello".to_vec()),
            ("", vec![]),
        ];
        for (text, bytes) in table {
            assert_eq!(decode_base64(text).unwrap(), bytes, "{text:?}");
        }
    }

    #[test]
    fn undecodable_base64_is_refused() {
        for bad in ["a", "aGVsbG8===", "a b", "+_8=", "héllo", "aGVsbG8=x"] {
            assert!(decode_base64(bad).is_err(), "{bad:?}");
        }
        let err = decode_base64("+_8=").unwrap_err().to_string();
        assert!(err.contains("mixes"), "{err}");
    }

    #[test]
    fn encoding_is_standard_and_padded() {
        assert_eq!(encode_base64(&[0xfb, 0xff]), "+/8=");
    }

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Versioned {
        #[serde(with = "int64", default)]
        version: u64,
        #[serde(with = "bytes", default)]
        data: Vec<u8>,
    }

    #[test]
    fn int64_reads_strings_and_numbers_and_writes_strings() {
        for json in [
            r#"{"version":"7"}"#,
            r#"{"version":7}"#,
            r#"{"version":7.0}"#,
        ] {
            let v: Versioned = serde_json::from_str(json).unwrap();
            assert_eq!(v.version, 7, "{json}");
        }
        let v = Versioned {
            version: u64::MAX,
            data: b"hi".to_vec(),
        };
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"version":"18446744073709551615","data":"aGk="}"#
        );
        for bad in [
            r#"{"version":"-1"}"#,
            r#"{"version":-1}"#,
            r#"{"version":1.5}"#,
            r#"{"version":"x"}"#,
            r#"{"version":true}"#,
        ] {
            assert!(serde_json::from_str::<Versioned>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_read_and_write_as_proto3_json() {
        use std::time::Duration;
        for (text, expected) in [
            ("600s", Duration::from_secs(600)),
            ("1.5s", Duration::from_millis(1500)),
            ("0.000000001s", Duration::from_nanos(1)),
        ] {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
        for bad in [
            "600",
            "-1s",
            "1.s",
            ".5s",
            "1.0000000001s",
            "1e3s",
            "s",
            "10m",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(format_duration(Duration::from_secs(600)), "600s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.500s");
        assert_eq!(format_duration(Duration::from_nanos(1)), "0.000000001s");
    }
}
