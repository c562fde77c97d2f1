//! How the console writes times and payloads: an instant as UTC with how long ago it was, and a
//! device's bytes as pretty JSON when they are JSON, as text when they are text, else as hex.

use jiff::{SignedDuration, Timestamp};
use maud::{Markup, html};

/// `2026-01-02 03:04:05 UTC` with "(3 min ago)", or a dash for never.
pub(super) fn time(at: Option<Timestamp>, now: Timestamp) -> Markup {
    match at {
        None => html! { span.muted { "never" } },
        Some(at) => html! {
            time datetime=(at.to_string()) title=(at.to_string()) {
                (at.strftime("%Y-%m-%d %H:%M:%S UTC")) " "
                span.muted { "(" (ago(now.duration_since(at))) ")" }
            }
        },
    }
}

/// "12 s ago", "5 min ago", "3 h ago", "2 d ago"; "in the future" for a clock ahead of ours.
pub(super) fn ago(elapsed: SignedDuration) -> String {
    let secs = elapsed.as_secs();
    match secs {
        ..0 => "in the future".into(),
        0..60 => format!("{secs} s ago"),
        60..3600 => format!("{} min ago", secs / 60),
        3600..86_400 => format!("{} h ago", secs / 3600),
        _ => format!("{} d ago", secs / 86_400),
    }
}

/// What a payload is, for showing it.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Payload {
    /// Valid JSON, pretty-printed.
    Json(String),
    /// UTF-8 text with no control characters but line breaks and tabs.
    Text(String),
    /// Anything else, as hex.
    Binary(String),
}

impl Payload {
    /// Reads `bytes` as the first of JSON, text or binary that fits.
    pub fn of(bytes: &[u8]) -> Self {
        if let Ok(json) = serde_json::from_slice::<serde_json::Value>(bytes)
            && let Ok(pretty) = serde_json::to_string_pretty(&json)
        {
            return Payload::Json(pretty);
        }
        match text(bytes) {
            Some(text) => Payload::Text(text.to_owned()),
            None => Payload::Binary(hex(bytes)),
        }
    }

    /// The payload in a `<pre>`, labelled with what it is.
    pub fn render(&self) -> Markup {
        let (kind, body) = match self {
            Payload::Json(text) => ("JSON", text),
            Payload::Text(text) => ("text", text),
            Payload::Binary(hex) => ("binary, hex", hex),
        };
        html! {
            div.payload {
                span.kind { (kind) }
                pre { (body) }
            }
        }
    }
}

/// `bytes` as text, when they are UTF-8 without control characters other than line breaks and
/// tabs (what a text area can show and give back unchanged).
pub(super) fn text(bytes: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(bytes).ok()?;
    let printable = text
        .chars()
        .all(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t'));
    printable.then_some(text)
}

/// Hex, 16 bytes a line in groups of two.
pub(super) fn hex(bytes: &[u8]) -> String {
    bytes
        .chunks(16)
        .map(|line| {
            line.chunks(2)
                .map(|pair| pair.iter().map(|b| format!("{b:02x}")).collect::<String>())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A short fingerprint of a public key's text: the first 16 hex digits of its SHA-256, enough to
/// tell a device's (at most three) keys apart and to name one to remove.
pub(super) fn fingerprint(key: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.trim().as_bytes());
    digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_show_as_json_text_or_hex() {
        assert_eq!(
            Payload::of(br#"{"t":21}"#),
            Payload::Json("{\n  \"t\": 21\n}".into())
        );
        assert_eq!(
            Payload::of(b"fan=high\n"),
            Payload::Text("fan=high\n".into())
        );
        assert_eq!(
            Payload::of(&[0, 1, 0xfe, 0xff, 7]),
            Payload::Binary("0001 feff 07".into())
        );
        assert_eq!(Payload::of(b""), Payload::Text(String::new()));
    }

    #[test]
    fn ages_read_in_the_largest_whole_unit() {
        let s = SignedDuration::from_secs;
        assert_eq!(ago(s(5)), "5 s ago");
        assert_eq!(ago(s(61)), "1 min ago");
        assert_eq!(ago(s(7200)), "2 h ago");
        assert_eq!(ago(s(3 * 86_400)), "3 d ago");
        assert_eq!(ago(s(-3)), "in the future");
    }
}
